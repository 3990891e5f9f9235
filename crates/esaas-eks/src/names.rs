//! Node group names: `esaas-{tenant}-{cluster}-{node set}-{zone suffix}-{uid hash}`
//! (the zone suffix is what follows the zone's last `-`: `1a` of `us-east-1a`;
//! the hash is 8 hex digits of the SHA-256 of the cluster's uid), at most 63
//! characters (EKS's limit).
//!
//! - The `esaas-` start is what the worker's IAM policy scopes node group
//!   actions to (`deploy/iam/worker-policy.json`): node groups of other teams
//!   in the same EKS cluster are out of its reach unless they take that start.
//! - The uid hash keeps apart what the readable part cannot: ids contain `-`,
//!   so tenant `a-b` cluster `c` and tenant `a` cluster `b-c` read the same;
//!   the hash also tells a cluster from an earlier one of the same name whose
//!   node groups are still being deleted.
//! - A name longer than 63 keeps its readable start (the cluster prefix
//!   always fits) and ends in 10 hex digits of the hash of uid, node set and
//!   zone instead, so it still differs from every other group's.
//!
//! Ownership is never read from a name: the `esaas.io/cluster-uid` tag decides.

use esaas_core::names::{ClusterId, TenantId, uid_hash};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const MAX: usize = 63;
/// Hex digits of the uid hash at the end of a name.
const HASH_LEN: usize = 8;
/// The start of every node group name esaas makes.
pub const NAME_PREFIX: &str = "esaas-";

/// The start every node group name of the cluster shares (other clusters'
/// names may share it too: `a`/`b-c` and `a-b`/`c`; only the tag is proof).
pub fn cluster_prefix(tenant: &TenantId, cluster: &ClusterId) -> String {
    format!("{NAME_PREFIX}{tenant}-{cluster}-")
}

/// The node group name of a node set in one zone of the cluster `uid`.
pub fn node_group_name(
    uid: &Uuid,
    tenant: &TenantId,
    cluster: &ClusterId,
    node_set: &str,
    zone: &str,
) -> String {
    let suffix = zone.rsplit('-').next().unwrap_or(zone);
    let readable = format!("{}{node_set}-{suffix}", cluster_prefix(tenant, cluster));
    let full = format!("{readable}-{}", uid_hash(uid, HASH_LEN));
    if full.len() <= MAX {
        return full;
    }
    let digest = Sha256::digest(format!("{uid}/{node_set}/{zone}").as_bytes());
    let hash = &hex::encode(digest)[..10];
    let keep = MAX - hash.len() - 1;
    format!("{}-{hash}", readable[..keep].trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse("t", s).expect("tenant")
    }

    fn c(s: &str) -> ClusterId {
        ClusterId::parse("c", s).expect("cluster")
    }

    #[test]
    fn names_are_readable_and_fit() {
        let uid = Uuid::from_u128(7);
        let h = uid_hash(&uid, 8);
        assert_eq!(
            node_group_name(&uid, &t("search"), &c("logs"), "data", "us-east-1a"),
            format!("esaas-search-logs-data-1a-{h}")
        );
        assert_eq!(
            node_group_name(&uid, &t("search"), &c("logs"), "data", "local"),
            format!("esaas-search-logs-data-local-{h}")
        );
        let (tt, cc, nn) = (t(&"t".repeat(20)), c(&"c".repeat(24)), "n".repeat(16));
        let long = node_group_name(&uid, &tt, &cc, &nn, "eu-central-1a");
        assert!(long.len() <= 63, "the longest ids end in a hash: {long}");
        assert!(!long.ends_with(&h), "{long}");
        assert!(long.starts_with(&cluster_prefix(&tt, &cc)));
        assert_ne!(
            long,
            node_group_name(&uid, &tt, &cc, &nn, "eu-central-1b"),
            "zones differ"
        );
        assert_ne!(
            long,
            node_group_name(&Uuid::from_u128(8), &tt, &cc, &nn, "eu-central-1a"),
            "clusters differ"
        );
    }

    #[test]
    fn ids_that_read_alike_get_different_names() {
        let (one, two) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // Tenant a-b cluster c, and tenant a cluster b-c.
        let a = node_group_name(&one, &t("a-b"), &c("c"), "d", "us-east-1a");
        let b = node_group_name(&two, &t("a"), &c("b-c"), "d", "us-east-1a");
        assert_ne!(a, b);
        // One tenant: cluster a node set b-c, and cluster a-b node set c.
        let a = node_group_name(&one, &t("x"), &c("a"), "b-c", "us-east-1a");
        let b = node_group_name(&two, &t("x"), &c("a-b"), "c", "us-east-1a");
        assert_ne!(a, b);
        // A later cluster of the same name.
        let a = node_group_name(&one, &t("x"), &c("a"), "d", "us-east-1a");
        let b = node_group_name(&two, &t("x"), &c("a"), "d", "us-east-1a");
        assert_ne!(a, b);
    }
}
