//! `GET /_cluster/health`.

use serde_json::{Value, json};

use hyper::StatusCode;

use super::answer::{Answer, json_answer};
use super::cluster::Cluster;
use super::routes::Call;

/// `GET /_cluster/health`.
pub(super) fn get(c: &mut Cluster, _: &Call) -> Answer {
    json_answer(StatusCode::OK, &c.health_body())
}

impl Cluster {
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
