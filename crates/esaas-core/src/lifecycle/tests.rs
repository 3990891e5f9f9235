//! The commands by table: each case is a loaded state, a request and what
//! must come of it (the change set written, or the error with its field).

use uuid::Uuid;

use super::cancel::cancel;
use super::create::{CreateCluster, create};
use super::delete::{DeleteCluster, delete};
use super::lease::Leased;
use super::retry::retry;
use super::update::{UpdateCluster, update};
use super::*;
use crate::cluster::{ClusterState, ConditionType, SpecField};
use crate::error::Error;
use crate::operation::{AttemptOutcome, OperationKind, OperationState};
use crate::spec::NodeSet;
use crate::tenant::{Quota, QuotaUsage};
use crate::test_support::t0;

fn rules() -> Rules {
    Rules {
        catalog: Catalog::test(),
        max_attempts: 5,
        default_window: None,
        node_release: None,
        snapshots_enabled: false,
    }
}

fn ctx() -> Ctx {
    Ctx {
        now: t0() + chrono::Duration::seconds(60),
        operation_id: Uuid::from_u128(0x99),
        cluster_uid: Uuid::from_u128(0x98),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}

fn live(cluster: Cluster) -> LiveCluster {
    let mut tenant = Tenant::test();
    tenant.usage = QuotaUsage::default().plus(&cluster.spec);
    LiveCluster {
        cluster,
        tenant,
        active: ActiveOperations::default(),
        current: None,
    }
}

fn field_of(err: &Error) -> Vec<String> {
    match err {
        Error::InvalidArgument(v) => v.iter().map(|v| v.field.clone()).collect(),
        other => vec![format!("{other:?}")],
    }
}

fn inserted_ops(c: &ChangeSet) -> Vec<&Operation> {
    c.operations
        .iter()
        .filter_map(|w| match w {
            Write::Insert(op) => Some(op),
            Write::Update(_) => None,
        })
        .collect()
}

fn updated_ops(c: &ChangeSet) -> Vec<&Operation> {
    c.operations
        .iter()
        .filter_map(|w| match w {
            Write::Update(op) => Some(op),
            Write::Insert(_) => None,
        })
        .collect()
}

// ---- check_spec ----

#[test]
fn check_spec_fills_defaults_then_names_bad_fields() {
    let mut spec = ClusterSpec::test();
    spec.zone_count = 0;
    spec.node_sets[0].storage_iops = 0;
    let checked = check_spec(spec, &Catalog::test(), "cluster.spec").unwrap();
    assert_eq!(checked.zone_count, 1);
    assert_eq!(checked.node_sets[0].storage_iops, 3000);

    let bad = ClusterSpec::test().with_nodes(0).with_version("1.0.0");
    let err = check_spec(bad, &Catalog::test(), "cluster.spec").unwrap_err();
    assert_eq!(
        field_of(&err),
        [
            "cluster.spec.version",
            "cluster.spec.node_sets[0].count",
            // no master-eligible node is left either
            "cluster.spec.node_sets"
        ]
    );
}

// ---- create ----

fn create_cmd(spec: ClusterSpec) -> CreateCluster {
    CreateCluster {
        tenant: crate::test_support::tenant_id("team"),
        cluster_id: crate::test_support::cluster_id("logs"),
        spec,
        initiator: crate::operation::Initiator::test(),
        restore: None,
    }
}

#[test]
fn create_inserts_the_cluster_its_operation_and_one_event() {
    let d = create(
        &create_cmd(ClusterSpec::test().with_nodes(3)),
        &Tenant::test(),
        &rules(),
        &ctx(),
    )
    .unwrap();
    let Some(Write::Insert(cluster)) = &d.changes.cluster else {
        panic!("the cluster is inserted: {:?}", d.changes.cluster);
    };
    assert_eq!(cluster.uid, ctx().cluster_uid);
    assert_eq!(cluster.state, ClusterState::Provisioning);
    assert_eq!((cluster.generation, cluster.observed_generation), (1, 0));
    assert_eq!((cluster.version, cluster.revision), (1, 1));
    assert_eq!(cluster.current_operation, Some(ctx().operation_id));
    assert!(
        cluster
            .conditions
            .iter()
            .any(|c| c.kind == ConditionType::OperationQueued)
    );
    let ops = inserted_ops(&d.changes);
    assert_eq!(ops.len(), 1);
    let op = ops[0];
    assert_eq!(
        (op.kind, op.state),
        (OperationKind::Create, OperationState::Queued)
    );
    assert_eq!(op.target_generation, 1);
    assert_eq!(op.max_attempts, 5);
    assert_eq!(op.traceparent, ctx().traceparent);
    assert_eq!(
        op.stages.iter().map(|s| s.name).collect::<Vec<_>>(),
        OperationKind::Create.stages()
    );
    let event = d.changes.event.as_ref().unwrap();
    assert_eq!((event.revision, event.kind), (1, EventKind::Created));
    assert_eq!(&event.snapshot, cluster);
    assert_eq!(d.answer.cluster, *cluster);
    assert_eq!(d.answer.operation.as_ref(), Some(op));
    assert_eq!(d.answer.disruption, Disruption::None);
}

#[test]
fn create_quota_table() {
    let quota = Quota {
        max_clusters: 2,
        max_nodes: 6,
        max_storage_gib: 300,
    };
    // (case, usage before, nodes asked for, the limits refused)
    let cases: &[(&str, QuotaUsage, i32, &[&str])] = &[
        ("fits", QuotaUsage::default(), 3, &[]),
        ("fits exactly", QuotaUsage::default(), 6, &[]),
        (
            "too many nodes and storage",
            QuotaUsage::default(),
            7,
            &["tenants/team:nodes", "tenants/team:storage_gib"],
        ),
        (
            "one cluster too many",
            QuotaUsage {
                clusters: 2,
                nodes: 2,
                storage_gib: 100,
            },
            1,
            &["tenants/team:clusters"],
        ),
    ];
    for (case, usage, nodes, refused) in cases {
        let mut tenant = Tenant::test();
        tenant.quota = quota;
        tenant.usage = *usage;
        let got = create(
            &create_cmd(ClusterSpec::test().with_nodes(*nodes)),
            &tenant,
            &rules(),
            &ctx(),
        );
        match (got, refused.is_empty()) {
            (Ok(_), true) => {}
            (Err(Error::QuotaExceeded(v)), false) => {
                let subjects: Vec<_> = v.iter().map(|v| v.subject.as_str()).collect();
                assert_eq!(subjects, *refused, "{case}");
            }
            (other, _) => panic!("{case}: {other:?}"),
        }
    }
}

// ---- update ----

fn update_cmd(fields: &[SpecField], change: impl FnOnce(&mut ClusterSpec)) -> UpdateCluster {
    let mut patch = ClusterSpec::test();
    change(&mut patch);
    UpdateCluster {
        name: Cluster::test().name(),
        etag: String::new(),
        patch,
        fields: fields.to_vec(),
        initiator: crate::operation::Initiator::test(),
    }
}

#[test]
fn update_refusals_table() {
    type Setup = Box<dyn Fn(&mut LiveCluster, &mut UpdateCluster)>;
    // (case, setup, the error: a field path, or the reason)
    let cases: Vec<(&str, Setup, &str)> = vec![
        (
            "stale etag",
            Box::new(|_, cmd| cmd.etag = "not-the-etag".into()),
            "ETAG_MISMATCH",
        ),
        (
            "being deleted",
            Box::new(|s, _| s.cluster.state = ClusterState::Deleting),
            "FAILED_PRECONDITION",
        ),
        (
            "unknown version",
            Box::new(|_, cmd| cmd.patch.version = "7.0.0".into()),
            "cluster.spec.version",
        ),
        (
            "downgrade",
            Box::new(|s, cmd| {
                s.cluster.spec.version = "8.17.1".into();
                cmd.patch.version = "8.15.3".into();
            }),
            "cluster.spec.version",
        ),
        (
            "smaller volume",
            Box::new(|_, cmd| {
                cmd.fields = vec![SpecField::NodeSets];
                cmd.patch.node_sets[0].storage_gib = 20;
            }),
            "cluster.spec.node_sets[0].storage_gib",
        ),
        (
            "new size class",
            Box::new(|_, cmd| {
                cmd.fields = vec![SpecField::NodeSets];
                cmd.patch.node_sets[0].size_class = "large".into();
            }),
            "cluster.spec.node_sets[0].size_class",
        ),
        (
            "a volume change inside EBS's six hours",
            Box::new(|s, cmd| {
                s.cluster.storage_change_time = Some(ctx().now - chrono::Duration::hours(5));
                cmd.fields = vec![SpecField::NodeSets];
                cmd.patch.node_sets[0].storage_iops = 6000;
            }),
            "FAILED_PRECONDITION",
        ),
        (
            "over quota",
            Box::new(|s, cmd| {
                s.tenant.quota.max_nodes = 2;
                cmd.fields = vec![SpecField::NodeSets];
                cmd.patch.node_sets[0].count = 3;
            }),
            "QUOTA_EXCEEDED",
        ),
    ];
    for (case, setup, want) in cases {
        let mut state = live(Cluster::test());
        let mut cmd = update_cmd(&[SpecField::Version], |s| s.version = "8.17.1".into());
        setup(&mut state, &mut cmd);
        let err = update(&cmd, &state, &rules(), &ctx()).unwrap_err();
        let got = match &err {
            Error::InvalidArgument(v) => v[0].field.clone(),
            other => other.reason().to_string(),
        };
        assert_eq!(got, want, "{case}: {err:?}");
    }
}

#[test]
fn volume_changes_wait_for_ebs_six_hours() {
    let hours = |h| Some(ctx().now - chrono::Duration::hours(h));
    // (case, last volume change, the update, refused)
    type Change = fn(&mut ClusterSpec);
    let cases: Vec<(&str, Option<chrono::DateTime<chrono::Utc>>, Change, bool)> = vec![
        (
            "first change",
            None,
            |s| s.node_sets[0].storage_gib = 80,
            false,
        ),
        (
            "5 h later: size",
            hours(5),
            |s| s.node_sets[0].storage_gib = 80,
            true,
        ),
        (
            "5 h later: IOPS",
            hours(5),
            |s| s.node_sets[0].storage_iops = 4000,
            true,
        ),
        (
            "5 h later: throughput",
            hours(5),
            |s| s.node_sets[0].storage_throughput_mibps = 250,
            true,
        ),
        (
            "6 h later",
            hours(6),
            |s| s.node_sets[0].storage_gib = 80,
            false,
        ),
        (
            "5 h later, no volume change",
            hours(5),
            |s| s.node_sets[0].count = 2,
            false,
        ),
        (
            "5 h later, a new node set's volumes",
            hours(5),
            |s| s.node_sets.push(crate::spec::NodeSet::test("more")),
            false,
        ),
    ];
    for (case, last, change, refused) in cases {
        let mut state = live(Cluster::test());
        state.cluster.storage_change_time = last;
        let cmd = update_cmd(&[SpecField::NodeSets], change);
        match update(&cmd, &state, &rules(), &ctx()) {
            Err(Error::FailedPrecondition(v)) if refused => {
                assert!(
                    v[0].subject.starts_with("cluster.spec.node_sets[0]."),
                    "{case}"
                );
                let next = (last.unwrap() + chrono::Duration::hours(6))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                assert!(
                    v[0].description.contains(&next),
                    "{case}: {}",
                    v[0].description
                );
            }
            Ok(d) if !refused => {
                let changed = cmd.patch.node_sets.len() == 1 && cmd.patch.node_sets[0].count == 1;
                let want = if changed { Some(ctx().now) } else { last };
                assert_eq!(d.answer.cluster.storage_change_time, want, "{case}");
            }
            other => panic!("{case}: {other:?}"),
        }
    }
}

#[test]
fn an_update_under_a_lowered_quota_may_still_shrink() {
    let mut cluster = Cluster::test();
    cluster.spec = cluster.spec.with_nodes(5);
    let mut state = live(cluster);
    state.tenant.quota.max_nodes = 1;
    let cmd = update_cmd(&[SpecField::NodeSets], |s| s.node_sets[0].count = 4);
    let d = update(&cmd, &state, &rules(), &ctx()).unwrap();
    assert_eq!(d.answer.cluster.spec.node_sets[0].count, 4);
    assert_eq!(d.answer.disruption, Disruption::Rolling);
}

#[test]
fn an_update_that_changes_nothing_writes_nothing() {
    let mut state = live(Cluster::test());
    let current = Operation::test(OperationKind::Create).with_state(OperationState::Failed);
    state.cluster.current_operation = Some(current.id);
    state.current = Some(current.clone());
    let cmd = update_cmd(&[SpecField::Version], |_| {});
    let d = update(&cmd, &state, &rules(), &ctx()).unwrap();
    assert!(d.changes.is_empty());
    assert_eq!(d.answer.cluster, state.cluster);
    assert_eq!(d.answer.operation, Some(current));
    assert_eq!(d.answer.disruption, Disruption::None);
}

#[test]
fn update_queues_folds_or_waits_table() {
    // (case, queued, running, cluster state before, state after, writes
    //  (inserts, updates), the change's operation is the queued one, it is current)
    struct Case {
        name: &'static str,
        queued: bool,
        running: bool,
        stalled: bool,
        before: ClusterState,
        after: ClusterState,
        inserts: usize,
        updates: usize,
        current_is_new: bool,
    }
    let cases = [
        Case {
            name: "idle ready cluster: a new update, current",
            queued: false,
            running: false,
            stalled: false,
            before: ClusterState::Ready,
            after: ClusterState::Updating,
            inserts: 1,
            updates: 0,
            current_is_new: true,
        },
        Case {
            name: "failed cluster: a new update",
            queued: false,
            running: false,
            stalled: false,
            before: ClusterState::Failed,
            after: ClusterState::Updating,
            inserts: 1,
            updates: 0,
            current_is_new: true,
        },
        Case {
            name: "provisioning with a queued create: folds into it",
            queued: true,
            running: false,
            stalled: false,
            before: ClusterState::Provisioning,
            after: ClusterState::Provisioning,
            inserts: 0,
            updates: 1,
            current_is_new: true,
        },
        Case {
            name: "running create: a new update waits behind it",
            queued: false,
            running: true,
            stalled: false,
            before: ClusterState::Provisioning,
            after: ClusterState::Provisioning,
            inserts: 1,
            updates: 0,
            current_is_new: false,
        },
        Case {
            name: "stalled update: superseded (cancelled), the new update is current",
            queued: false,
            running: true,
            stalled: true,
            before: ClusterState::Updating,
            after: ClusterState::Updating,
            inserts: 1,
            updates: 1,
            current_is_new: true,
        },
        Case {
            name: "stalled update with one queued behind: superseded, the queued one carries on",
            queued: true,
            running: true,
            stalled: true,
            before: ClusterState::Updating,
            after: ClusterState::Updating,
            inserts: 0,
            updates: 2,
            current_is_new: true,
        },
    ];
    for c in cases {
        let mut state = live(Cluster::test());
        state.cluster.state = c.before;
        let running = Operation::test(OperationKind::Create)
            .with_id(0x30)
            .with_state(if c.stalled {
                OperationState::Stalled
            } else {
                OperationState::Running
            });
        if c.running {
            state.cluster.current_operation = Some(running.id);
            state.active.running = Some(running.clone());
        }
        if c.stalled {
            state.cluster.conditions.push(Condition {
                kind: ConditionType::Stalled,
                status: crate::cluster::ConditionStatus::True,
                reason: crate::cluster::ConditionReason::GateTimedOut,
                message: "waiting for green".into(),
                last_transition_time: t0(),
            });
        }
        let queued = Operation::test(OperationKind::Create).with_id(0x31);
        if c.queued {
            state.active.queued = Some(queued.clone());
        }
        let cmd = update_cmd(&[SpecField::NodeSets], |s| s.node_sets[0].count = 3);
        let d = update(&cmd, &state, &rules(), &ctx()).unwrap();
        let cluster = &d.answer.cluster;
        assert_eq!(cluster.state, c.after, "{}", c.name);
        assert_eq!(cluster.generation, 2, "{}", c.name);
        assert_eq!(inserted_ops(&d.changes).len(), c.inserts, "{}", c.name);
        assert_eq!(updated_ops(&d.changes).len(), c.updates, "{}", c.name);
        let op = d.answer.operation.as_ref().unwrap();
        assert_eq!(op.target_generation, 2, "{}", c.name);
        if c.queued {
            assert_eq!(op.id, queued.id, "{}", c.name);
            assert_eq!(op.version, queued.version + 1, "{}", c.name);
        } else {
            assert_eq!(
                (op.id, op.kind),
                (ctx().operation_id, OperationKind::Update),
                "{}",
                c.name
            );
        }
        let current = if c.current_is_new { op.id } else { running.id };
        assert_eq!(cluster.current_operation, Some(current), "{}", c.name);
        let superseded = updated_ops(&d.changes)
            .into_iter()
            .find(|o| o.id == running.id)
            .map(|o| (o.state, o.end_time));
        assert_eq!(
            superseded,
            c.stalled
                .then_some((OperationState::Cancelled, Some(ctx().now))),
            "{}",
            c.name
        );
        assert!(
            !cluster
                .conditions
                .iter()
                .any(|k| k.kind == ConditionType::Stalled),
            "{}",
            c.name
        );
        let event = d.changes.event.as_ref().unwrap();
        assert_eq!(event.kind, EventKind::SpecUpdated, "{}", c.name);
        assert_eq!(event.revision, state.cluster.revision + 1, "{}", c.name);
        assert!(
            event.message.contains("NewNodesFirst"),
            "{}: {}",
            c.name,
            event.message
        );
        assert_eq!(
            event.message.contains("supersedes operations/"),
            c.stalled,
            "{}: {}",
            c.name,
            event.message
        );
    }
}

#[test]
fn deletion_protection_alone_changes_the_spec_without_an_operation() {
    // (case, protected before, fields, change, an operation is queued)
    type Change = fn(&mut ClusterSpec);
    let cases: [(&str, bool, &[SpecField], Change, bool); 4] = [
        (
            "turn on",
            false,
            &[SpecField::DeletionProtection],
            |s| s.deletion_protection = true,
            false,
        ),
        (
            "turn off",
            true,
            &[SpecField::DeletionProtection],
            |s| s.deletion_protection = false,
            false,
        ),
        (
            "with another change: one update carries both",
            false,
            &[SpecField::DeletionProtection, SpecField::NodeSets],
            |s| {
                s.deletion_protection = true;
                s.node_sets[0].count = 3;
            },
            true,
        ),
        (
            "the whole spec, protection only",
            false,
            &SpecField::ALL,
            |s| s.deletion_protection = true,
            false,
        ),
    ];
    for (case, before, fields, change, queues) in cases {
        let mut state = live(Cluster::test());
        state.cluster.spec.deletion_protection = before;
        let mut cmd = update_cmd(fields, change);
        cmd.patch.zones = state.cluster.spec.zones.clone();
        let d = update(&cmd, &state, &rules(), &ctx()).unwrap();
        let cluster = &d.answer.cluster;
        assert_eq!(cluster.spec.deletion_protection, !before, "{case}");
        assert_eq!(d.answer.operation.is_some(), queues, "{case}");
        assert_eq!(d.changes.operations.is_empty(), !queues, "{case}");
        let generation = state.cluster.generation + i64::from(queues);
        assert_eq!(cluster.generation, generation, "{case}");
        assert_eq!(
            cluster.state,
            if queues {
                ClusterState::Updating
            } else {
                ClusterState::Ready
            },
            "{case}"
        );
        let event = d.changes.event.as_ref().unwrap();
        assert_eq!(event.kind, EventKind::SpecUpdated, "{case}");
        assert_eq!(event.revision, state.cluster.revision + 1, "{case}");
        if !queues {
            assert_eq!(d.answer.disruption, Disruption::None, "{case}");
            assert!(
                event.message.contains("no operation needed"),
                "{case}: {}",
                event.message
            );
        }
    }
}

#[test]
fn update_disruption_is_the_classified_change() {
    let state = live(Cluster::test());
    let cmd = update_cmd(&[SpecField::NodeSets], |s| {
        s.node_sets.push(NodeSet::test("hot"))
    });
    let d = update(&cmd, &state, &rules(), &ctx()).unwrap();
    assert_eq!(d.answer.disruption, Disruption::NewNodesFirst);
    assert_eq!(d.answer.cluster.spec.node_sets.len(), 2);
}

// ---- delete ----

fn delete_cmd() -> DeleteCluster {
    DeleteCluster {
        name: Cluster::test().name(),
        etag: String::new(),
        initiator: crate::operation::Initiator::test(),
        skip_final_snapshot: false,
    }
}

#[test]
fn delete_table() {
    // (case, queued, running state, delete becomes current, ops written: (id, state, cancel_requested))
    type Expect = Vec<(u128, OperationState, bool)>;
    let cases: Vec<(&str, bool, Option<OperationState>, bool, Expect)> = vec![
        ("idle", false, None, true, vec![]),
        (
            "a queued change is cancelled",
            true,
            None,
            true,
            vec![(0x31, OperationState::Cancelled, false)],
        ),
        (
            "a stalled change ends at once",
            false,
            Some(OperationState::Stalled),
            true,
            vec![(0x30, OperationState::Cancelled, false)],
        ),
        (
            "a running change is asked to stop and stays current",
            true,
            Some(OperationState::Running),
            false,
            vec![
                (0x31, OperationState::Cancelled, false),
                (0x30, OperationState::Running, true),
            ],
        ),
    ];
    for (case, queued, running, delete_current, expect) in cases {
        let mut state = live(Cluster::test());
        if queued {
            state.active.queued = Some(Operation::test(OperationKind::Update).with_id(0x31));
        }
        if let Some(s) = running {
            let op = Operation::test(OperationKind::Update)
                .with_id(0x30)
                .with_state(s);
            state.cluster.current_operation = Some(op.id);
            state.active.running = Some(op);
        }
        let d = delete(&delete_cmd(), &state, &rules(), &ctx()).unwrap();
        let written: Expect = updated_ops(&d.changes)
            .iter()
            .map(|o| (o.id.as_u128(), o.state, o.cancel_requested))
            .collect();
        assert_eq!(written, expect, "{case}");
        // The delete comes after the cancelled queued one, so one stays queued.
        assert!(
            matches!(d.changes.operations.last(), Some(Write::Insert(op)) if op.kind == OperationKind::Delete),
            "{case}"
        );
        let cluster = &d.answer.cluster;
        assert_eq!(cluster.state, ClusterState::Deleting, "{case}");
        assert_eq!(cluster.delete_time, Some(ctx().now), "{case}");
        let current = if delete_current {
            ctx().operation_id
        } else {
            Uuid::from_u128(0x30)
        };
        assert_eq!(cluster.current_operation, Some(current), "{case}");
        assert_eq!(d.answer.disruption, Disruption::Destructive, "{case}");
        assert_eq!(
            d.changes.event.as_ref().map(|e| e.kind),
            Some(EventKind::DeleteRequested),
            "{case}"
        );
    }
}

#[test]
fn a_protected_cluster_refuses_delete_naming_the_flag() {
    // (case, protected, cluster state, refused)
    let cases = [
        ("protected and ready", true, ClusterState::Ready, true),
        ("protected and failed", true, ClusterState::Failed, true),
        (
            "protected while an update runs",
            true,
            ClusterState::Updating,
            true,
        ),
        ("unprotected", false, ClusterState::Ready, false),
    ];
    for (case, protected, before, refused) in cases {
        let mut state = live(Cluster::test());
        state.cluster.state = before;
        state.cluster.spec.deletion_protection = protected;
        match delete(&delete_cmd(), &state, &rules(), &ctx()) {
            Err(Error::FailedPrecondition(v)) => {
                assert!(refused, "{case}");
                assert_eq!(v.len(), 1, "{case}");
                assert_eq!(v[0].kind, super::delete::DELETION_PROTECTION, "{case}");
                assert_eq!(v[0].subject, state.cluster.name().to_string(), "{case}");
                assert!(
                    v[0].description.contains("spec.deletion_protection"),
                    "{case}"
                );
            }
            Ok(d) => {
                assert!(!refused, "{case}");
                assert_eq!(d.answer.cluster.state, ClusterState::Deleting, "{case}");
            }
            Err(other) => panic!("{case}: {other:?}"),
        }
    }
}

#[test]
fn deleting_twice_answers_the_delete_and_writes_nothing() {
    let mut state = live(Cluster::test());
    state.cluster.state = ClusterState::Deleting;
    state.active.running = Some(
        Operation::test(OperationKind::Update)
            .with_id(0x30)
            .with_state(OperationState::Running),
    );
    state.active.queued = Some(Operation::test(OperationKind::Delete).with_id(0x40));
    let d = delete(&delete_cmd(), &state, &rules(), &ctx()).unwrap();
    assert!(d.changes.is_empty());
    assert_eq!(
        d.answer.operation.map(|o| (o.id.as_u128(), o.kind)),
        Some((0x40, OperationKind::Delete))
    );
}

#[test]
fn delete_checks_the_etag() {
    let state = live(Cluster::test());
    let mut cmd = delete_cmd();
    cmd.etag = "stale".into();
    assert!(matches!(
        delete(&cmd, &state, &rules(), &ctx()),
        Err(Error::EtagMismatch { .. })
    ));
    cmd.etag = state.cluster.etag();
    assert!(delete(&cmd, &state, &rules(), &ctx()).is_ok());
}

// ---- retry ----

#[test]
fn retry_table() {
    // (case, operation state, kind, cluster state, the cluster's current
    // operation, another queued, cluster state after; Err: refused, with a
    // word of the reason)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        OperationState,
        OperationKind,
        ClusterState,
        bool,
        bool,
        Result<ClusterState, &str>,
    )> = vec![
        (
            "failed create",
            OperationState::Failed,
            OperationKind::Create,
            ClusterState::Failed,
            true,
            false,
            Ok(ClusterState::Provisioning),
        ),
        (
            "failed update",
            OperationState::Failed,
            OperationKind::Update,
            ClusterState::Failed,
            true,
            false,
            Ok(ClusterState::Updating),
        ),
        (
            "failed delete",
            OperationState::Failed,
            OperationKind::Delete,
            ClusterState::Failed,
            true,
            false,
            Ok(ClusterState::Deleting),
        ),
        (
            "stalled update keeps the cluster's state",
            OperationState::Stalled,
            OperationKind::Update,
            ClusterState::Updating,
            true,
            false,
            Ok(ClusterState::Updating),
        ),
        (
            "stalled delete of a deleting cluster",
            OperationState::Stalled,
            OperationKind::Delete,
            ClusterState::Deleting,
            true,
            false,
            Ok(ClusterState::Deleting),
        ),
        (
            "cancelled create resumes",
            OperationState::Cancelled,
            OperationKind::Create,
            ClusterState::Failed,
            true,
            false,
            Ok(ClusterState::Provisioning),
        ),
        (
            "cancelled update resumes",
            OperationState::Cancelled,
            OperationKind::Update,
            ClusterState::Ready,
            true,
            false,
            Ok(ClusterState::Updating),
        ),
        (
            "cancelled update another one superseded",
            OperationState::Cancelled,
            OperationKind::Update,
            ClusterState::Updating,
            false,
            true,
            Err("superseded"),
        ),
        (
            "cancelled update with another queued",
            OperationState::Cancelled,
            OperationKind::Update,
            ClusterState::Ready,
            true,
            true,
            Err("superseded"),
        ),
        (
            "failed create of a cluster being deleted",
            OperationState::Failed,
            OperationKind::Create,
            ClusterState::Deleting,
            false,
            false,
            Err("DELETING"),
        ),
        (
            "failed update of a deleted cluster",
            OperationState::Failed,
            OperationKind::Update,
            ClusterState::Deleted,
            false,
            false,
            Err("DELETED"),
        ),
        (
            "queued",
            OperationState::Queued,
            OperationKind::Update,
            ClusterState::Updating,
            true,
            false,
            Err("QUEUED"),
        ),
        (
            "running",
            OperationState::Running,
            OperationKind::Update,
            ClusterState::Updating,
            true,
            false,
            Err("RUNNING"),
        ),
        (
            "succeeded",
            OperationState::Succeeded,
            OperationKind::Create,
            ClusterState::Ready,
            true,
            false,
            Err("SUCCEEDED"),
        ),
    ];
    for (case, op_state, kind, before, current, queued, after) in cases {
        let mut op = Operation::test(kind).with_state(op_state);
        op.cancel_requested = op_state == OperationState::Cancelled;
        op.attempts = (1..=3)
            .map(|n| crate::operation::Attempt {
                number: n,
                worker: "w".into(),
                start_time: t0(),
                end_time: Some(t0()),
                outcome: Some(AttemptOutcome::LeaseExpired),
            })
            .collect();
        op.error = Some(crate::operation::OperationError {
            code: crate::error::Code::Unavailable,
            reason: "LEASE_LOST".into(),
            message: "lost".into(),
        });
        let mut cluster = Cluster::test();
        cluster.state = before;
        cluster.current_operation = Some(if current { op.id } else { Uuid::now_v7() });
        let state = Leased {
            op: op.clone(),
            cluster,
            other_queued: queued.then(Uuid::now_v7),
        };
        let got = retry(
            &state,
            &crate::operation::Initiator::test(),
            &rules(),
            &ctx(),
        );
        match (got, after) {
            (Ok(d), Ok(after)) => {
                let retried = &d.answer;
                assert_eq!(retried.state, OperationState::Queued, "{case}");
                assert_eq!(retried.error, None, "{case}");
                assert!(!retried.cancel_requested, "{case}");
                assert_eq!(retried.next_attempt_time, ctx().now, "{case}");
                // Three attempts kept, five more may count.
                assert_eq!(retried.max_attempts, 8, "{case}");
                assert_eq!(retried.attempts.len(), 3, "{case}");
                let c = d.changes.event.as_ref().unwrap().snapshot.clone();
                assert_eq!(c.state, after, "{case}");
                assert_eq!(c.current_operation, Some(op.id), "{case}");
                assert_eq!(updated_ops(&d.changes), vec![retried], "{case}");
            }
            (Err(Error::FailedPrecondition(v)), Err(word)) => {
                assert!(
                    v[0].description.contains(word),
                    "{case}: {}",
                    v[0].description
                );
            }
            (other, _) => panic!("{case}: {other:?}"),
        }
    }
}

