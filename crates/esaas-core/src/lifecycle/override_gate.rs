//! `OverrideGate`: a person lets the gate a STALLED operation waits at pass
//! once, saying why. The operation goes back to the queue carrying the
//! override ([`GateOverride`]); its next attempt takes that gate as open
//! ([`crate::plan::next_step_overriding`]) and every later gate as usual.
//! The cluster's event log records who, which gate, what it waited for and
//! why. The drain gate cannot be overridden: a node leaves only once
//! Elasticsearch reports it holds no shards.

use crate::cluster::ConditionType;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::operation::{GateOverride, Initiator, Operation, OperationState, StageState};
use crate::plan::stage_can_be_overridden;

use super::lease::Leased;
use super::{ChangeSet, Ctx, Decision};

/// The longest justification, in characters.
pub const MAX_JUSTIFICATION: usize = 512;

/// Checks a justification (`field` is its path in the request): trimmed, it
/// is required and at most [`MAX_JUSTIFICATION`] characters.
pub fn parse_justification(field: &str, text: &str) -> Result<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid(
            field,
            "is required: say why the gate may pass, for the event log",
        ));
    }
    let n = text.chars().count();
    if n > MAX_JUSTIFICATION {
        return Err(Error::invalid(
            field,
            format!("is {n} characters long; at most {MAX_JUSTIFICATION} are allowed"),
        ));
    }
    Ok(text.to_string())
}

/// Re-queues `state.op`, STALLED, with its gate to pass once, for `by`
/// (whose access the caller checked) because of `justification` (parsed).
pub fn override_gate(
    state: &Leased,
    by: &Initiator,
    justification: &str,
    ctx: &Ctx,
) -> Result<Decision<Operation>> {
    let (mut op, mut cluster) = (state.op.clone(), state.cluster.clone());
    let subject = op.name().to_string();
    if op.state != OperationState::Stalled {
        return Err(Error::precondition(
            subject,
            format!(
                "only a STALLED operation's gate can be overridden; this one is {}",
                op.state
            ),
        ));
    }
    // The stage the attempt was in when its gate timed out.
    let Some(stage) = op
        .stages
        .iter()
        .rev()
        .find(|s| s.state == StageState::Running)
        .map(|s| s.name)
    else {
        return Err(Error::precondition(
            subject,
            "the operation records no stage it stalled in, so there is no gate to override: \
             retry it (RetryOperation)",
        ));
    };
    if !stage_can_be_overridden(stage) {
        let why = match stage {
            crate::operation::StageName::Snapshot => {
                "passing it would report a snapshot that was never taken; once Elasticsearch \
                 answers, retry the operation (RetryOperation), or delete again with \
                 skip_final_snapshot to delete without one"
            }
            crate::operation::StageName::Restore => {
                "passing it would report a restore that never happened; once Elasticsearch \
                 answers, retry the operation (RetryOperation)"
            }
            _ => {
                "a node leaves only once Elasticsearch reports it holds no shards, or its data \
                 would be lost; let the shards move (fix allocation), then retry the operation \
                 (RetryOperation)"
            }
        };
        return Err(Error::precondition(
            subject,
            format!("the {stage} gate cannot be overridden: {why}"),
        ));
    }
    let check = op
        .blocking_check
        .clone()
        .unwrap_or_else(|| "a gate did not open in time".into());
    op.gate_override = Some(GateOverride {
        stage,
        check: check.clone(),
        principal: by.principal.clone(),
        justification: justification.to_string(),
        create_time: ctx.now,
    });
    op.state = OperationState::Queued;
    op.blocking_check = None;
    op.next_attempt_time = ctx.now;
    let mut changes = ChangeSet::default();
    changes.update_operation(&mut op, ctx.now);
    cluster.current_operation = Some(op.id);
    cluster
        .conditions
        .retain(|c| c.kind != ConditionType::Stalled);
    cluster.message = format!(
        "{} re-queued: the {stage} gate passes once, overridden by {}",
        op.name(),
        by.principal
    );
    changes.record(
        &mut cluster,
        false,
        EventKind::GateOverridden,
        format!(
            "{}: the {stage} gate ({check}) overridden by {}: {justification}",
            op.name(),
            by.principal
        ),
        Some(op.id),
        ctx.now,
    );
    Ok(Decision {
        changes,
        answer: op,
    })
}
