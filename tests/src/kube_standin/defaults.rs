//! Defaults and server-set fields, per kind.

use base64::Engine as _;
use serde_json::{Value, json};

use super::State;
use super::resources::{NETPOL, NS, PVC, SC, SECRET, SERVICE, STS};
use super::util::{meta_mut, obj_mut, root_mut, str_at};

impl State {
    pub(super) fn defaults(&mut self, r: usize, obj: &mut Value, old: Option<&Value>) {
        let name = str_at(obj, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        match r {
            NS => {
                let labels = obj_mut(meta_mut(obj), "labels");
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
                obj_mut(root_mut(obj), "spec")
                    .entry("finalizers")
                    .or_insert(json!(["kubernetes"]));
                obj_mut(root_mut(obj), "status")
                    .entry("phase")
                    .or_insert(json!("Active"));
            }
            SECRET => {
                let root = root_mut(obj);
                root.entry("type").or_insert(json!("Opaque"));
                if let Some(Value::Object(sd)) = root.remove("stringData") {
                    let data = obj_mut(root, "data");
                    for (k, v) in sd {
                        let text = v
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string());
                        data.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(text)),
                        );
                    }
                }
            }
            SERVICE => {
                let old_ip = old
                    .and_then(|o| str_at(o, &["spec", "clusterIP"]))
                    .map(str::to_string);
                let spec = obj_mut(root_mut(obj), "spec");
                let ty = spec
                    .entry("type")
                    .or_insert(json!("ClusterIP"))
                    .as_str()
                    .unwrap_or("ClusterIP")
                    .to_string();
                if ty != "ExternalName" {
                    let has_ip = spec
                        .get("clusterIP")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty());
                    if !has_ip {
                        let ip = match old_ip {
                            Some(ip) => ip,
                            None => {
                                self.next_service_ip += 1;
                                let n = self.next_service_ip;
                                format!("10.96.{}.{}", (n >> 8) & 255, n & 255)
                            }
                        };
                        spec.insert("clusterIP".into(), json!(ip));
                    }
                    let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
                    spec.insert("clusterIPs".into(), json!([ip]));
                    spec.entry("sessionAffinity").or_insert(json!("None"));
                    spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
                    spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
                    spec.entry("internalTrafficPolicy")
                        .or_insert(json!("Cluster"));
                }
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            p.entry("targetPort").or_insert(port);
                        }
                    }
                }
                obj_mut(root_mut(obj), "status")
                    .entry("loadBalancer")
                    .or_insert(json!({}));
            }
            PVC => {
                let uid = str_at(obj, &["metadata", "uid"])
                    .unwrap_or_default()
                    .to_string();
                let spec = obj_mut(root_mut(obj), "spec");
                spec.entry("volumeMode").or_insert(json!("Filesystem"));
                // A claim naming a StorageClass that does not exist is never provisioned:
                // it stays Pending (kubernetes/kubernetes pkg/controller/volume/persistentvolume
                // pv_controller.go `provisionClaim`: "storageclass.storage.k8s.io ... not
                // found"), and a pod that mounts it is never scheduled.
                let class_name = spec
                    .get("storageClassName")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let provisionable = old.is_some()
                    || class_name.as_ref().is_none_or(|c| {
                        self.objects
                            .contains_key(&(SC, String::new(), c.to_string()))
                    });
                let volume = old
                    .and_then(|o| str_at(o, &["spec", "volumeName"]))
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("pvc-{uid}"));
                if provisionable {
                    spec.entry("volumeName").or_insert(json!(volume));
                }
                let modes = spec.get("accessModes").cloned().unwrap_or(json!([]));
                let storage = spec
                    .get("resources")
                    .and_then(|r| r.get("requests"))
                    .and_then(|r| r.get("storage"))
                    .cloned();
                let class = spec.get("volumeAttributesClassName").cloned();
                let status = match old.and_then(|o| o.get("status")) {
                    None if !provisionable => json!({ "phase": "Pending" }),
                    // Provisioned at the size and class asked for.
                    None => {
                        let mut status = json!({ "phase": "Bound", "accessModes": modes });
                        if let Some(s) = storage {
                            status["capacity"] = json!({ "storage": s });
                        }
                        if let Some(c) = class {
                            status["currentVolumeAttributesClassName"] = c;
                        }
                        status
                    }
                    // A bigger request or another class: the external resizer and the
                    // CSI driver act later (see `State::settle_volume`).
                    Some(old_status) => {
                        let mut status = old_status.clone();
                        let pending =
                            self.volume_changes(&status, storage.as_ref(), class.as_ref());
                        let any = pending.any();
                        if let Some(s) = pending.grow {
                            status["allocatedResources"] = json!({ "storage": s });
                            status["conditions"] = json!([{
                                "type": "FileSystemResizePending",
                                "status": "True",
                                "lastProbeTime": null,
                                "lastTransitionTime": super::util::now_ts(),
                                "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node.",
                            }]);
                        }
                        if let Some(c) = pending.class {
                            status["modifyVolumeStatus"] = json!({
                                "targetVolumeAttributesClassName": c,
                                "status": "InProgress",
                            });
                        }
                        if any {
                            let ns = str_at(&*obj, &["metadata", "namespace"])
                                .unwrap_or_default()
                                .to_string();
                            self.volume_changed(&ns, &name);
                        }
                        status
                    }
                };
                root_mut(obj).insert("status".into(), status);
            }
            STS => {
                let spec = obj_mut(root_mut(obj), "spec");
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("podManagementPolicy")
                    .or_insert(json!("OrderedReady"));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                let strategy = obj_mut(spec, "updateStrategy");
                strategy.entry("type").or_insert(json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    obj_mut(strategy, "rollingUpdate")
                        .entry("partition")
                        .or_insert(json!(0));
                }
                let retention = obj_mut(spec, "persistentVolumeClaimRetentionPolicy");
                retention.entry("whenDeleted").or_insert(json!("Retain"));
                retention.entry("whenScaled").or_insert(json!("Retain"));
            }
            NETPOL => {
                let spec = obj_mut(root_mut(obj), "spec");
                if !spec.contains_key("policyTypes") {
                    let mut types = vec![json!("Ingress")];
                    if spec.contains_key("egress") {
                        types.push(json!("Egress"));
                    }
                    spec.insert("policyTypes".into(), Value::Array(types));
                }
            }
            _ => {}
        }
    }
}
