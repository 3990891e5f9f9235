-- Snapshots (issue 16): each cluster's snapshot status, what a snapshot, restore or delete
-- operation works on, and the record of every snapshot the platform took. The record has no
-- foreign key to clusters: a deleted cluster's snapshots outlive its tombstone, and a
-- restore finds them by the name the cluster had. Columns with defaults and a new table:
-- the previous version, which names none of them, keeps working.
ALTER TABLE clusters ADD COLUMN IF NOT EXISTS snapshot_status jsonb NOT NULL DEFAULT '{}';
ALTER TABLE operations ADD COLUMN IF NOT EXISTS params jsonb NOT NULL DEFAULT '{}';

CREATE TABLE IF NOT EXISTS cluster_snapshots (
    cluster_uid  uuid NOT NULL,
    name         text NOT NULL,
    tenant_id    text NOT NULL,
    cluster_id   text NOT NULL,
    kind         text NOT NULL,
    operation_id uuid NOT NULL,
    -- the snapshot as Elasticsearch reported it (state, reason, indices, times)
    snapshot     jsonb NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_uid, name)
);
CREATE INDEX IF NOT EXISTS cluster_snapshots_by_name ON cluster_snapshots (tenant_id, cluster_id, name);
