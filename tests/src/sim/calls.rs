//! Recording: every mutating call leaves a row in `sim_calls`, in the same
//! transaction as its change, and starts the same way (an injected fault,
//! the step delay, the cluster's lock).

use esaas_core::backend::{StepResult, Target};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use sqlx::types::chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Sim, db, lock_key};

/// One mutating call as recorded in `sim_calls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCall {
    /// When it was recorded (database clock).
    pub at: DateTime<Utc>,
    /// Cluster uid.
    pub cluster_uid: Uuid,
    /// Operation of the target.
    pub operation: Uuid,
    /// Call name, as used by [`Sim::inject`], for example `nodegroup.ensure`.
    pub call: String,
    /// The side effect by idempotency: for a node group creation the EKS
    /// `clientRequestToken` (`Target::idempotency_key("nodegroup-{ns}")`),
    /// otherwise `{call}:{uid}:{node set}:{argument}:{operation}`.
    pub key: String,
    /// For `nodegroup.ensure`: `create` or `update`; for
    /// `workloads.apply_node_set`: `held` when it held a new template back
    /// from running pods (see [`HELD`]); empty otherwise.
    pub action: String,
    /// Whether the call changed the world.
    pub effective: bool,
    /// `reason: message` when the call failed (injected fault or refusal).
    pub error: Option<String>,
}

impl SimCall {
    /// The argument of a call keyed `{call}:{uid}:{node set}:{argument}:{operation}`:
    /// the partition of a `workloads.roll`, `{replicas}@{generation}` of a
    /// `workloads.apply_node_set`; empty for a node group creation (keyed by its token).
    pub fn argument(&self) -> &str {
        self.key.split(':').nth(3).unwrap_or_default()
    }
}

/// The [`SimCall::action`] of an apply that held a new template back from
/// running pods: partition = replicas, no pod moves until `workloads.roll`.
pub const HELD: &str = "held";

/// What a mutating call writes to `sim_calls`.
pub(super) struct Record<'a> {
    pub(super) call: &'a str,
    pub(super) key: String,
    pub(super) action: &'a str,
    pub(super) effective: bool,
    pub(super) error: Option<String>,
}

impl Sim {
    /// Every recorded mutating call, in order (all clusters).
    ///
    /// Panics when the database fails: this is for test assertions.
    pub async fn calls(&self) -> Vec<SimCall> {
        let rows = sqlx::query(
            "SELECT at, cluster_uid, operation, call, key, action, effective, error
               FROM sim_calls ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("read sim_calls");
        rows.iter()
            .map(|r| SimCall {
                at: r.get("at"),
                cluster_uid: r.get("cluster_uid"),
                operation: r.get("operation"),
                call: r.get("call"),
                key: r.get("key"),
                action: r.get("action"),
                effective: r.get("effective"),
                error: r.get("error"),
            })
            .collect()
    }

    /// How many node groups were effectively created for cluster `uid`.
    ///
    /// Panics when the database fails: this is for test assertions.
    pub async fn node_group_creations(&self, uid: Uuid) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM sim_calls
              WHERE cluster_uid = $1 AND call = 'nodegroup.ensure' AND action = 'create' AND effective",
        )
        .bind(uid)
        .fetch_one(&self.pool)
        .await
        .expect("count node group creations")
    }

    /// The start of a mutating call: an injected fault (recorded and
    /// returned), then the step delay, then a transaction holding the
    /// cluster's lock.
    pub(super) async fn begin(
        &self,
        call: &str,
        target: &Target,
        key: &str,
    ) -> StepResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        if let Some(e) = self.take_fault(call).await? {
            let mut conn = self.pool.acquire().await.map_err(db)?;
            record(
                &mut conn,
                target,
                Record {
                    call,
                    key: key.to_string(),
                    action: "",
                    effective: false,
                    error: Some(e.to_string()),
                },
            )
            .await
            .map_err(db)?;
            return Err(e);
        }
        if !self.config.step_delay.is_zero() {
            tokio::time::sleep(self.config.step_delay).await;
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(target.uid))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(tx)
    }
}

pub(super) async fn record(conn: &mut PgConnection, t: &Target, r: Record<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sim_calls (cluster_uid, operation, call, key, action, effective, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(t.uid)
    .bind(t.operation)
    .bind(r.call)
    .bind(r.key)
    .bind(r.action)
    .bind(r.effective)
    .bind(r.error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `{call}:{uid}:{node_set}:{arg}:{operation}`.
pub(super) fn call_key(call: &str, t: &Target, node_set: &str, arg: &str) -> String {
    format!("{call}:{}:{node_set}:{arg}:{}", t.uid, t.operation.simple())
}
