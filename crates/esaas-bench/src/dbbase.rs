//! The database baseline: the statements `esaas serve` runs for GetCluster,
//! ListClusters and CreateCluster, sent straight through an sqlx pool of the
//! server's size, with nothing else around them. What it costs is what
//! PostgreSQL and sqlx cost; no server can answer faster than this.
//!
//! The SQL text is copied from `esaas-store` (the key lookup of
//! `keys.rs`, `get_cluster` and `list_clusters` of `clusters.rs`, and the
//! statements of `Store::run` + `Store::create_cluster` with
//! `insert_operation` and `commit_change`), so PostgreSQL plans and caches
//! exactly the same statements. The values written are those of a real
//! cluster the real server created, read back from its database.

use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool, Row};
use uuid::Uuid;

use crate::platform::SERVER_POOL;

/// `esaas-store`'s `CLUSTER_COLUMNS`.
const CLUSTER_COLUMNS: &str = "uid, tenant_id, cluster_id, spec, generation, observed_generation, state, health, \
     endpoint, conditions, message, current_operation, version, revision, create_time, update_time, delete_time";

/// `esaas-store`'s key lookup (`Store::authenticate`).
const AUTHENTICATE: &str = "SELECT id, tenant_id, role, display_name, create_time, revoke_time FROM api_keys \
     WHERE secret_sha256 = $1 AND revoke_time IS NULL";

const LOCK_TENANT: &str = "SELECT id, display_name, max_clusters, max_nodes, max_storage_gib, create_time, update_time \
     FROM tenants WHERE id = $1 FOR UPDATE";

const USAGE: &str = "SELECT count(*) AS clusters, coalesce(sum(node_count), 0)::bigint AS nodes, \
         coalesce(sum(storage_gib), 0)::bigint AS storage FROM clusters WHERE tenant_id = $1 AND state <> 'DELETED'";

const INSERT_CLUSTER: &str = "INSERT INTO clusters (uid, tenant_id, cluster_id, spec, node_count, storage_gib, generation, state, health, \
             version, revision, create_time, update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $10)";

const INSERT_OPERATION: &str = "INSERT INTO operations (id, tenant_id, cluster_uid, kind, state, initiator_kind, initiator, target_generation, \
         stages, attempt_log, max_attempts, next_attempt_time, version, create_time, update_time, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15)";

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

const UPDATE_CLUSTER: &str = "UPDATE clusters SET spec = $2, node_count = $3, storage_gib = $4, generation = $5, observed_generation = $6, \
         state = $7, health = $8, endpoint = $9, conditions = $10, message = $11, current_operation = $12, \
         version = $13, revision = $14, update_time = $15, delete_time = $16 WHERE uid = $1";

const INSERT_EVENT: &str = "INSERT INTO cluster_events (cluster_uid, revision, kind, message, operation_id, snapshot, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// What a created cluster, its operation and its first event hold, read
/// from the server's database.
#[derive(Debug, Clone)]
struct Template {
    spec: serde_json::Value,
    node_count: i64,
    storage_gib: i64,
    state: String,
    health: String,
    conditions: serde_json::Value,
    message: String,
    op_kind: String,
    op_state: String,
    initiator_kind: String,
    initiator: String,
    stages: serde_json::Value,
    attempt_log: serde_json::Value,
    max_attempts: i32,
    event_kind: String,
    event_message: String,
    snapshot: serde_json::Value,
}

/// The statements of the three calls, on a database of their own.
#[derive(Debug, Clone)]
pub struct DbBaseline {
    pool: PgPool,
    template: std::sync::Arc<Template>,
}

/// A tenant of the baseline with its key's hash.
#[derive(Debug, Clone)]
pub struct DbTenant {
    /// Tenant id.
    pub id: String,
    /// SHA-256 of its key, what the key lookup binds.
    pub key_hash: Vec<u8>,
}

