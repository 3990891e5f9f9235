//! Processes under measurement: spawning the binaries, waiting until they
//! serve, stopping them, and reading their memory, threads and CPU time
//! from `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A binary next to this one (`target/<profile>/NAME`), unless `explicit` names one.
pub fn binary(explicit: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating esaas-bench")?;
    let bin = exe
        .parent()
        .map(|dir| dir.join(name))
        .ok_or_else(|| anyhow!("esaas-bench has no directory"))?;
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build [--release] -p esaas -p esaas-tests --bins`",
            bin.display()
        );
    }
    Ok(bin)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A channel to `addr` (one HTTP/2 connection).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// A child process that is killed when dropped.
pub struct Child {
    /// What it is, for messages.
    pub name: String,
    /// Its stderr.
    pub log: PathBuf,
    child: tokio::process::Child,
    pid: u32,
}

impl Child {
    /// Spawns `cmd` with stdin and stdout closed and stderr to `log`.
    pub fn spawn(
        name: impl Into<String>,
        mut cmd: tokio::process::Command,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let name = name.into();
        let file = std::fs::File::create(log)
            .with_context(|| format!("creating log {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Self {
            name,
            log: log.to_path_buf(),
            child,
            pid,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// An error if it has exited, naming its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log is {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits until `grpc.health.v1` on `addr` says SERVING; the time it took
    /// from `since`. Fails if the process exits or `within` passes.
    pub async fn wait_serving(
        &mut self,
        addr: SocketAddr,
        since: Instant,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let deadline = since + within;
        loop {
            if serving(addr).await {
                return Ok(since.elapsed());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not serve on {addr} within {within:?}; its log is {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(process = %self.name, "did not stop after SIGTERM; killing it");
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// Whether `addr` answers health checks with SERVING.
async fn serving(addr: SocketAddr) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
    else {
        return false;
    };
    let mut health = HealthClient::new(channel);
    matches!(
        health.check(HealthCheckRequest { service: String::new() }).await,
        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

/// Memory and threads of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Status {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
    /// Threads.
    pub threads: u64,
}

/// Reads `/proc/<pid>/status`.
pub fn status(pid: u32) -> anyhow::Result<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {name}"))?;
        line[name.len()..]
            .split_whitespace()
            .next()
            .ok_or_else(|| anyhow!("/proc/{pid}/status: empty {name}"))?
            .parse()
            .with_context(|| format!("/proc/{pid}/status: {name}"))
    };
    Ok(Status {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after it do not.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat is malformed"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14 and stime 15.
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat is short"))?
            .parse::<f64>()?)
    };
    Ok((tick(11)? + tick(12)?) / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux everywhere we run).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_status_and_cpu() {
        let me = std::process::id();
        let s = status(me).expect("status");
        assert!(
            s.rss_kib > 0 && s.hwm_kib >= s.rss_kib && s.threads >= 1,
            "{s:?}"
        );
        assert!(cpu_seconds(me).expect("cpu") >= 0.0);
    }
}
