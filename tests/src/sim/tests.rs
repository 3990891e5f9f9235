use std::time::Duration;

use esaas_core::backend::{Elasticsearch, NodeGroups, StepError, Target, Workloads};
use esaas_core::cluster::Health;
use esaas_core::names::{ClusterId, TenantId};
use esaas_core::plan::{NodeGroupStatus, WorkloadObs, node_key};
use esaas_core::spec::{ClusterSpec, NodeRole, NodeSet, VolumeRetention};
use uuid::Uuid;

use super::elasticsearch::SHARDS_PER_POD;
use super::*;
use crate::TestDb;

fn target(count: i32) -> Target {
    Target {
        uid: Uuid::new_v4(),
        tenant: TenantId::parse("t", "acme").expect("tenant"),
        cluster_id: ClusterId::parse("c", "logs").expect("cluster"),
        spec: ClusterSpec {
            version: "8.17.10".into(),
            node_sets: vec![NodeSet {
                name: "default".into(),
                roles: vec![NodeRole::Data, NodeRole::Master],
                count,
                size_class: "small".into(),
                storage_gib: 100,
                storage_iops: 3000,
                storage_throughput_mibps: 125,
            }],
            zone_count: 1,
            zones: Vec::new(),
            volume_retention: VolumeRetention::Delete,
            deletion_protection: false,
            maintenance_window: None,
            change_freezes: Vec::new(),
            snapshot_policy: None,
        },
        generation: 1,
        operation: Uuid::new_v4(),
    }
}

async fn sim(db: &TestDb, config: SimConfig) -> Sim {
    Sim::connect(&db.url, config).await.expect("sim")
}

#[tokio::test]
async fn node_group_lifecycle_follows_the_delay() {
    let db = TestDb::new().await;
    let delay = Duration::from_millis(200);
    let s = sim(
        &db,
        SimConfig {
            node_group_delay: delay,
            ..Default::default()
        },
    )
    .await;
    let t = target(3);
    assert!(
        NodeGroups::observe(&s, &t)
            .await
            .expect("observe")
            .is_empty()
    );

    s.ensure(&t, "default", 3).await.expect("ensure");
    let g = NodeGroups::observe(&s, &t).await.expect("observe");
    assert_eq!(g["default"].status, NodeGroupStatus::Creating);
    assert_eq!(g["default"].desired_size, 3);
    assert_eq!(g["default"].instance_type, "sim");
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    let g = NodeGroups::observe(&s, &t).await.expect("observe");
    assert_eq!(g["default"].status, NodeGroupStatus::Active);

    s.ensure(&t, "default", 5).await.expect("grow");
    let g = NodeGroups::observe(&s, &t).await.expect("observe");
    assert_eq!(g["default"].status, NodeGroupStatus::Updating);
    assert_eq!(g["default"].desired_size, 5);
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    let g = NodeGroups::observe(&s, &t).await.expect("observe");
    assert_eq!(g["default"].status, NodeGroupStatus::Active);

    s.delete(&t, "default").await.expect("delete");
    let g = NodeGroups::observe(&s, &t).await.expect("observe");
    assert_eq!(g["default"].status, NodeGroupStatus::Deleting);
    s.delete(&t, "default").await.expect("delete again");
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    assert!(
        NodeGroups::observe(&s, &t)
            .await
            .expect("observe")
            .is_empty()
    );

    // Created again by a later operation after it is gone.
    let later = Target {
        operation: Uuid::new_v4(),
        ..t.clone()
    };
    s.ensure(&later, "default", 3).await.expect("recreate");
    let g = NodeGroups::observe(&s, &t).await.expect("observe");
    assert_eq!(g["default"].status, NodeGroupStatus::Creating);
    assert_eq!(s.node_group_creations(t.uid).await, 2);

    let deletes: Vec<bool> = s
        .calls()
        .await
        .into_iter()
        .filter(|c| c.call == "nodegroup.delete")
        .map(|c| c.effective)
        .collect();
    assert_eq!(deletes, vec![true, false]);
}

#[tokio::test]
async fn a_repeated_ensure_is_not_effective() {
    let db = TestDb::new().await;
    let s = sim(&db, SimConfig::default()).await;
    let t = target(3);
    for _ in 0..3 {
        s.ensure(&t, "default", 3).await.expect("ensure");
    }
    assert_eq!(s.node_group_creations(t.uid).await, 1);
    let calls = s.calls().await;
    assert_eq!(calls.len(), 3);
    let key = t.idempotency_key("nodegroup-default");
    assert!(calls.iter().all(|c| c.key == key && c.action == "create"));
    assert_eq!(
        calls.iter().map(|c| c.effective).collect::<Vec<_>>(),
        vec![true, false, false]
    );

    // Two processes racing on the same step create one node group.
    let s2 = sim(&db, SimConfig::default()).await;
    let t2 = target(2);
    let (a, b) = tokio::join!(s.ensure(&t2, "default", 2), s2.ensure(&t2, "default", 2));
    a.expect("a");
    b.expect("b");
    assert_eq!(s.node_group_creations(t2.uid).await, 1);
}

