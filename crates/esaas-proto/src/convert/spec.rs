//! Cluster specs and update masks.

use esaas_core::Result;
use esaas_core::cluster::SpecField;
use esaas_core::error::{Error, MAX_REPEATED, Violations, shown};
use esaas_core::spec::{ClusterSpec, NodeRole, NodeSet, VolumeRetention};

use crate::v1 as pb;

/// Parses a wire spec; `prefix` is its path in the request.
pub fn spec_from_pb(spec: &pb::ClusterSpec, prefix: &str) -> Result<ClusterSpec> {
    let mut v = Violations::default();
    let volume_retention = match pb::VolumeRetention::try_from(spec.volume_retention) {
        Ok(pb::VolumeRetention::Unspecified | pb::VolumeRetention::Delete) => {
            VolumeRetention::Delete
        }
        Ok(pb::VolumeRetention::Retain) => VolumeRetention::Retain,
        Err(_) => {
            v.add(
                format!("{prefix}.volume_retention"),
                format!("unknown value {}", spec.volume_retention),
            );
            VolumeRetention::Delete
        }
    };
    // A list longer than any valid spec has is refused before it is walked.
    if v.too_many(
        &format!("{prefix}.node_sets"),
        spec.node_sets.len(),
        MAX_REPEATED,
    ) {
        return Err(v.into_error());
    }
    let mut node_sets = Vec::with_capacity(spec.node_sets.len());
    for (i, ns) in spec.node_sets.iter().enumerate() {
        let mut roles = Vec::with_capacity(ns.roles.len().min(MAX_REPEATED));
        let field = format!("{prefix}.node_sets[{i}].roles");
        let listed = if v.too_many(&field, ns.roles.len(), MAX_REPEATED) {
            &ns.roles[..0]
        } else {
            &ns.roles[..]
        };
        for (j, r) in listed.iter().enumerate() {
            let role = match pb::NodeRole::try_from(*r) {
                Ok(pb::NodeRole::Master) => NodeRole::Master,
                Ok(pb::NodeRole::Data) => NodeRole::Data,
                Ok(pb::NodeRole::Ingest) => NodeRole::Ingest,
                Ok(pb::NodeRole::Ml) => NodeRole::Ml,
                Ok(pb::NodeRole::Transform) => NodeRole::Transform,
                Ok(pb::NodeRole::Unspecified) | Err(_) => {
                    v.add(
                        format!("{prefix}.node_sets[{i}].roles[{j}]"),
                        format!("{r} is not a role; use NODE_ROLE_MASTER, _DATA, _INGEST, _ML or _TRANSFORM"),
                    );
                    continue;
                }
            };
            roles.push(role);
        }
        node_sets.push(NodeSet {
            name: ns.name.clone(),
            roles,
            count: ns.count,
            size_class: ns.size_class.clone(),
            storage_gib: ns.storage_gib,
            storage_iops: ns.storage_iops,
            storage_throughput_mibps: ns.storage_throughput_mibps,
        });
    }
    let maintenance_window = spec
        .maintenance_window
        .as_ref()
        .and_then(|w| super::window_from_pb(w, &format!("{prefix}.maintenance_window"), &mut v));
    let change_freezes = super::freezes_from_pb(
        &spec.change_freezes,
        &format!("{prefix}.change_freezes"),
        &mut v,
    );
    v.finish()?;
    Ok(ClusterSpec {
        version: spec.version.clone(),
        node_sets,
        zone_count: spec.zone_count,
        // Output only, but carried: the worker's assignment holds the zones
        // the control plane chose. A create chooses them afresh and an update
        // keeps the cluster's own, so a caller cannot set them.
        zones: spec.zones.iter().take(MAX_REPEATED).cloned().collect(),
        volume_retention,
        deletion_protection: spec.deletion_protection,
        maintenance_window,
        change_freezes,
        snapshot_policy: spec.snapshot_policy.as_ref().map(super::policy_from_pb),
    })
}

/// The spec fields an update changes: the mask's paths, or (AIP-134) every
/// spec field that is set in the request when the mask is empty.
pub fn update_mask_from_pb(
    mask: Option<&prost_types::FieldMask>,
    spec: Option<&pb::ClusterSpec>,
) -> Result<Vec<SpecField>> {
    let mut fields = Vec::new();
    match mask.filter(|m| !m.paths.is_empty()) {
        Some(mask) => {
            let mut v = Violations::default();
            if v.too_many("update_mask.paths", mask.paths.len(), MAX_REPEATED) {
                return Err(v.into_error());
            }
            for (i, path) in mask.paths.iter().enumerate() {
                match SpecField::parse_path(path) {
                    Some(fs) => fields.extend_from_slice(fs),
                    None => v.add(
                        format!("update_mask.paths[{i}]"),
                        format!(
                            "{} cannot be updated; use spec, spec.version, spec.node_sets, spec.zone_count, spec.volume_retention, spec.deletion_protection, spec.maintenance_window, spec.change_freezes or spec.snapshot_policy",
                            shown(path)
                        ),
                    ),
                }
            }
            v.finish()?;
        }
        None => {
            if let Some(s) = spec {
                if !s.version.is_empty() {
                    fields.push(SpecField::Version);
                }
                if !s.node_sets.is_empty() {
                    fields.push(SpecField::NodeSets);
                }
                if s.zone_count != 0 {
                    fields.push(SpecField::ZoneCount);
                }
                if s.volume_retention != 0 {
                    fields.push(SpecField::VolumeRetention);
                }
                // Only `true` can be implied; clearing it needs the mask.
                if s.deletion_protection {
                    fields.push(SpecField::DeletionProtection);
                }
                if s.maintenance_window.is_some() {
                    fields.push(SpecField::MaintenanceWindow);
                }
                if !s.change_freezes.is_empty() {
                    fields.push(SpecField::ChangeFreezes);
                }
                if s.snapshot_policy.is_some() {
                    fields.push(SpecField::SnapshotPolicy);
                }
            }
            if fields.is_empty() {
                return Err(Error::invalid(
                    "update_mask",
                    "names no field to change, and the request sets no spec field",
                ));
            }
        }
    }
    fields.dedup();
    Ok(fields)
}

