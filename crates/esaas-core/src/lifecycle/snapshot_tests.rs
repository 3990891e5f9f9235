//! Snapshots, restores and final snapshots by table: the commands, the
//! worker's reports and the observation's schedule.

use uuid::Uuid;

use super::delete::{DeleteCluster, delete};
use super::lease::{Context, LeaseEvent, Leased, report};
use super::snapshot::{
    CreateSnapshot, OPERATION_QUEUED, RestoreIndices, SNAPSHOTS_OFF, create_snapshot,
    restore_indices, restore_source,
};
use super::update::{UpdateCluster, update};
use super::*;
use crate::cluster::{ClusterState, ConditionReason, ConditionStatus, ConditionType, SpecField};
use crate::error::Error;
use crate::operation::{InitiatorKind, OperationKind, OperationState};
use crate::snapshots::{SnapshotKind, SnapshotObs, SnapshotRecord, SnapshotState};
use crate::test_support::t0;

fn rules(snapshots_enabled: bool) -> Rules {
    Rules {
        catalog: crate::catalog::Catalog::test(),
        max_attempts: 5,
        default_window: None,
        node_release: None,
        snapshots_enabled,
    }
}

fn ctx() -> Ctx {
    Ctx {
        now: t0() + chrono::Duration::seconds(60),
        operation_id: Uuid::now_v7(),
        cluster_uid: Uuid::from_u128(0x98),
        traceparent: None,
    }
}

fn live(cluster: Cluster) -> LiveCluster {
    LiveCluster {
        cluster,
        tenant: Tenant::test(),
        active: ActiveOperations::default(),
        current: None,
    }
}

fn kind_of(e: &Error) -> String {
    match e {
        Error::FailedPrecondition(v) => v[0].kind.clone(),
        other => format!("{other:?}"),
    }
}

#[test]
fn create_snapshot_table() {
    let cmd = CreateSnapshot {
        name: Cluster::test().name(),
        initiator: crate::operation::Initiator::test(),
    };
    // (case, snapshots on, state, observed generation, queued, running, outcome)
    type Case = (
        &'static str,
        bool,
        ClusterState,
        i64,
        bool,
        bool,
        Result<bool, &'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "ready",
            true,
            ClusterState::Ready,
            1,
            false,
            false,
            Ok(true),
        ),
        (
            "behind a running update",
            true,
            ClusterState::Updating,
            1,
            false,
            true,
            Ok(false),
        ),
        (
            "degraded",
            true,
            ClusterState::Degraded,
            1,
            false,
            false,
            Ok(true),
        ),
        (
            "no bucket",
            false,
            ClusterState::Ready,
            1,
            false,
            false,
            Err(SNAPSHOTS_OFF),
        ),
        (
            "something queued",
            true,
            ClusterState::Ready,
            1,
            true,
            false,
            Err(OPERATION_QUEUED),
        ),
        (
            "never created",
            true,
            ClusterState::Provisioning,
            0,
            false,
            false,
            Err("FAILED_PRECONDITION"),
        ),
        (
            "being deleted",
            true,
            ClusterState::Deleting,
            1,
            false,
            false,
            Err("FAILED_PRECONDITION"),
        ),
    ];
    for (case, on, state, observed, queued, running, want) in cases {
        let mut c = Cluster::test();
        c.state = state;
        c.observed_generation = observed;
        let mut s = live(c);
        if queued {
            s.active.queued = Some(Operation::test(OperationKind::Update));
        }
        if running {
            let op = Operation::test(OperationKind::Update).with_state(OperationState::Running);
            s.cluster.current_operation = Some(op.id);
            s.active.running = Some(op);
        }
        match (create_snapshot(&cmd, &s, &rules(on), &ctx()), want) {
            (Ok(d), Ok(current)) => {
                let op = d.answer.operation.expect("operation");
                assert_eq!(op.kind, OperationKind::Snapshot, "{case}");
                let name = op.params.snapshot.clone().expect("a snapshot name");
                assert_eq!(
                    SnapshotKind::of_name(&name),
                    Some(SnapshotKind::Manual),
                    "{case}"
                );
                assert_eq!(d.answer.cluster.state, state, "{case}: the state stays");
                assert_eq!(
                    d.answer.cluster.current_operation == Some(op.id),
                    current,
                    "{case}"
                );
                assert!(d.changes.event.is_some(), "{case}");
            }
            (Err(e), Err("FAILED_PRECONDITION")) => {
                assert!(matches!(e, Error::FailedPrecondition(_)), "{case}: {e:?}")
            }
            (Err(e), Err(kind)) => assert_eq!(kind_of(&e), kind, "{case}"),
            (got, want) => panic!("{case}: {got:?} want {want:?}"),
        }
    }
}

