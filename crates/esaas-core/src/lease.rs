//! The lease state machine of an operation, as pure functions: a worker
//! claims an operation, reports on it under its fencing token, and the
//! attempt ends in success, failure (retried with backoff, bounded), a stall,
//! a hand-back, an expired lease or a cancellation. Each transition also
//! says what it means for the cluster. The store loads, calls, and saves.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterState, Condition, ConditionStatus, Health, set_condition};
use crate::operation::{
    Attempt, Operation, OperationError, OperationKind, OperationState, StageState,
};

/// A worker's hold on an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker.
    pub owner: String,
    /// The fencing token.
    pub token: i64,
    /// When it lapses without a heartbeat.
    pub expire_time: DateTime<Utc>,
}

/// What a worker reports on a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseEvent {
    /// A stage started.
    StageStarted(String),
    /// A stage finished (or was skipped).
    StageFinished {
        /// Stage.
        name: String,
        /// Nothing to do.
        skipped: bool,
        /// Note.
        message: String,
    },
    /// State to resume from.
    Checkpoint(serde_json::Value),
    /// What blocks progress now (empty: nothing).
    Blocking(String),
    /// Done.
    Succeeded {
        /// Client endpoint.
        endpoint: Option<String>,
        /// Final health.
        health: Health,
    },
    /// The attempt failed.
    Failed {
        /// Another attempt may succeed.
        retryable: bool,
        /// Stable reason.
        reason: String,
        /// Message.
        message: String,
    },
    /// A gate did not open in time.
    Stalled(String),
    /// The worker gives the lease back unfinished.
    HandedBack,
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

/// What a transition needs to know besides the operation and its cluster.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// An operation queued for the same cluster behind this one, if any.
    pub other_queued: Option<uuid::Uuid>,
    /// Retry policy.
    pub backoff: Backoff,
    /// Random in [0, 1), for the retry delay's jitter.
    pub jitter: f64,
    /// The time of the transition.
    pub now: DateTime<Utc>,
}

/// What a transition means for the cluster, besides the event message.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The event to append to the cluster's log (`None`: no event, e.g. a checkpoint).
    pub event: Option<String>,
}

fn attempt_outcome(op: &mut Operation, now: DateTime<Utc>, outcome: String) {
    if let Some(a) = op.attempts.last_mut()
        && a.end_time.is_none()
    {
        a.end_time = Some(now);
        a.outcome = outcome;
    }
}

