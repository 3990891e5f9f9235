//! `esaas.v1.AdminService`.

use esaas_core::error::Violations;
use esaas_core::names::{
    ApiKeyName, ClusterName, OperationName, TenantId, TenantName, TenantScope, parse_request_id,
};
use esaas_core::{Error, Result};
use esaas_proto::v1 as pb;
use esaas_store::{KeyFilter, KeyScope, NewApiKey, Store};
use tonic::{Request, Response};
use uuid::Uuid;

use crate::error::{ApiResult, to_status};
use crate::{Api, Call, command_ctx, page, request_hash};
use esaas_proto::convert::{
    api_key_to_pb, cluster_to_pb, operation_to_pb, quota_from_pb, role_from_pb, tenant_to_pb,
    worker_to_pb,
};

/// Longest display name of a tenant or key.
const DISPLAY_NAME_MAX: usize = 200;

fn check_display_name(v: &mut Violations, field: &str, name: &str) {
    if name.chars().count() > DISPLAY_NAME_MAX {
        v.add(
            field,
            format!("must be at most {DISPLAY_NAME_MAX} characters"),
        );
    }
    if name.chars().any(char::is_control) {
        v.add(field, "must not contain control characters");
    }
}

/// The `(create_time, id)` cursor of a key page token.
fn key_cursor(k: &[String]) -> Option<(chrono::DateTime<chrono::Utc>, Uuid)> {
    let [time, id] = k else { return None };
    let time = chrono::DateTime::parse_from_rfc3339(time).ok()?.to_utc();
    Some((time, Uuid::parse_str(id).ok()?))
}

impl Api {
    async fn create_tenant_impl(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<pb::CreateTenantResponse> {
        self.principal(&req).await?.require_platform_admin()?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let id = v.absorb(TenantId::parse_new("tenant_id", &r.tenant_id))?;
        let request_id = v
            .absorb(parse_request_id("request_id", &r.request_id))?
            .flatten();
        let tenant = r.tenant.clone().unwrap_or_default();
        check_display_name(&mut v, "tenant.display_name", &tenant.display_name);
        let quota = match &tenant.quota {
            Some(q) => v.absorb(quota_from_pb(q, "tenant.quota"))?,
            None => Some(self.settings().default_quota),
        };
        v.finish()?;
        let (Some(id), Some(quota)) = (id, quota) else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        let display_name = if tenant.display_name.is_empty() {
            id.to_string()
        } else {
            tenant.display_name.clone()
        };
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "CreateTenant",
                scope: "platform".into(),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| Store::create_tenant(conn, &id, &display_name, quota).await,
            |t| pb::CreateTenantResponse {
                tenant: Some(tenant_to_pb(t)),
            },
        )
        .await
    }

    async fn get_tenant_impl(
        &self,
        req: Request<pb::GetTenantRequest>,
    ) -> Result<pb::GetTenantResponse> {
        let principal = self.principal(&req).await?;
        let name = TenantName::parse("name", &req.get_ref().name)?;
        // Members may read their own tenant (its quota and usage).
        principal.can_read(&name.0, "Tenant", &name.to_string())?;
        let tenant = self.store().get_tenant(&name.0).await?;
        Ok(pb::GetTenantResponse {
            tenant: Some(tenant_to_pb(&tenant)),
        })
    }

