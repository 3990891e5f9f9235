//! Workers connected to the control plane.

use esaas_core::Result;
use esaas_core::worker::{Worker, WorkerInfo};
use sqlx::Row;
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;

impl Store {
    /// Records a connected worker's new session.
    pub async fn register_worker(&self, w: &WorkerInfo, session: Uuid) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (session, id, region, capacity, version, connect_time, last_heartbeat_time) \
             VALUES ($5, $1, $2, $3, $4, now(), now())",
        )
        .bind(&w.id)
        .bind(&w.region)
        .bind(w.capacity)
        .bind(&w.version)
        .bind(session)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Forgets a session whose stream ended.
    pub async fn unregister_worker(&self, session: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE session = $1")
            .bind(session)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Every connected worker session with its current leases.
    pub async fn list_workers(&self) -> Result<Vec<Worker>> {
        let rows = sqlx::query(
            "SELECT w.session, w.id, w.region, w.capacity, w.version, w.connect_time, w.last_heartbeat_time, \
             coalesce(array_agg(o.id ORDER BY o.id) FILTER (WHERE o.id IS NOT NULL), '{}') AS leases \
             FROM workers w LEFT JOIN operations o ON o.lease_session = w.session AND o.state IN ('RUNNING', 'STALLED') \
             GROUP BY w.session ORDER BY w.id, w.connect_time",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(Worker {
                    id: r.try_get("id").map_err(db_error)?,
                    session: r.try_get("session").map_err(db_error)?,
                    region: r.try_get("region").map_err(db_error)?,
                    capacity: r.try_get("capacity").map_err(db_error)?,
                    version: r.try_get("version").map_err(db_error)?,
                    leases: r.try_get("leases").map_err(db_error)?,
                    connect_time: r.try_get("connect_time").map_err(db_error)?,
                    last_heartbeat_time: r.try_get("last_heartbeat_time").map_err(db_error)?,
                })
            })
            .collect()
    }
}
