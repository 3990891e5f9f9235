//! The kinds the stand-in serves: group, version, names, scope and subresources.

pub(super) struct Resource {
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) plural: &'static str,
    pub(super) singular: &'static str,
    pub(super) kind: &'static str,
    pub(super) namespaced: bool,
    /// Has a `status` subresource: the main endpoint ignores `status`, `/status` the rest.
    pub(super) status: bool,
    /// `metadata.generation` moves with `spec`.
    pub(super) generation: bool,
    /// Clients may create, update and patch it (pods are the StatefulSet controller's).
    pub(super) writable: bool,
    pub(super) short: &'static [&'static str],
}

pub(super) const NS: usize = 0;
pub(super) const SECRET: usize = 1;
pub(super) const CONFIGMAP: usize = 2;
pub(super) const SERVICE: usize = 3;
pub(super) const PVC: usize = 4;
pub(super) const POD: usize = 5;
pub(super) const STS: usize = 6;
pub(super) const PDB: usize = 7;
pub(super) const NETPOL: usize = 8;
pub(super) const SC: usize = 9;
pub(super) const VAC: usize = 10;
pub(super) const SA: usize = 11;
pub(super) const NODE: usize = 12;

pub(super) static RESOURCES: [Resource; 13] = [
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        status: true,
        generation: false,
        writable: true,
        short: &["ns"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        status: false,
        generation: false,
        writable: true,
        short: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        status: false,
        generation: false,
        writable: true,
        short: &["cm"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        status: true,
        generation: false,
        writable: true,
        short: &["svc"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        status: true,
        generation: false,
        writable: true,
        short: &["pvc"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        status: true,
        generation: false,
        writable: false,
        short: &["po"],
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
        status: true,
        generation: true,
        writable: true,
        short: &["sts"],
    },
    Resource {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        status: true,
        generation: true,
        writable: true,
        short: &["pdb"],
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        status: false,
        generation: true,
        writable: true,
        short: &["netpol"],
    },
    Resource {
        group: "storage.k8s.io",
        version: "v1",
        plural: "storageclasses",
        singular: "storageclass",
        kind: "StorageClass",
        namespaced: false,
        status: false,
        generation: false,
        writable: true,
        short: &["sc"],
    },
    Resource {
        group: "storage.k8s.io",
        version: "v1",
        plural: "volumeattributesclasses",
        singular: "volumeattributesclass",
        kind: "VolumeAttributesClass",
        namespaced: false,
        status: false,
        generation: false,
        writable: true,
        short: &["vac"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        status: false,
        generation: false,
        writable: true,
        short: &["sa"],
    },
    // Registered by the EKS node stand-in for each instance; clients cordon them (a patch
    // of `spec.unschedulable`).
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        status: true,
        generation: false,
        writable: true,
        short: &["no"],
    },
];

impl Resource {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `statefulsets.apps`, `secrets`: how NotFound, AlreadyExists and Conflict name it.
    pub(super) fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `StatefulSet.apps`, `Secret`: how Invalid names it.
    pub(super) fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub(super) fn verbs(&self) -> Vec<&'static str> {
        let mut v = vec!["delete"];
        if self.plural != "namespaces" {
            v.push("deletecollection");
        }
        v.extend(["get", "list", "watch"]);
        if self.writable {
            v.extend(["create", "patch", "update"]);
        }
        v.sort_unstable();
        v
    }
}

pub(super) fn resource_by_name(name: &str) -> Option<usize> {
    let n = name.to_ascii_lowercase();
    RESOURCES.iter().position(|r| {
        r.kind.eq_ignore_ascii_case(&n)
            || r.plural == n
            || r.singular == n
            || r.short.contains(&n.as_str())
    })
}
