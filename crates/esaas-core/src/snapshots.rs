//! Snapshots to S3: where a cluster's snapshots live, what they are called,
//! when the next one is due and which ones retention lets go. Pure rules;
//! the Elasticsearch adapter registers the repository and takes the
//! snapshots, the worker calls these to decide.
//!
//! Each cluster has one repository in the platform's snapshot bucket, under
//! `{tenant}/{cluster uid}`: the uid, not the name, so a cluster created
//! again under a deleted one's name never writes into the old one's
//! snapshots, and a restore can still find a deleted cluster's snapshots by
//! the uid its tombstone keeps. A restore registers the source's path
//! read-only in the new cluster (only one cluster may write to a repository,
//! the Elasticsearch reference says in "Snapshot repositories").

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::names::TenantId;

/// The name a cluster's own repository has inside Elasticsearch.
pub const REPOSITORY: &str = "esaas";
/// The name a restore source's repository has in the cluster restoring from it.
pub const SOURCE_REPOSITORY: &str = "esaas-restore-source";

/// An `s3` snapshot repository as Elasticsearch is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Its name in the cluster.
    pub name: String,
    /// The platform's snapshot bucket.
    pub bucket: String,
    /// `{tenant}/{cluster uid}`.
    pub base_path: String,
    /// Registered without write access (a restore source).
    pub readonly: bool,
}

/// The base path of cluster `uid` of `tenant` in the bucket.
pub fn base_path(tenant: &TenantId, uid: Uuid) -> String {
    format!("{}/{uid}", tenant.as_str())
}

/// The cluster's own repository, which it writes its snapshots to.
pub fn own_repository(bucket: &str, tenant: &TenantId, uid: Uuid) -> Repository {
    Repository {
        name: REPOSITORY.into(),
        bucket: bucket.into(),
        base_path: base_path(tenant, uid),
        readonly: false,
    }
}

/// Another cluster's repository (`source_uid`, same tenant), read-only, to restore from.
pub fn source_repository(bucket: &str, tenant: &TenantId, source_uid: Uuid) -> Repository {
    Repository {
        name: SOURCE_REPOSITORY.into(),
        bucket: bucket.into(),
        base_path: base_path(tenant, source_uid),
        readonly: true,
    }
}

/// Why a snapshot was taken; part of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// On the policy's schedule.
    Scheduled,
    /// Asked for (`CreateSnapshot`).
    Manual,
    /// Taken by a delete before anything is removed.
    Final,
}

impl SnapshotKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
            Self::Final => "final",
        }
    }
}

/// The name of a snapshot the platform takes at `at`: `{kind}-{UTC time}`,
/// lowercase and free of the characters Elasticsearch refuses in a
/// snapshot name, sortable by time within a kind. Ties within a second
/// are left to Elasticsearch, which refuses a name that exists (a retry
/// of the same step then finds the snapshot it took).
pub fn snapshot_name(kind: SnapshotKind, at: DateTime<Utc>) -> String {
    format!("{}-{}", kind.as_str(), at.format("%Y%m%d-%H%M%S"))
}

/// When and how many: a cluster's snapshot policy (`spec.snapshot_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Hours between scheduled snapshots; 0: no scheduled snapshots.
    pub interval_hours: u32,
    /// How many scheduled snapshots to keep (manual and final ones are kept
    /// until deleted by their owner).
    pub retention: u32,
}

impl SnapshotPolicy {
    /// The platform default: daily, a week of them.
    pub const DEFAULT: Self = Self {
        interval_hours: 24,
        retention: 7,
    };

    /// Longest interval: a snapshot at least every 30 days.
    pub const MAX_INTERVAL_HOURS: u32 = 24 * 30;
    /// Most scheduled snapshots kept.
    pub const MAX_RETENTION: u32 = 100;

