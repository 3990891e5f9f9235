//! Where the platform keeps snapshots, and how Elasticsearch pods reach it:
//! the `[snapshots]` section of the configuration, shared by the renderer
//! (the pods' ServiceAccount carries the IRSA role; `elasticsearch.yml`
//! the S3 endpoint, when one is configured) and the Elasticsearch adapter
//! (the bucket each cluster's repository is registered in).

use serde::{Deserialize, Serialize};

/// The `[snapshots]` section. An empty `bucket` turns snapshots off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotStorage {
    /// The platform's snapshot bucket; empty: no snapshots.
    pub bucket: String,
    /// The IAM role the Elasticsearch pods assume through IRSA to reach the
    /// bucket (the `eks.amazonaws.com/role-arn` annotation of their
    /// ServiceAccount); empty: none (the local setup, whose S3 takes any
    /// caller). Never long-lived keys.
    pub role_arn: String,
    /// An S3 endpoint other than AWS's (`s3.client.default.endpoint` of
    /// `elasticsearch.yml`, the local setup's moto); empty: AWS's own.
    pub s3_endpoint: String,
}

impl SnapshotStorage {
    /// Whether snapshots are on.
    pub fn enabled(&self) -> bool {
        !self.bucket.trim().is_empty()
    }

    /// Checks the section; the error names the key.
    pub fn problem(&self) -> Option<String> {
        let bucket = self.bucket.trim();
        // S3's bucket naming rules ("Bucket naming rules", general purpose buckets).
        if !bucket.is_empty() {
            let ok_chars = bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
            let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            if !(3..=63).contains(&bucket.len())
                || !ok_chars
                || !ends_ok(bucket.chars().next())
                || !ends_ok(bucket.chars().last())
                || bucket.contains("..")
            {
                return Some(format!(
                    "snapshots.bucket: {bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit)"
                ));
            }
        }
        let role = self.role_arn.trim();
        if !role.is_empty() {
            let parts: Vec<&str> = role.splitn(6, ':').collect();
            let is_role = parts.len() == 6
                && parts[0] == "arn"
                && parts[2] == "iam"
                && parts[5].starts_with("role/")
                && parts[5].len() > "role/".len();
            if !is_role {
                return Some(format!(
                    "snapshots.role_arn: {role:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                ));
            }
            if !self.enabled() {
                return Some("snapshots.role_arn: set without snapshots.bucket".into());
            }
        }
        let endpoint = self.s3_endpoint.trim();
        if !endpoint.is_empty() {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Some(format!(
                    "snapshots.s3_endpoint: {endpoint:?} is not an http:// or https:// URL"
                ));
            }
            if !self.enabled() {
                return Some("snapshots.s3_endpoint: set without snapshots.bucket".into());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(bucket: &str, role_arn: &str, s3_endpoint: &str) -> SnapshotStorage {
        SnapshotStorage {
            bucket: bucket.into(),
            role_arn: role_arn.into(),
            s3_endpoint: s3_endpoint.into(),
        }
    }

    #[test]
    fn the_section_is_checked_naming_the_key() {
        let role = "arn:aws:iam::123456789012:role/esaas-snapshots";
        // (case, section, the key the error names, or None when accepted)
        let cases = [
            ("off", storage("", "", ""), None),
            ("bucket only", storage("esaas-snapshots", "", ""), None),
            (
                "bucket and role",
                storage("esaas-snapshots", role, ""),
                None,
            ),
            (
                "local",
                storage("esaas-dev", "", "http://127.0.0.1:5000"),
                None,
            ),
            ("short", storage("ab", "", ""), Some("snapshots.bucket")),
            ("upper", storage("Snaps", "", ""), Some("snapshots.bucket")),
            (
                "hyphen end",
                storage("snaps-", "", ""),
                Some("snapshots.bucket"),
            ),
            ("dots", storage("a..b", "", ""), Some("snapshots.bucket")),
            (
                "not a role",
                storage("snaps", "arn:aws:iam::1:user/x", ""),
                Some("snapshots.role_arn"),
            ),
            (
                "role alone",
                storage("", role, ""),
                Some("snapshots.role_arn"),
            ),
            (
                "endpoint scheme",
                storage("snaps", "", "127.0.0.1:5000"),
                Some("snapshots.s3_endpoint"),
            ),
            (
                "endpoint alone",
                storage("", "", "http://127.0.0.1:5000"),
                Some("snapshots.s3_endpoint"),
            ),
        ];
        for (case, s, key) in cases {
            let problem = s.problem();
            match key {
                None => assert_eq!(problem, None, "{case}"),
                Some(key) => assert!(
                    problem.as_deref().is_some_and(|p| p.starts_with(key)),
                    "{case}: {problem:?}"
                ),
            }
        }
    }
}
