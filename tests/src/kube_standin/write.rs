//! Creates, updates and patches (merge, strategic, JSON patch, server-side apply), `/scale`,
//! and the checks every write makes.

use std::time::Instant;

use hyper::Method;
use serde_json::{Value, json};

use super::State;
use super::apply::{ApplyCtx, apply_fields, managed_entries, record_update, set_managed};
use super::errors::{ApiError, Cause};
use super::patch::{json_patch, merge_patch, strip_directives};
use super::resources::{NS, RESOURCES, Resource, SA, STS};
use super::server::Req;
use super::util::{meta_mut, now_ts, root_mut, rv_of, str_at};
use super::validate::validate;

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum PatchType {
    Apply,
    Merge,
    Strategic,
    Json,
}

pub(super) enum Op {
    Create(Value),
    Replace(Value),
    Patch(PatchType, Value),
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Scope {
    /// Every field (kinds without a status subresource).
    All,
    /// Everything but `status`.
    Main,
    /// Only `status`.
    Status,
}

pub(super) struct WriteOpts {
    pub(super) manager: String,
    pub(super) force: bool,
    pub(super) dry_run: bool,
}

pub(super) fn patch_type(req: &Req) -> Result<PatchType, ApiError> {
    match req.media_type().as_str() {
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/json-patch+json" => Ok(PatchType::Json),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json ({other:?} given)"
            ),
        )),
    }
}

pub(super) fn parse_body(req: &Req, yaml: bool) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) => Ok(v),
        Err(e) if yaml => serde_yaml::from_slice::<Value>(&req.body).map_err(|y| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON ({e}) or YAML ({y})"
            ))
        }),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body of the request could not be decoded: {e}"
        ))),
    }
}

pub(super) fn write_opts(req: &Req, apply: bool) -> Result<WriteOpts, ApiError> {
    let manager = req
        .query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned();
    let force = match req.query.get("force").map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "force: invalid boolean value {other:?}"
            )));
        }
    };
    if apply && manager.is_none() {
        return Err(ApiError::patch_options(Cause::required(
            "fieldManager",
            "is required for apply patch",
        )));
    }
    if !apply && force.is_some() && req.method == Method::PATCH {
        return Err(ApiError::patch_options(Cause::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )));
    }
    if let Some(m) = &manager
        && m.len() > 128
    {
        return Err(ApiError::patch_options(Cause {
            field: "fieldManager".into(),
            reason: "FieldValueTooLong",
            message: "Too long: may not be more than 128 bytes".into(),
        }));
    }
    let dry_run = match req.query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )));
        }
    };
    let manager = manager.unwrap_or_else(|| {
        req.user_agent
            .as_deref()
            .and_then(|ua| ua.split('/').next())
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
            .chars()
            .take(128)
            .collect()
    });
    Ok(WriteOpts {
        manager,
        force: force.unwrap_or(false),
        dry_run,
    })
}

