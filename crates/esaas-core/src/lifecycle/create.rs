//! `CreateCluster`: a new cluster, PROVISIONING, with its create operation
//! queued, within the tenant's quota.

use crate::cluster::{Cluster, ClusterState, Disruption, Health};
use crate::error::Result;
use crate::event::EventKind;
use crate::names::{ClusterId, TenantId};
use crate::operation::{Initiator, OperationKind};
use crate::placement;
use crate::snapshots::RestoreSource;
use crate::spec::ClusterSpec;
use crate::tenant::{Tenant, check_quota};

use super::{ChangeSet, ClusterChange, Ctx, Decision, Rules, new_operation, show_queued};

/// A create, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateCluster {
    /// The owner.
    pub tenant: TenantId,
    /// The id within the tenant.
    pub cluster_id: ClusterId,
    /// The spec, as [`super::check_spec`] returned it.
    pub spec: ClusterSpec,
    /// Who asks.
    pub initiator: Initiator,
    /// The snapshot to restore into the new cluster once it runs.
    pub restore: Option<RestoreSource>,
}

/// Creates the cluster in `tenant` (locked, with its usage), or refuses it
/// with the quota limits it would exceed. A live cluster of the same name is
/// refused by the store (the name is unique among live clusters).
pub fn create(
    cmd: &CreateCluster,
    tenant: &Tenant,
    rules: &Rules,
    ctx: &Ctx,
) -> Result<Decision<ClusterChange>> {
    check_quota(
        &tenant.id,
        &tenant.quota,
        tenant.usage,
        tenant.usage.plus(&cmd.spec),
    )?;
    let mut cluster = Cluster {
        uid: ctx.cluster_uid,
        tenant: cmd.tenant.clone(),
        cluster_id: cmd.cluster_id.clone(),
        spec: ClusterSpec {
            // Where its volumes will live, for the rest of its life.
            zones: placement::choose_zones(
                ctx.cluster_uid,
                cmd.spec.zone_count,
                &rules.catalog.zones,
            ),
            ..cmd.spec.clone()
        },
        generation: 1,
        observed_generation: 0,
        state: ClusterState::Provisioning,
        health: Health::Unknown,
        endpoint: None,
        conditions: Vec::new(),
        message: String::new(),
        current_operation: None,
        version: 0,
        revision: 0,
        create_time: ctx.now,
        update_time: ctx.now,
        delete_time: None,
        storage_change_time: None,
        retained_volumes: Vec::new(),
        certificate_expire_time: None,
        snapshots: Default::default(),
    };
    let mut operation = new_operation(&cluster, OperationKind::Create, &cmd.initiator, rules, ctx);
    operation.params.restore = cmd.restore.clone();
    cluster.current_operation = Some(operation.id);
    show_queued(&mut cluster, &operation, ctx.now);
    let mut changes = ChangeSet::default();
    changes.record(
        &mut cluster,
        true,
        EventKind::Created,
        match &cmd.restore {
            Some(r) => format!(
                "cluster created by {} from snapshot {} of {}; {} queued",
                cmd.initiator.principal,
                r.snapshot,
                r.cluster_id.as_str(),
                operation.name()
            ),
            None => format!(
                "cluster created by {}; {} queued",
                cmd.initiator.principal,
                operation.name()
            ),
        },
        Some(operation.id),
        ctx.now,
    );
    changes.insert_operation(&operation);
    Ok(Decision {
        changes,
        answer: ClusterChange {
            cluster,
            operation: Some(operation),
            disruption: Disruption::None,
        },
    })
}
