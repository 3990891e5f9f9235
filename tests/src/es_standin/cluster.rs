//! One registered cluster: its nodes, shard copies, settings and what a test forced.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use esaas_core::cluster::Health;
use rustls::sign::CertifiedKey;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::IndexDef;

pub(super) struct Forced {
    pub(super) status: Health,
    pub(super) unassigned: Vec<(String, u32, bool)>,
}

/// One copy of a shard: a primary or a replica, on a node or unassigned.
#[derive(Debug, Clone)]
pub(super) struct ShardCopy {
    pub(super) index: String,
    pub(super) shard: u32,
    pub(super) primary: bool,
    pub(super) node: Option<String>,
    /// Why and since when it is unassigned, and the node it was on.
    pub(super) unassigned: Option<(&'static str, Instant, Option<String>)>,
}

pub(super) struct Drain {
    pub(super) started: Instant,
    pub(super) initial: usize,
}

pub(super) struct Cluster {
    pub(super) name: String,
    pub(super) password: String,
    pub(super) cert: Arc<CertifiedKey>,
    pub(super) nodes: Vec<String>,
    /// The Elasticsearch version each node runs (`_cat/nodes` `version`).
    pub(super) versions: HashMap<String, String>,
    pub(super) indices: Vec<IndexDef>,
    pub(super) copies: Vec<ShardCopy>,
    pub(super) persistent: BTreeMap<String, Value>,
    pub(super) transient: BTreeMap<String, Value>,
    pub(super) drains: HashMap<String, Drain>,
    pub(super) forced: Option<Forced>,
    pub(super) departures: Vec<(String, usize)>,
    /// Node shutdowns registered (`PUT /_nodes/{id}/shutdown`), by node id.
    pub(super) shutdowns: BTreeMap<String, Shutdown>,
    /// The voting configuration exclusions, in the order added.
    pub(super) voting_exclusions: Vec<VotingExclusion>,
    /// Cancelled when the cluster is replaced or forgotten: its connections end.
    pub(super) conns: CancellationToken,
    /// Disk in use per node, percent (`_cat/allocation`), where a test set it.
    pub(super) disk_percent: HashMap<String, u32>,
    /// The ids of the documents in each index (`_count` counts them).
    pub(super) docs: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Snapshot repositories registered (`PUT /_snapshot/{repo}`), by name.
    pub(super) repos: BTreeMap<String, super::repository::Repo>,
    /// The indices restored from a snapshot: (repository, snapshot, index
    /// in the snapshot), what `_recovery` reports as their primaries' source.
    /// An index created by a write recovered from an empty store.
    pub(super) restored_from: BTreeMap<String, (String, String, String)>,
    /// Where its `s3` repositories store their objects (`s3.client.default.endpoint`).
    pub(super) s3: Option<super::s3::S3>,
}

/// A node id as Elasticsearch prints it: 22 URL-safe base64 characters.
pub(super) fn node_id(name: &str) -> String {
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

/// The version a node runs when none was given.
pub const DEFAULT_VERSION: &str = "8.17.10";

/// `major.minor.patch` as numbers, for ordering versions; what does not
/// parse orders first (a test tool: the product's own parser fails closed).
pub(super) fn version_key(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => (a, b, c),
        _ => (0, 0, 0),
    }
}

/// A node shutdown record (`SingleNodeShutdownMetadata`).
#[derive(Debug, Clone)]
pub(super) struct Shutdown {
    /// `REMOVE`, `RESTART`, `REPLACE` or `SIGTERM`, as Elasticsearch prints it.
    pub(super) kind: &'static str,
    pub(super) reason: String,
    pub(super) started_millis: u64,
    /// Whether the node has been part of the cluster since it was registered.
    pub(super) node_seen: bool,
    /// As given (`allocation_delay`, only for `RESTART`).
    pub(super) allocation_delay: Option<(String, Duration)>,
    pub(super) target_node_name: Option<String>,
    pub(super) grace_period: Option<String>,
}

/// A voting configuration exclusion (`CoordinationMetadata.VotingConfigExclusion`):
/// a node id and name, either `_absent_` when the node was not in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VotingExclusion {
    pub(super) node_id: String,
    pub(super) node_name: String,
}

/// `VotingConfigExclusion.MISSING_VALUE_MARKER`.
pub(super) const ABSENT: &str = "_absent_";

