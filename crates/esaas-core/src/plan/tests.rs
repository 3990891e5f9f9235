//! The planner by table (the policy, case by case) and by property (from any
//! observed state, repeatedly taking the next step in a simulated world
//! reaches the goal, and never removes a pod that still holds shards).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::spec::{NodeRole, NodeSet};

fn ng(size: i32, status: NodeGroupStatus) -> NodeGroupObs {
    NodeGroupObs {
        instance_type: "r6i.large".into(),
        desired_size: size,
        status,
        message: String::new(),
        zones: Default::default(),
    }
}

fn wl(replicas: i32, ready: i32) -> WorkloadObs {
    WorkloadObs {
        replicas,
        ready_replicas: ready,
        version: "8.15.3".into(),
        up_to_date: true,
        updated_replicas: replicas,
        partition: 0,
        claims_up_to_date: true,
        volumes: Vec::new(),
        master_eligible: false,
    }
}

/// Settled volumes of `ns` for ordinals `0..n`, at its size and class.
fn vols(ns: &NodeSet, n: i32) -> Vec<VolumeObs> {
    (0..n)
        .map(|ordinal| VolumeObs {
            ordinal,
            requested_gib: ns.storage_gib,
            capacity_gib: ns.storage_gib,
            attributes_class: Some(ns.attributes_class()),
            current_attributes_class: Some(ns.attributes_class()),
        })
        .collect()
}

fn green() -> Option<HealthObs> {
    Some(HealthObs {
        status: Health::Green,
        reason: String::new(),
        shards_on_excluded: BTreeMap::new(),
        shutdowns: BTreeMap::new(),
        voting_exclusions: Default::default(),
        yellow_from_versions: false,
        disk_percent: Default::default(),
    })
}

fn converged(spec: &ClusterSpec) -> Observed {
    Observed {
        base_objects: true,
        node_groups: spec
            .node_sets
            .iter()
            .map(|n| (n.name.clone(), ng(n.count, NodeGroupStatus::Active)))
            .collect(),
        workloads: spec
            .node_sets
            .iter()
            .map(|n| {
                let mut w = wl(n.count, n.count);
                w.volumes = vols(n, n.count);
                (n.name.clone(), w)
            })
            .collect(),
        health: green(),
        certificates_rotated_by: None,
        snapshot_repository: None,
        snapshots: None,
        restore: None,
    }
}

#[test]
fn a_green_cluster_without_its_snapshot_repository_registers_it_last() {
    let spec = ClusterSpec::test().with_nodes(3);
    let goal = Goal::Converge(spec.clone());
    let yellow = {
        let mut o = converged(&spec);
        if let Some(h) = o.health.as_mut() {
            h.status = Health::Yellow;
        }
        o.snapshot_repository = Some(false);
        o
    };
    let silent = {
        let mut o = converged(&spec);
        o.health = None;
        o.snapshot_repository = Some(false);
        o
    };
    // (case, observed, next step)
    let cases = [
        ("snapshots off", converged(&spec), None),
        (
            "missing",
            Observed {
                snapshot_repository: Some(false),
                ..converged(&spec)
            },
            Some(Step::RegisterRepository),
        ),
        (
            "registered",
            Observed {
                snapshot_repository: Some(true),
                ..converged(&spec)
            },
            None,
        ),
        ("not green yet", yellow, Some(Step::WaitHealthy)),
        ("not answering", silent, Some(Step::WaitHealthy)),
        (
            "pods missing first",
            Observed {
                base_objects: false,
                snapshot_repository: Some(false),
                ..converged(&spec)
            },
            Some(Step::ApplyBaseObjects),
        ),
    ];
    for (case, observed, want) in cases {
        assert_eq!(next_step(&goal, &observed), want, "{case}");
    }
    let step = Step::RegisterRepository;
    assert!(!step.is_wait());
    for kind in [
        OperationKind::Create,
        OperationKind::Update,
        OperationKind::Repair,
    ] {
        assert_eq!(kind.stages().last(), Some(&step.stage()), "{kind:?}");
    }
    // A delete or a rotation never registers one.
    let missing = Observed {
        snapshot_repository: Some(false),
        ..converged(&spec)
    };
    let rotate = Goal::RotateCertificates {
        operation: uuid::Uuid::nil(),
    };
    let rotated = Observed {
        certificates_rotated_by: Some(uuid::Uuid::nil()),
        ..missing.clone()
    };
    assert_eq!(next_step(&rotate, &rotated), None);
}

#[test]
fn a_new_cluster_is_built_in_order() {
    let spec = ClusterSpec::test().with_nodes(3);
    let goal = Goal::Converge(spec.clone());
    let mut o = Observed::default();
    assert_eq!(next_step(&goal, &o), Some(Step::ApplyBaseObjects));
    o.base_objects = true;
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::EnsureNodeGroup {
            node_set: "default".into(),
            size: 3
        })
    );
    o.node_groups
        .insert("default".into(), ng(3, NodeGroupStatus::Creating));
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::WaitNodeGroupActive {
            node_set: "default".into()
        })
    );
    o.node_groups
        .insert("default".into(), ng(3, NodeGroupStatus::Active));
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ApplyWorkload {
            node_set: "default".into(),
            replicas: 3
        })
    );
    o.workloads.insert("default".into(), wl(3, 1));
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::WaitPodsReady {
            node_set: "default".into()
        })
    );
    let mut w = wl(3, 3);
    w.volumes = vols(&spec.node_sets[0], 3);
    o.workloads.insert("default".into(), w);
    assert_eq!(next_step(&goal, &o), Some(Step::WaitHealthy));
    o.health = green();
    assert_eq!(next_step(&goal, &o), None);
    assert_eq!(o, converged(&spec));
}

