//! The StatefulSet controller's part of a rollout, as a pure function of
//! what the simulator stores: the StatefulSet (its template, replicas and
//! partition) and which template each pod runs since when.
//!
//! As Kubernetes does it
//! (<https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/#rolling-updates>):
//! with the `RollingUpdate` strategy the controller deletes and recreates the
//! pods one at a time, from the highest ordinal down, and waits until the
//! updated pod is Running and Ready before it updates the next one;
//! `podManagementPolicy: Parallel` changes scaling only, not updates. With a
//! partition (`#partitions`, `RollingUpdateStatefulSetStrategy.partition`)
//! only pods with an ordinal at or above it are updated; the others keep the
//! previous revision. `status.updatedReplicas` counts the pods at the update
//! revision, `status.readyReplicas` the pods that are ready, whatever their
//! revision.
//!
//! The simulator runs no controller loop: it stores what it last wrote and
//! works out, whenever it looks, what the controller would have done since.
//! A pod moves at the first moment the controller could move it (every pod
//! ready, and not before the change that let it move) and is ready
//! `pods_ready_delay` later. Working it out at `t1` and then again at `t2`
//! gives what working it out at `t2` gives, so a writer stores the result
//! before it changes anything and readers need not write at all.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// One StatefulSet's spec as the simulator stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StatefulSet {
    /// `spec.replicas`.
    pub(super) replicas: i32,
    /// Its pod template (the update revision).
    pub(super) fingerprint: String,
    /// The Elasticsearch version of that template.
    pub(super) version: String,
    /// `spec.updateStrategy.rollingUpdate.partition`.
    pub(super) partition: i32,
    /// When its template or partition last changed: the controller acts on
    /// the change from then on, not before.
    pub(super) changed_at: DateTime<Utc>,
}

/// One pod: the template it runs and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pod {
    /// Its ordinal.
    pub(super) ordinal: i32,
    /// The template it was created from (its revision).
    pub(super) fingerprint: String,
    /// The Elasticsearch version of that template.
    pub(super) version: String,
    /// When it was created, or recreated on a new template.
    pub(super) started_at: DateTime<Utc>,
}