impl Cluster {
    pub(super) fn new(
        name: String,
        password: String,
        cert: Arc<CertifiedKey>,
        members: Vec<(String, String)>,
        indices: Vec<IndexDef>,
    ) -> Self {
        let nodes = members.iter().map(|(n, _)| n.clone()).collect();
        let versions = members.into_iter().collect();
        let now = Instant::now();
        let copies = indices
            .iter()
            .flat_map(|i| {
                (0..i.primaries).map(move |shard| ShardCopy {
                    index: i.name.clone(),
                    shard,
                    primary: true,
                    node: None,
                    unassigned: Some(("INDEX_CREATED", now, None)),
                })
            })
            .collect();
        Self {
            name,
            password,
            cert,
            nodes,
            versions,
            indices,
            copies,
            persistent: BTreeMap::new(),
            transient: BTreeMap::new(),
            drains: HashMap::new(),
            forced: None,
            disk_percent: HashMap::new(),
            departures: Vec::new(),
            shutdowns: BTreeMap::new(),
            voting_exclusions: Vec::new(),
            conns: CancellationToken::new(),
            docs: BTreeMap::new(),
            repos: BTreeMap::new(),
            restored_from: BTreeMap::new(),
            s3: None,
        }
    }

    /// Adds index `def` (its primaries unassigned, allocation places them).
    pub(super) fn add_index(&mut self, def: IndexDef) {
        let now = Instant::now();
        self.copies
            .extend((0..def.primaries).map(|shard| ShardCopy {
                index: def.name.clone(),
                shard,
                primary: true,
                node: None,
                unassigned: Some(("INDEX_CREATED", now, None)),
            }));
        self.indices.push(def);
    }

    /// Removes `name`, its shard copies, documents and recovery (`DELETE /{index}`).
    pub(super) fn remove_index(&mut self, name: &str) {
        self.indices.retain(|i| i.name != name);
        self.copies.retain(|c| c.index != name);
        self.docs.remove(name);
        self.restored_from.remove(name);
    }

    pub(super) fn has_index(&self, name: &str) -> bool {
        self.indices.iter().any(|i| i.name == name)
    }

    /// The nodes an exclude filter matches.
    pub(super) fn excluded(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| self.is_excluded(n))
            .cloned()
            .collect()
    }

    /// The nodes that may hold shards.
    pub(super) fn eligible(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| !self.is_excluded(n))
            .cloned()
            .collect()
    }

    pub(super) fn count_on(&self, node: &str) -> usize {
        self.copies
            .iter()
            .filter(|c| c.node.as_deref() == Some(node))
            .count()
    }

    pub(super) fn ip(&self, node: &str) -> String {
        let i = self.nodes.iter().position(|n| n == node).unwrap_or(250);
        format!("10.0.0.{}", i + 1)
    }

    pub(super) fn status(&self) -> Health {
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

    pub(super) fn set_nodes(&mut self, nodes: Vec<String>, now: Instant) {
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
        for n in &nodes {
            if !self.versions.contains_key(n) {
                self.versions.insert(n.clone(), DEFAULT_VERSION.into());
            }
        }
        self.versions.retain(|n, _| nodes.contains(n));
        self.nodes = nodes;
        self.resolve_voting_exclusions();
        for (id, s) in self.shutdowns.iter_mut() {
            if self.nodes.iter().any(|n| node_id(n) == *id) {
                s.node_seen = true;
            }
        }
    }

    /// The nodes are now `members` (name, version). A node already there
    /// with another version restarted: it leaves first (a node's version
    /// changes only with its process), then joins again.
    pub(super) fn set_members(&mut self, members: Vec<(String, String)>, now: Instant) {
        let restarted: Vec<&String> = members
            .iter()
            .filter(|(n, v)| self.versions.get(n).is_some_and(|old| old != v))
            .map(|(n, _)| n)
            .collect();
        if !restarted.is_empty() {
            let staying = self
                .nodes
                .iter()
                .filter(|n| !restarted.contains(n))
                .cloned()
                .collect();
            self.set_nodes(staying, now);
        }
        self.versions = members.iter().cloned().collect();
        self.set_nodes(members.into_iter().map(|(n, _)| n).collect(), now);
    }

    /// The version node `name` runs.
    pub(super) fn version_of(&self, name: &str) -> &str {
        self.versions
            .get(name)
            .map(String::as_str)
            .unwrap_or(DEFAULT_VERSION)
    }

    /// The name of the node with id `id`, if it is in the cluster.
    pub(super) fn name_of(&self, id: &str) -> Option<&String> {
        self.nodes.iter().find(|n| node_id(n) == id)
    }

    /// The shutdown registered for node `name`, if any.
    pub(super) fn shutdown_of(&self, name: &str) -> Option<&Shutdown> {
        self.shutdowns.get(&node_id(name))
    }
}
