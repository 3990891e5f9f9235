//! The gRPC server: the four esaas services, `grpc.health.v1`, and server
//! reflection (v1 and v1alpha, so every grpcurl finds the API and can decode
//! `google.rpc` error details).

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use esaas_api::rpc::{GuardLayer, Methods, TelemetryLayer};
use esaas_api::size_limit::MessageSizeLayer;
use esaas_api::{Api, Settings};
use esaas_core::backend::{Elasticsearch, NodeGroups, Workloads};
use esaas_proto::v1 as pb;
use esaas_store::Store;
use esaas_worker::Backends;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use uuid::Uuid;

use crate::Config;

/// A server that is running, with its in-process workers.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// Where the in-process workers connect: this address, or with native
    /// TLS a plaintext listener of their own on loopback.
    worker_url: String,
    stop_serving: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
    stop_workers: CancellationToken,
    api: Api,
    health: HealthReporter,
    grace: Duration,
}

impl Running {
    /// In order: health turns NOT_SERVING (load balancers stop sending),
    /// the in-process workers stop and hand their leases back (while the
    /// server still takes their reports), then the server stops accepting,
    /// ends open streams, lets calls in flight finish, and returns. All of
    /// it within `shutdown_grace_seconds`; past that it returns anyway, and
    /// what was not handed back comes back when its lease lapses.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let grace = self.grace;
        set_all(&self.health, ServingStatus::NotServing).await;
        self.health
            .set_service_status(LIVENESS_SERVICE, ServingStatus::NotServing)
            .await;
        let abort = self.task.abort_handle();
        let workers: Vec<_> = self.workers.iter().map(|w| w.abort_handle()).collect();
        match tokio::time::timeout(grace, self.stop()).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    grace_seconds = grace.as_secs(),
                    "shutdown grace ran out; stopping now"
                );
                abort.abort();
                for w in workers {
                    w.abort();
                }
                Ok(())
            }
        }
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        self.stop_workers.cancel();
        for w in self.workers.drain(..) {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "worker ended with an error")
                }
                Err(e) => tracing::warn!(error = %e, "worker task failed"),
            }
        }
        // Streams end by themselves only when their clients go: end them,
        // or the server would wait for watchers forever.
        self.api.shutdown_streams();
        self.stop_serving.cancel();
        (&mut self.task).await.context("server task")?
    }

    /// Waits until the server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task")?
    }
}

fn service_names() -> [&'static str; 4] {
    [
        <pb::cluster_service_server::ClusterServiceServer<Api> as NamedService>::NAME,
        <pb::operation_service_server::OperationServiceServer<Api> as NamedService>::NAME,
        <pb::admin_service_server::AdminServiceServer<Api> as NamedService>::NAME,
        <pb::worker_service_server::WorkerServiceServer<Api> as NamedService>::NAME,
    ]
}

/// The health service a liveness probe asks: SERVING from start to
/// shutdown whatever the database does, so a database outage makes the
/// process unready (no traffic) but never gets it restarted. The other
/// names ("" and each API service) are readiness: they follow the database.
pub const LIVENESS_SERVICE: &str = "esaas.liveness";

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in service_names() {
        reporter.set_service_status(name, status).await;
    }
}

/// Readiness follows the database: NOT_SERVING while it cannot be reached
/// (liveness, [`LIVENESS_SERVICE`], does not).
async fn watch_database(store: Store, reporter: HealthReporter) {
    let mut serving = true;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ok = sqlx_ping(&store).await;
        if ok != serving {
            serving = ok;
            if ok {
                tracing::info!("database reachable again; serving");
            } else {
                tracing::warn!("database unreachable; health is NOT_SERVING");
            }
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, status).await;
        }
    }
}

/// Returns lapsed leases to the queue. Every control-plane process runs one;
/// the row locks make them safe together.
async fn reap_leases(store: Store, lease: esaas_store::LeaseSettings, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match store.reap_expired(&lease).await {
            Ok(0) => {}
            Ok(n) => {
                esaas_telemetry::metrics::metrics().lease_expiries(n as u64);
                tracing::warn!(leases = n, "lapsed leases returned to the queue")
            }
            Err(e) => tracing::warn!(error = %e, "reaping leases failed; retrying"),
        }
    }
}

/// Sweeps what has expired (`[retention]`) every `every`. Every
/// control-plane process runs one; the store lets one sweep at a time and
/// the others skip their turn.
async fn sweep_expired(
    store: Store,
    periods: esaas_core::lifecycle::retention::Retention,
    every: Duration,
    batch: i64,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        match store
            .sweep(&periods.cutoffs(esaas_core::now()), batch)
            .await
        {
            Ok(Some(swept)) if !swept.is_empty() => tracing::info!(
                events = swept.events,
                idempotency_records = swept.idempotency,
                attempt_logs = swept.attempt_logs,
                tombstones = swept.tombstones,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "expired records removed"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "retention sweep failed; retrying at the next interval")
            }
        }
    }
}