#[test]
fn a_node_group_changes_only_when_active() {
    let spec = ClusterSpec::test().with_nodes(5);
    let mut o = converged(&ClusterSpec::test().with_nodes(3));
    o.node_groups
        .insert("default".into(), ng(3, NodeGroupStatus::Updating));
    assert_eq!(
        next_step(&Goal::Converge(spec), &o),
        Some(Step::WaitNodeGroupActive {
            node_set: "default".into()
        })
    );
}

#[test]
fn growing_adds_capacity_before_pods() {
    let spec = ClusterSpec::test().with_nodes(5);
    let o = converged(&ClusterSpec::test().with_nodes(3));
    assert_eq!(
        next_step(&Goal::Converge(spec), &o),
        Some(Step::EnsureNodeGroup {
            node_set: "default".into(),
            size: 5
        })
    );
}

#[test]
fn shrinking_drains_one_pod_at_a_time_and_fails_closed() {
    let spec = ClusterSpec::test().with_nodes(2);
    let goal = Goal::Converge(spec);
    let mut o = converged(&ClusterSpec::test().with_nodes(3));
    let drain = Step::DrainNode {
        node_set: "default".into(),
        ordinal: 2,
    };
    assert_eq!(next_step(&goal, &o), Some(drain));
    let key = node_key("default", 2);
    o.health
        .as_mut()
        .expect("health")
        .shards_on_excluded
        .insert(key.clone(), 4);
    let wait = Step::WaitDrained {
        node_set: "default".into(),
        ordinal: 2,
    };
    assert_eq!(next_step(&goal, &o), Some(wait.clone()));
    // Elasticsearch unreachable: not "drained".
    let mut unknown = o.clone();
    unknown.health = None;
    assert_eq!(next_step(&goal, &unknown), Some(wait));
    o.health
        .as_mut()
        .expect("health")
        .shards_on_excluded
        .insert(key.clone(), 0);
    // Drained; master-eligible, so out of the voting configuration before it goes.
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ExcludeFromVoting {
            node_set: "default".into(),
            ordinal: 2
        })
    );
    o.health
        .as_mut()
        .expect("health")
        .voting_exclusions
        .insert(key.clone());
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ApplyWorkload {
            node_set: "default".into(),
            replicas: 2
        })
    );
    // Gone: its exclusions are cleared, then the node group follows the pods down.
    o.workloads.insert("default".into(), wl(2, 2));
    let h = o.health.as_mut().expect("health");
    h.shards_on_excluded.remove(&key);
    assert_eq!(next_step(&goal, &o), Some(Step::ClearVotingExclusions));
    o.health.as_mut().expect("health").voting_exclusions.clear();
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::EnsureNodeGroup {
            node_set: "default".into(),
            size: 2
        })
    );
}

#[test]
fn an_upgrade_moves_one_pod_at_a_time_with_green_in_between() {
    let spec = ClusterSpec::test().with_nodes(3).with_version("8.17.1");
    let goal = Goal::Converge(spec.clone());
    let mut o = converged(&spec);
    // The new template is held at partition 3: pod 2 goes first.
    let w = o.workloads.get_mut("default").expect("w");
    w.partition = 3;
    w.updated_replicas = 0;
    let roll = |p| Step::RollPod {
        node_set: "default".into(),
        partition: p,
    };
    // Elasticsearch learns first that the node restarts, and is ready for it.
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::RegisterShutdown {
            node_set: "default".into(),
            ordinal: 2
        })
    );
    fn shutdowns(o: &mut Observed) -> &mut BTreeMap<String, bool> {
        &mut o.health.as_mut().expect("h").shutdowns
    }
    shutdowns(&mut o).insert(node_key("default", 2), false);
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::WaitShutdownReady {
            node_set: "default".into(),
            ordinal: 2
        })
    );
    shutdowns(&mut o).insert(node_key("default", 2), true);
    assert_eq!(next_step(&goal, &o), Some(roll(2)));
    let w = o.workloads.get_mut("default").expect("w");
    w.partition = 2;
    w.ready_replicas = 2;
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::WaitPodsReady {
            node_set: "default".into()
        })
    );
    let w = o.workloads.get_mut("default").expect("w");
    w.updated_replicas = 1;
    w.ready_replicas = 3;
    o.health.as_mut().expect("h").status = Health::Yellow;
    // Back: its shutdown goes, then green before the next pod's turn.
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ClearShutdown {
            node_set: "default".into(),
            ordinal: 2
        })
    );
    shutdowns(&mut o).clear();
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::WaitHealthy),
        "green before the next pod"
    );
    o.health.as_mut().expect("h").status = Health::Green;
    shutdowns(&mut o).insert(node_key("default", 1), true);
    assert_eq!(next_step(&goal, &o), Some(roll(1)));
}

#[test]
fn a_pod_wanted_again_is_included_again() {
    let spec = ClusterSpec::test().with_nodes(3);
    let mut o = converged(&spec);
    o.health
        .as_mut()
        .expect("h")
        .shards_on_excluded
        .insert(node_key("default", 2), 0);
    assert_eq!(
        next_step(&Goal::Converge(spec), &o),
        Some(Step::IncludeNode {
            node_set: "default".into(),
            ordinal: 2
        })
    );
}