    async fn list_tenants_impl(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<pb::ListTenantsResponse> {
        self.principal(&req).await?.require_platform_admin()?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let fp = page::fingerprint(&["tenants"]);
        let after = page::decode(&fp, &r.page_token)?.and_then(|k| k.into_iter().next());
        let mut tenants = self
            .store()
            .list_tenants(after.as_deref(), limit + 1)
            .await?;
        let next_page_token =
            page::finish(&mut tenants, limit, &fp, |last| vec![last.id.to_string()]);
        Ok(pb::ListTenantsResponse {
            tenants: tenants.iter().map(tenant_to_pb).collect(),
            next_page_token,
        })
    }

    async fn update_quota_impl(
        &self,
        req: Request<pb::UpdateTenantQuotaRequest>,
    ) -> Result<pb::UpdateTenantQuotaResponse> {
        self.principal(&req).await?.require_platform_admin()?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let name = v.absorb(TenantName::parse("name", &r.name))?;
        let request_id = v
            .absorb(parse_request_id("request_id", &r.request_id))?
            .flatten();
        let quota = match &r.quota {
            Some(q) => v.absorb(quota_from_pb(q, "quota"))?,
            None => {
                v.add("quota", "is required");
                None
            }
        };
        v.finish()?;
        let (Some(name), Some(quota)) = (name, quota) else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "UpdateTenantQuota",
                scope: "platform".into(),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| Store::update_quota(conn, &name.0, quota).await,
            |t| pb::UpdateTenantQuotaResponse {
                tenant: Some(tenant_to_pb(t)),
            },
        )
        .await
    }

    async fn create_api_key_impl(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<pb::CreateApiKeyResponse> {
        self.principal(&req).await?.require_platform_admin()?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let tenant = if r.parent.is_empty() {
            None
        } else {
            v.absorb(TenantName::parse("parent", &r.parent))?
                .map(|t| t.0)
        };
        let request_id = v
            .absorb(parse_request_id("request_id", &r.request_id))?
            .flatten();
        let key = r.api_key.clone().unwrap_or_default();
        check_display_name(&mut v, "api_key.display_name", &key.display_name);
        let role = v.absorb(role_from_pb(key.role))?;
        if let Some(role) = role {
            match (role.is_tenant_role(), r.parent.is_empty()) {
                (true, true) => v.add("parent", "a tenant role needs parent `tenants/{tenant}`"),
                (false, false) => v.add(
                    "parent",
                    "PLATFORM_ADMIN and WORKER keys belong to no tenant: leave parent empty",
                ),
                _ => {}
            }
        }
        v.finish()?;
        let Some(role) = role else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        if let Some(t) = &tenant
            && !self.store().tenant_exists(t).await?
        {
            return Err(Error::NotFound {
                kind: "Tenant",
                name: format!("tenants/{t}"),
            });
        }
        let new = NewApiKey {
            tenant,
            role,
            display_name: key.display_name.clone(),
        };
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "CreateApiKey",
                scope: "platform".into(),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| Store::create_api_key(conn, &new).await,
            |issued| pb::CreateApiKeyResponse {
                api_key: Some(api_key_to_pb(&issued.key)),
                secret: issued.secret.clone(),
            },
        )
        .await
    }

    async fn list_api_keys_impl(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Result<pb::ListApiKeysResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let scope = match r.parent.as_str() {
            "" => KeyScope::Platform,
            parent => match TenantScope::parse("parent", parent)? {
                TenantScope::All => KeyScope::AllTenants,
                TenantScope::One(t) => KeyScope::Tenant(t),
            },
        };
        principal.can_list_keys(scope.tenant())?;
        let limit = page::page_size(r.page_size)?;
        let revoked = if r.show_revoked { "revoked" } else { "" };
        let fp = page::fingerprint(&["apiKeys", &r.parent, revoked]);
        let after = match page::decode(&fp, &r.page_token)? {
            None => None,
            Some(k) => {
                Some(key_cursor(&k).ok_or_else(|| Error::invalid("page_token", "is corrupt"))?)
            }
        };
        let mut keys = self
            .store()
            .list_api_keys(&KeyFilter {
                scope,
                show_revoked: r.show_revoked,
                after,
                limit: limit + 1,
            })
            .await?;
        let next_page_token = page::finish(&mut keys, limit, &fp, |last| {
            vec![
                last.create_time
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                last.name.id.to_string(),
            ]
        });
        Ok(pb::ListApiKeysResponse {
            api_keys: keys.iter().map(api_key_to_pb).collect(),
            next_page_token,
        })
    }

