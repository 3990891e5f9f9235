//! The controllers: the StatefulSet controller (pods, claims, rollouts, status) and
//! PodDisruptionBudget status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::{Value, json};

use super::State;
use super::pods::{claim_name, claim_templates, pod_json, pod_name, pod_ready, revision_name};
use super::resources::{PDB, POD, PVC, STS};
use super::select::selector_reqs;
use super::util::{labels_of, now_ts, str_at};

#[derive(Default)]
pub(super) struct StsSim {
    pub(super) pods: BTreeMap<i64, PodSim>,
}

pub(super) struct PodSim {
    pub(super) revision: String,
    pub(super) since: Instant,
    pub(super) ready: bool,
    pub(super) ready_at: Option<String>,
    pub(super) uid: String,
    pub(super) created: String,
    pub(super) ip: String,
}

impl State {
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        for (ns, name) in self.names(STS) {
            self.reconcile_sts(&ns, &name, now);
        }
        self.reconcile_pdbs();
    }

    pub(super) fn new_pod(&mut self, revision: String, now: Instant) -> PodSim {
        self.next_pod_ip += 1;
        let n = self.next_pod_ip;
        let ready = self.ready_after.is_zero();
        let created = now_ts();
        PodSim {
            revision,
            since: now,
            ready,
            ready_at: ready.then(|| created.clone()),
            uid: uuid::Uuid::new_v4().to_string(),
            created,
            ip: format!("10.244.{}.{}", (n >> 8) & 255, n & 255),
        }
    }

    pub(super) fn reconcile_sts(&mut self, ns: &str, name: &str, now: Instant) {
        let Some(sts) = self
            .objects
            .get(&(STS, ns.to_string(), name.to_string()))
            .cloned()
        else {
            return;
        };
        let spec = sts.get("spec").cloned().unwrap_or(json!({}));
        let replicas = spec
            .get("replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let start = spec
            .pointer("/ordinals/start")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0);
        let parallel = spec.get("podManagementPolicy") == Some(&json!("Parallel"));
        let on_delete = spec.pointer("/updateStrategy/type") == Some(&json!("OnDelete"));
        let partition = spec
            .pointer("/updateStrategy/rollingUpdate/partition")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let delete_scaled = spec.pointer("/persistentVolumeClaimRetentionPolicy/whenScaled")
            == Some(&json!("Delete"));
        let template = spec.get("template").cloned().unwrap_or(json!({}));
        let update_rev = revision_name(name, &template);
        let mut current_rev = sts
            .pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| update_rev.clone());
        let ready_after = self.ready_after;
        let wanted = start..start + replicas;
        let key = (ns.to_string(), name.to_string());
        let mut sim = self.sims.remove(&key).unwrap_or_default();
        let mut dirty = BTreeSet::new();

        // Readiness (the kubelet's part), written before the controller acts on it.
        for (ord, p) in sim.pods.iter_mut() {
            if !p.ready && now.duration_since(p.since) >= ready_after {
                p.ready = true;
                p.ready_at = Some(now_ts());
                let pod = pod_json(&sts, ns, name, *ord, p);
                self.store(POD, ns, &pod_name(name, *ord), pod);
            }
        }
        // Scale down: the surplus goes at once.
        let surplus: Vec<i64> = sim
            .pods
            .keys()
            .filter(|o| !wanted.contains(o))
            .copied()
            .collect();
        for ord in surplus {
            sim.pods.remove(&ord);
            dirty.remove(&ord);
            self.remove(POD, ns, &pod_name(name, ord));
            if delete_scaled {
                for t in claim_templates(&sts) {
                    self.remove(PVC, ns, &claim_name(&t, name, ord));
                }
            }
        }
        // Scale up: all at once (Parallel) or one at a time once the previous ones are ready.
        for ord in wanted.clone() {
            if let Some(p) = sim.pods.get(&ord) {
                if !parallel && !p.ready {
                    break;
                }
                continue;
            }
            let revision = if !on_delete && ord < start + partition {
                current_rev.clone()
            } else {
                update_rev.clone()
            };
            self.create_claims(ns, &sts, ord);
            let pod = self.new_pod(revision, now);
            let ready = pod.ready;
            sim.pods.insert(ord, pod);
            dirty.insert(ord);
            if !parallel && !ready {
                break;
            }
        }
        // Rolling update: one pod at a time, highest ordinal first, while all are ready.
        if !on_delete {
            loop {
                let all_ready =
                    sim.pods.len() as i64 == replicas && sim.pods.values().all(|p| p.ready);
                if !all_ready {
                    break;
                }
                let Some(ord) = sim
                    .pods
                    .iter()
                    .rev()
                    .find(|(o, p)| **o >= start + partition && p.revision != update_rev)
                    .map(|(o, _)| *o)
                else {
                    break;
                };
                self.remove(POD, ns, &pod_name(name, ord));
                let pod = self.new_pod(update_rev.clone(), now);
                sim.pods.insert(ord, pod);
                dirty.insert(ord);
            }
        }
        for ord in &dirty {
            if let Some(p) = sim.pods.get(ord) {
                let pod = pod_json(&sts, ns, name, *ord, p);
                self.store(POD, ns, &pod_name(name, *ord), pod);
            }
        }
        // Status.
        let count = sim.pods.len() as i64;
        let ready = sim.pods.values().filter(|p| p.ready).count() as i64;
        let updated = sim
            .pods
            .values()
            .filter(|p| p.revision == update_rev)
            .count() as i64;
        if !on_delete && updated == count && ready == count {
            current_rev = update_rev.clone();
        }
        let current = sim
            .pods
            .values()
            .filter(|p| p.revision == current_rev)
            .count() as i64;
        let mut status = json!({
            "observedGeneration": sts.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": count,
            "availableReplicas": ready,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        });
        for (field, n) in [
            ("readyReplicas", ready),
            ("currentReplicas", current),
            ("updatedReplicas", updated),
        ] {
            if n > 0 {
                status[field] = json!(n);
            }
        }
        self.sims.insert(key, sim);
        self.set_status(STS, ns, name, status);
    }

    pub(super) fn create_claims(&mut self, ns: &str, sts: &Value, ord: i64) {
        let sts_name = str_at(sts, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        let selector = sts
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let templates = sts
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in templates {
            let Some(tname) = str_at(&t, &["metadata", "name"]) else {
                continue;
            };
            let cname = claim_name(tname, &sts_name, ord);
            if self
                .objects
                .contains_key(&(PVC, ns.to_string(), cname.clone()))
            {
                continue;
            }
            let mut labels = t
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            labels.extend(selector.clone());
            let mut meta = json!({ "labels": labels });
            if let Some(a) = t.pointer("/metadata/annotations") {
                meta["annotations"] = a.clone();
            }
            let obj = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": meta,
                "spec": t.get("spec").cloned().unwrap_or(json!({})),
            });
            self.controller_create(PVC, ns, &cname, obj);
        }
    }

    pub(super) fn reconcile_pdbs(&mut self) {
        for (ns, name) in self.names(PDB) {
            let Some(pdb) = self.objects.get(&(PDB, ns.clone(), name.clone())).cloned() else {
                continue;
            };
            let reqs = pdb.pointer("/spec/selector").map(selector_reqs);
            let (mut expected, mut healthy) = (0i64, 0i64);
            if let Some(reqs) = &reqs {
                for ((_, pns, _), pod) in self.range(POD) {
                    if *pns == ns && reqs.iter().all(|r| r.matches(labels_of(pod))) {
                        expected += 1;
                        if pod_ready(pod) {
                            healthy += 1;
                        }
                    }
                }
            }
            let amount = |v: &Value| -> i64 {
                match v {
                    Value::Number(n) => n.as_i64().unwrap_or(0),
                    Value::String(s) => {
                        match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                            Some(p) => (expected * p + 99) / 100,
                            None => s.parse().unwrap_or(0),
                        }
                    }
                    _ => 0,
                }
            };
            let desired = if let Some(min) = pdb.pointer("/spec/minAvailable") {
                amount(min)
            } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
                (expected - amount(max)).max(0)
            } else {
                0
            };
            let allowed = (healthy - desired).max(0);
            let generation = pdb
                .pointer("/metadata/generation")
                .cloned()
                .unwrap_or(json!(1));
            let cond_status = if allowed > 0 { "True" } else { "False" };
            let old_cond = pdb.pointer("/status/conditions/0").cloned();
            let since = match &old_cond {
                Some(c) if c.get("status") == Some(&json!(cond_status)) => c
                    .get("lastTransitionTime")
                    .cloned()
                    .unwrap_or(json!(now_ts())),
                _ => json!(now_ts()),
            };
            let status = json!({
                "observedGeneration": generation,
                "disruptionsAllowed": allowed,
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
                "conditions": [{
                    "type": "DisruptionAllowed",
                    "status": cond_status,
                    "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" },
                    "message": "",
                    "observedGeneration": generation,
                    "lastTransitionTime": since,
                }],
            });
            self.set_status(PDB, &ns, &name, status);
        }
    }
}
