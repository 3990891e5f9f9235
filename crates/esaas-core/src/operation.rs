//! Operations: one long-running change to a cluster, as a queue entry with
//! stages, attempts and an error.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Code;
use crate::names::{ClusterId, ClusterName, OperationName, TenantId};

text_enum!(
    /// What an operation does.
    OperationKind {
        /// Builds a new cluster.
        Create = "CREATE",
        /// Drives a cluster to a new spec generation.
        Update = "UPDATE",
        /// Removes a cluster.
        Delete = "DELETE",
        /// Brings a cluster back to its spec after drift.
        Repair = "REPAIR",
        /// Renews the cluster's CA and node certificates before they expire.
        RotateCertificates = "ROTATE_CERTIFICATES",
        /// Replaces the cluster's nodes, one zone's node group at a time, when
        /// the platform's node image (the EKS release version) moves.
        RotateNodes = "ROTATE_NODES",
        /// Takes a snapshot of every index into the cluster's repository
        /// (asked for, or on the policy's schedule).
        Snapshot = "SNAPSHOT",
        /// Restores chosen indices of a snapshot into the cluster.
        Restore = "RESTORE",
    }
);

impl OperationKind {
    /// Platform maintenance that applies no spec (a rotation): it gives way
    /// to a tenant's change queued before it started, and leaves the cluster
    /// DEGRADED, not FAILED, when it fails for good.
    pub fn is_rotation(self) -> bool {
        matches!(
            self,
            OperationKind::RotateCertificates | OperationKind::RotateNodes
        )
    }
}

text_enum!(
    /// Lifecycle of an operation.
    OperationState {
        /// Waiting for a worker.
        Queued = "QUEUED",
        /// Leased by a worker.
        Running = "RUNNING",
        /// A gate did not open in time.
        Stalled = "STALLED",
        /// Done, successfully.
        Succeeded = "SUCCEEDED",
        /// Done, unsuccessfully.
        Failed = "FAILED",
        /// Stopped, superseded by a later operation.
        Cancelled = "CANCELLED",
    }
);

impl OperationState {
    /// Whether the operation has ended.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            OperationState::Succeeded | OperationState::Failed | OperationState::Cancelled
        )
    }
}

text_enum!(
    /// State of one stage.
    StageState {
        /// Not started.
        Pending = "PENDING",
        /// Started, not finished.
        Running = "RUNNING",
        /// Done.
        Succeeded = "SUCCEEDED",
        /// Ended the attempt unsuccessfully.
        Failed = "FAILED",
        /// Not needed by this change.
        Skipped = "SKIPPED",
    }
);

text_enum!(
    /// The stages operations go through, in the order of [`OperationKind::stages`].
    StageName {
        /// The tenant namespace and the cluster's shared objects.
        Namespace = "namespace",
        /// Node groups created or resized.
        NodeGroups = "node_groups",
        /// Waiting for node groups to be ACTIVE.
        NodeGroupsActive = "node_groups_active",
        /// Shards moved off nodes that leave.
        DrainNodes = "drain_nodes",
        /// StatefulSets applied (or deleted).
        ElasticsearchObjects = "elasticsearch_objects",
        /// Waiting for pods to be ready.
        PodsReady = "pods_ready",
        /// Pods moved to a new template one at a time.
        RollingRestart = "rolling_restart",
        /// Waiting for Elasticsearch to be green.
        HealthGate = "health_gate",
        /// Volumes grown or modified (an update); shared objects and volumes
        /// deleted (a delete).
        Volumes = "volumes",
        /// Waiting for node groups to be gone.
        NodeGroupsGone = "node_groups_gone",
        /// A new CA and node certificates written, old and new CA trusted.
        Certificates = "certificates",
        /// The cluster's snapshot repository registered in the platform's bucket.
        SnapshotRepository = "snapshot_repository",
        /// Nodes replaced at the platform's node image, one zone's node group
        /// at a time, Elasticsearch told of each node's restart.
        RotateNodes = "rotate_nodes",
        /// A snapshot taken (and, on schedule, the ones retention lets go
        /// deleted); a delete's final snapshot, before anything is removed.
        Snapshot = "snapshot",
        /// Indices restored from a snapshot (the source repository registered
        /// read-only first).
        Restore = "restore",
    }
);

text_enum!(
    /// Who started an operation.
    InitiatorKind {
        /// The owning tenant.
        Tenant = "TENANT",
        /// The platform.
        Platform = "PLATFORM",
    }
);

/// Who started an operation, and with which key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initiator {
    /// Tenant or platform.
    pub kind: InitiatorKind,
    /// The key's resource name, or `bootstrap`.
    pub principal: String,
}

