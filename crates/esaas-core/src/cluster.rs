//! A cluster as the platform records it: spec, status, generations, and how
//! disruptive a change to the spec would be.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::error::{Error, Result, Violations};
use crate::names::{ClusterId, ClusterName, TenantId};
use crate::spec::{ClusterSpec, Version};

text_enum!(
    /// Lifecycle state of a cluster.
    ClusterState {
        /// Being created.
        Provisioning = "PROVISIONING",
        /// Running at its observed generation.
        Ready = "READY",
        /// A change is queued or being applied.
        Updating = "UPDATING",
        /// Running, but not healthy.
        Degraded = "DEGRADED",
        /// Retries exhausted.
        Failed = "FAILED",
        /// Being deleted.
        Deleting = "DELETING",
        /// Deleted (tombstone).
        Deleted = "DELETED",
    }
);

text_enum!(
    /// Elasticsearch health.
    Health {
        /// Not known.
        Unknown = "UNKNOWN",
        /// Every shard is allocated.
        Green = "GREEN",
        /// Every primary is allocated, some replica is not.
        Yellow = "YELLOW",
        /// Some primary is not allocated: data is unavailable.
        Red = "RED",
    }
);

text_enum!(
    /// Whether a condition holds.
    ConditionStatus {
        /// Holds.
        True = "TRUE",
        /// Does not hold.
        False = "FALSE",
        /// Not known.
        Unknown = "UNKNOWN",
    }
);

text_enum!(
    /// What a condition is about (Kubernetes-style type names).
    ConditionType {
        /// The latest spec generation is applied and the cluster serves.
        Ready = "Ready",
        /// An operation waits for a worker.
        OperationQueued = "OperationQueued",
        /// An operation's gate did not open in time.
        Stalled = "Stalled",
        /// Every node set's EKS node groups exist, are active and have the spec's size.
        NodeGroupsHealthy = "NodeGroupsHealthy",
        /// The Kubernetes objects the spec implies exist and are as applied.
        ObjectsInSync = "ObjectsInSync",
        /// Every pod the spec implies is ready.
        PodsReady = "PodsReady",
        /// Elasticsearch answers and is green.
        ElasticsearchHealthy = "ElasticsearchHealthy",
        /// The platform repairs drift by itself (False: paused by an admin, or backing off).
        AutoRepair = "AutoRepair",
        /// The node certificates are valid beyond the renewal window.
        CertificatesValid = "CertificatesValid",
        /// Every node's disk is below Elasticsearch's low watermark.
        DiskOk = "DiskOk",
        /// The cluster's snapshots reach the platform's bucket: its repository
        /// is registered and the newest snapshot succeeded.
        SnapshotsOk = "SnapshotsOk",
    }
);

text_enum!(
    /// Why a condition has its status (Kubernetes-style reason names).
    ConditionReason {
        /// The operation carrying the spec succeeded.
        Applied = "Applied",
        /// The operation carrying the spec failed for good.
        OperationFailed = "OperationFailed",
        /// The operation carrying the spec was cancelled before it finished.
        OperationCancelled = "OperationCancelled",
        /// The cluster was deleted.
        Deleted = "Deleted",
        /// Queued, no worker has it yet.
        WaitingForWorker = "WaitingForWorker",
        /// A gate stayed closed past its timeout.
        GateTimedOut = "GateTimedOut",
        /// Observed as the spec asks.
        AsExpected = "AsExpected",
        /// A node group of a node set does not exist.
        NodeGroupMissing = "NodeGroupMissing",
        /// A node group has another size than the spec asks for.
        NodeGroupResized = "NodeGroupResized",
        /// A node group is failed or degraded (EKS's health issues in the message).
        NodeGroupDegraded = "NodeGroupDegraded",
        /// A node group is being created, updated or deleted outside an operation.
        NodeGroupChanging = "NodeGroupChanging",
        /// A Kubernetes object the spec implies does not exist.
        ObjectMissing = "ObjectMissing",
        /// A Kubernetes object differs from what the platform applied.
        ObjectChanged = "ObjectChanged",
        /// A StatefulSet has another replica count than the spec asks for.
        ReplicasChanged = "ReplicasChanged",
        /// Some pods are not ready.
        PodsNotReady = "PodsNotReady",
        /// Elasticsearch is yellow: some replica is unassigned.
        Yellow = "Yellow",
        /// Elasticsearch is red: some primary is unassigned.
        Red = "Red",
        /// Elasticsearch does not answer.
        Unreachable = "Unreachable",
        /// The worker could not observe this part (the message says why).
        ObservationFailed = "ObservationFailed",
        /// Automatic repair is on.
        Enabled = "Enabled",
        /// A platform admin paused automatic repair for this cluster.
        Paused = "Paused",
        /// Repairs kept being undone: the next waits.
        BackingOff = "BackingOff",
        /// The last automatic repair failed.
        RepairFailed = "RepairFailed",
        /// The node certificates expire within the renewal window.
        ExpiringSoon = "ExpiringSoon",
        /// The node certificates have expired.
        Expired = "Expired",
        /// A node's disk is past the low watermark (85 %): no new shards go there.
        LowWatermark = "LowWatermark",
        /// A node's disk is past the high watermark (90 %): shards move away.
        HighWatermark = "HighWatermark",
        /// A node's disk is past the flood stage (95 %): its indices are read-only.
        FloodStage = "FloodStage",
        /// The snapshot repository is registered and the newest snapshot succeeded.
        SnapshotSucceeded = "SnapshotSucceeded",
        /// The snapshot repository could not be registered (the bucket refused it).
        RepositoryUnavailable = "RepositoryUnavailable",
        /// The newest snapshot failed.
        SnapshotFailed = "SnapshotFailed",
    }
);

