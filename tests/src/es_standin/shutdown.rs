//! The node shutdown API: `PUT`, `GET` and `DELETE /_nodes/{node_id}/shutdown`
//! and `GET /_nodes/shutdown`, as the x-pack shutdown plugin answers them
//! (elastic/elasticsearch `x-pack/plugin/shutdown/src/main/java/org/elasticsearch/xpack/shutdown/`:
//! `RestPutShutdownNodeAction`, `PutShutdownNodeAction`,
//! `TransportPutShutdownNodeAction`, `TransportGetShutdownStatusAction`,
//! `SingleNodeShutdownStatus`, `TransportDeleteShutdownNodeAction`).
//!
//! Records are kept by node id, as Elasticsearch keeps them; an id no node
//! has is accepted (the node may join later: `nodeSeen` is false until it
//! does). A `REMOVE`, `REPLACE` or `SIGTERM` shutdown drains the node as an
//! allocation exclusion does (see `filters`); a `RESTART` keeps its shards
//! and delays the re-allocation of its replicas while it is away (see
//! `allocation`). Not modelled: `node_allocation_decision` in a `STALLED`
//! status (the explanation names the shard, the decision is left out), and
//! plugins or persistent tasks that hold a shutdown up (both are `COMPLETE`).

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::answer::{
    Answer, acknowledged, es_error, es_error_caused, json_answer, json_body, parse_time, token,
};
use super::cluster::{Cluster, Shutdown, node_id};
use super::routes::Call;

/// The parser's name in its messages (`PutShutdownNodeAction.Request.PARSER`).
const PARSER: &str = "put_node_shutdown_request";

/// The fields `PARSER` declares, every one a string (`declareString`).
const FIELDS: &[&str] = &[
    "type",
    "reason",
    "allocation_delay",
    "target_node_name",
    "grace_period",
];

/// The node id of a `/_nodes/{node_id}/shutdown` path.
fn path_node_id(path: &str) -> &str {
    path.split('/').nth(2).unwrap_or_default()
}

