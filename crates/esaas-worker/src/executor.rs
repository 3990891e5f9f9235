//! Runs one leased operation: observe, ask the planner for the next step,
//! perform it, report, repeat. The world is observed afresh before every
//! step, so a repeated step (after a crash or a retry) finds its work done
//! and moves on. Gates (waits) report what they wait for, and end the
//! attempt as STALLED, naming the reason, when they do not open in time. A
//! gate someone overrode (`OverrideGate`) is passed once, as
//! [`esaas_core::plan::next_step_overriding`] decides, and its stage ends
//! saying who let it pass and why. A step (or the observation before it)
//! that outlasts its deadline ends the attempt as a retryable failure,
//! naming the step and the last error.

use std::future::Future;
use std::time::Duration;

use esaas_core::backend::{Elasticsearch, NodeGroups, StepError, Target, Workloads};
use esaas_core::cluster::Health;
use esaas_core::lifecycle::lease::LeaseEvent;
use esaas_core::operation::{GateOverride, OperationKind, OperationParams, StageName};
use esaas_core::plan::{Goal, NodeGroupStatus, Observed, Overridden, Step, next_step_overriding};
use esaas_core::snapshots::SnapshotState;
use esaas_core::spec::VolumeRetention;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The three backends a worker drives.
#[derive(Debug, Clone)]
pub struct Backends<N, W, E> {
    /// EKS node groups.
    pub node_groups: N,
    /// Kubernetes workloads.
    pub workloads: W,
    /// Elasticsearch.
    pub elasticsearch: E,
}

/// Timing of the executor.
#[derive(Debug, Clone, Copy)]
pub struct ExecSettings {
    /// How often a gate is checked again.
    pub poll: Duration,
    /// How long one gate may stay closed before the operation stalls.
    pub gate_timeout: Duration,
    /// How long one step may take, its retries included (and, apart, the
    /// observation before it) before the attempt fails retryably. A gate is
    /// not one step: each of its checks is an observation of its own.
    pub step_timeout: Duration,
}

/// Tries of a backend call that fails with a retryable error (throttling,
/// 5xx, a timeout) before the attempt fails.
const CALL_TRIES: u32 = 5;

/// Runs `call` until it succeeds, fails permanently, or has failed
/// retryably `CALL_TRIES` times, backing off 100 ms, 200 ms, 400 ms ...
/// with jitter in between, all within `deadline`: past it the tries end
/// with `StepError::deadline_exceeded`, naming `what`, the deadline and the
/// last error met. A call that hangs is dropped there, so a dependency
/// that never answers costs one attempt, not the lease for ever. Stops when
/// `cancel` fires.
async fn with_retries<T, F, Fut>(
    what: &str,
    deadline: Duration,
    cancel: &CancellationToken,
    mut call: F,
) -> Result<Result<T, StepError>, Stopped>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    let until = Instant::now() + deadline;
    let mut last: Option<StepError> = None;
    let late = |last: &Option<StepError>| {
        tracing::warn!(
            call = what,
            deadline_s = deadline.as_secs_f64(),
            "step deadline passed"
        );
        Ok(Err(StepError::deadline_exceeded(
            what,
            deadline,
            last.as_ref(),
        )))
    };
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let result = tokio::select! {
            r = call() => r,
            _ = tokio::time::sleep_until(until) => return late(&last),
            _ = cancel.cancelled() => return Err(Stopped::Cancelled),
        };
        match result {
            Err(e) if e.retryable && attempt < CALL_TRIES => {
                tracing::warn!(call = what, attempt, reason = %e.reason, error = %e.message, "retrying");
                esaas_telemetry::metrics::metrics().retry(&e.reason, "step");
                let jitter = delay.mul_f64(rand::random::<f64>());
                last = Some(e);
                tokio::select! {
                    _ = tokio::time::sleep(delay / 2 + jitter / 2) => {}
                    _ = tokio::time::sleep_until(until) => return late(&last),
                    _ = cancel.cancelled() => return Err(Stopped::Cancelled),
                }
                delay *= 2;
                attempt += 1;
            }
            other => return Ok(other),
        }
    }
}

/// Why the executor stopped without a final event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    /// The control plane refused a report: the lease is no longer ours.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// The work was cancelled (superseded, or the worker is shutting down).
    #[error("cancelled")]
    Cancelled,
}

