//! Nodes and the scheduler's part of a pod's life.
//!
//! Unless something plays the nodes, the stand-in binds every pod to a made-up node of its
//! volume's zone (`esaas-standin-node-{zone}`), as it always did. Once something does
//! ([`KubeStandin::node_api`]: the EKS node stand-in, [`crate::eks_nodes`], registers a
//! Node per instance of a node group), pods are scheduled the way kube-scheduler's filter
//! plugins decide
//! (kubernetes/kubernetes `pkg/scheduler/framework/plugins`), and only then:
//!
//! - `nodeunschedulable`: not onto a node with `spec.unschedulable` (cordoned);
//! - a node that is not `Ready` carries the `node.kubernetes.io/not-ready` NoSchedule taint
//!   (the node lifecycle controller's), so it takes no pod;
//! - `nodeaffinity`: every `nodeSelector` label must be on the node;
//! - `tainttoleration`: every NoSchedule taint of the node must be tolerated;
//! - `volumebinding`: the node's `topology.kubernetes.io/zone` must be the zone the pod's
//!   volumes live in (an EBS volume attaches only in its own zone);
//! - `interpodaffinity`: a required pod anti-affinity on `kubernetes.io/hostname` keeps a
//!   second matching pod off the node.
//!
//! A pod no node passes stays `Pending` (`PodScheduled=False`, reason `Unschedulable`) and
//! is tried again whenever a node changes: the stranded pod a node image update produces
//! when its zone has no room. A pod bound to a node that is deleted is deleted too (the
//! pod garbage collector's orphaned-pod sweep, `pkg/controller/podgc`), and its
//! StatefulSet makes it again. Eviction (`policy/v1` Eviction) deletes a pod only while
//! every PodDisruptionBudget that selects it allows a disruption, else `429 TooManyRequests`
//! ("Cannot evict pod as it would violate the pod's disruption budget."), as the API server's
//! eviction REST handler does (`pkg/registry/core/pod/storage/eviction.go`).

use std::time::Instant;

use serde_json::{Value, json};

use super::resources::{NODE, PDB, POD};
use super::select::selector_reqs;
use super::util::{labels_of, str_at};
use super::{KubeStandin, State};

/// The zone label of nodes (and, from Kubernetes 1.35, of pods).
pub(super) const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Where a pod was put, for tests: pod, node, the node's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `{namespace}/{pod}`.
    pub pod: String,
    /// The node it was bound to.
    pub node: String,
    /// That node's zone.
    pub zone: String,
    /// When.
    pub at: Instant,
}

fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True"))
            })
        })
}

fn tolerated(taint: &Value, tolerations: &[Value]) -> bool {
    let key = taint.get("key").and_then(Value::as_str).unwrap_or_default();
    let value = taint
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let effect = taint
        .get("effect")
        .and_then(Value::as_str)
        .unwrap_or_default();
    tolerations.iter().any(|t| {
        let t_effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
        let t_key = t.get("key").and_then(Value::as_str).unwrap_or_default();
        let exists = t.get("operator") == Some(&json!("Exists"));
        (t_effect.is_empty() || t_effect == effect)
            && (t_key.is_empty() && exists
                || t_key == key
                    && (exists
                        || t.get("value").and_then(Value::as_str).unwrap_or_default() == value))
    })
}

impl State {
    /// Whether something plays the nodes ([`KubeStandin::node_api`] was asked for): then
    /// pods are scheduled onto Node objects only.
    pub(super) fn nodes_mode(&self) -> bool {
        self.with_nodes
    }

