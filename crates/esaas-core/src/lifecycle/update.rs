//! `UpdateCluster`: a new spec generation, queued as an update or folded into
//! the operation already queued for the cluster (level-triggered: the queued
//! operation drives the cluster to the latest generation). A STALLED
//! operation waits for a person, not for time: a new generation supersedes
//! it (it ends CANCELLED) instead of queueing behind it. A change of
//! `deletion_protection` alone needs nothing built: it is in force once
//! written, with no operation and no new generation.

use crate::cluster::{
    ClusterState, ConditionType, Disruption, SpecField, classify_change, storage_cooldown,
    volume_change,
};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::names::ClusterName;
use crate::operation::{Initiator, InitiatorKind, OperationKind, OperationState};
use crate::spec::ClusterSpec;
use crate::tenant::check_quota;

use super::{
    ChangeSet, ClusterChange, Ctx, Decision, LiveCluster, Rules, check_spec, new_operation,
    show_queued,
};

/// The path of the spec in an `UpdateClusterRequest`, which field errors name.
const SPEC_PATH: &str = "cluster.spec";

/// An update, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateCluster {
    /// The cluster.
    pub name: ClusterName,
    /// The etag the caller read (empty: any).
    pub etag: String,
    /// The new values; only `fields` are taken from it.
    pub patch: ClusterSpec,
    /// The spec fields the update mask names.
    pub fields: Vec<SpecField>,
    /// Who asks.
    pub initiator: Initiator,
}

/// Changes the spec of `state.cluster`: the merged spec must be valid and a
/// change the platform can make safely (no downgrade, no smaller volume, no
/// new size class for a node set) within the tenant's quota. A spec equal to
/// the current one changes nothing and answers the current operation.
pub fn update(
    cmd: &UpdateCluster,
    state: &LiveCluster,
    rules: &Rules,
    ctx: &Ctx,
) -> Result<Decision<ClusterChange>> {
    let mut cluster = state.cluster.clone();
    cluster.check_etag(&cmd.etag)?;
    if cluster.state == ClusterState::Deleting {
        return Err(Error::precondition(
            cmd.name.to_string(),
            "the cluster is being deleted and can no longer change",
        ));
    }
    let spec = check_spec(
        cluster.spec.merged(&cmd.patch, &cmd.fields),
        &rules.catalog,
        SPEC_PATH,
    )?;
    let disruption = classify_change(&cluster.spec, &spec, &rules.catalog, SPEC_PATH)?;
    storage_cooldown(
        &cluster.spec,
        &spec,
        cluster.storage_change_time,
        ctx.now,
        SPEC_PATH,
    )?;
    if spec == cluster.spec {
        return Ok(Decision::unchanged(ClusterChange {
            operation: state.current.clone(),
            cluster,
            disruption: Disruption::None,
        }));
    }
    if spec.same_workload(&cluster.spec) {
        return Ok(settings_only(cluster, spec, cmd, ctx));
    }
    // A snapshot or restore someone asked for carries no spec to fold a
    // change into, and is not dropped for one: it runs first (seconds, for
    // a snapshot), then the change may be sent again.
    if let Some(q) = &state.active.queued
        && matches!(q.kind, OperationKind::Snapshot | OperationKind::Restore)
        && (q.initiator.kind == InitiatorKind::Tenant || !q.attempts.is_empty())
    {
        return Err(Error::precondition(
            cmd.name.to_string(),
            format!(
                "{} ({}) is queued for this cluster; send the change again once it has started",
                q.name(),
                q.kind.as_str().to_lowercase()
            ),
        ));
    }
    let tenant = &state.tenant;
    let mut without = tenant.usage;
    without.clusters -= 1;
    without.nodes -= cluster.spec.node_count();
    without.storage_gib -= cluster.spec.storage_gib();
    check_quota(&tenant.id, &tenant.quota, tenant.usage, without.plus(&spec))?;

    if volume_change(&cluster.spec, &spec, SPEC_PATH).is_some() {
        cluster.storage_change_time = Some(ctx.now);
    }
    cluster.spec = spec;
    cluster.generation += 1;
    let mut changes = ChangeSet::default();
    let superseded = match state.active.running.clone() {
        Some(mut stalled) if stalled.state == OperationState::Stalled => {
            stalled.state = OperationState::Cancelled;
            stalled.end_time = Some(ctx.now);
            stalled.lease = None;
            changes.update_operation(&mut stalled, ctx.now);
            cluster
                .conditions
                .retain(|c| c.kind != ConditionType::Stalled);
            Some(stalled)
        }
        _ => None,
    };
    let operation = match state.active.queued.clone() {
        // A rotation (certificates or nodes) or a scheduled snapshot applies no spec: one the
        // platform queued that has not started gives way (the next
        // observation queues it again).
        Some(mut queued)
            if (queued.kind.is_rotation() || queued.kind == OperationKind::Snapshot)
                && queued.initiator.kind == InitiatorKind::Platform
                && queued.attempts.is_empty() =>
        {
            queued.state = OperationState::Cancelled;
            queued.end_time = Some(ctx.now);
            changes.update_operation(&mut queued, ctx.now);
            let op = new_operation(&cluster, OperationKind::Update, &cmd.initiator, rules, ctx);
            changes.insert_operation(&op);
            op
        }
        Some(mut queued) => {
            queued.target_generation = cluster.generation;
            // The tenant's change runs at once, taking along planned work
            // the platform had scheduled for the window.
            if queued.initiator.kind == InitiatorKind::Platform
                && queued.not_before.is_some()
                && queued.attempts.is_empty()
            {
                queued.not_before = None;
                queued.next_attempt_time = ctx.now;
            }
            changes.update_operation(&mut queued, ctx.now);
            queued
        }
        None => {
            let op = new_operation(&cluster, OperationKind::Update, &cmd.initiator, rules, ctx);
            changes.insert_operation(&op);
            op
        }
    };
    // A running operation stays the cluster's current one; it hands over
    // to the queued one when it ends.
    if state.active.running.is_none() || superseded.is_some() {
        cluster.current_operation = Some(operation.id);
        show_queued(&mut cluster, &operation, ctx.now);
    }
    if matches!(
        cluster.state,
        ClusterState::Ready | ClusterState::Degraded | ClusterState::Failed
    ) {
        cluster.state = ClusterState::Updating;
    }
    let mut message = format!(
        "spec generation {} by {} ({:?} change); carried by {}",
        cluster.generation,
        cmd.initiator.principal,
        disruption,
        operation.name()
    );
    if let Some(stalled) = &superseded {
        message.push_str(&format!(
            "; it supersedes {}, which was STALLED ({}) and is cancelled",
            stalled.name(),
            stalled
                .blocking_check
                .as_deref()
                .unwrap_or("a gate did not open in time")
        ));
    }
    changes.record(
        &mut cluster,
        false,
        EventKind::SpecUpdated,
        message,
        Some(operation.id),
        ctx.now,
    );
    Ok(Decision {
        changes,
        answer: ClusterChange {
            cluster,
            operation: Some(operation),
            disruption,
        },
    })
}

