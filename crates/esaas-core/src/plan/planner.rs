//! The decision table behind [`super::next_step`]. Order matters and is the
//! policy: shared objects first; node groups grow before pods are added; every
//! StatefulSet exists before anything waits; then node sets change one at a
//! time, master-eligible ones last: pods leave one at a time after their shards
//! have drained, volumes grow online (claims patched, then the StatefulSet
//! replaced around its pods), templates roll one pod at a time; only then do
//! node groups shrink; nothing is READY before every pod is ready and health is
//! green; a green cluster without its snapshot repository registers it last.

use super::{Goal, NodeGroupStatus, Observed, Step, WorkloadObs, node_key};
use crate::cluster::Health;
use crate::snapshots::{SnapshotPolicy, SnapshotState};
use crate::spec::{ClusterSpec, NodeSet, VolumeRetention};

pub(super) fn next_step(goal: &Goal, observed: &Observed) -> Option<Step> {
    match goal {
        Goal::Converge(spec) => converge(spec, observed, false),
        Goal::CreateRestoring { spec, .. } => converge(spec, observed, true),
        Goal::Delete {
            retention,
            final_snapshot,
        } => final_snapshot
            .as_deref()
            .and_then(|name| final_snapshot_step(name, observed))
            .or_else(|| delete(*retention, observed)),
        Goal::RotateCertificates { operation } => rotate(*operation, observed),
        Goal::RotateNodes { spec, release } => super::nodes::rotate_nodes(spec, release, observed),
        Goal::Snapshot { name, policy } => snapshot(name, policy, observed),
        Goal::Restore { .. } => restore(observed).or_else(|| match &observed.health {
            Some(h) if h.status == Health::Green => None,
            _ => Some(Step::WaitHealthy),
        }),
    }
}

/// The snapshot steps: the repository registered, the snapshot taken and
/// ended. `None` once `name` has succeeded. While Elasticsearch does not
/// answer, or the snapshot runs or ended unsuccessfully, the wait (the
/// executor fails an unsuccessful one).
fn take(name: &str, observed: &Observed) -> Option<Step> {
    let wait = || {
        Some(Step::WaitSnapshot {
            name: name.to_string(),
        })
    };
    match observed.snapshot_repository {
        Some(false) => return Some(Step::RegisterRepository),
        None => return wait(),
        Some(true) => {}
    }
    let Some(list) = &observed.snapshots else {
        return wait();
    };
    match list.iter().find(|s| s.name == name) {
        None => Some(Step::TakeSnapshot {
            name: name.to_string(),
        }),
        Some(s) if s.state == SnapshotState::Success => None,
        Some(_) => wait(),
    }
}

/// A snapshot operation: take `name`, then let go of the scheduled
/// snapshots retention no longer keeps, one at a time, oldest first.
fn snapshot(name: &str, policy: &SnapshotPolicy, observed: &Observed) -> Option<Step> {
    if let Some(step) = take(name, observed) {
        return Some(step);
    }
    let names: Vec<String> = observed
        .snapshots
        .iter()
        .flatten()
        .filter(|s| s.state != SnapshotState::InProgress)
        .map(|s| s.name.clone())
        .collect();
    policy
        .expired(&names)
        .into_iter()
        .find(|n| *n != name)
        .map(|n| Step::DeleteSnapshot {
            name: n.to_string(),
        })
}

/// A delete's final snapshot comes first, while the cluster still runs;
/// once its workloads are gone (a delete resumed after removing them) there
/// is nothing left to snapshot.
fn final_snapshot_step(name: &str, observed: &Observed) -> Option<Step> {
    if observed.workloads.is_empty() {
        return None;
    }
    take(name, observed)
}

/// The restore steps: the source repository registered, the pending
/// indices restored. `None` once nothing is pending. While Elasticsearch
/// does not answer, or the snapshot cannot be used, or indices stand in
/// the way, the wait (the executor fails the last two).
fn restore(observed: &Observed) -> Option<Step> {
    let Some(r) = &observed.restore else {
        return Some(Step::WaitRestore);
    };
    if !r.source_registered {
        return Some(Step::RegisterSourceRepository);
    }
    if r.snapshot != Some(SnapshotState::Success) || !r.conflicts.is_empty() {
        return Some(Step::WaitRestore);
    }
    (!r.pending.is_empty()).then_some(Step::RestoreSnapshot)
}