#[test]
fn an_upgrade_reapplies_the_workload_then_gates_on_health() {
    let spec = ClusterSpec::test().with_nodes(3).with_version("8.17.1");
    let mut o = converged(&ClusterSpec::test().with_nodes(3));
    o.workloads.get_mut("default").expect("w").up_to_date = false;
    assert_eq!(
        next_step(&Goal::Converge(spec.clone()), &o),
        Some(Step::ApplyWorkload {
            node_set: "default".into(),
            replicas: 3
        })
    );
    let mut o = converged(&spec);
    o.health.as_mut().expect("h").status = Health::Yellow;
    assert_eq!(
        next_step(&Goal::Converge(spec), &o),
        Some(Step::WaitHealthy)
    );
}

#[test]
fn delete_removes_pods_then_objects_then_node_groups() {
    let goal = Goal::Delete {
        retention: VolumeRetention::Delete,
        final_snapshot: None,
    };
    let mut o = converged(&ClusterSpec::test().with_nodes(3));
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::DeleteWorkload {
            node_set: "default".into()
        })
    );
    o.workloads.clear();
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::DeleteBaseObjects {
            retention: VolumeRetention::Delete
        })
    );
    o.base_objects = false;
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::DeleteNodeGroup {
            node_set: "default".into()
        })
    );
    o.node_groups
        .insert("default".into(), ng(3, NodeGroupStatus::Deleting));
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::WaitNodeGroupGone {
            node_set: "default".into()
        })
    );
    o.node_groups.clear();
    assert_eq!(next_step(&goal, &o), None);
}

/// What the backends would do for each step, with time passing on waits.
fn simulate(step: &Step, w: &mut Observed, spec: &ClusterSpec) {
    let spec_version = spec.version.as_str();
    match step {
        Step::ApplyBaseObjects => w.base_objects = true,
        Step::RotateCertificates | Step::UpdateNodeGroupVersion { .. } => {}
        Step::RegisterRepository => w.snapshot_repository = Some(true),
        Step::TakeSnapshot { name } => {
            w.snapshots
                .get_or_insert_with(Vec::new)
                .push(crate::snapshots::SnapshotObs {
                    name: name.clone(),
                    state: crate::snapshots::SnapshotState::Success,
                    reason: String::new(),
                    indices: vec!["logs".into()],
                    start_time: None,
                    end_time: None,
                })
        }
        Step::DeleteSnapshot { name } => {
            if let Some(list) = w.snapshots.as_mut() {
                list.retain(|s| &s.name != name);
            }
        }
        Step::RegisterSourceRepository => {
            if let Some(r) = w.restore.as_mut() {
                r.source_registered = true;
            }
        }
        Step::RestoreSnapshot => {
            if let Some(r) = w.restore.as_mut() {
                r.pending.clear();
            }
        }
        Step::WaitSnapshot { .. } | Step::WaitRestore => {}
        Step::EnsureNodeGroup { node_set, size } => {
            let status = if w.node_groups.contains_key(node_set) {
                NodeGroupStatus::Updating
            } else {
                NodeGroupStatus::Creating
            };
            w.node_groups.insert(node_set.clone(), ng(*size, status));
        }
        Step::WaitNodeGroupActive { node_set } => {
            if let Some(g) = w.node_groups.get_mut(node_set) {
                g.status = NodeGroupStatus::Active;
            }
        }
        Step::DrainNode { node_set, ordinal } => {
            let h = w.health.get_or_insert_with(|| HealthObs {
                status: Health::Yellow,
                reason: "relocating".into(),
                shards_on_excluded: BTreeMap::new(),
                shutdowns: BTreeMap::new(),
                voting_exclusions: Default::default(),
                yellow_from_versions: false,
                disk_percent: Default::default(),
            });
            h.shards_on_excluded.insert(node_key(node_set, *ordinal), 3);
        }
        Step::IncludeNode { node_set, ordinal } => {
            if let Some(h) = w.health.as_mut() {
                h.shards_on_excluded.remove(&node_key(node_set, *ordinal));
            }
        }
        Step::WaitDrained { node_set, ordinal } => {
            let h = w.health.get_or_insert_with(|| HealthObs {
                status: Health::Yellow,
                reason: "relocating".into(),
                shards_on_excluded: BTreeMap::new(),
                shutdowns: BTreeMap::new(),
                voting_exclusions: Default::default(),
                yellow_from_versions: false,
                disk_percent: Default::default(),
            });
            if let Some(n) = h.shards_on_excluded.get_mut(&node_key(node_set, *ordinal)) {
                *n = n.saturating_sub(1);
            }
        }
        Step::ApplyWorkload { node_set, replicas } => {
            let before = w.workloads.get(node_set).cloned();
            let ready = before.as_ref().map(|x| x.ready_replicas).unwrap_or(0);
            // Like the backend: a changed template on running pods is held at
            // partition = replicas (nothing rolls until the planner says so).
            let partition = match &before {
                Some(x) if !x.up_to_date => (*replicas).min(x.replicas),
                Some(x) => x.partition.min(*replicas),
                None => 0,
            };
            // Like the StatefulSet controller: a new pod gets a claim from the
            // template; a removed pod's claim goes (whenScaled: Delete). The
            // claim template of an existing StatefulSet cannot change.
            let ns = spec.node_sets.iter().find(|n| &n.name == node_set);
            let (claims_up_to_date, mut volumes) = match &before {
                Some(x) => (x.claims_up_to_date, x.volumes.clone()),
                None => (true, Vec::new()),
            };
            volumes.retain(|v| v.ordinal < *replicas);
            if let Some(ns) = ns {
                for ordinal in 0..*replicas {
                    if !volumes.iter().any(|v| v.ordinal == ordinal) {
                        volumes.extend(vols(ns, ordinal + 1).pop());
                    }
                }
            }
            w.workloads.insert(
                node_set.clone(),
                WorkloadObs {
                    replicas: *replicas,
                    ready_replicas: ready.min(*replicas),
                    version: spec_version.into(),
                    up_to_date: true,
                    updated_replicas: replicas - partition,
                    partition,
                    claims_up_to_date,
                    volumes,
                    master_eligible: ns.is_some_and(|n| n.is_master_eligible())
                        || before.as_ref().is_some_and(|b| b.master_eligible),
                },
            );
            if let Some(h) = w.health.as_mut() {
                // excludes of pods that are gone are cleared
                h.shards_on_excluded.retain(|k, _| {
                    k.split_once('/').is_none_or(|(ns, ord)| {
                        ns != node_set || ord.parse::<i32>().is_ok_and(|o| o < *replicas)
                    })
                });
                h.status = Health::Yellow;
            }
        }
        Step::RollPod {
            node_set,
            partition,
        } => {
            if let Some(x) = w.workloads.get_mut(node_set) {
                x.partition = *partition;
                x.updated_replicas = x.replicas - partition;
                // the moved pod restarts
                x.ready_replicas = x.replicas - 1;
            }
            if let Some(h) = w.health.as_mut() {
                h.status = Health::Yellow;
            }
        }
        Step::ResizeVolumes {
            node_set,
            storage_gib,
            attributes_class,
        } => {
            if let Some(x) = w.workloads.get_mut(node_set) {
                for v in x.volumes.iter_mut().filter(|v| v.ordinal < x.replicas) {
                    v.requested_gib = v.requested_gib.max(*storage_gib);
                    v.attributes_class = Some(attributes_class.clone());
                }
            }
        }
        Step::WaitVolumesResized { node_set } => {
            if let Some(x) = w.workloads.get_mut(node_set) {
                for v in &mut x.volumes {
                    v.capacity_gib = v.requested_gib;
                    v.current_attributes_class = v.attributes_class.clone();
                }
            }
        }
        // Deleted with its pods orphaned, then applied again at once (the
        // next ApplyWorkload, which here is the same look): the new object
        // renders its claim template from the spec and adopts the pods.
        Step::OrphanWorkload { node_set } => {
            if let Some(x) = w.workloads.get_mut(node_set) {
                x.claims_up_to_date = true;
            }
        }
        Step::RegisterShutdown { node_set, ordinal } => {
            if let Some(h) = w.health.as_mut() {
                h.shutdowns.insert(node_key(node_set, *ordinal), false);
            }
        }
        Step::WaitShutdownReady { node_set, ordinal } => {
            if let Some(h) = w.health.as_mut() {
                h.shutdowns.insert(node_key(node_set, *ordinal), true);
            }
        }
        Step::ClearShutdown { node_set, ordinal } => {
            if let Some(h) = w.health.as_mut() {
                h.shutdowns.remove(&node_key(node_set, *ordinal));
            }
        }
        Step::ExcludeFromVoting { node_set, ordinal } => {
            if let Some(h) = w.health.as_mut() {
                h.voting_exclusions.insert(node_key(node_set, *ordinal));
            }
        }
        Step::ClearVotingExclusions => {
            if let Some(h) = w.health.as_mut() {
                h.voting_exclusions.clear();
            }
        }
        Step::WaitPodsReady { node_set } => {
            if let Some(x) = w.workloads.get_mut(node_set) {
                x.ready_replicas = x.replicas;
            }
        }
        Step::WaitHealthy => {
            let h = w.health.get_or_insert_with(|| HealthObs {
                status: Health::Yellow,
                reason: String::new(),
                shards_on_excluded: BTreeMap::new(),
                shutdowns: BTreeMap::new(),
                voting_exclusions: Default::default(),
                yellow_from_versions: false,
                disk_percent: Default::default(),
            });
            h.status = Health::Green;
        }
        Step::DeleteWorkload { node_set } => {
            w.workloads.remove(node_set);
        }
        Step::DeleteNodeGroup { node_set } => {
            if let Some(g) = w.node_groups.get_mut(node_set) {
                g.status = NodeGroupStatus::Deleting;
            }
        }
        Step::WaitNodeGroupGone { node_set } => {
            w.node_groups.remove(node_set);
        }
        Step::DeleteBaseObjects { .. } => w.base_objects = false,
    }
}

