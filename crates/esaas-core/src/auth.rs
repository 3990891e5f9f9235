//! Who is calling and what they may do. The API authenticates a key into a
//! `Principal`; every handler then asks it for the access it needs.
//!
//! A tenant's caller never learns whether another tenant's resource exists:
//! the answer is `NotFound`, as for a name that does not exist at all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::{ApiKeyName, TenantId, TenantScope};
use crate::operation::{Initiator, InitiatorKind};

text_enum!(
    /// What a key may do.
    Role {
        /// Everything.
        PlatformAdmin = "PLATFORM_ADMIN",
        /// Change the tenant's clusters and read their credentials.
        TenantAdmin = "TENANT_ADMIN",
        /// Read the tenant's clusters and operations.
        TenantViewer = "TENANT_VIEWER",
        /// Connect as a worker.
        Worker = "WORKER",
    }
);

impl Role {
    /// Whether keys of this role belong to a tenant.
    pub fn is_tenant_role(self) -> bool {
        matches!(self, Role::TenantAdmin | Role::TenantViewer)
    }
}

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// `tenants/{tenant}/apiKeys/{id}` or `apiKeys/{id}`.
    pub name: ApiKeyName,
    /// What it may do.
    pub role: Role,
    /// What it is for, as its creator said.
    pub display_name: String,
    /// When it was made.
    pub create_time: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoke_time: Option<DateTime<Utc>>,
}

/// A key just made, with its secret. The secret is shown once: it is never
/// serialized, so no stored answer (an idempotent retry's) can hold it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedKey {
    /// The key.
    pub key: ApiKey,
    /// The secret (empty when the answer is replayed).
    #[serde(skip)]
    pub secret: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Role of the key.
    pub role: Role,
    /// Tenant of a tenant key.
    pub tenant: Option<TenantId>,
    /// The key's resource name, or `bootstrap`.
    pub key: String,
}

impl Principal {
    /// The bootstrap platform admin.
    pub fn bootstrap() -> Self {
        Principal {
            role: Role::PlatformAdmin,
            tenant: None,
            key: "bootstrap".into(),
        }
    }

    fn is_member(&self, tenant: &TenantId) -> bool {
        self.tenant.as_ref() == Some(tenant)
    }

    /// May read resources of `tenant`; `name` is what is reported as not found.
    pub fn can_read(&self, tenant: &TenantId, kind: &'static str, name: &str) -> Result<()> {
        match self.role {
            Role::PlatformAdmin => Ok(()),
            Role::TenantAdmin | Role::TenantViewer if self.is_member(tenant) => Ok(()),
            Role::Worker => Err(Error::PermissionDenied(
                "worker keys may only call WorkerService".into(),
            )),
            _ => Err(Error::NotFound {
                kind,
                name: name.to_string(),
            }),
        }
    }

    /// May change resources of `tenant`.
    pub fn can_write(&self, tenant: &TenantId, kind: &'static str, name: &str) -> Result<()> {
        self.can_read(tenant, kind, name)?;
        match self.role {
            Role::TenantViewer => Err(Error::PermissionDenied(
                "the key has the TENANT_VIEWER role, which may only read".into(),
            )),
            _ => Ok(()),
        }
    }

    /// May read cluster credentials of `tenant`: its own tenant admins only.
    pub fn can_read_credentials(&self, tenant: &TenantId, name: &str) -> Result<()> {
        self.can_write(tenant, "Cluster", name)?;
        match self.role {
            Role::TenantAdmin => Ok(()),
            _ => Err(Error::PermissionDenied(
                "credentials are given only to the owning tenant's TENANT_ADMIN keys".into(),
            )),
        }
    }

