//! Child processes of tests: the `esaas` binary (`esaas serve`), the
//! `esaas-test-worker` binary on the simulated world, where their binaries
//! are, free ports to give them, and SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tonic::transport::Channel;

use crate::sim::SimConfig;
use crate::{ADMIN_KEY, TestDb};

/// The esaas binary built next to the tests (or `ESAAS_BIN`).
pub fn esaas_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ESAAS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/esaas
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("esaas"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin esaas` (make test does)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `esaas serve` as a child process.
pub struct ServerProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its log (stderr, at `info`).
    pub log: PathBuf,
    child: tokio::process::Child,
}

impl ServerProcess {
    /// Starts the real binary on `db` and waits until health says SERVING.
    /// Its watch streams re-read only every 5 minutes without a
    /// notification, so anything faster than that came through LISTEN/NOTIFY.
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, free_port(), "").await
    }

    /// Like `start`, on `port`, with `extra` TOML appended to the configuration.
    pub async fn start_with(db: &TestDb, port: u16, extra: &str) -> Self {
        Self::start_with_env(db, port, extra, &[]).await
    }

    /// Like `start_with`, with more environment variables.
    pub async fn start_with_env(
        db: &TestDb,
        port: u16,
        extra: &str,
        env: &[(&str, String)],
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let probe = Channel::from_shared(format!("http://{addr}")).expect("uri");
        Self::spawn(db, addr, extra, env, probe).await
    }

    /// Like `start_with_env`, serving TLS (its `extra` configures `[tls]`):
    /// health is asked over `https://localhost:{port}`, verified with `ca_pem`.
    pub async fn start_tls(
        db: &TestDb,
        port: u16,
        extra: &str,
        env: &[(&str, String)],
        ca_pem: &str,
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let probe = Channel::from_shared(format!("https://localhost:{port}"))
            .expect("uri")
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem)),
            )
            .expect("TLS probe");
        Self::spawn(db, addr, extra, env, probe).await
    }

    async fn spawn(
        db: &TestDb,
        addr: SocketAddr,
        extra: &str,
        env: &[(&str, String)],
        probe: tonic::transport::Endpoint,
    ) -> Self {
        let config = std::env::temp_dir().join(format!("esaas-test-{}.toml", addr.port()));
        std::fs::write(&config, format!("watch_poll_seconds = 300\n{extra}\n"))
            .expect("write config");
        let log = std::env::temp_dir().join(format!("esaas-serve-{}.log", addr.port()));
        let mut child = tokio::process::Command::new(esaas_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", &db.url)
            .env("ESAAS_LISTEN_ADDR", addr.to_string())
            .env("ESAAS_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn esaas serve");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ch) = probe.connect().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
                if let Ok(r) = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    && r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return Self { addr, log, child };
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "esaas serve exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "esaas serve did not become healthy on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id, to tell a restarted server from the same one.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILLs the process.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERMs the process and waits up to `timeout` for it to exit: its
    /// exit status and how long it took, `None` if it did not exit in time.
    pub async fn terminate(
        mut self,
        timeout: Duration,
    ) -> Option<(std::process::ExitStatus, Duration)> {
        let started = std::time::Instant::now();
        let status = sigterm(&mut self.child, timeout).await?;
        Some((status, started.elapsed()))
    }
}

/// SIGTERMs `child` and waits up to `timeout` for it to exit: its exit
/// status, `None` if it did not exit in time.
pub async fn sigterm(
    child: &mut tokio::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let pid = child.id()?;
    let _ = tokio::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await;
    tokio::time::timeout(timeout, child.wait()).await.ok()?.ok()
}

/// The `esaas-test-worker` binary built next to the tests (or `ESAAS_TEST_WORKER_BIN`).
/// Integration tests of this crate may use `env!("CARGO_BIN_EXE_esaas-test-worker")` instead.
fn test_worker_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("ESAAS_TEST_WORKER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/esaas-test-worker
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("esaas-test-worker"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p esaas-tests --bins`",
        bin.display()
    );
    bin
}

/// An `esaas-test-worker` child process.
pub struct WorkerProcess {
    child: tokio::process::Child,
}

impl WorkerProcess {
    /// Starts a worker with id `id` that connects to `control_plane`
    /// (`http://host:port`) with the WORKER key `key` and drives the world of
    /// the simulator in `sim_database_url` with `sim`'s delays. `poll` and
    /// `gate_timeout` are the executor's timing. Its logs go to the test's
    /// stderr at `RUST_LOG` (default `warn`).
    pub fn spawn(
        control_plane: &str,
        key: &str,
        id: &str,
        sim_database_url: &str,
        sim: SimConfig,
        poll: Duration,
        gate_timeout: Duration,
    ) -> Self {
        let ms = |d: Duration| d.as_millis().to_string();
        let child = tokio::process::Command::new(test_worker_bin())
            .env("ESAAS_CONTROL_PLANE_URL", control_plane)
            .env("ESAAS_WORKER_KEY", key)
            .env("ESAAS_WORKER_ID", id)
            .env("SIM_DATABASE_URL", sim_database_url)
            .env("SIM_STEP_DELAY_MS", ms(sim.step_delay))
            .env("SIM_NODE_GROUP_DELAY_MS", ms(sim.node_group_delay))
            .env("SIM_PODS_READY_DELAY_MS", ms(sim.pods_ready_delay))
            .env("SIM_DRAIN_DELAY_MS", ms(sim.drain_delay))
            .env("EXEC_POLL_MS", ms(poll))
            .env("EXEC_GATE_TIMEOUT_MS", ms(gate_timeout))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn esaas-test-worker");
        Self { child }
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILLs it (a crash: no hand-back) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERMs it (a graceful shutdown: leases handed back) and waits up
    /// to `timeout` for it to exit; its exit status, `None` if it did not exit.
    pub async fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        sigterm(&mut self.child, timeout).await
    }
}
