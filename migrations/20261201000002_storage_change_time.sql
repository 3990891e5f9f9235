-- When the cluster's volumes (size, IOPS or throughput) were last asked to change. EBS
-- takes one modification per volume per six hours: the next storage change is refused
-- until then (esaas-core's `storage_cooldown`).
ALTER TABLE clusters ADD COLUMN storage_change_time timestamptz;
