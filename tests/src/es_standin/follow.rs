//! Keeps the registered clusters in step with a Kubernetes API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::EsStandin;

/// What [`EsStandin::follow`] registered for a host.
#[derive(PartialEq, Eq)]
struct Followed {
    password: String,
    cert_pem: String,
    key_pem: String,
    nodes: Vec<String>,
}

fn secret_text(s: &k8s_openapi::api::core::v1::Secret, key: &str) -> Option<String> {
    let from_data = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    from_data.or_else(|| s.string_data.as_ref().and_then(|d| d.get(key)).cloned())
}

/// A target with only the ids (enough for every name in `esaas_k8s::names`).
fn target_of(tenant: &str, cluster: &str) -> Option<esaas_core::backend::Target> {
    Some(esaas_core::backend::Target {
        uid: uuid::Uuid::nil(),
        tenant: esaas_core::names::TenantId::parse("tenant", tenant).ok()?,
        cluster_id: esaas_core::names::ClusterId::parse("cluster", cluster).ok()?,
        spec: esaas_core::spec::ClusterSpec {
            version: String::new(),
            node_sets: Vec::new(),
            zone_count: 1,
            volume_retention: esaas_core::spec::VolumeRetention::Delete,
        },
        generation: 0,
        operation: uuid::Uuid::nil(),
    })
}

/// The clusters the Kubernetes API holds now: host → what to register.
async fn observe_kubernetes(client: &kube::Client) -> kube::Result<HashMap<String, Followed>> {
    use esaas_k8s::names::{self, labels, secret_keys};
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, ListParams};

    let managed = ListParams::default().labels(&format!("{}=esaas", labels::MANAGED_BY));
    let secrets = Api::<Secret>::all(client.clone()).list(&managed).await?;
    let sets = Api::<StatefulSet>::all(client.clone())
        .list(&managed)
        .await?;
    let mut out = HashMap::new();
    for s in secrets.items {
        let l = s.metadata.labels.clone().unwrap_or_default();
        let (Some(tenant), Some(cluster)) = (l.get(labels::TENANT), l.get(labels::CLUSTER)) else {
            continue;
        };
        let Some(t) = target_of(tenant, cluster) else {
            continue;
        };
        if s.metadata.name.as_deref() != Some(names::secret(&t).as_str())
            || s.metadata.namespace.as_deref() != Some(names::namespace(&t).as_str())
        {
            continue;
        }
        let (Some(password), Some(cert_pem), Some(key_pem)) = (
            secret_text(&s, secret_keys::PASSWORD),
            secret_text(&s, secret_keys::TLS_CERT),
            secret_text(&s, secret_keys::TLS_KEY),
        ) else {
            continue;
        };
        let mut nodes = Vec::new();
        for set in &sets.items {
            let sl = set.metadata.labels.clone().unwrap_or_default();
            if set.metadata.namespace != s.metadata.namespace
                || sl.get(labels::CLUSTER) != Some(cluster)
            {
                continue;
            }
            let Some(node_set) = sl.get(labels::NODE_SET) else {
                continue;
            };
            let want = set.spec.replicas.unwrap_or(1);
            let ready = set
                .status
                .as_ref()
                .and_then(|st| st.ready_replicas)
                .unwrap_or(0);
            nodes.extend((0..ready.min(want)).map(|i| names::pod(&t, node_set, i)));
        }
        nodes.sort();
        out.insert(
            names::http_host(&t),
            Followed {
                password,
                cert_pem,
                key_pem,
                nodes,
            },
        );
    }
    Ok(out)
}

