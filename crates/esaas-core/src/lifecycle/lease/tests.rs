//! Worker reports by table: from a leased operation, each report or loss
//! leads to the operation's and the cluster's next state, and a report on a
//! lease that is no longer the worker's changes nothing.

use super::*;
use crate::cluster::Cluster;
use crate::lifecycle::Write;
use crate::operation::OperationKind;
use crate::test_support::t0;

const WORKER: &str = "worker-1";

/// The session of WORKER every test leases under.
fn w1() -> WorkerSession {
    WorkerSession {
        worker: WORKER.into(),
        id: Uuid::from_u128(1),
    }
}

/// Another worker's session.
fn w2() -> WorkerSession {
    WorkerSession {
        worker: "worker-2".into(),
        id: Uuid::from_u128(2),
    }
}

fn ctx() -> Context {
    Context {
        backoff: Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        },
        jitter: 0.0,
        now: t0() + chrono::Duration::seconds(10),
    }
}

/// A create leased to WORKER (token 1), with `max` attempts.
fn leased(max: i32) -> Leased {
    let mut op = Operation::test(OperationKind::Create);
    op.max_attempts = max;
    let mut cluster = Cluster::test();
    cluster.state = ClusterState::Provisioning;
    cluster.health = Health::Unknown;
    let changes = claim(
        &Leased {
            op,
            cluster,
            other_queued: None,
        },
        &w1(),
        Duration::from_secs(30),
        t0(),
    )
    .expect("claimable");
    from(&changes, None)
}

/// The state after `changes`, as the store would load it next.
fn from(changes: &ChangeSet, other_queued: Option<Uuid>) -> Leased {
    let op = changes
        .operations
        .first()
        .map(|w| w.row().clone())
        .expect("the operation is written");
    let cluster = changes
        .cluster
        .as_ref()
        .map(|w| w.row().clone())
        .expect("the cluster is written");
    Leased {
        op,
        cluster,
        other_queued,
    }
}

fn op_of(changes: &ChangeSet) -> &Operation {
    changes.operations[0].row()
}

fn cluster_of(changes: &ChangeSet) -> &Cluster {
    changes.cluster.as_ref().expect("cluster written").row()
}

#[test]
fn backoff_grows_and_is_capped_with_jitter() {
    let b = Backoff {
        base: Duration::from_secs(2),
        max: Duration::from_secs(60),
    };
    assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
    assert_eq!(b.delay(1, 1.0), Duration::from_secs(2));
    assert_eq!(b.delay(3, 1.0), Duration::from_secs(8));
    assert_eq!(b.delay(30, 1.0), Duration::from_secs(60));
    assert!(
        b.delay(4, 0.5) >= Duration::from_secs(8) && b.delay(4, 0.5) <= Duration::from_secs(16)
    );
}

#[test]
fn a_claim_takes_only_a_queued_operation_whose_time_has_come() {
    let s = leased(3);
    assert_eq!(s.op.state, OperationState::Running);
    assert_eq!(s.op.lease_token, 1);
    assert_eq!(s.op.lease.as_ref().map(|l| l.owner.as_str()), Some(WORKER));
    assert_eq!(s.op.attempts.len(), 1);
    assert_eq!(s.op.attempts[0].outcome, None);
    assert_eq!(s.cluster.current_operation, Some(s.op.id));
    // Already running: nothing to claim.
    assert!(claim(&s, &w2(), Duration::from_secs(30), t0()).is_none());
    // Not due yet.
    let mut later = Operation::test(OperationKind::Create);
    later.next_attempt_time = t0() + chrono::Duration::seconds(5);
    let state = Leased {
        op: later,
        cluster: Cluster::test(),
        other_queued: None,
    };
    assert!(claim(&state, &w1(), Duration::from_secs(30), t0()).is_none());
}

#[test]
fn nothing_but_a_delete_is_claimed_on_a_deleted_cluster() {
    for (kind, claimed) in [
        (OperationKind::Update, false),
        (OperationKind::Repair, false),
        (OperationKind::Delete, true),
    ] {
        let mut cluster = Cluster::test();
        cluster.state = ClusterState::Deleted;
        let state = Leased {
            op: Operation::test(kind),
            cluster,
            other_queued: None,
        };
        let got = claim(&state, &w1(), Duration::from_secs(30), t0());
        assert_eq!(got.is_some(), claimed, "{kind:?}");
    }
}

