//! `CreateSnapshot` and `RestoreSnapshot`: a snapshot of a running cluster,
//! or chosen indices of a snapshot restored into it, each queued as an
//! operation like any other change. Where a restore reads from is checked
//! here too ([`restore_source`]), for restores into a new cluster as well.

use crate::cluster::{ClusterState, Disruption};
use crate::error::{Error, PreconditionViolation, Result, Violations};
use crate::event::EventKind;
use crate::names::ClusterName;
use crate::operation::{Initiator, OperationKind};
use crate::snapshots::{self, RestoreSource, SnapshotKind, SnapshotRecord};

use super::{
    ChangeSet, ClusterChange, Ctx, Decision, LiveCluster, Rules, new_operation, show_queued,
};

/// The stable type of the violation when the platform has no snapshot bucket.
pub const SNAPSHOTS_OFF: &str = "SNAPSHOTS_NOT_CONFIGURED";
/// The stable type of the violation when another operation is queued.
pub const OPERATION_QUEUED: &str = "OPERATION_QUEUED";
/// The most indices one restore may name.
pub const MAX_RESTORE_INDICES: usize = 100;

/// What a snapshot or restore of `name` needs of the platform and the cluster.
fn check_live(name: &ClusterName, state: &LiveCluster, rules: &Rules, what: &str) -> Result<()> {
    if !rules.snapshots_enabled {
        return Err(Error::FailedPrecondition(vec![PreconditionViolation {
            kind: SNAPSHOTS_OFF.into(),
            subject: name.to_string(),
            description: "this platform has no snapshot bucket ([snapshots] bucket): ask a \
                          platform admin to configure one"
                .into(),
        }]));
    }
    if !matches!(
        state.cluster.state,
        ClusterState::Ready | ClusterState::Degraded | ClusterState::Updating
    ) || state.cluster.observed_generation == 0
    {
        return Err(Error::precondition(
            name.to_string(),
            format!(
                "the cluster is {}: {what} needs a cluster that has been created and is not \
                 being deleted",
                state.cluster.state.as_str()
            ),
        ));
    }
    if let Some(q) = &state.active.queued {
        return Err(Error::FailedPrecondition(vec![PreconditionViolation {
            kind: OPERATION_QUEUED.into(),
            subject: name.to_string(),
            description: format!(
                "{} ({}) is queued for this cluster; ask again once it has started",
                q.name(),
                q.kind.as_str().to_lowercase()
            ),
        }]));
    }
    Ok(())
}

/// A `CreateSnapshot`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSnapshot {
    /// The cluster.
    pub name: ClusterName,
    /// Who asks.
    pub initiator: Initiator,
}

/// Queues a SNAPSHOT operation for a running cluster (behind the running
/// operation, if any). Refused while another operation is queued (it may
/// carry a spec change the snapshot would have to wait for anyway).
pub fn create_snapshot(
    cmd: &CreateSnapshot,
    state: &LiveCluster,
    rules: &Rules,
    ctx: &Ctx,
) -> Result<Decision<ClusterChange>> {
    check_live(&cmd.name, state, rules, "a snapshot")?;
    let mut cluster = state.cluster.clone();
    let mut op = new_operation(
        &cluster,
        OperationKind::Snapshot,
        &cmd.initiator,
        rules,
        ctx,
    );
    let snapshot = snapshots::operation_snapshot_name(SnapshotKind::Manual, op.id);
    op.params.snapshot = Some(snapshot.clone());
    Ok(queue(
        &mut cluster,
        op,
        format!(
            "snapshot {snapshot} requested by {}",
            cmd.initiator.principal
        ),
        state,
        ctx,
    ))
}

