//! The store: objects, the global `resourceVersion`, and the events every change leaves for
//! watches.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};

use super::apply::{record_update, set_managed};
use super::resources::{NS, RESOURCES, SC};
use super::sim::Pending;
use super::util::{meta_mut, now_ts};
use super::write::{Op, Scope, WriteOpts};
use super::{EVENT_HISTORY, Event, Key, State};

impl State {
    pub(super) fn new(ready_after: Duration, server_address: String) -> Self {
        let mut s = Self {
            rv: 0,
            objects: BTreeMap::new(),
            sims: BTreeMap::new(),
            orphaned: BTreeMap::new(),
            volume_modified: BTreeMap::new(),
            pending: Pending::default(),
            ready_after,
            requests: VecDeque::new(),
            events: VecDeque::new(),
            compacted_rv: 0,
            next_pod_ip: 0,
            next_service_ip: 10,
            server_address,
            refused_pods: BTreeMap::new(),
            placements: Vec::new(),
            with_nodes: false,
        };
        let opts = WriteOpts {
            manager: "kube-apiserver".into(),
            force: false,
            dry_run: false,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body =
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
            let _ = s.write(NS, None, None, None, Op::Create(body), &opts);
        }
        // The StorageClass `deploy/base/storageclass.yaml` installs, as on the
        // platform's EKS cluster.
        let class = json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": { "name": "esaas-gp3" },
            "provisioner": "ebs.csi.aws.com",
            "parameters": { "type": "gp3", "encrypted": "true", "csi.storage.k8s.io/fstype": "ext4" },
            "allowVolumeExpansion": true,
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        });
        let _ = s.write(SC, None, None, None, Op::Create(class), &opts);
        s
    }

    pub(super) fn range(&self, r: usize) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects
            .range((r, String::new(), String::new())..(r + 1, String::new(), String::new()))
    }

    /// The objects of kind `r` in namespace `ns`, by name.
    pub(super) fn in_namespace<'a>(
        &'a self,
        r: usize,
        ns: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> {
        self.objects
            .range((r, ns.to_string(), String::new())..)
            .take_while(move |((kr, kns, _), _)| *kr == r && kns == ns)
    }

    pub(super) fn names(&self, r: usize) -> Vec<(String, String)> {
        self.range(r)
            .map(|((_, ns, n), _)| (ns.clone(), n.clone()))
            .collect()
    }

    pub(super) fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&(NS, String::new(), ns.to_string()))
    }

    pub(super) fn store(&mut self, r: usize, ns: &str, name: &str, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let old = self
            .objects
            .insert((r, ns.to_string(), name.to_string()), obj.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.emit(r, ns, kind, obj.clone(), old);
        self.pending.changed(r, ns, name);
        obj
    }

    pub(super) fn remove(&mut self, r: usize, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(r, ns.to_string(), name.to_string()))?;
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.emit(r, ns, "DELETED", obj.clone(), None);
        self.pending.changed(r, ns, name);
        Some(obj)
    }

    pub(super) fn emit(
        &mut self,
        r: usize,
        ns: &str,
        kind: &'static str,
        obj: Value,
        old: Option<Value>,
    ) {
        self.events.push_back(Event {
            rv: self.rv,
            r,
            ns: ns.to_string(),
            kind,
            obj,
            old,
        });
        while self.events.len() > EVENT_HISTORY {
            if let Some(e) = self.events.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
    }

    pub(super) fn set_status(&mut self, r: usize, ns: &str, name: &str, status: Value) {
        let Some(obj) = self.objects.get(&(r, ns.to_string(), name.to_string())) else {
            return;
        };
        if obj.get("status") == Some(&status) {
            return;
        }
        let mut obj = obj.clone();
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), status);
        }
        self.store(r, ns, name, obj);
    }

    /// Creates an object on behalf of a controller (manager `kube-controller-manager`).
    pub(super) fn controller_create(&mut self, r: usize, ns: &str, name: &str, mut obj: Value) {
        let res = &RESOURCES[r];
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            m.insert("namespace".into(), json!(ns));
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_ts()));
        }
        self.defaults(r, &mut obj, None);
        let mut entries = Vec::new();
        record_update(
            &mut entries,
            "kube-controller-manager",
            None,
            &res.api_version(),
            None,
            &obj,
            if res.status { Scope::Main } else { Scope::All },
        );
        set_managed(&mut obj, &entries);
        self.store(r, ns, name, obj);
    }
}
