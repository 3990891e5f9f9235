//! The worker side of the queue: claiming operations, fenced reports,
//! heartbeats, and returning the leases of workers that went away. Each
//! transition is decided by `esaas_core::lifecycle::lease` on the operation
//! and its cluster, locked (see `load::leased`), and saved in one transaction.

use std::time::Duration;

use esaas_core::cluster::Cluster;
use esaas_core::lifecycle::Write;
use esaas_core::lifecycle::lease::{
    self, Backoff, Closer, Context, LeaseEvent, Loss, LostLease, Refusal,
};
use esaas_core::operation::Operation;
use esaas_core::worker::WorkerSession;
use esaas_core::{Error, Result};
use rand::Rng;
use uuid::Uuid;

use crate::Store;
use crate::error::db_error;
use crate::load;
use crate::save::save;

/// How leases behave.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// A lease lapses this long after its last heartbeat.
    pub ttl: Duration,
    /// Delay between failed attempts.
    pub backoff: Backoff,
}

impl LeaseSettings {
    fn context(&self) -> Context {
        Context {
            backoff: self.backoff,
            jitter: rand::rng().random::<f64>(),
            now: esaas_core::now(),
        }
    }
}

/// An operation handed to a worker, with its cluster.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The operation, RUNNING under the new lease.
    pub operation: Operation,
    /// The cluster at the moment of the claim.
    pub cluster: Cluster,
}

impl Store {
    /// Leases up to `max` queued operations whose time has come to the
    /// session `worker`, each on a cluster with no other operation running.
    pub async fn claim(
        &self,
        worker: &WorkerSession,
        max: i64,
        settings: &LeaseSettings,
    ) -> Result<Vec<Claimed>> {
        if max <= 0 {
            return Ok(Vec::new());
        }
        let candidates: Vec<Uuid> = sqlx::query_scalar(
            "SELECT q.id FROM operations q WHERE q.state = 'QUEUED' AND q.next_attempt_time <= now() \
             AND NOT EXISTS (SELECT 1 FROM operations r WHERE r.cluster_uid = q.cluster_uid AND r.state IN ('RUNNING', 'STALLED')) \
             ORDER BY q.next_attempt_time, q.id LIMIT $1",
        )
        .bind(max * 2)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut claimed = Vec::new();
        for id in candidates {
            if claimed.len() as i64 >= max {
                break;
            }
            if let Some(c) = self.claim_one(worker, id, settings).await? {
                claimed.push(c);
            }
        }
        Ok(claimed)
    }

    async fn claim_one(
        &self,
        worker: &WorkerSession,
        id: Uuid,
        settings: &LeaseSettings,
    ) -> Result<Option<Claimed>> {
        let outcome = self
            .transaction(async |tx| {
                // Another claimer (or a change) holds the cluster: leave it to them.
                let Some(state) = load::leased(tx, id, true).await? else {
                    return Ok(None);
                };
                let Some(changes) = lease::claim(&state, worker, settings.ttl, esaas_core::now())
                else {
                    return Ok(None);
                };
                save(tx, &changes).await?;
                let (Some(Write::Update(operation)), Some(Write::Update(cluster))) =
                    (changes.operations.first(), changes.cluster)
                else {
                    return Err(Error::Internal(
                        "a claim writes its operation and cluster".into(),
                    ));
                };
                Ok(Some(Claimed {
                    operation: operation.clone(),
                    cluster,
                }))
            })
            .await;
        match outcome {
            // Another operation of the cluster started in between.
            Err(Error::FailedPrecondition(_)) => Ok(None),
            other => other,
        }
    }

    /// Applies one report of the session `worker` on its lease `token` of
    /// `id`. A report on a lease that expired or moved is refused and changes nothing.
    pub async fn report(
        &self,
        worker: &WorkerSession,
        id: Uuid,
        token: i64,
        event: LeaseEvent,
        settings: &LeaseSettings,
    ) -> Result<Result<(), Refusal>> {
        self.transaction(async |tx| {
            let Some(state) = load::leased(tx, id, false).await? else {
                return Ok(Err(Refusal("no such operation".into())));
            };
            match lease::report(&state, worker, token, event, &settings.context()) {
                Ok(changes) => save(tx, &changes).await.map(Ok),
                Err(refusal) => Ok(Err(refusal)),
            }
        })
        .await
    }

    /// Renews the leases a worker session names; returns those it no longer
    /// holds (expired, moved, or cancelled because a delete superseded them).
    pub async fn heartbeat(
        &self,
        worker: &WorkerSession,
        leases: &[(Uuid, i64)],
        settings: &LeaseSettings,
    ) -> Result<Vec<LostLease>> {
        sqlx::query("UPDATE workers SET last_heartbeat_time = now() WHERE session = $1")
            .bind(worker.id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        let expire =
            esaas_core::now() + chrono::Duration::from_std(settings.ttl).unwrap_or_default();
        // One statement renews every lease the worker still holds (the fence
        // of `lease::check_fence`, in SQL). Renewal is not news: it bumps no
        // version and wakes no watcher.
        let (ids, tokens): (Vec<Uuid>, Vec<i64>) = leases.iter().copied().unzip();
        let renewed: Vec<(Uuid, bool)> = sqlx::query_as(
            "UPDATE operations o SET lease_expire_time = $4 FROM unnest($2::uuid[], $3::bigint[]) AS l(id, token) \
             WHERE o.id = l.id AND o.lease_token = l.token AND o.lease_session = $1 AND o.state = 'RUNNING' \
             AND o.lease_expire_time > now() RETURNING o.id, o.cancel_requested",
        )
        .bind(worker.id)
        .bind(&ids)
        .bind(&tokens)
        .bind(expire)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let lost = lease::lost_at_heartbeat(leases, &renewed);
        for l in lost.iter().filter(|l| l.superseded) {
            self.cancel_superseded(l.operation).await?;
        }
        Ok(lost)
    }

    async fn cancel_superseded(&self, id: Uuid) -> Result<()> {
        self.transaction(async |tx| {
            let Some(state) = load::leased(tx, id, false).await? else {
                return Ok(());
            };
            match lease::cancel_superseded(&state, esaas_core::now()) {
                Some(changes) => save(tx, &changes).await,
                None => Ok(()),
            }
        })
        .await
    }

    /// Ends the attempt of a lease lost in the way `loss` says; whether it was.
    async fn expire_lease(&self, id: Uuid, loss: Loss, settings: &LeaseSettings) -> Result<bool> {
        self.transaction(async |tx| {
            let Some(state) = load::leased(tx, id, false).await? else {
                return Ok(false);
            };
            match lease::expire(&state, loss, &settings.context()) {
                Some(changes) => save(tx, &changes).await.map(|()| true),
                None => Ok(false),
            }
        })
        .await
    }

    /// Returns every lease of the session to the queue (its stream ended;
    /// `by` says who ended it), only those held under the worker id `owner`
    /// when one is given. Leases of any other session, the same worker id's
    /// included, stay as they are.
    pub async fn release_session(
        &self,
        session: Uuid,
        owner: Option<&str>,
        by: Closer,
        settings: &LeaseSettings,
    ) -> Result<usize> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM operations WHERE lease_session = $1 AND state = 'RUNNING' \
             AND ($2::text IS NULL OR lease_owner = $2)",
        )
        .bind(session)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut n = 0;
        for id in ids {
            if self
                .expire_lease(id, Loss::SessionEnded { session, by }, settings)
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
            if self.expire_lease(id, Loss::Lapsed, settings).await? {
                n += 1;
            }
        }
        Ok(n)
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
