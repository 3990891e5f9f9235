//! An Elasticsearch REST stand-in over HTTPS: the endpoints the worker
//! calls, with Elasticsearch's status codes, bodies and shard semantics.
//!
//! One server serves many clusters on one port. Each cluster is registered
//! under its HTTP host ([`esaas_k8s::names::http_host`]) with its password
//! and a certificate for that host (signed by the cluster's CA); the server
//! picks the certificate by the TLS SNI and routes the request by it (by the
//! `Host` header when a client sends no SNI). A host nobody registered gets
//! no certificate: the handshake fails, as an unknown name would.
//!
//! Endpoints: `GET /`, `GET /_cluster/health`, `GET /_cluster/settings`
//! (`flat_settings`), `PUT /_cluster/settings` (persistent and transient,
//! flat or nested, `null` resets), `GET /_cat/shards` and `GET /_cat/nodes`
//! (`format=json`, `h=`, `v`). Every request needs `elastic`'s basic auth:
//! 401 with `WWW-Authenticate` otherwise. A cluster with no nodes answers 503
//! (`master_not_discovered_exception`).
//!
//! The model: each index has primaries and replicas; every copy sits on a
//! node or is UNASSIGNED. Replicas auto-expand like `auto_expand_replicas:
//! 0-{replicas}` over the nodes that may hold shards, so a one-node cluster
//! is green. Copies go to the least loaded node that holds no other copy of
//! the same shard, and rebalance when nodes join. A node named in the
//! effective `cluster.routing.allocation.exclude._name` drains linearly over
//! `drain_delay` (the copy on its way shows as RELOCATING, `"{from} -> {ip}
//! {id} {to}"`, as Elasticsearch prints it); a copy with nowhere to go
//! stays. A node that leaves ([`EsStandin::set_nodes`]) leaves its copies
//! UNASSIGNED (`NODE_LEFT`; a replica takes over a lost primary): replicas
//! are re-allocated after `drain_delay` or at once when the node comes back;
//! a primary with no other copy only comes back with its node (red until
//! then). Health is red with an unassigned primary, yellow with an
//! unassigned replica, green otherwise, unless [`EsStandin::force_health`]
//! says otherwise.
//!
//! Tests register clusters themselves; [`EsStandin::follow`] instead keeps
//! them in step with a Kubernetes API (each cluster's Secret registers it,
//! its StatefulSets' ready replicas are its nodes), which is what the
//! `esaas-es-standin` binary does for the local setup. A connection belongs
//! to the cluster whose certificate it got: it is dropped when that cluster
//! is replaced or forgotten, and [`EsStandin::stop`] drops them all.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use esaas_core::cluster::Health;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The setting that moves shards off named nodes.
pub const EXCLUDE_NAME: &str = "cluster.routing.allocation.exclude._name";

/// The version `GET /` reports unless told otherwise.
pub const DEFAULT_VERSION: &str = "8.17.10";

/// An index of a registered cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// Name.
    pub name: String,
    /// Primary shards.
    pub primaries: u32,
    /// Replicas per primary (at most; they auto-expand down to the nodes there are).
    pub replicas: u32,
}

impl IndexDef {
    /// An index.
    pub fn new(name: &str, primaries: u32, replicas: u32) -> Self {
        Self {
            name: name.into(),
            primaries,
            replicas,
        }
    }

