//! Scenario 2, control-plane overhead: CreateCluster → READY with stand-ins
//! that answer at once (the simulated world with every delay zero), with
//! 1, 4 and 16 worker processes. What remains is the control plane's own
//! loop: queueing, claiming, leasing, one acknowledged report per stage and
//! checkpoint, and the events that tell the client.
//!
//! Baselines: the CreateCluster call inside each create (what the API alone
//! costs), and CreateCluster alone at the same number in flight on a second
//! server without workers (what the API alone can take).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use esaas_proto::v1 as pb;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::TestDb;
use serde::Serialize;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::load;
use crate::plan::Plan;
use crate::platform::{self, Auth, Env, ServeOptions, Server, SimDelays, WorkerSpec};
use crate::proc;
use crate::report::{Check, Section, Table};
use crate::stats::{Latency, Runs, fmt_ms, fmt_rate, fmt_ratio, ratio};

/// Tenants the creates are spread over.
const TENANTS: usize = 16;
/// Longest a create may take to be READY.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Connections of each worker's simulator pool: all of them, the two
/// servers' pools (20 each) and the benchmark's fit in PostgreSQL's default
/// `max_connections` of 100.
fn sim_pool(workers: usize) -> u32 {
    (48 / workers.max(1)).clamp(2, esaas_tests::sim::DEFAULT_POOL as usize) as u32
}

/// Creates a cluster and waits, watching it, until it is READY. Returns
/// the time of the CreateCluster call and the time to READY.
async fn create_ready(
    client: &mut ClusterServiceClient<Channel>,
    auth: &Auth,
    tenant: &str,
    id: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let created = platform::create_cluster(client, auth, tenant, id).await?;
    let rpc = start.elapsed();
    let name = created
        .cluster
        .map(|c| c.name)
        .context("no cluster in the answer")?;
    let mut stream = client
        .watch_cluster(auth.req(pb::WatchClusterRequest {
            name: name.clone(),
            since_revision: 1,
        }))
        .await?
        .into_inner();
    let ready = pb::ClusterState::Ready as i32;
    let failed = pb::ClusterState::Failed as i32;
    let wait = async {
        while let Some(msg) = stream.message().await? {
            let cluster = match msg.payload {
                Some(pb::watch_cluster_response::Payload::Cluster(c)) => Some(c),
                Some(pb::watch_cluster_response::Payload::Event(e)) => e.cluster_snapshot,
                None => None,
            };
            let state = cluster.and_then(|c| c.status).map(|s| s.state);
            if state == Some(ready) {
                return Ok(());
            }
            if state == Some(failed) {
                bail!("{name} FAILED");
            }
        }
        bail!("the watch of {name} ended before READY")
    };
    tokio::time::timeout(READY_WITHIN, wait)
        .await
        .with_context(|| format!("{name} not READY within {READY_WITHIN:?}"))??;
    Ok((rpc, start.elapsed()))
}

async fn tenants(channel: &Channel, prefix: &str) -> anyhow::Result<Arc<Vec<(String, Auth)>>> {
    let mut out = Vec::new();
    for i in 0..TENANTS {
        let id = format!("{prefix}{i}");
        let key = platform::tenant(channel, &id).await?;
        out.push((id, Auth::new(&key)?));
    }
    Ok(Arc::new(out))
}

#[derive(Debug, Clone, Serialize)]
struct WorkerPoint {
    workers: usize,
    capacity: u32,
    /// One create at a time: time to READY.
    sequential_ready: Latency,
    /// One create at a time: the CreateCluster call.
    sequential_rpc: Latency,
    /// `in_flight` creates at once: creates READY per second, per run.
    ready_per_second: Runs,
    /// `in_flight` creates at once: time to READY.
    loaded_ready: Latency,
    /// CreateCluster alone, same in flight, on the server without workers.
    rpc_only_per_second: Runs,
    /// CreateCluster alone: latency.
    rpc_only: Latency,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the scenario.
pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let db = TestDb::try_create(true).await?;
    let base_db = TestDb::try_create(true).await?;
    // The simulator's tables exist before any worker starts.
    let sim = esaas_tests::sim::Sim::connect(&db.url, Default::default()).await?;
    sim.pool().close().await;
    let server = Server::start(env, &db, "overhead-esaas", &ServeOptions::default()).await?;
    let baseline =
        Server::start(env, &base_db, "overhead-baseline", &ServeOptions::default()).await?;
    let setup = proc::connect(server.addr).await?;
    let base_setup = proc::connect(baseline.addr).await?;
    let key = platform::worker_key(&setup).await?;
    let next = Arc::new(AtomicU64::new(0));
    let control_plane = format!("http://{}", server.addr);

