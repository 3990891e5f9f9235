//! Every rule about a cluster's lifecycle, as pure functions.
//!
//! A command (create, update, delete, retry) or a worker's report takes the
//! state the store loaded and locked, and the request, and returns a
//! [`Decision`]: the [`ChangeSet`] to write in one transaction and the answer
//! to give. Nothing here reads a clock, draws a random number or does I/O:
//! the caller passes the time, the new ids and the jitter in a [`Ctx`], so
//! every rule is tested by table without a database.
//!
//! - [`create`], [`update`], [`delete`], [`retry`], [`cancel`],
//!   [`override_gate`]: the commands of `ClusterService`, `AdminService` and
//!   `OperationService`.
//! - [`lease`]: a worker claims an operation, reports on it under its
//!   fencing token, and the attempt ends (success, failure retried with
//!   backoff, stall, hand-back, lost lease, cancellation).
//! - [`maintenance`]: when platform-initiated work may start (windows,
//!   freezes, urgency), and `RescheduleOperation`.
//! - [`retention`]: which events, idempotency records, attempt logs and
//!   tombstones have expired, and where a watch may resume.

pub mod cancel;
pub mod create;
pub mod delete;
pub mod lease;
pub mod maintenance;
pub mod observe;
pub mod override_gate;
pub mod retention;
pub mod retry;
pub mod snapshot;
pub mod update;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::cluster::{
    Cluster, Condition, ConditionReason, ConditionStatus, ConditionType, Disruption,
};
use crate::error::Result;
use crate::event::{ClusterEvent, EventKind};
use crate::names::OperationName;
use crate::operation::{Initiator, Operation, OperationKind, OperationState, Stage};
use crate::spec::ClusterSpec;
use crate::tenant::Tenant;

/// The platform's policy for commands, from configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// What may be asked for.
    pub catalog: Catalog,
    /// The attempt budget of a new (or retried) operation.
    pub max_attempts: i32,
    /// The maintenance window of clusters that set none (`None`: any time).
    pub default_window: Option<crate::spec::MaintenanceWindow>,
    /// The platform's node image: the EKS release version every node group
    /// is to run (`[eks] node_release_version`). `None`: whatever EKS gives
    /// a new group, and no node rotation.
    pub node_release: Option<String>,
    /// Whether the platform has a snapshot bucket (`[snapshots] bucket`).
    pub snapshots_enabled: bool,
}

/// What a command needs besides its request and the loaded state.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The time of the change.
    pub now: DateTime<Utc>,
    /// The id an operation queued by the command gets (a UUIDv7, so ids sort by creation).
    pub operation_id: Uuid,
    /// The uid a created cluster gets (a UUIDv7).
    pub cluster_uid: Uuid,
    /// The W3C trace context of the call, stored with a queued operation so
    /// that its trace continues in the worker.
    pub traceparent: Option<String>,
}

/// A row to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Write<T> {
    /// A new row.
    Insert(T),
    /// A changed row.
    Update(T),
}

impl<T> Write<T> {
    /// The row.
    pub fn row(&self) -> &T {
        match self {
            Write::Insert(t) | Write::Update(t) => t,
        }
    }
}

/// Everything one command or report changes, written by the store in one
/// transaction: the cluster row, then the operation rows in order (so that
/// at most one operation per cluster is queued at every step), then the event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    /// The cluster row, when it changes (always with an event).
    pub cluster: Option<Write<Cluster>>,
    /// Operation rows, in the order they are written.
    pub operations: Vec<Write<Operation>>,
    /// The event appended to the cluster's log; its revision is the cluster's new revision.
    pub event: Option<ClusterEvent>,
    /// Snapshots taken (or failed) to record.
    pub snapshots: Vec<crate::snapshots::SnapshotRecord>,
    /// Snapshots deleted from their repository: (cluster uid, name).
    pub deleted_snapshots: Vec<(Uuid, String)>,
}

