//! The planner: a pure function from (goal, observed state) to the next step
//! an operation takes. The worker's executor observes the world through the
//! backends, asks `next_step`, performs that one step, and asks again, so a
//! worker killed at any point resumes by observing, never by remembering.
//!
//! Steps are idempotent by construction: each one states a desired end
//! ("node group X has N nodes"), not a delta.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::Health;
use crate::operation::{OperationKind, OperationParams, StageName};
use crate::snapshots::{RestoreSource, SnapshotObs, SnapshotPolicy, SnapshotState};
use crate::spec::{ClusterSpec, VolumeRetention};

/// The key of a pod in [`HealthObs::shards_on_excluded`].
pub fn node_key(node_set: &str, ordinal: i32) -> String {
    format!("{node_set}/{ordinal}")
}

/// What an operation drives the cluster to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Goal {
    /// Create or change the cluster until it matches `spec` and is healthy.
    Converge(ClusterSpec),
    /// Create the cluster as `spec` asks and, once Elasticsearch answers,
    /// restore `source` into it, then be healthy.
    CreateRestoring {
        /// The spec to build.
        spec: ClusterSpec,
        /// What to restore.
        source: RestoreSource,
    },
    /// Remove everything of the cluster.
    Delete {
        /// What happens to the volumes.
        retention: VolumeRetention,
        /// The snapshot taken before anything is removed (`None`: none).
        final_snapshot: Option<String>,
    },
    /// Take snapshot `name`, then delete the scheduled snapshots `policy`'s
    /// retention lets go.
    Snapshot {
        /// The snapshot this operation takes.
        name: String,
        /// The cluster's policy (its retention).
        policy: SnapshotPolicy,
    },
    /// Restore indices of a snapshot into the running cluster, then be healthy.
    Restore {
        /// What to restore.
        source: RestoreSource,
    },
    /// Renew the certificates once, for this operation, then be healthy.
    RotateCertificates {
        /// The operation the rotation is for (the Secret records it).
        operation: Uuid,
    },
    /// Move every node group to the platform's node image `release` (an
    /// EKS release version), one zone's group at a time, master-eligible
    /// node sets last, then be healthy.
    RotateNodes {
        /// The cluster's spec (its node sets, zones and counts).
        spec: ClusterSpec,
        /// The release version every node group is to run.
        release: String,
    },
}

/// Lifecycle of an EKS node group as the backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeGroupStatus {
    /// Being created.
    Creating,
    /// Ready.
    Active,
    /// Being changed (scaling).
    Updating,
    /// Being deleted.
    Deleting,
    /// Failed to create or degraded; the backend's message says why.
    Failed,
}

/// One node group as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeGroupObs {
    /// EC2 instance type.
    pub instance_type: String,
    /// Desired size of its scaling config.
    pub desired_size: i32,
    /// Lifecycle.
    pub status: NodeGroupStatus,
    /// Health issues or status message, if any.
    pub message: String,
    /// The node set's groups one by one, by zone (one EKS node group per
    /// node set and zone).
    #[serde(default)]
    pub zones: BTreeMap<String, ZoneGroupObs>,
}

/// The node group of one node set in one zone, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneGroupObs {
    /// Desired size of its scaling config.
    pub desired_size: i32,
    /// Lifecycle (UPDATING while EKS replaces its nodes).
    pub status: NodeGroupStatus,
    /// The node image its nodes run: EKS's release version (AMI release
    /// and Kubernetes version), empty when EKS does not say.
    pub release_version: String,
}

/// One node set's Elasticsearch workload (its StatefulSet) as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadObs {
    /// Desired replicas of the StatefulSet.
    pub replicas: i32,
    /// Pods ready at the StatefulSet's current revision.
    pub ready_replicas: i32,
    /// Elasticsearch version the StatefulSet runs.
    pub version: String,
    /// Whether the StatefulSet's template matches the spec at the operation's
    /// generation (size class, storage, roles, version), as the backend judges it.
    pub up_to_date: bool,
    /// Pods running the StatefulSet's current template.
    pub updated_replicas: i32,
    /// Pods with an ordinal below this keep the previous template (a rollout
    /// held or in progress); 0 when nothing is held back.
    pub partition: i32,
    /// Whether the StatefulSet's claim template asks for the volumes the spec
    /// wants (size, attributes class). A claim template cannot change on a
    /// StatefulSet: one that does not is replaced, its pods orphaned and adopted.
    pub claims_up_to_date: bool,
    /// The node set's volumes (PVCs) that exist, by pod ordinal.
    pub volumes: Vec<VolumeObs>,
    /// Whether its nodes are master-eligible (as applied; the planner asks
    /// the spec first, this for a node set that left it).
    #[serde(default)]
    pub master_eligible: bool,
}

