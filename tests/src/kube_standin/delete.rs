//! Deletes and deletecollection: preconditions, what a delete answers, and what goes with
//! the object.

use serde_json::{Value, json};

use super::errors::{ApiError, Cause};
use super::pods::{claim_templates, pod_name};
use super::resources::{NS, POD, PVC, RESOURCES, SERVICE, STS};
use super::select::Selection;
use super::server::Req;
use super::util::{list_item, meta_mut, now_ts, obj_mut, root_mut, rv_of, str_at};
use super::write::parse_body;
use super::{Key, Query, State};

#[derive(Default)]
pub(super) struct DeleteOpts {
    pub(super) propagation: Option<String>,
    pub(super) uid: Option<String>,
    pub(super) rv: Option<String>,
    pub(super) dry_run: bool,
}

pub(super) fn delete_opts(req: &Req) -> Result<DeleteOpts, ApiError> {
    let mut d = DeleteOpts::default();
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        let body = parse_body(req, false)?;
        d.propagation = str_at(&body, &["propagationPolicy"]).map(str::to_string);
        if body.get("orphanDependents") == Some(&json!(true)) {
            d.propagation = Some("Orphan".into());
        }
        d.uid = str_at(&body, &["preconditions", "uid"]).map(str::to_string);
        d.rv = str_at(&body, &["preconditions", "resourceVersion"]).map(str::to_string);
        d.dry_run = body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    }
    if let Some(p) = req.query.get("propagationPolicy") {
        d.propagation = Some(p.clone());
    }
    if req.query.get("dryRun").is_some_and(|v| v == "All") {
        d.dry_run = true;
    }
    if let Some(p) = &d.propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid_named(
            "meta.k8s.io",
            "DeleteOptions.meta.k8s.io",
            "DeleteOptions",
            "",
            vec![Cause::unsupported(
                "propagationPolicy",
                p,
                &["Foreground", "Background", "Orphan", "nil"],
            )],
        ));
    }
    Ok(d)
}

