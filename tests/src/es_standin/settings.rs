//! `GET` and `PUT /_cluster/settings`: persistent and transient settings,
//! flat or nested, `null` resets (a key ending in `*` resets every key it
//! matches). Only known settings are taken (see `known_settings`).

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::answer::{Answer, es_error, flag, json_answer};
use super::cluster::Cluster;
use super::filters::simple_match;
use super::known_settings;
use super::routes::Call;

/// `a.b.c = v` from nested objects, as Elasticsearch reads a settings body
/// (`Settings.fromXContent`): numbers and booleans become strings, an array
/// stays a list (of strings), `null` stays `null` (a reset).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) => out.push((
            prefix.into(),
            Value::Array(items.iter().map(|i| Value::String(text(i))).collect()),
        )),
        Value::Null => out.push((prefix.into(), Value::Null)),
        other => out.push((prefix.into(), Value::String(text(other)))),
    }
}

/// Flat settings as Elasticsearch's nested objects.
fn nest(flat: &BTreeMap<String, Value>) -> Value {
    fn put(m: &mut Map<String, Value>, path: &[&str], v: Value) {
        match path {
            [] => {}
            [last] => {
                m.insert((*last).to_string(), v);
            }
            [first, rest @ ..] => {
                let entry = m
                    .entry((*first).to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(inner) = entry {
                    put(inner, rest, v);
                }
            }
        }
    }
    let mut root = Map::new();
    for (k, v) in flat {
        let parts: Vec<&str> = k.split('.').collect();
        put(&mut root, &parts, v.clone());
    }
    Value::Object(root)
}

fn settings_view(flat: &BTreeMap<String, Value>, flat_view: bool) -> Value {
    if flat_view {
        Value::Object(flat.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    } else {
        nest(flat)
    }
}

/// `GET /_cluster/settings`.
pub(super) fn get(c: &mut Cluster, call: &Call) -> Answer {
    let flat = flag(&call.query, "flat_settings");
    json_answer(
        StatusCode::OK,
        &json!({
            "persistent": settings_view(&c.persistent, flat),
            "transient": settings_view(&c.transient, flat),
        }),
    )
}

/// `PUT /_cluster/settings`.
pub(super) fn put(c: &mut Cluster, call: &Call) -> Answer {
    let body = &call.body[..];
    if body.is_empty() {
        return es_error(
            StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            "Validation Failed: 1: no settings to update;",
        );
    }
    let ct = call.content_type.as_deref().unwrap_or_default();
    if !ct.starts_with("application/json") && !ct.starts_with("application/vnd.elasticsearch+json")
    {
        return json_answer(
            StatusCode::NOT_ACCEPTABLE,
            &json!({
                "error": format!("Content-Type header [{ct}] is not supported"),
                "status": 406,
            }),
        );
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return es_error(
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                &format!("failed to parse the request body: {e}"),
            );
        }
    };
    let Value::Object(top) = parsed else {
        return es_error(
            StatusCode::BAD_REQUEST,
            "parse_exception",
            "request body must be an object",
        );
    };
    if let Some(k) = top
        .keys()
        .find(|k| k.as_str() != "persistent" && k.as_str() != "transient")
    {
        return es_error(
            StatusCode::BAD_REQUEST,
            "x_content_parse_exception",
            &format!("[cluster_update_settings_request] unknown field [{k}]"),
        );
    }
    // Elasticsearch reads each scope into sorted `Settings`, then checks and
    // applies transient before persistent (`SettingsUpdater.updateSettings`);
    // the first refusal fails the whole request.
    let mut updates: Vec<(&str, Vec<(String, Value)>)> = Vec::new();
    for scope in ["transient", "persistent"] {
        let mut flat = Vec::new();
        if let Some(v) = top.get(scope) {
            flatten("", v, &mut flat);
        }
        flat.retain(|(k, _)| !k.is_empty());
        flat.sort_by(|a, b| a.0.cmp(&b.0));
        updates.push((scope, flat));
    }
    // ClusterUpdateSettingsRequest.validate.
    if updates.iter().all(|(_, flat)| flat.is_empty()) {
        return es_error(
            StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            "Validation Failed: 1: no settings to update;",
        );
    }
    for (scope, flat) in &updates {
        for (key, value) in flat {
            let checked = match value {
                // A reset of a pattern (`exclude.*`) needs no known key.
                Value::Null if key.ends_with('*') => Ok(()),
                Value::Null if known_settings::is_known(key) => Ok(()),
                _ => known_settings::validate(scope, key, value),
            };
            if let Err(reason) = checked {
                return es_error(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    &reason,
                );
            }
        }
    }
    let mut changed: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    for (scope, flat) in updates {
        let target = if scope == "persistent" {
            &mut c.persistent
        } else {
            &mut c.transient
        };
        let entry = changed.entry(scope).or_default();
        for (k, v) in flat {
            if v.is_null() {
                target.retain(|stored, _| !simple_match(&k, stored));
            } else {
                target.insert(k.clone(), v.clone());
                entry.insert(k, v);
            }
        }
    }
    let flat = flag(&call.query, "flat_settings");
    let empty = BTreeMap::new();
    json_answer(
        StatusCode::OK,
        &json!({
            "acknowledged": true,
            "persistent": settings_view(changed.get("persistent").unwrap_or(&empty), flat),
            "transient": settings_view(changed.get("transient").unwrap_or(&empty), flat),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXCLUDE_NAME: &str = "cluster.routing.allocation.exclude._name";

    #[test]
    fn settings_flatten_and_nest() {
        let mut flat = Vec::new();
        flatten(
            "",
            &json!({"cluster": {"routing": {"allocation": {"exclude": {"_name": "a,b"}}}}}),
            &mut flat,
        );
        assert_eq!(flat, vec![(EXCLUDE_NAME.to_string(), json!("a,b"))]);
        let m = BTreeMap::from([(EXCLUDE_NAME.to_string(), json!("a"))]);
        assert_eq!(
            nest(&m),
            json!({"cluster": {"routing": {"allocation": {"exclude": {"_name": "a"}}}}})
        );
    }
}
