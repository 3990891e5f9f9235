//! Voting configuration exclusions: `POST` and `DELETE
//! /_cluster/voting_config_exclusions`, and where Elasticsearch shows them,
//! `GET /_cluster/state/metadata` (`metadata.cluster_coordination`).
//!
//! Upstream (elastic/elasticsearch `server/src/main/java/org/elasticsearch/`):
//! `rest/action/admin/cluster/RestAddVotingConfigExclusionAction.java`,
//! `RestClearVotingConfigExclusionsAction.java`,
//! `action/admin/cluster/configuration/AddVotingConfigExclusionsRequest.java`,
//! `TransportAddVotingConfigExclusionsAction.java`,
//! `TransportClearVotingConfigExclusionsAction.java`,
//! `cluster/coordination/CoordinationMetadata.java`.
//!
//! Every node of the stand-in is master-eligible (it models no roles), so
//! every node named is excluded. The voting configuration is the nodes
//! that are not excluded, one fewer when that is an even number above one
//! (`Reconfigurator` keeps it odd); an exclusion takes effect at once, so
//! `POST` never waits.

use std::collections::HashMap;
use std::time::Instant;

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::answer::{Answer, empty_ok, es_error, json_answer, pending, time_value};
use super::cluster::{ABSENT, Cluster, VotingExclusion, node_id};
use super::known_settings::MAX_VOTING_CONFIG_EXCLUSIONS;
use super::routes::Call;

/// `MAXIMUM_VOTING_CONFIG_EXCLUSIONS_SETTING`'s default.
const DEFAULT_MAX_EXCLUSIONS: usize = 10;

/// `master_timeout` (30 s unless given), `RestUtils.getMasterNodeTimeout`;
/// `None` is `-1` (no limit).
fn master_timeout(query: &HashMap<String, String>) -> Result<Option<std::time::Duration>, Answer> {
    match query.get("master_timeout") {
        Some(v) => time_value(v, "master_timeout"),
        None => Ok(Some(std::time::Duration::from_secs(30))),
    }
}

/// `Strings.splitStringByCommaToArray`: trimmed, empty ones dropped.
fn split(v: Option<&String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// `[a, b]`, as Java prints a list.
fn java_list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

impl Cluster {
    /// The effective `cluster.max_voting_config_exclusions`.
    fn max_voting_exclusions(&self) -> usize {
        self.transient
            .get(MAX_VOTING_CONFIG_EXCLUSIONS)
            .or_else(|| self.persistent.get(MAX_VOTING_CONFIG_EXCLUSIONS))
            .and_then(|v| match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_MAX_EXCLUSIONS)
    }

    /// The node ids of the voting configuration now.
    pub(super) fn voting_config(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| {
                let id = node_id(n);
                !self
                    .voting_exclusions
                    .iter()
                    .any(|e| e.node_id == id || e.node_name == **n)
            })
            .map(|n| node_id(n))
            .collect();
        ids.sort();
        if ids.len() > 1 && ids.len().is_multiple_of(2) {
            ids.pop();
        }
        ids
    }

    /// A node that joins gets its id into an exclusion that named it while
    /// it was away (`NodeJoinExecutor` fills in `_absent_` ids by name).
    pub(super) fn resolve_voting_exclusions(&mut self) {
        for e in &mut self.voting_exclusions {
            if e.node_id == ABSENT && self.nodes.contains(&e.node_name) {
                e.node_id = node_id(&e.node_name);
            }
        }
    }
}

/// `POST /_cluster/voting_config_exclusions?node_names=` or `?node_ids=`.
pub(super) fn add(c: &mut Cluster, call: &Call) -> Answer {
    let q = &call.query;
    if let Err(refused) = master_timeout(q) {
        return refused;
    }
    let ids = split(q.get("node_ids"));
    let names = split(q.get("node_names"));
    // The arguments are read before the request is built: the timeout
    // (30 s by default) first, then the request's own checks.
    let timeout = match q.get("timeout") {
        Some(v) => match time_value(v, "RestAddVotingConfigExclusionAction.timeout") {
            Ok(t) => t,
            Err(refused) => return refused,
        },
        None => Some(std::time::Duration::from_secs(30)),
    };
    if timeout.is_none() {
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            "timeout [-1] must be non-negative",
        );
    }
    if ids.is_empty() == names.is_empty() {
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            "You must set [node_names] or [node_ids] but not both",
        );
    }
    // resolveVotingConfigExclusions: a node the cluster has is excluded by
    // id and name, one it does not have with `_absent_` for what is not known.
    let mut new: Vec<VotingExclusion> = Vec::new();
    if !ids.is_empty() {
        for id in &ids {
            let e = match c.name_of(id) {
                Some(name) => VotingExclusion {
                    node_id: id.clone(),
                    node_name: name.clone(),
                },
                None => VotingExclusion {
                    node_id: id.clone(),
                    node_name: ABSENT.into(),
                },
            };
            new.push(e);
        }
    } else {
        for name in &names {
            let e = if c.nodes.contains(name) {
                VotingExclusion {
                    node_id: node_id(name),
                    node_name: name.clone(),
                }
            } else {
                VotingExclusion {
                    node_id: ABSENT.into(),
                    node_name: name.clone(),
                }
            };
            new.push(e);
        }
    }
    let mut unique: Vec<VotingExclusion> = Vec::new();
    for e in new {
        if !c.voting_exclusions.contains(&e) && !unique.contains(&e) {
            unique.push(e);
        }
    }
    let max = c.max_voting_exclusions();
    let old = c.voting_exclusions.len();
    if old + unique.len() > max {
        let what = if names.is_empty() {
            format!("nodes with ids {}", java_list(&ids))
        } else {
            format!("nodes named {}", java_list(&names))
        };
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            &format!(
                "add voting config exclusions request for {what} would add [{}] exclusions to the existing [{old}] which would exceed the maximum of [{max}] set by [{MAX_VOTING_CONFIG_EXCLUSIONS}]",
                unique.len()
            ),
        );
    }
    c.voting_exclusions.extend(unique);
    empty_ok()
}

