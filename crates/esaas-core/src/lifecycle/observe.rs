//! What an observation of a live cluster means: its conditions, its health,
//! READY or DEGRADED, and whether the platform queues a REPAIR.
//!
//! Workers observe every READY or DEGRADED cluster that no operation is
//! acting on, on the control plane's schedule, and report [`Facts`]; this
//! module turns them into a change of the cluster, or into nothing when
//! nothing changed (so an idle fleet writes nothing but its schedule).
//!
//! Drift the platform can undo (a missing or edited object, a StatefulSet
//! or node group resized by hand, a missing node group, pods unready for
//! longer than [`ObserveRules::pods_unready_grace`]) queues a REPAIR,
//! initiated by the platform, unless an admin paused automatic repair for the
//! cluster or earlier repairs kept being undone ([`repair_not_before`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::cluster::{
    Cluster, ClusterState, Condition, ConditionReason, ConditionStatus, ConditionType, Health,
    set_condition,
};
use crate::event::EventKind;
use crate::operation::{Initiator, InitiatorKind, OperationKind};
use crate::plan::{HealthObs, NodeGroupObs, NodeGroupStatus, WorkloadObs};

use super::{ChangeSet, ClusterChange, Ctx, Decision, Rules, maintenance, new_operation};
use crate::cluster::Disruption;

/// What a worker saw of one cluster; each part may have failed on its own
/// (the error says why), so one unreachable service does not hide the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The generation of the spec the worker compared against.
    pub generation: i64,
    /// Node groups by node set.
    pub node_groups: Result<BTreeMap<String, NodeGroupObs>, String>,
    /// The Kubernetes side.
    pub workloads: Result<WorkloadFacts, String>,
    /// Elasticsearch's health; `None` when it does not answer.
    pub health: Result<Option<HealthObs>, String>,
}

/// The Kubernetes side of [`Facts`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadFacts {
    /// Whether the namespace objects exist.
    pub base_objects: bool,
    /// Workloads by node set.
    pub workloads: BTreeMap<String, WorkloadObs>,
    /// When the node certificate in the cluster's Secret expires.
    #[serde(default)]
    pub certificate_not_after: Option<DateTime<Utc>>,
}

/// The timing of observation and repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserveRules {
    /// How long pods may stay unready before a repair is queued for them.
    pub pods_unready_grace: Duration,
    /// The wait after the first repair of a run of repairs; doubles with each.
    pub repair_backoff_base: Duration,
    /// The longest wait between repairs.
    pub repair_backoff_max: Duration,
    /// How far back repairs count as one run.
    pub repair_window: Duration,
    /// How long before the node certificate expires it is renewed.
    pub certificate_renew_before: Duration,
}

/// The shortest time between two certificate rotations of a cluster (one
/// that failed is not retried in a loop).
pub const ROTATION_SPACING_MINUTES: i64 = 10;

impl Default for ObserveRules {
    fn default() -> Self {
        ObserveRules {
            pods_unready_grace: Duration::minutes(5),
            repair_backoff_base: Duration::minutes(1),
            repair_backoff_max: Duration::minutes(30),
            repair_window: Duration::hours(1),
            certificate_renew_before: Duration::days(30),
        }
    }
}

/// The cluster's recent automatic repairs, as the store finds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairHistory {
    /// REPAIR operations created within [`ObserveRules::repair_window`].
    pub recent: u32,
    /// When the newest of them was created.
    pub last: Option<DateTime<Utc>>,
    /// Whether an admin paused automatic repair for the cluster.
    pub paused: bool,
    /// When the newest certificate rotation was created.
    pub last_rotation: Option<DateTime<Utc>>,
    /// When the newest node rotation was created.
    pub last_node_rotation: Option<DateTime<Utc>>,
}

/// When the next repair may be queued: at once after none, then
/// `base`, `2 × base`, `4 × base`, ... after the newest, at most `max`.
pub fn repair_not_before(h: &RepairHistory, rules: &ObserveRules) -> Option<DateTime<Utc>> {
    let last = h.last?;
    if h.recent == 0 {
        return None;
    }
    let doublings = (h.recent - 1).min(20);
    let wait = rules
        .repair_backoff_base
        .checked_mul(1 << doublings)
        .unwrap_or(rules.repair_backoff_max)
        .min(rules.repair_backoff_max);
    Some(last + wait)
}

const NODE_GROUPS_OK: &str = "every node group is active at its size";
const OBJECTS_OK: &str = "every object is as applied";
const PODS_OK: &str = "every pod is ready";
const NOTHING_TO_REPAIR: &str = "nothing to repair";

/// The conditions an operation that succeeded with `health` leaves: what it
/// applied is there and ready (it waited for that), so the first
/// observation of a healthy cluster finds nothing new to record.
pub fn settled_conditions(cluster: &Cluster, health: Health, now: DateTime<Utc>) -> Vec<Condition> {
    let ok = |kind, message: &str| {
        cond(
            kind,
            ConditionStatus::True,
            ConditionReason::AsExpected,
            message.into(),
            now,
        )
    };
    let es = match health {
        Health::Green => ok(ConditionType::ElasticsearchHealthy, "green"),
        Health::Yellow => cond(
            ConditionType::ElasticsearchHealthy,
            ConditionStatus::False,
            ConditionReason::Yellow,
            "yellow".into(),
            now,
        ),
        Health::Red => cond(
            ConditionType::ElasticsearchHealthy,
            ConditionStatus::False,
            ConditionReason::Red,
            "red".into(),
            now,
        ),
        Health::Unknown => cond(
            ConditionType::ElasticsearchHealthy,
            ConditionStatus::Unknown,
            ConditionReason::ObservationFailed,
            "health unknown".into(),
            now,
        ),
    };
    let mut out = vec![
        ok(ConditionType::NodeGroupsHealthy, NODE_GROUPS_OK),
        ok(ConditionType::ObjectsInSync, OBJECTS_OK),
        ok(ConditionType::PodsReady, PODS_OK),
        es,
    ];
    // A pause stays; otherwise repair is on.
    if !cluster
        .conditions
        .iter()
        .any(|c| c.kind == ConditionType::AutoRepair && c.reason == ConditionReason::Paused)
    {
        out.push(cond(
            ConditionType::AutoRepair,
            ConditionStatus::True,
            ConditionReason::Enabled,
            NOTHING_TO_REPAIR.into(),
            now,
        ));
    }
    out
}

/// One condition, as this observation finds it.
fn cond(
    kind: ConditionType,
    status: ConditionStatus,
    reason: ConditionReason,
    message: String,
    now: DateTime<Utc>,
) -> Condition {
    Condition {
        kind,
        status,
        reason,
        message,
        last_transition_time: now,
    }
}

/// The first problem among `problems`, or the condition holding.
fn verdict(
    kind: ConditionType,
    problems: Vec<(ConditionReason, String)>,
    ok: &str,
    now: DateTime<Utc>,
) -> Condition {
    match problems.into_iter().next() {
        None => cond(
            kind,
            ConditionStatus::True,
            ConditionReason::AsExpected,
            ok.into(),
            now,
        ),
        Some((reason, message)) => cond(kind, ConditionStatus::False, reason, message, now),
    }
}

