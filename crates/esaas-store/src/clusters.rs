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

/// One snapshot row to a record.
fn snapshot_record(row: &sqlx::postgres::PgRow) -> Result<esaas_core::snapshots::SnapshotRecord> {
    use sqlx::Row;
    let get = |c: &str| -> Result<String> { row.try_get(c).map_err(db_error) };
    let parse =
        |col: &str, e: esaas_core::Error| esaas_core::Error::Internal(format!("column {col}: {e}"));
    let kind = get("kind")?;
    Ok(esaas_core::snapshots::SnapshotRecord {
        tenant: TenantId::parse("tenant_id", &get("tenant_id")?)
            .map_err(|e| parse("tenant_id", e))?,
        cluster_id: esaas_core::names::ClusterId::parse("cluster_id", &get("cluster_id")?)
            .map_err(|e| parse("cluster_id", e))?,
        cluster_uid: row.try_get("cluster_uid").map_err(db_error)?,
        kind: esaas_core::snapshots::SnapshotKind::parse(&kind)
            .ok_or_else(|| esaas_core::Error::Internal(format!("column kind: {kind:?}")))?,
        operation: row.try_get("operation_id").map_err(db_error)?,
        snapshot: serde_json::from_value(row.try_get("snapshot").map_err(db_error)?)
            .map_err(|e| esaas_core::Error::Internal(format!("column snapshot: {e}")))?,
    })
}

const SNAPSHOT_COLUMNS: &str =
    "cluster_uid, name, tenant_id, cluster_id, kind, operation_id, snapshot";

impl Store {
    /// Queues a snapshot of a running cluster.
    pub async fn create_snapshot(
        conn: &mut PgConnection,
        cmd: &esaas_core::lifecycle::snapshot::CreateSnapshot,
        rules: &Rules,
        ctx: &Ctx,
    ) -> Result<ClusterChange> {
        let state = load::live_cluster(conn, &cmd.name).await?;
        saved(
            conn,
            esaas_core::lifecycle::snapshot::create_snapshot(cmd, &state, rules, ctx)?,
        )
        .await
    }

    /// Queues a restore of chosen indices into a running cluster.
    pub async fn restore_indices(
        conn: &mut PgConnection,
        cmd: &esaas_core::lifecycle::snapshot::RestoreIndices,
        rules: &Rules,
        ctx: &Ctx,
    ) -> Result<ClusterChange> {
        let state = load::live_cluster(conn, &cmd.name).await?;
        saved(
            conn,
            esaas_core::lifecycle::snapshot::restore_indices(cmd, &state, rules, ctx)?,
        )
        .await
    }

    /// The snapshots taken of every cluster that had the name `name`
    /// (deleted ones too), newest first; `after` is the keyset cursor
    /// (creation time, uid, snapshot name) of the previous page.
    pub async fn list_snapshots(
        &self,
        name: &ClusterName,
        after: Option<(chrono::DateTime<chrono::Utc>, Uuid, String)>,
        limit: i64,
    ) -> Result<
        Vec<(
            chrono::DateTime<chrono::Utc>,
            esaas_core::snapshots::SnapshotRecord,
        )>,
    > {
        use sqlx::Row;
        let (t, u, n) = match after {
            Some((t, u, n)) => (Some(t), Some(u), Some(n)),
            None => (None, None, None),
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SNAPSHOT_COLUMNS}, create_time FROM cluster_snapshots \
             WHERE tenant_id = $1 AND cluster_id = $2 \
             AND ($3::timestamptz IS NULL OR (create_time, cluster_uid, name) < ($3, $4, $5)) \
             ORDER BY create_time DESC, cluster_uid DESC, name DESC LIMIT $6"
        )))
        .bind(name.tenant.as_str())
        .bind(name.cluster.as_str())
        .bind(t)
        .bind(u)
        .bind(n)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("create_time").map_err(db_error)?,
                    snapshot_record(r)?,
                ))
            })
            .collect()
    }

    /// The newest record of snapshot `snapshot` of a cluster that had the
    /// name `name` (a deleted one included).
    pub async fn find_snapshot(
        &self,
        name: &ClusterName,
        snapshot: &str,
    ) -> Result<Option<esaas_core::snapshots::SnapshotRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM cluster_snapshots \
             WHERE tenant_id = $1 AND cluster_id = $2 AND name = $3 \
             ORDER BY create_time DESC LIMIT 1"
        )))
        .bind(name.tenant.as_str())
        .bind(name.cluster.as_str())
        .bind(snapshot)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(snapshot_record).transpose()
    }
}
