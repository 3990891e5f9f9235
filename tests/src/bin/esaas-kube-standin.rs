//! The Kubernetes API server stand-in of `esaas_tests::kube_standin` as a process, for the
//! local setup: plain HTTP on 127.0.0.1, no credentials.
//!
//! Options (flag or environment):
//! - `--port` / `KUBE_STANDIN_PORT` (default 0: a free port);
//! - `--ready-after-ms` / `KUBE_STANDIN_READY_AFTER_MS` (default 2000): how long a
//!   StatefulSet pod takes to turn ready;
//! - `--kubeconfig PATH` / `KUBE_STANDIN_KUBECONFIG`: writes a kubeconfig there (cluster,
//!   user and current context `esaas-standin`, server `http://127.0.0.1:PORT`), so the
//!   product reaches the stand-in with `KUBECONFIG=PATH`.
//!
//! Once it listens (and the kubeconfig is written) it prints `listening on
//! http://127.0.0.1:PORT` on stdout. Logs go to stderr (`RUST_LOG`, default `info`;
//! `debug` logs every request). SIGTERM or Ctrl-C stops it with status 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use esaas_tests::kube_standin::KubeStandin;
use tokio::io::AsyncWriteExt;
use tracing_subscriber::EnvFilter;

/// A Kubernetes API server stand-in (plain HTTP, no auth) for the local esaas setup.
#[derive(Parser, Debug)]
#[command(name = "esaas-kube-standin")]
struct Args {
    /// Port on 127.0.0.1 (0: a free one).
    #[arg(long, env = "KUBE_STANDIN_PORT", default_value_t = 0)]
    port: u16,
    /// Milliseconds a StatefulSet pod takes to turn ready after its creation.
    #[arg(long, env = "KUBE_STANDIN_READY_AFTER_MS", default_value_t = 2000)]
    ready_after_ms: u64,
    /// Write a kubeconfig pointing at the stand-in to this path.
    #[arg(long, env = "KUBE_STANDIN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let standin = KubeStandin::bind(addr, Duration::from_millis(args.ready_after_ms))
        .await
        .with_context(|| format!("listen on {addr}"))?;
    if let Some(path) = &args.kubeconfig {
        standin
            .write_kubeconfig(path)
            .with_context(|| format!("write the kubeconfig {}", path.display()))?;
        tracing::info!(path = %path.display(), "kubeconfig written");
    }
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("listening on {}\n", standin.url()).as_bytes())
        .await?;
    stdout.flush().await?;
    tracing::info!(url = %standin.url(), ready_after_ms = args.ready_after_ms, "Kubernetes stand-in up");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    drop(standin);
    Ok(())
}