fn failed(kind: ConditionType, e: &str, now: DateTime<Utc>) -> Condition {
    cond(
        kind,
        ConditionStatus::Unknown,
        ConditionReason::ObservationFailed,
        e.chars().take(512).collect(),
        now,
    )
}

/// The conditions `facts` imply for `cluster`'s spec.
pub fn conditions(
    cluster: &Cluster,
    facts: &Facts,
    renew_before: Duration,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let spec = &cluster.spec;
    let groups = match &facts.node_groups {
        Err(e) => failed(ConditionType::NodeGroupsHealthy, e, now),
        Ok(groups) => {
            let mut problems = Vec::new();
            for ns in &spec.node_sets {
                match groups.get(&ns.name) {
                    None => problems.push((
                        ConditionReason::NodeGroupMissing,
                        format!("the node group of {} is missing", ns.name),
                    )),
                    Some(g) if g.status == NodeGroupStatus::Failed => problems.push((
                        ConditionReason::NodeGroupDegraded,
                        format!("the node group of {} is degraded: {}", ns.name, g.message),
                    )),
                    Some(g)
                        if matches!(
                            g.status,
                            NodeGroupStatus::Creating | NodeGroupStatus::Deleting
                        ) =>
                    {
                        problems.push((
                            ConditionReason::NodeGroupChanging,
                            format!("the node group of {} is {:?}", ns.name, g.status)
                                .to_lowercase(),
                        ))
                    }
                    Some(g) if g.desired_size != ns.count => problems.push((
                        ConditionReason::NodeGroupResized,
                        format!(
                            "the node group of {} has {} nodes; the spec asks for {}",
                            ns.name, g.desired_size, ns.count
                        ),
                    )),
                    Some(_) => {}
                }
            }
            verdict(
                ConditionType::NodeGroupsHealthy,
                problems,
                NODE_GROUPS_OK,
                now,
            )
        }
    };
    let (objects, pods) = match &facts.workloads {
        Err(e) => (
            failed(ConditionType::ObjectsInSync, e, now),
            failed(ConditionType::PodsReady, e, now),
        ),
        Ok(WorkloadFacts {
            base_objects: base,
            workloads: loads,
            ..
        }) => {
            let mut drift = Vec::new();
            let mut unready = Vec::new();
            if !base {
                drift.push((
                    ConditionReason::ObjectMissing,
                    "the cluster's namespace objects (secret, services, budget, policy) are missing"
                        .to_string(),
                ));
            }
            for ns in &spec.node_sets {
                let Some(w) = loads.get(&ns.name) else {
                    drift.push((
                        ConditionReason::ObjectMissing,
                        format!("the StatefulSet of {} is missing", ns.name),
                    ));
                    continue;
                };
                if w.replicas != ns.count {
                    drift.push((
                        ConditionReason::ReplicasChanged,
                        format!(
                            "the StatefulSet of {} has {} replicas; the spec asks for {}",
                            ns.name, w.replicas, ns.count
                        ),
                    ));
                } else if !w.up_to_date || !w.claims_up_to_date {
                    drift.push((
                        ConditionReason::ObjectChanged,
                        format!(
                            "the StatefulSet of {} differs from what the platform applied",
                            ns.name
                        ),
                    ));
                }
                if w.ready_replicas < ns.count {
                    unready.push((
                        ConditionReason::PodsNotReady,
                        format!(
                            "{} of {} pods of {} are ready",
                            w.ready_replicas, ns.count, ns.name
                        ),
                    ));
                }
            }
            (
                verdict(ConditionType::ObjectsInSync, drift, OBJECTS_OK, now),
                verdict(ConditionType::PodsReady, unready, PODS_OK, now),
            )
        }
    };
    let es = match &facts.health {
        Err(e) => failed(ConditionType::ElasticsearchHealthy, e, now),
        Ok(None) => cond(
            ConditionType::ElasticsearchHealthy,
            ConditionStatus::False,
            ConditionReason::Unreachable,
            "Elasticsearch does not answer".into(),
            now,
        ),
        Ok(Some(h)) => {
            let why = |what: &str| {
                if h.reason.is_empty() {
                    what.to_string()
                } else {
                    format!("{what}: {}", h.reason)
                }
            };
            match h.status {
                Health::Green => cond(
                    ConditionType::ElasticsearchHealthy,
                    ConditionStatus::True,
                    ConditionReason::AsExpected,
                    "green".into(),
                    now,
                ),
                Health::Yellow => cond(
                    ConditionType::ElasticsearchHealthy,
                    ConditionStatus::False,
                    ConditionReason::Yellow,
                    why("yellow"),
                    now,
                ),
                Health::Red => cond(
                    ConditionType::ElasticsearchHealthy,
                    ConditionStatus::False,
                    ConditionReason::Red,
                    why("red"),
                    now,
                ),
                Health::Unknown => cond(
                    ConditionType::ElasticsearchHealthy,
                    ConditionStatus::Unknown,
                    ConditionReason::ObservationFailed,
                    why("health unknown"),
                    now,
                ),
            }
        }
    };
    let mut out = vec![groups, objects, pods, es];
    // Disk use, when Elasticsearch reported it (recorded at the first
    // observation: an operation does not look at disks).
    if let Ok(Some(h)) = &facts.health
        && !h.disk_percent.is_empty()
    {
        out.push(disk_condition(&h.disk_percent, now));
    }
    if let Ok(WorkloadFacts {
        certificate_not_after: Some(at),
        ..
    }) = &facts.workloads
    {
        out.push(certificate_condition(*at, renew_before, now));
    }
    out
}

/// Elasticsearch's default disk watermarks
/// (`cluster.routing.allocation.disk.watermark.{low,high,flood_stage}`).
pub const DISK_WATERMARKS: (u32, u32, u32) = (85, 90, 95);

/// `DiskOk` from each node's disk use: the fullest node against
/// Elasticsearch's watermarks. Past the flood stage the node's indices are
/// read-only, so the cluster is DEGRADED; a repair cannot help, bigger
/// volumes (`storage_gib`) can.
pub fn disk_condition(disk: &BTreeMap<String, u32>, now: DateTime<Utc>) -> Condition {
    let (low, high, flood) = DISK_WATERMARKS;
    let Some((node, pct)) = disk.iter().max_by_key(|(_, p)| **p) else {
        return cond(
            ConditionType::DiskOk,
            ConditionStatus::Unknown,
            ConditionReason::ObservationFailed,
            "no node reported its disk".into(),
            now,
        );
    };
    let grow = "grow the node set's storage_gib";
    let (status, reason, message) = if *pct >= flood {
        (
            ConditionStatus::False,
            ConditionReason::FloodStage,
            format!(
                "{node} uses {pct} % of its disk, past the flood stage ({flood} %): its indices are read-only; {grow}"
            ),
        )
    } else if *pct >= high {
        (
            ConditionStatus::False,
            ConditionReason::HighWatermark,
            format!(
                "{node} uses {pct} % of its disk, past the high watermark ({high} %): shards move off it; {grow}"
            ),
        )
    } else if *pct >= low {
        (
            ConditionStatus::False,
            ConditionReason::LowWatermark,
            format!(
                "{node} uses {pct} % of its disk, past the low watermark ({low} %): no new shards go there"
            ),
        )
    } else {
        (
            ConditionStatus::True,
            ConditionReason::AsExpected,
            format!("the fullest disk ({node}) is at {pct} %"),
        )
    };
    cond(ConditionType::DiskOk, status, reason, message, now)
}

