//! The catalog, as `GetCatalog` shows it.

use esaas_core::catalog::Catalog;
use esaas_core::spec::{
    GP3_BASELINE_IOPS, GP3_BASELINE_THROUGHPUT, GP3_MAX_IOPS, GP3_MAX_IOPS_PER_GIB,
    GP3_MAX_THROUGHPUT, GP3_MIN_IOPS_PER_MIBPS,
};

use crate::v1 as pb;

/// The wire form of the platform's offer.
pub fn catalog_to_pb(c: &Catalog) -> pb::Catalog {
    pb::Catalog {
        versions: c.versions.clone(),
        upgrade_paths: c
            .upgrades
            .iter()
            .map(|(from, to)| pb::UpgradePath {
                from_minor: from.clone(),
                to_minors: to.clone(),
            })
            .collect(),
        size_classes: c
            .size_classes
            .iter()
            .map(|s| pb::SizeClass {
                name: s.name.clone(),
                instance_type: s.instance_type.clone(),
                cpu_millis: i32::try_from(s.cpu_millis).unwrap_or(i32::MAX),
                memory_mib: i32::try_from(s.memory_mib).unwrap_or(i32::MAX),
            })
            .collect(),
        storage: Some(pb::StorageLimits {
            min_gib: c.min_storage_gib,
            max_gib: c.max_storage_gib,
            min_iops: GP3_BASELINE_IOPS,
            max_iops: GP3_MAX_IOPS,
            max_iops_per_gib: GP3_MAX_IOPS_PER_GIB,
            min_throughput_mibps: GP3_BASELINE_THROUGHPUT,
            max_throughput_mibps: GP3_MAX_THROUGHPUT,
            max_throughput_mibps_per_iops: 1.0 / f64::from(GP3_MIN_IOPS_PER_MIBPS),
        }),
        max_node_sets: i32::try_from(c.max_node_sets).unwrap_or(i32::MAX),
        max_nodes_per_set: c.max_nodes_per_set,
        max_zones: c.max_zones,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_travels_whole() {
        let c = Catalog::test();
        let pb = catalog_to_pb(&c);
        assert_eq!(pb.versions, c.versions);
        assert_eq!(pb.size_classes.len(), c.size_classes.len());
        let small = c.size_class("small").expect("small");
        let wire = pb
            .size_classes
            .iter()
            .find(|s| s.name == "small")
            .expect("small on the wire");
        assert_eq!(wire.instance_type, small.instance_type);
        assert_eq!(wire.cpu_millis as u32, small.cpu_millis);
        assert_eq!(wire.memory_mib as u32, small.memory_mib);
        let paths: Vec<(String, Vec<String>)> = pb
            .upgrade_paths
            .iter()
            .map(|p| (p.from_minor.clone(), p.to_minors.clone()))
            .collect();
        let table: Vec<(String, Vec<String>)> = c.upgrades.clone().into_iter().collect();
        assert_eq!(paths, table);
        let storage = pb.storage.expect("storage");
        assert_eq!(
            (storage.min_gib, storage.max_gib),
            (c.min_storage_gib, c.max_storage_gib)
        );
        assert_eq!(storage.max_throughput_mibps_per_iops, 0.25);
    }
}
