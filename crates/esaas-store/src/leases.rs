//! The worker side of the queue: claiming operations, fenced reports,
//! heartbeats, and returning the leases of workers that went away.
//!
//! Lock order everywhere: the cluster row first, then its operation rows, as
//! updates and deletes do, so a claim or a report never deadlocks with them.
//! Every report re-checks the lease (owner, token, expiry) under those locks.

use std::time::Duration;

use esaas_core::cluster::Cluster;
use esaas_core::event::EventKind;
use esaas_core::lease::{self, Backoff, Context, LeaseEvent, Refusal};
use esaas_core::operation::{Operation, OperationState};
use esaas_core::{Error, Result};
use rand::Rng;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;
use crate::events::{commit_change, lock_cluster};
use crate::operations::save_operation;
use crate::rows::{self, OPERATION_COLUMNS};

/// How leases behave.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// A lease lapses this long after its last heartbeat.
    pub ttl: Duration,
    /// Delay between failed attempts.
    pub backoff: Backoff,
}

/// An operation handed to a worker, with its cluster.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The operation, RUNNING under the new lease.
    pub operation: Operation,
    /// The cluster at the moment of the claim.
    pub cluster: Cluster,
}

/// A worker as it introduces itself.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Capacity.
    pub capacity: i32,
    /// Version.
    pub version: String,
}

/// A lease a heartbeat could not renew, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLease {
    /// Operation.
    pub operation: Uuid,
    /// Token the worker holds.
    pub token: i64,
    /// Why it is gone.
    pub reason: String,
}

async fn lock_op(conn: &mut PgConnection, id: Uuid) -> Result<Option<Operation>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {OPERATION_COLUMNS} FROM operations o JOIN clusters c ON c.uid = o.cluster_uid \
         WHERE o.id = $1 FOR UPDATE OF o"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.as_ref().map(rows::operation).transpose()
}

/// Locks the cluster of operation `id`, then the operation.
pub(crate) async fn lock_op_and_cluster(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(Operation, Cluster)>> {
    let uid: Option<Uuid> = sqlx::query_scalar("SELECT cluster_uid FROM operations WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    let Some(uid) = uid else { return Ok(None) };
    let Some(cluster) = lock_cluster(conn, uid).await? else {
        return Ok(None);
    };
    Ok(lock_op(conn, id).await?.map(|op| (op, cluster)))
}

async fn other_queued(conn: &mut PgConnection, op: &Operation) -> Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM operations WHERE cluster_uid = $1 AND state = 'QUEUED' AND id <> $2",
    )
    .bind(op.cluster_uid)
    .bind(op.id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)
}

fn context(settings: &LeaseSettings, other_queued: Option<Uuid>) -> Context {
    Context {
        other_queued,
        backoff: settings.backoff,
        jitter: rand::rng().random::<f64>(),
        now: esaas_core::now(),
    }
}

