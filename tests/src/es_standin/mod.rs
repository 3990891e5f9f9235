//! An Elasticsearch REST stand-in over HTTPS: the endpoints the worker
//! calls, with Elasticsearch's status codes, bodies and shard semantics.
//!
//! One server serves many clusters on one port. Each cluster is registered
//! under its HTTP host ([`esaas_k8s::names::http_host`]) with its password
//! and a certificate for that host (signed by the cluster's CA); the server
//! picks the certificate by the TLS SNI and routes the request by it. A host
//! nobody registered, or no SNI at all, gets no certificate: the handshake
//! fails, as an unknown name would.
//!
//! Endpoints (what the product's client calls, `esaas_k8s::es`):
//! `GET /_cluster/health`, `GET /_cluster/settings` (`flat_settings`),
//! `PUT /_cluster/settings` (persistent and transient, flat or nested,
//! `null` resets), `GET /_cat/shards` and `GET /_cat/nodes` (`format=json`
//! with `h=`), the node shutdown API (`PUT`, `GET`, `DELETE
//! /_nodes/{node_id}/shutdown`, `GET /_nodes/shutdown`), voting
//! configuration exclusions (`POST`, `DELETE
//! /_cluster/voting_config_exclusions`) and where they show,
//! `GET /_cluster/state/metadata` filtered to
//! `metadata.cluster_coordination`; documents (`PUT /{index}/_doc/{id}`,
//! `POST /{index}/_doc`, `GET /{index}/_count`: a count per index, so a test
//! can prove data survives a snapshot and a restore); `s3` snapshot
//! repositories (`PUT`, `GET /_snapshot/{repo}`, `POST .../_verify`) and
//! snapshots (`PUT|POST|GET|DELETE /_snapshot/{repo}/{snap}`, `POST
//! .../_restore`), whose data are real objects in the S3 bucket
//! ([`EsStandin::set_s3_endpoint`], moto). Every request needs `elastic`'s basic auth:
//! 401 with `WWW-Authenticate` otherwise. A cluster with no nodes answers 503
//! (`master_not_discovered_exception`).
//!
//! Strict where Elasticsearch is: every answer but a 401 carries
//! `X-Elastic-Product: Elasticsearch` (official clients refuse a server
//! without it); a setting Elasticsearch does not know, or a value it does
//! not take, is refused with its `illegal_argument_exception` and wording
//! and nothing is stored; a query parameter an endpoint does not read is
//! refused as Elasticsearch refuses an unrecognized one. What the stand-in
//! does not model (other settings, `_cat` columns, parameters) is refused
//! too, never silently ignored.
//!
//! The model: each index has primaries and replicas; every copy sits on a
//! node or is UNASSIGNED. Replicas auto-expand like `auto_expand_replicas:
//! 0-{replicas}` over the nodes that may hold shards, so a one-node cluster
//! is green. Copies go to the least loaded node that holds no other copy of
//! the same shard, and rebalance when nodes join. A node named in the
//! effective `cluster.routing.allocation.exclude.*` (`_name` with wildcards,
//! `_ip`, `_host`, `_id`) drains linearly over
//! `drain_delay` (the copy on its way shows as RELOCATING, `"{from} -> {ip}
//! {id} {to}"`, as Elasticsearch prints it); a copy with nowhere to go
//! stays. A node that leaves ([`EsStandin::set_nodes`]) leaves its copies
//! UNASSIGNED (`NODE_LEFT`; a replica takes over a lost primary): replicas
//! are re-allocated after `drain_delay` or at once when the node comes back;
//! a primary with no other copy only comes back with its node (red until
//! then). Health is red with an unassigned primary, yellow with an
//! unassigned replica, green otherwise, unless [`EsStandin::force_health`]
//! says otherwise. `cluster.routing.allocation.enable` holds copies where
//! they are: `none` allocates and moves nothing, `primaries` only primaries.
//! Each node runs an Elasticsearch version ([`EsStandin::set_members`];
//! [`DEFAULT_VERSION`] otherwise) and allocation applies Elasticsearch's
//! `NodeVersionAllocationDecider`: a replica never goes to a node older than
//! the node of its active primary, a primary never moves to an older node,
//! so during a rolling upgrade such replicas stay UNASSIGNED (yellow). A
//! node whose version changes restarted: it leaves, then joins again.
//!
//! Tests register clusters themselves; [`EsStandin::follow`] instead keeps
//! them in step with a Kubernetes API it watches (each cluster's Secret registers it,
//! its ready pods are its nodes, each on its own image's version), which is what the
//! `esaas-es-standin` binary does for the local setup. A connection belongs
//! to the cluster whose certificate it got: it is dropped when that cluster
//! is replaced or forgotten, and [`EsStandin::stop`] drops them all.
//!
//! # Where things are
//! - this file: the public handle tests and the binary hold ([`EsStandin`]);
//! - `server`: the TLS listener, SNI certificates, routing by host, the request log;
//! - `routes`: which endpoint answers a path and method (and what 400/405 say);
//! - `auth`: `elastic`'s basic auth and the 401; `answer`: error bodies and helpers;
//! - `cluster` (state), `allocation` (where shard copies go) and `filters`
//!   (which nodes the settings exclude): the model;
//! - one file per endpoint group: `health`, `settings` (with the settings it
//!   knows in `known_settings`), `cat`, `shutdown`, `voting`;
//! - `docs`: documents and their count; `repository`, `snapshot` and `s3`:
//!   snapshot repositories, snapshots and restores, and the S3 calls they make;
//! - `follow`: registering clusters from a Kubernetes API it watches.