/// One step of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Which stage.
    pub name: StageName,
    /// Where it is.
    pub state: StageState,
    /// When it last started.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// What the worker said when it ended.
    pub message: String,
}

impl Stage {
    /// A stage not started yet.
    pub fn pending(name: StageName) -> Self {
        Stage {
            name,
            state: StageState::Pending,
            start_time: None,
            end_time: None,
            message: String::new(),
        }
    }
}

/// A worker's hold on an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker.
    pub owner: String,
    /// The worker's session that holds it (see [`crate::worker::WorkerSession`]).
    pub session: Uuid,
    /// The fencing token.
    pub token: i64,
    /// When it lapses without a heartbeat.
    pub expire_time: DateTime<Utc>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttemptOutcome {
    /// The operation succeeded.
    Succeeded,
    /// The worker reported a failure.
    Failed {
        /// Stable reason, for example `EKS_THROTTLED`.
        reason: String,
        /// What happened.
        message: String,
    },
    /// A gate did not open in time.
    Stalled {
        /// What the gate waited for.
        check: String,
    },
    /// The worker gave the lease back unfinished (a graceful shutdown).
    HandedBack,
    /// The lease lapsed without a heartbeat.
    LeaseExpired,
    /// The worker's stream ended while it held the lease.
    WorkerDisconnected,
    /// The control plane closed the worker's stream (its own shutdown, or its
    /// database out of reach): not the operation's fault.
    StreamClosed,
    /// Cancelled by request, or superseded by a later operation (a delete).
    Cancelled,
}

impl AttemptOutcome {
    /// Whether the attempt counts against the operation's budget: failures,
    /// lapsed leases and lost workers do; hand-backs, streams the control
    /// plane closed, stalls and cancellations do not.
    pub fn counts_against_budget(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::Failed { .. }
                | AttemptOutcome::LeaseExpired
                | AttemptOutcome::WorkerDisconnected
        )
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptOutcome::Succeeded => f.write_str("succeeded"),
            AttemptOutcome::Failed { reason, message } => write!(f, "failed: {reason}: {message}"),
            AttemptOutcome::Stalled { check } => write!(f, "stalled: {check}"),
            AttemptOutcome::HandedBack => f.write_str("handed back"),
            AttemptOutcome::LeaseExpired => f.write_str("lease expired"),
            AttemptOutcome::WorkerDisconnected => f.write_str("worker disconnected"),
            AttemptOutcome::StreamClosed => f.write_str("stream closed by the control plane"),
            AttemptOutcome::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// One attempt (lease) at an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based number.
    pub number: i32,
    /// The worker that held the lease.
    pub worker: String,
    /// When the lease was taken.
    pub start_time: DateTime<Utc>,
    /// When the attempt ended.
    pub end_time: Option<DateTime<Utc>>,
    /// How it ended (`None` while it runs).
    pub outcome: Option<AttemptOutcome>,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationError {
    /// The status code it maps to.
    pub code: Code,
    /// A stable reason, for example `EKS_THROTTLED`.
    pub reason: String,
    /// What happened, for people.
    pub message: String,
}

/// A long-running change to one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Id (UUIDv7, so ids sort by creation).
    pub id: Uuid,
    /// The tenant that owns the cluster.
    pub tenant: TenantId,
    /// The cluster's id within the tenant.
    pub cluster_id: ClusterId,
    /// The uid of the cluster's incarnation it works on.
    pub cluster_uid: Uuid,
    /// What it does.
    pub kind: OperationKind,
    /// Where it is.
    pub state: OperationState,
    /// Who started it.
    pub initiator: Initiator,
    /// Generation it drives the cluster to.
    pub target_generation: i64,
    /// Its stages, in the order of [`OperationKind::stages`].
    pub stages: Vec<Stage>,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// How many attempts that count against the budget it may make in all.
    pub max_attempts: i32,
    /// What blocks it now.
    pub blocking_check: Option<String>,
    /// Why it failed.
    pub error: Option<OperationError>,
    /// When it was queued.
    pub create_time: DateTime<Utc>,
    /// When its first attempt started.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// When it last changed.
    pub update_time: DateTime<Utc>,
    /// When the next attempt may start (backoff after a failure).
    pub next_attempt_time: DateTime<Utc>,
    /// The earliest start the schedule gave it: a maintenance window for
    /// planned platform work, or a time its owner chose
    /// (`RescheduleOperation`); `None`: at once.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Increases on every change (drives WatchOperation).
    pub version: i64,
    /// The worker lease, while a worker holds the operation.
    pub lease: Option<Lease>,
    /// The fencing token of the newest lease (0 before the first).
    pub lease_token: i64,
    /// What the last attempt saved to resume from.
    pub checkpoint: Option<serde_json::Value>,
    /// A delete superseded this operation while it ran; the worker is told to stop.
    pub cancel_requested: bool,
    /// W3C trace context of the call that queued it.
    pub traceparent: Option<String>,
    /// A stalled gate its next attempt lets pass once (`OverrideGate`);
    /// cleared when that gate's stage finishes, or the operation ends.
    #[serde(default)]
    pub gate_override: Option<GateOverride>,
    /// What a snapshot, a restore or a delete's final snapshot works on.
    #[serde(default)]
    pub params: OperationParams,
}

