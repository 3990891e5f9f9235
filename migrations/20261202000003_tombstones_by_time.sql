-- no-transaction
-- The retention sweep finds expired tombstones (DELETED clusters) by when they became DELETED.
CREATE INDEX CONCURRENTLY IF NOT EXISTS clusters_tombstones ON clusters (update_time) WHERE state = 'DELETED';
