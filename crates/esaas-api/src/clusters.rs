//! `esaas.v1.ClusterService`.

use std::pin::Pin;

use esaas_core::cluster::ClusterState;
use esaas_core::error::Violations;
use esaas_core::lifecycle::ClusterChange;
use esaas_core::lifecycle::check_spec;
use esaas_core::lifecycle::create::CreateCluster;
use esaas_core::lifecycle::delete::DeleteCluster;
use esaas_core::lifecycle::update::UpdateCluster;
use esaas_core::names::{ClusterId, ClusterName, TenantName, TenantScope, parse_request_id};
use esaas_core::{Error, Result};
use esaas_proto::v1 as pb;
use esaas_store::{ClusterFilter, Store};
use futures::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::{ApiResult, to_status};
use crate::{Api, Call, command_ctx, page, record_operation, request_hash};
use esaas_proto::convert::{
    catalog_to_pb, cluster_state_from_name, cluster_to_pb, disruption_to_pb, operation_to_pb,
    spec_from_pb, update_mask_from_pb,
};

fn respond<T>(r: Result<T>) -> ApiResult<T> {
    r.map(Response::new).map_err(to_status)
}

/// Parses `filter`: empty, or `state = READY`.
fn parse_state_filter(filter: &str) -> Result<Option<ClusterState>> {
    page::parse_state_filter(filter, cluster_state_from_name, "state = READY")
}

impl Api {
    async fn create_cluster_impl(
        &self,
        req: Request<pb::CreateClusterRequest>,
    ) -> Result<pb::CreateClusterResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let parent = TenantName::parse("parent", &r.parent)?;
        principal.can_write(&parent.0, "Tenant", &r.parent)?;

        let rules = &self.settings().rules;
        let mut v = Violations::default();
        let cluster_id = v.absorb(ClusterId::parse("cluster_id", &r.cluster_id))?;
        if let Some(id) = &cluster_id {
            tracing::Span::current().record("cluster", format!("{parent}/clusters/{id}"));
        }
        let request_id = v
            .absorb(parse_request_id("request_id", &r.request_id))?
            .flatten();
        let spec = match r.cluster.as_ref().and_then(|c| c.spec.as_ref()) {
            None => {
                v.add("cluster.spec", "is required");
                None
            }
            Some(s) => match v.absorb(spec_from_pb(s, "cluster.spec"))? {
                Some(spec) => v.absorb(check_spec(spec, &rules.catalog, "cluster.spec"))?,
                None => None,
            },
        };
        v.finish()?;
        let (Some(cluster_id), Some(spec)) = (cluster_id, spec) else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        let restore = match &r.restore_from {
            Some(src) => Some(self.restore_source(&parent, src, "restore_from").await?),
            None => None,
        };