const NAMES: [&str; 4] = ["masters", "data", "hot", "ml"];

fn arb_spec() -> impl Strategy<Value = ClusterSpec> {
    (
        1usize..=3,
        proptest::collection::vec(1i32..=6, 3),
        "8.15.3|8.17.1",
    )
        .prop_map(|(n, counts, version)| {
            let mut spec = ClusterSpec::test().with_version(&version);
            spec.node_sets = (0..n)
                .map(|i| NodeSet {
                    name: NAMES[i].into(),
                    roles: if i == 0 {
                        vec![NodeRole::Master, NodeRole::Data]
                    } else {
                        vec![NodeRole::Data]
                    },
                    count: counts[i],
                    ..NodeSet::test(NAMES[i])
                })
                .collect();
            spec
        })
}

fn arb_status() -> impl Strategy<Value = NodeGroupStatus> {
    prop_oneof![
        Just(NodeGroupStatus::Creating),
        Just(NodeGroupStatus::Active),
        Just(NodeGroupStatus::Updating),
        Just(NodeGroupStatus::Deleting),
    ]
}

fn arb_observed() -> impl Strategy<Value = Observed> {
    let groups = proptest::collection::btree_map(
        proptest::sample::select(NAMES.to_vec()),
        (0i32..=8, arb_status()),
        0..=4,
    );
    let loads = proptest::collection::btree_map(
        proptest::sample::select(NAMES.to_vec()),
        (
            0i32..=8,
            0i32..=8,
            any::<bool>(),
            any::<bool>(),
            // per volume: requested size, settled, the spec's class
            proptest::collection::vec(
                (
                    prop_oneof![Just(20), Just(50), Just(80)],
                    any::<bool>(),
                    any::<bool>(),
                ),
                8,
            ),
        ),
        0..=4,
    );
    let health = proptest::option::of((
        prop_oneof![Just(Health::Green), Just(Health::Yellow), Just(Health::Red)],
        proptest::collection::btree_map(
            (proptest::sample::select(NAMES.to_vec()), 0i32..8),
            0u64..4,
            0..3,
        ),
        proptest::collection::btree_map(
            (proptest::sample::select(NAMES.to_vec()), 0i32..8),
            any::<bool>(),
            0..2,
        ),
        proptest::collection::btree_set((proptest::sample::select(NAMES.to_vec()), 0i32..8), 0..2),
    ));
    (any::<bool>(), groups, loads, health).prop_map(|(base, groups, loads, health)| Observed {
        base_objects: base,
        node_groups: groups
            .into_iter()
            .map(|(k, (size, status))| (k.to_string(), ng(size, status)))
            .collect(),
        workloads: loads
            .into_iter()
            .map(|(k, (r, ready, up, claims, volumes))| {
                let class = NodeSet::test(k).attributes_class();
                let volumes = volumes
                    .into_iter()
                    .take(usize::try_from(r).unwrap_or(0))
                    .zip(0..)
                    .map(|((gib, settled, same_class), ordinal)| {
                        let class = Some(if same_class {
                            class.clone()
                        } else {
                            "old".into()
                        });
                        VolumeObs {
                            ordinal,
                            requested_gib: gib,
                            capacity_gib: if settled { gib } else { gib / 2 },
                            attributes_class: class.clone(),
                            current_attributes_class: if settled { class } else { None },
                        }
                    })
                    .collect();
                (
                    k.to_string(),
                    WorkloadObs {
                        replicas: r,
                        ready_replicas: ready.min(r),
                        version: "8.15.3".into(),
                        up_to_date: up,
                        updated_replicas: r,
                        partition: 0,
                        claims_up_to_date: claims,
                        volumes,
                        master_eligible: k == "masters",
                    },
                )
            })
            .collect(),
        health: health.map(|(status, ex, shutdowns, voting)| HealthObs {
            status,
            reason: String::new(),
            shards_on_excluded: ex
                .into_iter()
                .map(|((ns, o), n)| (node_key(ns, o), n))
                .collect(),
            shutdowns: shutdowns
                .into_iter()
                .map(|((ns, o), done)| (node_key(ns, o), done))
                .collect(),
            voting_exclusions: voting.into_iter().map(|(ns, o)| node_key(ns, o)).collect(),
            yellow_from_versions: false,
            disk_percent: Default::default(),
        }),
        certificates_rotated_by: None,
        snapshot_repository: None,
        snapshots: None,
        restore: None,
    })
}