    /// What a cluster gets when registered with no indices: `logs-1` with 5
    /// primaries and a replica each, `metrics-1` with 3 and one replica.
    pub fn defaults() -> Vec<IndexDef> {
        vec![
            IndexDef::new("logs-1", 5, 1),
            IndexDef::new("metrics-1", 3, 1),
        ]
    }
}

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsRequest {
    /// The cluster's host (SNI, else `Host`).
    pub host: String,
    /// HTTP method.
    pub method: String,
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

/// Picks the registered cluster's certificate by SNI.
struct SniResolver(std::sync::Weak<Shared>);

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let shared = self.0.upgrade()?;
        let state = lock(&shared);
        match hello.server_name() {
            Some(name) => state
                .clusters
                .get(&name.to_ascii_lowercase())
                .map(|c| c.cert.clone()),
            // No SNI (an IP address was dialled): only unambiguous with one cluster.
            None if state.clusters.len() == 1 => {
                state.clusters.values().next().map(|c| c.cert.clone())
            }
            None => None,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
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
                clusters: HashMap::new(),
                requests: Vec::new(),
            }),
            stop: CancellationToken::new(),
        });
        let tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver(Arc::downgrade(&shared))));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let weak = Arc::downgrade(&shared);
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                };
                let acceptor = acceptor.clone();
                let weak = weak.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let tls = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = acceptor.accept(tcp) => match r {
                            Ok(s) => s,
                            Err(_) => return,
                        },
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
                    // The connection belongs to the cluster that presented
                    // the certificate: it ends when that cluster goes.
                    let Some(cluster_gone) = weak.upgrade().and_then(|shared| {
                        let state = lock(&shared);
                        match &sni {
                            Some(host) => state.clusters.get(host).map(|c| c.conns.clone()),
                            None => state.clusters.values().next().map(|c| c.conns.clone()),
                        }
                    }) else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let weak = weak.clone();
                        let sni = sni.clone();
                        async move { Ok::<_, Infallible>(handle(weak, sni, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc);
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = cluster_gone.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
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

    /// Sets the drain delay for what happens from now on.
    pub fn set_drain_delay(&self, d: Duration) {
        lock(&self.shared).drain_delay = d;
    }

    /// Registers (or replaces) the cluster answering at `host`, with its
    /// `elastic` password, the PEM certificate (chain) and key it presents,
    /// its node names and its indices ([`IndexDef::defaults`] when empty).
    pub fn register(
        &self,
        host: &str,
        password: &str,
        cert_pem: &str,
        key_pem: &str,
        nodes: Vec<String>,
        indices: Vec<IndexDef>,
    ) -> anyhow::Result<()> {
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("certificate PEM: {e:?}"))?;
        anyhow::ensure!(!certs.is_empty(), "no certificate in the PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("key PEM: {e:?}"))?;
        let cert = Arc::new(CertifiedKey::from_der(certs, key, &provider())?);
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
        let mut cluster = Cluster::new(name, password.into(), cert, nodes, indices);
        cluster.reconcile(Instant::now(), delay);
        if let Some(old) = state.clusters.insert(host, cluster) {
            old.conns.cancel();
        }
        Ok(())
    }

    /// Forgets the cluster at `host` and drops its connections.
    pub fn unregister(&self, host: &str) {
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

    /// Health is `status` from now on, and `_cat/shards` shows `count`
    /// UNASSIGNED (`ALLOCATION_FAILED`) primaries or replicas of each `index`.
    pub fn force_health(&self, host: &str, status: Health, unassigned: Vec<(String, u32, bool)>) {
        self.with_cluster(host, |c, _| c.forced = Some(Forced { status, unassigned }))
    }

    /// Back to the health the shards give.
    pub fn clear_forced_health(&self, host: &str) {
        self.with_cluster(host, |c, _| c.forced = None)
    }

    /// The version `GET /` reports.
    pub fn set_version(&self, host: &str, version: &str) {
        self.with_cluster(host, |c, _| c.version = version.into())
    }

    /// The effective excluded node names (transient over persistent).
    pub fn exclusions(&self, host: &str) -> Vec<String> {
        self.with_cluster(host, |c, _| c.exclusions())
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

    /// Every request answered, oldest first.
    pub fn requests(&self) -> Vec<EsRequest> {
        lock(&self.shared).requests.clone()
    }
}

struct Forced {
    status: Health,
    unassigned: Vec<(String, u32, bool)>,
}

#[derive(Debug, Clone)]
struct Copy {
    index: String,
    shard: u32,
    primary: bool,
    node: Option<String>,
    /// Why and since when it is unassigned, and the node it was on.
    unassigned: Option<(&'static str, Instant, Option<String>)>,
}

struct Drain {
    started: Instant,
    initial: usize,
}

struct Cluster {
    name: String,
    uuid: String,
    password: String,
    version: String,
    cert: Arc<CertifiedKey>,
    nodes: Vec<String>,
    indices: Vec<IndexDef>,
    copies: Vec<Copy>,
    persistent: BTreeMap<String, Value>,
    transient: BTreeMap<String, Value>,
    drains: HashMap<String, Drain>,
    forced: Option<Forced>,
    departures: Vec<(String, usize)>,
    /// Cancelled when the cluster is replaced or forgotten: its connections end.
    conns: CancellationToken,
}

/// A node id as Elasticsearch prints it: 22 URL-safe base64 characters.
fn node_id(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = Vec::new();
    for round in 0u8..3 {
        for b in name.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.extend_from_slice(&h.to_be_bytes());
    }
    let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out);
    s.chars().take(22).collect()
}

impl Cluster {
    fn new(
        name: String,
        password: String,
        cert: Arc<CertifiedKey>,
        nodes: Vec<String>,
        indices: Vec<IndexDef>,
    ) -> Self {
        let now = Instant::now();
        let copies = indices
            .iter()
            .flat_map(|i| {
                (0..i.primaries).map(move |shard| Copy {
                    index: i.name.clone(),
                    shard,
                    primary: true,
                    node: None,
                    unassigned: Some(("INDEX_CREATED", now, None)),
                })
            })
            .collect();
        Self {
            uuid: node_id(&format!("cluster {name}")),
            name,
            password,
            version: DEFAULT_VERSION.into(),
            cert,
            nodes,
            indices,
            copies,
            persistent: BTreeMap::new(),
            transient: BTreeMap::new(),
            drains: HashMap::new(),
            forced: None,
            departures: Vec::new(),
            conns: CancellationToken::new(),
        }
    }

    fn exclusions(&self) -> Vec<String> {
        let v = self
            .transient
            .get(EXCLUDE_NAME)
            .or_else(|| self.persistent.get(EXCLUDE_NAME));
        match v {
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn eligible(&self) -> Vec<String> {
        let ex = self.exclusions();
        self.nodes
            .iter()
            .filter(|n| !ex.contains(n))
            .cloned()
            .collect()
    }

    fn count_on(&self, node: &str) -> usize {
        self.copies
            .iter()
            .filter(|c| c.node.as_deref() == Some(node))
            .count()
    }

    fn ip(&self, node: &str) -> String {
        let i = self.nodes.iter().position(|n| n == node).unwrap_or(250);
        format!("10.0.0.{}", i + 1)
    }

    /// The least loaded of `candidates` that holds no copy of `copy`'s shard.
    fn target_for(&self, copy: usize, candidates: &[String]) -> Option<String> {
        let c = &self.copies[copy];
        candidates
            .iter()
            .filter(|n| {
                !self.copies.iter().enumerate().any(|(j, o)| {
                    j != copy
                        && o.index == c.index
                        && o.shard == c.shard
                        && o.node.as_deref() == Some(n.as_str())
                })
            })
            .min_by_key(|n| self.count_on(n))
            .cloned()
    }

    /// The next copy to leave draining `node`, and where it goes.
    fn next_move(&self, node: &str, eligible: &[String]) -> Option<(usize, String)> {
        self.copies
            .iter()
            .enumerate()
            .filter(|(_, c)| c.node.as_deref() == Some(node))
            .find_map(|(i, _)| self.target_for(i, eligible).map(|t| (i, t)))
    }

    fn status(&self) -> Health {
        if let Some(f) = &self.forced {
            return f.status;
        }
        if self.copies.iter().any(|c| c.node.is_none() && c.primary) {
            Health::Red
        } else if self.copies.iter().any(|c| c.node.is_none()) {
            Health::Yellow
        } else {
            Health::Green
        }
    }

    fn set_nodes(&mut self, nodes: Vec<String>, now: Instant) {
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !nodes.contains(n))
            .cloned()
            .collect();
        for node in &gone {
            self.departures.push((node.clone(), self.count_on(node)));
            for i in 0..self.copies.len() {
                if self.copies[i].node.as_deref() != Some(node.as_str()) {
                    continue;
                }
                let (index, shard, primary) = {
                    let c = &self.copies[i];
                    (c.index.clone(), c.shard, c.primary)
                };
                if primary {
                    // A started replica on another node takes over.
                    if let Some(j) = self.copies.iter().position(|o| {
                        o.index == index
                            && o.shard == shard
                            && !o.primary
                            && o.node.as_ref().is_some_and(|n| n != node)
                    }) {
                        self.copies[j].primary = true;
                        self.copies[i].primary = false;
                    }
                }
                let c = &mut self.copies[i];
                c.node = None;
                c.unassigned = Some(("NODE_LEFT", now, Some(node.clone())));
            }
        }
        self.nodes = nodes;
    }

    /// Brings the shards to where they are at `now`.
    fn reconcile(&mut self, now: Instant, delay: Duration) {
        let excluded = self.exclusions();
        let eligible = self.eligible();
        // Drains start when a node is excluded and stop when it is not; one
        // that got copies back (a primary came home) starts over.
        self.drains
            .retain(|n, _| excluded.contains(n) && self.nodes.contains(n));
        for n in &excluded {
            let count = self.count_on(n);
            let fresh = self.drains.get(n).is_none_or(|d| count > d.initial);
            if self.nodes.contains(n) && fresh {
                self.drains.insert(
                    n.clone(),
                    Drain {
                        started: now,
                        initial: count,
                    },
                );
            }
        }
        self.auto_expand(eligible.len(), now, &excluded);
        // Excluded nodes hand their copies over, linearly in time.
        let draining: Vec<(String, usize)> = self
            .drains
            .iter()
            .map(|(n, d)| {
                let left = if delay.is_zero() {
                    0
                } else {
                    let done = (d.initial as f64 * now.duration_since(d.started).as_secs_f64()
                        / delay.as_secs_f64())
                    .floor() as usize;
                    d.initial.saturating_sub(done)
                };
                (n.clone(), left)
            })
            .collect();
        for (node, left) in draining {
            while self.count_on(&node) > left {
                match self.next_move(&node, &eligible) {
                    Some((i, to)) => self.copies[i].node = Some(to),
                    None => break,
                }
            }
        }
        self.allocate(now, delay, &eligible);
        if self.copies.iter().all(|c| c.node.is_some()) {
            self.rebalance(&eligible);
        }
    }

    /// Replicas follow `min(replicas, eligible nodes - 1)`.
    fn auto_expand(&mut self, eligible: usize, now: Instant, excluded: &[String]) {
        for idx in self.indices.clone() {
            let want = idx.replicas.min(eligible.saturating_sub(1) as u32) as usize;
            for shard in 0..idx.primaries {
                let of = |c: &Copy| c.index == idx.name && c.shard == shard && !c.primary;
                let mut have = self.copies.iter().filter(|c| of(c)).count();
                while have > want {
                    let pick = self
                        .copies
                        .iter()
                        .position(|c| of(c) && c.node.is_none())
                        .or_else(|| {
                            self.copies.iter().position(|c| {
                                of(c) && c.node.as_ref().is_some_and(|n| excluded.contains(n))
                            })
                        })
                        .or_else(|| self.copies.iter().rposition(of));
                    match pick {
                        Some(i) => {
                            self.copies.remove(i);
                            have -= 1;
                        }
                        None => break,
                    }
                }
                while have < want {
                    self.copies.push(Copy {
                        index: idx.name.clone(),
                        shard,
                        primary: false,
                        node: None,
                        unassigned: Some(("REPLICA_ADDED", now, None)),
                    });
                    have += 1;
                }
            }
        }
    }

    /// Places unassigned copies: primaries before replicas; a copy of a node
    /// that left goes back to it when it is back (a primary even when that
    /// node is excluded), a replica elsewhere after the delay, a lost primary
    /// only to its own node.
    fn allocate(&mut self, now: Instant, delay: Duration, eligible: &[String]) {
        let mut order: Vec<usize> = (0..self.copies.len())
            .filter(|i| self.copies[*i].node.is_none())
            .collect();
        order.sort_by_key(|i| !self.copies[*i].primary);
        for i in order {
            let Some((reason, since, last)) = self.copies[i].unassigned.clone() else {
                continue;
            };
            // A primary goes back to the only disk with its data even when
            // that node is excluded (Elasticsearch force-allocates it there,
            // and the drain then moves it); a replica only to an eligible one.
            let primary = self.copies[i].primary;
            let home = last
                .filter(|n| {
                    eligible.contains(n)
                        || (primary && reason == "NODE_LEFT" && self.nodes.contains(n))
                })
                .and_then(|home| self.target_for(i, std::slice::from_ref(&home)));
            let target = home.or_else(|| match reason {
                "NODE_LEFT" if self.copies[i].primary => None,
                "NODE_LEFT" if now.duration_since(since) < delay => None,
                _ => self.target_for(i, eligible),
            });
            if let Some(to) = target {
                // A replica only starts once its primary is active.
                let primary_active = self.copies[i].primary
                    || self.copies.iter().any(|o| {
                        o.index == self.copies[i].index
                            && o.shard == self.copies[i].shard
                            && o.primary
                            && o.node.is_some()
                    });
                if primary_active {
                    self.copies[i].node = Some(to);
                    self.copies[i].unassigned = None;
                }
            }
        }
    }

    /// Evens the copies out over the eligible nodes.
    fn rebalance(&mut self, eligible: &[String]) {
        for _ in 0..self.copies.len() {
            let Some(max) = eligible.iter().max_by_key(|n| self.count_on(n)) else {
                return;
            };
            let Some(min) = eligible.iter().min_by_key(|n| self.count_on(n)) else {
                return;
            };
            if self.count_on(max) <= self.count_on(min) + 1 {
                return;
            }
            let movable = self.copies.iter().enumerate().position(|(i, c)| {
                c.node.as_deref() == Some(max.as_str())
                    && self.target_for(i, std::slice::from_ref(min)).is_some()
            });
            match movable {
                Some(i) => self.copies[i].node = Some(min.clone()),
                None => return,
            }
        }
    }

    /// `_cat/shards` rows, as Elasticsearch's columns.
    fn shard_rows(&self) -> Vec<Vec<(&'static str, Value)>> {
        let eligible = self.eligible();
        let relocating: Vec<(usize, String)> = self
            .drains
            .keys()
            .filter_map(|n| self.next_move(n, &eligible))
            .collect();
        let mut order: Vec<usize> = (0..self.copies.len()).collect();
        order.sort_by(|a, b| {
            let (a, b) = (&self.copies[*a], &self.copies[*b]);
            (&a.index, a.shard, !a.primary).cmp(&(&b.index, b.shard, !b.primary))
        });
        let mut rows: Vec<Vec<(&'static str, Value)>> = order
            .into_iter()
            .map(|i| {
                let c = &self.copies[i];
                let moving = relocating.iter().find(|(j, _)| *j == i).map(|(_, to)| to);
                let (state, node, ip) = match (&c.node, moving) {
                    (None, _) => ("UNASSIGNED", Value::Null, Value::Null),
                    (Some(n), Some(to)) => (
                        "RELOCATING",
                        Value::String(format!("{n} -> {} {} {to}", self.ip(to), node_id(to))),
                        Value::String(self.ip(n)),
                    ),
                    (Some(n), None) => (
                        "STARTED",
                        Value::String(n.clone()),
                        Value::String(self.ip(n)),
                    ),
                };
                let assigned = c.node.is_some();
                vec![
                    ("index", Value::String(c.index.clone())),
                    ("shard", Value::String(c.shard.to_string())),
                    (
                        "prirep",
                        Value::String(if c.primary { "p" } else { "r" }.into()),
                    ),
                    ("state", Value::String(state.into())),
                    ("docs", if assigned { json!("1000") } else { Value::Null }),
                    (
                        "store",
                        if assigned {
                            json!("1.2mb")
                        } else {
                            Value::Null
                        },
                    ),
                    ("ip", ip),
                    ("node", node),
                    (
                        "unassigned.reason",
                        c.unassigned
                            .as_ref()
                            .filter(|_| !assigned)
                            .map(|(r, _, _)| Value::String((*r).into()))
                            .unwrap_or(Value::Null),
                    ),
                ]
            })
            .collect();
        if let Some(f) = &self.forced {
            for (index, count, primary) in &f.unassigned {
                for shard in 0..*count {
                    rows.push(vec![
                        ("index", Value::String(index.clone())),
                        ("shard", Value::String(shard.to_string())),
                        (
                            "prirep",
                            Value::String(if *primary { "p" } else { "r" }.into()),
                        ),
                        ("state", Value::String("UNASSIGNED".into())),
                        ("docs", Value::Null),
                        ("store", Value::Null),
                        ("ip", Value::Null),
                        ("node", Value::Null),
                        ("unassigned.reason", json!("ALLOCATION_FAILED")),
                    ]);
                }
            }
        }
        rows
    }

    fn node_rows(&self) -> Vec<Vec<(&'static str, Value)>> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                vec![
                    ("ip", Value::String(self.ip(n))),
                    ("heap.percent", json!("42")),
                    ("ram.percent", json!("70")),
                    ("cpu", json!("3")),
                    ("node.role", json!("cdfhilmrstw")),
                    ("master", json!(if i == 0 { "*" } else { "-" })),
                    ("name", Value::String(n.clone())),
                    ("id", Value::String(node_id(n))),
                ]
            })
            .collect()
    }

    fn health_body(&self) -> Value {
        let rows = self.shard_rows();
        let count = |state: &str, primary: Option<bool>| {
            rows.iter()
                .filter(|r| {
                    r.iter().any(|(k, v)| *k == "state" && v == state)
                        && primary.is_none_or(|p| {
                            r.iter()
                                .any(|(k, v)| *k == "prirep" && v == if p { "p" } else { "r" })
                        })
                })
                .count()
        };
        let started = count("STARTED", None) + count("RELOCATING", None);
        let unassigned = count("UNASSIGNED", None);
        let total = started + unassigned;
        let delayed = self
            .copies
            .iter()
            .filter(|c| {
                c.node.is_none() && !c.primary && matches!(c.unassigned, Some(("NODE_LEFT", _, _)))
            })
            .count();
        json!({
            "cluster_name": self.name,
            "status": self.status().as_str().to_ascii_lowercase(),
            "timed_out": false,
            "number_of_nodes": self.nodes.len(),
            "number_of_data_nodes": self.nodes.len(),
            "active_primary_shards": count("STARTED", Some(true)) + count("RELOCATING", Some(true)),
            "active_shards": started,
            "relocating_shards": count("RELOCATING", None),
            "initializing_shards": 0,
            "unassigned_shards": unassigned,
            "unassigned_primary_shards": count("UNASSIGNED", Some(true)),
            "delayed_unassigned_shards": delayed,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": if total == 0 { 100.0 } else { started as f64 * 100.0 / total as f64 },
        })
    }
}

/// `a.b.c = v` from nested objects; `null` stays `null` (a reset).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) => out.push((
            prefix.into(),
            Value::String(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        )),
        Value::Null => out.push((prefix.into(), Value::Null)),
        Value::String(s) => out.push((prefix.into(), Value::String(s.clone()))),
        other => out.push((prefix.into(), Value::String(other.to_string()))),
    }
}