        let cmd = CreateCluster {
            tenant: parent.0.clone(),
            cluster_id,
            spec,
            initiator: principal.initiator(),
            restore,
        };
        let ctx = command_ctx();
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "CreateCluster",
                scope: parent.to_string(),
                request_id,
                request_hash: hash,
                validate_only: r.validate_only,
            },
            async |conn| Store::create_cluster(conn, &cmd, rules, &ctx).await,
            |c: &ClusterChange| {
                record_operation(c.operation.as_ref());
                pb::CreateClusterResponse {
                    cluster: Some(cluster_to_pb(&c.cluster)),
                    operation: c.operation.as_ref().map(operation_to_pb),
                    disruption: disruption_to_pb(c.disruption),
                }
            },
        )
        .await
    }

    async fn get_cluster_impl(
        &self,
        req: Request<pb::GetClusterRequest>,
    ) -> Result<pb::GetClusterResponse> {
        let principal = self.principal(&req).await?;
        let name = ClusterName::parse("name", &req.get_ref().name)?;
        principal.can_read(&name.tenant, "Cluster", &name.to_string())?;
        let cluster = self.store().get_cluster(&name).await?;
        Ok(pb::GetClusterResponse {
            cluster: Some(cluster_to_pb(&cluster)),
        })
    }

    async fn list_clusters_impl(
        &self,
        req: Request<pb::ListClustersRequest>,
    ) -> Result<pb::ListClustersResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let scope = TenantScope::parse("parent", &r.parent)?;
        let tenant = principal.list_scope(&scope, "Tenant")?;
        let state = parse_state_filter(&r.filter)?;
        let limit = page::page_size(r.page_size)?;
        let fp = page::fingerprint(&[
            &r.parent,
            r.filter.trim(),
            if r.show_deleted { "1" } else { "0" },
        ]);
        let after = match page::decode(&fp, &r.page_token)? {
            None => None,
            Some(k) => match k.as_slice() {
                [t, c, u] => Some((
                    t.clone(),
                    c.clone(),
                    Uuid::parse_str(u).map_err(|_| Error::invalid("page_token", "is corrupt"))?,
                )),
                _ => return Err(Error::invalid("page_token", "is corrupt")),
            },
        };
        let mut clusters = self
            .store()
            .list_clusters(&ClusterFilter {
                tenant,
                state,
                show_deleted: r.show_deleted,
                after,
                limit: limit + 1,
            })
            .await?;
        let next_page_token = page::finish(&mut clusters, limit, &fp, |last| {
            vec![
                last.tenant.to_string(),
                last.cluster_id.to_string(),
                last.uid.to_string(),
            ]
        });
        Ok(pb::ListClustersResponse {
            clusters: clusters.iter().map(cluster_to_pb).collect(),
            next_page_token,
        })
    }

    async fn update_cluster_impl(
        &self,
        req: Request<pb::UpdateClusterRequest>,
    ) -> Result<pb::UpdateClusterResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let Some(cluster) = r.cluster.as_ref() else {
            return Err(Error::invalid("cluster", "is required"));
        };
        let name = ClusterName::parse("cluster.name", &cluster.name)?;
        tracing::Span::current().record("cluster", name.to_string());
        principal.can_write(&name.tenant, "Cluster", &name.to_string())?;

        let mut v = Violations::default();
        let request_id = v
            .absorb(parse_request_id("request_id", &r.request_id))?
            .flatten();
        let fields = v.absorb(update_mask_from_pb(
            r.update_mask.as_ref(),
            cluster.spec.as_ref(),
        ))?;
        let default_spec = pb::ClusterSpec::default();
        let patch = v.absorb(spec_from_pb(
            cluster.spec.as_ref().unwrap_or(&default_spec),
            "cluster.spec",
        ))?;
        v.finish()?;
        let (Some(fields), Some(patch)) = (fields, patch) else {
            return Err(Error::Internal("validated fields missing".into()));
        };
        let cmd = UpdateCluster {
            name: name.clone(),
            etag: cluster.etag.clone(),
            patch,
            fields,
            initiator: principal.initiator(),
        };
        let rules = &self.settings().rules;
        let ctx = command_ctx();
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "UpdateCluster",
                scope: format!("tenants/{}", name.tenant),
                request_id,
                request_hash: hash,
                validate_only: r.validate_only,
            },
            async |conn| Store::update_cluster(conn, &cmd, rules, &ctx).await,
            |u: &ClusterChange| {
                record_operation(u.operation.as_ref());
                pb::UpdateClusterResponse {
                    cluster: Some(cluster_to_pb(&u.cluster)),
                    operation: u.operation.as_ref().map(operation_to_pb),
                    disruption: disruption_to_pb(u.disruption),
                }
            },
        )
        .await
    }

    async fn delete_cluster_impl(
        &self,
        req: Request<pb::DeleteClusterRequest>,
    ) -> Result<pb::DeleteClusterResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let name = ClusterName::parse("name", &r.name)?;
        tracing::Span::current().record("cluster", name.to_string());
        principal.can_write(&name.tenant, "Cluster", &name.to_string())?;
        let request_id = parse_request_id("request_id", &r.request_id)?;
        let cmd = DeleteCluster {
            name: name.clone(),
            etag: r.etag.clone(),
            initiator: principal.initiator(),
            skip_final_snapshot: r.skip_final_snapshot,
        };
        let snapshots_enabled = self.settings().rules.snapshots_enabled;
        let skip = r.skip_final_snapshot;
        let rules = &self.settings().rules;
        let ctx = command_ctx();
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "DeleteCluster",
                scope: format!("tenants/{}", name.tenant),
                request_id,
                request_hash: hash,
                validate_only: r.validate_only,
            },
            async |conn| Store::delete_cluster(conn, &cmd, rules, &ctx).await,
            |u: &ClusterChange| {
                record_operation(u.operation.as_ref());
                pb::DeleteClusterResponse {
                    cluster: Some(cluster_to_pb(&u.cluster)),
                    operation: u.operation.as_ref().map(operation_to_pb),
                    disruption: disruption_to_pb(u.disruption),
                    final_snapshot: Some(final_snapshot_to_pb(u, snapshots_enabled, skip)),
                }
            },
        )
        .await
    }

    async fn credentials_impl(
        &self,
        req: Request<pb::GetClusterCredentialsRequest>,
    ) -> Result<pb::GetClusterCredentialsResponse> {
        let principal = self.principal(&req).await?;
        let name = ClusterName::parse("name", &req.get_ref().name)?;
        principal.can_read_credentials(&name.tenant, &name.to_string())?;
        let cluster = self.store().get_cluster(&name).await?;
        // Credentials live only in the cluster's Kubernetes Secret, which the
        // provisioning steps create; until a cluster has an endpoint there is
        // nothing to hand out.
        let Some(endpoint) = cluster.endpoint else {
            return Err(Error::precondition(
                name.to_string(),
                format!(
                    "the cluster is {} and has no endpoint yet; credentials are available once it is READY",
                    cluster.state.as_str()
                ),
            ));
        };
        let unavailable = |message: &str| Error::Unavailable {
            message: message.to_string(),
            retry_after: std::time::Duration::from_secs(30),
        };
        let Some(source) = &self.settings().credentials else {
            return Err(unavailable(
                "this control plane has no Kubernetes credential source configured",
            ));
        };
        let creds = source
            .0
            .read(&name.tenant, &name.cluster)
            .await?
            .ok_or_else(|| unavailable("the cluster's Secret cannot be read yet"))?;
        Ok(pb::GetClusterCredentialsResponse {
            endpoint,
            username: "elastic".into(),
            password: creds.password,
            ca_certificate_pem: creds.ca_pem,
        })
    }
}

