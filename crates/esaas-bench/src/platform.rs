//! The platform under measurement: `esaas serve` as a child process on a
//! database of its own, `esaas-test-worker` processes driving the simulated
//! world, and the calls that set up tenants, keys and clusters.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use esaas_proto::v1 as pb;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::{ADMIN_KEY, TestDb};
use tokio::time::Instant;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::proc::{self, Child};

/// Where the binaries are and where files go.
#[derive(Debug, Clone)]
pub struct Env {
    /// `esaas`.
    pub esaas: PathBuf,
    /// `esaas-test-worker`.
    pub test_worker: PathBuf,
    /// `esaas-bench` itself (for the empty server).
    pub bench: PathBuf,
    /// Configuration files, logs, captured responses.
    pub work_dir: PathBuf,
}

impl Env {
    /// A path in the work directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work_dir.join(name)
    }
}

/// `authorization: Bearer <key>`, parsed once, for the measured calls: those stay raw
/// tonic calls (no SDK retries), so that what the benchmark sees is what the server did.
#[derive(Clone)]
pub struct Auth(MetadataValue<Ascii>);

impl Auth {
    /// The header for `key`.
    pub fn new(key: &str) -> anyhow::Result<Self> {
        Ok(Self(
            format!("Bearer {key}")
                .parse()
                .context("an API key that is not valid metadata")?,
        ))
    }

    /// The bootstrap admin key of the benchmark's servers.
    pub fn admin() -> anyhow::Result<Self> {
        Self::new(ADMIN_KEY)
    }

    /// `msg` with the header.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("authorization", self.0.clone());
        r
    }
}

/// `esaas serve` settings the scenarios change.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Extra TOML appended to the configuration.
    pub extra_toml: String,
    /// `--migrate`.
    pub migrate: bool,
}

/// The configuration every benchmark server runs with: the built-in defaults
/// except that per-tenant rate limits are off (a load generator is one
/// tenant sending as fast as it can) and the pool size is stated.
pub const BASE_CONFIG: &str = "# esaas-bench: defaults, rate limits off\n\
rate_limit_per_second = 0.0\n\
database_max_connections = 20\n";

/// Size of the server's database pool, which the database baseline copies.
pub const SERVER_POOL: u32 = 20;

/// A running `esaas serve`.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process.
    pub child: Child,
    /// How long it took from spawn to SERVING.
    pub started_in: Duration,
}

impl Server {
    /// Starts `esaas serve` on `db` and waits until it serves.
    pub async fn start(
        env: &Env,
        db: &TestDb,
        label: &str,
        opts: &ServeOptions,
    ) -> anyhow::Result<Self> {
        let port = proc::free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let config = env.file(&format!("{label}.toml"));
        std::fs::write(&config, format!("{BASE_CONFIG}{}\n", opts.extra_toml))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = tokio::process::Command::new(&env.esaas);
        cmd.arg("serve").arg("--config").arg(&config);
        if opts.migrate {
            cmd.arg("--migrate");
        }
        cmd.env("DATABASE_URL", &db.url)
            .env("ESAAS_LISTEN_ADDR", addr.to_string())
            .env("ESAAS_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("ESAAS_WORKERS", "0")
            .env("RUST_LOG", "info");
        let spawned = Instant::now();
        let mut child = Child::spawn(
            format!("esaas serve ({label})"),
            cmd,
            &env.file(&format!("{label}.log")),
        )?;
        let started_in = child
            .wait_serving(addr, spawned, Duration::from_secs(60))
            .await?;
        Ok(Self {
            addr,
            child,
            started_in,
        })
    }

    /// Stops it gracefully.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.child.stop(Duration::from_secs(20)).await
    }
}

/// Delays of the simulated world a worker drives (milliseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct SimDelays {
    /// Every mutating call sleeps this long first.
    pub step_ms: u64,
    /// Node groups stay CREATING this long.
    pub node_group_ms: u64,
    /// Pods become ready this long after an apply.
    pub pods_ready_ms: u64,
}

/// How often a worker checks a closed gate again: the product's default.
pub const WORKER_POLL_MS: u64 = 2_000;

/// One `esaas-test-worker`.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Its worker id.
    pub id: String,
    /// Operations it runs at once.
    pub capacity: u32,
    /// Delays of the simulated world it drives.
    pub delays: SimDelays,
    /// How often it checks a closed gate again, ms.
    pub poll_ms: u64,
    /// Connections of its simulator's pool.
    pub sim_pool: u32,
    /// Observations it runs at once.
    pub observe_capacity: u32,
}