/// Attempts that count against the budget: failures, expired leases and
/// lost workers (not hand-backs, stalls or cancellations).
pub fn failures(op: &Operation) -> u32 {
    let n = op
        .attempts
        .iter()
        .filter(|a| {
            a.outcome.starts_with("failed")
                || a.outcome.starts_with("lease expired")
                || a.outcome.starts_with("worker disconnected")
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn ready_condition(
    status: ConditionStatus,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
) -> Condition {
    Condition {
        kind: "Ready".into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: now,
    }
}

fn drop_queued_condition(cluster: &mut Cluster) {
    cluster.conditions.retain(|c| c.kind != "OperationQueued");
}

/// Checks that `worker` holds `op` under `token` now.
pub fn check_fence(
    op: &Operation,
    worker: &str,
    token: i64,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    match &op.lease {
        _ if op.state != OperationState::Running => Err(Refusal(format!(
            "the operation is {}, not running",
            op.state.as_str()
        ))),
        None => Err(Refusal("the operation has no lease".into())),
        Some(l) if l.owner != worker || l.token != token => Err(Refusal(
            "the lease moved to another worker (a newer lease token exists)".into(),
        )),
        Some(l) if l.expire_time <= now => Err(Refusal("the lease expired".into())),
        Some(_) => Ok(()),
    }
}

/// `worker` takes `op` for `ttl`; the operation and the cluster show who runs what.
pub fn claim(
    op: &mut Operation,
    cluster: &mut Cluster,
    worker: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Transition {
    op.lease_token += 1;
    op.lease = Some(Lease {
        owner: worker.to_string(),
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
        outcome: String::new(),
    });
    cluster.current_operation = Some(op.id);
    drop_queued_condition(cluster);
    cluster.message = format!(
        "{} running: attempt {number} by worker {worker}",
        op.kind.as_str().to_lowercase()
    );
    Transition {
        event: Some(format!(
            "{}: attempt {number} started by worker {worker}",
            op.name()
        )),
    }
}

/// Renews a lease.
pub fn renew(op: &mut Operation, ttl: Duration, now: DateTime<Utc>) {
    if let Some(l) = op.lease.as_mut() {
        l.expire_time =
            now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30));
    }
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
    ctx: &Context,
) -> String {
    let Context {
        other_queued,
        backoff,
        jitter,
        now,
    } = *ctx;
    op.lease = None;
    let spent = failures(op);
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
                "OperationFailed",
                cluster.message.clone(),
                now,
            ),
        );
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

/// Applies a fenced report (the caller checked the fence).
pub fn apply(
    op: &mut Operation,
    cluster: &mut Cluster,
    event: LeaseEvent,
    ctx: &Context,
) -> Transition {
    let (other_queued, now) = (ctx.other_queued, ctx.now);
    let name = op.name();
    let event = match event {
        LeaseEvent::StageStarted(stage) => {
            match op.stages.iter_mut().find(|s| s.name == stage) {
                Some(s) => {
                    s.state = StageState::Running;
                    s.start_time = Some(now);
                    s.end_time = None;
                }
                None => op.stages.push(crate::operation::Stage {
                    name: stage.clone(),
                    state: StageState::Running,
                    start_time: Some(now),
                    end_time: None,
                    message: String::new(),
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
            Some(format!(
                "{name}: stage {stage} {}",
                if skipped { "skipped" } else { "finished" }
            ))
        }
        LeaseEvent::Checkpoint(value) => {
            op.checkpoint = Some(value);
            None
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
        LeaseEvent::Succeeded { endpoint, health } => {
            attempt_outcome(op, now, "succeeded".into());
            op.state = OperationState::Succeeded;
            op.end_time = Some(now);
            op.lease = None;
            op.blocking_check = None;
            op.error = None;
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
                        "Deleted",
                        "the cluster was deleted".into(),
                        now,
                    ),
                );
            } else {
                cluster.endpoint = endpoint;
                cluster.health = health;
                cluster.current_operation = other_queued;
                if cluster.state != ClusterState::Deleting {
                    cluster.state = match (other_queued, health) {
                        (Some(_), _) => ClusterState::Updating,
                        (None, Health::Green) => ClusterState::Ready,
                        (None, _) => ClusterState::Degraded,
                    };
                }
                cluster.message = if cluster.observed_generation < cluster.generation {
                    format!(
                        "generation {} applied; generation {} is queued",
                        cluster.observed_generation, cluster.generation
                    )
                } else {
                    format!("generation {} applied", cluster.observed_generation)
                };
                set_condition(
                    &mut cluster.conditions,
                    ready_condition(
                        ConditionStatus::True,
                        "Applied",
                        cluster.message.clone(),
                        now,
                    ),
                );
            }
            Some(format!("{name}: succeeded"))
        }
        LeaseEvent::Failed {
            retryable,
            reason,
            message,
        } => {
            attempt_outcome(op, now, format!("failed: {reason}: {message}"));
            let error = OperationError {
                code: if retryable { 14 } else { 9 },
                reason: reason.clone(),
                message: message.clone(),
            };
            let why = format!("attempt failed: {reason}: {message}");
            if !retryable {
                op.max_attempts = i32::try_from(failures(op)).unwrap_or(i32::MAX);
            }
            Some(requeue_or_end(op, cluster, true, &why, error, ctx))
        }
        LeaseEvent::Stalled(reason) => {
            attempt_outcome(op, now, format!("stalled: {reason}"));
            op.state = OperationState::Stalled;
            op.lease = None;
            op.blocking_check = Some(reason.clone());
            cluster.message = format!("stalled: {reason}");
            set_condition(
                &mut cluster.conditions,
                Condition {
                    kind: "Stalled".into(),
                    status: ConditionStatus::True,
                    reason: "GateTimedOut".into(),
                    message: reason.clone(),
                    last_transition_time: now,
                },
            );
            Some(format!("{name}: stalled: {reason}"))
        }
        LeaseEvent::HandedBack => {
            attempt_outcome(op, now, "handed back".into());
            let error = OperationError {
                code: 14,
                reason: "HANDED_BACK".into(),
                message: "handed back".into(),
            };
            Some(requeue_or_end(
                op,
                cluster,
                false,
                "handed back by its worker",
                error,
                ctx,
            ))
        }
    };
    Transition { event }
}

/// The lease lapsed without a heartbeat (or the worker's stream ended,
/// `outcome` says which): the attempt counts as failed.
pub fn expire(
    op: &mut Operation,
    cluster: &mut Cluster,
    outcome: &str,
    ctx: &Context,
) -> Transition {
    attempt_outcome(op, ctx.now, outcome.to_string());
    let error = OperationError {
        code: 14,
        reason: "LEASE_LOST".into(),
        message: format!("{outcome} on the last attempt"),
    };
    Transition {
        event: Some(requeue_or_end(op, cluster, true, outcome, error, ctx)),
    }
}

/// A running operation superseded by a delete: it ends CANCELLED and the
/// queued operation becomes the cluster's current one.
pub fn cancel(
    op: &mut Operation,
    cluster: &mut Cluster,
    other_queued: Option<uuid::Uuid>,
    now: DateTime<Utc>,
) -> Transition {
    attempt_outcome(op, now, "cancelled: superseded".into());
    op.state = OperationState::Cancelled;
    op.end_time = Some(now);
    op.lease = None;
    cluster.current_operation = other_queued;
    Transition {
        event: Some(format!(
            "{}: cancelled, superseded by a later operation",
            op.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(60));
        assert!(
            b.delay(4, 0.5) >= Duration::from_secs(8) && b.delay(4, 0.5) <= Duration::from_secs(16)
        );
    }
}