#[test]
fn the_fence_refuses_whoever_does_not_hold_the_lease() {
    let s = leased(3);
    let now = ctx().now;
    // (case, worker, token, time, refused)
    let cases = [
        ("holder", w1(), 1, now, false),
        ("other worker", w2(), 1, now, true),
        (
            "another session of the same worker id",
            WorkerSession {
                id: Uuid::from_u128(3),
                ..w1()
            },
            1,
            now,
            true,
        ),
        ("old token", w1(), 0, now, true),
        (
            "expired",
            w1(),
            1,
            t0() + chrono::Duration::seconds(31),
            true,
        ),
    ];
    for (case, worker, token, at, refused) in cases {
        let ctx = Context { now: at, ..ctx() };
        let got = report(&s, &worker, token, LeaseEvent::HandedBack, &ctx);
        assert_eq!(got.is_err(), refused, "{case}: {got:?}");
    }
    let mut done = s.clone();
    done.op.state = OperationState::Succeeded;
    assert_eq!(
        report(&done, &w1(), 1, LeaseEvent::HandedBack, &ctx()).unwrap_err(),
        Refusal("the operation is SUCCEEDED, not running".into())
    );
}

#[test]
fn progress_reports_table() {
    // (case, event, event message (None: no event), cluster message)
    let cases: Vec<(&str, LeaseEvent, Option<&str>, Option<&str>)> = vec![
        (
            "stage started",
            LeaseEvent::StageStarted(StageName::NodeGroups),
            Some("stage node_groups started"),
            Some("create running: node_groups"),
        ),
        (
            "stage skipped",
            LeaseEvent::StageFinished {
                name: StageName::Namespace,
                skipped: true,
                message: String::new(),
            },
            Some("stage namespace skipped"),
            None,
        ),
        (
            "checkpoint: no event",
            LeaseEvent::Checkpoint(serde_json::json!({"last_step": "x"})),
            None,
            None,
        ),
        (
            "blocking",
            LeaseEvent::Blocking("waiting for green".into()),
            Some("waiting: waiting for green"),
            Some("waiting: waiting for green"),
        ),
        (
            "blocking cleared: no event",
            LeaseEvent::Blocking(String::new()),
            None,
            None,
        ),
    ];
    for (case, event, want_event, want_message) in cases {
        let s = leased(3);
        let changes = report(&s, &w1(), 1, event, &ctx()).unwrap();
        let op = op_of(&changes);
        assert_eq!(op.state, OperationState::Running, "{case}");
        assert_eq!(op.version, s.op.version + 1, "{case}");
        match want_event {
            Some(m) => {
                let e = changes.event.as_ref().expect(case);
                assert!(e.message.ends_with(m), "{case}: {}", e.message);
                assert_eq!(e.kind, EventKind::OperationProgress, "{case}");
                if let Some(msg) = want_message {
                    assert_eq!(cluster_of(&changes).message, msg, "{case}");
                }
            }
            None => {
                assert!(changes.event.is_none(), "{case}");
                assert!(
                    changes.cluster.is_none(),
                    "{case}: the cluster is not written"
                );
            }
        }
    }
}

#[test]
fn a_repeated_blocking_check_is_not_news() {
    let s = leased(3);
    let first = report(&s, &w1(), 1, LeaseEvent::Blocking("x".into()), &ctx()).unwrap();
    assert!(first.event.is_some());
    let again = report(
        &from(&first, None),
        &w1(),
        1,
        LeaseEvent::Blocking("x".into()),
        &ctx(),
    )
    .unwrap();
    assert!(again.event.is_none());
}

#[test]
fn a_stage_outside_the_kinds_list_is_added() {
    let s = leased(3);
    let changes = report(
        &s,
        &w1(),
        1,
        LeaseEvent::StageStarted(StageName::NodeGroupsGone),
        &ctx(),
    )
    .unwrap();
    let stages = &op_of(&changes).stages;
    assert_eq!(stages.len(), OperationKind::Create.stages().len() + 1);
    assert_eq!(
        stages.last().map(|s| (s.name, s.state)),
        Some((StageName::NodeGroupsGone, StageState::Running))
    );
}