impl State {
    pub(super) fn create_name(&self, res: &Resource, body: &Value) -> Result<String, ApiError> {
        if let Some(n) = str_at(body, &["metadata", "name"]).filter(|n| !n.is_empty()) {
            return Ok(n.to_string());
        }
        if let Some(g) = str_at(body, &["metadata", "generateName"]).filter(|n| !n.is_empty()) {
            const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let id = uuid::Uuid::new_v4();
            let suffix: String = id.as_bytes()[..5]
                .iter()
                .map(|b| ALPHANUMS[*b as usize % ALPHANUMS.len()] as char)
                .collect();
            return Ok(format!("{g}{suffix}"));
        }
        Err(ApiError::invalid(
            res,
            "",
            vec![Cause::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ))
    }

    pub(super) fn write(
        &mut self,
        r: usize,
        ns: Option<&str>,
        url_name: Option<&str>,
        sub: Option<&str>,
        op: Op,
        opts: &WriteOpts,
    ) -> Result<(u16, Value), ApiError> {
        let res = &RESOURCES[r];
        let api_version = res.api_version();
        let name = match (url_name, &op) {
            (Some(n), _) => n.to_string(),
            (None, Op::Create(body)) => self.create_name(res, body)?,
            (None, _) => return Err(ApiError::bad_request("a resource name is required")),
        };
        let ns = if res.namespaced {
            ns.unwrap_or("").to_string()
        } else {
            String::new()
        };
        let existing = self.objects.get(&(r, ns.clone(), name.clone())).cloned();
        if res.namespaced && !self.namespace_exists(&ns) {
            let creates = matches!(op, Op::Create(_) | Op::Patch(PatchType::Apply, _));
            return Err(if creates {
                ApiError::not_found(&RESOURCES[NS], &ns)
            } else {
                ApiError::not_found(res, &name)
            });
        }
        let scope = match (sub, res.status) {
            (Some("status"), _) => Scope::Status,
            (_, true) => Scope::Main,
            (_, false) => Scope::All,
        };
        let ns_opt = res.namespaced.then_some(ns.as_str());
        let mut entries = existing.as_ref().map(managed_entries).unwrap_or_default();
        let is_apply = matches!(op, Op::Patch(PatchType::Apply, _));
        let mut new = match op {
            Op::Create(mut body) => {
                check_body(res, &body, &name, ns_opt, false)?;
                if existing.is_some() {
                    return Err(ApiError::already_exists(res, &name));
                }
                if res.status
                    && let Some(m) = body.as_object_mut()
                {
                    m.remove("status");
                }
                body
            }
            Op::Replace(body) => {
                check_body(res, &body, &name, ns_opt, false)?;
                let Some(old) = &existing else {
                    return Err(ApiError::not_found(res, &name));
                };
                check_preconditions(res, &name, &body, old)?;
                overlay(scope, old, body)
            }
            Op::Patch(PatchType::Apply, body) => {
                check_body(res, &body, &name, ns_opt, true)?;
                match &existing {
                    Some(old) => check_preconditions(res, &name, &body, old)?,
                    None if rv_of(&body).is_some() => return Err(ApiError::stale(res, &name)),
                    None => {}
                }
                let base = existing.clone().unwrap_or_else(|| {
                    json!({ "apiVersion": api_version, "kind": res.kind, "metadata": { "name": name } })
                });
                let ctx = ApplyCtx {
                    res,
                    name: &name,
                    manager: &opts.manager,
                    sub,
                    force: opts.force,
                    scope,
                };
                apply_fields(&ctx, &base, &body, &mut entries)?
            }
            Op::Patch(pt, patch) => {
                let Some(old) = &existing else {
                    return Err(ApiError::not_found(res, &name));
                };
                let mut merged = old.clone();
                if pt == PatchType::Json {
                    json_patch(&mut merged, &patch).map_err(|e| {
                        ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                    })?;
                    if rv_of(&merged) != rv_of(old) {
                        return Err(ApiError::stale(res, &name));
                    }
                } else {
                    if !patch.is_object() {
                        return Err(ApiError::bad_request(
                            "the body of a merge patch must be a JSON object",
                        ));
                    }
                    check_preconditions(res, &name, &patch, old)?;
                    let patch = if pt == PatchType::Strategic {
                        strip_directives(&patch)
                    } else {
                        patch
                    };
                    merge_patch(&mut merged, &patch);
                }
                overlay(scope, old, merged)
            }
        };
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        if let Some(m) = new.as_object_mut() {
            m.insert("apiVersion".into(), json!(api_version));
            m.insert("kind".into(), json!(res.kind));
        }
        {
            let now = now_ts();
            let (uid, created) = match &existing {
                Some(o) => (
                    str_at(o, &["metadata", "uid"])
                        .unwrap_or_default()
                        .to_string(),
                    str_at(o, &["metadata", "creationTimestamp"])
                        .unwrap_or_default()
                        .to_string(),
                ),
                None => (uuid::Uuid::new_v4().to_string(), now),
            };
            let m = meta_mut(&mut new);
            for k in [
                "resourceVersion",
                "managedFields",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "uid",
                "creationTimestamp",
                "namespace",
            ] {
                m.remove(k);
            }
            m.insert("name".into(), json!(name));
            if res.namespaced {
                m.insert("namespace".into(), json!(ns));
            }
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(created));
        }
        self.defaults(r, &mut new, existing.as_ref());
        validate(r, &new, existing.as_ref())?;
        self.admit(r, &new, existing.as_ref())?;
        if !is_apply {
            record_update(
                &mut entries,
                &opts.manager,
                sub,
                &api_version,
                existing.as_ref(),
                &new,
                scope,
            );
        }
        if res.generation {
            let generation = match &existing {
                None => 1,
                Some(o) => {
                    let g = o
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    if o.get("spec") != new.get("spec") {
                        g + 1
                    } else {
                        g
                    }
                }
            };
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        set_managed(&mut new, &entries);
        if let Some(old) = &existing {
            if let Some(rv) = rv_of(old) {
                meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
            }
            if *old == new {
                return Ok((200, old.clone()));
            }
        }
        let operation = if is_apply { "Apply" } else { "Update" };
        if let Some(e) = entries.iter_mut().find(|e| {
            e.manager == opts.manager && e.operation == operation && e.subresource.as_deref() == sub
        }) {
            e.time = now_ts();
        }
        set_managed(&mut new, &entries);
        let code = if existing.is_some() { 200 } else { 201 };
        if opts.dry_run {
            return Ok((code, new));
        }
        let stored = self.store(r, &ns, &name, new);
        if r == STS {
            self.reconcile_sts(&ns, &name, Instant::now());
        }
        // The StatefulSet controller retries a refused pod creation with
        // backoff: a ServiceAccount created in the meantime lets it through.
        if r == SA {
            let refused: Vec<String> = self
                .refused_pods
                .keys()
                .filter(|(n, _)| *n == ns)
                .map(|(_, set)| set.clone())
                .collect();
            for set in refused {
                self.reconcile_sts(&ns, &set, Instant::now());
            }
        }
        Ok((code, stored))
    }

    pub(super) fn write_scale(
        &mut self,
        req: &Req,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let sts = self.get(STS, Some(ns), name)?;
        let current = scale_json(&sts);
        let (new, apply) = if req.method == Method::PUT {
            (parse_body(req, false)?, false)
        } else {
            let pt = patch_type(req)?;
            let body = parse_body(req, pt == PatchType::Apply)?;
            let mut merged = current.clone();
            if pt == PatchType::Json {
                json_patch(&mut merged, &body).map_err(|e| ApiError::new(422, "Invalid", e))?;
            } else {
                merge_patch(&mut merged, &body);
            }
            (merged, pt == PatchType::Apply)
        };
        let res = &RESOURCES[STS];
        if let Some(rv) = rv_of(&new)
            && Some(rv) != rv_of(&sts)
        {
            return Err(ApiError::stale(res, name));
        }
        let replicas = new
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid_named(
                "autoscaling",
                "Scale.autoscaling",
                "Scale",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let opts = write_opts(req, apply)?;
        let patch = json!({ "spec": { "replicas": replicas } });
        let (_, stored) = self.write(
            STS,
            Some(ns),
            Some(name),
            None,
            Op::Patch(PatchType::Merge, patch),
            &opts,
        )?;
        Ok(scale_json(&stored))
    }
}

pub(super) fn scale_json(sts: &Value) -> Value {
    let mut selector: Vec<String> = sts
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    selector.sort();
    let meta = sts.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": { "replicas": sts.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
        "status": {
            "replicas": sts.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector.join(","),
        },
    })
}