    async fn revoke_api_key_impl(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<pb::RevokeApiKeyResponse> {
        self.principal(&req).await?.require_platform_admin()?;
        let name = ApiKeyName::parse("name", &req.get_ref().name)?;
        let key = self
            .store()
            .transaction(async |conn| Store::revoke_api_key(conn, &name).await)
            .await?;
        // This process stops accepting the key now; the others when the
        // revocation's notification reaches them.
        self.inner.auth.forget_all();
        Ok(pb::RevokeApiKeyResponse {
            api_key: Some(api_key_to_pb(&key)),
        })
    }

    async fn retry_operation_impl(
        &self,
        req: Request<pb::RetryOperationRequest>,
    ) -> Result<pb::RetryOperationResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let name = OperationName::parse("name", &r.name)?;
        let request_id = parse_request_id("request_id", &r.request_id)?;
        let op = self.store().get_operation(name.0).await?;
        // Platform admins, and the owning tenant's admins, may retry.
        principal.can_write(&op.tenant, "Operation", &name.to_string())?;
        let initiator = principal.initiator();
        let rules = &self.settings().rules;
        let ctx = command_ctx();
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "RetryOperation",
                scope: format!("tenants/{}", op.tenant),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| Store::retry_operation(conn, name.0, &initiator, rules, &ctx).await,
            |op| pb::RetryOperationResponse {
                operation: Some(operation_to_pb(op)),
            },
        )
        .await
    }

    async fn set_auto_repair_impl(
        &self,
        req: Request<pb::SetAutoRepairRequest>,
    ) -> Result<pb::SetAutoRepairResponse> {
        let principal = self.principal(&req).await?;
        principal.require_platform_admin()?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let name = v.absorb(ClusterName::parse("name", &r.name))?;
        let justification = r.justification.trim();
        if justification.is_empty() {
            v.add("justification", "is required: say why, for the event log");
        } else if justification.chars().count() > 512 {
            v.add("justification", "is longer than 512 characters");
        }
        v.finish()?;
        let Some(name) = name else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        let initiator = principal.initiator();
        let ctx = command_ctx();
        let justification = justification.to_string();
        let cluster = self
            .store()
            .transaction(async |conn| {
                Store::set_repair_paused(conn, &name, !r.enabled, &initiator, &justification, &ctx)
                    .await
            })
            .await?;
        Ok(pb::SetAutoRepairResponse {
            cluster: Some(cluster_to_pb(&cluster)),
        })
    }

    async fn list_workers_impl(
        &self,
        req: Request<pb::ListWorkersRequest>,
    ) -> Result<pb::ListWorkersResponse> {
        self.principal(&req).await?.require_platform_admin()?;
        let workers = self.store().list_workers().await?;
        Ok(pb::ListWorkersResponse {
            workers: workers.iter().map(worker_to_pb).collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for Api {
    async fn set_auto_repair(
        &self,
        req: Request<pb::SetAutoRepairRequest>,
    ) -> ApiResult<pb::SetAutoRepairResponse> {
        self.set_auto_repair_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> ApiResult<pb::CreateTenantResponse> {
        self.create_tenant_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn get_tenant(
        &self,
        req: Request<pb::GetTenantRequest>,
    ) -> ApiResult<pb::GetTenantResponse> {
        self.get_tenant_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> ApiResult<pb::ListTenantsResponse> {
        self.list_tenants_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn update_tenant_quota(
        &self,
        req: Request<pb::UpdateTenantQuotaRequest>,
    ) -> ApiResult<pb::UpdateTenantQuotaResponse> {
        self.update_quota_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> ApiResult<pb::CreateApiKeyResponse> {
        self.create_api_key_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> ApiResult<pb::ListApiKeysResponse> {
        self.list_api_keys_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> ApiResult<pb::RevokeApiKeyResponse> {
        self.revoke_api_key_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn retry_operation(
        &self,
        req: Request<pb::RetryOperationRequest>,
    ) -> ApiResult<pb::RetryOperationResponse> {
        self.retry_operation_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn list_workers(
        &self,
        req: Request<pb::ListWorkersRequest>,
    ) -> ApiResult<pb::ListWorkersResponse> {
        self.list_workers_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }
}