/// Writes `op` as queued for `cluster`: current at once when nothing runs.
fn queue(
    cluster: &mut crate::cluster::Cluster,
    op: crate::operation::Operation,
    what: String,
    state: &LiveCluster,
    ctx: &Ctx,
) -> Decision<ClusterChange> {
    let mut changes = ChangeSet::default();
    changes.insert_operation(&op);
    if state.active.running.is_none() {
        cluster.current_operation = Some(op.id);
        show_queued(cluster, &op, ctx.now);
    }
    changes.record(
        cluster,
        false,
        EventKind::OperationProgress,
        format!("{what}; {} queued", op.name()),
        Some(op.id),
        ctx.now,
    );
    Decision {
        changes,
        answer: ClusterChange {
            cluster: cluster.clone(),
            operation: Some(op),
            disruption: Disruption::None,
        },
    }
}

/// Checks what a restore names against the record of the snapshot the
/// store found (by the source cluster's name and the snapshot's): it must
/// exist, belong to the caller's tenant and have succeeded. `field` is the
/// request's path of the source, for errors. `indices` are checked for
/// count and against the snapshot's indices.
pub fn restore_source(
    record: Option<&SnapshotRecord>,
    source_name: &ClusterName,
    snapshot: &str,
    indices: &[String],
    field: &str,
) -> Result<RestoreSource> {
    let Some(r) = record else {
        return Err(Error::NotFound {
            kind: "Snapshot",
            name: format!("{source_name}/snapshots/{snapshot}"),
        });
    };
    if !r.snapshot.state.is_usable() {
        return Err(Error::precondition(
            format!("{source_name}/snapshots/{snapshot}"),
            format!(
                "snapshot {snapshot} ended {}: only a snapshot that succeeded can be restored",
                r.snapshot.state
            ),
        ));
    }
    let mut v = Violations::default();
    if !v.too_many(
        &format!("{field}.indices"),
        indices.len(),
        MAX_RESTORE_INDICES,
    ) {
        for (i, index) in indices.iter().enumerate() {
            if !r.snapshot.indices.iter().any(|n| n == index) {
                v.add(
                    format!("{field}.indices[{i}]"),
                    format!(
                        "{} is not in snapshot {snapshot} (it holds {})",
                        crate::error::shown(index),
                        if r.snapshot.indices.is_empty() {
                            "no indices".to_string()
                        } else {
                            r.snapshot.indices.join(", ")
                        }
                    ),
                );
            }
        }
    }
    v.finish()?;
    Ok(RestoreSource {
        cluster_id: r.cluster_id.clone(),
        cluster_uid: r.cluster_uid,
        snapshot: snapshot.to_string(),
        indices: indices.to_vec(),
    })
}

/// A restore into a running cluster names its indices: restoring every index
/// of a snapshot over a running cluster's is never what its owner meant.
/// `field` is their path in the request.
pub fn require_indices(indices: &[String], field: &str) -> Result<()> {
    if indices.is_empty() {
        return Err(Error::invalid(
            field,
            "name at least one index to restore into a running cluster",
        ));
    }
    Ok(())
}

/// A `RestoreSnapshot` into a running cluster, parsed and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreIndices {
    /// The cluster restored into.
    pub name: ClusterName,
    /// What to restore (at least one index).
    pub source: RestoreSource,
    /// Who asks.
    pub initiator: Initiator,
}

/// Queues a RESTORE of chosen indices into a running cluster. The indices
/// must not be open in the cluster when it runs (Elasticsearch refuses to
/// restore over an open index): the operation fails saying which, and the
/// owner deletes or closes them first.
pub fn restore_indices(
    cmd: &RestoreIndices,
    state: &LiveCluster,
    rules: &Rules,
    ctx: &Ctx,
) -> Result<Decision<ClusterChange>> {
    check_live(&cmd.name, state, rules, "a restore")?;
    require_indices(&cmd.source.indices, "source.indices")?;
    let mut cluster = state.cluster.clone();
    let mut op = new_operation(&cluster, OperationKind::Restore, &cmd.initiator, rules, ctx);
    op.params.restore = Some(cmd.source.clone());
    Ok(queue(
        &mut cluster,
        op,
        format!(
            "restore of {} from snapshot {} of {} requested by {}",
            cmd.source.indices.join(", "),
            cmd.source.snapshot,
            cmd.source.cluster_id.as_str(),
            cmd.initiator.principal
        ),
        state,
        ctx,
    ))
}
