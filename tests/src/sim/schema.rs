//! The `sim_*` tables, created on first use by whichever process connects first.

use sqlx::PgPool;

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
    partition int NOT NULL,
    changed_at timestamptz NOT NULL,
    claim text NOT NULL DEFAULT '',
    PRIMARY KEY (cluster_uid, node_set)
);
CREATE TABLE IF NOT EXISTS sim_pods (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    ordinal int NOT NULL,
    fingerprint text NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    PRIMARY KEY (cluster_uid, node_set, ordinal)
);
CREATE TABLE IF NOT EXISTS sim_volumes (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    ordinal int NOT NULL,
    gib int NOT NULL DEFAULT 0,
    class text NOT NULL DEFAULT '',
    PRIMARY KEY (cluster_uid, node_set, ordinal)
);
CREATE TABLE IF NOT EXISTS sim_exclusions (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    ordinal int NOT NULL,
    excluded_at timestamptz NOT NULL,
    PRIMARY KEY (cluster_uid, node_set, ordinal)
);
CREATE TABLE IF NOT EXISTS sim_shutdowns (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    ordinal int NOT NULL,
    PRIMARY KEY (cluster_uid, node_set, ordinal)
);
CREATE TABLE IF NOT EXISTS sim_voting_exclusions (
    cluster_uid uuid NOT NULL,
    node_set text NOT NULL,
    ordinal int NOT NULL,
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

/// Advisory lock key of the schema creation.
const SCHEMA_LOCK: i64 = 0x5349_4d5f_5343_4845;

/// Creates the `sim_*` tables if they are missing (safe from several processes at once).
pub(super) async fn create(pool: &PgPool) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    tx.commit().await
}
