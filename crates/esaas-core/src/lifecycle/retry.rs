//! `RetryOperation`: a FAILED or STALLED operation, or one cancelled by
//! request that nothing superseded, goes back to the queue with a fresh
//! attempt budget, and its cluster back to the matching in-progress state.
//! Nothing but a delete runs again on a cluster that is being (or was)
//! deleted.

use crate::cluster::ClusterState;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::operation::{Initiator, Operation, OperationKind, OperationState};

use super::lease::Leased;
use super::{ChangeSet, Ctx, Decision, Rules};

/// Re-queues `state.op` (locked with its cluster) for `by`. The log of
/// earlier attempts is kept; `rules.max_attempts` more may count against the
/// budget.
pub fn retry(
    state: &Leased,
    by: &Initiator,
    rules: &Rules,
    ctx: &Ctx,
) -> Result<Decision<Operation>> {
    let (mut op, mut cluster) = (state.op.clone(), state.cluster.clone());
    let subject = op.name().to_string();
    match op.state {
        OperationState::Failed | OperationState::Stalled => {}
        // Cancelled by request: it is still the cluster's current operation.
        // Superseded: a later operation carries the cluster on.
        OperationState::Cancelled
            if cluster.current_operation == Some(op.id) && state.other_queued.is_none() => {}
        OperationState::Cancelled => {
            return Err(Error::precondition(
                subject,
                "a later operation superseded this one; it cannot run again",
            ));
        }
        _ => {
            return Err(Error::precondition(
                subject,
                format!(
                    "only FAILED, STALLED or cancelled operations can be retried; this one is {}",
                    op.state
                ),
            ));
        }
    }
    // A delete once asked for stands, even when it failed (the cluster is
    // FAILED then, with its delete time kept): nothing else runs again.
    let delete_asked = cluster.delete_time.is_some()
        || matches!(
            cluster.state,
            ClusterState::Deleting | ClusterState::Deleted
        );
    if op.kind != OperationKind::Delete && delete_asked {
        return Err(Error::precondition(
            subject,
            format!(
                "the cluster's delete was asked for (it is {}): only its delete may run, not a {}",
                cluster.state,
                op.kind.as_str().to_lowercase()
            ),
        ));
    }
    let was_cancelled = op.state == OperationState::Cancelled;
    op.state = OperationState::Queued;
    op.error = None;
    op.blocking_check = None;
    op.end_time = None;
    op.cancel_requested = false;
    op.next_attempt_time = ctx.now;
    op.max_attempts = i32::try_from(op.attempts.len())
        .unwrap_or(i32::MAX)
        .saturating_add(rules.max_attempts);
    let mut changes = ChangeSet::default();
    changes.update_operation(&mut op, ctx.now);
    if cluster.state == ClusterState::Failed || was_cancelled {
        cluster.state = match op.kind {
            OperationKind::Create => ClusterState::Provisioning,
            OperationKind::Update
            | OperationKind::Repair
            | OperationKind::RotateCertificates
            | OperationKind::RotateNodes => ClusterState::Updating,
            OperationKind::Delete => ClusterState::Deleting,
            // A snapshot or restore changes nothing of the cluster's shape.
            OperationKind::Snapshot | OperationKind::Restore => match cluster.health {
                crate::cluster::Health::Green => ClusterState::Ready,
                _ => ClusterState::Degraded,
            },
        };
    }
    cluster.current_operation = Some(op.id);
    cluster.message = op.summary();
    changes.record(
        &mut cluster,
        false,
        EventKind::OperationProgress,
        format!("operation {} re-queued by {}", op.name(), by.principal),
        Some(op.id),
        ctx.now,
    );
    Ok(Decision {
        changes,
        answer: op,
    })
}
