//! Which endpoint answers a request: authentication first, as Elasticsearch
//! does, then the path and method, then the endpoint.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;

use super::answer::{Answer, es_error, json_answer};
use super::auth::authorized;
use super::cluster::Cluster;
use super::{cat, docs, health, repository, settings, shutdown, snapshot, voting};

/// One request, as the endpoints read it.
pub(super) struct Call {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: HashMap<String, String>,
    pub(super) auth: Option<String>,
    pub(super) content_type: Option<String>,
    pub(super) body: Bytes,
    /// When the server first asked for this call's answer (an endpoint that
    /// waits answers [`super::answer::PENDING`] until it is done or has waited enough).
    pub(super) started: std::time::Instant,
}

/// An endpoint: what cluster `c` answers to a call.
type Endpoint = fn(&mut Cluster, &Call) -> Answer;

/// A path, a method, the query parameters read there, and who answers.
struct Route {
    /// Segments in braces (`{node_id}`) match any one segment; a literal
    /// segment wins over them, as in Elasticsearch's `PathTrie`.
    path: &'static str,
    method: Method,
    /// Elasticsearch takes more (`wait_for_status`, `pretty`, ...); one the
    /// stand-in does not model is refused as Elasticsearch refuses one it
    /// does not know, so it gets modelled before the product sends it.
    params: &'static [&'static str],
    endpoint: Endpoint,
}

/// Every endpoint the stand-in answers.
const ROUTES: &[Route] = &[
    Route {
        path: "/_cluster/health",
        method: Method::GET,
        params: &[],
        endpoint: health::get,
    },
    Route {
        path: "/_cluster/settings",
        method: Method::GET,
        params: &["flat_settings"],
        endpoint: settings::get,
    },
    Route {
        path: "/_cluster/settings",
        method: Method::PUT,
        params: &["flat_settings"],
        endpoint: settings::put,
    },
    Route {
        path: "/_cat/shards",
        method: Method::GET,
        params: &["format", "h"],
        endpoint: cat::shards,
    },
    Route {
        path: "/_cat/allocation",
        method: Method::GET,
        params: &["format", "h"],
        endpoint: cat::allocation,
    },
    Route {
        path: "/_cat/nodes",
        method: Method::GET,
        params: &["format", "h", "full_id"],
        endpoint: cat::nodes,
    },
    // RestPutShutdownNodeAction: master_timeout and timeout (the ack timeout).
    Route {
        path: "/_nodes/{node_id}/shutdown",
        method: Method::PUT,
        params: &["master_timeout", "timeout"],
        endpoint: shutdown::put,
    },
    // RestGetShutdownStatusAction.
    Route {
        path: "/_nodes/shutdown",
        method: Method::GET,
        params: &["master_timeout"],
        endpoint: shutdown::get,
    },
    Route {
        path: "/_nodes/{node_id}/shutdown",
        method: Method::GET,
        params: &["master_timeout"],
        endpoint: shutdown::get,
    },
    // RestDeleteShutdownNodeAction.
    Route {
        path: "/_nodes/{node_id}/shutdown",
        method: Method::DELETE,
        params: &["master_timeout", "timeout"],
        endpoint: shutdown::delete,
    },
    // RestAddVotingConfigExclusionAction.
    Route {
        path: "/_cluster/voting_config_exclusions",
        method: Method::POST,
        params: &["node_names", "node_ids", "timeout", "master_timeout"],
        endpoint: voting::add,
    },
    // RestClearVotingConfigExclusionsAction: the wait is bounded by master_timeout.
    Route {
        path: "/_cluster/voting_config_exclusions",
        method: Method::DELETE,
        params: &["wait_for_removal", "master_timeout"],
        endpoint: voting::clear,
    },
    // RestClusterStateAction (`/_cluster/state/{metric}`), the metadata metric
    // only, filtered (`filter_path` is read by every REST handler).
    Route {
        path: "/_cluster/state/metadata",
        method: Method::GET,
        params: &["filter_path", "master_timeout"],
        endpoint: voting::state_metadata,
    },
    // RestIndexAction (`op_type`, `refresh`... are not modelled).
    Route {
        path: "/{index}/_doc/{id}",
        method: Method::PUT,
        params: &[],
        endpoint: docs::index,
    },
    Route {
        path: "/{index}/_doc",
        method: Method::POST,
        params: &[],
        endpoint: docs::index,
    },
    // RestRecoveryAction (`active_only`, `detailed` are not modelled).
    Route {
        path: "/{index}/_recovery",
        method: Method::GET,
        params: &[],
        endpoint: snapshot::recovery,
    },
    // RestCountAction, without a query.
    Route {
        path: "/{index}/_count",
        method: Method::GET,
        params: &[],
        endpoint: docs::count,
    },
    // RestPutRepositoryAction.
    Route {
        path: "/_snapshot/{repo}",
        method: Method::PUT,
        params: &["verify", "master_timeout", "timeout"],
        endpoint: repository::put,
    },
    // RestGetRepositoriesAction.
    Route {
        path: "/_snapshot/{repo}",
        method: Method::GET,
        params: &["master_timeout", "local"],
        endpoint: repository::get,
    },
    // RestVerifyRepositoryAction.
    Route {
        path: "/_snapshot/{repo}/_verify",
        method: Method::POST,
        params: &["master_timeout", "timeout"],
        endpoint: repository::verify,
    },
    // RestCreateSnapshotAction: PUT and POST alike.
    Route {
        path: "/_snapshot/{repo}/{snapshot}",
        method: Method::PUT,
        params: &["wait_for_completion", "master_timeout"],
        endpoint: snapshot::create,
    },
    Route {
        path: "/_snapshot/{repo}/{snapshot}",
        method: Method::POST,
        params: &["wait_for_completion", "master_timeout"],
        endpoint: snapshot::create,
    },
    // RestGetSnapshotsAction (sorting and paging are not modelled).
    Route {
        path: "/_snapshot/{repo}/{snapshot}",
        method: Method::GET,
        params: &["ignore_unavailable", "master_timeout", "verbose"],
        endpoint: snapshot::get,
    },
    // RestDeleteSnapshotAction.
    Route {
        path: "/_snapshot/{repo}/{snapshot}",
        method: Method::DELETE,
        params: &["master_timeout", "wait_for_completion"],
        endpoint: snapshot::delete,
    },
    // RestRestoreSnapshotAction.
    Route {
        path: "/_snapshot/{repo}/{snapshot}/_restore",
        method: Method::POST,
        params: &["wait_for_completion", "master_timeout"],
        endpoint: snapshot::restore,
    },
];

