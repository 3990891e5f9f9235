//! `GET /_cat/shards` and `GET /_cat/nodes`.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};

use super::answer::{Answer, json_answer};
use super::cluster::{Cluster, node_id};

/// A cat API answer: JSON objects or a text table, columns per `h`.
pub(super) fn cat(
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

    pub(super) fn node_rows(&self) -> Vec<Vec<(&'static str, Value)>> {
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
}
