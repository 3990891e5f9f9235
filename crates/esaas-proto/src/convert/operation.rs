//! Operations.

use esaas_core::Result;
use esaas_core::error::{Code, Error, shown};
use esaas_core::operation::{
    Attempt, GateOverride, InitiatorKind, Operation, OperationKind, OperationState, Stage,
    StageName, StageState,
};

use super::{ots, ts};
use crate::v1 as pb;

/// The wire form of an operation kind.
pub fn kind_to_pb(k: OperationKind) -> pb::OperationKind {
    match k {
        OperationKind::Create => pb::OperationKind::Create,
        OperationKind::Update => pb::OperationKind::Update,
        OperationKind::Delete => pb::OperationKind::Delete,
        OperationKind::Repair => pb::OperationKind::Repair,
        OperationKind::RotateCertificates => pb::OperationKind::RotateCertificates,
        OperationKind::RotateNodes => pb::OperationKind::RotateNodes,
        OperationKind::Snapshot => pb::OperationKind::Snapshot,
        OperationKind::Restore => pb::OperationKind::Restore,
    }
}

/// Parses a wire operation kind; `field` names it in the error.
pub fn kind_from_pb(k: i32, field: &str) -> Result<OperationKind> {
    match pb::OperationKind::try_from(k) {
        Ok(pb::OperationKind::Create) => Ok(OperationKind::Create),
        Ok(pb::OperationKind::Update) => Ok(OperationKind::Update),
        Ok(pb::OperationKind::Delete) => Ok(OperationKind::Delete),
        Ok(pb::OperationKind::Repair) => Ok(OperationKind::Repair),
        Ok(pb::OperationKind::RotateCertificates) => Ok(OperationKind::RotateCertificates),
        Ok(pb::OperationKind::RotateNodes) => Ok(OperationKind::RotateNodes),
        Ok(pb::OperationKind::Snapshot) => Ok(OperationKind::Snapshot),
        Ok(pb::OperationKind::Restore) => Ok(OperationKind::Restore),
        Ok(pb::OperationKind::Unspecified) | Err(_) => Err(Error::invalid(
            field,
            format!("{k} is not an operation kind"),
        )),
    }
}

/// The number of a status code (`google.rpc.Code`).
pub fn code_to_pb(c: Code) -> i32 {
    match c {
        Code::Cancelled => 1,
        Code::InvalidArgument => 3,
        Code::FailedPrecondition => 9,
        Code::Internal => 13,
        Code::Unavailable => 14,
    }
}

fn stage_to_pb(s: &Stage) -> pb::Stage {
    pb::Stage {
        name: s.name.as_str().to_string(),
        state: match s.state {
            StageState::Pending => pb::StageState::Pending,
            StageState::Running => pb::StageState::Running,
            StageState::Succeeded => pb::StageState::Succeeded,
            StageState::Failed => pb::StageState::Failed,
            StageState::Skipped => pb::StageState::Skipped,
        } as i32,
        start_time: ots(s.start_time),
        end_time: ots(s.end_time),
        message: s.message.clone(),
    }
}

fn attempt_to_pb(a: &Attempt) -> pb::Attempt {
    pb::Attempt {
        number: a.number,
        worker: a.worker.clone(),
        start_time: ts(a.start_time),
        end_time: ots(a.end_time),
        outcome: a
            .outcome
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

/// Parses an operation state name, with or without its prefix.
pub fn operation_state_from_name(s: &str) -> Option<OperationState> {
    OperationState::parse(s.strip_prefix("OPERATION_STATE_").unwrap_or(s))
}

/// The wire form of an operation.
pub fn operation_to_pb(o: &Operation) -> pb::Operation {
    pb::Operation {
        name: o.name().to_string(),
        cluster: o.cluster_name().to_string(),
        kind: kind_to_pb(o.kind) as i32,
        state: match o.state {
            OperationState::Queued => pb::OperationState::Queued,
            OperationState::Running => pb::OperationState::Running,
            OperationState::Stalled => pb::OperationState::Stalled,
            OperationState::Succeeded => pb::OperationState::Succeeded,
            OperationState::Failed => pb::OperationState::Failed,
            OperationState::Cancelled => pb::OperationState::Cancelled,
        } as i32,
        done: o.state.is_done(),
        initiator: Some(pb::Initiator {
            kind: match o.initiator.kind {
                InitiatorKind::Tenant => pb::InitiatorKind::Tenant,
                InitiatorKind::Platform => pb::InitiatorKind::Platform,
            } as i32,
            principal: o.initiator.principal.clone(),
        }),
        target_generation: o.target_generation,
        stages: o.stages.iter().map(stage_to_pb).collect(),
        attempts: o.attempts.iter().map(attempt_to_pb).collect(),
        max_attempts: o.max_attempts,
        blocking_check: o.blocking_check.clone().unwrap_or_default(),
        error: o.error.as_ref().map(|e| crate::google::rpc::Status {
            code: code_to_pb(e.code),
            message: e.message.clone(),
            details: Vec::new(),
        }),
        create_time: ts(o.create_time),
        start_time: ots(o.start_time),
        end_time: ots(o.end_time),
        update_time: ts(o.update_time),
        next_attempt_time: ts(o.next_attempt_time),
        not_before: ots(o.not_before),
        message: o.summary(),
        cancel_requested: o.cancel_requested,
        gate_override: o.gate_override.as_ref().map(gate_override_to_pb),
        node_release_version: o.params.node_release.clone().unwrap_or_default(),
        snapshot: o.params.snapshot.clone().unwrap_or_default(),
        restore: o
            .params
            .restore
            .as_ref()
            .map(|r| super::operation_restore_to_pb(&o.tenant, r)),
    }
}

/// The wire form of a gate override.
pub fn gate_override_to_pb(g: &GateOverride) -> pb::GateOverride {
    pb::GateOverride {
        stage: g.stage.as_str().to_string(),
        check: g.check.clone(),
        principal: g.principal.clone(),
        justification: g.justification.clone(),
        create_time: ts(g.create_time),
    }
}

/// Parses a gate override an assignment carries (the worker needs its
/// stage, and who and why for the stage's message); `field` is its path.
pub fn gate_override_from_pb(g: &pb::GateOverride, field: &str) -> Result<GateOverride> {
    let stage = StageName::parse(&g.stage).ok_or_else(|| {
        Error::invalid(
            format!("{field}.stage"),
            format!("{} is not a stage", shown(&g.stage)),
        )
    })?;
    Ok(GateOverride {
        stage,
        check: g.check.clone(),
        principal: g.principal.clone(),
        justification: g.justification.clone(),
        create_time: g
            .create_time
            .as_ref()
            .and_then(|t| {
                chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            })
            .unwrap_or_default(),
    })
}
