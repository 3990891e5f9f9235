//! The append-only event log of a cluster.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::Cluster;

text_enum!(
    /// What an event records.
    EventKind {
        /// Created, create operation queued.
        Created = "CREATED",
        /// A new spec generation.
        SpecUpdated = "SPEC_UPDATED",
        /// Deletion requested.
        DeleteRequested = "DELETE_REQUESTED",
        /// State, health or conditions changed.
        StatusChanged = "STATUS_CHANGED",
        /// An operation progressed.
        OperationProgress = "OPERATION_PROGRESS",
        /// A stalled gate was let pass by a person, with a justification.
        GateOverridden = "GATE_OVERRIDDEN",
    }
);

/// One event of a cluster's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// Position in the log, 1-based, no gaps.
    pub revision: i64,
    /// What happened.
    pub kind: EventKind,
    /// What happened, for people.
    pub message: String,
    /// The operation involved.
    pub operation: Option<Uuid>,
    /// The cluster right after the event.
    pub snapshot: Cluster,
    /// When it was recorded.
    pub create_time: DateTime<Utc>,
}
