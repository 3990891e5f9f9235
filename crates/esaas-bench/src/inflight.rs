//! Scenario 4, in-flight work: N operations at once in one worker process
//! whose stand-ins take seconds per step; the worker's resident memory,
//! threads and CPU, and what its stream to the control plane carries while
//! every operation waits inside a step (heartbeats). Baseline: the same
//! worker process connected and idle, just before the work arrives.

use std::time::Duration;

use anyhow::Context;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::TestDb;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::plan::Plan;
use crate::platform::{self, Auth, Env, ServeOptions, Server, SimDelays, WorkerSpec};
use crate::proc::{self, Status};
use crate::proxy::CountingProxy;
use crate::report::{Check, Section, Table};
use crate::stats::{fmt_mib, fmt_ratio, ratio};

/// The control plane refuses a worker capacity above this.
const MAX_CAPACITY: usize = 1_000;
/// Tenants the clusters are spread over.
const TENANTS: usize = 16;

/// One quiet window: the processes and the stream.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Window {
    seconds: f64,
    worker: Status,
    server: Status,
    worker_cpu_percent: f64,
    server_cpu_percent: f64,
    /// Worker → control plane, bytes per second.
    up_bytes_per_second: f64,
    /// Control plane → worker, bytes per second.
    down_bytes_per_second: f64,
}

async fn window(
    length: Duration,
    worker: u32,
    server: u32,
    proxy: &CountingProxy,
) -> anyhow::Result<Window> {
    let (up0, down0) = proxy.bytes();
    let (w0, s0) = (proc::cpu_seconds(worker)?, proc::cpu_seconds(server)?);
    let start = Instant::now();
    tokio::time::sleep(length).await;
    let secs = start.elapsed().as_secs_f64();
    let (up1, down1) = proxy.bytes();
    Ok(Window {
        seconds: secs,
        worker: proc::status(worker)?,
        server: proc::status(server)?,
        worker_cpu_percent: (proc::cpu_seconds(worker)? - w0) / secs * 100.0,
        server_cpu_percent: (proc::cpu_seconds(server)? - s0) / secs * 100.0,
        up_bytes_per_second: (up1 - up0) as f64 / secs,
        down_bytes_per_second: (down1 - down0) as f64 / secs,
    })
}

#[derive(Debug, Clone, Serialize)]
struct Outcome {
    operations: usize,
    step_ms: u64,
    lease_ttl_s: u64,
    heartbeat_every_s: f64,
    /// From the first CreateCluster to every operation running.
    all_running_after_s: f64,
    idle: Window,
    busy: Window,
    worker_kib_per_operation: f64,
    /// Heartbeat bytes per lease per heartbeat (worker → control plane).
    up_bytes_per_lease_heartbeat: f64,
}

