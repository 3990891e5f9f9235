//! Scenario 1, the unary API: GetCluster, ListClusters (a page of 50) and
//! CreateCluster at several numbers of requests in flight, over one and
//! several HTTP/2 connections, each beside the empty tonic handler (the
//! gRPC limit) and the same SQL straight through sqlx (the database limit).
//! Then GetCluster at half the throughput it reached, at a steady rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use esaas_proto::v1 as pb;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::TestDb;
use serde::Serialize;
use tonic::transport::Channel;

use crate::dbbase::{DbBaseline, DbTenant};
use crate::empty::{self, EmptyServer};
use crate::load::{self, RunResult};
use crate::plan::Plan;
use crate::platform::{self, Auth, Env, ServeOptions, Server};
use crate::proc;
use crate::report::{Check, Section, Table};
use crate::stats::{Latency, Runs, fmt_ms, fmt_rate, fmt_ratio, ratio};

/// Clusters of the tenant that GetCluster and ListClusters read.
const FIXTURE_CLUSTERS: usize = 60;
/// ListClusters page size.
const PAGE: i32 = 50;
/// Tenants CreateCluster spreads over (each create locks its tenant's row).
const CREATE_TENANTS: usize = 64;
/// The fixture tenant.
const TENANT: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Method {
    GetCluster,
    ListClusters,
    CreateCluster,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::GetCluster => "GetCluster",
            Method::ListClusters => "ListClusters",
            Method::CreateCluster => "CreateCluster",
        }
    }
}

/// One target at one point: throughput over the runs, latency over every request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measured {
    /// Requests per second, per run.
    pub rps: Runs,
    /// Latency of all requests of all runs.
    pub latency: Latency,
    /// Failed requests.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

