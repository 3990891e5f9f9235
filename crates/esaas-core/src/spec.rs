//! The cluster spec (what a tenant asks for) and its validation.

use std::collections::HashSet;

use chrono::{DateTime, NaiveTime, TimeDelta, Timelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{Result, Violations, shown};
use crate::names::NodeSetName;
use crate::snapshots::SnapshotPolicy;

/// gp3 baseline IOPS, included in the price of the volume.
pub const GP3_BASELINE_IOPS: i32 = 3000;
/// gp3 maximum IOPS.
pub const GP3_MAX_IOPS: i32 = 16000;
/// gp3 baseline throughput, MiB/s.
pub const GP3_BASELINE_THROUGHPUT: i32 = 125;
/// gp3 maximum throughput, MiB/s.
pub const GP3_MAX_THROUGHPUT: i32 = 1000;
/// gp3 provisioned IOPS per GiB of volume, at most.
pub const GP3_MAX_IOPS_PER_GIB: i32 = 500;
/// gp3 provisioned IOPS per MiB/s of throughput, at least (0.25 MiB/s per IOPS).
pub const GP3_MIN_IOPS_PER_MIBPS: i32 = 4;

/// The desired shape of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Elasticsearch version.
    pub version: String,
    /// Node sets, in the order given.
    pub node_sets: Vec<NodeSet>,
    /// Availability zones to spread over (1..=catalog max).
    pub zone_count: i32,
    /// The zones the platform placed the cluster in, chosen once at creation
    /// ([`crate::placement::choose_zones`]) and never changed: its volumes
    /// live there. Empty in a request; empty too for a cluster recorded
    /// before zones were, which [`crate::placement::cluster_zones`] handles.
    #[serde(default)]
    pub zones: Vec<String>,
    /// What happens to volumes on delete.
    pub volume_retention: VolumeRetention,
    /// While set, `DeleteCluster` is refused ([`crate::lifecycle::delete`]).
    /// A guard on the API, not a shape of the cluster: changing only this
    /// needs no operation ([`ClusterSpec::same_workload`]).
    #[serde(default)]
    pub deletion_protection: bool,
    /// When the platform may start its own planned work (certificate
    /// rotation, non-urgent repairs); `None`: the platform's default window.
    #[serde(default)]
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Periods in which the platform starts no planned work.
    #[serde(default)]
    pub change_freezes: Vec<ChangeFreeze>,
    /// When scheduled snapshots are taken and how many are kept; `None`:
    /// the platform default ([`SnapshotPolicy::DEFAULT`]). Like the window,
    /// it says when the platform acts, so changing it needs no operation.
    #[serde(default)]
    pub snapshot_policy: Option<SnapshotPolicy>,
}

/// A group of identical nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSet {
    /// Name within the cluster.
    pub name: String,
    /// Elasticsearch roles.
    pub roles: Vec<NodeRole>,
    /// Number of nodes.
    pub count: i32,
    /// Size class name.
    pub size_class: String,
    /// Volume per node, GiB.
    pub storage_gib: i32,
    /// Provisioned IOPS per volume (0 before defaults are applied).
    pub storage_iops: i32,
    /// Provisioned throughput per volume, MiB/s (0 before defaults are applied).
    pub storage_throughput_mibps: i32,
}

/// An Elasticsearch node role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Master-eligible.
    Master,
    /// Data.
    Data,
    /// Ingest.
    Ingest,
    /// Machine learning.
    Ml,
    /// Transforms.
    Transform,
}

impl NodeRole {
    /// The role as `elasticsearch.yml` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Data => "data",
            NodeRole::Ingest => "ingest",
            NodeRole::Ml => "ml",
            NodeRole::Transform => "transform",
        }
    }
}

/// What happens to volumes on delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeRetention {
    /// Deleted with the cluster.
    #[default]
    Delete,
    /// Kept.
    Retain,
}

/// An Elasticsearch version, for ordering upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `major.minor.patch`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version(it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(v)
    }
}

