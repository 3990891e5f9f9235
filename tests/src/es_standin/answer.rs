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

/// Not an answer yet: the server asks the endpoint again shortly (an API
/// that waits for the cluster, like `DELETE /_cluster/voting_config_exclusions`).
/// Never sent: the server only sends what an endpoint finally answers.
pub(super) const PENDING: StatusCode = StatusCode::PROCESSING;

pub(super) fn pending() -> Answer {
    (PENDING, Vec::new(), Bytes::new())
}

/// 200 with an empty `text/plain` body: `EmptyResponseListener.buildResponse`
/// (elastic/elasticsearch `server/.../rest/action/EmptyResponseListener.java`,
/// `RestResponse.TEXT_CONTENT_TYPE`), what the voting exclusion APIs answer.
pub(super) fn empty_ok() -> Answer {
    (
        StatusCode::OK,
        vec![("content-type", "text/plain; charset=UTF-8".into())],
        Bytes::new(),
    )
}

/// `{"acknowledged":true}` (`AcknowledgedResponse.TRUE`).
pub(super) fn acknowledged() -> Answer {
    json_answer(StatusCode::OK, &json!({ "acknowledged": true }))
}

/// A time value as `TimeValue.parseTimeValue` reads it (`-1` is "no
/// limit", `None` here): a number and one of `nanos`, `micros`, `ms`, `s`,
/// `m`, `h`, `d`; `0` and `-1` take none. Anything else is refused as
/// Elasticsearch refuses it: `ElasticsearchParseException` ("failed to
/// parse setting [{name}] with value [{v}] as a time value: unit is missing
/// or unrecognized"), a 400 `parse_exception` (elastic/elasticsearch
/// `libs/core/src/main/java/org/elasticsearch/core/TimeValue.java`).
pub(super) fn time_value(v: &str, name: &str) -> Result<Option<std::time::Duration>, Answer> {
    parse_time(v, name).map_err(|why| es_error(StatusCode::BAD_REQUEST, "parse_exception", &why))
}

/// [`time_value`]'s reading, with the refusal's text.
pub(super) fn parse_time(v: &str, name: &str) -> Result<Option<std::time::Duration>, String> {
    use std::time::Duration;
    let refuse = |why: &str| {
        format!("failed to parse setting [{name}] with value [{v}] as a time value: {why}")
    };
    let lower = v.trim().to_ascii_lowercase();
    match lower.as_str() {
        "-1" => return Ok(None),
        "0" => return Ok(Some(Duration::ZERO)),
        _ => {}
    }
    let units: [(&str, f64); 7] = [
        ("nanos", 1e-9),
        ("micros", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
        ("d", 86400.0),
    ];
    let Some((number, scale)) = units
        .iter()
        .find_map(|(u, scale)| lower.strip_suffix(u).map(|n| (n.trim(), *scale)))
    else {
        return Err(refuse("unit is missing or unrecognized"));
    };
    match number.parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok(Some(Duration::from_secs_f64(n * scale))),
        Ok(_) => Err(refuse("negative durations are not supported")),
        Err(_) => Err(refuse("unit is missing or unrecognized")),
    }
}

/// An error whose cause Elasticsearch prints too (`caused_by`); the root
/// cause is the outer error when it is not an `ElasticsearchException`
/// (`ElasticsearchException.guessRootCauses`), as for parse failures.
pub(super) fn es_error_caused(
    status: StatusCode,
    kind: &str,
    reason: &str,
    cause_kind: &str,
    cause_reason: &str,
) -> Answer {
    json_answer(
        status,
        &json!({
            "error": {
                "root_cause": [{ "type": kind, "reason": reason }],
                "type": kind,
                "reason": reason,
                "caused_by": { "type": cause_kind, "reason": cause_reason },
            },
            "status": status.as_u16(),
        }),
    )
}

/// A request's JSON body, or Elasticsearch's refusal: none at all is
/// `ElasticsearchParseException("request body is required")`
/// (`RestRequest.contentParser`); a content type that is not JSON a 406
/// (`RestController.dispatchRequest`); what does not parse an
/// `x_content_parse_exception`.
pub(super) fn json_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, Answer> {
    if body.is_empty() {
        return Err(es_error(
            StatusCode::BAD_REQUEST,
            "parse_exception",
            "request body is required",
        ));
    }
    let ct = content_type.unwrap_or_default();
    if !ct.starts_with("application/json") && !ct.starts_with("application/vnd.elasticsearch+json")
    {
        return Err(json_answer(
            StatusCode::NOT_ACCEPTABLE,
            &json!({
                "error": format!("Content-Type header [{ct}] is not supported"),
                "status": 406,
            }),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        es_error(
            StatusCode::BAD_REQUEST,
            "x_content_parse_exception",
            &format!("failed to parse the request body: {e}"),
        )
    })
}

/// The token name Elasticsearch's parsers print for a JSON value
/// (`XContentParser.Token`).
pub(super) fn token(v: &Value) -> &'static str {
    match v {
        Value::Null => "VALUE_NULL",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Number(_) => "VALUE_NUMBER",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}
