//! Small helpers on JSON objects.

use serde_json::{Map, Value, json};

pub(super) fn root_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

pub(super) fn obj_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    root_mut(m.entry(key).or_insert_with(|| Value::Object(Map::new())))
}

pub(super) fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    obj_mut(root_mut(v), "metadata")
}

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

pub(super) fn rv_of(v: &Value) -> Option<&str> {
    str_at(v, &["metadata", "resourceVersion"]).filter(|s| !s.is_empty())
}

pub(super) fn labels_of(v: &Value) -> Option<&Map<String, Value>> {
    v.pointer("/metadata/labels").and_then(Value::as_object)
}

pub(super) fn list_item(obj: &Value) -> Value {
    let mut item = obj.clone();
    if let Some(m) = item.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    item
}

pub(super) fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

pub(super) fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
