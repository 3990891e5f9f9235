//! Scenario 6, observation at fleet scale: N READY clusters observed by one
//! worker process at the configured interval. While nothing changes: the
//! worker's and the control plane's CPU and RSS, and the database's writes
//! per second, split into the schedule's own (one due-time update per
//! observation) and everything else (clusters, events, operations: the
//! target is none). Then faults: a StatefulSet deleted behind the
//! platform's back (in the simulated Kubernetes), timed to DEGRADED (or the
//! repair queued) and to READY again, beside the interval as the baseline.

use std::time::Duration;

use anyhow::Context;
use esaas_proto::v1 as pb;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::TestDb;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::plan::Plan;
use crate::platform::{self, Auth, Env, ServeOptions, Server, SimDelays, WorkerSpec};
use crate::proc::{self, Status};
use crate::report::{Check, Section, Table};
use crate::stats::{fmt_mib, percentile};

/// Tenants the clusters are spread over.
const TENANTS: usize = 16;
/// Creates in flight while the fleet is built.
const CREATES_IN_FLIGHT: usize = 64;
/// Operations the worker runs at once while the fleet is built.
const BUILD_CAPACITY: u32 = 256;

/// Rows written to a set of tables, from PostgreSQL's statistics.
async fn writes(pool: &sqlx::PgPool, tables: &[&str]) -> anyhow::Result<i64> {
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del)::bigint FROM pg_stat_user_tables WHERE relname = ANY($1)",
    )
    .bind(&names)
    .fetch_one(pool)
    .await?;
    Ok(n.unwrap_or(0))
}