/// Samples the queue for the gauges of `esaas.operations`, `esaas.queue.*`.
async fn sample_queue(store: Store, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match store.queue_stats().await {
            Ok(q) => {
                esaas_telemetry::metrics::record_queue(esaas_telemetry::metrics::QueueSample {
                    operations: q
                        .active
                        .into_iter()
                        .map(|(kind, state, n)| (kind, state, n.max(0) as u64))
                        .collect(),
                    queued: q.due.max(0) as u64,
                    oldest_queued: q.oldest_due,
                })
            }
            Err(e) => tracing::warn!(error = %e, "sampling the queue failed; retrying"),
        }
    }
}

async fn sqlx_ping(store: &Store) -> bool {
    store.ping().await.is_ok()
}

/// Connects to the database (migrating if configured), binds the listen
/// address and serves until `Running::shutdown`; with `workers > 0`, also
/// runs that many in-process workers with the configured backends.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    if config.workers > 0 {
        let backends = crate::backends::product_backends(config)
            .await
            .context("the in-process workers (ESAAS_WORKERS > 0) need EKS and Kubernetes")?;
        return start_with_workers(config, backends).await;
    }
    serve(config, None).await
}

/// Like [`start`], plus `config.workers` in-process workers driving
/// `backends`. They connect to this server over `WorkerService`, exactly as
/// an `esaas worker` process does, with a credential that lives only in
/// this process.
pub async fn start_with_workers<N: NodeGroups, W: Workloads, E: Elasticsearch>(
    config: &Config,
    backends: Arc<Backends<N, W, E>>,
) -> anyhow::Result<Running> {
    let key = format!("internal-{}", Uuid::new_v4().simple());
    let mut running = serve(config, Some(&key)).await?;
    for i in 0..config.workers {
        let wc = config.worker_config(
            running.worker_url.clone(),
            key.clone(),
            format!("inproc-{}-{i}", running.addr.port()),
        );
        running.workers.push(tokio::spawn(esaas_worker::run(
            wc,
            backends.clone(),
            running.stop_workers.child_token(),
        )));
    }
    Ok(running)
}

