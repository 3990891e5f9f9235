//! The executor over in-memory backends, with tokio's time paused: the
//! stages it reports, its checkpoints, retries inside a step, failures,
//! stalls, cancellation and a lost lease. No database, no process.

use std::time::Duration;

use esaas_core::backend::{StepError, Target};
use esaas_core::cluster::Health;
use esaas_core::lifecycle::lease::LeaseEvent;
use esaas_core::operation::{OperationKind, StageName};
use esaas_core::plan::NodeGroupStatus;
use esaas_core::snapshots::{RestoreSource, SnapshotObs, SnapshotPolicy, SnapshotState};
use esaas_core::spec::VolumeRetention;
use tokio_util::sync::CancellationToken;

use super::{Backends, ExecSettings, Job, Stopped, execute};
use crate::memory::{Memory, Recorder};

const SETTINGS: ExecSettings = ExecSettings {
    poll: Duration::from_millis(500),
    gate_timeout: Duration::from_secs(60),
    step_timeout: Duration::from_secs(30),
};

fn job(kind: OperationKind, nodes: i32) -> Job {
    let mut target: Target = esaas_core::test_support::target("team", "logs");
    target.spec = target.spec.with_nodes(nodes);
    Job {
        target,
        kind,
        gate_override: None,
        params: Default::default(),
    }
}

fn backends(world: &Memory) -> Backends<Memory, Memory, Memory> {
    Backends {
        node_groups: world.clone(),
        workloads: world.clone(),
        elasticsearch: world.clone(),
    }
}

async fn run(world: &Memory, job: &Job, reporter: &Recorder) -> Result<LeaseEvent, Stopped> {
    execute(
        job,
        &backends(world),
        reporter,
        SETTINGS,
        &CancellationToken::new(),
    )
    .await
}

/// The end of an attempt that is to end by itself: a hung one fails the
/// test after ten minutes (of paused time) instead of hanging it.
async fn ended(
    attempt: impl std::future::Future<Output = Result<LeaseEvent, Stopped>>,
) -> LeaseEvent {
    tokio::time::timeout(Duration::from_secs(600), attempt)
        .await
        .expect("the attempt ended by itself")
        .expect("a final event")
}

