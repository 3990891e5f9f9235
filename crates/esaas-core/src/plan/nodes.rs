//! The node rotation's decision table: every node group moves to the
//! platform's node image, one zone's group at a time, so that at most one
//! zone's Elasticsearch nodes are away at once.
//!
//! EKS managed node groups take their image from a launch template version
//! that only `UpdateNodegroupVersion` moves, and EKS answers that call by
//! replacing the group's nodes itself: new nodes first, in the same zone
//! (its scale-up phase), then each old node cordoned, its pods evicted
//! (honouring PodDisruptionBudgets) and the instance terminated, then the
//! group scaled back. What EKS cannot know is Elasticsearch, so around each
//! group's update the rotation:
//!
//! 1. waits for every pod ready and health green (never starts on yellow);
//! 2. registers a node shutdown of type `restart` for each pod the group
//!    hosts and waits until Elasticsearch reports it COMPLETE (a `restart`
//!    shutdown keeps the node's shards where they are: its StatefulSet pod
//!    comes back under the same name with the same EBS volume, which lives
//!    in the group's zone, where EKS launches the new node);
//! 3. updates the group's version, and waits until EKS reports it ACTIVE
//!    at the new release;
//! 4. waits for the pods ready again, then clears their shutdowns;
//!
//! and only then goes to the next group. Node sets without master-eligible
//! nodes go first. The PodDisruptionBudget never blocks EKS's eviction: it
//! allows one pod away, and every other pod is ready when the update starts.
//! Every decision is taken from what is observed, so a worker that dies
//! anywhere is followed by one that carries on from the same point.

use super::{NodeGroupStatus, Observed, Step, node_key};
use crate::cluster::Health;
use crate::placement;
use crate::spec::ClusterSpec;