/// `SingleNodeShutdownMetadata.Type.parse`: case-insensitive.
fn parse_type(v: &str) -> Result<&'static str, String> {
    match v.to_ascii_lowercase().as_str() {
        "remove" => Ok("REMOVE"),
        "restart" => Ok("RESTART"),
        "replace" => Ok("REPLACE"),
        "sigterm" => Ok("SIGTERM"),
        _ => Err(format!("unknown shutdown type: {v}")),
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// `PUT /_nodes/{node_id}/shutdown`.
pub(super) fn put(c: &mut Cluster, call: &Call) -> Answer {
    let id = path_node_id(&call.path).to_string();
    let body = match json_body(call.content_type.as_deref(), &call.body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let Value::Object(fields) = body else {
        // ObjectParser.parse on anything but an object.
        return es_error(
            StatusCode::BAD_REQUEST,
            "x_content_parse_exception",
            &format!("[{PARSER}] Expected START_OBJECT but was: {}", token(&body)),
        );
    };
    // The parser is strict (`ignoreUnknownFields` false) and takes strings only.
    let mut text: Map<String, Value> = Map::new();
    for (k, v) in &fields {
        if !FIELDS.contains(&k.as_str()) {
            return es_error(
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                &format!("[{PARSER}] unknown field [{k}]"),
            );
        }
        if !v.is_string() {
            return es_error(
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                &format!(
                    "[{PARSER}] {k} doesn't support values of type: {}",
                    token(v)
                ),
            );
        }
        text.insert(k.clone(), v.clone());
    }
    let get = |k: &str| text.get(k).and_then(Value::as_str).map(String::from);
    // `type` and `reason` are constructor arguments: missing ones are
    // `ConstructingObjectParser`'s "Required [...]", an IllegalArgumentException.
    let missing: Vec<&str> = ["type", "reason"]
        .into_iter()
        .filter(|k| !text.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            &format!("Required [{}]", missing.join(", ")),
        );
    }
    // What the request's builder throws (the type, the time values) comes
    // wrapped: "Failed to build [...] after last required field arrived".
    let build_failed = |cause_kind: &str, cause: &str| {
        es_error_caused(
            StatusCode::BAD_REQUEST,
            "x_content_parse_exception",
            &format!("Failed to build [{PARSER}] after last required field arrived"),
            cause_kind,
            cause,
        )
    };
    let kind = match parse_type(&get("type").unwrap_or_default()) {
        Ok(k) => k,
        Err(why) => return build_failed("illegal_argument_exception", &why),
    };
    let reason = get("reason").unwrap_or_default();
    let setting = format!("put-shutdown-node-request-{id}");
    let allocation_delay = match get("allocation_delay") {
        None => None,
        Some(v) => match parse_time(&v, &setting) {
            Ok(d) => Some((v, d.unwrap_or(std::time::Duration::MAX))),
            Err(why) => return build_failed("parse_exception", &why),
        },
    };
    let grace_period = match get("grace_period") {
        None => None,
        Some(v) => match parse_time(&v, &setting) {
            Ok(_) => Some(v),
            Err(why) => return build_failed("parse_exception", &why),
        },
    };
    let target_node_name = get("target_node_name");
    // PutShutdownNodeAction.Request.validate, in its order. (Its "the
    // reason for shutdown is required" checks the node id, not the reason,
    // so an empty reason passes; the path always has an id.)
    let mut errors: Vec<String> = Vec::new();
    if allocation_delay.is_some() && kind != "RESTART" {
        errors.push("allocation_delay is only allowed for RESTART-type shutdown requests".into());
    }
    match (&target_node_name, kind) {
        (Some(t), k) if k != "REPLACE" => errors.push(format!(
            "target node name is only valid for REPLACE type shutdowns, but was given type [{k}] and target node name [{t}]"
        )),
        (None, "REPLACE") => {
            errors.push("target node name is required for REPLACE type shutdowns".into())
        }
        _ => {}
    }
    if kind == "SIGTERM" {
        if grace_period.is_none() {
            errors.push("grace period is required for SIGTERM shutdowns".into());
        }
    } else if grace_period.is_some() {
        errors.push(format!(
            "grace period is only valid for SIGTERM type shutdowns, but was given type [{kind}] and target node name [{}]",
            target_node_name.as_deref().unwrap_or("null")
        ));
    }
    if !errors.is_empty() {
        let list: String = errors
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{}: {e};", i + 1))
            .collect();
        return es_error(
            StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            &format!("Validation Failed: {list}"),
        );
    }
    // SingleNodeShutdownMetadata's constructor: an empty target name is
    // refused when the record is built (validate only checks for null).
    if kind == "REPLACE"
        && target_node_name
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
    {
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            "target node name is required for REPLACE type shutdowns",
        );
    }
    // TransportPutShutdownNodeAction.isNoop: the same type, reason,
    // allocation delay and target keep the record (and its start time).
    if let Some(old) = c.shutdowns.get(&id)
        && old.kind == kind
        && old.reason == reason
        && old.allocation_delay.as_ref().map(|(_, d)| *d)
            == allocation_delay.as_ref().map(|(_, d)| *d)
        && old.target_node_name == target_node_name
    {
        return acknowledged();
    }
    let node_seen = c.name_of(&id).is_some();
    c.shutdowns.insert(
        id,
        Shutdown {
            kind,
            reason,
            started_millis: now_millis(),
            node_seen,
            allocation_delay,
            target_node_name,
            grace_period,
        },
    );
    acknowledged()
}