impl Pod {
    /// When it is (or was) ready: `delay` after it started.
    pub(super) fn ready_at(&self, delay: Duration) -> DateTime<Utc> {
        TimeDelta::from_std(delay)
            .ok()
            .and_then(|d| self.started_at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn is_ready(&self, now: DateTime<Utc>, delay: Duration) -> bool {
        self.ready_at(delay) <= now
    }
}

/// Moves the pods of `sts` (sorted by ordinal) as the controller would
/// have moved them by `now`: the ordinals that moved, in the order they did.
pub(super) fn advance(
    sts: &StatefulSet,
    pods: &mut [Pod],
    now: DateTime<Utc>,
    delay: Duration,
) -> Vec<i32> {
    let mut moved = Vec::new();
    // The controller touches nothing while a pod is not ready: the next pod
    // moves when the last one to get ready is.
    while let Some(all_ready) = pods.iter().map(|p| p.ready_at(delay)).max() {
        let at = all_ready.max(sts.changed_at);
        if at > now {
            break;
        }
        let Some(pod) = pods
            .iter_mut()
            .rev()
            .find(|p| p.ordinal >= sts.partition && p.fingerprint != sts.fingerprint)
        else {
            break;
        };
        pod.fingerprint.clone_from(&sts.fingerprint);
        pod.version.clone_from(&sts.version);
        pod.started_at = at;
        moved.push(pod.ordinal);
    }
    moved
}

/// What a StatefulSet's status says of its pods at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Status {
    /// Pods that are ready, whatever their revision (`readyReplicas`).
    pub(super) ready: i32,
    /// Pods at the update revision (`updatedReplicas`).
    pub(super) updated: i32,
    /// Pods at the update revision that are ready.
    pub(super) ready_updated: i32,
}

/// The status of `sts` with `pods` at `now`.
pub(super) fn status(
    sts: &StatefulSet,
    pods: &[Pod],
    now: DateTime<Utc>,
    delay: Duration,
) -> Status {
    let mut s = Status::default();
    for p in pods {
        let ready = p.is_ready(now, delay);
        let updated = p.fingerprint == sts.fingerprint;
        s.ready += i32::from(ready);
        s.updated += i32::from(updated);
        s.ready_updated += i32::from(ready && updated);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(10);

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(secs)
    }

    fn sts(partition: i32, changed_at: i64) -> StatefulSet {
        StatefulSet {
            replicas: 3,
            fingerprint: "new".into(),
            version: "8.19.3".into(),
            partition,
            changed_at: t(changed_at),
        }
    }

    /// Three pods on the old template, ready since long ago.
    fn old_pods() -> Vec<Pod> {
        (0..3)
            .map(|ordinal| Pod {
                ordinal,
                fingerprint: "old".into(),
                version: "8.17.10".into(),
                started_at: t(0),
            })
            .collect()
    }

    fn revisions(pods: &[Pod]) -> Vec<(&str, DateTime<Utc>)> {
        pods.iter()
            .map(|p| (p.fingerprint.as_str(), p.started_at))
            .collect()
    }

    #[test]
    fn a_held_rollout_moves_nothing() {
        let mut pods = old_pods();
        assert!(advance(&sts(3, 100), &mut pods, t(1000), D).is_empty());
        assert_eq!(pods, old_pods());
        let s = status(&sts(3, 100), &pods, t(1000), D);
        assert_eq!(
            s,
            Status {
                ready: 3,
                updated: 0,
                ready_updated: 0
            }
        );
    }

    #[test]
    fn lowering_the_partition_moves_the_pods_above_it_once_the_change_is_made() {
        let mut pods = old_pods();
        // Before the change is made, nothing moves.
        assert!(advance(&sts(2, 100), &mut pods, t(99), D).is_empty());
        assert_eq!(advance(&sts(2, 100), &mut pods, t(100), D), vec![2]);
        assert_eq!(
            revisions(&pods),
            vec![("old", t(0)), ("old", t(0)), ("new", t(100))]
        );
        // Restarting: not ready, but already at the update revision.
        let s = status(&sts(2, 100), &pods, t(105), D);
        assert_eq!(
            s,
            Status {
                ready: 2,
                updated: 1,
                ready_updated: 0
            }
        );
        assert_eq!(pods[2].ready_at(D), t(110));
        let s = status(&sts(2, 100), &pods, t(110), D);
        assert_eq!((s.ready, s.ready_updated), (3, 1));
        // Looking again later moves nothing more.
        assert!(advance(&sts(2, 100), &mut pods, t(500), D).is_empty());
    }

    #[test]
    fn pods_move_one_at_a_time_highest_ordinal_first_each_once_the_others_are_ready() {
        let mut pods = old_pods();
        // Looked at only much later: the same as if looked at all along.
        assert_eq!(advance(&sts(0, 100), &mut pods, t(1000), D), vec![2, 1, 0]);
        assert_eq!(
            revisions(&pods),
            vec![("new", t(120)), ("new", t(110)), ("new", t(100))]
        );

        let mut step = old_pods();
        assert_eq!(advance(&sts(0, 100), &mut step, t(105), D), vec![2]);
        assert!(advance(&sts(0, 100), &mut step, t(109), D).is_empty());
        assert_eq!(advance(&sts(0, 100), &mut step, t(115), D), vec![1]);
        assert_eq!(advance(&sts(0, 100), &mut step, t(1000), D), vec![0]);
        assert_eq!(step, pods);
    }

    #[test]
    fn an_unready_pod_holds_the_rollout_back() {
        let mut pods = old_pods();
        // Pod 0 was recreated at 95 (on the old template) and is ready at 105.
        pods[0].started_at = t(95);
        assert!(advance(&sts(2, 100), &mut pods, t(104), D).is_empty());
        assert_eq!(advance(&sts(2, 100), &mut pods, t(106), D), vec![2]);
        assert_eq!(pods[2].started_at, t(105));
    }

    #[test]
    fn with_no_delay_every_pod_above_the_partition_moves_at_once() {
        let mut pods = old_pods();
        assert_eq!(
            advance(&sts(1, 100), &mut pods, t(100), Duration::ZERO),
            vec![2, 1]
        );
        assert_eq!(
            revisions(&pods),
            vec![("old", t(0)), ("new", t(100)), ("new", t(100))]
        );
    }
}
