//! Small constructors on the generated messages, so that a request reads like what
//! it asks for.

use crate::v1;
use crate::v1::{
    CreateClusterResponse, CreateSnapshotResponse, DeleteClusterResponse, RestoreSnapshotResponse,
    UpdateClusterResponse,
};

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

impl v1::CreateClusterRequest {
    /// Creates the cluster from a snapshot: once it runs, `source`'s indices are
    /// restored into it (the create's `restore` stage), then it must be green.
    ///
    /// ```
    /// use esaas_client::v1::{ClusterSpec, CreateClusterRequest, RestoreSource};
    /// let req = CreateClusterRequest::new("tenants/search", "logs-restored", ClusterSpec::new("8.17.10"))
    ///     .with_restore_from(RestoreSource::new("tenants/search/clusters/logs", "final-20261201-120000-a1b2c3"));
    /// assert_eq!(req.restore_from.unwrap().snapshot, "final-20261201-120000-a1b2c3");
    /// ```
    pub fn with_restore_from(mut self, source: v1::RestoreSource) -> Self {
        self.restore_from = Some(source);
        self
    }
}

impl v1::RestoreSource {
    /// Snapshot `snapshot` (its id, as [`crate::Client::list_snapshots`] gives it) of
    /// cluster `cluster` (`tenants/{tenant}/clusters/{cluster}`, perhaps deleted), every
    /// index in it.
    ///
    /// ```
    /// let src = esaas_client::v1::RestoreSource::new("tenants/search/clusters/logs", "manual-1");
    /// assert!(src.indices.is_empty(), "every index");
    /// ```
    pub fn new(cluster: impl Into<String>, snapshot: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            snapshot: snapshot.into(),
            indices: Vec::new(),
        }
    }

    /// Only these indices.
    ///
    /// ```
    /// let src = esaas_client::v1::RestoreSource::new("tenants/search/clusters/logs", "manual-1")
    ///     .with_indices(&["orders", "users"]);
    /// assert_eq!(src.indices, ["orders", "users"]);
    /// ```
    pub fn with_indices<S: AsRef<str>>(mut self, indices: &[S]) -> Self {
        self.indices = indices.iter().map(|i| i.as_ref().to_string()).collect();
        self
    }
}

impl v1::DeleteClusterRequest {
    /// A delete of cluster `name` (`tenants/{tenant}/clusters/{cluster}`), which takes
    /// a final snapshot first when the platform has a snapshot bucket.
    ///
    /// ```
    /// let req = esaas_client::v1::DeleteClusterRequest::new("tenants/search/clusters/logs");
    /// assert!(!req.skip_final_snapshot);
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Deletes without taking a final snapshot first (`skip_final_snapshot`); a
    /// delete stalled on its final snapshot gives way to one with this set.
    ///
    /// ```
    /// let req = esaas_client::v1::DeleteClusterRequest::new("tenants/search/clusters/logs")
    ///     .without_final_snapshot();
    /// assert!(req.skip_final_snapshot);
    /// ```
    pub fn without_final_snapshot(mut self) -> Self {
        self.skip_final_snapshot = true;
        self
    }
}

impl v1::CreateSnapshotRequest {
    /// A snapshot of cluster `name` (`tenants/{tenant}/clusters/{cluster}`); the
    /// client gives it its request id.
    ///
    /// ```
    /// let req = esaas_client::v1::CreateSnapshotRequest::new("tenants/search/clusters/logs");
    /// assert_eq!(req.name, "tenants/search/clusters/logs");
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            request_id: String::new(),
        }
    }
}

impl v1::ListSnapshotsRequest {
    /// The snapshots of the clusters that had the name `parent`
    /// (`tenants/{tenant}/clusters/{cluster}`), in pages of the server's default size.
    ///
    /// ```
    /// let req = esaas_client::v1::ListSnapshotsRequest::new("tenants/search/clusters/logs");
    /// assert_eq!(req.page_size, 0);
    /// ```
    pub fn new(parent: impl Into<String>) -> Self {
        Self {
            parent: parent.into(),
            ..Default::default()
        }
    }
}

impl v1::RestoreSnapshotRequest {
    /// A restore of `source` (whose `indices` must name at least one index) into the
    /// running cluster `name`.
    ///
    /// ```
    /// use esaas_client::v1::{RestoreSnapshotRequest, RestoreSource};
    /// let req = RestoreSnapshotRequest::new(
    ///     "tenants/search/clusters/logs",
    ///     RestoreSource::new("tenants/search/clusters/logs", "manual-1").with_indices(&["orders"]),
    /// );
    /// assert_eq!(req.source.unwrap().indices, ["orders"]);
    /// ```
    pub fn new(name: impl Into<String>, source: v1::RestoreSource) -> Self {
        Self {
            name: name.into(),
            source: Some(source),
            request_id: String::new(),
        }
    }
}

impl CreateSnapshotResponse {
    /// The id of the snapshot the queued operation takes (`Snapshot.snapshot_id`).
    ///
    /// ```
    /// use esaas_client::v1::{CreateSnapshotResponse, Operation};
    /// let r = CreateSnapshotResponse {
    ///     operation: Some(Operation { snapshot: "manual-1".into(), ..Default::default() }),
    /// };
    /// assert_eq!(r.snapshot_id(), "manual-1");
    /// ```
    pub fn snapshot_id(&self) -> &str {
        self.operation
            .as_ref()
            .map(|o| o.snapshot.as_str())
            .unwrap_or_default()
    }
}

impl DeleteClusterResponse {
    /// The final snapshot the delete takes first, if it takes one (its id).
    ///
    /// ```
    /// use esaas_client::v1::{DeleteClusterResponse, FinalSnapshot};
    /// assert_eq!(DeleteClusterResponse::default().final_snapshot_id(), None);
    /// let r = DeleteClusterResponse {
    ///     final_snapshot: Some(FinalSnapshot { taken: true, snapshot: "final-1".into(), ..Default::default() }),
    ///     ..Default::default()
    /// };
    /// assert_eq!(r.final_snapshot_id(), Some("final-1"));
    /// ```
    pub fn final_snapshot_id(&self) -> Option<&str> {
        self.final_snapshot
            .as_ref()
            .filter(|f| f.taken)
            .map(|f| f.snapshot.as_str())
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
    DeleteClusterResponse,
    CreateSnapshotResponse,
    RestoreSnapshotResponse
);