mod allocation;
mod answer;
mod auth;
mod cat;
mod cluster;
mod docs;
mod filters;
mod follow;
mod health;
mod known_settings;
mod repository;
mod routes;
mod s3;
mod server;
mod settings;
mod shutdown;
mod snapshot;
#[cfg(test)]
mod tests;
mod voting;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use esaas_core::cluster::Health;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use cluster::DEFAULT_VERSION;

/// The object keys under `prefix` in `bucket` of the S3 at `endpoint`. Blocking.
pub fn list_objects(endpoint: &str, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
    s3::S3::new(endpoint)
        .list(bucket, prefix)
        .map_err(|e| e.aws_text())
}

/// Creates `bucket` in the S3 at `endpoint` (moto), as a platform operator
/// would before turning snapshots on. Blocking.
pub fn create_bucket(endpoint: &str, bucket: &str) -> Result<(), String> {
    s3::S3::new(endpoint)
        .create_bucket(bucket)
        .map_err(|e| e.aws_text())
}
use cluster::{Cluster, Forced};
use server::provider;

/// An index of a registered cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    name: String,
    primaries: u32,
    /// At most: they auto-expand down to the nodes there are.
    replicas: u32,
}

impl IndexDef {
    /// An index with `primaries` shards and up to `replicas` replicas of each.
    pub fn new(name: &str, primaries: u32, replicas: u32) -> Self {
        Self {
            name: name.into(),
            primaries,
            replicas,
        }
    }

    /// What a cluster gets when registered with no indices: `logs-1` with 5
    /// primaries and a replica each, `metrics-1` with 3 and one replica.
    fn defaults() -> Vec<IndexDef> {
        vec![
            IndexDef::new("logs-1", 5, 1),
            IndexDef::new("metrics-1", 3, 1),
        ]
    }
}

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsRequest {
    /// The HTTP method.
    pub method: String,
    /// The cluster's host (the SNI of the connection).
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Status answered.
    pub status: u16,
}

/// Shared by every clone; the server stops when the last one is dropped.
struct Shared {
    state: Mutex<State>,
    stop: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct State {
    drain_delay: Duration,
    /// The S3 endpoint every cluster's `s3` repositories use.
    s3_endpoint: Option<String>,
    clusters: HashMap<String, Cluster>,
    requests: Vec<EsRequest>,
}

/// The stand-in. Clones share the server.
#[derive(Clone)]
pub struct EsStandin {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl fmt::Debug for EsStandin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EsStandin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EsStandin {
    /// Starts on a free port of 127.0.0.1 with a 2 s drain delay.
    pub async fn start() -> Self {
        Self::start_on(
            "127.0.0.1:0".parse().expect("address"),
            Duration::from_secs(2),
        )
        .await
        .expect("start the Elasticsearch stand-in")
    }

