//! Keeps the registered clusters in step with a Kubernetes API, by watching
//! it: kube-rs's `watcher` keeps a reflector store of the managed Secrets
//! and pods (one list, then a watch from its `resourceVersion`,
//! re-listing only when the watch cannot resume), and each change
//! re-registers only the cluster it belongs to. An idle Kubernetes API sees
//! two watch requests every few minutes, however many clusters it holds.
//!
//! A cluster's nodes are its ready pods, each on the version its own
//! container image names (`…/elasticsearch:{version}`): a pod the
//! StatefulSet controller has not replaced yet still runs the old version,
//! whatever the StatefulSet's template or `esaas.io/version` annotation say.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use esaas_k8s::names::{self, labels, secret_keys};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::EsStandin;

/// What [`EsStandin::follow`] registered for a host.
#[derive(PartialEq, Eq)]
struct Followed {
    password: String,
    cert_pem: String,
    key_pem: String,
    /// (node name, Elasticsearch version).
    nodes: Vec<(String, String)>,
}

fn secret_text(s: &Secret, key: &str) -> Option<String> {
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
            zones: Vec::new(),
            volume_retention: esaas_core::spec::VolumeRetention::Delete,
            deletion_protection: false,
            maintenance_window: None,
            change_freezes: Vec::new(),
            snapshot_policy: None,
        },
        generation: 0,
        operation: uuid::Uuid::nil(),
    })
}

/// The cluster an object belongs to, by its labels and namespace.
fn cluster_of(meta: &ObjectMeta) -> Option<esaas_core::backend::Target> {
    let l = meta.labels.as_ref()?;
    let t = target_of(l.get(labels::TENANT)?, l.get(labels::CLUSTER)?)?;
    (meta.namespace.as_deref() == Some(names::namespace(&t).as_str())).then_some(t)
}

/// The stores the watchers keep.
struct Stores {
    secrets: Store<Secret>,
    pods: Store<Pod>,
}

/// Whether `pod` is running and ready (its `Ready` condition is `True`)
/// and not going away: its Elasticsearch node is in the cluster.
fn pod_is_node(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The version `pod` runs: the tag of its `elasticsearch` container's
/// image (the only container when none has that name).
fn pod_version(pod: &Pod) -> Option<String> {
    let containers = &pod.spec.as_ref()?.containers;
    let c = containers
        .iter()
        .find(|c| c.name == "elasticsearch")
        .or(containers.first())?;
    let image = c.image.as_deref()?;
    let (repo, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !repo.is_empty() && !tag.is_empty()).then(|| tag.to_string())
}

impl Stores {
    /// What to register for cluster `t`, if its Secret is complete.
    fn followed(&self, t: &esaas_core::backend::Target) -> Option<Followed> {
        let ns = names::namespace(t);
        let secret = self
            .secrets
            .get(&ObjectRef::new(&names::secret(t)).within(&ns))?;
        let cluster = t.cluster_id.to_string();
        let of_cluster = |meta: &ObjectMeta| {
            meta.namespace.as_deref() == Some(ns.as_str())
                && meta.labels.as_ref().and_then(|l| l.get(labels::CLUSTER)) == Some(&cluster)
        };
        let mut nodes: Vec<(String, String)> = self
            .pods
            .state_filter(|pod| of_cluster(&pod.metadata) && pod_is_node(pod))
            .iter()
            .filter_map(|pod| {
                let name = pod.metadata.name.clone()?;
                // A tag the stand-in cannot read: the version it registers
                // nodes with when none is known.
                let version =
                    pod_version(pod).unwrap_or_else(|| super::DEFAULT_VERSION.to_string());
                Some((name, version))
            })
            .collect();
        nodes.sort();
        Some(Followed {
            password: secret_text(&secret, secret_keys::PASSWORD)?,
            cert_pem: secret_text(&secret, secret_keys::TLS_CERT)?,
            key_pem: secret_text(&secret, secret_keys::TLS_KEY)?,
            nodes,
        })
    }

    /// Every cluster with a Secret now.
    fn clusters(&self) -> Vec<esaas_core::backend::Target> {
        self.secrets
            .state()
            .iter()
            .filter_map(|s| {
                let t = cluster_of(&s.metadata)?;
                (s.metadata.name.as_deref() == Some(names::secret(&t).as_str())).then_some(t)
            })
            .collect()
    }
}

/// What a watch event changed.
enum Changed {
    /// The objects of one cluster.
    Cluster(Box<esaas_core::backend::Target>),
    /// A store was filled anew (the first list, or a re-list).
    Everything(Watched),
    /// Nothing yet (a re-list under way), or nothing of a cluster.
    Nothing,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Watched {
    Secrets,
    Pods,
}

fn changed<K: kube::Resource>(kind: Watched, event: watcher::Event<K>) -> Changed {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
            cluster_of(o.meta()).map_or(Changed::Nothing, |t| Changed::Cluster(Box::new(t)))
        }
        watcher::Event::InitDone => Changed::Everything(kind),
        watcher::Event::Init | watcher::Event::InitApply(_) => Changed::Nothing,
    }
}

