//! `GET /_cat/shards`, `GET /_cat/nodes` and `GET /_cat/allocation`, as JSON (`format=json`) with
//! the columns named in `h`.
//!
//! Only the columns the product reads are modelled; Elasticsearch has many
//! more (`GET /_cat/shards?help`). Asking for another one, for no `h`, or
//! for the text table is refused loudly rather than answered with nulls, so
//! a new column is modelled here before the product relies on it.

use std::collections::HashMap;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::answer::{Answer, es_error, json_answer};
use super::cluster::{Cluster, node_id};
use super::routes::Call;

/// The `_cat/shards` columns modelled.
const SHARD_COLUMNS: &[&str] = &[
    "index",
    "shard",
    "prirep",
    "state",
    "node",
    "unassigned.reason",
];

/// The `_cat/nodes` columns modelled. `id` is the node id's first four
/// characters unless `full_id` is set (`RestNodesAction`); `master` is `*`
/// on the elected master (the first node here), `-` elsewhere; `version`
/// (alias `v`) the Elasticsearch version the node runs; `node.role` (alias
/// `r`) its role letters (`DiscoveryNodeRole.roleNameAbbreviation`, sorted):
/// every node here holds shards and is master-eligible, so each shows the
/// letters of a node with the default roles, `cdfhilmrstw`.
const NODE_COLUMNS: &[&str] = &[
    "name",
    "id",
    "ip",
    "master",
    "version",
    "v",
    "node.role",
    "r",
];

/// Aliases `RestNodesAction` declares for a column: the answer is keyed by
/// the name asked for, the value is the column's.
fn canonical(col: &str) -> &str {
    match col {
        "v" => "version",
        "r" => "node.role",
        other => other,
    }
}

/// The `_cat/allocation` columns modelled: the node and the percentage of
/// its disk in use (`disk.percent`, an integer string as
/// `RestAllocationAction` prints it).
const ALLOCATION_COLUMNS: &[&str] = &["node", "disk.percent"];

/// `GET /_cat/allocation`: one row per node.
pub(super) fn allocation(c: &mut Cluster, call: &Call) -> Answer {
    let rows = c
        .nodes
        .iter()
        .map(|n| {
            let pct = c
                .disk_percent
                .get(n)
                .copied()
                .unwrap_or(DEFAULT_DISK_PERCENT);
            vec![("node", json!(n)), ("disk.percent", json!(pct.to_string()))]
        })
        .collect();
    cat(&call.path, rows, ALLOCATION_COLUMNS, &call.query)
}

/// How full a node's disk is until a test says otherwise.
pub(super) const DEFAULT_DISK_PERCENT: u32 = 12;

/// `GET /_cat/shards`.
pub(super) fn shards(c: &mut Cluster, call: &Call) -> Answer {
    cat(&call.path, c.shard_rows(), SHARD_COLUMNS, &call.query)
}

/// `GET /_cat/nodes`.
pub(super) fn nodes(c: &mut Cluster, call: &Call) -> Answer {
    // RestNodesAction reads full_id with paramAsBoolean (empty is true).
    let full_id = match call.query.get("full_id").map(String::as_str) {
        None | Some("false") => false,
        Some("") | Some("true") => true,
        Some(other) => {
            return es_error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                &format!("Failed to parse value [{other}] as only [true] or [false] are allowed."),
            );
        }
    };
    cat(&call.path, c.node_rows(full_id), NODE_COLUMNS, &call.query)
}

/// A cat API answer for `path`: one JSON object per row, with the columns of `h`.
fn cat(
    path: &str,
    rows: Vec<Vec<(&'static str, Value)>>,
    modelled: &[&str],
    query: &HashMap<String, String>,
) -> Answer {
    let not_modelled = |what: String| {
        es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            &format!(
                "the Elasticsearch stand-in does not model {what} of [{path}]; it answers \
                 format=json with h= naming some of [{}]",
                modelled.join(",")
            ),
        )
    };
    if query.get("format").map(String::as_str) != Some("json") {
        return not_modelled("the text table".into());
    }
    let Some(h) = query.get("h") else {
        return not_modelled("the default columns".into());
    };
    let cols: Vec<&str> = h.split(',').map(str::trim).collect();
    if let Some(col) = cols.iter().find(|c| !modelled.contains(c)) {
        return not_modelled(format!("column [{col}]"));
    }
    let pick = |row: &Vec<(&'static str, Value)>, col: &str| {
        row.iter()
            .find(|(k, _)| *k == canonical(col))
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null)
    };
    let out: Vec<Value> = rows
        .iter()
        .map(|r| Value::Object(cols.iter().map(|c| (c.to_string(), pick(r, c))).collect()))
        .collect();
    json_answer(StatusCode::OK, &Value::Array(out))
}

impl Cluster {
    /// `_cat/shards` rows, as Elasticsearch's columns.
    pub(super) fn shard_rows(&self) -> Vec<Vec<(&'static str, Value)>> {
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
                let (state, node) = match (&c.node, moving) {
                    (None, _) => ("UNASSIGNED", Value::Null),
                    (Some(n), Some(to)) => (
                        "RELOCATING",
                        Value::String(format!("{n} -> {} {} {to}", self.ip(to), node_id(to))),
                    ),
                    (Some(n), None) => ("STARTED", Value::String(n.clone())),
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
                        ("node", Value::Null),
                        ("unassigned.reason", json!("ALLOCATION_FAILED")),
                    ]);
                }
            }
        }
        rows
    }

    /// `_cat/nodes` rows.
    fn node_rows(&self, full_id: bool) -> Vec<Vec<(&'static str, Value)>> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let id = node_id(n);
                let id = if full_id {
                    id
                } else {
                    id.chars().take(4).collect()
                };
                vec![
                    ("name", Value::String(n.clone())),
                    ("id", Value::String(id)),
                    ("ip", Value::String(self.ip(n))),
                    (
                        "master",
                        Value::String(if i == 0 { "*" } else { "-" }.into()),
                    ),
                    ("version", Value::String(self.version_of(n).into())),
                    ("node.role", Value::String("cdfhilmrstw".into())),
                ]
            })
            .collect()
    }
}
