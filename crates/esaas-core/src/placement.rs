//! Where a cluster's pods run: the labels its EKS node groups give their
//! nodes, and the taint that keeps every other pod off them. The EKS adapter
//! puts both on the node groups; the Kubernetes adapter selects the same
//! labels and tolerates the same taint. Defined once, here: if the two sides
//! disagreed, the pods would stay Pending for ever.

use std::collections::BTreeMap;

use crate::backend::Target;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::target;

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
