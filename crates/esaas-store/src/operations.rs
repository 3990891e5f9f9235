//! Operations: the queue entries that workers lease (claiming arrives with
//! the worker pool), and what tenants read about them.

use esaas_core::cluster::ClusterState;
use esaas_core::event::EventKind;
use esaas_core::names::{ClusterName, TenantId};
use esaas_core::operation::{Initiator, Operation, OperationKind, OperationState, planned_stages};
use esaas_core::{Error, Result};
use sqlx::AssertSqlSafe;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Store;
use crate::error::{db_error, is_unique_violation};
use crate::events::commit_change;
use crate::feed::OPERATION_CHANNEL;
use crate::rows::{self, OPERATION_COLUMNS, to_json};

/// Which operations to list.
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    /// One tenant, or all.
    pub tenant: Option<TenantId>,
    /// One cluster (its live incarnation and tombstones), or all.
    pub cluster: Option<ClusterName>,
    /// One state, or all.
    pub state: Option<OperationState>,
    /// Only ids below this (ids sort by creation time).
    pub before: Option<Uuid>,
    /// Page size.
    pub limit: i64,
}

/// A new queued operation for `cluster_uid`.
pub(crate) fn new_operation(
    tenant: &TenantId,
    cluster: &esaas_core::cluster::Cluster,
    kind: OperationKind,
    initiator: Initiator,
    max_attempts: i32,
) -> Operation {
    let now = esaas_core::now();
    let id = Uuid::now_v7();
    // The call that queues the operation: its trace continues in the worker.
    tracing::Span::current().record("operation", format!("operations/{id}"));
    Operation {
        id,
        tenant: tenant.clone(),
        cluster_id: cluster.cluster_id.clone(),
        cluster_uid: cluster.uid,
        kind,
        state: OperationState::Queued,
        initiator,
        target_generation: cluster.generation,
        stages: planned_stages(kind),
        attempts: Vec::new(),
        max_attempts,
        blocking_check: None,
        error: None,
        create_time: now,
        start_time: None,
        end_time: None,
        update_time: now,
        next_attempt_time: now,
        version: 1,
        lease: None,
        lease_token: 0,
        checkpoint: None,
        cancel_requested: false,
        traceparent: esaas_telemetry::context::current_traceparent(),
    }
}

async fn notify(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(OPERATION_CHANNEL)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Inserts a queued operation.
pub(crate) async fn insert_operation(conn: &mut PgConnection, op: &Operation) -> Result<()> {
    sqlx::query(
        "INSERT INTO operations (id, tenant_id, cluster_uid, kind, state, initiator_kind, initiator, target_generation, \
         stages, attempt_log, max_attempts, next_attempt_time, version, create_time, update_time, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15)",
    )
    .bind(op.id)
    .bind(op.tenant.as_str())
    .bind(op.cluster_uid)
    .bind(op.kind.as_str())
    .bind(op.state.as_str())
    .bind(op.initiator.kind.as_str())
    .bind(&op.initiator.principal)
    .bind(op.target_generation)
    .bind(to_json(&op.stages)?)
    .bind(to_json(&op.attempts)?)
    .bind(op.max_attempts)
    .bind(op.next_attempt_time)
    .bind(op.version)
    .bind(op.create_time)
    .bind(&op.traceparent)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e, "operations_one_queued") {
            Error::precondition(
                op.cluster_name().to_string(),
                "another operation is already queued for this cluster",
            )
        } else {
            db_error(e)
        }
    })?;
    notify(conn, op.id).await
}

/// Writes the mutable fields of `op`, bumping its version.
pub(crate) async fn save_operation(conn: &mut PgConnection, op: &mut Operation) -> Result<()> {
    op.version += 1;
    op.update_time = esaas_core::now();
    sqlx::query(
        "UPDATE operations SET state = $2, target_generation = $3, stages = $4, attempt_log = $5, \
         attempts = $6, max_attempts = $7, next_attempt_time = $8, blocking_check = $9, error = $10, \
         start_time = $11, end_time = $12, update_time = $13, version = $14, lease_owner = $15, lease_token = $16, \
         lease_expire_time = $17, checkpoint = $18, cancel_requested = $19 WHERE id = $1",
    )
    .bind(op.id)
    .bind(op.state.as_str())
    .bind(op.target_generation)
    .bind(to_json(&op.stages)?)
    .bind(to_json(&op.attempts)?)
    .bind(i32::try_from(op.attempts.len()).unwrap_or(i32::MAX))
    .bind(op.max_attempts)
    .bind(op.next_attempt_time)
    .bind(&op.blocking_check)
    .bind(op.error.as_ref().map(to_json).transpose()?)
    .bind(op.start_time)
    .bind(op.end_time)
    .bind(op.update_time)
    .bind(op.version)
    .bind(op.lease.as_ref().map(|l| l.owner.as_str()))
    .bind(op.lease_token)
    .bind(op.lease.as_ref().map(|l| l.expire_time))
    .bind(&op.checkpoint)
    .bind(op.cancel_requested)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e, "operations_one_queued") {
            Error::precondition(
                op.cluster_name().to_string(),
                "another operation is already queued for this cluster; it will carry the latest spec",
            )
        } else if is_unique_violation(&e, "operations_one_running") {
            Error::precondition(op.cluster_name().to_string(), "another operation is already running on this cluster")
        } else {
            db_error(e)
        }
    })?;
    notify(conn, op.id).await
}

