//! Conversions between the wire types (`esaas_proto::v1`) and the domain.
//! Parsing a request is where input errors are found: each names its field.

use crate::v1 as pb;
use chrono::{DateTime, Utc};
use esaas_core::Result;
use esaas_core::cluster::{Cluster, ClusterState, Condition, ConditionStatus, Disruption, Health};
use esaas_core::error::Violations;
use esaas_core::event::{ClusterEvent, EventKind};
use esaas_core::operation::{
    Attempt, InitiatorKind, Operation, OperationKind, OperationState, Stage, StageState,
};
use esaas_core::spec::{ClusterSpec, NodeRole, NodeSet, VolumeRetention};
use esaas_core::tenant::{Quota, Tenant};
use prost_types::Timestamp;

/// A wire timestamp.
pub fn ts(t: DateTime<Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// An optional wire timestamp.
pub fn ots(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.and_then(ts)
}

/// Parses a wire spec; `prefix` is its path in the request.
pub fn spec_from_pb(spec: &pb::ClusterSpec, prefix: &str) -> Result<ClusterSpec> {
    let mut v = Violations::default();
    let volume_retention = match pb::VolumeRetention::try_from(spec.volume_retention) {
        Ok(pb::VolumeRetention::Unspecified | pb::VolumeRetention::Delete) => {
            VolumeRetention::Delete
        }
        Ok(pb::VolumeRetention::Retain) => VolumeRetention::Retain,
        Err(_) => {
            v.add(
                format!("{prefix}.volume_retention"),
                format!("unknown value {}", spec.volume_retention),
            );
            VolumeRetention::Delete
        }
    };
    let mut node_sets = Vec::with_capacity(spec.node_sets.len());
    for (i, ns) in spec.node_sets.iter().enumerate() {
        let mut roles = Vec::with_capacity(ns.roles.len());
        for (j, r) in ns.roles.iter().enumerate() {
            let role = match pb::NodeRole::try_from(*r) {
                Ok(pb::NodeRole::Master) => NodeRole::Master,
                Ok(pb::NodeRole::Data) => NodeRole::Data,
                Ok(pb::NodeRole::Ingest) => NodeRole::Ingest,
                Ok(pb::NodeRole::Ml) => NodeRole::Ml,
                Ok(pb::NodeRole::Transform) => NodeRole::Transform,
                Ok(pb::NodeRole::Unspecified) | Err(_) => {
                    v.add(
                        format!("{prefix}.node_sets[{i}].roles[{j}]"),
                        format!("{r} is not a role; use NODE_ROLE_MASTER, _DATA, _INGEST, _ML or _TRANSFORM"),
                    );
                    continue;
                }
            };
            roles.push(role);
        }
        node_sets.push(NodeSet {
            name: ns.name.clone(),
            roles,
            count: ns.count,
            size_class: ns.size_class.clone(),
            storage_gib: ns.storage_gib,
            storage_iops: ns.storage_iops,
            storage_throughput_mibps: ns.storage_throughput_mibps,
        });
    }
    v.finish()?;
    Ok(ClusterSpec {
        version: spec.version.clone(),
        node_sets,
        zone_count: spec.zone_count,
        volume_retention,
    })
}

/// The wire form of a spec.
pub fn spec_to_pb(spec: &ClusterSpec) -> pb::ClusterSpec {
    pb::ClusterSpec {
        version: spec.version.clone(),
        node_sets: spec
            .node_sets
            .iter()
            .map(|ns| pb::NodeSet {
                name: ns.name.clone(),
                roles: ns
                    .roles
                    .iter()
                    .map(|r| match r {
                        NodeRole::Master => pb::NodeRole::Master,
                        NodeRole::Data => pb::NodeRole::Data,
                        NodeRole::Ingest => pb::NodeRole::Ingest,
                        NodeRole::Ml => pb::NodeRole::Ml,
                        NodeRole::Transform => pb::NodeRole::Transform,
                    } as i32)
                    .collect(),
                count: ns.count,
                size_class: ns.size_class.clone(),
                storage_gib: ns.storage_gib,
                storage_iops: ns.storage_iops,
                storage_throughput_mibps: ns.storage_throughput_mibps,
            })
            .collect(),
        zone_count: spec.zone_count,
        volume_retention: match spec.volume_retention {
            VolumeRetention::Delete => pb::VolumeRetention::Delete,
            VolumeRetention::Retain => pb::VolumeRetention::Retain,
        } as i32,
    }
}

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

fn condition_to_pb(c: &Condition) -> pb::Condition {
    pb::Condition {
        r#type: c.kind.clone(),
        status: match c.status {
            ConditionStatus::True => pb::ConditionStatus::True,
            ConditionStatus::False => pb::ConditionStatus::False,
            ConditionStatus::Unknown => pb::ConditionStatus::Unknown,
        } as i32,
        reason: c.reason.clone(),
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
            health: match c.health {
                Health::Unknown => pb::ClusterHealth::Unknown,
                Health::Green => pb::ClusterHealth::Green,
                Health::Yellow => pb::ClusterHealth::Yellow,
                Health::Red => pb::ClusterHealth::Red,
            } as i32,
            observed_generation: c.observed_generation,
            endpoint: c.endpoint.clone().unwrap_or_default(),
            conditions: c.conditions.iter().map(condition_to_pb).collect(),
            current_operation: c
                .current_operation
                .map(|id| format!("operations/{id}"))
                .unwrap_or_default(),
            message: c.message.clone(),
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
        } as i32,
        message: e.message.clone(),
        operation: e
            .operation
            .map(|id| format!("operations/{id}"))
            .unwrap_or_default(),
        cluster_snapshot: Some(cluster_to_pb(&e.snapshot)),
        create_time: ts(e.create_time),
    }
}