/// Whether the delete `u` answers takes a final snapshot, and why (not).
fn final_snapshot_to_pb(u: &ClusterChange, enabled: bool, skip: bool) -> pb::FinalSnapshot {
    match u.operation.as_ref().and_then(|o| o.params.snapshot.clone()) {
        Some(snapshot) => pb::FinalSnapshot {
            taken: true,
            reason: format!(
                "snapshot {snapshot} is taken before anything is removed; the tombstone \
                 lists it, and CreateCluster.restore_from restores it"
            ),
            snapshot,
        },
        None => pb::FinalSnapshot {
            taken: false,
            snapshot: String::new(),
            reason: esaas_core::snapshots::final_snapshot_skipped(
                enabled,
                skip,
                u.cluster.observed_generation > 0,
            )
            // A delete queued earlier, before snapshots were configured.
            .unwrap_or("the delete under way takes none")
            .to_string(),
        },
    }
}

impl Api {
    /// Resolves a restore source of tenant `parent`: the snapshot record of
    /// the cluster it names (which may be deleted), checked by the core rule.
    async fn restore_source(
        &self,
        parent: &TenantName,
        src: &pb::RestoreSource,
        field: &str,
    ) -> Result<esaas_core::snapshots::RestoreSource> {
        let source = ClusterName::parse(&format!("{field}.cluster"), &src.cluster)?;
        if source.tenant != parent.0 {
            return Err(Error::invalid(
                format!("{field}.cluster"),
                "must be a cluster of the same tenant",
            ));
        }
        if src.snapshot.is_empty() || src.snapshot.len() > 255 {
            return Err(Error::invalid(
                format!("{field}.snapshot"),
                "is required: a snapshot id as ListSnapshots gives it",
            ));
        }
        let record = self.store().find_snapshot(&source, &src.snapshot).await?;
        esaas_core::lifecycle::snapshot::restore_source(
            record.as_ref(),
            &source,
            &src.snapshot,
            &src.indices,
            field,
        )
    }