#[test]
fn success_table() {
    // (case, kind, health, another queued, cluster state after)
    let cases = [
        (
            "green create",
            OperationKind::Create,
            Health::Green,
            false,
            ClusterState::Ready,
        ),
        (
            "yellow create",
            OperationKind::Create,
            Health::Yellow,
            false,
            ClusterState::Ready,
        ),
        (
            "red create (a gate passed by override)",
            OperationKind::Create,
            Health::Red,
            false,
            ClusterState::Degraded,
        ),
        (
            "with a change queued",
            OperationKind::Update,
            Health::Green,
            true,
            ClusterState::Updating,
        ),
        (
            "delete",
            OperationKind::Delete,
            Health::Unknown,
            false,
            ClusterState::Deleted,
        ),
    ];
    for (case, kind, health, queued, after) in cases {
        let mut s = leased(3);
        s.op.kind = kind;
        s.other_queued = queued.then(|| Uuid::from_u128(0x77));
        let endpoint = Some("https://x:9200".to_string());
        let changes = report(
            &s,
            &w1(),
            1,
            LeaseEvent::Succeeded {
                endpoint: endpoint.clone(),
                health,
                certificate_not_after: None,
            },
            &ctx(),
        )
        .unwrap();
        let (op, cluster) = (op_of(&changes), cluster_of(&changes));
        assert_eq!(op.state, OperationState::Succeeded, "{case}");
        assert_eq!(op.lease, None, "{case}");
        assert_eq!(
            op.attempts[0].outcome,
            Some(AttemptOutcome::Succeeded),
            "{case}"
        );
        assert!(
            op.stages.iter().all(|s| s.state != StageState::Pending),
            "{case}: pending stages end skipped"
        );
        assert_eq!(cluster.state, after, "{case}");
        assert_eq!(cluster.observed_generation, 1, "{case}");
        let want_current = if queued {
            Some(Uuid::from_u128(0x77))
        } else {
            None
        };
        assert_eq!(cluster.current_operation, want_current, "{case}");
        if kind == OperationKind::Delete {
            assert_eq!(cluster.endpoint, None, "{case}");
        } else {
            assert_eq!(cluster.endpoint, endpoint, "{case}");
            assert_eq!(cluster.health, health, "{case}");
        }
    }
}

#[test]
fn failures_retry_with_backoff_until_the_budget_is_spent() {
    let failed = || LeaseEvent::Failed {
        retryable: true,
        reason: "EKS_THROTTLED".into(),
        message: "slow down".into(),
    };
    let mut s = leased(2);
    let first = report(&s, &w1(), 1, failed(), &ctx()).unwrap();
    let op = op_of(&first);
    assert_eq!(op.state, OperationState::Queued);
    assert_eq!(op.lease, None);
    // One failure: half of the base delay with no jitter.
    assert_eq!(
        op.next_attempt_time,
        ctx().now + chrono::Duration::seconds(1)
    );
    assert_eq!(
        op.attempts[0].outcome,
        Some(AttemptOutcome::Failed {
            reason: "EKS_THROTTLED".into(),
            message: "slow down".into()
        })
    );
    assert!(
        first
            .event
            .as_ref()
            .unwrap()
            .message
            .contains("attempt 2 of 2 queued")
    );

    s = from(&first, None);
    assert!(claim(&s, &w1(), Duration::from_secs(30), ctx().now).is_none());
    let due = ctx().now + chrono::Duration::seconds(1);
    let second_claim = claim(&s, &w1(), Duration::from_secs(30), due).unwrap();
    s = from(&second_claim, None);
    let second = report(&s, &w1(), 2, failed(), &ctx()).unwrap();
    let (op, cluster) = (op_of(&second), cluster_of(&second));
    assert_eq!(op.state, OperationState::Failed);
    assert_eq!(
        op.error.as_ref().map(|e| (e.code, e.reason.as_str())),
        Some((Code::Unavailable, "EKS_THROTTLED"))
    );
    assert_eq!(cluster.state, ClusterState::Failed);
    assert!(
        cluster
            .conditions
            .iter()
            .any(|c| c.kind == ConditionType::Ready
                && c.status == ConditionStatus::False
                && c.reason == ConditionReason::OperationFailed)
    );
}