/// Whether `pattern` matches `path` segment by segment, and how literally
/// (the number of literal segments: the most literal route wins).
fn matches(pattern: &str, path: &str) -> Option<usize> {
    let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    if p.len() != s.len() {
        return None;
    }
    let mut literal = 0;
    for (p, s) in p.iter().zip(&s) {
        if p.starts_with('{') && p.ends_with('}') {
            if s.is_empty() {
                return None;
            }
        } else if p == s {
            literal += 1;
        } else {
            return None;
        }
    }
    Some(literal)
}

/// The answer of cluster `c` to `call`.
pub(super) fn answer(c: &mut Cluster, call: &Call) -> Answer {
    let Call { method, path, .. } = call;
    if let Err(denied) = authorized(c, call.auth.as_deref(), path) {
        return denied;
    }
    let scored: Vec<(usize, &Route)> = ROUTES
        .iter()
        .filter_map(|r| matches(r.path, path).map(|m| (m, r)))
        .collect();
    let best = scored.iter().map(|(m, _)| *m).max().unwrap_or_default();
    let on_path: Vec<&Route> = scored
        .into_iter()
        .filter(|(m, _)| *m == best)
        .map(|(_, r)| r)
        .collect();
    if on_path.is_empty() {
        return json_answer(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": format!("no handler found for uri [{path}] and method [{method}]")
            }),
        );
    }
    let Some(route) = on_path.iter().find(|r| r.method == *method) else {
        let list: Vec<String> = on_path.iter().map(|r| r.method.to_string()).collect();
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
    // BaseRestHandler.handleRequest: parameters nobody consumed are refused
    // (BaseRestHandler.unrecognized; Elasticsearch adds "did you mean" hints).
    let mut unknown: Vec<&str> = call
        .query
        .keys()
        .map(String::as_str)
        .filter(|p| !route.params.contains(p))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        let list: Vec<String> = unknown.iter().map(|p| format!("[{p}]")).collect();
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            &format!(
                "request [{path}] contains unrecognized parameter{}: {}",
                if unknown.len() > 1 { "s" } else { "" },
                list.join(", ")
            ),
        );
    }
    if c.nodes.is_empty() {
        return es_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "master_not_discovered_exception",
            "no master node has been discovered",
        );
    }
    (route.endpoint)(c, call)
}
