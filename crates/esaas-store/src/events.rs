//! The cluster event log. Every change to a cluster row goes through
//! `commit_change`, which bumps the row's version, appends the next revision
//! under the row lock (so revisions are contiguous and commit in order) and
//! queues the notification that wakes watchers in every server process.

use esaas_core::Result;
use esaas_core::cluster::Cluster;
use esaas_core::event::{ClusterEvent, EventKind};
use sqlx::AssertSqlSafe;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;
use crate::feed::CLUSTER_CHANNEL;
use crate::rows::{self, to_json};

/// Writes `cluster` (already locked or newly inserted) with its version and
/// revision bumped, and appends one event describing the change.
pub(crate) async fn commit_change(
    conn: &mut PgConnection,
    cluster: &mut Cluster,
    kind: EventKind,
    message: impl Into<String>,
    operation: Option<Uuid>,
) -> Result<ClusterEvent> {
    let now = esaas_core::now();
    cluster.version += 1;
    cluster.revision += 1;
    cluster.update_time = now;
    sqlx::query(
        "UPDATE clusters SET spec = $2, node_count = $3, storage_gib = $4, generation = $5, observed_generation = $6, \
         state = $7, health = $8, endpoint = $9, conditions = $10, message = $11, current_operation = $12, \
         version = $13, revision = $14, update_time = $15, delete_time = $16 WHERE uid = $1",
    )
    .bind(cluster.uid)
    .bind(to_json(&cluster.spec)?)
    .bind(cluster.spec.node_count())
    .bind(cluster.spec.storage_gib())
    .bind(cluster.generation)
    .bind(cluster.observed_generation)
    .bind(cluster.state.as_str())
    .bind(cluster.health.as_str())
    .bind(&cluster.endpoint)
    .bind(to_json(&cluster.conditions)?)
    .bind(&cluster.message)
    .bind(cluster.current_operation)
    .bind(cluster.version)
    .bind(cluster.revision)
    .bind(cluster.update_time)
    .bind(cluster.delete_time)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;

    let event = ClusterEvent {
        revision: cluster.revision,
        kind,
        message: message.into(),
        operation,
        snapshot: cluster.clone(),
        create_time: now,
    };
    sqlx::query(
        "INSERT INTO cluster_events (cluster_uid, revision, kind, message, operation_id, snapshot, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(cluster.uid)
    .bind(event.revision)
    .bind(event.kind.as_str())
    .bind(&event.message)
    .bind(event.operation)
    .bind(to_json(&event.snapshot)?)
    .bind(event.create_time)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    // Delivered by PostgreSQL only if and when this transaction commits.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CLUSTER_CHANNEL)
        .bind(format!("{}:{}", cluster.uid, cluster.revision))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(event)
}

/// Loads the cluster with `uid` for update (row lock until commit).
pub(crate) async fn lock_cluster(conn: &mut PgConnection, uid: Uuid) -> Result<Option<Cluster>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM clusters WHERE uid = $1 FOR UPDATE",
        rows::CLUSTER_COLUMNS
    )))
    .bind(uid)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.as_ref().map(rows::cluster).transpose()
}

impl Store {
    /// Events of cluster `uid` with a revision above `after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        uid: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ClusterEvent>> {
        let rows = sqlx::query(
            "SELECT revision, kind, message, operation_id, snapshot, create_time FROM cluster_events \
             WHERE cluster_uid = $1 AND revision > $2 ORDER BY revision LIMIT $3",
        )
        .bind(uid)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                use sqlx::Row;
                let kind: String = row.try_get("kind").map_err(db_error)?;
                let snapshot: serde_json::Value = row.try_get("snapshot").map_err(db_error)?;
                Ok(ClusterEvent {
                    revision: row.try_get("revision").map_err(db_error)?,
                    kind: EventKind::parse(&kind).ok_or_else(|| {
                        esaas_core::Error::Internal(format!("unknown event kind {kind:?}"))
                    })?,
                    message: row.try_get("message").map_err(db_error)?,
                    operation: row.try_get("operation_id").map_err(db_error)?,
                    snapshot: serde_json::from_value(snapshot)
                        .map_err(|e| esaas_core::Error::Internal(format!("event snapshot: {e}")))?,
                    create_time: row.try_get("create_time").map_err(db_error)?,
                })
            })
            .collect()
    }
}
