-- Leases belong to a worker's session (one stream), not to its self-declared id:
-- two processes under one id, or a reconnect that overlaps its old stream, never
-- touch each other's leases.
ALTER TABLE operations ADD COLUMN lease_session uuid;
CREATE INDEX operations_lease_session ON operations (lease_session) WHERE state = 'RUNNING';

-- One row per open session. Rows are rewritten whenever a stream opens, so the old
-- ones (keyed by worker id) are dropped: their workers register again on reconnect.
DELETE FROM workers;
ALTER TABLE workers DROP CONSTRAINT workers_pkey;
ALTER TABLE workers ADD COLUMN session uuid PRIMARY KEY;
CREATE INDEX workers_id ON workers (id);