impl ChangeSet {
    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.cluster.is_none()
            && self.operations.is_empty()
            && self.event.is_none()
            && self.snapshots.is_empty()
            && self.deleted_snapshots.is_empty()
    }

    /// Writes `op` as a new row.
    fn insert_operation(&mut self, op: &Operation) {
        self.operations.push(Write::Insert(op.clone()));
    }

    /// Writes `op` as a changed row; its version rises, so `WatchOperation` sees it.
    fn update_operation(&mut self, op: &mut Operation, now: DateTime<Utc>) {
        op.version += 1;
        op.update_time = now;
        self.operations.push(Write::Update(op.clone()));
    }

    /// Writes `cluster` with the next version and revision and appends the
    /// event describing the change (every change of a cluster row is one).
    fn record(
        &mut self,
        cluster: &mut Cluster,
        is_new: bool,
        kind: EventKind,
        message: String,
        operation: Option<Uuid>,
        now: DateTime<Utc>,
    ) {
        cluster.version += 1;
        cluster.revision += 1;
        cluster.update_time = now;
        self.event = Some(ClusterEvent {
            revision: cluster.revision,
            kind,
            message,
            operation,
            snapshot: cluster.clone(),
            create_time: now,
        });
        self.cluster = Some(if is_new {
            Write::Insert(cluster.clone())
        } else {
            Write::Update(cluster.clone())
        });
    }
}

/// A change set and the answer to the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<T> {
    /// What to write.
    pub changes: ChangeSet,
    /// What the caller is told once it is written.
    pub answer: T,
}

impl<T> Decision<T> {
    /// An answer that writes nothing.
    fn unchanged(answer: T) -> Self {
        Decision {
            changes: ChangeSet::default(),
            answer,
        }
    }
}

/// The answer of a create, update or delete (also what an idempotent retry
/// of the request gets back, so it is stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterChange {
    /// The cluster after the change.
    pub cluster: Cluster,
    /// The operation that carries the change (none for a change that changes nothing).
    pub operation: Option<Operation>,
    /// How disruptive the change is.
    pub disruption: Disruption,
}

/// A cluster's operations that are not done, as the store locked them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveOperations {
    /// The queued operation (at most one per cluster).
    pub queued: Option<Operation>,
    /// The running or stalled operation (at most one per cluster).
    pub running: Option<Operation>,
}

/// A live cluster as an update or delete sees it, locked.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// Its owner, with the usage of all its clusters.
    pub tenant: Tenant,
    /// Its unfinished operations.
    pub active: ActiveOperations,
    /// The operation `cluster.current_operation` names, whatever its state.
    pub current: Option<Operation>,
}

/// Fills the defaults a caller may leave out and checks `spec` against the
/// catalog; `prefix` is the spec's path in the request. The one check of a
/// spec, for creates and updates alike.
pub fn check_spec(spec: ClusterSpec, catalog: &Catalog, prefix: &str) -> Result<ClusterSpec> {
    let spec = spec.with_defaults();
    spec.validate(catalog, prefix)?;
    Ok(spec)
}

/// A new queued operation of `kind` for `cluster` at its generation.
fn new_operation(
    cluster: &Cluster,
    kind: OperationKind,
    initiator: &Initiator,
    rules: &Rules,
    ctx: &Ctx,
) -> Operation {
    Operation {
        id: ctx.operation_id,
        tenant: cluster.tenant.clone(),
        cluster_id: cluster.cluster_id.clone(),
        cluster_uid: cluster.uid,
        kind,
        state: OperationState::Queued,
        initiator: initiator.clone(),
        target_generation: cluster.generation,
        stages: kind.stages().iter().map(|n| Stage::pending(*n)).collect(),
        attempts: Vec::new(),
        max_attempts: rules.max_attempts,
        blocking_check: None,
        error: None,
        create_time: ctx.now,
        start_time: None,
        end_time: None,
        update_time: ctx.now,
        next_attempt_time: ctx.now,
        not_before: None,
        version: 1,
        lease: None,
        lease_token: 0,
        checkpoint: None,
        cancel_requested: false,
        traceparent: ctx.traceparent.clone(),
        gate_override: None,
        params: Default::default(),
    }
}

/// Shows on the cluster that `op` waits for a worker.
fn show_queued(cluster: &mut Cluster, op: &Operation, now: DateTime<Utc>) {
    cluster.message = op.summary();
    crate::cluster::set_condition(
        &mut cluster.conditions,
        Condition {
            kind: ConditionType::OperationQueued,
            status: ConditionStatus::True,
            reason: ConditionReason::WaitingForWorker,
            message: format!(
                "{} is queued: waiting for a worker to pick it up",
                OperationName(op.id)
            ),
            last_transition_time: now,
        },
    );
}

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
