//! Elasticsearch: health from the pods and the shards left on excluded
//! pods (draining linearly over `drain_delay`), or forced by a test.

use std::collections::BTreeMap;
use std::time::Duration;

use esaas_core::backend::{Elasticsearch, StepError, StepResult, Target};
use esaas_core::cluster::Health;
use esaas_core::plan::{HealthObs, node_key};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::calls::{Record, call_key, record};
use super::workloads::base_exists;
use super::{Sim, db, secs};

/// Shards a pod holds when it is excluded from allocation.
pub(super) const SHARDS_PER_POD: u64 = 5;

/// Shards left on a pod excluded `age` seconds ago.
fn shards_left(age: f64, drain: Duration) -> u64 {
    let d = secs(drain);
    if d <= 0.0 || age >= d {
        return 0;
    }
    let left = (SHARDS_PER_POD as f64 * (1.0 - age.max(0.0) / d)).ceil();
    (left.max(0.0) as u64).min(SHARDS_PER_POD)
}

impl Sim {
    /// Forces the health Elasticsearch reports for cluster `uid` (shards on
    /// excluded pods are still simulated), or, with `None`, lets it be
    /// computed again. Has no effect while the base objects do not exist.
    pub async fn force_health(&self, uid: Uuid, forced: Option<(Health, &str)>) {
        match forced {
            Some((status, reason)) => self.set_override(uid, status.as_str(), reason).await,
            None => {
                sqlx::query("DELETE FROM sim_health_override WHERE cluster_uid = $1")
                    .bind(uid)
                    .execute(&self.pool)
                    .await
                    .expect("clear sim_health_override");
            }
        }
    }

    async fn set_override(&self, uid: Uuid, status: &str, reason: &str) {
        sqlx::query(
            "INSERT INTO sim_health_override (cluster_uid, status, reason) VALUES ($1, $2, $3)
             ON CONFLICT (cluster_uid) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason",
        )
        .bind(uid)
        .bind(status)
        .bind(reason)
        .execute(&self.pool)
        .await
        .expect("set sim_health_override");
    }