impl EsStandin {
    /// Keeps the registered clusters in step with a Kubernetes API (the
    /// Kubernetes stand-in of the local setup), every `every`: a cluster is
    /// registered from its Secret (password, node certificate and key) at
    /// its `http_host`, its nodes are the pods `0..readyReplicas` of its
    /// StatefulSets, and it is forgotten when its Secret goes. Needs
    /// all-namespace lists of Secrets and StatefulSets with a label
    /// selector. Ends when the stand-in stops.
    pub fn follow(&self, client: kube::Client, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        let addr = self.addr;
        let stop = self.shared.stop.clone();
        tokio::spawn(async move {
            let mut known: HashMap<String, Followed> = HashMap::new();
            loop {
                match observe_kubernetes(&client).await {
                    Ok(now) => {
                        let Some(shared) = weak.upgrade() else { return };
                        let es = EsStandin { shared, addr };
                        known.retain(|host, _| {
                            let keep = now.contains_key(host);
                            if !keep {
                                es.unregister(host);
                            }
                            keep
                        });
                        for (host, f) in now {
                            let same_cluster = known.get(&host).is_some_and(|k| {
                                (&k.password, &k.cert_pem, &k.key_pem)
                                    == (&f.password, &f.cert_pem, &f.key_pem)
                            });
                            if same_cluster {
                                if known.get(&host).is_some_and(|k| k.nodes != f.nodes) {
                                    es.set_nodes(&host, f.nodes.clone());
                                }
                            } else if let Err(e) = es.register(
                                &host,
                                &f.password,
                                &f.cert_pem,
                                &f.key_pem,
                                f.nodes.clone(),
                                Vec::new(),
                            ) {
                                tracing::warn!(%host, error = %e, "cannot register the cluster");
                                continue;
                            }
                            known.insert(host, f);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "Kubernetes API not readable yet"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use base64::Engine as _;
    use bytes::Bytes;
    use esaas_core::backend::Elasticsearch;
    use esaas_core::cluster::Health;
    use esaas_k8s::es::EsClient;
    use esaas_k8s::names;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;

    use super::*;
    use crate::es_standin::lock;
    use crate::es_standin::tests::{PASSWORD, TestAccess, target, tls_for};

    /// A Kubernetes API answering only the two lists `follow` reads.
    async fn list_server(
        objects: Arc<Mutex<(Vec<Value>, Vec<Value>)>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let objects = objects.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let objects = objects.clone();
                        async move {
                            let (secrets, sets) =
                                objects.lock().unwrap_or_else(|p| p.into_inner()).clone();
                            let body = match req.uri().path() {
                                "/api/v1/secrets" => json!({
                                    "apiVersion": "v1", "kind": "SecretList",
                                    "metadata": {"resourceVersion": "7"}, "items": secrets,
                                }),
                                "/apis/apps/v1/statefulsets" => json!({
                                    "apiVersion": "apps/v1", "kind": "StatefulSetList",
                                    "metadata": {"resourceVersion": "7"}, "items": sets,
                                }),
                                _ => json!({}),
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                body.to_string(),
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn follow_registers_clusters_from_kubernetes_secrets_and_statefulsets() {
        use base64::engine::general_purpose::STANDARD;
        use esaas_k8s::names::{labels, secret_keys};

        let es = EsStandin::start_on(
            "127.0.0.1:0".parse().expect("addr"),
            Duration::from_millis(200),
        )
        .await
        .expect("start");
        let t = target("logs", 3);
        let host = names::http_host(&t);
        let (ca, cert, key) = tls_for(&host);
        let cluster_labels = serde_json::to_value(names::cluster_labels(&t)).expect("labels");
        let mut set_labels = names::node_set_labels(&t, "data-hot");
        set_labels.insert(labels::NODE_SET.into(), "data-hot".into());
        let secret = json!({
            "metadata": {
                "name": names::secret(&t), "namespace": names::namespace(&t),
                "labels": cluster_labels,
            },
            "data": {
                secret_keys::PASSWORD: STANDARD.encode(PASSWORD),
                secret_keys::CA_CERT: STANDARD.encode(&ca),
                secret_keys::TLS_CERT: STANDARD.encode(&cert),
                secret_keys::TLS_KEY: STANDARD.encode(&key),
            },
        });
        let set = |ready: i32| {
            json!({
                "metadata": {
                    "name": names::stateful_set(&t, "data-hot"),
                    "namespace": names::namespace(&t),
                    "labels": set_labels,
                },
                "spec": {"replicas": 3, "selector": {}, "serviceName": "x", "template": {}},
                "status": {"replicas": 3, "readyReplicas": ready},
            })
        };
        let objects = Arc::new(Mutex::new((vec![secret], vec![set(2)])));
        let (kube_addr, kube_task) = list_server(objects.clone()).await;
        let kube = kube::Client::try_from(kube::Config::new(
            format!("http://{kube_addr}").parse().expect("uri"),
        ))
        .expect("kube client");
        let follower = es.follow(kube, Duration::from_millis(50));

        let client = EsClient::new(
            TestAccess {
                addr: es.addr(),
                ca_pem: ca,
                password: PASSWORD.into(),
                none: false,
            },
            Duration::from_secs(2),
        );
        let wait_nodes = |n: usize| {
            let es = es.clone();
            let host = host.clone();
            async move {
                for _ in 0..100 {
                    let there = lock(&es.shared)
                        .clusters
                        .get(&host)
                        .is_some_and(|c| c.nodes.len() == n);
                    if there {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("{host} never had {n} nodes");
            }
        };
        wait_nodes(2).await;
        let h = client.health(&t).await.expect("health").expect("answered");
        assert_eq!(h.status, Health::Green);
        objects.lock().unwrap_or_else(|p| p.into_inner()).1 = vec![set(3)];
        wait_nodes(3).await;
        assert!(es.shards_on(&host, &names::pod(&t, "data-hot", 2)) > 0);
        // The Secret goes: the cluster is forgotten (no certificate, not reachable).
        objects.lock().unwrap_or_else(|p| p.into_inner()).0 = vec![];
        for _ in 0..100 {
            if lock(&es.shared).clusters.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(client.health(&t).await.expect("health"), None);
        es.stop();
        tokio::time::timeout(Duration::from_secs(2), follower)
            .await
            .expect("follower ends with the stand-in")
            .expect("follower");
        kube_task.abort();
    }
}
