//! Operations: what tenants read about them, retrying, cancelling one and
//! overriding its stalled gate.

use chrono::{DateTime, Utc};
use esaas_core::Result;
use esaas_core::lifecycle::cancel::cancel;
use esaas_core::lifecycle::maintenance::{RescheduleTo, reschedule};
use esaas_core::lifecycle::override_gate::override_gate;
use esaas_core::lifecycle::retry::retry;
use esaas_core::lifecycle::{Ctx, Rules};
use esaas_core::names::{ClusterName, TenantId};
use esaas_core::operation::{Initiator, Operation, OperationState};
use sqlx::AssertSqlSafe;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;
use crate::load::{self, operation_not_found};
use crate::rows::{self, OPERATION_COLUMNS};
use crate::save::save;

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
        .ok_or_else(|| operation_not_found(id))?;
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

    /// Re-queues a FAILED or STALLED operation (see `lifecycle::retry`).
    pub async fn retry_operation(
        conn: &mut PgConnection,
        id: Uuid,
        by: &Initiator,
        rules: &Rules,
        ctx: &Ctx,
    ) -> Result<Operation> {
        let state = load::leased(conn, id, false)
            .await?
            .ok_or_else(|| operation_not_found(id))?;
        let decision = retry(&state, by, rules, ctx)?;
        save(conn, &decision.changes).await?;
        Ok(decision.answer)
    }

    /// Cancels a QUEUED, RUNNING or STALLED operation (see `lifecycle::cancel`).
    pub async fn cancel_operation(
        conn: &mut PgConnection,
        id: Uuid,
        by: &Initiator,
        now: DateTime<Utc>,
    ) -> Result<Operation> {
        let state = load::leased(conn, id, false)
            .await?
            .ok_or_else(|| operation_not_found(id))?;
        let decision = cancel(&state, by, now)?;
        save(conn, &decision.changes).await?;
        Ok(decision.answer)
    }

    /// Moves the queued operation `id` to start no sooner than `to` (see
    /// `lifecycle::maintenance::reschedule`); `field` names the time in errors.
    pub async fn reschedule_operation(
        conn: &mut PgConnection,
        id: Uuid,
        to: RescheduleTo,
        field: &str,
        by: &Initiator,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Operation> {
        let state = load::leased(conn, id, false)
            .await?
            .ok_or_else(|| operation_not_found(id))?;
        let decision = reschedule(&state, to, field, by, rules.default_window.as_ref(), now)?;
        save(conn, &decision.changes).await?;
        Ok(decision.answer)
    }

    /// Lets a STALLED operation's gate pass once (see `lifecycle::override_gate`).
    pub async fn override_gate(
        conn: &mut PgConnection,
        id: Uuid,
        by: &Initiator,
        justification: &str,
        ctx: &Ctx,
    ) -> Result<Operation> {
        let state = load::leased(conn, id, false)
            .await?
            .ok_or_else(|| operation_not_found(id))?;
        let decision = override_gate(&state, by, justification, ctx)?;
        save(conn, &decision.changes).await?;
        Ok(decision.answer)
    }

    /// The versions of the operations `ids` that exist, in one statement
    /// (what the watchers of a process re-check at each safety tick).
    pub async fn operation_versions(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, i64)>> {
        sqlx::query_as("SELECT id, version FROM operations WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }
}
