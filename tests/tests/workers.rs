//! The worker pool end to end: real control plane, real worker code over
//! the real protocol, simulated backends recording every side effect.

use std::collections::HashMap;
use std::time::Duration;

use esaas_core::cluster::Health;
use esaas_proto::v1 as pb;
use esaas_tests::sim::{HELD, Sim, SimCall, SimConfig};
use esaas_tests::*;
use tokio_stream::StreamExt;

const LONG: Duration = Duration::from_secs(30);

fn resize(name: &str, nodes: i32) -> pb::UpdateClusterRequest {
    pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.into(),
            spec: Some(spec(nodes)),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.node_sets".into()],
        }),
        ..Default::default()
    }
}

fn uid(c: &pb::Cluster) -> uuid::Uuid {
    uuid::Uuid::parse_str(&c.uid).expect("uid")
}

/// A version upgrade of the catalog's upgrade path from `spec`'s 8.17.10.
const NEW_VERSION: &str = "8.19.3";

fn upgrade(name: &str) -> pb::UpdateClusterRequest {
    pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.into(),
            spec: Some(pb::ClusterSpec {
                version: NEW_VERSION.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.version".into()],
        }),
        ..Default::default()
    }
}

fn operation_uid(op: &pb::Operation) -> uuid::Uuid {
    uuid::Uuid::parse_str(op.name.trim_start_matches("operations/")).expect("operation id")
}

/// The Kubernetes calls of operation `op` that changed something, in order.
async fn workload_changes(sim: &Sim, op: uuid::Uuid) -> Vec<SimCall> {
    sim.calls()
        .await
        .into_iter()
        .filter(|c| c.operation == op && c.effective && c.call.starts_with("workloads."))
        .collect()
}

