//! The controllers: the StatefulSet controller (pods, claims, rollouts, status) and
//! PodDisruptionBudget status.
//!
//! A controller run looks only at what changed or is due: the StatefulSets written (or whose
//! pods were deleted) since the last run, those with a pod whose readiness delay has passed,
//! and the budgets of the namespaces whose pods changed. Reconciling one that is not among
//! them changes nothing (a run leaves every StatefulSet and budget settled until its object,
//! its pods or the clock move), so the outcome is that of reconciling everything each time,
//! which cost a core with a few hundred clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::{Value, json};

use super::State;
use super::pod_security;
use super::pods::{claim_name, claim_templates, pod_json, pod_name, pod_ready, revision_name};
use super::resources::{NODE, NS, PDB, POD, PVC, SA, SC, STS};
use super::select::selector_reqs;
use super::util::{labels_of, now_ts, str_at};
use super::validate::quantity;

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
    /// The zone of its volumes (from their StorageClass's `allowedTopologies`), where
    /// the scheduler must put it; None when they do not say.
    pub(super) zone: Option<String>,
    /// Whether every claim it mounts is Bound: a pod with an unbound claim is never
    /// scheduled, so it never turns ready.
    pub(super) bound: bool,
    /// The node it is bound to; `None` while it is Pending (no node passes the
    /// scheduler's filters), and then it never turns ready.
    pub(super) node: Option<String>,
}

/// What the next controller run has to look at.
#[derive(Default)]
pub(super) struct Pending {
    /// StatefulSets written, or whose pods were deleted, since the last run.
    pub(super) sets: BTreeSet<(String, String)>,
    /// When a pod of a StatefulSet is due to turn ready: (deadline, namespace, name).
    ready: BTreeSet<(Instant, String, String)>,
    /// PodDisruptionBudgets written since the last run.
    budgets: BTreeSet<(String, String)>,
    /// Namespaces whose pods changed since the last run: their budgets are recounted.
    pod_namespaces: BTreeSet<String>,
    /// When a claim's asked-for size or class is due to be reached: (deadline, namespace, name).
    volumes: BTreeSet<(Instant, String, String)>,
    /// A Node changed: every StatefulSet looks again (Pending pods, pods of a node gone).
    nodes: bool,
}

/// How long EBS makes a volume wait between two modifications: "After modifying a
/// volume, you must wait at least six hours ... before you can modify the same volume"
/// (Amazon EBS User Guide, "Requirements for EBS volume modifications"). The CSI driver
/// retries a refused ModifyVolume, so the claim stays `InProgress` until then.
pub(super) const MODIFY_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// What a claim's write asks of its volume, beyond what it has.
pub(super) struct VolumeChange {
    /// A larger size.
    pub(super) grow: Option<Value>,
    /// Another VolumeAttributesClass.
    pub(super) class: Option<Value>,
}

impl VolumeChange {
    pub(super) fn any(&self) -> bool {
        self.grow.is_some() || self.class.is_some()
    }
}

impl Pending {
    /// Notes a stored or removed object.
    pub(super) fn changed(&mut self, r: usize, ns: &str, name: &str) {
        match r {
            STS => {
                self.sets.insert((ns.to_string(), name.to_string()));
            }
            PDB => {
                self.budgets.insert((ns.to_string(), name.to_string()));
            }
            POD => {
                self.pod_namespaces.insert(ns.to_string());
            }
            NODE => self.nodes = true,
            _ => {}
        }
    }

    /// The StatefulSets to reconcile at `now`, in namespace and name order.
    fn due_sets(&mut self, now: Instant) -> BTreeSet<(String, String)> {
        let mut due = std::mem::take(&mut self.sets);
        while let Some((at, _, _)) = self.ready.first()
            && *at <= now
        {
            if let Some((_, ns, name)) = self.ready.pop_first() {
                due.insert((ns, name));
            }
        }
        due
    }
}

impl State {
    /// One run of the controllers: the StatefulSets that changed or are due, then the
    /// budgets whose pods or selves changed.
    pub(super) fn tick(&mut self) {
        self.tick_at(Instant::now());
    }

    /// What `storage` and `class` (a claim's spec) ask beyond `status`.
    pub(super) fn volume_changes(
        &self,
        status: &Value,
        storage: Option<&Value>,
        class: Option<&Value>,
    ) -> VolumeChange {
        let have = status.pointer("/capacity/storage").and_then(quantity);
        let grow = storage
            .filter(|s| {
                quantity(s)
                    .zip(have)
                    .is_some_and(|(want, have)| want > have)
            })
            .cloned();
        let class = class
            .filter(|c| status.get("currentVolumeAttributesClassName") != Some(*c))
            .cloned();
        VolumeChange { grow, class }
    }

