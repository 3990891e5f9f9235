//! The retention sweep: deletes what `esaas_core::lifecycle::retention`
//! calls expired, in bounded batches.
//!
//! Each statement removes at most `batch` rows and commits on its own, so a
//! large backlog never holds many locks or a long transaction, and every
//! statement stays far inside the session's `statement_timeout`. The rows it
//! deletes are ones no API call locks (old events and answers, tombstones
//! taken with `SKIP LOCKED`), so a sweep never makes a call wait. With
//! several control-plane replicas only one sweeps at a time: the sweep holds
//! a session advisory lock on a connection of its own, closed when the sweep
//! ends however it ends, so the lock can never be left behind in the pool.
//!
//! The `WHERE` clauses below are the predicates of
//! `esaas_core::lifecycle::retention` in SQL; `tests/tests/retention.rs`
//! checks them against those functions row by row.

use chrono::{DateTime, Utc};
use esaas_core::Result;
use esaas_core::cluster::ClusterState;
use esaas_core::lifecycle::retention::{Cutoffs, KEPT_ATTEMPTS};
use esaas_core::operation::OperationState;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;

/// The advisory lock key of the sweep (`hashtextextended('esaas.retention', 0)`
/// would do as well; a constant needs no round trip).
const SWEEP_LOCK: i64 = 0x6573_6161_735f_7265; // "esaas_re"

/// Tombstones removed per round (each with its events and operations).
const TOMBSTONES_PER_ROUND: i64 = 100;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Events deleted.
    pub events: u64,
    /// Idempotency records deleted.
    pub idempotency: u64,
    /// Operations whose attempt log was trimmed.
    pub attempt_logs: u64,
    /// Tombstones deleted (with their events, operations and schedule).
    pub tombstones: u64,
}

impl Swept {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        *self == Swept::default()
    }
}

impl Store {
    /// The oldest event kept of cluster `uid`, `None` if it has none.
    pub async fn oldest_revision(&self, uid: Uuid) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT min(revision) FROM cluster_events WHERE cluster_uid = $1")
            .bind(uid)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    /// Removes everything expired at `cutoffs`, `batch` rows per statement.
    /// `None` when another process holds the sweep: it is sweeping already.
    pub async fn sweep(&self, cutoffs: &Cutoffs, batch: i64) -> Result<Option<Swept>> {
        let batch = batch.max(1);
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        // Closed, not returned to the pool, when the sweep ends (even if its
        // task is dropped halfway): the session's advisory lock goes with it.
        conn.close_on_drop();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SWEEP_LOCK)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if !locked {
            return Ok(None);
        }
        // A row someone holds is left for the next sweep rather than waited for.
        sqlx::query("SET lock_timeout = '1s'")
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        let swept = Swept {
            events: drain(&mut conn, Step::Events, cutoffs.events, batch).await?,
            idempotency: drain(&mut conn, Step::Answers, cutoffs.idempotency, batch).await?,
            attempt_logs: drain(&mut conn, Step::AttemptLogs, cutoffs.attempt_logs, batch).await?,
            tombstones: delete_tombstones(&mut conn, cutoffs.tombstones, batch).await?,
        };
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SWEEP_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(Some(swept))
    }
}

/// One kind of batched removal.
#[derive(Debug, Clone, Copy)]
enum Step {
    Events,
    Answers,
    AttemptLogs,
}

