-- no-transaction
-- The retention sweep finds expired idempotency records oldest first.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idempotency_by_time ON idempotency (create_time);
