//! Tenants, quotas, API keys and workers, as `AdminService` shows them.

use esaas_core::Result;
use esaas_core::auth::{ApiKey, Role};
use esaas_core::error::Error;
use esaas_core::names::OperationName;
use esaas_core::tenant::{Quota, Tenant};
use esaas_core::worker::Worker;

use super::{ots, ts};
use crate::v1 as pb;

/// Parses a wire quota; `prefix` is its path in the request.
pub fn quota_from_pb(q: &pb::Quota, prefix: &str) -> Result<Quota> {
    let quota = Quota {
        max_clusters: q.max_clusters,
        max_nodes: q.max_nodes,
        max_storage_gib: q.max_storage_gib,
    };
    quota.validate(prefix)?;
    Ok(quota)
}

/// The wire form of a tenant.
pub fn tenant_to_pb(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        name: format!("tenants/{}", t.id),
        display_name: t.display_name.clone(),
        quota: Some(pb::Quota {
            max_clusters: t.quota.max_clusters,
            max_nodes: t.quota.max_nodes,
            max_storage_gib: t.quota.max_storage_gib,
        }),
        usage: Some(pb::QuotaUsage {
            clusters: i32::try_from(t.usage.clusters).unwrap_or(i32::MAX),
            nodes: i32::try_from(t.usage.nodes).unwrap_or(i32::MAX),
            storage_gib: t.usage.storage_gib,
        }),
        create_time: ts(t.create_time),
        update_time: ts(t.update_time),
    }
}

/// Parses a wire role; every key needs one.
pub fn role_from_pb(role: i32) -> Result<Role> {
    match pb::Role::try_from(role) {
        Ok(pb::Role::PlatformAdmin) => Ok(Role::PlatformAdmin),
        Ok(pb::Role::TenantAdmin) => Ok(Role::TenantAdmin),
        Ok(pb::Role::TenantViewer) => Ok(Role::TenantViewer),
        Ok(pb::Role::Worker) => Ok(Role::Worker),
        Ok(pb::Role::Unspecified) | Err(_) => Err(Error::invalid(
            "api_key.role",
            "is required: ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN, ROLE_TENANT_VIEWER or ROLE_WORKER",
        )),
    }
}

/// The wire form of a role.
pub fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::PlatformAdmin => pb::Role::PlatformAdmin,
        Role::TenantAdmin => pb::Role::TenantAdmin,
        Role::TenantViewer => pb::Role::TenantViewer,
        Role::Worker => pb::Role::Worker,
    }
}

/// The wire form of an API key (never with its secret).
pub fn api_key_to_pb(k: &ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        name: k.name.to_string(),
        display_name: k.display_name.clone(),
        role: role_to_pb(k.role) as i32,
        create_time: ts(k.create_time),
        revoke_time: ots(k.revoke_time),
    }
}

/// The wire form of a connected worker.
pub fn worker_to_pb(w: &Worker) -> pb::Worker {
    pb::Worker {
        name: format!("workers/{}", w.id),
        region: w.region.clone(),
        capacity: w.capacity,
        version: w.version.clone(),
        leases: w
            .leases
            .iter()
            .map(|id| OperationName(*id).to_string())
            .collect(),
        connect_time: ts(w.connect_time),
        last_heartbeat_time: ts(w.last_heartbeat_time),
        session_id: w.session.to_string(),
    }
}
