//! The Elasticsearch REST stand-in ([`esaas_tests::es_standin::EsStandin`])
//! as a process, for the local setup: one HTTPS port for every cluster
//! (routed by SNI), kept in step with a Kubernetes API (the Kubernetes
//! stand-in), which it watches: each cluster's Secret registers it, its
//! ready pods are its nodes, each on the version of its own image.
//!
//! Environment:
//! - `ES_STANDIN_LISTEN_ADDR` (default `127.0.0.1:9200`);
//! - `ES_STANDIN_KUBE_URL`: the Kubernetes API to follow (plain `http://` is
//!   fine); without it, the usual kubeconfig inference (`KUBECONFIG`, ...);
//! - `ES_STANDIN_DRAIN_DELAY_MS` (default 3000): how long an excluded node
//!   takes to hand over its shards;
//! - `ES_STANDIN_S3_ENDPOINT`: the S3 endpoint (`http://host:port`, moto)
//!   where `s3` snapshot repositories keep their objects; without it, an
//!   `s3` repository fails verification as an unreachable S3 would;
//! - `RUST_LOG` (default `info`); logs go to stderr.
//!
//! Prints `listening on {addr}` on stdout once it accepts connections.
//! SIGTERM or Ctrl-C stops it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use esaas_tests::es_standin::EsStandin;
use tracing_subscriber::EnvFilter;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn millis(name: &str, default: u64) -> anyhow::Result<Duration> {
    let v = env_or(name, &default.to_string());
    v.trim()
        .parse()
        .map(Duration::from_millis)
        .with_context(|| format!("{name}={v}"))
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
            Err(_) => {
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
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let listen: SocketAddr = env_or("ES_STANDIN_LISTEN_ADDR", "127.0.0.1:9200")
        .parse()
        .context("ES_STANDIN_LISTEN_ADDR")?;
    let drain_delay = millis("ES_STANDIN_DRAIN_DELAY_MS", 3000)?;
    let client = match std::env::var("ES_STANDIN_KUBE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let uri = url.trim().parse().context("ES_STANDIN_KUBE_URL")?;
            kube::Client::try_from(kube::Config::new(uri))?
        }
        _ => kube::Client::try_default()
            .await
            .context("no ES_STANDIN_KUBE_URL and no kubeconfig")?,
    };
    let es = EsStandin::start_on(listen, drain_delay).await?;
    if let Ok(s3) = std::env::var("ES_STANDIN_S3_ENDPOINT")
        && !s3.trim().is_empty()
    {
        es.set_s3_endpoint(s3.trim());
    }
    let follower = es.follow(client);
    println!("listening on {}", es.addr());
    tracing::info!(addr = %es.addr(), ?drain_delay, "Elasticsearch stand-in serving");
    terminated().await;
    es.stop();
    let _ = follower.await;
    Ok(())
}