    async fn create_snapshot_impl(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> Result<pb::CreateSnapshotResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let name = ClusterName::parse("name", &r.name)?;
        tracing::Span::current().record("cluster", name.to_string());
        principal.can_write(&name.tenant, "Cluster", &name.to_string())?;
        let request_id = parse_request_id("request_id", &r.request_id)?;
        let cmd = esaas_core::lifecycle::snapshot::CreateSnapshot {
            name: name.clone(),
            initiator: principal.initiator(),
        };
        let rules = &self.settings().rules;
        let ctx = command_ctx();
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "CreateSnapshot",
                scope: format!("tenants/{}", name.tenant),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| Store::create_snapshot(conn, &cmd, rules, &ctx).await,
            |u: &ClusterChange| {
                record_operation(u.operation.as_ref());
                pb::CreateSnapshotResponse {
                    operation: u.operation.as_ref().map(operation_to_pb),
                }
            },
        )
        .await
    }

    async fn restore_snapshot_impl(
        &self,
        req: Request<pb::RestoreSnapshotRequest>,
    ) -> Result<pb::RestoreSnapshotResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let name = ClusterName::parse("name", &r.name)?;
        tracing::Span::current().record("cluster", name.to_string());
        principal.can_write(&name.tenant, "Cluster", &name.to_string())?;
        let request_id = parse_request_id("request_id", &r.request_id)?;
        let Some(src) = &r.source else {
            return Err(Error::invalid("source", "is required"));
        };
        // Checked before the snapshot is looked up: the field is wrong whatever it names.
        esaas_core::lifecycle::snapshot::require_indices(&src.indices, "source.indices")?;
        let parent = TenantName(name.tenant.clone());
        let source = self.restore_source(&parent, src, "source").await?;
        let cmd = esaas_core::lifecycle::snapshot::RestoreIndices {
            name: name.clone(),
            source,
            initiator: principal.initiator(),
        };
        let rules = &self.settings().rules;
        let ctx = command_ctx();
        let hash = request_hash(&r, |m| m.request_id.clear());
        self.mutate(
            Call {
                method: "RestoreSnapshot",
                scope: format!("tenants/{}", name.tenant),
                request_id,
                request_hash: hash,
                validate_only: false,
            },
            async |conn| Store::restore_indices(conn, &cmd, rules, &ctx).await,
            |u: &ClusterChange| {
                record_operation(u.operation.as_ref());
                pb::RestoreSnapshotResponse {
                    operation: u.operation.as_ref().map(operation_to_pb),
                }
            },
        )
        .await
    }

    async fn list_snapshots_impl(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<pb::ListSnapshotsResponse> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let name = ClusterName::parse("parent", &r.parent)?;
        principal.can_read(&name.tenant, "Cluster", &name.to_string())?;
        let limit = page::page_size(r.page_size)?;
        let fp = page::fingerprint(&[&r.parent]);
        let corrupt = || Error::invalid("page_token", "is corrupt");
        let after = match page::decode(&fp, &r.page_token)? {
            None => None,
            Some(k) => match k.as_slice() {
                [t, u, n] => Some((
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map_err(|_| corrupt())?
                        .with_timezone(&chrono::Utc),
                    Uuid::parse_str(u).map_err(|_| corrupt())?,
                    n.clone(),
                )),
                _ => return Err(corrupt()),
            },
        };
        let first_page = after.is_none();
        let mut rows = self.store().list_snapshots(&name, after, limit + 1).await?;
        // No snapshots: a name no cluster ever had (nor its tombstone) is
        // NOT_FOUND, as for any other read of a cluster.
        if rows.is_empty() && first_page {
            self.store().get_cluster(&name).await?;
        }
        let next_page_token = page::finish(&mut rows, limit, &fp, |(t, s)| {
            vec![
                t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                s.cluster_uid.to_string(),
                s.snapshot.name.clone(),
            ]
        });
        Ok(pb::ListSnapshotsResponse {
            snapshots: rows
                .iter()
                .map(|(_, s)| esaas_proto::convert::snapshot_to_pb(s))
                .collect(),
            next_page_token,
        })
    }

    async fn get_catalog_impl(
        &self,
        req: Request<pb::GetCatalogRequest>,
    ) -> Result<pb::GetCatalogResponse> {
        self.principal(&req).await?.can_read_catalog()?;
        Ok(pb::GetCatalogResponse {
            catalog: Some(catalog_to_pb(&self.settings().rules.catalog)),
        })
    }
}

type WatchClusterStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchClusterResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for Api {
    async fn create_cluster(
        &self,
        req: Request<pb::CreateClusterRequest>,
    ) -> ApiResult<pb::CreateClusterResponse> {
        respond(self.create_cluster_impl(req).await)
    }

    async fn get_cluster(
        &self,
        req: Request<pb::GetClusterRequest>,
    ) -> ApiResult<pb::GetClusterResponse> {
        respond(self.get_cluster_impl(req).await)
    }

    async fn list_clusters(
        &self,
        req: Request<pb::ListClustersRequest>,
    ) -> ApiResult<pb::ListClustersResponse> {
        respond(self.list_clusters_impl(req).await)
    }

    async fn update_cluster(
        &self,
        req: Request<pb::UpdateClusterRequest>,
    ) -> ApiResult<pb::UpdateClusterResponse> {
        respond(self.update_cluster_impl(req).await)
    }

    async fn delete_cluster(
        &self,
        req: Request<pb::DeleteClusterRequest>,
    ) -> ApiResult<pb::DeleteClusterResponse> {
        respond(self.delete_cluster_impl(req).await)
    }

    type WatchClusterStream = WatchClusterStream;

    async fn watch_cluster(
        &self,
        req: Request<pb::WatchClusterRequest>,
    ) -> ApiResult<Self::WatchClusterStream> {
        respond(self.watch_cluster_impl(req).await)
    }

    async fn get_cluster_credentials(
        &self,
        req: Request<pb::GetClusterCredentialsRequest>,
    ) -> ApiResult<pb::GetClusterCredentialsResponse> {
        respond(self.credentials_impl(req).await)
    }

    async fn get_catalog(
        &self,
        req: Request<pb::GetCatalogRequest>,
    ) -> ApiResult<pb::GetCatalogResponse> {
        respond(self.get_catalog_impl(req).await)
    }

    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> ApiResult<pb::CreateSnapshotResponse> {
        respond(self.create_snapshot_impl(req).await)
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> ApiResult<pb::ListSnapshotsResponse> {
        respond(self.list_snapshots_impl(req).await)
    }

    async fn restore_snapshot(
        &self,
        req: Request<pb::RestoreSnapshotRequest>,
    ) -> ApiResult<pb::RestoreSnapshotResponse> {
        respond(self.restore_snapshot_impl(req).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_filter() {
        assert_eq!(parse_state_filter("").unwrap(), None);
        assert_eq!(
            parse_state_filter("state = READY").unwrap(),
            Some(ClusterState::Ready)
        );
        assert_eq!(
            parse_state_filter("state=CLUSTER_STATE_FAILED").unwrap(),
            Some(ClusterState::Failed)
        );
        assert!(parse_state_filter("state = NOPE").is_err());
        assert!(parse_state_filter("name = x").is_err());
    }
}