fn delete_cmd(skip: bool) -> DeleteCluster {
    DeleteCluster {
        name: Cluster::test().name(),
        etag: String::new(),
        initiator: crate::operation::Initiator::test(),
        skip_final_snapshot: skip,
    }
}

#[test]
fn a_delete_takes_a_final_snapshot_unless_skipped_off_or_never_created() {
    // (case, snapshots on, skip, observed generation, takes one)
    let cases = [
        ("default", true, false, 1, true),
        ("skipped", true, true, 1, false),
        ("no bucket", false, false, 1, false),
        ("never created", true, false, 0, false),
    ];
    for (case, on, skip, observed, takes) in cases {
        let mut c = Cluster::test();
        c.observed_generation = observed;
        let d = delete(&delete_cmd(skip), &live(c), &rules(on), &ctx()).expect(case);
        let op = d.answer.operation.expect("operation");
        assert_eq!(op.params.snapshot.is_some(), takes, "{case}");
        if let Some(name) = &op.params.snapshot {
            assert_eq!(
                SnapshotKind::of_name(name),
                Some(SnapshotKind::Final),
                "{case}"
            );
        }
        let event = d.changes.event.expect("event").message;
        assert_eq!(
            event.contains("takes the final snapshot"),
            takes,
            "{case}: {event}"
        );
    }
}

#[test]
fn a_delete_stalled_on_its_final_snapshot_gives_way_to_one_that_skips_it() {
    let mut c = Cluster::test();
    c.state = ClusterState::Deleting;
    let mut stalled = Operation::test(OperationKind::Delete).with_state(OperationState::Stalled);
    stalled.params.snapshot = Some("final-x".into());
    c.current_operation = Some(stalled.id);
    let mut s = live(c);
    s.active.running = Some(stalled.clone());
    // Asked again without skipping: the same delete, nothing written.
    let again = delete(&delete_cmd(false), &s, &rules(true), &ctx()).expect("again");
    assert!(again.changes.is_empty());
    assert_eq!(again.answer.operation.map(|o| o.id), Some(stalled.id));
    // With skip_final_snapshot: the stalled one ends, a delete without a snapshot is queued.
    let skip = delete(&delete_cmd(true), &s, &rules(true), &ctx()).expect("skip");
    let new = skip.answer.operation.expect("operation");
    assert_ne!(new.id, stalled.id);
    assert_eq!(new.params.snapshot, None);
    assert!(skip.changes.operations.iter().any(|w| matches!(w, Write::Update(o) if o.id == stalled.id && o.state == OperationState::Cancelled)));
}

#[test]
fn an_update_waits_for_a_snapshot_someone_asked_for_but_not_for_a_scheduled_one() {
    let cmd = UpdateCluster {
        name: Cluster::test().name(),
        etag: String::new(),
        patch: ClusterSpec::test().with_nodes(2),
        fields: vec![SpecField::NodeSets],
        initiator: crate::operation::Initiator::test(),
    };
    // A tenant's snapshot queued: refused, naming it.
    let mut s = live(Cluster::test());
    s.active.queued = Some(Operation::test(OperationKind::Snapshot));
    let e = update(&cmd, &s, &rules(true), &ctx()).expect_err("refused");
    assert!(format!("{e:?}").contains("snapshot"), "{e:?}");
    // A scheduled one not started gives way.
    let mut scheduled = Operation::test(OperationKind::Snapshot);
    scheduled.initiator.kind = InitiatorKind::Platform;
    s.active.queued = Some(scheduled.clone());
    let d = update(&cmd, &s, &rules(true), &ctx()).expect("update");
    assert!(d.changes.operations.iter().any(|w| matches!(w, Write::Update(o) if o.id == scheduled.id && o.state == OperationState::Cancelled)));
    assert_eq!(
        d.answer.operation.map(|o| o.kind),
        Some(OperationKind::Update)
    );
}

