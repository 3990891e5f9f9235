//! Which endpoint answers a request: authentication first, as Elasticsearch
//! does, then the path and method, then the endpoint.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;

use super::answer::{Answer, es_error, json_answer};
use super::auth::authorized;
use super::cluster::Cluster;
use super::{cat, health, settings};

/// One request, as the endpoints read it.
pub(super) struct Call {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: HashMap<String, String>,
    pub(super) auth: Option<String>,
    pub(super) content_type: Option<String>,
    pub(super) body: Bytes,
}

/// An endpoint: what cluster `c` answers to a call.
type Endpoint = fn(&mut Cluster, &Call) -> Answer;

/// Every endpoint the stand-in answers, by path and method. (The next one
/// is likely `POST`/`DELETE /_cluster/voting_config_exclusions`, in a
/// `voting` module of its own.)
const ROUTES: &[(&str, Method, Endpoint)] = &[
    ("/_cluster/health", Method::GET, health::get),
    ("/_cluster/settings", Method::GET, settings::get),
    ("/_cluster/settings", Method::PUT, settings::put),
    ("/_cat/shards", Method::GET, cat::shards),
    ("/_cat/nodes", Method::GET, cat::nodes),
];

/// The answer of cluster `c` to `call`.
pub(super) fn answer(c: &mut Cluster, call: &Call) -> Answer {
    let Call { method, path, .. } = call;
    if let Err(denied) = authorized(c, call.auth.as_deref(), path) {
        return denied;
    }
    let on_path: Vec<&(&str, Method, Endpoint)> =
        ROUTES.iter().filter(|(p, _, _)| p == path).collect();
    if on_path.is_empty() {
        return json_answer(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": format!("no handler found for uri [{path}] and method [{method}]")
            }),
        );
    }
    let Some((_, _, endpoint)) = on_path.iter().find(|(_, m, _)| m == method) else {
        let list: Vec<String> = on_path.iter().map(|(_, m, _)| m.to_string()).collect();
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
    };
    if c.nodes.is_empty() {
        return es_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "master_not_discovered_exception",
            "no master node has been discovered",
        );
    }
    endpoint(c, call)
}
