//! Where a cluster's pods run: the labels its EKS node groups give their
//! nodes, and the taint that keeps every other pod off them. The EKS adapter
//! puts both on the node groups; the Kubernetes adapter selects the same
//! labels and tolerates the same taint. Defined once, here: if the two sides
//! disagreed, the pods would stay Pending for ever.
//!
//! And in which availability zones: an EBS volume lives in one zone and its
//! pod can only run there, so every pod's zone is fixed before its volume is
//! made. A cluster gets `zone_count` zones at creation ([`choose_zones`]),
//! kept in its spec; pod `n` of a node set lives in zone `n % zone_count`
//! ([`zone_of`]); each node set has one node group per zone, sized to the
//! pods of that zone ([`zone_sizes`]). A node that EKS replaces or adds
//! lands in its node group's zone, where the volume is; a scale-in removes
//! the highest ordinals, so every zone's count stays what the rule says.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::backend::Target;
use crate::catalog::Catalog;
use crate::spec::ClusterSpec;

/// Node label: the tenant whose cluster owns the node.
pub const TENANT_LABEL: &str = "esaas.io/tenant";
/// Node label: the cluster id within the tenant.
pub const CLUSTER_LABEL: &str = "esaas.io/cluster";
/// Node label: the node set.
pub const NODE_SET_LABEL: &str = "esaas.io/node-set";
/// The key of the taint on every node of a cluster's node groups.
pub const DEDICATED_TAINT_KEY: &str = "esaas.io/dedicated";

/// A `NoSchedule` taint: only pods that tolerate it (key and value) land on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Taint key.
    pub key: &'static str,
    /// Taint value, matched with the `Equal` operator.
    pub value: String,
}

/// The labels of the nodes of `node_set`'s node group, which its pods select.
pub fn node_labels(target: &Target, node_set: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT_LABEL.to_string(), target.tenant.to_string()),
        (CLUSTER_LABEL.to_string(), target.cluster_id.to_string()),
        (NODE_SET_LABEL.to_string(), node_set.to_string()),
    ])
}

/// The taint of every node group of the cluster, which its pods tolerate.
pub fn dedicated_taint(target: &Target) -> Taint {
    Taint {
        key: DEDICATED_TAINT_KEY,
        value: format!("{}.{}", target.tenant, target.cluster_id),
    }
}

/// The zones of a new cluster: `zone_count` of the `offered` zones, by
/// rendezvous hashing on its uid (clusters spread evenly over the zones; a
/// zone added to the offer later moves no cluster that exists, since the
/// choice is kept in the spec), listed in offered order. Fewer when fewer
/// are offered (the catalog check refuses such a zone count first).
pub fn choose_zones(uid: Uuid, zone_count: i32, offered: &[String]) -> Vec<String> {
    let want = usize::try_from(zone_count.max(1)).unwrap_or(1);
    let mut ranked: Vec<(Vec<u8>, usize)> = offered
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let mut h = Sha256::new();
            h.update(uid.as_bytes());
            h.update(z.as_bytes());
            (h.finalize().to_vec(), i)
        })
        .collect();
    ranked.sort();
    let mut picked: Vec<usize> = ranked.into_iter().take(want).map(|(_, i)| i).collect();
    picked.sort_unstable();
    picked.into_iter().map(|i| offered[i].clone()).collect()
}

/// The zones of a cluster: those its spec records, else (a cluster recorded
/// before zones were) the first `zone_count` offered.
pub fn cluster_zones(spec: &ClusterSpec, catalog: &Catalog) -> Vec<String> {
    if !spec.zones.is_empty() {
        return spec.zones.clone();
    }
    let want = usize::try_from(spec.zone_count.max(1)).unwrap_or(1);
    catalog.zones.iter().take(want).cloned().collect()
}

/// The zone of pod `ordinal`: round robin over the cluster's zones.
pub fn zone_of(zones: &[String], ordinal: i32) -> Option<&str> {
    let n = i32::try_from(zones.len()).ok().filter(|n| *n > 0)?;
    let i = usize::try_from(ordinal.rem_euclid(n)).ok()?;
    zones.get(i).map(String::as_str)
}

