//! The observation schedule (`cluster_observations`) and what an
//! observation changes. Taking a cluster for observation moves its due time
//! one interval (with jitter) ahead in the same statement, under
//! `FOR UPDATE SKIP LOCKED`: two control-plane replicas never hand out the
//! same observation, and an observation that is lost with its worker costs a
//! late one, never a duplicate. Nothing else is written unless the
//! observation changes the cluster.

use std::time::Duration;

use esaas_core::Result;
use esaas_core::cluster::Cluster;
use esaas_core::lifecycle::observe::{self, Facts, ObserveRules, RepairHistory};
use esaas_core::lifecycle::{ClusterChange, Ctx, Rules};
use esaas_core::names::ClusterName;
use esaas_core::operation::Initiator;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;
use crate::load;
use crate::rows::{self, CLUSTER_COLUMNS};
use crate::save::save;

impl Store {
    /// Takes up to `limit` live clusters (READY or DEGRADED, no operation
    /// acting on them) whose observation is due, and schedules each one's
    /// next observation `interval` ahead, give or take `jitter / 2` of it.
    pub async fn claim_observations(
        &self,
        limit: i64,
        interval: Duration,
        jitter: f64,
    ) -> Result<Vec<Cluster>> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(AssertSqlSafe(format!(
            "WITH due AS ( \
               SELECT o.cluster_uid FROM cluster_observations o JOIN clusters c ON c.uid = o.cluster_uid \
               WHERE o.due_time <= now() AND c.state IN ('READY', 'DEGRADED') AND c.current_operation IS NULL \
               ORDER BY o.due_time LIMIT $1 FOR UPDATE OF o SKIP LOCKED), \
             moved AS ( \
               UPDATE cluster_observations o \
               SET due_time = now() + make_interval(secs => $2 * (1 - $3 / 2 + $3 * random())) \
               FROM due WHERE o.cluster_uid = due.cluster_uid RETURNING o.cluster_uid) \
             SELECT {CLUSTER_COLUMNS} FROM clusters WHERE uid IN (SELECT cluster_uid FROM moved)"
        )))
        .bind(limit)
        .bind(interval.as_secs_f64())
        .bind(jitter.clamp(0.0, 1.0))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(rows::cluster).collect()
    }

    /// Applies what a worker observed of the cluster `uid` (see
    /// `lifecycle::observe::assess`): nothing when nothing changed, else the
    /// cluster, its event and any REPAIR operation in one transaction.
    pub async fn apply_observation(
        &self,
        uid: Uuid,
        facts: &Facts,
        observe_rules: &ObserveRules,
        rules: &Rules,
        ctx: &Ctx,
    ) -> Result<Option<ClusterChange>> {
        // Most observations change nothing: judge them on a plain read, so an
        // idle fleet takes no row lock (a lock is a write in PostgreSQL).
        let unchanged = self
            .read(async |conn| {
                let row = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE uid = $1"
                )))
                .bind(uid)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
                let Some(cluster) = row.as_ref().map(rows::cluster).transpose()? else {
                    return Ok(true);
                };
                let history = repair_history(conn, uid, observe_rules).await?;
                Ok(observe::assess(&cluster, facts, &history, observe_rules, rules, ctx).is_none())
            })
            .await?;
        if unchanged {
            return Ok(None);
        }
        self.transaction(async |conn| {
            let Some(cluster) = load::lock_cluster(conn, uid, false).await? else {
                return Ok(None);
            };
            let history = repair_history(conn, uid, observe_rules).await?;
            let Some(decision) =
                observe::assess(&cluster, facts, &history, observe_rules, rules, ctx)
            else {
                return Ok(None);
            };
            save(conn, &decision.changes).await?;
            Ok(Some(decision.answer))
        })
        .await
    }

    /// Pauses or resumes the automatic repair of the live cluster `name`,
    /// recorded in its event log with who did it and why.
    pub async fn set_repair_paused(
        conn: &mut PgConnection,
        name: &ClusterName,
        paused: bool,
        by: &Initiator,
        justification: &str,
        ctx: &Ctx,
    ) -> Result<Cluster> {
        let live = load::live_cluster(conn, name).await?;
        let decision = observe::set_repair_paused(
            &live.cluster,
            paused,
            &by.principal,
            justification,
            ctx.now,
        );
        sqlx::query(
            "UPDATE cluster_observations SET repair_paused = $2, due_time = CASE WHEN $2 THEN due_time ELSE now() END \
             WHERE cluster_uid = $1",
        )
        .bind(live.cluster.uid)
        .bind(paused)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        save(conn, &decision.changes).await?;
        Ok(decision.answer)
    }
}

/// The cluster's automatic repairs within the window, whether they are
/// paused, and its newest certificate rotation.
async fn repair_history(
    conn: &mut PgConnection,
    uid: Uuid,
    rules: &ObserveRules,
) -> Result<RepairHistory> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE kind = 'REPAIR' AND create_time > now() - make_interval(secs => $2)) AS n, \
                max(create_time) FILTER (WHERE kind = 'REPAIR' AND create_time > now() - make_interval(secs => $2)) AS last, \
                max(create_time) FILTER (WHERE kind = 'ROTATE_CERTIFICATES') AS last_rotation, \
                max(create_time) FILTER (WHERE kind = 'ROTATE_NODES') AS last_node_rotation \
         FROM operations WHERE cluster_uid = $1",
    )
    .bind(uid)
    .bind(rules.repair_window.num_seconds() as f64)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    let paused: Option<bool> =
        sqlx::query_scalar("SELECT repair_paused FROM cluster_observations WHERE cluster_uid = $1")
            .bind(uid)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
    let n: i64 = row.try_get("n").map_err(db_error)?;
    Ok(RepairHistory {
        recent: u32::try_from(n).unwrap_or(u32::MAX),
        last: row.try_get("last").map_err(db_error)?,
        paused: paused.unwrap_or(false),
        last_rotation: row.try_get("last_rotation").map_err(db_error)?,
        last_node_rotation: row.try_get("last_node_rotation").map_err(db_error)?,
    })
}
