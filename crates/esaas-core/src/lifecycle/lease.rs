//! The worker side of an operation: a worker claims it, reports on it under
//! its fencing token, and the attempt ends in success, failure (retried with
//! backoff, bounded), a stall, a hand-back, a lost lease or a cancellation.
//! Each transition also says what it means for the cluster.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cluster::{
    Cluster, ClusterState, Condition, ConditionReason, ConditionStatus, ConditionType, Health,
    set_condition,
};
use crate::error::Code;
use crate::event::EventKind;
use crate::operation::{
    Attempt, AttemptOutcome, Lease, Operation, OperationError, OperationKind, OperationState,
    Stage, StageName, StageState,
};
use crate::snapshots::{SnapshotKind, SnapshotObs, SnapshotRecord, SnapshotState};
use crate::worker::WorkerSession;

use super::ChangeSet;

/// What a worker reports on a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseEvent {
    /// A stage started.
    StageStarted(StageName),
    /// A stage finished (or was skipped).
    StageFinished {
        /// Which.
        name: StageName,
        /// It had nothing to do.
        skipped: bool,
        /// What the worker says about it.
        message: String,
    },
    /// State to resume from.
    Checkpoint(serde_json::Value),
    /// What blocks progress now (empty: nothing).
    Blocking(String),
    /// Done.
    Succeeded {
        /// The client endpoint.
        endpoint: Option<String>,
        /// Health at the end.
        health: Health,
        /// When the node certificate expires, as the worker last saw it.
        certificate_not_after: Option<DateTime<Utc>>,
    },
    /// The attempt failed.
    Failed {
        /// Another attempt may succeed.
        retryable: bool,
        /// Stable reason.
        reason: String,
        /// What happened.
        message: String,
    },
    /// A gate did not open in time; what it waited for.
    Stalled(String),
    /// The worker gives the lease back unfinished.
    HandedBack,
    /// The volume claims a delete keeps (`{namespace}/{claim}`).
    Retained(Vec<String>),
    /// Whether the cluster's snapshot repository could be registered (a
    /// create or update goes on without it, saying why).
    Repository {
        /// Registered.
        registered: bool,
        /// Why not.
        message: String,
    },
    /// A snapshot the operation took ended (successfully or not).
    Snapshot(SnapshotObs),
    /// Snapshots retention let go, deleted from the repository.
    SnapshotsDeleted(Vec<String>),
}

impl LeaseEvent {
    /// Whether the attempt ends with this report.
    pub fn ends_attempt(&self) -> bool {
        matches!(
            self,
            LeaseEvent::Succeeded { .. }
                | LeaseEvent::Failed { .. }
                | LeaseEvent::Stalled(_)
                | LeaseEvent::HandedBack
        )
    }
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Retry policy of failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay before the attempt after `failures` failures: exponential, capped,
    /// with "equal jitter" (half fixed, half random) from `jitter` in [0, 1).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let half = capped / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// An operation and its cluster as the store locked them for a transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Leased {
    /// The operation.
    pub op: Operation,
    /// Its cluster.
    pub cluster: Cluster,
    /// Another operation queued for the cluster behind this one, if any.
    pub other_queued: Option<Uuid>,
}

/// What a transition needs besides the loaded state.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Retry policy.
    pub backoff: Backoff,
    /// Random in [0, 1), for the retry delay's jitter.
    pub jitter: f64,
    /// The time of the transition.
    pub now: DateTime<Utc>,
}

/// How a worker lost a lease without reporting its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// No heartbeat renewed it in time (the reaper found it lapsed).
    Lapsed,
    /// The stream of the session ended while it held the lease.
    SessionEnded {
        /// The session.
        session: Uuid,
        /// Who ended it.
        by: Closer,
    },
}

/// Who ended a worker's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    /// The worker went away, or its connection broke: the attempt counts.
    Worker,
    /// The control plane closed it (its shutdown, its database out of reach):
    /// the lease goes back without costing an attempt.
    ControlPlane,
}

/// What the operation and the cluster became, and the event that says so.
struct Applied {
    op: Operation,
    cluster: Cluster,
    event: Option<String>,
}