pub(super) fn check_body(
    res: &Resource,
    body: &Value,
    name: &str,
    ns: Option<&str>,
    apply: bool,
) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is not a JSON object",
        ));
    }
    let api_version = body.get("apiVersion").and_then(Value::as_str);
    let kind = body.get("kind").and_then(Value::as_str);
    if apply && kind.is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{body}'"
        )));
    }
    if apply && api_version.is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{body}'"
        )));
    }
    if let Some(v) = api_version
        && v != res.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    if let Some(k) = kind
        && k != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            res.kind
        )));
    }
    if let Some(n) = str_at(body, &["metadata", "name"]).filter(|n| !n.is_empty())
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(ns), Some(bns)) = (ns, str_at(body, &["metadata", "namespace"]))
        && !bns.is_empty()
        && bns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

pub(super) fn check_preconditions(
    res: &Resource,
    name: &str,
    body: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    if let Some(rv) = rv_of(body)
        && Some(rv) != rv_of(old)
    {
        return Err(ApiError::stale(res, name));
    }
    if let Some(uid) = str_at(body, &["metadata", "uid"]).filter(|u| !u.is_empty()) {
        let have = str_at(old, &["metadata", "uid"]).unwrap_or_default();
        if uid != have {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    Ok(())
}

/// What a write through `scope` makes of `old` when the request says `new`.
pub(super) fn overlay(scope: Scope, old: &Value, new: Value) -> Value {
    match scope {
        Scope::All => new,
        Scope::Main => {
            let mut out = new;
            let root = root_mut(&mut out);
            match old.get("status") {
                Some(s) => root.insert("status".into(), s.clone()),
                None => root.remove("status"),
            };
            out
        }
        Scope::Status => {
            let mut out = old.clone();
            let root = root_mut(&mut out);
            match new.get("status") {
                Some(s) => root.insert("status".into(), s.clone()),
                None => root.remove("status"),
            };
            out
        }
    }
}
