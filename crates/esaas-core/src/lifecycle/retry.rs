//! `RetryOperation`: a FAILED or STALLED operation goes back to the queue
//! with a fresh attempt budget, and its cluster back to the matching
//! in-progress state.

use crate::cluster::{Cluster, ClusterState};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::operation::{Initiator, Operation, OperationKind, OperationState};

use super::{ChangeSet, Ctx, Decision, Rules};

/// Re-queues `op` of `cluster` (both locked) for `by`. The log of earlier
/// attempts is kept; `rules.max_attempts` more may count against the budget.
pub fn retry(
    op: &Operation,
    cluster: &Cluster,
    by: &Initiator,
    rules: &Rules,
    ctx: &Ctx,
) -> Result<Decision<Operation>> {
    if !matches!(op.state, OperationState::Failed | OperationState::Stalled) {
        return Err(Error::precondition(
            op.name().to_string(),
            format!(
                "only FAILED or STALLED operations can be retried; this one is {}",
                op.state
            ),
        ));
    }
    let (mut op, mut cluster) = (op.clone(), cluster.clone());
    op.state = OperationState::Queued;
    op.error = None;
    op.blocking_check = None;
    op.end_time = None;
    op.next_attempt_time = ctx.now;
    op.max_attempts = i32::try_from(op.attempts.len())
        .unwrap_or(i32::MAX)
        .saturating_add(rules.max_attempts);
    let mut changes = ChangeSet::default();
    changes.update_operation(&mut op, ctx.now);
    if cluster.state == ClusterState::Failed {
        cluster.state = match op.kind {
            OperationKind::Create => ClusterState::Provisioning,
            OperationKind::Update | OperationKind::Repair => ClusterState::Updating,
            OperationKind::Delete => ClusterState::Deleting,
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