/// A change of only the maintenance window, the change freezes or the
/// deletion protection: recorded with an event, but no new generation (it
/// counts what the platform has to build, and `observed_generation` would
/// otherwise lag behind a change with nothing to observe) and no operation.
/// Work already scheduled keeps its time (`RescheduleOperation` moves it).
fn settings_only(
    mut cluster: crate::cluster::Cluster,
    spec: ClusterSpec,
    cmd: &UpdateCluster,
    ctx: &Ctx,
) -> Decision<ClusterChange> {
    let mut what = Vec::new();
    if spec.deletion_protection != cluster.spec.deletion_protection {
        what.push(format!(
            "deletion protection turned {}",
            if spec.deletion_protection {
                "on"
            } else {
                "off"
            }
        ));
    }
    if spec.maintenance_window != cluster.spec.maintenance_window
        || spec.change_freezes != cluster.spec.change_freezes
    {
        what.push("maintenance window or change freezes changed".to_string());
    }
    if spec.snapshot_policy != cluster.spec.snapshot_policy {
        what.push("snapshot policy changed".to_string());
    }
    cluster.spec = spec;
    let mut changes = ChangeSet::default();
    changes.record(
        &mut cluster,
        false,
        EventKind::SpecUpdated,
        format!(
            "{} by {}; no operation needed",
            what.join(", "),
            cmd.initiator.principal
        ),
        None,
        ctx.now,
    );
    Decision {
        changes,
        answer: ClusterChange {
            cluster,
            operation: None,
            disruption: Disruption::None,
        },
    }
}
