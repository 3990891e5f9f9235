//! `AdminService`: tenants, API keys and workers.

use futures::stream::BoxStream;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::paging::{ensure_request_id, paged};
use crate::v1;

impl Client {
    /// Creates a tenant (platform admins); safe to retry.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let t = client.create_tenant(esaas_client::v1::CreateTenantRequest {
    ///     tenant_id: "search".into(), ..Default::default()
    /// }).await?;
    /// println!("{} with quota {:?}", t.name, t.quota);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_tenant(&self, mut req: v1::CreateTenantRequest) -> Result<v1::Tenant> {
        ensure_request_id(&mut req.request_id);
        let resp = self
            .retry
            .run(|| {
                let mut c = self.admin_service();
                let r = self.request(req.clone());
                async move { c.create_tenant(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.tenant.unwrap_or_default())
    }

    /// A tenant with its quota and usage (its members may read their own).
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let t = client.get_tenant("tenants/search").await?;
    /// println!("{:?} of {:?}", t.usage, t.quota);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_tenant(&self, name: &str) -> Result<v1::Tenant> {
        let req = v1::GetTenantRequest { name: name.into() };
        let resp = self
            .retry
            .run(|| {
                let mut c = self.admin_service();
                let r = self.request(req.clone());
                async move { c.get_tenant(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.tenant.unwrap_or_default())
    }

    /// Every tenant, in name order (platform admins).
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use futures::TryStreamExt;
    /// let tenants: Vec<_> = client.list_tenants(Default::default()).try_collect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_tenants(
        &self,
        req: v1::ListTenantsRequest,
    ) -> BoxStream<'static, Result<v1::Tenant>> {
        let client = self.clone();
        paged(
            self.retry.clone(),
            req,
            move |req| {
                let mut c = client.admin_service();
                let r = client.request(req);
                async move { c.list_tenants(r).await.map(|r| r.into_inner()) }
            },
            |p| (p.tenants, p.next_page_token),
            |r, t| r.page_token = t,
        )
    }

    /// Replaces a tenant's quota (platform admins); safe to retry.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let quota = esaas_client::v1::Quota { max_clusters: 10, max_nodes: 60, max_storage_gib: 20480 };
    /// client.update_tenant_quota("tenants/search", quota).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_tenant_quota(&self, name: &str, quota: v1::Quota) -> Result<v1::Tenant> {
        let mut req = v1::UpdateTenantQuotaRequest {
            name: name.into(),
            quota: Some(quota),
            request_id: String::new(),
        };
        ensure_request_id(&mut req.request_id);
        let resp = self
            .retry
            .run(|| {
                let mut c = self.admin_service();
                let r = self.request(req.clone());
                async move { c.update_tenant_quota(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.tenant.unwrap_or_default())
    }

    /// Creates an API key (platform admins); the answer holds its secret, shown only
    /// once. Safe to retry: if the first attempt's answer was lost, the retry finds the
    /// key made, but the platform keeps no copy of its secret, so this returns an
    /// error naming the key (revoke it and create another) rather than a key without
    /// a secret.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use esaas_client::v1;
    /// let issued = client.create_api_key(v1::CreateApiKeyRequest {
    ///     parent: "tenants/search".into(),
    ///     api_key: Some(v1::ApiKey { display_name: "search CI".into(), role: v1::Role::TenantAdmin as i32, ..Default::default() }),
    ///     ..Default::default()
    /// }).await?;
    /// println!("export ESAAS_KEY={}", issued.secret);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_api_key(
        &self,
        mut req: v1::CreateApiKeyRequest,
    ) -> Result<v1::CreateApiKeyResponse> {
        ensure_request_id(&mut req.request_id);
        let resp = self
            .retry
            .run(|| {
                let mut c = self.admin_service();
                let r = self.request(req.clone());
                async move { c.create_api_key(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        if resp.secret.is_empty() {
            let name = resp.api_key.map(|k| k.name).unwrap_or_default();
            return Err(Error::from(tonic::Status::data_loss(format!(
                "{name} was created, but the answer holding its secret was lost and the \
                 platform keeps no copy: revoke {name} and create another key"
            ))));
        }
        Ok(resp)
    }

    /// Every API key `req` selects, oldest first, without secrets.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use futures::TryStreamExt;
    /// let req = esaas_client::v1::ListApiKeysRequest { parent: "tenants/search".into(), ..Default::default() };
    /// let keys: Vec<_> = client.list_api_keys(req).try_collect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_api_keys(
        &self,
        req: v1::ListApiKeysRequest,
    ) -> BoxStream<'static, Result<v1::ApiKey>> {
        let client = self.clone();
        paged(
            self.retry.clone(),
            req,
            move |req| {
                let mut c = client.admin_service();
                let r = client.request(req);
                async move { c.list_api_keys(r).await.map(|r| r.into_inner()) }
            },
            |p| (p.api_keys, p.next_page_token),
            |r, t| r.page_token = t,
        )
    }

    /// Revokes an API key at once (platform admins); revoking twice keeps the first
    /// revoke time, so it is retried like a read.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let key = client.revoke_api_key("tenants/search/apiKeys/7b0c...").await?;
    /// assert!(key.revoke_time.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn revoke_api_key(&self, name: &str) -> Result<v1::ApiKey> {
        let req = v1::RevokeApiKeyRequest { name: name.into() };
        let resp = self
            .retry
            .run(|| {
                let mut c = self.admin_service();
                let r = self.request(req.clone());
                async move { c.revoke_api_key(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.api_key.unwrap_or_default())
    }

    /// The workers connected to the control plane, with their leases (platform admins).
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// for w in client.list_workers().await? {
    ///     println!("{} in {}: {} of {}", w.name, w.region, w.leases.len(), w.capacity);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_workers(&self) -> Result<Vec<v1::Worker>> {
        let resp = self
            .retry
            .run(|| {
                let mut c = self.admin_service();
                let r = self.request(v1::ListWorkersRequest {});
                async move { c.list_workers(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.workers)
    }
}