    /// May list API keys: those of `tenant`, or with `None` the platform's own keys
    /// or every tenant's. Platform admins may list any; a tenant's admins may list
    /// their own tenant's keys (to see what can act on its clusters); viewers may not.
    /// Creating and revoking keys stays with platform admins.
    pub fn can_list_keys(&self, tenant: Option<&TenantId>) -> Result<()> {
        let Some(tenant) = tenant else {
            return self.require_platform_admin();
        };
        self.can_read(tenant, "Tenant", &format!("tenants/{tenant}"))?;
        match self.role {
            Role::TenantViewer => Err(Error::PermissionDenied(
                "listing API keys needs a TENANT_ADMIN key of the tenant or a PLATFORM_ADMIN key"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// May read the catalog: every key except a worker's.
    pub fn can_read_catalog(&self) -> Result<()> {
        match self.role {
            Role::Worker => Err(Error::PermissionDenied(
                "worker keys may only call WorkerService".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Is a platform admin.
    pub fn require_platform_admin(&self) -> Result<()> {
        match self.role {
            Role::PlatformAdmin => Ok(()),
            _ => Err(Error::PermissionDenied(
                "this call needs a PLATFORM_ADMIN key".into(),
            )),
        }
    }

    /// Is a worker (or a platform admin acting as one).
    pub fn require_worker(&self) -> Result<()> {
        match self.role {
            Role::Worker | Role::PlatformAdmin => Ok(()),
            _ => Err(Error::PermissionDenied(
                "this call needs a WORKER key".into(),
            )),
        }
    }

    /// The tenants a list call may cover: `None` for all.
    pub fn list_scope(&self, scope: &TenantScope, kind: &'static str) -> Result<Option<TenantId>> {
        match scope {
            TenantScope::All => {
                self.require_platform_admin()?;
                Ok(None)
            }
            TenantScope::One(t) => {
                self.can_read(t, kind, &format!("tenants/{t}"))?;
                Ok(Some(t.clone()))
            }
        }
    }

    /// How an operation this principal starts records its initiator.
    pub fn initiator(&self) -> Initiator {
        Initiator {
            kind: if self.role.is_tenant_role() {
                InitiatorKind::Tenant
            } else {
                InitiatorKind::Platform
            },
            principal: self.key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse("t", s).unwrap()
    }

    fn p(role: Role, t: Option<&str>) -> Principal {
        Principal {
            role,
            tenant: t.map(tenant),
            key: "k".into(),
        }
    }

    #[test]
    fn access_matrix() {
        let a = tenant("a");
        let admin = p(Role::PlatformAdmin, None);
        let ta = p(Role::TenantAdmin, Some("a"));
        let tv = p(Role::TenantViewer, Some("a"));
        let other = p(Role::TenantAdmin, Some("b"));
        let worker = p(Role::Worker, None);

        assert!(admin.can_write(&a, "Cluster", "n").is_ok());
        assert!(ta.can_write(&a, "Cluster", "n").is_ok());
        assert!(tv.can_read(&a, "Cluster", "n").is_ok());
        assert!(matches!(
            tv.can_write(&a, "Cluster", "n"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            other.can_read(&a, "Cluster", "n"),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            other.can_write(&a, "Cluster", "n"),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            worker.can_read(&a, "Cluster", "n"),
            Err(Error::PermissionDenied(_))
        ));

        assert!(ta.can_read_credentials(&a, "n").is_ok());
        assert!(matches!(
            tv.can_read_credentials(&a, "n"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            admin.can_read_credentials(&a, "n"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            other.can_read_credentials(&a, "n"),
            Err(Error::NotFound { .. })
        ));

        assert!(matches!(
            ta.list_scope(&TenantScope::All, "Cluster"),
            Err(Error::PermissionDenied(_))
        ));
        assert_eq!(
            admin.list_scope(&TenantScope::All, "Cluster").unwrap(),
            None
        );
        assert!(admin.can_list_keys(None).is_ok());
        assert!(admin.can_list_keys(Some(&a)).is_ok());
        assert!(ta.can_list_keys(Some(&a)).is_ok());
        assert!(matches!(
            ta.can_list_keys(None),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            tv.can_list_keys(Some(&a)),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            other.can_list_keys(Some(&a)),
            Err(Error::NotFound { .. })
        ));
        assert!(tv.can_read_catalog().is_ok());
        assert!(matches!(
            worker.can_read_catalog(),
            Err(Error::PermissionDenied(_))
        ));

        assert_eq!(ta.initiator().kind, InitiatorKind::Tenant);
        assert_eq!(admin.initiator().kind, InitiatorKind::Platform);
    }
}
