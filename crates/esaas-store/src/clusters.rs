//! Clusters: the commands that change them (each decided by a rule of
//! `esaas_core::lifecycle`, then saved with its operations and its event in
//! the caller's transaction) and the reads.

use esaas_core::Result;
use esaas_core::cluster::{Cluster, ClusterState};
use esaas_core::lifecycle::create::{CreateCluster, create};
use esaas_core::lifecycle::delete::{DeleteCluster, delete};
use esaas_core::lifecycle::update::{UpdateCluster, update};
use esaas_core::lifecycle::{ClusterChange, Ctx, Decision, Rules};
use esaas_core::names::{ClusterName, TenantId};
use sqlx::AssertSqlSafe;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;
use crate::load::{self, cluster_not_found};
use crate::rows::{self, CLUSTER_COLUMNS};
use crate::save::save;

/// Which clusters to list.
#[derive(Debug, Clone, Default)]
pub struct ClusterFilter {
    /// One tenant, or all.
    pub tenant: Option<TenantId>,
    /// One state, or all.
    pub state: Option<ClusterState>,
    /// Include DELETED tombstones.
    pub show_deleted: bool,
    /// Keyset cursor: only clusters after (tenant, cluster id, uid).
    pub after: Option<(String, String, Uuid)>,
    /// Page size.
    pub limit: i64,
}

/// One page of clusters.
pub type ClusterPage = Vec<Cluster>;

async fn saved<T>(conn: &mut PgConnection, decision: Decision<T>) -> Result<T> {
    save(conn, &decision.changes).await?;
    Ok(decision.answer)
}

impl Store {
    /// Creates a cluster in its tenant (locked: creates of one tenant check
    /// the quota one after the other).
    pub async fn create_cluster(
        conn: &mut PgConnection,
        cmd: &CreateCluster,
        rules: &Rules,
        ctx: &Ctx,
    ) -> Result<ClusterChange> {
        let tenant = load::lock_tenant(conn, &cmd.tenant).await?;
        saved(conn, create(cmd, &tenant, rules, ctx)?).await
    }

    /// Changes a cluster's spec.
    pub async fn update_cluster(
        conn: &mut PgConnection,
        cmd: &UpdateCluster,
        rules: &Rules,
        ctx: &Ctx,
    ) -> Result<ClusterChange> {
        let state = load::live_cluster(conn, &cmd.name).await?;
        saved(conn, update(cmd, &state, rules, ctx)?).await
    }

    /// Requests a cluster's deletion.
    pub async fn delete_cluster(
        conn: &mut PgConnection,
        cmd: &DeleteCluster,
        rules: &Rules,
        ctx: &Ctx,
    ) -> Result<ClusterChange> {
        let state = load::live_cluster(conn, &cmd.name).await?;
        saved(conn, delete(cmd, &state, rules, ctx)?).await
    }

    /// The live cluster called `name`, or else its newest tombstone.
    pub async fn get_cluster(&self, name: &ClusterName) -> Result<Cluster> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE tenant_id = $1 AND cluster_id = $2 \
             ORDER BY (state = 'DELETED'), create_time DESC LIMIT 1"
        )))
        .bind(name.tenant.as_str())
        .bind(name.cluster.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| cluster_not_found(name))?;
        rows::cluster(&row)
    }

    /// Clusters matching `filter`, in (tenant, name, uid) order.
    pub async fn list_clusters(&self, filter: &ClusterFilter) -> Result<ClusterPage> {
        let (a_tenant, a_cluster, a_uid) = match &filter.after {
            Some((t, c, u)) => (Some(t.as_str()), Some(c.as_str()), Some(*u)),
            None => (None, None, None),
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters \
             WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR state = $2) \
             AND ($3 OR state <> 'DELETED') \
             AND ($4::text IS NULL OR (tenant_id, cluster_id, uid) > ($4, $5, $6)) \
             ORDER BY tenant_id, cluster_id, uid LIMIT $7"
        )))
        .bind(filter.tenant.as_ref().map(|t| t.as_str()))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.show_deleted)
        .bind(a_tenant)
        .bind(a_cluster)
        .bind(a_uid)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(rows::cluster).collect()
    }
}
