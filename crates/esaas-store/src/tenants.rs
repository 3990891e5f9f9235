//! Tenants, their quotas and their usage.

use esaas_core::names::TenantId;
use esaas_core::tenant::{Quota, QuotaUsage, Tenant};
use esaas_core::{Error, Result};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::Store;
use crate::error::{db_error, is_unique_violation};

const COLUMNS: &str =
    "id, display_name, max_clusters, max_nodes, max_storage_gib, create_time, update_time";

fn not_found(id: &TenantId) -> Error {
    Error::NotFound {
        kind: "Tenant",
        name: format!("tenants/{id}"),
    }
}

fn tenant(row: &PgRow, usage: QuotaUsage) -> Result<Tenant> {
    let id: String = row.try_get("id").map_err(db_error)?;
    Ok(Tenant {
        id: TenantId::parse("id", &id).map_err(|e| Error::Internal(format!("tenant id: {e}")))?,
        display_name: row.try_get("display_name").map_err(db_error)?,
        quota: Quota {
            max_clusters: row.try_get("max_clusters").map_err(db_error)?,
            max_nodes: row.try_get("max_nodes").map_err(db_error)?,
            max_storage_gib: row.try_get("max_storage_gib").map_err(db_error)?,
        },
        usage,
        create_time: row.try_get("create_time").map_err(db_error)?,
        update_time: row.try_get("update_time").map_err(db_error)?,
    })
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
    Ok(QuotaUsage {
        clusters: row.try_get("clusters").map_err(db_error)?,
        nodes: row.try_get("nodes").map_err(db_error)?,
        storage_gib: row.try_get("storage").map_err(db_error)?,
    })
}

/// Locks the tenant row, serializing quota checks of one tenant, and returns
/// the tenant with its usage.
pub(crate) async fn lock_tenant(conn: &mut PgConnection, id: &TenantId) -> Result<Tenant> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE id = $1 FOR UPDATE"
    )))
    .bind(id.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?
    .ok_or_else(|| not_found(id))?;
    let usage = usage(conn, id).await?;
    tenant(&row, usage)
}

impl Store {
    /// Creates a tenant.
    pub async fn create_tenant(
        conn: &mut PgConnection,
        id: &TenantId,
        display_name: &str,
        quota: Quota,
    ) -> Result<Tenant> {
        let now = esaas_core::now();
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO tenants (id, display_name, max_clusters, max_nodes, max_storage_gib, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {COLUMNS}"
        )))
        .bind(id.as_str())
        .bind(display_name)
        .bind(quota.max_clusters)
        .bind(quota.max_nodes)
        .bind(quota.max_storage_gib)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "tenants_pkey") {
                Error::AlreadyExists {
                    kind: "Tenant",
                    name: format!("tenants/{id}"),
                }
            } else {
                db_error(e)
            }
        })?;
        tenant(&row, QuotaUsage::default())
    }

    /// Replaces a tenant's quota.
    pub async fn update_quota(
        conn: &mut PgConnection,
        id: &TenantId,
        quota: Quota,
    ) -> Result<Tenant> {
        lock_tenant(conn, id).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE tenants SET max_clusters = $2, max_nodes = $3, max_storage_gib = $4, update_time = now() \
             WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(id.as_str())
        .bind(quota.max_clusters)
        .bind(quota.max_nodes)
        .bind(quota.max_storage_gib)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        let usage = usage(conn, id).await?;
        tenant(&row, usage)
    }

    /// One tenant with its usage.
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        self.read(async |conn| {
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM tenants WHERE id = $1"
            )))
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found(id))?;
            let usage = usage(conn, id).await?;
            tenant(&row, usage)
        })
        .await
    }

    /// Whether the tenant exists.
    pub async fn tenant_exists(&self, id: &TenantId) -> Result<bool> {
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map(|r| r.is_some())
            .map_err(db_error)
    }

    /// Tenants after `after` in id order, at most `limit`.
    pub async fn list_tenants(&self, after: Option<&str>, limit: i64) -> Result<Vec<Tenant>> {
        // One statement for the page and its usage, not one usage query per tenant.
        let rows = sqlx::query(
            "SELECT t.id, t.display_name, t.max_clusters, t.max_nodes, t.max_storage_gib, t.create_time, t.update_time, \
             coalesce(u.clusters, 0) AS clusters, coalesce(u.nodes, 0) AS nodes, coalesce(u.storage, 0) AS storage \
             FROM tenants t LEFT JOIN (SELECT tenant_id, count(*) AS clusters, sum(node_count)::bigint AS nodes, \
             sum(storage_gib)::bigint AS storage FROM clusters WHERE state <> 'DELETED' GROUP BY tenant_id) u \
             ON u.tenant_id = t.id WHERE ($1::text IS NULL OR t.id > $1) ORDER BY t.id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let usage = QuotaUsage {
                    clusters: row.try_get("clusters").map_err(db_error)?,
                    nodes: row.try_get("nodes").map_err(db_error)?,
                    storage_gib: row.try_get("storage").map_err(db_error)?,
                };
                tenant(row, usage)
            })
            .collect()
    }
}