/// Runs the planner in the simulated world until it says done; checks the
/// safety rules at every step. Returns the final world and the step count.
fn run(
    goal: &Goal,
    mut world: Observed,
    spec: &ClusterSpec,
) -> Result<(Observed, usize), TestCaseError> {
    let mut masters_rolled = false;
    for steps in 0..1000 {
        let Some(step) = next_step(goal, &world) else {
            return Ok((world, steps));
        };
        if let Step::RollPod {
            node_set,
            partition,
        } = &step
        {
            let key = node_key(node_set, *partition);
            prop_assert_eq!(
                world.health.as_ref().and_then(|h| h.shutdowns.get(&key)),
                Some(&true),
                "restarted {} without a COMPLETE shutdown",
                key
            );
        }
        if let Step::RollPod { node_set, .. } = &step {
            let master = spec
                .node_sets
                .iter()
                .any(|n| &n.name == node_set && n.is_master_eligible());
            prop_assert!(
                master || !masters_rolled,
                "{} rolled after a master-eligible node set",
                node_set
            );
            masters_rolled |= master;
        }
        if let Step::OrphanWorkload { node_set } = &step
            && let Some(ns) = spec.node_sets.iter().find(|n| &n.name == node_set)
        {
            // The StatefulSet is replaced only once every kept volume has grown.
            let w = &world.workloads[node_set];
            for v in w.volumes.iter().filter(|v| v.ordinal < w.replicas) {
                prop_assert!(
                    v.settled() && v.requested_gib >= ns.storage_gib,
                    "replaced {} before its volumes grew: {:?}",
                    node_set,
                    v
                );
            }
        }
        if let Step::RollPod { node_set, .. } = &step {
            let w = &world.workloads[node_set];
            prop_assert_eq!(
                w.ready_replicas,
                w.replicas,
                "rolled {} with pods not ready",
                node_set
            );
            prop_assert_eq!(
                world.health.as_ref().map(|h| h.status),
                Some(Health::Green),
                "rolled {} without green",
                node_set
            );
        }
        if let Step::EnsureNodeGroup { node_set, .. } = &step
            && let Some(g) = world.node_groups.get(node_set)
        {
            prop_assert_eq!(
                g.status,
                NodeGroupStatus::Active,
                "resized {} while not ACTIVE",
                node_set
            );
        }
        if let Step::ApplyWorkload { node_set, replicas } = &step {
            let before = world
                .workloads
                .get(node_set)
                .map(|w| w.replicas)
                .unwrap_or(0);
            // A pod leaves only after Elasticsearch said it holds no shards.
            for ordinal in *replicas..before {
                let shards = world
                    .health
                    .as_ref()
                    .and_then(|h| h.shards_on_excluded.get(&node_key(node_set, ordinal)));
                prop_assert_eq!(
                    shards,
                    Some(&0),
                    "removed {}/{} without a drain",
                    node_set,
                    ordinal
                );
            }
            prop_assert!(
                before - replicas <= 1 || *replicas >= before,
                "more than one pod at a time"
            );
            // A master-eligible pod leaves only out of the voting configuration.
            let master = world
                .workloads
                .get(node_set)
                .is_some_and(|w| w.master_eligible)
                || spec
                    .node_sets
                    .iter()
                    .any(|n| &n.name == node_set && n.is_master_eligible());
            for ordinal in *replicas..before {
                let key = node_key(node_set, ordinal);
                prop_assert!(
                    !master
                        || world
                            .health
                            .as_ref()
                            .is_some_and(|h| h.voting_exclusions.contains(&key)),
                    "{} left without a voting exclusion",
                    key
                );
            }
        }
        simulate(&step, &mut world, spec);
    }
    Err(TestCaseError::fail("no convergence in 1000 steps"))
}

