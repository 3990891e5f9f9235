//! Node versions and `NodeVersionAllocationDecider` during a rolling
//! upgrade: replicas never go to a node older than their primary's.

use std::collections::BTreeMap;

use esaas_core::cluster::Health;

use super::*;

const OLD: &str = "8.17.10";
const NEW: &str = "8.19.3";

fn members(f: &Fixture, versions: &[(i32, &str)]) -> Vec<(String, String)> {
    versions
        .iter()
        .map(|(i, v)| (names::pod(&f.t, "data-hot", *i), v.to_string()))
        .collect()
}

/// The node of each started primary, by (index, shard).
fn primaries(f: &Fixture) -> BTreeMap<(String, String), String> {
    cat_rows(f)
        .iter()
        .filter(|r| r["prirep"] == "p" && r["state"] == "STARTED")
        .map(|r| {
            let key = (r["index"].to_string(), r["shard"].to_string());
            (key, r["node"].as_str().expect("node").to_string())
        })
        .collect()
}

#[tokio::test]
async fn cat_nodes_reports_each_nodes_version_and_roles() {
    let f = fixture(3, Duration::from_millis(100)).await;
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, OLD), (2, NEW)]));
    let (status, _, body) = send(
        &f,
        Method::GET,
        "/_cat/nodes?format=json&h=name,version,v,node.role",
        Auth::Elastic,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body.as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{body}");
    for r in rows {
        let want = if r["name"] == names::pod(&f.t, "data-hot", 2) {
            NEW
        } else {
            OLD
        };
        assert_eq!(r["version"], want, "{r}");
        assert_eq!(r["v"], want, "{r}");
        assert_eq!(r["node.role"], "cdfhilmrstw", "{r}");
    }
}

#[tokio::test]
async fn replicas_stay_unassigned_rather_than_go_to_nodes_older_than_their_primary() {
    let delay = Duration::from_millis(100);
    let f = fixture(3, delay).await;
    assert_eq!(f.es.health(&f.host), Health::Green);
    // The highest pod restarts on the new version and comes back at once:
    // its copies go home (an older primary may recover a newer replica).
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, OLD), (2, NEW)]));
    assert_eq!(f.es.health(&f.host), Health::Green);
    assert_eq!(f.es.departures(&f.host).len(), 1);
    let new_node = names::pod(&f.t, "data-hot", 2);
    let old_node = names::pod(&f.t, "data-hot", 0);
    // The next pod stops (its restart is under way) for longer than the
    // allocation delay: a shard it shared with the new node now has its
    // primary there, and its replica may not go to the old node left.
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (2, NEW)]));
    tokio::time::sleep(delay * 3).await;
    assert_eq!(f.es.health(&f.host), Health::Yellow);
    let on = primaries(&f);
    let rows = cat_rows(&f);
    let unassigned: Vec<&Value> = rows.iter().filter(|r| r["state"] == "UNASSIGNED").collect();
    assert!(!unassigned.is_empty(), "{rows:?}");
    for r in &unassigned {
        assert_eq!(r["prirep"], "r", "{r}");
        let key = (r["index"].to_string(), r["shard"].to_string());
        assert_eq!(on.get(&key), Some(&new_node), "{r}");
    }
    // Shards whose primary stayed on the old node got their replica on the new one.
    assert!(
        rows.iter().any(|r| r["prirep"] == "r"
            && r["node"] == new_node.as_str()
            && on.get(&(r["index"].to_string(), r["shard"].to_string())) == Some(&old_node)),
        "{rows:?}"
    );
    // Back on the old version (a plain restart), all nodes are there and
    // it is still yellow, for that reason only.
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, OLD), (2, NEW)]));
    assert_eq!(f.es.health(&f.host), Health::Yellow);
    assert!(
        cat_rows(&f)
            .iter()
            .filter(|r| r["state"] == "UNASSIGNED")
            .all(|r| r["prirep"] == "r"),
        "{:?}",
        cat_rows(&f)
    );
    // On the new version it takes them: green; then the last pod too.
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, NEW), (2, NEW)]));
    assert_eq!(f.es.health(&f.host), Health::Green);
    f.es.set_members(&f.host, members(&f, &[(0, NEW), (1, NEW), (2, NEW)]));
    assert_eq!(f.es.health(&f.host), Health::Green);
    assert!(f.es.versions(&f.host).iter().all(|(_, v)| v == NEW));
}

#[tokio::test]
async fn a_primary_does_not_move_to_an_older_node() {
    let f = fixture(2, Duration::ZERO).await;
    // The second node restarts on the new version: the first one's copies
    // were promoted meanwhile, so every primary is on the old node, then
    // the old one restarts and they fail over to the new node.
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, NEW)]));
    f.es.set_members(&f.host, members(&f, &[(1, NEW)]));
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, NEW)]));
    let new_node = names::pod(&f.t, "data-hot", 1);
    assert!(primaries(&f).values().all(|n| *n == new_node));
    // Drained, the new node keeps its primaries: the old one may not take them.
    let (status, _, body) = send(
        &f,
        Method::PUT,
        "/_cluster/settings",
        Auth::Elastic,
        Some(serde_json::json!({"persistent": {"cluster.routing.allocation.exclude._name": new_node}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(primaries(&f).values().all(|n| *n == new_node));
    assert_eq!(f.es.shards_on(&f.host, &new_node), primaries(&f).len());
}

#[tokio::test]
async fn the_client_tells_yellow_from_versions_apart_from_any_other_yellow() {
    use esaas_core::backend::Elasticsearch;
    let delay = Duration::from_secs(1);
    let f = fixture(3, delay).await;
    let observe = || async {
        f.client
            .health(&f.t)
            .await
            .expect("health")
            .expect("answered")
    };
    let h = observe().await;
    assert_eq!((h.status, h.yellow_from_versions), (Health::Green, false));
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, OLD), (2, NEW)]));
    // A pod away, its replicas waiting for it: a newer node could take
    // those whose primary is on the old one, so not versions only.
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (2, NEW)]));
    let h = observe().await;
    assert_eq!((h.status, h.yellow_from_versions), (Health::Yellow, false));
    // Past the delay, what is left unassigned is kept off the old node by versions.
    tokio::time::sleep(delay * 2).await;
    let h = observe().await;
    assert_eq!(
        (h.status, h.yellow_from_versions),
        (Health::Yellow, true),
        "{h:?}"
    );
    // Every pod back, one on the old version: still versions only.
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, OLD), (2, NEW)]));
    let h = observe().await;
    assert_eq!(
        (h.status, h.yellow_from_versions),
        (Health::Yellow, true),
        "{h:?}"
    );
    // Another yellow on top (a replica that failed to allocate): not versions only.
    f.es.force_health(
        &f.host,
        Health::Yellow,
        vec![("metrics-1".into(), 1, false)],
    );
    let h = observe().await;
    assert_eq!((h.status, h.yellow_from_versions), (Health::Yellow, false));
    f.es.clear_forced_health(&f.host);
    f.es.set_members(&f.host, members(&f, &[(0, OLD), (1, NEW), (2, NEW)]));
    let h = observe().await;
    assert_eq!((h.status, h.yellow_from_versions), (Health::Green, false));
    let asked: Vec<String> = f.es.requests().into_iter().map(|r| r.path).collect();
    assert!(
        asked
            .iter()
            .any(|p| p == "/_cat/nodes?format=json&h=name,version,node.role"),
        "{asked:?}"
    );
}