#[test]
fn a_permanent_failure_spends_the_budget_at_once() {
    let s = leased(5);
    let changes = report(
        &s,
        &w1(),
        1,
        LeaseEvent::Failed {
            retryable: false,
            reason: "NODEGROUP_FOREIGN".into(),
            message: "not ours".into(),
        },
        &ctx(),
    )
    .unwrap();
    let op = op_of(&changes);
    assert_eq!(op.state, OperationState::Failed);
    assert_eq!(op.max_attempts, 1);
    assert_eq!(
        op.error.as_ref().map(|e| e.code),
        Some(Code::FailedPrecondition)
    );
}

#[test]
fn what_counts_against_the_budget_table() {
    // (case, how the attempt ends, counts)
    type End = Box<dyn Fn(&Leased) -> ChangeSet>;
    let cases: Vec<(&str, End, bool)> = vec![
        (
            "failure",
            Box::new(|s| {
                report(
                    s,
                    &w1(),
                    1,
                    LeaseEvent::Failed {
                        retryable: true,
                        reason: "R".into(),
                        message: "m".into(),
                    },
                    &ctx(),
                )
                .unwrap()
            }),
            true,
        ),
        (
            "lease lapsed",
            Box::new(|s| {
                let late = Context {
                    now: t0() + chrono::Duration::seconds(31),
                    ..ctx()
                };
                expire(s, Loss::Lapsed, &late).unwrap()
            }),
            true,
        ),
        (
            "worker gone",
            Box::new(|s| {
                expire(
                    s,
                    Loss::SessionEnded {
                        session: w1().id,
                        by: Closer::Worker,
                    },
                    &ctx(),
                )
                .unwrap()
            }),
            true,
        ),
        (
            "handed back",
            Box::new(|s| report(s, &w1(), 1, LeaseEvent::HandedBack, &ctx()).unwrap()),
            false,
        ),
        (
            "stalled",
            Box::new(|s| report(s, &w1(), 1, LeaseEvent::Stalled("gate".into()), &ctx()).unwrap()),
            false,
        ),
        (
            "cancelled",
            Box::new(|s| cancel_superseded(s, ctx().now).unwrap()),
            false,
        ),
    ];
    for (case, end, counts) in cases {
        let s = leased(3);
        let changes = end(&s);
        let op = op_of(&changes);
        assert_eq!(failures(op), u32::from(counts), "{case}");
        let outcome = op.attempts[0].outcome.as_ref().expect(case);
        assert_eq!(outcome.counts_against_budget(), counts, "{case}: {outcome}");
    }
}

#[test]
fn losses_table() {
    let late = Context {
        now: t0() + chrono::Duration::seconds(31),
        ..ctx()
    };
    let s = leased(3);
    // (case, loss, time, ends the attempt)
    let cases = [
        ("lapsed, but renewed in time", Loss::Lapsed, ctx(), false),
        ("lapsed", Loss::Lapsed, late, true),
        (
            "its worker went away",
            Loss::SessionEnded {
                session: w1().id,
                by: Closer::Worker,
            },
            ctx(),
            true,
        ),
        (
            "another worker went away",
            Loss::SessionEnded {
                session: w2().id,
                by: Closer::Worker,
            },
            ctx(),
            false,
        ),
        (
            "another session of the same worker id went away",
            Loss::SessionEnded {
                session: Uuid::from_u128(3),
                by: Closer::Worker,
            },
            ctx(),
            false,
        ),
        (
            "the control plane closed its stream",
            Loss::SessionEnded {
                session: w1().id,
                by: Closer::ControlPlane,
            },
            ctx(),
            true,
        ),
    ];
    for (case, loss, at, ends) in cases {
        let got = expire(&s, loss, &at);
        assert_eq!(got.is_some(), ends, "{case}");
        if let Some(changes) = got {
            let op = op_of(&changes);
            assert_eq!(op.state, OperationState::Queued, "{case}");
            assert_eq!(
                op.error.as_ref().map(|e| e.reason.as_str()),
                None,
                "{case}: the error is kept only when the operation fails"
            );
        }
    }
    let mut queued = s.clone();
    queued.op.state = OperationState::Queued;
    assert!(
        expire(
            &queued,
            Loss::SessionEnded {
                session: w1().id,
                by: Closer::Worker
            },
            &ctx()
        )
        .is_none()
    );
}

