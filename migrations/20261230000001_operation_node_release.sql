-- The node image (EKS release version) a ROTATE_NODES operation moves the cluster's node
-- groups to, chosen when the platform queued it; NULL for other kinds. A nullable column
-- without a default: adding it rewrites nothing, and the old version, which does not name
-- it, keeps working.
ALTER TABLE operations ADD COLUMN IF NOT EXISTS node_release_version text;
