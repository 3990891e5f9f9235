//! An in-memory world for the executor's unit tests: node groups,
//! workloads and Elasticsearch held in one mutex, every mutating call
//! recorded, faults injected per call, and a reporter that records (or
//! refuses) reports. Time is tokio's, paused in the tests, so waits cost
//! nothing and timeouts are exact.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use esaas_core::backend::{
    Elasticsearch, NodeGroups, StepError, StepResult, Target, Workloads, WorkloadsObs,
};
use esaas_core::cluster::Health;
use esaas_core::lifecycle::lease::LeaseEvent;
use esaas_core::plan::{
    HealthObs, NodeGroupObs, NodeGroupStatus, RestoreObs, VolumeObs, WorkloadObs, node_key,
};
use esaas_core::snapshots::{RestoreSource, SnapshotObs, SnapshotState};
use esaas_core::spec::VolumeRetention;

use crate::executor::Reporter;

/// What the world holds.
#[derive(Debug, Default)]
pub struct World {
    /// Namespace and shared objects exist.
    pub base: bool,
    /// The operation that last rotated the certificates.
    pub rotated_by: Option<uuid::Uuid>,
    /// Node groups by node set.
    pub node_groups: BTreeMap<String, NodeGroupObs>,
    /// StatefulSets by node set.
    pub workloads: BTreeMap<String, WorkloadObs>,
    /// The claim template (size, attributes class) of each StatefulSet, set
    /// when it is created: it cannot change on an existing one.
    pub claims: BTreeMap<String, (i32, String)>,
    /// Volumes by node set; they outlive a StatefulSet deleted with its pods
    /// orphaned, and grow or change class at once.
    pub volumes: BTreeMap<String, Vec<VolumeObs>>,
    /// Elasticsearch's health; `None`: it does not answer.
    pub health: Option<Health>,
    /// Pods excluded from allocation (they drain at once).
    pub excluded: Vec<String>,
    /// Registered node shutdowns, by node key (COMPLETE at once).
    pub shutdowns: Vec<String>,
    /// Nodes excluded from the voting configuration, by node key.
    pub voting_exclusions: Vec<String>,
    /// The snapshot repository: `None` snapshots off, else whether it is registered.
    pub repository: Option<bool>,
    /// Snapshots in the cluster's repository (they succeed at once, unless
    /// `snapshot_fails` says why not).
    pub snapshots: Vec<esaas_core::snapshots::SnapshotObs>,
    /// A snapshot taken ends FAILED with this reason.
    pub snapshot_fails: Option<String>,
    /// A snapshot taken stays IN_PROGRESS (until a test ends it).
    pub snapshot_runs: bool,
    /// Indices in the cluster (a restore adds the source's).
    pub indices: Vec<String>,
    /// The source repository is registered.
    pub source_registered: bool,
    /// The indices of the restore source's snapshot (`None`: no such snapshot).
    pub source_indices: Option<Vec<String>>,
    /// Mutating calls, in order, as `name node_set arg`.
    pub calls: Vec<String>,
    /// Errors the next calls of a name return, in order.
    pub faults: BTreeMap<&'static str, VecDeque<StepError>>,
    /// How many of the next calls of a name never answer (a hung dependency),
    /// once the errors queued for it in `faults` are spent.
    pub hangs: BTreeMap<&'static str, usize>,
    /// A new node group starts in this status (ACTIVE unless set).
    pub new_group_status: Option<NodeGroupStatus>,
}

/// The world, shared by the three backends.
#[derive(Debug, Clone, Default)]
pub struct Memory(Arc<Mutex<World>>);

impl Memory {
    /// The world, locked.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` calls named `call` fail with `error`.
    pub fn fail(&self, call: &'static str, n: usize, error: StepError) {
        let mut w = self.world();
        let q = w.faults.entry(call).or_default();
        q.extend(std::iter::repeat_n(error, n));
    }

    /// The next `n` calls named `call` never answer.
    pub fn hang(&self, call: &'static str, n: usize) {
        *self.world().hangs.entry(call).or_default() += n;
    }