impl Applied {
    fn into_changes(self, now: DateTime<Utc>) -> ChangeSet {
        self.into_changes_with(now, ChangeSet::default())
    }

    fn into_changes_with(mut self, now: DateTime<Utc>, mut changes: ChangeSet) -> ChangeSet {
        changes.update_operation(&mut self.op, now);
        if let Some(message) = self.event {
            changes.record(
                &mut self.cluster,
                false,
                EventKind::OperationProgress,
                message,
                Some(self.op.id),
                now,
            );
        }
        changes
    }
}

fn end_attempt(op: &mut Operation, now: DateTime<Utc>, outcome: AttemptOutcome) {
    if let Some(a) = op.attempts.last_mut()
        && a.end_time.is_none()
    {
        a.end_time = Some(now);
        a.outcome = Some(outcome);
    }
}

/// Attempts that count against the budget (see [`AttemptOutcome::counts_against_budget`]).
pub fn failures(op: &Operation) -> u32 {
    let n = op
        .attempts
        .iter()
        .filter(|a| {
            a.outcome
                .as_ref()
                .is_some_and(AttemptOutcome::counts_against_budget)
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn ready_condition(
    status: ConditionStatus,
    reason: ConditionReason,
    message: String,
    now: DateTime<Utc>,
) -> Condition {
    Condition {
        kind: ConditionType::Ready,
        status,
        reason,
        message,
        last_transition_time: now,
    }
}

fn drop_queued_condition(cluster: &mut Cluster) {
    cluster
        .conditions
        .retain(|c| c.kind != ConditionType::OperationQueued);
}

/// Checks that `holder` holds `op` under `token` now.
pub fn check_fence(
    op: &Operation,
    holder: &WorkerSession,
    token: i64,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    match &op.lease {
        _ if op.state != OperationState::Running => Err(Refusal(format!(
            "the operation is {}, not running",
            op.state
        ))),
        None => Err(Refusal("the operation has no lease".into())),
        Some(l) if l.token != token => Err(Refusal(
            "the lease moved to another worker (a newer lease token exists)".into(),
        )),
        Some(l) if l.session != holder.id || l.owner != holder.worker => Err(Refusal(
            "the lease belongs to another session of the worker".into(),
        )),
        Some(l) if l.expire_time <= now => Err(Refusal("the lease expired".into())),
        Some(_) => Ok(()),
    }
}

/// `holder` takes the operation for `ttl`, if it is queued and due; the
/// operation and the cluster show who runs what.
pub fn claim(
    state: &Leased,
    holder: &WorkerSession,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Option<ChangeSet> {
    let worker = holder.worker.as_str();
    let (mut op, mut cluster) = (state.op.clone(), state.cluster.clone());
    if op.state != OperationState::Queued || op.next_attempt_time > now {
        return None;
    }
    // Nothing but a delete ever runs on a deleted cluster (a delete cancels
    // what was queued; this holds even if something slipped past).
    if cluster.state == ClusterState::Deleted && op.kind != OperationKind::Delete {
        return None;
    }
    op.lease_token += 1;
    op.lease = Some(Lease {
        owner: worker.to_string(),
        session: holder.id,
        token: op.lease_token,
        expire_time: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30)),
    });
    op.state = OperationState::Running;
    op.start_time.get_or_insert(now);
    op.blocking_check = None;
    let number = i32::try_from(op.attempts.len() + 1).unwrap_or(i32::MAX);
    op.attempts.push(Attempt {
        number,
        worker: worker.to_string(),
        start_time: now,
        end_time: None,
        outcome: None,
    });
    cluster.current_operation = Some(op.id);
    drop_queued_condition(&mut cluster);
    cluster.message = format!(
        "{} running: attempt {number} by worker {worker}",
        op.kind.as_str().to_lowercase()
    );
    let event = Some(format!(
        "{}: attempt {number} started by worker {worker}",
        op.name()
    ));
    Some(Applied { op, cluster, event }.into_changes(now))
}

/// Puts an operation whose attempt ended without success back in the queue,
/// or ends it: FAILED once the budget is spent, CANCELLED when another
/// operation for the cluster is already queued (it carries the latest spec).
fn requeue_or_end(
    op: &mut Operation,
    cluster: &mut Cluster,
    counts: bool,
    why: &str,
    error: OperationError,
    other_queued: Option<Uuid>,
    ctx: &Context,
) -> String {
    let Context {
        backoff,
        jitter,
        now,
    } = *ctx;
    op.lease = None;
    let spent = failures(op);
    if op.cancel_requested && other_queued.is_none() {
        op.state = OperationState::Cancelled;
        op.end_time = Some(now);
        super::cancel::settle(cluster, op, now);
        return format!("{}: {why}; cancelled, as requested", op.name());
    }
    if other_queued.is_some() {
        op.state = OperationState::Cancelled;
        op.end_time = Some(now);
        cluster.current_operation = other_queued;
        return format!(
            "{}: {why}; superseded by the operation queued after it",
            op.name()
        );
    }
    if counts && spent >= u32::try_from(op.max_attempts).unwrap_or(0) {
        op.state = OperationState::Failed;
        op.end_time = Some(now);
        if matches!(op.kind, OperationKind::Snapshot | OperationKind::Restore) {
            // A snapshot or restore that fails leaves the cluster running
            // as it was; its status says what failed.
            cluster.current_operation = None;
            if cluster.state != ClusterState::Deleting {
                cluster.state = match cluster.health {
                    Health::Green => ClusterState::Ready,
                    _ => ClusterState::Degraded,
                };
            }
            cluster.message = format!(
                "{} failed: {}",
                op.kind.as_str().to_lowercase(),
                error.message
            );
            if op.kind == OperationKind::Snapshot {
                // A reported snapshot or repository failure has said why already.
                let said = cluster.conditions.iter().any(|c| {
                    c.kind == ConditionType::SnapshotsOk && c.status == ConditionStatus::False
                });
                let condition =
                    (!said).then(|| (ConditionReason::SnapshotFailed, cluster.message.clone()));
                snapshot_failed(cluster, error.message.clone(), condition, now, now);
            }
        } else if op.kind == OperationKind::Repair || op.kind.is_rotation() {
            // Platform maintenance that fails leaves the cluster as it found
            // it, DEGRADED, saying why; the next observation decides whether
            // to try again.
            cluster.current_operation = None;
            cluster.state = ClusterState::Degraded;
            cluster.message = format!("automatic repair failed: {}", error.message);
            set_condition(
                &mut cluster.conditions,
                Condition {
                    kind: ConditionType::AutoRepair,
                    status: ConditionStatus::False,
                    reason: ConditionReason::RepairFailed,
                    message: cluster.message.clone(),
                    last_transition_time: now,
                },
            );
        } else {
            cluster.state = ClusterState::Failed;
            cluster.message = format!(
                "{} failed: {}",
                op.kind.as_str().to_lowercase(),
                error.message
            );
            set_condition(
                &mut cluster.conditions,
                ready_condition(
                    ConditionStatus::False,
                    ConditionReason::OperationFailed,
                    cluster.message.clone(),
                    now,
                ),
            );
        }
        let msg = format!(
            "{}: failed after {spent} failed attempts: {}: {}",
            op.name(),
            error.reason,
            error.message
        );
        op.error = Some(error);
        return msg;
    }
    op.state = OperationState::Queued;
    let delay = if counts {
        backoff.delay(spent, jitter)
    } else {
        Duration::ZERO
    };
    op.next_attempt_time = now + chrono::Duration::from_std(delay).unwrap_or_default();
    cluster.message = format!("{}; retrying in {}s", why, delay.as_secs());
    format!(
        "{}: {why}; attempt {} of {} queued",
        op.name(),
        op.attempts.len() + 1,
        i64::from(op.max_attempts) + op.attempts.len() as i64 - i64::from(spent)
    )
}

/// Applies a report of `holder` on its lease `token`; a report on a lease
/// that expired or moved is refused and changes nothing.
pub fn report(
    state: &Leased,
    holder: &WorkerSession,
    token: i64,
    event: LeaseEvent,
    ctx: &Context,
) -> Result<ChangeSet, Refusal> {
    check_fence(&state.op, holder, token, ctx.now)?;
    Ok(apply(state, event, ctx))
}

fn apply(state: &Leased, event: LeaseEvent, ctx: &Context) -> ChangeSet {
    let mut extra = ChangeSet::default();
    let (mut op, mut cluster) = (state.op.clone(), state.cluster.clone());
    let (other_queued, now) = (state.other_queued, ctx.now);
    let name = op.name();
    let event = match event {
        LeaseEvent::Repository {
            registered: true, ..
        } if is_snapshots_ok(&cluster) => None,
        LeaseEvent::Repository {
            registered,
            message,
        } => {
            let shown = if registered {
                let shown = "the snapshot repository is registered".to_string();
                snapshots_ok(&mut cluster, shown.clone(), now);
                shown
            } else {
                let shown = format!("the snapshot repository could not be registered: {message}");
                let condition = (ConditionReason::RepositoryUnavailable, shown.clone());
                snapshot_failed(&mut cluster, message, Some(condition), now, now);
                shown
            };
            Some(format!("{name}: {shown}"))
        }
        LeaseEvent::Snapshot(snapshot) => {
            let taken = snapshot.state == SnapshotState::Success;
            let at = snapshot.end_time.unwrap_or(now);
            let message = if taken {
                cluster.snapshots.last_success = Some(snapshot.name.clone());
                cluster.snapshots.last_success_time = Some(at);
                if op.kind == OperationKind::Delete {
                    cluster.snapshots.final_snapshot = Some(snapshot.name.clone());
                }
                let message = format!(
                    "snapshot {} taken: {} indices",
                    snapshot.name,
                    snapshot.indices.len()
                );
                snapshots_ok(&mut cluster, message.clone(), now);
                message
            } else {
                let message = format!(
                    "snapshot {} ended {}: {}",
                    snapshot.name, snapshot.state, snapshot.reason
                );
                let condition = (ConditionReason::SnapshotFailed, message.clone());
                snapshot_failed(&mut cluster, message.clone(), Some(condition), at, now);
                message
            };
            extra.snapshots.push(SnapshotRecord {
                tenant: op.tenant.clone(),
                cluster_id: op.cluster_id.clone(),
                cluster_uid: op.cluster_uid,
                kind: SnapshotKind::of_name(&snapshot.name).unwrap_or(SnapshotKind::Manual),
                operation: op.id,
                snapshot,
            });
            Some(format!("{name}: {message}"))
        }
        LeaseEvent::SnapshotsDeleted(names) if names.is_empty() => None,
        LeaseEvent::SnapshotsDeleted(names) => {
            let event = format!(
                "{name}: {} snapshots past the policy's retention deleted: {}",
                names.len(),
                names.join(", ")
            );
            extra
                .deleted_snapshots
                .extend(names.into_iter().map(|n| (op.cluster_uid, n)));
            Some(event)
        }
        LeaseEvent::StageStarted(stage) => {
            match op.stages.iter_mut().find(|s| s.name == stage) {
                Some(s) => {
                    s.state = StageState::Running;
                    s.start_time = Some(now);
                    s.end_time = None;
                }
                // A step the kind's stage list does not name (a node set
                // removed during an update waits for its node group to go).
                None => op.stages.push(Stage {
                    state: StageState::Running,
                    start_time: Some(now),
                    ..Stage::pending(stage)
                }),
            }
            cluster.message = format!("{} running: {stage}", op.kind.as_str().to_lowercase());
            Some(format!("{name}: stage {stage} started"))
        }
        LeaseEvent::StageFinished {
            name: stage,
            skipped,
            message,
        } => {
            if let Some(s) = op.stages.iter_mut().find(|s| s.name == stage) {
                s.state = if skipped {
                    StageState::Skipped
                } else {
                    StageState::Succeeded
                };
                s.end_time = Some(now);
                s.message = message;
            }
            op.blocking_check = None;
            // The overridden gate has passed: the override is spent.
            let overridden = op
                .gate_override
                .take_if(|g| g.stage == stage)
                .map(|g| format!(", passed by the gate override of {}", g.principal));
            Some(format!(
                "{name}: stage {stage} {}{}",
                if skipped { "skipped" } else { "finished" },
                overridden.unwrap_or_default()
            ))
        }
        LeaseEvent::Checkpoint(value) => {
            op.checkpoint = Some(value);
            None
        }
        // Only a delete keeps volumes, and the tombstone lists them.
        LeaseEvent::Retained(_) if op.kind != OperationKind::Delete => None,
        LeaseEvent::Retained(names) if names == cluster.retained_volumes => None,
        LeaseEvent::Retained(names) => {
            let event = format!(
                "{name}: {} volume claims kept: {}",
                names.len(),
                names.join(", ")
            );
            cluster.retained_volumes = names;
            Some(event)
        }
        LeaseEvent::Blocking(check) if check.is_empty() => {
            op.blocking_check = None;
            None
        }
        LeaseEvent::Blocking(check) => {
            let event = (op.blocking_check.as_deref() != Some(check.as_str()))
                .then(|| format!("{name}: waiting: {check}"));
            cluster.message = format!("waiting: {check}");
            op.blocking_check = Some(check);
            event
        }
        LeaseEvent::Succeeded {
            endpoint,
            health,
            certificate_not_after,
        } => {
            if certificate_not_after.is_some() {
                cluster.certificate_expire_time = certificate_not_after;
            }
            succeed(&mut op, &mut cluster, endpoint, health, other_queued, now);
            if op.kind == OperationKind::RotateCertificates {
                // Tenants learn of the new CA here and from GetClusterCredentials.
                Some(format!(
                    "{name}: succeeded: the node certificates are signed by a new CA; \
                     GetClusterCredentials returns it with the previous one (both trusted until \
                     the next rotation): add the new CA to your clients' trust stores"
                ))
            } else {
                Some(format!("{name}: succeeded"))
            }
        }
        LeaseEvent::Failed {
            retryable,
            reason,
            message,
        } => {
            end_attempt(
                &mut op,
                now,
                AttemptOutcome::Failed {
                    reason: reason.clone(),
                    message: message.clone(),
                },
            );
            let error = OperationError {
                code: if retryable {
                    Code::Unavailable
                } else {
                    Code::FailedPrecondition
                },
                reason: reason.clone(),
                message: message.clone(),
            };
            let why = format!("attempt failed: {reason}: {message}");
            // A failure another attempt cannot fix spends the whole budget.
            if !retryable {
                op.max_attempts = i32::try_from(failures(&op)).unwrap_or(i32::MAX);
            }
            Some(requeue_or_end(
                &mut op,
                &mut cluster,
                true,
                &why,
                error,
                other_queued,
                ctx,
            ))
        }
        LeaseEvent::Stalled(check) => {
            end_attempt(
                &mut op,
                now,
                AttemptOutcome::Stalled {
                    check: check.clone(),
                },
            );
            op.state = OperationState::Stalled;
            op.lease = None;
            op.blocking_check = Some(check.clone());
            cluster.message = format!("stalled: {check}");
            set_condition(
                &mut cluster.conditions,
                Condition {
                    kind: ConditionType::Stalled,
                    status: ConditionStatus::True,
                    reason: ConditionReason::GateTimedOut,
                    message: check.clone(),
                    last_transition_time: now,
                },
            );
            Some(format!("{name}: stalled: {check}"))
        }
        LeaseEvent::HandedBack => {
            end_attempt(&mut op, now, AttemptOutcome::HandedBack);
            let error = OperationError {
                code: Code::Unavailable,
                reason: "HANDED_BACK".into(),
                message: "handed back".into(),
            };
            Some(requeue_or_end(
                &mut op,
                &mut cluster,
                false,
                "handed back by its worker",
                error,
                other_queued,
                ctx,
            ))
        }
    };
    Applied { op, cluster, event }.into_changes_with(now, extra)
}

/// SnapshotsOk holds, saying `message`.
fn snapshots_ok(cluster: &mut Cluster, message: String, now: DateTime<Utc>) {
    set_condition(
        &mut cluster.conditions,
        Condition {
            kind: ConditionType::SnapshotsOk,
            status: ConditionStatus::True,
            reason: ConditionReason::SnapshotSucceeded,
            message,
            last_transition_time: now,
        },
    );
}

/// A snapshot (or its repository) failed at `at` for `why`: the status
/// records it, and SnapshotsOk turns False with `condition` (reason and
/// message) when given.
fn snapshot_failed(
    cluster: &mut Cluster,
    why: String,
    condition: Option<(ConditionReason, String)>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    cluster.snapshots.last_failure_time = Some(at);
    cluster.snapshots.last_failure_reason = why;
    if let Some((reason, message)) = condition {
        set_condition(
            &mut cluster.conditions,
            Condition {
                kind: ConditionType::SnapshotsOk,
                status: ConditionStatus::False,
                reason,
                message,
                last_transition_time: now,
            },
        );
    }
}

/// Whether the SnapshotsOk condition holds already.
fn is_snapshots_ok(cluster: &Cluster) -> bool {
    cluster
        .conditions
        .iter()
        .any(|c| c.kind == ConditionType::SnapshotsOk && c.status == ConditionStatus::True)
}

fn succeed(
    op: &mut Operation,
    cluster: &mut Cluster,
    endpoint: Option<String>,
    health: Health,
    other_queued: Option<Uuid>,
    now: DateTime<Utc>,
) {
    end_attempt(op, now, AttemptOutcome::Succeeded);
    op.state = OperationState::Succeeded;
    op.end_time = Some(now);
    op.lease = None;
    op.blocking_check = None;
    op.error = None;
    op.gate_override = None;
    for s in op
        .stages
        .iter_mut()
        .filter(|s| s.state == StageState::Pending)
    {
        s.state = StageState::Skipped;
    }
    cluster.observed_generation = cluster.observed_generation.max(op.target_generation);
    drop_queued_condition(cluster);
    if op.kind == OperationKind::Delete {
        cluster.state = ClusterState::Deleted;
        cluster.endpoint = None;
        cluster.health = Health::Unknown;
        cluster.current_operation = None;
        cluster.message = "deleted".into();
        set_condition(
            &mut cluster.conditions,
            ready_condition(
                ConditionStatus::False,
                ConditionReason::Deleted,
                "the cluster was deleted".into(),
                now,
            ),
        );
        return;
    }
    if op.kind != OperationKind::Snapshot {
        cluster.endpoint = endpoint;
    }
    cluster.health = health;
    cluster.current_operation = other_queued;
    // A snapshot checks nothing of what the conditions say; it leaves them.
    if op.kind != OperationKind::Snapshot {
        for c in super::observe::settled_conditions(cluster, health, now) {
            set_condition(&mut cluster.conditions, c);
        }
    }
    if cluster.state != ClusterState::Deleting {
        cluster.state = match (other_queued, health) {
            (Some(_), _) => ClusterState::Updating,
            // Yellow (a replica unassigned) serves every request: READY,
            // as the observation judges it, with health and the
            // ElasticsearchHealthy condition saying yellow.
            (None, Health::Green | Health::Yellow) => ClusterState::Ready,
            (None, _) => ClusterState::Degraded,
        };
    }
    let (status, reason) = match (
        cluster.observed_generation < cluster.generation,
        other_queued,
    ) {
        (false, _) => {
            cluster.message = format!("generation {} applied", cluster.observed_generation);
            (ConditionStatus::True, ConditionReason::Applied)
        }
        (true, Some(_)) => {
            cluster.message = format!(
                "generation {} applied; generation {} is queued",
                cluster.observed_generation, cluster.generation
            );
            (ConditionStatus::True, ConditionReason::Applied)
        }
        // The operation carrying the latest generation was cancelled while
        // this one ran.
        (true, None) => {
            cluster.message = format!(
                "generation {} applied; generation {} is not (its operation was cancelled): \
                 update the cluster again to apply it",
                cluster.observed_generation, cluster.generation
            );
            (ConditionStatus::False, ConditionReason::OperationCancelled)
        }
    };
    set_condition(
        &mut cluster.conditions,
        ready_condition(status, reason, cluster.message.clone(), now),
    );
}

/// The worker lost the lease without reporting: the attempt counts as
/// failed, unless the control plane closed the stream. `None` when the lease
/// is not lost in that way (the reaper finds it renewed, or it belongs to
/// another session by now), so nothing changes.
pub fn expire(state: &Leased, loss: Loss, ctx: &Context) -> Option<ChangeSet> {
    let (mut op, mut cluster) = (state.op.clone(), state.cluster.clone());
    let lost = match (&op.lease, loss) {
        (Some(l), Loss::SessionEnded { session, .. }) => l.session == session,
        (Some(l), Loss::Lapsed) => l.expire_time <= ctx.now,
        (None, _) => false,
    };
    if op.state != OperationState::Running || !lost {
        return None;
    }
    let outcome = match loss {
        Loss::Lapsed => AttemptOutcome::LeaseExpired,
        Loss::SessionEnded {
            by: Closer::Worker, ..
        } => AttemptOutcome::WorkerDisconnected,
        Loss::SessionEnded {
            by: Closer::ControlPlane,
            ..
        } => AttemptOutcome::StreamClosed,
    };
    let why = outcome.to_string();
    let counts = outcome.counts_against_budget();
    end_attempt(&mut op, ctx.now, outcome);
    let error = OperationError {
        code: Code::Unavailable,
        reason: "LEASE_LOST".into(),
        message: format!("{why} on the last attempt"),
    };
    let event = Some(requeue_or_end(
        &mut op,
        &mut cluster,
        counts,
        &why,
        error,
        state.other_queued,
        ctx,
    ));
    Some(Applied { op, cluster, event }.into_changes(ctx.now))
}

/// A lease a heartbeat could not renew, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLease {
    /// The operation.
    pub operation: Uuid,
    /// The token the worker holds.
    pub token: i64,
    /// Why it is gone.
    pub reason: String,
    /// A delete superseded the operation: it is to be cancelled
    /// ([`cancel_superseded`]) before its worker is told.
    pub superseded: bool,
}

/// What a heartbeat means for each lease the worker `held`, given those the
/// store could renew (each with its `cancel_requested`): the leases the
/// worker no longer holds. A lease renews only while its fence holds (see
/// [`check_fence`]; the store renews them all in one statement).
pub fn lost_at_heartbeat(held: &[(Uuid, i64)], renewed: &[(Uuid, bool)]) -> Vec<LostLease> {
    held.iter()
        .filter_map(|&(operation, token)| {
            let cancel = renewed
                .iter()
                .find(|(id, _)| *id == operation)
                .map(|(_, cancel)| *cancel);
            let (reason, superseded) = match cancel {
                Some(false) => return None,
                Some(true) => (
                    "cancelled: cancelled by request, or superseded by a delete",
                    true,
                ),
                None => ("the lease expired or moved to another worker", false),
            };
            Some(LostLease {
                operation,
                token,
                reason: reason.into(),
                superseded,
            })
        })
        .collect()
}

/// A running operation flagged `cancel_requested` (by `CancelOperation`, or
/// by a delete that superseded it) ends CANCELLED once its worker is told, at
/// a heartbeat. A queued operation behind it becomes the cluster's current
/// one; with none, the cluster settles as [`super::cancel`] describes.
/// `None` when it is no longer running.
pub fn cancel_superseded(state: &Leased, now: DateTime<Utc>) -> Option<ChangeSet> {
    let (mut op, mut cluster) = (state.op.clone(), state.cluster.clone());
    if op.state != OperationState::Running {
        return None;
    }
    end_attempt(&mut op, now, AttemptOutcome::Cancelled);
    op.state = OperationState::Cancelled;
    op.end_time = Some(now);
    op.lease = None;
    let event = match state.other_queued {
        Some(next) => {
            cluster.current_operation = Some(next);
            format!("{}: cancelled, superseded by a later operation", op.name())
        }
        None => {
            super::cancel::settle(&mut cluster, &op, now);
            format!("{}: cancelled, as requested", op.name())
        }
    };
    Some(
        Applied {
            op,
            cluster,
            event: Some(event),
        }
        .into_changes(now),
    )
}

#[cfg(test)]
mod tests;