/// A weekly window, in UTC, in which the platform may start its planned work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    /// The day the window starts.
    pub day: Weekday,
    /// When it starts on that day, UTC.
    pub start: NaiveTime,
    /// How long it lasts ([`MIN_WINDOW`] to [`MAX_WINDOW`]); it may run into the next day.
    pub duration: TimeDelta,
}

/// A period `[start, end)` in which the platform starts no planned work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeFreeze {
    /// When it begins.
    pub start: DateTime<Utc>,
    /// When it ends (excluded).
    pub end: DateTime<Utc>,
    /// Why, for people (may be empty).
    #[serde(default)]
    pub reason: String,
}

/// The shortest maintenance window.
pub const MIN_WINDOW: TimeDelta = TimeDelta::hours(1);
/// The longest maintenance window.
pub const MAX_WINDOW: TimeDelta = TimeDelta::hours(24);
/// The most change freezes a cluster may have.
pub const MAX_FREEZES: usize = 10;
/// The longest change freeze.
pub const MAX_FREEZE: TimeDelta = TimeDelta::days(30);
/// The longest reason of a change freeze, in characters.
pub const MAX_FREEZE_REASON: usize = 200;

impl MaintenanceWindow {
    /// Checks the bounds; `p` is the window's path in the request.
    fn validate(&self, p: &str, v: &mut Violations) {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&self.duration) {
            v.add(
                format!("{p}.duration"),
                format!(
                    "must be between 1 and 24 hours, got {} s",
                    self.duration.num_seconds()
                ),
            );
        }
        if self.start.nanosecond() != 0 {
            v.add(format!("{p}.start_time"), "must be whole seconds");
        }
    }
}

impl ChangeFreeze {
    /// Whether `t` lies inside the freeze.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// Checks a list of change freezes; `p` is its path in the request. Past
/// freezes are allowed (they no longer hold anything back).
fn validate_freezes(freezes: &[ChangeFreeze], p: &str, v: &mut Violations) {
    if freezes.len() > MAX_FREEZES {
        v.add(
            p,
            format!(
                "at most {MAX_FREEZES} freezes are allowed, got {}",
                freezes.len()
            ),
        );
        return;
    }
    for (i, f) in freezes.iter().enumerate() {
        if f.end <= f.start {
            v.add(format!("{p}[{i}].end_time"), "must be after start_time");
        } else if f.end - f.start > MAX_FREEZE {
            v.add(
                format!("{p}[{i}].end_time"),
                format!(
                    "a freeze lasts at most 30 days, this one {} days",
                    (f.end - f.start).num_days()
                ),
            );
        }
        if f.reason.chars().count() > MAX_FREEZE_REASON {
            v.add(
                format!("{p}[{i}].reason"),
                format!("at most {MAX_FREEZE_REASON} characters"),
            );
        }
    }
}

impl ClusterSpec {
    /// Fills the defaults the API allows a caller to leave out (zone count,
    /// gp3 baselines), so that stored specs are explicit.
    pub fn with_defaults(mut self) -> Self {
        if self.zone_count == 0 {
            self.zone_count = 1;
        }
        for ns in &mut self.node_sets {
            if ns.storage_iops == 0 {
                ns.storage_iops = GP3_BASELINE_IOPS;
            }
            if ns.storage_throughput_mibps == 0 {
                ns.storage_throughput_mibps = GP3_BASELINE_THROUGHPUT;
            }
            ns.roles.sort();
            ns.roles.dedup();
        }
        self
    }

    /// Whether `other` asks for the same cluster as this spec, whatever its
    /// maintenance window, change freezes and deletion protection (which say
    /// when the platform may act, and whether a delete is refused): a change
    /// of only those needs no operation and no new generation.
    pub fn same_workload(&self, other: &ClusterSpec) -> bool {
        let bare = |s: &ClusterSpec| ClusterSpec {
            maintenance_window: None,
            change_freezes: Vec::new(),
            deletion_protection: false,
            snapshot_policy: None,
            ..s.clone()
        };
        bare(self) == bare(other)
    }