proptest! {
    #[test]
    fn converges_to_the_spec_from_any_state(spec in arb_spec(), start in arb_observed()) {
        let goal = Goal::Converge(spec.clone());
        let (end, _) = run(&goal, start, &spec)?;
        prop_assert!(end.base_objects);
        prop_assert_eq!(end.node_groups.len(), spec.node_sets.len());
        prop_assert_eq!(end.workloads.len(), spec.node_sets.len());
        for ns in &spec.node_sets {
            let g = &end.node_groups[&ns.name];
            prop_assert_eq!((g.desired_size, g.status), (ns.count, NodeGroupStatus::Active));
            let w = &end.workloads[&ns.name];
            prop_assert_eq!((w.replicas, w.ready_replicas, w.up_to_date), (ns.count, ns.count, true));
            prop_assert_eq!((w.partition, w.updated_replicas), (0, ns.count));
            prop_assert!(w.claims_up_to_date);
            // Every pod's volume has at least the spec's size and its class; no
            // volume of a removed pod is left.
            prop_assert_eq!(w.volumes.len(), usize::try_from(ns.count).unwrap_or(0));
            for v in &w.volumes {
                prop_assert!(v.settled() && v.requested_gib >= ns.storage_gib, "{:?}", v);
                prop_assert_eq!(v.attributes_class.clone(), Some(ns.attributes_class()));
            }
        }
        let end_health = end.health.expect("health");
        prop_assert_eq!(end_health.status, Health::Green);
        prop_assert!(end_health.shutdowns.is_empty(), "{:?}", end_health.shutdowns);
        prop_assert!(end_health.voting_exclusions.is_empty());
        // No pod the spec wants is left excluded from shard allocation.
        for ns in &spec.node_sets {
            for ordinal in 0..ns.count {
                prop_assert!(!end_health.shards_on_excluded.contains_key(&node_key(&ns.name, ordinal)));
            }
        }
    }

    #[test]
    fn delete_removes_everything_from_any_state(start in arb_observed(), retain in any::<bool>()) {
        let retention = if retain { VolumeRetention::Retain } else { VolumeRetention::Delete };
        let (end, _) = run(&Goal::Delete { retention, final_snapshot: None }, start, &ClusterSpec::test())?;
        prop_assert!(!end.base_objects);
        prop_assert!(end.node_groups.is_empty());
        prop_assert!(end.workloads.is_empty());
    }

    #[test]
    fn a_converged_cluster_needs_nothing(spec in arb_spec()) {
        prop_assert_eq!(next_step(&Goal::Converge(spec.clone()), &converged(&spec)), None);
    }
}

#[test]
fn storage_grows_online_then_the_stateful_set_is_replaced_around_its_pods() {
    let before = ClusterSpec::test().with_nodes(3);
    let mut o = converged(&before);
    let mut spec = before.clone();
    spec.node_sets[0].storage_gib = 80;
    spec.node_sets[0].storage_iops = 6000;
    let goal = Goal::Converge(spec.clone());
    let class = spec.node_sets[0].attributes_class();
    assert_eq!(class, "esaas-gp3-6000iops-125mibps");
    // The claims first: the template cannot change on the StatefulSet.
    o.workloads.get_mut("default").unwrap().claims_up_to_date = false;
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ResizeVolumes {
            node_set: "default".into(),
            storage_gib: 80,
            attributes_class: class.clone(),
        })
    );
    for v in &mut o.workloads.get_mut("default").unwrap().volumes {
        v.requested_gib = 80;
        v.attributes_class = Some(class.clone());
    }
    // Until the file systems have grown and EBS has the new IOPS.
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::WaitVolumesResized {
            node_set: "default".into()
        })
    );
    for v in &mut o.workloads.get_mut("default").unwrap().volumes {
        v.capacity_gib = 80;
        v.current_attributes_class = Some(class.clone());
    }
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::OrphanWorkload {
            node_set: "default".into()
        })
    );
    // Killed after the orphaning delete: the StatefulSet is applied again.
    o.workloads.remove("default");
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ApplyWorkload {
            node_set: "default".into(),
            replicas: 3
        })
    );
    let mut w = wl(3, 3);
    w.volumes = vols(&spec.node_sets[0], 3);
    o.workloads.insert("default".into(), w);
    assert_eq!(next_step(&goal, &o), None, "no pod restarted, nothing left");
}