fn record(state: SnapshotState, indices: &[&str]) -> SnapshotRecord {
    SnapshotRecord {
        tenant: Cluster::test().tenant,
        cluster_id: Cluster::test().cluster_id,
        cluster_uid: Uuid::from_u128(0x77),
        kind: SnapshotKind::Final,
        operation: Uuid::from_u128(0x78),
        snapshot: SnapshotObs {
            name: "final-1".into(),
            state,
            reason: String::new(),
            indices: indices.iter().map(|s| s.to_string()).collect(),
            start_time: None,
            end_time: None,
        },
    }
}

#[test]
fn restore_sources_are_found_succeeded_and_hold_the_indices_named() {
    let name = Cluster::test().name();
    let ok = record(SnapshotState::Success, &["logs", "metrics"]);
    let source = restore_source(
        Some(&ok),
        &name,
        "final-1",
        &["logs".into()],
        "restore_from",
    )
    .expect("source");
    assert_eq!(source.cluster_uid, Uuid::from_u128(0x77));
    assert_eq!(source.indices, ["logs"]);
    assert!(matches!(
        restore_source(None, &name, "final-1", &[], "restore_from"),
        Err(Error::NotFound { .. })
    ));
    let partial = record(SnapshotState::Partial, &["logs"]);
    assert!(matches!(
        restore_source(Some(&partial), &name, "final-1", &[], "restore_from"),
        Err(Error::FailedPrecondition(_))
    ));
    let e = restore_source(
        Some(&ok),
        &name,
        "final-1",
        &["nope".into()],
        "restore_from",
    )
    .expect_err("not in it");
    assert!(
        format!("{e:?}").contains("restore_from.indices[0]"),
        "{e:?}"
    );
    let many: Vec<String> = (0..101).map(|i| format!("i{i}")).collect();
    let e = restore_source(Some(&ok), &name, "final-1", &many, "restore_from").expect_err("many");
    assert!(format!("{e:?}").contains("restore_from.indices"), "{e:?}");
}

#[test]
fn a_restore_into_a_running_cluster_names_its_indices() {
    let name = Cluster::test().name();
    let ok = record(SnapshotState::Success, &["logs"]);
    let mut cmd = RestoreIndices {
        name: name.clone(),
        source: restore_source(Some(&ok), &name, "final-1", &[], "source").expect("source"),
        initiator: crate::operation::Initiator::test(),
    };
    let e = restore_indices(&cmd, &live(Cluster::test()), &rules(true), &ctx())
        .expect_err("no indices");
    assert!(format!("{e:?}").contains("indices"), "{e:?}");
    cmd.source.indices = vec!["logs".into()];
    let d = restore_indices(&cmd, &live(Cluster::test()), &rules(true), &ctx()).expect("queued");
    let op = d.answer.operation.expect("operation");
    assert_eq!(op.kind, OperationKind::Restore);
    assert_eq!(op.params.restore, Some(cmd.source));
}

fn running(kind: OperationKind) -> Leased {
    let mut op = Operation::test(kind).with_state(OperationState::Running);
    op.lease = Some(crate::operation::Lease {
        owner: "w".into(),
        session: Uuid::from_u128(5),
        token: 1,
        expire_time: t0() + chrono::Duration::hours(1),
    });
    op.lease_token = 1;
    op.attempts.push(crate::operation::Attempt {
        number: 1,
        worker: "w".into(),
        start_time: t0(),
        end_time: None,
        outcome: None,
    });
    let mut cluster = Cluster::test();
    cluster.current_operation = Some(op.id);
    Leased {
        op,
        cluster,
        other_queued: None,
    }
}

fn worker() -> crate::worker::WorkerSession {
    crate::worker::WorkerSession {
        id: Uuid::from_u128(5),
        worker: "w".into(),
    }
}

fn lease_ctx() -> Context {
    Context {
        backoff: super::lease::Backoff {
            base: std::time::Duration::from_secs(1),
            max: std::time::Duration::from_secs(60),
        },
        jitter: 0.5,
        now: t0() + chrono::Duration::minutes(1),
    }
}

