//! `esaas.v1.OperationService`.

use esaas_core::error::Violations;
use esaas_core::lifecycle::override_gate::parse_justification;
use esaas_core::names::{ClusterName, OperationName, TenantScope, parse_request_id};
use esaas_core::{Error, Result};
use esaas_proto::v1 as pb;
use esaas_store::{OperationFilter, Store};
use tonic::{Request, Response};
use uuid::Uuid;

use crate::error::{ApiResult, to_status};
use crate::watch::BoxStream;
use crate::{Api, Call, command_ctx, page, request_hash};
use esaas_proto::convert::{operation_state_from_name, operation_to_pb, reschedule_from_pb};

/// Parses `filter`: empty, or `state = QUEUED`.
fn parse_state_filter(filter: &str) -> Result<Option<esaas_core::operation::OperationState>> {
    page::parse_state_filter(filter, operation_state_from_name, "state = QUEUED")
}

impl Api {
    async fn get_operation_impl(
        &self,
        req: Request<pb::GetOperationRequest>,
    ) -> Result<pb::GetOperationResponse> {
        let principal = self.principal(&req).await?;
        let name = OperationName::parse("name", &req.get_ref().name)?;
        let op = self.store().get_operation(name.0).await?;
        principal.can_read(&op.tenant, "Operation", &name.to_string())?;
        Ok(pb::GetOperationResponse {
            operation: Some(operation_to_pb(&op)),
        })
    }

    async fn list_operations_impl(
        &self,
        req: Request<pb::ListOperationsRequest>,
    ) -> Result<pb::ListOperationsResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let scope = TenantScope::parse("parent", &r.parent)?;
        let tenant = principal.list_scope(&scope, "Tenant")?;
        let cluster = if r.cluster.is_empty() {
            None
        } else {
            let c = ClusterName::parse("cluster", &r.cluster)?;
            if tenant.as_ref().is_some_and(|t| *t != c.tenant) {
                return Err(Error::invalid("cluster", "must be a cluster of `parent`"));
            }
            Some(c)
        };
        let state = parse_state_filter(&r.filter)?;
        let limit = page::page_size(r.page_size)?;
        let fp = page::fingerprint(&[&r.parent, &r.cluster, r.filter.trim()]);
        let before = match page::decode(&fp, &r.page_token)? {
            None => None,
            Some(k) => Some(
                k.first()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| Error::invalid("page_token", "is corrupt"))?,
            ),
        };
        let mut ops = self
            .store()
            .list_operations(&OperationFilter {
                tenant,
                cluster,
                state,
                before,
                limit: limit + 1,
            })
            .await?;
        let next_page_token = page::finish(&mut ops, limit, &fp, |last| vec![last.id.to_string()]);
        Ok(pb::ListOperationsResponse {
            operations: ops.iter().map(operation_to_pb).collect(),
            next_page_token,
        })
    }
}

impl Api {
    /// The owning tenant's admins and platform admins may cancel (as they
    /// may retry); viewers are PERMISSION_DENIED, another tenant NOT_FOUND.
    async fn cancel_operation_impl(
        &self,
        req: Request<pb::CancelOperationRequest>,
    ) -> Result<pb::CancelOperationResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let name = OperationName::parse("name", &r.name)?;
        let request_id = parse_request_id("request_id", &r.request_id)?;
        let op = self.store().get_operation(name.0).await?;
        principal.can_write(&op.tenant, "Operation", &name.to_string())?;
        let initiator = principal.initiator();
        let now = command_ctx().now;
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "CancelOperation",
                scope: format!("tenants/{}", op.tenant),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| Store::cancel_operation(conn, name.0, &initiator, now).await,
            |op| pb::CancelOperationResponse {
                operation: Some(operation_to_pb(op)),
            },
        )
        .await
    }
}

impl Api {
    /// The owning tenant's admins and platform admins may override a gate
    /// (as they may retry or cancel); viewers are PERMISSION_DENIED.
    async fn override_gate_impl(
        &self,
        req: Request<pb::OverrideGateRequest>,
    ) -> Result<pb::OverrideGateResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let mut v = Violations::default();
        let name = v.absorb(OperationName::parse("name", &r.name))?;
        let justification = v.absorb(parse_justification("justification", &r.justification))?;
        let request_id = v
            .absorb(parse_request_id("request_id", &r.request_id))?
            .flatten();
        v.finish()?;
        let (Some(name), Some(justification)) = (name, justification) else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        let op = self.store().get_operation(name.0).await?;
        principal.can_write(&op.tenant, "Operation", &name.to_string())?;
        let initiator = principal.initiator();
        let ctx = command_ctx();
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "OverrideGate",
                scope: format!("tenants/{}", op.tenant),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| Store::override_gate(conn, name.0, &initiator, &justification, &ctx).await,
            |op| pb::OverrideGateResponse {
                operation: Some(operation_to_pb(op)),
            },
        )
        .await
    }
}

impl Api {
    /// Who may cancel may reschedule: the owning tenant's admins and platform admins.
    async fn reschedule_operation_impl(
        &self,
        req: Request<pb::RescheduleOperationRequest>,
    ) -> Result<pb::RescheduleOperationResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let name = OperationName::parse("name", &r.name)?;
        let request_id = parse_request_id("request_id", &r.request_id)?;
        let to = reschedule_from_pb(&r)?;
        let op = self.store().get_operation(name.0).await?;
        principal.can_write(&op.tenant, "Operation", &name.to_string())?;
        let initiator = principal.initiator();
        let now = command_ctx().now;
        let rules = self.settings().rules.clone();
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "RescheduleOperation",
                scope: format!("tenants/{}", op.tenant),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| {
                Store::reschedule_operation(conn, name.0, to, "not_before", &initiator, &rules, now)
                    .await
            },
            |op| pb::RescheduleOperationResponse {
                operation: Some(operation_to_pb(op)),
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl pb::operation_service_server::OperationService for Api {
    async fn reschedule_operation(
        &self,
        req: Request<pb::RescheduleOperationRequest>,
    ) -> ApiResult<pb::RescheduleOperationResponse> {
        self.reschedule_operation_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn override_gate(
        &self,
        req: Request<pb::OverrideGateRequest>,
    ) -> ApiResult<pb::OverrideGateResponse> {
        self.override_gate_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn get_operation(
        &self,
        req: Request<pb::GetOperationRequest>,
    ) -> ApiResult<pb::GetOperationResponse> {
        self.get_operation_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn list_operations(
        &self,
        req: Request<pb::ListOperationsRequest>,
    ) -> ApiResult<pb::ListOperationsResponse> {
        self.list_operations_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn cancel_operation(
        &self,
        req: Request<pb::CancelOperationRequest>,
    ) -> ApiResult<pb::CancelOperationResponse> {
        self.cancel_operation_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    type WatchOperationStream = BoxStream<pb::WatchOperationResponse>;

    async fn watch_operation(
        &self,
        req: Request<pb::WatchOperationRequest>,
    ) -> ApiResult<Self::WatchOperationStream> {
        self.watch_operation_impl(req)
            .await
            .map(Response::new)
            .map_err(to_status)
    }
}