    /// Checks the policy; `field` names it in the error.
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.interval_hours > Self::MAX_INTERVAL_HOURS {
            return Err(Error::invalid(
                format!("{field}.interval_hours"),
                format!("at most {} hours", Self::MAX_INTERVAL_HOURS),
            ));
        }
        if self.interval_hours > 0 && !(1..=Self::MAX_RETENTION).contains(&self.retention) {
            return Err(Error::invalid(
                format!("{field}.retention"),
                format!(
                    "between 1 and {} when snapshots are scheduled",
                    Self::MAX_RETENTION
                ),
            ));
        }
        Ok(())
    }

    /// Whether a scheduled snapshot is due at `now`, given the last
    /// successful one (any kind counts: a manual snapshot an hour ago
    /// protects the data as well as a scheduled one would).
    pub fn due(&self, last_success: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        if self.interval_hours == 0 {
            return false;
        }
        match last_success {
            None => true,
            Some(at) => now - at >= Duration::hours(i64::from(self.interval_hours)),
        }
    }

    /// The scheduled snapshots retention lets go, oldest first: all but the
    /// newest `retention` of those named [`SnapshotKind::Scheduled`].
    /// Others (manual, final, or not the platform's) are never expired.
    pub fn expired<'a>(&self, names: &'a [String]) -> Vec<&'a str> {
        let prefix = format!("{}-", SnapshotKind::Scheduled.as_str());
        let mut scheduled: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        scheduled.sort_unstable();
        let keep = self.retention.max(1) as usize;
        let expire = scheduled.len().saturating_sub(keep);
        scheduled.truncate(expire);
        scheduled
    }
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn repositories_live_under_the_tenant_and_the_cluster_uid() {
        let tenant = TenantId::parse("t", "acme").expect("tenant");
        let uid = Uuid::nil();
        let own = own_repository("snaps", &tenant, uid);
        assert_eq!(own.base_path, format!("acme/{uid}"));
        assert!(!own.readonly);
        let source = source_repository("snaps", &tenant, uid);
        assert_eq!(source.base_path, own.base_path);
        assert!(source.readonly);
        assert_ne!(source.name, own.name);
    }

    #[test]
    fn names_are_lowercase_timestamps_elasticsearch_takes() {
        let t = at("2026-03-04T05:06:07Z");
        for (kind, want) in [
            (SnapshotKind::Scheduled, "scheduled-20260304-050607"),
            (SnapshotKind::Manual, "manual-20260304-050607"),
            (SnapshotKind::Final, "final-20260304-050607"),
        ] {
            let name = snapshot_name(kind, t);
            assert_eq!(name, want);
            assert_eq!(name.to_lowercase(), name);
            assert!(!name.starts_with('_'));
            assert!(!name.contains(|c: char| "\\/*?\"<>|, #".contains(c)));
        }
    }

    #[test]
    fn a_snapshot_is_due_after_the_interval_since_the_last_success() {
        let now = at("2026-03-04T12:00:00Z");
        let daily = SnapshotPolicy::DEFAULT;
        let off = SnapshotPolicy {
            interval_hours: 0,
            retention: 0,
        };
        for (policy, last, due) in [
            (daily, None, true),
            (daily, Some("2026-03-03T12:00:00Z"), true),
            (daily, Some("2026-03-03T12:00:01Z"), false),
            (daily, Some("2026-03-04T11:00:00Z"), false),
            (off, None, false),
            (off, Some("2020-01-01T00:00:00Z"), false),
        ] {
            assert_eq!(policy.due(last.map(at), now), due, "{policy:?} {last:?}");
        }
    }

    #[test]
    fn retention_expires_only_the_oldest_scheduled_snapshots() {
        let names: Vec<String> = [
            "scheduled-20260301-000000",
            "manual-20260101-000000",
            "scheduled-20260303-000000",
            "final-20250101-000000",
            "scheduled-20260302-000000",
            "someone-elses",
        ]
        .map(String::from)
        .to_vec();
        let keep = |retention| SnapshotPolicy {
            interval_hours: 24,
            retention,
        };
        assert_eq!(
            keep(1).expired(&names),
            ["scheduled-20260301-000000", "scheduled-20260302-000000"]
        );
        assert_eq!(keep(2).expired(&names), ["scheduled-20260301-000000"]);
        assert!(keep(3).expired(&names).is_empty());
        assert!(keep(9).expired(&names).is_empty());
        // Never all of them, whatever the policy says.
        assert_eq!(keep(0).expired(&names).len(), 2);
    }

    #[test]
    fn policies_are_checked() {
        let ok = [
            SnapshotPolicy::DEFAULT,
            SnapshotPolicy {
                interval_hours: 0,
                retention: 0,
            },
            SnapshotPolicy {
                interval_hours: 1,
                retention: 100,
            },
        ];
        for p in ok {
            assert!(p.validate("snapshot_policy").is_ok(), "{p:?}");
        }
        let bad = [
            (24 * 31, 7, "snapshot_policy.interval_hours"),
            (24, 0, "snapshot_policy.retention"),
            (24, 101, "snapshot_policy.retention"),
        ];
        for (interval_hours, retention, field) in bad {
            let p = SnapshotPolicy {
                interval_hours,
                retention,
            };
            let e = p.validate("snapshot_policy").expect_err("refused");
            assert!(format!("{e:?}").contains(field), "{e:?}");
        }
    }
}