/// One aspect of a cluster's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// What it is about.
    pub kind: ConditionType,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Why it has this status.
    pub reason: ConditionReason,
    /// Human-readable message.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
}

/// Sets `condition` in `conditions`, keeping the transition time when the status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.kind == condition.kind) {
        Some(existing) => {
            let time = if existing.status == condition.status {
                existing.last_transition_time
            } else {
                condition.last_transition_time
            };
            *existing = Condition {
                last_transition_time: time,
                ..condition
            };
        }
        None => conditions.push(condition),
    }
}

/// A cluster as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Unique id of this incarnation of the name.
    pub uid: Uuid,
    /// The tenant that owns it.
    pub tenant: TenantId,
    /// Its id within the tenant.
    pub cluster_id: ClusterId,
    /// What the tenant asked for, at `generation`.
    pub spec: ClusterSpec,
    /// Increases with every change of the spec.
    pub generation: i64,
    /// Generation last acted on completely.
    pub observed_generation: i64,
    /// Where it is in its lifecycle.
    pub state: ClusterState,
    /// Elasticsearch's health when last seen.
    pub health: Health,
    /// The HTTPS endpoint for clients, once it exists.
    pub endpoint: Option<String>,
    /// Each aspect of the status, with its last transition.
    pub conditions: Vec<Condition>,
    /// One line on where it is, for people.
    pub message: String,
    /// The operation acting on the cluster now.
    pub current_operation: Option<Uuid>,
    /// Increases on every change of the record; the etag derives from it.
    pub version: i64,
    /// Revision of the newest event.
    pub revision: i64,
    /// When it was created.
    pub create_time: DateTime<Utc>,
    /// When the record last changed.
    pub update_time: DateTime<Utc>,
    /// When its deletion was requested.
    pub delete_time: Option<DateTime<Utc>>,
    /// When a change of its volumes (size, IOPS, throughput) was last
    /// accepted: EBS takes the next one six hours later ([`storage_cooldown`]).
    #[serde(default)]
    pub storage_change_time: Option<DateTime<Utc>>,
    /// After a delete that retains volumes: the claims kept (`{namespace}/{claim}`).
    #[serde(default)]
    pub retained_volumes: Vec<String>,
    /// When the node certificate expires, as last seen (a rotation renews it
    /// well before).
    #[serde(default)]
    pub certificate_expire_time: Option<DateTime<Utc>>,
    /// The last snapshot that succeeded, the last failure, and a
    /// tombstone's final snapshot.
    #[serde(default)]
    pub snapshots: crate::snapshots::SnapshotStatus,
}

impl Cluster {
    /// `tenants/{tenant}/clusters/{cluster}`.
    pub fn name(&self) -> ClusterName {
        ClusterName {
            tenant: self.tenant.clone(),
            cluster: self.cluster_id.clone(),
        }
    }

    /// The opaque etag of this version of the record.
    pub fn etag(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.uid.as_bytes());
        h.update(self.version.to_be_bytes());
        hex::encode(&h.finalize()[..12])
    }

    /// Fails with `EtagMismatch` unless `etag` is empty or current.
    pub fn check_etag(&self, etag: &str) -> Result<()> {
        if etag.is_empty() || etag == self.etag() {
            Ok(())
        } else {
            Err(Error::EtagMismatch {
                name: self.name().to_string(),
            })
        }
    }
}