/// Flat settings as Elasticsearch's nested objects.
fn nest(flat: &BTreeMap<String, Value>) -> Value {
    fn put(m: &mut Map<String, Value>, path: &[&str], v: Value) {
        match path {
            [] => {}
            [last] => {
                m.insert((*last).to_string(), v);
            }
            [first, rest @ ..] => {
                let entry = m
                    .entry((*first).to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(inner) = entry {
                    put(inner, rest, v);
                }
            }
        }
    }
    let mut root = Map::new();
    for (k, v) in flat {
        let parts: Vec<&str> = k.split('.').collect();
        put(&mut root, &parts, v.clone());
    }
    Value::Object(root)
}

fn settings_view(flat: &BTreeMap<String, Value>, flat_view: bool) -> Value {
    if flat_view {
        Value::Object(flat.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    } else {
        nest(flat)
    }
}

type Answer = (StatusCode, Vec<(&'static str, String)>, Bytes);

fn json_answer(status: StatusCode, v: &Value) -> Answer {
    (
        status,
        vec![("content-type", "application/json".into())],
        Bytes::from(v.to_string()),
    )
}

fn es_error(status: StatusCode, kind: &str, reason: &str) -> Answer {
    json_answer(
        status,
        &json!({
            "error": {
                "root_cause": [{ "type": kind, "reason": reason }],
                "type": kind,
                "reason": reason,
            },
            "status": status.as_u16(),
        }),
    )
}

fn unauthorized(reason: &str) -> Answer {
    let header = json!({ "WWW-Authenticate": [
        "Basic realm=\"security\", charset=\"UTF-8\"",
        "Bearer realm=\"security\"",
        "ApiKey"
    ]});
    let body = json!({
        "error": {
            "root_cause": [{ "type": "security_exception", "reason": reason, "header": header }],
            "type": "security_exception",
            "reason": reason,
            "header": header,
        },
        "status": 401,
    });
    let (status, mut headers, body) = json_answer(StatusCode::UNAUTHORIZED, &body);
    headers.push((
        "www-authenticate",
        "Basic realm=\"security\", charset=\"UTF-8\"".into(),
    ));
    headers.push(("www-authenticate", "Bearer realm=\"security\"".into()));
    headers.push(("www-authenticate", "ApiKey".into()));
    (status, headers, body)
}

/// A cat API answer: JSON objects or a text table, columns per `h`.
fn cat(
    rows: Vec<Vec<(&'static str, Value)>>,
    defaults: &[&str],
    query: &HashMap<String, String>,
) -> Answer {
    let cols: Vec<String> = match query.get("h") {
        Some(h) => h.split(',').map(|s| s.trim().to_string()).collect(),
        None => defaults.iter().map(|s| s.to_string()).collect(),
    };
    let pick = |row: &Vec<(&'static str, Value)>, col: &str| {
        row.iter()
            .find(|(k, _)| *k == col)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null)
    };
    if query.get("format").map(String::as_str) == Some("json") {
        let out: Vec<Value> = rows
            .iter()
            .map(|r| Value::Object(cols.iter().map(|c| (c.clone(), pick(r, c))).collect()))
            .collect();
        return json_answer(StatusCode::OK, &Value::Array(out));
    }
    let mut text = String::new();
    if query.contains_key("v") {
        text.push_str(&cols.join(" "));
        text.push('\n');
    }
    for r in &rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match pick(r, c) {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        text.push_str(&cells.join(" "));
        text.push('\n');
    }
    (
        StatusCode::OK,
        vec![("content-type", "text/plain; charset=UTF-8".into())],
        Bytes::from(text),
    )
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v.is_empty() || v == "true")
}

async fn handle(
    shared: std::sync::Weak<Shared>,
    sni: Option<String>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let query = parse_query(req.uri().query());
    let host = sni.or_else(|| {
        req.headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| {
                h.rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(h)
                    .to_ascii_lowercase()
            })
    });
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(String::from);
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(String::from);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let host = host.unwrap_or_default();
    let (status, headers, body) = match shared.upgrade() {
        Some(shared) => {
            let mut state = lock(&shared);
            let delay = state.drain_delay;
            let answer = match state.clusters.get_mut(&host) {
                None => es_error(
                    StatusCode::NOT_FOUND,
                    "resource_not_found_exception",
                    &format!("no cluster at {host}"),
                ),
                Some(c) => {
                    c.reconcile(Instant::now(), delay);
                    let answer = answer(
                        c,
                        &method,
                        &path,
                        &query,
                        auth.as_deref(),
                        content_type.as_deref(),
                        &body,
                    );
                    c.reconcile(Instant::now(), delay);
                    answer
                }
            };
            state.requests.push(EsRequest {
                host: host.clone(),
                method: method.to_string(),
                path: path_and_query,
                status: answer.0.as_u16(),
            });
            answer
        }
        None => es_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_closed_exception",
            "stopped",
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

fn authorized(c: &Cluster, auth: Option<&str>, path: &str) -> Result<(), Answer> {
    let Some(auth) = auth else {
        return Err(unauthorized(&format!(
            "missing authentication credentials for REST request [{path}]"
        )));
    };
    let decoded = auth
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let user = decoded
        .as_deref()
        .and_then(|d| d.split_once(':'))
        .map(|(u, _)| u.to_string())
        .unwrap_or_default();
    match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((u, p)) if u == "elastic" && p == c.password => Ok(()),
        _ => Err(unauthorized(&format!(
            "unable to authenticate user [{user}] for REST request [{path}]"
        ))),
    }
}

fn answer(
    c: &mut Cluster,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    if let Err(denied) = authorized(c, auth, path) {
        return denied;
    }
    let allowed: &[Method] = match path {
        "/" => &[Method::GET],
        "/_cluster/health" | "/_cat/shards" | "/_cat/nodes" => &[Method::GET],
        "/_cluster/settings" => &[Method::GET, Method::PUT],
        _ => {
            return json_answer(
                StatusCode::BAD_REQUEST,
                &json!({
                    "error": format!("no handler found for uri [{path}] and method [{method}]")
                }),
            );
        }
    };
    if !allowed.contains(method) {
        let list: Vec<String> = allowed.iter().map(|m| m.to_string()).collect();
        let (s, mut h, b) = json_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({
                "error": format!(
                    "Incorrect HTTP method for uri [{path}] and method [{method}], allowed: [{}]",
                    list.join(", ")
                ),
                "status": 405,
            }),
        );
        h.push(("allow", list.join(",")));
        return (s, h, b);
    }
    if c.nodes.is_empty() {
        return es_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "master_not_discovered_exception",
            "no master node has been discovered",
        );
    }
    match (method.clone(), path) {
        (Method::GET, "/") => json_answer(
            StatusCode::OK,
            &json!({
                "name": c.nodes[0],
                "cluster_name": c.name,
                "cluster_uuid": c.uuid,
                "version": {
                    "number": c.version,
                    "build_flavor": "default",
                    "build_type": "docker",
                    "lucene_version": "9.12.0",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "You Know, for Search",
            }),
        ),
        (Method::GET, "/_cluster/health") => json_answer(StatusCode::OK, &c.health_body()),
        (Method::GET, "/_cat/shards") => cat(
            c.shard_rows(),
            &[
                "index", "shard", "prirep", "state", "docs", "store", "ip", "node",
            ],
            query,
        ),
        (Method::GET, "/_cat/nodes") => cat(
            c.node_rows(),
            &[
                "ip",
                "heap.percent",
                "ram.percent",
                "cpu",
                "node.role",
                "master",
                "name",
            ],
            query,
        ),
        (Method::GET, "/_cluster/settings") => {
            let flat = flag(query, "flat_settings");
            json_answer(
                StatusCode::OK,
                &json!({
                    "persistent": settings_view(&c.persistent, flat),
                    "transient": settings_view(&c.transient, flat),
                }),
            )
        }
        (Method::PUT, "/_cluster/settings") => put_settings(c, query, content_type, body),
        _ => es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            "unsupported",
        ),
    }
}

fn put_settings(
    c: &mut Cluster,
    query: &HashMap<String, String>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    if body.is_empty() {
        return es_error(
            StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            "Validation Failed: 1: no settings to update;",
        );
    }
    let ct = content_type.unwrap_or_default();
    if !ct.starts_with("application/json") && !ct.starts_with("application/vnd.elasticsearch+json")
    {
        return json_answer(
            StatusCode::NOT_ACCEPTABLE,
            &json!({
                "error": format!("Content-Type header [{ct}] is not supported"),
                "status": 406,
            }),
        );
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return es_error(
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                &format!("failed to parse the request body: {e}"),
            );
        }
    };
    let Value::Object(top) = parsed else {
        return es_error(
            StatusCode::BAD_REQUEST,
            "parse_exception",
            "request body must be an object",
        );
    };
    if let Some(k) = top
        .keys()
        .find(|k| k.as_str() != "persistent" && k.as_str() != "transient")
    {
        return es_error(
            StatusCode::BAD_REQUEST,
            "x_content_parse_exception",
            &format!("[cluster_update_settings_request] unknown field [{k}]"),
        );
    }
    let mut changed: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    for scope in ["persistent", "transient"] {
        let mut flat = Vec::new();
        if let Some(v) = top.get(scope) {
            flatten("", v, &mut flat);
        }
        let target = if scope == "persistent" {
            &mut c.persistent
        } else {
            &mut c.transient
        };
        let entry = changed.entry(scope).or_default();
        for (k, v) in flat {
            if k.is_empty() {
                continue;
            }
            if v.is_null() {
                target.remove(&k);
            } else {
                target.insert(k.clone(), v.clone());
                entry.insert(k, v);
            }
        }
    }
    let flat = flag(query, "flat_settings");
    let empty = BTreeMap::new();
    json_answer(
        StatusCode::OK,
        &json!({
            "acknowledged": true,
            "persistent": settings_view(changed.get("persistent").unwrap_or(&empty), flat),
            "transient": settings_view(changed.get("transient").unwrap_or(&empty), flat),
        }),
    )
}

