-- The earliest start a schedule gave an operation (a maintenance window, or a time its
-- owner chose); NULL: at once. A nullable column without a default: adding it rewrites
-- nothing, and the old version, which does not name it, keeps working.
ALTER TABLE operations ADD COLUMN IF NOT EXISTS not_before timestamptz;