impl Measured {
    fn of(results: Vec<RunResult>) -> Self {
        let mut latencies = Vec::new();
        let mut rps = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        for r in results {
            rps.push(r.throughput());
            errors += r.errors;
            if first_error.is_none() {
                first_error = r.first_error;
            }
            latencies.extend(r.latencies);
        }
        Self {
            rps: Runs::of(rps),
            latency: Latency::of(&latencies),
            errors,
            first_error,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Point {
    method: Method,
    in_flight: usize,
    connections: usize,
    esaas: Measured,
    empty: Measured,
    db: Measured,
}

/// What every request of a point needs.
#[derive(Clone)]
struct Fixture {
    auth: Auth,
    names: Arc<Vec<String>>,
    db: DbBaseline,
    db_tenant: DbTenant,
    cluster_ids: Arc<Vec<String>>,
    next_id: Arc<AtomicU64>,
}

/// Tenants of one CreateCluster point, on the server and in the baseline.
#[derive(Clone)]
struct CreateTenants {
    grpc: Arc<Vec<(String, Auth)>>,
    db: Arc<Vec<DbTenant>>,
}

async fn channels(
    addr: std::net::SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<ClusterServiceClient<Channel>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(ClusterServiceClient::new(proc::connect(addr).await?));
    }
    Ok(out)
}

/// One closed-loop run of `method` against a gRPC server.
async fn grpc_run(
    plan: &Plan,
    method: Method,
    clients: &[ClusterServiceClient<Channel>],
    in_flight: usize,
    f: &Fixture,
    creates: &CreateTenants,
) -> RunResult {
    let clients = Arc::new(clients.to_vec());
    let (f, creates) = (f.clone(), creates.clone());
    load::closed_loop(in_flight, plan.warmup, plan.measure, move |task, seq| {
        let mut client = clients[task % clients.len()].clone();
        let f = f.clone();
        let creates = creates.clone();
        async move {
            match method {
                Method::GetCluster => {
                    let name = f.names[(task + seq as usize) % f.names.len()].clone();
                    client
                        .get_cluster(f.auth.req(pb::GetClusterRequest { name }))
                        .await?;
                }
                Method::ListClusters => {
                    let page = client
                        .list_clusters(f.auth.req(pb::ListClustersRequest {
                            parent: format!("tenants/{TENANT}"),
                            page_size: PAGE,
                            ..Default::default()
                        }))
                        .await?;
                    anyhow::ensure!(page.get_ref().clusters.len() == PAGE as usize, "short page");
                }
                Method::CreateCluster => {
                    let (tenant, auth) = &creates.grpc[task % creates.grpc.len()];
                    let id = format!("k{:x}", f.next_id.fetch_add(1, Ordering::Relaxed));
                    client
                        .create_cluster(auth.req(esaas_tests::create_request(tenant, &id, 3)))
                        .await?;
                }
            }
            Ok(())
        }
    })
    .await
}

/// One closed-loop run of `method`'s statements against the baseline database.
async fn db_run(
    plan: &Plan,
    method: Method,
    in_flight: usize,
    f: &Fixture,
    creates: &CreateTenants,
) -> RunResult {
    let (f, creates) = (f.clone(), creates.clone());
    load::closed_loop(in_flight, plan.warmup, plan.measure, move |task, seq| {
        let f = f.clone();
        let creates = creates.clone();
        async move {
            match method {
                Method::GetCluster => {
                    let id = &f.cluster_ids[(task + seq as usize) % f.cluster_ids.len()];
                    f.db.get(&f.db_tenant, id).await
                }
                Method::ListClusters => f.db.list(&f.db_tenant, i64::from(PAGE)).await,
                Method::CreateCluster => {
                    let t = &creates.db[task % creates.db.len()];
                    let id = format!("k{:x}", f.next_id.fetch_add(1, Ordering::Relaxed));
                    f.db.create(t, &id).await
                }
            }
        }
    })
    .await
}

/// Fresh tenants for one CreateCluster point, so that no tenant's usage
/// query grows over the whole run.
async fn create_tenants(
    setup: &Channel,
    db: &DbBaseline,
    point: usize,
    in_flight: usize,
) -> anyhow::Result<CreateTenants> {
    let mut grpc = Vec::new();
    let mut dbt = Vec::new();
    // One tenant per task up to CREATE_TENANTS; beyond, tasks share them.
    for i in 0..in_flight.clamp(1, CREATE_TENANTS) {
        let id = format!("p{point}t{i}");
        let key = platform::tenant(setup, &id).await?;
        grpc.push((id.clone(), Auth::new(&key)?));
        dbt.push(db.tenant(&id).await?);
    }
    Ok(CreateTenants {
        grpc: Arc::new(grpc),
        db: Arc::new(dbt),
    })
}

/// Captures real answers of the real server for the empty one to replay.
async fn capture(
    client: &mut ClusterServiceClient<Channel>,
    auth: &Auth,
    names: &[String],
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = names.first().context("no fixture cluster")?.clone();
    let get = client
        .get_cluster(auth.req(pb::GetClusterRequest { name }))
        .await?
        .into_inner();
    platform::save(&dir.join(empty::GET), &get)?;
    let list = client
        .list_clusters(auth.req(pb::ListClustersRequest {
            parent: format!("tenants/{TENANT}"),
            page_size: PAGE,
            ..Default::default()
        }))
        .await?
        .into_inner();
    platform::save(&dir.join(empty::LIST), &list)?;
    let created = platform::create_cluster(client, auth, TENANT, "captured").await?;
    platform::save(&dir.join(empty::CREATE), &created)?;
    Ok(())
}

/// Runs the scenario.
pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let db = TestDb::try_create(true).await?;
    let base_db = TestDb::try_create(true).await?;
    let server = Server::start(env, &db, "unary-esaas", &ServeOptions::default()).await?;
    let setup = proc::connect(server.addr).await?;
    let key = platform::tenant(&setup, TENANT).await?;
    let auth = Auth::new(&key)?;
    let mut client = ClusterServiceClient::new(setup.clone());
    let mut cluster_ids = Vec::new();
    for i in 0..FIXTURE_CLUSTERS {
        let id = format!("c{i:03}");
        platform::create_cluster(&mut client, &auth, TENANT, &id).await?;
        cluster_ids.push(id);
    }
    let names: Vec<String> = cluster_ids
        .iter()
        .map(|c| format!("tenants/{TENANT}/clusters/{c}"))
        .collect();
    let responses = env.file("unary-responses");
    capture(&mut client, &auth, &names, &responses).await?;
    let empty = EmptyServer::start(env, &responses, "unary-empty").await?;

    let dbb = DbBaseline::prepare(&db.url, TENANT, "c000", &base_db.url).await?;
    let db_tenant = dbb.tenant(TENANT).await?;
    for id in &cluster_ids {
        dbb.create(&db_tenant, id).await?;
    }
    let fixture = Fixture {
        auth,
        names: Arc::new(names),
        db: dbb.clone(),
        db_tenant,
        cluster_ids: Arc::new(cluster_ids),
        next_id: Arc::new(AtomicU64::new(0)),
    };
    let no_creates = CreateTenants {
        grpc: Arc::new(Vec::new()),
        db: Arc::new(Vec::new()),
    };

    let mut points = Vec::new();
    let mut point_no = 0;
    for method in [
        Method::GetCluster,
        Method::ListClusters,
        Method::CreateCluster,
    ] {
        for &in_flight in &plan.unary_in_flight {
            let conns: Vec<usize> = plan
                .unary_connections
                .iter()
                .copied()
                .filter(|&k| k == 1 || k <= in_flight)
                .collect();
            let creates = if method == Method::CreateCluster {
                point_no += 1;
                create_tenants(&setup, &dbb, point_no, in_flight).await?
            } else {
                no_creates.clone()
            };
            let mut clients = Vec::new();
            for &k in &conns {
                clients.push((
                    channels(server.addr, k).await?,
                    channels(empty.addr, k).await?,
                ));
            }
            // Interleaved, so drift on the machine hits all three alike.
            let mut esaas_runs: Vec<Vec<RunResult>> = conns.iter().map(|_| Vec::new()).collect();
            let mut empty_runs: Vec<Vec<RunResult>> = conns.iter().map(|_| Vec::new()).collect();
            let mut db_runs = Vec::new();
            for _ in 0..plan.runs {
                for (i, (to_esaas, to_empty)) in clients.iter().enumerate() {
                    esaas_runs[i].push(
                        grpc_run(plan, method, to_esaas, in_flight, &fixture, &creates).await,
                    );
                    empty_runs[i].push(
                        grpc_run(plan, method, to_empty, in_flight, &fixture, &creates).await,
                    );
                }
                db_runs.push(db_run(plan, method, in_flight, &fixture, &creates).await);
            }
            let db = Measured::of(db_runs);
            for (i, k) in conns.iter().enumerate() {
                let p = Point {
                    method,
                    in_flight,
                    connections: *k,
                    esaas: Measured::of(std::mem::take(&mut esaas_runs[i])),
                    empty: Measured::of(std::mem::take(&mut empty_runs[i])),
                    db: db.clone(),
                };
                tracing::info!(
                    method = method.name(),
                    in_flight,
                    connections = k,
                    esaas = p.esaas.rps.median,
                    empty = p.empty.rps.median,
                    db = p.db.rps.median,
                    "unary point"
                );
                points.push(p);
            }
        }
    }

    let half = half_load(plan, &points, &server, &empty, &fixture).await?;
    dbb.close().await;
    empty.stop().await?;
    server.stop().await?;
    Ok(section(plan, &points, half))
}

#[derive(Debug, Clone, Serialize)]
struct HalfLoad {
    rate: f64,
    connections: usize,
    esaas: Measured,
    empty: Measured,
    db: Measured,
}

/// GetCluster at half the throughput it reached at `plan.half_load_of` in
/// flight (most connections), sent at a steady rate.
async fn half_load(
    plan: &Plan,
    points: &[Point],
    server: &Server,
    empty: &EmptyServer,
    f: &Fixture,
) -> anyhow::Result<Option<HalfLoad>> {
    let Some(p) = points
        .iter()
        .filter(|p| p.method == Method::GetCluster && p.in_flight == plan.half_load_of)
        .max_by_key(|p| p.connections)
    else {
        return Ok(None);
    };
    let rate = p.esaas.rps.median / 2.0;
    if rate <= 0.0 {
        return Ok(None);
    }
    let k = p.connections;
    let to_esaas = Arc::new(channels(server.addr, k).await?);
    let to_empty = Arc::new(channels(empty.addr, k).await?);
    let max_outstanding = plan.half_load_of * 16;
    let grpc = |clients: Arc<Vec<ClusterServiceClient<Channel>>>| {
        let f = f.clone();
        load::open_loop(
            rate,
            plan.warmup,
            plan.measure,
            max_outstanding,
            move |seq| {
                let mut client = clients[seq as usize % clients.len()].clone();
                let name = f.names[seq as usize % f.names.len()].clone();
                let req = f.auth.req(pb::GetClusterRequest { name });
                async move {
                    client.get_cluster(req).await?;
                    Ok(())
                }
            },
        )
    };
    let (mut e, mut m, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        e.push(grpc(to_esaas.clone()).await);
        m.push(grpc(to_empty.clone()).await);
        let f2 = f.clone();
        d.push(
            load::open_loop(
                rate,
                plan.warmup,
                plan.measure,
                max_outstanding,
                move |seq| {
                    let f = f2.clone();
                    async move {
                        let id = &f.cluster_ids[seq as usize % f.cluster_ids.len()];
                        f.db.get(&f.db_tenant, id).await
                    }
                },
            )
            .await,
        );
    }
    Ok(Some(HalfLoad {
        rate,
        connections: k,
        esaas: Measured::of(e),
        empty: Measured::of(m),
        db: Measured::of(d),
    }))
}

fn errors_cell(p: &Point) -> String {
    let n = p.esaas.errors + p.empty.errors + p.db.errors;
    if n == 0 {
        return "0".into();
    }
    let first = [&p.esaas, &p.empty, &p.db]
        .iter()
        .find_map(|m| m.first_error.clone())
        .unwrap_or_default();
    format!("{n} ({})", first.chars().take(60).collect::<String>())
}

fn section(plan: &Plan, points: &[Point], half: Option<HalfLoad>) -> Section {
    let mut tables = Vec::new();
    for method in [
        Method::GetCluster,
        Method::ListClusters,
        Method::CreateCluster,
    ] {
        let mut t = Table::new(
            format!(
                "{}{}: throughput (req/s, median of runs) and latency (ms, p50 / p99 of all requests)",
                method.name(),
                if method == Method::ListClusters {
                    " (page of 50)"
                } else {
                    ""
                }
            ),
            &[
                "in flight",
                "conns",
                "esaas req/s",
                "empty req/s",
                "esaas/empty",
                "db req/s",
                "esaas/db",
                "esaas ms",
                "empty ms",
                "db ms",
                "errors",
            ],
        );
        for p in points.iter().filter(|p| p.method == method) {
            t.row(vec![
                p.in_flight.to_string(),
                p.connections.to_string(),
                fmt_rate(p.esaas.rps.median),
                fmt_rate(p.empty.rps.median),
                fmt_ratio(ratio(p.esaas.rps.median, p.empty.rps.median)),
                fmt_rate(p.db.rps.median),
                fmt_ratio(ratio(p.esaas.rps.median, p.db.rps.median)),
                p.esaas.latency.cell(),
                p.empty.latency.cell(),
                p.db.latency.cell(),
                errors_cell(p),
            ]);
        }
        tables.push(t);
    }
    if let Some(h) = &half {
        let mut t = Table::new(
            format!(
                "GetCluster at a steady {} req/s (half of esaas at {} in flight), {} conns: latency from when each request was due (ms)",
                fmt_rate(h.rate),
                plan.half_load_of,
                h.connections
            ),
            &[
                "target",
                "answered req/s",
                "p50",
                "p99",
                "max",
                "p99 / empty p99",
                "errors",
            ],
        );
        for (name, m) in [
            ("esaas", &h.esaas),
            ("empty handler", &h.empty),
            ("db statements", &h.db),
        ] {
            t.row(vec![
                name.into(),
                fmt_rate(m.rps.median),
                fmt_ms(m.latency.p50_ms),
                fmt_ms(m.latency.p99_ms),
                fmt_ms(m.latency.max_ms),
                fmt_ratio(ratio(m.latency.p99_ms, h.empty.latency.p99_ms)),
                m.errors.to_string(),
            ]);
        }
        tables.push(t);
    }

    let at = plan.half_load_of;
    let mut checks = Vec::new();
    let share = |method: Method, of_db: bool| -> Vec<(usize, Option<f64>)> {
        points
            .iter()
            .filter(|p| p.method == method && p.in_flight == at)
            .map(|p| {
                let base = if of_db { &p.db } else { &p.empty };
                (p.connections, ratio(p.esaas.rps.median, base.rps.median))
            })
            .collect()
    };
    let judged = |v: &[(usize, Option<f64>)], min: f64| -> (String, Option<bool>) {
        let text = v
            .iter()
            .map(|(k, r)| {
                format!(
                    "{} ({k} conn{})",
                    fmt_ratio(*r),
                    if *k == 1 { "" } else { "s" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let met = (!v.is_empty()).then(|| v.iter().all(|(_, r)| r.is_some_and(|r| r >= min)));
        (text, met)
    };
    let (measured, met) = judged(&share(Method::GetCluster, false), 0.60);
    checks.push(Check {
        target: format!("GetCluster ≥ 60 % of the empty handler at {at} in flight"),
        measured,
        met,
    });
    if let Some(h) = &half {
        checks.push(Check {
            target: "GetCluster p99 ≤ 5 ms at half of that load".into(),
            measured: format!(
                "{} ms at {} req/s",
                fmt_ms(h.esaas.latency.p99_ms),
                fmt_rate(h.rate)
            ),
            met: Some(h.esaas.latency.p99_ms <= 5.0 && h.esaas.errors == 0),
        });
    }
    let (measured, met) = judged(&share(Method::CreateCluster, true), 0.50);
    checks.push(Check {
        target: format!("CreateCluster ≥ 50 % of the raw insert path at {at} in flight"),
        measured,
        met,
    });

    Section {
        key: "unary",
        title: "1. Unary API".into(),
        notes: vec![
            "esaas: `esaas serve` (child process, release build in a full run), database pool 20, rate limits off, a TENANT_ADMIN key (so every call also looks its key up in PostgreSQL).".into(),
            "empty: `esaas-bench serve-empty`, a tonic ClusterService in its own process with the same transport settings, answering the real server's captured answers without doing anything (the gRPC limit).".into(),
            "db: the same SQL statements as the server (key lookup, then the read, or the create transaction) through an sqlx pool of 20 in the benchmark process (the database limit); it has no HTTP/2 connections, so its figure repeats on each connection row.".into(),
            format!(
                "Closed loop: each of `in flight` tasks sends its next request when the last is answered; {} run(s) of {} ms after {} ms of warm-up per point, the three targets interleaved run by run. GetCluster reads one of {FIXTURE_CLUSTERS} clusters; ListClusters asks for the first page of 50 of them; CreateCluster creates 3-node clusters, each task in a tenant of its own up to {CREATE_TENANTS} tenants (fresh ones per point; at 256 in flight four tasks share each), since a create locks its tenant's row.",
                plan.runs,
                plan.measure.as_millis(),
                plan.warmup.as_millis()
            ),
            "Load generator, server and PostgreSQL share the machine's cores.".into(),
        ],
        tables,
        checks,
        data: serde_json::json!({ "points": points, "half_load": half }),
    }
}
