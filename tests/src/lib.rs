//! Test support: a fresh migrated database per test, the real server on a
//! free port (in-process here, or as a child process of the real binary, see
//! [`process`]), and authenticated clients. Nothing of the product is replaced.

pub mod eks_nodes;
pub mod es_standin;
pub mod faultproxy;
pub mod grpc_faults;
pub mod kube_standin;
pub mod moto;
pub mod otlp;
pub mod pgproxy;
pub mod pki;
pub mod process;
pub mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use esaas_proto::v1 as pb;
use esaas_proto::v1::admin_service_client::AdminServiceClient;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_proto::v1::operation_service_client::OperationServiceClient;
use rand::Rng;
use tonic::Request;
use tonic::transport::Channel;

pub use process::{ServerProcess, WorkerProcess, esaas_bin, free_port, sigterm};

/// The bootstrap admin key of every test server.
pub const ADMIN_KEY: &str = "test-bootstrap-admin-key-0123456789";

/// URL of a PostgreSQL role that may create databases.
pub fn admin_database_url() -> String {
    std::env::var("ESAAS_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| {
            panic!("set ESAAS_TEST_DATABASE_URL to a PostgreSQL URL that may CREATE DATABASE (`make test` does)")
        })
}

/// Like [`admin_database_url`], as an error instead of a panic (for the benchmark).
pub fn try_admin_database_url() -> anyhow::Result<String> {
    std::env::var("ESAAS_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .map_err(|_| {
            anyhow::anyhow!(
                "set ESAAS_TEST_DATABASE_URL to a PostgreSQL URL that may CREATE DATABASE (scripts/ensure-postgres.sh prints one)"
            )
        })
}

fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

/// A database of its own, migrated, dropped when the value is dropped.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates and migrates a database with a random name.
    pub async fn new() -> Self {
        let admin = admin_database_url();
        let name = format!("esaas_test_{:016x}", rand::rng().random::<u64>());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create the test database");
        pool.close().await;
        let url = with_db(&admin, &name);
        let store = esaas_store::Store::connect(&url, 2)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate");
        store.pool().close().await;
        Self { url, name }
    }

    /// Like [`TestDb::new`], returning an error instead of panicking; with
    /// `migrate = false` the database is left empty (a cold start applies
    /// the migrations itself). For the benchmark, which must not panic on a
    /// database it cannot reach.
    pub async fn try_create(migrate: bool) -> anyhow::Result<Self> {
        use anyhow::Context;
        let admin = try_admin_database_url()?;
        let name = format!("esaas_test_{:016x}", rand::rng().random::<u64>());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .context("connecting to ESAAS_TEST_DATABASE_URL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .with_context(|| format!("creating database {name}"))?;
        pool.close().await;
        // From here on, dropping `db` drops the database again.
        let db = Self {
            url: with_db(&admin, &name),
            name,
        };
        if migrate {
            let store = esaas_store::Store::connect(&db.url, 2)
                .await
                .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", db.name))?;
            store
                .migrate()
                .await
                .map_err(|e| anyhow::anyhow!("migrating {}: {e}", db.name))?;
            store.pool().close().await;
        }
        Ok(db)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool on the test database, for fixtures the API cannot create.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = admin_database_url();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a runtime of our own on another thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&pool)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// Test configuration: defaults, a test database, port 0, a quick watch re-read.
pub fn config(db: &TestDb) -> esaas_runtime::Config {
    let mut c = esaas_runtime::Config::load(None).expect("default configuration");
    c.listen_addr = "127.0.0.1:0".parse().expect("address");
    c.database_url = toml_secret(&db.url);
    c.bootstrap_admin_key = toml_secret(ADMIN_KEY);
    c.database_max_connections = 10;
    c.watch_poll_seconds = 30;
    // Tests fire requests as fast as they can; the rate-limit test turns it on.
    c.rate_limit_per_second = 0.0;
    c
}

fn toml_secret(s: &str) -> esaas_runtime::config::Secret {
    s.into()
}

/// A running control plane with its own database.
pub struct App {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database.
    pub db: TestDb,
    running: Option<esaas_runtime::Running>,
    channel: Channel,
}

/// Starts the server in-process on a fresh database.
pub async fn spawn_app() -> App {
    spawn_app_with(|_| {}).await
}

/// Starts the server in-process on a fresh database, with a configuration tweak.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut esaas_runtime::Config)) -> App {
    let db = TestDb::new().await;
    let mut c = config(&db);
    tweak(&mut c);
    let running = esaas_runtime::start(&c).await.expect("start the server");
    let addr = running.addr;
    App {
        addr,
        db,
        running: Some(running),
        channel: channel(addr).await,
    }
}