    /// Starts on `addr` with `drain_delay` (how long an excluded node takes
    /// to hand over all its shards, and how long a replica of a node that
    /// left waits before it is allocated elsewhere).
    pub async fn start_on(addr: SocketAddr, drain_delay: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                drain_delay,
                s3_endpoint: None,
                clusters: HashMap::new(),
                requests: Vec::new(),
            }),
            stop: CancellationToken::new(),
        });
        server::spawn(listener, &shared)?;
        Ok(Self { shared, addr })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and drops every connection (clones included).
    pub fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// The S3 endpoint (`http://host:port`, moto in server mode) where every
    /// cluster's `s3` snapshot repositories keep their objects, as
    /// `s3.client.default.endpoint` says in `elasticsearch.yml`. Without one,
    /// registering an `s3` repository fails as an unreachable S3 would.
    pub fn set_s3_endpoint(&self, endpoint: &str) {
        let mut state = lock(&self.shared);
        state.s3_endpoint = Some(endpoint.to_string());
        for c in state.clusters.values_mut() {
            c.s3 = Some(s3::S3::new(endpoint));
        }
    }

    /// Writes `count` documents into `index` (created on first write, one
    /// primary and one replica), as `POST /{index}/_doc` would.
    pub fn write_docs(&self, host: &str, index: &str, count: usize) {
        self.with_cluster(host, |c, delay| {
            if !c.has_index(index) {
                c.add_index(IndexDef::new(index, 1, 1));
            }
            let ids = c.docs.entry(index.to_string()).or_default();
            for _ in 0..count {
                ids.insert(uuid::Uuid::new_v4().simple().to_string());
            }
            c.reconcile(Instant::now(), delay);
        })
    }

    /// Deletes `index` from the cluster at `host`, as its owner's
    /// `DELETE /{index}` would (the platform never deletes an index).
    pub fn delete_index(&self, host: &str, index: &str) {
        self.with_cluster(host, |c, delay| {
            c.remove_index(index);
            c.reconcile(Instant::now(), delay);
        })
    }

    /// The documents in each index of the cluster at `host` (0 for an index without any).
    pub fn doc_counts(&self, host: &str) -> std::collections::BTreeMap<String, usize> {
        self.with_cluster(host, |c, _| {
            c.indices
                .iter()
                .map(|i| (i.name.clone(), c.docs.get(&i.name).map_or(0, |d| d.len())))
                .collect()
        })
    }

    /// The snapshot repositories registered on the cluster at `host`:
    /// (name, bucket, base path, read-only).
    pub fn repositories(&self, host: &str) -> Vec<(String, String, String, bool)> {
        self.with_cluster(host, |c, _| {
            c.repos
                .iter()
                .map(|(n, r)| (n.clone(), r.bucket.clone(), r.base_path.clone(), r.readonly))
                .collect()
        })
    }

    /// Sets the drain delay for what happens from now on.
    pub fn set_drain_delay(&self, d: Duration) {
        lock(&self.shared).drain_delay = d;
    }

    /// Registers (or replaces) the cluster answering at `host`, with its
    /// `elastic` password, the PEM certificate (chain) and key it presents,
    /// its node names and its indices (when empty: `logs-1` with 5 primaries
    /// and `metrics-1` with 3, a replica each).
    pub fn register(
        &self,
        host: &str,
        password: &str,
        cert_pem: &str,
        key_pem: &str,
        nodes: Vec<String>,
        indices: Vec<IndexDef>,
    ) -> anyhow::Result<()> {
        let members = nodes
            .into_iter()
            .map(|n| (n, DEFAULT_VERSION.to_string()))
            .collect();
        self.register_members(host, password, cert_pem, key_pem, members, indices)
    }

    /// [`EsStandin::register`] with each node's Elasticsearch version
    /// (`members` are (node name, version) pairs).
    pub fn register_members(
        &self,
        host: &str,
        password: &str,
        cert_pem: &str,
        key_pem: &str,
        members: Vec<(String, String)>,
        indices: Vec<IndexDef>,
    ) -> anyhow::Result<()> {
        let cert = certified_key(cert_pem, key_pem)?;
        let host = host.to_ascii_lowercase();
        let indices = if indices.is_empty() {
            IndexDef::defaults()
        } else {
            indices
        };
        let name = host.split('.').next().unwrap_or(&host);
        let name = name.strip_suffix("-es-http").unwrap_or(name).to_string();
        let mut state = lock(&self.shared);
        let delay = state.drain_delay;
        let mut cluster = Cluster::new(name, password.into(), cert, members, indices);
        cluster.s3 = state.s3_endpoint.as_deref().map(s3::S3::new);
        cluster.reconcile(Instant::now(), delay);
        if let Some(old) = state.clusters.insert(host, cluster) {
            old.conns.cancel();
        }
        Ok(())
    }

    /// Serves a new certificate (chain) and key at `host`, keeping the
    /// cluster's state and open connections: Elasticsearch reloads its TLS
    /// files when they change on disk (the `xpack.security.*.ssl` resource
    /// watcher, every 5 s by default), and new handshakes get the new chain.
    pub fn reload_certificate(
        &self,
        host: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<()> {
        let cert = certified_key(cert_pem, key_pem)?;
        let mut state = lock(&self.shared);
        let cluster = state
            .clusters
            .get_mut(&host.to_ascii_lowercase())
            .ok_or_else(|| anyhow::anyhow!("no cluster at {host}"))?;
        cluster.cert = cert;
        Ok(())
    }

    /// Forgets the cluster at `host` and drops its connections.
    fn unregister(&self, host: &str) {
        if let Some(old) = lock(&self.shared)
            .clusters
            .remove(&host.to_ascii_lowercase())
        {
            old.conns.cancel();
        }
    }

    /// Whether a cluster is registered at `host` (the follower may not have seen it yet).
    pub fn is_registered(&self, host: &str) -> bool {
        lock(&self.shared)
            .clusters
            .contains_key(&host.to_ascii_lowercase())
    }

    fn with_cluster<T>(&self, host: &str, f: impl FnOnce(&mut Cluster, Duration) -> T) -> T {
        let mut state = lock(&self.shared);
        let delay = state.drain_delay;
        let c = state
            .clusters
            .get_mut(&host.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("no cluster registered at {host}"));
        c.reconcile(Instant::now(), delay);
        f(c, delay)
    }

    /// The cluster's nodes are now `nodes` (pods came or went). Copies on a
    /// node that left become UNASSIGNED (see the module docs).
    pub fn set_nodes(&self, host: &str, nodes: Vec<String>) {
        self.with_cluster(host, |c, delay| {
            c.set_nodes(nodes, Instant::now());
            c.reconcile(Instant::now(), delay);
        })
    }

    /// The cluster's nodes are now `members`, (name, Elasticsearch version)
    /// pairs: a node that left, or that is there with another version (it
    /// restarted on it), leaves its copies UNASSIGNED; see the module docs.
    pub fn set_members(&self, host: &str, members: Vec<(String, String)>) {
        self.with_cluster(host, |c, delay| {
            c.set_members(members, Instant::now());
            c.reconcile(Instant::now(), delay);
        })
    }

    /// The Elasticsearch version of each node, by name.
    pub fn versions(&self, host: &str) -> Vec<(String, String)> {
        self.with_cluster(host, |c, _| {
            c.nodes
                .iter()
                .map(|n| (n.clone(), c.version_of(n).to_string()))
                .collect()
        })
    }

    /// Health is `status` from now on, and `_cat/shards` shows `count`
    /// UNASSIGNED (`ALLOCATION_FAILED`) primaries or replicas of each `index`.
    pub fn force_health(&self, host: &str, status: Health, unassigned: Vec<(String, u32, bool)>) {
        self.with_cluster(host, |c, _| c.forced = Some(Forced { status, unassigned }))
    }

    /// Makes every node of `host` report `percent` of its disk in use.
    pub fn set_disk_percent(&self, host: &str, percent: u32) {
        self.with_cluster(host, |c, _| {
            c.disk_percent = c.nodes.iter().map(|n| (n.clone(), percent)).collect();
        })
    }

    /// Back to the health the shards give.
    pub fn clear_forced_health(&self, host: &str) {
        self.with_cluster(host, |c, _| c.forced = None)
    }

    /// The effective excluded node names (transient over persistent).
    pub fn exclusions(&self, host: &str) -> Vec<String> {
        self.with_cluster(host, |c, _| c.excluded_names())
    }

    /// Shard copies on `node` now (a relocating one counts on its source).
    pub fn shards_on(&self, host: &str, node: &str) -> usize {
        self.with_cluster(host, |c, _| c.count_on(node))
    }

    /// Every node that left with `set_nodes`, with the copies it held then.
    pub fn departures(&self, host: &str) -> Vec<(String, usize)> {
        self.with_cluster(host, |c, _| c.departures.clone())
    }

    /// Health as `_cluster/health` would answer it now.
    pub fn health(&self, host: &str) -> Health {
        self.with_cluster(host, |c, _| c.status())
    }

    /// The node shutdowns registered: (node name, or the id when no node
    /// has it, type as Elasticsearch prints it, e.g. `RESTART`), by node id.
    pub fn shutdowns(&self, host: &str) -> Vec<(String, String)> {
        self.with_cluster(host, |c, _| {
            c.shutdowns
                .iter()
                .map(|(id, s)| {
                    let who = c.name_of(id).cloned().unwrap_or_else(|| id.clone());
                    (who, s.kind.to_string())
                })
                .collect()
        })
    }

    /// The voting configuration exclusions: (node id, node name), either
    /// `_absent_` when it was not known.
    pub fn voting_exclusions(&self, host: &str) -> Vec<(String, String)> {
        self.with_cluster(host, |c, _| {
            c.voting_exclusions
                .iter()
                .map(|e| (e.node_id.clone(), e.node_name.clone()))
                .collect()
        })
    }

    /// The node id Elasticsearch would give `node` (stable per name).
    pub fn node_id(&self, node: &str) -> String {
        cluster::node_id(node)
    }

    /// Every request answered, oldest first.
    pub fn requests(&self) -> Vec<EsRequest> {
        lock(&self.shared).requests.clone()
    }
}

/// The certificate chain and key a cluster presents, from their PEM.
fn certified_key(cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("certificate PEM: {e:?}"))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("key PEM: {e:?}"))?;
    Ok(Arc::new(CertifiedKey::from_der(certs, key, &provider())?))
}