fn condition(c: &Cluster) -> Option<(ConditionStatus, ConditionReason)> {
    c.conditions
        .iter()
        .find(|c| c.kind == ConditionType::SnapshotsOk)
        .map(|c| (c.status, c.reason))
}

#[test]
fn reported_snapshots_are_recorded_and_show_in_the_status() {
    let obs = |state| SnapshotObs {
        name: "manual-1".into(),
        state,
        reason: if state == SnapshotState::Success {
            String::new()
        } else {
            "bucket gone".into()
        },
        indices: vec!["logs".into()],
        start_time: None,
        end_time: Some(t0()),
    };
    // (case, kind, state, condition, final snapshot listed)
    let cases = [
        (
            "manual success",
            OperationKind::Snapshot,
            SnapshotState::Success,
            (ConditionStatus::True, ConditionReason::SnapshotSucceeded),
            false,
        ),
        (
            "manual failure",
            OperationKind::Snapshot,
            SnapshotState::Failed,
            (ConditionStatus::False, ConditionReason::SnapshotFailed),
            false,
        ),
        (
            "final snapshot",
            OperationKind::Delete,
            SnapshotState::Success,
            (ConditionStatus::True, ConditionReason::SnapshotSucceeded),
            true,
        ),
    ];
    for (case, kind, state, want, listed) in cases {
        let l = running(kind);
        let changes = report(
            &l,
            &worker(),
            1,
            LeaseEvent::Snapshot(obs(state)),
            &lease_ctx(),
        )
        .expect(case);
        assert_eq!(changes.snapshots.len(), 1, "{case}");
        assert_eq!(changes.snapshots[0].snapshot.state, state, "{case}");
        let cluster = changes.cluster.as_ref().expect("cluster").row().clone();
        assert_eq!(condition(&cluster), Some(want), "{case}");
        assert_eq!(cluster.snapshots.final_snapshot.is_some(), listed, "{case}");
        assert_eq!(
            cluster.snapshots.failing(),
            state != SnapshotState::Success,
            "{case}"
        );
        assert!(changes.event.is_some(), "{case}");
    }
    // A repository that cannot be registered: the condition says so, no record.
    let changes = report(
        &running(OperationKind::Create),
        &worker(),
        1,
        LeaseEvent::Repository {
            registered: false,
            message: "NoSuchBucket".into(),
        },
        &lease_ctx(),
    )
    .expect("repository");
    assert!(changes.snapshots.is_empty());
    let cluster = changes.cluster.as_ref().expect("cluster").row().clone();
    assert_eq!(
        condition(&cluster),
        Some((
            ConditionStatus::False,
            ConditionReason::RepositoryUnavailable
        ))
    );
    assert!(
        cluster
            .snapshots
            .last_failure_reason
            .contains("NoSuchBucket")
    );
    // Deleted snapshots leave the records.
    let changes = report(
        &running(OperationKind::Snapshot),
        &worker(),
        1,
        LeaseEvent::SnapshotsDeleted(vec!["scheduled-1".into()]),
        &lease_ctx(),
    )
    .expect("deleted");
    assert_eq!(
        changes.deleted_snapshots,
        [(Cluster::test().uid, "scheduled-1".to_string())]
    );
}

#[test]
fn a_failed_snapshot_leaves_the_cluster_running_as_it_was() {
    let l = running(OperationKind::Snapshot);
    let changes = report(
        &l,
        &worker(),
        1,
        LeaseEvent::Failed {
            retryable: false,
            reason: "SNAPSHOT_FAILED".into(),
            message: "snapshot manual-1 ended FAILED: bucket gone".into(),
        },
        &lease_ctx(),
    )
    .expect("failed");
    let op = changes.operations.last().expect("op").row().clone();
    assert_eq!(op.state, OperationState::Failed);
    let cluster = changes.cluster.as_ref().expect("cluster").row().clone();
    assert_eq!(cluster.state, ClusterState::Ready);
    assert_eq!(cluster.current_operation, None);
    assert_eq!(
        condition(&cluster),
        Some((ConditionStatus::False, ConditionReason::SnapshotFailed))
    );
    assert!(cluster.snapshots.failing());
}