/// The stages started, in order.
fn started(reports: &[LeaseEvent]) -> Vec<StageName> {
    reports
        .iter()
        .filter_map(|e| match e {
            LeaseEvent::StageStarted(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn checkpoints(reports: &[LeaseEvent]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|e| match e {
            LeaseEvent::Checkpoint(v) => v["last_step"].as_str().map(String::from),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_create_goes_through_its_stages_and_checkpoints_every_step() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    let reporter = Recorder::default();
    let last = run(&world, &job(OperationKind::Create, 3), &reporter)
        .await
        .unwrap();
    assert_eq!(
        last,
        LeaseEvent::Succeeded {
            endpoint: Some("https://logs:9200".into()),
            health: Health::Green,
            certificate_not_after: None,
        }
    );
    let reports = reporter.reports();
    assert_eq!(
        started(&reports),
        [
            StageName::Namespace,
            StageName::NodeGroups,
            StageName::ElasticsearchObjects,
            // Green at once: the closing gate is recorded as passed.
            StageName::HealthGate,
        ]
    );
    assert!(reports.contains(&LeaseEvent::StageFinished {
        name: StageName::HealthGate,
        skipped: false,
        message: "green at the first check".into(),
    }));
    // One checkpoint after every step performed, each naming the step.
    assert_eq!(
        checkpoints(&reports),
        [
            "ApplyBaseObjects",
            "EnsureNodeGroup { node_set: \"default\", size: 3 }",
            "ApplyWorkload { node_set: \"default\", replicas: 3 }",
        ]
    );
    assert_eq!(
        world.world().calls,
        [
            "workloads.apply_base  ",
            "nodegroup.ensure default 3",
            "workloads.apply_node_set default 3",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_create_registers_the_snapshot_repository_once_green_and_says_the_gate_passed_first() {
    let world = Memory::default();
    {
        let mut w = world.world();
        w.health = Some(Health::Green);
        w.repository = Some(false);
    }
    let reporter = Recorder::default();
    let last = ended(run(&world, &job(OperationKind::Create, 3), &reporter)).await;
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    let reports = reporter.reports();
    assert_eq!(
        started(&reports),
        [
            StageName::Namespace,
            StageName::NodeGroups,
            StageName::ElasticsearchObjects,
            StageName::HealthGate,
            StageName::SnapshotRepository,
        ]
    );
    assert_eq!(
        checkpoints(&reports).last().map(String::as_str),
        Some("RegisterRepository")
    );
    let w = world.world();
    assert_eq!(w.repository, Some(true));
    let registered = w
        .calls
        .iter()
        .filter(|c| c.starts_with("es.register_repository"))
        .count();
    assert_eq!(registered, 1, "{:?}", w.calls);
}

#[tokio::test(start_paused = true)]
async fn a_repository_elasticsearch_refuses_leaves_the_create_done_and_says_why() {
    let world = Memory::default();
    {
        let mut w = world.world();
        w.health = Some(Health::Green);
        w.repository = Some(false);
        w.faults.insert(
            "es.register_repository",
            (0..5)
                .map(|_| {
                    StepError::retryable(
                        "ES_UNAVAILABLE",
                        "PUT /_snapshot/esaas: HTTP 500 repository_verification_exception",
                    )
                })
                .collect(),
        );
    }
    let reporter = Recorder::default();
    let last = ended(run(&world, &job(OperationKind::Create, 1), &reporter)).await;
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    let reports = reporter.reports();
    let refused = reports.iter().find_map(|e| match e {
        LeaseEvent::Repository {
            registered: false,
            message,
        } => Some(message.clone()),
        _ => None,
    });
    assert!(
        refused
            .as_deref()
            .is_some_and(|m| m.contains("repository_verification_exception")),
        "{reports:?}"
    );
    // The stage ends saying it did not register.
    assert!(
        reports.iter().any(|e| matches!(e, LeaseEvent::StageFinished { name: StageName::SnapshotRepository, message, .. } if message.starts_with("not registered"))),
        "{reports:?}"
    );
    assert_eq!(world.world().repository, Some(false));
}

fn snapshot_job(name: &str) -> Job {
    let mut job = job(OperationKind::Snapshot, 1);
    job.params.snapshot = Some(name.into());
    job
}

fn snapshots_reported(reports: &[LeaseEvent]) -> Vec<(String, SnapshotState)> {
    reports
        .iter()
        .filter_map(|e| match e {
            LeaseEvent::Snapshot(s) => Some((s.name.clone(), s.state)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_is_taken_reported_and_retention_deletes_the_oldest_scheduled_ones() {
    let world = Memory::default();
    {
        let mut w = world.world();
        w.health = Some(Health::Green);
        w.repository = Some(true);
        w.indices = vec!["logs".into()];
        for day in 1..=3 {
            w.snapshots.push(SnapshotObs {
                name: format!("scheduled-2026010{day}-000000-aaaaaa"),
                state: SnapshotState::Success,
                reason: String::new(),
                indices: vec!["logs".into()],
                start_time: None,
                end_time: None,
            });
        }
    }
    let mut job = snapshot_job("scheduled-20260104-000000-bbbbbb");
    job.target.spec.snapshot_policy = Some(SnapshotPolicy {
        interval_hours: 24,
        retention: 2,
    });
    let reporter = Recorder::default();
    let last = ended(run(&world, &job, &reporter)).await;
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    let reports = reporter.reports();
    assert_eq!(
        snapshots_reported(&reports),
        [(
            "scheduled-20260104-000000-bbbbbb".to_string(),
            SnapshotState::Success
        )]
    );
    assert!(
        reports.contains(&LeaseEvent::SnapshotsDeleted(vec![
            "scheduled-20260101-000000-aaaaaa".into(),
            "scheduled-20260102-000000-aaaaaa".into(),
        ])),
        "{reports:?}"
    );
    let names: Vec<String> = world
        .world()
        .snapshots
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "scheduled-20260103-000000-aaaaaa",
            "scheduled-20260104-000000-bbbbbb"
        ]
    );
    assert_eq!(started(&reports), [StageName::Snapshot]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_snapshot_is_reported_and_fails_the_operation_for_good() {
    let world = Memory::default();
    {
        let mut w = world.world();
        w.health = Some(Health::Green);
        w.repository = Some(true);
        w.snapshot_fails = Some("access denied to the bucket".into());
    }
    let reporter = Recorder::default();
    let last = ended(run(&world, &snapshot_job("manual-1"), &reporter)).await;
    match last {
        LeaseEvent::Failed {
            retryable,
            reason,
            message,
        } => {
            assert!(!retryable);
            assert_eq!(reason, "SNAPSHOT_FAILED");
            assert!(message.contains("access denied"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        snapshots_reported(&reporter.reports()),
        [("manual-1".to_string(), SnapshotState::Failed)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_in_progress_outlasts_the_gate_timeout_without_stalling() {
    let world = Memory::default();
    {
        let mut w = world.world();
        w.health = Some(Health::Green);
        w.repository = Some(true);
        w.snapshot_runs = true;
    }
    let reporter = std::sync::Arc::new(Recorder::default());
    let task = {
        let (world, reporter) = (world.clone(), reporter.clone());
        tokio::spawn(async move { run(&world, &snapshot_job("manual-1"), &reporter).await })
    };
    // Five gate timeouts of (paused) time: still running, not stalled.
    tokio::time::sleep(SETTINGS.gate_timeout * 5).await;
    assert!(!task.is_finished(), "{:?}", reporter.reports());
    for s in &mut world.world().snapshots {
        s.state = SnapshotState::Success;
    }
    let last = ended(async { task.await.expect("join") }).await;
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_delete_takes_its_final_snapshot_before_removing_anything() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    world.world().repository = Some(false);
    let reporter = Recorder::default();
    ended(run(&world, &job(OperationKind::Create, 1), &reporter)).await;
    world.world().calls.clear();
    let mut delete = job(OperationKind::Delete, 1);
    delete.params.snapshot = Some("final-1".into());
    let reporter = Recorder::default();
    let last = ended(run(&world, &delete, &reporter)).await;
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    let calls = world.world().calls.clone();
    let first_delete = calls.iter().position(|c| c.contains("delete"));
    let snapshot = calls.iter().position(|c| c.starts_with("es.take_snapshot"));
    assert!(
        matches!((snapshot, first_delete), (Some(s), Some(d)) if s < d),
        "{calls:?}"
    );
    assert_eq!(
        snapshots_reported(&reporter.reports()),
        [("final-1".to_string(), SnapshotState::Success)]
    );
    assert_eq!(started(&reporter.reports())[0], StageName::Snapshot);
}

/// Every index of snapshot `final-1` of the deleted cluster `old`.
fn final_of_old() -> RestoreSource {
    RestoreSource {
        cluster_id: esaas_core::names::ClusterId::parse("c", "old").expect("id"),
        cluster_uid: uuid::Uuid::nil(),
        snapshot: "final-1".into(),
        indices: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_create_from_a_snapshot_restores_it_before_the_health_gate() {
    let world = Memory::default();
    {
        let mut w = world.world();
        w.health = Some(Health::Green);
        w.source_indices = Some(vec!["logs".into(), "metrics".into()]);
    }
    let mut create = job(OperationKind::Create, 1);
    create.params.restore = Some(final_of_old());
    let reporter = Recorder::default();
    let last = ended(run(&world, &create, &reporter)).await;
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    assert_eq!(world.world().indices, ["logs", "metrics"]);
    let stages = started(&reporter.reports());
    let restore = stages.iter().position(|s| *s == StageName::Restore);
    let gate = stages.iter().rposition(|s| *s == StageName::HealthGate);
    assert!(
        matches!((restore, gate), (Some(r), Some(g)) if r < g),
        "{stages:?}"
    );
    // Restored once: a second attempt finds nothing pending.
    let again = Recorder::default();
    ended(run(&world, &create, &again)).await;
    let restores = world
        .world()
        .calls
        .iter()
        .filter(|c| c.starts_with("es.restore "))
        .count();
    assert_eq!(restores, 1);
}

#[tokio::test(start_paused = true)]
async fn a_restore_from_a_missing_snapshot_fails_for_good() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    let mut create = job(OperationKind::Create, 1);
    create.params.restore = Some(final_of_old());
    let reporter = Recorder::default();
    let last = ended(run(&world, &create, &reporter)).await;
    assert!(
        matches!(&last, LeaseEvent::Failed { retryable: false, reason, .. } if reason == "RESTORE_SOURCE_UNUSABLE"),
        "{last:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_gate_reports_what_it_waits_for_then_clears_it() {
    let world = Memory::default();
    world.world().new_group_status = Some(NodeGroupStatus::Creating);
    world.world().health = Some(Health::Green);
    let job = job(OperationKind::Create, 1);
    let reporter = std::sync::Arc::new(Recorder::default());
    let task = {
        let (world, reporter, job) = (world.clone(), reporter.clone(), job.clone());
        tokio::spawn(async move { run(&world, &job, &reporter).await })
    };
    // The node group stays CREATING for 10 s of (paused) time.
    tokio::time::sleep(Duration::from_secs(10)).await;
    if let Some(g) = world.world().node_groups.get_mut("default") {
        g.status = NodeGroupStatus::Active;
    }
    let last = task.await.unwrap().unwrap();
    assert!(matches!(last, LeaseEvent::Succeeded { .. }));
    let reports = reporter.reports();
    let blocking: Vec<&str> = reports
        .iter()
        .filter_map(|e| match e {
            LeaseEvent::Blocking(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    // Reported once while it waits (not once per poll), cleared once it opens.
    assert_eq!(
        blocking,
        [
            "waiting for node group default to be ACTIVE (now CREATING)",
            ""
        ]
    );
    assert!(started(&reports).contains(&StageName::NodeGroupsActive));
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_inside_the_step() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    world.fail(
        "nodegroup.ensure",
        4,
        StepError::retryable("EKS_THROTTLED", "Rate exceeded"),
    );
    let reporter = Recorder::default();
    let last = run(&world, &job(OperationKind::Create, 1), &reporter)
        .await
        .unwrap();
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    // The fifth try went through; the failed tries changed nothing.
    let calls = world.world().calls.clone();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("nodegroup.ensure"))
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_that_keeps_failing_fails_the_attempt_retryably() {
    let world = Memory::default();
    world.fail(
        "nodegroup.ensure",
        5,
        StepError::retryable("EKS_THROTTLED", "Rate exceeded"),
    );
    let reporter = Recorder::default();
    let last = run(&world, &job(OperationKind::Create, 1), &reporter)
        .await
        .unwrap();
    assert_eq!(
        last,
        LeaseEvent::Failed {
            retryable: true,
            reason: "EKS_THROTTLED".into(),
            message: "Rate exceeded".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_that_hangs_fails_the_attempt_retryably_at_its_deadline_and_the_next_attempt_goes_on()
 {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    world.hang("nodegroup.ensure", 1);
    let job = job(OperationKind::Create, 1);
    let start = tokio::time::Instant::now();
    let last = ended(run(&world, &job, &Recorder::default())).await;
    let LeaseEvent::Failed {
        retryable,
        reason,
        message,
    } = &last
    else {
        panic!("{last:?}");
    };
    assert!(*retryable, "{last:?}");
    assert_eq!(reason, esaas_core::backend::STEP_TIMEOUT);
    assert!(
        message.starts_with("step EnsureNodeGroup")
            && message.contains("did not finish within 30 s"),
        "{message}"
    );
    // Time is paused: the attempt ended at the deadline exactly, not later.
    assert_eq!(start.elapsed(), SETTINGS.step_timeout);
    // The next attempt finds the dependency answering again and finishes.
    let next = run(&world, &job, &Recorder::default()).await.unwrap();
    assert!(matches!(next, LeaseEvent::Succeeded { .. }), "{next:?}");
}

#[tokio::test(start_paused = true)]
async fn a_hung_observation_fails_the_attempt_with_the_last_error_it_met() {
    let world = Memory::default();
    world.fail(
        "nodegroup.observe",
        1,
        StepError::retryable("EKS_TIMEOUT", "ListNodegroups: no answer within 3 s"),
    );
    world.hang("nodegroup.observe", 1);
    let last = ended(run(
        &world,
        &job(OperationKind::Create, 1),
        &Recorder::default(),
    ))
    .await;
    assert_eq!(
        last,
        LeaseEvent::Failed {
            retryable: true,
            reason: "STEP_TIMEOUT".into(),
            message: "the observation before the next step did not finish within 30 s \
                      (worker.step_timeout_seconds); last error: EKS_TIMEOUT: \
                      ListNodegroups: no answer within 3 s"
                .into(),
        }
    );
    assert!(world.world().calls.is_empty(), "no step ran");
}

#[tokio::test(start_paused = true)]
async fn a_gate_open_after_many_step_deadlines_is_not_cut_by_them() {
    let world = Memory::default();
    world.world().new_group_status = Some(NodeGroupStatus::Creating);
    world.world().health = Some(Health::Green);
    let settings = ExecSettings {
        step_timeout: Duration::from_secs(5),
        ..SETTINGS
    };
    let job = job(OperationKind::Create, 1);
    let task = {
        let (world, job) = (world.clone(), job.clone());
        tokio::spawn(async move {
            execute(
                &job,
                &backends(&world),
                &Recorder::default(),
                settings,
                &CancellationToken::new(),
            )
            .await
        })
    };
    // Waiting is a sequence of checks, each far below the step deadline.
    tokio::time::sleep(Duration::from_secs(45)).await;
    if let Some(g) = world.world().node_groups.get_mut("default") {
        g.status = NodeGroupStatus::Active;
    }
    let last = task.await.unwrap().unwrap();
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_fails_at_once() {
    let world = Memory::default();
    world.fail(
        "workloads.apply_base",
        1,
        StepError::permanent("K8S_FORBIDDEN", "namespaces is forbidden"),
    );
    let reporter = Recorder::default();
    let last = run(&world, &job(OperationKind::Create, 1), &reporter)
        .await
        .unwrap();
    assert!(
        matches!(&last, LeaseEvent::Failed { retryable: false, reason, .. } if reason == "K8S_FORBIDDEN"),
        "{last:?}"
    );
    assert!(world.world().calls.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_gate_that_stays_closed_stalls_naming_why() {
    let world = Memory::default();
    world.world().health = Some(Health::Yellow);
    let reporter = Recorder::default();
    let start = tokio::time::Instant::now();
    let last = run(&world, &job(OperationKind::Create, 1), &reporter)
        .await
        .unwrap();
    assert_eq!(
        last,
        LeaseEvent::Stalled(
            "waiting for green: health is YELLOW: index logs-1 has 1 unassigned replica".into()
        )
    );
    let waited = start.elapsed();
    assert!(
        waited >= SETTINGS.gate_timeout && waited < SETTINGS.gate_timeout + SETTINGS.poll * 2,
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_overridden_gate_passes_once_saying_who_and_why() {
    let world = Memory::default();
    world.world().health = Some(Health::Yellow);
    let reporter = Recorder::default();
    let mut overridden = job(OperationKind::Create, 1);
    overridden.gate_override = Some(esaas_core::operation::GateOverride {
        stage: StageName::HealthGate,
        check: "waiting for green: health is YELLOW".into(),
        principal: "tenants/team/apiKeys/k1".into(),
        justification: "replicas come back after the restore".into(),
        create_time: esaas_core::test_support::t0(),
    });
    let start = tokio::time::Instant::now();
    let last = ended(run(&world, &overridden, &reporter)).await;
    assert!(
        matches!(
            last,
            LeaseEvent::Succeeded {
                health: Health::Yellow,
                ..
            }
        ),
        "{last:?}"
    );
    assert!(start.elapsed() < SETTINGS.gate_timeout, "it did not wait");
    let reports = reporter.reports();
    let gate_ends: Vec<&String> = reports
        .iter()
        .filter_map(|e| match e {
            LeaseEvent::StageFinished {
                name: StageName::HealthGate,
                message,
                ..
            } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(gate_ends.len(), 1, "{reports:?}");
    for part in ["tenants/team/apiKeys/k1", "after the restore", "YELLOW"] {
        assert!(gate_ends[0].contains(part), "{part}: {}", gate_ends[0]);
    }
    // Without the override the same world stalls (see above); another
    // stage's override leaves the health gate closed.
    let mut other = overridden.clone();
    if let Some(g) = other.gate_override.as_mut() {
        g.stage = StageName::PodsReady;
    }
    let world = Memory::default();
    world.world().health = Some(Health::Yellow);
    let last = ended(run(&world, &other, &Recorder::default())).await;
    assert!(matches!(last, LeaseEvent::Stalled(_)), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_node_group_fails_the_wait() {
    let world = Memory::default();
    world.world().new_group_status = Some(NodeGroupStatus::Failed);
    let reporter = Recorder::default();
    let last = run(&world, &job(OperationKind::Create, 1), &reporter)
        .await
        .unwrap();
    assert!(
        matches!(&last, LeaseEvent::Failed { retryable: false, reason, .. } if reason == "NODEGROUP_FAILED"),
        "{last:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rerun_finds_the_work_done_and_repeats_nothing() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    let job = job(OperationKind::Create, 2);
    run(&world, &job, &Recorder::default()).await.unwrap();
    let calls = world.world().calls.len();
    // A second attempt (after a crash, say) observes and is done.
    let reporter = Recorder::default();
    let last = run(&world, &job, &reporter).await.unwrap();
    assert!(matches!(last, LeaseEvent::Succeeded { .. }));
    assert_eq!(world.world().calls.len(), calls);
    assert!(checkpoints(&reporter.reports()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_a_waiting_operation() {
    let world = Memory::default();
    world.world().health = Some(Health::Red);
    let cancel = CancellationToken::new();
    let job = job(OperationKind::Create, 1);
    let task = {
        let (world, cancel, job) = (world.clone(), cancel.clone(), job.clone());
        tokio::spawn(async move {
            let reporter = Recorder::default();
            execute(&job, &backends(&world), &reporter, SETTINGS, &cancel).await
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    cancel.cancel();
    assert_eq!(task.await.unwrap(), Err(Stopped::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn a_refused_report_stops_the_work() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    // The third report is refused: the lease went to another worker.
    let reporter = Recorder {
        accept: Some(2),
        ..Recorder::default()
    };
    let got = run(&world, &job(OperationKind::Create, 1), &reporter).await;
    assert_eq!(
        got,
        Err(Stopped::LeaseLost(
            "the lease moved to another worker".into()
        ))
    );
    // Nothing after the refusal: the base objects and no node group.
    assert_eq!(world.world().calls, ["workloads.apply_base  "]);
}

#[tokio::test(start_paused = true)]
async fn a_delete_ignores_an_elasticsearch_that_does_not_answer() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    let mut create = job(OperationKind::Create, 1);
    run(&world, &create, &Recorder::default()).await.unwrap();
    world.fail(
        "es.health",
        100,
        StepError::permanent("ES_UNAUTHORIZED", "wrong password"),
    );
    create.target.spec.volume_retention = VolumeRetention::Retain;
    let delete = Job {
        kind: OperationKind::Delete,
        ..create
    };
    let reporter = Recorder::default();
    let last = run(&world, &delete, &reporter).await.unwrap();
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    let w = world.world();
    assert!(!w.base && w.workloads.is_empty() && w.node_groups.is_empty());
    assert!(
        w.calls
            .contains(&"workloads.delete_base  Retain".to_string())
    );
    // A delete has no closing health gate.
    assert!(!started(&reporter.reports()).contains(&StageName::HealthGate));
}

#[tokio::test(start_paused = true)]
async fn storage_grows_with_the_volumes_patched_then_the_stateful_set_replaced() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    let create = job(OperationKind::Create, 3);
    run(&world, &create, &Recorder::default()).await.unwrap();
    world.world().calls.clear();

    let mut grow = job(OperationKind::Update, 3);
    grow.target.spec.node_sets[0].storage_gib = 80;
    grow.target.spec.node_sets[0].storage_iops = 6000;
    let reporter = Recorder::default();
    let last = run(&world, &grow, &reporter).await.unwrap();
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    assert_eq!(
        world.world().calls,
        [
            "workloads.resize_volumes default 80 esaas-gp3-6000iops-125mibps",
            "workloads.orphan_node_set default ",
            "workloads.apply_node_set default 3",
        ]
    );
    assert_eq!(
        started(&reporter.reports()),
        [
            StageName::Volumes,
            StageName::ElasticsearchObjects,
            StageName::HealthGate
        ]
    );
    let w = world.world();
    assert!(
        w.volumes["default"].iter().all(|v| v.capacity_gib == 80
            && v.attributes_class.as_deref() == Some("esaas-gp3-6000iops-125mibps")),
        "{:?}",
        w.volumes
    );
    assert_eq!(
        w.claims["default"],
        (80, "esaas-gp3-6000iops-125mibps".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_stopped_after_the_orphaning_delete_finishes_the_job() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    run(&world, &job(OperationKind::Create, 2), &Recorder::default())
        .await
        .unwrap();
    let mut grow = job(OperationKind::Update, 2);
    grow.target.spec.node_sets[0].storage_gib = 80;
    // The first attempt's lease is lost right after its orphaning delete: it
    // stops there. The volumes are grown, the StatefulSet is gone.
    world.fail(
        "workloads.apply_node_set",
        1,
        StepError::permanent("LEASE_LOST", "stopped"),
    );
    let first = run(&world, &grow, &Recorder::default()).await.unwrap();
    assert!(matches!(first, LeaseEvent::Failed { .. }), "{first:?}");
    assert!(!world.world().workloads.contains_key("default"));
    // The next attempt observes, applies the StatefulSet with the new claims, done.
    world.world().calls.clear();
    let last = run(&world, &grow, &Recorder::default()).await.unwrap();
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    assert_eq!(world.world().calls, ["workloads.apply_node_set default 2"]);
    assert_eq!(world.world().claims["default"].0, 80);
}

#[tokio::test(start_paused = true)]
async fn masters_leave_out_of_the_voting_configuration_one_at_a_time() {
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    run(&world, &job(OperationKind::Create, 3), &Recorder::default())
        .await
        .unwrap();
    world.world().calls.clear();
    let last = run(&world, &job(OperationKind::Update, 1), &Recorder::default())
        .await
        .unwrap();
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    let calls: Vec<String> = world
        .world()
        .calls
        .iter()
        .filter(|c| !c.starts_with("nodegroup."))
        .cloned()
        .collect();
    assert_eq!(
        calls,
        [
            "es.exclude default 2",
            "es.exclude_from_voting default 2",
            "workloads.apply_node_set default 2",
            "es.exclude default 1",
            "es.exclude_from_voting default 1",
            "workloads.apply_node_set default 1",
            "es.clear_voting_exclusions  ",
        ]
    );
    assert!(world.world().voting_exclusions.is_empty());
}

/// A node rotation on the in-memory world: every pod of the zone's group told
/// of its restart, the group moved to the operation's release, the shutdowns
/// cleared, all in the `rotate_nodes` stage, then the health gate; without a
/// release to move to, it fails rather than guess.
#[tokio::test(start_paused = true)]
async fn a_node_rotation_tells_elasticsearch_then_moves_the_group_then_clears() {
    use esaas_core::plan::ZoneGroupObs;
    let world = Memory::default();
    world.world().health = Some(Health::Green);
    let create = job(OperationKind::Create, 2);
    ended(run(&world, &create, &Recorder::default())).await;
    if let Some(g) = world.world().node_groups.get_mut("default") {
        g.zones.insert(
            "us-east-1a".into(),
            ZoneGroupObs {
                desired_size: 2,
                status: NodeGroupStatus::Active,
                release_version: "1.31.2-20241121".into(),
            },
        );
    }
    world.world().calls.clear();

    let mut rotate = job(OperationKind::RotateNodes, 2);
    let reporter = Recorder::default();
    let last = ended(run(&world, &rotate, &reporter)).await;
    assert!(
        matches!(&last, LeaseEvent::Failed { retryable: false, reason, .. } if reason == "OPERATION_INCOMPLETE"),
        "{last:?}"
    );

    rotate.params.node_release = Some("1.31.3-20250105".into());
    let reporter = Recorder::default();
    let last = ended(run(&world, &rotate, &reporter)).await;
    assert!(matches!(last, LeaseEvent::Succeeded { .. }), "{last:?}");
    assert_eq!(
        world.world().calls,
        [
            "es.register_shutdown default 0",
            "es.register_shutdown default 1",
            "nodegroup.update_version default us-east-1a 1.31.3-20250105",
            "es.clear_shutdown default 0",
            "es.clear_shutdown default 1",
        ]
    );
    assert_eq!(
        started(&reporter.reports()),
        [StageName::RotateNodes, StageName::HealthGate]
    );
}