/// Starts `w`, connecting to `control_plane` with `key` and driving the
/// simulated world in the database at `sim_db`.
pub fn spawn_worker(
    env: &Env,
    control_plane: &str,
    key: &str,
    sim_db: &str,
    w: &WorkerSpec,
) -> anyhow::Result<Child> {
    let mut cmd = tokio::process::Command::new(&env.test_worker);
    cmd.env("ESAAS_CONTROL_PLANE_URL", control_plane)
        .env("ESAAS_WORKER_KEY", key)
        .env("ESAAS_WORKER_ID", &w.id)
        .env("ESAAS_WORKER_CAPACITY", w.capacity.to_string())
        .env("SIM_DATABASE_URL", sim_db)
        .env("SIM_STEP_DELAY_MS", w.delays.step_ms.to_string())
        .env(
            "SIM_NODE_GROUP_DELAY_MS",
            w.delays.node_group_ms.to_string(),
        )
        .env(
            "SIM_PODS_READY_DELAY_MS",
            w.delays.pods_ready_ms.to_string(),
        )
        .env("EXEC_POLL_MS", w.poll_ms.to_string())
        .env("SIM_POOL_SIZE", w.sim_pool.to_string())
        .env(
            "ESAAS_WORKER_OBSERVE_CAPACITY",
            w.observe_capacity.to_string(),
        )
        .env("EXEC_GATE_TIMEOUT_MS", "600000")
        .env("RUST_LOG", "warn");
    Child::spawn(
        format!("esaas-test-worker {}", w.id),
        cmd,
        &env.file(&format!("{}.log", w.id)),
    )
}

/// A quota nothing in a benchmark reaches.
pub fn unlimited_quota() -> pb::Quota {
    pb::Quota {
        max_clusters: 1_000_000,
        max_nodes: 100_000_000,
        max_storage_gib: 1_000_000_000_000,
    }
}

/// The platform admin, through the SDK, on `channel`.
fn admin(channel: &Channel) -> anyhow::Result<esaas_client::Client> {
    Ok(esaas_client::Client::from_channel(
        channel.clone(),
        ADMIN_KEY,
    )?)
}

/// Creates tenant `id` with an unlimited quota and returns a TENANT_ADMIN key.
pub async fn tenant(channel: &Channel, id: &str) -> anyhow::Result<String> {
    let admin = admin(channel)?;
    admin
        .create_tenant(pb::CreateTenantRequest {
            tenant_id: id.into(),
            tenant: Some(pb::Tenant {
                display_name: format!("bench {id}"),
                quota: Some(unlimited_quota()),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .with_context(|| format!("creating tenant {id}"))?;
    let key = admin
        .create_api_key(pb::CreateApiKeyRequest {
            parent: format!("tenants/{id}"),
            api_key: Some(pb::ApiKey {
                display_name: "bench".into(),
                role: pb::Role::TenantAdmin as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .with_context(|| format!("creating a key for tenant {id}"))?;
    Ok(key.secret)
}

/// Creates a ROLE_WORKER key.
pub async fn worker_key(channel: &Channel) -> anyhow::Result<String> {
    let key = admin(channel)?
        .create_api_key(pb::CreateApiKeyRequest {
            parent: String::new(),
            api_key: Some(pb::ApiKey {
                display_name: "bench workers".into(),
                role: pb::Role::Worker as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .context("creating a worker key")?;
    Ok(key.secret)
}

/// Creates cluster `cluster_id` (3 small nodes) in `tenant`.
pub async fn create_cluster(
    client: &mut ClusterServiceClient<Channel>,
    auth: &Auth,
    tenant: &str,
    cluster_id: &str,
) -> anyhow::Result<pb::CreateClusterResponse> {
    Ok(client
        .create_cluster(auth.req(esaas_tests::create_request(tenant, cluster_id, 3)))
        .await
        .with_context(|| format!("creating cluster {tenant}/{cluster_id}"))?
        .into_inner())
}

/// Waits until `n` workers are connected.
pub async fn wait_workers(channel: &Channel, n: usize, within: Duration) -> anyhow::Result<()> {
    let admin = admin(channel)?;
    let deadline = Instant::now() + within;
    loop {
        let got = admin.list_workers().await.context("ListWorkers")?.len();
        if got >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {got} of {n} workers connected within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `msg` encoded to `path`.
pub fn save<M: prost::Message>(path: &Path, msg: &M) -> anyhow::Result<()> {
    std::fs::write(path, msg.encode_to_vec()).with_context(|| format!("writing {}", path.display()))
}
