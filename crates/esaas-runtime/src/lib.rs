//! Wires esaas together: configuration, the store, the gRPC server with
//! health and reflection, and migrations. The binary only parses arguments
//! and calls in here.

pub mod backends;
pub mod config;
pub mod server;
pub mod tls;

pub use config::Config;
pub use server::{Running, start, start_with_workers};

/// Installs logging and, when configured, OpenTelemetry export for a
/// process that reports as `service`. Call once, first, inside the runtime;
/// call [`esaas_telemetry::Telemetry::shutdown`] on the result before exit.
pub fn init_telemetry(
    config: &Config,
    service: &'static str,
) -> anyhow::Result<esaas_telemetry::Telemetry> {
    let mut settings = config.telemetry(service);
    settings.otlp_ca_pem = config.otlp_ca()?;
    esaas_telemetry::init(&settings)
}

/// Applies pending migrations to the configured database.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = esaas_store::Store::connect(config.database_url()?, 2).await?;
    store.migrate().await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn serve_until_signal(config: &Config) -> anyhow::Result<()> {
    let mut running = start(config).await?;
    let signal = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        r = signal => {
            r?;
            tracing::info!("shutting down");
            running.shutdown().await
        }
        r = running.wait() => r,
    }
}

/// `esaas worker`: connects to `worker.control_plane_url` with `key` and
/// drives EKS, Kubernetes and Elasticsearch as configured, until SIGTERM or
/// Ctrl-C, then hands its leases back.
pub async fn run_worker(config: &Config, key: String, id: Option<String>) -> anyhow::Result<()> {
    if key.is_empty() {
        anyhow::bail!(
            "ESAAS_WORKER_KEY is not set: create a ROLE_WORKER key with AdminService.CreateApiKey"
        );
    }
    let control_plane = config.worker.control_plane_url.trim();
    if control_plane.is_empty() {
        anyhow::bail!(
            "worker.control_plane_url (ESAAS_CONTROL_PLANE_URL, or --control-plane): required by esaas worker"
        );
    }
    let id = id.unwrap_or_else(default_worker_id);
    let mut wc = config.worker_config(control_plane.to_string(), key, id);
    wc.ca_pem = config.control_plane_ca()?;
    let backends = backends::product_backends(config).await?;
    tracing::info!(worker = %wc.id, control_plane = %wc.control_plane, capacity = wc.capacity, "worker starting");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutting down: handing leases back");
        stop.cancel();
    });
    esaas_worker::run(wc, backends, shutdown).await
}

/// `esaas eks-setup`: creates the EKS cluster the configuration names if it
/// is missing. For the local setup against an EKS emulator (make dev);
/// refuses to run against real AWS, where clusters belong to infrastructure code.
pub async fn eks_setup(config: &Config) -> anyhow::Result<()> {
    let endpoint = config
        .eks
        .endpoint_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_EKS").ok())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!("eks-setup only runs against an emulator: set AWS_ENDPOINT_URL_EKS or eks.endpoint_url")
        })?;
    let role = config
        .eks
        .setup_cluster_role_arn
        .clone()
        .ok_or_else(|| anyhow::anyhow!("eks.setup_cluster_role_arn is not set"))?;
    let mut eks = config.eks.clone();
    eks.endpoint_url = Some(endpoint.clone());
    let groups = esaas_eks::EksNodeGroups::new(eks, config.catalog.clone()).await;
    groups
        .ensure_cluster(&role)
        .await
        .map_err(|e| anyhow::anyhow!("creating EKS cluster {}: {e}", config.eks.cluster_name))?;
    tracing::info!(cluster = %config.eks.cluster_name, %endpoint, "EKS cluster ready");
    Ok(())
}

/// A worker id when none is given: the host name (a pod's name in
/// Kubernetes) and the process id, so that two processes never share one by
/// default. Leases are held by the stream's session whatever the id; the id
/// is what attempts and events show.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')
        .take(48)
        .collect();
    let host = host.trim_matches(|c| c == '-' || c == '.');
    if host.is_empty() {
        format!("worker-{}", std::process::id())
    } else {
        format!("{host}-{}", std::process::id())
    }
}