/// The clusters registered so far, and how they were registered.
struct Follower {
    es: std::sync::Weak<super::Shared>,
    addr: std::net::SocketAddr,
    known: HashMap<String, Followed>,
}

impl Follower {
    /// Registers, updates or forgets cluster `t` as the stores have it.
    /// `false` when the stand-in is gone.
    fn sync(&mut self, stores: &Stores, t: &esaas_core::backend::Target) -> bool {
        let Some(shared) = self.es.upgrade() else {
            return false;
        };
        let es = EsStandin {
            shared,
            addr: self.addr,
        };
        let host = names::http_host(t);
        let Some(f) = stores.followed(t) else {
            if self.known.remove(&host).is_some() {
                es.unregister(&host);
            }
            return true;
        };
        match self.known.get(&host) {
            Some(k) if *k == f => {}
            // The same cluster: only its nodes changed.
            Some(k)
                if (&k.password, &k.cert_pem, &k.key_pem)
                    == (&f.password, &f.cert_pem, &f.key_pem) =>
            {
                es.set_members(&host, f.nodes.clone());
                self.known.insert(host, f);
            }
            // New TLS files (a rotation): reloaded in place, as Elasticsearch does.
            Some(k) if k.password == f.password => {
                match es.reload_certificate(&host, &f.cert_pem, &f.key_pem) {
                    Ok(()) => {
                        es.set_members(&host, f.nodes.clone());
                        self.known.insert(host, f);
                    }
                    Err(e) => tracing::warn!(%host, error = %e, "cannot reload the certificate"),
                }
            }
            _ => match es.register_members(
                &host,
                &f.password,
                &f.cert_pem,
                &f.key_pem,
                f.nodes.clone(),
                Vec::new(),
            ) {
                Ok(()) => {
                    self.known.insert(host, f);
                }
                Err(e) => tracing::warn!(%host, error = %e, "cannot register the cluster"),
            },
        }
        true
    }

    /// Syncs every cluster: those with a Secret, and those registered before.
    fn sync_all(&mut self, stores: &Stores) -> bool {
        let now = stores.clusters();
        let hosts: HashSet<String> = now.iter().map(names::http_host).collect();
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|h| !hosts.contains(*h))
            .cloned()
            .collect();
        if let Some(shared) = self.es.upgrade() {
            let es = EsStandin {
                shared,
                addr: self.addr,
            };
            for host in gone {
                self.known.remove(&host);
                es.unregister(&host);
            }
        }
        now.iter().all(|t| self.sync(stores, t))
    }
}