/// `CertificatesValid` for a node certificate that expires at `at`.
pub fn certificate_condition(
    at: DateTime<Utc>,
    renew_before: Duration,
    now: DateTime<Utc>,
) -> Condition {
    let when = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, reason, message) = if at <= now {
        (
            ConditionStatus::False,
            ConditionReason::Expired,
            format!("the node certificates expired at {when}"),
        )
    } else if at - now <= renew_before {
        (
            ConditionStatus::False,
            ConditionReason::ExpiringSoon,
            format!("the node certificates expire at {when}; the platform renews them"),
        )
    } else {
        (
            ConditionStatus::True,
            ConditionReason::AsExpected,
            format!("the node certificates are valid until {when}"),
        )
    };
    cond(
        ConditionType::CertificatesValid,
        status,
        reason,
        message,
        now,
    )
}

/// Whether drift of this reason makes the cluster (partly) unavailable, so
/// that its repair does not wait for the maintenance window: a node group or
/// an object gone, pods down past their grace. Drift that leaves the cluster
/// serving (a resized node group, an edited template, a StatefulSet scaled by
/// hand) is repaired in the window.
pub fn urgent_repair(reason: ConditionReason) -> bool {
    matches!(
        reason,
        ConditionReason::NodeGroupMissing
            | ConditionReason::ObjectMissing
            | ConditionReason::PodsNotReady
    )
}

/// When a certificate rotation stops waiting for the window: once the last
/// quarter of the renewal margin before `expire` begins (at once when the
/// expiry is unknown or past).
pub fn rotation_deadline(
    expire: Option<DateTime<Utc>>,
    observe: &ObserveRules,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    expire.map_or(now, |t| t - observe.certificate_renew_before / 4)
}

fn is(c: &Condition, status: ConditionStatus) -> bool {
    c.status == status
}

/// Whether `c` (as merged into the cluster's conditions, with its transition
/// time) is drift a REPAIR undoes.
fn repairable(c: &Condition, rules: &ObserveRules, now: DateTime<Utc>) -> bool {
    use ConditionReason::*;
    if c.status != ConditionStatus::False {
        return false;
    }
    match c.reason {
        NodeGroupMissing | NodeGroupResized | ObjectMissing | ObjectChanged | ReplicasChanged => {
            true
        }
        PodsNotReady => c.last_transition_time + rules.pods_unready_grace <= now,
        _ => false,
    }
}

