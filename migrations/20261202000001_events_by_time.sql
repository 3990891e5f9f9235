-- no-transaction
-- The retention sweep finds expired events oldest first. Built concurrently (its own
-- migration, one statement, outside a transaction) so writers of cluster_events never wait.
CREATE INDEX CONCURRENTLY IF NOT EXISTS cluster_events_by_time ON cluster_events (create_time);
