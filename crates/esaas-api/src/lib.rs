//! The esaas gRPC services. Handlers are thin: authenticate, parse the
//! request into domain types (each input error names its field), authorize,
//! call the store, convert back. Errors become statuses in `error::to_status`.

mod admin;
pub mod auth;
mod clusters;
pub mod error;
mod fanout;
mod operations;
pub mod page;
pub mod rate;
pub mod rpc;
pub mod size_limit;
mod streams;
mod watch;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use esaas_core::Result;
use esaas_core::auth::Principal;
use esaas_core::lifecycle::{Ctx, Rules};
use esaas_core::tenant::Quota;
use esaas_proto::v1 as pb;
use esaas_store::{ChangeFeed, Idempotency, Mode, Outcome, Store};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use auth::Authenticator;

/// A cluster's credentials, read where they live (its Kubernetes Secret).
#[derive(Clone)]
pub struct ClusterCredentials {
    /// Password of the `elastic` user.
    pub password: String,
    /// PEM CA certificate of the cluster's HTTPS endpoint.
    pub ca_pem: String,
}

impl std::fmt::Debug for ClusterCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCredentials { <redacted> }")
    }
}

/// Where `GetClusterCredentials` reads credentials from. The platform never
/// stores them; an implementation reads the cluster's Kubernetes Secret.
pub trait CredentialSource: Send + Sync + 'static {
    /// The credentials of `tenant`/`cluster`, `None` while they do not exist.
    fn read<'a>(
        &'a self,
        tenant: &'a esaas_core::names::TenantId,
        cluster: &'a esaas_core::names::ClusterId,
    ) -> futures::future::BoxFuture<'a, Result<Option<ClusterCredentials>>>;
}

/// A shared credential source.
#[derive(Clone)]
pub struct Credentials(pub Arc<dyn CredentialSource>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials")
    }
}

/// What the services need to know from configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What may be asked for (the catalog) and the attempt budget of operations.
    pub rules: Rules,
    /// Quota of a tenant created without one.
    pub default_quota: Quota,
    /// How often a watch stream re-reads even without a notification (a
    /// safety net; notifications normally wake it at once).
    pub watch_poll: Duration,
    /// Lease time-to-live and retry backoff.
    pub lease: esaas_store::LeaseSettings,
    /// How often a worker stream looks for queued work without a notification.
    pub claim_interval: Duration,
    /// Where cluster credentials are read (none: GetClusterCredentials is UNAVAILABLE).
    pub credentials: Option<Credentials>,
    /// Requests per tenant.
    pub rate: rate::Rate,
    /// How long a valid API key is remembered (zero: looked up every call).
    pub auth_cache_ttl: Duration,
    /// How live clusters are observed and repaired.
    pub observe: ObserveSettings,
    /// Watch streams one tenant (or one key without a tenant) may hold open
    /// at once in this process.
    pub max_watch_streams_per_tenant: usize,
}

/// The observation schedule and the repair rules.
#[derive(Debug, Clone)]
pub struct ObserveSettings {
    /// Interval between two observations of one cluster.
    pub interval: Duration,
    /// Spread of the interval (0 to 1).
    pub jitter: f64,
    /// How long a worker may take for one observation.
    pub deadline: Duration,
    /// When drift is repaired, and how repairs back off.
    pub rules: esaas_core::lifecycle::observe::ObserveRules,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        ObserveSettings {
            interval: Duration::from_secs(30),
            jitter: 0.2,
            deadline: Duration::from_secs(20),
            rules: Default::default(),
        }
    }
}

/// Shared state of every service.
#[derive(Debug, Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    auth: Authenticator,
    feed: ChangeFeed,
    settings: Settings,
    /// Cancelled when the server shuts down: every stream ends.
    shutdown: tokio_util::sync::CancellationToken,
    /// Per-tenant rate limits.
    limiter: rate::Limiter,
    /// Event reads shared by the watchers of a cluster.
    events: fanout::EventReads,
    /// Notifications routed to the watchers of each cluster.
    watches: fanout::WatchHub,
    /// Notifications and shared reads for the watchers of each operation.
    operations: fanout::OperationHub,
    /// Open watch streams per tenant.
    streams: streams::StreamCaps,
}

/// A response to a mutating call. A `validate_only` answer drops what points
/// at an operation, which was rolled back with the rest.
pub trait DryRun {
    /// Makes the answer a dry run's.
    fn dry_run(&mut self) {}
}

