//! Loading and locking, inside the caller's transaction. Lock order
//! everywhere: the cluster row first, then the tenant, then the cluster's
//! operation rows, so that commands, claims and reports never deadlock.

use esaas_core::cluster::Cluster;
use esaas_core::lifecycle::lease::Leased;
use esaas_core::lifecycle::{ActiveOperations, LiveCluster};
use esaas_core::names::{ClusterName, TenantId};
use esaas_core::operation::Operation;
use esaas_core::tenant::{QuotaUsage, Tenant};
use esaas_core::{Error, Result};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::error::db_error;
use crate::rows::{self, CLUSTER_COLUMNS, OPERATION_COLUMNS, TENANT_COLUMNS};

pub(crate) fn cluster_not_found(name: &ClusterName) -> Error {
    Error::NotFound {
        kind: "Cluster",
        name: name.to_string(),
    }
}

pub(crate) fn operation_not_found(id: Uuid) -> Error {
    Error::NotFound {
        kind: "Operation",
        name: esaas_core::names::OperationName(id).to_string(),
    }
}

/// The cluster with `uid`, locked until commit. With `skip_locked`, `None`
/// when another transaction holds it.
pub(crate) async fn lock_cluster(
    conn: &mut PgConnection,
    uid: Uuid,
    skip_locked: bool,
) -> Result<Option<Cluster>> {
    let wait = if skip_locked { " SKIP LOCKED" } else { "" };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE uid = $1 FOR UPDATE{wait}"
    )))
    .bind(uid)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.as_ref().map(rows::cluster).transpose()
}

/// The live (not DELETED) cluster called `name`, locked.
async fn lock_live(conn: &mut PgConnection, name: &ClusterName) -> Result<Cluster> {
    let uid: Option<Uuid> = sqlx::query_scalar(
        "SELECT uid FROM clusters WHERE tenant_id = $1 AND cluster_id = $2 AND state <> 'DELETED'",
    )
    .bind(name.tenant.as_str())
    .bind(name.cluster.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    let uid = uid.ok_or_else(|| cluster_not_found(name))?;
    lock_cluster(conn, uid, false)
        .await?
        .ok_or_else(|| cluster_not_found(name))
}

/// The unfinished operations of the cluster with `uid`, locked.
async fn lock_active(conn: &mut PgConnection, uid: Uuid) -> Result<ActiveOperations> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {OPERATION_COLUMNS} FROM operations o JOIN clusters c ON c.uid = o.cluster_uid \
         WHERE o.cluster_uid = $1 AND o.state IN ('QUEUED', 'RUNNING', 'STALLED') FOR UPDATE OF o"
    )))
    .bind(uid)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let mut active = ActiveOperations::default();
    for row in &rows {
        let op = rows::operation(row)?;
        // The partial unique indexes keep one row of each.
        if op.state == esaas_core::operation::OperationState::Queued {
            active.queued = Some(op);
        } else {
            active.running = Some(op);
        }
    }
    Ok(active)
}

/// The operation with `id`, unlocked.
pub(crate) async fn operation(conn: &mut PgConnection, id: Uuid) -> Result<Option<Operation>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {OPERATION_COLUMNS} FROM operations o JOIN clusters c ON c.uid = o.cluster_uid WHERE o.id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.as_ref().map(rows::operation).transpose()
}

async fn lock_operation(conn: &mut PgConnection, id: Uuid) -> Result<Option<Operation>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {OPERATION_COLUMNS} FROM operations o JOIN clusters c ON c.uid = o.cluster_uid \
         WHERE o.id = $1 FOR UPDATE OF o"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.as_ref().map(rows::operation).transpose()
}

/// The live cluster called `name` with its tenant and operations, locked,
/// as an update or a delete sees it.
pub(crate) async fn live_cluster(
    conn: &mut PgConnection,
    name: &ClusterName,
) -> Result<LiveCluster> {
    let cluster = lock_live(conn, name).await?;
    let tenant = lock_tenant(conn, &cluster.tenant).await?;
    let active = lock_active(conn, cluster.uid).await?;
    let current = match cluster.current_operation {
        Some(id) if active.queued.as_ref().is_some_and(|o| o.id == id) => active.queued.clone(),
        Some(id) if active.running.as_ref().is_some_and(|o| o.id == id) => active.running.clone(),
        Some(id) => operation(conn, id).await?,
        None => None,
    };
    Ok(LiveCluster {
        cluster,
        tenant,
        active,
        current,
    })
}

pub(crate) fn tenant_not_found(id: &TenantId) -> Error {
    Error::NotFound {
        kind: "Tenant",
        name: format!("tenants/{id}"),
    }
}

/// What `tenant` uses now: every cluster that is not DELETED, at its latest spec.
pub(crate) async fn usage(conn: &mut PgConnection, tenant: &TenantId) -> Result<QuotaUsage> {
    let row = sqlx::query(
        "SELECT count(*) AS clusters, coalesce(sum(node_count), 0)::bigint AS nodes, \
         coalesce(sum(storage_gib), 0)::bigint AS storage FROM clusters WHERE tenant_id = $1 AND state <> 'DELETED'",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    rows::usage(&row)
}

/// The tenant `id` with its usage, locked: quota checks of one tenant are serialized.
pub(crate) async fn lock_tenant(conn: &mut PgConnection, id: &TenantId) -> Result<Tenant> {
    tenant(conn, id, true).await
}

/// The tenant `id` with its usage; `lock`: locked until commit.
pub(crate) async fn tenant(conn: &mut PgConnection, id: &TenantId, lock: bool) -> Result<Tenant> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1{lock}"
    )))
    .bind(id.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?
    .ok_or_else(|| tenant_not_found(id))?;
    let usage = usage(conn, id).await?;
    rows::tenant(&row, usage)
}

/// The operation `id` with its cluster, both locked (the cluster first), and
/// the operation queued behind it, if any. With `skip_locked`, `None` when
/// another transaction holds the cluster.
pub(crate) async fn leased(
    conn: &mut PgConnection,
    id: Uuid,
    skip_locked: bool,
) -> Result<Option<Leased>> {
    let uid: Option<Uuid> = sqlx::query_scalar("SELECT cluster_uid FROM operations WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    let Some(uid) = uid else { return Ok(None) };
    let Some(cluster) = lock_cluster(conn, uid, skip_locked).await? else {
        return Ok(None);
    };
    let Some(op) = lock_operation(conn, id).await? else {
        return Ok(None);
    };
    let other_queued = sqlx::query_scalar(
        "SELECT id FROM operations WHERE cluster_uid = $1 AND state = 'QUEUED' AND id <> $2",
    )
    .bind(uid)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(Some(Leased {
        op,
        cluster,
        other_queued,
    }))
}
