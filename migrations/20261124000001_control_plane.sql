-- The control plane's source of truth. Forward-only; every later migration
-- must be safe to run while the previous version still serves.

CREATE TABLE tenants (
    id               text PRIMARY KEY,
    display_name     text NOT NULL,
    max_clusters     integer NOT NULL CHECK (max_clusters >= 0),
    max_nodes        integer NOT NULL CHECK (max_nodes >= 0),
    max_storage_gib  bigint NOT NULL CHECK (max_storage_gib >= 0),
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 of the secret: keys are 256-bit random, so
-- a fast hash is enough and lookups stay one index probe.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     text REFERENCES tenants (id),
    role          text NOT NULL CHECK (role IN ('PLATFORM_ADMIN', 'TENANT_ADMIN', 'TENANT_VIEWER', 'WORKER')),
    display_name  text NOT NULL,
    secret_sha256 bytea NOT NULL UNIQUE,
    create_time   timestamptz NOT NULL DEFAULT now(),
    revoke_time   timestamptz,
    CHECK ((role IN ('TENANT_ADMIN', 'TENANT_VIEWER')) = (tenant_id IS NOT NULL))
);

CREATE TABLE clusters (
    uid                 uuid PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants (id),
    cluster_id          text NOT NULL,
    spec                jsonb NOT NULL,
    -- derived from spec on every write, so quota usage is one aggregate
    node_count          bigint NOT NULL,
    storage_gib         bigint NOT NULL,
    generation          bigint NOT NULL,
    observed_generation bigint NOT NULL DEFAULT 0,
    state               text NOT NULL,
    health              text NOT NULL,
    endpoint            text,
    conditions          jsonb NOT NULL DEFAULT '[]',
    message             text NOT NULL DEFAULT '',
    current_operation   uuid,
    -- increases on every change of the row; the etag derives from it
    version             bigint NOT NULL DEFAULT 1,
    -- revision of the newest event; events take revision + 1 under the row lock
    revision            bigint NOT NULL DEFAULT 0,
    create_time         timestamptz NOT NULL DEFAULT now(),
    update_time         timestamptz NOT NULL DEFAULT now(),
    delete_time         timestamptz
);
-- A name is unique among live clusters; DELETED tombstones keep theirs.
CREATE UNIQUE INDEX clusters_live_name ON clusters (tenant_id, cluster_id) WHERE state <> 'DELETED';
CREATE INDEX clusters_by_tenant ON clusters (tenant_id, cluster_id);

CREATE TABLE operations (
    id                uuid PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES tenants (id),
    cluster_uid       uuid NOT NULL REFERENCES clusters (uid),
    kind              text NOT NULL,
    state             text NOT NULL,
    initiator_kind    text NOT NULL,
    initiator         text NOT NULL,
    target_generation bigint NOT NULL,
    stages            jsonb NOT NULL DEFAULT '[]',
    attempt_log       jsonb NOT NULL DEFAULT '[]',
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_token       bigint NOT NULL DEFAULT 0,
    lease_expire_time timestamptz,
    checkpoint        jsonb,
    blocking_check    text,
    error             jsonb,
    cancel_requested  boolean NOT NULL DEFAULT false,
    traceparent       text,
    version           bigint NOT NULL DEFAULT 1,
    create_time       timestamptz NOT NULL DEFAULT now(),
    start_time        timestamptz,
    end_time          timestamptz,
    update_time       timestamptz NOT NULL DEFAULT now()
);
-- At most one queued and one running (or stalled) operation per cluster:
-- later changes fold into the queued one.
CREATE UNIQUE INDEX operations_one_queued ON operations (cluster_uid) WHERE state = 'QUEUED';
CREATE UNIQUE INDEX operations_one_running ON operations (cluster_uid) WHERE state IN ('RUNNING', 'STALLED');
CREATE INDEX operations_queue ON operations (next_attempt_time) WHERE state = 'QUEUED';
CREATE INDEX operations_by_tenant ON operations (tenant_id, id DESC);
CREATE INDEX operations_by_cluster ON operations (cluster_uid, id DESC);

CREATE TABLE cluster_events (
    cluster_uid  uuid NOT NULL REFERENCES clusters (uid),
    revision     bigint NOT NULL,
    kind         text NOT NULL,
    message      text NOT NULL,
    operation_id uuid,
    snapshot     jsonb NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_uid, revision)
);

-- AIP-155: the first answer to a request id, returned again on a retry.
CREATE TABLE idempotency (
    scope        text NOT NULL,
    method       text NOT NULL,
    request_id   uuid NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, method, request_id)
);

CREATE TABLE workers (
    id                  text PRIMARY KEY,
    region              text NOT NULL,
    capacity            integer NOT NULL,
    version             text NOT NULL,
    connect_time        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_time timestamptz NOT NULL DEFAULT now()
);
