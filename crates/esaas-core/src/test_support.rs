//! Builders for tests, here and in other crates (feature `test-support`):
//! small valid values a test changes the one field it is about in.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::backend::Target;
use crate::catalog::{Catalog, SizeClass};
use crate::cluster::{Cluster, ClusterState, Health};
use crate::names::{ClusterId, TenantId};
use crate::operation::{Initiator, InitiatorKind, Operation, OperationKind, OperationState, Stage};
use crate::spec::{
    ClusterSpec, GP3_BASELINE_IOPS, GP3_BASELINE_THROUGHPUT, NodeRole, NodeSet, VolumeRetention,
};
use crate::tenant::{Quota, QuotaUsage, Tenant};

impl ClusterSpec {
    /// One master+data node set of one small node with 50 GiB.
    pub fn test() -> Self {
        ClusterSpec {
            version: "8.15.3".into(),
            node_sets: vec![NodeSet::test("default")],
            zone_count: 1,
            zones: Vec::new(),
            volume_retention: VolumeRetention::Delete,
            deletion_protection: false,
            maintenance_window: None,
            change_freezes: Vec::new(),
            snapshot_policy: None,
        }
        .with_defaults()
    }

    /// Sets the node count of the first node set.
    pub fn with_nodes(mut self, count: i32) -> Self {
        if let Some(ns) = self.node_sets.first_mut() {
            ns.count = count;
        }
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: &str) -> Self {
        self.version = version.into();
        self
    }
}

impl NodeSet {
    /// A single master+data node of size `small` with 50 GiB.
    pub fn test(name: &str) -> Self {
        NodeSet {
            name: name.into(),
            roles: vec![NodeRole::Master, NodeRole::Data],
            count: 1,
            size_class: "small".into(),
            storage_gib: 50,
            storage_iops: GP3_BASELINE_IOPS,
            storage_throughput_mibps: GP3_BASELINE_THROUGHPUT,
        }
    }
}

impl Catalog {
    /// Four versions (8.15 and 8.17 go to 8.19, 8.19 to 9.1), two size
    /// classes, the usual bounds.
    pub fn test() -> Self {
        let upgrades = [
            ("8.15", &["8.17", "8.19"][..]),
            ("8.17", &["8.19"][..]),
            ("8.19", &["9.1"][..]),
        ];
        Catalog {
            versions: vec![
                "8.15.3".into(),
                "8.17.1".into(),
                "8.19.3".into(),
                "9.1.0".into(),
            ],
            upgrades: upgrades
                .iter()
                .map(|(from, to)| (from.to_string(), to.iter().map(|t| t.to_string()).collect()))
                .collect(),
            size_classes: vec![
                SizeClass {
                    name: "small".into(),
                    instance_type: "r6i.large".into(),
                    cpu_millis: 1500,
                    memory_mib: 12288,
                },
                SizeClass {
                    name: "large".into(),
                    instance_type: "r6i.2xlarge".into(),
                    cpu_millis: 7000,
                    memory_mib: 57344,
                },
            ],
            min_storage_gib: 10,
            max_storage_gib: 16384,
            max_node_sets: 8,
            max_nodes_per_set: 50,
            max_zones: 3,
            zones: ["us-east-1a", "us-east-1b", "us-east-1c"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// A fixed instant, so tests compare whole values.
pub fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

/// `id` as a tenant id (it must be a valid one).
pub fn tenant_id(id: &str) -> TenantId {
    TenantId::parse("tenant", id).unwrap_or_else(|e| panic!("bad test tenant id {id:?}: {e}"))
}

/// `id` as a cluster id (it must be a valid one).
pub fn cluster_id(id: &str) -> ClusterId {
    ClusterId::parse("cluster", id).unwrap_or_else(|e| panic!("bad test cluster id {id:?}: {e}"))
}

/// The target of cluster `cluster` of `tenant` with [`ClusterSpec::test`].
pub fn target(tenant: &str, cluster: &str) -> Target {
    Target {
        uid: Uuid::from_u128(1),
        tenant: tenant_id(tenant),
        cluster_id: cluster_id(cluster),
        spec: ClusterSpec::test(),
        generation: 1,
        operation: Uuid::from_u128(2),
    }
}

impl Tenant {
    /// Tenant `team` with room for everything and no usage.
    pub fn test() -> Self {
        Tenant {
            id: tenant_id("team"),
            display_name: "team".into(),
            quota: Quota {
                max_clusters: 10,
                max_nodes: 100,
                max_storage_gib: 100_000,
            },
            usage: QuotaUsage::default(),
            create_time: t0(),
            update_time: t0(),
        }
    }
}

impl Cluster {
    /// Cluster `logs` of tenant `team`, READY at generation 1 with [`ClusterSpec::test`].
    pub fn test() -> Self {
        Cluster {
            uid: Uuid::from_u128(0x10),
            tenant: tenant_id("team"),
            cluster_id: cluster_id("logs"),
            spec: ClusterSpec::test(),
            generation: 1,
            observed_generation: 1,
            state: ClusterState::Ready,
            health: Health::Green,
            endpoint: Some("https://logs-es-http.esaas-team.svc:9200".into()),
            conditions: Vec::new(),
            message: "generation 1 applied".into(),
            current_operation: None,
            version: 5,
            revision: 7,
            create_time: t0(),
            update_time: t0(),
            delete_time: None,
            storage_change_time: None,
            retained_volumes: Vec::new(),
            certificate_expire_time: None,
            snapshots: Default::default(),
        }
    }
}

impl Operation {
    /// A queued operation of `kind` on [`Cluster::test`], by the tenant.
    pub fn test(kind: OperationKind) -> Self {
        let cluster = Cluster::test();
        Operation {
            id: Uuid::from_u128(0x20),
            tenant: cluster.tenant.clone(),
            cluster_id: cluster.cluster_id.clone(),
            cluster_uid: cluster.uid,
            kind,
            state: OperationState::Queued,
            initiator: Initiator::test(),
            target_generation: cluster.generation,
            stages: kind.stages().iter().map(|n| Stage::pending(*n)).collect(),
            attempts: Vec::new(),
            max_attempts: 3,
            blocking_check: None,
            error: None,
            create_time: t0(),
            start_time: None,
            end_time: None,
            update_time: t0(),
            next_attempt_time: t0(),
            not_before: None,
            version: 1,
            lease: None,
            lease_token: 0,
            checkpoint: None,
            cancel_requested: false,
            traceparent: None,
            gate_override: None,
            params: Default::default(),
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: u128) -> Self {
        self.id = Uuid::from_u128(id);
        self
    }

    /// Sets the state.
    pub fn with_state(mut self, state: OperationState) -> Self {
        self.state = state;
        self
    }
}

impl Initiator {
    /// A tenant admin's key.
    pub fn test() -> Self {
        Initiator {
            kind: InitiatorKind::Tenant,
            principal: "tenants/team/apiKeys/00000000-0000-0000-0000-000000000001".into(),
        }
    }
}