/// The wire form of a spec.
pub fn spec_to_pb(spec: &ClusterSpec) -> pb::ClusterSpec {
    pb::ClusterSpec {
        version: spec.version.clone(),
        node_sets: spec
            .node_sets
            .iter()
            .map(|ns| pb::NodeSet {
                name: ns.name.clone(),
                roles: ns
                    .roles
                    .iter()
                    .map(|r| match r {
                        NodeRole::Master => pb::NodeRole::Master,
                        NodeRole::Data => pb::NodeRole::Data,
                        NodeRole::Ingest => pb::NodeRole::Ingest,
                        NodeRole::Ml => pb::NodeRole::Ml,
                        NodeRole::Transform => pb::NodeRole::Transform,
                    } as i32)
                    .collect(),
                count: ns.count,
                size_class: ns.size_class.clone(),
                storage_gib: ns.storage_gib,
                storage_iops: ns.storage_iops,
                storage_throughput_mibps: ns.storage_throughput_mibps,
            })
            .collect(),
        zone_count: spec.zone_count,
        zones: spec.zones.clone(),
        volume_retention: match spec.volume_retention {
            VolumeRetention::Delete => pb::VolumeRetention::Delete,
            VolumeRetention::Retain => pb::VolumeRetention::Retain,
        } as i32,
        deletion_protection: spec.deletion_protection,
        maintenance_window: spec.maintenance_window.as_ref().map(super::window_to_pb),
        change_freezes: spec
            .change_freezes
            .iter()
            .map(super::freeze_to_pb)
            .collect(),
        snapshot_policy: spec.snapshot_policy.as_ref().map(super::policy_to_pb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips() {
        let spec = ClusterSpec::test().with_nodes(3);
        assert_eq!(spec_from_pb(&spec_to_pb(&spec), "s").unwrap(), spec);
        let protected = ClusterSpec {
            deletion_protection: true,
            ..spec.clone()
        };
        assert_eq!(
            spec_from_pb(&spec_to_pb(&protected), "s").unwrap(),
            protected
        );
        let t = |s| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let spec = ClusterSpec {
            maintenance_window: Some(esaas_core::spec::MaintenanceWindow {
                day: chrono::Weekday::Sun,
                start: chrono::NaiveTime::from_hms_opt(23, 30, 15).unwrap(),
                duration: chrono::TimeDelta::hours(3),
            }),
            change_freezes: vec![esaas_core::spec::ChangeFreeze {
                start: t(1_800_000_000),
                end: t(1_800_086_400),
                reason: "release".into(),
            }],
            ..spec
        };
        assert_eq!(spec_from_pb(&spec_to_pb(&spec), "s").unwrap(), spec);
    }

    #[test]
    fn bad_windows_and_freezes_name_their_fields() {
        let mut w = spec_to_pb(&ClusterSpec::test());
        w.maintenance_window = Some(pb::MaintenanceWindow {
            day_of_week: 0,
            start_time: "25:00".into(),
            duration: None,
        });
        w.change_freezes = vec![pb::ChangeFreeze::default()];
        match spec_from_pb(&w, "s") {
            Err(Error::InvalidArgument(v)) => assert_eq!(
                v.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
                [
                    "s.maintenance_window.day_of_week",
                    "s.maintenance_window.start_time",
                    "s.maintenance_window.duration",
                    "s.change_freezes[0].start_time",
                    "s.change_freezes[0].end_time"
                ]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn implied_mask_takes_set_fields() {
        let spec = pb::ClusterSpec {
            version: "9.1.0".into(),
            ..Default::default()
        };
        assert_eq!(
            update_mask_from_pb(None, Some(&spec)).unwrap(),
            vec![SpecField::Version]
        );
        assert!(update_mask_from_pb(None, None).is_err());
        let mask = prost_types::FieldMask {
            paths: vec!["spec.node_sets".into(), "labels".into()],
        };
        match update_mask_from_pb(Some(&mask), None) {
            Err(Error::InvalidArgument(v)) => assert_eq!(v[0].field, "update_mask.paths[1]"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_enum_values_name_their_field() {
        let mut wire = spec_to_pb(&ClusterSpec::test());
        wire.node_sets[0].roles = vec![0, 99];
        wire.volume_retention = 42;
        match spec_from_pb(&wire, "cluster.spec") {
            Err(esaas_core::Error::InvalidArgument(v)) => {
                let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
                assert_eq!(
                    fields,
                    vec![
                        "cluster.spec.volume_retention",
                        "cluster.spec.node_sets[0].roles[0]",
                        "cluster.spec.node_sets[0].roles[1]"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