pub(super) fn rotate_nodes(spec: &ClusterSpec, release: &str, observed: &Observed) -> Option<Step> {
    let green = observed
        .health
        .as_ref()
        .is_some_and(|h| h.status == Health::Green);
    let whole = observed
        .workloads
        .values()
        .all(|w| w.ready_replicas >= w.replicas);
    for ns in super::planner::rollout_order(spec) {
        let Some(ng) = observed.node_groups.get(&ns.name) else {
            continue;
        };
        let zones: Vec<String> = if spec.zones.is_empty() {
            ng.zones.keys().cloned().collect()
        } else {
            spec.zones.clone()
        };
        let replicas = observed
            .workloads
            .get(&ns.name)
            .map_or(ns.count, |w| w.replicas);
        for zone in &zones {
            let Some(group) = ng.zones.get(zone) else {
                continue;
            };
            // EKS is replacing this group's nodes (or changing it otherwise).
            if group.status != NodeGroupStatus::Active {
                return Some(Step::WaitNodeGroupActive {
                    node_set: ns.name.clone(),
                });
            }
            let hosted: Vec<i32> = (0..replicas)
                .filter(|o| placement::zone_of(&zones, *o) == Some(zone.as_str()))
                .collect();
            let shutdown = |o: i32| {
                observed
                    .health
                    .as_ref()
                    .and_then(|h| h.shutdowns.get(&node_key(&ns.name, o)).copied())
            };
            let ready = observed
                .workloads
                .get(&ns.name)
                .is_none_or(|w| w.ready_replicas >= w.replicas);
            if group.release_version == release {
                // Updated: its pods come back, then Elasticsearch may move
                // shards to them again.
                if let Some(o) = hosted.iter().copied().find(|o| shutdown(*o).is_some()) {
                    if !ready {
                        return Some(Step::WaitPodsReady {
                            node_set: ns.name.clone(),
                        });
                    }
                    return Some(Step::ClearShutdown {
                        node_set: ns.name.clone(),
                        ordinal: o,
                    });
                }
                continue;
            }
            // A group not started yet begins only on a whole, green cluster.
            let started = hosted.iter().any(|o| shutdown(*o).is_some());
            if !started && !whole {
                let waiting = observed
                    .workloads
                    .iter()
                    .find(|(_, w)| w.ready_replicas < w.replicas)
                    .map_or(ns.name.clone(), |(n, _)| n.clone());
                return Some(Step::WaitPodsReady { node_set: waiting });
            }
            if !started && !green {
                return Some(Step::WaitHealthy);
            }
            if let Some(o) = hosted.iter().copied().find(|o| shutdown(*o).is_none()) {
                return Some(Step::RegisterShutdown {
                    node_set: ns.name.clone(),
                    ordinal: o,
                });
            }
            if let Some(o) = hosted.iter().copied().find(|o| shutdown(*o) == Some(false)) {
                return Some(Step::WaitShutdownReady {
                    node_set: ns.name.clone(),
                    ordinal: o,
                });
            }
            return Some(Step::UpdateNodeGroupVersion {
                node_set: ns.name.clone(),
                zone: zone.clone(),
                release: release.to_string(),
            });
        }
    }
    if green { None } else { Some(Step::WaitHealthy) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::{Goal, HealthObs, NodeGroupObs, WorkloadObs, ZoneGroupObs};
    use crate::spec::{NodeRole, NodeSet};

    const OLD: &str = "1.31.2-20241121";
    const NEW: &str = "1.31.3-20250105";
    const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

    /// Node sets `data` (data only, `data` nodes) and `masters` (master
    /// only, 3 nodes) over three zones.
    fn spec(data: i32) -> ClusterSpec {
        let mut s = ClusterSpec::test();
        s.zones = ZONES.iter().map(|z| z.to_string()).collect();
        s.zone_count = 3;
        let mut d = NodeSet::test("data");
        d.roles = vec![NodeRole::Data];
        d.count = data;
        let mut m = NodeSet::test("masters");
        m.roles = vec![NodeRole::Master];
        m.count = 3;
        // The spec lists masters first: the rotation still takes them last.
        s.node_sets = vec![m, d];
        s
    }

    fn world(spec: &ClusterSpec, release: &str) -> Observed {
        let groups = spec
            .node_sets
            .iter()
            .map(|ns| {
                let zones = placement::zone_sizes(&spec.zones, ns.count)
                    .into_iter()
                    .map(|(z, n)| {
                        (
                            z,
                            ZoneGroupObs {
                                desired_size: n,
                                status: NodeGroupStatus::Active,
                                release_version: release.into(),
                            },
                        )
                    })
                    .collect();
                (
                    ns.name.clone(),
                    NodeGroupObs {
                        instance_type: "r6i.large".into(),
                        desired_size: ns.count,
                        status: NodeGroupStatus::Active,
                        message: String::new(),
                        zones,
                    },
                )
            })
            .collect();
        let workloads = spec
            .node_sets
            .iter()
            .map(|ns| {
                (
                    ns.name.clone(),
                    WorkloadObs {
                        replicas: ns.count,
                        ready_replicas: ns.count,
                        version: spec.version.clone(),
                        up_to_date: true,
                        updated_replicas: ns.count,
                        partition: 0,
                        claims_up_to_date: true,
                        volumes: Vec::new(),
                        master_eligible: ns.is_master_eligible(),
                    },
                )
            })
            .collect();
        Observed {
            base_objects: true,
            node_groups: groups,
            workloads,
            health: Some(HealthObs {
                status: Health::Green,
                reason: String::new(),
                shards_on_excluded: BTreeMap::new(),
                shutdowns: BTreeMap::new(),
                voting_exclusions: Default::default(),
                yellow_from_versions: false,
                disk_percent: Default::default(),
            }),
            certificates_rotated_by: None,
            snapshot_repository: None,
            ..Observed::default()
        }
    }

    fn goal(spec: &ClusterSpec) -> Goal {
        Goal::RotateNodes {
            spec: spec.clone(),
            release: NEW.into(),
        }
    }

    fn zone_mut<'a>(o: &'a mut Observed, ns: &str, zone: &str) -> &'a mut ZoneGroupObs {
        o.node_groups
            .get_mut(ns)
            .and_then(|g| g.zones.get_mut(zone))
            .expect("zone group")
    }

    fn health(o: &mut Observed) -> &mut HealthObs {
        o.health.as_mut().expect("health")
    }

    #[test]
    fn each_state_of_one_group_has_its_step() {
        let s = spec(1);
        let g = goal(&s);
        let (a, b) = (ZONES[0], ZONES[1]);
        // (case, how the world differs from all-old-and-green, step)
        type Change = fn(&mut Observed);
        let cases: Vec<(&str, Change, Option<Step>)> = vec![
            (
                "green and whole: the first data pod is told of its restart",
                |_| {},
                Some(Step::RegisterShutdown {
                    node_set: "data".into(),
                    ordinal: 0,
                }),
            ),
            (
                "yellow before a group starts: wait for green",
                |o| health(o).status = Health::Yellow,
                Some(Step::WaitHealthy),
            ),
            (
                "a pod not ready before a group starts: wait for it",
                |o| {
                    if let Some(w) = o.workloads.get_mut("masters") {
                        w.ready_replicas = 2;
                    }
                },
                Some(Step::WaitPodsReady {
                    node_set: "masters".into(),
                }),
            ),
            (
                "its shutdown registered, not COMPLETE: wait (yellow is fine now)",
                |o| {
                    health(o).shutdowns.insert("data/0".into(), false);
                    health(o).status = Health::Yellow;
                },
                Some(Step::WaitShutdownReady {
                    node_set: "data".into(),
                    ordinal: 0,
                }),
            ),
            (
                "its shutdown COMPLETE: EKS replaces the group's node",
                |o| {
                    health(o).shutdowns.insert("data/0".into(), true);
                },
                Some(Step::UpdateNodeGroupVersion {
                    node_set: "data".into(),
                    zone: ZONES[0].into(),
                    release: NEW.into(),
                }),
            ),
            (
                "EKS is replacing the node: wait for the group",
                |o| {
                    health(o).shutdowns.insert("data/0".into(), true);
                    zone_mut(o, "data", ZONES[0]).status = NodeGroupStatus::Updating;
                },
                Some(Step::WaitNodeGroupActive {
                    node_set: "data".into(),
                }),
            ),
            (
                "the group at the new release, its pod not back yet",
                |o| {
                    health(o).shutdowns.insert("data/0".into(), true);
                    zone_mut(o, "data", ZONES[0]).release_version = NEW.into();
                    if let Some(w) = o.workloads.get_mut("data") {
                        w.ready_replicas = 0;
                    }
                },
                Some(Step::WaitPodsReady {
                    node_set: "data".into(),
                }),
            ),
            (
                "the pod back: its shutdown goes",
                |o| {
                    health(o).shutdowns.insert("data/0".into(), true);
                    zone_mut(o, "data", ZONES[0]).release_version = NEW.into();
                },
                Some(Step::ClearShutdown {
                    node_set: "data".into(),
                    ordinal: 0,
                }),
            ),
            (
                "data done, yellow: green before the first master",
                |o| {
                    for z in ZONES {
                        zone_mut(o, "data", z).release_version = NEW.into();
                    }
                    health(o).status = Health::Yellow;
                },
                Some(Step::WaitHealthy),
            ),
            (
                "data done and green: the first master (zone a)",
                |o| {
                    for z in ZONES {
                        zone_mut(o, "data", z).release_version = NEW.into();
                    }
                },
                Some(Step::RegisterShutdown {
                    node_set: "masters".into(),
                    ordinal: 0,
                }),
            ),
            (
                "every group at the new release, green: done",
                |o| {
                    for ns in ["data", "masters"] {
                        for z in ZONES {
                            zone_mut(o, ns, z).release_version = NEW.into();
                        }
                    }
                },
                None,
            ),
            (
                "every group at the new release, yellow: the closing gate",
                |o| {
                    for ns in ["data", "masters"] {
                        for z in ZONES {
                            zone_mut(o, ns, z).release_version = NEW.into();
                        }
                    }
                    health(o).status = Health::Yellow;
                },
                Some(Step::WaitHealthy),
            ),
        ];
        for (case, change, want) in cases {
            let mut o = world(&s, OLD);
            change(&mut o);
            assert_eq!(next_step_of(&g, &o), want, "{case}");
        }
        // A data group of 0 nodes (zone b and c when data has 1) has no pod
        // to tell: it is updated at once, after zone a.
        let mut o = world(&s, OLD);
        zone_mut(&mut o, "data", a).release_version = NEW.into();
        assert_eq!(
            next_step_of(&g, &o),
            Some(Step::UpdateNodeGroupVersion {
                node_set: "data".into(),
                zone: b.into(),
                release: NEW.into(),
            })
        );
    }

    fn next_step_of(g: &Goal, o: &Observed) -> Option<Step> {
        crate::plan::next_step(g, o)
    }

    /// Runs the rotation in a small world where an updated group's nodes
    /// come back at the new release with their pods not ready, and checks
    /// on the way: one group away at a time, green before each group, every
    /// pod of a group told of its restart (COMPLETE) before EKS touches it,
    /// masters last, and at the end every group at the new release, every
    /// shutdown gone, green.
    #[test]
    fn a_rotation_moves_one_zone_group_at_a_time_masters_last() {
        for data in [1, 3, 5] {
            let s = spec(data);
            let g = goal(&s);
            let mut o = world(&s, OLD);
            let mut order = Vec::new();
            let mut away: Option<(String, String, usize)> = None;
            for _ in 0..500 {
                let Some(step) = next_step_of(&g, &o) else {
                    break;
                };
                match &step {
                    Step::RegisterShutdown { node_set, ordinal } => {
                        assert!(away.is_none(), "{data}: a shutdown while a group is away");
                        health(&mut o)
                            .shutdowns
                            .insert(node_key(node_set, *ordinal), false);
                        health(&mut o).status = Health::Yellow;
                    }
                    Step::WaitShutdownReady { node_set, ordinal } => {
                        health(&mut o)
                            .shutdowns
                            .insert(node_key(node_set, *ordinal), true);
                    }
                    Step::UpdateNodeGroupVersion {
                        node_set,
                        zone,
                        release,
                    } => {
                        assert!(away.is_none(), "{data}: two groups away at once");
                        let zones = s.zones.clone();
                        let hosted: Vec<i32> = (0..s
                            .node_sets
                            .iter()
                            .find(|n| &n.name == node_set)
                            .map_or(0, |n| n.count))
                            .filter(|o| placement::zone_of(&zones, *o) == Some(zone.as_str()))
                            .collect();
                        for p in &hosted {
                            assert_eq!(
                                o.health
                                    .as_ref()
                                    .and_then(|h| h.shutdowns.get(&node_key(node_set, *p))),
                                Some(&true),
                                "{data}: {node_set}-{p} not ready to restart"
                            );
                        }
                        let z = zone_mut(&mut o, node_set, zone);
                        z.status = NodeGroupStatus::Updating;
                        z.release_version = release.clone();
                        if let Some(w) = o.workloads.get_mut(node_set) {
                            w.ready_replicas -= i32::try_from(hosted.len()).unwrap_or(0);
                        }
                        order.push((node_set.clone(), zone.clone()));
                        away = Some((node_set.clone(), zone.clone(), hosted.len()));
                    }
                    Step::WaitNodeGroupActive { node_set } => {
                        let (n, z, hosted) = away.clone().expect("a group away");
                        assert_eq!(&n, node_set);
                        zone_mut(&mut o, &n, &z).status = NodeGroupStatus::Active;
                        if hosted == 0 {
                            away = None;
                        }
                    }
                    Step::WaitPodsReady { node_set } => {
                        if let Some(w) = o.workloads.get_mut(node_set) {
                            w.ready_replicas = w.replicas;
                        }
                        away = None;
                    }
                    Step::ClearShutdown { node_set, ordinal } => {
                        health(&mut o)
                            .shutdowns
                            .remove(&node_key(node_set, *ordinal));
                    }
                    Step::WaitHealthy => {
                        assert!(away.is_none());
                        if health(&mut o).shutdowns.is_empty() {
                            health(&mut o).status = Health::Green;
                        }
                    }
                    other => panic!("{data}: unexpected {other:?}"),
                }
            }
            assert_eq!(next_step_of(&g, &o), None, "{data}: finished");
            let want: Vec<(String, String)> = ["data", "masters"]
                .iter()
                .flat_map(|ns| ZONES.iter().map(move |z| (ns.to_string(), z.to_string())))
                .collect();
            assert_eq!(
                order, want,
                "{data}: each group once, data first, zones in order"
            );
            for g in o.node_groups.values() {
                for z in g.zones.values() {
                    assert_eq!(z.release_version, NEW);
                }
            }
            let h = o.health.as_ref().expect("health");
            assert!(h.shutdowns.is_empty());
            assert_eq!(h.status, Health::Green);
        }
    }

    #[test]
    fn the_rotation_does_its_work_in_its_stage_and_gates_in_the_health_gate() {
        let s = spec(1);
        let g = goal(&s);
        assert_eq!(
            g.stage_of(&Step::WaitHealthy),
            crate::operation::StageName::HealthGate
        );
        for step in [
            Step::RegisterShutdown {
                node_set: "data".into(),
                ordinal: 0,
            },
            Step::WaitNodeGroupActive {
                node_set: "data".into(),
            },
            Step::WaitPodsReady {
                node_set: "data".into(),
            },
        ] {
            assert_eq!(g.stage_of(&step), crate::operation::StageName::RotateNodes);
        }
        assert_eq!(
            Goal::Converge(s.clone()).stage_of(&Step::WaitPodsReady {
                node_set: "data".into()
            }),
            crate::operation::StageName::PodsReady
        );
    }
}