/// How disruptive a change is to a running cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Disruption {
    /// Nothing running is touched.
    None,
    /// Changed in place, no restarts.
    InPlace,
    /// Nodes restart or leave one at a time.
    Rolling,
    /// New nodes come first.
    NewNodesFirst,
    /// The cluster goes away.
    Destructive,
}

/// A top-level spec field an update mask may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecField {
    /// `spec.version`.
    Version,
    /// `spec.node_sets`.
    NodeSets,
    /// `spec.zone_count`.
    ZoneCount,
    /// `spec.volume_retention`.
    VolumeRetention,
    /// `spec.deletion_protection`.
    DeletionProtection,
    /// `spec.maintenance_window`.
    MaintenanceWindow,
    /// `spec.change_freezes`.
    ChangeFreezes,
    /// `spec.snapshot_policy`.
    SnapshotPolicy,
}

impl SpecField {
    /// Every field; what the mask `spec` means.
    pub const ALL: [SpecField; 8] = [
        SpecField::Version,
        SpecField::NodeSets,
        SpecField::ZoneCount,
        SpecField::VolumeRetention,
        SpecField::DeletionProtection,
        SpecField::MaintenanceWindow,
        SpecField::ChangeFreezes,
        SpecField::SnapshotPolicy,
    ];

    /// Parses one update-mask path.
    pub fn parse_path(path: &str) -> Option<&'static [SpecField]> {
        Some(match path {
            "spec" => &Self::ALL,
            "spec.version" => &[SpecField::Version],
            "spec.node_sets" => &[SpecField::NodeSets],
            "spec.zone_count" => &[SpecField::ZoneCount],
            "spec.volume_retention" => &[SpecField::VolumeRetention],
            "spec.deletion_protection" => &[SpecField::DeletionProtection],
            "spec.maintenance_window" => &[SpecField::MaintenanceWindow],
            "spec.change_freezes" => &[SpecField::ChangeFreezes],
            "spec.snapshot_policy" => &[SpecField::SnapshotPolicy],
            _ => return None,
        })
    }
}

impl ClusterSpec {
    /// This spec with `fields` taken from `patch`.
    pub fn merged(&self, patch: &ClusterSpec, fields: &[SpecField]) -> ClusterSpec {
        let mut out = self.clone();
        for f in fields {
            match f {
                SpecField::Version => out.version = patch.version.clone(),
                SpecField::NodeSets => out.node_sets = patch.node_sets.clone(),
                SpecField::ZoneCount => out.zone_count = patch.zone_count,
                SpecField::VolumeRetention => out.volume_retention = patch.volume_retention,
                SpecField::DeletionProtection => {
                    out.deletion_protection = patch.deletion_protection;
                }
                SpecField::MaintenanceWindow => out.maintenance_window = patch.maintenance_window,
                SpecField::ChangeFreezes => out.change_freezes = patch.change_freezes.clone(),
                SpecField::SnapshotPolicy => out.snapshot_policy = patch.snapshot_policy,
            }
        }
        out
    }
}

/// Why one operation cannot upgrade from `old` to `new` (a later version):
/// the upgrade the catalog does not list, with the way to get there.
fn upgrade_refusal(catalog: &Catalog, old: Version, new: Version, from: &str, to: &str) -> String {
    let not_one =
        format!("Elasticsearch does not support a rolling upgrade from {from} to {to} in one step");
    match catalog.upgrade_path(old, new) {
        Some(path) if path.len() > 1 => {
            let hops: Vec<String> = path[..path.len() - 1]
                .iter()
                .map(|minor| {
                    catalog
                        .newest_of_minor(minor)
                        .map_or_else(|| format!("{minor}.x"), str::to_string)
                })
                .collect();
            format!(
                "{not_one}; upgrade through {} first (one update each), then to {to}",
                hops.join(", then ")
            )
        }
        _ => format!("{not_one}, and the platform offers no upgrade path to it"),
    }
}

/// How long EBS makes a volume wait between two modifications: "After
/// modifying a volume, you must wait at least six hours ... before you can
/// modify the same volume" (Amazon EBS User Guide, "Requirements for EBS
/// volume modifications"). A size, IOPS or throughput change is one.
pub const EBS_MODIFICATION_COOLDOWN: chrono::TimeDelta = chrono::TimeDelta::hours(6);