/// The product's tables, besides the observation schedule.
const PRODUCT_TABLES: [&str; 4] = ["clusters", "cluster_events", "operations", "idempotency"];
/// The schedule.
const SCHEDULE_TABLES: [&str; 1] = ["cluster_observations"];

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Idle {
    seconds: f64,
    worker: Status,
    server: Status,
    worker_cpu_percent: f64,
    server_cpu_percent: f64,
    product_writes_per_second: f64,
    schedule_writes_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Outcome {
    clusters: usize,
    interval_s: u64,
    build_s: f64,
    idle: Idle,
    /// Seconds from each fault to DEGRADED (or its repair queued).
    to_degraded_s: Vec<f64>,
    /// Seconds from each fault to READY again, repaired.
    to_repaired_s: Vec<f64>,
}

/// Runs the scenario.
pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let n = plan.observe_clusters;
    let interval = plan.observe_interval_s.max(1);
    let db = TestDb::try_create(true).await?;
    let sim = esaas_tests::sim::Sim::connect(&db.url, Default::default()).await?;
    sim.pool().close().await;
    let opts = ServeOptions {
        extra_toml: format!(
            "[observe]\ninterval_seconds = {interval}\njitter = 0.2\ndeadline_seconds = {}\n\
             repair_backoff_base_seconds = 1\nrepair_backoff_max_seconds = 2\n",
            interval.min(20)
        ),
        migrate: false,
    };
    let server = Server::start(env, &db, "observe-esaas", &opts).await?;
    let setup = proc::connect(server.addr).await?;
    let key = platform::worker_key(&setup).await?;
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let id = format!("obs{i}");
        let k = platform::tenant(&setup, &id).await?;
        tenants.push((id, Auth::new(&k)?));
    }
    let mut worker = platform::spawn_worker(
        env,
        &format!("http://{}", server.addr),
        &key,
        &db.url,
        &WorkerSpec {
            id: "observe-0".into(),
            capacity: BUILD_CAPACITY,
            delays: SimDelays::default(),
            poll_ms: 100,
            sim_pool: 16,
            observe_capacity: plan.observe_capacity,
        },
    )?;
    platform::wait_workers(&setup, 1, Duration::from_secs(30)).await?;

    // The fleet, through the API.
    let built = Instant::now();
    let client = ClusterServiceClient::new(setup.clone());
    let jobs: Vec<(usize, String, Auth)> = (0..n)
        .map(|i| {
            let (t, a) = &tenants[i % TENANTS];
            (i, t.clone(), a.clone())
        })
        .collect();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(jobs)
        .map(|(i, tenant, auth)| {
            let mut c = client.clone();
            async move {
                platform::create_cluster(&mut c, &auth, &tenant, &format!("c{i}")).await?;
                Ok(())
            }
        })
        .buffer_unordered(CREATES_IN_FLIGHT)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let deadline = Instant::now() + Duration::from_secs(600 + n as u64 / 5);
    loop {
        let ready: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM clusters WHERE state = 'READY' AND current_operation IS NULL",
        )
        .fetch_one(&pool)
        .await?;
        if ready as usize >= n {
            break;
        }
        worker.check_alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {n} clusters READY"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let build_s = built.elapsed().as_secs_f64();

    // Every cluster observed once (the first observation of a cluster an
    // operation left green writes nothing), then a quiet window of two intervals.
    tokio::time::sleep(Duration::from_secs(interval * 3 / 2)).await;
    let stats_lag = Duration::from_millis(1500);
    // Both readings lag their commits alike: the rate is over the time between them.
    let read0 = Instant::now();
    let (p0, s0) = (
        writes(&pool, &PRODUCT_TABLES).await?,
        writes(&pool, &SCHEDULE_TABLES).await?,
    );
    let (w0, c0) = (
        proc::cpu_seconds(worker.pid())?,
        proc::cpu_seconds(server.child.pid())?,
    );
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(interval * 2)).await;
    let seconds = start.elapsed().as_secs_f64();
    let (w1, c1) = (
        proc::cpu_seconds(worker.pid())?,
        proc::cpu_seconds(server.child.pid())?,
    );
    let (ws, ss) = (
        proc::status(worker.pid())?,
        proc::status(server.child.pid())?,
    );
    // Statistics reach the view within a second of each commit.
    tokio::time::sleep(stats_lag).await;
    let (p1, s1) = (
        writes(&pool, &PRODUCT_TABLES).await?,
        writes(&pool, &SCHEDULE_TABLES).await?,
    );
    let read_s = read0.elapsed().as_secs_f64();
    let idle = Idle {
        seconds,
        worker: ws,
        server: ss,
        worker_cpu_percent: (w1 - w0) / seconds * 100.0,
        server_cpu_percent: (c1 - c0) / seconds * 100.0,
        product_writes_per_second: (p1 - p0) as f64 / read_s,
        schedule_writes_per_second: (s1 - s0) as f64 / read_s,
    };

    // Faults, each on another cluster.
    let mut to_degraded_s = Vec::new();
    let mut to_repaired_s = Vec::new();
    for f in 0..plan.observe_faults.min(n) {
        let i = (f * 7919) % n;
        let (tenant, auth) = &tenants[i % TENANTS];
        let name = format!("tenants/{tenant}/clusters/c{i}");
        let uid: uuid::Uuid = sqlx::query_scalar(
            "SELECT uid FROM clusters WHERE tenant_id = $1 AND cluster_id = $2 AND state <> 'DELETED'",
        )
        .bind(tenant)
        .bind(format!("c{i}"))
        .fetch_one(&pool)
        .await?;
        // `kubectl delete statefulset`, in the simulated Kubernetes.
        let fault = Instant::now();
        sqlx::query("DELETE FROM sim_workloads WHERE cluster_uid = $1")
            .bind(uid)
            .execute(&pool)
            .await
            .context("deleting the simulated StatefulSets")?;
        let mut c = client.clone();
        let mut degraded = None;
        let limit = Duration::from_secs(interval * 4 + 60);
        let repaired = loop {
            let cl = c
                .get_cluster(auth.req(pb::GetClusterRequest { name: name.clone() }))
                .await?
                .into_inner()
                .cluster
                .context("cluster")?;
            let status = cl.status.unwrap_or_default();
            let busy = !status.current_operation.is_empty();
            if degraded.is_none() && (status.state == pb::ClusterState::Degraded as i32 || busy) {
                degraded = Some(fault.elapsed());
            }
            if degraded.is_some() && status.state == pb::ClusterState::Ready as i32 && !busy {
                break fault.elapsed();
            }
            anyhow::ensure!(
                fault.elapsed() < limit,
                "cluster {name} not repaired within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        to_degraded_s.push(degraded.unwrap_or(repaired).as_secs_f64());
        to_repaired_s.push(repaired.as_secs_f64());
    }
    pool.close().await;
    worker.stop(Duration::from_secs(30)).await?;
    server.stop().await?;
    let r = Outcome {
        clusters: n,
        interval_s: interval,
        build_s,
        idle,
        to_degraded_s,
        to_repaired_s,
    };
    Ok(section(plan, &r))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

fn section(plan: &Plan, r: &Outcome) -> Section {
    let i = &r.idle;
    let mut t = Table::new(
        format!(
            "{} READY clusters observed by one worker every {} s (± 10 %), nothing changing",
            r.clusters, r.interval_s
        ),
        &["figure", "value"],
    );
    let one = |v: f64| format!("{v:.1}");
    t.row(vec![
        "worker CPU (% of a core)".into(),
        one(i.worker_cpu_percent),
    ]);
    t.row(vec![
        "worker RSS (MiB)".into(),
        fmt_mib(i.worker.rss_kib as f64),
    ]);
    t.row(vec![
        "control plane CPU (% of a core)".into(),
        one(i.server_cpu_percent),
    ]);
    t.row(vec![
        "control plane RSS (MiB)".into(),
        fmt_mib(i.server.rss_kib as f64),
    ]);
    t.row(vec![
        "schedule writes/s (cluster_observations rows)".into(),
        one(i.schedule_writes_per_second),
    ]);
    t.row(vec![
        "schedule baseline: clusters / interval (observations/s)".into(),
        one(r.clusters as f64 / r.interval_s as f64),
    ]);
    t.row(vec![
        "other writes/s (clusters, events, operations)".into(),
        format!("{:.2}", i.product_writes_per_second),
    ]);
    t.row(vec!["window (s)".into(), one(i.seconds)]);
    t.row(vec![
        format!("fleet built in (s): {} creates to READY", r.clusters),
        one(r.build_s),
    ]);
    let mut f = Table::new(
        format!(
            "{} StatefulSets deleted behind the platform's back, one cluster each",
            r.to_degraded_s.len()
        ),
        &["", "median (s)", "/ interval"],
    );
    let iv = r.interval_s as f64;
    if !r.to_degraded_s.is_empty() {
        let d = median(&r.to_degraded_s);
        let rep = median(&r.to_repaired_s);
        f.row(vec![
            "fault → DEGRADED (or its repair queued)".into(),
            format!("{d:.2}"),
            format!("{:.2}", d / iv),
        ]);
        f.row(vec![
            "fault → READY again (REPAIR done)".into(),
            format!("{rep:.2}"),
            format!("{:.2}", rep / iv),
        ]);
        f.row(vec![
            "baseline: the interval".into(),
            format!("{iv:.0}"),
            "1.00".into(),
        ]);
    }
    let observed_rate = r.clusters as f64 / iv;
    let checks = vec![
        Check {
            target: format!(
                "one worker observes {} clusters at a {} s interval (schedule keeps pace: ≥ 90 % of clusters / interval)",
                r.clusters, r.interval_s
            ),
            measured: format!(
                "{:.1} observations/s of {:.1}",
                i.schedule_writes_per_second, observed_rate
            ),
            met: Some(i.schedule_writes_per_second >= 0.9 * observed_rate),
        },
        Check {
            target: "no database writes beyond the schedule while nothing changes".into(),
            measured: format!("{:.2} rows/s", i.product_writes_per_second),
            met: Some(i.product_writes_per_second == 0.0),
        },
    ];
    Section {
        key: "observe",
        title: "6. Observation at fleet scale".into(),
        notes: vec![
            format!(
                "`esaas serve` and one `esaas-test-worker` (observe capacity {}; simulated EKS, Kubernetes and Elasticsearch in PostgreSQL, instant). The fleet is created through the API ({} tenants), then left alone: after every cluster was observed once, a window of two intervals.",
                plan.observe_capacity, TENANTS
            ),
            "Writes from PostgreSQL's pg_stat_user_tables (rows inserted, updated or deleted) at both edges of the window, the second 1.5 s after it (the view lags commits by up to a second), as a rate over the time between the two readings: the schedule's table on one side, the product's own tables on the other. CPU from /proc/<pid>/stat over the window, RSS at its end.".into(),
            "A fault deletes the simulated StatefulSets of one cluster; the time to DEGRADED is bounded by the interval (the cluster's next observation), the time to READY adds the REPAIR operation.".into(),
        ],
        tables: vec![t, f],
        checks,
        data: serde_json::json!(r),
    }
}
