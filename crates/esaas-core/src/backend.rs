//! The three things a worker drives, as traits: EKS node groups, the
//! Kubernetes workloads of Elasticsearch, and Elasticsearch itself. The EKS
//! and Kubernetes adapters implement them; the executor's unit tests use an
//! in-memory world (`esaas-worker`'s `memory`), the worker-pool tests a
//! simulated one shared through PostgreSQL (`esaas-tests`' `sim`).
//!
//! Every call is idempotent: it states the end it wants, so repeating it
//! after a crash changes nothing more.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::names::{ClusterId, ClusterName, TenantId};
use crate::plan::{HealthObs, NodeGroupObs, RestoreObs, WorkloadObs};
use crate::snapshots::{RestoreSource, SnapshotObs};
use crate::spec::{ClusterSpec, VolumeRetention};

/// The cluster an operation works on, at the operation's target generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Cluster uid.
    pub uid: Uuid,
    /// Owner.
    pub tenant: TenantId,
    /// Cluster id.
    pub cluster_id: ClusterId,
    /// The spec to reach.
    pub spec: ClusterSpec,
    /// Its generation.
    pub generation: i64,
    /// The operation, for idempotency keys.
    pub operation: Uuid,
}

impl Target {
    /// `tenants/{tenant}/clusters/{cluster}`.
    pub fn name(&self) -> ClusterName {
        ClusterName {
            tenant: self.tenant.clone(),
            cluster: self.cluster_id.clone(),
        }
    }

