//! Tenants, their quotas and their usage.

use esaas_core::names::TenantId;
use esaas_core::tenant::{Quota, QuotaUsage, Tenant};
use esaas_core::{Error, Result};
use sqlx::AssertSqlSafe;
use sqlx::PgConnection;

use crate::Store;
use crate::error::{db_error, is_unique_violation};
use crate::load::{self, lock_tenant, usage};
use crate::rows::{self, TENANT_COLUMNS};

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
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {TENANT_COLUMNS}"
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
        rows::tenant(&row, QuotaUsage::default())
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
             WHERE id = $1 RETURNING {TENANT_COLUMNS}"
        )))
        .bind(id.as_str())
        .bind(quota.max_clusters)
        .bind(quota.max_nodes)
        .bind(quota.max_storage_gib)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        let usage = usage(conn, id).await?;
        rows::tenant(&row, usage)
    }

    /// One tenant with its usage.
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        self.read(async |conn| load::tenant(conn, id, false).await)
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
            .map(|row| rows::tenant(row, rows::usage(row)?))
            .collect()
    }
}
