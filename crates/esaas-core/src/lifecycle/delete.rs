//! `DeleteCluster`: the cluster goes DELETING with its delete operation
//! queued; a queued change is cancelled, a running one is asked to stop.
//! A cluster whose spec sets `deletion_protection` is not deleted: the
//! caller is told to clear it first (a dry run says the same).

use crate::cluster::{ClusterState, Disruption};
use crate::error::{Error, PreconditionViolation, Result};
use crate::event::EventKind;
use crate::names::ClusterName;
use crate::operation::{Initiator, OperationKind, OperationState};
use crate::snapshots::{FinalSnapshot, final_snapshot};

use super::{
    ChangeSet, ClusterChange, Ctx, Decision, LiveCluster, Rules, new_operation, show_queued,
};

/// A delete, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteCluster {
    /// The cluster.
    pub name: ClusterName,
    /// The etag the caller read (empty: any).
    pub etag: String,
    /// Who asks.
    pub initiator: Initiator,
    /// Delete without a final snapshot.
    pub skip_final_snapshot: bool,
}

/// The stable type of the violation a protected cluster's delete gets.
pub const DELETION_PROTECTION: &str = "DELETION_PROTECTION";

/// Deletes `state.cluster`. Deleting a cluster that is already DELETING
/// changes nothing and answers its delete operation; a protected one is
/// FAILED_PRECONDITION.
pub fn delete(
    cmd: &DeleteCluster,
    state: &LiveCluster,
    rules: &Rules,
    ctx: &Ctx,
) -> Result<Decision<ClusterChange>> {
    let mut cluster = state.cluster.clone();
    cluster.check_etag(&cmd.etag)?;
    let active = &state.active;
    // A delete stalled on its final snapshot (Elasticsearch does not
    // answer) gives way to one that skips it.
    let stalled_on_snapshot = active.running.as_ref().is_some_and(|op| {
        op.kind == OperationKind::Delete
            && op.state == OperationState::Stalled
            && op.params.snapshot.is_some()
    });
    if cluster.state == ClusterState::Deleting && !(cmd.skip_final_snapshot && stalled_on_snapshot)
    {
        // The newest unfinished operation: the delete, queued or running.
        let newest = [&active.queued, &active.running]
            .into_iter()
            .flatten()
            .max_by_key(|op| op.id)
            .cloned();
        return Ok(Decision::unchanged(ClusterChange {
            cluster,
            operation: newest,
            disruption: Disruption::Destructive,
        }));
    }
    if cluster.spec.deletion_protection {
        return Err(Error::FailedPrecondition(vec![PreconditionViolation {
            kind: DELETION_PROTECTION.into(),
            subject: cmd.name.to_string(),
            description: "the cluster has deletion protection: clear spec.deletion_protection \
                          first (UpdateCluster with the update mask spec.deletion_protection), \
                          then delete it"
                .into(),
        }]));
    }
    let mut changes = ChangeSet::default();
    if let Some(mut queued) = active.queued.clone() {
        queued.state = OperationState::Cancelled;
        queued.end_time = Some(ctx.now);
        changes.update_operation(&mut queued, ctx.now);
    }
    let still_running = match active.running.clone() {
        // A stalled operation has no worker to tell: it ends here.
        Some(mut stalled) if stalled.state == OperationState::Stalled => {
            stalled.state = OperationState::Cancelled;
            stalled.end_time = Some(ctx.now);
            changes.update_operation(&mut stalled, ctx.now);
            false
        }
        // A running one is told to stop by the control plane at its
        // worker's next heartbeat (see `lease::cancel_superseded`).
        Some(mut running) => {
            running.cancel_requested = true;
            changes.update_operation(&mut running, ctx.now);
            true
        }
        None => false,
    };
    let mut operation = new_operation(&cluster, OperationKind::Delete, &cmd.initiator, rules, ctx);
    // A cluster whose create never finished holds no data; one whose
    // delete failed or stalled after its create did still does.
    let created_once = cluster.observed_generation > 0;
    if let FinalSnapshot::Take(name) = final_snapshot(
        rules.snapshots_enabled,
        cmd.skip_final_snapshot,
        created_once,
        operation.id,
    ) {
        operation.params.snapshot = Some(name);
    }
    changes.insert_operation(&operation);
    cluster.state = ClusterState::Deleting;
    cluster.delete_time = Some(ctx.now);
    if !still_running {
        cluster.current_operation = Some(operation.id);
    }
    show_queued(&mut cluster, &operation, ctx.now);
    let message = format!(
        "deletion requested by {}; {} queued{}",
        cmd.initiator.principal,
        operation.name(),
        match &operation.params.snapshot {
            Some(s) => format!("; it takes the final snapshot {s} before removing anything"),
            None => "; no final snapshot".to_string(),
        }
    );
    changes.record(
        &mut cluster,
        false,
        EventKind::DeleteRequested,
        message,
        Some(operation.id),
        ctx.now,
    );
    Ok(Decision {
        changes,
        answer: ClusterChange {
            cluster,
            operation: Some(operation),
            disruption: Disruption::Destructive,
        },
    })
}
