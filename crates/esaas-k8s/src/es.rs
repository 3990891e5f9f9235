//! Elasticsearch over HTTPS, trusting only the cluster's own CA and
//! authenticating as `elastic`.
//!
//! How a cluster is reached (URL, CA, password) comes from an [`EsAccess`];
//! the Kubernetes one reads the cluster's Secret. What the calls mean:
//!
//! - [`Elasticsearch::health`]: `_cluster/health`, the effective
//!   `cluster.routing.allocation.exclude._name` from `_cluster/settings`, and
//!   (only when needed) `_cat/shards` to name the first index with
//!   unassigned shards and to count the shards each excluded pod still
//!   holds. A relocating shard counts on its source node until it has moved.
//! - [`Elasticsearch::exclude`]: adds the pod's node name to the persistent
//!   exclusion list, dropping names of nodes that have left and of pods the
//!   target spec wants to keep.
//!
//! While the cluster is red no excluded pod counts as drained (its count is
//! at least the number of unassigned primaries): a pod that dropped out
//! mid-drain may hold the only copy on its disk.
//!
//! Node shutdowns (`restart` around a pod's restart) and voting
//! configuration exclusions are inherent calls of [`EsClient`], in
//! `es_shutdown.rs`; snapshot repositories, snapshots and restores in
//! `es_snapshots.rs`.
//!
//! Fail closed: no endpoint, a refused connection, a timeout, a TLS failure
//! (a certificate not signed by the cluster's CA) or a 5xx is `Ok(None)`
//! ("not reachable"), so the planner waits and never takes an unknown count
//! for zero. 401/403 is a permanent `ES_AUTH` error; anything else
//! unexpected is retryable.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use esaas_core::backend::{Elasticsearch, StepError, StepResult, Target};
use esaas_core::cluster::Health;
use esaas_core::plan::{HealthObs, RestoreObs, node_key};
use esaas_core::snapshots::{RestoreSource, SnapshotObs};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::names;

// Node shutdowns and voting exclusions: more calls on `EsClient`.
#[path = "es_shutdown.rs"]
mod shutdown;

// Snapshot repositories, snapshots and restores: more calls on `EsClient`.
#[path = "es_snapshots.rs"]
mod snapshots;
pub use snapshots::SnapshotInfo;

// Whether a yellow cluster is so only because of a rolling upgrade.
#[path = "es_versions.rs"]
mod versions;

/// The built-in superuser the platform acts as.
pub const ELASTIC_USER: &str = "elastic";

/// The cluster setting that moves shards off named nodes.
pub const EXCLUDE_NAME: &str = "cluster.routing.allocation.exclude._name";

/// The `_cat/shards` columns the client reads.
pub const CAT_SHARDS: &str =
    "/_cat/shards?format=json&h=index,shard,prirep,state,node,unassigned.reason";

/// The `_cat/allocation` columns the client reads: each node's disk use.
pub const CAT_ALLOCATION: &str = "/_cat/allocation?format=json&h=node,disk.percent";

/// One row of `_cat/allocation` (a row without a node is the unassigned shards').
#[derive(Debug, Deserialize)]
struct AllocationRow {
    #[serde(default)]
    node: Option<String>,
    #[serde(default, rename = "disk.percent")]
    disk_percent: Option<String>,
}

/// Clients kept at most (one per cluster); the cache starts over beyond.
const MAX_CACHED_CLIENTS: usize = 512;

/// How to reach one cluster's Elasticsearch.
#[derive(Clone, PartialEq, Eq)]
pub struct EsEndpoint {
    /// Base URL, `https://{host}:{port}` (a path prefix is kept).
    pub url: String,
    /// PEM CA certificate(s): the only roots trusted for this cluster.
    pub ca_pem: String,
    /// Password of `elastic`.
    pub password: String,
    /// The name the server certificate must carry, normally
    /// [`names::http_host`]. The request goes to this name, whatever host
    /// the URL has.
    pub host: String,
    /// Connect here instead of resolving `host` (local setup, tests); its
    /// port, unless 0, replaces the URL's.
    pub resolve: Option<SocketAddr>,
}

impl fmt::Debug for EsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EsEndpoint")
            .field("url", &self.url)
            .field("host", &self.host)
            .field("resolve", &self.resolve)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Where a cluster's Elasticsearch is and how to authenticate to it.
