//! Field ownership: `managedFields`, server-side apply and its conflicts, and `Update` entries.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::FieldPath;
use super::errors::ApiError;
use super::resources::Resource;
use super::util::{meta_mut, now_ts, root_mut};
use super::write::Scope;

#[derive(Clone, Debug)]
pub(super) struct Managed {
    pub(super) manager: String,
    pub(super) operation: String,
    pub(super) api_version: String,
    pub(super) time: String,
    pub(super) subresource: Option<String>,
    pub(super) fields: BTreeSet<FieldPath>,
}

pub(super) fn managed_entries(obj: &Value) -> Vec<Managed> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                parse_fields(f, &mut Vec::new(), &mut fields);
            }
            Managed {
                manager: e
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                operation: e
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                time: e
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                fields,
            }
        })
        .collect()
}

pub(super) fn parse_fields(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(m) = v.as_object() else { return };
    let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, c) in children {
        prefix.push(k.strip_prefix("f:").unwrap_or(k).to_string());
        parse_fields(c, prefix, out);
        prefix.pop();
    }
}

pub(super) fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Value::Object(Map::new());
    for p in fields {
        let mut cur = &mut root;
        for seg in p {
            cur = root_mut(cur)
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// Sets `metadata.managedFields` (left out when no manager owns anything).
pub(super) fn set_managed(obj: &mut Value, entries: &[Managed]) {
    let meta = meta_mut(obj);
    match entries_json(entries) {
        Value::Array(a) if a.is_empty() => meta.remove("managedFields"),
        v => meta.insert("managedFields".into(), v),
    };
}

pub(super) fn entries_json(entries: &[Managed]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(&e.fields),
                });
                if let Some(s) = &e.subresource {
                    v["subresource"] = json!(s);
                }
                v
            })
            .collect(),
    )
}

/// Leaf fields: scalars, lists (atomic) and empty objects.
pub(super) fn leaves(v: &Value) -> Vec<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            Value::Null => {}
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Whether a field takes part in ownership through `scope`.
pub(super) fn tracked(scope: Scope, p: &FieldPath) -> bool {
    match p.first().map(String::as_str) {
        None | Some("apiVersion" | "kind") => false,
        Some("metadata") => {
            scope != Scope::Status
                && !matches!(
                    p.get(1).map(String::as_str),
                    Some(
                        "name"
                            | "namespace"
                            | "uid"
                            | "resourceVersion"
                            | "generation"
                            | "creationTimestamp"
                            | "managedFields"
                            | "selfLink"
                            | "deletionTimestamp"
                            | "deletionGracePeriodSeconds"
                            | "generateName"
                    )
                )
        }
        Some("status") => scope != Scope::Main,
        Some(_) => scope != Scope::Status,
    }
}

pub(super) fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in p {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

pub(super) fn set_leaf(v: &mut Value, p: &[String], val: Value) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        cur = root_mut(cur)
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let m = root_mut(cur);
    if val.as_object().is_some_and(Map::is_empty) && m.get(last).is_some_and(Value::is_object) {
        return;
    }
    m.insert(last.clone(), val);
}

/// Removes a field and the objects its removal leaves empty.
pub(super) fn remove_path(v: &mut Value, p: &[String]) {
    fn inner(v: &mut Value, p: &[String]) -> bool {
        let Some(m) = v.as_object_mut() else {
            return false;
        };
        let Some((first, rest)) = p.split_first() else {
            return false;
        };
        if rest.is_empty() {
            return m.remove(first).is_some() && m.is_empty();
        }
        if let Some(child) = m.get_mut(first)
            && inner(child, rest)
        {
            m.remove(first);
            return m.is_empty();
        }
        false
    }
    inner(v, p);
}

pub(super) fn overlaps(p: &[String], q: &[String]) -> bool {
    p.starts_with(q) || q.starts_with(p)
}

pub(super) fn dotted(p: &[String]) -> String {
    p.iter().map(|s| format!(".{s}")).collect()
}

pub(super) struct ApplyCtx<'a> {
    pub(super) res: &'a Resource,
    pub(super) name: &'a str,
    pub(super) manager: &'a str,
    pub(super) sub: Option<&'a str>,
    pub(super) force: bool,
    pub(super) scope: Scope,
}