/// The change an observation makes to `cluster`: its conditions, health and
/// state, and a REPAIR operation when drift calls for one and repair is
/// allowed. `None` when the cluster is not observed now (an operation acts on
/// it, it is not live, the facts are for another generation) or nothing
/// changed.
pub fn assess(
    cluster: &Cluster,
    facts: &Facts,
    history: &RepairHistory,
    observe: &ObserveRules,
    rules: &Rules,
    ctx: &Ctx,
) -> Option<Decision<ClusterChange>> {
    if !matches!(cluster.state, ClusterState::Ready | ClusterState::Degraded)
        || cluster.current_operation.is_some()
        || facts.generation != cluster.generation
    {
        return None;
    }
    let now = ctx.now;
    let mut next = cluster.clone();
    for c in conditions(cluster, facts, observe.certificate_renew_before, now) {
        set_condition(&mut next.conditions, c);
    }
    if let Ok(w) = &facts.workloads
        && w.certificate_not_after.is_some()
    {
        next.certificate_expire_time = w.certificate_not_after;
    }
    let get = |kind: ConditionType, cs: &[Condition]| cs.iter().find(|c| c.kind == kind).cloned();
    let observed: Vec<Condition> = [
        ConditionType::NodeGroupsHealthy,
        ConditionType::ObjectsInSync,
        ConditionType::PodsReady,
        ConditionType::ElasticsearchHealthy,
        ConditionType::CertificatesValid,
        ConditionType::DiskOk,
    ]
    .into_iter()
    .filter_map(|k| get(k, &next.conditions))
    .collect();
    next.health = match &facts.health {
        Ok(Some(h)) => h.status,
        _ => Health::Unknown,
    };
    let es_down = matches!(
        (&facts.health, next.health),
        (Ok(None), _) | (_, Health::Red)
    );
    let problem = observed
        .iter()
        .find(|c| {
            !matches!(
                c.kind,
                ConditionType::ElasticsearchHealthy
                    | ConditionType::CertificatesValid
                    | ConditionType::DiskOk
            ) && is(c, ConditionStatus::False)
        })
        .or_else(|| {
            observed.iter().find(|c| {
                (c.kind == ConditionType::CertificatesValid && c.reason == ConditionReason::Expired)
                    || (c.kind == ConditionType::DiskOk && c.reason == ConditionReason::FloodStage)
            })
        })
        .or_else(|| {
            observed
                .iter()
                .find(|c| c.kind == ConditionType::ElasticsearchHealthy && es_down)
        })
        .cloned();
    let drift: Vec<&Condition> = observed
        .iter()
        .filter(|c| repairable(c, observe, now))
        .collect();

    let mut repair = None;
    let auto = if history.paused {
        cond(
            ConditionType::AutoRepair,
            ConditionStatus::False,
            ConditionReason::Paused,
            "a platform admin paused automatic repair for this cluster".into(),
            now,
        )
    } else {
        match (drift.first(), repair_not_before(history, observe)) {
            (Some(_), Some(at)) if at > now => cond(
                ConditionType::AutoRepair,
                ConditionStatus::False,
                ConditionReason::BackingOff,
                format!(
                    "{} repair{} in the last {} minutes did not hold; the next one waits until {}",
                    history.recent,
                    if history.recent == 1 { "" } else { "s" },
                    observe.repair_window.num_minutes(),
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                now,
            ),
            (Some(d), _) => {
                repair = Some(d.message.clone());
                cond(
                    ConditionType::AutoRepair,
                    ConditionStatus::True,
                    ConditionReason::Enabled,
                    format!("repairing: {}", d.message),
                    now,
                )
            }
            (None, _) => cond(
                ConditionType::AutoRepair,
                ConditionStatus::True,
                ConditionReason::Enabled,
                NOTHING_TO_REPAIR.into(),
                now,
            ),
        }
    };
    // The AutoRepair condition changes its message with every repair; only
    // its status and reason are news when nothing else changed.
    let keep_auto_message = get(ConditionType::AutoRepair, &cluster.conditions)
        .is_some_and(|c| c.status == auto.status && c.reason == auto.reason && repair.is_none());
    if !keep_auto_message {
        set_condition(&mut next.conditions, auto);
    }

    next.state = if problem.is_some() {
        ClusterState::Degraded
    } else {
        ClusterState::Ready
    };
    next.message = match (&problem, cluster.state) {
        (Some(p), _) => p.message.clone(),
        (None, ClusterState::Degraded) => "healthy again".into(),
        (None, _) => cluster.message.clone(),
    };

    // Certificates due for renewal get a rotation, unless a repair goes
    // first (the next observation then finds them still due). A pause of
    // repair does not stop it: expired certificates would take the cluster down.
    let rotation = repair.is_none()
        && get(ConditionType::CertificatesValid, &next.conditions)
            .is_some_and(|c| c.status == ConditionStatus::False)
        && history
            .last_rotation
            .is_none_or(|t| t + Duration::minutes(ROTATION_SPACING_MINUTES) <= now);

    // Node groups behind the platform's node image get a node rotation, when
    // nothing else is due and the cluster is well: replacing nodes of a
    // cluster that is already short of some would only add to its trouble.
    let behind = match (&rules.node_release, &facts.node_groups) {
        (Some(want), Ok(groups)) => groups_behind(groups, want),
        _ => Vec::new(),
    };
    let node_rotation = !rotation
        && repair.is_none()
        && problem.is_none()
        && !behind.is_empty()
        && history
            .last_node_rotation
            .is_none_or(|t| t + Duration::minutes(ROTATION_SPACING_MINUTES) <= now);

    let window = maintenance::window_of(
        next.spec.maintenance_window.as_ref(),
        rules.default_window.as_ref(),
    );
    let freezes = next.spec.change_freezes.clone();
    let mut scheduled = None;
    let mut changes = ChangeSet::default();
    let mut operation = None;
    if rotation {
        let initiator = Initiator {
            kind: InitiatorKind::Platform,
            principal: "platform/certificates".into(),
        };
        let mut op = new_operation(
            &next,
            OperationKind::RotateCertificates,
            &initiator,
            rules,
            ctx,
        );
        next.current_operation = Some(op.id);
        let slot = maintenance::earliest_start(
            now,
            window,
            &freezes,
            Some(rotation_deadline(
                next.certificate_expire_time,
                observe,
                now,
            )),
        );
        scheduled = maintenance::schedule(&mut op, slot, now);
        next.message = scheduled.clone().unwrap_or_else(|| {
            "renewing the node certificates (a new CA; old and new trusted meanwhile)".into()
        });
        changes.insert_operation(&op);
        operation = Some(op);
    }
    if node_rotation && let Some(want) = &rules.node_release {
        let initiator = Initiator {
            kind: InitiatorKind::Platform,
            principal: "platform/node-images".into(),
        };
        let mut op = new_operation(&next, OperationKind::RotateNodes, &initiator, rules, ctx);
        op.params.node_release = Some(want.clone());
        next.current_operation = Some(op.id);
        // Planned work: the window, never a freeze; no deadline (old nodes
        // keep serving).
        let slot = maintenance::earliest_start(now, window, &freezes, None);
        scheduled = maintenance::schedule(&mut op, slot, now);
        next.message = scheduled
            .clone()
            .unwrap_or_else(|| format!("replacing the nodes with node image {want}"));
        changes.insert_operation(&op);
        operation = Some(op);
    }
    if let Some(what) = &repair {
        let initiator = Initiator {
            kind: InitiatorKind::Platform,
            principal: "platform/auto-repair".into(),
        };
        let mut op = new_operation(&next, OperationKind::Repair, &initiator, rules, ctx);
        next.current_operation = Some(op.id);
        let urgent = drift.iter().any(|c| urgent_repair(c.reason));
        let slot = maintenance::earliest_start(now, window, &freezes, urgent.then_some(now));
        scheduled = maintenance::schedule(&mut op, slot, now);
        next.message = match &scheduled {
            Some(when) => format!("{when}: {what}"),
            None => format!("repairing: {what}"),
        };
        changes.insert_operation(&op);
        operation = Some(op);
    }

    // Scheduled snapshots: online and without disruption, so they keep to
    // the policy's interval rather than the maintenance window; never while
    // Elasticsearch is down or red (the snapshot would fail).
    if operation.is_none()
        && rules.snapshots_enabled
        && !es_down
        && crate::snapshots::scheduled_due(
            &next.spec.snapshot_policy.unwrap_or_default(),
            &next.snapshots,
            next.create_time,
            now,
        )
    {
        let initiator = Initiator {
            kind: InitiatorKind::Platform,
            principal: "platform/snapshots".into(),
        };
        let mut op = new_operation(&next, OperationKind::Snapshot, &initiator, rules, ctx);
        op.params.snapshot = Some(crate::snapshots::operation_snapshot_name(
            crate::snapshots::SnapshotKind::Scheduled,
            op.id,
        ));
        next.current_operation = Some(op.id);
        changes.insert_operation(&op);
        operation = Some(op);
    }

    let same = next.state == cluster.state
        && next.health == cluster.health
        && next.conditions == cluster.conditions
        && next.message == cluster.message
        && operation.is_none();
    if same {
        return None;
    }
    let summary = match (&operation, &problem) {
        (Some(op), _) if op.kind == OperationKind::Snapshot => format!(
            "{}: scheduled snapshot {}; {} queued by the platform",
            next.state.as_str(),
            op.params.snapshot.as_deref().unwrap_or_default(),
            op.name()
        ),
        (Some(op), _) if scheduled.is_some() => format!(
            "{}: {}; {} queued by the platform: {}",
            next.state.as_str(),
            if op.kind == OperationKind::RotateCertificates {
                get(ConditionType::CertificatesValid, &next.conditions)
                    .map(|c| c.message)
                    .unwrap_or_default()
            } else if op.kind == OperationKind::RotateNodes {
                behind_message(
                    &behind,
                    op.params.node_release.as_deref().unwrap_or_default(),
                )
            } else {
                repair.clone().unwrap_or_default()
            },
            op.name(),
            scheduled.as_deref().unwrap_or_default()
        ),
        (Some(op), _) if op.kind == OperationKind::RotateNodes => format!(
            "{}: {}; {} queued by the platform",
            next.state.as_str(),
            behind_message(
                &behind,
                op.params.node_release.as_deref().unwrap_or_default()
            ),
            op.name()
        ),
        (Some(op), _) if op.kind == OperationKind::RotateCertificates => format!(
            "{}: {}; {} queued by the platform",
            next.state.as_str(),
            get(ConditionType::CertificatesValid, &next.conditions)
                .map(|c| c.message)
                .unwrap_or_default(),
            op.name()
        ),
        (Some(op), _) => format!(
            "{}: {}; {} queued by the platform",
            next.state.as_str(),
            repair.as_deref().unwrap_or_default(),
            op.name()
        ),
        (None, Some(p)) => format!("{}: {}", next.state.as_str(), p.message),
        (None, None) if cluster.state == ClusterState::Degraded => {
            format!("{}: healthy again", next.state.as_str())
        }
        (None, None) => format!("{}: health {}", next.state.as_str(), next.health.as_str()),
    };
    changes.record(
        &mut next,
        false,
        EventKind::StatusChanged,
        summary,
        operation.as_ref().map(|o| o.id),
        now,
    );
    Some(Decision {
        changes,
        answer: ClusterChange {
            cluster: next,
            operation,
            disruption: Disruption::None,
        },
    })
}

/// The node groups (`{node set} in {zone} at {release}`) that run another
/// node image than `want`. A group whose release EKS does not report is not
/// counted: an unknown is no reason to replace nodes.
pub fn groups_behind(groups: &BTreeMap<String, NodeGroupObs>, want: &str) -> Vec<String> {
    groups
        .iter()
        .flat_map(|(node_set, g)| {
            g.zones
                .iter()
                .filter(|(_, z)| !z.release_version.is_empty() && z.release_version != want)
                .map(move |(zone, z)| format!("{node_set} in {zone} at {}", z.release_version))
        })
        .collect()
}

fn behind_message(behind: &[String], want: &str) -> String {
    format!(
        "node groups behind the platform's node image {want}: {}",
        behind.join(", ")
    )
}

/// Pauses or resumes the automatic repair of `cluster` by `principal`: the
/// AutoRepair condition says so, and the event log records who and why.
pub fn set_repair_paused(
    cluster: &Cluster,
    paused: bool,
    principal: &str,
    justification: &str,
    now: DateTime<Utc>,
) -> Decision<Cluster> {
    let mut next = cluster.clone();
    let why: String = justification.chars().take(512).collect();
    let (status, reason, message) = if paused {
        (
            ConditionStatus::False,
            ConditionReason::Paused,
            format!("automatic repair paused by {principal}: {why}"),
        )
    } else {
        (
            ConditionStatus::True,
            ConditionReason::Enabled,
            format!("automatic repair resumed by {principal}: {why}"),
        )
    };
    set_condition(
        &mut next.conditions,
        cond(
            ConditionType::AutoRepair,
            status,
            reason,
            message.clone(),
            now,
        ),
    );
    let mut changes = ChangeSet::default();
    changes.record(
        &mut next,
        false,
        EventKind::StatusChanged,
        message,
        None,
        now,
    );
    Decision {
        changes,
        answer: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::plan::HealthObs;
    use crate::test_support::t0;
    use uuid::Uuid;

    fn rules() -> Rules {
        Rules {
            catalog: Catalog::test(),
            max_attempts: 5,
            default_window: None,
            node_release: None,
            snapshots_enabled: false,
        }
    }

    fn ctx(after_secs: i64) -> Ctx {
        Ctx {
            now: t0() + Duration::seconds(after_secs),
            operation_id: Uuid::from_u128(0x77),
            cluster_uid: Uuid::nil(),
            traceparent: None,
        }
    }

    fn workload(replicas: i32, ready: i32) -> WorkloadObs {
        WorkloadObs {
            replicas,
            ready_replicas: ready,
            version: "8.15.3".into(),
            up_to_date: true,
            updated_replicas: replicas,
            partition: 0,
            claims_up_to_date: true,
            volumes: Vec::new(),
            master_eligible: true,
        }
    }

    fn health(status: Health, reason: &str) -> HealthObs {
        HealthObs {
            status,
            reason: reason.into(),
            shards_on_excluded: BTreeMap::new(),
            shutdowns: BTreeMap::new(),
            voting_exclusions: Default::default(),
            yellow_from_versions: false,
            disk_percent: Default::default(),
        }
    }

    /// What a healthy one-node [`Cluster::test`] looks like.
    fn healthy() -> Facts {
        Facts {
            generation: 1,
            node_groups: Ok(BTreeMap::from([(
                "default".to_string(),
                NodeGroupObs {
                    instance_type: "r6i.large".into(),
                    desired_size: 1,
                    status: NodeGroupStatus::Active,
                    message: String::new(),
                    zones: Default::default(),
                },
            )])),
            workloads: Ok(WorkloadFacts {
                base_objects: true,
                workloads: BTreeMap::from([("default".to_string(), workload(1, 1))]),
                certificate_not_after: None,
            }),
            health: Ok(Some(health(Health::Green, ""))),
        }
    }

    /// [`assess`] with no repair history and the default rules, `after_secs` after t0.
    fn judge(c: &Cluster, f: &Facts, after_secs: i64) -> Option<Decision<ClusterChange>> {
        assess(
            c,
            f,
            &RepairHistory::default(),
            &ObserveRules::default(),
            &rules(),
            &ctx(after_secs),
        )
    }

    /// A cluster as the first observation of a healthy one leaves it.
    fn settled() -> Cluster {
        let c = Cluster::test();
        let d = judge(&c, &healthy(), 0).expect("the first observation sets the conditions");
        d.answer.cluster
    }

    fn condition(c: &Cluster, kind: ConditionType) -> (ConditionStatus, ConditionReason) {
        let c = c
            .conditions
            .iter()
            .find(|c| c.kind == kind)
            .expect("condition");
        (c.status, c.reason)
    }

    #[test]
    fn scheduled_snapshots_follow_the_policy_not_the_window() {
        let on = Rules {
            snapshots_enabled: true,
            default_window: Some(crate::spec::MaintenanceWindow {
                day: chrono::Weekday::Sat,
                start: chrono::NaiveTime::from_hms_opt(2, 0, 0).unwrap_or_default(),
                duration: Duration::hours(2),
            }),
            ..rules()
        };
        let off = rules();
        let day = 24 * 3600;
        let run = |c: &Cluster, f: &Facts, after: i64, r: &Rules| {
            assess(
                c,
                f,
                &RepairHistory::default(),
                &ObserveRules::default(),
                r,
                &ctx(after),
            )
        };
        let base = settled();
        let queued = |d: Option<Decision<ClusterChange>>| d.and_then(|d| d.answer.operation);
        // (case, cluster, facts, seconds after creation, rules, queued)
        let mut ok_recently = base.clone();
        ok_recently.snapshots.last_success_time = Some(t0() + Duration::seconds(day + 60));
        let mut off_policy = base.clone();
        off_policy.spec.snapshot_policy = Some(crate::snapshots::SnapshotPolicy {
            interval_hours: 0,
            retention: 0,
        });
        let mut red = healthy();
        red.health = Ok(Some(health(Health::Red, "logs-1 primary unassigned")));
        let cases: Vec<(&str, Cluster, Facts, i64, &Rules, bool)> = vec![
            (
                "a day after creation",
                base.clone(),
                healthy(),
                day + 1,
                &on,
                true,
            ),
            (
                "before a day",
                base.clone(),
                healthy(),
                day - 60,
                &on,
                false,
            ),
            ("no bucket", base.clone(), healthy(), day + 1, &off, false),
            (
                "a recent success",
                ok_recently,
                healthy(),
                day + 3600,
                &on,
                false,
            ),
            ("policy off", off_policy, healthy(), 30 * day, &on, false),
            ("red", base.clone(), red, day + 1, &on, false),
        ];
        for (case, c, f, after, r, want) in cases {
            let op = queued(run(&c, &f, after, r));
            assert_eq!(op.is_some(), want, "{case}: {op:?}");
            if let Some(op) = op {
                assert_eq!(op.kind, OperationKind::Snapshot, "{case}");
                assert_eq!(op.initiator.kind, InitiatorKind::Platform, "{case}");
                // Not held for the window: a snapshot disrupts nothing.
                assert_eq!(op.not_before, None, "{case}");
                let name = op.params.snapshot.unwrap_or_default();
                assert!(name.starts_with("scheduled-"), "{case}: {name}");
            }
        }
    }

    #[test]
    fn a_cluster_an_operation_left_green_is_settled_for_its_first_observation() {
        let mut c = Cluster::test();
        for cond in settled_conditions(&c, Health::Green, t0()) {
            set_condition(&mut c.conditions, cond);
        }
        let first = judge(&c, &healthy(), 30);
        assert!(first.is_none(), "{:?}", first.map(|d| d.changes.event));
    }

    #[test]
    fn an_idle_healthy_cluster_writes_nothing_after_its_first_observation() {
        let c = settled();
        assert_eq!(c.state, ClusterState::Ready);
        assert_eq!(c.message, "generation 1 applied", "kept while healthy");
        for kind in [
            ConditionType::NodeGroupsHealthy,
            ConditionType::ObjectsInSync,
            ConditionType::PodsReady,
            ConditionType::ElasticsearchHealthy,
            ConditionType::AutoRepair,
        ] {
            assert_eq!(condition(&c, kind).0, ConditionStatus::True, "{kind:?}");
        }
        for later in [30, 60, 3600] {
            let again = judge(&c, &healthy(), later);
            assert!(again.is_none(), "nothing changed after {later}s");
        }
    }

    #[test]
    fn faults_set_conditions_and_drift_queues_one_repair() {
        type Fault = fn(&mut Facts);
        let cases: &[(
            &str,
            Fault,
            ClusterState,
            ConditionType,
            ConditionReason,
            bool,
        )] = &[
            (
                "statefulset deleted",
                |f| {
                    if let Ok(WorkloadFacts { workloads: w, .. }) = &mut f.workloads {
                        w.clear();
                    }
                    f.health = Ok(None);
                },
                ClusterState::Degraded,
                ConditionType::ObjectsInSync,
                ConditionReason::ObjectMissing,
                true,
            ),
            (
                "scaled by hand",
                |f| {
                    if let Ok(WorkloadFacts { workloads: w, .. }) = &mut f.workloads {
                        w.insert("default".into(), workload(3, 3));
                    }
                },
                ClusterState::Degraded,
                ConditionType::ObjectsInSync,
                ConditionReason::ReplicasChanged,
                true,
            ),
            (
                "template edited",
                |f| {
                    if let Ok(WorkloadFacts { workloads: w, .. }) = &mut f.workloads {
                        w.insert(
                            "default".into(),
                            WorkloadObs {
                                up_to_date: false,
                                ..workload(1, 1)
                            },
                        );
                    }
                },
                ClusterState::Degraded,
                ConditionType::ObjectsInSync,
                ConditionReason::ObjectChanged,
                true,
            ),
            (
                "base objects gone",
                |f| {
                    if let Ok(w) = &mut f.workloads {
                        w.base_objects = false;
                    }
                },
                ClusterState::Degraded,
                ConditionType::ObjectsInSync,
                ConditionReason::ObjectMissing,
                true,
            ),
            (
                "node group gone",
                |f| {
                    f.node_groups = Ok(BTreeMap::new());
                },
                ClusterState::Degraded,
                ConditionType::NodeGroupsHealthy,
                ConditionReason::NodeGroupMissing,
                true,
            ),
            (
                "node group degraded",
                |f| {
                    if let Ok(g) = &mut f.node_groups
                        && let Some(g) = g.get_mut("default")
                    {
                        g.status = NodeGroupStatus::Failed;
                        g.message = "Ec2InstanceTypeDoesNotExist: gone".into();
                    }
                },
                ClusterState::Degraded,
                ConditionType::NodeGroupsHealthy,
                ConditionReason::NodeGroupDegraded,
                false,
            ),
            (
                "index red",
                |f| {
                    f.health = Ok(Some(health(
                        Health::Red,
                        "index logs-1 has 1 unassigned primary",
                    )));
                },
                ClusterState::Degraded,
                ConditionType::ElasticsearchHealthy,
                ConditionReason::Red,
                false,
            ),
            (
                "yellow",
                |f| {
                    f.health = Ok(Some(health(
                        Health::Yellow,
                        "index logs-1: 1 unassigned replica",
                    )));
                },
                ClusterState::Ready,
                ConditionType::ElasticsearchHealthy,
                ConditionReason::Yellow,
                false,
            ),
            (
                "pods unready, inside the grace",
                |f| {
                    if let Ok(WorkloadFacts { workloads: w, .. }) = &mut f.workloads {
                        w.insert("default".into(), workload(1, 0));
                    }
                },
                ClusterState::Degraded,
                ConditionType::PodsReady,
                ConditionReason::PodsNotReady,
                false,
            ),
            (
                "EKS unreachable",
                |f| {
                    f.node_groups = Err("EKS_THROTTLED: rate exceeded".into());
                },
                ClusterState::Ready,
                ConditionType::NodeGroupsHealthy,
                ConditionReason::ObservationFailed,
                false,
            ),
        ];
        let base = settled();
        for (what, fault, state, kind, reason, repairs) in cases {
            let mut f = healthy();
            fault(&mut f);
            let d = judge(&base, &f, 30).unwrap_or_else(|| panic!("{what}: a change"));
            let c = &d.answer.cluster;
            assert_eq!(c.state, *state, "{what}");
            assert_eq!(condition(c, *kind).1, *reason, "{what}");
            assert_eq!(d.answer.operation.is_some(), *repairs, "{what}");
            let event = d.changes.event.as_ref().expect("an event");
            assert_eq!(event.kind, EventKind::StatusChanged);
            if let Some(op) = &d.answer.operation {
                assert_eq!(op.kind, OperationKind::Repair, "{what}");
                assert_eq!(op.initiator.kind, InitiatorKind::Platform);
                assert_eq!(c.current_operation, Some(op.id));
                assert!(
                    event.message.contains("queued by the platform"),
                    "{}",
                    event.message
                );
                // While it runs, nothing is observed.
                assert!(judge(c, &f, 60).is_none());
            }
            // The same fault seen again changes nothing (no repair queued).
            if d.answer.operation.is_none() {
                assert!(judge(c, &f, 60).is_none(), "{what}: seen twice");
            }
        }
    }

    #[test]
    fn a_red_index_is_named_and_recovers_without_an_operation() {
        let base = settled();
        let mut red = healthy();
        red.health = Ok(Some(health(
            Health::Red,
            "index logs-1: primary shard 0 unassigned",
        )));
        let d = judge(&base, &red, 30).expect("red");
        let c = d.answer.cluster;
        assert_eq!(c.health, Health::Red);
        assert!(c.message.contains("logs-1"), "{}", c.message);
        let d = judge(&c, &healthy(), 60).expect("green");
        assert_eq!(d.answer.cluster.state, ClusterState::Ready);
        assert_eq!(d.answer.cluster.health, Health::Green);
        assert_eq!(d.answer.cluster.message, "healthy again");
        assert!(d.answer.operation.is_none());
    }

    #[test]
    fn pods_stuck_unready_past_the_grace_are_repaired() {
        let base = settled();
        let mut f = healthy();
        if let Ok(WorkloadFacts { workloads: w, .. }) = &mut f.workloads {
            w.insert("default".into(), workload(1, 0));
        }
        let first = judge(&base, &f, 30).expect("unready");
        assert!(first.answer.operation.is_none());
        let late =
            judge(&first.answer.cluster, &f, 30 + 301).expect("still unready past 5 minutes");
        assert!(late.answer.operation.is_some());
    }

    #[test]
    fn repairs_back_off_and_pause_is_honoured() {
        let r = ObserveRules::default();
        let h = |recent, last_secs: i64| RepairHistory {
            recent,
            last: Some(t0() + Duration::seconds(last_secs)),
            paused: false,
            last_rotation: None,
            last_node_rotation: None,
        };
        assert_eq!(repair_not_before(&RepairHistory::default(), &r), None);
        for (recent, wait_min) in [(1, 1), (2, 2), (3, 4), (6, 30), (40, 30)] {
            assert_eq!(
                repair_not_before(&h(recent, 0), &r),
                Some(t0() + Duration::minutes(wait_min)),
                "{recent} repairs"
            );
        }
        let base = settled();
        let mut gone = healthy();
        gone.workloads = Ok(WorkloadFacts {
            base_objects: true,
            ..WorkloadFacts::default()
        });
        // Three repairs did not hold, the last 30 s ago: wait until 4 minutes after it.
        let d = assess(&base, &gone, &h(3, 0), &r, &rules(), &ctx(30)).expect("degraded");
        assert!(d.answer.operation.is_none());
        assert_eq!(
            condition(&d.answer.cluster, ConditionType::AutoRepair).1,
            ConditionReason::BackingOff
        );
        let msg = &d
            .answer
            .cluster
            .conditions
            .iter()
            .find(|c| c.kind == ConditionType::AutoRepair)
            .expect("c")
            .message;
        assert!(
            msg.contains("3 repairs") && msg.contains(":04:00Z"),
            "{msg}"
        );
        // Once the wait is over, the repair goes.
        let d =
            assess(&d.answer.cluster, &gone, &h(3, 0), &r, &rules(), &ctx(241)).expect("repair");
        assert!(d.answer.operation.is_some());
        // Paused: DEGRADED, said so, no repair.
        let paused = RepairHistory {
            paused: true,
            ..RepairHistory::default()
        };
        let d = assess(&base, &gone, &paused, &r, &rules(), &ctx(30)).expect("degraded");
        assert!(d.answer.operation.is_none());
        assert_eq!(d.answer.cluster.state, ClusterState::Degraded);
        assert_eq!(
            condition(&d.answer.cluster, ConditionType::AutoRepair).1,
            ConditionReason::Paused
        );
    }

    #[test]
    fn certificates_are_renewed_before_they_expire() {
        let r = ObserveRules::default();
        let with_cert = |days: i64| {
            let mut f = healthy();
            if let Ok(w) = &mut f.workloads {
                w.certificate_not_after = Some(t0() + Duration::days(days));
            }
            f
        };
        let base = settled();
        // Far from expiry: recorded once, in the status.
        let d = assess(
            &base,
            &with_cert(700),
            &RepairHistory::default(),
            &r,
            &rules(),
            &ctx(30),
        )
        .expect("recorded");
        let c = d.answer.cluster;
        assert_eq!(c.certificate_expire_time, Some(t0() + Duration::days(700)));
        assert_eq!(
            condition(&c, ConditionType::CertificatesValid).0,
            ConditionStatus::True
        );
        assert!(d.answer.operation.is_none());
        assert!(
            assess(
                &c,
                &with_cert(700),
                &RepairHistory::default(),
                &r,
                &rules(),
                &ctx(60)
            )
            .is_none()
        );
        // Within 30 days: a platform rotation, the cluster still READY.
        let d = assess(
            &c,
            &with_cert(20),
            &RepairHistory::default(),
            &r,
            &rules(),
            &ctx(90),
        )
        .expect("due");
        let op = d.answer.operation.expect("a rotation");
        assert_eq!(op.kind, OperationKind::RotateCertificates);
        assert_eq!(op.initiator.principal, "platform/certificates");
        assert_eq!(d.answer.cluster.state, ClusterState::Ready);
        assert_eq!(
            condition(&d.answer.cluster, ConditionType::CertificatesValid).1,
            ConditionReason::ExpiringSoon
        );
        // One that ran 5 minutes ago is not repeated yet; expired is DEGRADED.
        let recent = RepairHistory {
            last_rotation: Some(t0() + Duration::seconds(90) - Duration::minutes(5)),
            ..RepairHistory::default()
        };
        let d = assess(&c, &with_cert(-1), &recent, &r, &rules(), &ctx(90)).expect("expired");
        assert!(d.answer.operation.is_none());
        assert_eq!(d.answer.cluster.state, ClusterState::Degraded);
        assert_eq!(
            condition(&d.answer.cluster, ConditionType::CertificatesValid).1,
            ConditionReason::Expired
        );
        // A pause of repair does not stop a rotation.
        let paused = RepairHistory {
            paused: true,
            ..RepairHistory::default()
        };
        let d = assess(&c, &with_cert(20), &paused, &r, &rules(), &ctx(90)).expect("due");
        assert!(d.answer.operation.is_some());
    }

    #[test]
    fn planned_work_waits_for_the_window_and_urgent_work_does_not() {
        use crate::spec::MaintenanceWindow;
        use chrono::{Datelike, NaiveTime};
        let r = ObserveRules::default();
        let now = t0() + Duration::seconds(90);
        let tomorrow = now + Duration::days(1);
        let window = MaintenanceWindow {
            day: tomorrow.weekday(),
            start: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            duration: Duration::hours(4),
        };
        let opens = tomorrow.date_naive().and_time(window.start).and_utc();
        let mut c = settled();
        c.spec.maintenance_window = Some(window);
        let with_cert = |days: i64| {
            let mut f = healthy();
            if let Ok(w) = &mut f.workloads {
                w.certificate_not_after = Some(t0() + Duration::days(days));
            }
            f
        };
        let h = RepairHistory::default();
        // Due for renewal, far from the deadline: at the window's start.
        let d = assess(&c, &with_cert(20), &h, &r, &rules(), &ctx(90)).expect("due");
        let op = d.answer.operation.expect("a rotation");
        assert_eq!(op.not_before, Some(opens));
        assert_eq!(op.next_attempt_time, opens);
        let when = format!(
            "rotate certificates scheduled for {} (maintenance window)",
            maintenance::shown_time(opens)
        );
        assert_eq!(d.answer.cluster.message, when);
        let event = d.changes.event.expect("event").message;
        assert!(event.contains(&when), "{event}");
        // In the last quarter of the margin (7.5 of 30 days) or expired: at once.
        for days in [7, -1] {
            let d = assess(&c, &with_cert(days), &h, &r, &rules(), &ctx(90)).expect("due");
            let op = d.answer.operation.expect("a rotation");
            assert_eq!((op.not_before, op.next_attempt_time), (None, now), "{days}");
        }
        // The platform's default window applies to a cluster without one.
        let mut plain = c.clone();
        plain.spec.maintenance_window = None;
        let with_default = Rules {
            default_window: Some(window),
            snapshots_enabled: false,
            ..rules()
        };
        let d = assess(&plain, &with_cert(20), &h, &r, &with_default, &ctx(90)).expect("due");
        assert_eq!(d.answer.operation.expect("op").not_before, Some(opens));

        // A template edited by hand waits for the window; a StatefulSet gone does not.
        let mut edited = healthy();
        if let Ok(WorkloadFacts { workloads: w, .. }) = &mut edited.workloads {
            w.get_mut("default").expect("default").up_to_date = false;
        }
        let d = assess(&c, &edited, &h, &r, &rules(), &ctx(90)).expect("drift");
        let op = d.answer.operation.expect("a repair");
        assert_eq!(
            (op.kind, op.not_before),
            (OperationKind::Repair, Some(opens))
        );
        assert!(d.answer.cluster.message.starts_with("repair scheduled for"));
        let mut gone = healthy();
        if let Ok(WorkloadFacts { workloads: w, .. }) = &mut gone.workloads {
            w.clear();
        }
        let d = assess(&c, &gone, &h, &r, &rules(), &ctx(90)).expect("drift");
        let op = d.answer.operation.expect("a repair");
        assert_eq!((op.not_before, op.next_attempt_time), (None, now));
    }

    #[test]
    fn full_disks_are_reported_by_watermark_and_the_flood_stage_degrades() {
        let base = settled();
        let cases = [
            (
                40,
                ConditionStatus::True,
                ConditionReason::AsExpected,
                ClusterState::Ready,
            ),
            (
                86,
                ConditionStatus::False,
                ConditionReason::LowWatermark,
                ClusterState::Ready,
            ),
            (
                91,
                ConditionStatus::False,
                ConditionReason::HighWatermark,
                ClusterState::Ready,
            ),
            (
                97,
                ConditionStatus::False,
                ConditionReason::FloodStage,
                ClusterState::Degraded,
            ),
        ];
        for (pct, status, reason, state) in cases {
            let mut f = healthy();
            let mut h = health(Health::Green, "");
            h.disk_percent = BTreeMap::from([
                ("logs-default-0".to_string(), 20),
                ("logs-default-1".to_string(), pct),
            ]);
            f.health = Ok(Some(h));
            let d = judge(&base, &f, 30).expect("a change");
            let c = &d.answer.cluster;
            assert_eq!(
                condition(c, ConditionType::DiskOk),
                (status, reason),
                "{pct} %"
            );
            assert_eq!(c.state, state, "{pct} %");
            assert!(d.answer.operation.is_none(), "a repair does not free disk");
            let msg = &c
                .conditions
                .iter()
                .find(|x| x.kind == ConditionType::DiskOk)
                .expect("c")
                .message;
            // The fullest node, and how full.
            assert!(
                msg.contains("logs-default-1") && msg.contains(&format!("{pct} %")),
                "{msg}"
            );
        }
    }

    #[test]
    fn pausing_is_recorded_with_who_and_why() {
        let d = set_repair_paused(&settled(), true, "keys/ops", "investigating by hand", t0());
        let c = &d.answer;
        assert_eq!(
            condition(c, ConditionType::AutoRepair).1,
            ConditionReason::Paused
        );
        let event = d.changes.event.as_ref().expect("event");
        assert_eq!(
            event.message,
            "automatic repair paused by keys/ops: investigating by hand"
        );
        assert_eq!(c.revision, settled().revision + 1);
        let d = set_repair_paused(c, false, "keys/ops", "done", t0());
        assert_eq!(
            condition(&d.answer, ConditionType::AutoRepair).1,
            ConditionReason::Enabled
        );
    }

    #[test]
    fn busy_dead_or_stale_clusters_are_not_observed() {
        let base = settled();
        let mut busy = base.clone();
        busy.current_operation = Some(Uuid::from_u128(1));
        let mut deleting = base.clone();
        deleting.state = ClusterState::Deleting;
        let mut failed = base.clone();
        failed.state = ClusterState::Failed;
        let mut newer = base.clone();
        newer.generation = 2;
        let mut f = healthy();
        f.workloads = Ok(WorkloadFacts {
            base_objects: true,
            ..WorkloadFacts::default()
        });
        for c in [busy, deleting, failed, newer] {
            assert!(judge(&c, &f, 30).is_none());
        }
    }

    #[test]
    fn node_groups_behind_the_platform_image_get_a_rotation_in_the_window() {
        use crate::plan::ZoneGroupObs;
        use crate::spec::MaintenanceWindow;
        use chrono::{Datelike, NaiveTime};
        let r = ObserveRules::default();
        let with_release = |release: &str| {
            let mut f = healthy();
            if let Ok(groups) = &mut f.node_groups
                && let Some(g) = groups.get_mut("default")
            {
                g.zones.insert(
                    "us-east-1a".into(),
                    ZoneGroupObs {
                        desired_size: 1,
                        status: NodeGroupStatus::Active,
                        release_version: release.into(),
                    },
                );
            }
            f
        };
        let platform = Rules {
            node_release: Some("1.31.3-20250105".into()),
            ..rules()
        };
        let c = settled();
        let h = RepairHistory::default();
        // No platform image configured: nothing, whatever the groups run.
        assert!(
            assess(
                &c,
                &with_release("1.31.2-20241121"),
                &h,
                &r,
                &rules(),
                &ctx(90)
            )
            .is_none()
        );
        // At the platform's image, or not reported: nothing.
        for same in ["1.31.3-20250105", ""] {
            assert!(
                assess(&c, &with_release(same), &h, &r, &platform, &ctx(90)).is_none(),
                "{same:?}"
            );
        }
        // Behind: a platform ROTATE_NODES to the configured release, now (no window).
        let d = assess(
            &c,
            &with_release("1.31.2-20241121"),
            &h,
            &r,
            &platform,
            &ctx(90),
        )
        .expect("behind");
        let op = d.answer.operation.expect("a node rotation");
        assert_eq!(op.kind, OperationKind::RotateNodes);
        assert_eq!(op.params.node_release.as_deref(), Some("1.31.3-20250105"));
        assert_eq!(op.initiator.kind, InitiatorKind::Platform);
        assert_eq!(op.initiator.principal, "platform/node-images");
        assert_eq!(op.not_before, None);
        assert_eq!(d.answer.cluster.state, ClusterState::Ready);
        let event = d
            .changes
            .event
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(
            event.contains("default in us-east-1a at 1.31.2-20241121"),
            "the event names the group behind: {event}"
        );
        // One created 5 minutes ago is not repeated yet (a failing one is not retried in a loop).
        let recent = RepairHistory {
            last_node_rotation: Some(t0() + Duration::seconds(90) - Duration::minutes(5)),
            ..RepairHistory::default()
        };
        assert!(
            assess(
                &c,
                &with_release("1.31.2-20241121"),
                &recent,
                &r,
                &platform,
                &ctx(90)
            )
            .is_none()
        );
        // A cluster that is unwell is not rotated (its repair goes first).
        let mut unwell = with_release("1.31.2-20241121");
        unwell.health = Ok(Some(health(Health::Red, "index logs is red")));
        let d = assess(&c, &unwell, &h, &r, &platform, &ctx(90)).expect("red");
        assert!(d.answer.operation.is_none());
        // With a window: at its start, saying so.
        let now = t0() + Duration::seconds(90);
        let tomorrow = now + Duration::days(1);
        let window = MaintenanceWindow {
            day: tomorrow.weekday(),
            start: NaiveTime::from_hms_opt(2, 0, 0).unwrap_or_default(),
            duration: Duration::hours(4),
        };
        let opens = tomorrow.date_naive().and_time(window.start).and_utc();
        let mut windowed = c.clone();
        windowed.spec.maintenance_window = Some(window);
        let d = assess(
            &windowed,
            &with_release("1.31.2-20241121"),
            &h,
            &r,
            &platform,
            &ctx(90),
        )
        .expect("behind");
        let op = d.answer.operation.expect("a node rotation");
        assert_eq!(op.not_before, Some(opens));
        assert!(
            d.answer
                .cluster
                .message
                .starts_with("rotate nodes scheduled for"),
            "{}",
            d.answer.cluster.message
        );
    }
}
