//! What the platform offers: Elasticsearch versions, size classes and bounds.
//! Loaded from configuration, never hard-coded in the logic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::spec::Version;

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
    /// The availability zones the platform offers (`us-east-1a`, ...), at
    /// least `max_zones` of them; a new cluster gets `zone_count` of them.
    #[serde(default)]
    pub zones: Vec<String>,
    /// The rolling upgrades Elasticsearch supports, by minor version
    /// (`"8.15" = ["8.19"]`): a cluster may go from any patch of a listed minor
    /// to any offered version of a minor it lists, in one operation. A newer
    /// patch of the same minor is always allowed. Anything else takes several
    /// operations, along a path the refusal names.
    #[serde(default)]
    pub upgrades: BTreeMap<String, Vec<String>>,
}

/// `major.minor` of a version, as the upgrade table names it.
pub fn minor_of(v: Version) -> String {
    format!("{}.{}", v.0, v.1)
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

    /// Whether one operation may take a cluster from `from` to `to` (a later version).
    pub fn allows_upgrade(&self, from: Version, to: Version) -> bool {
        (from.0, from.1) == (to.0, to.1)
            || self
                .upgrades
                .get(&minor_of(from))
                .is_some_and(|next| next.contains(&minor_of(to)))
    }

    /// The minors a cluster at `from` passes through to reach `to`, the
    /// shortest way through the upgrade table (each step one operation),
    /// ending with `to`'s minor; `None` when the table has no way.
    pub fn upgrade_path(&self, from: Version, to: Version) -> Option<Vec<String>> {
        let (start, goal) = (minor_of(from), minor_of(to));
        let mut came_from: BTreeMap<String, String> = BTreeMap::new();
        let mut seen = BTreeSet::from([start.clone()]);
        let mut queue = VecDeque::from([start.clone()]);
        while let Some(minor) = queue.pop_front() {
            if minor == goal {
                let mut path = vec![goal.clone()];
                let mut at = &goal;
                while let Some(prev) = came_from.get(at) {
                    if *prev == start {
                        break;
                    }
                    path.push(prev.clone());
                    at = prev;
                }
                path.reverse();
                return Some(path);
            }
            for next in self.upgrades.get(&minor).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    came_from.insert(next.clone(), minor.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        None
    }

    /// The newest offered version of `minor`.
    pub fn newest_of_minor(&self, minor: &str) -> Option<&str> {
        self.versions
            .iter()
            .filter_map(|v| Version::parse(v).map(|p| (p, v.as_str())))
            .filter(|(p, _)| minor_of(*p) == minor)
            .max()
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn upgrade_table() {
        let c = Catalog::test();
        // (from, to, allowed in one operation, the path of minors)
        let cases: &[(&str, &str, bool, Option<&[&str]>)] = &[
            ("8.15.3", "8.15.9", true, Some(&["8.15"])),
            ("8.15.3", "8.17.1", true, Some(&["8.17"])),
            ("8.17.1", "9.1.0", false, Some(&["8.19", "9.1"])),
            ("8.15.3", "9.1.0", false, Some(&["8.19", "9.1"])),
            ("8.19.2", "9.1.0", true, Some(&["9.1"])),
            ("9.1.0", "9.2.0", false, None),
        ];
        for (from, to, one, path) in cases {
            assert_eq!(c.allows_upgrade(v(from), v(to)), *one, "{from} -> {to}");
            let got = c.upgrade_path(v(from), v(to));
            let want = path.map(|p| p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{from} -> {to}");
        }
        assert_eq!(c.newest_of_minor("8.19"), Some("8.19.3"));
        assert_eq!(c.newest_of_minor("7.17"), None);
    }
}
