//! `ClusterService`: clusters and the catalog.

use futures::stream::BoxStream;

use crate::client::Client;
use crate::error::Result;
use crate::paging::{ensure_request_id, paged};
use crate::v1;

impl Client {
    /// Creates a cluster and queues its create operation; safe to retry (the request
    /// id is set once if empty). With `validate_only` nothing is created and the
    /// answer says what the cluster would look like. From a snapshot:
    /// [`v1::CreateClusterRequest::with_restore_from`].
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use esaas_client::v1::{ClusterSpec, CreateClusterRequest, NodeRole, NodeSet};
    /// let spec = ClusterSpec::new("8.17.10")
    ///     .with_node_set(NodeSet::new("default", 3, "small", 100).with_roles(&[NodeRole::Master, NodeRole::Data]));
    /// let created = client.create_cluster(CreateClusterRequest::new("tenants/search", "logs", spec)).await?;
    /// let name = created.cluster.as_ref().map(|c| c.name.as_str()).unwrap_or_default();
    /// println!("{name} queued as {}", created.operation_name());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_cluster(
        &self,
        mut req: v1::CreateClusterRequest,
    ) -> Result<v1::CreateClusterResponse> {
        ensure_request_id(&mut req.request_id);
        self.retry
            .run(|| {
                let mut c = self.cluster_service();
                let r = self.request(req.clone());
                async move { c.create_cluster(r).await.map(|r| r.into_inner()) }
            })
            .await
    }

    /// One cluster: spec, status, etag and its current operation.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let c = client.get_cluster("tenants/search/clusters/logs").await?;
    /// println!("{:?} at generation {}", c.status.unwrap_or_default().state(), c.generation);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_cluster(&self, name: &str) -> Result<v1::Cluster> {
        let req = v1::GetClusterRequest { name: name.into() };
        let resp = self
            .retry
            .run(|| {
                let mut c = self.cluster_service();
                let r = self.request(req.clone());
                async move { c.get_cluster(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.cluster.unwrap_or_default())
    }

    /// Every cluster `req` selects, page after page (set `page_size` to tune the pages).
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use futures::TryStreamExt;
    /// let req = esaas_client::v1::ListClustersRequest { parent: "tenants/search".into(), ..Default::default() };
    /// let clusters: Vec<_> = client.list_clusters(req).try_collect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_clusters(
        &self,
        req: v1::ListClustersRequest,
    ) -> BoxStream<'static, Result<v1::Cluster>> {
        let client = self.clone();
        paged(
            self.retry.clone(),
            req,
            move |req| {
                let mut c = client.cluster_service();
                let r = client.request(req);
                async move { c.list_clusters(r).await.map(|r| r.into_inner()) }
            },
            |p| (p.clusters, p.next_page_token),
            |r, t| r.page_token = t,
        )
    }

    /// Changes a cluster's spec (update mask, optional etag); safe to retry. The
    /// answer's `disruption` says how disruptive the change is; with
    /// `validate_only` that is all that happens.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use esaas_client::v1;
    /// let current = client.get_cluster("tenants/search/clusters/logs").await?;
    /// let mut spec = current.spec.clone().unwrap_or_default();
    /// spec.node_sets[0].count = 5;
    /// let updated = client.update_cluster(v1::UpdateClusterRequest {
    ///     cluster: Some(v1::Cluster { name: current.name, etag: current.etag, spec: Some(spec), ..Default::default() }),
    ///     update_mask: Some(prost_types::FieldMask { paths: vec!["spec.node_sets".into()] }),
    ///     ..Default::default()
    /// }).await?;
    /// println!("{:?}", updated.disruption());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_cluster(
        &self,
        mut req: v1::UpdateClusterRequest,
    ) -> Result<v1::UpdateClusterResponse> {
        ensure_request_id(&mut req.request_id);
        self.retry
            .run(|| {
                let mut c = self.cluster_service();
                let r = self.request(req.clone());
                async move { c.update_cluster(r).await.map(|r| r.into_inner()) }
            })
            .await
    }

    /// Deletes a cluster (it stays visible as DELETING, then DELETED); safe to retry.
    /// Unless the request skips it ([`v1::DeleteClusterRequest::without_final_snapshot`]),
    /// a final snapshot is taken first when the platform has a snapshot bucket; the
    /// answer's `final_snapshot` says whether, its name and why (the dry run's too).
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let req = esaas_client::v1::DeleteClusterRequest::new("tenants/search/clusters/logs");
    /// let deleted = client.delete_cluster(req).await?;
    /// if let Some(id) = deleted.final_snapshot_id() {
    ///     println!("final snapshot {id}");
    /// }
    /// client.wait_operation(deleted.operation_name()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_cluster(
        &self,
        mut req: v1::DeleteClusterRequest,
    ) -> Result<v1::DeleteClusterResponse> {
        ensure_request_id(&mut req.request_id);
        self.retry
            .run(|| {
                let mut c = self.cluster_service();
                let r = self.request(req.clone());
                async move { c.delete_cluster(r).await.map(|r| r.into_inner()) }
            })
            .await
    }

    /// The endpoint, CA and `elastic` password of a READY cluster (its tenant's admins only).
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let creds = client.cluster_credentials("tenants/search/clusters/logs").await?;
    /// println!("{} as {}", creds.endpoint, creds.username);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cluster_credentials(
        &self,
        name: &str,
    ) -> Result<v1::GetClusterCredentialsResponse> {
        let req = v1::GetClusterCredentialsRequest { name: name.into() };
        self.retry
            .run(|| {
                let mut c = self.cluster_service();
                let r = self.request(req.clone());
                async move { c.get_cluster_credentials(r).await.map(|r| r.into_inner()) }
            })
            .await
    }

    /// What a spec may ask for: versions and upgrade paths, size classes, limits.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let catalog = client.get_catalog().await?;
    /// for s in &catalog.size_classes {
    ///     println!("{}: {} ({} mCPU, {} MiB)", s.name, s.instance_type, s.cpu_millis, s.memory_mib);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_catalog(&self) -> Result<v1::Catalog> {
        let resp = self
            .retry
            .run(|| {
                let mut c = self.cluster_service();
                let r = self.request(v1::GetCatalogRequest {});
                async move { c.get_catalog(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.catalog.unwrap_or_default())
    }
}