    let mut points = Vec::new();
    for (round, &workers) in plan.overhead_workers.iter().enumerate() {
        let ts = tenants(&setup, &format!("o{round}t")).await?;
        let base_ts = tenants(&base_setup, &format!("b{round}t")).await?;
        let mut children = Vec::new();
        for i in 0..workers {
            children.push(platform::spawn_worker(
                env,
                &control_plane,
                &key,
                &db.url,
                &WorkerSpec {
                    id: format!("w{round}-{i}"),
                    capacity: plan.overhead_capacity,
                    delays: SimDelays::default(),
                    poll_ms: platform::WORKER_POLL_MS,
                    sim_pool: sim_pool(workers),
                    observe_capacity: 32,
                },
            )?);
        }
        platform::wait_workers(&setup, workers, Duration::from_secs(30)).await?;

        let mut client = ClusterServiceClient::new(proc::connect(server.addr).await?);
        let clients: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(ClusterServiceClient::new(proc::connect(server.addr).await?));
            }
            v
        };
        let base_clients: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(ClusterServiceClient::new(
                    proc::connect(baseline.addr).await?,
                ));
            }
            v
        };
        let (mut seq_rpc, mut seq_ready) = (Vec::new(), Vec::new());
        let (mut ready_runs, mut rpc_runs) = (Vec::new(), Vec::new());
        let (mut errors, mut first_error) = (0u64, None);
        for _ in 0..plan.runs {
            // One at a time: nothing queues, this is the loop's own latency.
            for i in 0..plan.overhead_sequential {
                let (tenant, auth) = &ts[i % ts.len()];
                let id = format!("s{:x}", next.fetch_add(1, Ordering::Relaxed));
                let (rpc, ready) = create_ready(&mut client, auth, tenant, &id).await?;
                seq_rpc.push(rpc);
                seq_ready.push(ready);
            }
            let (clients, ts2, next2) = (Arc::new(clients.clone()), ts.clone(), next.clone());
            let r = load::closed_loop(
                plan.overhead_in_flight,
                plan.warmup,
                plan.overhead_measure,
                move |task, _| {
                    let mut client = clients[task % clients.len()].clone();
                    let (tenant, auth) = ts2[task % ts2.len()].clone();
                    let id = format!("l{:x}", next2.fetch_add(1, Ordering::Relaxed));
                    async move {
                        create_ready(&mut client, &auth, &tenant, &id)
                            .await
                            .map(|_| ())
                    }
                },
            )
            .await;
            let (clients, ts2, next2) = (
                Arc::new(base_clients.clone()),
                base_ts.clone(),
                next.clone(),
            );
            let b = load::closed_loop(
                plan.overhead_in_flight,
                plan.warmup,
                plan.overhead_measure,
                move |task, _| {
                    let mut client = clients[task % clients.len()].clone();
                    let (tenant, auth) = ts2[task % ts2.len()].clone();
                    let id = format!("b{:x}", next2.fetch_add(1, Ordering::Relaxed));
                    async move {
                        platform::create_cluster(&mut client, &auth, &tenant, &id)
                            .await
                            .map(|_| ())
                    }
                },
            )
            .await;
            for x in [&r, &b] {
                errors += x.errors;
                if first_error.is_none() {
                    first_error.clone_from(&x.first_error);
                }
            }
            ready_runs.push(r);
            rpc_runs.push(b);
        }
        for c in children {
            c.stop(Duration::from_secs(20)).await?;
        }
        let point = WorkerPoint {
            workers,
            capacity: plan.overhead_capacity,
            sequential_ready: Latency::of(&seq_ready),
            sequential_rpc: Latency::of(&seq_rpc),
            ready_per_second: Runs::of(ready_runs.iter().map(|r| r.throughput()).collect()),
            loaded_ready: Latency::of(
                &ready_runs
                    .iter()
                    .flat_map(|r| r.latencies.clone())
                    .collect::<Vec<_>>(),
            ),
            rpc_only_per_second: Runs::of(rpc_runs.iter().map(|r| r.throughput()).collect()),
            rpc_only: Latency::of(
                &rpc_runs
                    .iter()
                    .flat_map(|r| r.latencies.clone())
                    .collect::<Vec<_>>(),
            ),
            errors,
            first_error,
        };
        tracing::info!(
            workers,
            p50 = point.sequential_ready.p50_ms,
            per_second = point.ready_per_second.median,
            "overhead point"
        );
        points.push(point);
    }
    baseline.stop().await?;
    server.stop().await?;
    Ok(section(plan, &points))
}