    /// The node pod `ns/pod` with `spec` (its pod template's) goes to, its volumes in
    /// `zone`; `None`: Pending.
    pub(super) fn schedule(
        &self,
        ns: &str,
        pod: &str,
        spec: &Value,
        zone: Option<&str>,
    ) -> Option<String> {
        if !self.nodes_mode() {
            return Some(match zone {
                Some(z) => format!("esaas-standin-node-{z}"),
                None => "esaas-standin-node".to_string(),
            });
        }
        let selector = spec
            .get("nodeSelector")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let tolerations = spec
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let anti: Vec<Value> = spec
            .pointer("/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.get("topologyKey") == Some(&json!(HOSTNAME_LABEL)))
            .collect();
        for ((_, _, name), node) in self.range(NODE) {
            let node_labels = labels_of(node).cloned().unwrap_or_default();
            if node.pointer("/spec/unschedulable") == Some(&json!(true)) || !node_ready(node) {
                continue;
            }
            if selector.iter().any(|(k, v)| node_labels.get(k) != Some(v)) {
                continue;
            }
            let taints = node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if taints
                .iter()
                .filter(|t| {
                    matches!(
                        t.get("effect").and_then(Value::as_str),
                        Some("NoSchedule" | "NoExecute")
                    )
                })
                .any(|t| !tolerated(t, &tolerations))
            {
                continue;
            }
            if let Some(z) = zone
                && node_labels.get(ZONE_LABEL).and_then(Value::as_str) != Some(z)
            {
                continue;
            }
            // The pods of StatefulSets (the only pods there are) with their template's labels.
            let crowded = anti.iter().any(|term| {
                let reqs = term.get("labelSelector").map(selector_reqs);
                self.sims
                    .iter()
                    .filter(|((sns, _), _)| sns == ns)
                    .any(|((_, sts), sim)| {
                        let matches = self
                            .objects
                            .get(&(super::resources::STS, ns.to_string(), sts.clone()))
                            .and_then(|o| o.pointer("/spec/template"))
                            .is_some_and(|t| {
                                reqs.as_ref()
                                    .is_some_and(|r| r.iter().all(|q| q.matches(labels_of(t))))
                            });
                        matches
                            && sim.pods.iter().any(|(o, p)| {
                                super::pods::pod_name(sts, *o) != pod
                                    && p.node.as_deref() == Some(name.as_str())
                            })
                    })
            });
            if crowded {
                continue;
            }
            return Some(name.clone());
        }
        None
    }

    /// Whether node `name` exists (always, without Node objects: the made-up ones).
    pub(super) fn node_exists(&self, name: &str) -> bool {
        !self.nodes_mode()
            || self
                .objects
                .contains_key(&(NODE, String::new(), name.to_string()))
    }

    /// Whether every PodDisruptionBudget selecting `pod` allows a disruption now.
    fn disruption_allowed(&mut self, ns: &str, pod: &Value) -> bool {
        let budgets: Vec<String> = self
            .in_namespace(PDB, ns)
            .filter(|(_, b)| {
                b.pointer("/spec/selector")
                    .map(selector_reqs)
                    .is_some_and(|r| r.iter().all(|q| q.matches(labels_of(pod))))
            })
            .map(|((_, _, n), _)| n.clone())
            .collect();
        budgets.iter().all(|b| {
            self.reconcile_pdb(ns, b);
            self.objects
                .get(&(PDB, ns.to_string(), b.clone()))
                .and_then(|o| o.pointer("/status/disruptionsAllowed"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
        })
    }
}

impl State {
    /// Deletes pod `ns/name` as a client's delete does: its StatefulSet makes it again.
    pub(super) fn delete_pod_object(&mut self, ns: &str, name: &str) {
        if let Some(obj) = self.remove(POD, ns, name) {
            self.cascade(POD, ns, name, &obj, None);
        }
    }
}

/// A handle on the stand-in's nodes for whoever plays the cloud (the EKS node stand-in):
/// cheap to clone, usable from another task.
#[derive(Clone)]
pub struct NodeApi {
    shared: std::sync::Arc<super::Shared>,
}

impl KubeStandin {
    /// The handle that registers, cordons and removes nodes and evicts pods. From then on
    /// pods go only to the Node objects it registers (Pending until one takes them).
    pub fn node_api(&self) -> NodeApi {
        self.shared.lock().with_nodes = true;
        NodeApi {
            shared: self.shared.clone(),
        }
    }

    /// Every Node.
    pub fn nodes(&self) -> Vec<Value> {
        self.objects("nodes")
    }

    /// Where pods were bound since the start, oldest first.
    pub fn placements(&self) -> Vec<Placement> {
        self.shared.lock().placements.clone()
    }
}

impl NodeApi {
    /// Registers or replaces Node `node` (as a kubelet does when its instance boots).
    pub fn put_node(&self, node: Value) {
        let Some(name) = str_at(&node, &["metadata", "name"]).map(str::to_string) else {
            return;
        };
        let mut s = self.shared.lock();
        let mut node = node;
        if let Some(old) = s.objects.get(&(NODE, String::new(), name.clone())) {
            for key in ["uid", "creationTimestamp"] {
                if let Some(v) = old.pointer(&format!("/metadata/{key}")).cloned() {
                    node["metadata"][key] = v;
                }
            }
        } else {
            node["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
            node["metadata"]["creationTimestamp"] = json!(super::util::now_ts());
        }
        s.store(NODE, "", &name, node);
        s.tick();
        let rv = s.rv;
        drop(s);
        self.shared.notify(rv);
    }

    /// Removes Node `name` (its instance terminated); its pods go with it.
    pub fn remove_node(&self, name: &str) {
        let mut s = self.shared.lock();
        s.remove(NODE, "", name);
        s.tick();
        let rv = s.rv;
        drop(s);
        self.shared.notify(rv);
    }

    /// The pods bound to node `name`, as `{namespace}/{pod}`.
    pub fn pods_on(&self, name: &str) -> Vec<String> {
        let mut s = self.shared.lock();
        s.tick();
        s.range(POD)
            .filter(|(_, p)| str_at(p, &["spec", "nodeName"]) == Some(name))
            .map(|((_, ns, n), _)| format!("{ns}/{n}"))
            .collect()
    }

    /// Evicts pod `ns/name` (the `pods/eviction` subresource): `Ok` once it is gone (or
    /// was), `Err` with the API server's message when a disruption budget forbids it now.
    pub fn evict(&self, ns: &str, name: &str) -> Result<(), String> {
        let mut s = self.shared.lock();
        s.tick();
        let Some(pod) = s
            .objects
            .get(&(POD, ns.to_string(), name.to_string()))
            .cloned()
        else {
            return Ok(());
        };
        if !s.disruption_allowed(ns, &pod) {
            return Err("Cannot evict pod as it would violate the pod's disruption budget.".into());
        }
        s.delete_pod_object(ns, name);
        s.tick();
        let rv = s.rv;
        drop(s);
        self.shared.notify(rv);
        Ok(())
    }
}