    /// The external resizer and the CSI driver reach a claim's new size and class after
    /// the readiness delay (both in one ModifyVolume: the EBS CSI driver coalesces a
    /// resize and a modification that arrive together, aws-ebs-csi-driver
    /// docs/modify-volume.md).
    pub(super) fn volume_changed(&mut self, ns: &str, name: &str) {
        if let Some(at) = Instant::now().checked_add(self.ready_after) {
            self.pending
                .volumes
                .insert((at, ns.to_string(), name.to_string()));
        }
    }

    /// Gives the claim `ns/name` the size and class it asks for: `capacity` moves and
    /// `FileSystemResizePending` goes, `currentVolumeAttributesClassName` moves and
    /// `modifyVolumeStatus` goes, unless the volume was modified within
    /// [`MODIFY_COOLDOWN`] (then it waits until then).
    fn settle_volume(&mut self, ns: &str, name: &str, now: Instant) {
        let key = (PVC, ns.to_string(), name.to_string());
        let Some(pvc) = self.objects.get(&key).cloned() else {
            return;
        };
        let mut status = pvc.get("status").cloned().unwrap_or(json!({}));
        let change = self.volume_changes(
            &status,
            pvc.pointer("/spec/resources/requests/storage"),
            pvc.pointer("/spec/volumeAttributesClassName"),
        );
        if !change.any() {
            return;
        }
        let vkey = (ns.to_string(), name.to_string());
        if let Some(last) = self.volume_modified.get(&vkey)
            && let Some(open) = last.checked_add(MODIFY_COOLDOWN)
            && now < open
        {
            self.pending.volumes.insert((open, vkey.0, vkey.1));
            return;
        }
        if let (Some(s), Some(m)) = (change.grow, status.as_object_mut()) {
            m.insert("capacity".into(), json!({ "storage": s }));
            m.remove("conditions");
        }
        if let (Some(c), Some(m)) = (change.class, status.as_object_mut()) {
            m.insert("currentVolumeAttributesClassName".into(), c);
            m.remove("modifyVolumeStatus");
        }
        self.volume_modified.insert(vkey, now);
        self.set_status(PVC, ns, name, status);
    }

    pub(super) fn tick_at(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.pending.volumes.first()
            && *at <= now
        {
            if let Some((_, ns, name)) = self.pending.volumes.pop_first() {
                self.settle_volume(&ns, &name, now);
            }
        }
        if std::mem::take(&mut self.pending.nodes) {
            let all: Vec<(String, String)> = self.sims.keys().cloned().collect();
            self.pending.sets.extend(all);
        }
        for key in self.pending.due_sets(now) {
            self.reconcile_sts(&key.0, &key.1, now);
            // Its own writes (pods, status) leave it settled.
            self.pending.sets.remove(&key);
        }
        let mut budgets = std::mem::take(&mut self.pending.budgets);
        for ns in std::mem::take(&mut self.pending.pod_namespaces) {
            budgets.extend(
                self.in_namespace(PDB, &ns)
                    .map(|((_, _, n), _)| (ns.clone(), n.clone())),
            );
        }
        for (ns, name) in &budgets {
            self.reconcile_pdb(ns, name);
        }
        // Their own status writes leave them settled.
        self.pending.budgets.clear();
    }

    /// A new pod of `ns/name` at `revision`; unless ready at once, a run of the controller
    /// is due when its readiness delay has passed.
    pub(super) fn new_pod(
        &mut self,
        ns: &str,
        name: &str,
        ord: i64,
        revision: String,
        now: Instant,
    ) -> PodSim {
        self.next_pod_ip += 1;
        let n = self.next_pod_ip;
        let (bound, zone) = self.placement(ns, name, ord);
        let node = if bound {
            self.bind(ns, name, ord, zone.as_deref(), now)
        } else {
            None
        };
        let ready = bound && node.is_some() && self.ready_after.is_zero();
        if !ready && let Some(at) = now.checked_add(self.ready_after) {
            self.pending
                .ready
                .insert((at, ns.to_string(), name.to_string()));
        }
        let created = now_ts();
        PodSim {
            revision,
            since: now,
            ready,
            ready_at: ready.then(|| created.clone()),
            uid: uuid::Uuid::new_v4().to_string(),
            created,
            ip: format!("10.244.{}.{}", (n >> 8) & 255, n & 255),
            zone,
            bound,
            node,
        }
    }