impl EsStandin {
    /// Keeps the registered clusters in step with a Kubernetes API (the
    /// Kubernetes stand-in of the local setup) by watching it: a cluster is
    /// registered from its Secret (password, node certificate and key) at
    /// its `http_host`, its nodes are its ready pods, each on the version of
    /// its own image, and it is forgotten when its Secret goes. Needs
    /// all-namespace lists and watches of Secrets and pods with a label
    /// selector. Ends when the stand-in stops.
    pub fn follow(&self, client: kube::Client) -> tokio::task::JoinHandle<()> {
        let mut follower = Follower {
            es: Arc::downgrade(&self.shared),
            addr: self.addr,
            known: HashMap::new(),
        };
        let stop = self.shared.stop.clone();
        tokio::spawn(async move {
            let managed =
                watcher::Config::default().labels(&format!("{}=esaas", labels::MANAGED_BY));
            let (secrets, secrets_writer) = reflector::store();
            let (pods, pods_writer) = reflector::store();
            let stores = Stores { secrets, pods };
            // A watch that fails (the API is not up yet, or went away) is
            // retried with kube-rs's backoff; the stream never ends.
            let secret_events = watcher(Api::<Secret>::all(client.clone()), managed.clone())
                .default_backoff()
                .reflect(secrets_writer)
                .map(|e| e.map(|e| changed(Watched::Secrets, e)));
            let pod_events = watcher(Api::<Pod>::all(client), managed)
                .default_backoff()
                .reflect(pods_writer)
                .map(|e| e.map(|e| changed(Watched::Pods, e)));
            let mut events = std::pin::pin!(futures::stream::select(secret_events, pod_events));
            // Nothing is registered before both stores were filled once, so
            // a cluster never shows up without its nodes.
            let mut filled: Vec<Watched> = Vec::new();
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    e = events.next() => e,
                };
                let alive = match event {
                    None => return,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "Kubernetes watch failed; retrying");
                        true
                    }
                    Some(Ok(Changed::Everything(kind))) => {
                        if !filled.contains(&kind) {
                            filled.push(kind);
                        }
                        filled.len() < 2 || follower.sync_all(&stores)
                    }
                    Some(Ok(Changed::Cluster(t))) => filled.len() < 2 || follower.sync(&stores, &t),
                    Some(Ok(Changed::Nothing)) => true,
                };
                if !alive {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use esaas_core::backend::Elasticsearch;
    use esaas_core::cluster::Health;
    use esaas_k8s::es::EsClient;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
    use serde_json::json;

    use super::*;
    use crate::es_standin::lock;
    use crate::es_standin::tests::{PASSWORD, TestAccess, target, tls_for};
    use crate::kube_standin::KubeStandin;

    #[tokio::test]
    async fn follow_registers_clusters_from_kubernetes_secrets_and_statefulsets() {
        let es = EsStandin::start_on(
            "127.0.0.1:0".parse().expect("addr"),
            Duration::from_millis(200),
        )
        .await
        .expect("start");
        let kube = KubeStandin::start(Duration::from_millis(50)).await;
        let t = target("logs", 3);
        let ns = names::namespace(&t);
        let host = names::http_host(&t);
        let (ca, cert, key) = tls_for(&host);
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        Api::<Namespace>::all(kube.client())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        let secrets = Api::<Secret>::namespaced(kube.client(), &ns);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": names::secret(&t), "labels": names::cluster_labels(&t)},
            "data": {
                secret_keys::PASSWORD: STANDARD.encode(PASSWORD),
                secret_keys::CA_CERT: STANDARD.encode(&ca),
                secret_keys::TLS_CERT: STANDARD.encode(&cert),
                secret_keys::TLS_KEY: STANDARD.encode(&key),
            },
        }))
        .expect("secret");
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
        let sets = Api::<StatefulSet>::namespaced(kube.client(), &ns);
        let pod_labels = json!(names::node_set_labels(&t, "data-hot"));
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {
                "name": names::stateful_set(&t, "data-hot"),
                "labels": names::node_set_labels(&t, "data-hot"),
            },
            "spec": {
                "replicas": 2,
                "serviceName": names::transport_service(&t),
                "selector": {"matchLabels": pod_labels},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {"containers": [{
                        "name": "elasticsearch",
                        "image": "docker.elastic.co/elasticsearch/elasticsearch:8.17.10",
                    }]},
                },
            },
        }))
        .expect("statefulset");
        sets.create(&PostParams::default(), &set)
            .await
            .expect("create statefulset");
        let follower = es.follow(kube.client());

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
        // Nothing changes: the follower asks nothing (it watches, it does not poll).
        kube.clear_requests();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(kube.requests(), vec![]);
        sets.patch(
            &names::stateful_set(&t, "data-hot"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale out");
        wait_nodes(3).await;
        assert!(es.shards_on(&host, &names::pod(&t, "data-hot", 2)) > 0);
        // A new image, rolled to the highest pod only: that node restarts on
        // the new version, the others keep theirs until their pods move.
        sets.patch(
            &names::stateful_set(&t, "data-hot"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
                "template": {"spec": {"containers": [{
                    "name": "elasticsearch",
                    "image": "docker.elastic.co/elasticsearch/elasticsearch:8.19.3",
                }]}},
            }})),
        )
        .await
        .expect("new image");
        let want: Vec<(String, String)> = [(0, "8.17.10"), (1, "8.17.10"), (2, "8.19.3")]
            .into_iter()
            .map(|(i, v)| (names::pod(&t, "data-hot", i), v.to_string()))
            .collect();
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen = es.versions(&host);
            if seen == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, want);
        assert!(es.departures(&host).iter().any(|(n, _)| *n == want[2].0));
        // The Secret goes: the cluster is forgotten (no certificate, not reachable).
        secrets
            .delete(&names::secret(&t), &DeleteParams::default())
            .await
            .expect("delete secret");
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
    }
}
