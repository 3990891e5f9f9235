//! Writing what a lifecycle rule decided: one [`ChangeSet`], in the order it
//! gives (the cluster row, its operations, its event), inside the caller's
//! transaction. Notifications (`pg_notify`) are sent here too, so PostgreSQL
//! delivers them when, and only when, the transaction commits.

use esaas_core::cluster::Cluster;
use esaas_core::event::ClusterEvent;
use esaas_core::lifecycle::{ChangeSet, Write};
use esaas_core::operation::Operation;
use esaas_core::{Error, Result};
use sqlx::{AssertSqlSafe, PgConnection};

use crate::error::{db_error, is_unique_violation};
use crate::feed::{CLUSTER_CHANNEL, OPERATION_CHANNEL};
use crate::rows::to_json;

/// Writes `changes` on `conn`.
pub(crate) async fn save(conn: &mut PgConnection, changes: &ChangeSet) -> Result<()> {
    match &changes.cluster {
        Some(Write::Insert(c)) => insert_cluster(conn, c).await?,
        Some(Write::Update(c)) => update_cluster(conn, c).await?,
        None => {}
    }
    for op in &changes.operations {
        match op {
            Write::Insert(op) => insert_operation(conn, op).await?,
            Write::Update(op) => update_operation(conn, op).await?,
        }
    }
    for s in &changes.snapshots {
        record_snapshot(conn, s).await?;
    }
    for (uid, name) in &changes.deleted_snapshots {
        sqlx::query("DELETE FROM cluster_snapshots WHERE cluster_uid = $1 AND name = $2")
            .bind(uid)
            .bind(name)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    if let Some(event) = &changes.event {
        append_event(conn, event).await?;
    }
    Ok(())
}

/// Records a snapshot as it ended; a report repeated (a retried attempt) overwrites it.
async fn record_snapshot(
    conn: &mut PgConnection,
    s: &esaas_core::snapshots::SnapshotRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cluster_snapshots (cluster_uid, name, tenant_id, cluster_id, kind, operation_id, snapshot) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (cluster_uid, name) DO UPDATE SET snapshot = EXCLUDED.snapshot, operation_id = EXCLUDED.operation_id",
    )
    .bind(s.cluster_uid)
    .bind(&s.snapshot.name)
    .bind(s.tenant.as_str())
    .bind(s.cluster_id.as_str())
    .bind(s.kind.as_str())
    .bind(s.operation)
    .bind(to_json(&s.snapshot)?)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Every column of a cluster row, in the order of [`bind_cluster`]'s `$1` to `$23`.
const CLUSTER_ROW: &str = "uid, tenant_id, cluster_id, spec, node_count, storage_gib, generation, \
     observed_generation, state, health, endpoint, conditions, message, current_operation, version, revision, \
     create_time, update_time, delete_time, storage_change_time, retained_volumes, certificate_expire_time, snapshot_status";

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_cluster<'q>(q: PgQuery<'q>, c: &'q Cluster) -> Result<PgQuery<'q>> {
    Ok(q.bind(c.uid)
        .bind(c.tenant.as_str())
        .bind(c.cluster_id.as_str())
        .bind(to_json(&c.spec)?)
        .bind(c.spec.node_count())
        .bind(c.spec.storage_gib())
        .bind(c.generation)
        .bind(c.observed_generation)
        .bind(c.state.as_str())
        .bind(c.health.as_str())
        .bind(&c.endpoint)
        .bind(to_json(&c.conditions)?)
        .bind(&c.message)
        .bind(c.current_operation)
        .bind(c.version)
        .bind(c.revision)
        .bind(c.create_time)
        .bind(c.update_time)
        .bind(c.delete_time)
        .bind(c.storage_change_time)
        .bind(to_json(&c.retained_volumes)?)
        .bind(c.certificate_expire_time)
        .bind(to_json(&c.snapshots)?))
}

const CLUSTER_VALUES: &str = "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)";

async fn insert_cluster(conn: &mut PgConnection, c: &Cluster) -> Result<()> {
    let sql = format!("INSERT INTO clusters ({CLUSTER_ROW}) VALUES {CLUSTER_VALUES}");
    bind_cluster(sqlx::query(AssertSqlSafe(sql)), c)?
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "clusters_live_name") {
                Error::AlreadyExists {
                    kind: "Cluster",
                    name: c.name().to_string(),
                }
            } else {
                db_error(e)
            }
        })?;
    // On the observation schedule from its birth; observed once it is live.
    sqlx::query(
        "INSERT INTO cluster_observations (cluster_uid, due_time) VALUES ($1, now()) ON CONFLICT DO NOTHING",
    )
    .bind(c.uid)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn update_cluster(conn: &mut PgConnection, c: &Cluster) -> Result<()> {
    // The same row, written whole; uid, tenant, id and create time never change.
    let sql = format!("UPDATE clusters SET ({CLUSTER_ROW}) = {CLUSTER_VALUES} WHERE uid = $1");
    bind_cluster(sqlx::query(AssertSqlSafe(sql)), c)?
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The one-operation-per-cluster indexes, as the precondition a caller can act on.
fn operation_error(op: &Operation, e: sqlx::Error) -> Error {
    if is_unique_violation(&e, "operations_one_queued") {
        Error::precondition(
            op.cluster_name().to_string(),
            "another operation is already queued for this cluster; it will carry the latest spec",
        )
    } else if is_unique_violation(&e, "operations_one_running") {
        Error::precondition(
            op.cluster_name().to_string(),
            "another operation is already running on this cluster",
        )
    } else {
        db_error(e)
    }
}

async fn insert_operation(conn: &mut PgConnection, op: &Operation) -> Result<()> {
    sqlx::query(
        "INSERT INTO operations (id, tenant_id, cluster_uid, kind, state, initiator_kind, initiator, target_generation, \
         stages, attempt_log, max_attempts, next_attempt_time, version, create_time, update_time, traceparent, not_before, \
         params) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(op.id)
    .bind(op.tenant.as_str())
    .bind(op.cluster_uid)
    .bind(op.kind.as_str())
    .bind(op.state.as_str())
    .bind(op.initiator.kind.as_str())
    .bind(&op.initiator.principal)
    .bind(op.target_generation)
    .bind(to_json(&op.stages)?)
    .bind(to_json(&op.attempts)?)
    .bind(op.max_attempts)
    .bind(op.next_attempt_time)
    .bind(op.version)
    .bind(op.create_time)
    .bind(op.update_time)
    .bind(&op.traceparent)
    .bind(op.not_before)
    .bind(to_json(&op.params)?)
    .execute(&mut *conn)
    .await
    .map_err(|e| operation_error(op, e))?;
    notify(conn, OPERATION_CHANNEL, op.id.to_string()).await
}

async fn update_operation(conn: &mut PgConnection, op: &Operation) -> Result<()> {
    sqlx::query(
        "UPDATE operations SET state = $2, target_generation = $3, stages = $4, attempt_log = $5, \
         attempts = $6, max_attempts = $7, next_attempt_time = $8, blocking_check = $9, error = $10, \
         start_time = $11, end_time = $12, update_time = $13, version = $14, lease_owner = $15, lease_token = $16, \
         lease_expire_time = $17, checkpoint = $18, cancel_requested = $19, lease_session = $20, \
         gate_override = $21, not_before = $22 WHERE id = $1",
    )
    .bind(op.id)
    .bind(op.state.as_str())
    .bind(op.target_generation)
    .bind(to_json(&op.stages)?)
    .bind(to_json(&op.attempts)?)
    .bind(i32::try_from(op.attempts.len()).unwrap_or(i32::MAX))
    .bind(op.max_attempts)
    .bind(op.next_attempt_time)
    .bind(&op.blocking_check)
    .bind(op.error.as_ref().map(to_json).transpose()?)
    .bind(op.start_time)
    .bind(op.end_time)
    .bind(op.update_time)
    .bind(op.version)
    .bind(op.lease.as_ref().map(|l| l.owner.as_str()))
    .bind(op.lease_token)
    .bind(op.lease.as_ref().map(|l| l.expire_time))
    .bind(&op.checkpoint)
    .bind(op.cancel_requested)
    .bind(op.lease.as_ref().map(|l| l.session))
    .bind(op.gate_override.as_ref().map(to_json).transpose()?)
    .bind(op.not_before)
    .execute(&mut *conn)
    .await
    .map_err(|e| operation_error(op, e))?;
    notify(conn, OPERATION_CHANNEL, op.id.to_string()).await
}

async fn append_event(conn: &mut PgConnection, e: &ClusterEvent) -> Result<()> {
    let uid = e.snapshot.uid;
    sqlx::query(
        "INSERT INTO cluster_events (cluster_uid, revision, kind, message, operation_id, snapshot, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uid)
    .bind(e.revision)
    .bind(e.kind.as_str())
    .bind(&e.message)
    .bind(e.operation)
    .bind(to_json(&e.snapshot)?)
    .bind(e.create_time)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    notify(conn, CLUSTER_CHANNEL, format!("{uid}:{}", e.revision)).await
}

/// Delivered by PostgreSQL only if and when the transaction commits.
async fn notify(conn: &mut PgConnection, channel: &str, payload: String) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(())
}