/// Nodes per zone for pods `0..replicas`: every zone of the cluster, in its
/// order, with the number of pods [`zone_of`] puts there (0 included).
pub fn zone_sizes(zones: &[String], replicas: i32) -> Vec<(String, i32)> {
    let n = i32::try_from(zones.len()).unwrap_or(i32::MAX).max(1);
    let replicas = replicas.max(0);
    zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            // Ordinals i, i + n, i + 2n, ... below `replicas`.
            let count = if i < replicas {
                (replicas - i - 1) / n + 1
            } else {
                0
            };
            (z.clone(), count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::target;

    fn zones(names: &[&str]) -> Vec<String> {
        names.iter().map(|z| z.to_string()).collect()
    }

    #[test]
    fn pods_go_round_robin_and_node_groups_follow() {
        let z = zones(&["a", "b", "c"]);
        let cases: &[(i32, &[i32])] = &[
            (0, &[0, 0, 0]),
            (1, &[1, 0, 0]),
            (2, &[1, 1, 0]),
            (3, &[1, 1, 1]),
            (5, &[2, 2, 1]),
            (7, &[3, 2, 2]),
            (-1, &[0, 0, 0]),
        ];
        for (replicas, want) in cases {
            let got: Vec<i32> = zone_sizes(&z, *replicas)
                .into_iter()
                .map(|(_, n)| n)
                .collect();
            assert_eq!(&got, want, "{replicas} replicas");
            // The sizes are exactly the zones of the pods.
            for (i, (zone, n)) in zone_sizes(&z, *replicas).iter().enumerate() {
                let pods = (0..*replicas).filter(|o| zone_of(&z, *o) == Some(zone.as_str()));
                assert_eq!(pods.count() as i32, *n, "zone {i}");
            }
        }
        assert_eq!(zone_of(&z, 4), Some("b"));
        assert_eq!(zone_of(&[], 4), None);
        assert_eq!(zone_sizes(&zones(&["a"]), 4), vec![("a".to_string(), 4)]);
    }

    #[test]
    fn a_scale_in_leaves_every_remaining_pod_its_zone() {
        let z = zones(&["a", "b", "c"]);
        // From 5 to 3: ordinals 3 and 4 leave, from zones a and b.
        let before = zone_sizes(&z, 5);
        let after = zone_sizes(&z, 3);
        let shrunk: Vec<&str> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.1 > a.1)
            .map(|(b, _)| b.0.as_str())
            .collect();
        assert_eq!(shrunk, vec!["a", "b"]);
        assert_eq!(zone_of(&z, 3), Some("a"));
        assert_eq!(zone_of(&z, 4), Some("b"));
    }

    #[test]
    fn zones_are_chosen_once_spread_and_stable() {
        let offered = zones(&["us-east-1a", "us-east-1b", "us-east-1c"]);
        let mut first = BTreeMap::<String, usize>::new();
        for i in 0..300u128 {
            let uid = Uuid::from_u128(i * 7919 + 1);
            let picked = choose_zones(uid, 1, &offered);
            assert_eq!(picked.len(), 1);
            assert_eq!(picked, choose_zones(uid, 1, &offered), "deterministic");
            *first.entry(picked[0].clone()).or_default() += 1;
            let two = choose_zones(uid, 2, &offered);
            assert!(two.contains(&picked[0]), "more zones keep the first");
            assert!(two[0] < two[1], "listed in offered order");
            assert_eq!(choose_zones(uid, 3, &offered), offered);
            // Offering a fourth zone moves a one-zone cluster only onto it.
            let more = zones(&["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]);
            let moved = choose_zones(uid, 1, &more);
            assert!(moved == picked || moved[0] == "us-east-1d");
        }
        // Spread: each zone gets a fair share of 300 one-zone clusters.
        assert_eq!(first.len(), 3);
        assert!(first.values().all(|n| (70..=130).contains(n)), "{first:?}");
        assert_eq!(choose_zones(Uuid::nil(), 2, &offered[..1]).len(), 1);
    }

    #[test]
    fn recorded_zones_win_over_the_offer() {
        let catalog = Catalog::test();
        let mut spec = ClusterSpec::test();
        spec.zone_count = 2;
        assert_eq!(cluster_zones(&spec, &catalog), catalog.zones[..2].to_vec());
        spec.zones = zones(&["us-east-1c", "us-east-1b"]);
        assert_eq!(cluster_zones(&spec, &catalog), spec.zones);
    }

    #[test]
    fn nodes_are_labelled_and_tainted_per_cluster() {
        let t = target("acme", "logs");
        let labels = node_labels(&t, "data");
        assert_eq!(labels[TENANT_LABEL], "acme");
        assert_eq!(labels[CLUSTER_LABEL], "logs");
        assert_eq!(labels[NODE_SET_LABEL], "data");
        assert_eq!(dedicated_taint(&t).value, "acme.logs");
    }
}