    /// Shards left on excluded pods that still exist.
    async fn read_exclusions(
        &self,
        conn: &mut PgConnection,
        uid: Uuid,
    ) -> sqlx::Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT e.node_set, e.ordinal,
                    EXTRACT(EPOCH FROM clock_timestamp() - e.excluded_at)::float8 AS age
               FROM sim_exclusions e
               JOIN sim_workloads w ON w.cluster_uid = e.cluster_uid AND w.node_set = e.node_set
              WHERE e.cluster_uid = $1 AND e.ordinal < w.replicas",
        )
        .bind(uid)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let ns: String = r.get("node_set");
                let ordinal: i32 = r.get("ordinal");
                (
                    node_key(&ns, ordinal),
                    shards_left(r.get("age"), self.config.drain_delay),
                )
            })
            .collect())
    }

    async fn health_of(&self, t: &Target) -> sqlx::Result<Option<HealthObs>> {
        let mut conn = self.pool.acquire().await?;
        if !base_exists(&mut conn, t.uid).await? {
            return Ok(None);
        }
        let forced =
            sqlx::query("SELECT status, reason FROM sim_health_override WHERE cluster_uid = $1")
                .bind(t.uid)
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| (r.get::<String, _>("status"), r.get::<String, _>("reason")));
        let workloads = self.read_workloads(&mut conn, t.uid).await?;
        let shards_on_excluded = self.read_exclusions(&mut conn, t.uid).await?;
        let (status, reason) = match forced {
            Some((s, reason)) => (Health::parse(&s).unwrap_or(Health::Unknown), reason),
            None => {
                let mut why = Vec::new();
                // A pod that is not ready (starting, or restarting on a new
                // template) holds no shards: their replicas are unassigned.
                for w in &workloads {
                    if w.status.ready < w.sts.replicas {
                        why.push(format!(
                            "{}: {} of {} pods ready, replicas unassigned",
                            w.node_set, w.status.ready, w.sts.replicas
                        ));
                    }
                }
                for (k, n) in &shards_on_excluded {
                    if *n > 0 {
                        why.push(format!("node {k} holds {n} shards being relocated"));
                    }
                }
                if why.is_empty() {
                    (Health::Green, String::new())
                } else {
                    (Health::Yellow, why.join("; "))
                }
            }
        };
        let keys = |table: &'static str| {
            sqlx::query_as::<_, (String, i32)>(AssertSqlSafe(format!(
                "SELECT node_set, ordinal FROM {table} WHERE cluster_uid = $1"
            )))
            .bind(t.uid)
        };
        let shutdowns = keys("sim_shutdowns")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            // A `restart` shutdown is COMPLETE once registered.
            .map(|(n, o)| (node_key(&n, o), true))
            .collect();
        let voting_exclusions = keys("sim_voting_exclusions")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|(n, o)| node_key(&n, o))
            .collect();
        Ok(Some(HealthObs {
            status,
            reason,
            shards_on_excluded,
            shutdowns,
            voting_exclusions,
            yellow_from_versions: false,
            disk_percent: Default::default(),
        }))
    }

    /// Runs `sql` (on `$1` uid, `$2` node set, `$3` ordinal) as the call `call`
    /// and records it, effective when it changed a row.
    async fn write_key(
        &self,
        call: &'static str,
        target: &Target,
        node_set: &str,
        ordinal: i32,
        sql: &'static str,
    ) -> StepResult<()> {
        let key = call_key(call, target, node_set, &ordinal.to_string());
        let mut tx = self.begin(call, target, &key).await?;
        let n = sqlx::query(sql)
            .bind(target.uid)
            .bind(node_set)
            .bind(ordinal)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        record(
            &mut tx,
            target,
            Record {
                call,
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}

impl Elasticsearch for Sim {
    async fn health(&self, target: &Target) -> StepResult<Option<HealthObs>> {
        self.check("es.health").await?;
        self.health_of(target).await.map_err(db)
    }

    async fn exclude(&self, target: &Target, node_set: &str, ordinal: i32) -> StepResult<()> {
        let key = call_key("es.exclude", target, node_set, &ordinal.to_string());
        let mut tx = self.begin("es.exclude", target, &key).await?;
        let n = sqlx::query(
            "INSERT INTO sim_exclusions (cluster_uid, node_set, ordinal, excluded_at)
             VALUES ($1, $2, $3, clock_timestamp()) ON CONFLICT DO NOTHING",
        )
        .bind(target.uid)
        .bind(node_set)
        .bind(ordinal)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        record(
            &mut tx,
            target,
            Record {
                call: "es.exclude",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn include(&self, target: &Target, node_set: &str, ordinal: i32) -> StepResult<()> {
        let key = call_key("es.include", target, node_set, &ordinal.to_string());
        let mut tx = self.begin("es.include", target, &key).await?;
        let n = sqlx::query(
            "DELETE FROM sim_exclusions WHERE cluster_uid = $1 AND node_set = $2 AND ordinal = $3",
        )
        .bind(target.uid)
        .bind(node_set)
        .bind(ordinal)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        record(
            &mut tx,
            target,
            Record {
                call: "es.include",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn register_shutdown(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> StepResult<()> {
        self.write_key(
            "es.register_shutdown",
            target,
            node_set,
            ordinal,
            "INSERT INTO sim_shutdowns (cluster_uid, node_set, ordinal) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .await
    }

    async fn clear_shutdown(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> StepResult<()> {
        self.write_key(
            "es.clear_shutdown",
            target,
            node_set,
            ordinal,
            "DELETE FROM sim_shutdowns WHERE cluster_uid = $1 AND node_set = $2 AND ordinal = $3",
        )
        .await
    }

    async fn exclude_from_voting(
        &self,
        target: &Target,
        node_set: &str,
        ordinal: i32,
    ) -> StepResult<()> {
        self.write_key(
            "es.exclude_from_voting",
            target,
            node_set,
            ordinal,
            "INSERT INTO sim_voting_exclusions (cluster_uid, node_set, ordinal) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .await
    }

    async fn clear_voting_exclusions(&self, target: &Target) -> StepResult<()> {
        let key = call_key("es.clear_voting_exclusions", target, "", "");
        let mut tx = self
            .begin("es.clear_voting_exclusions", target, &key)
            .await?;
        let n = sqlx::query("DELETE FROM sim_voting_exclusions WHERE cluster_uid = $1")
            .bind(target.uid)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        record(
            &mut tx,
            target,
            Record {
                call: "es.clear_voting_exclusions",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// The simulated platform has no snapshot bucket: snapshots are off,
    /// and nothing asks for a repository.
    async fn repository_registered(&self, _: &Target) -> StepResult<Option<bool>> {
        Ok(None)
    }

    async fn register_repository(&self, _: &Target) -> StepResult<()> {
        Err(no_bucket())
    }

    async fn snapshots(
        &self,
        _: &Target,
    ) -> StepResult<Option<Vec<esaas_core::snapshots::SnapshotObs>>> {
        Ok(None)
    }

    async fn take_snapshot(&self, _: &Target, _: &str) -> StepResult<()> {
        Err(no_bucket())
    }

    async fn delete_snapshot(&self, _: &Target, _: &str) -> StepResult<()> {
        Err(no_bucket())
    }

    async fn restore_state(
        &self,
        _: &Target,
        _: &esaas_core::snapshots::RestoreSource,
    ) -> StepResult<Option<esaas_core::plan::RestoreObs>> {
        Err(no_bucket())
    }

    async fn register_source_repository(
        &self,
        _: &Target,
        _: &esaas_core::snapshots::RestoreSource,
    ) -> StepResult<()> {
        Err(no_bucket())
    }

    async fn restore(
        &self,
        _: &Target,
        _: &esaas_core::snapshots::RestoreSource,
        _: &[String],
    ) -> StepResult<()> {
        Err(no_bucket())
    }
}

/// The simulated platform has no snapshot bucket: every snapshot call is refused.
fn no_bucket() -> StepError {
    StepError::permanent(
        "SNAPSHOTS_OFF",
        "the simulated platform has no snapshot bucket",
    )
}