/// Renew once (the Secret says which operation did last), then wait for green.
fn rotate(operation: uuid::Uuid, observed: &Observed) -> Option<Step> {
    if observed.certificates_rotated_by != Some(operation) {
        return Some(Step::RotateCertificates);
    }
    match &observed.health {
        Some(h) if h.status == Health::Green => None,
        _ => Some(Step::WaitHealthy),
    }
}

/// The step that removes one pod from `node_set`, which has `replicas` now:
/// drain it, wait until it holds no shards, exclude it from the voting
/// configuration if it is master-eligible, then lower the replicas.
fn shrink_one(node_set: &str, replicas: i32, master: bool, observed: &Observed) -> Step {
    let ordinal = replicas - 1;
    let key = node_key(node_set, ordinal);
    if master
        && observed
            .health
            .as_ref()
            .is_some_and(|h| h.shards_on_excluded.get(&key) == Some(&0))
        && !observed
            .health
            .as_ref()
            .is_some_and(|h| h.voting_exclusions.contains(&key))
    {
        return Step::ExcludeFromVoting {
            node_set: node_set.into(),
            ordinal,
        };
    }
    let shards = observed
        .health
        .as_ref()
        .map(|h| h.shards_on_excluded.get(&key));
    match shards {
        // Elasticsearch did not answer: we cannot know, so wait (fail closed).
        None => Step::WaitDrained {
            node_set: node_set.into(),
            ordinal,
        },
        Some(None) => Step::DrainNode {
            node_set: node_set.into(),
            ordinal,
        },
        Some(Some(n)) if *n > 0 => Step::WaitDrained {
            node_set: node_set.into(),
            ordinal,
        },
        Some(Some(_)) => Step::ApplyWorkload {
            node_set: node_set.into(),
            replicas: ordinal,
        },
    }
}

/// `(node set, ordinal)` of a [`node_key`].
fn parse_key(key: &str) -> Option<(String, i32)> {
    let (node_set, ordinal) = key.rsplit_once('/')?;
    Some((node_set.to_string(), ordinal.parse().ok()?))
}

/// The ordinals of `node_set`'s pods with a registered shutdown.
fn shutdowns<'a>(observed: &'a Observed, node_set: &'a str) -> impl Iterator<Item = i32> + 'a {
    observed
        .health
        .iter()
        .flat_map(|h| h.shutdowns.keys())
        .filter_map(|k| parse_key(k))
        .filter(move |(n, _)| n == node_set)
        .map(|(_, o)| o)
}

/// The node sets in the order changes reach them: the others first, in
/// spec order, then the master-eligible ones.
pub(super) fn rollout_order(spec: &ClusterSpec) -> Vec<&NodeSet> {
    let mut order: Vec<&NodeSet> = spec.node_sets.iter().collect();
    order.sort_by_key(|ns| ns.is_master_eligible());
    order
}

/// The volume step `ns` needs: grow (or re-class) the claims of the pods it
/// keeps, then wait until the volumes have it. Volumes never shrink (the
/// spec refuses it), so a claim larger than the spec is left alone.
fn volumes(ns: &NodeSet, w: &WorkloadObs) -> Option<Step> {
    let class = ns.attributes_class();
    let kept = || {
        w.volumes
            .iter()
            .filter(|v| v.ordinal < w.replicas.min(ns.count))
    };
    if kept().any(|v| {
        v.requested_gib < ns.storage_gib || v.attributes_class.as_deref() != Some(class.as_str())
    }) {
        return Some(Step::ResizeVolumes {
            node_set: ns.name.clone(),
            storage_gib: ns.storage_gib,
            attributes_class: class,
        });
    }
    if kept().any(|v| !v.settled()) {
        return Some(Step::WaitVolumesResized {
            node_set: ns.name.clone(),
        });
    }
    None
}