pub(super) fn apply_fields(
    ctx: &ApplyCtx<'_>,
    base: &Value,
    applied: &Value,
    entries: &mut Vec<Managed>,
) -> Result<Value, ApiError> {
    let new_set: BTreeSet<FieldPath> = leaves(applied)
        .into_iter()
        .filter(|p| tracked(ctx.scope, p))
        .collect();
    let me = match entries.iter().position(|e| {
        e.manager == ctx.manager && e.operation == "Apply" && e.subresource.as_deref() == ctx.sub
    }) {
        Some(i) => i,
        None => {
            entries.push(Managed {
                manager: ctx.manager.to_string(),
                operation: "Apply".into(),
                api_version: ctx.res.api_version(),
                time: now_ts(),
                subresource: ctx.sub.map(str::to_string),
                fields: BTreeSet::new(),
            });
            entries.len() - 1
        }
    };
    let prev = entries[me].fields.clone();
    // Conflicts: fields another manager owns with another value.
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i == me || e.subresource.as_deref() != ctx.sub {
            continue;
        }
        for q in &e.fields {
            let hit = new_set.iter().find(|p| {
                overlaps(p, q) && {
                    let shorter: &[String] = if p.len() <= q.len() { p } else { q };
                    get_path(base, shorter) != get_path(applied, shorter)
                }
            });
            if hit.is_some() {
                conflicts.push((i, q.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !ctx.force {
        return Err(conflict_error(ctx, entries, &conflicts));
    }
    for (i, q) in &conflicts {
        entries[*i].fields.remove(q);
    }
    let mut out = base.clone();
    for p in prev.difference(&new_set) {
        let shared = entries
            .iter()
            .enumerate()
            .any(|(i, e)| i != me && e.fields.iter().any(|q| overlaps(p, q)));
        if !shared {
            remove_path(&mut out, p);
        }
    }
    for p in &new_set {
        if let Some(v) = get_path(applied, p) {
            set_leaf(&mut out, p, v.clone());
        }
    }
    entries[me].fields = new_set;
    entries[me].api_version = ctx.res.api_version();
    entries.retain(|e| !e.fields.is_empty());
    Ok(out)
}

pub(super) fn conflict_error(
    ctx: &ApplyCtx<'_>,
    entries: &[Managed],
    conflicts: &[(usize, FieldPath)],
) -> ApiError {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut causes = Vec::new();
    for (i, q) in conflicts {
        let e = &entries[*i];
        let label = if e.operation == "Apply" {
            format!("conflict with \"{}\"", e.manager)
        } else {
            format!("conflict with \"{}\" using {}", e.manager, e.api_version)
        };
        causes.push(
            json!({ "reason": "FieldManagerConflict", "message": label, "field": dotted(q) }),
        );
        by.entry(label).or_default().push(dotted(q));
    }
    let n = conflicts.len();
    let message = if n == 1 {
        let (label, fields) = by
            .iter()
            .next()
            .map(|(l, f)| (l.clone(), f[0].clone()))
            .unwrap_or_default();
        format!("Apply failed with 1 conflict: {label}: {fields}")
    } else {
        let parts: Vec<String> = by
            .iter()
            .map(|(label, fields)| {
                if fields.len() == 1 {
                    format!("{label}: {}", fields[0])
                } else {
                    let label = label.replacen("conflict with", "conflicts with", 1);
                    format!("{label}:\n- {}", fields.join("\n- "))
                }
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
    };
    let mut details = ApiError::details(ctx.res, ctx.name);
    details["causes"] = Value::Array(causes);
    ApiError::new(409, "Conflict", message).with_details(details)
}

/// Gives the fields a non-apply write changed to its manager (operation `Update`).
pub(super) fn record_update(
    entries: &mut Vec<Managed>,
    manager: &str,
    sub: Option<&str>,
    api_version: &str,
    old: Option<&Value>,
    new: &Value,
    scope: Scope,
) {
    let null = Value::Null;
    let old = old.unwrap_or(&null);
    let changed: Vec<FieldPath> = leaves(new)
        .into_iter()
        .filter(|p| tracked(scope, p) && get_path(old, p) != get_path(new, p))
        .collect();
    let removed: Vec<FieldPath> = leaves(old)
        .into_iter()
        .filter(|p| tracked(scope, p) && get_path(new, p).is_none())
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        e.fields
            .retain(|q| !changed.iter().chain(&removed).any(|p| overlaps(p, q)));
    }
    let i = match entries.iter().position(|e| {
        e.manager == manager && e.operation == "Update" && e.subresource.as_deref() == sub
    }) {
        Some(i) => i,
        None => {
            entries.push(Managed {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now_ts(),
                subresource: sub.map(str::to_string),
                fields: BTreeSet::new(),
            });
            entries.len() - 1
        }
    };
    entries[i].fields.extend(changed);
    entries[i].api_version = api_version.to_string();
    entries.retain(|e| !e.fields.is_empty());
}
