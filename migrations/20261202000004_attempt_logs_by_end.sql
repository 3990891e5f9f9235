-- no-transaction
-- The retention sweep finds ended operations whose attempt log is longer than the one
-- attempt it keeps; a trimmed operation leaves this index.
CREATE INDEX CONCURRENTLY IF NOT EXISTS operations_long_attempt_logs ON operations (end_time)
    WHERE end_time IS NOT NULL AND jsonb_array_length(attempt_log) > 1;