/// `GET /_nodes/shutdown` and `GET /_nodes/{node_id}/shutdown` (ids
/// comma-separated; an id with no record is left out, not refused).
pub(super) fn get(c: &mut Cluster, call: &Call) -> Answer {
    let ids: Vec<String> = if call.path == "/_nodes/shutdown" {
        c.shutdowns.keys().cloned().collect()
    } else {
        path_node_id(&call.path)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let nodes: Vec<Value> = ids
        .iter()
        .filter_map(|id| c.shutdowns.get(id).map(|s| status_json(c, id, s)))
        .collect();
    json_answer(StatusCode::OK, &json!({ "nodes": nodes }))
}

/// `DELETE /_nodes/{node_id}/shutdown`.
pub(super) fn delete(c: &mut Cluster, call: &Call) -> Answer {
    let id = path_node_id(&call.path);
    if c.shutdowns.remove(id).is_none() {
        // TransportDeleteShutdownNodeAction: ResourceNotFoundException.
        return es_error(
            StatusCode::NOT_FOUND,
            "resource_not_found_exception",
            &format!("node [{id}] is not currently shutting down"),
        );
    }
    acknowledged()
}

/// One node's status, as `SingleNodeShutdownStatus.toXContentChunked` prints it.
fn status_json(c: &Cluster, id: &str, s: &Shutdown) -> Value {
    let (status, remaining, explanation) = shard_migration(c, id, s);
    let mut out = Map::new();
    out.insert("node_id".into(), json!(id));
    out.insert("type".into(), json!(s.kind));
    out.insert("reason".into(), json!(s.reason));
    if let Some((given, _)) = &s.allocation_delay {
        out.insert("allocation_delay".into(), json!(given));
    }
    out.insert("shutdown_startedmillis".into(), json!(s.started_millis));
    // Status.combine(shard migration, plugins, persistent tasks): the
    // latter two are COMPLETE here, so the shard migration decides.
    out.insert("status".into(), json!(status));
    let mut migration = Map::new();
    migration.insert("status".into(), json!(status));
    migration.insert("shard_migrations_remaining".into(), json!(remaining));
    if let Some(e) = explanation {
        migration.insert("explanation".into(), json!(e));
    }
    out.insert("shard_migration".into(), Value::Object(migration));
    out.insert("persistent_tasks".into(), json!({ "status": "COMPLETE" }));
    out.insert("plugins".into(), json!({ "status": "COMPLETE" }));
    if let Some(t) = &s.target_node_name {
        out.insert("target_node_name".into(), json!(t));
    }
    if let Some(g) = &s.grace_period {
        out.insert("grace_period".into(), json!(g));
    }
    Value::Object(out)
}

/// `TransportGetShutdownStatusAction.shardMigrationStatus`: (status,
/// shards remaining, explanation).
fn shard_migration(c: &Cluster, id: &str, s: &Shutdown) -> (&'static str, usize, Option<String>) {
    // Only REMOVE-type shutdowns move shards: a restart is complete at once.
    if s.kind == "RESTART" {
        return (
            "COMPLETE",
            0,
            Some("no shard relocation is necessary for a node restart".into()),
        );
    }
    let name = c.name_of(id).cloned();
    if name.is_none() && !s.node_seen {
        return (
            "NOT_STARTED",
            0,
            Some("node is not currently part of the cluster".into()),
        );
    }
    // A primary last on this node that is unassigned now holds it up.
    let lost: Vec<_> = c
        .copies
        .iter()
        .filter(|cp| {
            cp.node.is_none()
                && cp.primary
                && cp
                    .unassigned
                    .as_ref()
                    .and_then(|(_, _, last)| last.as_deref())
                    .is_some_and(|last| node_id(last) == id)
        })
        .collect();
    if let Some(first) = lost.first() {
        return (
            "STALLED",
            lost.len(),
            Some(format!(
                "shard [{}] [primary] of index [{}] is unassigned, see [node_allocation_decision] for details or use the cluster allocation explain API",
                first.shard, first.index
            )),
        );
    }
    // Gone (seen since) or holding nothing: done.
    let Some(name) = name else {
        return ("COMPLETE", 0, None);
    };
    let held = c.count_on(&name);
    if held == 0 {
        return ("COMPLETE", 0, None);
    }
    let eligible = c.eligible();
    if c.next_move(&name, &eligible).is_some() {
        return ("IN_PROGRESS", held, None);
    }
    // Nothing can move: blame the first copy that stays.
    let stuck = c
        .copies
        .iter()
        .find(|cp| cp.node.as_deref() == Some(name.as_str()));
    let explanation = stuck.map(|cp| {
        format!(
            "shard [{}] [{}] of index [{}] cannot move, see [node_allocation_decision] for details or use the cluster allocation explain API",
            cp.shard,
            if cp.primary { "primary" } else { "replica" },
            cp.index
        )
    });
    ("STALLED", held, explanation)
}