/// One data volume (PersistentVolumeClaim) as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeObs {
    /// The ordinal of the pod that mounts it.
    pub ordinal: i32,
    /// The size the claim asks for, GiB.
    pub requested_gib: i32,
    /// The size the volume has, GiB (below `requested_gib` while it grows).
    pub capacity_gib: i32,
    /// The VolumeAttributesClass the claim asks for (its IOPS and throughput).
    pub attributes_class: Option<String>,
    /// The attributes class the volume has now (lags while EBS modifies it).
    pub current_attributes_class: Option<String>,
}

impl VolumeObs {
    /// Whether the volume has what its claim asks for.
    pub fn settled(&self) -> bool {
        self.capacity_gib >= self.requested_gib
            && self.attributes_class == self.current_attributes_class
    }
}

/// Elasticsearch's view, from `_cluster/health` and `_cat/allocation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthObs {
    /// Cluster health.
    pub status: Health,
    /// Why it is not green, naming the index and node where possible.
    pub reason: String,
    /// Shards still held by each pod that is excluded from allocation, keyed
    /// by [`node_key`]. An excluded pod stays here, with 0 once drained,
    /// until it is removed; a pod that is not excluded does not appear.
    pub shards_on_excluded: BTreeMap<String, u64>,
    /// Node shutdowns registered (`_nodes/shutdown`), by [`node_key`], with
    /// whether Elasticsearch reports them COMPLETE (ready for the node to stop).
    #[serde(default)]
    pub shutdowns: BTreeMap<String, bool>,
    /// Nodes excluded from the voting configuration, by [`node_key`].
    #[serde(default)]
    pub voting_exclusions: BTreeSet<String>,
    /// Yellow only because of a rolling upgrade: every unassigned shard copy
    /// is a replica whose primary runs on a newer Elasticsearch version than
    /// every node that could take it (Elasticsearch never allocates a replica
    /// to a node older than its primary's). Never true when red.
    #[serde(default)]
    pub yellow_from_versions: bool,
    /// Disk in use per node, percent (`_cat/allocation`).
    #[serde(default)]
    pub disk_percent: BTreeMap<String, u32>,
}

/// Where a restore stands, as the cluster restoring sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreObs {
    /// Whether the source's repository is registered (read-only) in the cluster.
    pub source_registered: bool,
    /// The snapshot's state in the source repository (`None`: not there, or
    /// the repository is not registered yet).
    pub snapshot: Option<SnapshotState>,
    /// The indices the restore brings that the cluster does not have yet.
    pub pending: Vec<String>,
    /// Open indices of the names the restore would take that did not come
    /// from this snapshot: Elasticsearch refuses to restore over them.
    pub conflicts: Vec<String>,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Whether the tenant namespace and the cluster's shared objects (secret,
    /// config map, services, PDB, network policy) exist.
    pub base_objects: bool,
    /// Node groups by node set name.
    pub node_groups: BTreeMap<String, NodeGroupObs>,
    /// Workloads by node set name.
    pub workloads: BTreeMap<String, WorkloadObs>,
    /// Elasticsearch health, if Elasticsearch answered.
    pub health: Option<HealthObs>,
    /// The operation that last rotated the cluster's certificates.
    #[serde(default)]
    pub certificates_rotated_by: Option<Uuid>,
    /// Whether the cluster's own snapshot repository is registered as the
    /// platform wants it; `None` when snapshots are off or Elasticsearch
    /// did not answer (nothing to do then).
    #[serde(default)]
    pub snapshot_repository: Option<bool>,
    /// The snapshots in the cluster's own repository, when the goal takes
    /// one; `None` when not looked at or Elasticsearch did not answer.
    #[serde(default)]
    pub snapshots: Option<Vec<SnapshotObs>>,
    /// Where the goal's restore stands; `None` when there is none or
    /// Elasticsearch did not answer.
    #[serde(default)]
    pub restore: Option<RestoreObs>,
}

