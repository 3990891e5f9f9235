//! Workers connected to the control plane.

use esaas_core::Result;
use esaas_core::worker::{Worker, WorkerInfo};
use sqlx::Row;

use crate::Store;
use crate::error::db_error;

impl Store {
    /// Records a connected worker.
    pub async fn register_worker(&self, w: &WorkerInfo) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, region, capacity, version, connect_time, last_heartbeat_time) \
             VALUES ($1, $2, $3, $4, now(), now()) ON CONFLICT (id) DO UPDATE SET region = $2, capacity = $3, \
             version = $4, connect_time = now(), last_heartbeat_time = now()",
        )
        .bind(&w.id)
        .bind(&w.region)
        .bind(w.capacity)
        .bind(&w.version)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Forgets a worker whose stream ended.
    pub async fn unregister_worker(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Every connected worker with its current leases.
    pub async fn list_workers(&self) -> Result<Vec<Worker>> {
        let rows = sqlx::query(
            "SELECT w.id, w.region, w.capacity, w.version, w.connect_time, w.last_heartbeat_time, \
             coalesce(array_agg(o.id ORDER BY o.id) FILTER (WHERE o.id IS NOT NULL), '{}') AS leases \
             FROM workers w LEFT JOIN operations o ON o.lease_owner = w.id AND o.state IN ('RUNNING', 'STALLED') \
             GROUP BY w.id ORDER BY w.id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(Worker {
                    id: r.try_get("id").map_err(db_error)?,
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