/// Sends a report on the lease and waits for the control plane's ack.
pub trait Reporter: Send + Sync {
    /// `Err(reason)` when the report was refused or could not be delivered.
    fn report(&self, event: LeaseEvent) -> impl Future<Output = Result<(), String>> + Send;
}

/// The operation a lease is for.
#[derive(Debug, Clone)]
pub struct Job {
    /// The cluster at the target generation.
    pub target: Target,
    /// What to do.
    pub kind: OperationKind,
    /// The stalled gate this attempt lets pass once.
    pub gate_override: Option<GateOverride>,
    /// What a snapshot, restore or delete works on.
    pub params: OperationParams,
}

fn finished(stage: StageName) -> LeaseEvent {
    LeaseEvent::StageFinished {
        name: stage,
        skipped: false,
        message: String::new(),
    }
}

fn failed(e: StepError) -> LeaseEvent {
    LeaseEvent::Failed {
        retryable: e.retryable,
        reason: e.reason,
        message: e.message,
    }
}

async fn observe<N: NodeGroups, W: Workloads, E: Elasticsearch>(
    b: &Backends<N, W, E>,
    t: &Target,
    goal: &Goal,
) -> Result<(Observed, Seen), StepError> {
    let deleting = matches!(goal, Goal::Delete { .. });
    let converging = matches!(goal, Goal::Converge(_) | Goal::CreateRestoring { .. });
    // A goal that takes a snapshot looks at the repository and its snapshots.
    let snapshotting = matches!(
        goal,
        Goal::Snapshot { .. }
            | Goal::Delete {
                final_snapshot: Some(_),
                ..
            }
    );
    let restoring = match goal {
        Goal::CreateRestoring { source, .. } | Goal::Restore { source } => Some(source),
        _ => None,
    };
    let (groups, loads, health) = tokio::join!(
        b.node_groups.observe(t),
        b.workloads.observe(t),
        b.elasticsearch.health(t)
    );
    // The platform's EKS cluster gone: everything the cluster had went with
    // it (Kubernetes included), so a delete finds nothing left and completes.
    if let Err(e) = &groups
        && e.means_nothing_left(deleting)
    {
        tracing::warn!(reason = %e.reason, message = %e.message, "the EKS cluster is gone: nothing left to delete");
        return Ok((
            Observed::default(),
            Seen {
                endpoint: None,
                claims: Vec::new(),
                certificate_not_after: None,
            },
        ));
    }
    let (groups, loads) = (groups?, loads?);
    // A delete needs no answer from Elasticsearch: one that cannot be
    // reached, or refuses the credentials, must not keep a cluster alive.
    let health = match health {
        Err(e) if deleting => {
            tracing::warn!(reason = %e.reason, "Elasticsearch health ignored while deleting");
            None
        }
        other => other?,
    };
    // A converge registers the snapshot repository only once the cluster is
    // green (before a master is elected Elasticsearch answers 503), so only
    // then is it looked at; a goal that takes a snapshot looks whenever
    // Elasticsearch answers.
    let green = matches!(&health, Some(h) if h.status == Health::Green);
    let answers = health.is_some();
    // A delete's final snapshot is looked for only while there is a cluster
    // to take it of (the planner asks for it only then).
    let snapshotting = snapshotting && !(deleting && loads.workloads.is_empty());
    let repository = if (converging && green) || (snapshotting && answers) {
        b.elasticsearch.repository_registered(t).await?
    } else {
        None
    };
    let snapshots = if snapshotting && repository == Some(true) {
        b.elasticsearch.snapshots(t).await?
    } else {
        None
    };
    let restore = match restoring {
        Some(source) if answers => b.elasticsearch.restore_state(t, source).await?,
        _ => None,
    };
    Ok((
        Observed {
            base_objects: loads.base_objects,
            node_groups: groups,
            workloads: loads.workloads,
            health,
            certificates_rotated_by: loads.certificates_rotated_by,
            snapshot_repository: repository,
            snapshots,
            restore,
        },
        Seen {
            endpoint: loads.endpoint,
            claims: loads.claims,
            certificate_not_after: loads.certificate_not_after,
        },
    ))
}

/// The end of an attempt whose goal is reached.
fn succeeded(seen: &Seen, observed: &Observed) -> LeaseEvent {
    LeaseEvent::Succeeded {
        endpoint: seen.endpoint.clone(),
        health: observed
            .health
            .as_ref()
            .map_or(Health::Unknown, |h| h.status),
        certificate_not_after: seen.certificate_not_after,
    }
}