async fn serve(config: &Config, internal_worker_key: Option<&str>) -> anyhow::Result<Running> {
    let store = Store::connect_with(
        config.database_url()?,
        config.database_max_connections,
        Some(Duration::from_millis(config.database_statement_timeout_ms)),
    )
    .await
    .context("connecting to the database")?;
    if config.migrate_on_start {
        store.migrate().await.context("applying migrations")?;
    }
    let settings = Settings {
        rules: esaas_core::lifecycle::Rules {
            catalog: config.catalog.clone(),
            max_attempts: config.max_attempts,
            default_window: config.maintenance.default_window()?,
            node_release: Some(config.eks.node_release_version.trim().to_string())
                .filter(|r| !r.is_empty()),
            snapshots_enabled: config.snapshots.enabled(),
        },
        default_quota: config.default_quota,
        watch_poll: config.watch_poll(),
        lease: config.lease(),
        claim_interval: Duration::from_millis(config.claim_interval_ms.max(10)),
        credentials: crate::backends::credentials(config).await,
        rate: esaas_api::rate::Rate {
            per_second: config.rate_limit_per_second,
            burst: config.rate_limit_burst,
        },
        auth_cache_ttl: Duration::from_millis(config.auth_cache_ttl_ms),
        observe: esaas_api::ObserveSettings {
            interval: Duration::from_secs(config.observe.interval_seconds.max(1)),
            jitter: config.observe.jitter,
            deadline: Duration::from_secs(config.observe.deadline_seconds.max(1)),
            rules: config.observe.rules(&config.certificates),
        },
        max_watch_streams_per_tenant: config.max_watch_streams_per_tenant,
    };
    let bootstrap = Some(config.bootstrap_admin_key.expose()).filter(|k| !k.is_empty());
    let api = Api::new(store.clone(), bootstrap, internal_worker_key, settings);
    let (clusters, operations, admin, worker) =
        esaas_api::services(api.clone(), config.max_message_bytes);

    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::Serving).await;
    reporter
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    let reaper = tokio::spawn(reap_leases(
        store.clone(),
        config.lease(),
        Duration::from_millis(config.reap_interval_ms.max(10)),
    ));
    // Without an exporter nobody reads the gauges: spare the database.
    let sampler = (!config.telemetry.otlp_endpoint.is_empty()).then(|| {
        tokio::spawn(sample_queue(
            store.clone(),
            Duration::from_millis(config.telemetry.queue_sample_interval_ms.max(100)),
        ))
    });
    let sweeper = config.retention.interval().map(|every| {
        tokio::spawn(sweep_expired(
            store.clone(),
            config.retention.periods(),
            every,
            config.retention.batch_size,
        ))
    });
    let health_task = tokio::spawn(watch_database(store, reporter.clone()));

    // Each reflection service adds its own descriptor; the other one's is
    // registered here so that both versions list both services.
    let reflection = |other: &'static [u8]| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(esaas_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(other)
    };
    let reflection_v1 = reflection(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection v1")?;
    let reflection_v1alpha = reflection(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("reflection v1alpha")?;

    // Loaded before binding: a pair that does not load stops the start.
    let identity = config.server_identity()?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    let addr = listener.local_addr()?;
    let stop_serving = CancellationToken::new();
    let tls = match identity {
        Some(identity) => Some(native_tls(config, identity, stop_serving.clone())?),
        None => None,
    };
    // In-process workers speak to their own process. With native TLS they
    // get a plaintext listener on loopback: the certificate names the
    // service, not 127.0.0.1, and their key never leaves the machine.
    let (internal, worker_url) = match (&tls, internal_worker_key) {
        (Some(_), Some(_)) => {
            let l = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .await
                .context("binding the in-process workers' loopback listener")?;
            let url = format!("http://{}", l.local_addr()?);
            (Some(l), url)
        }
        _ => (None, format!("http://{}", loopback_of(addr))),
    };
    // Health alone, plaintext, for probes that cannot speak TLS (the
    // kubelet's gRPC probe): it carries no key and no tenant data.
    let health_listener = match config.health_listen_addr.trim() {
        "" => None,
        at => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("binding health_listen_addr {at}"))?,
        ),
    };
    if let Some(l) = &health_listener {
        tracing::info!(addr = %l.local_addr()?, "serving grpc.health.v1 alone, plaintext");
    }
    let methods = Arc::new(
        Methods::from_descriptor_sets(&[
            esaas_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ])
        .context("reading the services' descriptors")?,
    );
    let router = tonic::transport::Server::builder()
        // Notice dead peers, so watch streams of vanished clients end.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Streams one connection may hold; tonic sets no limit of its own.
        .max_concurrent_streams(Some(config.max_concurrent_streams_per_connection))
        // Outermost first: every call is traced and counted, including
        // those the guard sheds or times out.
        .layer(TelemetryLayer::new(methods.clone()))
        .layer(GuardLayer::new(
            methods,
            Duration::from_millis(config.request_timeout_ms),
            config.max_concurrent_requests,
            config.max_unauthenticated_streams,
        ))
        .layer(MessageSizeLayer)
        .add_service(health.clone())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(clusters)
        .add_service(operations)
        .add_service(admin)
        .add_service(worker);
    // Without TCP_NODELAY a unary answer (headers, data and trailers are
    // separate writes) waits ~40 ms for the client's delayed ACK. tonic sets
    // it only on listeners it binds itself.
    let tcp =
        |l: TcpListener| tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
    let stop = stop_serving.clone();
    let tls_mode = config.tls.mode.as_str();
    let task = tokio::spawn(async move {
        let internal_router = router.clone();
        let internal_stop = stop.clone();
        let health_stop = stop.clone();
        let public = async move {
            match tls {
                Some(server_config) => {
                    let incoming = crate::tls::incoming::tls_incoming(
                        tcp(listener),
                        server_config,
                        HANDSHAKE_TIMEOUT,
                    );
                    router
                        .serve_with_incoming_shutdown(incoming, stop.cancelled())
                        .await
                }
                None => {
                    router
                        .serve_with_incoming_shutdown(tcp(listener), stop.cancelled())
                        .await
                }
            }
        };
        let internal = async move {
            match internal {
                Some(l) => {
                    internal_router
                        .serve_with_incoming_shutdown(tcp(l), internal_stop.cancelled())
                        .await
                }
                None => Ok(()),
            }
        };
        let health_only = async move {
            match health_listener {
                Some(l) => {
                    tonic::transport::Server::builder()
                        .add_service(health)
                        .serve_with_incoming_shutdown(tcp(l), health_stop.cancelled())
                        .await
                }
                None => Ok(()),
            }
        };
        let result = tokio::try_join!(public, internal, health_only)
            .map(|_| ())
            .context("serving");
        health_task.abort();
        reaper.abort();
        for task in sampler.into_iter().chain(sweeper) {
            task.abort();
        }
        result
    });
    tracing::info!(%addr, tls = tls_mode, "serving esaas.v1");
    Ok(Running {
        addr,
        worker_url,
        stop_serving,
        task,
        workers: Vec::new(),
        stop_workers: CancellationToken::new(),
        api,
        health: reporter,
        grace: Duration::from_secs(config.shutdown_grace_seconds),
    })
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls configuration of the listener, and the task that swaps its
/// certificate when the files change (until `stop`).
fn native_tls(
    config: &Config,
    identity: crate::tls::files::Identity,
    stop: CancellationToken,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let leaf = &identity.leaf;
    tracing::info!(
        subject = %leaf.subject,
        sha256 = %leaf.sha256,
        not_after = %leaf.not_after,
        "serving TLS"
    );
    let resolver = Arc::new(crate::tls::reload::Resolver::new(identity.key));
    let server_config =
        crate::tls::incoming::server_config(resolver.clone()).context("the TLS configuration")?;
    let reloader =
        crate::tls::reload::Reloader::new(&config.tls.cert_file, &config.tls.key_file, resolver);
    tokio::spawn(crate::tls::reload::watch(
        reloader,
        Duration::from_secs(config.tls.reload_interval_seconds.max(1)),
        stop,
    ));
    Ok(server_config)
}

/// `addr`, or loopback when it is the unspecified address (`0.0.0.0`).
fn loopback_of(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}
