//! Which nodes the effective `cluster.routing.allocation.exclude.*` settings
//! and `cluster.routing.allocation.enable` keep shards off, as Elasticsearch
//! decides it (`DiscoveryNodeFilters.match` with `OR` for exclude,
//! elastic/elasticsearch `server/.../cluster/node/DiscoveryNodeFilters.java`;
//! `EnableAllocationDecider.canAllocate`).
//!
//! A node here has a name, an id ([`node_id`]) and one address that is its
//! host IP, publish IP and host name alike (an Elasticsearch pod publishes
//! its pod IP); it has no custom attributes, so an `exclude.{attribute}`
//! filter on anything else matches no node.

use std::collections::BTreeMap;

use serde_json::Value;

use super::cluster::{Cluster, ShardCopy, node_id};
use super::known_settings::{Allocation, ENABLE, EXCLUDE, list_values};

impl Cluster {
    /// A setting's value now: transient over persistent, key by key.
    fn effective(&self, key: &str) -> Option<&Value> {
        self.transient.get(key).or_else(|| self.persistent.get(key))
    }

    /// The effective exclude filters: attribute → values.
    fn exclude_filters(&self) -> BTreeMap<String, Vec<String>> {
        self.persistent
            .keys()
            .chain(self.transient.keys())
            .filter_map(|k| k.strip_prefix(EXCLUDE))
            .filter_map(|attr| {
                let values = list_values(self.effective(&format!("{EXCLUDE}{attr}"))?);
                (!values.is_empty()).then(|| (attr.to_string(), values))
            })
            .collect()
    }

    /// The values of the effective `exclude._name` (what the product writes).
    pub(super) fn excluded_names(&self) -> Vec<String> {
        self.exclude_filters().remove("_name").unwrap_or_default()
    }

    /// Whether an exclude filter matches `node`, or it is shutting down for
    /// good: `NodeShutdownAllocationDecider` (elastic/elasticsearch
    /// `server/.../cluster/routing/allocation/decider/NodeShutdownAllocationDecider.java`)
    /// lets no shard be allocated to, nor remain on, a node with a `REMOVE`,
    /// `SIGTERM` or `REPLACE` shutdown (a `RESTART` keeps its shards). The
    /// stand-in drains such a node as an excluded one; a `REPLACE` drains to
    /// any node, not only its target.
    pub(super) fn is_excluded(&self, node: &str) -> bool {
        if self.shutdown_of(node).is_some_and(|s| s.kind != "RESTART") {
            return true;
        }
        let ip = self.ip(node);
        self.exclude_filters().iter().any(|(attr, values)| {
            values.iter().any(|v| match attr.as_str() {
                "_name" | "name" => simple_match(v, node),
                "_ip" | "_host_ip" | "_publish_ip" | "_host" => simple_match(v, &ip),
                "_id" => *v == node_id(node),
                _ => false,
            })
        })
    }

    /// The effective `cluster.routing.allocation.enable` (`all` by default;
    /// a stored value was validated on the way in).
    fn allocation(&self) -> Allocation {
        self.effective(ENABLE)
            .and_then(Value::as_str)
            .and_then(|v| Allocation::parse(v).ok())
            .unwrap_or(Allocation::All)
    }

    /// Whether `copy` may be allocated (or moved, when `moving`) anywhere.
    pub(super) fn may_allocate(&self, copy: &ShardCopy, moving: bool) -> bool {
        match self.allocation() {
            Allocation::All => true,
            Allocation::Primaries => copy.primary,
            // Only a primary with no data yet: one of a new index.
            Allocation::NewPrimaries => {
                copy.primary && !moving && matches!(copy.unassigned, Some(("INDEX_CREATED", _, _)))
            }
            Allocation::None => false,
        }
    }
}

/// Elasticsearch's `Regex.simpleMatch`: `*` matches any run of characters.
pub(super) fn simple_match(pattern: &str, s: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == s;
    };
    let Some(mut tail) = s.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_match_is_elasticsearchs_wildcard() {
        for (p, s) in [
            ("a", "a"),
            ("*", ""),
            ("*", "abc"),
            ("logs-*", "logs-data-1"),
            ("*-1", "logs-data-1"),
            ("l*d*1", "logs-data-1"),
            ("10.0.0.*", "10.0.0.3"),
        ] {
            assert!(simple_match(p, s), "{p} {s}");
        }
        for (p, s) in [
            ("a", "b"),
            ("logs-*", "metrics-1"),
            ("*-2", "x-1"),
            ("a*a", "a"),
        ] {
            assert!(!simple_match(p, s), "{p} {s}");
        }
    }
}
