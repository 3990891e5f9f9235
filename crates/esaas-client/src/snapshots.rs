//! `ClusterService`'s snapshots: taking one, listing them, restoring from one.
//! Restoring into a new cluster is a create ([`v1::CreateClusterRequest::with_restore_from`]);
//! a delete without its final snapshot is [`v1::DeleteClusterRequest::without_final_snapshot`].

use futures::stream::BoxStream;

use crate::client::Client;
use crate::error::Result;
use crate::paging::{ensure_request_id, paged};
use crate::v1;

impl Client {
    /// Queues a snapshot of every index of a running cluster (a `SNAPSHOT`
    /// operation; the cluster stays READY); safe to retry. The operation names the
    /// snapshot it takes ([`v1::CreateSnapshotResponse::snapshot_id`]). Refused with
    /// `FAILED_PRECONDITION` when the platform has no snapshot bucket (the violation's
    /// type is `SNAPSHOTS_NOT_CONFIGURED`) or another operation is queued.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use esaas_client::v1::CreateSnapshotRequest;
    /// let queued = client.create_snapshot(CreateSnapshotRequest::new("tenants/search/clusters/logs")).await?;
    /// println!("taking {}", queued.snapshot_id());
    /// client.wait_operation(queued.operation_name()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_snapshot(
        &self,
        mut req: v1::CreateSnapshotRequest,
    ) -> Result<v1::CreateSnapshotResponse> {
        ensure_request_id(&mut req.request_id);
        self.retry
            .run(|| {
                let mut c = self.cluster_service();
                let r = self.request(req.clone());
                async move { c.create_snapshot(r).await.map(|r| r.into_inner()) }
            })
            .await
    }

    /// Every snapshot of the clusters that had the name `req.parent` (deleted ones
    /// included, a delete's final snapshot among them), newest first, page after page.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use futures::TryStreamExt;
    /// let req = esaas_client::v1::ListSnapshotsRequest::new("tenants/search/clusters/logs");
    /// let snapshots: Vec<_> = client.list_snapshots(req).try_collect().await?;
    /// for s in &snapshots {
    ///     println!("{} {:?} {:?}", s.snapshot_id, s.kind(), s.state());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_snapshots(
        &self,
        req: v1::ListSnapshotsRequest,
    ) -> BoxStream<'static, Result<v1::Snapshot>> {
        let client = self.clone();
        paged(
            self.retry.clone(),
            req,
            move |req| {
                let mut c = client.cluster_service();
                let r = client.request(req);
                async move { c.list_snapshots(r).await.map(|r| r.into_inner()) }
            },
            |p| (p.snapshots, p.next_page_token),
            |r, t| r.page_token = t,
        )
    }

    /// Restores chosen indices (at least one) of a snapshot of this cluster or of
    /// another cluster of the tenant into a running cluster (a `RESTORE` operation);
    /// safe to retry. The indices must not be open in the cluster.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use esaas_client::v1::{RestoreSnapshotRequest, RestoreSource};
    /// let source = RestoreSource::new("tenants/search/clusters/logs", "manual-20261201-120000-a1b2c3")
    ///     .with_indices(&["orders"]);
    /// let queued = client
    ///     .restore_snapshot(RestoreSnapshotRequest::new("tenants/search/clusters/logs", source))
    ///     .await?;
    /// client.wait_operation(queued.operation_name()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn restore_snapshot(
        &self,
        mut req: v1::RestoreSnapshotRequest,
    ) -> Result<v1::RestoreSnapshotResponse> {
        ensure_request_id(&mut req.request_id);
        self.retry
            .run(|| {
                let mut c = self.cluster_service();
                let r = self.request(req.clone());
                async move { c.restore_snapshot(r).await.map(|r| r.into_inner()) }
            })
            .await
    }
}
