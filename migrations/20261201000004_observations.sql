-- The observation schedule: when each cluster is next observed by a worker, and whether
-- a platform admin paused its automatic repair. One narrow row per cluster, so the
-- schedule's writes (one per observation) never touch the wide clusters row, its
-- version or its etag.
CREATE TABLE cluster_observations (
    cluster_uid   uuid PRIMARY KEY REFERENCES clusters (uid),
    due_time      timestamptz NOT NULL,
    repair_paused boolean NOT NULL DEFAULT false
);

CREATE INDEX cluster_observations_due ON cluster_observations (due_time);

INSERT INTO cluster_observations (cluster_uid, due_time)
SELECT uid, now() FROM clusters WHERE state <> 'DELETED';