fn section(plan: &Plan, points: &[WorkerPoint]) -> Section {
    let mut latency = Table::new(
        "One create at a time: CreateCluster → READY beside the CreateCluster call itself (ms, p50 / p99)",
        &[
            "workers",
            "→ READY",
            "CreateCluster call",
            "READY / call (p50)",
            "added by the loop (p50)",
        ],
    );
    let mut throughput = Table::new(
        format!(
            "{} creates in flight: creates READY per second (median of runs) beside CreateCluster alone on a server without workers",
            plan.overhead_in_flight
        ),
        &[
            "workers",
            "capacity each",
            "READY/s",
            "→ READY ms (p50 / p99)",
            "CreateCluster alone /s",
            "READY / alone",
            "errors",
        ],
    );
    let mut checks = Vec::new();
    for p in points {
        latency.row(vec![
            p.workers.to_string(),
            p.sequential_ready.cell(),
            p.sequential_rpc.cell(),
            fmt_ratio(ratio(p.sequential_ready.p50_ms, p.sequential_rpc.p50_ms)),
            fmt_ms(p.sequential_ready.p50_ms - p.sequential_rpc.p50_ms),
        ]);
        throughput.row(vec![
            p.workers.to_string(),
            p.capacity.to_string(),
            fmt_rate(p.ready_per_second.median),
            p.loaded_ready.cell(),
            fmt_rate(p.rpc_only_per_second.median),
            fmt_ratio(ratio(
                p.ready_per_second.median,
                p.rpc_only_per_second.median,
            )),
            match &p.first_error {
                Some(e) => format!("{} ({})", p.errors, e.chars().take(60).collect::<String>()),
                None => p.errors.to_string(),
            },
        ]);
        checks.push(Check {
            target: format!(
                "CreateCluster → READY p50 ≤ 50 ms ({} worker{})",
                p.workers,
                if p.workers == 1 { "" } else { "s" }
            ),
            measured: format!(
                "{} ms (p99 {} ms)",
                fmt_ms(p.sequential_ready.p50_ms),
                fmt_ms(p.sequential_ready.p99_ms)
            ),
            met: Some(p.sequential_ready.p50_ms <= 50.0 && p.errors == 0),
        });
    }
    Section {
        key: "overhead",
        title: "2. Control-plane overhead".into(),
        notes: vec![
            "`esaas serve` (no in-process workers) and N `esaas-test-worker` processes, the real worker driving the simulated EKS, Kubernetes and Elasticsearch in PostgreSQL with every delay zero: the stand-ins answer at once, so the time is the control plane's loop (queue, claim, lease, one acknowledged report per stage and checkpoint, events).".into(),
            "A create is timed from the CreateCluster call to the arrival, on a WatchCluster stream opened right after it, of the event whose snapshot says READY.".into(),
            format!(
                "One at a time: {} creates per run, {} run(s). Loaded: a closed loop of {} creates in flight for {} ms after {} ms warm-up, per run; creates spread over {TENANTS} tenants. Baseline for the loaded figure: the same closed loop of CreateCluster alone on a second `esaas serve` with no workers, run right after, in the same round.",
                plan.overhead_sequential,
                plan.runs,
                plan.overhead_in_flight,
                plan.overhead_measure.as_millis(),
                plan.warmup.as_millis()
            ),
            "Defaults of the product otherwise: claim interval 1 s (new work wakes claims at once, coalesced for 20 ms), lease 30 s. Each worker's simulator pool has 8 connections, 3 with 16 workers, so that everything fits PostgreSQL's default max_connections of 100.".into(),
        ],
        tables: vec![latency, throughput],
        checks,
        data: serde_json::json!({ "points": points }),
    }
}