/// Quick leases, claims and gates for tests with workers.
pub fn fast(c: &mut esaas_runtime::Config) {
    c.lease_ttl_seconds = 2;
    c.reap_interval_ms = 100;
    c.claim_interval_ms = 100;
    c.retry_backoff_base_seconds = 0;
    c.retry_backoff_max_seconds = 0;
    c.worker.poll_interval_ms = 20;
    c.worker.gate_timeout_seconds = 30;
    c.worker.shutdown_grace_seconds = 5;
}

/// Starts the server in-process with `workers` in-process workers driving a
/// simulated world (in the test database) with `sim`'s delays.
pub async fn spawn_app_with_workers(
    workers: u32,
    sim: sim::SimConfig,
    tweak: impl FnOnce(&mut esaas_runtime::Config),
) -> (App, sim::Sim) {
    let db = TestDb::new().await;
    let simulator = sim::Sim::connect(&db.url, sim).await.expect("simulator");
    let mut c = config(&db);
    fast(&mut c);
    c.workers = workers;
    tweak(&mut c);
    let backends = std::sync::Arc::new(esaas_worker::Backends {
        node_groups: simulator.clone(),
        workloads: simulator.clone(),
        elasticsearch: simulator.clone(),
    });
    let running = esaas_runtime::start_with_workers(&c, backends)
        .await
        .expect("start the server");
    let addr = running.addr;
    let app = App {
        addr,
        db,
        running: Some(running),
        channel: channel(addr).await,
    };
    (app, simulator)
}

/// A channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// `msg` with `authorization: Bearer key` (no header when `key` is empty).
pub fn authed<T>(key: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if !key.is_empty() {
        let value = format!("Bearer {key}").parse().expect("metadata value");
        req.metadata_mut().insert("authorization", value);
    }
    req
}

/// The SDK on `ch`, as `key`: how the tests set things up, as a client would.
pub fn sdk(ch: Channel, key: &str) -> esaas_client::Client {
    esaas_client::Client::from_channel(ch, key).expect("a valid key")
}

