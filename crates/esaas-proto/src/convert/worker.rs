//! `WorkerService.Connect`: hellos, leases, assignments and reports, both
//! ways (the control plane reads what workers write, and the reverse).

use esaas_core::Result;
use esaas_core::backend::Target;
use esaas_core::cluster::Cluster;
use esaas_core::error::Error;
use esaas_core::lifecycle::lease::LeaseEvent;
use esaas_core::names::{ClusterName, OperationName};
use esaas_core::operation::{GateOverride, Operation, OperationKind, StageName};
use esaas_core::worker::WorkerInfo;
use uuid::Uuid;

use super::{
    cluster_to_pb, gate_override_from_pb, health_from_pb, health_to_pb, json_to_struct,
    kind_from_pb, operation_to_pb, spec_from_pb, struct_to_json,
};
use crate::v1 as pb;

/// Parses a hello and checks it.
pub fn hello_from_pb(h: &pb::WorkerHello) -> Result<WorkerInfo> {
    let info = WorkerInfo {
        id: h.worker_id.clone(),
        region: h.region.clone(),
        capacity: h.capacity,
        version: h.version.clone(),
    };
    info.validate("hello")?;
    Ok(info)
}

/// The wire form of a lease: its operation and fencing token.
pub fn lease_to_pb(operation: Uuid, token: i64) -> pb::LeaseRef {
    pb::LeaseRef {
        operation: OperationName(operation).to_string(),
        lease_token: token,
    }
}

/// Parses a lease; `field` names it in the error.
pub fn lease_from_pb(l: Option<&pb::LeaseRef>, field: &str) -> Result<(Uuid, i64)> {
    let l = l.ok_or_else(|| Error::invalid(field, "is required"))?;
    Ok((
        OperationName::parse(&format!("{field}.operation"), &l.operation)?.0,
        l.lease_token,
    ))
}