#[tokio::test]
async fn faults_are_used_up_and_cleared() {
    let db = TestDb::new().await;
    let s = sim(&db, SimConfig::default()).await;
    let t = target(1);
    s.inject("workloads.apply_base", 2, true, "K8S_UNAVAILABLE", "503")
        .await;
    for _ in 0..2 {
        let e = s.apply_base(&t).await.expect_err("fault");
        assert_eq!(e, StepError::retryable("K8S_UNAVAILABLE", "503"));
    }
    s.apply_base(&t).await.expect("third call passes");
    assert!(s.world(t.uid).await.base_objects);
    let calls = s.calls().await;
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls.iter().map(|c| c.error.is_some()).collect::<Vec<_>>(),
        vec![true, true, false]
    );

    s.inject("es.health", -1, false, "ES_AUTH", "401").await;
    for _ in 0..5 {
        let e = s.health(&t).await.expect_err("forever");
        assert!(!e.retryable);
        assert_eq!(e.reason, "ES_AUTH");
    }
    s.clear_faults().await;
    assert!(s.health(&t).await.expect("health").is_some());
}

#[tokio::test]
async fn health_follows_pods_and_can_be_forced() {
    let db = TestDb::new().await;
    let ready = Duration::from_millis(200);
    let s = sim(
        &db,
        SimConfig {
            pods_ready_delay: ready,
            ..Default::default()
        },
    )
    .await;
    let t = target(3);
    assert_eq!(s.health(&t).await.expect("health"), None);
    s.apply_base(&t).await.expect("base");
    let w = Workloads::observe(&s, &t).await.expect("observe");
    assert_eq!(
        w.endpoint.as_deref(),
        Some("https://logs.acme.es.example:9200")
    );

    s.apply_node_set(&t, "default", 3).await.expect("apply");
    let w = Workloads::observe(&s, &t).await.expect("observe");
    let d = &w.workloads["default"];
    assert_eq!((d.replicas, d.ready_replicas), (3, 0));
    assert!(d.up_to_date);
    assert_eq!(d.version, "8.17.10");
    let h = s.health(&t).await.expect("health").expect("answers");
    assert_eq!(h.status, Health::Yellow);

    tokio::time::sleep(ready + Duration::from_millis(50)).await;
    let w = Workloads::observe(&s, &t).await.expect("observe");
    assert_eq!(w.workloads["default"].ready_replicas, 3);
    let h = s.health(&t).await.expect("health").expect("answers");
    assert_eq!(h.status, Health::Green);

    // An apply that changes nothing leaves the pods ready.
    s.apply_node_set(&t, "default", 3)
        .await
        .expect("apply again");
    let w = Workloads::observe(&s, &t).await.expect("observe");
    assert_eq!(w.workloads["default"].ready_replicas, 3);

    // A new version makes the StatefulSet out of date until applied.
    let mut upgrade = t.clone();
    upgrade.spec.version = "8.18.0".into();
    upgrade.generation = 2;
    let w = Workloads::observe(&s, &upgrade).await.expect("observe");
    assert!(!w.workloads["default"].up_to_date);

    s.force_health(
        t.uid,
        Some((Health::Yellow, "index logs-7 has 2 unassigned replicas")),
    )
    .await;
    let h = s.health(&t).await.expect("health").expect("answers");
    assert_eq!(h.status, Health::Yellow);
    assert_eq!(h.reason, "index logs-7 has 2 unassigned replicas");
    s.force_health(t.uid, None).await;
    let h = s.health(&t).await.expect("health").expect("answers");
    assert_eq!(h.status, Health::Green);
}

