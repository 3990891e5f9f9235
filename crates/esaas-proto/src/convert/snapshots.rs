//! Snapshots: the policy, the status, the records, restores and the
//! worker's reports about them.

use esaas_core::Result;
use esaas_core::error::Violations;
use esaas_core::snapshots::{
    RestoreSource, SnapshotKind, SnapshotObs, SnapshotPolicy, SnapshotRecord, SnapshotState,
    SnapshotStatus,
};

use super::ots;
use crate::v1 as pb;

/// Parses a snapshot policy (checked by the spec's validation).
pub fn policy_from_pb(p: &pb::SnapshotPolicy) -> SnapshotPolicy {
    SnapshotPolicy {
        interval_hours: u32::try_from(p.interval_hours).unwrap_or(u32::MAX),
        retention: u32::try_from(p.retention).unwrap_or(u32::MAX),
    }
}

/// The wire form of a snapshot policy.
pub fn policy_to_pb(p: &SnapshotPolicy) -> pb::SnapshotPolicy {
    pb::SnapshotPolicy {
        interval_hours: i32::try_from(p.interval_hours).unwrap_or(i32::MAX),
        retention: i32::try_from(p.retention).unwrap_or(i32::MAX),
    }
}

/// The wire form of a cluster's snapshot status.
pub fn snapshot_status_to_pb(s: &SnapshotStatus) -> pb::SnapshotStatus {
    pb::SnapshotStatus {
        last_success: s.last_success.clone().unwrap_or_default(),
        last_success_time: ots(s.last_success_time),
        last_failure_time: ots(s.last_failure_time),
        last_failure_reason: s.last_failure_reason.clone(),
        final_snapshot: s.final_snapshot.clone().unwrap_or_default(),
    }
}

/// The wire form of a snapshot state.
pub fn snapshot_state_to_pb(s: SnapshotState) -> pb::SnapshotState {
    match s {
        SnapshotState::InProgress => pb::SnapshotState::InProgress,
        SnapshotState::Success => pb::SnapshotState::Success,
        SnapshotState::Partial => pb::SnapshotState::Partial,
        SnapshotState::Failed => pb::SnapshotState::Failed,
    }
}

fn snapshot_state_from_pb(s: i32) -> SnapshotState {
    match pb::SnapshotState::try_from(s) {
        Ok(pb::SnapshotState::InProgress) => SnapshotState::InProgress,
        Ok(pb::SnapshotState::Success) => SnapshotState::Success,
        Ok(pb::SnapshotState::Partial) => SnapshotState::Partial,
        // Unknown or unset: not usable.
        _ => SnapshotState::Failed,
    }
}

/// The wire form of a snapshot record.
pub fn snapshot_to_pb(r: &SnapshotRecord) -> pb::Snapshot {
    pb::Snapshot {
        name: format!(
            "tenants/{}/clusters/{}/snapshots/{}",
            r.tenant.as_str(),
            r.cluster_id.as_str(),
            r.snapshot.name
        ),
        snapshot_id: r.snapshot.name.clone(),
        cluster_uid: r.cluster_uid.to_string(),
        kind: match r.kind {
            SnapshotKind::Scheduled => pb::SnapshotKind::Scheduled,
            SnapshotKind::Manual => pb::SnapshotKind::Manual,
            SnapshotKind::Final => pb::SnapshotKind::Final,
        } as i32,
        state: snapshot_state_to_pb(r.snapshot.state) as i32,
        indices: r.snapshot.indices.clone(),
        start_time: ots(r.snapshot.start_time),
        end_time: ots(r.snapshot.end_time),
        failure_reason: r.snapshot.reason.clone(),
        operation: esaas_core::names::OperationName(r.operation).to_string(),
    }
}

/// The wire form of what an operation restores.
pub fn operation_restore_to_pb(
    tenant: &esaas_core::names::TenantId,
    r: &RestoreSource,
) -> pb::OperationRestore {
    pb::OperationRestore {
        source_cluster: format!(
            "tenants/{}/clusters/{}",
            tenant.as_str(),
            r.cluster_id.as_str()
        ),
        source_uid: r.cluster_uid.to_string(),
        snapshot: r.snapshot.clone(),
        indices: r.indices.clone(),
    }
}

/// Parses what an assigned operation restores; `field` names it in errors.
pub fn operation_restore_from_pb(r: &pb::OperationRestore, field: &str) -> Result<RestoreSource> {
    let name = esaas_core::names::ClusterName::parse(
        &format!("{field}.source_cluster"),
        &r.source_cluster,
    )?;
    let uid = uuid::Uuid::parse_str(&r.source_uid)
        .map_err(|_| esaas_core::Error::invalid(format!("{field}.source_uid"), "is not a UUID"))?;
    Ok(RestoreSource {
        cluster_id: name.cluster,
        cluster_uid: uid,
        snapshot: r.snapshot.clone(),
        indices: r.indices.clone(),
    })
}

/// The wire form of a snapshot report.
pub fn snapshot_report_to_pb(s: &SnapshotObs) -> pb::SnapshotReport {
    pb::SnapshotReport {
        name: s.name.clone(),
        state: snapshot_state_to_pb(s.state) as i32,
        reason: s.reason.clone(),
        indices: s.indices.clone(),
        start_time: ots(s.start_time),
        end_time: ots(s.end_time),
    }
}

fn wire_time(t: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

/// Parses a snapshot report (bounded like any request: names and indices
/// are cut to what the wire limits allow).
pub fn snapshot_report_from_pb(s: &pb::SnapshotReport) -> Result<SnapshotObs> {
    let mut v = Violations::default();
    if v.too_many("report.snapshot.indices", s.indices.len(), 10_000) {
        return Err(v.into_error());
    }
    Ok(SnapshotObs {
        name: s.name.clone(),
        state: snapshot_state_from_pb(s.state),
        reason: s.reason.chars().take(2000).collect(),
        indices: s.indices.clone(),
        start_time: s.start_time.as_ref().and_then(wire_time),
        end_time: s.end_time.as_ref().and_then(wire_time),
    })
}
