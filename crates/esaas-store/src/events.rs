//! Reading the cluster event log. Events are written with the change they
//! describe (`save`), under the cluster's row lock, so revisions are
//! contiguous and commit in order.

use esaas_core::Result;
use esaas_core::event::{ClusterEvent, EventKind};
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;

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