    /// Total nodes.
    pub fn node_count(&self) -> i64 {
        self.node_sets
            .iter()
            .map(|n| i64::from(n.count.max(0)))
            .sum()
    }

    /// Total storage, GiB.
    pub fn storage_gib(&self) -> i64 {
        self.node_sets
            .iter()
            .map(|n| i64::from(n.count.max(0)) * i64::from(n.storage_gib.max(0)))
            .sum()
    }

    /// Checks the spec (after `with_defaults`) against the catalog. `prefix` is
    /// the path of the spec in the request, for example `cluster.spec`.
    pub fn validate(&self, catalog: &Catalog, prefix: &str) -> Result<()> {
        let mut v = Violations::default();
        if self.version.is_empty() {
            v.add(format!("{prefix}.version"), "is required");
        } else if !catalog.has_version(&self.version) {
            v.add(
                format!("{prefix}.version"),
                format!(
                    "{} is not offered; offered versions: {}",
                    shown(&self.version),
                    catalog.versions.join(", ")
                ),
            );
        }
        if !(1..=catalog.max_zones).contains(&self.zone_count) {
            v.add(
                format!("{prefix}.zone_count"),
                format!(
                    "must be between 1 and {}, got {}",
                    catalog.max_zones, self.zone_count
                ),
            );
        }
        if self.node_sets.is_empty() {
            v.add(
                format!("{prefix}.node_sets"),
                "at least one node set is required",
            );
        } else if self.node_sets.len() > catalog.max_node_sets {
            v.add(
                format!("{prefix}.node_sets"),
                format!(
                    "at most {} node sets are allowed, got {}",
                    catalog.max_node_sets,
                    self.node_sets.len()
                ),
            );
        }
        let mut seen = HashSet::new();
        for (i, ns) in self.node_sets.iter().enumerate() {
            let p = format!("{prefix}.node_sets[{i}]");
            if v.absorb(NodeSetName::parse(&format!("{p}.name"), &ns.name))?
                .is_some()
                && !seen.insert(ns.name.as_str())
            {
                v.add(
                    format!("{p}.name"),
                    format!("{} is used by another node set", shown(&ns.name)),
                );
            }
            ns.validate(catalog, &p, &mut v);
        }
        if !self.node_sets.is_empty()
            && !self
                .node_sets
                .iter()
                .any(|n| n.roles.contains(&NodeRole::Master) && n.count > 0)
        {
            v.add(
                format!("{prefix}.node_sets"),
                "at least one node set must have the master role",
            );
        }
        if let Some(w) = &self.maintenance_window {
            w.validate(&format!("{prefix}.maintenance_window"), &mut v);
        }
        validate_freezes(
            &self.change_freezes,
            &format!("{prefix}.change_freezes"),
            &mut v,
        );
        if let Some(p) = &self.snapshot_policy {
            v.absorb(p.validate(&format!("{prefix}.snapshot_policy")))?;
        }
        v.finish()
    }
}

impl NodeSet {
    /// Whether its nodes are master-eligible.
    pub fn is_master_eligible(&self) -> bool {
        self.roles.contains(&NodeRole::Master)
    }

    /// The VolumeAttributesClass of its volumes: one per gp3 profile (IOPS
    /// and throughput), shared by every cluster that asks for that profile.
    /// A class's parameters are immutable, so a new profile is a new class.
    pub fn attributes_class(&self) -> String {
        format!(
            "esaas-gp3-{}iops-{}mibps",
            self.storage_iops, self.storage_throughput_mibps
        )
    }