#[test]
fn a_stream_the_control_plane_closed_costs_no_attempt() {
    // (loss, counted failures after it, delay before the next attempt)
    let cases = [
        (Closer::Worker, 1, chrono::Duration::seconds(1)),
        (Closer::ControlPlane, 0, chrono::Duration::zero()),
    ];
    for (by, failed, delay) in cases {
        let s = leased(1);
        let loss = Loss::SessionEnded {
            session: w1().id,
            by,
        };
        let changes = expire(&s, loss, &ctx()).expect("lost");
        let op = op_of(&changes);
        assert_eq!(failures(op), failed, "{by:?}");
        if failed == 0 {
            // With one attempt in the budget, only a free loss leaves it queued.
            assert_eq!(op.state, OperationState::Queued, "{by:?}");
            assert_eq!(op.next_attempt_time, ctx().now + delay, "{by:?}");
        } else {
            assert_eq!(op.state, OperationState::Failed, "{by:?}");
        }
    }
}

#[test]
fn an_attempt_that_ends_with_a_change_queued_behind_it_is_superseded() {
    let mut s = leased(3);
    s.other_queued = Some(Uuid::from_u128(0x77));
    let changes = report(&s, &w1(), 1, LeaseEvent::HandedBack, &ctx()).unwrap();
    let (op, cluster) = (op_of(&changes), cluster_of(&changes));
    assert_eq!(op.state, OperationState::Cancelled);
    assert_eq!(cluster.current_operation, Some(Uuid::from_u128(0x77)));
    assert!(
        changes
            .event
            .as_ref()
            .unwrap()
            .message
            .contains("superseded by the operation queued after it")
    );
}

#[test]
fn a_stall_keeps_the_reason_and_frees_the_lease() {
    let s = leased(3);
    let changes = report(
        &s,
        &w1(),
        1,
        LeaseEvent::Stalled("index logs-7 red".into()),
        &ctx(),
    )
    .unwrap();
    let (op, cluster) = (op_of(&changes), cluster_of(&changes));
    assert_eq!(op.state, OperationState::Stalled);
    assert_eq!(op.lease, None);
    assert_eq!(op.blocking_check.as_deref(), Some("index logs-7 red"));
    assert!(
        cluster
            .conditions
            .iter()
            .any(|c| c.kind == ConditionType::Stalled && c.reason == ConditionReason::GateTimedOut)
    );
}

#[test]
fn cancel_superseded_only_stops_a_running_operation() {
    let mut s = leased(3);
    s.other_queued = Some(Uuid::from_u128(0x40));
    let changes = cancel_superseded(&s, ctx().now).unwrap();
    assert_eq!(op_of(&changes).state, OperationState::Cancelled);
    assert_eq!(
        op_of(&changes).attempts[0].outcome,
        Some(AttemptOutcome::Cancelled)
    );
    assert_eq!(
        cluster_of(&changes).current_operation,
        Some(Uuid::from_u128(0x40))
    );
    assert!(matches!(changes.operations[0], Write::Update(_)));
    let done = from(&changes, None);
    assert!(cancel_superseded(&done, ctx().now).is_none());
}

#[test]
fn a_heartbeat_loses_what_it_could_not_renew() {
    let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let lost = lost_at_heartbeat(&[(a, 1), (b, 4), (c, 7)], &[(a, false), (b, true)]);
    let got: Vec<_> = lost
        .iter()
        .map(|l| (l.operation, l.token, l.superseded))
        .collect();
    assert_eq!(got, [(b, 4, true), (c, 7, false)]);
    assert!(lost[0].reason.starts_with("cancelled"));
}

