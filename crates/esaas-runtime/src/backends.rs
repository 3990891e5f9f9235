//! The real backends a worker drives — EKS node groups, Kubernetes
//! workloads, Elasticsearch — and the Kubernetes credential source of the
//! control plane, built from the configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use esaas_api::{ClusterCredentials, CredentialSource, Credentials};
use esaas_core::names::{ClusterId, TenantId};
use esaas_eks::EksNodeGroups;
use esaas_k8s::access::{SecretAccess, read_secrets};
use esaas_k8s::es::EsClient;
use esaas_k8s::workloads::KubeWorkloads;
use esaas_worker::Backends;
use futures::future::BoxFuture;

use crate::Config;

/// The backends of a worker in production (and in the local setup).
pub type ProductBackends = Backends<EksNodeGroups, KubeWorkloads, EsClient<SecretAccess>>;

/// A Kubernetes client from `[kubernetes]`, with its deadlines on every call.
pub async fn kube_client(config: &Config) -> anyhow::Result<kube::Client> {
    let path = config.kubernetes.kubeconfig.trim();
    let kc = if path.is_empty() {
        kube::Config::infer()
            .await
            .context("finding Kubernetes (KUBECONFIG, ~/.kube/config, in-cluster)")?
    } else {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {path}"))?;
        kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .with_context(|| format!("using {path}"))?
    };
    let deadlines = esaas_k8s::client::Deadlines {
        connect: Duration::from_secs(config.kubernetes.connect_timeout_seconds.max(1)),
        call: Duration::from_secs(config.kubernetes.timeout_seconds.max(1)),
    };
    kube::Client::try_from(esaas_k8s::client::with_deadlines(kc, deadlines))
        .context("building the Kubernetes client")
}

fn connect_to(config: &Config) -> anyhow::Result<Option<SocketAddr>> {
    let c = config.elasticsearch.connect_to.trim();
    if c.is_empty() {
        return Ok(None);
    }
    c.parse()
        .map(Some)
        .with_context(|| format!("elasticsearch.connect_to = {c:?} is not host:port"))
}

/// EKS, Kubernetes and Elasticsearch, as configured.
pub async fn product_backends(config: &Config) -> anyhow::Result<Arc<ProductBackends>> {
    let kube = kube_client(config).await?;
    let node_groups = EksNodeGroups::new(config.eks.clone(), config.catalog.clone()).await;
    let workloads = KubeWorkloads::new(kube.clone(), config.catalog.clone())
        .with_certificate_validity(Duration::from_secs(
            config.certificates.node_validity_seconds,
        ))
        .with_snapshot_storage(config.snapshots.clone());
    let access = SecretAccess::new(kube, connect_to(config)?);
    let elasticsearch = EsClient::new(
        access,
        Duration::from_secs(config.elasticsearch.timeout_seconds.max(1)),
    )
    .with_snapshot_bucket(&config.snapshots.bucket);
    Ok(Arc::new(Backends {
        node_groups,
        workloads,
        elasticsearch,
    }))
}

struct KubeCredentials(kube::Client);

impl CredentialSource for KubeCredentials {
    fn read<'a>(
        &'a self,
        tenant: &'a TenantId,
        cluster: &'a ClusterId,
    ) -> BoxFuture<'a, esaas_core::Result<Option<ClusterCredentials>>> {
        Box::pin(async move {
            let secrets = read_secrets(&self.0, tenant, cluster).await.map_err(|e| {
                esaas_core::Error::Unavailable {
                    message: format!("reading the cluster's Secret: {}", e.reason),
                    retry_after: Duration::from_secs(5),
                }
            })?;
            Ok(secrets.map(|s| ClusterCredentials {
                password: s.password,
                ca_pem: s.tls.ca_cert_pem,
            }))
        })
    }
}

/// The control plane's credential source, when Kubernetes is reachable by
/// configuration; without it GetClusterCredentials answers UNAVAILABLE.
pub async fn credentials(config: &Config) -> Option<Credentials> {
    match kube_client(config).await {
        Ok(client) => Some(Credentials(Arc::new(KubeCredentials(client)))),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no Kubernetes access: GetClusterCredentials will be UNAVAILABLE");
            None
        }
    }
}