    fn validate(&self, catalog: &Catalog, p: &str, v: &mut Violations) {
        if self.roles.is_empty() {
            v.add(format!("{p}.roles"), "at least one role is required");
        }
        if !(1..=catalog.max_nodes_per_set).contains(&self.count) {
            v.add(
                format!("{p}.count"),
                format!(
                    "must be between 1 and {}, got {}",
                    catalog.max_nodes_per_set, self.count
                ),
            );
        }
        if self.size_class.is_empty() {
            v.add(format!("{p}.size_class"), "is required");
        } else if catalog.size_class(&self.size_class).is_none() {
            let offered: Vec<&str> = catalog
                .size_classes
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            v.add(
                format!("{p}.size_class"),
                format!(
                    "{} is not offered; offered size classes: {}",
                    shown(&self.size_class),
                    offered.join(", ")
                ),
            );
        }
        if !(catalog.min_storage_gib..=catalog.max_storage_gib).contains(&self.storage_gib) {
            v.add(
                format!("{p}.storage_gib"),
                format!(
                    "must be between {} and {} GiB, got {}",
                    catalog.min_storage_gib, catalog.max_storage_gib, self.storage_gib
                ),
            );
        }
        if !(GP3_BASELINE_IOPS..=GP3_MAX_IOPS).contains(&self.storage_iops) {
            v.add(
                format!("{p}.storage_iops"),
                format!(
                    "must be 0 (baseline) or between {GP3_BASELINE_IOPS} and {GP3_MAX_IOPS}, got {}",
                    self.storage_iops
                ),
            );
        } else if i64::from(self.storage_iops)
            > i64::from(GP3_MAX_IOPS_PER_GIB) * i64::from(self.storage_gib.max(1))
            && self.storage_iops > GP3_BASELINE_IOPS
        {
            v.add(
                format!("{p}.storage_iops"),
                format!(
                    "gp3 allows at most {GP3_MAX_IOPS_PER_GIB} IOPS per GiB: {} GiB allows {}",
                    self.storage_gib,
                    i64::from(GP3_MAX_IOPS_PER_GIB) * i64::from(self.storage_gib.max(1))
                ),
            );
        }
        if !(GP3_BASELINE_THROUGHPUT..=GP3_MAX_THROUGHPUT).contains(&self.storage_throughput_mibps)
        {
            v.add(
                format!("{p}.storage_throughput_mibps"),
                format!(
                    "must be 0 (baseline) or between {GP3_BASELINE_THROUGHPUT} and {GP3_MAX_THROUGHPUT}, got {}",
                    self.storage_throughput_mibps
                ),
            );
        } else if self.storage_throughput_mibps > GP3_BASELINE_THROUGHPUT
            && self.storage_throughput_mibps * GP3_MIN_IOPS_PER_MIBPS > self.storage_iops
        {
            v.add(
                format!("{p}.storage_throughput_mibps"),
                format!(
                    "gp3 allows at most 0.25 MiB/s per IOPS: {} IOPS allow {} MiB/s",
                    self.storage_iops,
                    self.storage_iops / GP3_MIN_IOPS_PER_MIBPS
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::InvalidArgument(v) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("not invalid argument: {other:?}"),
        }
    }

    #[test]
    fn a_good_spec_passes() {
        ClusterSpec::test().validate(&Catalog::test(), "s").unwrap();
        ClusterSpec::test()
            .with_nodes(50)
            .validate(&Catalog::test(), "s")
            .unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let c = Catalog::test();
        let cases: Vec<(ClusterSpec, &str)> = vec![
            (ClusterSpec::test().with_version(""), "s.version"),
            (ClusterSpec::test().with_version("7.0.0"), "s.version"),
            (ClusterSpec::test().with_nodes(0), "s.node_sets[0].count"),
            (ClusterSpec::test().with_nodes(-3), "s.node_sets[0].count"),
            (ClusterSpec::test().with_nodes(51), "s.node_sets[0].count"),
            (
                ClusterSpec {
                    zone_count: 4,
                    ..ClusterSpec::test()
                },
                "s.zone_count",
            ),
            (
                ClusterSpec {
                    node_sets: vec![],
                    ..ClusterSpec::test()
                },
                "s.node_sets",
            ),
        ];
        for (spec, field) in cases {
            let got = fields(spec.validate(&c, "s").unwrap_err());
            assert!(got.iter().any(|f| f == field), "{field} not in {got:?}");
        }
    }

    #[test]
    fn node_set_rules() {
        let c = Catalog::test();
        let mut s = ClusterSpec::test();
        s.node_sets[0].size_class = "huge".into();
        s.node_sets[0].storage_gib = 5;
        s.node_sets[0].name = "Bad_Name".into();
        let got = fields(s.validate(&c, "s").unwrap_err());
        assert!(got.contains(&"s.node_sets[0].size_class".to_string()));
        assert!(got.contains(&"s.node_sets[0].storage_gib".to_string()));
        assert!(got.contains(&"s.node_sets[0].name".to_string()));

        let mut s = ClusterSpec::test();
        s.node_sets[0].roles = vec![NodeRole::Data];
        assert_eq!(
            fields(s.validate(&c, "s").unwrap_err()),
            vec!["s.node_sets"]
        );

        let mut s = ClusterSpec::test();
        s.node_sets.push(NodeSet::test("default"));
        assert_eq!(
            fields(s.validate(&c, "s").unwrap_err()),
            vec!["s.node_sets[1].name"]
        );

        let mut s = ClusterSpec::test();
        s.node_sets[0].storage_gib = 10;
        s.node_sets[0].storage_iops = 6000; // > 500 per GiB
        assert_eq!(
            fields(s.validate(&c, "s").unwrap_err()),
            vec!["s.node_sets[0].storage_iops"]
        );

        let mut s = ClusterSpec::test();
        s.node_sets[0].storage_throughput_mibps = 1000; // needs 4000 IOPS
        assert_eq!(
            fields(s.validate(&c, "s").unwrap_err()),
            vec!["s.node_sets[0].storage_throughput_mibps"]
        );
    }

    #[test]
    fn maintenance_bounds_are_field_violations() {
        let c = Catalog::test();
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        let window = |secs| MaintenanceWindow {
            day: Weekday::Sat,
            start: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            duration: TimeDelta::seconds(secs),
        };
        let freeze = |a, b| ChangeFreeze {
            start: t(a),
            end: t(b),
            reason: String::new(),
        };
        let day = 86_400;
        let cases: Vec<(Option<MaintenanceWindow>, Vec<ChangeFreeze>, Vec<&str>)> = vec![
            (Some(window(3600)), vec![freeze(0, 30 * day)], vec![]),
            (Some(window(24 * 3600)), vec![], vec![]),
            (
                Some(window(3599)),
                vec![],
                vec!["s.maintenance_window.duration"],
            ),
            (
                Some(window(24 * 3600 + 1)),
                vec![],
                vec!["s.maintenance_window.duration"],
            ),
            (
                None,
                vec![freeze(10, 10)],
                vec!["s.change_freezes[0].end_time"],
            ),
            (
                None,
                vec![freeze(0, 30 * day + 1)],
                vec!["s.change_freezes[0].end_time"],
            ),
            (None, vec![freeze(0, 1); 11], vec!["s.change_freezes"]),
        ];
        for (w, f, want) in cases {
            let spec = ClusterSpec {
                maintenance_window: w,
                change_freezes: f.clone(),
                ..ClusterSpec::test()
            };
            let got = match spec.validate(&c, "s") {
                Ok(()) => vec![],
                Err(e) => fields(e),
            };
            assert_eq!(got, want, "{w:?} {f:?}");
        }
    }

    #[test]
    fn defaults_are_explicit() {
        let mut s = ClusterSpec::test();
        s.zone_count = 0;
        s.node_sets[0].storage_iops = 0;
        s.node_sets[0].roles = vec![NodeRole::Data, NodeRole::Master, NodeRole::Data];
        let s = s.with_defaults();
        assert_eq!(s.zone_count, 1);
        assert_eq!(s.node_sets[0].storage_iops, GP3_BASELINE_IOPS);
        assert_eq!(s.node_sets[0].roles, vec![NodeRole::Master, NodeRole::Data]);
    }

    #[test]
    fn versions_order() {
        assert!(Version::parse("8.15.3").unwrap() < Version::parse("8.17.0").unwrap());
        assert!(Version::parse("9.0.0").unwrap() > Version::parse("8.99.99").unwrap());
        assert!(Version::parse("8.15").is_none());
        assert!(Version::parse("8.15.3.1").is_none());
    }
}
