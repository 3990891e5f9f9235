//! URL shapes and discovery documents, and which operation a method on a route is.

use std::collections::BTreeSet;

use hyper::Method;
use serde_json::{Value, json};

use super::delete::delete_opts;
use super::errors::ApiError;
use super::resources::{NS, RESOURCES, STS};
use super::server::{Reply, Req};
use super::util::partial;
use super::write::{Op, PatchType, parse_body, patch_type, scale_json, write_opts};
use super::{SERVER_MINOR, State};

pub(super) enum Route {
    Text(&'static str),
    Json(Value),
    Collection {
        r: usize,
        ns: Option<String>,
    },
    Object {
        r: usize,
        ns: Option<String>,
        name: String,
        sub: Option<String>,
    },
}

pub(super) fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Ok(Route::Json(version_json())),
        ["healthz" | "readyz" | "livez"] => Ok(Route::Text("ok")),
        ["api"] => Ok(Route::Json(Value::Null)), // filled in with the server address
        ["apis"] => Ok(Route::Json(api_groups())),
        ["api", v, rest @ ..] => group_route("", v, rest),
        ["apis", g, v, rest @ ..] => group_route(g, v, rest),
        _ => Err(ApiError::no_route()),
    }
}

pub(super) fn group_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    if !RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
    {
        return Err(ApiError::no_route());
    }
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let sub_ok = |r: usize, sub: &str| {
        (sub == "status" && RESOURCES[r].status) || (sub == "scale" && r == STS)
    };
    let object = |r: usize, ns: Option<&str>, name: &str, sub: Option<&str>| {
        if let Some(s) = sub
            && !sub_ok(r, s)
        {
            return Err(ApiError::no_route());
        }
        Ok(Route::Object {
            r,
            ns: ns.map(str::to_string),
            name: name.to_string(),
            sub: sub.map(str::to_string),
        })
    };
    match rest {
        [] => Ok(Route::Json(resource_list(group, version))),
        [p] => match find(p) {
            Some(r) => Ok(Route::Collection { r, ns: None }),
            None => Err(ApiError::no_route()),
        },
        ["namespaces", ns, p] if find(p).is_some_and(|r| RESOURCES[r].namespaced) => {
            Ok(Route::Collection {
                r: find(p).unwrap_or(NS),
                ns: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, p, name] => match find(p) {
            Some(r) if RESOURCES[r].namespaced => object(r, Some(ns), name, None),
            _ => Err(ApiError::no_route()),
        },
        ["namespaces", ns, p, name, sub] => match find(p) {
            Some(r) if RESOURCES[r].namespaced => object(r, Some(ns), name, Some(sub)),
            _ => Err(ApiError::no_route()),
        },
        [p, name] => match find(p) {
            Some(r) if !RESOURCES[r].namespaced => object(r, None, name, None),
            _ => Err(ApiError::no_route()),
        },
        [p, name, sub] => match find(p) {
            Some(r) if !RESOURCES[r].namespaced => object(r, None, name, Some(sub)),
            _ => Err(ApiError::no_route()),
        },
        _ => Err(ApiError::no_route()),
    }
}

pub(super) fn version_json() -> Value {
    json!({
        "major": "1",
        "minor": SERVER_MINOR,
        "gitVersion": format!("v1.{SERVER_MINOR}.0"),
        "gitCommit": "esaas-kube-standin",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(super) fn api_groups() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if seen.insert(r.group) {
            let gv = json!({ "groupVersion": r.api_version(), "version": r.version });
            groups
                .push(json!({ "name": r.group, "versions": [gv.clone()], "preferredVersion": gv }));
        }
    }
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub(super) fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
            "shortNames": r.short,
        }));
        if r.status {
            let verbs: &[&str] = if r.writable {
                &["get", "patch", "update"]
            } else {
                &["get"]
            };
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
            }));
        }
        if r.plural == "statefulsets" {
            resources.push(json!({
                "name": "statefulsets/scale",
                "singularName": "",
                "namespaced": true,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources })
}

impl State {
    pub(super) fn dispatch(&mut self, req: &Req) -> Reply {
        match self.run(req) {
            Ok(reply) => reply,
            Err(e) => Reply::Json(e.code, e.status()),
        }
    }

    pub(super) fn run(&mut self, req: &Req) -> Result<Reply, ApiError> {
        let route = route(&req.path)?;
        let m = &req.method;
        match route {
            Route::Text(t) if *m == Method::GET => Ok(Reply::Text(200, t)),
            Route::Json(Value::Null) if *m == Method::GET => Ok(Reply::Json(
                200,
                json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address }],
                }),
            )),
            Route::Json(v) if *m == Method::GET => Ok(Reply::Json(200, v)),
            Route::Text(_) | Route::Json(_) => Err(ApiError::method_not_allowed()),
            Route::Collection { r, ns } => {
                let res = &RESOURCES[r];
                let scoped = ns.is_some() || !res.namespaced;
                match *m {
                    Method::GET => Ok(Reply::Json(
                        200,
                        self.list(r, ns.as_deref(), &req.query, req.partial_metadata())?,
                    )),
                    Method::POST if scoped && res.writable => {
                        let body = parse_body(req, false)?;
                        let opts = write_opts(req, false)?;
                        let (code, v) =
                            self.write(r, ns.as_deref(), None, None, Op::Create(body), &opts)?;
                        Ok(Reply::Json(code, v))
                    }
                    Method::DELETE if ns.is_some() => {
                        let d = delete_opts(req)?;
                        Ok(Reply::Json(
                            200,
                            self.delete_collection(r, ns.as_deref().unwrap_or(""), &req.query, &d)?,
                        ))
                    }
                    _ => Err(ApiError::method_not_allowed()),
                }
            }
            Route::Object { r, ns, name, sub } => {
                let res = &RESOURCES[r];
                let ns = ns.as_deref();
                match (sub.as_deref(), m.clone()) {
                    (None | Some("status"), Method::GET) => {
                        let obj = self.get(r, ns, &name)?;
                        Ok(Reply::Json(
                            200,
                            if req.partial_metadata() {
                                partial(&obj)
                            } else {
                                obj
                            },
                        ))
                    }
                    (Some("scale"), Method::GET) => {
                        Ok(Reply::Json(200, scale_json(&self.get(r, ns, &name)?)))
                    }
                    (None, Method::DELETE) => {
                        let d = delete_opts(req)?;
                        Ok(Reply::Json(
                            200,
                            self.delete(r, ns.unwrap_or(""), &name, &d)?,
                        ))
                    }
                    (_, Method::PUT | Method::PATCH) if !res.writable => {
                        Err(ApiError::method_not_allowed())
                    }
                    (Some("scale"), Method::PUT | Method::PATCH) => Ok(Reply::Json(
                        200,
                        self.write_scale(req, ns.unwrap_or(""), &name)?,
                    )),
                    (sub @ (None | Some("status")), Method::PUT) => {
                        let body = parse_body(req, false)?;
                        let opts = write_opts(req, false)?;
                        let (code, v) =
                            self.write(r, ns, Some(&name), sub, Op::Replace(body), &opts)?;
                        Ok(Reply::Json(code, v))
                    }
                    (sub @ (None | Some("status")), Method::PATCH) => {
                        let pt = patch_type(req)?;
                        let body = parse_body(req, pt == PatchType::Apply)?;
                        let opts = write_opts(req, pt == PatchType::Apply)?;
                        let (code, v) =
                            self.write(r, ns, Some(&name), sub, Op::Patch(pt, body), &opts)?;
                        Ok(Reply::Json(code, v))
                    }
                    _ => Err(ApiError::method_not_allowed()),
                }
            }
        }
    }

    pub(super) fn get(&self, r: usize, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(r, ns.unwrap_or("").to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&RESOURCES[r], name))
    }
}