fn converge(spec: &ClusterSpec, observed: &Observed, restoring: bool) -> Option<Step> {
    if !observed.base_objects {
        return Some(Step::ApplyBaseObjects);
    }
    // Capacity first: a node group grows before pods need it.
    for ns in &spec.node_sets {
        match observed.node_groups.get(&ns.name) {
            None => {
                return Some(Step::EnsureNodeGroup {
                    node_set: ns.name.clone(),
                    size: ns.count,
                });
            }
            // Back in the spec while still going away: let it go, then recreate it.
            Some(ng) if ng.status == NodeGroupStatus::Deleting => {
                return Some(Step::WaitNodeGroupGone {
                    node_set: ns.name.clone(),
                });
            }
            // EKS changes a node group only when it is ACTIVE.
            Some(ng) if ng.status != NodeGroupStatus::Active => {
                return Some(Step::WaitNodeGroupActive {
                    node_set: ns.name.clone(),
                });
            }
            Some(ng) if ng.desired_size < ns.count => {
                return Some(Step::EnsureNodeGroup {
                    node_set: ns.name.clone(),
                    size: ns.count,
                });
            }
            Some(_) => {}
        }
    }
    // Then every StatefulSet the spec names, before anything waits: pods of
    // one node set may need another's masters to become ready.
    for ns in &spec.node_sets {
        if !observed.workloads.contains_key(&ns.name) {
            return Some(Step::ApplyWorkload {
                node_set: ns.name.clone(),
                replicas: ns.count,
            });
        }
    }
    // Changes go one node set at a time, master-eligible ones last (the
    // order of Elasticsearch's rolling upgrade guidance).
    for ns in rollout_order(spec) {
        let Some(w) = observed.workloads.get(&ns.name) else {
            continue;
        };
        if w.replicas > ns.count {
            return Some(shrink_one(
                &ns.name,
                w.replicas,
                ns.is_master_eligible(),
                observed,
            ));
        }
        if let Some(step) = volumes(ns, w) {
            return Some(step);
        }
        // The claim templates are immutable: replace the StatefulSet object,
        // keeping its pods, once every volume has its new size.
        if !w.claims_up_to_date {
            return Some(Step::OrphanWorkload {
                node_set: ns.name.clone(),
            });
        }
        if w.replicas < ns.count || !w.up_to_date {
            return Some(Step::ApplyWorkload {
                node_set: ns.name.clone(),
                replicas: ns.count,
            });
        }
        // A pod that restarted is back: its shutdown goes.
        if w.ready_replicas >= w.replicas
            && w.updated_replicas >= w.replicas - w.partition
            && let Some(ordinal) = shutdowns(observed, &ns.name).find(|o| *o >= w.partition)
        {
            return Some(Step::ClearShutdown {
                node_set: ns.name.clone(),
                ordinal,
            });
        }
        // A rollout is held (a new template, or one pod further along): the
        // next pod moves only when every pod is ready and health is green,
        // and once Elasticsearch knows it is about to restart.
        if w.partition > 0 {
            if w.updated_replicas < w.replicas - w.partition || w.ready_replicas < w.replicas {
                return Some(Step::WaitPodsReady {
                    node_set: ns.name.clone(),
                });
            }
            // Green between pods, or yellow only because replicas of shards whose
            // primary already runs the new version cannot go to older nodes
            // (they can once more nodes have moved); never red.
            if observed.health.as_ref().is_none_or(|h| {
                h.status != Health::Green && !(h.status == Health::Yellow && h.yellow_from_versions)
            }) {
                return Some(Step::WaitHealthy);
            }
            let next = w.partition - 1;
            let shutdown = observed
                .health
                .as_ref()
                .and_then(|h| h.shutdowns.get(&node_key(&ns.name, next)));
            return Some(match shutdown {
                None => Step::RegisterShutdown {
                    node_set: ns.name.clone(),
                    ordinal: next,
                },
                Some(false) => Step::WaitShutdownReady {
                    node_set: ns.name.clone(),
                    ordinal: next,
                },
                Some(true) => Step::RollPod {
                    node_set: ns.name.clone(),
                    partition: next,
                },
            });
        }
        if w.ready_replicas < w.replicas {
            return Some(Step::WaitPodsReady {
                node_set: ns.name.clone(),
            });
        }
    }
    // Node sets that left the spec: drain and remove their pods one by one.
    for (name, w) in &observed.workloads {
        if spec.node_sets.iter().any(|n| &n.name == name) {
            continue;
        }
        if w.replicas > 0 {
            return Some(shrink_one(name, w.replicas, w.master_eligible, observed));
        }
        return Some(Step::DeleteWorkload {
            node_set: name.clone(),
        });
    }
    // Every pod that left is out of the voting configuration: clear it, so
    // that the exclusions do not pile up (Elasticsearch allows 10 by default).
    // A pod the spec wants again is cleared too: it must vote again.
    if let Some(h) = &observed.health
        && !h.voting_exclusions.is_empty()
    {
        return Some(Step::ClearVotingExclusions);
    }
    // A shutdown left behind (its node set left, or its rollout was undone).
    if let Some((node_set, ordinal)) = observed
        .health
        .as_ref()
        .and_then(|h| h.shutdowns.keys().next())
        .and_then(|k| parse_key(k))
    {
        return Some(Step::ClearShutdown { node_set, ordinal });
    }
    // Capacity last when shrinking: node groups follow the pods down.
    for (name, ng) in &observed.node_groups {
        match spec.node_sets.iter().find(|n| &n.name == name) {
            Some(ns) if ng.desired_size > ns.count && ng.status != NodeGroupStatus::Active => {
                return Some(Step::WaitNodeGroupActive {
                    node_set: name.clone(),
                });
            }
            Some(ns) if ng.desired_size > ns.count => {
                return Some(Step::EnsureNodeGroup {
                    node_set: name.clone(),
                    size: ns.count,
                });
            }
            Some(_) => {}
            None if ng.status == NodeGroupStatus::Deleting => {
                return Some(Step::WaitNodeGroupGone {
                    node_set: name.clone(),
                });
            }
            None => {
                return Some(Step::DeleteNodeGroup {
                    node_set: name.clone(),
                });
            }
        }
    }
    // A pod the spec wants again (a shrink undone) must not stay excluded.
    if let Some(h) = &observed.health {
        for key in h.shards_on_excluded.keys() {
            let Some((node_set, ordinal)) = key.split_once('/') else {
                continue;
            };
            let Ok(ordinal) = ordinal.parse::<i32>() else {
                continue;
            };
            if spec
                .node_sets
                .iter()
                .any(|n| n.name == node_set && ordinal < n.count)
            {
                return Some(Step::IncludeNode {
                    node_set: node_set.to_string(),
                    ordinal,
                });
            }
        }
    }
    // A create from a snapshot restores it once every pod is ready, before
    // the health gate (the restored shards must recover too).
    if restoring && let Some(step) = restore(observed) {
        return Some(step);
    }
    match &observed.health {
        // Once green, and only then (Elasticsearch verifies a repository by
        // writing from every node), the snapshot repository: registered on
        // create, and again by any update or repair that finds it missing.
        Some(h) if h.status == Health::Green => {
            (observed.snapshot_repository == Some(false)).then_some(Step::RegisterRepository)
        }
        _ => Some(Step::WaitHealthy),
    }
}

fn delete(retention: VolumeRetention, observed: &Observed) -> Option<Step> {
    if let Some(name) = observed.workloads.keys().next() {
        return Some(Step::DeleteWorkload {
            node_set: name.clone(),
        });
    }
    if observed.base_objects {
        return Some(Step::DeleteBaseObjects { retention });
    }
    for (name, ng) in &observed.node_groups {
        if ng.status != NodeGroupStatus::Deleting {
            return Some(Step::DeleteNodeGroup {
                node_set: name.clone(),
            });
        }
    }
    observed
        .node_groups
        .keys()
        .next()
        .map(|name| Step::WaitNodeGroupGone {
            node_set: name.clone(),
        })
}