    /// The idempotency key of a step: the same for every attempt of this
    /// operation, different for another operation (EKS `clientRequestToken`).
    pub fn idempotency_key(&self, step: &str) -> String {
        format!("{}-{step}", self.operation.simple())
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct StepError {
    /// Another attempt may succeed (throttling, 5xx, a timeout).
    pub retryable: bool,
    /// Stable reason, for example `EKS_THROTTLED` or `NODEGROUP_FOREIGN`.
    pub reason: String,
    /// What happened, with the upstream error code and message.
    pub message: String,
}

/// The reason of an error saying the platform's EKS cluster itself does not
/// exist (not one of its node groups).
pub const PLATFORM_CLUSTER_GONE: &str = "EKS_CLUSTER_NOT_FOUND";

impl StepError {
    /// Whether this error, met observing the node groups of a cluster being
    /// deleted, means there is nothing left to delete: the platform's EKS
    /// cluster is gone, and with it every node group and Kubernetes object
    /// the cluster had. Anything else (a create meeting it, a timeout) is an
    /// error like any other.
    pub fn means_nothing_left(&self, deleting: bool) -> bool {
        deleting && self.reason == PLATFORM_CLUSTER_GONE
    }

    /// A failure another attempt may fix.
    pub fn retryable(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A failure only a change (of spec, configuration or permissions) fixes.
    pub fn permanent(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// `what` (a step, or the look before one) did not finish within `limit`.
    /// Retryable: a dependency that hung may answer the next attempt, which
    /// comes after the usual backoff; the hung attempt costs one attempt of
    /// the budget like any failure, so a dependency that never answers ends
    /// the operation FAILED instead of RUNNING for ever. `last` is the last
    /// error a try of the step met before the deadline (often the call's own
    /// timeout, which names the dependency), kept so the operation says why.
    pub fn deadline_exceeded(what: &str, limit: Duration, last: Option<&StepError>) -> Self {
        let mut message = format!(
            "{what} did not finish within {} (worker.step_timeout_seconds)",
            seconds(limit)
        );
        if let Some(e) = last {
            message.push_str(&format!("; last error: {}: {}", e.reason, e.message));
        }
        Self::retryable(STEP_TIMEOUT, message)
    }
}

/// The reason of a step that ran past its deadline.
pub const STEP_TIMEOUT: &str = "STEP_TIMEOUT";

/// `3 s`, `1.5 s`: how an operator reads a limit.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

/// Result of a backend call.
pub type StepResult<T> = std::result::Result<T, StepError>;

/// EKS managed node groups, one per node set.
pub trait NodeGroups: Send + Sync + 'static {
    /// The cluster's node groups, by node set.
    fn observe(
        &self,
        target: &Target,
    ) -> impl Future<Output = StepResult<BTreeMap<String, NodeGroupObs>>> + Send;
    /// Creates the node group of `node_set` with `size` nodes, or sets its size.
    fn ensure(
        &self,
        target: &Target,
        node_set: &str,
        size: i32,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Moves the node group of `node_set` in `zone` to the node image
    /// `release` (EKS replaces its nodes, new ones first, in that zone). Done
    /// when the group is at that release or already moving to it.
    fn update_version(
        &self,
        target: &Target,
        node_set: &str,
        zone: &str,
        release: &str,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Deletes the node group of `node_set` (done when it is deleting or gone).
    fn delete(
        &self,
        target: &Target,
        node_set: &str,
    ) -> impl Future<Output = StepResult<()>> + Send;
}

/// What the Kubernetes side holds for a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadsObs {
    /// Namespace and shared objects exist.
    pub base_objects: bool,
    /// StatefulSets by node set.
    pub workloads: BTreeMap<String, WorkloadObs>,
    /// The client endpoint, once the client Service exists.
    pub endpoint: Option<String>,
    /// Every volume claim of the cluster (`{namespace}/{claim}`), with or without
    /// its StatefulSet.
    pub claims: Vec<String>,
    /// When the node certificate in the cluster's Secret expires.
    pub certificate_not_after: Option<DateTime<Utc>>,
    /// The operation that last rotated the certificates, as the Secret records it.
    pub certificates_rotated_by: Option<Uuid>,
}

/// Kubernetes objects of Elasticsearch.
pub trait Workloads: Send + Sync + 'static {
    /// What exists.
    fn observe(&self, target: &Target) -> impl Future<Output = StepResult<WorkloadsObs>> + Send;
    /// Applies the namespace and the shared objects (secret, config, services, PDB, policy).
    fn apply_base(&self, target: &Target) -> impl Future<Output = StepResult<()>> + Send;
    /// Applies the StatefulSet of `node_set` with `replicas`. A changed
    /// template on running pods is held (no pod moves to it) until `roll`.
    fn apply_node_set(
        &self,
        target: &Target,
        node_set: &str,
        replicas: i32,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Lets the pods of `node_set` with an ordinal at or above `partition` run its template.
    fn roll(
        &self,
        target: &Target,
        node_set: &str,
        partition: i32,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Asks every volume of `node_set`'s pods for at least `storage_gib` and
    /// for the VolumeAttributesClass `attributes_class` (never a smaller size).
    fn resize_volumes(
        &self,
        target: &Target,
        node_set: &str,
        storage_gib: i32,
        attributes_class: &str,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Deletes the StatefulSet of `node_set` but not its pods (orphan
    /// propagation), so that it can be applied again with new claim templates.
    fn orphan_node_set(
        &self,
        target: &Target,
        node_set: &str,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Deletes the StatefulSet of `node_set`.
    fn delete_node_set(
        &self,
        target: &Target,
        node_set: &str,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Renews the cluster's certificates once for the operation `target.operation`:
    /// a new CA (cross-signed by the old one), node certificates it signs,
    /// and a trust bundle of both CAs, so no node or client is cut off while
    /// nodes load the new files.
    fn rotate_certificates(&self, target: &Target) -> impl Future<Output = StepResult<()>> + Send;
    /// Deletes the shared objects, and the volumes unless retained.
    fn delete_base(
        &self,
        target: &Target,
        retention: VolumeRetention,
    ) -> impl Future<Output = StepResult<()>> + Send;
}

/// Elasticsearch's REST API.
pub trait Elasticsearch: Send + Sync + 'static {
    /// Health and the shards left on excluded pods; `None` when it does not answer.
    fn health(&self, target: &Target)
    -> impl Future<Output = StepResult<Option<HealthObs>>> + Send;
    /// Lets pod `ordinal` of `node_set` hold shards again (undoes `exclude`).
    fn include(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Excludes pod `ordinal` of `node_set` from shard allocation.
    fn exclude(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Registers a node shutdown of type `restart` for pod `ordinal` of
    /// `node_set` (done when one is registered).
    fn register_shutdown(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Removes the shutdown of pod `ordinal` of `node_set` (done when none is registered).
    fn clear_shutdown(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Excludes pod `ordinal` of `node_set` from the voting configuration.
    fn exclude_from_voting(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Clears the voting configuration exclusions.
    fn clear_voting_exclusions(
        &self,
        target: &Target,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Whether the cluster's own snapshot repository
    /// ([`crate::snapshots::own_repository`]) is registered as the platform
    /// wants it: `None` when snapshots are off or Elasticsearch does not
    /// answer, so the planner asks for nothing.
    fn repository_registered(
        &self,
        target: &Target,
    ) -> impl Future<Output = StepResult<Option<bool>>> + Send;
    /// Registers (or re-registers) the cluster's own snapshot repository.
    fn register_repository(&self, target: &Target) -> impl Future<Output = StepResult<()>> + Send;
    /// The snapshots in the cluster's own repository; `None` when snapshots
    /// are off or Elasticsearch does not answer.
    fn snapshots(
        &self,
        target: &Target,
    ) -> impl Future<Output = StepResult<Option<Vec<SnapshotObs>>>> + Send;
    /// Starts snapshot `name` of every index (done when it exists).
    fn take_snapshot(
        &self,
        target: &Target,
        name: &str,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Deletes snapshot `name` (done when it is gone).
    fn delete_snapshot(
        &self,
        target: &Target,
        name: &str,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Where restoring `source` stands; `None` when Elasticsearch does not answer.
    fn restore_state(
        &self,
        target: &Target,
        source: &RestoreSource,
    ) -> impl Future<Output = StepResult<Option<RestoreObs>>> + Send;
    /// Registers the source's repository, read-only.
    fn register_source_repository(
        &self,
        target: &Target,
        source: &RestoreSource,
    ) -> impl Future<Output = StepResult<()>> + Send;
    /// Restores `indices` of the source snapshot and waits for it.
    fn restore(
        &self,
        target: &Target,
        source: &RestoreSource,
        indices: &[String],
    ) -> impl Future<Output = StepResult<()>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_past_its_deadline_is_retryable_and_says_which_step_how_long_and_why() {
        let eks = StepError::retryable("EKS_TIMEOUT", "CreateNodegroup: no answer within 3 s");
        let cases = [
            (
                "step ensure_node_group",
                Duration::from_secs(8),
                None,
                "step ensure_node_group did not finish within 8 s (worker.step_timeout_seconds)",
            ),
            (
                "the observation before a step",
                Duration::from_millis(1500),
                Some(&eks),
                "the observation before a step did not finish within 1.5 s \
                 (worker.step_timeout_seconds); last error: EKS_TIMEOUT: \
                 CreateNodegroup: no answer within 3 s",
            ),
        ];
        for (what, limit, last, message) in cases {
            let e = StepError::deadline_exceeded(what, limit, last);
            assert!(e.retryable, "{e}");
            assert_eq!(e.reason, STEP_TIMEOUT);
            assert_eq!(e.message, message);
        }
    }
}

#[cfg(test)]
mod nothing_left_tests {
    use super::*;

    #[test]
    fn only_a_delete_meeting_a_gone_platform_cluster_has_nothing_left() {
        // (case, error, deleting, nothing left)
        let gone = StepError::permanent(PLATFORM_CLUSTER_GONE, "No cluster found for name: x");
        let group_gone = StepError::permanent("EKS_NOT_FOUND", "No node group found");
        let timeout = StepError::retryable("EKS_TIMEOUT", "no answer");
        let cases = [
            ("delete, cluster gone", &gone, true, true),
            ("create, cluster gone", &gone, false, false),
            ("delete, one node group gone", &group_gone, true, false),
            ("delete, EKS not answering", &timeout, true, false),
        ];
        for (case, e, deleting, want) in cases {
            assert_eq!(e.means_nothing_left(deleting), want, "{case}");
        }
    }
}