#[test]
fn a_requested_cancel_settles_the_cluster_when_nothing_is_queued() {
    // (case, how the attempt ends) for a running create flagged by CancelOperation.
    let late = Context {
        now: t0() + chrono::Duration::seconds(31),
        ..ctx()
    };
    type End = Box<dyn Fn(&Leased) -> ChangeSet>;
    let cases: Vec<(&str, End)> = vec![
        (
            "told at a heartbeat",
            Box::new(|s| cancel_superseded(s, ctx().now).unwrap()),
        ),
        (
            "its lease lapsed",
            Box::new(move |s| expire(s, Loss::Lapsed, &late).unwrap()),
        ),
        (
            "its worker went away",
            Box::new(|s| {
                expire(
                    s,
                    Loss::SessionEnded {
                        session: w1().id,
                        by: Closer::Worker,
                    },
                    &ctx(),
                )
                .unwrap()
            }),
        ),
        (
            "it failed, retryably",
            Box::new(|s| {
                report(
                    s,
                    &w1(),
                    1,
                    LeaseEvent::Failed {
                        retryable: true,
                        reason: "R".into(),
                        message: "m".into(),
                    },
                    &ctx(),
                )
                .unwrap()
            }),
        ),
    ];
    for (case, end) in cases {
        let mut s = leased(3);
        s.op.cancel_requested = true;
        let changes = end(&s);
        let op = op_of(&changes);
        assert_eq!(op.state, OperationState::Cancelled, "{case}");
        assert!(op.end_time.is_some(), "{case}");
        let c = cluster_of(&changes);
        // A create that never finished leaves a cluster that never served.
        assert_eq!(c.state, ClusterState::Failed, "{case}");
        assert_eq!(c.current_operation, Some(op.id), "{case}");
        assert!(
            c.conditions.iter().any(|c| c.kind == ConditionType::Ready
                && c.reason == ConditionReason::OperationCancelled),
            "{case}"
        );
    }
}

#[test]
fn success_after_the_next_generation_was_cancelled_says_so() {
    let mut s = leased(3);
    s.cluster.generation = 2;
    s.op.target_generation = 1;
    let changes = report(
        &s,
        &w1(),
        1,
        LeaseEvent::Succeeded {
            endpoint: None,
            health: Health::Green,
            certificate_not_after: None,
        },
        &ctx(),
    )
    .unwrap();
    let c = cluster_of(&changes);
    assert_eq!(c.state, ClusterState::Ready);
    assert_eq!(c.observed_generation, 1);
    let ready = c.conditions.iter().find(|c| c.kind == ConditionType::Ready);
    assert!(
        ready.is_some_and(|r| r.status == ConditionStatus::False
            && r.reason == ConditionReason::OperationCancelled),
        "{ready:?}"
    );
    assert!(c.message.contains("generation 2 is not"), "{}", c.message);
}

#[test]
fn a_delete_that_keeps_volumes_lists_them_on_the_cluster() {
    let mut s = leased(3);
    s.op.kind = OperationKind::Delete;
    let names = vec!["esaas-t/data-1".to_string(), "esaas-t/data-2".to_string()];
    let changes = report(&s, &w1(), 1, LeaseEvent::Retained(names.clone()), &ctx()).unwrap();
    assert_eq!(cluster_of(&changes).retained_volumes, names);
    assert!(
        changes
            .event
            .as_ref()
            .is_some_and(|e| e.message.contains("2 volume claims kept"))
    );
    // The same list again writes nothing; another operation kind never lists any.
    let again = from(&changes, None);
    let changes = report(
        &again,
        &w1(),
        1,
        LeaseEvent::Retained(names.clone()),
        &ctx(),
    )
    .unwrap();
    assert!(changes.event.is_none());
    let create = leased(3);
    let changes = report(&create, &w1(), 1, LeaseEvent::Retained(names), &ctx()).unwrap();
    assert!(changes.event.is_none());
}

/// `leased(3)` stalled at the health gate: the attempt started the stage,
/// then the gate timed out.
fn stalled_at_health_gate() -> Leased {
    let s = leased(3);
    let started = report(
        &s,
        &w1(),
        1,
        LeaseEvent::StageStarted(StageName::HealthGate),
        &ctx(),
    )
    .unwrap();
    let stalled = report(
        &from(&started, None),
        &w1(),
        1,
        LeaseEvent::Stalled("waiting for green: health is YELLOW: index logs-7".into()),
        &ctx(),
    )
    .unwrap();
    from(&stalled, None)
}

fn command_ctx() -> crate::lifecycle::Ctx {
    crate::lifecycle::Ctx {
        now: ctx().now,
        operation_id: Uuid::from_u128(0x99),
        cluster_uid: Uuid::nil(),
        traceparent: None,
    }
}

