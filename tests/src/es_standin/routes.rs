//! Which endpoint answers a request, after authentication.

use std::collections::HashMap;

use hyper::{Method, StatusCode};
use serde_json::json;

use super::answer::{Answer, es_error, flag, json_answer};
use super::auth::authorized;
use super::cat::cat;
use super::cluster::Cluster;
use super::settings::{put_settings, settings_view};

pub(super) fn answer(
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