#[test]
fn a_volume_larger_than_the_spec_is_left_alone() {
    let spec = ClusterSpec::test().with_nodes(2);
    let mut o = converged(&spec);
    o.workloads.get_mut("default").unwrap().volumes[1].requested_gib = 500;
    o.workloads.get_mut("default").unwrap().volumes[1].capacity_gib = 500;
    assert_eq!(next_step(&Goal::Converge(spec), &o), None);
}

#[test]
fn only_the_volumes_of_pods_that_stay_are_grown() {
    // 3 -> 2 nodes and 50 -> 80 GiB: the pod that leaves first, then the two
    // volumes that stay.
    let before = ClusterSpec::test().with_nodes(3);
    let mut o = converged(&before);
    let mut spec = ClusterSpec::test().with_nodes(2);
    spec.node_sets[0].storage_gib = 80;
    let goal = Goal::Converge(spec.clone());
    assert!(matches!(
        next_step(&goal, &o),
        Some(Step::DrainNode { ordinal: 2, .. })
    ));
    let w = o.workloads.get_mut("default").unwrap();
    w.replicas = 2;
    w.ready_replicas = 2;
    w.updated_replicas = 2;
    assert!(matches!(
        next_step(&goal, &o),
        Some(Step::ResizeVolumes {
            storage_gib: 80,
            ..
        })
    ));
    let w = o.workloads.get_mut("default").unwrap();
    for v in w.volumes.iter_mut().filter(|v| v.ordinal < 2) {
        v.requested_gib = 80;
        v.capacity_gib = 80;
    }
    // The third volume (its pod gone, its claim not yet) does not hold things up.
    let next = next_step(&goal, &o);
    assert!(
        matches!(next, Some(Step::EnsureNodeGroup { size: 2, .. })),
        "the node group follows the pods down: {next:?}"
    );
}

/// Two node sets: `masters` (master-eligible) first in the spec, `data` second.
fn masters_and_data() -> ClusterSpec {
    let mut spec = ClusterSpec::test();
    spec.node_sets = vec![
        NodeSet {
            count: 3,
            roles: vec![NodeRole::Master],
            ..NodeSet::test("masters")
        },
        NodeSet {
            count: 2,
            roles: vec![NodeRole::Data],
            ..NodeSet::test("data")
        },
    ];
    spec
}

#[test]
fn every_stateful_set_exists_before_anything_waits() {
    let spec = masters_and_data();
    let goal = Goal::Converge(spec.clone());
    let mut o = converged(&spec);
    o.workloads.clear();
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ApplyWorkload {
            node_set: "masters".into(),
            replicas: 3
        })
    );
    o.workloads.insert("masters".into(), wl(3, 0));
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ApplyWorkload {
            node_set: "data".into(),
            replicas: 2
        }),
        "data nodes are not held back until the masters are ready"
    );
}

#[test]
fn an_upgrade_rolls_master_eligible_nodes_last() {
    let spec = masters_and_data().with_version("8.17.1");
    let goal = Goal::Converge(spec.clone());
    let mut o = converged(&spec);
    for w in o.workloads.values_mut() {
        w.up_to_date = false;
    }
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ApplyWorkload {
            node_set: "data".into(),
            replicas: 2
        })
    );
    let held = |w: &mut WorkloadObs| {
        w.up_to_date = true;
        w.partition = w.replicas;
        w.updated_replicas = 0;
    };
    held(o.workloads.get_mut("data").unwrap());
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::RegisterShutdown {
            node_set: "data".into(),
            ordinal: 1
        })
    );
    let d = o.workloads.get_mut("data").unwrap();
    d.partition = 0;
    d.updated_replicas = 2;
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::ApplyWorkload {
            node_set: "masters".into(),
            replicas: 3
        }),
        "the masters once every data node runs the new version"
    );
}

#[test]
fn between_pods_yellow_is_enough_only_when_older_nodes_block_the_replicas() {
    let spec = ClusterSpec::test().with_nodes(3).with_version("8.17.1");
    let goal = Goal::Converge(spec.clone());
    let mut o = converged(&spec);
    let w = o.workloads.get_mut("default").expect("w");
    w.partition = 2;
    w.updated_replicas = 1;
    let h = o.health.as_mut().expect("h");
    h.shutdowns.insert(node_key("default", 1), true);
    // (health, yellow only from versions, the next step is the next pod's restart)
    for (status, from_versions, rolls) in [
        (Health::Green, false, true),
        (Health::Yellow, true, true),
        (Health::Yellow, false, false),
        (Health::Red, true, false),
        (Health::Red, false, false),
    ] {
        let h = o.health.as_mut().expect("h");
        h.status = status;
        h.yellow_from_versions = from_versions;
        let next = next_step(&goal, &o);
        assert_eq!(
            matches!(next, Some(Step::RollPod { partition: 1, .. })),
            rolls,
            "{status:?} {from_versions}: {next:?}"
        );
        if !rolls {
            assert_eq!(next, Some(Step::WaitHealthy));
        }
    }
    // The end of the change still waits for green.
    let mut done = converged(&spec);
    let h = done.health.as_mut().expect("h");
    h.status = Health::Yellow;
    h.yellow_from_versions = true;
    assert_eq!(next_step(&goal, &done), Some(Step::WaitHealthy));
}

#[test]
fn a_rotation_renews_once_then_waits_for_green() {
    let spec = ClusterSpec::test();
    let op = uuid::Uuid::from_u128(7);
    let goal = Goal::RotateCertificates { operation: op };
    let mut w = converged(&spec);
    assert_eq!(next_step(&goal, &w), Some(Step::RotateCertificates));
    w.certificates_rotated_by = Some(uuid::Uuid::from_u128(6));
    assert_eq!(
        next_step(&goal, &w),
        Some(Step::RotateCertificates),
        "an earlier rotation is not this one"
    );
    w.certificates_rotated_by = Some(op);
    w.health = None;
    assert_eq!(next_step(&goal, &w), Some(Step::WaitHealthy));
    w.health = green();
    assert_eq!(next_step(&goal, &w), None);
    assert_eq!(
        Step::RotateCertificates.stage(),
        crate::operation::StageName::Certificates
    );
}

