//! What a handler returns, and the small helpers every endpoint shares.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};

pub(super) type Answer = (StatusCode, Vec<(&'static str, String)>, Bytes);

pub(super) fn json_answer(status: StatusCode, v: &Value) -> Answer {
    (
        status,
        vec![("content-type", "application/json".into())],
        Bytes::from(v.to_string()),
    )
}

pub(super) fn es_error(status: StatusCode, kind: &str, reason: &str) -> Answer {
    json_answer(
        status,
        &json!({
            "error": {
                "root_cause": [{ "type": kind, "reason": reason }],
                "type": kind,
                "reason": reason,
            },
            "status": status.as_u16(),
        }),
    )
}

pub(super) fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

pub(super) fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v.is_empty() || v == "true")
}
