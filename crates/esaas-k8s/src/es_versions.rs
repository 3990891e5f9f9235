//! Yellow only because of a rolling upgrade.
//!
//! Elasticsearch's `NodeVersionAllocationDecider` never allocates a replica
//! to a node older than the node holding its primary, so between pods of a
//! rolling upgrade a cluster may be yellow for that reason alone: the
//! replicas can go nowhere until more nodes run the new version. The
//! planner lets the next pod restart then (`HealthObs::yellow_from_versions`);
//! this reads whether that is the only reason, from `_cat/shards` and
//! `_cat/nodes`, and says no whenever something is not known.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Conn, ShardRow, holders};

/// The `_cat/nodes` columns read here.
pub(super) const CAT_NODE_VERSIONS: &str = "/_cat/nodes?format=json&h=name,version,node.role";

/// A row of `_cat/nodes` with the columns of [`CAT_NODE_VERSIONS`].
#[derive(Debug, Default, Deserialize)]
pub(super) struct NodeVersionRow {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) version: Option<String>,
    #[serde(default, rename = "node.role")]
    pub(super) role: Option<String>,
}

/// `major.minor.patch`, numbers only; anything else is not known.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split('.').map(|p| {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u64>().ok())
            .flatten()
    });
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some((a, b, c)),
        _ => None,
    }
}

/// Whether `roles` (`node.role`, one letter per role) holds shards: `d`
/// (`data`) or a data tier: `s` content, `h` hot, `w` warm, `c` cold, `f`
/// frozen (`DiscoveryNodeRole.roleNameAbbreviation`).
fn holds_data(roles: &str) -> bool {
    roles
        .chars()
        .any(|c| matches!(c, 'd' | 's' | 'h' | 'w' | 'c' | 'f'))
}

/// Whether every unassigned copy in `shards` is a replica kept off the data
/// nodes by their versions alone: there is at least one unassigned row; each
/// is a replica (`prirep` `r`) whose primary is STARTED on a data node of a
/// version newer than every data node that holds no copy of that shard
/// (and there is such a node), and not one whose allocation failed
/// (`unassigned.reason` `ALLOCATION_FAILED`). An unknown or unparsable version, a row
/// without index or shard, a primary not started: false (fail closed).
pub(super) fn yellow_from_versions(shards: &[ShardRow], nodes: &[NodeVersionRow]) -> bool {
    let mut data: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for n in nodes {
        let Some(role) = n.role.as_deref() else {
            return false;
        };
        if !holds_data(role) {
            continue;
        }
        let (Some(name), Some(version)) = (
            n.name.as_deref(),
            n.version.as_deref().and_then(parse_version),
        ) else {
            return false;
        };
        data.insert(name, version);
    }
    let unassigned: Vec<&ShardRow> = shards
        .iter()
        .filter(|r| r.state.as_deref() == Some("UNASSIGNED"))
        .collect();
    if unassigned.is_empty() {
        return false;
    }
    unassigned.iter().all(|u| {
        let (Some(index), Some(shard)) = (u.index.as_deref(), u.shard.as_deref()) else {
            return false;
        };
        // Allocation was tried and failed (`MaxRetryAllocationDecider`
        // then holds it whatever the versions): not versions only.
        if u.prirep.as_deref() != Some("r")
            || u.unassigned_reason.as_deref() == Some("ALLOCATION_FAILED")
        {
            return false;
        }
        let copies: Vec<&ShardRow> = shards
            .iter()
            .filter(|r| r.index.as_deref() == Some(index) && r.shard.as_deref() == Some(shard))
            .collect();
        let primary_version = copies
            .iter()
            .find(|r| r.prirep.as_deref() == Some("p") && r.state.as_deref() == Some("STARTED"))
            .and_then(|p| p.node.as_deref())
            .and_then(|n| data.get(n));
        let Some(primary_version) = primary_version else {
            return false;
        };
        let holding: Vec<&str> = copies
            .iter()
            .filter_map(|r| r.node.as_deref())
            .flat_map(holders)
            .collect();
        let mut candidates = data.iter().filter(|(n, _)| !holding.contains(n)).peekable();
        candidates.peek().is_some() && candidates.all(|(_, v)| v < primary_version)
    })
}

