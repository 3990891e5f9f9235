//! A simulated world for workers under test: EKS node groups, Kubernetes
//! workloads and Elasticsearch, kept in `sim_*` tables of the test database
//! so that several worker processes share one world and a test can look at
//! it. It counts every mutating call, can fail calls on demand, and moves
//! through time-based states (node groups CREATING then ACTIVE, pods becoming
//! ready, shards draining) with configurable delays.
//!
//! Only tests use it: the product binary has no fake backend.
//!
//! Time is the database's clock (`clock_timestamp()`), so processes agree on
//! it. Every mutating call takes a per-cluster advisory lock and records its
//! side effect in `sim_calls` in the same transaction as the change, so a
//! worker killed mid-call leaves either both or neither.

use std::collections::BTreeMap;
use std::time::Duration;

use esaas_core::backend::{
    Elasticsearch, NodeGroups, StepError, StepResult, Target, Workloads, WorkloadsObs,
};
use esaas_core::cluster::Health;
use esaas_core::plan::{HealthObs, NodeGroupObs, NodeGroupStatus, WorkloadObs, node_key};
use esaas_core::spec::VolumeRetention;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Shards a pod holds when it is excluded from allocation.
pub const SHARDS_PER_POD: u64 = 5;

/// Delays of the simulated world. All zero by default: everything happens at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimConfig {
    /// How long a node group stays CREATING, UPDATING or DELETING after a change.
    pub node_group_delay: Duration,
    /// How long after an apply that changed a StatefulSet its pods are ready.
    pub pods_ready_delay: Duration,
    /// How long an excluded pod takes to drain its shards (linearly).
    pub drain_delay: Duration,
    /// How long every mutating call sleeps before it does anything, so a
    /// test can kill a worker in the middle of a step.
    pub step_delay: Duration,
}

/// One mutating call as recorded in `sim_calls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCall {
    /// Order of the calls.
    pub id: i64,
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
    /// For `nodegroup.ensure`: `create` or `update`; empty for other calls.
    pub action: String,
    /// Whether the call changed the world.
    pub effective: bool,
    /// `reason: message` when the call failed (injected fault or refusal).
    pub error: Option<String>,
}

/// One StatefulSet as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimWorkload {
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas now.
    pub ready_replicas: i32,
    /// Elasticsearch version of its template.
    pub version: String,
}

/// Everything the simulator holds for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimWorld {
    /// Namespace and shared objects exist.
    pub base_objects: bool,
    /// Node groups (gone ones left out), by node set.
    pub node_groups: BTreeMap<String, NodeGroupObs>,
    /// StatefulSets by node set.
    pub workloads: BTreeMap<String, SimWorkload>,
    /// Persistent volumes (they outlive scale-downs, as PVCs of a StatefulSet do).
    pub volumes: i64,
    /// Shards left on excluded pods that still exist, by [`node_key`].
    pub shards_on_excluded: BTreeMap<String, u64>,
}

