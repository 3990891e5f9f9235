-- The volume claims a delete with VOLUME_RETENTION_RETAIN kept ({namespace}/{claim}),
-- listed on the cluster's tombstone.
ALTER TABLE clusters ADD COLUMN retained_volumes jsonb NOT NULL DEFAULT '[]';
