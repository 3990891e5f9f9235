//! An overridden gate: the planner asked as if one stalled gate were open.
//!
//! `OverrideGate` ([`crate::lifecycle::override_gate`]) names the stage a
//! STALLED operation waited in. The worker's next attempt plans as usual;
//! the first time the plan waits in that stage, the wait is taken as passed
//! and the plan is asked again with that one gate open. It stays open while
//! the plan of the real cluster keeps asking for that same wait (the health
//! gate is asked again before each step of one pod's move); the first time
//! the real plan asks for another gate, or the operation ends, the override
//! is spent, and every gate after it applies as usual.
//!
//! The drain gate is never opened: a node leaves only once Elasticsearch
//! reports it holds no shards, whoever asks.

use super::{HealthObs, NodeGroupStatus, Observed, Step, node_key};
use crate::cluster::Health;
use crate::operation::StageName;

/// A gate an override lets pass in this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overridden {
    /// The stage of the gate that stalled (each wait belongs to one stage).
    pub stage: StageName,
    /// The wait the override opened, once it has: only that one stays open.
    pub opened: Option<Step>,
}

impl Overridden {
    /// An override of the gate of `stage`, not yet used.
    pub fn of(stage: StageName) -> Self {
        Overridden {
            stage,
            opened: None,
        }
    }

    fn opens(&self, step: &Step) -> bool {
        if !can_open(step) {
            return false;
        }
        match &self.opened {
            None => step.stage() == self.stage,
            Some(opened) => opened == step,
        }
    }
}

/// Whether an override may open the gates of `stage`: not the drain gate,
/// and not a snapshot's or a restore's wait (passing them would report a
/// snapshot or restore that never happened; a delete stalled on its final
/// snapshot is deleted again with `skip_final_snapshot` instead).
pub fn stage_can_be_overridden(stage: StageName) -> bool {
    !matches!(
        stage,
        StageName::DrainNodes | StageName::Snapshot | StageName::Restore
    )
}

fn can_open(step: &Step) -> bool {
    step.is_wait() && stage_can_be_overridden(step.stage())
}

/// What a plan with an override gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The next step (`None`: the goal is reached).
    pub step: Option<Step>,
    /// The wait the override opened to get there, if it did.
    pub opened: Option<Step>,
}

/// [`super::next_step`], with the overridden `gate` open; `gate` records
/// the wait it opened, and becomes `None` once it is spent.
pub fn next_step_overriding(
    goal: &super::Goal,
    observed: &Observed,
    gate: &mut Option<Overridden>,
) -> Planned {
    let step = super::next_step(goal, observed);
    let Some(g) = gate.as_mut() else {
        return Planned { step, opened: None };
    };
    match step {
        Some(wait) if g.opens(&wait) => {
            g.opened = Some(wait.clone());
            let step = super::next_step(goal, &with_gate_open(observed, &wait));
            if step.is_none() {
                *gate = None;
            }
            Planned {
                step,
                opened: Some(wait),
            }
        }
        // The real cluster asks for another gate: this one was passed.
        Some(other) if other.is_wait() && g.opened.is_some() => {
            *gate = None;
            Planned {
                step: Some(other),
                opened: None,
            }
        }
        None => {
            *gate = None;
            Planned {
                step: None,
                opened: None,
            }
        }
        step => Planned { step, opened: None },
    }
}

