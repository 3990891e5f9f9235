//! Resource names and the ids inside them, each a newtype with its rules.
//!
//! Ids are RFC 1123 labels that also start with a letter (so Service names
//! derived from them are valid DNS-1035 labels), with length limits chosen so
//! that every derived name fits: the StatefulSet `{cluster}-{node set}-{uid hash}`
//! (≤ 48 of the 52 that leave room for the pod's revision label), the
//! namespace `esaas-{tenant}`, and the EKS node group (readable start, then
//! a hash, at most 63).
//!
//! Ids may contain `-`, so joining two of them is ambiguous (cluster `a`, node
//! set `b-c` and cluster `a-b`, node set `c` both read `a-b-c`): a name that
//! joins ids from more than one level ends in a short hash of the cluster's
//! uid ([`uid_hash`]), which tells two clusters (or two incarnations of one
//! name) apart.

use std::fmt;

use uuid::Uuid;

use crate::error::{Error, Result, shown};

/// Longest tenant id.
pub const TENANT_ID_MAX: usize = 20;
/// Longest cluster id.
pub const CLUSTER_ID_MAX: usize = 24;
/// Longest node set name.
pub const NODE_SET_NAME_MAX: usize = 16;

/// Hex digits of [`uid_hash`] in a StatefulSet's name.
pub const STATEFUL_SET_HASH_LEN: usize = 6;

// The StatefulSet `{cluster}-{node set}-{hash}` leaves room for the pod's
// revision label (`{name}-{10 characters}` ≤ 63, so a name ≤ 52).
const _: () = assert!(CLUSTER_ID_MAX + NODE_SET_NAME_MAX + STATEFUL_SET_HASH_LEN + 2 <= 52);

/// The first `len` hex digits of the SHA-256 of a cluster uid (at most 64):
/// the suffix that keeps names derived from ids apart across clusters,
/// tenants and incarnations of a cluster name.
pub fn uid_hash(uid: &Uuid, len: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut hex = hex::encode(Sha256::digest(uid.as_bytes()));
    hex.truncate(len);
    hex
}

fn check_label(field: &str, value: &str, max: usize) -> Result<()> {
    let bad_char = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'));
    let why = if value.is_empty() {
        "is required".to_string()
    } else if value.len() > max {
        format!("must be at most {max} characters, got {}", value.len())
    } else if let Some(bad) = bad_char {
        format!("may contain only lowercase letters, digits and '-', found {bad:?}")
    } else if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lowercase letter".to_string()
    } else if !value.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        "must end with a lowercase letter or a digit".to_string()
    } else {
        return Ok(());
    };
    Err(Error::invalid(field, format!("{} {why}", shown(value))))
}

macro_rules! label_newtype {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and checks the id; `field` names it in the error.
            pub fn parse(field: &str, value: &str) -> Result<Self> {
                check_label(field, value, $max)?;
                Ok(Self(value.to_string()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

label_newtype!(
    /// The id of a tenant, the `{tenant}` in `tenants/{tenant}`.
    TenantId,
    TENANT_ID_MAX
);
/// Tenant ids a new tenant may not take: its namespace (`esaas-{id}`) would be
/// the platform's own (`esaas-system`, where `deploy/` runs the API and workers).
pub const RESERVED_TENANT_IDS: &[&str] = &["system"];

impl TenantId {
    /// `value` as the id of a new tenant: valid, and not reserved.
    pub fn parse_new(field: &str, value: &str) -> Result<Self> {
        let id = Self::parse(field, value)?;
        if RESERVED_TENANT_IDS.contains(&id.as_str()) {
            return Err(Error::invalid(
                field,
                format!("{value:?} is reserved: its namespace esaas-{value} is the platform's own"),
            ));
        }
        Ok(id)
    }
}

label_newtype!(
    /// The id of a cluster within its tenant.
    ClusterId,
    CLUSTER_ID_MAX
);
label_newtype!(
    /// The name of a node set within its cluster.
    NodeSetName,
    NODE_SET_NAME_MAX
);

/// `tenants/{tenant}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantName(pub TenantId);

impl TenantName {
    /// Parses `tenants/{tenant}`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let Some(id) = value.strip_prefix("tenants/") else {
            return Err(Error::invalid(
                field,
                format!(
                    "{} is not a tenant name; expected tenants/{{tenant}}",
                    shown(value)
                ),
            ));
        };
        Ok(Self(TenantId::parse(field, id)?))
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenants/{}", self.0)
    }
}

/// The parent of a list call: one tenant, or `tenants/-` for every tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// One tenant.
    One(TenantId),
    /// Every tenant (platform admins only).
    All,
}

impl TenantScope {
    /// Parses `tenants/{tenant}` or `tenants/-`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        if value == "tenants/-" {
            return Ok(TenantScope::All);
        }
        Ok(TenantScope::One(TenantName::parse(field, value)?.0))
    }
}