async fn save_both(
    conn: &mut PgConnection,
    op: &mut Operation,
    cluster: &mut Cluster,
    event: Option<String>,
) -> Result<()> {
    save_operation(conn, op).await?;
    if let Some(message) = event {
        commit_change(
            conn,
            cluster,
            EventKind::OperationProgress,
            message,
            Some(op.id),
        )
        .await?;
    }
    Ok(())
}

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

    /// Leases up to `max` queued operations whose time has come to `worker`,
    /// each on a cluster with no other operation running.
    pub async fn claim(
        &self,
        worker: &str,
        max: i64,
        settings: &LeaseSettings,
    ) -> Result<Vec<Claimed>> {
        if max <= 0 {
            return Ok(Vec::new());
        }
        let candidates: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT q.id, q.cluster_uid FROM operations q WHERE q.state = 'QUEUED' AND q.next_attempt_time <= now() \
             AND NOT EXISTS (SELECT 1 FROM operations r WHERE r.cluster_uid = q.cluster_uid AND r.state IN ('RUNNING', 'STALLED')) \
             ORDER BY q.next_attempt_time, q.id LIMIT $1",
        )
        .bind(max * 2)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut claimed = Vec::new();
        for (id, uid) in candidates {
            if claimed.len() as i64 >= max {
                break;
            }
            if let Some(c) = self.claim_one(worker, id, uid, settings).await? {
                claimed.push(c);
            }
        }
        Ok(claimed)
    }

    async fn claim_one(
        &self,
        worker: &str,
        id: Uuid,
        uid: Uuid,
        settings: &LeaseSettings,
    ) -> Result<Option<Claimed>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Another claimer (or a change) holds the cluster: leave it to them.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM clusters WHERE uid = $1 FOR UPDATE SKIP LOCKED",
            rows::CLUSTER_COLUMNS
        )))
        .bind(uid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(mut cluster) = row.as_ref().map(rows::cluster).transpose()? else {
            return Ok(None);
        };
        let Some(mut op) = lock_op(&mut tx, id).await? else {
            return Ok(None);
        };
        let now = esaas_core::now();
        if op.state != OperationState::Queued || op.next_attempt_time > now {
            return Ok(None);
        }
        let transition = lease::claim(&mut op, &mut cluster, worker, settings.ttl, now);
        match save_both(&mut tx, &mut op, &mut cluster, transition.event).await {
            Ok(()) => {}
            // Another operation of the cluster started in between.
            Err(Error::FailedPrecondition(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Some(Claimed {
            operation: op,
            cluster,
        }))
    }

    /// Applies one report of `worker` on its lease `token` of `id`. A report on
    /// a lease that expired or moved is refused and changes nothing.
    pub async fn report(
        &self,
        worker: &str,
        id: Uuid,
        token: i64,
        event: LeaseEvent,
        settings: &LeaseSettings,
    ) -> Result<Result<(), Refusal>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some((mut op, mut cluster)) = lock_op_and_cluster(&mut tx, id).await? else {
            return Ok(Err(Refusal("no such operation".into())));
        };
        if let Err(refusal) = lease::check_fence(&op, worker, token, esaas_core::now()) {
            return Ok(Err(refusal));
        }
        let queued = other_queued(&mut tx, &op).await?;
        let transition = lease::apply(&mut op, &mut cluster, event, &context(settings, queued));
        save_both(&mut tx, &mut op, &mut cluster, transition.event).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Ok(()))
    }

    /// Renews the leases a worker names; returns those it no longer holds
    /// (expired, moved, or cancelled because a delete superseded them).
    pub async fn heartbeat(
        &self,
        worker: &str,
        leases: &[(Uuid, i64)],
        settings: &LeaseSettings,
    ) -> Result<Vec<LostLease>> {
        sqlx::query("UPDATE workers SET last_heartbeat_time = now() WHERE id = $1")
            .bind(worker)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        let expire =
            esaas_core::now() + chrono::Duration::from_std(settings.ttl).unwrap_or_default();
        // One statement renews every lease the worker still holds. Renewal is
        // not news: it bumps no version and wakes no watcher.
        let (ids, tokens): (Vec<Uuid>, Vec<i64>) = leases.iter().copied().unzip();
        let renewed: Vec<(Uuid, bool)> = sqlx::query_as(
            "UPDATE operations o SET lease_expire_time = $4 FROM unnest($2::uuid[], $3::bigint[]) AS l(id, token) \
             WHERE o.id = l.id AND o.lease_token = l.token AND o.lease_owner = $1 AND o.state = 'RUNNING' \
             AND o.lease_expire_time > now() RETURNING o.id, o.cancel_requested",
        )
        .bind(worker)
        .bind(&ids)
        .bind(&tokens)
        .bind(expire)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut lost = Vec::new();
        for &(id, token) in leases {
            match renewed
                .iter()
                .find(|(r, _)| *r == id)
                .map(|(_, cancel)| *cancel)
            {
                Some(false) => {}
                Some(true) => {
                    self.cancel_superseded(id, settings).await?;
                    lost.push(LostLease {
                        operation: id,
                        token,
                        reason: "cancelled: a later operation (a delete) superseded it".into(),
                    });
                }
                None => lost.push(LostLease {
                    operation: id,
                    token,
                    reason: "the lease expired or moved to another worker".into(),
                }),
            }
        }
        Ok(lost)
    }

    async fn cancel_superseded(&self, id: Uuid, settings: &LeaseSettings) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some((mut op, mut cluster)) = lock_op_and_cluster(&mut tx, id).await? else {
            return Ok(());
        };
        if op.state != OperationState::Running {
            return Ok(());
        }
        let queued = other_queued(&mut tx, &op).await?;
        let ctx = context(settings, queued);
        let transition = lease::cancel(&mut op, &mut cluster, queued, ctx.now);
        save_both(&mut tx, &mut op, &mut cluster, transition.event).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn expire_lease(
        &self,
        id: Uuid,
        owner: Option<&str>,
        outcome: &str,
        settings: &LeaseSettings,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let Some((mut op, mut cluster)) = lock_op_and_cluster(&mut tx, id).await? else {
            return Ok(false);
        };
        let now = esaas_core::now();
        let holds = match (&op.lease, owner) {
            (Some(l), Some(owner)) => l.owner == owner,
            (Some(l), None) => l.expire_time <= now,
            (None, _) => false,
        };
        if op.state != OperationState::Running || !holds {
            return Ok(false);
        }
        let queued = other_queued(&mut tx, &op).await?;
        let transition = lease::expire(&mut op, &mut cluster, outcome, &context(settings, queued));
        save_both(&mut tx, &mut op, &mut cluster, transition.event).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Returns every lease of `worker` to the queue (its stream ended).
    pub async fn release_worker(&self, worker: &str, settings: &LeaseSettings) -> Result<usize> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM operations WHERE lease_owner = $1 AND state = 'RUNNING'",
        )
        .bind(worker)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut n = 0;
        for id in ids {
            if self
                .expire_lease(id, Some(worker), "worker disconnected", settings)
                .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Returns every lapsed lease to the queue (or fails its operation when
    /// its attempts are spent). Safe to run in every control-plane process.
    pub async fn reap_expired(&self, settings: &LeaseSettings) -> Result<usize> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM operations WHERE state = 'RUNNING' AND lease_expire_time <= now() ORDER BY lease_expire_time LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut n = 0;
        for id in ids {
            if self
                .expire_lease(id, None, "lease expired", settings)
                .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// How many leases `worker` holds now.
    pub async fn lease_count(&self, worker: &str) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM operations WHERE lease_owner = $1 AND state = 'RUNNING'",
        )
        .bind(worker)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)
    }
}

/// The queue at one moment, for the metrics.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// Unfinished operations (queued, running, stalled) by kind and state.
    pub active: Vec<(String, String, i64)>,
    /// Queued operations whose next attempt is due: waiting for a worker.
    pub due: i64,
    /// How long the longest-waiting of them has been due.
    pub oldest_due: Duration,
}

impl Store {
    /// Samples the queue. Reads only unfinished operations (the partial
    /// indexes keep this cheap however long the history grows).
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        let active: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind, state, count(*) FROM operations \
             WHERE state IN ('QUEUED', 'RUNNING', 'STALLED') GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let (due, oldest): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(next_attempt_time))::float8 \
             FROM operations WHERE state = 'QUEUED' AND next_attempt_time <= now()",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(QueueStats {
            active,
            due,
            oldest_due: Duration::try_from_secs_f64(oldest.unwrap_or(0.0)).unwrap_or_default(),
        })
    }
}
