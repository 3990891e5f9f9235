//! Reading a cluster's Secret: how the worker reaches Elasticsearch, and
//! how the control plane answers `GetClusterCredentials`. The password and
//! CA live only there.

use std::net::SocketAddr;

use esaas_core::backend::{StepResult, Target};
use esaas_core::names::{ClusterId, TenantId};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::es::{EsAccess, EsEndpoint};
use crate::names;
use crate::render::Secrets;
use crate::workloads::{kube_error, secrets_of};

/// Reads `tenant`/`cluster`'s password and TLS material; `None` while the
/// Secret does not exist or is incomplete.
pub async fn read_secrets(
    client: &kube::Client,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> StepResult<Option<Secrets>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &names::namespace_of(tenant));
    match api.get_opt(&names::secret_of(cluster)).await {
        Ok(s) => Ok(s.as_ref().and_then(secrets_of)),
        Err(e) => Err(kube_error("read the cluster's Secret", e)),
    }
}

/// Reaches each cluster at its client Service with the CA and password from
/// its Secret. `connect_to` sends every connection to one address instead
/// of resolving the Service name (the local setup's Elasticsearch stand-in);
/// the certificate is still checked against the Service name.
#[derive(Clone)]
pub struct SecretAccess {
    client: kube::Client,
    connect_to: Option<SocketAddr>,
}

impl std::fmt::Debug for SecretAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretAccess")
            .field("connect_to", &self.connect_to)
            .finish()
    }
}

impl SecretAccess {
    /// Reads Secrets with `client`.
    pub fn new(client: kube::Client, connect_to: Option<SocketAddr>) -> Self {
        Self { client, connect_to }
    }
}

impl EsAccess for SecretAccess {
    async fn access(&self, t: &Target) -> StepResult<Option<EsEndpoint>> {
        let Some(secrets) = read_secrets(&self.client, &t.tenant, &t.cluster_id).await? else {
            return Ok(None);
        };
        let host = names::http_host(t);
        let port = self.connect_to.map(|a| a.port()).unwrap_or(9200);
        Ok(Some(EsEndpoint {
            url: format!("https://{host}:{port}"),
            ca_pem: secrets.tls.ca_cert_pem,
            password: secrets.password,
            host,
            resolve: self.connect_to,
        }))
    }
}