/// `tenants/{tenant}/clusters/{cluster}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The cluster within it.
    pub cluster: ClusterId,
}

impl ClusterName {
    /// Parses `tenants/{tenant}/clusters/{cluster}`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let parts: Vec<&str> = value.split('/').collect();
        match parts.as_slice() {
            ["tenants", tenant, "clusters", cluster] => Ok(Self {
                tenant: TenantId::parse(field, tenant)?,
                cluster: ClusterId::parse(field, cluster)?,
            }),
            _ => Err(Error::invalid(
                field,
                format!(
                    "{} is not a cluster name; expected tenants/{{tenant}}/clusters/{{cluster}}",
                    shown(value)
                ),
            )),
        }
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenants/{}/clusters/{}", self.tenant, self.cluster)
    }
}

/// `operations/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OperationName(pub Uuid);

impl OperationName {
    /// Parses `operations/{uuid}`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        value
            .strip_prefix("operations/")
            .and_then(|id| Uuid::parse_str(id).ok())
            .map(Self)
            .ok_or_else(|| {
                Error::invalid(
                    field,
                    format!(
                        "{} is not an operation name; expected operations/{{uuid}}",
                        shown(value)
                    ),
                )
            })
    }
}

impl fmt::Display for OperationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operations/{}", self.0)
    }
}

/// `tenants/{tenant}/apiKeys/{id}` or `apiKeys/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyName {
    /// The tenant of a tenant key.
    pub tenant: Option<TenantId>,
    /// The key id.
    pub id: Uuid,
}

impl ApiKeyName {
    /// Parses either form.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                field,
                format!(
                    "{} is not an API key name; expected tenants/{{tenant}}/apiKeys/{{id}} or apiKeys/{{id}}",
                    shown(value)
                ),
            )
        };
        let parts: Vec<&str> = value.split('/').collect();
        let (tenant, id) = match parts.as_slice() {
            ["tenants", tenant, "apiKeys", id] => (Some(TenantId::parse(field, tenant)?), *id),
            ["apiKeys", id] => (None, *id),
            _ => return Err(bad()),
        };
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(Self { tenant, id })
    }
}

impl fmt::Display for ApiKeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "tenants/{t}/apiKeys/{}", self.id),
            None => write!(f, "apiKeys/{}", self.id),
        }
    }
}

/// Parses an AIP-155 request id: empty (no idempotency) or a UUID.
pub fn parse_request_id(field: &str, value: &str) -> Result<Option<Uuid>> {
    if value.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(value)
        .map(Some)
        .map_err(|_| Error::invalid(field, format!("{} is not a UUID", shown(value))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_rules() {
        for ok in [
            "a",
            "logs",
            "a-1",
            "team-search-eu",
            &"a".repeat(CLUSTER_ID_MAX),
        ] {
            assert!(ClusterId::parse("f", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "-a",
            "a-",
            "Abc",
            "a_b",
            "a.b",
            "ü",
            &"a".repeat(CLUSTER_ID_MAX + 1),
        ] {
            let err = ClusterId::parse("cluster_id", bad).unwrap_err();
            match err {
                Error::InvalidArgument(v) => assert_eq!(v[0].field, "cluster_id"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn uid_hashes_are_stable_hex_prefixes() {
        let uid = Uuid::from_u128(7);
        let full = uid_hash(&uid, 64);
        assert_eq!(full.len(), 64);
        assert!(full.starts_with(&uid_hash(&uid, 6)));
        assert_eq!(uid_hash(&uid, 6).len(), 6);
        assert_ne!(uid_hash(&uid, 8), uid_hash(&Uuid::from_u128(8), 8));
    }

    #[test]
    fn names_round_trip() {
        let n = ClusterName::parse("name", "tenants/t1/clusters/c1").unwrap();
        assert_eq!(n.to_string(), "tenants/t1/clusters/c1");
        assert!(ClusterName::parse("name", "tenants/t1/clusters/").is_err());
        assert!(ClusterName::parse("name", "tenants/t1").is_err());
        assert_eq!(
            TenantScope::parse("parent", "tenants/-").unwrap(),
            TenantScope::All
        );
        let id = Uuid::new_v4();
        let k = ApiKeyName::parse("name", &format!("apiKeys/{id}")).unwrap();
        assert_eq!(k.to_string(), format!("apiKeys/{id}"));
        assert!(OperationName::parse("name", "operations/x").is_err());
    }
}