#[test]
fn after_a_failed_delete_only_the_delete_may_run_again() {
    // The delete failed: the cluster is FAILED, and its delete time stays.
    for (kind, allowed) in [
        (OperationKind::Create, false),
        (OperationKind::Update, false),
        (OperationKind::Delete, true),
    ] {
        let op = Operation::test(kind).with_state(OperationState::Failed);
        let mut cluster = Cluster::test();
        cluster.state = ClusterState::Failed;
        cluster.delete_time = Some(t0());
        cluster.current_operation = Some(op.id);
        let state = Leased {
            op,
            cluster,
            other_queued: None,
        };
        let got = retry(
            &state,
            &crate::operation::Initiator::test(),
            &rules(),
            &ctx(),
        );
        match got {
            Ok(_) => assert!(allowed, "{kind:?} revived a cluster whose delete was asked"),
            Err(Error::FailedPrecondition(v)) => {
                assert!(!allowed, "{kind:?}: {v:?}");
                assert!(v[0].description.contains("delete was asked"), "{v:?}");
            }
            Err(e) => panic!("{kind:?}: {e:?}"),
        }
    }
}

// ---- cancel ----

/// What a cancel must leave: the operation's state and flag, the cluster's
/// state, and whether its `Ready` condition says the change was cancelled.
#[derive(Debug)]
struct Cancelled {
    op_state: OperationState,
    cancel_requested: bool,
    cluster_state: ClusterState,
    ready_cancelled: bool,
}