/// The simulated world. Cheap to clone (a pool inside).
#[derive(Debug, Clone)]
pub struct Sim {
    pool: PgPool,
    config: SimConfig,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sim_node_groups (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    desired_size int NOT NULL,
    phase text NOT NULL,
    changed_at timestamptz NOT NULL,
    create_token text NOT NULL,
    failed_message text NOT NULL DEFAULT '',
    PRIMARY KEY (cluster_uid, node_set)
);
CREATE TABLE IF NOT EXISTS sim_base (
    cluster_uid uuid PRIMARY KEY,
    tenant text NOT NULL,
    cluster_id text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_workloads (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    replicas int NOT NULL,
    fingerprint text NOT NULL,
    version text NOT NULL,
    applied_at timestamptz NOT NULL,
    PRIMARY KEY (cluster_uid, node_set)
);
CREATE TABLE IF NOT EXISTS sim_volumes (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    ordinal int NOT NULL,
    PRIMARY KEY (cluster_uid, node_set, ordinal)
);
CREATE TABLE IF NOT EXISTS sim_exclusions (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    ordinal int NOT NULL,
    excluded_at timestamptz NOT NULL,
    PRIMARY KEY (cluster_uid, node_set, ordinal)
);
CREATE TABLE IF NOT EXISTS sim_health_override (
    cluster_uid uuid PRIMARY KEY,
    status text NOT NULL,
    reason text NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_calls (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    cluster_uid uuid NOT NULL,
    operation uuid NOT NULL,
    call text NOT NULL,
    key text NOT NULL,
    action text NOT NULL DEFAULT '',
    effective boolean NOT NULL,
    error text
);
CREATE INDEX IF NOT EXISTS sim_calls_cluster ON sim_calls (cluster_uid, call);
CREATE TABLE IF NOT EXISTS sim_faults (
    id bigserial PRIMARY KEY,
    call text NOT NULL,
    remaining int NOT NULL,
    retryable boolean NOT NULL,
    reason text NOT NULL,
    message text NOT NULL
);
"#;

/// Connections of a simulator's pool unless told otherwise.
pub const DEFAULT_POOL: u32 = 8;

/// Advisory lock key of the schema creation.
const SCHEMA_LOCK: i64 = 0x5349_4d5f_5343_4845;
/// `status` of `sim_health_override` meaning "Elasticsearch does not answer".
const NO_ANSWER: &str = "NONE";

const PHASE_CREATING: &str = "CREATING";
const PHASE_UPDATING: &str = "UPDATING";
const PHASE_DELETING: &str = "DELETING";

fn db(e: sqlx::Error) -> StepError {
    StepError::retryable("SIM_DB", format!("simulator database: {e}"))
}

fn lock_key(uid: Uuid) -> i64 {
    uid.as_u64_pair().0 as i64
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// What an apply of `node_set` stamps on the StatefulSet's template: the node
/// set's spec without its count (replicas are not part of a pod template)
/// and the Elasticsearch version. `None` when the node set is not in the spec.
fn fingerprint(target: &Target, node_set: &str) -> Option<String> {
    let ns = target.spec.node_sets.iter().find(|n| n.name == node_set)?;
    let mut v = serde_json::to_value(ns).ok()?;
    if let Some(m) = v.as_object_mut() {
        m.remove("count");
    }
    Some(serde_json::json!({ "node_set": v, "version": target.spec.version }).to_string())
}

fn endpoint(target: &Target) -> String {
    format!(
        "https://{}.{}.es.example:9200",
        target.cluster_id, target.tenant
    )
}

/// Shards left on a pod excluded `age` seconds ago.
fn shards_left(age: f64, drain: Duration) -> u64 {
    let d = secs(drain);
    if d <= 0.0 || age >= d {
        return 0;
    }
    let left = (SHARDS_PER_POD as f64 * (1.0 - age.max(0.0) / d)).ceil();
    (left.max(0.0) as u64).min(SHARDS_PER_POD)
}

struct Record<'a> {
    call: &'a str,
    key: String,
    action: &'a str,
    effective: bool,
    error: Option<String>,
}

impl Sim {
    /// Connects to the database at `url` and creates the `sim_*` tables if
    /// they are missing (safe from several processes at once).
    pub async fn connect(url: &str, config: SimConfig) -> anyhow::Result<Self> {
        Self::connect_with_pool(url, config, DEFAULT_POOL).await
    }

    /// Like [`Sim::connect`], with at most `max_connections` connections
    /// (many worker processes on one PostgreSQL each need fewer).
    pub async fn connect_with_pool(
        url: &str,
        config: SimConfig,
        max_connections: u32,
    ) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Self { pool, config })
    }

    /// Its pool, for queries of a test's own.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Its delays.
    pub fn config(&self) -> SimConfig {
        self.config
    }

    /// Every recorded mutating call, in order (all clusters).
    ///
    /// Panics when the database fails: this is for test assertions.
    pub async fn calls(&self) -> Vec<SimCall> {
        let rows = sqlx::query(
            "SELECT id, at, cluster_uid, operation, call, key, action, effective, error
               FROM sim_calls ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("read sim_calls");
        rows.iter()
            .map(|r| SimCall {
                id: r.get("id"),
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

    /// Makes the next `times` calls named `call` (all clusters) fail with
    /// `reason: message`; `times = -1` means every call until
    /// [`Sim::clear_faults`]. Call names: `nodegroup.ensure`,
    /// `nodegroup.delete`, `nodegroup.observe`, `workloads.apply_base`,
    /// `workloads.apply_node_set`, `workloads.delete_node_set`,
    /// `workloads.delete_base`, `workloads.observe`, `es.health`, `es.exclude`.
    ///
    /// Panics when the database fails: this is for test set-up.
    pub async fn inject(
        &self,
        call: &str,
        times: i32,
        retryable: bool,
        reason: &str,
        message: &str,
    ) {
        sqlx::query(
            "INSERT INTO sim_faults (call, remaining, retryable, reason, message)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(call)
        .bind(times)
        .bind(retryable)
        .bind(reason)
        .bind(message)
        .execute(&self.pool)
        .await
        .expect("insert sim_faults");
    }

    /// Removes every injected fault.
    pub async fn clear_faults(&self) {
        sqlx::query("DELETE FROM sim_faults")
            .execute(&self.pool)
            .await
            .expect("clear sim_faults");
    }

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

    /// Makes Elasticsearch of cluster `uid` not answer (`health` is `None`)
    /// until `force_health(uid, None)`.
    pub async fn force_no_answer(&self, uid: Uuid) {
        self.set_override(uid, NO_ANSWER, "").await
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

    /// Marks the node group of `node_set` FAILED with `message` (as EKS
    /// reports CREATE_FAILED or a degraded group) until it is deleted.
    pub async fn fail_node_group(&self, uid: Uuid, node_set: &str, message: &str) {
        sqlx::query(
            "UPDATE sim_node_groups SET failed_message = $3 WHERE cluster_uid = $1 AND node_set = $2",
        )
        .bind(uid)
        .bind(node_set)
        .bind(message)
        .execute(&self.pool)
        .await
        .expect("fail node group");
    }

    /// Everything the simulator holds for cluster `uid`, now.
    ///
    /// Panics when the database fails: this is for test assertions.
    pub async fn world(&self, uid: Uuid) -> SimWorld {
        let mut conn = self.pool.acquire().await.expect("connect");
        let base_objects = base_exists(&mut conn, uid).await.expect("read sim_base");
        let node_groups = self
            .read_node_groups(&mut conn, uid)
            .await
            .expect("read sim_node_groups");
        let workloads = self
            .read_workloads(&mut conn, uid)
            .await
            .expect("read sim_workloads")
            .into_iter()
            .map(|w| {
                let ready = self.ready(&w);
                (
                    w.node_set,
                    SimWorkload {
                        replicas: w.replicas,
                        ready_replicas: ready,
                        version: w.version,
                    },
                )
            })
            .collect();
        let volumes = sqlx::query_scalar("SELECT count(*) FROM sim_volumes WHERE cluster_uid = $1")
            .bind(uid)
            .fetch_one(&mut *conn)
            .await
            .expect("count sim_volumes");
        let shards_on_excluded = self
            .read_exclusions(&mut conn, uid)
            .await
            .expect("read sim_exclusions");
        SimWorld {
            base_objects,
            node_groups,
            workloads,
            volumes,
            shards_on_excluded,
        }
    }

    // ---- machinery -------------------------------------------------------

    /// Takes one use of an injected fault for `call`, if there is one.
    async fn take_fault(&self, call: &str) -> StepResult<Option<StepError>> {
        let row = sqlx::query(
            "UPDATE sim_faults
                SET remaining = CASE WHEN remaining < 0 THEN remaining ELSE remaining - 1 END
              WHERE id = (SELECT id FROM sim_faults WHERE call = $1 AND remaining <> 0
                           ORDER BY id LIMIT 1 FOR UPDATE)
             RETURNING retryable, reason, message",
        )
        .bind(call)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(|r| StepError {
            retryable: r.get("retryable"),
            reason: r.get("reason"),
            message: r.get("message"),
        }))
    }

    /// The start of an observing call: its fault, if any.
    async fn check(&self, call: &str) -> StepResult<()> {
        match self.take_fault(call).await? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The start of a mutating call: an injected fault (recorded and
    /// returned), then the step delay, then a transaction holding the
    /// cluster's lock.
    async fn begin(
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

    fn ready(&self, w: &WorkloadRow) -> i32 {
        if w.age >= secs(self.config.pods_ready_delay) {
            w.replicas
        } else {
            0
        }
    }

    async fn read_node_groups(
        &self,
        conn: &mut PgConnection,
        uid: Uuid,
    ) -> sqlx::Result<BTreeMap<String, NodeGroupObs>> {
        let rows = sqlx::query(
            "SELECT node_set, desired_size, phase, failed_message,
                    EXTRACT(EPOCH FROM clock_timestamp() - changed_at)::float8 AS age
               FROM sim_node_groups WHERE cluster_uid = $1",
        )
        .bind(uid)
        .fetch_all(&mut *conn)
        .await?;
        let delay = secs(self.config.node_group_delay);
        let mut out = BTreeMap::new();
        for r in rows {
            let phase: String = r.get("phase");
            let age: f64 = r.get("age");
            let failed: String = r.get("failed_message");
            let settled = age >= delay;
            let status = match phase.as_str() {
                PHASE_DELETING if settled => continue,
                PHASE_DELETING => NodeGroupStatus::Deleting,
                _ if !failed.is_empty() => NodeGroupStatus::Failed,
                _ if settled => NodeGroupStatus::Active,
                PHASE_CREATING => NodeGroupStatus::Creating,
                _ => NodeGroupStatus::Updating,
            };
            out.insert(
                r.get("node_set"),
                NodeGroupObs {
                    instance_type: "sim".into(),
                    desired_size: r.get("desired_size"),
                    status,
                    message: failed,
                },
            );
        }
        Ok(out)
    }

    async fn read_workloads(
        &self,
        conn: &mut PgConnection,
        uid: Uuid,
    ) -> sqlx::Result<Vec<WorkloadRow>> {
        let rows = sqlx::query(
            "SELECT node_set, replicas, fingerprint, version,
                    EXTRACT(EPOCH FROM clock_timestamp() - applied_at)::float8 AS age
               FROM sim_workloads WHERE cluster_uid = $1 ORDER BY node_set",
        )
        .bind(uid)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .iter()
            .map(|r| WorkloadRow {
                node_set: r.get("node_set"),
                replicas: r.get("replicas"),
                fingerprint: r.get("fingerprint"),
                version: r.get("version"),
                age: r.get("age"),
            })
            .collect())
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

    async fn ensure_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        node_set: &str,
        size: i32,
    ) -> sqlx::Result<StepResult<()>> {
        let token = t.idempotency_key(&format!("nodegroup-{node_set}"));
        let update_key = format!(
            "nodegroup.ensure:{}:{node_set}:{size}:{}",
            t.uid,
            t.operation.simple()
        );
        let row = sqlx::query(
            "SELECT desired_size, phase, create_token,
                    EXTRACT(EPOCH FROM clock_timestamp() - changed_at)::float8 AS age
               FROM sim_node_groups WHERE cluster_uid = $1 AND node_set = $2 FOR UPDATE",
        )
        .bind(t.uid)
        .bind(node_set)
        .fetch_optional(&mut *conn)
        .await?;
        let delay = secs(self.config.node_group_delay);
        let existing = row.filter(|r| {
            let phase: String = r.get("phase");
            let age: f64 = r.get("age");
            !(phase == PHASE_DELETING && age >= delay)
        });
        let Some(r) = existing else {
            // CreateNodegroup with clientRequestToken.
            sqlx::query(
                "INSERT INTO sim_node_groups
                        (cluster_uid, node_set, desired_size, phase, changed_at, create_token, failed_message)
                 VALUES ($1, $2, $3, 'CREATING', clock_timestamp(), $4, '')
                 ON CONFLICT (cluster_uid, node_set) DO UPDATE
                    SET desired_size = EXCLUDED.desired_size, phase = 'CREATING',
                        changed_at = EXCLUDED.changed_at, create_token = EXCLUDED.create_token,
                        failed_message = ''",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(size)
            .bind(&token)
            .execute(&mut *conn)
            .await?;
            record(
                conn,
                t,
                Record {
                    call: "nodegroup.ensure",
                    key: token,
                    action: "create",
                    effective: true,
                    error: None,
                },
            )
            .await?;
            return Ok(Ok(()));
        };
        let phase: String = r.get("phase");
        let desired: i32 = r.get("desired_size");
        let create_token: String = r.get("create_token");
        if phase == PHASE_DELETING {
            let e = StepError::retryable(
                "EKS_RESOURCE_IN_USE",
                format!("node group of {node_set} is being deleted"),
            );
            record(
                conn,
                t,
                Record {
                    call: "nodegroup.ensure",
                    key: update_key,
                    action: "update",
                    effective: false,
                    error: Some(e.to_string()),
                },
            )
            .await?;
            return Ok(Err(e));
        }
        if desired == size {
            // Nothing to change. A repeat of our own create: EKS answers
            // with the existing node group for the same token.
            let (key, action) = if create_token == token {
                (token, "create")
            } else {
                (update_key, "update")
            };
            record(
                conn,
                t,
                Record {
                    call: "nodegroup.ensure",
                    key,
                    action,
                    effective: false,
                    error: None,
                },
            )
            .await?;
            return Ok(Ok(()));
        }
        // UpdateNodegroupConfig. A group still being created stays CREATING.
        let age: f64 = r.get("age");
        let new_phase = if phase == PHASE_CREATING && age < delay {
            PHASE_CREATING
        } else {
            PHASE_UPDATING
        };
        sqlx::query(
            "UPDATE sim_node_groups
                SET desired_size = $3, phase = $4, changed_at = clock_timestamp()
              WHERE cluster_uid = $1 AND node_set = $2",
        )
        .bind(t.uid)
        .bind(node_set)
        .bind(size)
        .bind(new_phase)
        .execute(&mut *conn)
        .await?;
        record(
            conn,
            t,
            Record {
                call: "nodegroup.ensure",
                key: update_key,
                action: "update",
                effective: true,
                error: None,
            },
        )
        .await?;
        Ok(Ok(()))
    }

    async fn delete_group_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        node_set: &str,
        key: String,
    ) -> sqlx::Result<()> {
        let n = sqlx::query(
            "UPDATE sim_node_groups SET phase = 'DELETING', changed_at = clock_timestamp()
              WHERE cluster_uid = $1 AND node_set = $2 AND phase <> 'DELETING'",
        )
        .bind(t.uid)
        .bind(node_set)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        record(
            conn,
            t,
            Record {
                call: "nodegroup.delete",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
    }

    async fn apply_node_set_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        node_set: &str,
        replicas: i32,
        key: String,
    ) -> sqlx::Result<()> {
        let row = sqlx::query(
            "SELECT replicas, fingerprint, version FROM sim_workloads
              WHERE cluster_uid = $1 AND node_set = $2 FOR UPDATE",
        )
        .bind(t.uid)
        .bind(node_set)
        .fetch_optional(&mut *conn)
        .await?;
        let old: Option<(i32, String, String)> =
            row.map(|r| (r.get("replicas"), r.get("fingerprint"), r.get("version")));
        // A node set no longer in the spec keeps its template; only its
        // replicas change (it is being emptied).
        let (fp, version) = match fingerprint(t, node_set) {
            Some(fp) => (fp, t.spec.version.clone()),
            None => match &old {
                Some((_, fp, v)) => (fp.clone(), v.clone()),
                None => (String::new(), t.spec.version.clone()),
            },
        };
        let changed = match &old {
            None => true,
            Some((r, f, _)) => *r != replicas || *f != fp,
        };
        if changed {
            sqlx::query(
                "INSERT INTO sim_workloads (cluster_uid, node_set, replicas, fingerprint, version, applied_at)
                 VALUES ($1, $2, $3, $4, $5, clock_timestamp())
                 ON CONFLICT (cluster_uid, node_set) DO UPDATE
                    SET replicas = EXCLUDED.replicas, fingerprint = EXCLUDED.fingerprint,
                        version = EXCLUDED.version, applied_at = EXCLUDED.applied_at",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .bind(&fp)
            .bind(&version)
            .execute(&mut *conn)
            .await?;
            // Pods that are gone are no longer excluded; their volumes stay.
            sqlx::query(
                "DELETE FROM sim_exclusions WHERE cluster_uid = $1 AND node_set = $2 AND ordinal >= $3",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO sim_volumes (cluster_uid, node_set, ordinal)
                 SELECT $1, $2, g FROM generate_series(0, $3 - 1) AS g
                 ON CONFLICT DO NOTHING",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .execute(&mut *conn)
            .await?;
        }
        record(
            conn,
            t,
            Record {
                call: "workloads.apply_node_set",
                key,
                action: "",
                effective: changed,
                error: None,
            },
        )
        .await
    }

    async fn delete_base_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        retention: VolumeRetention,
        key: String,
    ) -> sqlx::Result<()> {
        let mut changed = 0;
        // The namespace goes, and everything in it.
        for sql in [
            "DELETE FROM sim_base WHERE cluster_uid = $1",
            "DELETE FROM sim_workloads WHERE cluster_uid = $1",
            "DELETE FROM sim_exclusions WHERE cluster_uid = $1",
        ] {
            changed += sqlx::query(sql)
                .bind(t.uid)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        if retention == VolumeRetention::Delete {
            changed += sqlx::query("DELETE FROM sim_volumes WHERE cluster_uid = $1")
                .bind(t.uid)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        record(
            conn,
            t,
            Record {
                call: "workloads.delete_base",
                key,
                action: "",
                effective: changed > 0,
                error: None,
            },
        )
        .await
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
        if matches!(&forced, Some((s, _)) if s == NO_ANSWER) {
            return Ok(None);
        }
        let workloads = self.read_workloads(&mut conn, t.uid).await?;
        let shards_on_excluded = self.read_exclusions(&mut conn, t.uid).await?;
        let (status, reason) = match forced {
            Some((s, reason)) => (Health::parse(&s).unwrap_or(Health::Unknown), reason),
            None => {
                let mut why = Vec::new();
                for w in &workloads {
                    let ready = self.ready(w);
                    if ready < w.replicas {
                        why.push(format!(
                            "{}: {ready} of {} pods ready, replicas unassigned",
                            w.node_set, w.replicas
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
        Ok(Some(HealthObs {
            status,
            reason,
            shards_on_excluded,
        }))
    }
}

struct WorkloadRow {
    node_set: String,
    replicas: i32,
    fingerprint: String,
    version: String,
    age: f64,
}

async fn base_exists(conn: &mut PgConnection, uid: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sim_base WHERE cluster_uid = $1)")
        .bind(uid)
        .fetch_one(&mut *conn)
        .await
}

async fn record(conn: &mut PgConnection, t: &Target, r: Record<'_>) -> sqlx::Result<()> {
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
fn call_key(call: &str, t: &Target, node_set: &str, arg: &str) -> String {
    format!("{call}:{}:{node_set}:{arg}:{}", t.uid, t.operation.simple())
}

impl NodeGroups for Sim {
    async fn observe(&self, target: &Target) -> StepResult<BTreeMap<String, NodeGroupObs>> {
        self.check("nodegroup.observe").await?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        self.read_node_groups(&mut conn, target.uid)
            .await
            .map_err(db)
    }

    async fn ensure(&self, target: &Target, node_set: &str, size: i32) -> StepResult<()> {
        let token = target.idempotency_key(&format!("nodegroup-{node_set}"));
        let mut tx = self.begin("nodegroup.ensure", target, &token).await?;
        let outcome = self
            .ensure_tx(&mut tx, target, node_set, size)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        outcome
    }

    async fn delete(&self, target: &Target, node_set: &str) -> StepResult<()> {
        let key = call_key("nodegroup.delete", target, node_set, "");
        let mut tx = self.begin("nodegroup.delete", target, &key).await?;
        self.delete_group_tx(&mut tx, target, node_set, key)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}

impl Workloads for Sim {
    async fn observe(&self, target: &Target) -> StepResult<WorkloadsObs> {
        self.check("workloads.observe").await?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let base_objects = base_exists(&mut conn, target.uid).await.map_err(db)?;
        let rows = self
            .read_workloads(&mut conn, target.uid)
            .await
            .map_err(db)?;
        let workloads = rows
            .iter()
            .map(|w| {
                (
                    w.node_set.clone(),
                    WorkloadObs {
                        replicas: w.replicas,
                        ready_replicas: self.ready(w),
                        version: w.version.clone(),
                        up_to_date: fingerprint(target, &w.node_set).as_ref()
                            == Some(&w.fingerprint),
                        // The simulator rolls a new template at once: nothing is held.
                        updated_replicas: w.replicas,
                        partition: 0,
                    },
                )
            })
            .collect();
        Ok(WorkloadsObs {
            base_objects,
            workloads,
            endpoint: base_objects.then(|| endpoint(target)),
        })
    }

    async fn apply_base(&self, target: &Target) -> StepResult<()> {
        let key = call_key("workloads.apply_base", target, "", "");
        let mut tx = self.begin("workloads.apply_base", target, &key).await?;
        let n = sqlx::query(
            "INSERT INTO sim_base (cluster_uid, tenant, cluster_id, created_at)
             VALUES ($1, $2, $3, clock_timestamp()) ON CONFLICT (cluster_uid) DO NOTHING",
        )
        .bind(target.uid)
        .bind(target.tenant.as_str())
        .bind(target.cluster_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        record(
            &mut tx,
            target,
            Record {
                call: "workloads.apply_base",
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

    async fn apply_node_set(
        &self,
        target: &Target,
        node_set: &str,
        replicas: i32,
    ) -> StepResult<()> {
        let arg = format!("{replicas}@{}", target.generation);
        let key = call_key("workloads.apply_node_set", target, node_set, &arg);
        let mut tx = self.begin("workloads.apply_node_set", target, &key).await?;
        self.apply_node_set_tx(&mut tx, target, node_set, replicas, key)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn roll(&self, _target: &Target, _node_set: &str, _partition: i32) -> StepResult<()> {
        // Never asked: the simulator holds no rollout (partition is always 0).
        Ok(())
    }

    async fn delete_node_set(&self, target: &Target, node_set: &str) -> StepResult<()> {
        let key = call_key("workloads.delete_node_set", target, node_set, "");
        let mut tx = self
            .begin("workloads.delete_node_set", target, &key)
            .await?;
        let n = sqlx::query("DELETE FROM sim_workloads WHERE cluster_uid = $1 AND node_set = $2")
            .bind(target.uid)
            .bind(node_set)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        sqlx::query("DELETE FROM sim_exclusions WHERE cluster_uid = $1 AND node_set = $2")
            .bind(target.uid)
            .bind(node_set)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        record(
            &mut tx,
            target,
            Record {
                call: "workloads.delete_node_set",
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

    async fn delete_base(&self, target: &Target, retention: VolumeRetention) -> StepResult<()> {
        let arg = match retention {
            VolumeRetention::Delete => "delete",
            VolumeRetention::Retain => "retain",
        };
        let key = call_key("workloads.delete_base", target, "", arg);
        let mut tx = self.begin("workloads.delete_base", target, &key).await?;
        self.delete_base_tx(&mut tx, target, retention, key)
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
}

/// The `esaas-test-worker` binary built next to the tests (or `ESAAS_TEST_WORKER_BIN`).
/// Integration tests of this crate may use `env!("CARGO_BIN_EXE_esaas-test-worker")` instead.
pub fn test_worker_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("ESAAS_TEST_WORKER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/esaas-test-worker
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("esaas-test-worker"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p esaas-tests --bins`",
        bin.display()
    );
    bin
}

/// An `esaas-test-worker` child process.
pub struct WorkerProcess {
    /// Its worker id.
    pub id: String,
    child: tokio::process::Child,
}

impl WorkerProcess {
    /// Starts a worker with id `id` that connects to `control_plane`
    /// (`http://host:port`) with the WORKER key `key` and drives the world of
    /// the simulator in `sim_database_url` with `sim`'s delays. `poll` and
    /// `gate_timeout` are the executor's timing. Its logs go to the test's
    /// stderr at `RUST_LOG` (default `warn`).
    pub fn spawn(
        control_plane: &str,
        key: &str,
        id: &str,
        sim_database_url: &str,
        sim: SimConfig,
        poll: Duration,
        gate_timeout: Duration,
    ) -> Self {
        let ms = |d: Duration| d.as_millis().to_string();
        let child = tokio::process::Command::new(test_worker_bin())
            .env("ESAAS_CONTROL_PLANE_URL", control_plane)
            .env("ESAAS_WORKER_KEY", key)
            .env("ESAAS_WORKER_ID", id)
            .env("SIM_DATABASE_URL", sim_database_url)
            .env("SIM_STEP_DELAY_MS", ms(sim.step_delay))
            .env("SIM_NODE_GROUP_DELAY_MS", ms(sim.node_group_delay))
            .env("SIM_PODS_READY_DELAY_MS", ms(sim.pods_ready_delay))
            .env("SIM_DRAIN_DELAY_MS", ms(sim.drain_delay))
            .env("EXEC_POLL_MS", ms(poll))
            .env("EXEC_GATE_TIMEOUT_MS", ms(gate_timeout))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn esaas-test-worker");
        Self {
            id: id.into(),
            child,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILLs it (a crash: no hand-back) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERMs it (a graceful shutdown: leases handed back) and waits up
    /// to `timeout` for it to exit; its exit status, `None` if it did not exit.
    pub async fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::sigterm(&mut self.child, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use esaas_core::names::{ClusterId, TenantId};
    use esaas_core::spec::{ClusterSpec, NodeRole, NodeSet};

    use super::*;
    use crate::TestDb;

    fn target(count: i32) -> Target {
        Target {
            uid: Uuid::new_v4(),
            tenant: TenantId::parse("t", "acme").expect("tenant"),
            cluster_id: ClusterId::parse("c", "logs").expect("cluster"),
            spec: ClusterSpec {
                version: "8.17.10".into(),
                node_sets: vec![NodeSet {
                    name: "default".into(),
                    roles: vec![NodeRole::Data, NodeRole::Master],
                    count,
                    size_class: "small".into(),
                    storage_gib: 100,
                    storage_iops: 3000,
                    storage_throughput_mibps: 125,
                }],
                zone_count: 1,
                volume_retention: VolumeRetention::Delete,
            },
            generation: 1,
            operation: Uuid::new_v4(),
        }
    }

    async fn sim(db: &TestDb, config: SimConfig) -> Sim {
        Sim::connect(&db.url, config).await.expect("sim")
    }

    #[tokio::test]
    async fn node_group_lifecycle_follows_the_delay() {
        let db = TestDb::new().await;
        let delay = Duration::from_millis(200);
        let s = sim(
            &db,
            SimConfig {
                node_group_delay: delay,
                ..Default::default()
            },
        )
        .await;
        let t = target(3);
        assert!(
            NodeGroups::observe(&s, &t)
                .await
                .expect("observe")
                .is_empty()
        );

        s.ensure(&t, "default", 3).await.expect("ensure");
        let g = NodeGroups::observe(&s, &t).await.expect("observe");
        assert_eq!(g["default"].status, NodeGroupStatus::Creating);
        assert_eq!(g["default"].desired_size, 3);
        assert_eq!(g["default"].instance_type, "sim");
        tokio::time::sleep(delay + Duration::from_millis(50)).await;
        let g = NodeGroups::observe(&s, &t).await.expect("observe");
        assert_eq!(g["default"].status, NodeGroupStatus::Active);

        s.ensure(&t, "default", 5).await.expect("grow");
        let g = NodeGroups::observe(&s, &t).await.expect("observe");
        assert_eq!(g["default"].status, NodeGroupStatus::Updating);
        assert_eq!(g["default"].desired_size, 5);
        tokio::time::sleep(delay + Duration::from_millis(50)).await;
        let g = NodeGroups::observe(&s, &t).await.expect("observe");
        assert_eq!(g["default"].status, NodeGroupStatus::Active);

        s.delete(&t, "default").await.expect("delete");
        let g = NodeGroups::observe(&s, &t).await.expect("observe");
        assert_eq!(g["default"].status, NodeGroupStatus::Deleting);
        s.delete(&t, "default").await.expect("delete again");
        tokio::time::sleep(delay + Duration::from_millis(50)).await;
        assert!(
            NodeGroups::observe(&s, &t)
                .await
                .expect("observe")
                .is_empty()
        );

        // Created again by a later operation after it is gone.
        let later = Target {
            operation: Uuid::new_v4(),
            ..t.clone()
        };
        s.ensure(&later, "default", 3).await.expect("recreate");
        let g = NodeGroups::observe(&s, &t).await.expect("observe");
        assert_eq!(g["default"].status, NodeGroupStatus::Creating);
        assert_eq!(s.node_group_creations(t.uid).await, 2);

        let deletes: Vec<bool> = s
            .calls()
            .await
            .into_iter()
            .filter(|c| c.call == "nodegroup.delete")
            .map(|c| c.effective)
            .collect();
        assert_eq!(deletes, vec![true, false]);
    }

    #[tokio::test]
    async fn a_repeated_ensure_is_not_effective() {
        let db = TestDb::new().await;
        let s = sim(&db, SimConfig::default()).await;
        let t = target(3);
        for _ in 0..3 {
            s.ensure(&t, "default", 3).await.expect("ensure");
        }
        assert_eq!(s.node_group_creations(t.uid).await, 1);
        let calls = s.calls().await;
        assert_eq!(calls.len(), 3);
        let key = t.idempotency_key("nodegroup-default");
        assert!(calls.iter().all(|c| c.key == key && c.action == "create"));
        assert_eq!(
            calls.iter().map(|c| c.effective).collect::<Vec<_>>(),
            vec![true, false, false]
        );

        // Two processes racing on the same step create one node group.
        let s2 = sim(&db, SimConfig::default()).await;
        let t2 = target(2);
        let (a, b) = tokio::join!(s.ensure(&t2, "default", 2), s2.ensure(&t2, "default", 2));
        a.expect("a");
        b.expect("b");
        assert_eq!(s.node_group_creations(t2.uid).await, 1);
    }

    #[tokio::test]
    async fn faults_are_used_up_and_cleared() {
        let db = TestDb::new().await;
        let s = sim(&db, SimConfig::default()).await;
        let t = target(1);
        s.inject("workloads.apply_base", 2, true, "K8S_UNAVAILABLE", "503")
            .await;
        for _ in 0..2 {
            let e = s.apply_base(&t).await.expect_err("fault");
            assert_eq!(e, StepError::retryable("K8S_UNAVAILABLE", "503"));
        }
        s.apply_base(&t).await.expect("third call passes");
        assert!(s.world(t.uid).await.base_objects);
        let calls = s.calls().await;
        assert_eq!(calls.len(), 3);
        assert_eq!(
            calls.iter().map(|c| c.error.is_some()).collect::<Vec<_>>(),
            vec![true, true, false]
        );

        s.inject("es.health", -1, false, "ES_AUTH", "401").await;
        for _ in 0..5 {
            let e = s.health(&t).await.expect_err("forever");
            assert!(!e.retryable);
            assert_eq!(e.reason, "ES_AUTH");
        }
        s.clear_faults().await;
        assert!(s.health(&t).await.expect("health").is_some());
    }

    #[tokio::test]
    async fn health_follows_pods_and_can_be_forced() {
        let db = TestDb::new().await;
        let ready = Duration::from_millis(200);
        let s = sim(
            &db,
            SimConfig {
                pods_ready_delay: ready,
                ..Default::default()
            },
        )
        .await;
        let t = target(3);
        assert_eq!(s.health(&t).await.expect("health"), None);
        s.apply_base(&t).await.expect("base");
        let w = Workloads::observe(&s, &t).await.expect("observe");
        assert_eq!(
            w.endpoint.as_deref(),
            Some("https://logs.acme.es.example:9200")
        );

        s.apply_node_set(&t, "default", 3).await.expect("apply");
        let w = Workloads::observe(&s, &t).await.expect("observe");
        let d = &w.workloads["default"];
        assert_eq!((d.replicas, d.ready_replicas), (3, 0));
        assert!(d.up_to_date);
        assert_eq!(d.version, "8.17.10");
        let h = s.health(&t).await.expect("health").expect("answers");
        assert_eq!(h.status, Health::Yellow);

        tokio::time::sleep(ready + Duration::from_millis(50)).await;
        let w = Workloads::observe(&s, &t).await.expect("observe");
        assert_eq!(w.workloads["default"].ready_replicas, 3);
        let h = s.health(&t).await.expect("health").expect("answers");
        assert_eq!(h.status, Health::Green);

        // An apply that changes nothing leaves the pods ready.
        s.apply_node_set(&t, "default", 3)
            .await
            .expect("apply again");
        let w = Workloads::observe(&s, &t).await.expect("observe");
        assert_eq!(w.workloads["default"].ready_replicas, 3);

        // A new version makes the StatefulSet out of date until applied.
        let mut upgrade = t.clone();
        upgrade.spec.version = "8.18.0".into();
        upgrade.generation = 2;
        let w = Workloads::observe(&s, &upgrade).await.expect("observe");
        assert!(!w.workloads["default"].up_to_date);

        s.force_health(
            t.uid,
            Some((Health::Yellow, "index logs-7 has 2 unassigned replicas")),
        )
        .await;
        let h = s.health(&t).await.expect("health").expect("answers");
        assert_eq!(h.status, Health::Yellow);
        assert_eq!(h.reason, "index logs-7 has 2 unassigned replicas");
        s.force_no_answer(t.uid).await;
        assert_eq!(s.health(&t).await.expect("health"), None);
        s.force_health(t.uid, None).await;
        let h = s.health(&t).await.expect("health").expect("answers");
        assert_eq!(h.status, Health::Green);
    }

    #[tokio::test]
    async fn excluded_pods_drain_over_time() {
        let db = TestDb::new().await;
        let drain = Duration::from_millis(400);
        let s = sim(
            &db,
            SimConfig {
                drain_delay: drain,
                ..Default::default()
            },
        )
        .await;
        let t = target(3);
        s.apply_base(&t).await.expect("base");
        s.apply_node_set(&t, "default", 3).await.expect("apply");
        s.exclude(&t, "default", 2).await.expect("exclude");
        s.exclude(&t, "default", 2).await.expect("exclude again");
        let key = node_key("default", 2);
        let h = s.health(&t).await.expect("health").expect("answers");
        let first = h.shards_on_excluded[&key];
        assert!(first > 0 && first <= SHARDS_PER_POD, "{first}");
        assert_eq!(h.status, Health::Yellow);

        tokio::time::sleep(drain / 2).await;
        let mid = s.health(&t).await.expect("health").expect("answers");
        assert!(mid.shards_on_excluded[&key] < first, "{mid:?}");

        tokio::time::sleep(drain / 2 + Duration::from_millis(50)).await;
        let h = s.health(&t).await.expect("health").expect("answers");
        assert_eq!(h.shards_on_excluded[&key], 0);
        assert_eq!(h.status, Health::Green);

        // The pod leaves; it is no longer reported, its volume stays.
        s.apply_node_set(&t, "default", 2).await.expect("shrink");
        let h = s.health(&t).await.expect("health").expect("answers");
        assert!(h.shards_on_excluded.is_empty());
        assert_eq!(s.world(t.uid).await.volumes, 3);

        let excludes: Vec<bool> = s
            .calls()
            .await
            .into_iter()
            .filter(|c| c.call == "es.exclude")
            .map(|c| c.effective)
            .collect();
        assert_eq!(excludes, vec![true, false]);

        // Deleting with Delete retention removes everything of the cluster.
        s.delete_node_set(&t, "default").await.expect("delete set");
        s.delete_base(&t, VolumeRetention::Delete)
            .await
            .expect("delete base");
        let w = s.world(t.uid).await;
        assert_eq!(w, SimWorld::default());
    }

    #[tokio::test]
    async fn a_zero_drain_delay_drains_at_once() {
        let db = TestDb::new().await;
        let s = sim(&db, SimConfig::default()).await;
        let t = target(2);
        s.apply_base(&t).await.expect("base");
        s.apply_node_set(&t, "default", 2).await.expect("apply");
        s.exclude(&t, "default", 1).await.expect("exclude");
        let h = s.health(&t).await.expect("health").expect("answers");
        assert_eq!(h.shards_on_excluded[&node_key("default", 1)], 0);
        assert_eq!(h.status, Health::Green);
    }
}