fn stage_from_pb(name: &str, field: &str) -> Result<StageName> {
    StageName::parse(name).ok_or_else(|| {
        Error::invalid(
            field,
            format!(
                "{} is not a stage; stages are {}",
                esaas_core::error::shown(name),
                StageName::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// Parses the event of a report.
pub fn lease_event_from_pb(event: Option<pb::lease_report::Event>) -> Result<LeaseEvent> {
    use pb::lease_report::Event;
    let event = event.ok_or_else(|| Error::invalid("report.event", "is required"))?;
    Ok(match event {
        Event::StageStarted(s) => {
            LeaseEvent::StageStarted(stage_from_pb(&s, "report.stage_started")?)
        }
        Event::StageFinished(f) => LeaseEvent::StageFinished {
            name: stage_from_pb(&f.name, "report.stage_finished.name")?,
            skipped: f.skipped,
            message: f.message,
        },
        Event::Checkpoint(s) => LeaseEvent::Checkpoint(struct_to_json(&s)),
        Event::BlockingCheck(s) => LeaseEvent::Blocking(s),
        Event::Succeeded(c) => LeaseEvent::Succeeded {
            endpoint: Some(c.endpoint).filter(|e| !e.is_empty()),
            health: health_from_pb(c.health),
            certificate_not_after: c.certificate_expire_time.and_then(|t| {
                chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            }),
        },
        Event::Failed(f) => LeaseEvent::Failed {
            retryable: f.retryable,
            reason: f.reason,
            message: f.message,
        },
        Event::Stalled(s) => LeaseEvent::Stalled(s),
        Event::HandedBack(_) => LeaseEvent::HandedBack,
        Event::RetainedVolumes(r) => LeaseEvent::Retained(r.names),
        Event::Repository(r) => LeaseEvent::Repository {
            registered: r.registered,
            message: r.message,
        },
        Event::Snapshot(s) => LeaseEvent::Snapshot(super::snapshot_report_from_pb(&s)?),
        Event::SnapshotsDeleted(d) => LeaseEvent::SnapshotsDeleted(d.names),
    })
}

/// The wire form of a report's event.
pub fn lease_event_to_pb(event: LeaseEvent) -> pb::lease_report::Event {
    use pb::lease_report::Event;
    match event {
        LeaseEvent::StageStarted(s) => Event::StageStarted(s.as_str().to_string()),
        LeaseEvent::StageFinished {
            name,
            skipped,
            message,
        } => Event::StageFinished(pb::StageFinished {
            name: name.as_str().to_string(),
            skipped,
            message,
        }),
        LeaseEvent::Checkpoint(v) => Event::Checkpoint(json_to_struct(&v)),
        LeaseEvent::Blocking(s) => Event::BlockingCheck(s),
        LeaseEvent::Succeeded {
            endpoint,
            health,
            certificate_not_after,
        } => Event::Succeeded(pb::Completion {
            endpoint: endpoint.unwrap_or_default(),
            health: health_to_pb(health) as i32,
            certificate_expire_time: certificate_not_after.and_then(super::ts),
        }),
        LeaseEvent::Failed {
            retryable,
            reason,
            message,
        } => Event::Failed(pb::LeaseFailure {
            retryable,
            reason,
            message,
        }),
        LeaseEvent::Stalled(s) => Event::Stalled(s),
        LeaseEvent::HandedBack => Event::HandedBack(true),
        LeaseEvent::Retained(names) => Event::RetainedVolumes(pb::RetainedVolumes { names }),
        LeaseEvent::Repository {
            registered,
            message,
        } => Event::Repository(pb::RepositoryReport {
            registered,
            message,
        }),
        LeaseEvent::Snapshot(s) => Event::Snapshot(super::snapshot_report_to_pb(&s)),
        LeaseEvent::SnapshotsDeleted(names) => {
            Event::SnapshotsDeleted(pb::DeletedSnapshots { names })
        }
    }
}

/// An operation leased to a worker, as the control plane sends it.
pub fn assignment_to_pb(
    operation: &Operation,
    cluster: &Cluster,
    ttl: std::time::Duration,
) -> pb::Assignment {
    let token = operation
        .lease
        .as_ref()
        .map_or(operation.lease_token, |l| l.token);
    pb::Assignment {
        lease: Some(lease_to_pb(operation.id, token)),
        lease_ttl: prost_types::Duration::try_from(ttl).ok(),
        operation: Some(operation_to_pb(operation)),
        cluster: Some(cluster_to_pb(cluster)),
        checkpoint: operation.checkpoint.as_ref().map(json_to_struct),
        traceparent: operation.traceparent.clone().unwrap_or_default(),
    }
}

/// What a worker needs of an assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Assigned {
    /// The lease's fencing token.
    pub token: i64,
    /// The cluster at the operation's target generation.
    pub target: Target,
    /// What the operation does.
    pub kind: OperationKind,
    /// Attempts before this one.
    pub previous_attempts: usize,
    /// The stalled gate this attempt lets pass once (`OverrideGate`).
    pub gate_override: Option<GateOverride>,
    /// What a snapshot, restore or delete works on.
    pub params: esaas_core::operation::OperationParams,
}

/// Parses an assignment.
pub fn assignment_from_pb(a: &pb::Assignment) -> Result<Assigned> {
    let (id, token) = lease_from_pb(a.lease.as_ref(), "assignment.lease")?;
    let cluster = a
        .cluster
        .as_ref()
        .ok_or_else(|| Error::invalid("assignment.cluster", "is required"))?;
    let op = a
        .operation
        .as_ref()
        .ok_or_else(|| Error::invalid("assignment.operation", "is required"))?;
    let name = ClusterName::parse("assignment.cluster.name", &cluster.name)?;
    let spec = spec_from_pb(
        cluster
            .spec
            .as_ref()
            .ok_or_else(|| Error::invalid("assignment.cluster.spec", "is required"))?,
        "assignment.cluster.spec",
    )?
    .with_defaults();
    let uid = Uuid::parse_str(&cluster.uid)
        .map_err(|_| Error::invalid("assignment.cluster.uid", "is not a UUID"))?;
    Ok(Assigned {
        token,
        target: Target {
            uid,
            tenant: name.tenant,
            cluster_id: name.cluster,
            spec,
            generation: op.target_generation,
            operation: id,
        },
        kind: kind_from_pb(op.kind, "assignment.operation.kind")?,
        previous_attempts: op.attempts.len(),
        gate_override: op
            .gate_override
            .as_ref()
            .map(|g| gate_override_from_pb(g, "assignment.operation.gate_override"))
            .transpose()?,
        params: esaas_core::operation::OperationParams {
            snapshot: Some(op.snapshot.clone()).filter(|s| !s.is_empty()),
            restore: op
                .restore
                .as_ref()
                .map(|r| super::operation_restore_from_pb(r, "assignment.operation.restore"))
                .transpose()?,
            node_release: Some(op.node_release_version.clone()).filter(|r| !r.is_empty()),
        },
    })
}

/// The cluster an observation request names, as a target (no operation).
pub fn observation_target_from_pb(r: &pb::ObservationRequest) -> Result<Target> {
    let cluster = r
        .cluster
        .as_ref()
        .ok_or_else(|| Error::invalid("observe.cluster", "is required"))?;
    let name = ClusterName::parse("observe.cluster.name", &cluster.name)?;
    let spec = spec_from_pb(
        cluster
            .spec
            .as_ref()
            .ok_or_else(|| Error::invalid("observe.cluster.spec", "is required"))?,
        "observe.cluster.spec",
    )?
    .with_defaults();
    let uid = Uuid::parse_str(&cluster.uid)
        .map_err(|_| Error::invalid("observe.cluster.uid", "is not a UUID"))?;
    Ok(Target {
        uid,
        tenant: name.tenant,
        cluster_id: name.cluster,
        spec,
        generation: cluster.generation,
        operation: Uuid::nil(),
    })
}
