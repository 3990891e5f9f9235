//! How hard [`EsStandin::follow`] leans on a Kubernetes API that holds many
//! clusters, as under `make dev`: requests per second and CPU of the
//! process (the Kubernetes stand-in and the follower) while nothing
//! changes, how long the first registration of every cluster takes, and
//! how soon a change is seen. A benchmark, so ignored; run it with
//! `cargo test -p esaas-tests --lib follow_load -- --ignored --nocapture`
//! (`ES_STANDIN_BENCH_CLUSTERS`, default 1000).

use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use esaas_k8s::names::{labels, secret_keys};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::*;
use crate::kube_standin::KubeStandin;

const TENANTS: usize = 10;

/// CPU seconds this process has used (user and system; Linux, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Requests per second to `kube` and the process's CPU (in cores) over `window`.
async fn load(kube: &KubeStandin, window: Duration) -> (f64, f64) {
    kube.clear_requests();
    let (cpu, started) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    (
        kube.requests().len() as f64 / secs,
        (cpu_seconds() - cpu) / secs,
    )
}

fn bench_target(i: usize) -> Target {
    let mut t = target(&format!("c{i}"), 1);
    t.tenant = TenantId::parse("t", &format!("t{}", i % TENANTS)).expect("tenant");
    t
}

fn nodes_of(es: &EsStandin, host: &str) -> Option<usize> {
    lock(&es.shared).clusters.get(host).map(|c| c.nodes.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name with --ignored"]
async fn follow_load() {
    let n: usize = std::env::var("ES_STANDIN_BENCH_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let kube = KubeStandin::start(Duration::ZERO).await;
    let client = kube.client();
    // One certificate for every cluster: nothing connects to them here.
    let (_, cert, key) = tls_for("bench");
    for t in (0..TENANTS).map(bench_target) {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": names::namespace(&t)},
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }
    let created = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let (cert, key) = (cert.clone(), key.clone());
            async move {
                let t = bench_target(i);
                let ns = names::namespace(&t);
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": names::secret(&t), "labels": names::cluster_labels(&t)},
                    "data": {
                        secret_keys::PASSWORD: STANDARD.encode(PASSWORD),
                        secret_keys::TLS_CERT: STANDARD.encode(&cert),
                        secret_keys::TLS_KEY: STANDARD.encode(&key),
                    },
                }))
                .expect("secret");
                Api::<Secret>::namespaced(client.clone(), &ns)
                    .create(&PostParams::default(), &secret)
                    .await?;
                let pod_labels = json!({labels::CLUSTER: t.cluster_id.to_string()});
                let set: StatefulSet = serde_json::from_value(json!({
                    "metadata": {
                        "name": names::stateful_set(&t, "data-hot"),
                        "labels": names::node_set_labels(&t, "data-hot"),
                    },
                    "spec": {
                        "replicas": 1,
                        "serviceName": names::transport_service(&t),
                        "selector": {"matchLabels": pod_labels},
                        "template": {
                            "metadata": {"labels": pod_labels},
                            "spec": {"containers": [{"name": "elasticsearch", "image": "es"}]},
                        },
                    },
                }))
                .expect("statefulset");
                Api::<StatefulSet>::namespaced(client, &ns)
                    .create(&PostParams::default(), &set)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("create the clusters");
    let created = created.elapsed();
    let (idle_rps, idle_cpu) = load(&kube, Duration::from_secs(5)).await;

    // What polling costs each round: every managed Secret and StatefulSet.
    let round = Instant::now();
    let managed = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=esaas");
    let listed = serde_json::to_vec(
        &Api::<Secret>::all(client.clone())
            .list(&managed)
            .await
            .expect("list secrets"),
    )
    .expect("json")
    .len()
        + serde_json::to_vec(
            &Api::<StatefulSet>::all(client.clone())
                .list(&managed)
                .await
                .expect("list statefulsets"),
        )
        .expect("json")
        .len();
    let round = round.elapsed();

    let es = EsStandin::start_on("127.0.0.1:0".parse().expect("addr"), Duration::ZERO)
        .await
        .expect("start");
    let started = Instant::now();
    let follower = es.follow(client.clone());
    let hosts: Vec<String> = (0..n).map(|i| names::http_host(&bench_target(i))).collect();
    loop {
        if hosts.iter().all(|h| nodes_of(&es, h) == Some(1)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not every cluster was registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let registered = started.elapsed();
    let (rps, cpu) = load(&kube, Duration::from_secs(10)).await;

    // How soon a new ready pod is a node: scale one cluster out.
    let t = bench_target(n / 2);
    let seen = Instant::now();
    Api::<StatefulSet>::namespaced(client.clone(), &names::namespace(&t))
        .patch(
            &names::stateful_set(&t, "data-hot"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale out");
    while nodes_of(&es, &names::http_host(&t)) != Some(2) {
        assert!(
            seen.elapsed() < Duration::from_secs(30),
            "never saw the new node"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seen = seen.elapsed();
    println!(
        "{n} clusters (created in {created:.1?}); without the follower: {idle_rps:.1} requests/s, \
         {idle_cpu:.2} cores; one list of every Secret and StatefulSet: {:.1} MB in \
         {round:.2?}; with the follower: every cluster registered in {registered:.2?}, then \
         {rps:.1} requests/s, {cpu:.2} cores; a new ready pod was a node {seen:.0?} after the \
         scale-out",
        listed as f64 / 1e6
    );
    es.stop();
    follower.await.expect("follower");
}
