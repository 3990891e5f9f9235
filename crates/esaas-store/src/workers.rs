//! Workers connected to the control plane.

use chrono::{DateTime, Utc};
use esaas_core::Result;
use sqlx::Row;
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;

/// A connected worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Capacity.
    pub capacity: i32,
    /// Version.
    pub version: String,
    /// Operations leased to it now.
    pub leases: Vec<Uuid>,
    /// Connected at.
    pub connect_time: DateTime<Utc>,
    /// Last heard from.
    pub last_heartbeat_time: DateTime<Utc>,
}

impl Store {
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