fn stage_to_pb(s: &Stage) -> pb::Stage {
    pb::Stage {
        name: s.name.clone(),
        state: match s.state {
            StageState::Pending => pb::StageState::Pending,
            StageState::Running => pb::StageState::Running,
            StageState::Succeeded => pb::StageState::Succeeded,
            StageState::Failed => pb::StageState::Failed,
            StageState::Skipped => pb::StageState::Skipped,
        } as i32,
        start_time: ots(s.start_time),
        end_time: ots(s.end_time),
        message: s.message.clone(),
    }
}

fn attempt_to_pb(a: &Attempt) -> pb::Attempt {
    pb::Attempt {
        number: a.number,
        worker: a.worker.clone(),
        start_time: ts(a.start_time),
        end_time: ots(a.end_time),
        outcome: a.outcome.clone(),
    }
}

/// Parses an operation state name, with or without its prefix.
pub fn operation_state_from_name(s: &str) -> Option<OperationState> {
    OperationState::parse(s.strip_prefix("OPERATION_STATE_").unwrap_or(s))
}

/// Parses a cluster state name, with or without its prefix.
pub fn cluster_state_from_name(s: &str) -> Option<ClusterState> {
    ClusterState::parse(s.strip_prefix("CLUSTER_STATE_").unwrap_or(s))
}

/// The wire form of an operation.
pub fn operation_to_pb(o: &Operation) -> pb::Operation {
    pb::Operation {
        name: o.name().to_string(),
        cluster: o.cluster_name().to_string(),
        kind: match o.kind {
            OperationKind::Create => pb::OperationKind::Create,
            OperationKind::Update => pb::OperationKind::Update,
            OperationKind::Delete => pb::OperationKind::Delete,
            OperationKind::Repair => pb::OperationKind::Repair,
        } as i32,
        state: match o.state {
            OperationState::Queued => pb::OperationState::Queued,
            OperationState::Running => pb::OperationState::Running,
            OperationState::Stalled => pb::OperationState::Stalled,
            OperationState::Succeeded => pb::OperationState::Succeeded,
            OperationState::Failed => pb::OperationState::Failed,
            OperationState::Cancelled => pb::OperationState::Cancelled,
        } as i32,
        done: o.state.is_done(),
        initiator: Some(pb::Initiator {
            kind: match o.initiator.kind {
                InitiatorKind::Tenant => pb::InitiatorKind::Tenant,
                InitiatorKind::Platform => pb::InitiatorKind::Platform,
            } as i32,
            principal: o.initiator.principal.clone(),
        }),
        target_generation: o.target_generation,
        stages: o.stages.iter().map(stage_to_pb).collect(),
        attempts: o.attempts.iter().map(attempt_to_pb).collect(),
        max_attempts: o.max_attempts,
        blocking_check: o.blocking_check.clone().unwrap_or_default(),
        error: o.error.as_ref().map(|e| crate::google::rpc::Status {
            code: e.code,
            message: e.message.clone(),
            details: Vec::new(),
        }),
        create_time: ts(o.create_time),
        start_time: ots(o.start_time),
        end_time: ots(o.end_time),
        update_time: ts(o.update_time),
        next_attempt_time: ts(o.next_attempt_time),
        message: o.summary(),
    }
}

/// Parses a wire quota; `prefix` is its path in the request.
pub fn quota_from_pb(q: &pb::Quota, prefix: &str) -> Result<Quota> {
    let quota = Quota {
        max_clusters: q.max_clusters,
        max_nodes: q.max_nodes,
        max_storage_gib: q.max_storage_gib,
    };
    quota.validate(prefix)?;
    Ok(quota)
}

/// The wire form of a tenant.
pub fn tenant_to_pb(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        name: format!("tenants/{}", t.id),
        display_name: t.display_name.clone(),
        quota: Some(pb::Quota {
            max_clusters: t.quota.max_clusters,
            max_nodes: t.quota.max_nodes,
            max_storage_gib: t.quota.max_storage_gib,
        }),
        usage: Some(pb::QuotaUsage {
            clusters: i32::try_from(t.usage.clusters).unwrap_or(i32::MAX),
            nodes: i32::try_from(t.usage.nodes).unwrap_or(i32::MAX),
            storage_gib: t.usage.storage_gib,
        }),
        create_time: ts(t.create_time),
        update_time: ts(t.update_time),
    }
}

/// A protobuf `Struct` as JSON.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .unwrap_or_default(),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}

/// JSON as a protobuf `Struct` (a non-object becomes `{"value": ...}`).
pub fn json_to_struct(v: &serde_json::Value) -> prost_types::Struct {
    match v {
        serde_json::Value::Object(m) => prost_types::Struct {
            fields: m
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        },
        other => prost_types::Struct {
            fields: [("value".to_string(), json_to_value(other))]
                .into_iter()
                .collect(),
        },
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips() {
        let spec = ClusterSpec::test().with_nodes(3);
        assert_eq!(spec_from_pb(&spec_to_pb(&spec), "s").unwrap(), spec);
    }

    #[test]
    fn unknown_enum_values_name_their_field() {
        let mut wire = spec_to_pb(&ClusterSpec::test());
        wire.node_sets[0].roles = vec![0, 99];
        wire.volume_retention = 42;
        match spec_from_pb(&wire, "cluster.spec") {
            Err(esaas_core::Error::InvalidArgument(v)) => {
                let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
                assert_eq!(
                    fields,
                    vec![
                        "cluster.spec.volume_retention",
                        "cluster.spec.node_sets[0].roles[0]",
                        "cluster.spec.node_sets[0].roles[1]"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
