//! Scenario 3, watch fan-out: N WatchCluster streams on one server, all on
//! the cluster that changes; the time from a state change (an UpdateCluster
//! call) to its event's arrival at every watcher, and the server's resident
//! memory per open stream. Baseline: the empty handler's WatchCluster, which
//! sends each change to every stream through one broadcast channel.

use std::net::SocketAddr;

use std::time::Duration;

use anyhow::Context;
use esaas_proto::v1 as pb;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::TestDb;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::empty::{self, EmptyServer};
use crate::plan::Plan;
use crate::platform::{self, Auth, Env, ServeOptions, Server};
use crate::proc;
use crate::report::{Check, Section, Table};
use crate::stats::{Latency, Runs, fmt_ms, fmt_rate, fmt_ratio, ratio};

const TENANT: &str = "watch";
const CLUSTER: &str = "hot";
/// Streams opened at once while setting up.
const OPENING: usize = 256;
/// How long every watcher may take to see a change.
const ARRIVAL_WITHIN: Duration = Duration::from_secs(60);

fn name() -> String {
    format!("tenants/{TENANT}/clusters/{CLUSTER}")
}

/// The `n`th UpdateCluster of the hot cluster: 4 nodes, then 3, then 4 ... (a change
/// every time; not a volume change, which EBS allows once per six hours).
fn update(n: i32) -> pb::UpdateClusterRequest {
    let spec = esaas_tests::spec(3 + (n + 1) % 2);
    pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name(),
            spec: Some(spec),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.node_sets".into()],
        }),
        request_id: String::new(),
        validate_only: false,
    }
}