#[tokio::test]
async fn excluded_pods_drain_over_time() {
    let db = TestDb::new().await;
    let drain = Duration::from_millis(400);
    let s = sim(
        &db,
        SimConfig {
            drain_delay: drain,
            ..Default::default()
        },
    )
    .await;
    let t = target(3);
    s.apply_base(&t).await.expect("base");
    s.apply_node_set(&t, "default", 3).await.expect("apply");
    s.exclude(&t, "default", 2).await.expect("exclude");
    s.exclude(&t, "default", 2).await.expect("exclude again");
    let key = node_key("default", 2);
    let h = s.health(&t).await.expect("health").expect("answers");
    let first = h.shards_on_excluded[&key];
    assert!(first > 0 && first <= SHARDS_PER_POD, "{first}");
    assert_eq!(h.status, Health::Yellow);

    tokio::time::sleep(drain / 2).await;
    let mid = s.health(&t).await.expect("health").expect("answers");
    assert!(mid.shards_on_excluded[&key] < first, "{mid:?}");

    tokio::time::sleep(drain / 2 + Duration::from_millis(50)).await;
    let h = s.health(&t).await.expect("health").expect("answers");
    assert_eq!(h.shards_on_excluded[&key], 0);
    assert_eq!(h.status, Health::Green);

    // The pod leaves; it is no longer reported, and its volume goes with it
    // (the StatefulSet's `whenScaled: Delete`).
    s.apply_node_set(&t, "default", 2).await.expect("shrink");
    let h = s.health(&t).await.expect("health").expect("answers");
    assert!(h.shards_on_excluded.is_empty());
    assert_eq!(s.world(t.uid).await.volumes, 2);

    let excludes: Vec<bool> = s
        .calls()
        .await
        .into_iter()
        .filter(|c| c.call == "es.exclude")
        .map(|c| c.effective)
        .collect();
    assert_eq!(excludes, vec![true, false]);

    // Deleting with Delete retention removes everything of the cluster.
    s.delete_node_set(&t, "default").await.expect("delete set");
    s.delete_base(&t, VolumeRetention::Delete)
        .await
        .expect("delete base");
    let w = s.world(t.uid).await;
    assert_eq!(w, SimWorld::default());
}

#[tokio::test]
async fn a_zero_drain_delay_drains_at_once() {
    let db = TestDb::new().await;
    let s = sim(&db, SimConfig::default()).await;
    let t = target(2);
    s.apply_base(&t).await.expect("base");
    s.apply_node_set(&t, "default", 2).await.expect("apply");
    s.exclude(&t, "default", 1).await.expect("exclude");
    let h = s.health(&t).await.expect("health").expect("answers");
    assert_eq!(h.shards_on_excluded[&node_key("default", 1)], 0);
    assert_eq!(h.status, Health::Green);
}

