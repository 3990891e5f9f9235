//! The stand-in as the product's client (`esaas_k8s::es::EsClient`) sees it.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use esaas_core::backend::Elasticsearch;
use esaas_core::cluster::Health;
use esaas_core::plan::node_key;
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::*;
use crate::es_standin::routes::{Call, answer};

#[tokio::test]
async fn a_healthy_cluster_is_green_with_nothing_excluded() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!(h.status, Health::Green);
    assert_eq!(h.reason, "");
    assert!(h.shards_on_excluded.is_empty());
    // Every node holds shards: 8 primaries + 8 replicas over 3 nodes.
    for p in pods(&f.t, 3) {
        assert!(f.es.shards_on(&f.host, &p) >= 5, "{p}");
    }
    let reqs = f.es.requests();
    assert!(
        reqs.iter().all(|r| r.status == 200 && r.host == f.host),
        "{reqs:?}"
    );
    assert!(reqs.iter().any(|r| r.path == "/_cluster/health"));
    // Green and nothing excluded: no need for the heavy _cat/shards.
    assert!(!reqs.iter().any(|r| r.path.starts_with("/_cat/shards")));
}

#[tokio::test]
async fn a_forced_yellow_names_the_index_and_red_names_primaries() {
    let f = fixture(3, Duration::from_secs(1)).await;
    f.es.force_health(&f.host, Health::Yellow, vec![("logs-7".into(), 2, false)]);
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!(h.status, Health::Yellow);
    assert!(
        h.reason
            .starts_with("index logs-7 has 2 unassigned replicas"),
        "{}",
        h.reason
    );
    f.es.force_health(
        &f.host,
        Health::Red,
        vec![("logs-7".into(), 2, false), ("logs-8".into(), 1, true)],
    );
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!(h.status, Health::Red);
    assert!(
        h.reason
            .starts_with("index logs-8 has 1 unassigned primary"),
        "{}",
        h.reason
    );
    f.es.clear_forced_health(&f.host);
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!((h.status, h.reason.as_str()), (Health::Green, ""));
}