/// Real answers of the real server, for the empty one to replay.
async fn capture(channel: &Channel, auth: &Auth, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut client = ClusterServiceClient::new(channel.clone());
    let mut stream = client
        .watch_cluster(auth.req(pb::WatchClusterRequest {
            name: name(),
            since_revision: 0,
        }))
        .await?
        .into_inner();
    if let Some(pb::WatchClusterResponse {
        payload: Some(pb::watch_cluster_response::Payload::Cluster(c)),
    }) = stream.message().await?
    {
        platform::save(&dir.join(empty::CLUSTER), &c)?;
    }
    let updated = client
        .update_cluster(auth.req(update(0)))
        .await?
        .into_inner();
    platform::save(&dir.join(empty::UPDATE), &updated)?;
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .context("no event within 10 s")??;
    if let Some(pb::WatchClusterResponse {
        payload: Some(pb::watch_cluster_response::Payload::Event(e)),
    }) = event
    {
        platform::save(&dir.join(empty::EVENT), &e)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
struct FanOut {
    streams: usize,
    connections: usize,
    /// Streams opened per second while setting up.
    opened_per_second: f64,
    /// Server RSS before the streams and with them open, KiB.
    rss_before_kib: u64,
    rss_open_kib: u64,
    /// (open − before) / streams, KiB.
    kib_per_stream: f64,
    threads: u64,
    /// Server CPU while the streams sit open and nothing changes, % of one core.
    idle_cpu_percent: f64,
    /// Change → arrival, every watcher of every change.
    arrival: Latency,
    /// The p99 of each change (the runs).
    p99_per_change: Runs,
    /// Arrivals that never came.
    missing: u64,
}

/// Opens `n` streams on `addr` (server process `pid`), makes `changes`
/// changes with `change`, and times every arrival.
async fn fan_out<F, Fut>(
    addr: SocketAddr,
    pid: u32,
    n: usize,
    plan: &Plan,
    auth: &Auth,
    mut change: F,
) -> anyhow::Result<FanOut>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    // Let the server's start-up allocations settle before the baseline reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proc::status(pid)?;
    let connections = n.div_ceil(plan.streams_per_connection).max(2);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(ClusterServiceClient::new(proc::connect(addr).await?));
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, Instant)>();
    let opened = Instant::now();
    let readers: Vec<tokio::task::JoinHandle<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let mut client = clients[i % connections].clone();
            let req = auth.req(pb::WatchClusterRequest {
                name: name(),
                since_revision: 0,
            });
            let tx = tx.clone();
            async move {
                let mut stream = client.watch_cluster(req).await?.into_inner();
                // The first message is the cluster as it is: the stream is open.
                stream.message().await?.context("the watch ended at once")?;
                Ok::<_, anyhow::Error>(tokio::spawn(async move {
                    while let Ok(Some(msg)) = stream.message().await {
                        if let Some(pb::watch_cluster_response::Payload::Event(e)) = msg.payload {
                            let _ = tx.send((e.revision, Instant::now()));
                        }
                    }
                }))
            }
        })
        .buffer_unordered(OPENING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    drop(tx);
    let opened_per_second = n as f64 / opened.elapsed().as_secs_f64().max(1e-9);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let open = proc::status(pid)?;
    // Idle cost: the safety re-reads (every watch_poll_seconds) and keepalives.
    let idle = plan.measure.mul_f64(2.5).max(Duration::from_secs(1));
    let cpu0 = proc::cpu_seconds(pid)?;
    tokio::time::sleep(idle).await;
    let idle_cpu_percent = (proc::cpu_seconds(pid)? - cpu0) / idle.as_secs_f64() * 100.0;

    let mut all = Vec::new();
    let mut per_change = Vec::new();
    let mut missing = 0u64;
    let mut floor = 0i64;
    for k in 0..plan.watch_changes {
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        change(k).await?;
        let mut got = Vec::with_capacity(n);
        let mut top = floor;
        let deadline = t0 + ARRIVAL_WITHIN;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                // Only this change's event counts, never a late copy of an older one.
                Ok(Some((rev, at))) if rev > floor => {
                    top = top.max(rev);
                    got.push(at - t0);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        floor = top;
        missing += (n - got.len()) as u64;
        per_change.push(Latency::of(&got).p99_ms);
        all.extend(got);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in &readers {
        r.abort();
    }
    drop(clients);
    Ok(FanOut {
        streams: n,
        connections,
        opened_per_second,
        rss_before_kib: before.rss_kib,
        rss_open_kib: open.rss_kib,
        kib_per_stream: (open.rss_kib.saturating_sub(before.rss_kib)) as f64 / n as f64,
        threads: open.threads,
        idle_cpu_percent,
        arrival: Latency::of(&all),
        p99_per_change: Runs::of(per_change),
        missing,
    })
}

#[derive(Debug, Clone, Serialize)]
struct Point {
    esaas: FanOut,
    empty: FanOut,
}

/// Runs the scenario.
pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let db = TestDb::try_create(true).await?;
    let responses = env.file("watch-responses");
    let auth = {
        let server = Server::start(env, &db, "watch-setup", &ServeOptions::default()).await?;
        let setup = proc::connect(server.addr).await?;
        let key = platform::tenant(&setup, TENANT).await?;
        let auth = Auth::new(&key)?;
        let mut client = ClusterServiceClient::new(setup.clone());
        platform::create_cluster(&mut client, &auth, TENANT, CLUSTER).await?;
        capture(&setup, &auth, &responses).await?;
        server.stop().await?;
        auth
    };
    let admin = Auth::admin()?;
    let mut changes = 0;
    let mut points = Vec::new();
    for (i, &n) in plan.watch_streams.iter().enumerate() {
        // Fresh processes for each N, so memory freed by a smaller N is not reused.
        let server = Server::start(
            env,
            &db,
            &format!("watch-esaas-{i}"),
            &ServeOptions::default(),
        )
        .await?;
        let updater = ClusterServiceClient::new(proc::connect(server.addr).await?);
        let esaas = fan_out(server.addr, server.child.pid(), n, plan, &auth, |_| {
            changes += 1;
            let req = auth.req(update(changes));
            let mut c = updater.clone();
            async move {
                c.update_cluster(req).await?;
                Ok(())
            }
        })
        .await?;
        drop(updater);
        server.stop().await?;

        let empty = EmptyServer::start(env, &responses, &format!("watch-empty-{i}")).await?;
        let to_empty = ClusterServiceClient::new(proc::connect(empty.addr).await?);
        let empty_fan = fan_out(empty.addr, empty.child.pid(), n, plan, &admin, |_| {
            let mut c = to_empty.clone();
            let req = admin.req(update(0));
            async move {
                c.update_cluster(req).await?;
                Ok(())
            }
        })
        .await?;
        empty.stop().await?;
        tracing::info!(
            streams = n,
            p99 = esaas.arrival.p99_ms,
            kib = esaas.kib_per_stream,
            "watch point"
        );
        points.push(Point {
            esaas,
            empty: empty_fan,
        });
    }
    Ok(section(plan, &points))
}

fn section(plan: &Plan, points: &[Point]) -> Section {
    let mut arrival = Table::new(
        "State change → arrival at every watcher (ms), all changes pooled",
        &[
            "streams",
            "conns",
            "esaas p50",
            "esaas p99",
            "esaas max",
            "empty p50",
            "empty p99",
            "empty max",
            "p99 esaas/empty",
            "missing",
        ],
    );
    let mut memory = Table::new(
        "Server process with the streams open",
        &[
            "streams",
            "esaas KiB/stream",
            "empty KiB/stream",
            "esaas/empty",
            "esaas RSS MiB (before → open)",
            "esaas threads",
            "esaas idle CPU %",
            "empty idle CPU %",
            "esaas streams opened/s",
        ],
    );
    let mut checks = Vec::new();
    for p in points {
        let (e, m) = (&p.esaas, &p.empty);
        arrival.row(vec![
            e.streams.to_string(),
            e.connections.to_string(),
            fmt_ms(e.arrival.p50_ms),
            fmt_ms(e.arrival.p99_ms),
            fmt_ms(e.arrival.max_ms),
            fmt_ms(m.arrival.p50_ms),
            fmt_ms(m.arrival.p99_ms),
            fmt_ms(m.arrival.max_ms),
            fmt_ratio(ratio(e.arrival.p99_ms, m.arrival.p99_ms)),
            format!("{} / {}", e.missing, m.missing),
        ]);
        memory.row(vec![
            e.streams.to_string(),
            format!("{:.1}", e.kib_per_stream),
            format!("{:.1}", m.kib_per_stream),
            fmt_ratio(ratio(e.kib_per_stream, m.kib_per_stream)),
            format!(
                "{:.1} → {:.1}",
                e.rss_before_kib as f64 / 1024.0,
                e.rss_open_kib as f64 / 1024.0
            ),
            e.threads.to_string(),
            format!("{:.1}", e.idle_cpu_percent),
            format!("{:.1}", m.idle_cpu_percent),
            fmt_rate(e.opened_per_second),
        ]);
    }
    if let Some(p) = points.iter().max_by_key(|p| p.esaas.streams) {
        let e = &p.esaas;
        checks.push(Check {
            target: format!("watch p99 ≤ 100 ms at {} streams", e.streams),
            measured: format!(
                "{} ms (max {} ms, {} missing)",
                fmt_ms(e.arrival.p99_ms),
                fmt_ms(e.arrival.max_ms),
                e.missing
            ),
            met: Some(e.arrival.p99_ms <= 100.0 && e.missing == 0),
        });
        checks.push(Check {
            target: format!("≤ 20 KiB per stream at {} streams", e.streams),
            measured: format!("{:.1} KiB", e.kib_per_stream),
            met: Some(e.kib_per_stream <= 20.0),
        });
    }
    Section {
        key: "watch",
        title: "3. Watch fan-out".into(),
        notes: vec![
            format!(
                "All streams watch the one cluster that changes, spread over HTTP/2 connections of at most {} streams each. A change is an UpdateCluster (its storage grows 1 GiB a node), timed from the call to the arrival of its event on each stream; {} change(s) per size, one after the other once every watcher has it.",
                plan.streams_per_connection, plan.watch_changes
            ),
            "esaas: `esaas serve` with its defaults (one LISTEN connection per process, each stream re-reads its events from PostgreSQL when notified, and every 5 s anyway). Empty: `esaas-bench serve-empty`, whose UpdateCluster sends the same event bytes to every open stream through one tokio broadcast channel: the gRPC fan-out floor.".into(),
            "Memory per stream: (RSS with the streams open − RSS before) / streams, from /proc/<pid>/status of a server process started fresh for each size. Idle CPU: the server's CPU time over a quiet window with the streams open.".into(),
            "The watchers run in the benchmark process; they share the cores with the server and PostgreSQL.".into(),
        ],
        tables: vec![arrival, memory],
        checks,
        data: serde_json::json!({ "points": points }),
    }
}