/// Polls the simulated world until `done` holds for the StatefulSet of
/// `default` (panics after `within`).
async fn wait_workload(
    sim: &Sim,
    cluster: uuid::Uuid,
    within: Duration,
    done: impl Fn(&esaas_tests::sim::SimWorkload) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let world = sim.world(cluster).await;
        if world.workloads.get("default").is_some_and(&done) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the StatefulSet did not get there in {within:?}: {world:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// No side effect happened twice for one idempotency key.
async fn assert_effects_once(sim: &Sim) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for call in sim.calls().await.into_iter().filter(|c| c.effective) {
        *seen.entry(call.key.clone()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "side effects repeated: {twice:?}");
}

#[tokio::test]
async fn create_update_delete_run_end_to_end_and_a_watcher_sees_every_stage() {
    // Gates that take a moment, as they do for real.
    let sim_config = SimConfig {
        node_group_delay: Duration::from_millis(150),
        pods_ready_delay: Duration::from_millis(150),
        drain_delay: Duration::from_millis(150),
        ..SimConfig::default()
    };
    let (app, sim) = spawn_app_with_workers(2, sim_config, |_| {}).await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("cluster");
    let name = cluster.name.clone();
    let mut watch = app
        .clusters()
        .watch_cluster(authed(
            &t.viewer,
            pb::WatchClusterRequest {
                name: name.clone(),
                since_revision: 1,
            },
        ))
        .await
        .expect("watch")
        .into_inner();

    let ready = app
        .wait_cluster(&name, LONG, |c| state(c) == pb::ClusterState::Ready as i32)
        .await;
    let status = ready.status.clone().expect("status");
    assert_eq!(status.observed_generation, 1);
    assert_eq!(status.health, pb::ClusterHealth::Green as i32);
    assert_eq!(status.endpoint, "https://logs.search.es.example:9200");
    assert_eq!(status.current_operation, "");

    // The watcher saw every stage, in order, with contiguous revisions.
    let mut messages = Vec::new();
    let mut last = 1;
    let _first = watch.next().await;
    loop {
        let msg = tokio::time::timeout(LONG, watch.next())
            .await
            .expect("event")
            .expect("open")
            .expect("ok");
        let Some(pb::watch_cluster_response::Payload::Event(e)) = msg.payload else {
            panic!("not an event")
        };
        assert_eq!(e.revision, last + 1, "contiguous revisions");
        last = e.revision;
        messages.push(e.message.clone());
        if e.cluster_snapshot.as_ref().map(state) == Some(pb::ClusterState::Ready as i32) {
            break;
        }
    }
    let started: Vec<&str> = messages
        .iter()
        .filter_map(|m| {
            m.split("stage ")
                .nth(1)
                .and_then(|s| s.strip_suffix(" started"))
        })
        .collect();
    assert_eq!(
        started,
        vec![
            "namespace",
            "node_groups",
            "node_groups_active",
            "elasticsearch_objects",
            "pods_ready",
            "health_gate"
        ],
        "{messages:#?}"
    );
    assert!(
        messages[0].contains("attempt 1 started by worker"),
        "{}",
        messages[0]
    );
    assert!(messages.last().is_some_and(|m| m.ends_with("succeeded")));

    let op = app
        .wait_operation(&created.operation.expect("op").name, LONG, |o| o.done)
        .await;
    assert_eq!(op.state, pb::OperationState::Succeeded as i32);
    assert_eq!(op.attempts.len(), 1);
    assert_eq!(op.attempts[0].outcome, "succeeded");
    // Every stage succeeded, but the snapshot repository's (this platform has
    // no snapshot bucket, so there is none to register) and the restore's (the
    // create names no snapshot to restore).
    assert!(
        op.stages.iter().all(|s| {
            let want = if s.name == "snapshot_repository" || s.name == "restore" {
                pb::StageState::Skipped
            } else {
                pb::StageState::Succeeded
            };
            s.state == want as i32
        }),
        "{:?}",
        op.stages
    );

    // Scale out: node group first, then pods.
    app.clusters()
        .update_cluster(authed(&t.admin, resize(&name, 5)))
        .await
        .expect("grow");
    let grown = app
        .wait_cluster(&name, LONG, |c| {
            state(c) == pb::ClusterState::Ready as i32
                && c.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == 2)
        })
        .await;
    let world = sim.world(uid(&grown)).await;
    assert_eq!(world.node_groups["default"].desired_size, 5);
    assert_eq!(world.workloads["default"].replicas, 5);

    // Scale in: the pod is drained before it is removed, then the node group shrinks.
    app.clusters()
        .update_cluster(authed(&t.admin, resize(&name, 4)))
        .await
        .expect("shrink");
    app.wait_cluster(&name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
            && c.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == 3)
    })
    .await;
    let calls = sim.calls().await;
    let pos = |pred: &dyn Fn(&esaas_tests::sim::SimCall) -> bool| {
        calls.iter().position(|c| c.effective && pred(c))
    };
    let exclude = pos(&|c| c.call == "es.exclude").expect("a drain");
    let shrink = pos(&|c| c.call == "workloads.apply_node_set" && c.key.contains(":4@"))
        .expect("apply 4 replicas");
    let ng_down = pos(&|c| c.call == "nodegroup.ensure" && c.key.contains(":default:4:"))
        .expect("node group to 4");
    assert!(
        exclude < shrink && shrink < ng_down,
        "drain, then pods, then nodes"
    );

    // Delete: everything goes, the cluster stays as a tombstone.
    app.clusters()
        .delete_cluster(authed(
            &t.admin,
            pb::DeleteClusterRequest {
                name: name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    let gone = app
        .wait_cluster(&name, LONG, |c| {
            state(c) == pb::ClusterState::Deleted as i32
        })
        .await;
    let world = sim.world(uid(&gone)).await;
    assert!(
        !world.base_objects && world.node_groups.is_empty() && world.workloads.is_empty(),
        "{world:?}"
    );
    assert_eq!(world.volumes, 0, "volumes deleted (retention DELETE)");
    assert_eq!(sim.node_group_creations(uid(&gone)).await, 1);
    assert_effects_once(&sim).await;
    app.stop().await;
}

#[tokio::test]
async fn retries_are_bounded_then_failed_and_retry_operation_recovers() {
    let (app, sim) = spawn_app_with_workers(1, SimConfig::default(), |c| c.max_attempts = 2).await;
    let t = app.tenant("search").await;
    sim.inject(
        "nodegroup.ensure",
        -1,
        true,
        "EKS_THROTTLED",
        "Rate exceeded",
    )
    .await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let name = created.cluster.expect("c").name;
    let op_name = created.operation.expect("op").name;
    let failed = app.wait_operation(&op_name, LONG, |o| o.done).await;
    assert_eq!(failed.state, pb::OperationState::Failed as i32);
    assert_eq!(failed.attempts.len(), 2, "bounded by max_attempts");
    assert!(
        failed
            .attempts
            .iter()
            .all(|a| a.outcome.starts_with("failed: EKS_THROTTLED"))
    );
    let error = failed.error.expect("error");
    assert!(error.message.contains("Rate exceeded"), "{}", error.message);
    let cluster = app
        .wait_cluster(&name, LONG, |c| state(c) == pb::ClusterState::Failed as i32)
        .await;
    assert!(
        cluster
            .status
            .expect("status")
            .message
            .contains("Rate exceeded")
    );
    // each attempt retried the call inside the step before giving up
    let tries = sim
        .calls()
        .await
        .iter()
        .filter(|c| c.call == "nodegroup.ensure")
        .count();
    assert_eq!(tries, 10, "5 tries in each of 2 attempts");

    sim.clear_faults().await;
    let retried = app
        .admin()
        .retry_operation(authed(
            &t.admin,
            pb::RetryOperationRequest {
                name: op_name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("retry")
        .into_inner()
        .operation
        .expect("op");
    assert_eq!(retried.state, pb::OperationState::Queued as i32);
    app.wait_cluster(&name, LONG, |c| state(c) == pb::ClusterState::Ready as i32)
        .await;
    let done = app.wait_operation(&op_name, LONG, |o| o.done).await;
    assert_eq!(done.state, pb::OperationState::Succeeded as i32);
    assert_eq!(done.attempts.len(), 3);
    assert_effects_once(&sim).await;
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_error_fails_at_once_with_its_reason() {
    let (app, sim) = spawn_app_with_workers(1, SimConfig::default(), |_| {}).await;
    let t = app.tenant("search").await;
    sim.inject(
        "nodegroup.ensure",
        1,
        false,
        "EKS_INVALID_PARAMETER",
        "InvalidParameterException: subnet not found",
    )
    .await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let op = app
        .wait_operation(&created.operation.expect("op").name, LONG, |o| o.done)
        .await;
    assert_eq!(op.state, pb::OperationState::Failed as i32);
    assert_eq!(op.attempts.len(), 1);
    let error = op.error.expect("error");
    assert_eq!(error.code, tonic::Code::FailedPrecondition as i32);
    assert!(error.message.contains("subnet not found"));
    app.stop().await;
}

#[tokio::test]
async fn a_health_gate_stuck_on_yellow_stalls_naming_the_index() {
    let sim_config = SimConfig {
        node_group_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    let (app, sim) =
        spawn_app_with_workers(1, sim_config, |c| c.worker.gate_timeout_seconds = 1).await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("c");
    let reason = "index logs-7 has 2 unassigned replicas";
    sim.force_health(uid(&cluster), Some((Health::Yellow, reason)))
        .await;
    let op_name = created.operation.expect("op").name;
    let stalled = app
        .wait_operation(&op_name, LONG, |o| {
            o.state == pb::OperationState::Stalled as i32
        })
        .await;
    assert!(
        stalled.blocking_check.contains("logs-7"),
        "{}",
        stalled.blocking_check
    );
    assert!(
        stalled.blocking_check.contains("YELLOW"),
        "{}",
        stalled.blocking_check
    );
    let c = app
        .wait_cluster(&cluster.name, LONG, |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|k| k.r#type == "Stalled"))
        })
        .await;
    assert!(c.status.expect("status").message.contains("logs-7"));

    // The index recovers; the owner retries; the cluster becomes READY.
    sim.force_health(uid(&cluster), None).await;
    app.admin()
        .retry_operation(authed(
            &t.admin,
            pb::RetryOperationRequest {
                name: op_name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("retry");
    app.wait_cluster(&cluster.name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn kill_9_of_a_worker_mid_step_costs_one_repeat_and_no_duplicate() {
    let app = spawn_app_with(fast).await;
    let key = app.worker_key().await;
    let sim_config = SimConfig {
        step_delay: Duration::from_millis(1500),
        ..SimConfig::default()
    };
    let sim = Sim::connect(&app.db.url, sim_config).await.expect("sim");
    let cp = format!("http://{}", app.addr);
    let poll = Duration::from_millis(20);
    let w1 = WorkerProcess::spawn(&cp, &key, "w1", &app.db.url, sim_config, poll, LONG);
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("c");
    let op_name = created.operation.expect("op").name;
    // In the middle of the node group step (each step takes 1.5 s).
    app.wait_operation(&op_name, LONG, |o| {
        o.stages
            .iter()
            .any(|s| s.name == "node_groups" && s.state == pb::StageState::Running as i32)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w1.kill().await;

    let w2 = WorkerProcess::spawn(&cp, &key, "w2", &app.db.url, sim_config, poll, LONG);
    app.wait_cluster(&cluster.name, Duration::from_secs(60), |c| {
        state(c) == pb::ClusterState::Ready as i32
    })
    .await;
    let op = app.wait_operation(&op_name, LONG, |o| o.done).await;
    assert_eq!(op.attempts.len(), 2, "{:?}", op.attempts);
    assert_eq!(op.attempts[0].worker, "w1");
    assert_eq!(op.attempts[0].outcome, "worker disconnected");
    assert_eq!(
        (
            op.attempts[1].worker.as_str(),
            op.attempts[1].outcome.as_str()
        ),
        ("w2", "succeeded")
    );
    assert_eq!(
        sim.node_group_creations(uid(&cluster)).await,
        1,
        "never a second node group"
    );
    assert_effects_once(&sim).await;
    w2.kill().await;
    app.stop().await;
}

#[tokio::test]
async fn sigterm_hands_the_lease_back_and_another_worker_finishes() {
    let app = spawn_app_with(fast).await;
    let key = app.worker_key().await;
    let sim_config = SimConfig {
        step_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    let sim = Sim::connect(&app.db.url, sim_config).await.expect("sim");
    let cp = format!("http://{}", app.addr);
    let poll = Duration::from_millis(20);
    let w1 = WorkerProcess::spawn(&cp, &key, "w1", &app.db.url, sim_config, poll, LONG);
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("c");
    let op_name = created.operation.expect("op").name;
    app.wait_operation(&op_name, LONG, |o| {
        o.state == pb::OperationState::Running as i32
    })
    .await;
    let status = w1
        .terminate(Duration::from_secs(10))
        .await
        .expect("exited within the grace period");
    assert!(status.success(), "{status:?}");
    let op = app
        .wait_operation(&op_name, LONG, |o| {
            o.state == pb::OperationState::Queued as i32
        })
        .await;
    assert_eq!(op.attempts[0].outcome, "handed back");

    let w2 = WorkerProcess::spawn(&cp, &key, "w2", &app.db.url, sim_config, poll, LONG);
    app.wait_cluster(&cluster.name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
    })
    .await;
    assert_eq!(sim.node_group_creations(uid(&cluster)).await, 1);
    assert_effects_once(&sim).await;
    w2.kill().await;
    app.stop().await;
}

/// A control plane process configured with `toml` on a fresh database,
/// one external worker on the simulated world (400 ms a step), and a
/// CreateCluster whose operation is running.
struct MidOperation {
    db: TestDb,
    port: u16,
    cp_process: ServerProcess,
    sim: Sim,
    worker: WorkerProcess,
    cluster: pb::Cluster,
    operation: String,
}

async fn mid_operation(toml: &str) -> MidOperation {
    let db = TestDb::new().await;
    let port = free_port();
    let cp_process = ServerProcess::start_with(&db, port, toml).await;
    let ch = channel(cp_process.addr).await;
    create_tenant_on(ch.clone(), "search").await;
    let key = worker_key_on(ch.clone()).await;
    let sim_config = SimConfig {
        step_delay: Duration::from_millis(400),
        ..SimConfig::default()
    };
    let sim = Sim::connect(&db.url, sim_config).await.expect("sim");
    let cp = format!("http://{}", cp_process.addr);
    let worker = WorkerProcess::spawn(
        &cp,
        &key,
        "w1",
        &db.url,
        sim_config,
        Duration::from_millis(20),
        LONG,
    );
    let created = esaas_proto::v1::cluster_service_client::ClusterServiceClient::new(ch)
        .create_cluster(authed(ADMIN_KEY, create_request("search", "logs", 3)))
        .await
        .expect("create")
        .into_inner();
    let cluster = created.cluster.expect("c");
    let operation = created.operation.expect("op").name;
    wait_cluster_at(channel(cp_process.addr).await, &cluster.name, LONG, |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.message.contains("running"))
    })
    .await;
    MidOperation {
        db,
        port,
        cp_process,
        sim,
        worker,
        cluster,
        operation,
    }
}

#[tokio::test]
async fn kill_9_of_the_control_plane_mid_operation_loses_nothing() {
    let fast_toml = "lease_ttl_seconds = 2\nreap_interval_ms = 100\nclaim_interval_ms = 100\n\
                     retry_backoff_base_seconds = 0\nretry_backoff_max_seconds = 0\nmigrate_on_start = false\n";
    let MidOperation {
        db,
        port,
        cp_process,
        sim,
        worker,
        cluster,
        ..
    } = mid_operation(fast_toml).await;
    cp_process.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = ServerProcess::start_with(&db, port, fast_toml).await;
    let ready = wait_cluster_at(
        channel(restarted.addr).await,
        &cluster.name,
        Duration::from_secs(60),
        |c| state(c) == pb::ClusterState::Ready as i32,
    )
    .await;
    assert_eq!(ready.status.map(|s| s.observed_generation), Some(1));

    // The event log has every revision once, with no gap.
    let pool = db.pool().await;
    let revs: Vec<i64> = sqlx::query_scalar(
        "SELECT revision FROM cluster_events WHERE cluster_uid = $1 ORDER BY revision",
    )
    .bind(uid(&cluster))
    .fetch_all(&pool)
    .await
    .expect("revisions");
    assert_eq!(revs, (1..=revs.len() as i64).collect::<Vec<_>>());
    assert_eq!(sim.node_group_creations(uid(&cluster)).await, 1);
    assert_effects_once(&sim).await;
    worker.kill().await;
    restarted.kill().await;
}

#[tokio::test]
async fn sigterm_of_the_control_plane_mid_operation_exits_within_its_grace_and_the_work_completes()
{
    let toml = "lease_ttl_seconds = 30\nreap_interval_ms = 100\nclaim_interval_ms = 100\n\
                retry_backoff_base_seconds = 0\nretry_backoff_max_seconds = 0\nshutdown_grace_seconds = 5\n";
    let MidOperation {
        db,
        port,
        cp_process,
        sim,
        worker,
        cluster,
        operation: op_name,
    } = mid_operation(toml).await;
    // A watcher of that cluster, open when the server stops.
    let mut watch = esaas_proto::v1::cluster_service_client::ClusterServiceClient::new(
        channel(cp_process.addr).await,
    )
    .watch_cluster(authed(
        ADMIN_KEY,
        pb::WatchClusterRequest {
            name: cluster.name.clone(),
            since_revision: 0,
        },
    ))
    .await
    .expect("watch")
    .into_inner();

    let (status, took) = cp_process
        .terminate(Duration::from_secs(15))
        .await
        .expect("the control plane exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(5) + Duration::from_millis(1500),
        "took {took:?}, past its 5 s grace"
    );
    // The watch ended with a status, not a hang; the client resumes elsewhere.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends when the server stops");
    assert!(
        ended
            .as_ref()
            .is_err_and(|s| s.code() == tonic::Code::Unavailable)
            || matches!(ended, Ok(None)),
        "{ended:?}"
    );
    // The lease did not wait 30 s to lapse: it is back in the queue now.
    let pool = db.pool().await;
    let op_id = op_name.trim_start_matches("operations/");
    let (op_state, owner): (String, Option<String>) =
        sqlx::query_as("SELECT state, lease_owner FROM operations WHERE id = $1::uuid")
            .bind(op_id)
            .fetch_one(&pool)
            .await
            .expect("operation");
    assert_eq!((op_state.as_str(), owner), ("QUEUED", None));
    // The control plane closed the stream: the attempt is not the
    // operation's failure, and the next one may start at once.
    let (outcome, due): (Option<String>, bool) = sqlx::query_as(
        "SELECT attempt_log->0->'outcome'->>'kind', next_attempt_time <= now() FROM operations WHERE id = $1::uuid",
    )
    .bind(op_id)
    .fetch_one(&pool)
    .await
    .expect("attempts");
    assert_eq!((outcome.as_deref(), due), (Some("STREAM_CLOSED"), true));

    // A control plane on the same database; the worker reconnects to it
    // and completes the operation.
    let restarted = ServerProcess::start_with(&db, port, toml).await;
    let ready = wait_cluster_at(
        channel(restarted.addr).await,
        &cluster.name,
        Duration::from_secs(60),
        |c| state(c) == pb::ClusterState::Ready as i32,
    )
    .await;
    assert_eq!(ready.status.map(|s| s.observed_generation), Some(1));
    assert_eq!(sim.node_group_creations(uid(&cluster)).await, 1);
    assert_effects_once(&sim).await;
    worker.kill().await;
    restarted.kill().await;
}

#[tokio::test]
async fn a_failed_node_group_fails_the_operation_with_its_health_issues() {
    let sim_config = SimConfig {
        node_group_delay: Duration::from_millis(500),
        ..SimConfig::default()
    };
    let (app, sim) = spawn_app_with_workers(1, sim_config, |_| {}).await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("c");
    let op_name = created.operation.expect("op").name;
    app.wait_operation(&op_name, LONG, |o| {
        o.stages
            .iter()
            .any(|s| s.name == "node_groups_active" && s.state == pb::StageState::Running as i32)
    })
    .await;
    sim.fail_node_group(
        uid(&cluster),
        "default",
        "Ec2SubnetInvalidConfiguration: subnet has no free addresses",
    )
    .await;
    let op = app.wait_operation(&op_name, LONG, |o| o.done).await;
    assert_eq!(op.state, pb::OperationState::Failed as i32);
    let error = op.error.expect("error");
    assert!(
        error.message.contains("Ec2SubnetInvalidConfiguration"),
        "{}",
        error.message
    );
    app.wait_cluster(&cluster.name, LONG, |c| {
        state(c) == pb::ClusterState::Failed as i32
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_upgrade_is_applied_held_then_rolls_one_pod_at_a_time_each_after_the_last_is_ready() {
    let ready_delay = Duration::from_millis(500);
    let sim_config = SimConfig {
        pods_ready_delay: ready_delay,
        ..SimConfig::default()
    };
    let (app, sim) = spawn_app_with_workers(1, sim_config, |_| {}).await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("cluster");
    app.wait_cluster(&cluster.name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
    })
    .await;

    let op = app
        .clusters()
        .update_cluster(authed(&t.admin, upgrade(&cluster.name)))
        .await
        .expect("upgrade")
        .into_inner()
        .operation
        .expect("operation");
    let op = app
        .wait_operation(&op.name, Duration::from_secs(60), |o| o.done)
        .await;
    assert_eq!(op.state, pb::OperationState::Succeeded as i32, "{op:#?}");
    let rolling = op
        .stages
        .iter()
        .find(|s| s.name == "rolling_restart")
        .expect("a rolling_restart stage");
    assert_eq!(rolling.state, pb::StageState::Succeeded as i32, "{op:#?}");
    let done = app
        .wait_cluster(&cluster.name, LONG, |c| {
            state(c) == pb::ClusterState::Ready as i32
                && c.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == 2)
        })
        .await;
    assert_eq!(
        done.spec.as_ref().map(|s| s.version.as_str()),
        Some(NEW_VERSION)
    );
    assert_eq!(
        done.status.as_ref().map(|s| s.health),
        Some(pb::ClusterHealth::Green as i32)
    );

    // The apply came first and held the rollout; then one roll per pod,
    // highest ordinal first.
    let changes = workload_changes(&sim, operation_uid(&op)).await;
    let summary: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|c| (c.call.as_str(), c.action.as_str(), c.argument()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("workloads.apply_node_set", HELD, "3@2"),
            ("workloads.roll", "", "2"),
            ("workloads.roll", "", "1"),
            ("workloads.roll", "", "0"),
        ]
    );
    let all_rolls = sim
        .calls()
        .await
        .into_iter()
        .filter(|c| c.call == "workloads.roll")
        .count();
    assert_eq!(all_rolls, 3, "no roll repeated or refused");

    // Each pod moved at its own roll and not before; each roll came only
    // once every pod that moved before it was ready again (the planner's gate).
    let world = sim.world(uid(&cluster)).await;
    let w = &world.workloads["default"];
    assert_eq!(
        (
            w.replicas,
            w.partition,
            w.updated_replicas,
            w.ready_replicas
        ),
        (3, 0, 3, 3),
        "{w:#?}"
    );
    assert_eq!(w.version, NEW_VERSION);
    for (i, roll) in changes[1..].iter().enumerate() {
        let ordinal: i32 = roll.argument().parse().expect("partition");
        let pod = &w.pods[&ordinal];
        assert_eq!(pod.version, NEW_VERSION);
        assert!(pod.updated);
        let before = &changes[i];
        assert!(
            before.at < pod.started_at && pod.started_at <= roll.at,
            "pod {ordinal} restarted at {}, not by its roll ({} .. {})",
            pod.started_at,
            before.at,
            roll.at
        );
        assert_eq!(pod.ready_at, pod.started_at + ready_delay);
        for moved in ordinal + 1..3 {
            assert!(
                w.pods[&moved].ready_at <= roll.at,
                "roll to {ordinal} at {} while pod {moved} was not ready (ready at {})",
                roll.at,
                w.pods[&moved].ready_at
            );
        }
    }
    assert_effects_once(&sim).await;
    app.stop().await;
}

#[tokio::test]
async fn a_rollout_held_at_a_partition_resumes_after_its_worker_is_killed_and_rolls_no_pod_twice() {
    let app = spawn_app_with(fast).await;
    let key = app.worker_key().await;
    // Each pod takes 2 s to be ready again: the worker is killed while it
    // waits for the second one.
    let sim_config = SimConfig {
        pods_ready_delay: Duration::from_secs(2),
        ..SimConfig::default()
    };
    let sim = Sim::connect(&app.db.url, sim_config).await.expect("sim");
    let cp = format!("http://{}", app.addr);
    let poll = Duration::from_millis(20);
    let w1 = WorkerProcess::spawn(&cp, &key, "w1", &app.db.url, sim_config, poll, LONG);
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("c");
    app.wait_cluster(&cluster.name, Duration::from_secs(60), |c| {
        state(c) == pb::ClusterState::Ready as i32
    })
    .await;
    let op = app
        .clusters()
        .update_cluster(authed(&t.admin, upgrade(&cluster.name)))
        .await
        .expect("upgrade")
        .into_inner()
        .operation
        .expect("operation");

    // Held at partition 1: pod 2 has moved, pod 1 is restarting.
    wait_workload(&sim, uid(&cluster), Duration::from_secs(60), |w| {
        w.partition == 1
    })
    .await;
    w1.kill().await;
    let killed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(sim.pool())
        .await
        .expect("database clock");
    let world = sim.world(uid(&cluster)).await;
    let w = &world.workloads["default"];
    assert_eq!(
        w.pods
            .values()
            .map(|p| (p.version.as_str(), p.updated))
            .collect::<Vec<_>>(),
        vec![("8.17.10", false), (NEW_VERSION, true), (NEW_VERSION, true)],
        "{w:#?}"
    );

    let w2 = WorkerProcess::spawn(&cp, &key, "w2", &app.db.url, sim_config, poll, LONG);
    let op = app
        .wait_operation(&op.name, Duration::from_secs(60), |o| o.done)
        .await;
    assert_eq!(op.state, pb::OperationState::Succeeded as i32, "{op:#?}");
    let attempts: Vec<(&str, &str)> = op
        .attempts
        .iter()
        .map(|a| (a.worker.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        attempts,
        vec![("w1", "worker disconnected"), ("w2", "succeeded")]
    );

    // Every partition was rolled once: the first worker's two, then the
    // second worker's last; none again.
    let rolls: Vec<(String, bool, bool)> = sim
        .calls()
        .await
        .into_iter()
        .filter(|c| c.call == "workloads.roll")
        .map(|c| (c.argument().to_string(), c.effective, c.at > killed_at))
        .collect();
    let expected = [("2", true, false), ("1", true, false), ("0", true, true)]
        .map(|(p, effective, after_kill)| (p.to_string(), effective, after_kill));
    assert_eq!(rolls, expected);

    let done = app
        .wait_cluster(&cluster.name, LONG, |c| {
            state(c) == pb::ClusterState::Ready as i32
                && c.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == 2)
        })
        .await;
    assert_eq!(
        done.spec.as_ref().map(|s| s.version.as_str()),
        Some(NEW_VERSION)
    );
    let world = sim.world(uid(&cluster)).await;
    let w = &world.workloads["default"];
    assert_eq!(
        (w.partition, w.updated_replicas, w.ready_replicas),
        (0, 3, 3)
    );
    assert!(w.pods.values().all(|p| p.version == NEW_VERSION));
    assert_effects_once(&sim).await;
    w2.kill().await;
    app.stop().await;
}
