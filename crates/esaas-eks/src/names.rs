//! Node group names: `{tenant}-{cluster}-{node set}-{zone suffix}` (the
//! suffix is what follows the zone's last `-`: `1a` of `us-east-1a`), at most 63 characters
//! (EKS's limit). The id limits in `esaas-core` make every name fit; if they
//! are ever raised, a long name keeps its readable start and ends in a hash.

use esaas_core::names::{ClusterId, TenantId};
use sha2::{Digest, Sha256};

const MAX: usize = 63;

/// The start every node group name of the cluster shares.
pub fn cluster_prefix(tenant: &TenantId, cluster: &ClusterId) -> String {
    format!("{tenant}-{cluster}-")
}

/// The node group name of a node set in one zone.
pub fn node_group_name(
    tenant: &TenantId,
    cluster: &ClusterId,
    node_set: &str,
    zone: &str,
) -> String {
    let suffix = zone.rsplit('-').next().unwrap_or(zone);
    let full = format!("{}{node_set}-{suffix}", cluster_prefix(tenant, cluster));
    if full.len() <= MAX {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..5]);
    let keep = MAX - hash.len() - 1;
    format!("{}-{hash}", &full[..keep].trim_end_matches('-'))
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
        assert_eq!(
            node_group_name(&t("search"), &c("logs"), "data", "us-east-1a"),
            "search-logs-data-1a"
        );
        assert_eq!(
            node_group_name(&t("search"), &c("logs"), "data", "local"),
            "search-logs-data-local"
        );
        let (tt, cc, nn) = (t(&"t".repeat(20)), c(&"c".repeat(24)), "n".repeat(16));
        let long = node_group_name(&tt, &cc, &nn, "eu-central-1a");
        assert_eq!(long.len(), 63, "the longest ids end in a hash");
        assert!(long.starts_with(&cluster_prefix(&tt, &cc)));
        assert_ne!(
            long,
            node_group_name(&tt, &cc, &nn, "eu-central-1b"),
            "zones differ"
        );
    }
}