    /// Never returns when `call` is to hang this time.
    async fn maybe_hang(&self, call: &'static str) {
        let hang = {
            let mut w = self.world();
            let failing = w.faults.get(call).is_some_and(|q| !q.is_empty());
            match w.hangs.get_mut(call) {
                _ if failing => false,
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if hang {
            std::future::pending::<()>().await;
        }
    }

    fn check(&self, call: &'static str) -> StepResult<MutexGuard<'_, World>> {
        let mut w = self.world();
        match w.faults.get_mut(call).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(w),
        }
    }

    fn record(
        &self,
        call: &'static str,
        node_set: &str,
        arg: impl std::fmt::Display,
    ) -> StepResult<MutexGuard<'_, World>> {
        let mut w = self.check(call)?;
        w.calls.push(format!("{call} {node_set} {arg}"));
        Ok(w)
    }
}

impl NodeGroups for Memory {
    async fn observe(&self, _: &Target) -> StepResult<BTreeMap<String, NodeGroupObs>> {
        self.maybe_hang("nodegroup.observe").await;
        Ok(self.check("nodegroup.observe")?.node_groups.clone())
    }

    async fn ensure(&self, _: &Target, node_set: &str, size: i32) -> StepResult<()> {
        self.maybe_hang("nodegroup.ensure").await;
        let mut w = self.record("nodegroup.ensure", node_set, size)?;
        let status = w.new_group_status.unwrap_or(NodeGroupStatus::Active);
        let g = w
            .node_groups
            .entry(node_set.to_string())
            .or_insert_with(|| NodeGroupObs {
                instance_type: "r6i.large".into(),
                desired_size: size,
                status,
                message: String::new(),
                zones: Default::default(),
            });
        g.desired_size = size;
        Ok(())
    }

    async fn update_version(
        &self,
        _: &Target,
        node_set: &str,
        zone: &str,
        release: &str,
    ) -> StepResult<()> {
        let mut w = self.record(
            "nodegroup.update_version",
            node_set,
            format!("{zone} {release}"),
        )?;
        if let Some(z) = w
            .node_groups
            .get_mut(node_set)
            .and_then(|g| g.zones.get_mut(zone))
        {
            z.release_version = release.to_string();
        }
        Ok(())
    }

    async fn delete(&self, _: &Target, node_set: &str) -> StepResult<()> {
        let mut w = self.record("nodegroup.delete", node_set, "")?;
        w.node_groups.remove(node_set);
        Ok(())
    }
}

impl Workloads for Memory {
    async fn observe(&self, t: &Target) -> StepResult<WorkloadsObs> {
        let w = self.check("workloads.observe")?;
        let mut workloads = w.workloads.clone();
        for (name, obs) in &mut workloads {
            let wanted = t
                .spec
                .node_sets
                .iter()
                .find(|n| &n.name == name)
                .map(|n| (n.storage_gib, n.attributes_class()));
            obs.claims_up_to_date = wanted.is_none() || w.claims.get(name) == wanted.as_ref();
            obs.volumes = w.volumes.get(name).cloned().unwrap_or_default();
        }
        let claims = w
            .volumes
            .iter()
            .flat_map(|(n, vs)| vs.iter().map(move |v| format!("{n}-{}", v.ordinal)))
            .collect();
        Ok(WorkloadsObs {
            base_objects: w.base,
            claims,
            workloads,
            endpoint: w.base.then(|| format!("https://{}:9200", t.cluster_id)),
            certificate_not_after: None,
            certificates_rotated_by: w.rotated_by,
        })
    }

    async fn rotate_certificates(&self, t: &Target) -> StepResult<()> {
        self.record("workloads.rotate_certificates", "", "")?
            .rotated_by = Some(t.operation);
        Ok(())
    }

    async fn apply_base(&self, _: &Target) -> StepResult<()> {
        self.record("workloads.apply_base", "", "")?.base = true;
        Ok(())
    }