#[test]
fn an_override_requeues_a_stalled_operation_and_is_spent_when_its_gate_passes() {
    use crate::lifecycle::override_gate::override_gate;
    use crate::operation::Initiator;
    let by = Initiator::test();
    let d = override_gate(
        &stalled_at_health_gate(),
        &by,
        "yellow is expected while logs-7 restores",
        &command_ctx(),
    )
    .unwrap();
    let op = &d.answer;
    assert_eq!(op.state, OperationState::Queued);
    assert_eq!(op.blocking_check, None);
    let granted = op.gate_override.as_ref().expect("override recorded");
    assert_eq!(granted.stage, StageName::HealthGate);
    assert!(granted.check.contains("logs-7"));
    assert_eq!(granted.principal, by.principal);
    let event = d.changes.event.as_ref().expect("event");
    assert_eq!(event.kind, EventKind::GateOverridden);
    for part in [by.principal.as_str(), "health_gate", "logs-7", "restores"] {
        assert!(event.message.contains(part), "{part}: {}", event.message);
    }
    let cluster = cluster_of(&d.changes);
    assert!(
        !cluster
            .conditions
            .iter()
            .any(|c| c.kind == ConditionType::Stalled)
    );

    // The next attempt carries it until the gate's stage finishes.
    let claimed = claim(
        &from(&d.changes, None),
        &w1(),
        Duration::from_secs(30),
        ctx().now,
    )
    .expect("claimable");
    assert!(op_of(&claimed).gate_override.is_some());
    let s = from(&claimed, None);
    let token = op_of(&claimed).lease_token;
    let other = report(
        &s,
        &w1(),
        token,
        LeaseEvent::StageFinished {
            name: StageName::PodsReady,
            skipped: false,
            message: String::new(),
        },
        &ctx(),
    )
    .unwrap();
    assert!(op_of(&other).gate_override.is_some(), "another stage");
    let passed = report(
        &from(&other, None),
        &w1(),
        token,
        LeaseEvent::StageFinished {
            name: StageName::HealthGate,
            skipped: false,
            message: String::new(),
        },
        &ctx(),
    )
    .unwrap();
    assert_eq!(op_of(&passed).gate_override, None);
    let event = passed.event.as_ref().expect("event");
    assert!(event.message.contains("passed by the gate override of"));
}

#[test]
fn override_refusals_table() {
    use crate::lifecycle::override_gate::{override_gate, parse_justification};
    use crate::operation::Initiator;
    let stalled = stalled_at_health_gate();
    let mut running = stalled.clone();
    running.op.state = OperationState::Running;
    let mut succeeded = stalled.clone();
    succeeded.op.state = OperationState::Succeeded;
    let mut draining = stalled.clone();
    for s in &mut draining.op.stages {
        if s.state == StageState::Running {
            s.name = StageName::DrainNodes;
        }
    }
    let at_stage = |stage: StageName| {
        let mut l = stalled.clone();
        for s in &mut l.op.stages {
            if s.state == StageState::Running {
                s.name = stage;
            }
        }
        l
    };
    let snapshotting = at_stage(StageName::Snapshot);
    let restoring = at_stage(StageName::Restore);
    let mut no_stage = stalled.clone();
    for s in &mut no_stage.op.stages {
        s.state = StageState::Pending;
    }
    // (case, state, the refusal says)
    let cases = [
        ("running", &running, "this one is RUNNING"),
        ("ended", &succeeded, "this one is SUCCEEDED"),
        (
            "the drain gate",
            &draining,
            "drain_nodes gate cannot be overridden",
        ),
        (
            "a final snapshot",
            &snapshotting,
            "snapshot gate cannot be overridden: passing it would report a snapshot",
        ),
        (
            "a restore",
            &restoring,
            "restore gate cannot be overridden: passing it would report a restore",
        ),
        ("no stage", &no_stage, "no gate to override"),
    ];
    for (case, state, says) in cases {
        match override_gate(state, &Initiator::test(), "why", &command_ctx()) {
            Err(crate::Error::FailedPrecondition(v)) => {
                assert_eq!(v[0].subject, state.op.name().to_string(), "{case}");
                assert!(
                    v[0].description.contains(says),
                    "{case}: {}",
                    v[0].description
                );
            }
            other => panic!("{case}: {other:?}"),
        }
    }
    assert_eq!(parse_justification("j", "  ok  ").unwrap(), "ok");
    for bad in ["", "   ", &"x".repeat(513)] {
        assert!(
            matches!(parse_justification("j", bad), Err(crate::Error::InvalidArgument(v)) if v[0].field == "j"),
            "{bad:?}"
        );
    }
    assert!(parse_justification("j", &"é".repeat(512)).is_ok());
}