    /// The node the scheduler binds pod `ord` of StatefulSet `ns/name` to (recorded).
    fn bind(
        &mut self,
        ns: &str,
        name: &str,
        ord: i64,
        zone: Option<&str>,
        now: Instant,
    ) -> Option<String> {
        let sts = self.objects.get(&(STS, ns.to_string(), name.to_string()))?;
        let spec = sts
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(json!({}));
        let pod = pod_name(name, ord);
        let node = self.schedule(ns, &pod, &spec, zone)?;
        if self.nodes_mode() {
            let node_zone = self
                .objects
                .get(&(NODE, String::new(), node.clone()))
                .and_then(|n| str_at(n, &["metadata", "labels", super::nodes::ZONE_LABEL]))
                .unwrap_or_default()
                .to_string();
            self.placements.push(super::nodes::Placement {
                pod: format!("{ns}/{pod}"),
                node: node.clone(),
                zone: node_zone,
                at: now,
            });
        }
        Some(node)
    }

    /// Whether pod `ord` of StatefulSet `ns/name` has every claim Bound, and the zone
    /// its volumes confine it to. The scheduler's VolumeBinding plugin places a pod
    /// only where its volumes' topology allows (kubernetes/kubernetes
    /// pkg/scheduler/framework/plugins/volumebinding): for a WaitForFirstConsumer class,
    /// the class's `allowedTopologies`; the EBS CSI driver's key is
    /// `topology.ebs.csi.aws.com/zone`.
    fn placement(&self, ns: &str, name: &str, ord: i64) -> (bool, Option<String>) {
        let Some(sts) = self.objects.get(&(STS, ns.to_string(), name.to_string())) else {
            return (true, None);
        };
        let (mut bound, mut zone) = (true, None);
        for t in claim_templates(sts) {
            let Some(pvc) = self
                .objects
                .get(&(PVC, ns.to_string(), claim_name(&t, name, ord)))
            else {
                bound = false;
                continue;
            };
            if str_at(pvc, &["status", "phase"]) != Some("Bound") {
                bound = false;
            }
            let class = str_at(pvc, &["spec", "storageClassName"]).unwrap_or_default();
            let terms = self
                .objects
                .get(&(SC, String::new(), class.to_string()))
                .and_then(|sc| sc.get("allowedTopologies"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for term in &terms {
                let exprs = term
                    .get("matchLabelExpressions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for e in exprs {
                    let key = e.get("key").and_then(Value::as_str);
                    if matches!(
                        key,
                        Some("topology.ebs.csi.aws.com/zone" | "topology.kubernetes.io/zone")
                    ) && let Some(z) = e.pointer("/values/0").and_then(Value::as_str)
                    {
                        zone = Some(z.to_string());
                    }
                }
            }
        }
        (bound, zone)
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
        // Pod Security admission refuses every pod of a violating template: the
        // controller creates none (and retries on the next change).
        let level =
            pod_security::enforced_level(self.objects.get(&(NS, String::new(), ns.to_string())))
                .to_string();
        let violations =
            pod_security::violations(&level, template.get("spec").unwrap_or(&json!({})));
        let mut refused = Vec::new();
        if !violations.is_empty() {
            refused.push(format!(
                "violates PodSecurity \"{level}:latest\": {}",
                violations.join(", ")
            ));
        }
        // The ServiceAccount admission plugin: a pod's service account must
        // exist ("error looking up service account {ns}/{name}: serviceaccount
        // \"{name}\" not found"; Kubernetes' "Service account admission
        // controller"). Every namespace has `default`, which the
        // ServiceAccount controller creates.
        let account = template
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .unwrap_or("default");
        if account != "default"
            && !self
                .objects
                .contains_key(&(SA, ns.to_string(), account.to_string()))
        {
            refused.push(format!(
                "error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"
            ));
        }
        let admitted = refused.is_empty();
        if admitted {
            self.refused_pods
                .remove(&(ns.to_string(), name.to_string()));
        } else {
            self.refused_pods
                .insert((ns.to_string(), name.to_string()), refused.join("; "));
        }
        let mut current_rev = sts
            .pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| update_rev.clone());
        let ready_after = self.ready_after;
        let wanted = start..start + replicas;
        let key = (ns.to_string(), name.to_string());
        let mut sim = match self.sims.remove(&key) {
            Some(sim) => sim,
            None => self.adopt(ns, name, &sts),
        };
        let mut dirty = BTreeSet::new();

        // Pods of a node that is gone go too (the pod garbage collector); Pending ones are
        // scheduled again, and turn ready the readiness delay after they are bound.
        let gone: Vec<i64> = sim
            .pods
            .iter()
            .filter(|(_, p)| p.node.as_deref().is_some_and(|n| !self.node_exists(n)))
            .map(|(o, _)| *o)
            .collect();
        for ord in gone {
            sim.pods.remove(&ord);
            self.remove(POD, ns, &pod_name(name, ord));
        }
        let pending: Vec<(i64, Option<String>)> = sim
            .pods
            .iter()
            .filter(|(_, p)| p.bound && p.node.is_none())
            .map(|(o, p)| (*o, p.zone.clone()))
            .collect();
        for (ord, zone) in pending {
            self.sims.insert(key.clone(), std::mem::take(&mut sim));
            let node = self.bind(ns, name, ord, zone.as_deref(), now);
            sim = self.sims.remove(&key).unwrap_or_default();
            if let (Some(node), Some(p)) = (node, sim.pods.get_mut(&ord)) {
                p.node = Some(node);
                p.since = now;
                if let Some(at) = now.checked_add(ready_after) {
                    self.pending
                        .ready
                        .insert((at, ns.to_string(), name.to_string()));
                }
                dirty.insert(ord);
            }
        }
        // Readiness (the kubelet's part), written before the controller acts on it.
        for (ord, p) in sim.pods.iter_mut() {
            if !p.ready && p.bound && p.node.is_some() && now.duration_since(p.since) >= ready_after
            {
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
        for ord in wanted.clone().filter(|_| admitted) {
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
            // The scheduler sees the pods bound so far, this set's included.
            self.sims.insert(key.clone(), std::mem::take(&mut sim));
            let pod = self.new_pod(ns, name, ord, revision, now);
            sim = self.sims.remove(&key).unwrap_or_default();
            let ready = pod.ready;
            sim.pods.insert(ord, pod);
            dirty.insert(ord);
            if !parallel && !ready {
                break;
            }
        }
        // Rolling update: one pod at a time, highest ordinal first, while all are ready.
        if !on_delete && admitted {
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
                sim.pods.remove(&ord);
                self.sims.insert(key.clone(), std::mem::take(&mut sim));
                let pod = self.new_pod(ns, name, ord, update_rev.clone(), now);
                sim = self.sims.remove(&key).unwrap_or_default();
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

    /// The orphaned pods of an earlier StatefulSet `ns/name` that this one's selector
    /// matches: it takes them over as they are (same revision, same uid, no restart);
    /// the owner reference is written with its next status.
    fn adopt(&mut self, ns: &str, name: &str, sts: &Value) -> StsSim {
        let Some(mut sim) = self.orphaned.remove(&(ns.to_string(), name.to_string())) else {
            return StsSim::default();
        };
        let reqs = sts.pointer("/spec/selector").map(selector_reqs);
        sim.pods.retain(|ord, _| {
            self.objects
                .get(&(POD, ns.to_string(), pod_name(name, *ord)))
                .is_some_and(|pod| {
                    reqs.as_ref()
                        .is_some_and(|r| r.iter().all(|q| q.matches(labels_of(pod))))
                })
        });
        let ords: Vec<i64> = sim.pods.keys().copied().collect();
        for ord in ords {
            if let Some(p) = sim.pods.get(&ord) {
                let pod = pod_json(sts, ns, name, ord, p);
                self.store(POD, ns, &pod_name(name, ord), pod);
            }
        }
        sim
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

    pub(super) fn reconcile_pdb(&mut self, ns: &str, name: &str) {
        let Some(pdb) = self
            .objects
            .get(&(PDB, ns.to_string(), name.to_string()))
            .cloned()
        else {
            return;
        };
        let reqs = pdb.pointer("/spec/selector").map(selector_reqs);
        let (mut expected, mut healthy) = (0i64, 0i64);
        if let Some(reqs) = &reqs {
            for (_, pod) in self.in_namespace(POD, ns) {
                if reqs.iter().all(|r| r.matches(labels_of(pod))) {
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
                Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                    Some(p) => (expected * p + 99) / 100,
                    None => s.parse().unwrap_or(0),
                },
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
        self.set_status(PDB, ns, name, status);
    }
}