/// Runs `step` in batches until one removes less than a full batch; the
/// total removed.
async fn drain(
    conn: &mut PgConnection,
    step: Step,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64> {
    let mut total = 0;
    loop {
        let (n, full) = match step {
            Step::Events => delete_events(conn, before, batch).await?,
            Step::Answers => delete_answers(conn, before, batch).await?,
            Step::AttemptLogs => trim_attempt_logs(conn, before, batch).await?,
        };
        total += n;
        if !full {
            return Ok(total);
        }
    }
}

fn counted(result: sqlx::postgres::PgQueryResult, batch: i64) -> (u64, bool) {
    let n = result.rows_affected();
    (n, n >= u64::try_from(batch).unwrap_or(u64::MAX))
}

/// Runs one batched statement whose `$1` is the cutoff and `$2` the batch
/// size: how many rows it touched, and whether a full batch (more may be left).
async fn batched(
    conn: &mut PgConnection,
    sql: String,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<(u64, bool)> {
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(before)
        .bind(batch)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(counted(done, batch))
}

/// Events older than the cutoff, oldest first, never a cluster's newest
/// (`revision < clusters.revision`).
async fn delete_events(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<(u64, bool)> {
    let sql = "DELETE FROM cluster_events WHERE (cluster_uid, revision) IN ( \
         SELECT e.cluster_uid, e.revision FROM cluster_events e JOIN clusters c ON c.uid = e.cluster_uid \
         WHERE e.create_time < $1 AND e.revision < c.revision \
         ORDER BY e.create_time LIMIT $2)";
    batched(conn, sql.to_string(), before, batch).await
}

/// Answers of idempotent requests older than the cutoff.
async fn delete_answers(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<(u64, bool)> {
    let sql = "DELETE FROM idempotency WHERE (scope, method, request_id) IN ( \
         SELECT scope, method, request_id FROM idempotency WHERE create_time < $1 \
         ORDER BY create_time LIMIT $2)";
    batched(conn, sql.to_string(), before, batch).await
}

/// Operations that ended before the cutoff keep their last attempts only.
/// The row's version is left alone: nothing a watcher follows changed.
async fn trim_attempt_logs(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<(u64, bool)> {
    // A literal, not a parameter, so the planner matches the partial index
    // `operations_long_attempt_logs` (migration 20261202000004, `> 1`).
    const _: () = assert!(KEPT_ATTEMPTS == 1, "the partial index keeps `> 1`");
    let ended = OperationState::ALL
        .iter()
        .filter(|s| s.is_done())
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE operations o SET attempt_log = ( \
             SELECT coalesce(jsonb_agg(a ORDER BY i), '[]'::jsonb) \
             FROM jsonb_array_elements(o.attempt_log) WITH ORDINALITY AS t(a, i) \
             WHERE i > jsonb_array_length(o.attempt_log) - {KEPT_ATTEMPTS}) \
         WHERE o.id IN ( \
             SELECT id FROM operations \
             WHERE end_time IS NOT NULL AND jsonb_array_length(attempt_log) > {KEPT_ATTEMPTS} \
               AND end_time < $1 AND state IN ({ended}) \
             ORDER BY end_time LIMIT $2 FOR UPDATE SKIP LOCKED)"
    );
    batched(conn, sql, before, batch).await
}

/// Tombstones last changed before the cutoff that list no retained
/// volumes, a round of [`TOMBSTONES_PER_ROUND`] at a time: first their
/// events, operations and observation schedule (in batches), then the rows
/// themselves, the rule checked again in that last statement.
async fn delete_tombstones(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64> {
    // A tombstone listing a final snapshot whose record is kept stays too.
    let expired = format!(
        "state = '{}' AND retained_volumes = '[]'::jsonb AND update_time < $1 \
         AND NOT EXISTS (SELECT 1 FROM cluster_snapshots s WHERE s.cluster_uid = clusters.uid \
         AND s.name = clusters.snapshot_status->>'final_snapshot')",
        ClusterState::Deleted
    );
    let mut total = 0;
    loop {
        let uids: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT uid FROM clusters WHERE {expired} ORDER BY update_time LIMIT $2"
        )))
        .bind(before)
        .bind(TOMBSTONES_PER_ROUND)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        if uids.is_empty() {
            return Ok(total);
        }
        for (table, key) in [
            ("cluster_events", "cluster_uid, revision"),
            ("operations", "id"),
        ] {
            loop {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE ({key}) IN ( \
                         SELECT {key} FROM {table} WHERE cluster_uid = ANY($1) LIMIT $2)"
                )))
                .bind(&uids)
                .bind(batch)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
                if !counted(done, batch).1 {
                    break;
                }
            }
        }
        sqlx::query("DELETE FROM cluster_observations WHERE cluster_uid = ANY($1)")
            .bind(&uids)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM clusters WHERE uid IN ( \
                 SELECT uid FROM clusters WHERE uid = ANY($2) AND {expired} FOR UPDATE SKIP LOCKED)"
        )))
        .bind(before)
        .bind(&uids)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        total += done.rows_affected();
        // Rows another transaction held are left for the next sweep.
        if done.rows_affected() == 0
            || uids.len() < usize::try_from(TOMBSTONES_PER_ROUND).unwrap_or(usize::MAX)
        {
            return Ok(total);
        }
    }
}