/// Polls until `done` holds for the StatefulSet of `default` (panics after 30 s).
async fn wait_workload(s: &Sim, t: &Target, done: impl Fn(&WorkloadObs) -> bool) -> WorkloadObs {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let w = Workloads::observe(s, t).await.expect("observe");
        let d = w.workloads["default"].clone();
        if done(&d) {
            return d;
        }
        assert!(tokio::time::Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn upgraded(t: &Target) -> Target {
    let mut upgrade = t.clone();
    upgrade.spec.version = "8.19.3".into();
    upgrade.generation = 2;
    upgrade.operation = Uuid::new_v4();
    upgrade
}

#[tokio::test]
async fn a_new_template_is_held_until_rolled_then_pods_move_one_at_a_time() {
    let db = TestDb::new().await;
    // Long enough that a restarting pod is seen restarting on a busy machine.
    let ready = Duration::from_secs(2);
    let s = sim(
        &db,
        SimConfig {
            pods_ready_delay: ready,
            ..Default::default()
        },
    )
    .await;
    let t = target(3);
    s.apply_base(&t).await.expect("base");
    // A new StatefulSet is not held.
    s.apply_node_set(&t, "default", 3).await.expect("apply");
    let d = wait_workload(&s, &t, |d| d.ready_replicas == 3).await;
    assert_eq!((d.partition, d.updated_replicas), (0, 3));

    // A new template on running pods is held: no pod moves.
    let up = upgraded(&t);
    s.apply_node_set(&up, "default", 3).await.expect("upgrade");
    s.apply_node_set(&up, "default", 3)
        .await
        .expect("upgrade again");
    let applies: Vec<(String, bool)> = s
        .calls()
        .await
        .into_iter()
        .filter(|c| c.call == "workloads.apply_node_set")
        .map(|c| (c.action, c.effective))
        .collect();
    assert_eq!(
        applies,
        vec![
            (String::new(), true),
            (HELD.to_string(), true),
            (String::new(), false)
        ]
    );
    let d = &Workloads::observe(&s, &up)
        .await
        .expect("observe")
        .workloads["default"];
    assert!(d.up_to_date);
    assert_eq!(d.version, "8.19.3");
    assert_eq!(
        (d.partition, d.updated_replicas, d.ready_replicas),
        (3, 0, 3)
    );
    let world = s.world(t.uid).await;
    assert!(
        world.workloads["default"]
            .pods
            .values()
            .all(|p| p.version == "8.17.10" && !p.updated),
        "{world:?}"
    );
    assert_eq!(
        s.health(&up)
            .await
            .expect("health")
            .expect("answers")
            .status,
        Health::Green
    );

    // One step: the highest pod restarts on the new template, the others wait.
    s.roll(&up, "default", 2).await.expect("roll to 2");
    let d = &Workloads::observe(&s, &up)
        .await
        .expect("observe")
        .workloads["default"];
    assert_eq!(
        (d.partition, d.updated_replicas, d.ready_replicas),
        (2, 1, 2),
        "pod 2 restarting"
    );
    let h = s.health(&up).await.expect("health").expect("answers");
    assert_eq!(h.status, Health::Yellow, "{h:?}");
    let pods = s.world(t.uid).await.workloads["default"].pods.clone();
    assert_eq!(
        pods.values()
            .map(|p| p.version.as_str())
            .collect::<Vec<_>>(),
        vec!["8.17.10", "8.17.10", "8.19.3"]
    );
    assert_eq!(pods[&2].ready_at, pods[&2].started_at + ready);
    s.roll(&up, "default", 2).await.expect("roll to 2 again");
    let e = s.roll(&up, "default", -1).await.expect_err("negative");
    assert_eq!((e.retryable, e.reason.as_str()), (false, "KUBE_INVALID"));
    wait_workload(&s, &up, |d| d.ready_replicas == 3).await;
    assert_eq!(
        s.health(&up)
            .await
            .expect("health")
            .expect("answers")
            .status,
        Health::Green
    );

    // Lowered to 0 at once: pod 1 moves, then pod 0 once pod 1 is ready.
    s.roll(&up, "default", 0).await.expect("roll to 0");
    let d = &Workloads::observe(&s, &up)
        .await
        .expect("observe")
        .workloads["default"];
    assert_eq!(d.partition, 0);
    assert!(d.ready_replicas < 3, "{d:?}");
    let d = wait_workload(&s, &up, |d| d.ready_replicas == 3).await;
    assert_eq!(d.updated_replicas, 3);
    let pods = s.world(t.uid).await.workloads["default"].pods.clone();
    assert!(pods.values().all(|p| p.version == "8.19.3" && p.updated));
    assert_eq!(pods[&0].started_at, pods[&1].ready_at, "one at a time");
    assert!(pods[&1].started_at >= pods[&2].ready_at);

    let rolls: Vec<(String, bool, bool)> = s
        .calls()
        .await
        .into_iter()
        .filter(|c| c.call == "workloads.roll")
        .map(|c| (c.argument().to_string(), c.effective, c.error.is_some()))
        .collect();
    let expected = [
        ("2", true, false),
        ("2", false, false),
        ("-1", false, true),
        ("0", true, false),
    ]
    .map(|(p, e, f)| (p.to_string(), e, f));
    assert_eq!(rolls, expected);
}

#[tokio::test]
async fn new_pods_of_a_held_stateful_set_start_on_its_template_and_a_missing_one_is_not_rolled() {
    let db = TestDb::new().await;
    let s = sim(&db, SimConfig::default()).await;
    let t = target(3);
    let e = s.roll(&t, "default", 0).await.expect_err("no StatefulSet");
    assert_eq!((e.retryable, e.reason.as_str()), (true, "KUBE_NOT_FOUND"));

    s.apply_base(&t).await.expect("base");
    s.apply_node_set(&t, "default", 3).await.expect("apply");
    // Upgrade and scale out in one apply: the new pods are above the partition.
    let mut up = upgraded(&t);
    up.spec.node_sets[0].count = 5;
    s.apply_node_set(&up, "default", 5).await.expect("grow");
    let w = s.world(t.uid).await.workloads["default"].clone();
    assert_eq!((w.replicas, w.partition, w.updated_replicas), (5, 3, 2));
    assert_eq!(
        w.pods
            .values()
            .map(|p| p.version.as_str())
            .collect::<Vec<_>>(),
        vec!["8.17.10", "8.17.10", "8.17.10", "8.19.3", "8.19.3"]
    );
    // Shrinking below the partition lowers it: it never exceeds the replicas.
    s.apply_node_set(&up, "default", 2).await.expect("shrink");
    let w = s.world(t.uid).await.workloads["default"].clone();
    assert_eq!((w.replicas, w.partition, w.updated_replicas), (2, 2, 0));
}
