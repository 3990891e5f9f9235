//! `Workloads` with kube-rs: every object is applied with server-side apply
//! under one field manager (`esaas`), so a repeated step is a no-op and
//! fields others own are left alone.
//!
//! The Secret's password and TLS material are generated once, on the first
//! apply, and read back on every later one: they never change by accident.
//! A StatefulSet counts as ready when the controller has seen its latest
//! spec and the ready pods run the current revision; it is up to date when
//! the hash of its rendered template (stored as an annotation) matches what
//! the spec renders now.

use std::collections::BTreeMap;

use esaas_core::backend::{StepError, StepResult, Target, Workloads, WorkloadsObs};
use esaas_core::catalog::Catalog;
use esaas_core::plan::WorkloadObs;
use esaas_core::spec::VolumeRetention;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::names::{self, secret_keys};
use crate::render::{self, Secrets};
use crate::tls::{self, TlsMaterial};

/// Annotation with the hash of the rendered pod template and claims.
pub const TEMPLATE_HASH: &str = "esaas.io/template-hash";
/// Annotation with the Elasticsearch version the StatefulSet runs.
pub const VERSION: &str = "esaas.io/version";

/// Kubernetes objects of Elasticsearch clusters.
#[derive(Clone)]
pub struct KubeWorkloads {
    client: kube::Client,
    catalog: Catalog,
}

impl std::fmt::Debug for KubeWorkloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeWorkloads").finish_non_exhaustive()
    }
}

/// Maps a kube error: 5xx, 429, 409 and transport trouble are retryable;
/// 4xx (forbidden, invalid) are permanent with the API server's message.
pub fn kube_error(what: &str, e: kube::Error) -> StepError {
    match &e {
        kube::Error::Api(s) => {
            let text = format!("{what}: {} {}: {}", s.code, s.reason, s.message);
            match s.code {
                409 | 429 => StepError::retryable("KUBE_CONFLICT", text),
                c if c >= 500 => StepError::retryable("KUBE_SERVER_ERROR", text),
                401 | 403 => StepError::permanent("KUBE_FORBIDDEN", text),
                _ => StepError::permanent("KUBE_INVALID", text),
            }
        }
        _ => StepError::retryable("KUBE_UNREACHABLE", format!("{what}: {e}")),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn hash<T: Serialize>(v: &T) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..12])
}

/// The hash that says whether a StatefulSet runs what the spec asks: the pod
/// template and the claim templates, without the replica count.
fn template_hash(sts: &StatefulSet) -> String {
    hash(&(&sts.spec.template, &sts.spec.volume_claim_templates))
}

fn secret_text(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// The cluster's password and TLS material from its Secret, if complete.
pub fn secrets_of(s: &Secret) -> Option<Secrets> {
    Some(Secrets {
        password: secret_text(s, secret_keys::PASSWORD)?,
        tls: TlsMaterial {
            ca_cert_pem: secret_text(s, secret_keys::CA_CERT)?,
            cert_pem: secret_text(s, secret_keys::TLS_CERT)?,
            key_pem: secret_text(s, secret_keys::TLS_KEY)?,
        },
    })
}

impl KubeWorkloads {
    /// Uses `client` (from a kubeconfig, or in-cluster) and the size classes of `catalog`.
    pub fn new(client: kube::Client, catalog: Catalog) -> Self {
        Self { client, catalog }
    }

    fn ns_api<K>(&self, t: &Target) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &names::namespace(t))
    }

    #[tracing::instrument(name = "kube", skip_all, fields(otel.name = %format_args!("kube apply {name}"), otel.kind = "client", verb = "apply", url.path = %api.resource_url(), name))]
    async fn apply<K>(&self, api: &Api<K>, name: &str, obj: &K) -> StepResult<()>
    where
        K: kube::Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        api.patch(
            name,
            &PatchParams::apply(names::FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map(|_| ())
        .map_err(|e| kube_error(&format!("apply {name}"), e))
    }

    #[tracing::instrument(name = "kube", skip_all, fields(otel.name = %format_args!("kube get {name}"), otel.kind = "client", verb = "get", url.path = %api.resource_url(), name))]
    async fn get_opt<K>(&self, api: &Api<K>, name: &str) -> StepResult<Option<K>>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        match api.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(kube_error(&format!("get {name}"), e)),
        }
    }

    #[tracing::instrument(name = "kube", skip_all, fields(otel.name = %format_args!("kube delete {name}"), otel.kind = "client", verb = "delete", url.path = %api.resource_url(), name))]
    async fn delete_opt<K>(&self, api: &Api<K>, name: &str) -> StepResult<()>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(kube_error(&format!("delete {name}"), e)),
        }
    }

    /// The password and TLS material of the cluster: read back when they
    /// exist, generated once when they do not.
    async fn secrets(&self, t: &Target) -> StepResult<Secrets> {
        let api: Api<Secret> = self.ns_api(t);
        if let Some(s) = self.get_opt(&api, &names::secret(t)).await?
            && let Some(existing) = secrets_of(&s)
        {
            return Ok(existing);
        }
        let tls =
            tls::generate(t).map_err(|e| StepError::permanent("TLS_GENERATION", e.to_string()))?;
        Ok(Secrets {
            password: tls::random_password(),
            tls,
        })
    }

    async fn stateful_sets(&self, t: &Target) -> StepResult<Vec<StatefulSet>> {
        let api: Api<StatefulSet> = self.ns_api(t);
        let lp = ListParams::default().labels(&names::cluster_selector(t));
        match api.list(&lp).await {
            Ok(list) => Ok(list.items),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(kube_error("list statefulsets", e)),
        }
    }
}