impl State {
    pub(super) fn delete(
        &mut self,
        r: usize,
        ns: &str,
        name: &str,
        d: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let res = &RESOURCES[r];
        let ns = if res.namespaced { ns } else { "" };
        let Some(obj) = self
            .objects
            .get(&(r, ns.to_string(), name.to_string()))
            .cloned()
        else {
            return Err(ApiError::not_found(res, name));
        };
        let uid = str_at(&obj, &["metadata", "uid"]).unwrap_or_default();
        if let Some(p) = d.uid.as_deref().filter(|p| *p != uid) {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {p}, UID in object meta: {uid}"
                ),
            ));
        }
        let rv = rv_of(&obj).unwrap_or_default();
        if let Some(p) = d.rv.as_deref().filter(|p| *p != rv) {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {p}, ResourceVersion in object meta: {rv}"
                ),
            ));
        }
        if d.dry_run {
            return Ok(deleted_reply(r, obj));
        }
        let removed = self.remove(r, ns, name).unwrap_or(obj);
        self.cascade(r, ns, name, &removed, d.propagation.as_deref());
        Ok(deleted_reply(r, removed))
    }

    pub(super) fn cascade(
        &mut self,
        r: usize,
        ns: &str,
        name: &str,
        obj: &Value,
        propagation: Option<&str>,
    ) {
        match r {
            NS => {
                let keys: Vec<Key> = (0..RESOURCES.len())
                    .filter(|kr| *kr != NS)
                    .flat_map(|kr| self.in_namespace(kr, name).map(|(k, _)| k.clone()))
                    .collect();
                for (kr, kns, kname) in keys {
                    self.remove(kr, &kns, &kname);
                }
                self.sims.retain(|(sns, _), _| sns != name);
                self.orphaned.retain(|(sns, _), _| sns != name);
            }
            STS => {
                let key = (ns.to_string(), name.to_string());
                let sim = self.sims.remove(&key).unwrap_or_default();
                for ord in sim.pods.keys() {
                    let pod = pod_name(name, *ord);
                    if propagation == Some("Orphan") {
                        if let Some(mut p) = self
                            .objects
                            .get(&(POD, ns.to_string(), pod.clone()))
                            .cloned()
                        {
                            meta_mut(&mut p).remove("ownerReferences");
                            self.store(POD, ns, &pod, p);
                        }
                    } else {
                        self.remove(POD, ns, &pod);
                    }
                }
                // The garbage collector leaves orphans alone; a StatefulSet whose
                // selector matches adopts them (kubernetes/kubernetes
                // pkg/controller/statefulset/stateful_set.go, `adoptOrphanRevisions`
                // and the ControllerRefManager's `ClaimPods`).
                if propagation == Some("Orphan") && !sim.pods.is_empty() {
                    self.orphaned.insert(key, sim);
                }
                if obj.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
                    == Some(&json!("Delete"))
                {
                    let templates = claim_templates(obj);
                    let doomed: Vec<String> = self
                        .names(PVC)
                        .into_iter()
                        .filter(|(pns, pname)| {
                            pns == ns
                                && templates.iter().any(|t| {
                                    pname
                                        .strip_prefix(&format!("{t}-{name}-"))
                                        .is_some_and(|o| o.parse::<u64>().is_ok())
                                })
                        })
                        .map(|(_, n)| n)
                        .collect();
                    for pvc in doomed {
                        self.remove(PVC, ns, &pvc);
                    }
                }
            }
            POD => {
                let owner = obj
                    .pointer("/metadata/ownerReferences/0/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let ord = str_at(obj, &["metadata", "labels", "apps.kubernetes.io/pod-index"])
                    .and_then(|o| o.parse::<i64>().ok());
                let key = (ns.to_string(), owner);
                if let (Some(sim), Some(ord)) = (self.sims.get_mut(&key), ord) {
                    sim.pods.remove(&ord);
                    self.pending.sets.insert(key);
                } else if let Some(ord) = ord {
                    // An orphan that goes is not adopted later.
                    for ((sns, sts), sim) in self.orphaned.iter_mut() {
                        if sns == ns && pod_name(sts, ord) == name {
                            sim.pods.remove(&ord);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn delete_collection(
        &mut self,
        r: usize,
        ns: &str,
        q: &Query,
        d: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let res = &RESOURCES[r];
        if r == NS {
            return Err(ApiError::method_not_allowed());
        }
        let sel = Selection::parse(r, q)?;
        let names: Vec<String> = self
            .range(r)
            .filter(|((_, ons, _), obj)| ons == ns && sel.matches(r, obj))
            .map(|((_, _, n), _)| n.clone())
            .collect();
        let mut items = Vec::new();
        for n in names {
            let obj = self.get(r, Some(ns), &n)?;
            if d.dry_run {
                items.push(list_item(&obj));
                continue;
            }
            if let Some(removed) = self.remove(r, ns, &n) {
                self.cascade(r, ns, &n, &removed, d.propagation.as_deref());
                items.push(list_item(&removed));
            }
        }
        Ok(json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": { "resourceVersion": self.rv.to_string() },
            "items": items,
        }))
    }
}

pub(super) fn deleted_reply(r: usize, mut obj: Value) -> Value {
    let res = &RESOURCES[r];
    match r {
        NS => {
            meta_mut(&mut obj).insert("deletionTimestamp".into(), json!(now_ts()));
            obj_mut(root_mut(&mut obj), "status").insert("phase".into(), json!("Terminating"));
            obj
        }
        POD | SERVICE | PVC => obj,
        _ => {
            let name = str_at(&obj, &["metadata", "name"]).unwrap_or_default();
            let mut details = ApiError::details(res, name);
            details["uid"] = json!(str_at(&obj, &["metadata", "uid"]).unwrap_or_default());
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details })
        }
    }
}