/// The parts of an operation only some kinds have; fixed when it is queued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationParams {
    /// The snapshot it takes: a SNAPSHOT's, or a DELETE's final one
    /// (`None`: a delete that takes none).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Where a RESTORE, or a CREATE from a snapshot, restores from.
    #[serde(default)]
    pub restore: Option<crate::snapshots::RestoreSource>,
    /// For a node rotation: the node image (EKS release version) every
    /// node group moves to, chosen when the platform queued it.
    #[serde(default)]
    pub node_release: Option<String>,
}

/// An audited override of the gate a STALLED operation waited at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateOverride {
    /// The stage the gate waits in (each wait belongs to one stage).
    pub stage: StageName,
    /// What the gate waited for when the operation stalled.
    pub check: String,
    /// The key that let it pass (its resource name, or `bootstrap`).
    pub principal: String,
    /// Why, as the caller said.
    pub justification: String,
    /// When it was granted.
    pub create_time: DateTime<Utc>,
}

impl Operation {
    /// `operations/{id}`.
    pub fn name(&self) -> OperationName {
        OperationName(self.id)
    }

    /// The cluster's resource name.
    pub fn cluster_name(&self) -> ClusterName {
        ClusterName {
            tenant: self.tenant.clone(),
            cluster: self.cluster_id.clone(),
        }
    }

    /// A one-line summary of where the operation is.
    pub fn summary(&self) -> String {
        match self.state {
            OperationState::Queued if self.attempts.is_empty() => match self.not_before {
                Some(t) => format!(
                    "queued: scheduled for {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                None => "queued: waiting for a worker to pick it up".to_string(),
            },
            OperationState::Queued => format!(
                "queued for attempt {} of {}",
                self.attempts.len() + 1,
                self.max_attempts
            ),
            OperationState::Running if self.cancel_requested => {
                "running: cancellation requested, it stops at its worker's next heartbeat"
                    .to_string()
            }
            OperationState::Running => {
                match self.stages.iter().find(|s| s.state == StageState::Running) {
                    Some(s) => format!("running: {}", s.name),
                    None => "running".to_string(),
                }
            }
            OperationState::Stalled => format!(
                "stalled: {}",
                self.blocking_check
                    .as_deref()
                    .unwrap_or("a gate did not open in time")
            ),
            OperationState::Succeeded => "succeeded".to_string(),
            OperationState::Failed => format!(
                "failed: {}",
                self.error
                    .as_ref()
                    .map(|e| e.message.as_str())
                    .unwrap_or("unknown error")
            ),
            OperationState::Cancelled => "cancelled".to_string(),
        }
    }
}

impl OperationKind {
    /// The stages an operation of this kind goes through, in order. The
    /// worker marks the ones a particular change does not need as skipped.
    pub fn stages(self) -> &'static [StageName] {
        use StageName::*;
        match self {
            OperationKind::Create => &[
                Namespace,
                NodeGroups,
                NodeGroupsActive,
                ElasticsearchObjects,
                PodsReady,
                Restore,
                HealthGate,
                SnapshotRepository,
            ],
            OperationKind::Update | OperationKind::Repair => &[
                NodeGroups,
                NodeGroupsActive,
                DrainNodes,
                Volumes,
                ElasticsearchObjects,
                RollingRestart,
                HealthGate,
                SnapshotRepository,
            ],
            OperationKind::Delete => &[
                Snapshot,
                ElasticsearchObjects,
                Volumes,
                NodeGroups,
                NodeGroupsGone,
            ],
            OperationKind::RotateCertificates => &[Certificates, HealthGate],
            OperationKind::RotateNodes => &[RotateNodes, HealthGate],
            OperationKind::Snapshot => &[SnapshotRepository, Snapshot],
            OperationKind::Restore => &[Restore, HealthGate],
        }
    }
}