fn snap(name: &str, state: crate::snapshots::SnapshotState) -> crate::snapshots::SnapshotObs {
    crate::snapshots::SnapshotObs {
        name: name.into(),
        state,
        reason: String::new(),
        indices: Vec::new(),
        start_time: None,
        end_time: None,
    }
}

#[test]
fn a_snapshot_registers_the_repository_takes_waits_then_expires_old_scheduled_ones() {
    use crate::snapshots::{SnapshotPolicy, SnapshotState::*};
    let policy = SnapshotPolicy {
        interval_hours: 24,
        retention: 1,
    };
    let goal = Goal::Snapshot {
        name: "scheduled-3".into(),
        policy,
    };
    let o = |repo: Option<bool>, list: Option<Vec<crate::snapshots::SnapshotObs>>| Observed {
        snapshot_repository: repo,
        snapshots: list,
        ..converged(&ClusterSpec::test())
    };
    let wait = Some(Step::WaitSnapshot {
        name: "scheduled-3".into(),
    });
    // (case, observed, next step)
    let cases = vec![
        ("Elasticsearch silent", o(None, None), wait.clone()),
        (
            "no repository",
            o(Some(false), None),
            Some(Step::RegisterRepository),
        ),
        (
            "not taken",
            o(Some(true), Some(vec![])),
            Some(Step::TakeSnapshot {
                name: "scheduled-3".into(),
            }),
        ),
        (
            "running",
            o(Some(true), Some(vec![snap("scheduled-3", InProgress)])),
            wait.clone(),
        ),
        (
            "failed: the executor fails it",
            o(Some(true), Some(vec![snap("scheduled-3", Failed)])),
            wait.clone(),
        ),
        (
            "taken, an older scheduled one past retention",
            o(
                Some(true),
                Some(vec![
                    snap("scheduled-1", Success),
                    snap("manual-1", Success),
                    snap("scheduled-3", Success),
                ]),
            ),
            Some(Step::DeleteSnapshot {
                name: "scheduled-1".into(),
            }),
        ),
        (
            "taken, nothing to expire",
            o(
                Some(true),
                Some(vec![
                    snap("manual-1", Success),
                    snap("scheduled-3", Success),
                ]),
            ),
            None,
        ),
    ];
    for (case, observed, want) in cases {
        assert_eq!(next_step(&goal, &observed), want, "{case}");
    }
}

#[test]
fn a_delete_snapshots_first_and_only_while_the_cluster_runs() {
    use crate::snapshots::SnapshotState::*;
    let goal = Goal::Delete {
        retention: VolumeRetention::Delete,
        final_snapshot: Some("final-1".into()),
    };
    let mut o = converged(&ClusterSpec::test());
    o.snapshot_repository = Some(true);
    o.snapshots = Some(vec![]);
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::TakeSnapshot {
            name: "final-1".into()
        })
    );
    o.snapshots = Some(vec![snap("final-1", Success)]);
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::DeleteWorkload {
            node_set: "default".into()
        })
    );
    // Workloads gone already (a resumed delete): nothing left to snapshot.
    o.snapshots = None;
    o.snapshot_repository = None;
    o.workloads.clear();
    assert_eq!(
        next_step(&goal, &o),
        Some(Step::DeleteBaseObjects {
            retention: VolumeRetention::Delete
        })
    );
}

#[test]
fn a_create_from_a_snapshot_restores_once_pods_run_then_waits_for_green() {
    use crate::snapshots::SnapshotState::*;
    let spec = ClusterSpec::test();
    let goal = Goal::CreateRestoring {
        spec: spec.clone(),
        source: crate::snapshots::RestoreSource {
            cluster_id: crate::test_support::cluster_id("old"),
            cluster_uid: uuid::Uuid::nil(),
            snapshot: "final-1".into(),
            indices: Vec::new(),
        },
    };
    let with = |r: Option<RestoreObs>, status: Health| {
        let mut o = converged(&spec);
        o.restore = r;
        if let Some(h) = o.health.as_mut() {
            h.status = status;
        }
        o
    };
    let r = |registered, snapshot, pending: &[&str]| RestoreObs {
        source_registered: registered,
        snapshot,
        pending: pending.iter().map(|s| s.to_string()).collect(),
        conflicts: Vec::new(),
    };
    let cases = vec![
        (
            "silent",
            with(None, Health::Yellow),
            Some(Step::WaitRestore),
        ),
        (
            "source not registered",
            with(Some(r(false, None, &[])), Health::Green),
            Some(Step::RegisterSourceRepository),
        ),
        (
            "snapshot missing: the executor fails it",
            with(Some(r(true, None, &[])), Health::Green),
            Some(Step::WaitRestore),
        ),
        (
            "pending",
            with(Some(r(true, Some(Success), &["logs"])), Health::Green),
            Some(Step::RestoreSnapshot),
        ),
        (
            "restored, recovering",
            with(Some(r(true, Some(Success), &[])), Health::Yellow),
            Some(Step::WaitHealthy),
        ),
        (
            "restored and green",
            with(Some(r(true, Some(Success), &[])), Health::Green),
            None,
        ),
    ];
    for (case, observed, want) in cases {
        assert_eq!(next_step(&goal, &observed), want, "{case}");
    }
}