/// The first field of `new` that changes the volumes of a node set that
/// `old` has too (size, IOPS, throughput), as a path under `prefix`. A new
/// node set's volumes are new, not modified.
pub fn volume_change(old: &ClusterSpec, new: &ClusterSpec, prefix: &str) -> Option<String> {
    new.node_sets.iter().enumerate().find_map(|(i, ns)| {
        let prev = old.node_sets.iter().find(|o| o.name == ns.name)?;
        let field = if ns.storage_gib != prev.storage_gib {
            "storage_gib"
        } else if ns.storage_iops != prev.storage_iops {
            "storage_iops"
        } else if ns.storage_throughput_mibps != prev.storage_throughput_mibps {
            "storage_throughput_mibps"
        } else {
            return None;
        };
        Some(format!("{prefix}.node_sets[{i}].{field}"))
    })
}

/// Refuses a change of volumes while EBS would still refuse to modify them:
/// within [`EBS_MODIFICATION_COOLDOWN`] of the last accepted one (`last`).
/// The refusal names the time the change becomes possible, so the caller
/// (and a dry run) learns it before anything is queued. Measured from when
/// the last change was accepted, which is no later than EBS saw it.
pub fn storage_cooldown(
    old: &ClusterSpec,
    new: &ClusterSpec,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    prefix: &str,
) -> Result<()> {
    let (Some(field), Some(last)) = (volume_change(old, new, prefix), last) else {
        return Ok(());
    };
    let next = last + EBS_MODIFICATION_COOLDOWN;
    if now >= next {
        return Ok(());
    }
    Err(Error::precondition(
        field,
        format!(
            "EBS modifies a volume at most once every 6 hours, and this cluster's volumes \
             were last changed at {}: the next size, IOPS or throughput change is possible \
             from {}",
            last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    ))
}

/// Classifies the change from `old` to `new` (both validated, with defaults),
/// refusing changes the platform cannot make safely: a version downgrade, an
/// upgrade Elasticsearch does not support in one step, a smaller volume and a
/// new size class. `prefix` is the spec's path in the request.
pub fn classify_change(
    old: &ClusterSpec,
    new: &ClusterSpec,
    catalog: &Catalog,
    prefix: &str,
) -> Result<Disruption> {
    let mut v = Violations::default();
    let mut d = Disruption::None;
    if old.version != new.version {
        match (Version::parse(&old.version), Version::parse(&new.version)) {
            (Some(a), Some(b)) if b < a => v.add(
                format!("{prefix}.version"),
                format!(
                    "downgrading from {} to {} is not supported: Elasticsearch cannot read data written by a newer version",
                    old.version, new.version
                ),
            ),
            (Some(a), Some(b)) if !catalog.allows_upgrade(a, b) => v.add(
                format!("{prefix}.version"),
                upgrade_refusal(catalog, a, b, &old.version, &new.version),
            ),
            _ => d = d.max(Disruption::Rolling),
        }
    }
    // An EBS volume lives in one availability zone and its pod must run
    // there: spreading a running cluster over more or fewer zones would
    // strand pods away from their volumes ("volume node affinity conflict").
    if old.zone_count != new.zone_count {
        v.add(
            format!("{prefix}.zone_count"),
            format!(
                "the zone count of a running cluster cannot change (from {} to {}): its volumes \
                 stay in their zones; create a cluster with {} zones instead",
                old.zone_count, new.zone_count, new.zone_count
            ),
        );
    }
    for (i, ns) in new.node_sets.iter().enumerate() {
        let p = format!("{prefix}.node_sets[{i}]");
        let Some(prev) = old.node_sets.iter().find(|o| o.name == ns.name) else {
            d = d.max(Disruption::NewNodesFirst);
            continue;
        };
        if ns.storage_gib < prev.storage_gib {
            v.add(
                format!("{p}.storage_gib"),
                format!(
                    "volumes cannot shrink (from {} to {} GiB); add a node set with smaller volumes and remove this one instead",
                    prev.storage_gib, ns.storage_gib
                ),
            );
        }
        if ns.size_class != prev.size_class {
            // EKS cannot change a node group's instance type in place, and
            // pods of a new size would not fit the old nodes.
            v.add(
                format!("{p}.size_class"),
                format!(
                    "a node set cannot change its size class ({} to {}); add a node set with the new size class, \
                     then remove this one (its nodes are drained one at a time)",
                    prev.size_class, ns.size_class
                ),
            );
        }
        if ns.count > prev.count {
            d = d.max(Disruption::NewNodesFirst);
        }
        if ns.count < prev.count || ns.roles != prev.roles {
            d = d.max(Disruption::Rolling);
        }
        if ns.storage_gib > prev.storage_gib
            || ns.storage_iops != prev.storage_iops
            || ns.storage_throughput_mibps != prev.storage_throughput_mibps
        {
            d = d.max(Disruption::InPlace);
        }
    }
    if old
        .node_sets
        .iter()
        .any(|o| !new.node_sets.iter().any(|n| n.name == o.name))
    {
        // A node set that goes away is drained one node at a time.
        d = d.max(Disruption::Rolling);
    }
    v.finish()?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::NodeSet;

    type Change = Box<dyn Fn(&mut ClusterSpec)>;

    #[test]
    fn disruption_table() {
        let base = ClusterSpec::test().with_nodes(3);
        let cases: Vec<(&str, Change, Disruption)> = vec![
            ("nothing", Box::new(|_| {}), Disruption::None),
            (
                "retention",
                Box::new(|s| s.volume_retention = crate::spec::VolumeRetention::Retain),
                Disruption::None,
            ),
            (
                "bigger volume",
                Box::new(|s| s.node_sets[0].storage_gib = 100),
                Disruption::InPlace,
            ),
            (
                "more iops",
                Box::new(|s| s.node_sets[0].storage_iops = 6000),
                Disruption::InPlace,
            ),
            (
                "upgrade",
                Box::new(|s| s.version = "8.17.1".into()),
                Disruption::Rolling,
            ),
            (
                "shrink",
                Box::new(|s| s.node_sets[0].count = 2),
                Disruption::Rolling,
            ),
            (
                "grow",
                Box::new(|s| s.node_sets[0].count = 5),
                Disruption::NewNodesFirst,
            ),
            (
                "a new set with another size",
                Box::new(|s| {
                    s.node_sets.push(NodeSet {
                        size_class: "large".into(),
                        ..NodeSet::test("big")
                    })
                }),
                Disruption::NewNodesFirst,
            ),
            (
                "new set",
                Box::new(|s| s.node_sets.push(NodeSet::test("hot"))),
                Disruption::NewNodesFirst,
            ),
        ];
        for (what, change, want) in cases {
            let mut new = base.clone();
            change(&mut new);
            assert_eq!(
                classify_change(&base, &new, &Catalog::test(), "s").unwrap(),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn unsafe_changes_are_refused() {
        let c = Catalog::test();
        let base = ClusterSpec::test().with_version("8.17.1");
        let down = base.clone().with_version("8.15.3");
        assert!(
            matches!(classify_change(&base, &down, &c, "s"), Err(Error::InvalidArgument(v)) if v[0].field == "s.version")
        );
        let jump = base.clone().with_version("9.1.0");
        match classify_change(&base, &jump, &c, "s") {
            Err(Error::InvalidArgument(v)) => {
                assert_eq!(v[0].field, "s.version");
                assert!(
                    v[0].description.contains("upgrade through 8.19.3 first"),
                    "{}",
                    v[0].description
                );
            }
            other => panic!("{other:?}"),
        }
        let mut resized = base.clone();
        resized.node_sets[0].size_class = "large".into();
        assert!(
            matches!(classify_change(&base, &resized, &c, "s"), Err(Error::InvalidArgument(v)) if v[0].field == "s.node_sets[0].size_class")
        );
        let mut smaller = base.clone();
        smaller.node_sets[0].storage_gib = 20;
        assert!(
            matches!(classify_change(&base, &smaller, &c, "s"), Err(Error::InvalidArgument(v)) if v[0].field == "s.node_sets[0].storage_gib")
        );
        let mut zones = base.clone();
        zones.zone_count = 3;
        assert!(
            matches!(classify_change(&base, &zones, &c, "s"), Err(Error::InvalidArgument(v)) if v[0].field == "s.zone_count")
        );
    }

    #[test]
    fn merge_takes_only_masked_fields() {
        let base = ClusterSpec::test();
        let patch = ClusterSpec::test().with_version("9.1.0").with_nodes(7);
        let merged = base.merged(&patch, &[SpecField::Version]);
        assert_eq!(merged.version, "9.1.0");
        assert_eq!(merged.node_sets[0].count, 1);
        assert!(SpecField::parse_path("spec.bogus").is_none());
    }

    #[test]
    fn conditions_keep_transition_time_when_status_holds() {
        let t0 = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        let t1 = DateTime::<Utc>::from_timestamp(100, 0).unwrap();
        let c = |status, t| Condition {
            kind: ConditionType::Ready,
            status,
            reason: ConditionReason::Applied,
            message: "m".into(),
            last_transition_time: t,
        };
        let mut cs = vec![c(ConditionStatus::True, t0)];
        set_condition(&mut cs, c(ConditionStatus::True, t1));
        assert_eq!(cs[0].last_transition_time, t0);
        set_condition(&mut cs, c(ConditionStatus::False, t1));
        assert_eq!(cs[0].last_transition_time, t1);
        assert_eq!(cs.len(), 1);
    }
}
