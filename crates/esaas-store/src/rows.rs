//! Rows to domain types. Text columns that hold enums are parsed strictly: a
//! value this version does not know is an internal error, not a guess.

use esaas_core::cluster::{Cluster, ClusterState, Health};
use esaas_core::names::{ClusterId, TenantId};
use esaas_core::operation::{
    Initiator, InitiatorKind, Lease, Operation, OperationKind, OperationState,
};
use esaas_core::tenant::{Quota, QuotaUsage, Tenant};
use esaas_core::{Error, Result};
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::db_error;

pub(crate) const CLUSTER_COLUMNS: &str = "uid, tenant_id, cluster_id, spec, generation, observed_generation, state, health, \
     endpoint, conditions, message, current_operation, version, revision, create_time, update_time, delete_time, \
     storage_change_time, retained_volumes, certificate_expire_time, snapshot_status";

pub(crate) const OPERATION_COLUMNS: &str = "o.id, o.tenant_id, c.cluster_id, o.cluster_uid, o.kind, o.state, o.initiator_kind, \
     o.initiator, o.target_generation, o.stages, o.attempt_log, o.max_attempts, o.blocking_check, o.error, \
     o.create_time, o.start_time, o.end_time, o.update_time, o.next_attempt_time, o.version, o.lease_owner, \
     o.lease_session, o.lease_token, o.lease_expire_time, o.checkpoint, o.cancel_requested, o.traceparent, o.gate_override, o.not_before, o.params";

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    col: &str,
) -> Result<T> {
    row.try_get(col).map_err(db_error)
}

fn json<T: DeserializeOwned>(row: &PgRow, col: &str) -> Result<T> {
    let v: serde_json::Value = get(row, col)?;
    serde_json::from_value(v).map_err(|e| Error::Internal(format!("column {col}: {e}")))
}

fn json_or_null<T: DeserializeOwned>(row: &PgRow, col: &str) -> Result<Option<T>> {
    let v: Option<serde_json::Value> = get(row, col)?;
    v.map(serde_json::from_value)
        .transpose()
        .map_err(|e| Error::Internal(format!("column {col}: {e}")))
}

fn parsed<T>(row: &PgRow, col: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let s: String = get(row, col)?;
    parse(&s).ok_or_else(|| Error::Internal(format!("column {col}: unknown value {s:?}")))
}

fn id<T>(row: &PgRow, col: &str, parse: fn(&str, &str) -> Result<T>) -> Result<T> {
    let s: String = get(row, col)?;
    parse(col, &s).map_err(|e| Error::Internal(format!("column {col}: {e}")))
}

pub(crate) fn cluster(row: &PgRow) -> Result<Cluster> {
    Ok(Cluster {
        uid: get(row, "uid")?,
        tenant: id(row, "tenant_id", TenantId::parse)?,
        cluster_id: id(row, "cluster_id", ClusterId::parse)?,
        spec: json(row, "spec")?,
        generation: get(row, "generation")?,
        observed_generation: get(row, "observed_generation")?,
        state: parsed(row, "state", ClusterState::parse)?,
        health: parsed(row, "health", Health::parse)?,
        endpoint: get(row, "endpoint")?,
        conditions: json(row, "conditions")?,
        message: get(row, "message")?,
        current_operation: get(row, "current_operation")?,
        version: get(row, "version")?,
        revision: get(row, "revision")?,
        create_time: get(row, "create_time")?,
        update_time: get(row, "update_time")?,
        delete_time: get(row, "delete_time")?,
        storage_change_time: get(row, "storage_change_time")?,
        retained_volumes: json(row, "retained_volumes")?,
        certificate_expire_time: get(row, "certificate_expire_time")?,
        snapshots: json(row, "snapshot_status")?,
    })
}

pub(crate) fn operation(row: &PgRow) -> Result<Operation> {
    let error: Option<serde_json::Value> = get(row, "error")?;
    Ok(Operation {
        id: get(row, "id")?,
        tenant: id(row, "tenant_id", TenantId::parse)?,
        cluster_id: id(row, "cluster_id", ClusterId::parse)?,
        cluster_uid: get(row, "cluster_uid")?,
        kind: parsed(row, "kind", OperationKind::parse)?,
        state: parsed(row, "state", OperationState::parse)?,
        initiator: Initiator {
            kind: parsed(row, "initiator_kind", InitiatorKind::parse)?,
            principal: get(row, "initiator")?,
        },
        target_generation: get(row, "target_generation")?,
        stages: json(row, "stages")?,
        attempts: json(row, "attempt_log")?,
        max_attempts: get(row, "max_attempts")?,
        blocking_check: get(row, "blocking_check")?,
        error: error
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::Internal(format!("column error: {e}")))?,
        create_time: get(row, "create_time")?,
        start_time: get(row, "start_time")?,
        end_time: get(row, "end_time")?,
        update_time: get(row, "update_time")?,
        next_attempt_time: get(row, "next_attempt_time")?,
        not_before: get(row, "not_before")?,
        version: get(row, "version")?,
        lease: match (
            get::<Option<String>>(row, "lease_owner")?,
            get::<Option<chrono::DateTime<chrono::Utc>>>(row, "lease_expire_time")?,
        ) {
            (Some(owner), Some(expire_time)) => Some(Lease {
                owner,
                // A lease from before sessions: no session holds it.
                session: get::<Option<uuid::Uuid>>(row, "lease_session")?.unwrap_or_default(),
                token: get(row, "lease_token")?,
                expire_time,
            }),
            _ => None,
        },
        lease_token: get(row, "lease_token")?,
        checkpoint: get(row, "checkpoint")?,
        cancel_requested: get(row, "cancel_requested")?,
        traceparent: get(row, "traceparent")?,
        gate_override: json_or_null(row, "gate_override")?,
        params: json(row, "params")?,
    })
}

pub(crate) const TENANT_COLUMNS: &str =
    "id, display_name, max_clusters, max_nodes, max_storage_gib, create_time, update_time";

pub(crate) fn tenant(row: &PgRow, usage: QuotaUsage) -> Result<Tenant> {
    Ok(Tenant {
        id: id(row, "id", TenantId::parse)?,
        display_name: get(row, "display_name")?,
        quota: Quota {
            max_clusters: get(row, "max_clusters")?,
            max_nodes: get(row, "max_nodes")?,
            max_storage_gib: get(row, "max_storage_gib")?,
        },
        usage,
        create_time: get(row, "create_time")?,
        update_time: get(row, "update_time")?,
    })
}

/// The usage columns `clusters`, `nodes` and `storage` of a row.
pub(crate) fn usage(row: &PgRow) -> Result<QuotaUsage> {
    Ok(QuotaUsage {
        clusters: get(row, "clusters")?,
        nodes: get(row, "nodes")?,
        storage_gib: get(row, "storage")?,
    })
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Internal(format!("encoding json: {e}")))
}
