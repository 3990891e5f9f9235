//! Pods and claims of a StatefulSet: names, revision hashes and the pod objects the
//! controller writes.

use serde_json::{Value, json};

use super::sim::PodSim;
use super::util::{root_mut, str_at};

pub(super) fn pod_name(sts: &str, ord: i64) -> String {
    format!("{sts}-{ord}")
}

pub(super) fn claim_name(template: &str, sts: &str, ord: i64) -> String {
    format!("{template}-{sts}-{ord}")
}

pub(super) fn claim_templates(sts: &Value) -> Vec<String> {
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| str_at(t, &["metadata", "name"]).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True"))
            })
        })
}

pub(super) fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `{sts}-{hash}` of the pod template, as the controller names its revisions (FNV-32a,
/// "safe" encoded).
pub(super) fn revision_name(sts: &str, template: &Value) -> String {
    let mut s = String::new();
    canonical(template, &mut s);
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let encoded: String = h
        .to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect();
    format!("{sts}-{encoded}")
}

pub(super) fn pod_json(sts: &Value, ns: &str, sts_name: &str, ord: i64, p: &PodSim) -> Value {
    let name = pod_name(sts_name, ord);
    let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert("controller-revision-hash".into(), json!(p.revision));
    labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(name));
    labels.insert(
        "apps.kubernetes.io/pod-index".into(),
        json!(ord.to_string()),
    );
    if let Some(z) = &p.zone {
        labels.insert("topology.kubernetes.io/zone".into(), json!(z));
    }
    let mut spec = template
        .get("spec")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or(json!({}));
    {
        let m = root_mut(&mut spec);
        m.insert("hostname".into(), json!(name));
        if let Some(svc) = str_at(sts, &["spec", "serviceName"]).filter(|s| !s.is_empty()) {
            m.insert("subdomain".into(), json!(svc));
        }
        // Bound to a node of its volumes' zone (see `nodes`), whose zone label the pod
        // gets (PodTopologyLabelsAdmission, on by default from Kubernetes 1.35); a
        // Pending pod has no node.
        if let Some(node) = &p.node {
            m.insert("nodeName".into(), json!(node));
        }
        let volumes = m.entry("volumes").or_insert(json!([]));
        if let Some(a) = volumes.as_array_mut() {
            for t in claim_templates(sts) {
                if !a.iter().any(|v| v.get("name") == Some(&json!(t))) {
                    a.push(json!({
                        "name": t,
                        "persistentVolumeClaim": { "claimName": claim_name(&t, sts_name, ord) },
                    }));
                }
            }
        }
    }
    let containers: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c.get("name"),
                        "image": c.get("image"),
                        "imageID": "",
                        "ready": p.ready,
                        "started": true,
                        "restartCount": 0,
                        "state": { "running": { "startedAt": p.created } },
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let ready_since = p.ready_at.clone().unwrap_or_else(|| p.created.clone());
    let cond = |t: &str, ok: bool, since: &str| {
        json!({
            "type": t,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": since,
        })
    };
    let mut meta = json!({
        "name": name,
        "namespace": ns,
        "generateName": format!("{sts_name}-"),
        "uid": p.uid,
        "creationTimestamp": p.created,
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": sts_name,
            "uid": str_at(sts, &["metadata", "uid"]).unwrap_or_default(),
            "controller": true,
            "blockOwnerDeletion": true,
        }],
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        meta["annotations"] = a.clone();
    }
    if p.node.is_none() {
        // What kube-scheduler writes of a pod no node can take.
        let mut unscheduled = cond("PodScheduled", false, &p.created);
        unscheduled["reason"] = json!("Unschedulable");
        unscheduled["message"] =
            json!("0/1 nodes are available: no node in the zone of the pod's volumes takes it.");
        return json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": { "phase": "Pending", "conditions": [unscheduled] },
        });
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [
                cond("PodReadyToStartContainers", true, &p.created),
                cond("Initialized", true, &p.created),
                cond("Ready", p.ready, &ready_since),
                cond("ContainersReady", p.ready, &ready_since),
                cond("PodScheduled", true, &p.created),
            ],
            "hostIP": "10.0.0.1",
            "hostIPs": [{ "ip": "10.0.0.1" }],
            "podIP": p.ip,
            "podIPs": [{ "ip": p.ip }],
            "startTime": p.created,
            "containerStatuses": containers,
        },
    })
}