#[tokio::test]
async fn an_excluded_node_drains_to_zero_and_stays_listed() {
    let delay = Duration::from_millis(1500);
    let f = fixture(3, delay).await;
    let victim = names::pod(&f.t, "data-hot", 2);
    let key = node_key("data-hot", 2);
    let before = f.es.shards_on(&f.host, &victim);
    assert!(before > 0);
    let started = Instant::now();
    f.client
        .exclude(&f.t, "data-hot", 2)
        .await
        .expect("exclude");
    f.client
        .exclude(&f.t, "data-hot", 2)
        .await
        .expect("exclude again");
    assert_eq!(f.es.exclusions(&f.host), vec![victim.clone()]);

    let mut seen = Vec::new();
    loop {
        let h = f
            .client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered");
        let n = *h
            .shards_on_excluded
            .get(&key)
            .expect("excluded pod is listed");
        assert_eq!(h.shards_on_excluded.len(), 1, "{h:?}");
        seen.push(n);
        if n == 0 {
            break;
        }
        assert!(started.elapsed() < delay * 3, "did not drain: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Linear: it took about the delay, going down step by step, never up.
    assert!(
        started.elapsed() >= delay * 9 / 10,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen[0] as usize, before, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
    assert!(seen.len() > 3 && seen[seen.len() / 2] < seen[0], "{seen:?}");
    // Drained, still excluded: listed with 0 until the pod goes away.
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!(h.shards_on_excluded, BTreeMap::from([(key.clone(), 0)]));
    assert_eq!(h.status, Health::Green);
    assert_eq!(f.es.shards_on(&f.host, &victim), 0);
    // The move showed as RELOCATING on the way.
    assert!(
        f.es.requests()
            .iter()
            .any(|r| r.path.starts_with("/_cat/shards"))
    );
    // The pod leaves empty-handed: nothing unassigned.
    f.es.set_nodes(&f.host, pods(&f.t, 2));
    assert_eq!(f.es.departures(&f.host), vec![(victim, 0)]);
    assert_eq!(f.es.health(&f.host), Health::Green);
}

#[tokio::test]
async fn a_relocating_shard_still_counts_on_its_source() {
    let f = fixture(3, Duration::from_secs(30)).await;
    f.client
        .exclude(&f.t, "data-hot", 2)
        .await
        .expect("exclude");
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    let victim = names::pod(&f.t, "data-hot", 2);
    assert_eq!(
        h.shards_on_excluded[&node_key("data-hot", 2)] as usize,
        f.es.shards_on(&f.host, &victim)
    );
    let sample = cat_rows(&f);
    let relocating: Vec<&Value> = sample
        .iter()
        .filter(|r| r["state"] == "RELOCATING")
        .collect();
    assert_eq!(relocating.len(), 1, "{sample:?}");
    let cell = relocating[0]["node"].as_str().unwrap_or_default();
    assert!(cell.starts_with(&format!("{victim} -> 10.0.0.")), "{cell}");
}

#[tokio::test]
async fn exclude_drops_names_of_nodes_gone_or_wanted_again() {
    let f = fixture(4, Duration::from_millis(100)).await;
    let smaller = Target {
        spec: ClusterSpec {
            node_sets: vec![NodeSet {
                count: 2,
                ..f.t.spec.node_sets[0].clone()
            }],
            ..f.t.spec.clone()
        },
        ..f.t.clone()
    };
    f.client
        .exclude(&smaller, "data-hot", 3)
        .await
        .expect("exclude 3");
    // Pod 3 leaves; excluding pod 2 drops its name.
    f.es.set_nodes(&f.host, pods(&f.t, 3));
    f.client
        .exclude(&smaller, "data-hot", 2)
        .await
        .expect("exclude 2");
    assert_eq!(
        f.es.exclusions(&f.host),
        vec![names::pod(&f.t, "data-hot", 2)]
    );
    // The spec wants 3 pods again: pod 2 is no longer kept excluded when
    // another pod (of a node set that left the spec) is excluded.
    let grown = Target {
        spec: ClusterSpec {
            node_sets: vec![NodeSet {
                count: 3,
                ..f.t.spec.node_sets[0].clone()
            }],
            ..f.t.spec.clone()
        },
        ..f.t.clone()
    };
    f.client
        .exclude(&grown, "old", 0)
        .await
        .expect("exclude old-0");
    assert_eq!(f.es.exclusions(&f.host), vec![names::pod(&f.t, "old", 0)]);
    // clear_exclusions_except empties the list.
    f.client
        .clear_exclusions_except(&grown, &[])
        .await
        .expect("clear");
    assert!(f.es.exclusions(&f.host).is_empty());
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert!(h.shards_on_excluded.is_empty());
}

#[tokio::test]
async fn a_node_removed_before_it_drained_leaves_replicas_unassigned() {
    let f = fixture(3, Duration::from_secs(30)).await;
    let victim = names::pod(&f.t, "data-hot", 2);
    let held = f.es.shards_on(&f.host, &victim);
    f.es.set_nodes(&f.host, pods(&f.t, 2));
    assert_eq!(f.es.departures(&f.host), vec![(victim.clone(), held)]);
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!(h.status, Health::Yellow, "{h:?}");
    assert!(h.reason.starts_with("index "), "{}", h.reason);
    assert!(h.reason.contains("unassigned replica"), "{}", h.reason);
    assert!(h.reason.contains("(NODE_LEFT)"), "{}", h.reason);
    // It comes back (a restart): its copies go home, green again.
    f.es.set_nodes(&f.host, pods(&f.t, 3));
    assert_eq!(f.es.health(&f.host), Health::Green);
    assert_eq!(f.es.shards_on(&f.host, &victim), held);
}

#[tokio::test]
async fn an_excluded_node_that_drops_out_while_red_is_not_drained() {
    // No replicas: the pod's disk holds the only copy of its shards.
    let f = fixture_with(
        3,
        Duration::from_secs(30),
        vec![IndexDef::new("solo-1", 6, 0)],
    )
    .await;
    let victim = names::pod(&f.t, "data-hot", 2);
    let key = node_key("data-hot", 2);
    f.client
        .exclude(&f.t, "data-hot", 2)
        .await
        .expect("exclude");
    let held = f.es.shards_on(&f.host, &victim);
    assert!(held > 0);
    // The pod crashes mid-drain: Elasticsearch says it holds nothing...
    f.es.set_nodes(&f.host, pods(&f.t, 2));
    assert_eq!(f.es.shards_on(&f.host, &victim), 0);
    // ...but the cluster is red, so it does not count as drained.
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!(h.status, Health::Red);
    assert_eq!(h.shards_on_excluded[&key] as usize, held, "{h:?}");
    assert_eq!(
        h.reason,
        format!("index solo-1 has {held} unassigned primaries (NODE_LEFT)")
    );
    // It comes back and finishes its drain.
    f.es.set_nodes(&f.host, pods(&f.t, 3));
    f.es.set_drain_delay(Duration::ZERO);
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!((h.status, h.shards_on_excluded[&key]), (Health::Green, 0));
}

#[tokio::test]
async fn a_one_node_cluster_is_green_and_red_while_its_node_is_away() {
    let f = fixture(1, Duration::from_millis(100)).await;
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!(h.status, Health::Green);
    f.es.set_nodes(&f.host, vec![]);
    // No node, no master: 503, which is "not reachable".
    assert_eq!(f.client.health(&f.t).await.expect("health"), None);
    f.es.set_nodes(&f.host, pods(&f.t, 1));
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert_eq!(h.status, Health::Green);
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_auth_error() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let bad = EsClient::new(
        TestAccess {
            addr: f.es.addr(),
            ca_pem: f.ca.clone(),
            password: "wrong".into(),
            none: false,
        },
        Duration::from_secs(2),
    );
    let e = bad.health(&f.t).await.expect_err("refused");
    assert!(!e.retryable);
    assert_eq!(e.reason, "ES_AUTH");
    assert!(e.message.contains("401"), "{e}");
    assert!(
        e.message.contains("unable to authenticate user [elastic]"),
        "{e}"
    );
    let e = bad.exclude(&f.t, "data-hot", 1).await.expect_err("refused");
    assert_eq!((e.retryable, e.reason.as_str()), (false, "ES_AUTH"));
    assert!(f.es.requests().iter().any(|r| r.status == 401));
    assert!(f.es.exclusions(&f.host).is_empty());
}

#[tokio::test]
async fn the_401_carries_www_authenticate_like_elasticsearch() {
    let f = fixture(1, Duration::from_secs(1)).await;
    let mut state = lock(&f.es.shared);
    let c = state.clusters.get_mut(&f.host).expect("cluster");
    let (status, headers, body) = answer(
        c,
        &Call {
            method: Method::GET,
            path: "/_cluster/health".into(),
            query: HashMap::new(),
            auth: None,
            content_type: None,
            body: Default::default(),
            started: Instant::now(),
        },
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers
            .iter()
            .any(|(k, v)| *k == "www-authenticate" && v.starts_with("Basic realm=\"security\""))
    );
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"]["type"], "security_exception");
    assert_eq!(body["status"], 401);
}

#[tokio::test]
async fn nothing_listening_or_stopped_is_not_reachable() {
    let f = fixture(3, Duration::from_secs(1)).await;
    assert!(f.client.health(&f.t).await.expect("health").is_some());
    f.es.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(f.client.health(&f.t).await.expect("health"), None);
    // A write is a retryable error instead.
    let e = f
        .client
        .exclude(&f.t, "data-hot", 2)
        .await
        .expect_err("unreachable");
    assert_eq!((e.retryable, e.reason.as_str()), (true, "ES_UNREACHABLE"));

    let nobody: SocketAddr = format!("127.0.0.1:{}", crate::free_port())
        .parse()
        .expect("addr");
    let client = EsClient::new(
        TestAccess {
            addr: nobody,
            ca_pem: tls_for("x").0,
            password: PASSWORD.into(),
            none: false,
        },
        Duration::from_secs(2),
    );
    assert_eq!(client.health(&f.t).await.expect("health"), None);
    // No endpoint yet (no Secret): not reachable either.
    let client = EsClient::new(
        TestAccess {
            addr: nobody,
            ca_pem: String::new(),
            password: String::new(),
            none: true,
        },
        Duration::from_secs(2),
    );
    assert_eq!(client.health(&f.t).await.expect("health"), None);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_not_trusted() {
    let f = fixture(3, Duration::from_secs(1)).await;
    // The client trusts a CA that did not sign the stand-in's certificate.
    let (other_ca, _, _) = tls_for(&f.host);
    let client = EsClient::new(
        TestAccess {
            addr: f.es.addr(),
            ca_pem: other_ca,
            password: PASSWORD.into(),
            none: false,
        },
        Duration::from_secs(2),
    );
    let before = f.es.requests().len();
    assert_eq!(client.health(&f.t).await.expect("health"), None);
    // The handshake failed: no request reached the cluster.
    assert_eq!(f.es.requests().len(), before);
    // A cluster the stand-in does not know gets no certificate at all.
    let stranger = target("other", 3);
    assert_eq!(f.client.health(&stranger).await.expect("health"), None);
}

#[tokio::test]
async fn one_server_serves_many_clusters_by_sni() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let t2 = target("metrics", 2);
    let host2 = names::http_host(&t2);
    let (ca2, cert2, key2) = tls_for(&host2);
    f.es.register(
        &host2,
        "other-password",
        &cert2,
        &key2,
        pods(&t2, 2),
        vec![],
    )
    .expect("register");
    let c2 = EsClient::new(
        TestAccess {
            addr: f.es.addr(),
            ca_pem: ca2,
            password: "other-password".into(),
            none: false,
        },
        Duration::from_secs(2),
    );
    c2.exclude(&t2, "data-hot", 1).await.expect("exclude");
    assert_eq!(
        f.es.exclusions(&host2),
        vec![names::pod(&t2, "data-hot", 1)]
    );
    assert!(f.es.exclusions(&f.host).is_empty());
    let h = f
        .client
        .health(&f.t)
        .await
        .expect("health")
        .expect("answered");
    assert!(h.shards_on_excluded.is_empty());
}
