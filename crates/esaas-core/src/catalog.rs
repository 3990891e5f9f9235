//! What the platform offers: Elasticsearch versions, size classes and bounds.
//! Loaded from configuration, never hard-coded in the logic.

use serde::{Deserialize, Serialize};

/// The platform's offer, from the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Elasticsearch versions a cluster may run, for example `8.15.3`.
    pub versions: Vec<String>,
    /// Node sizes a node set may use.
    pub size_classes: Vec<SizeClass>,
    /// Smallest volume per node, in GiB.
    pub min_storage_gib: i32,
    /// Largest volume per node, in GiB (gp3 allows 16384).
    pub max_storage_gib: i32,
    /// Most node sets per cluster.
    pub max_node_sets: usize,
    /// Most nodes per node set.
    pub max_nodes_per_set: i32,
    /// Most availability zones a cluster may spread over.
    pub max_zones: i32,
}

/// A node size: what a node set's `size_class` maps to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeClass {
    /// Name used in specs, for example `m-4x32`.
    pub name: String,
    /// EC2 instance type of the node group, for example `r6i.xlarge`.
    pub instance_type: String,
    /// CPU of an Elasticsearch pod, in millicores (requests = limits).
    pub cpu_millis: u32,
    /// Memory of an Elasticsearch pod, in MiB (requests = limits; heap is half, at most 31 GiB).
    pub memory_mib: u32,
}

impl Catalog {
    /// The size class called `name`.
    pub fn size_class(&self, name: &str) -> Option<&SizeClass> {
        self.size_classes.iter().find(|s| s.name == name)
    }

    /// Whether `version` is offered.
    pub fn has_version(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }
}