impl Conn {
    /// Whether the cluster, yellow with `shards`, is so only because of
    /// node versions; a failed call is no.
    pub(super) async fn yellow_from_versions(&self, shards: &[ShardRow]) -> bool {
        match self.get::<Vec<NodeVersionRow>>(CAT_NODE_VERSIONS).await {
            Ok(nodes) => yellow_from_versions(shards, &nodes),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, version: &str, role: &str) -> NodeVersionRow {
        NodeVersionRow {
            name: Some(name.into()),
            version: Some(version.into()),
            role: Some(role.into()),
        }
    }

    fn row(index: &str, shard: &str, prirep: &str, state: &str, node: Option<&str>) -> ShardRow {
        ShardRow {
            index: Some(index.into()),
            shard: Some(shard.into()),
            prirep: Some(prirep.into()),
            state: Some(state.into()),
            node: node.map(Into::into),
            unassigned_reason: None,
        }
    }

    fn three(v0: &str, v1: &str, v2: &str) -> Vec<NodeVersionRow> {
        vec![
            node("n0", v0, "cdfhilmrstw"),
            node("n1", v1, "cdfhilmrstw"),
            node("n2", v2, "cdfhilmrstw"),
        ]
    }

    #[test]
    fn yellow_from_versions_by_table() {
        use self::row as r;
        let (old, new) = ("8.17.10", "8.19.3");
        // The replica of a shard whose primary is on the one new node, and
        // the other copy-free node is old: versions only.
        let kept = || {
            vec![
                r("logs", "0", "p", "STARTED", Some("n2")),
                r("logs", "0", "r", "STARTED", Some("n1")),
                r("logs", "1", "p", "STARTED", Some("n2")),
                r("logs", "1", "r", "UNASSIGNED", None),
            ]
        };
        let cases: Vec<(&str, Vec<ShardRow>, Vec<NodeVersionRow>, bool)> = vec![
            ("kept off older nodes", kept(), three(old, old, new), true),
            (
                "no unassigned row",
                vec![r("logs", "0", "p", "STARTED", Some("n0"))],
                three(old, old, new),
                false,
            ),
            (
                "every node on one version",
                kept(),
                three(new, new, new),
                false,
            ),
            (
                "a free node as new as the primary",
                kept(),
                three(new, old, new),
                false,
            ),
            (
                "a free node newer than the primary",
                vec![
                    r("logs", "1", "p", "STARTED", Some("n0")),
                    r("logs", "1", "r", "UNASSIGNED", None),
                ],
                three(old, new, new),
                false,
            ),
            (
                "an unassigned primary",
                vec![
                    r("logs", "1", "p", "UNASSIGNED", None),
                    r("logs", "1", "r", "UNASSIGNED", None),
                ],
                three(old, old, new),
                false,
            ),
            (
                "the primary not started",
                vec![
                    r("logs", "1", "p", "INITIALIZING", Some("n2")),
                    r("logs", "1", "r", "UNASSIGNED", None),
                ],
                three(old, old, new),
                false,
            ),
            (
                "a relocating primary",
                vec![
                    r(
                        "logs",
                        "1",
                        "p",
                        "RELOCATING",
                        Some("n2 -> 10.0.0.2 abcd n1"),
                    ),
                    r("logs", "1", "r", "UNASSIGNED", None),
                ],
                three(old, old, new),
                false,
            ),
            (
                "one unassigned replica of an old primary among kept ones",
                {
                    let mut rows = kept();
                    rows.push(r("logs", "2", "p", "STARTED", Some("n0")));
                    rows.push(r("logs", "2", "r", "UNASSIGNED", None));
                    rows
                },
                three(old, old, new),
                false,
            ),
            (
                "every data node holds a copy (too few nodes, not versions)",
                vec![
                    r("logs", "1", "p", "STARTED", Some("n2")),
                    r("logs", "1", "r", "STARTED", Some("n0")),
                    r("logs", "1", "r", "STARTED", Some("n1")),
                    r("logs", "1", "r", "UNASSIGNED", None),
                ],
                three(old, old, new),
                false,
            ),
            (
                "a relocating copy holds on both ends",
                vec![
                    r("logs", "1", "p", "STARTED", Some("n2")),
                    r(
                        "logs",
                        "1",
                        "r",
                        "RELOCATING",
                        Some("n1 -> 10.0.0.1 abcd n0"),
                    ),
                    r("logs", "1", "r", "UNASSIGNED", None),
                ],
                vec![
                    node("n0", new, "dm"),
                    node("n1", old, "dm"),
                    node("n2", new, "dm"),
                    node("n3", old, "hm"),
                ],
                true,
            ),
            (
                "a master-only node of any version does not count",
                kept(),
                {
                    let mut n = three(old, old, new);
                    n.push(node("m0", "9.9.9", "mr"));
                    n
                },
                true,
            ),
            (
                "tier roles are data nodes",
                kept(),
                vec![
                    node("n0", old, "hm"),
                    node("n1", old, "w"),
                    node("n2", new, "s"),
                ],
                true,
            ),
            (
                "a newer tier node that could take it",
                kept(),
                {
                    let mut n = three(old, old, new);
                    n.push(node("n3", new, "c"));
                    n
                },
                false,
            ),
            (
                "an unparsable data node version",
                kept(),
                three(old, "8.19", new),
                false,
            ),
            (
                "a snapshot build is not parsed",
                kept(),
                three(old, "8.17.10-SNAPSHOT", new),
                false,
            ),
            (
                "a data node without a version",
                kept(),
                {
                    let mut n = three(old, old, new);
                    n[0].version = None;
                    n
                },
                false,
            ),
            (
                "a node without roles",
                kept(),
                {
                    let mut n = three(old, old, new);
                    n[0].role = None;
                    n
                },
                false,
            ),
            (
                "the primary's node is not listed",
                kept(),
                vec![node("n0", old, "d"), node("n1", old, "d")],
                false,
            ),
            (
                "a replica whose allocation failed",
                {
                    let mut rows = kept();
                    rows[3].unassigned_reason = Some("ALLOCATION_FAILED".into());
                    rows
                },
                three(old, old, new),
                false,
            ),
            (
                "a row without shard",
                {
                    let mut rows = kept();
                    rows[3].shard = None;
                    rows
                },
                three(old, old, new),
                false,
            ),
            (
                "minor versions compare as numbers",
                kept(),
                three("8.9.0", "8.9.0", "8.10.0"),
                true,
            ),
        ];
        for (what, shards, nodes, want) in cases {
            assert_eq!(yellow_from_versions(&shards, &nodes), want, "{what}");
        }
    }
}
