//! Clusters, their status and their events.

use esaas_core::cluster::{Cluster, ClusterState, Condition, ConditionStatus, Disruption, Health};
use esaas_core::event::{ClusterEvent, EventKind};
use esaas_core::names::OperationName;

use super::{ots, spec_to_pb, ts};
use crate::v1 as pb;

/// The wire form of a state.
pub fn state_to_pb(s: ClusterState) -> pb::ClusterState {
    match s {
        ClusterState::Provisioning => pb::ClusterState::Provisioning,
        ClusterState::Ready => pb::ClusterState::Ready,
        ClusterState::Updating => pb::ClusterState::Updating,
        ClusterState::Degraded => pb::ClusterState::Degraded,
        ClusterState::Failed => pb::ClusterState::Failed,
        ClusterState::Deleting => pb::ClusterState::Deleting,
        ClusterState::Deleted => pb::ClusterState::Deleted,
    }
}

/// The wire form of a health.
pub fn health_to_pb(h: Health) -> pb::ClusterHealth {
    match h {
        Health::Unknown => pb::ClusterHealth::Unknown,
        Health::Green => pb::ClusterHealth::Green,
        Health::Yellow => pb::ClusterHealth::Yellow,
        Health::Red => pb::ClusterHealth::Red,
    }
}

/// A wire health; a value this version does not know is `Unknown`.
pub fn health_from_pb(h: i32) -> Health {
    match pb::ClusterHealth::try_from(h) {
        Ok(pb::ClusterHealth::Green) => Health::Green,
        Ok(pb::ClusterHealth::Yellow) => Health::Yellow,
        Ok(pb::ClusterHealth::Red) => Health::Red,
        Ok(pb::ClusterHealth::Unknown | pb::ClusterHealth::Unspecified) | Err(_) => Health::Unknown,
    }
}

/// Parses a cluster state name, with or without its prefix.
pub fn cluster_state_from_name(s: &str) -> Option<ClusterState> {
    ClusterState::parse(s.strip_prefix("CLUSTER_STATE_").unwrap_or(s))
}

fn condition_to_pb(c: &Condition) -> pb::Condition {
    pb::Condition {
        r#type: c.kind.as_str().to_string(),
        status: match c.status {
            ConditionStatus::True => pb::ConditionStatus::True,
            ConditionStatus::False => pb::ConditionStatus::False,
            ConditionStatus::Unknown => pb::ConditionStatus::Unknown,
        } as i32,
        reason: c.reason.as_str().to_string(),
        message: c.message.clone(),
        last_transition_time: ts(c.last_transition_time),
    }
}

/// The wire form of a cluster.
pub fn cluster_to_pb(c: &Cluster) -> pb::Cluster {
    pb::Cluster {
        name: c.name().to_string(),
        uid: c.uid.to_string(),
        spec: Some(spec_to_pb(&c.spec)),
        status: Some(pb::ClusterStatus {
            state: state_to_pb(c.state) as i32,
            health: health_to_pb(c.health) as i32,
            observed_generation: c.observed_generation,
            endpoint: c.endpoint.clone().unwrap_or_default(),
            conditions: c.conditions.iter().map(condition_to_pb).collect(),
            current_operation: c
                .current_operation
                .map(|id| OperationName(id).to_string())
                .unwrap_or_default(),
            message: c.message.clone(),
            retained_volumes: c.retained_volumes.clone(),
            certificate_expire_time: c.certificate_expire_time.and_then(super::ts),
            snapshots: Some(super::snapshot_status_to_pb(&c.snapshots)),
        }),
        generation: c.generation,
        etag: c.etag(),
        create_time: ts(c.create_time),
        update_time: ts(c.update_time),
        delete_time: ots(c.delete_time),
        revision: c.revision,
    }
}

/// The wire form of a disruption.
pub fn disruption_to_pb(d: Disruption) -> i32 {
    (match d {
        Disruption::None => pb::Disruption::None,
        Disruption::InPlace => pb::Disruption::InPlace,
        Disruption::Rolling => pb::Disruption::Rolling,
        Disruption::NewNodesFirst => pb::Disruption::NewNodesFirst,
        Disruption::Destructive => pb::Disruption::Destructive,
    }) as i32
}

/// The wire form of an event.
pub fn event_to_pb(e: &ClusterEvent) -> pb::ClusterEvent {
    pb::ClusterEvent {
        cluster: e.snapshot.name().to_string(),
        revision: e.revision,
        r#type: match e.kind {
            EventKind::Created => pb::ClusterEventType::Created,
            EventKind::SpecUpdated => pb::ClusterEventType::SpecUpdated,
            EventKind::DeleteRequested => pb::ClusterEventType::DeleteRequested,
            EventKind::StatusChanged => pb::ClusterEventType::StatusChanged,
            EventKind::OperationProgress => pb::ClusterEventType::OperationProgress,
            EventKind::GateOverridden => pb::ClusterEventType::GateOverridden,
        } as i32,
        message: e.message.clone(),
        operation: e
            .operation
            .map(|id| OperationName(id).to_string())
            .unwrap_or_default(),
        cluster_snapshot: Some(cluster_to_pb(&e.snapshot)),
        create_time: ts(e.create_time),
    }
}