impl DbBaseline {
    /// Reads cluster `tenant/cluster_id` (created by the real server, with
    /// its create operation and first event) from `server_db`, and connects
    /// a pool of the server's size to `baseline_db`.
    pub async fn prepare(
        server_db: &str,
        tenant: &str,
        cluster_id: &str,
        baseline_db: &str,
    ) -> anyhow::Result<Self> {
        let server = PgPool::connect(server_db)
            .await
            .context("connecting to the server's database")?;
        let c = sqlx::query(
            "SELECT uid, spec, node_count, storage_gib, state, health, conditions, message FROM clusters \
             WHERE tenant_id = $1 AND cluster_id = $2",
        )
        .bind(tenant)
        .bind(cluster_id)
        .fetch_one(&server)
        .await
        .context("reading the template cluster")?;
        let uid: Uuid = c.try_get("uid")?;
        let o = sqlx::query(
            "SELECT kind, state, initiator_kind, initiator, stages, attempt_log, max_attempts FROM operations \
             WHERE cluster_uid = $1 ORDER BY id LIMIT 1",
        )
        .bind(uid)
        .fetch_one(&server)
        .await
        .context("reading the template operation")?;
        let e = sqlx::query(
            "SELECT kind, message, snapshot FROM cluster_events WHERE cluster_uid = $1 AND revision = 1",
        )
        .bind(uid)
        .fetch_one(&server)
        .await
        .context("reading the template event")?;
        let template = Template {
            spec: c.try_get("spec")?,
            node_count: c.try_get("node_count")?,
            storage_gib: c.try_get("storage_gib")?,
            state: c.try_get("state")?,
            health: c.try_get("health")?,
            conditions: c.try_get("conditions")?,
            message: c.try_get("message")?,
            op_kind: o.try_get("kind")?,
            op_state: o.try_get("state")?,
            initiator_kind: o.try_get("initiator_kind")?,
            initiator: o.try_get("initiator")?,
            stages: o.try_get("stages")?,
            attempt_log: o.try_get("attempt_log")?,
            max_attempts: o.try_get("max_attempts")?,
            event_kind: e.try_get("kind")?,
            event_message: e.try_get("message")?,
            snapshot: e.try_get("snapshot")?,
        };
        server.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(SERVER_POOL)
            .acquire_timeout(Duration::from_secs(5))
            .connect(baseline_db)
            .await
            .context("connecting to the baseline database")?;
        Ok(Self {
            pool,
            template: std::sync::Arc::new(template),
        })
    }

