//! Tenants and their quotas.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, QuotaViolation, Result, Violations};
use crate::names::TenantId;
use crate::spec::ClusterSpec;

/// Limits on a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Clusters that are not deleted.
    pub max_clusters: i32,
    /// Nodes over all clusters.
    pub max_nodes: i32,
    /// Storage over all nodes, GiB.
    pub max_storage_gib: i64,
}

impl Quota {
    /// Checks that no limit is negative. `prefix` is the quota's path in the request.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let mut v = Violations::default();
        if self.max_clusters < 0 {
            v.add(format!("{prefix}.max_clusters"), "must not be negative");
        }
        if self.max_nodes < 0 {
            v.add(format!("{prefix}.max_nodes"), "must not be negative");
        }
        if self.max_storage_gib < 0 {
            v.add(format!("{prefix}.max_storage_gib"), "must not be negative");
        }
        v.finish()
    }
}

/// What a tenant uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// Clusters that are not deleted.
    pub clusters: i64,
    /// Nodes.
    pub nodes: i64,
    /// Storage, GiB.
    pub storage_gib: i64,
}

impl QuotaUsage {
    /// The usage of one more cluster with `spec`.
    pub fn plus(self, spec: &ClusterSpec) -> Self {
        QuotaUsage {
            clusters: self.clusters + 1,
            nodes: self.nodes + spec.node_count(),
            storage_gib: self.storage_gib + spec.storage_gib(),
        }
    }
}

/// A team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// The `{tenant}` of `tenants/{tenant}`.
    pub id: TenantId,
    /// What people call the team.
    pub display_name: String,
    /// Its limits.
    pub quota: Quota,
    /// What its clusters use now (every cluster that is not DELETED).
    pub usage: QuotaUsage,
    /// When it was created.
    pub create_time: DateTime<Utc>,
    /// When it last changed.
    pub update_time: DateTime<Utc>,
}

/// Fails with `QuotaExceeded`, naming every limit `after` would exceed.
/// Limits that were already exceeded before (`before`) only fail when the
/// request makes them worse, so a lowered quota never blocks a shrink.
pub fn check_quota(
    tenant: &TenantId,
    quota: &Quota,
    before: QuotaUsage,
    after: QuotaUsage,
) -> Result<()> {
    let mut violations = Vec::new();
    let mut check = |what: &str, limit: i64, was: i64, will: i64| {
        if will > limit && will > was {
            violations.push(QuotaViolation {
                subject: format!("tenants/{tenant}:{what}"),
                description: format!(
                    "{what}: the limit is {limit}; the tenant uses {was} and would use {will} with this request"
                ),
            });
        }
    };
    check(
        "clusters",
        i64::from(quota.max_clusters),
        before.clusters,
        after.clusters,
    );
    check(
        "nodes",
        i64::from(quota.max_nodes),
        before.nodes,
        after.nodes,
    );
    check(
        "storage_gib",
        quota.max_storage_gib,
        before.storage_gib,
        after.storage_gib,
    );
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::QuotaExceeded(violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TenantId {
        TenantId::parse("t", "team").unwrap()
    }

    #[test]
    fn quota_names_each_exceeded_limit() {
        let q = Quota {
            max_clusters: 1,
            max_nodes: 3,
            max_storage_gib: 100,
        };
        let before = QuotaUsage::default();
        check_quota(
            &t(),
            &q,
            before,
            before.plus(&ClusterSpec::test().with_nodes(2)),
        )
        .unwrap();
        let err = check_quota(
            &t(),
            &q,
            before,
            before.plus(&ClusterSpec::test().with_nodes(4)),
        )
        .unwrap_err();
        match err {
            Error::QuotaExceeded(v) => {
                let subjects: Vec<_> = v.iter().map(|v| v.subject.as_str()).collect();
                assert_eq!(
                    subjects,
                    vec!["tenants/team:nodes", "tenants/team:storage_gib"]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_already_exceeded_limit_allows_shrinking() {
        let q = Quota {
            max_clusters: 1,
            max_nodes: 1,
            max_storage_gib: 10,
        };
        let before = QuotaUsage {
            clusters: 1,
            nodes: 5,
            storage_gib: 500,
        };
        let after = QuotaUsage {
            clusters: 1,
            nodes: 4,
            storage_gib: 400,
        };
        check_quota(&t(), &q, before, after).unwrap();
    }
}