#[test]
fn cancel_table() {
    use crate::cluster::{Condition, ConditionReason, ConditionStatus, Health};
    let done = |op_state, cluster_state, ready_cancelled| {
        Ok(Cancelled {
            op_state,
            cancel_requested: false,
            cluster_state,
            ready_cancelled,
        })
    };
    // (case, op state, kind, already flagged, the cluster's current
    // operation, cluster state and health before, outcome; Ok(None): nothing
    // written; Err: refused with a word of the reason)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        OperationState,
        OperationKind,
        bool,
        bool,
        (ClusterState, Health),
        Result<Option<Cancelled>, &str>,
    )> = vec![
        (
            "queued create: the cluster never served",
            OperationState::Queued,
            OperationKind::Create,
            false,
            true,
            (ClusterState::Provisioning, Health::Unknown),
            done(OperationState::Cancelled, ClusterState::Failed, true).map(Some),
        ),
        (
            "queued update of a green cluster",
            OperationState::Queued,
            OperationKind::Update,
            false,
            true,
            (ClusterState::Updating, Health::Green),
            done(OperationState::Cancelled, ClusterState::Ready, true).map(Some),
        ),
        (
            "queued update of a yellow cluster",
            OperationState::Queued,
            OperationKind::Update,
            false,
            true,
            (ClusterState::Updating, Health::Yellow),
            done(OperationState::Cancelled, ClusterState::Degraded, true).map(Some),
        ),
        (
            "queued behind a running operation, which stays current",
            OperationState::Queued,
            OperationKind::Update,
            false,
            false,
            (ClusterState::Updating, Health::Green),
            done(OperationState::Cancelled, ClusterState::Updating, false).map(Some),
        ),
        (
            "stalled update",
            OperationState::Stalled,
            OperationKind::Update,
            false,
            true,
            (ClusterState::Updating, Health::Green),
            done(OperationState::Cancelled, ClusterState::Ready, true).map(Some),
        ),
        (
            "running update is flagged",
            OperationState::Running,
            OperationKind::Update,
            false,
            true,
            (ClusterState::Updating, Health::Green),
            Ok(Some(Cancelled {
                op_state: OperationState::Running,
                cancel_requested: true,
                cluster_state: ClusterState::Updating,
                ready_cancelled: false,
            })),
        ),
        (
            "running, already flagged",
            OperationState::Running,
            OperationKind::Update,
            true,
            true,
            (ClusterState::Updating, Health::Green),
            Ok(None),
        ),
        (
            "already cancelled",
            OperationState::Cancelled,
            OperationKind::Update,
            false,
            true,
            (ClusterState::Ready, Health::Green),
            Ok(None),
        ),
        (
            "succeeded",
            OperationState::Succeeded,
            OperationKind::Update,
            false,
            false,
            (ClusterState::Ready, Health::Green),
            Err("SUCCEEDED"),
        ),
        (
            "failed",
            OperationState::Failed,
            OperationKind::Create,
            false,
            true,
            (ClusterState::Failed, Health::Unknown),
            Err("FAILED"),
        ),
        (
            "a delete",
            OperationState::Queued,
            OperationKind::Delete,
            false,
            true,
            (ClusterState::Deleting, Health::Green),
            Err("deletion cannot be cancelled"),
        ),
        (
            "a running delete",
            OperationState::Running,
            OperationKind::Delete,
            false,
            true,
            (ClusterState::Deleting, Health::Green),
            Err("deletion cannot be cancelled"),
        ),
    ];
    for (case, op_state, kind, flagged, current, (state, health), want) in cases {
        let mut op = Operation::test(kind).with_state(op_state);
        op.cancel_requested = flagged;
        let mut cluster = Cluster::test();
        cluster.state = state;
        cluster.health = health;
        cluster.generation = 2;
        cluster.observed_generation = 1;
        cluster.current_operation = Some(if current { op.id } else { Uuid::now_v7() });
        cluster.conditions.push(Condition {
            kind: ConditionType::OperationQueued,
            status: ConditionStatus::True,
            reason: ConditionReason::WaitingForWorker,
            message: "queued".into(),
            last_transition_time: t0(),
        });
        let before = cluster.clone();
        let state = Leased {
            op: op.clone(),
            cluster,
            other_queued: None,
        };
        let got = cancel(&state, &crate::operation::Initiator::test(), ctx().now);
        match (got, want) {
            (Ok(d), Ok(None)) => {
                assert!(d.changes.is_empty(), "{case}");
                assert_eq!(d.answer, op, "{case}");
            }
            (Ok(d), Ok(Some(want))) => {
                let written = updated_ops(&d.changes);
                assert_eq!(written, vec![&d.answer], "{case}");
                assert_eq!(d.answer.state, want.op_state, "{case}");
                assert_eq!(d.answer.cancel_requested, want.cancel_requested, "{case}");
                assert_eq!(
                    d.answer.end_time.is_some(),
                    want.op_state == OperationState::Cancelled,
                    "{case}"
                );
                // The cancellation (or its request) is an event.
                let event = d.changes.event.as_ref().expect(case);
                assert!(
                    event.message.contains("cancel"),
                    "{case}: {}",
                    event.message
                );
                assert_eq!(event.operation, Some(op.id), "{case}");
                let c = &event.snapshot;
                assert_eq!(c.state, want.cluster_state, "{case}");
                let ready = c.conditions.iter().find(|c| c.kind == ConditionType::Ready);
                assert_eq!(
                    ready.is_some_and(|r| r.reason == ConditionReason::OperationCancelled
                        && r.status == ConditionStatus::False),
                    want.ready_cancelled,
                    "{case}: {ready:?}"
                );
                if want.op_state == OperationState::Cancelled {
                    // Nothing waits for a worker any more.
                    assert!(
                        !c.conditions
                            .iter()
                            .any(|c| c.kind == ConditionType::OperationQueued),
                        "{case}"
                    );
                    // A retry can resume it from where it stood, unless it
                    // waited behind another operation.
                    assert_eq!(
                        c.current_operation,
                        if current {
                            Some(op.id)
                        } else {
                            before.current_operation
                        },
                        "{case}"
                    );
                }
                if want.ready_cancelled {
                    assert!(c.message.contains(&op.name().to_string()), "{case}");
                }
            }
            (Err(Error::FailedPrecondition(v)), Err(word)) => {
                assert!(
                    v[0].description.contains(word),
                    "{case}: {}",
                    v[0].description
                );
                assert_eq!(v[0].subject, op.name().to_string(), "{case}");
            }
            (other, _) => panic!("{case}: {other:?}"),
        }
    }
}

