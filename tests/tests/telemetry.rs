//! The metrics of the failure paths (retries, lapsed leases), exported over
//! OTLP by a control plane running in this test process to a collector in
//! this test process. (The happy path, across processes, is in
//! `kubernetes.rs`.) One test per file: the meter provider is global.

use std::time::Duration;

use esaas_proto::v1 as pb;
use esaas_tests::otlp::Collector;
use esaas_tests::sim::{Sim, SimConfig};
use esaas_tests::*;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn retries_and_lapsed_leases_are_counted() {
    let collector = Collector::start().await;
    let telemetry = esaas_telemetry::init(&esaas_telemetry::Settings {
        service: "esaas-control-plane",
        json_logs: false,
        otlp_endpoint: Some(collector.endpoint()),
        otlp_ca_pem: None,
    })
    .expect("telemetry");
    let app = spawn_app_with(|c| {
        fast(c);
        // The hung worker may be handed the operation again before it is
        // killed, and lose it again: room for that.
        c.max_attempts = 10;
    })
    .await;
    let key = app.worker_key().await;
    let sim_config = SimConfig {
        step_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    let sim = Sim::connect(&app.db.url, sim_config).await.expect("sim");
    // Every try of the node-group call in the first attempt fails: the
    // attempt ends with a retryable failure and the operation is retried.
    sim.inject(
        "nodegroup.ensure",
        5,
        true,
        "EKS_THROTTLED",
        "Rate exceeded",
    )
    .await;
    let cp = format!("http://{}", app.addr);
    let poll = Duration::from_millis(20);
    let w1 = WorkerProcess::spawn(&cp, &key, "w1", &app.db.url, sim_config, poll, LONG);
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("cluster");
    let op_name = created.operation.expect("operation").name;
    app.wait_operation(&op_name, LONG, |o| {
        o.attempts.len() >= 2 && o.state == pb::OperationState::Running as i32
    })
    .await;

    // The worker hangs: its stream stays open, its heartbeats stop, and its
    // lease lapses; the reaper gives the operation to another worker.
    let pid = w1.pid().expect("worker pid");
    let _ = tokio::process::Command::new("kill")
        .arg("-STOP")
        .arg(pid.to_string())
        .status()
        .await;
    let op = app
        .wait_operation(&op_name, LONG, |o| {
            o.attempts.iter().any(|a| a.outcome == "lease expired")
        })
        .await;
    assert!(
        op.attempts[0].outcome.contains("EKS_THROTTLED"),
        "{:?}",
        op.attempts
    );
    // Gone for good (its stream closes), so only the new worker can take it.
    w1.kill().await;
    let w2 = WorkerProcess::spawn(&cp, &key, "w2", &app.db.url, sim_config, poll, LONG);
    app.wait_cluster(&cluster.name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
    })
    .await;
    w2.kill().await;
    app.stop().await;
    // Exporting on exit sends what the periodic export has not yet sent.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("flush");

    let points = collector.points();
    let value = |metric: &str, attrs: &[(&str, &str)]| {
        points
            .iter()
            .filter(|p| {
                p.metric == metric
                    && attrs
                        .iter()
                        .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|p| p.value)
            .fold(0.0, f64::max)
    };
    assert_eq!(
        value(
            "esaas.operation.retries",
            &[("cause", "EKS_THROTTLED"), ("scope", "attempt")]
        ),
        1.0,
        "{points:#?}"
    );
    assert!(value("esaas.lease.expiries", &[]) >= 1.0, "{points:#?}");
    assert!(
        value(
            "esaas.rpc.server.requests",
            &[
                ("rpc.method", "CreateCluster"),
                ("rpc.grpc.status_code", "OK")
            ]
        ) >= 1.0
    );
}