/// The operation of `cluster_uid` in `state`, locked.
pub(crate) async fn lock_operation_in_state(
    conn: &mut PgConnection,
    cluster_uid: Uuid,
    states: &[OperationState],
) -> Result<Option<Operation>> {
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {OPERATION_COLUMNS} FROM operations o JOIN clusters c ON c.uid = o.cluster_uid \
         WHERE o.cluster_uid = $1 AND o.state = ANY($2) ORDER BY o.id DESC LIMIT 1 FOR UPDATE OF o"
    )))
    .bind(cluster_uid)
    .bind(&states)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.as_ref().map(rows::operation).transpose()
}

fn not_found(id: Uuid) -> Error {
    Error::NotFound {
        kind: "Operation",
        name: format!("operations/{id}"),
    }
}

impl Store {
    /// One operation.
    pub async fn get_operation(&self, id: Uuid) -> Result<Operation> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM operations o JOIN clusters c ON c.uid = o.cluster_uid WHERE o.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(id))?;
        rows::operation(&row)
    }

    /// Operations matching `filter`, newest first.
    pub async fn list_operations(&self, filter: &OperationFilter) -> Result<Vec<Operation>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM operations o JOIN clusters c ON c.uid = o.cluster_uid \
             WHERE ($1::text IS NULL OR o.tenant_id = $1) \
             AND ($2::text IS NULL OR (c.tenant_id = $2 AND c.cluster_id = $3)) \
             AND ($4::text IS NULL OR o.state = $4) AND ($5::uuid IS NULL OR o.id < $5) \
             ORDER BY o.id DESC LIMIT $6"
        )))
        .bind(filter.tenant.as_ref().map(|t| t.as_str()))
        .bind(filter.cluster.as_ref().map(|c| c.tenant.as_str()))
        .bind(filter.cluster.as_ref().map(|c| c.cluster.as_str()))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(rows::operation).collect()
    }

    /// Re-queues a FAILED or STALLED operation with a fresh budget of
    /// `max_attempts` more attempts (the log of earlier ones is kept) and puts
    /// its cluster back into the matching in-progress state.
    pub async fn retry_operation(
        conn: &mut PgConnection,
        id: Uuid,
        by: &Initiator,
        max_attempts: i32,
    ) -> Result<Operation> {
        let (mut op, mut cluster) = crate::leases::lock_op_and_cluster(conn, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if !matches!(op.state, OperationState::Failed | OperationState::Stalled) {
            return Err(Error::precondition(
                op.name().to_string(),
                format!(
                    "only FAILED or STALLED operations can be retried; this one is {}",
                    op.state.as_str()
                ),
            ));
        }
        op.state = OperationState::Queued;
        op.error = None;
        op.blocking_check = None;
        op.end_time = None;
        op.next_attempt_time = esaas_core::now();
        op.max_attempts = i32::try_from(op.attempts.len())
            .unwrap_or(i32::MAX)
            .saturating_add(max_attempts);
        sqlx::query(
            "UPDATE operations SET lease_owner = NULL, lease_expire_time = NULL WHERE id = $1",
        )
        .bind(op.id)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        save_operation(conn, &mut op).await?;
        if cluster.state == ClusterState::Failed {
            cluster.state = match op.kind {
                OperationKind::Create => ClusterState::Provisioning,
                OperationKind::Update | OperationKind::Repair => ClusterState::Updating,
                OperationKind::Delete => ClusterState::Deleting,
            };
        }
        cluster.current_operation = Some(op.id);
        cluster.message = op.summary();
        commit_change(
            conn,
            &mut cluster,
            EventKind::OperationProgress,
            format!("operation {} re-queued by {}", op.name(), by.principal),
            Some(op.id),
        )
        .await?;
        Ok(op)
    }
}