/// `DELETE /_cluster/voting_config_exclusions` (`wait_for_removal`, true by
/// default: until no excluded node is in the cluster, at most
/// `master_timeout`).
pub(super) fn clear(c: &mut Cluster, call: &Call) -> Answer {
    let q = &call.query;
    let timeout = match master_timeout(q) {
        Ok(t) => t,
        Err(refused) => return refused,
    };
    // RestRequest.paramAsBoolean: empty is true; else Booleans.parseBoolean.
    let wait = match q.get("wait_for_removal").map(String::as_str) {
        None | Some("") | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return es_error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                &format!("Failed to parse value [{other}] as only [true] or [false] are allowed."),
            );
        }
    };
    let present = |c: &Cluster| {
        c.voting_exclusions
            .iter()
            .any(|e| c.name_of(&e.node_id).is_some())
    };
    if wait && present(c) {
        let waited = Instant::now().duration_since(call.started);
        if timeout.is_none_or(|t| waited < t) {
            return pending();
        }
        let list: Vec<String> = c
            .voting_exclusions
            .iter()
            .map(|e| format!("{{{}}}{{{}}}", e.node_id, e.node_name))
            .collect();
        // ElasticsearchTimeoutException: 429 since 8.x ("closest thing to
        // your request took longer than you asked for").
        return es_error(
            StatusCode::TOO_MANY_REQUESTS,
            "timeout_exception",
            &format!(
                "timed out waiting for removal of nodes; if nodes should not be removed, set ?wait_for_removal=false. {}",
                java_list(&list)
            ),
        );
    }
    c.voting_exclusions.clear();
    empty_ok()
}

/// What `GET /_cluster/state/metadata` answers that the stand-in models.
const STATE_MODELLED: &str = "metadata.cluster_coordination";

/// `GET /_cluster/state/metadata`, with a `filter_path` inside
/// `metadata.cluster_coordination` (the rest of the metadata, indices,
/// templates and so on, is not modelled and asking for it is refused).
pub(super) fn state_metadata(c: &mut Cluster, call: &Call) -> Answer {
    if let Err(refused) = master_timeout(&call.query) {
        return refused;
    }
    let paths: Vec<&str> = call
        .query
        .get("filter_path")
        .map(|f| {
            f.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let inside = |p: &&str| p.starts_with(STATE_MODELLED) || STATE_MODELLED.starts_with(*p);
    if paths.is_empty() || !paths.iter().all(inside) {
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            &format!(
                "the Elasticsearch stand-in models only [{STATE_MODELLED}] of [{}]; ask with a filter_path inside it",
                call.path
            ),
        );
    }
    let config = c.voting_config();
    let exclusions: Vec<Value> = c
        .voting_exclusions
        .iter()
        .map(|e| json!({ "node_id": e.node_id, "node_name": e.node_name }))
        .collect();
    let state = json!({
        "metadata": {
            "cluster_coordination": {
                "term": 1,
                "last_committed_config": config,
                "last_accepted_config": config,
                "voting_config_exclusions": exclusions,
            }
        }
    });
    let split: Vec<Vec<&str>> = paths.iter().map(|p| p.split('.').collect()).collect();
    let filtered = filter(&state, &split).unwrap_or_else(|| json!({}));
    json_answer(StatusCode::OK, &filtered)
}

/// `filter_path`: what the dotted paths (`*` for any one key) name; objects
/// left empty are dropped, arrays are filtered element by element.
fn filter(v: &Value, paths: &[Vec<&str>]) -> Option<Value> {
    if paths.iter().any(|p| p.is_empty()) {
        return Some(v.clone());
    }
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, child) in m {
                let rest: Vec<Vec<&str>> = paths
                    .iter()
                    .filter(|p| p[0] == "*" || p[0] == k)
                    .map(|p| p[1..].to_vec())
                    .collect();
                if rest.is_empty() {
                    continue;
                }
                if let Some(kept) = filter(child, &rest) {
                    out.insert(k.clone(), kept);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(|i| filter(i, paths)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        _ => None,
    }
}