pub trait EsAccess: Send + Sync + 'static {
    /// The endpoint of `t`; `None` while it cannot be known yet (no Secret).
    fn access(&self, t: &Target) -> impl Future<Output = StepResult<Option<EsEndpoint>>> + Send;
}

impl<A: EsAccess> EsAccess for Arc<A> {
    fn access(&self, t: &Target) -> impl Future<Output = StepResult<Option<EsEndpoint>>> + Send {
        self.as_ref().access(t)
    }
}

/// [`Elasticsearch`] over HTTPS. Cheap to clone; keeps one HTTP client (and
/// its connections) per cluster while the CA and address stay the same.
pub struct EsClient<A> {
    inner: Arc<Inner<A>>,
    /// The platform's snapshot bucket; `None`: snapshots off.
    snapshot_bucket: Option<Arc<str>>,
}

impl<A> Clone for EsClient<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            snapshot_bucket: self.snapshot_bucket.clone(),
        }
    }
}

impl<A> fmt::Debug for EsClient<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EsClient")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

struct Inner<A> {
    access: A,
    timeout: Duration,
    clients: Mutex<HashMap<Uuid, Cached>>,
    /// (cluster uid, node id) → node name, as last seen in `_cat/nodes`.
    node_names: Mutex<HashMap<(Uuid, String), String>>,
}

struct Cached {
    key: ClientKey,
    client: reqwest::Client,
}

#[derive(Clone, PartialEq, Eq)]
struct ClientKey {
    ca_pem: String,
    host: String,
    addrs: Vec<SocketAddr>,
}

/// Why a call did not give an answer.
enum Fail {
    /// Nothing answered (or not a trustworthy answer): the caller waits.
    Unreachable(String),
    /// It answered with an error.
    Step(StepError),
}

impl From<StepError> for Fail {
    fn from(e: StepError) -> Self {
        Fail::Step(e)
    }
}

type Call<T> = Result<T, Fail>;