#[test]
fn a_cancelled_operation_resumes_with_a_retry() {
    let op = Operation::test(OperationKind::Update).with_state(OperationState::Queued);
    let mut cluster = Cluster::test();
    cluster.state = ClusterState::Updating;
    cluster.current_operation = Some(op.id);
    let state = Leased {
        op,
        cluster,
        other_queued: None,
    };
    let by = crate::operation::Initiator::test();
    let d = cancel(&state, &by, ctx().now).unwrap();
    let after = Leased {
        op: d.answer.clone(),
        cluster: d.changes.event.unwrap().snapshot,
        other_queued: None,
    };
    let d = retry(&after, &by, &rules(), &ctx()).unwrap();
    assert_eq!(d.answer.state, OperationState::Queued);
    let c = d.changes.event.unwrap().snapshot;
    assert_eq!(c.state, ClusterState::Updating);
    assert_eq!(c.current_operation, Some(d.answer.id));
}

// ---- maintenance: updates of the window, tenant changes over planned work, reschedule ----

fn window_sat() -> crate::spec::MaintenanceWindow {
    crate::spec::MaintenanceWindow {
        day: chrono::Weekday::Sat,
        start: chrono::NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
        duration: chrono::Duration::hours(4),
    }
}

#[test]
fn a_window_or_freeze_change_queues_nothing_and_keeps_the_generation() {
    let c = Cluster::test();
    let cmd = update_cmd(
        &[SpecField::MaintenanceWindow, SpecField::ChangeFreezes],
        |s| {
            s.maintenance_window = Some(window_sat());
            s.change_freezes = vec![crate::spec::ChangeFreeze {
                start: t0(),
                end: t0() + chrono::Duration::days(2),
                reason: "year end".into(),
            }];
        },
    );
    let d = update(&cmd, &live(c.clone()), &rules(), &ctx()).unwrap();
    assert!(d.changes.operations.is_empty(), "no operation");
    assert!(d.answer.operation.is_none());
    let Some(Write::Update(saved)) = &d.changes.cluster else {
        panic!("the cluster is saved");
    };
    assert_eq!(saved.spec.maintenance_window, Some(window_sat()));
    assert_eq!(saved.spec.change_freezes.len(), 1);
    assert_eq!(
        (saved.generation, saved.state),
        (c.generation, ClusterState::Ready)
    );
    assert_eq!(
        d.changes.event.as_ref().map(|e| e.kind),
        Some(EventKind::SpecUpdated)
    );

    // A bad window is a field violation.
    let bad = update_cmd(&[SpecField::MaintenanceWindow], |s| {
        s.maintenance_window = Some(crate::spec::MaintenanceWindow {
            duration: chrono::Duration::minutes(10),
            ..window_sat()
        });
    });
    let err = update(&bad, &live(c), &rules(), &ctx()).unwrap_err();
    assert_eq!(field_of(&err), ["cluster.spec.maintenance_window.duration"]);
}

