//! `CancelOperation`: a queued or stalled operation ends CANCELLED at once; a
//! running one is flagged, and the control plane ends it at its worker's next
//! heartbeat (see [`super::lease::cancel_superseded`]). A delete cannot be
//! cancelled.
//!
//! What the cluster becomes ([`settle`]) once its current operation is
//! cancelled with nothing queued behind it: a create leaves a cluster that
//! never served, so it is FAILED; an update or repair leaves a cluster that
//! serves at the generation it had, so it keeps serving (READY or DEGRADED by
//! its last health) with its `Ready` condition false, saying which generation
//! is not applied. Either way, `RetryOperation` resumes the cancelled
//! operation, and (for an update) a new update supersedes it.

use chrono::{DateTime, Utc};

use crate::cluster::{
    Cluster, ClusterState, Condition, ConditionReason, ConditionStatus, ConditionType, Health,
    set_condition,
};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::operation::{Initiator, Operation, OperationKind, OperationState};

use super::lease::Leased;
use super::{ChangeSet, Decision};

/// Cancels `state.op` (locked with its cluster) for `by`. Cancelling an
/// operation that is already CANCELLED, or a running one already asked to
/// stop, changes nothing and answers it as it is.
pub fn cancel(state: &Leased, by: &Initiator, now: DateTime<Utc>) -> Result<Decision<Operation>> {
    let (mut op, mut cluster) = (state.op.clone(), state.cluster.clone());
    let subject = op.name().to_string();
    match op.state {
        OperationState::Cancelled => return Ok(Decision::unchanged(op)),
        OperationState::Succeeded | OperationState::Failed => {
            return Err(Error::precondition(
                subject,
                format!(
                    "the operation has already ended {}: there is nothing to cancel",
                    op.state
                ),
            ));
        }
        OperationState::Queued | OperationState::Running | OperationState::Stalled => {}
    }
    if op.kind == OperationKind::Delete {
        return Err(Error::precondition(
            subject,
            "a deletion cannot be cancelled: node groups and volumes may already be gone, and \
             the cluster stays DELETING until the delete completes (retry it if it fails)",
        ));
    }
    let mut changes = ChangeSet::default();
    let message = if op.state == OperationState::Running {
        if op.cancel_requested {
            return Ok(Decision::unchanged(op));
        }
        op.cancel_requested = true;
        format!(
            "cancellation of {subject} requested by {}: it stops at its worker's next heartbeat",
            by.principal
        )
    } else {
        op.state = OperationState::Cancelled;
        op.end_time = Some(now);
        op.lease = None;
        if cluster.current_operation == Some(op.id) {
            settle(&mut cluster, &op, now);
        } else {
            // It waited behind the running operation, which stays current.
            drop_condition(&mut cluster, ConditionType::OperationQueued);
        }
        format!("{subject} cancelled by {}", by.principal)
    };
    changes.update_operation(&mut op, now);
    changes.record(
        &mut cluster,
        false,
        EventKind::OperationProgress,
        message,
        Some(op.id),
        now,
    );
    Ok(Decision {
        changes,
        answer: op,
    })
}

/// What `cluster` becomes when `op`, its current operation, ends cancelled
/// with nothing queued behind it. The operation stays current, so that a
/// retry can resume it.
pub(super) fn settle(cluster: &mut Cluster, op: &Operation, now: DateTime<Utc>) {
    drop_condition(cluster, ConditionType::OperationQueued);
    drop_condition(cluster, ConditionType::Stalled);
    cluster.current_operation = Some(op.id);
    let name = op.name();
    cluster.message = match op.kind {
        OperationKind::Create => {
            cluster.state = ClusterState::Failed;
            format!(
                "creation cancelled ({name}): resources may be partly created; retry {name} to \
                 finish it, or delete the cluster"
            )
        }
        OperationKind::Update
        | OperationKind::Repair
        | OperationKind::RotateCertificates
        | OperationKind::RotateNodes
        | OperationKind::Snapshot
        | OperationKind::Restore
        | OperationKind::Delete => {
            if cluster.state != ClusterState::Deleting {
                cluster.state = match cluster.health {
                    Health::Green => ClusterState::Ready,
                    _ => ClusterState::Degraded,
                };
            }
            format!(
                "generation {} is not fully applied ({name} was cancelled; generation {} is): \
                 retry {name}, or update the cluster again",
                cluster.generation, cluster.observed_generation
            )
        }
    };
    set_condition(
        &mut cluster.conditions,
        Condition {
            kind: ConditionType::Ready,
            status: ConditionStatus::False,
            reason: ConditionReason::OperationCancelled,
            message: cluster.message.clone(),
            last_transition_time: now,
        },
    );
}

fn drop_condition(cluster: &mut Cluster, kind: ConditionType) {
    cluster.conditions.retain(|c| c.kind != kind);
}