/// What [`EsStandin::follow`] registered for a host.
#[derive(PartialEq, Eq)]
struct Followed {
    password: String,
    cert_pem: String,
    key_pem: String,
    nodes: Vec<String>,
}

fn secret_text(s: &k8s_openapi::api::core::v1::Secret, key: &str) -> Option<String> {
    let from_data = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    from_data.or_else(|| s.string_data.as_ref().and_then(|d| d.get(key)).cloned())
}

/// A target with only the ids (enough for every name in `esaas_k8s::names`).
fn target_of(tenant: &str, cluster: &str) -> Option<esaas_core::backend::Target> {
    Some(esaas_core::backend::Target {
        uid: uuid::Uuid::nil(),
        tenant: esaas_core::names::TenantId::parse("tenant", tenant).ok()?,
        cluster_id: esaas_core::names::ClusterId::parse("cluster", cluster).ok()?,
        spec: esaas_core::spec::ClusterSpec {
            version: DEFAULT_VERSION.into(),
            node_sets: Vec::new(),
            zone_count: 1,
            volume_retention: esaas_core::spec::VolumeRetention::Delete,
        },
        generation: 0,
        operation: uuid::Uuid::nil(),
    })
}

/// The clusters the Kubernetes API holds now: host → what to register.
async fn observe_kubernetes(client: &kube::Client) -> kube::Result<HashMap<String, Followed>> {
    use esaas_k8s::names::{self, labels, secret_keys};
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, ListParams};

    let managed = ListParams::default().labels(&format!("{}=esaas", labels::MANAGED_BY));
    let secrets = Api::<Secret>::all(client.clone()).list(&managed).await?;
    let sets = Api::<StatefulSet>::all(client.clone())
        .list(&managed)
        .await?;
    let mut out = HashMap::new();
    for s in secrets.items {
        let l = s.metadata.labels.clone().unwrap_or_default();
        let (Some(tenant), Some(cluster)) = (l.get(labels::TENANT), l.get(labels::CLUSTER)) else {
            continue;
        };
        let Some(t) = target_of(tenant, cluster) else {
            continue;
        };
        if s.metadata.name.as_deref() != Some(names::secret(&t).as_str())
            || s.metadata.namespace.as_deref() != Some(names::namespace(&t).as_str())
        {
            continue;
        }
        let (Some(password), Some(cert_pem), Some(key_pem)) = (
            secret_text(&s, secret_keys::PASSWORD),
            secret_text(&s, secret_keys::TLS_CERT),
            secret_text(&s, secret_keys::TLS_KEY),
        ) else {
            continue;
        };
        let mut nodes = Vec::new();
        for set in &sets.items {
            let sl = set.metadata.labels.clone().unwrap_or_default();
            if set.metadata.namespace != s.metadata.namespace
                || sl.get(labels::CLUSTER) != Some(cluster)
            {
                continue;
            }
            let Some(node_set) = sl.get(labels::NODE_SET) else {
                continue;
            };
            let want = set.spec.replicas.unwrap_or(1);
            let ready = set
                .status
                .as_ref()
                .and_then(|st| st.ready_replicas)
                .unwrap_or(0);
            nodes.extend((0..ready.min(want)).map(|i| names::pod(&t, node_set, i)));
        }
        nodes.sort();
        out.insert(
            names::http_host(&t),
            Followed {
                password,
                cert_pem,
                key_pem,
                nodes,
            },
        );
    }
    Ok(out)
}