/// The failure a restore meets that no retry mends: a source snapshot that
/// is not there or did not succeed, or open indices of the restored names.
fn restore_refused(r: &esaas_core::plan::RestoreObs) -> Option<LeaseEvent> {
    if !r.source_registered {
        return None;
    }
    let (reason, message) = if !r.conflicts.is_empty() {
        (
            "RESTORE_INDEX_EXISTS",
            format!(
                "open indices stand where the restore would put its own: {}; delete or \
                 close them first (Elasticsearch restores over no open index)",
                r.conflicts.join(", ")
            ),
        )
    } else if r.snapshot != Some(SnapshotState::Success) {
        (
            "RESTORE_SOURCE_UNUSABLE",
            "the snapshot is not in the source repository, or did not succeed".to_string(),
        )
    } else {
        return None;
    };
    Some(LeaseEvent::Failed {
        retryable: false,
        reason: reason.into(),
        message,
    })
}

/// What an observation found besides what the planner looks at.
struct Seen {
    endpoint: Option<String>,
    claims: Vec<String>,
    certificate_not_after: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a worker sees of a live cluster for the control plane's
/// observation: each backend asked at once, each answer or error kept on
/// its own, within `deadline`.
pub async fn observe_facts<N: NodeGroups, W: Workloads, E: Elasticsearch>(
    b: &Backends<N, W, E>,
    t: &Target,
    deadline: Duration,
) -> esaas_core::lifecycle::observe::Facts {
    let err = |e: StepError| format!("{}: {}", e.reason, e.message);
    let late = || format!("no answer within {} s", deadline.as_secs());
    let (groups, loads, health) = tokio::join!(
        tokio::time::timeout(deadline, b.node_groups.observe(t)),
        tokio::time::timeout(deadline, b.workloads.observe(t)),
        tokio::time::timeout(deadline, b.elasticsearch.health(t))
    );
    esaas_core::lifecycle::observe::Facts {
        generation: t.generation,
        node_groups: groups.map_err(|_| late()).and_then(|r| r.map_err(err)),
        workloads: loads
            .map_err(|_| late())
            .and_then(|r| r.map_err(err))
            .map(|w| esaas_core::lifecycle::observe::WorkloadFacts {
                base_objects: w.base_objects,
                workloads: w.workloads,
                certificate_not_after: w.certificate_not_after,
            }),
        health: health.map_err(|_| late()).and_then(|r| r.map_err(err)),
    }
}

async fn perform<N: NodeGroups, W: Workloads, E: Elasticsearch>(
    b: &Backends<N, W, E>,
    t: &Target,
    goal: &Goal,
    step: &Step,
) -> Result<(), StepError> {
    let source = match goal {
        Goal::CreateRestoring { source, .. } | Goal::Restore { source } => Some(source),
        _ => None,
    };
    let no_source = || StepError::permanent("RESTORE_SOURCE", "the operation names no source");
    match step {
        Step::ApplyBaseObjects => b.workloads.apply_base(t).await,
        Step::EnsureNodeGroup { node_set, size } => b.node_groups.ensure(t, node_set, *size).await,
        Step::DrainNode { node_set, ordinal } => {
            b.elasticsearch.exclude(t, node_set, *ordinal).await
        }
        Step::IncludeNode { node_set, ordinal } => {
            b.elasticsearch.include(t, node_set, *ordinal).await
        }
        Step::ApplyWorkload { node_set, replicas } => {
            b.workloads.apply_node_set(t, node_set, *replicas).await
        }
        Step::RollPod {
            node_set,
            partition,
        } => b.workloads.roll(t, node_set, *partition).await,
        Step::ResizeVolumes {
            node_set,
            storage_gib,
            attributes_class,
        } => {
            b.workloads
                .resize_volumes(t, node_set, *storage_gib, attributes_class)
                .await
        }
        Step::OrphanWorkload { node_set } => b.workloads.orphan_node_set(t, node_set).await,
        Step::RegisterShutdown { node_set, ordinal } => {
            b.elasticsearch
                .register_shutdown(t, node_set, *ordinal)
                .await
        }
        Step::ClearShutdown { node_set, ordinal } => {
            b.elasticsearch.clear_shutdown(t, node_set, *ordinal).await
        }
        Step::ExcludeFromVoting { node_set, ordinal } => {
            b.elasticsearch
                .exclude_from_voting(t, node_set, *ordinal)
                .await
        }
        Step::ClearVotingExclusions => b.elasticsearch.clear_voting_exclusions(t).await,
        Step::DeleteWorkload { node_set } => b.workloads.delete_node_set(t, node_set).await,
        Step::DeleteNodeGroup { node_set } => b.node_groups.delete(t, node_set).await,
        Step::DeleteBaseObjects { retention } => b.workloads.delete_base(t, *retention).await,
        Step::RotateCertificates => b.workloads.rotate_certificates(t).await,
        Step::RegisterRepository => b.elasticsearch.register_repository(t).await,
        Step::UpdateNodeGroupVersion {
            node_set,
            zone,
            release,
        } => {
            b.node_groups
                .update_version(t, node_set, zone, release)
                .await
        }
        Step::TakeSnapshot { name } => b.elasticsearch.take_snapshot(t, name).await,
        Step::DeleteSnapshot { name } => b.elasticsearch.delete_snapshot(t, name).await,
        Step::RegisterSourceRepository => {
            let source = source.ok_or_else(no_source)?;
            b.elasticsearch.register_source_repository(t, source).await
        }
        Step::RestoreSnapshot => {
            let source = source.ok_or_else(no_source)?;
            // The pending indices, as the observation before the step saw them.
            let pending = match b.elasticsearch.restore_state(t, source).await? {
                Some(r) => r.pending,
                None => {
                    return Err(StepError::retryable(
                        "ES_UNAVAILABLE",
                        "Elasticsearch does not answer",
                    ));
                }
            };
            if pending.is_empty() {
                return Ok(());
            }
            b.elasticsearch.restore(t, source, &pending).await
        }
        Step::WaitSnapshot { .. } | Step::WaitRestore => Ok(()),
        Step::WaitNodeGroupActive { .. }
        | Step::WaitDrained { .. }
        | Step::WaitPodsReady { .. }
        | Step::WaitVolumesResized { .. }
        | Step::WaitShutdownReady { .. }
        | Step::WaitHealthy
        | Step::WaitNodeGroupGone { .. } => Ok(()),
    }
}

/// What a gate waits for, in the words an operator needs.
pub fn describe_wait(step: &Step, o: &Observed) -> String {
    match step {
        Step::WaitNodeGroupActive { node_set } => {
            let status = o
                .node_groups
                .get(node_set)
                .map(|g| format!("{:?}", g.status).to_uppercase());
            format!(
                "waiting for node group {node_set} to be ACTIVE (now {})",
                status.as_deref().unwrap_or("missing")
            )
        }
        Step::WaitNodeGroupGone { node_set } => {
            format!("waiting for node group {node_set} to be deleted")
        }
        Step::WaitShutdownReady { node_set, ordinal } => format!(
            "waiting for Elasticsearch to be ready for {node_set}-{ordinal} to restart \
             (its node shutdown is not COMPLETE)"
        ),
        Step::WaitVolumesResized { node_set } => {
            let volumes = o
                .workloads
                .get(node_set)
                .map(|w| w.volumes.as_slice())
                .unwrap_or_default();
            let pending: Vec<String> = volumes
                .iter()
                .filter(|v| !v.settled())
                .map(|v| {
                    if v.capacity_gib < v.requested_gib {
                        format!(
                            "{node_set}-{} at {} of {} GiB",
                            v.ordinal, v.capacity_gib, v.requested_gib
                        )
                    } else {
                        format!(
                            "{node_set}-{} moving to {}",
                            v.ordinal,
                            v.attributes_class.as_deref().unwrap_or("no class")
                        )
                    }
                })
                .collect();
            format!(
                "waiting for the volumes of {node_set} to grow or change class: {}",
                if pending.is_empty() {
                    "none left".to_string()
                } else {
                    pending.join(", ")
                }
            )
        }
        Step::WaitPodsReady { node_set } => {
            let (ready, want) = o
                .workloads
                .get(node_set)
                .map(|w| (w.ready_replicas, w.replicas))
                .unwrap_or_default();
            format!("waiting for pods of {node_set}: {ready} of {want} ready")
        }
        Step::WaitDrained { node_set, ordinal } => {
            match o.health.as_ref().and_then(|h| {
                h.shards_on_excluded
                    .get(&esaas_core::plan::node_key(node_set, *ordinal))
            }) {
                Some(n) => format!("waiting for {node_set}-{ordinal} to drain: {n} shards left"),
                None => format!(
                    "waiting for {node_set}-{ordinal} to drain: Elasticsearch does not answer"
                ),
            }
        }
        Step::WaitSnapshot { name } => match o.snapshots.as_ref() {
            None => format!("waiting for Elasticsearch to answer, to take snapshot {name}"),
            Some(list) => match list.iter().find(|s| &s.name == name) {
                Some(s) => format!("waiting for snapshot {name}: {}", s.state),
                None => format!("waiting for snapshot {name} to start"),
            },
        },
        Step::WaitRestore => match &o.restore {
            None => "waiting for Elasticsearch to answer, to restore".to_string(),
            Some(r) => format!(
                "waiting for the restore: {} indices pending",
                r.pending.len()
            ),
        },
        Step::WaitHealthy => match &o.health {
            None => "waiting for green: Elasticsearch does not answer".to_string(),
            Some(h) => format!(
                "waiting for green: health is {}{}",
                h.status.as_str(),
                if h.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", h.reason)
                }
            ),
        },
        other => format!("{other:?}"),
    }
}

