//! `elastic`'s basic auth, and the 401 Elasticsearch answers without it.

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::json;

use super::answer::{Answer, json_answer};
use super::cluster::Cluster;

pub(super) fn unauthorized(reason: &str) -> Answer {
    let header = json!({ "WWW-Authenticate": [
        "Basic realm=\"security\", charset=\"UTF-8\"",
        "Bearer realm=\"security\"",
        "ApiKey"
    ]});
    let body = json!({
        "error": {
            "root_cause": [{ "type": "security_exception", "reason": reason, "header": header }],
            "type": "security_exception",
            "reason": reason,
            "header": header,
        },
        "status": 401,
    });
    let (status, mut headers, body) = json_answer(StatusCode::UNAUTHORIZED, &body);
    headers.push((
        "www-authenticate",
        "Basic realm=\"security\", charset=\"UTF-8\"".into(),
    ));
    headers.push(("www-authenticate", "Bearer realm=\"security\"".into()));
    headers.push(("www-authenticate", "ApiKey".into()));
    (status, headers, body)
}

pub(super) fn authorized(c: &Cluster, auth: Option<&str>, path: &str) -> Result<(), Answer> {
    let Some(auth) = auth else {
        return Err(unauthorized(&format!(
            "missing authentication credentials for REST request [{path}]"
        )));
    };
    let decoded = auth
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let user = decoded
        .as_deref()
        .and_then(|d| d.split_once(':'))
        .map(|(u, _)| u.to_string())
        .unwrap_or_default();
    match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((u, p)) if u == "elastic" && p == c.password => Ok(()),
        _ => Err(unauthorized(&format!(
            "unable to authenticate user [{user}] for REST request [{path}]"
        ))),
    }
}