impl EsStandin {
    /// Keeps the registered clusters in step with a Kubernetes API (the
    /// Kubernetes stand-in of the local setup), every `every`: a cluster is
    /// registered from its Secret (password, node certificate and key) at
    /// its `http_host`, its nodes are the pods `0..readyReplicas` of its
    /// StatefulSets, and it is forgotten when its Secret goes. Needs
    /// all-namespace lists of Secrets and StatefulSets with a label
    /// selector. Ends when the stand-in stops.
    pub fn follow(&self, client: kube::Client, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        let addr = self.addr;
        let stop = self.shared.stop.clone();
        tokio::spawn(async move {
            let mut known: HashMap<String, Followed> = HashMap::new();
            loop {
                match observe_kubernetes(&client).await {
                    Ok(now) => {
                        let Some(shared) = weak.upgrade() else { return };
                        let es = EsStandin { shared, addr };
                        known.retain(|host, _| {
                            let keep = now.contains_key(host);
                            if !keep {
                                es.unregister(host);
                            }
                            keep
                        });
                        for (host, f) in now {
                            let same_cluster = known.get(&host).is_some_and(|k| {
                                (&k.password, &k.cert_pem, &k.key_pem)
                                    == (&f.password, &f.cert_pem, &f.key_pem)
                            });
                            if same_cluster {
                                if known.get(&host).is_some_and(|k| k.nodes != f.nodes) {
                                    es.set_nodes(&host, f.nodes.clone());
                                }
                            } else if let Err(e) = es.register(
                                &host,
                                &f.password,
                                &f.cert_pem,
                                &f.key_pem,
                                f.nodes.clone(),
                                Vec::new(),
                            ) {
                                tracing::warn!(%host, error = %e, "cannot register the cluster");
                                continue;
                            }
                            known.insert(host, f);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "Kubernetes API not readable yet"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use esaas_core::backend::{Elasticsearch, StepResult, Target};
    use esaas_core::names::{ClusterId, TenantId};
    use esaas_core::plan::node_key;
    use esaas_core::spec::{ClusterSpec, NodeRole, NodeSet, VolumeRetention};
    use esaas_k8s::es::{EsAccess, EsClient, EsEndpoint};
    use esaas_k8s::names;
    use uuid::Uuid;

    use super::*;

    const PASSWORD: &str = "s3cret-elastic-password";

    /// A CA, and a leaf for `host` and 127.0.0.1 signed by it: (CA PEM, leaf PEM, key PEM).
    fn tls_for(host: &str) -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "esaas test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("leaf key");
        let mut leaf =
            CertificateParams::new(vec![host.to_string(), "127.0.0.1".to_string()]).expect("leaf");
        leaf.distinguished_name.push(DnType::CommonName, host);
        let cert = leaf.signed_by(&key, &issuer).expect("leaf cert");
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    fn target(cluster: &str, count: i32) -> Target {
        Target {
            uid: Uuid::new_v4(),
            tenant: TenantId::parse("t", "acme").expect("tenant"),
            cluster_id: ClusterId::parse("c", cluster).expect("cluster"),
            spec: ClusterSpec {
                version: DEFAULT_VERSION.into(),
                node_sets: vec![NodeSet {
                    name: "data-hot".into(),
                    roles: vec![NodeRole::Master, NodeRole::Data],
                    count,
                    size_class: "small".into(),
                    storage_gib: 100,
                    storage_iops: 3000,
                    storage_throughput_mibps: 125,
                }],
                zone_count: 1,
                volume_retention: VolumeRetention::Delete,
            },
            generation: 1,
            operation: Uuid::new_v4(),
        }
    }

    fn pods(t: &Target, n: i32) -> Vec<String> {
        (0..n).map(|i| names::pod(t, "data-hot", i)).collect()
    }

    /// Hands out the stand-in's address for every target, with what the test set.
    struct TestAccess {
        addr: SocketAddr,
        ca_pem: String,
        password: String,
        none: bool,
    }

    impl EsAccess for TestAccess {
        async fn access(&self, t: &Target) -> StepResult<Option<EsEndpoint>> {
            if self.none {
                return Ok(None);
            }
            let host = names::http_host(t);
            Ok(Some(EsEndpoint {
                url: format!("https://{host}:{}", self.addr.port()),
                ca_pem: self.ca_pem.clone(),
                password: self.password.clone(),
                host,
                resolve: Some(self.addr),
            }))
        }
    }

    struct Fixture {
        es: EsStandin,
        ca: String,
        t: Target,
        host: String,
        client: EsClient<TestAccess>,
    }

    /// A stand-in with one registered cluster of `nodes` pods and a client that trusts its CA.
    async fn fixture(nodes: i32, drain_delay: Duration) -> Fixture {
        fixture_with(nodes, drain_delay, vec![]).await
    }

    async fn fixture_with(nodes: i32, drain_delay: Duration, indices: Vec<IndexDef>) -> Fixture {
        let es = EsStandin::start_on("127.0.0.1:0".parse().expect("addr"), drain_delay)
            .await
            .expect("start");
        let t = target("logs", nodes);
        let host = names::http_host(&t);
        let (ca, cert, key) = tls_for(&host);
        es.register(&host, PASSWORD, &cert, &key, pods(&t, nodes), indices)
            .expect("register");
        let client = EsClient::new(
            TestAccess {
                addr: es.addr(),
                ca_pem: ca.clone(),
                password: PASSWORD.into(),
                none: false,
            },
            Duration::from_secs(2),
        );
        Fixture {
            es,
            ca,
            t,
            host,
            client,
        }
    }

    #[tokio::test]
    async fn a_healthy_cluster_is_green_with_nothing_excluded() {
        let f = fixture(3, Duration::from_secs(1)).await;
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!(h.status, Health::Green);
        assert_eq!(h.reason, "");
        assert!(h.shards_on_excluded.is_empty());
        // Every node holds shards: 8 primaries + 8 replicas over 3 nodes.
        for p in pods(&f.t, 3) {
            assert!(f.es.shards_on(&f.host, &p) >= 5, "{p}");
        }
        let reqs = f.es.requests();
        assert!(
            reqs.iter().all(|r| r.status == 200 && r.host == f.host),
            "{reqs:?}"
        );
        assert!(reqs.iter().any(|r| r.path == "/_cluster/health"));
        // Green and nothing excluded: no need for the heavy _cat/shards.
        assert!(!reqs.iter().any(|r| r.path.starts_with("/_cat/shards")));
    }

    #[tokio::test]
    async fn a_forced_yellow_names_the_index_and_red_names_primaries() {
        let f = fixture(3, Duration::from_secs(1)).await;
        f.es.force_health(&f.host, Health::Yellow, vec![("logs-7".into(), 2, false)]);
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!(h.status, Health::Yellow);
        assert!(
            h.reason
                .starts_with("index logs-7 has 2 unassigned replicas"),
            "{}",
            h.reason
        );
        f.es.force_health(
            &f.host,
            Health::Red,
            vec![("logs-7".into(), 2, false), ("logs-8".into(), 1, true)],
        );
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!(h.status, Health::Red);
        assert!(
            h.reason
                .starts_with("index logs-8 has 1 unassigned primary"),
            "{}",
            h.reason
        );
        f.es.clear_forced_health(&f.host);
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!((h.status, h.reason.as_str()), (Health::Green, ""));
    }

    #[tokio::test]
    async fn an_excluded_node_drains_to_zero_and_stays_listed() {
        let delay = Duration::from_millis(1500);
        let f = fixture(3, delay).await;
        let victim = names::pod(&f.t, "data-hot", 2);
        let key = node_key("data-hot", 2);
        let before = f.es.shards_on(&f.host, &victim);
        assert!(before > 0);
        let started = Instant::now();
        f.client
            .exclude(&f.t, "data-hot", 2)
            .await
            .expect("exclude");
        f.client
            .exclude(&f.t, "data-hot", 2)
            .await
            .expect("exclude again");
        assert_eq!(f.es.exclusions(&f.host), vec![victim.clone()]);

        let mut seen = Vec::new();
        loop {
            let h = f
                .client
                .health(&f.t)
                .await
                .expect("health")
                .expect("answered");
            let n = *h
                .shards_on_excluded
                .get(&key)
                .expect("excluded pod is listed");
            assert_eq!(h.shards_on_excluded.len(), 1, "{h:?}");
            seen.push(n);
            if n == 0 {
                break;
            }
            assert!(started.elapsed() < delay * 3, "did not drain: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Linear: it took about the delay, going down step by step, never up.
        assert!(
            started.elapsed() >= delay * 9 / 10,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(seen[0] as usize, before, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
        assert!(seen.len() > 3 && seen[seen.len() / 2] < seen[0], "{seen:?}");
        // Drained, still excluded: listed with 0 until the pod goes away.
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!(h.shards_on_excluded, BTreeMap::from([(key.clone(), 0)]));
        assert_eq!(h.status, Health::Green);
        assert_eq!(f.es.shards_on(&f.host, &victim), 0);
        // The move showed as RELOCATING on the way.
        assert!(
            f.es.requests()
                .iter()
                .any(|r| r.path.starts_with("/_cat/shards"))
        );
        // The pod leaves empty-handed: nothing unassigned.
        f.es.set_nodes(&f.host, pods(&f.t, 2));
        assert_eq!(f.es.departures(&f.host), vec![(victim, 0)]);
        assert_eq!(f.es.health(&f.host), Health::Green);
    }

    #[tokio::test]
    async fn a_relocating_shard_still_counts_on_its_source() {
        let f = fixture(3, Duration::from_secs(30)).await;
        f.client
            .exclude(&f.t, "data-hot", 2)
            .await
            .expect("exclude");
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        let victim = names::pod(&f.t, "data-hot", 2);
        assert_eq!(
            h.shards_on_excluded[&node_key("data-hot", 2)] as usize,
            f.es.shards_on(&f.host, &victim)
        );
        let sample = cat_rows(&f);
        let relocating: Vec<&Value> = sample
            .iter()
            .filter(|r| r["state"] == "RELOCATING")
            .collect();
        assert_eq!(relocating.len(), 1, "{sample:?}");
        let cell = relocating[0]["node"].as_str().unwrap_or_default();
        assert!(cell.starts_with(&format!("{victim} -> 10.0.0.")), "{cell}");
    }

    /// `_cat/shards` rows as the stand-in prints them now.
    fn cat_rows(f: &Fixture) -> Vec<Value> {
        let state = lock(&f.es.shared);
        let c = state.clusters.get(&f.host).expect("cluster");
        c.shard_rows()
            .into_iter()
            .map(|r| Value::Object(r.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
            .collect()
    }

    #[tokio::test]
    async fn exclude_drops_names_of_nodes_gone_or_wanted_again() {
        let f = fixture(4, Duration::from_millis(100)).await;
        let smaller = Target {
            spec: ClusterSpec {
                node_sets: vec![NodeSet {
                    count: 2,
                    ..f.t.spec.node_sets[0].clone()
                }],
                ..f.t.spec.clone()
            },
            ..f.t.clone()
        };
        f.client
            .exclude(&smaller, "data-hot", 3)
            .await
            .expect("exclude 3");
        // Pod 3 leaves; excluding pod 2 drops its name.
        f.es.set_nodes(&f.host, pods(&f.t, 3));
        f.client
            .exclude(&smaller, "data-hot", 2)
            .await
            .expect("exclude 2");
        assert_eq!(
            f.es.exclusions(&f.host),
            vec![names::pod(&f.t, "data-hot", 2)]
        );
        // The spec wants 3 pods again: pod 2 is no longer kept excluded when
        // another pod (of a node set that left the spec) is excluded.
        let grown = Target {
            spec: ClusterSpec {
                node_sets: vec![NodeSet {
                    count: 3,
                    ..f.t.spec.node_sets[0].clone()
                }],
                ..f.t.spec.clone()
            },
            ..f.t.clone()
        };
        f.client
            .exclude(&grown, "old", 0)
            .await
            .expect("exclude old-0");
        assert_eq!(f.es.exclusions(&f.host), vec![names::pod(&f.t, "old", 0)]);
        // clear_exclusions_except empties the list.
        f.client
            .clear_exclusions_except(&grown, &[])
            .await
            .expect("clear");
        assert!(f.es.exclusions(&f.host).is_empty());
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert!(h.shards_on_excluded.is_empty());
    }

    #[tokio::test]
    async fn a_node_removed_before_it_drained_leaves_replicas_unassigned() {
        let f = fixture(3, Duration::from_secs(30)).await;
        let victim = names::pod(&f.t, "data-hot", 2);
        let held = f.es.shards_on(&f.host, &victim);
        f.es.set_nodes(&f.host, pods(&f.t, 2));
        assert_eq!(f.es.departures(&f.host), vec![(victim.clone(), held)]);
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!(h.status, Health::Yellow, "{h:?}");
        assert!(h.reason.starts_with("index "), "{}", h.reason);
        assert!(h.reason.contains("unassigned replica"), "{}", h.reason);
        assert!(h.reason.contains("(NODE_LEFT)"), "{}", h.reason);
        // It comes back (a restart): its copies go home, green again.
        f.es.set_nodes(&f.host, pods(&f.t, 3));
        assert_eq!(f.es.health(&f.host), Health::Green);
        assert_eq!(f.es.shards_on(&f.host, &victim), held);
    }

    #[tokio::test]
    async fn an_excluded_node_that_drops_out_while_red_is_not_drained() {
        // No replicas: the pod's disk holds the only copy of its shards.
        let f = fixture_with(
            3,
            Duration::from_secs(30),
            vec![IndexDef::new("solo-1", 6, 0)],
        )
        .await;
        let victim = names::pod(&f.t, "data-hot", 2);
        let key = node_key("data-hot", 2);
        f.client
            .exclude(&f.t, "data-hot", 2)
            .await
            .expect("exclude");
        let held = f.es.shards_on(&f.host, &victim);
        assert!(held > 0);
        // The pod crashes mid-drain: Elasticsearch says it holds nothing...
        f.es.set_nodes(&f.host, pods(&f.t, 2));
        assert_eq!(f.es.shards_on(&f.host, &victim), 0);
        // ...but the cluster is red, so it does not count as drained.
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!(h.status, Health::Red);
        assert_eq!(h.shards_on_excluded[&key] as usize, held, "{h:?}");
        assert_eq!(
            h.reason,
            format!("index solo-1 has {held} unassigned primaries (NODE_LEFT)")
        );
        // It comes back and finishes its drain.
        f.es.set_nodes(&f.host, pods(&f.t, 3));
        f.es.set_drain_delay(Duration::ZERO);
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!((h.status, h.shards_on_excluded[&key]), (Health::Green, 0));
    }

    #[tokio::test]
    async fn a_one_node_cluster_is_green_and_red_while_its_node_is_away() {
        let f = fixture(1, Duration::from_millis(100)).await;
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!(h.status, Health::Green);
        f.es.set_nodes(&f.host, vec![]);
        // No node, no master: 503, which is "not reachable".
        assert_eq!(f.client.health(&f.t).await.expect("health"), None);
        f.es.set_nodes(&f.host, pods(&f.t, 1));
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert_eq!(h.status, Health::Green);
    }

    #[tokio::test]
    async fn a_wrong_password_is_a_permanent_auth_error() {
        let f = fixture(3, Duration::from_secs(1)).await;
        let bad = EsClient::new(
            TestAccess {
                addr: f.es.addr(),
                ca_pem: f.ca.clone(),
                password: "wrong".into(),
                none: false,
            },
            Duration::from_secs(2),
        );
        let e = bad.health(&f.t).await.expect_err("refused");
        assert!(!e.retryable);
        assert_eq!(e.reason, "ES_AUTH");
        assert!(e.message.contains("401"), "{e}");
        assert!(
            e.message.contains("unable to authenticate user [elastic]"),
            "{e}"
        );
        let e = bad.exclude(&f.t, "data-hot", 1).await.expect_err("refused");
        assert_eq!((e.retryable, e.reason.as_str()), (false, "ES_AUTH"));
        assert!(f.es.requests().iter().any(|r| r.status == 401));
        assert!(f.es.exclusions(&f.host).is_empty());
    }

    #[tokio::test]
    async fn the_401_carries_www_authenticate_like_elasticsearch() {
        let f = fixture(1, Duration::from_secs(1)).await;
        let mut state = lock(&f.es.shared);
        let c = state.clusters.get_mut(&f.host).expect("cluster");
        let (status, headers, body) = answer(
            c,
            &Method::GET,
            "/_cluster/health",
            &HashMap::new(),
            None,
            None,
            b"",
        );
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers
                .iter()
                .any(|(k, v)| *k == "www-authenticate" && v.starts_with("Basic realm=\"security\""))
        );
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["type"], "security_exception");
        assert_eq!(body["status"], 401);
    }

    #[tokio::test]
    async fn nothing_listening_or_stopped_is_not_reachable() {
        let f = fixture(3, Duration::from_secs(1)).await;
        assert!(f.client.health(&f.t).await.expect("health").is_some());
        f.es.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(f.client.health(&f.t).await.expect("health"), None);
        // A write is a retryable error instead.
        let e = f
            .client
            .exclude(&f.t, "data-hot", 2)
            .await
            .expect_err("unreachable");
        assert_eq!((e.retryable, e.reason.as_str()), (true, "ES_UNREACHABLE"));

        let nobody: SocketAddr = format!("127.0.0.1:{}", crate::free_port())
            .parse()
            .expect("addr");
        let client = EsClient::new(
            TestAccess {
                addr: nobody,
                ca_pem: tls_for("x").0,
                password: PASSWORD.into(),
                none: false,
            },
            Duration::from_secs(2),
        );
        assert_eq!(client.health(&f.t).await.expect("health"), None);
        // No endpoint yet (no Secret): not reachable either.
        let client = EsClient::new(
            TestAccess {
                addr: nobody,
                ca_pem: String::new(),
                password: String::new(),
                none: true,
            },
            Duration::from_secs(2),
        );
        assert_eq!(client.health(&f.t).await.expect("health"), None);
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_is_not_trusted() {
        let f = fixture(3, Duration::from_secs(1)).await;
        // The client trusts a CA that did not sign the stand-in's certificate.
        let (other_ca, _, _) = tls_for(&f.host);
        let client = EsClient::new(
            TestAccess {
                addr: f.es.addr(),
                ca_pem: other_ca,
                password: PASSWORD.into(),
                none: false,
            },
            Duration::from_secs(2),
        );
        let before = f.es.requests().len();
        assert_eq!(client.health(&f.t).await.expect("health"), None);
        // The handshake failed: no request reached the cluster.
        assert_eq!(f.es.requests().len(), before);
        // A cluster the stand-in does not know gets no certificate at all.
        let stranger = target("other", 3);
        assert_eq!(f.client.health(&stranger).await.expect("health"), None);
    }

    #[tokio::test]
    async fn one_server_serves_many_clusters_by_sni() {
        let f = fixture(3, Duration::from_secs(1)).await;
        let t2 = target("metrics", 2);
        let host2 = names::http_host(&t2);
        let (ca2, cert2, key2) = tls_for(&host2);
        f.es.register(
            &host2,
            "other-password",
            &cert2,
            &key2,
            pods(&t2, 2),
            vec![],
        )
        .expect("register");
        let c2 = EsClient::new(
            TestAccess {
                addr: f.es.addr(),
                ca_pem: ca2,
                password: "other-password".into(),
                none: false,
            },
            Duration::from_secs(2),
        );
        c2.exclude(&t2, "data-hot", 1).await.expect("exclude");
        assert_eq!(
            f.es.exclusions(&host2),
            vec![names::pod(&t2, "data-hot", 1)]
        );
        assert!(f.es.exclusions(&f.host).is_empty());
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        assert!(h.shards_on_excluded.is_empty());
    }

    /// A Kubernetes API answering only the two lists `follow` reads.
    async fn list_server(
        objects: Arc<Mutex<(Vec<Value>, Vec<Value>)>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let objects = objects.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let objects = objects.clone();
                        async move {
                            let (secrets, sets) =
                                objects.lock().unwrap_or_else(|p| p.into_inner()).clone();
                            let body = match req.uri().path() {
                                "/api/v1/secrets" => json!({
                                    "apiVersion": "v1", "kind": "SecretList",
                                    "metadata": {"resourceVersion": "7"}, "items": secrets,
                                }),
                                "/apis/apps/v1/statefulsets" => json!({
                                    "apiVersion": "apps/v1", "kind": "StatefulSetList",
                                    "metadata": {"resourceVersion": "7"}, "items": sets,
                                }),
                                _ => json!({}),
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                body.to_string(),
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn follow_registers_clusters_from_kubernetes_secrets_and_statefulsets() {
        use base64::engine::general_purpose::STANDARD;
        use esaas_k8s::names::{labels, secret_keys};

        let es = EsStandin::start_on(
            "127.0.0.1:0".parse().expect("addr"),
            Duration::from_millis(200),
        )
        .await
        .expect("start");
        let t = target("logs", 3);
        let host = names::http_host(&t);
        let (ca, cert, key) = tls_for(&host);
        let cluster_labels = serde_json::to_value(names::cluster_labels(&t)).expect("labels");
        let mut set_labels = names::node_set_labels(&t, "data-hot");
        set_labels.insert(labels::NODE_SET.into(), "data-hot".into());
        let secret = json!({
            "metadata": {
                "name": names::secret(&t), "namespace": names::namespace(&t),
                "labels": cluster_labels,
            },
            "data": {
                secret_keys::PASSWORD: STANDARD.encode(PASSWORD),
                secret_keys::CA_CERT: STANDARD.encode(&ca),
                secret_keys::TLS_CERT: STANDARD.encode(&cert),
                secret_keys::TLS_KEY: STANDARD.encode(&key),
            },
        });
        let set = |ready: i32| {
            json!({
                "metadata": {
                    "name": names::stateful_set(&t, "data-hot"),
                    "namespace": names::namespace(&t),
                    "labels": set_labels,
                },
                "spec": {"replicas": 3, "selector": {}, "serviceName": "x", "template": {}},
                "status": {"replicas": 3, "readyReplicas": ready},
            })
        };
        let objects = Arc::new(Mutex::new((vec![secret], vec![set(2)])));
        let (kube_addr, kube_task) = list_server(objects.clone()).await;
        let kube = kube::Client::try_from(kube::Config::new(
            format!("http://{kube_addr}").parse().expect("uri"),
        ))
        .expect("kube client");
        let follower = es.follow(kube, Duration::from_millis(50));

        let client = EsClient::new(
            TestAccess {
                addr: es.addr(),
                ca_pem: ca,
                password: PASSWORD.into(),
                none: false,
            },
            Duration::from_secs(2),
        );
        let wait_nodes = |n: usize| {
            let es = es.clone();
            let host = host.clone();
            async move {
                for _ in 0..100 {
                    let there = lock(&es.shared)
                        .clusters
                        .get(&host)
                        .is_some_and(|c| c.nodes.len() == n);
                    if there {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("{host} never had {n} nodes");
            }
        };
        wait_nodes(2).await;
        let h = client.health(&t).await.expect("health").expect("answered");
        assert_eq!(h.status, Health::Green);
        objects.lock().unwrap_or_else(|p| p.into_inner()).1 = vec![set(3)];
        wait_nodes(3).await;
        assert!(es.shards_on(&host, &names::pod(&t, "data-hot", 2)) > 0);
        // The Secret goes: the cluster is forgotten (no certificate, not reachable).
        objects.lock().unwrap_or_else(|p| p.into_inner()).0 = vec![];
        for _ in 0..100 {
            if lock(&es.shared).clusters.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(client.health(&t).await.expect("health"), None);
        es.stop();
        tokio::time::timeout(Duration::from_secs(2), follower)
            .await
            .expect("follower ends with the stand-in")
            .expect("follower");
        kube_task.abort();
    }

    #[test]
    fn settings_flatten_and_nest() {
        let mut flat = Vec::new();
        flatten(
            "",
            &json!({"cluster": {"routing": {"allocation": {"exclude": {"_name": "a,b"}}}}}),
            &mut flat,
        );
        assert_eq!(flat, vec![(EXCLUDE_NAME.to_string(), json!("a,b"))]);
        let m = BTreeMap::from([(EXCLUDE_NAME.to_string(), json!("a"))]);
        assert_eq!(
            nest(&m),
            json!({"cluster": {"routing": {"allocation": {"exclude": {"_name": "a"}}}}})
        );
    }
}