fn scheduled(kind: OperationKind) -> Operation {
    let mut op = Operation::test(kind).with_id(0x31);
    op.initiator = crate::operation::Initiator {
        kind: crate::operation::InitiatorKind::Platform,
        principal: "platform/certificates".into(),
    };
    op.not_before = Some(t0() + chrono::Duration::days(3));
    op.next_attempt_time = t0() + chrono::Duration::days(3);
    op
}

#[test]
fn a_tenant_change_runs_at_once_over_scheduled_platform_work() {
    let cmd = update_cmd(&[SpecField::NodeSets], |s| s.node_sets[0].count = 3);
    // A scheduled repair carries the change, now.
    let mut state = live(Cluster::test());
    state.active.queued = Some(scheduled(OperationKind::Repair));
    let d = update(&cmd, &state, &rules(), &ctx()).unwrap();
    let ops = updated_ops(&d.changes);
    assert_eq!(ops.len(), 1);
    assert_eq!(
        (ops[0].not_before, ops[0].next_attempt_time),
        (None, ctx().now)
    );
    assert_eq!(ops[0].target_generation, 2);
    // A scheduled rotation applies no spec: it gives way to an update.
    let mut state = live(Cluster::test());
    state.active.queued = Some(scheduled(OperationKind::RotateCertificates));
    let d = update(&cmd, &state, &rules(), &ctx()).unwrap();
    assert_eq!(updated_ops(&d.changes)[0].state, OperationState::Cancelled);
    let new = inserted_ops(&d.changes);
    assert_eq!(
        (new[0].kind, new[0].next_attempt_time),
        (OperationKind::Update, ctx().now)
    );
    assert_eq!(
        d.changes.operations.len(),
        2,
        "cancelled first, then inserted"
    );
    assert!(matches!(d.changes.operations[0], Write::Update(_)));
}