    async fn apply_node_set(&self, t: &Target, node_set: &str, replicas: i32) -> StepResult<()> {
        let mut w = self.record("workloads.apply_node_set", node_set, replicas)?;
        let Some(ns) = t.spec.node_sets.iter().find(|n| n.name == node_set) else {
            return Err(StepError::permanent("RENDER", "no such node set"));
        };
        let claim = (ns.storage_gib, ns.attributes_class());
        let created = !w.workloads.contains_key(node_set);
        if created {
            w.claims.insert(node_set.to_string(), claim.clone());
        }
        // Like the StatefulSet controller: a new pod gets a volume from the
        // claim template, a removed pod's volume goes (whenScaled: Delete).
        let (gib, class) = w.claims.get(node_set).cloned().unwrap_or(claim);
        let volumes = w.volumes.entry(node_set.to_string()).or_default();
        volumes.retain(|v| v.ordinal < replicas);
        for ordinal in 0..replicas {
            if !volumes.iter().any(|v| v.ordinal == ordinal) {
                volumes.push(VolumeObs {
                    ordinal,
                    requested_gib: gib,
                    capacity_gib: gib,
                    attributes_class: Some(class.clone()),
                    current_attributes_class: Some(class.clone()),
                });
            }
        }
        // Pods are ready at once, at the spec's version.
        w.workloads.insert(
            node_set.to_string(),
            WorkloadObs {
                replicas,
                ready_replicas: replicas,
                version: t.spec.version.clone(),
                up_to_date: true,
                updated_replicas: replicas,
                partition: 0,
                claims_up_to_date: true,
                volumes: Vec::new(),
                master_eligible: ns.is_master_eligible(),
            },
        );
        Ok(())
    }

    async fn roll(&self, _: &Target, node_set: &str, partition: i32) -> StepResult<()> {
        let mut w = self.record("workloads.roll", node_set, partition)?;
        if let Some(s) = w.workloads.get_mut(node_set) {
            s.partition = partition;
            s.updated_replicas = s.replicas - partition;
        }
        Ok(())
    }

    async fn resize_volumes(
        &self,
        _: &Target,
        node_set: &str,
        storage_gib: i32,
        attributes_class: &str,
    ) -> StepResult<()> {
        let mut w = self.record(
            "workloads.resize_volumes",
            node_set,
            format!("{storage_gib} {attributes_class}"),
        )?;
        for v in w.volumes.entry(node_set.to_string()).or_default() {
            v.requested_gib = v.requested_gib.max(storage_gib);
            v.capacity_gib = v.requested_gib;
            v.attributes_class = Some(attributes_class.to_string());
            v.current_attributes_class = Some(attributes_class.to_string());
        }
        Ok(())
    }

    async fn orphan_node_set(&self, _: &Target, node_set: &str) -> StepResult<()> {
        let mut w = self.record("workloads.orphan_node_set", node_set, "")?;
        w.workloads.remove(node_set);
        w.claims.remove(node_set);
        Ok(())
    }

    async fn delete_node_set(&self, _: &Target, node_set: &str) -> StepResult<()> {
        self.record("workloads.delete_node_set", node_set, "")?
            .workloads
            .remove(node_set);
        Ok(())
    }

    async fn delete_base(&self, _: &Target, retention: VolumeRetention) -> StepResult<()> {
        let mut w = self.record("workloads.delete_base", "", format!("{retention:?}"))?;
        w.base = false;
        if retention == VolumeRetention::Delete {
            w.volumes.clear();
        }
        Ok(())
    }
}

impl Elasticsearch for Memory {
    async fn health(&self, _: &Target) -> StepResult<Option<HealthObs>> {
        let w = self.check("es.health")?;
        Ok(w.health.map(|status| HealthObs {
            status,
            reason: if status == Health::Green {
                String::new()
            } else {
                "index logs-1 has 1 unassigned replica".into()
            },
            shards_on_excluded: w.excluded.iter().map(|k| (k.clone(), 0)).collect(),
            shutdowns: w.shutdowns.iter().map(|k| (k.clone(), true)).collect(),
            voting_exclusions: w.voting_exclusions.iter().cloned().collect(),
            yellow_from_versions: false,
            disk_percent: Default::default(),
        }))
    }

    async fn include(&self, _: &Target, node_set: &str, ordinal: i32) -> StepResult<()> {
        let mut w = self.record("es.include", node_set, ordinal)?;
        let key = node_key(node_set, ordinal);
        w.excluded.retain(|k| *k != key);
        Ok(())
    }

    async fn exclude(&self, _: &Target, node_set: &str, ordinal: i32) -> StepResult<()> {
        let mut w = self.record("es.exclude", node_set, ordinal)?;
        w.excluded.push(node_key(node_set, ordinal));
        Ok(())
    }

    async fn register_shutdown(&self, _: &Target, node_set: &str, ordinal: i32) -> StepResult<()> {
        let mut w = self.record("es.register_shutdown", node_set, ordinal)?;
        let key = node_key(node_set, ordinal);
        if !w.shutdowns.contains(&key) {
            w.shutdowns.push(key);
        }
        Ok(())
    }