/// The cluster of a dry-run answer: as it would look, minus the rolled-back operation.
fn dry_run_cluster(cluster: Option<&mut pb::Cluster>) {
    if let Some(status) = cluster.and_then(|c| c.status.as_mut()) {
        status.current_operation.clear();
        status
            .conditions
            .retain(|c| c.r#type != esaas_core::cluster::ConditionType::OperationQueued.as_str());
        status.message = "validate_only: the request is valid; nothing was changed".into();
    }
}

impl Api {
    /// Builds the services' state and starts this process's change feed.
    /// `internal_worker_key` is the in-process worker pool's credential.
    pub fn new(
        store: Store,
        bootstrap_admin_key: Option<&str>,
        internal_worker_key: Option<&str>,
        settings: Settings,
    ) -> Self {
        let mut auth =
            Authenticator::new(store.clone(), bootstrap_admin_key, settings.auth_cache_ttl);
        if let Some(key) = internal_worker_key {
            auth = auth.with_internal_worker_key(key);
        }
        let feed = ChangeFeed::start(&store, settings.watch_poll);
        auth.follow(feed.subscribe());
        let watches = fanout::WatchHub::start(feed.subscribe());
        let operations = fanout::OperationHub::start(store.clone(), feed.subscribe());
        let streams = streams::StreamCaps::new(settings.max_watch_streams_per_tenant);
        let limiter = rate::Limiter::new(settings.rate);
        Self {
            inner: Arc::new(Inner {
                store,
                auth,
                feed,
                settings,
                shutdown: tokio_util::sync::CancellationToken::new(),
                limiter,
                events: fanout::EventReads::default(),
                watches,
                operations,
                streams,
            }),
        }
    }

    /// Ends every open stream: watchers get UNAVAILABLE and resume elsewhere
    /// from their last revision; worker streams close, and their workers reconnect.
    pub fn shutdown_streams(&self) {
        self.inner.shutdown.cancel();
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    async fn principal<T>(&self, req: &tonic::Request<T>) -> Result<Principal> {
        let p = self.inner.auth.authenticate(req.metadata()).await?;
        if let Some(tenant) = &p.tenant {
            tracing::Span::current().record("tenant", tenant.as_str());
        }
        self.inner.limiter.admit(&p)?;
        Ok(p)
    }

    /// Runs a change with AIP-155 idempotency and AIP-163 `validate_only`;
    /// `respond` turns its answer (fresh or replayed) into the response.
    async fn mutate<T: Serialize + DeserializeOwned, R: DryRun>(
        &self,
        call: Call,
        work: impl AsyncFnOnce(&mut esaas_store::Conn) -> Result<T>,
        respond: impl Fn(&T) -> R,
    ) -> Result<R> {
        let Call {
            method,
            scope,
            request_id,
            request_hash,
            validate_only,
        } = call;
        let mode = Mode {
            validate_only,
            idempotency: request_id.map(|request_id| Idempotency {
                scope,
                method,
                request_id,
                request_hash,
            }),
        };
        match self.store().run(&mode, work).await? {
            Outcome::Fresh(t) if validate_only => {
                let mut r = respond(&t);
                r.dry_run();
                Ok(r)
            }
            Outcome::Fresh(t) | Outcome::Replayed(t) => Ok(respond(&t)),
        }
    }
}

/// The context of a command: now, fresh ids, and the trace of this call
/// (so that the worker's spans continue it).
fn command_ctx() -> Ctx {
    Ctx {
        now: esaas_core::now(),
        operation_id: Uuid::now_v7(),
        cluster_uid: Uuid::now_v7(),
        traceparent: esaas_telemetry::context::current_traceparent(),
    }
}

/// Names on the call's span the operation a change queued.
fn record_operation(op: Option<&esaas_core::operation::Operation>) {
    if let Some(op) = op {
        tracing::Span::current().record("operation", op.name().to_string());
    }
}

/// How a mutating call is identified for idempotency.
struct Call {
    /// The RPC.
    method: &'static str,
    /// Whose request ids these are: `tenants/{tenant}` or `platform`.
    scope: String,
    /// The request id, if the caller sent one.
    request_id: Option<Uuid>,
    /// Hash of the request without its request id.
    request_hash: Vec<u8>,
    /// Roll back instead of committing.
    validate_only: bool,
}

/// Hash of a request with its request id cleared by `clear`.
fn request_hash<M: Message + Clone>(m: &M, clear: impl FnOnce(&mut M)) -> Vec<u8> {
    let mut m = m.clone();
    clear(&mut m);
    Sha256::digest(m.encode_to_vec()).to_vec()
}

macro_rules! cluster_change_response {
    ($($t:ty),+) => {$(
        impl DryRun for $t {
            fn dry_run(&mut self) {
                self.operation = None;
                dry_run_cluster(self.cluster.as_mut());
            }
        }
    )+};
}
cluster_change_response!(
    pb::CreateClusterResponse,
    pb::UpdateClusterResponse,
    pb::DeleteClusterResponse
);
impl DryRun for pb::CreateTenantResponse {}
impl DryRun for pb::UpdateTenantQuotaResponse {}
impl DryRun for pb::RetryOperationResponse {}
impl DryRun for pb::OverrideGateResponse {}
impl DryRun for pb::CancelOperationResponse {}
impl DryRun for pb::RescheduleOperationResponse {}
impl DryRun for pb::CreateApiKeyResponse {}
impl DryRun for pb::CreateSnapshotResponse {}
impl DryRun for pb::RestoreSnapshotResponse {}

/// The four esaas services, ready to add to a tonic server.
pub fn services(
    api: Api,
    max_message_bytes: usize,
) -> (
    pb::cluster_service_server::ClusterServiceServer<Api>,
    pb::operation_service_server::OperationServiceServer<Api>,
    pb::admin_service_server::AdminServiceServer<Api>,
    pb::worker_service_server::WorkerServiceServer<Api>,
) {
    (
        pb::cluster_service_server::ClusterServiceServer::new(api.clone())
            .max_decoding_message_size(max_message_bytes),
        pb::operation_service_server::OperationServiceServer::new(api.clone())
            .max_decoding_message_size(max_message_bytes),
        pb::admin_service_server::AdminServiceServer::new(api.clone())
            .max_decoding_message_size(max_message_bytes),
        pb::worker_service_server::WorkerServiceServer::new(api)
            .max_decoding_message_size(max_message_bytes),
    )
}
