-- When each cluster's node certificate expires, as last seen: shown in its status, and
-- what the CertificatesValid condition and the rotation schedule follow.
ALTER TABLE clusters ADD COLUMN certificate_expire_time timestamptz;