/// `observed` as it would be if the wait `step` were over.
pub fn with_gate_open(observed: &Observed, step: &Step) -> Observed {
    let mut o = observed.clone();
    match step {
        Step::WaitHealthy => {
            let h = o.health.get_or_insert_with(|| HealthObs {
                status: Health::Green,
                reason: String::new(),
                shards_on_excluded: Default::default(),
                shutdowns: Default::default(),
                voting_exclusions: Default::default(),
                yellow_from_versions: false,
                disk_percent: Default::default(),
            });
            h.status = Health::Green;
        }
        Step::WaitPodsReady { node_set } => {
            if let Some(w) = o.workloads.get_mut(node_set) {
                w.ready_replicas = w.replicas;
                w.updated_replicas = w.updated_replicas.max(w.replicas - w.partition);
            }
        }
        Step::WaitNodeGroupActive { node_set } => {
            if let Some(g) = o.node_groups.get_mut(node_set) {
                g.status = NodeGroupStatus::Active;
            }
        }
        Step::WaitVolumesResized { node_set } => {
            if let Some(w) = o.workloads.get_mut(node_set) {
                for v in &mut w.volumes {
                    v.capacity_gib = v.capacity_gib.max(v.requested_gib);
                    v.current_attributes_class = v.attributes_class.clone();
                }
            }
        }
        Step::WaitShutdownReady { node_set, ordinal } => {
            if let Some(h) = o.health.as_mut() {
                h.shutdowns.insert(node_key(node_set, *ordinal), true);
            }
        }
        Step::WaitNodeGroupGone { node_set } => {
            o.node_groups.remove(node_set);
        }
        // The drain gate fails closed; other steps are not gates.
        _ => {}
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Goal, NodeGroupObs, WorkloadObs};
    use crate::spec::{ClusterSpec, VolumeRetention};

    fn health(status: Health) -> Option<HealthObs> {
        let mut o = Observed::default();
        o = with_gate_open(&o, &Step::WaitHealthy);
        o.health.map(|mut h| {
            h.status = status;
            h
        })
    }

    /// A cluster of `spec` built and ready, health `status`.
    fn built(spec: &ClusterSpec, status: Health) -> Observed {
        let mut o = Observed {
            base_objects: true,
            health: health(status),
            ..Observed::default()
        };
        for ns in &spec.node_sets {
            o.node_groups.insert(
                ns.name.clone(),
                NodeGroupObs {
                    instance_type: "m6i.large".into(),
                    desired_size: ns.count,
                    status: NodeGroupStatus::Active,
                    message: String::new(),
                    zones: Default::default(),
                },
            );
            o.workloads.insert(
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
                    master_eligible: true,
                },
            );
        }
        o
    }

    #[test]
    fn the_closing_health_gate_opens_once_and_the_goal_is_reached() {
        let spec = ClusterSpec::test().with_nodes(3);
        let goal = Goal::Converge(spec.clone());
        let yellow = built(&spec, Health::Yellow);
        assert_eq!(
            super::super::next_step(&goal, &yellow),
            Some(Step::WaitHealthy)
        );
        let mut gate = Some(Overridden::of(StageName::HealthGate));
        let planned = next_step_overriding(&goal, &yellow, &mut gate);
        assert_eq!(
            planned,
            Planned {
                step: None,
                opened: Some(Step::WaitHealthy)
            }
        );
        assert_eq!(gate, None, "spent at the end");
    }

    #[test]
    fn an_override_opens_only_its_stage_and_is_spent_at_the_next_gate() {
        let spec = ClusterSpec::test().with_nodes(3);
        let goal = Goal::Converge(spec.clone());
        let mut pods = built(&spec, Health::Green);
        if let Some(w) = pods.workloads.get_mut("default") {
            w.ready_replicas = 1;
        }
        let wait_pods = Step::WaitPodsReady {
            node_set: "default".into(),
        };
        // (case, override of, observed, step planned, opened, override left)
        type Case<'a> = (
            &'a str,
            StageName,
            &'a Observed,
            Option<Step>,
            Option<Step>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "another stage's gate is not opened",
                StageName::HealthGate,
                &pods,
                Some(wait_pods.clone()),
                None,
                true,
            ),
            (
                "its own stage's gate is",
                StageName::PodsReady,
                &pods,
                None,
                Some(wait_pods.clone()),
                false,
            ),
        ];
        for (case, stage, observed, step, opened, left) in cases {
            let mut gate = Some(Overridden::of(stage));
            let planned = next_step_overriding(&goal, observed, &mut gate);
            assert_eq!(planned.step, step, "{case}");
            assert_eq!(planned.opened, opened, "{case}");
            assert_eq!(gate.is_some(), left, "{case}");
        }
        // Opened once, then the real plan asks for another gate: spent.
        let mut gate = Some(Overridden {
            stage: StageName::HealthGate,
            opened: Some(Step::WaitHealthy),
        });
        let planned = next_step_overriding(&goal, &pods, &mut gate);
        assert_eq!(planned.step, Some(wait_pods));
        assert_eq!(gate, None);
        // Not opened yet: a non-gate step leaves it waiting for its gate.
        let mut gate = Some(Overridden::of(StageName::HealthGate));
        let empty = Observed::default();
        let planned = next_step_overriding(&goal, &empty, &mut gate);
        assert_eq!(planned.step, Some(Step::ApplyBaseObjects));
        assert_eq!(gate, Some(Overridden::of(StageName::HealthGate)));
    }

    #[test]
    fn the_drain_gate_is_never_opened() {
        assert!(!stage_can_be_overridden(StageName::DrainNodes));
        let drained = Step::WaitDrained {
            node_set: "default".into(),
            ordinal: 2,
        };
        let g = Overridden::of(StageName::DrainNodes);
        assert!(!g.opens(&drained));
        let o = Observed::default();
        assert_eq!(with_gate_open(&o, &drained), o);
    }

    #[test]
    fn each_gate_opens_in_the_observation() {
        let spec = ClusterSpec::test().with_nodes(3);
        let mut o = built(&spec, Health::Red);
        if let Some(g) = o.node_groups.get_mut("default") {
            g.status = NodeGroupStatus::Creating;
        }
        let open = with_gate_open(&o, &Step::WaitHealthy);
        assert_eq!(open.health.map(|h| h.status), Some(Health::Green));
        let open = with_gate_open(
            &o,
            &Step::WaitNodeGroupActive {
                node_set: "default".into(),
            },
        );
        assert_eq!(open.node_groups["default"].status, NodeGroupStatus::Active);
        let open = with_gate_open(
            &o,
            &Step::WaitNodeGroupGone {
                node_set: "default".into(),
            },
        );
        assert!(open.node_groups.is_empty());
        let goal = Goal::Delete {
            retention: VolumeRetention::Delete,
            final_snapshot: None,
        };
        if let Some(g) = o.node_groups.get_mut("default") {
            g.status = NodeGroupStatus::Deleting;
        }
        let deleting = Observed {
            node_groups: o.node_groups.clone(),
            ..Observed::default()
        };
        // A delete waiting for its node group to go ends when it is let pass.
        let mut gate = Some(Overridden::of(StageName::NodeGroupsGone));
        assert_eq!(next_step_overriding(&goal, &deleting, &mut gate).step, None);
    }
}