/// One step. The executor maps each to one backend call (or a wait).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Create or update the namespace and the cluster's shared objects.
    ApplyBaseObjects,
    /// Create the node group of `node_set`, or set its desired size to `size`.
    EnsureNodeGroup {
        /// Node set.
        node_set: String,
        /// Desired nodes.
        size: i32,
    },
    /// Wait until the node group of `node_set` is ACTIVE.
    WaitNodeGroupActive {
        /// Node set.
        node_set: String,
    },
    /// Exclude the pod `ordinal` of `node_set` (its highest) from shard
    /// allocation, so its shards move away before it is removed.
    DrainNode {
        /// Node set.
        node_set: String,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Let pod `ordinal` of `node_set` hold shards again: it was drained for
    /// a shrink that a later spec undid.
    IncludeNode {
        /// Node set.
        node_set: String,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Wait until that pod holds no shards (fails closed: an unknown count is not zero).
    WaitDrained {
        /// Node set.
        node_set: String,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Apply the StatefulSet of `node_set` with `replicas` at the spec's version.
    ApplyWorkload {
        /// Node set.
        node_set: String,
        /// Replicas.
        replicas: i32,
    },
    /// Grow the volumes of `node_set` to `storage_gib` and point them at the
    /// VolumeAttributesClass `attributes_class` (patching each claim; the
    /// storage driver expands and modifies the EBS volumes online).
    ResizeVolumes {
        /// Node set.
        node_set: String,
        /// The size every volume is to have, GiB.
        storage_gib: i32,
        /// The attributes class every volume is to have.
        attributes_class: String,
    },
    /// Wait until every volume of `node_set` has what its claim asks for.
    WaitVolumesResized {
        /// Node set.
        node_set: String,
    },
    /// Delete the StatefulSet of `node_set` but not its pods (orphan
    /// propagation), so that it can be applied again with new claim
    /// templates; the new one adopts the pods without restarting them.
    OrphanWorkload {
        /// Node set.
        node_set: String,
    },
    /// Register a node shutdown of type `restart` for pod `ordinal` of
    /// `node_set` before it restarts, so Elasticsearch does not move its
    /// shards away while it is gone.
    RegisterShutdown {
        /// Node set.
        node_set: String,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Wait until Elasticsearch says that pod's shutdown is COMPLETE.
    WaitShutdownReady {
        /// Node set.
        node_set: String,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Remove the shutdown of pod `ordinal` of `node_set` (it is back, or
    /// not restarting after all).
    ClearShutdown {
        /// Node set.
        node_set: String,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Exclude master-eligible pod `ordinal` of `node_set` from the voting
    /// configuration before it leaves, so the remaining masters keep quorum.
    ExcludeFromVoting {
        /// Node set.
        node_set: String,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Clear the voting configuration exclusions once every excluded node has left.
    ClearVotingExclusions,
    /// Let pods with an ordinal at or above `partition` run the new template:
    /// one more pod of a held rollout moves to the new version.
    RollPod {
        /// Node set.
        node_set: String,
        /// The new partition.
        partition: i32,
    },
    /// Wait until every replica of `node_set` is ready at its current revision.
    WaitPodsReady {
        /// Node set.
        node_set: String,
    },
    /// Wait until Elasticsearch reports green.
    WaitHealthy,
    /// Move the node group of `node_set` in `zone` to the node image
    /// `release` (EKS `UpdateNodegroupVersion`): EKS launches the new nodes
    /// in that zone first, then cordons and drains the old ones and
    /// terminates them.
    UpdateNodeGroupVersion {
        /// Node set.
        node_set: String,
        /// The group's zone.
        zone: String,
        /// The release version.
        release: String,
    },
    /// Renew the cluster's CA and node certificates (see
    /// `backend::Workloads::rotate_certificates`).
    RotateCertificates,
    /// Delete the StatefulSet of a node set that is no longer in the spec.
    DeleteWorkload {
        /// Node set.
        node_set: String,
    },
    /// Delete the node group of `node_set`.
    DeleteNodeGroup {
        /// Node set.
        node_set: String,
    },
    /// Wait until the node group of `node_set` is gone.
    WaitNodeGroupGone {
        /// Node set.
        node_set: String,
    },
    /// Delete the namespace objects of the cluster, and its volumes unless retained.
    DeleteBaseObjects {
        /// What happens to the volumes.
        retention: VolumeRetention,
    },
    /// Register the cluster's own snapshot repository (`s3`, the platform's
    /// bucket, `{tenant}/{uid}`): Elasticsearch verifies it can write there.
    RegisterRepository,
    /// Start snapshot `name` of every index into the cluster's own repository.
    TakeSnapshot {
        /// The snapshot.
        name: String,
    },
    /// Wait until snapshot `name` has ended (the executor fails the
    /// operation when it ended unsuccessfully).
    WaitSnapshot {
        /// The snapshot.
        name: String,
    },
    /// Delete snapshot `name` from the cluster's own repository (retention).
    DeleteSnapshot {
        /// The snapshot.
        name: String,
    },
    /// Register the restore source's repository, read-only.
    RegisterSourceRepository,
    /// Restore the pending indices of the source snapshot.
    RestoreSnapshot,
    /// Wait until Elasticsearch answers about the restore (the executor
    /// fails the operation when the snapshot cannot be used or indices
    /// stand in the way).
    WaitRestore,
}

impl Step {
    /// The operation stage this step belongs to (one of [`OperationKind::stages`]
    /// of the operation that plans it).
    pub fn stage(&self) -> StageName {
        match self {
            Step::ApplyBaseObjects => StageName::Namespace,
            Step::EnsureNodeGroup { .. } | Step::DeleteNodeGroup { .. } => StageName::NodeGroups,
            Step::WaitNodeGroupActive { .. } => StageName::NodeGroupsActive,
            Step::DrainNode { .. } | Step::WaitDrained { .. } | Step::IncludeNode { .. } => {
                StageName::DrainNodes
            }
            Step::ApplyWorkload { .. } | Step::DeleteWorkload { .. } => {
                StageName::ElasticsearchObjects
            }
            Step::ResizeVolumes { .. } | Step::WaitVolumesResized { .. } => StageName::Volumes,
            Step::OrphanWorkload { .. } => StageName::ElasticsearchObjects,
            Step::RollPod { .. }
            | Step::RegisterShutdown { .. }
            | Step::WaitShutdownReady { .. }
            | Step::ClearShutdown { .. } => StageName::RollingRestart,
            Step::ExcludeFromVoting { .. } | Step::ClearVotingExclusions => StageName::DrainNodes,
            Step::WaitPodsReady { .. } => StageName::PodsReady,
            Step::WaitHealthy => StageName::HealthGate,
            Step::RotateCertificates => StageName::Certificates,
            Step::WaitNodeGroupGone { .. } => StageName::NodeGroupsGone,
            Step::DeleteBaseObjects { .. } => StageName::Volumes,
            Step::RegisterRepository => StageName::SnapshotRepository,
            Step::UpdateNodeGroupVersion { .. } => StageName::RotateNodes,
            Step::TakeSnapshot { .. } | Step::WaitSnapshot { .. } | Step::DeleteSnapshot { .. } => {
                StageName::Snapshot
            }
            Step::RegisterSourceRepository | Step::RestoreSnapshot | Step::WaitRestore => {
                StageName::Restore
            }
        }
    }

    /// The step's kind in snake case, for span names and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::ApplyBaseObjects => "apply_base_objects",
            Step::EnsureNodeGroup { .. } => "ensure_node_group",
            Step::WaitNodeGroupActive { .. } => "wait_node_group_active",
            Step::DrainNode { .. } => "drain_node",
            Step::IncludeNode { .. } => "include_node",
            Step::WaitDrained { .. } => "wait_drained",
            Step::ApplyWorkload { .. } => "apply_workload",
            Step::ResizeVolumes { .. } => "resize_volumes",
            Step::WaitVolumesResized { .. } => "wait_volumes_resized",
            Step::OrphanWorkload { .. } => "orphan_workload",
            Step::RollPod { .. } => "roll_pod",
            Step::RegisterShutdown { .. } => "register_shutdown",
            Step::WaitShutdownReady { .. } => "wait_shutdown_ready",
            Step::ClearShutdown { .. } => "clear_shutdown",
            Step::ExcludeFromVoting { .. } => "exclude_from_voting",
            Step::ClearVotingExclusions => "clear_voting_exclusions",
            Step::WaitPodsReady { .. } => "wait_pods_ready",
            Step::WaitHealthy => "wait_healthy",
            Step::RotateCertificates => "rotate_certificates",
            Step::DeleteWorkload { .. } => "delete_workload",
            Step::DeleteNodeGroup { .. } => "delete_node_group",
            Step::WaitNodeGroupGone { .. } => "wait_node_group_gone",
            Step::DeleteBaseObjects { .. } => "delete_base_objects",
            Step::RegisterRepository => "register_repository",
            Step::UpdateNodeGroupVersion { .. } => "update_node_group_version",
            Step::TakeSnapshot { .. } => "take_snapshot",
            Step::WaitSnapshot { .. } => "wait_snapshot",
            Step::DeleteSnapshot { .. } => "delete_snapshot",
            Step::RegisterSourceRepository => "register_source_repository",
            Step::RestoreSnapshot => "restore_snapshot",
            Step::WaitRestore => "wait_restore",
        }
    }

    /// Whether the step only waits for something (a gate): the executor
    /// repeats it with backoff until it passes or its time runs out.
    pub fn is_wait(&self) -> bool {
        matches!(
            self,
            Step::WaitNodeGroupActive { .. }
                | Step::WaitDrained { .. }
                | Step::WaitPodsReady { .. }
                | Step::WaitVolumesResized { .. }
                | Step::WaitShutdownReady { .. }
                | Step::WaitHealthy
                | Step::WaitNodeGroupGone { .. }
                | Step::WaitSnapshot { .. }
                | Step::WaitRestore
        )
    }
}

impl Goal {
    /// What operation `operation` of `kind`, with `params`, drives the
    /// cluster with `spec` to. A snapshot, restore or node rotation without
    /// its params (an operation this version cannot read) is `None`.
    pub fn of(
        kind: OperationKind,
        spec: &ClusterSpec,
        operation: Uuid,
        params: &OperationParams,
    ) -> Option<Goal> {
        Some(match kind {
            OperationKind::RotateCertificates => Goal::RotateCertificates { operation },
            OperationKind::RotateNodes => Goal::RotateNodes {
                spec: spec.clone(),
                release: params.node_release.clone().filter(|r| !r.is_empty())?,
            },
            OperationKind::Delete => Goal::Delete {
                retention: spec.volume_retention,
                final_snapshot: params.snapshot.clone(),
            },
            OperationKind::Create => match &params.restore {
                Some(source) => Goal::CreateRestoring {
                    spec: spec.clone(),
                    source: source.clone(),
                },
                None => Goal::Converge(spec.clone()),
            },
            OperationKind::Update | OperationKind::Repair => Goal::Converge(spec.clone()),
            OperationKind::Snapshot => Goal::Snapshot {
                name: params.snapshot.clone()?,
                policy: spec.snapshot_policy.unwrap_or_default(),
            },
            OperationKind::Restore => Goal::Restore {
                source: params.restore.clone()?,
            },
        })
    }

    /// The gate a goal ends with: a converge is done only once Elasticsearch
    /// is green ([`StageName::HealthGate`]). When the gate is open at the
    /// first look the planner never asks for it, yet the operation passed
    /// it; the executor then records the stage as passed at once.
    pub fn closing_stage(&self) -> Option<StageName> {
        match self {
            Goal::Converge(_)
            | Goal::CreateRestoring { .. }
            | Goal::RotateCertificates { .. }
            | Goal::RotateNodes { .. }
            | Goal::Restore { .. } => Some(StageName::HealthGate),
            Goal::Delete { .. } | Goal::Snapshot { .. } => None,
        }
    }

    /// The stage `step` belongs to under this goal: a node rotation does
    /// all its work in [`StageName::RotateNodes`] (the shutdowns, waits for
    /// node groups and pods around each group's update) except the health
    /// gates, which show between groups as [`StageName::HealthGate`].
    pub fn stage_of(&self, step: &Step) -> StageName {
        match (self, step) {
            (Goal::RotateNodes { .. }, Step::WaitHealthy) => StageName::HealthGate,
            (Goal::RotateNodes { .. }, _) => StageName::RotateNodes,
            _ => step.stage(),
        }
    }
}

/// The next step toward `goal` from `observed`, or `None` when the goal is
/// reached. Implemented in `plan::planner`.
pub fn next_step(goal: &Goal, observed: &Observed) -> Option<Step> {
    planner::next_step(goal, observed)
}

mod gate;
mod nodes;
mod planner;

pub use gate::{
    Overridden, Planned, next_step_overriding, stage_can_be_overridden, with_gate_open,
};

#[cfg(test)]
mod tests;