/// The stage in progress: its span (the parent of its steps' and backend
/// calls' spans) and when it started, for `esaas.operation.stage.duration`.
struct StageClock {
    name: StageName,
    span: tracing::Span,
    start: Instant,
}

impl StageClock {
    fn start(name: StageName) -> Self {
        Self {
            name,
            span: tracing::info_span!("stage", otel.name = %format_args!("stage {name}"), stage = name.as_str()),
            start: Instant::now(),
        }
    }

    fn end(self, outcome: &'static str) {
        esaas_telemetry::metrics::metrics().stage(
            self.name.as_str(),
            outcome,
            self.start.elapsed(),
        );
    }
}

/// What the attempt's end means for the stage it was in.
fn outcome(result: &Result<LeaseEvent, Stopped>) -> &'static str {
    match result {
        Ok(LeaseEvent::Succeeded { .. }) => "succeeded",
        Ok(LeaseEvent::Stalled(_)) => "stalled",
        Ok(_) => "failed",
        Err(Stopped::Cancelled) => "cancelled",
        Err(Stopped::LeaseLost(_)) => "lease_lost",
    }
}

/// Reports `gate` as passed at once: it was open at the first look.
async fn pass_gate<F, Fut>(report: &F, gate: StageName) -> Result<(), Stopped>
where
    F: Fn(LeaseEvent) -> Fut,
    Fut: Future<Output = Result<(), Stopped>>,
{
    StageClock::start(gate).end("succeeded");
    report(LeaseEvent::StageStarted(gate)).await?;
    report(LeaseEvent::StageFinished {
        name: gate,
        skipped: false,
        message: "green at the first check".into(),
    })
    .await
}

