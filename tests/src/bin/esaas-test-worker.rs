//! A worker process for tests: the real worker (`esaas_worker::run`) driving
//! the simulated world of [`esaas_tests::sim::Sim`], which lives in the test
//! database so that several of these processes share it.
//!
//! Environment:
//! - `ESAAS_CONTROL_PLANE_URL` (required), `ESAAS_WORKER_KEY` (required),
//!   `ESAAS_WORKER_ID` (default `test-worker-{pid}`), `ESAAS_WORKER_CAPACITY` (default 4);
//! - `SIM_DATABASE_URL` (required); `SIM_STEP_DELAY_MS`, `SIM_NODE_GROUP_DELAY_MS`,
//!   `SIM_PODS_READY_DELAY_MS`, `SIM_DRAIN_DELAY_MS` (default 0); `SIM_POOL_SIZE`
//!   (connections of the simulator's pool, default 8);
//! - `EXEC_POLL_MS` (default 50), `EXEC_GATE_TIMEOUT_MS` (default 30000),
//!   `EXEC_STEP_TIMEOUT_MS` (default 120000, the product's default);
//! - `RUST_LOG` (default `info`); logs go to stderr.
//!
//! SIGTERM or Ctrl-C hands the leases back and exits 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use esaas_tests::sim::{Sim, SimConfig};
use esaas_worker::{Backends, ExecSettings, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn required(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow!("{name} is required"))
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().with_context(|| format!("{name}={v}")),
        _ => Ok(default),
    }
}

fn millis(name: &str, default: u64) -> anyhow::Result<Duration> {
    number(name, default).map(Duration::from_millis)
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let config = WorkerConfig {
        control_plane: required("ESAAS_CONTROL_PLANE_URL")?,
        ca_pem: None,
        key: required("ESAAS_WORKER_KEY")?,
        id: std::env::var("ESAAS_WORKER_ID")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("test-worker-{}", std::process::id())),
        region: "sim".into(),
        capacity: number("ESAAS_WORKER_CAPACITY", 4)?,
        observe_capacity: number("ESAAS_WORKER_OBSERVE_CAPACITY", 8)?,
        exec: ExecSettings {
            poll: millis("EXEC_POLL_MS", 50)?,
            gate_timeout: millis("EXEC_GATE_TIMEOUT_MS", 30_000)?,
            step_timeout: millis("EXEC_STEP_TIMEOUT_MS", 120_000)?,
        },
        ack_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(10),
    };
    let sim_config = SimConfig {
        node_group_delay: millis("SIM_NODE_GROUP_DELAY_MS", 0)?,
        pods_ready_delay: millis("SIM_PODS_READY_DELAY_MS", 0)?,
        drain_delay: millis("SIM_DRAIN_DELAY_MS", 0)?,
        step_delay: millis("SIM_STEP_DELAY_MS", 0)?,
    };
    let sim = Sim::connect_with_pool(
        &required("SIM_DATABASE_URL")?,
        sim_config,
        number("SIM_POOL_SIZE", esaas_tests::sim::DEFAULT_POOL)?,
    )
    .await
    .context("connecting to the simulator database")?;
    let backends = Backends {
        node_groups: sim.clone(),
        workloads: sim.clone(),
        elasticsearch: sim,
    };

    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            terminated().await;
            tracing::info!("shutting down: handing leases back");
            shutdown.cancel();
        }
    });
    tracing::info!(worker = %config.id, control_plane = %config.control_plane, capacity = config.capacity, ?sim_config, "test worker starting");
    esaas_worker::run(config, Arc::new(backends), shutdown).await?;
    tracing::info!("test worker stopped");
    Ok(())
}