/// Creates tenant `id` (default quota) as the platform admin, on the server behind `ch`.
pub async fn create_tenant_on(ch: Channel, id: &str) {
    sdk(ch, ADMIN_KEY)
        .create_tenant(pb::CreateTenantRequest {
            tenant_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("create tenant");
}

/// A new WORKER key from the server behind `ch`.
pub async fn worker_key_on(ch: Channel) -> String {
    sdk(ch, ADMIN_KEY)
        .create_api_key(pb::CreateApiKeyRequest {
            parent: String::new(),
            api_key: Some(pb::ApiKey {
                display_name: "workers".into(),
                role: pb::Role::Worker as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("worker key")
        .secret
}

/// Keys of one tenant.
pub struct TenantKeys {
    /// `tenants/{id}`.
    pub name: String,
    /// A TENANT_ADMIN key.
    pub admin: String,
    /// A TENANT_VIEWER key.
    pub viewer: String,
    /// The admin key's resource name.
    pub admin_key_name: String,
}

impl App {
    /// The channel to the server.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A cluster client.
    pub fn clusters(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel())
    }

    /// An operation client.
    pub fn operations(&self) -> OperationServiceClient<Channel> {
        OperationServiceClient::new(self.channel())
    }

    /// An admin client.
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel())
    }

    /// The SDK on this server, as `key`.
    pub fn sdk(&self, key: &str) -> esaas_client::Client {
        sdk(self.channel(), key)
    }

    /// Creates tenant `id` with `quota` (or the default) and an admin and a viewer key.
    pub async fn tenant_with_quota(&self, id: &str, quota: Option<pb::Quota>) -> TenantKeys {
        let admin = self.sdk(ADMIN_KEY);
        admin
            .create_tenant(pb::CreateTenantRequest {
                tenant_id: id.into(),
                tenant: Some(pb::Tenant {
                    display_name: format!("team {id}"),
                    quota,
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("create tenant");
        let key = |role: pb::Role| pb::CreateApiKeyRequest {
            parent: format!("tenants/{id}"),
            api_key: Some(pb::ApiKey {
                display_name: format!("{role:?}"),
                role: role as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let a = admin
            .create_api_key(key(pb::Role::TenantAdmin))
            .await
            .expect("create admin key");
        let v = admin
            .create_api_key(key(pb::Role::TenantViewer))
            .await
            .expect("create viewer key");
        TenantKeys {
            name: format!("tenants/{id}"),
            admin: a.secret,
            viewer: v.secret,
            admin_key_name: a.api_key.map(|k| k.name).unwrap_or_default(),
        }
    }

    /// Creates a ROLE_WORKER key.
    pub async fn worker_key(&self) -> String {
        worker_key_on(self.channel()).await
    }

    /// Polls GetCluster until `done` holds (panics after `within`).
    pub async fn wait_cluster(
        &self,
        name: &str,
        within: Duration,
        done: impl Fn(&pb::Cluster) -> bool,
    ) -> pb::Cluster {
        wait_cluster_at(self.channel(), name, within, done).await
    }

    /// Polls GetOperation until `done` holds (panics after `within`).
    pub async fn wait_operation(
        &self,
        name: &str,
        within: Duration,
        done: impl Fn(&pb::Operation) -> bool,
    ) -> pb::Operation {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let op = self
                .operations()
                .get_operation(authed(
                    ADMIN_KEY,
                    pb::GetOperationRequest { name: name.into() },
                ))
                .await
                .expect("get operation")
                .into_inner()
                .operation
                .expect("operation");
            if done(&op) {
                return op;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "operation {name} did not get there in {within:?}: {op:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates tenant `id` with the default quota.
    pub async fn tenant(&self, id: &str) -> TenantKeys {
        self.tenant_with_quota(id, None).await
    }

    /// Creates cluster `cluster_id` in `tenant` with `nodes` small nodes.
    pub async fn create_cluster(
        &self,
        key: &str,
        tenant: &str,
        cluster_id: &str,
        nodes: i32,
    ) -> pb::CreateClusterResponse {
        self.clusters()
            .create_cluster(authed(key, create_request(tenant, cluster_id, nodes)))
            .await
            .expect("create cluster")
            .into_inner()
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A valid spec: one master+data node set of `nodes` small nodes, 100 GiB each.
pub fn spec(nodes: i32) -> pb::ClusterSpec {
    pb::ClusterSpec {
        version: "8.17.10".into(),
        node_sets: vec![pb::NodeSet {
            name: "default".into(),
            roles: vec![pb::NodeRole::Master as i32, pb::NodeRole::Data as i32],
            count: nodes,
            size_class: "small".into(),
            storage_gib: 100,
            storage_iops: 0,
            storage_throughput_mibps: 0,
        }],
        zone_count: 0,
        zones: Vec::new(),
        volume_retention: 0,
        deletion_protection: false,
        maintenance_window: None,
        change_freezes: Vec::new(),
        snapshot_policy: None,
    }
}

/// A valid CreateClusterRequest.
pub fn create_request(tenant: &str, cluster_id: &str, nodes: i32) -> pb::CreateClusterRequest {
    pb::CreateClusterRequest {
        parent: format!("tenants/{tenant}"),
        cluster_id: cluster_id.into(),
        cluster: Some(pb::Cluster {
            spec: Some(spec(nodes)),
            ..Default::default()
        }),
        request_id: String::new(),
        validate_only: false,
        restore_from: None,
    }
}

/// The field names of a status's `BadRequest` details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The `ErrorInfo` reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|e| e.reason)
        .unwrap_or_default()
}

/// Polls GetCluster on `channel` until `done` holds (panics after `within`).
pub async fn wait_cluster_at(
    channel: Channel,
    name: &str,
    within: Duration,
    done: impl Fn(&pb::Cluster) -> bool,
) -> pb::Cluster {
    let deadline = tokio::time::Instant::now() + within;
    let mut client = ClusterServiceClient::new(channel);
    loop {
        if let Ok(r) = client
            .get_cluster(authed(
                ADMIN_KEY,
                pb::GetClusterRequest { name: name.into() },
            ))
            .await
            && let Some(c) = r.into_inner().cluster
        {
            if done(&c) {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cluster {name} did not get there in {within:?}: {c:#?}"
            );
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cluster {name} unreadable for {within:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The state of a cluster.
pub fn state(c: &pb::Cluster) -> i32 {
    c.status.as_ref().map(|s| s.state).unwrap_or_default()
}
