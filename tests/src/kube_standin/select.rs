//! Lists: label and field selectors, `limit` and `continue` tokens.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::errors::ApiError;
use super::resources::{NS, POD, PVC, RESOURCES, SECRET};
use super::util::{labels_of, list_item, partial, str_at};
use super::validate::is_qualified_name;
use super::{Query, State};

impl State {
    pub(super) fn list(
        &self,
        r: usize,
        ns: Option<&str>,
        q: &Query,
        partial_meta: bool,
    ) -> Result<Value, ApiError> {
        let res = &RESOURCES[r];
        let sel = Selection::parse(r, q)?;
        let limit = match q.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?,
            None => 0,
        };
        let after = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut remaining = 0u64;
        let mut last = None;
        for ((_, ons, oname), obj) in self.range(r) {
            if ns.is_some_and(|ns| ns != ons) {
                continue;
            }
            if let Some((ans, aname)) = &after
                && (ons.as_str(), oname.as_str()) <= (ans.as_str(), aname.as_str())
            {
                continue;
            }
            if !sel.matches(r, obj) {
                continue;
            }
            if limit > 0 && items.len() >= limit {
                remaining += 1;
                continue;
            }
            items.push(if partial_meta {
                partial(obj)
            } else {
                list_item(obj)
            });
            last = Some((ons.clone(), oname.clone()));
        }
        let mut meta = json!({ "resourceVersion": self.rv.to_string() });
        if remaining > 0
            && let Some((lns, lname)) = last
        {
            meta["continue"] = json!(encode_continue(&lns, &lname));
            meta["remainingItemCount"] = json!(remaining);
        }
        let (kind, api_version) = if partial_meta {
            (
                "PartialObjectMetadataList".to_string(),
                "meta.k8s.io/v1".to_string(),
            )
        } else {
            (format!("{}List", res.kind), res.api_version())
        };
        Ok(json!({ "kind": kind, "apiVersion": api_version, "metadata": meta, "items": items }))
    }
}

pub(super) fn encode_continue(ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([ns, name]).to_string())
}

pub(super) fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice::<(String, String)>(&b).ok())
        .ok_or_else(|| ApiError::bad_request(format!("continue key is not valid: {token:?}")))
}

#[derive(Debug)]
pub(super) enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelReq {
    pub(super) fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        match self {
            Self::Eq(k, v) => get(k) == Some(v.as_str()),
            Self::Ne(k, v) => get(k) != Some(v.as_str()),
            Self::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Self::Exists(k) => get(k).is_some(),
            Self::NotExists(k) => get(k).is_none(),
        }
    }
}

/// Splits a selector on the commas outside parentheses.
pub(super) fn selector_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    terms.push(cur);
    terms
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

pub(super) fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let bad = |t: &str, why: &str| {
        ApiError::bad_request(format!("unable to parse requirement: {t:?}: {why}"))
    };
    let mut reqs = Vec::new();
    for term in selector_terms(s) {
        let t = term.as_str();
        let req = if let Some(k) = t.strip_prefix('!') {
            LabelReq::NotExists(k.trim().to_string())
        } else if let Some(open) = t.find('(') {
            let close = t
                .rfind(')')
                .ok_or_else(|| bad(t, "found '(', expected: ')'"))?;
            let head: Vec<&str> = t[..open].split_whitespace().collect();
            let values: Vec<String> = t[open + 1..close]
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            match head.as_slice() {
                [k, "in"] => LabelReq::In(k.to_string(), values),
                [k, "notin"] => LabelReq::NotIn(k.to_string(), values),
                _ => return Err(bad(t, "expected 'in' or 'notin'")),
            }
        } else if let Some((k, v)) = t.split_once("!=") {
            LabelReq::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = t.split_once("==") {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = t.split_once('=') {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else {
            LabelReq::Exists(t.to_string())
        };
        let key = match &req {
            LabelReq::Eq(k, _)
            | LabelReq::Ne(k, _)
            | LabelReq::In(k, _)
            | LabelReq::NotIn(k, _)
            | LabelReq::Exists(k)
            | LabelReq::NotExists(k) => k,
        };
        if !is_qualified_name(key) {
            return Err(bad(t, "invalid label key"));
        }
        reqs.push(req);
    }
    Ok(reqs)
}

/// A `metav1.LabelSelector` as requirements (`matchLabels` and `matchExpressions`).
pub(super) fn selector_reqs(sel: &Value) -> Vec<LabelReq> {
    let mut reqs = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push(LabelReq::Eq(
                k.clone(),
                v.as_str().unwrap_or_default().into(),
            ));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => reqs.push(LabelReq::In(key, values)),
                Some("NotIn") => reqs.push(LabelReq::NotIn(key, values)),
                Some("Exists") => reqs.push(LabelReq::Exists(key)),
                Some("DoesNotExist") => reqs.push(LabelReq::NotExists(key)),
                _ => reqs.push(LabelReq::In(key, Vec::new())),
            }
        }
    }
    reqs
}

/// Label and field selectors of a list or watch.
pub(super) struct Selection {
    pub(super) labels: Vec<LabelReq>,
    /// (field, equal?, value)
    pub(super) fields: Vec<(String, bool, String)>,
}

impl Selection {
    pub(super) fn parse(r: usize, q: &Query) -> Result<Self, ApiError> {
        let labels =
            parse_label_selector(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
        let mut fields = Vec::new();
        for t in selector_terms(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
            let (f, eq, v) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{t}'; can't understand '{t}'"
                )));
            };
            let f = f.trim().to_string();
            if field_value(r, &Value::Null, &f).is_none() {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f}"
                )));
            }
            fields.push((f, eq, v.trim().to_string()));
        }
        Ok(Self { labels, fields })
    }

    pub(super) fn matches(&self, r: usize, obj: &Value) -> bool {
        let labels = labels_of(obj);
        self.labels.iter().all(|l| l.matches(labels))
            && self.fields.iter().all(|(f, eq, v)| {
                let have = field_value(r, obj, f).flatten().unwrap_or_default();
                (have == *v) == *eq
            })
    }
}

/// The value of a supported field selector (`None`: not supported for this kind).
pub(super) fn field_value(r: usize, obj: &Value, field: &str) -> Option<Option<String>> {
    let path: &[&str] = match (r, field) {
        (_, "metadata.name") => &["metadata", "name"],
        (_, "metadata.namespace") => &["metadata", "namespace"],
        (SECRET, "type") => &["type"],
        (NS, "status.phase") | (POD | PVC, "status.phase") => &["status", "phase"],
        (POD, "spec.nodeName") => &["spec", "nodeName"],
        (POD, "status.podIP") => &["status", "podIP"],
        (POD, "spec.serviceAccountName") => &["spec", "serviceAccountName"],
        _ => return None,
    };
    Some(str_at(obj, path).map(str::to_string))
}