#[test]
fn reschedule_table() {
    use super::maintenance::{RescheduleTo, reschedule};
    let now = ctx().now;
    let later = now + chrono::Duration::days(2);
    let state = |op: Operation| {
        let mut cluster = Cluster::test();
        cluster.current_operation = Some(op.id);
        cluster.spec.maintenance_window = Some(window_sat());
        Leased {
            op,
            cluster,
            other_queued: None,
        }
    };
    let attempted = {
        let mut op = scheduled(OperationKind::Repair);
        op.attempts.push(crate::operation::Attempt {
            number: 1,
            worker: "w".into(),
            start_time: t0(),
            end_time: Some(t0()),
            outcome: Some(AttemptOutcome::LeaseExpired),
        });
        op
    };
    // (case, operation, where to, Ok(not_before) or Err(word of the refusal))
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        Operation,
        RescheduleTo,
        Result<chrono::DateTime<chrono::Utc>, &str>,
    )> = vec![
        (
            "now",
            scheduled(OperationKind::RotateCertificates),
            RescheduleTo::Now,
            Ok(now),
        ),
        (
            "a time",
            scheduled(OperationKind::Repair),
            RescheduleTo::At(later),
            Ok(later),
        ),
        (
            "a tenant's own update, to the window",
            Operation::test(OperationKind::Update).with_id(0x31),
            RescheduleTo::NextWindow,
            Ok(super::maintenance::earliest_start(now, Some(&window_sat()), &[], None).at),
        ),
        (
            "a minute ago means now",
            scheduled(OperationKind::Repair),
            RescheduleTo::At(now - chrono::Duration::minutes(1)),
            Ok(now),
        ),
        (
            "an hour ago",
            scheduled(OperationKind::Repair),
            RescheduleTo::At(now - chrono::Duration::hours(1)),
            Err("INVALID:not_before"),
        ),
        (
            "31 days ahead",
            scheduled(OperationKind::Repair),
            RescheduleTo::At(now + chrono::Duration::days(31)),
            Err("INVALID:not_before"),
        ),
        (
            "running",
            scheduled(OperationKind::Repair).with_state(OperationState::Running),
            RescheduleTo::Now,
            Err("RUNNING"),
        ),
        (
            "done",
            scheduled(OperationKind::Repair).with_state(OperationState::Succeeded),
            RescheduleTo::Now,
            Err("SUCCEEDED"),
        ),
        (
            "waiting for a retry",
            attempted,
            RescheduleTo::Now,
            Err("after an attempt"),
        ),
        (
            "a delete",
            Operation::test(OperationKind::Delete).with_id(0x31),
            RescheduleTo::Now,
            Err("deletion"),
        ),
    ];
    let by = crate::operation::Initiator::test();
    for (what, op, to, want) in cases {
        let got = reschedule(&state(op), to, "not_before", &by, None, now);
        match (got, want) {
            (Ok(d), Ok(at)) => {
                assert_eq!(d.answer.not_before, Some(at), "{what}");
                assert_eq!(d.answer.next_attempt_time, at, "{what}");
                assert_eq!(updated_ops(&d.changes).len(), 1, "{what}");
                let event = d.changes.event.expect("event");
                assert!(
                    event.message.contains("rescheduled by"),
                    "{what}: {}",
                    event.message
                );
                assert_eq!(event.kind, EventKind::OperationProgress, "{what}");
            }
            (Err(Error::InvalidArgument(v)), Err(word)) => {
                assert_eq!(format!("INVALID:{}", v[0].field), word, "{what}");
            }
            (Err(e @ Error::FailedPrecondition(_)), Err(word)) => {
                assert!(format!("{e:?}").contains(word), "{what}: {e:?}");
            }
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}