    /// Creates tenant `id` with an unlimited quota and a TENANT_ADMIN key.
    pub async fn tenant(&self, id: &str) -> anyhow::Result<DbTenant> {
        let key_hash = Sha256::digest(format!("esk_db_baseline_{id}").as_bytes()).to_vec();
        let q = crate::platform::unlimited_quota();
        sqlx::query(
            "INSERT INTO tenants (id, display_name, max_clusters, max_nodes, max_storage_gib) VALUES ($1, $1, $2, $3, $4)",
        )
        .bind(id)
        .bind(q.max_clusters)
        .bind(q.max_nodes)
        .bind(q.max_storage_gib)
        .execute(&self.pool)
        .await
        .with_context(|| format!("creating baseline tenant {id}"))?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, role, display_name, secret_sha256) VALUES ($1, $2, 'TENANT_ADMIN', 'bench', $3)",
        )
        .bind(Uuid::new_v4())
        .bind(id)
        .bind(&key_hash)
        .execute(&self.pool)
        .await
        .with_context(|| format!("creating a baseline key for {id}"))?;
        Ok(DbTenant {
            id: id.into(),
            key_hash,
        })
    }

    async fn authenticate(&self, t: &DbTenant) -> anyhow::Result<()> {
        sqlx::query(AUTHENTICATE)
            .bind(&t.key_hash)
            .fetch_optional(&self.pool)
            .await?
            .context("the baseline key is unknown")?;
        Ok(())
    }

    /// GetCluster: the key lookup, then the cluster.
    pub async fn get(&self, t: &DbTenant, cluster_id: &str) -> anyhow::Result<()> {
        self.authenticate(t).await?;
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE tenant_id = $1 AND cluster_id = $2 \
             ORDER BY (state = 'DELETED'), create_time DESC LIMIT 1"
        )))
        .bind(&t.id)
        .bind(cluster_id)
        .fetch_optional(&self.pool)
        .await?
        .context("the baseline cluster is missing")?;
        Ok(())
    }

    /// ListClusters, first page of `page` (the server asks for one more).
    pub async fn list(&self, t: &DbTenant, page: i64) -> anyhow::Result<()> {
        self.authenticate(t).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters \
             WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR state = $2) \
             AND ($3 OR state <> 'DELETED') \
             AND ($4::text IS NULL OR (tenant_id, cluster_id, uid) > ($4, $5, $6)) \
             ORDER BY tenant_id, cluster_id, uid LIMIT $7"
        )))
        .bind(Some(t.id.as_str()))
        .bind(None::<&str>)
        .bind(false)
        .bind(None::<&str>)
        .bind(None::<&str>)
        .bind(None::<Uuid>)
        .bind(page + 1)
        .fetch_all(&self.pool)
        .await?;
        anyhow::ensure!(
            rows.len() as i64 >= page,
            "the baseline page is short: {}",
            rows.len()
        );
        Ok(())
    }

    /// CreateCluster: the key lookup, then one transaction with the tenant
    /// lock, the usage, the cluster, its operation and its first event.
    pub async fn create(&self, t: &DbTenant, cluster_id: &str) -> anyhow::Result<()> {
        self.authenticate(t).await?;
        let p = &*self.template;
        let now = chrono::Utc::now();
        let uid = Uuid::now_v7();
        let op = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        sqlx::query(LOCK_TENANT)
            .bind(&t.id)
            .fetch_optional(&mut *tx)
            .await?
            .context("the baseline tenant is missing")?;
        sqlx::query(USAGE).bind(&t.id).fetch_one(&mut *tx).await?;
        sqlx::query(INSERT_CLUSTER)
            .bind(uid)
            .bind(&t.id)
            .bind(cluster_id)
            .bind(&p.spec)
            .bind(p.node_count)
            .bind(p.storage_gib)
            .bind(1i64)
            .bind(&p.state)
            .bind(&p.health)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_OPERATION)
            .bind(op)
            .bind(&t.id)
            .bind(uid)
            .bind(&p.op_kind)
            .bind(&p.op_state)
            .bind(&p.initiator_kind)
            .bind(&p.initiator)
            .bind(1i64)
            .bind(&p.stages)
            .bind(&p.attempt_log)
            .bind(p.max_attempts)
            .bind(now)
            .bind(1i64)
            .bind(now)
            .bind(None::<String>)
            .execute(&mut *tx)
            .await?;
        sqlx::query(NOTIFY)
            .bind("esaas_operations")
            .bind(op.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(UPDATE_CLUSTER)
            .bind(uid)
            .bind(&p.spec)
            .bind(p.node_count)
            .bind(p.storage_gib)
            .bind(1i64)
            .bind(0i64)
            .bind(&p.state)
            .bind(&p.health)
            .bind(None::<String>)
            .bind(&p.conditions)
            .bind(&p.message)
            .bind(Some(op))
            .bind(1i64)
            .bind(1i64)
            .bind(now)
            .bind(None::<chrono::DateTime<chrono::Utc>>)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_EVENT)
            .bind(uid)
            .bind(1i64)
            .bind(&p.event_kind)
            .bind(&p.event_message)
            .bind(Some(op))
            .bind(&p.snapshot)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(NOTIFY)
            .bind("esaas_cluster_events")
            .bind(format!("{uid}:1"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