/// One cluster, ready to call.
struct Conn {
    client: reqwest::Client,
    base: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct ClusterHealth {
    status: String,
    #[serde(default)]
    unassigned_shards: u64,
    #[serde(default)]
    initializing_shards: u64,
    #[serde(default)]
    relocating_shards: u64,
    #[serde(default)]
    delayed_unassigned_shards: u64,
}

/// A row of `_cat/shards` (every cat value is a string or null).
#[derive(Debug, Deserialize)]
struct ShardRow {
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    shard: Option<String>,
    #[serde(default)]
    prirep: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default, rename = "unassigned.reason")]
    unassigned_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NodeRow {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ClusterSettings {
    #[serde(default)]
    persistent: serde_json::Map<String, Value>,
    #[serde(default)]
    transient: serde_json::Map<String, Value>,
}

impl ClusterSettings {
    /// The transient value when set (it wins in Elasticsearch), else the persistent one.
    fn effective_exclusions(&self) -> Vec<String> {
        match self.transient.get(EXCLUDE_NAME).and_then(setting_text) {
            Some(v) => split_names(&v),
            None => self
                .persistent
                .get(EXCLUDE_NAME)
                .and_then(setting_text)
                .map(|v| split_names(&v))
                .unwrap_or_default(),
        }
    }

    fn transient_exclusions_set(&self) -> bool {
        self.transient
            .get(EXCLUDE_NAME)
            .and_then(setting_text)
            .is_some()
    }
}

fn setting_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

fn split_names(v: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// `(node set, ordinal)` of a node name (a pod's, [`names::pod`]) of `t`'s
/// cluster (node sets that have left the spec included); `None` for any
/// other name, an earlier cluster's of the same name included.
pub fn parse_node_name(t: &Target, name: &str) -> Option<(String, i32)> {
    names::parse_pod(t, name)
}

/// Whether `t`'s spec keeps the pod named `name` (its node set is in the
/// spec and its ordinal is below the count).
fn wanted(t: &Target, name: &str) -> bool {
    parse_node_name(t, name).is_some_and(|(node_set, ordinal)| {
        t.spec
            .node_sets
            .iter()
            .any(|ns| ns.name == node_set && ordinal < ns.count)
    })
}

/// The nodes a `_cat/shards` node cell names as holding the shard: one
/// node, or for a relocating shard `"{from} -> {ip} {id} {to}"` both.
fn holders(cell: &str) -> Vec<&str> {
    match cell.split_once(" -> ") {
        Some((from, to)) => {
            let mut v = vec![from.trim()];
            if let Some(to) = to.split_whitespace().last() {
                v.push(to);
            }
            v
        }
        None => vec![cell.trim()],
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Why the cluster is not green, naming the first index with unassigned
/// shards (primaries first when red).
fn not_green_reason(status: Health, h: &ClusterHealth, rows: &[ShardRow]) -> String {
    struct Unassigned<'a> {
        index: &'a str,
        primaries: u64,
        replicas: u64,
        why: Option<&'a str>,
    }
    let mut by_index: Vec<Unassigned<'_>> = Vec::new();
    for r in rows {
        if r.state.as_deref() != Some("UNASSIGNED") {
            continue;
        }
        let index = r.index.as_deref().unwrap_or("?");
        let pos = match by_index.iter().position(|u| u.index == index) {
            Some(p) => p,
            None => {
                by_index.push(Unassigned {
                    index,
                    primaries: 0,
                    replicas: 0,
                    why: None,
                });
                by_index.len() - 1
            }
        };
        let u = &mut by_index[pos];
        if r.prirep.as_deref() == Some("p") {
            u.primaries += 1;
        } else {
            u.replicas += 1;
        }
        if u.why.is_none() {
            u.why = r.unassigned_reason.as_deref().filter(|w| !w.is_empty());
        }
    }
    let first = if status == Health::Red {
        by_index
            .iter()
            .position(|u| u.primaries > 0)
            .map(|p| (p, true))
            .or_else(|| (!by_index.is_empty()).then_some((0, false)))
    } else {
        by_index
            .iter()
            .position(|u| u.replicas > 0)
            .map(|p| (p, false))
            .or_else(|| (!by_index.is_empty()).then_some((0, true)))
    };
    if let Some((pos, primaries)) = first {
        let u = &by_index[pos];
        let what = if primaries && u.primaries > 0 {
            plural(u.primaries, "unassigned primary", "unassigned primaries")
        } else {
            plural(u.replicas, "unassigned replica", "unassigned replicas")
        };
        let mut s = format!("index {} has {what}", u.index);
        if let Some(why) = u.why {
            s.push_str(&format!(" ({why})"));
        }
        let more = by_index.len() - 1;
        if more > 0 {
            let noun = if more == 1 { "index" } else { "indices" };
            s.push_str(&format!("; {more} more {noun} with unassigned shards"));
        }
        return s;
    }
    let mut parts = Vec::new();
    if h.unassigned_shards > 0 {
        parts.push(format!(
            "{} unassigned ({} delayed)",
            plural(h.unassigned_shards, "shard", "shards"),
            h.delayed_unassigned_shards
        ));
    }
    if h.initializing_shards > 0 {
        parts.push(format!(
            "{} initializing",
            plural(h.initializing_shards, "shard", "shards")
        ));
    }
    if h.relocating_shards > 0 {
        parts.push(format!(
            "{} relocating",
            plural(h.relocating_shards, "shard", "shards")
        ));
    }
    if parts.is_empty() {
        format!("cluster health is {}", h.status)
    } else {
        format!("cluster health is {}: {}", h.status, parts.join(", "))
    }
}

/// The error chain as one line.
/// An error and its causes, each once: `a: b: c`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

fn classify(what: &str, e: reqwest::Error) -> Fail {
    let text = chain(&e);
    // A refused or reset connection, a TLS failure, a timeout, a connection
    // lost mid-answer (a pod restarting): nothing trustworthy answered.
    if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
        Fail::Unreachable(format!("{what}: {text}"))
    } else if e.is_decode() {
        Fail::Step(StepError::retryable(
            "ES_BAD_RESPONSE",
            format!("{what}: {text}"),
        ))
    } else if e.is_builder() {
        Fail::Step(StepError::permanent(
            "ES_ENDPOINT",
            format!("{what}: {text}"),
        ))
    } else {
        Fail::Step(StepError::retryable(
            "ES_REQUEST",
            format!("{what}: {text}"),
        ))
    }
}

/// Elasticsearch's own error text from an error body, if any.
fn es_error_text(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let reason = parsed.as_ref().and_then(|v| {
        let e = v.get("error")?;
        match e {
            Value::String(s) => Some(s.clone()),
            _ => {
                let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
                let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
                // The innermost cause names what really went wrong (S3's
                // "bucket does not exist" under a repository verification).
                let mut cause = e.get("caused_by");
                let mut deepest = None;
                for _ in 0..8 {
                    let Some(c) = cause else { break };
                    deepest = c.get("reason").and_then(Value::as_str).or(deepest);
                    cause = c.get("caused_by");
                }
                Some(match deepest {
                    Some(d) if d != reason => {
                        format!(
                            "{kind}: {reason} (caused by: {})",
                            d.chars().take(300).collect::<String>()
                        )
                    }
                    _ => format!("{kind}: {reason}"),
                })
            }
        }
    });
    reason.unwrap_or_else(|| body.chars().take(300).collect())
}

impl Conn {
    #[tracing::instrument(name = "elasticsearch", skip_all, fields(otel.name = %format_args!("ES {method} {path}"), otel.kind = "client", http.request.method = %method, url.path = path))]
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Call<T> {
        let what = format!("{method} {path}");
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(ELASTIC_USER, Some(&self.password))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| classify(&what, e))?;
        let status = resp.status();
        if status.is_success() {
            return resp.json::<T>().await.map_err(|e| classify(&what, e));
        }
        let text = resp.text().await.unwrap_or_default();
        let detail = format!("{what}: HTTP {} {}", status.as_u16(), es_error_text(&text));
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Fail::Step(StepError::permanent("ES_AUTH", detail))
            }
            s if s.is_server_error() => Fail::Unreachable(detail),
            _ => Fail::Step(StepError::retryable("ES_HTTP", detail)),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Call<T> {
        self.call(Method::GET, path, None).await
    }

    async fn settings(&self) -> Call<ClusterSettings> {
        self.get("/_cluster/settings?flat_settings=true").await
    }

    async fn node_names(&self) -> Call<Vec<String>> {
        let rows: Vec<NodeRow> = self.get("/_cat/nodes?format=json&h=name").await?;
        Ok(rows.into_iter().filter_map(|r| r.name).collect())
    }

    /// Sets the persistent exclusion list to `names` (and drops a transient
    /// one, which would otherwise win).
    async fn write_exclusions(&self, names: &[String], drop_transient: bool) -> Call<()> {
        let value = if names.is_empty() {
            Value::Null
        } else {
            Value::String(names.join(","))
        };
        let mut body = json!({ "persistent": { EXCLUDE_NAME: value } });
        if drop_transient {
            body["transient"] = json!({ EXCLUDE_NAME: Value::Null });
        }
        let resp: Value = self
            .call(Method::PUT, "/_cluster/settings", Some(&body))
            .await?;
        if resp.get("acknowledged").and_then(Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(Fail::Step(StepError::retryable(
                "ES_NOT_ACKNOWLEDGED",
                format!("PUT /_cluster/settings was not acknowledged: {resp}"),
            )))
        }
    }
}

impl<A: EsAccess> EsClient<A> {
    /// A client reaching clusters through `access`, each request within `timeout`.
    pub fn new(access: A, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                access,
                timeout,
                clients: Mutex::new(HashMap::new()),
                node_names: Mutex::new(HashMap::new()),
            }),
            snapshot_bucket: None,
        }
    }

    /// Registers every cluster's snapshot repository in `bucket` (`[snapshots]
    /// bucket`; empty: snapshots off).
    pub fn with_snapshot_bucket(mut self, bucket: &str) -> Self {
        let bucket = bucket.trim();
        self.snapshot_bucket = (!bucket.is_empty()).then(|| Arc::from(bucket));
        self
    }

    /// The repository of the restore source (same tenant, its uid), read-only.
    pub fn source_repository(
        &self,
        t: &Target,
        source: &RestoreSource,
    ) -> Option<esaas_core::snapshots::Repository> {
        self.snapshot_bucket.as_deref().map(|bucket| {
            esaas_core::snapshots::source_repository(bucket, &t.tenant, source.cluster_uid)
        })
    }

    /// The cluster's own repository, when snapshots are on.
    pub fn own_repository(&self, t: &Target) -> Option<esaas_core::snapshots::Repository> {
        self.snapshot_bucket
            .as_deref()
            .map(|bucket| esaas_core::snapshots::own_repository(bucket, &t.tenant, t.uid))
    }

    /// The connection to `t`, or `None` while it has no endpoint (or its
    /// URL's host does not resolve).
    async fn connect(&self, t: &Target) -> Call<Conn> {
        let Some(ep) = self.inner.access.access(t).await? else {
            return Err(Fail::Unreachable("no endpoint yet".into()));
        };
        let mut url = Url::parse(&ep.url).map_err(|e| {
            StepError::permanent("ES_ENDPOINT", format!("bad URL {:?}: {e}", ep.url))
        })?;
        if url.scheme() != "https" {
            return Err(Fail::Step(StepError::permanent(
                "ES_ENDPOINT",
                format!("{:?} is not https", ep.url),
            )));
        }
        let url_host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let host = ep.host.trim_end_matches('.').to_ascii_lowercase();
        let mut port = url.port_or_known_default().unwrap_or(443);
        let mut addrs = Vec::new();
        if let Some(addr) = ep.resolve {
            if addr.port() != 0 {
                port = addr.port();
            }
            addrs.push(SocketAddr::new(addr.ip(), port));
        } else if url_host != host {
            // Connect where the URL points, but verify and ask for `host`.
            let bare = url_host.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => addrs.push(SocketAddr::new(ip, port)),
                Err(_) => match tokio::net::lookup_host((bare, port)).await {
                    Ok(found) => addrs.extend(found),
                    Err(e) => {
                        return Err(Fail::Unreachable(format!("resolve {bare}: {e}")));
                    }
                },
            }
        }
        if url_host != host {
            url.set_host(Some(&host)).map_err(|e| {
                StepError::permanent("ES_ENDPOINT", format!("bad host {:?}: {e}", ep.host))
            })?;
        }
        url.set_port(Some(port)).map_err(|()| {
            StepError::permanent("ES_ENDPOINT", format!("{:?} takes no port", ep.url))
        })?;
        let key = ClientKey {
            ca_pem: ep.ca_pem,
            host,
            addrs,
        };
        let client = self.client_for(t.uid, key)?;
        Ok(Conn {
            client,
            base: url.as_str().trim_end_matches('/').to_string(),
            password: ep.password,
        })
    }

    fn client_for(&self, uid: Uuid, key: ClientKey) -> StepResult<reqwest::Client> {
        let mut clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = clients.get(&uid)
            && c.key == key
        {
            return Ok(c.client.clone());
        }
        let client = build_client(&key, self.inner.timeout)?;
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        clients.insert(
            uid,
            Cached {
                key,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    async fn observe(&self, t: &Target) -> Call<HealthObs> {
        let conn = self.connect(t).await?;
        let (health, settings) = tokio::try_join!(
            conn.get::<ClusterHealth>("/_cluster/health"),
            conn.settings()
        )?;
        let status = Health::parse(&health.status.to_ascii_uppercase()).unwrap_or(Health::Unknown);
        let excluded: Vec<(String, String)> = settings
            .effective_exclusions()
            .into_iter()
            .filter_map(|name| {
                parse_node_name(t, &name).map(|(ns, ordinal)| (name, node_key(&ns, ordinal)))
            })
            .collect();
        let rows: Vec<ShardRow> = if status != Health::Green || !excluded.is_empty() {
            conn.get(CAT_SHARDS).await?
        } else {
            Vec::new()
        };
        // Red: a primary has no copy anywhere, and an unassigned row does not
        // say which node held it last. An excluded node that dropped out (a
        // crash mid-drain) may hold the only data on disk, so none counts as
        // drained while red (fail closed): it shows the unassigned primaries.
        let lost_primaries = if status == Health::Red {
            rows.iter()
                .filter(|r| {
                    r.state.as_deref() == Some("UNASSIGNED") && r.prirep.as_deref() == Some("p")
                })
                .count()
                .max(1) as u64
        } else {
            0
        };
        let mut shards_on_excluded = BTreeMap::new();
        for (name, key) in excluded {
            let held = rows
                .iter()
                .filter(|r| {
                    r.node
                        .as_deref()
                        .is_some_and(|cell| holders(cell).contains(&name.as_str()))
                })
                .count() as u64;
            shards_on_excluded.insert(key, held.max(lost_primaries));
        }
        let yellow_from_versions =
            status == Health::Yellow && conn.yellow_from_versions(&rows).await;
        let reason = match status {
            Health::Green => String::new(),
            Health::Unknown => format!("unknown health status {:?}", health.status),
            _ => not_green_reason(status, &health, &rows),
        };
        // Disk use is for the status only: an answer without it is still an answer.
        let disk_percent = match conn.get::<Vec<AllocationRow>>(CAT_ALLOCATION).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|r| Some((r.node?, r.disk_percent?.trim().parse().ok()?)))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        Ok(HealthObs {
            status,
            reason,
            shards_on_excluded,
            shutdowns: BTreeMap::new(),
            voting_exclusions: Default::default(),
            yellow_from_versions,
            disk_percent,
        })
    }

    /// Connects for a write: not reachable is a retryable error here.
    async fn connect_for_write(&self, t: &Target, what: &str) -> StepResult<Conn> {
        self.connect(t)
            .await
            .map_err(|f| unreachable_is_error(what, f))
    }

    /// Keeps only the exclusions named in `keep`; a no-op when nothing else is excluded.
    pub async fn clear_exclusions_except(&self, t: &Target, keep: &[String]) -> StepResult<()> {
        let what = "clear allocation exclusions";
        let conn = self.connect_for_write(t, what).await?;
        let settings = conn
            .settings()
            .await
            .map_err(|f| unreachable_is_error(what, f))?;
        let current = settings.effective_exclusions();
        let next: Vec<String> = current
            .iter()
            .filter(|n| keep.contains(n))
            .cloned()
            .collect();
        if next == current && !settings.transient_exclusions_set() {
            return Ok(());
        }
        conn.write_exclusions(&next, settings.transient_exclusions_set())
            .await
            .map_err(|f| unreachable_is_error(what, f))
    }

    /// The node names excluded from allocation now (transient over persistent).
    pub async fn exclusions(&self, t: &Target) -> StepResult<Vec<String>> {
        let what = "read allocation exclusions";
        let conn = self.connect_for_write(t, what).await?;
        conn.settings()
            .await
            .map(|s| s.effective_exclusions())
            .map_err(|f| unreachable_is_error(what, f))
    }

    async fn exclude_node(&self, t: &Target, name: &str) -> Call<()> {
        let conn = self.connect(t).await?;
        let (settings, nodes) = tokio::try_join!(conn.settings(), conn.node_names())?;
        let current = settings.effective_exclusions();
        let mut next: Vec<String> = current
            .iter()
            .filter(|n| n.as_str() != name && nodes.contains(n) && !wanted(t, n))
            .cloned()
            .collect();
        next.push(name.to_string());
        let drop_transient = settings.transient_exclusions_set();
        // Already excluded, nothing to prune: no write (the call is idempotent).
        if !drop_transient && same_set(&next, &current) {
            return Ok(());
        }
        conn.write_exclusions(&next, drop_transient).await
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

fn unreachable_is_error(what: &str, f: Fail) -> StepError {
    match f {
        Fail::Step(e) => e,
        Fail::Unreachable(why) => {
            StepError::retryable("ES_UNREACHABLE", format!("{what}: not reachable: {why}"))
        }
    }
}

fn build_client(key: &ClientKey, timeout: Duration) -> StepResult<reqwest::Client> {
    let certs = reqwest::Certificate::from_pem_bundle(key.ca_pem.as_bytes())
        .map_err(|e| StepError::permanent("ES_CA", format!("the cluster's CA: {e}")))?;
    if certs.is_empty() {
        return Err(StepError::permanent(
            "ES_CA",
            "the cluster's CA holds no certificate",
        ));
    }
    let mut b = reqwest::Client::builder()
        .tls_certs_only(certs)
        .https_only(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if !key.addrs.is_empty() {
        b = b.resolve_to_addrs(&key.host, &key.addrs);
    }
    b.build()
        .map_err(|e| StepError::permanent("ES_CLIENT", format!("HTTP client: {}", chain(&e))))
}

impl<A: EsAccess> Elasticsearch for EsClient<A> {
    async fn health(&self, target: &Target) -> StepResult<Option<HealthObs>> {
        match self.observe(target).await {
            Ok(mut h) => {
                // The node shutdowns and voting exclusions of our pods, by node key.
                let key = |name: &str| {
                    parse_node_name(target, name).map(|(ns, ordinal)| node_key(&ns, ordinal))
                };
                let (shutdowns, voting) =
                    tokio::try_join!(self.shutdowns(target), self.voting_exclusions(target))?;
                h.shutdowns = shutdowns
                    .into_iter()
                    .filter_map(|(name, status)| Some((key(&name)?, status == "COMPLETE")))
                    .collect();
                h.voting_exclusions = voting.iter().filter_map(|name| key(name)).collect();
                Ok(Some(h))
            }
            Err(Fail::Step(e)) => Err(e),
            Err(Fail::Unreachable(why)) => {
                // A certificate the cluster's CA did not sign is "not
                // reachable" too (fail closed), but worth a louder log.
                if why.contains("certificate") {
                    tracing::warn!(cluster = %target.name(), error = %why, "Elasticsearch TLS failed");
                } else {
                    tracing::debug!(cluster = %target.name(), error = %why, "Elasticsearch not reachable");
                }
                Ok(None)
            }
        }
    }

    async fn exclude(&self, target: &Target, node_set: &str, ordinal: i32) -> StepResult<()> {
        let name = names::pod(target, node_set, ordinal);
        self.exclude_node(target, &name)
            .await
            .map_err(|f| unreachable_is_error(&format!("exclude {name} from allocation"), f))
    }

    async fn include(&self, target: &Target, node_set: &str, ordinal: i32) -> StepResult<()> {
        let name = names::pod(target, node_set, ordinal);
        let keep: Vec<String> = self
            .exclusions(target)
            .await?
            .into_iter()
            .filter(|n| *n != name)
            .collect();
        self.clear_exclusions_except(target, &keep).await
    }

    async fn register_shutdown(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> StepResult<()> {
        let name = names::pod(target, node_set, ordinal);
        self.register_restart(
            target,
            &name,
            &format!("esaas rolls {name} to a new template"),
        )
        .await
    }

    async fn clear_shutdown(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> StepResult<()> {
        let name = names::pod(target, node_set, ordinal);
        EsClient::clear_shutdown(self, target, &name).await
    }

    async fn exclude_from_voting(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> StepResult<()> {
        let name = names::pod(target, node_set, ordinal);
        EsClient::exclude_from_voting(self, target, &[name]).await
    }

    async fn clear_voting_exclusions(&self, target: &Target) -> StepResult<()> {
        EsClient::clear_voting_exclusions(self, target).await
    }

    async fn repository_registered(&self, target: &Target) -> StepResult<Option<bool>> {
        match self.own_repository(target) {
            Some(repo) => self.repository_matches(target, &repo).await,
            None => Ok(None),
        }
    }

    async fn register_repository(&self, target: &Target) -> StepResult<()> {
        let repo = self.own_repository(target).ok_or_else(snapshots_off)?;
        EsClient::register_repository(self, target, &repo).await
    }

    async fn snapshots(&self, target: &Target) -> StepResult<Option<Vec<SnapshotObs>>> {
        match self.own_repository(target) {
            Some(repo) => self.observe_snapshots(target, &repo.name).await,
            None => Ok(None),
        }
    }

    async fn take_snapshot(&self, target: &Target, name: &str) -> StepResult<()> {
        let repo = self.own_repository(target).ok_or_else(snapshots_off)?;
        self.start_snapshot(target, &repo.name, name).await
    }

    async fn delete_snapshot(&self, target: &Target, name: &str) -> StepResult<()> {
        let repo = self.own_repository(target).ok_or_else(snapshots_off)?;
        EsClient::delete_snapshot(self, target, &repo.name, name).await
    }

    async fn restore_state(
        &self,
        target: &Target,
        source: &RestoreSource,
    ) -> StepResult<Option<RestoreObs>> {
        let repo = self
            .source_repository(target, source)
            .ok_or_else(snapshots_off)?;
        self.restore_observed(target, &repo, &source.snapshot, &source.indices)
            .await
    }

    async fn register_source_repository(
        &self,
        target: &Target,
        source: &RestoreSource,
    ) -> StepResult<()> {
        let repo = self
            .source_repository(target, source)
            .ok_or_else(snapshots_off)?;
        EsClient::register_repository(self, target, &repo).await
    }

    async fn restore(
        &self,
        target: &Target,
        source: &RestoreSource,
        indices: &[String],
    ) -> StepResult<()> {
        let repo = self
            .source_repository(target, source)
            .ok_or_else(snapshots_off)?;
        self.restore_snapshot(target, &repo.name, &source.snapshot, indices)
            .await
            .map(|_| ())
    }
}

fn snapshots_off() -> StepError {
    StepError::permanent(
        "SNAPSHOTS_OFF",
        "no snapshot bucket is configured ([snapshots] bucket)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_name_the_innermost_cause() {
        let body = r#"{"error":{"type":"repository_verification_exception","reason":"[esaas] path [a][b] is not accessible on master node","caused_by":{"type":"i_o_exception","reason":"Unable to upload object","caused_by":{"type":"amazon_s3_exception","reason":"The specified bucket does not exist"}}},"status":500}"#;
        let text = es_error_text(body);
        assert!(
            text.starts_with("repository_verification_exception: [esaas] path"),
            "{text}"
        );
        assert!(
            text.ends_with("(caused by: The specified bucket does not exist)"),
            "{text}"
        );
        assert_eq!(
            es_error_text(r#"{"error":{"type":"x","reason":"y"}}"#),
            "x: y"
        );
        assert_eq!(es_error_text("not json"), "not json");
    }

    #[test]
    fn a_relocating_shard_counts_on_both_ends() {
        assert_eq!(holders("a-data-2"), vec!["a-data-2"]);
        assert_eq!(
            holders("a-data-2 -> 10.0.0.7 Bt6V5Z5ZSV2uOyXmBm0TDA a-data-0"),
            vec!["a-data-2", "a-data-0"]
        );
    }

    #[test]
    fn exclusions_prefer_transient() {
        let s: ClusterSettings = serde_json::from_value(json!({
            "persistent": { EXCLUDE_NAME: "a,b" },
            "transient": {}
        }))
        .unwrap_or_default();
        assert_eq!(s.effective_exclusions(), vec!["a", "b"]);
        let s: ClusterSettings = serde_json::from_value(json!({
            "persistent": { EXCLUDE_NAME: "a,b" },
            "transient": { EXCLUDE_NAME: "c, c" }
        }))
        .unwrap_or_default();
        assert_eq!(s.effective_exclusions(), vec!["c"]);
    }

    #[test]
    fn red_names_primaries_yellow_names_replicas() {
        let rows = |v: Value| serde_json::from_value::<Vec<ShardRow>>(v).unwrap_or_default();
        let h = ClusterHealth {
            status: "red".into(),
            unassigned_shards: 3,
            initializing_shards: 0,
            relocating_shards: 0,
            delayed_unassigned_shards: 0,
        };
        let r = rows(json!([
            {"index": "a", "shard": "0", "prirep": "r", "state": "UNASSIGNED", "node": null, "unassigned.reason": "NODE_LEFT"},
            {"index": "b", "shard": "0", "prirep": "p", "state": "UNASSIGNED", "node": null, "unassigned.reason": "NODE_LEFT"},
            {"index": "b", "shard": "1", "prirep": "p", "state": "UNASSIGNED", "node": null, "unassigned.reason": null},
            {"index": "c", "shard": "0", "prirep": "p", "state": "STARTED", "node": "x", "unassigned.reason": null}
        ]));
        assert_eq!(
            not_green_reason(Health::Red, &h, &r),
            "index b has 2 unassigned primaries (NODE_LEFT); 1 more index with unassigned shards"
        );
        assert_eq!(
            not_green_reason(Health::Yellow, &h, &r),
            "index a has 1 unassigned replica (NODE_LEFT); 1 more index with unassigned shards"
        );
        assert_eq!(
            not_green_reason(Health::Yellow, &h, &[]),
            "cluster health is red: 3 shards unassigned (0 delayed)"
        );
    }
}