fn partition_of(sts: &StatefulSet) -> i32 {
    sts.spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

fn observe_one(sts: &StatefulSet, expected_hash: Option<&str>) -> WorkloadObs {
    let replicas = sts.spec.replicas.unwrap_or(1);
    let annotations = sts.metadata.annotations.clone().unwrap_or_default();
    let generation = sts.metadata.generation.unwrap_or(0);
    let partition = partition_of(sts);
    let (ready, updated) = match &sts.status {
        Some(st) if st.observed_generation.unwrap_or(0) >= generation => {
            let same_revision =
                st.current_revision.is_some() && st.current_revision == st.update_revision;
            let ready = st.ready_replicas.unwrap_or(0);
            let updated = if same_revision {
                replicas
            } else {
                st.updated_replicas.unwrap_or(0)
            };
            // While a rollout is held, ready means ready, whatever the revision;
            // otherwise only pods at the current revision count.
            let ready = if same_revision || partition > 0 {
                ready
            } else {
                ready.min(updated)
            };
            (ready, updated)
        }
        _ => (0, 0),
    };
    WorkloadObs {
        replicas,
        ready_replicas: ready,
        version: annotations.get(VERSION).cloned().unwrap_or_default(),
        up_to_date: expected_hash
            .is_some_and(|h| annotations.get(TEMPLATE_HASH).map(String::as_str) == Some(h)),
        updated_replicas: updated,
        partition,
    }
}

impl Workloads for KubeWorkloads {
    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid))]
    async fn observe(&self, t: &Target) -> StepResult<WorkloadsObs> {
        let secret: Api<Secret> = self.ns_api(t);
        let service: Api<Service> = self.ns_api(t);
        let base = self.get_opt(&secret, &names::secret(t)).await?.is_some()
            && self
                .get_opt(&service, &names::http_service(t))
                .await?
                .is_some();
        let mut workloads = BTreeMap::new();
        for sts in self.stateful_sets(t).await? {
            let Some(node_set) = sts
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::labels::NODE_SET))
                .cloned()
            else {
                continue;
            };
            // Leftovers of an earlier cluster of this name are not ours.
            let uid = sts
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::labels::CLUSTER_UID));
            if uid.map(String::as_str) != Some(t.uid.to_string().as_str()) {
                continue;
            }
            let expected = render::stateful_set(t, &self.catalog, &node_set, 1)
                .ok()
                .map(|s| template_hash(&s));
            workloads.insert(node_set, observe_one(&sts, expected.as_deref()));
        }
        Ok(WorkloadsObs {
            base_objects: base,
            workloads,
            endpoint: base.then(|| names::endpoint(t)),
        })
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid))]
    async fn apply_base(&self, t: &Target) -> StepResult<()> {
        let secrets = self.secrets(t).await?;
        // The initial master list is for the first bootstrap only: once the
        // cluster has pods, a new config must not carry it.
        let bootstrap = self.stateful_sets(t).await?.is_empty();
        let objs = render::base(t, &secrets, bootstrap);
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        self.apply(&ns_api, &names::namespace(t), &objs.namespace)
            .await?;
        self.apply(&self.ns_api::<Secret>(t), &names::secret(t), &objs.secret)
            .await?;
        self.apply(
            &self.ns_api::<ConfigMap>(t),
            &names::config_map(t),
            &objs.config_map,
        )
        .await?;
        self.apply(
            &self.ns_api::<Service>(t),
            &names::transport_service(t),
            &objs.transport_service,
        )
        .await?;
        self.apply(
            &self.ns_api::<Service>(t),
            &names::http_service(t),
            &objs.http_service,
        )
        .await?;
        self.apply(
            &self.ns_api::<PodDisruptionBudget>(t),
            &names::pdb(t),
            &objs.pdb,
        )
        .await?;
        self.apply(
            &self.ns_api::<NetworkPolicy>(t),
            &names::network_policy(t),
            &objs.network_policy,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, node_set, replicas))]
    async fn apply_node_set(&self, t: &Target, node_set: &str, replicas: i32) -> StepResult<()> {
        let mut sts = render::stateful_set(t, &self.catalog, node_set, replicas)
            .map_err(|e| StepError::permanent("RENDER", e.to_string()))?;
        let h = template_hash(&sts);
        // A new template on running pods is held: no pod moves until the
        // planner lets it, one at a time, with green in between (`roll`).
        let api: Api<StatefulSet> = self.ns_api(t);
        let name = names::stateful_set(t, node_set);
        let partition = match self.get_opt(&api, &name).await? {
            Some(existing) => {
                let old_hash = existing
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(TEMPLATE_HASH));
                if old_hash.map(String::as_str) == Some(h.as_str()) {
                    partition_of(&existing).min(replicas)
                } else {
                    existing.spec.replicas.unwrap_or(0).min(replicas)
                }
            }
            None => 0,
        };
        render::set_partition(&mut sts, partition);
        let annotations = sts.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(TEMPLATE_HASH.into(), h);
        annotations.insert(VERSION.into(), t.spec.version.clone());
        self.apply(&api, &name, &sts).await
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, node_set, partition))]
    async fn roll(&self, t: &Target, node_set: &str, partition: i32) -> StepResult<()> {
        let mut sts = render::stateful_set(t, &self.catalog, node_set, 1)
            .map_err(|e| StepError::permanent("RENDER", e.to_string()))?;
        let api: Api<StatefulSet> = self.ns_api(t);
        let name = names::stateful_set(t, node_set);
        let Some(existing) = self.get_opt(&api, &name).await? else {
            return Err(StepError::retryable(
                "KUBE_NOT_FOUND",
                format!("StatefulSet {name} is gone"),
            ));
        };
        // Re-apply what the StatefulSet holds, with only the partition lowered.
        sts.spec.replicas = existing.spec.replicas;
        render::set_partition(&mut sts, partition);
        let h = template_hash(&sts);
        let annotations = sts.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(TEMPLATE_HASH.into(), h);
        annotations.insert(VERSION.into(), t.spec.version.clone());
        self.apply(&api, &name, &sts).await
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, node_set))]
    async fn delete_node_set(&self, t: &Target, node_set: &str) -> StepResult<()> {
        self.delete_opt(
            &self.ns_api::<StatefulSet>(t),
            &names::stateful_set(t, node_set),
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid))]
    async fn delete_base(&self, t: &Target, retention: VolumeRetention) -> StepResult<()> {
        self.delete_opt(&self.ns_api::<NetworkPolicy>(t), &names::network_policy(t))
            .await?;
        self.delete_opt(&self.ns_api::<PodDisruptionBudget>(t), &names::pdb(t))
            .await?;
        self.delete_opt(&self.ns_api::<Service>(t), &names::http_service(t))
            .await?;
        self.delete_opt(&self.ns_api::<Service>(t), &names::transport_service(t))
            .await?;
        self.delete_opt(&self.ns_api::<ConfigMap>(t), &names::config_map(t))
            .await?;
        if retention == VolumeRetention::Delete {
            let pvcs: Api<PersistentVolumeClaim> = self.ns_api(t);
            let lp = ListParams::default().labels(&names::cluster_selector(t));
            match pvcs.delete_collection(&DeleteParams::default(), &lp).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(kube_error("delete volumes", e)),
            }
        }
        // The Secret goes last: while it exists, a retry can still reach the cluster.
        self.delete_opt(&self.ns_api::<Secret>(t), &names::secret(t))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esaas_core::names::{ClusterId, TenantId};
    use esaas_core::spec::ClusterSpec;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    fn target() -> Target {
        Target {
            uid: uuid::Uuid::nil(),
            tenant: TenantId::parse("t", "search").expect("tenant"),
            cluster_id: ClusterId::parse("c", "logs").expect("cluster"),
            spec: ClusterSpec::test().with_nodes(3),
            generation: 1,
            operation: uuid::Uuid::nil(),
        }
    }

    fn catalog() -> Catalog {
        Catalog {
            versions: vec!["8.15.3".into()],
            size_classes: vec![esaas_core::catalog::SizeClass {
                name: "small".into(),
                instance_type: "r6i.large".into(),
                cpu_millis: 1500,
                memory_mib: 12288,
            }],
            min_storage_gib: 10,
            max_storage_gib: 16384,
            max_node_sets: 8,
            max_nodes_per_set: 50,
            max_zones: 3,
            upgrades: Default::default(),
        }
    }

    fn status(code: u16, reason: &str) -> Response<Body> {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "code": code, "message": reason,
        });
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response")
    }

    #[tokio::test]
    async fn a_node_set_is_server_side_applied_with_our_field_manager() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let w = KubeWorkloads::new(kube::Client::new(svc, "default"), catalog());
        let server = tokio::spawn(async move {
            // First a look at what runs (nothing yet: no rollout to hold).
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), Method::GET);
            send.send_response(status(404, "NotFound"));
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/apis/apps/v1/namespaces/esaas-search/statefulsets/logs-default"
            );
            let query = req.uri().query().unwrap_or_default().to_string();
            assert!(query.contains("fieldManager=esaas"), "{query}");
            assert!(query.contains("force=true"), "{query}");
            assert_eq!(
                req.headers()["content-type"],
                "application/apply-patch+yaml"
            );
            let body = req.into_body().collect_bytes().await.expect("body");
            let sts: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(sts["spec"]["replicas"], 3);
            assert_eq!(sts["metadata"]["annotations"][VERSION], "8.15.3");
            assert!(sts["metadata"]["annotations"][TEMPLATE_HASH].is_string());
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&sts).expect("json")))
                    .expect("response"),
            );
        });
        w.apply_node_set(&target(), "default", 3)
            .await
            .expect("apply");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_missing_namespace_observes_as_nothing_and_a_forbidden_call_is_permanent() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let w = KubeWorkloads::new(kube::Client::new(svc, "default"), catalog());
        let server = tokio::spawn(async move {
            // the Secret (missing: no need to look further), then the StatefulSet list
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(
                (req.method(), req.uri().path()),
                (
                    &Method::GET,
                    "/api/v1/namespaces/esaas-search/secrets/logs-es"
                )
            );
            send.send_response(status(404, "NotFound"));
            let (req, send) = handle.next_request().await.expect("list");
            assert_eq!(
                req.uri().path(),
                "/apis/apps/v1/namespaces/esaas-search/statefulsets"
            );
            let query = req.uri().query().unwrap_or_default().to_string();
            assert!(
                query.contains(
                    "labelSelector=esaas.io%2Ftenant%3Dsearch%2Cesaas.io%2Fcluster%3Dlogs"
                ),
                "{query}"
            );
            send.send_response(status(404, "NotFound"));
            let (_, send) = handle.next_request().await.expect("delete");
            send.send_response(status(403, "Forbidden"));
        });
        let t = target();
        let seen = w.observe(&t).await.expect("observe");
        assert!(!seen.base_objects && seen.workloads.is_empty() && seen.endpoint.is_none());
        let err = w
            .delete_node_set(&t, "default")
            .await
            .expect_err("forbidden");
        assert!(!err.retryable);
        assert_eq!(err.reason, "KUBE_FORBIDDEN");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn deleting_with_retention_keeps_the_volumes() {
        for (retention, volume_call) in [
            (VolumeRetention::Retain, false),
            (VolumeRetention::Delete, true),
        ] {
            let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
            let w = KubeWorkloads::new(kube::Client::new(svc, "default"), catalog());
            let server = tokio::spawn(async move {
                let mut paths = Vec::new();
                while let Some((req, send)) = handle.next_request().await {
                    assert_eq!(req.method(), Method::DELETE);
                    paths.push(req.uri().path().to_string());
                    send.send_response(status(404, "NotFound"));
                }
                paths
            });
            w.delete_base(&target(), retention).await.expect("delete");
            drop(w);
            let paths = server.await.expect("server");
            let pvc = paths.iter().any(|p| p.ends_with("/persistentvolumeclaims"));
            assert_eq!(pvc, volume_call, "{retention:?}: {paths:?}");
            assert!(
                paths
                    .last()
                    .is_some_and(|p| p.ends_with("/secrets/logs-es")),
                "the Secret goes last"
            );
        }
    }
}