/// Drives `job` to its end. Returns the final event to report (success,
/// failure or stall), or why it stopped early.
pub async fn execute<N: NodeGroups, W: Workloads, E: Elasticsearch, R: Reporter>(
    job: &Job,
    backends: &Backends<N, W, E>,
    reporter: &R,
    settings: ExecSettings,
    cancel: &CancellationToken,
) -> Result<LeaseEvent, Stopped> {
    let mut clock = None;
    let result = drive(job, backends, reporter, settings, cancel, &mut clock).await;
    if let Some(c) = clock {
        c.end(outcome(&result));
    }
    result
}

async fn drive<N: NodeGroups, W: Workloads, E: Elasticsearch, R: Reporter>(
    job: &Job,
    backends: &Backends<N, W, E>,
    reporter: &R,
    settings: ExecSettings,
    cancel: &CancellationToken,
    clock: &mut Option<StageClock>,
) -> Result<LeaseEvent, Stopped> {
    let Some(goal) = Goal::of(
        job.kind,
        &job.target.spec,
        job.target.operation,
        &job.params,
    ) else {
        return Ok(LeaseEvent::Failed {
            retryable: false,
            reason: "OPERATION_INCOMPLETE".into(),
            message: format!(
                "the {} operation names no snapshot, restore source or node release",
                job.kind.as_str().to_lowercase()
            ),
        });
    };
    let report =
        |event: LeaseEvent| async move { reporter.report(event).await.map_err(Stopped::LeaseLost) };
    let converging = matches!(goal, Goal::Converge(_) | Goal::CreateRestoring { .. });
    // The snapshot the goal takes, reported once it has succeeded.
    let mut snapshot_to_report = match &goal {
        Goal::Snapshot { name, .. } => Some(name.clone()),
        Goal::Delete { final_snapshot, .. } => final_snapshot.clone(),
        _ => None,
    };
    // Snapshots this attempt deleted (retention).
    let mut deleted: Vec<String> = Vec::new();
    let mut stage: Option<StageName> = None;
    // Whether the goal's closing gate has been reported (waited for, or
    // passed at the first look before a stage that follows it).
    let mut gate_reported = false;
    let mut waiting: Option<(Step, Instant)> = None;
    let mut gate = job.gate_override.as_ref().map(|g| Overridden::of(g.stage));
    // What the overridden gate's stage says when it ends, once it opened.
    let mut passed: Option<(StageName, String)> = None;
    let stage_end = |s: StageName, passed: &Option<(StageName, String)>| match passed {
        Some((p, message)) if *p == s => LeaseEvent::StageFinished {
            name: s,
            skipped: false,
            message: message.clone(),
        },
        _ => finished(s),
    };
    loop {
        if cancel.is_cancelled() {
            return Err(Stopped::Cancelled);
        }
        let here = clock
            .as_ref()
            .map_or_else(tracing::Span::current, |c| c.span.clone());
        let (observed, seen) = match with_retries(
            "the observation before the next step",
            settings.step_timeout,
            cancel,
            || {
                observe(backends, &job.target, &goal)
                    .instrument(tracing::info_span!(parent: &here, "observe"))
            },
        )
        .await?
        {
            Ok(o) => o,
            Err(e) => return Ok(failed(e)),
        };
        if let Some(name) = &snapshot_to_report
            && let Some(s) = observed
                .snapshots
                .iter()
                .flatten()
                .find(|s| &s.name == name)
        {
            if s.state == SnapshotState::Success {
                report(LeaseEvent::Snapshot(s.clone())).await?;
                snapshot_to_report = None;
            } else if s.state != SnapshotState::InProgress {
                report(LeaseEvent::Snapshot(s.clone())).await?;
                return Ok(LeaseEvent::Failed {
                    retryable: false,
                    reason: "SNAPSHOT_FAILED".into(),
                    message: format!(
                        "snapshot {name} ended {}: {}{}",
                        s.state,
                        s.reason,
                        if matches!(goal, Goal::Delete { .. }) {
                            "; nothing was deleted: delete again with skip_final_snapshot to delete without a final snapshot"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
        if let Some(refused) = observed.restore.as_ref().and_then(restore_refused) {
            return Ok(refused);
        }
        let planned = next_step_overriding(&goal, &observed, &mut gate);
        if let (Some(opened), Some(g)) = (&planned.opened, &job.gate_override) {
            let gate_stage = opened.stage();
            if passed.is_none() {
                tracing::warn!(operation = %job.target.operation, stage = %gate_stage, by = %g.principal, "gate passed by override");
            }
            passed = Some((
                gate_stage,
                format!(
                    "passed by the gate override of {}: {} (it waited for: {})",
                    g.principal, g.justification, g.check
                ),
            ));
            if stage != Some(gate_stage) {
                if let Some(s) = stage {
                    report(stage_end(s, &passed)).await?;
                    if let Some(c) = clock.take() {
                        c.end("succeeded");
                    }
                }
                report(LeaseEvent::StageStarted(gate_stage)).await?;
                stage = Some(gate_stage);
                *clock = Some(StageClock::start(gate_stage));
            }
            if waiting.take().is_some() {
                report(LeaseEvent::Blocking(String::new())).await?;
            }
        }
        let Some(step) = planned.step else {
            // A delete that kept the volumes says which, for the tombstone.
            if let Goal::Delete {
                retention: VolumeRetention::Retain,
                ..
            } = goal
            {
                report(LeaseEvent::Retained(seen.claims.clone())).await?;
            }
            if !deleted.is_empty() {
                report(LeaseEvent::SnapshotsDeleted(std::mem::take(&mut deleted))).await?;
            }
            if let Some(s) = stage {
                report(stage_end(s, &passed)).await?;
                if let Some(c) = clock.take() {
                    c.end("succeeded");
                }
            }
            // The goal's closing gate passed at the first look: say so
            // rather than leave the stage looking skipped.
            if let Some(gate) = goal.closing_stage()
                && !gate_reported
                && stage != Some(gate)
            {
                pass_gate(&report, gate).await?;
            }
            return Ok(succeeded(&seen, &observed));
        };
        let this_stage = goal.stage_of(&step);
        if stage != Some(this_stage) {
            if let Some(s) = stage {
                report(stage_end(s, &passed)).await?;
                if let Some(c) = clock.take() {
                    c.end("succeeded");
                }
            }
            // A step after the closing gate (the snapshot repository) comes
            // only once the gate is open: if it was open at the first look,
            // say so first, so the stages read in their order.
            if let Some(gate) = goal.closing_stage() {
                if this_stage == gate {
                    gate_reported = true;
                } else if !gate_reported && this_stage == StageName::SnapshotRepository {
                    pass_gate(&report, gate).await?;
                    gate_reported = true;
                }
            }
            report(LeaseEvent::StageStarted(this_stage)).await?;
            stage = Some(this_stage);
            *clock = Some(StageClock::start(this_stage));
        }
        if step.is_wait() {
            if let Step::WaitNodeGroupActive { node_set } = &step
                && let Some(g) = observed.node_groups.get(node_set)
                && g.status == NodeGroupStatus::Failed
            {
                return Ok(LeaseEvent::Failed {
                    retryable: false,
                    reason: "NODEGROUP_FAILED".into(),
                    message: format!("node group {node_set} failed: {}", g.message),
                });
            }
            let since = match &waiting {
                Some((w, since)) if *w == step => *since,
                _ => {
                    report(LeaseEvent::Blocking(describe_wait(&step, &observed))).await?;
                    let now = Instant::now();
                    waiting = Some((step.clone(), now));
                    now
                }
            };
            // A snapshot Elasticsearch reports IN_PROGRESS is making
            // progress (a large cluster's takes hours): only a wait for an
            // answer counts against the gate's time.
            let in_progress = matches!(&step, Step::WaitSnapshot { name }
                if observed.snapshots.iter().flatten().any(|s| &s.name == name && s.state == SnapshotState::InProgress));
            if in_progress {
                waiting = Some((step.clone(), Instant::now()));
            } else if since.elapsed() >= settings.gate_timeout {
                return Ok(LeaseEvent::Stalled(describe_wait(&step, &observed)));
            }
            tokio::select! {
                _ = tokio::time::sleep(settings.poll) => {}
                _ = cancel.cancelled() => return Err(Stopped::Cancelled),
            }
            continue;
        }
        if waiting.take().is_some() {
            report(LeaseEvent::Blocking(String::new())).await?;
        }
        let here = clock
            .as_ref()
            .map_or_else(tracing::Span::current, |c| c.span.clone());
        let step_span = tracing::info_span!(parent: &here, "step", otel.name = %format_args!("step {}", step.name()), step = ?step);
        step_span
            .in_scope(|| tracing::info!(operation = %job.target.operation, step = ?step, "step"));
        let result = with_retries(
            &format!("step {step:?}"),
            settings.step_timeout,
            cancel,
            || perform(backends, &job.target, &goal, &step).instrument(step_span.clone()),
        )
        .await?;
        match (&step, result) {
            (Step::RegisterRepository, Err(e)) => {
                report(LeaseEvent::Repository {
                    registered: false,
                    message: format!("{}: {}", e.reason, e.message),
                })
                .await?;
                // The cluster works without its repository: a create or
                // update ends here, saying so (SnapshotsOk is false); a
                // snapshot cannot be taken without it.
                if !converging {
                    return Ok(failed(e));
                }
                report(LeaseEvent::StageFinished {
                    name: StageName::SnapshotRepository,
                    skipped: false,
                    message: format!("not registered: {}: {}", e.reason, e.message),
                })
                .await?;
                if let Some(c) = clock.take() {
                    c.end("failed");
                }
                return Ok(succeeded(&seen, &observed));
            }
            (_, Err(e)) => return Ok(failed(e)),
            (Step::RegisterRepository, Ok(())) => {
                report(LeaseEvent::Repository {
                    registered: true,
                    message: String::new(),
                })
                .await?;
            }
            (Step::DeleteSnapshot { name }, Ok(())) => deleted.push(name.clone()),
            (_, Ok(())) => {}
        }
        report(LeaseEvent::Checkpoint(serde_json::json!({
            "last_step": format!("{step:?}"),
            "generation": job.target.generation,
        })))
        .await?;
    }
}

#[cfg(test)]
mod tests;