/// Runs the scenario.
pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let n = plan.inflight_ops.min(MAX_CAPACITY);
    let ttl = plan.inflight_lease_ttl_s.max(1);
    let heartbeat = Duration::from_secs(ttl) / 3;
    let db = TestDb::try_create(true).await?;
    let sim = esaas_tests::sim::Sim::connect(&db.url, Default::default()).await?;
    sim.pool().close().await;
    let opts = ServeOptions {
        extra_toml: format!("lease_ttl_seconds = {ttl}\n"),
        migrate: false,
    };
    let server = Server::start(env, &db, "inflight-esaas", &opts).await?;
    let setup = proc::connect(server.addr).await?;
    let key = platform::worker_key(&setup).await?;
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let id = format!("fly{i}");
        let k = platform::tenant(&setup, &id).await?;
        tenants.push((id, Auth::new(&k)?));
    }

    let proxy = CountingProxy::start(server.addr).await?;
    let delays = SimDelays {
        step_ms: plan.inflight_step_ms,
        node_group_ms: plan.inflight_step_ms,
        pods_ready_ms: plan.inflight_step_ms,
    };
    let mut worker = platform::spawn_worker(
        env,
        &format!("http://{}", proxy.addr),
        &key,
        &db.url,
        &WorkerSpec {
            id: "inflight-0".into(),
            capacity: n as u32,
            delays,
            poll_ms: platform::WORKER_POLL_MS,
            sim_pool: esaas_tests::sim::DEFAULT_POOL,
            observe_capacity: 32,
        },
    )?;
    platform::wait_workers(&setup, 1, Duration::from_secs(30)).await?;
    // Connected and idle: the baseline, over as many heartbeats as the busy window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_len = (heartbeat * 2).max(Duration::from_secs(1));
    let idle = window(idle_len, worker.pid(), server.child.pid(), &proxy).await?;

    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .context("connecting to the server's database")?;
    let first = Instant::now();
    let clients: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(ClusterServiceClient::new(proc::connect(server.addr).await?));
        }
        v
    };
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            let (tenant, auth) = tenants[i % tenants.len()].clone();
            async move {
                platform::create_cluster(&mut c, &auth, &tenant, &format!("f{i}")).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    // Every operation running and inside its first step: revision 2 says the
    // attempt started, revision 3 that its first stage did.
    let deadline = first + Duration::from_millis(plan.inflight_step_ms);
    loop {
        let started: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters WHERE revision >= 3")
            .fetch_one(&pool)
            .await?;
        if started as usize >= n {
            break;
        }
        worker.check_alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {started} of {n} operations started within the first step ({} ms); make the step longer",
            plan.inflight_step_ms
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_running_after_s = first.elapsed().as_secs_f64();
    pool.close().await;
    // Quiet until the first operation's first step ends: only heartbeats flow.
    let quiet_until =
        first + Duration::from_millis(plan.inflight_step_ms) - Duration::from_millis(500);
    let settle = Duration::from_millis(300);
    let left = quiet_until.saturating_duration_since(Instant::now() + settle);
    let busy_len = left.min(plan.inflight_window);
    anyhow::ensure!(
        busy_len >= heartbeat,
        "the quiet window ({busy_len:?}) is shorter than a heartbeat interval ({heartbeat:?}); make the step longer"
    );
    tokio::time::sleep(settle).await;
    let busy = window(busy_len, worker.pid(), server.child.pid(), &proxy).await?;
    worker.stop(Duration::from_secs(30)).await?;
    server.stop().await?;

    let hb_per_second = 1.0 / heartbeat.as_secs_f64();
    let result = Outcome {
        operations: n,
        step_ms: plan.inflight_step_ms,
        lease_ttl_s: ttl,
        heartbeat_every_s: heartbeat.as_secs_f64(),
        all_running_after_s,
        idle,
        busy,
        worker_kib_per_operation: busy.worker.rss_kib.saturating_sub(idle.worker.rss_kib) as f64
            / n as f64,
        up_bytes_per_lease_heartbeat: (busy.up_bytes_per_second - idle.up_bytes_per_second)
            .max(0.0)
            / hb_per_second
            / n as f64,
    };
    Ok(section(plan, &result))
}

fn section(plan: &Plan, r: &Outcome) -> Section {
    let mut t = Table::new(
        format!(
            "One worker process: idle (connected, no work) beside {} operations in flight, each inside a {} s step",
            r.operations,
            r.step_ms / 1000
        ),
        &["", "idle", "in flight", "in flight / idle"],
    );
    let (i, b) = (&r.idle, &r.busy);
    // A ratio to an idle rate near zero says nothing: those rows show none.
    let row = |name: &str, a: f64, z: f64, fmt: &dyn Fn(f64) -> String| {
        let r = if name.contains("/s") || name.contains("CPU") {
            "-".to_string()
        } else {
            fmt_ratio(ratio(z, a))
        };
        vec![name.to_string(), fmt(a), fmt(z), r]
    };
    let mib = |k: f64| fmt_mib(k);
    let int = |v: f64| format!("{v:.0}");
    let one = |v: f64| format!("{v:.1}");
    t.row(row(
        "worker RSS (MiB)",
        i.worker.rss_kib as f64,
        b.worker.rss_kib as f64,
        &mib,
    ));
    t.row(row(
        "worker peak RSS (MiB)",
        i.worker.hwm_kib as f64,
        b.worker.hwm_kib as f64,
        &mib,
    ));
    t.row(row(
        "worker threads",
        i.worker.threads as f64,
        b.worker.threads as f64,
        &int,
    ));
    t.row(row(
        "worker CPU (% of a core)",
        i.worker_cpu_percent,
        b.worker_cpu_percent,
        &one,
    ));
    t.row(row(
        "worker → control plane (bytes/s)",
        i.up_bytes_per_second,
        b.up_bytes_per_second,
        &int,
    ));
    t.row(row(
        "control plane → worker (bytes/s)",
        i.down_bytes_per_second,
        b.down_bytes_per_second,
        &int,
    ));
    t.row(row(
        "control plane RSS (MiB)",
        i.server.rss_kib as f64,
        b.server.rss_kib as f64,
        &mib,
    ));
    t.row(row(
        "control plane CPU (% of a core)",
        i.server_cpu_percent,
        b.server_cpu_percent,
        &one,
    ));
    let mut d = Table::new("Derived", &["figure", "value"]);
    d.row(vec![
        "worker memory per operation (KiB)".into(),
        format!("{:.1}", r.worker_kib_per_operation),
    ]);
    d.row(vec![
        "heartbeat bytes per lease per heartbeat (worker → control plane)".into(),
        format!("{:.1}", r.up_bytes_per_lease_heartbeat),
    ]);
    d.row(vec![
        "heartbeat interval (s)".into(),
        format!("{:.1}", r.heartbeat_every_s),
    ]);
    d.row(vec![
        format!("all {} operations running after (s)", r.operations),
        format!("{:.2}", r.all_running_after_s),
    ]);
    d.row(vec![
        "windows (s): idle / in flight".into(),
        format!("{:.1} / {:.1}", i.seconds, b.seconds),
    ]);
    let checks = vec![Check {
        target: format!(
            "{} in-flight operations ≤ 200 MiB (worker RSS)",
            r.operations
        ),
        measured: format!("{} MiB", fmt_mib(b.worker.rss_kib as f64)),
        met: Some(b.worker.rss_kib as f64 <= 200.0 * 1024.0),
    }];
    Section {
        key: "inflight",
        title: "4. Scale of in-flight work".into(),
        notes: vec![
            format!(
                "`esaas serve` and one `esaas-test-worker` with capacity {} (the real worker; simulated EKS, Kubernetes and Elasticsearch in PostgreSQL where every mutating call takes {} s and node groups and pods take as long to be ready; gates re-checked every 2 s, the product default). Lease {} s, so the worker heartbeats every {:.1} s.",
                r.operations,
                plan.inflight_step_ms / 1000,
                r.lease_ttl_s,
                r.heartbeat_every_s
            ),
            "The worker reaches the control plane through a byte-counting TCP forwarder. The in-flight window lies after every operation has reported its first stage and before the first step ends, so what its stream carries then is heartbeats (and HTTP/2 keepalives). Idle: the same process, connected, before any work exists.".into(),
            "RSS, peak RSS and threads from /proc/<pid>/status at the end of each window; CPU from /proc/<pid>/stat over the window.".into(),
        ],
        tables: vec![t, d],
        checks,
        data: serde_json::json!(r),
    }
}
