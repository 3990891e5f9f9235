//! Small constructors on the generated messages, so that a request reads like what
//! it asks for.

use crate::v1;
use crate::v1::{CreateClusterResponse, DeleteClusterResponse, UpdateClusterResponse};

impl v1::ClusterSpec {
    /// A spec for Elasticsearch `version` with no node set yet.
    ///
    /// ```
    /// let spec = esaas_client::v1::ClusterSpec::new("8.17.10");
    /// assert_eq!(spec.version, "8.17.10");
    /// ```
    pub fn new(version: impl Into<String>) -> Self {
        Self {
            version: version.into(),
            ..Default::default()
        }
    }

    /// Adds a node set.
    ///
    /// ```
    /// use esaas_client::v1::{ClusterSpec, NodeSet};
    /// let spec = ClusterSpec::new("8.17.10").with_node_set(NodeSet::new("default", 3, "small", 100));
    /// assert_eq!(spec.node_sets.len(), 1);
    /// ```
    pub fn with_node_set(mut self, node_set: v1::NodeSet) -> Self {
        self.node_sets.push(node_set);
        self
    }

    /// Spreads the nodes over `zones` availability zones.
    ///
    /// ```
    /// let spec = esaas_client::v1::ClusterSpec::new("8.17.10").with_zone_count(3);
    /// assert_eq!(spec.zone_count, 3);
    /// ```
    pub fn with_zone_count(mut self, zones: i32) -> Self {
        self.zone_count = zones;
        self
    }
}

impl v1::NodeSet {
    /// `count` nodes of `size_class`, each with `storage_gib` of gp3 storage at the
    /// baseline IOPS and throughput, and no role yet.
    ///
    /// ```
    /// let ns = esaas_client::v1::NodeSet::new("data", 3, "large", 500);
    /// assert_eq!((ns.count, ns.storage_gib), (3, 500));
    /// ```
    pub fn new(
        name: impl Into<String>,
        count: i32,
        size_class: impl Into<String>,
        storage_gib: i32,
    ) -> Self {
        Self {
            name: name.into(),
            count,
            size_class: size_class.into(),
            storage_gib,
            ..Default::default()
        }
    }

    /// With these Elasticsearch roles.
    ///
    /// ```
    /// use esaas_client::v1::{NodeRole, NodeSet};
    /// let ns = NodeSet::new("default", 3, "small", 100).with_roles(&[NodeRole::Master, NodeRole::Data]);
    /// assert_eq!(ns.roles().collect::<Vec<_>>(), [NodeRole::Master, NodeRole::Data]);
    /// ```
    pub fn with_roles(mut self, roles: &[v1::NodeRole]) -> Self {
        self.roles = roles.iter().map(|r| *r as i32).collect();
        self
    }

    /// With provisioned gp3 IOPS and throughput (MiB/s) per node.
    ///
    /// ```
    /// let ns = esaas_client::v1::NodeSet::new("data", 3, "large", 500).with_performance(6000, 250);
    /// assert_eq!(ns.storage_iops, 6000);
    /// ```
    pub fn with_performance(mut self, iops: i32, throughput_mibps: i32) -> Self {
        self.storage_iops = iops;
        self.storage_throughput_mibps = throughput_mibps;
        self
    }
}

impl v1::CreateClusterRequest {
    /// A request for cluster `cluster_id` of `parent` (`tenants/{tenant}`) with `spec`.
    ///
    /// ```
    /// use esaas_client::v1::{ClusterSpec, CreateClusterRequest};
    /// let req = CreateClusterRequest::new("tenants/search", "logs", ClusterSpec::new("8.17.10"));
    /// assert_eq!(req.cluster_id, "logs");
    /// ```
    pub fn new(
        parent: impl Into<String>,
        cluster_id: impl Into<String>,
        spec: v1::ClusterSpec,
    ) -> Self {
        Self {
            parent: parent.into(),
            cluster_id: cluster_id.into(),
            cluster: Some(v1::Cluster {
                spec: Some(spec),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

macro_rules! operation_name {
    ($($t:ty),+) => {$(
        impl $t {
            /// The name of the operation the change queued (`operations/{id}`); empty
            /// for a dry run, or a change that changed nothing.
            ///
            /// ```
            #[doc = concat!("let r = esaas_client::v1::", stringify!($t), "::default();")]
            /// assert_eq!(r.operation_name(), "");
            /// ```
            pub fn operation_name(&self) -> &str {
                self.operation.as_ref().map(|o| o.name.as_str()).unwrap_or_default()
            }
        }
    )+};
}
operation_name!(
    CreateClusterResponse,
    UpdateClusterResponse,
    DeleteClusterResponse
);