    async fn clear_shutdown(&self, _: &Target, node_set: &str, ordinal: i32) -> StepResult<()> {
        let mut w = self.record("es.clear_shutdown", node_set, ordinal)?;
        let key = node_key(node_set, ordinal);
        w.shutdowns.retain(|k| *k != key);
        Ok(())
    }

    async fn exclude_from_voting(
        &self,
        _: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> StepResult<()> {
        let mut w = self.record("es.exclude_from_voting", node_set, ordinal)?;
        let key = node_key(node_set, ordinal);
        if !w.voting_exclusions.contains(&key) {
            w.voting_exclusions.push(key);
        }
        Ok(())
    }

    async fn clear_voting_exclusions(&self, _: &Target) -> StepResult<()> {
        self.record("es.clear_voting_exclusions", "", "")?
            .voting_exclusions
            .clear();
        Ok(())
    }

    async fn repository_registered(&self, _: &Target) -> StepResult<Option<bool>> {
        Ok(self.check("es.repository")?.repository)
    }

    async fn register_repository(&self, _: &Target) -> StepResult<()> {
        self.record("es.register_repository", "", "")?.repository = Some(true);
        Ok(())
    }

    async fn snapshots(&self, _: &Target) -> StepResult<Option<Vec<SnapshotObs>>> {
        let w = self.check("es.snapshots")?;
        Ok(w.repository.is_some().then(|| w.snapshots.clone()))
    }

    async fn take_snapshot(&self, _: &Target, name: &str) -> StepResult<()> {
        let mut w = self.record("es.take_snapshot", name, "")?;
        if !w.snapshots.iter().any(|s| s.name == name) {
            let (state, reason) = match w.snapshot_fails.clone() {
                Some(r) => (SnapshotState::Failed, r),
                None if w.snapshot_runs => (SnapshotState::InProgress, String::new()),
                None => (SnapshotState::Success, String::new()),
            };
            let indices = w.indices.clone();
            w.snapshots.push(SnapshotObs {
                name: name.to_string(),
                state,
                reason,
                indices,
                start_time: None,
                end_time: None,
            });
        }
        Ok(())
    }

    async fn delete_snapshot(&self, _: &Target, name: &str) -> StepResult<()> {
        self.record("es.delete_snapshot", name, "")?
            .snapshots
            .retain(|s| s.name != name);
        Ok(())
    }

    async fn restore_state(
        &self,
        _: &Target,
        source: &RestoreSource,
    ) -> StepResult<Option<RestoreObs>> {
        let w = self.check("es.restore_state")?;
        if w.health.is_none() {
            return Ok(None);
        }
        let wanted: Vec<String> = match &w.source_indices {
            Some(all) if source.indices.is_empty() => all.clone(),
            Some(_) => source.indices.clone(),
            None => Vec::new(),
        };
        Ok(Some(RestoreObs {
            source_registered: w.source_registered,
            snapshot: (w.source_registered && w.source_indices.is_some())
                .then_some(SnapshotState::Success),
            pending: wanted
                .into_iter()
                .filter(|i| !w.indices.contains(i))
                .collect(),
            conflicts: Vec::new(),
        }))
    }

    async fn register_source_repository(&self, _: &Target, _: &RestoreSource) -> StepResult<()> {
        self.record("es.register_source_repository", "", "")?
            .source_registered = true;
        Ok(())
    }

    async fn restore(&self, _: &Target, _: &RestoreSource, indices: &[String]) -> StepResult<()> {
        let mut w = self.record("es.restore", &indices.join(","), "")?;
        for i in indices {
            if !w.indices.contains(i) {
                w.indices.push(i.clone());
            }
        }
        Ok(())
    }
}

/// Records every report; refuses every report after the first `accept` ones.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Accepted reports, in order.
    pub reports: Mutex<Vec<LeaseEvent>>,
    /// How many reports are accepted (`None`: all).
    pub accept: Option<usize>,
}

impl Recorder {
    /// The accepted reports.
    pub fn reports(&self) -> Vec<LeaseEvent> {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Reporter for Recorder {
    async fn report(&self, event: LeaseEvent) -> Result<(), String> {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if self.accept.is_some_and(|n| reports.len() >= n) {
            return Err("the lease moved to another worker".into());
        }
        reports.push(event);
        Ok(())
    }
}
