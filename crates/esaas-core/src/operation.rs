//! Operations: one long-running change to a cluster, as a queue entry with
//! stages, attempts and an error.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::text_enum;
use crate::names::{ClusterId, ClusterName, OperationName, TenantId};

text_enum!(
    /// What an operation does.
    OperationKind {
        /// Create.
        Create = "CREATE",
        /// Update.
        Update = "UPDATE",
        /// Delete.
        Delete = "DELETE",
        /// Repair.
        Repair = "REPAIR",
    }
);

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
        /// Superseded.
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
        /// Running.
        Running = "RUNNING",
        /// Finished.
        Succeeded = "SUCCEEDED",
        /// Failed.
        Failed = "FAILED",
        /// Not needed.
        Skipped = "SKIPPED",
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
    /// Stable name.
    pub name: String,
    /// State.
    pub state: StageState,
    /// Start.
    pub start_time: Option<DateTime<Utc>>,
    /// End.
    pub end_time: Option<DateTime<Utc>>,
    /// Note.
    pub message: String,
}

/// One attempt (lease) at an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based number.
    pub number: i32,
    /// Worker id.
    pub worker: String,
    /// Start.
    pub start_time: DateTime<Utc>,
    /// End.
    pub end_time: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: String,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationError {
    /// gRPC status code.
    pub code: i32,
    /// Stable reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// A long-running change to one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Id (UUIDv7, so ids sort by creation).
    pub id: Uuid,
    /// Owning tenant.
    pub tenant: TenantId,
    /// Cluster id within the tenant.
    pub cluster_id: ClusterId,
    /// Cluster uid.
    pub cluster_uid: Uuid,
    /// What it does.
    pub kind: OperationKind,
    /// Where it is.
    pub state: OperationState,
    /// Who started it.
    pub initiator: Initiator,
    /// Generation it drives the cluster to.
    pub target_generation: i64,
    /// Stages.
    pub stages: Vec<Stage>,
    /// Attempts.
    pub attempts: Vec<Attempt>,
    /// Attempt budget.
    pub max_attempts: i32,
    /// What blocks it now.
    pub blocking_check: Option<String>,
    /// Why it failed.
    pub error: Option<OperationError>,
    /// Queued at.
    pub create_time: DateTime<Utc>,
    /// First started at.
    pub start_time: Option<DateTime<Utc>>,
    /// Ended at.
    pub end_time: Option<DateTime<Utc>>,
    /// Last changed at.
    pub update_time: DateTime<Utc>,
    /// Earliest next attempt.
    pub next_attempt_time: DateTime<Utc>,
    /// Increases on every change (drives WatchOperation).
    pub version: i64,
    /// The worker lease, while a worker holds the operation.
    pub lease: Option<crate::lease::Lease>,
    /// The fencing token of the newest lease (0 before the first).
    pub lease_token: i64,
    /// What the last attempt saved to resume from.
    pub checkpoint: Option<serde_json::Value>,
    /// A delete superseded this operation while it ran; the worker is told to stop.
    pub cancel_requested: bool,
    /// W3C trace context of the call that queued it.
    pub traceparent: Option<String>,
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
            OperationState::Queued if self.attempts.is_empty() => {
                "queued: waiting for a worker to pick it up".to_string()
            }
            OperationState::Queued => format!(
                "queued for attempt {} of {}",
                self.attempts.len() + 1,
                self.max_attempts
            ),
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

/// The stages an operation of `kind` goes through, all pending. The worker
/// marks the ones a particular change does not need as skipped.
pub fn planned_stages(kind: OperationKind) -> Vec<Stage> {
    let names: &[&str] = match kind {
        OperationKind::Create => &[
            "namespace",
            "node_groups",
            "node_groups_active",
            "elasticsearch_objects",
            "pods_ready",
            "health_gate",
        ],
        OperationKind::Update | OperationKind::Repair => &[
            "node_groups",
            "node_groups_active",
            "drain_nodes",
            "elasticsearch_objects",
            "rolling_restart",
            "health_gate",
        ],
        OperationKind::Delete => &[
            "elasticsearch_objects",
            "volumes",
            "node_groups",
            "node_groups_gone",
        ],
    };
    names
        .iter()
        .map(|n| Stage {
            name: (*n).to_string(),
            state: StageState::Pending,
            start_time: None,
            end_time: None,
            message: String::new(),
        })
        .collect()
}
