//! The node shutdown and voting exclusion routes on the wire (refusals
//! included), and the product's calls for them (`EsClient::register_restart`
//! and the others) against the stand-in.

use std::collections::BTreeMap;
use std::time::Instant;

use esaas_core::cluster::Health;
use serde_json::json;

use super::*;

/// Asserts an Elasticsearch error body: status, type and reason.
fn assert_es_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str, reason: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["status"], want.as_u16(), "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["reason"], reason, "{body}");
}

async fn put_shutdown(f: &Fixture, id: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, b) = send(
        f,
        Method::PUT,
        &format!("/_nodes/{id}/shutdown"),
        Auth::Elastic,
        Some(body),
    )
    .await;
    (s, b)
}

async fn get(f: &Fixture, path: &str) -> (StatusCode, Value) {
    let (s, _, b) = send(f, Method::GET, path, Auth::Elastic, None).await;
    (s, b)
}

#[tokio::test]
async fn cat_nodes_gives_stable_full_and_short_ids() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let (s, rows) = get(&f, "/_cat/nodes?format=json&h=id,name,master&full_id=true").await;
    assert_eq!(s, StatusCode::OK, "{rows}");
    let p = pods(&f.t, 3);
    for (row, name) in rows.as_array().expect("rows").iter().zip(&p) {
        assert_eq!(row["name"], json!(name));
        assert_eq!(row["id"], json!(f.es.node_id(name)));
        assert_eq!(row["id"].as_str().map(str::len), Some(22));
    }
    assert_eq!(rows[0]["master"], "*");
    let (_, short) = get(&f, "/_cat/nodes?format=json&h=id").await;
    assert_eq!(short[0]["id"].as_str().map(str::len), Some(4));
    let (s, b) = get(&f, "/_cat/nodes?format=json&h=id&full_id=yes").await;
    assert_es_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "illegal_argument_exception",
        "Failed to parse value [yes] as only [true] or [false] are allowed.",
    );
}

#[tokio::test]
async fn a_restart_shutdown_is_registered_complete_and_removed() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let node = pods(&f.t, 3)[1].clone();
    let id = f.es.node_id(&node);
    let (s, b) = put_shutdown(
        &f,
        &id,
        json!({"type": "restart", "reason": "rolling upgrade", "allocation_delay": "10m"}),
    )
    .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"acknowledged": true})));
    assert_eq!(
        f.es.shutdowns(&f.host),
        vec![(node.clone(), "RESTART".into())]
    );
    let (s, b) = get(&f, &format!("/_nodes/{id}/shutdown")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let n = &b["nodes"][0];
    assert_eq!(n["node_id"], json!(id));
    assert_eq!(n["type"], "RESTART");
    assert_eq!(n["reason"], "rolling upgrade");
    assert_eq!(n["allocation_delay"], "10m");
    assert!(n["shutdown_startedmillis"].as_u64().is_some_and(|m| m > 0));
    assert_eq!(n["status"], "COMPLETE");
    assert_eq!(
        n["shard_migration"],
        json!({"status": "COMPLETE", "shard_migrations_remaining": 0,
               "explanation": "no shard relocation is necessary for a node restart"})
    );
    assert_eq!(n["persistent_tasks"], json!({"status": "COMPLETE"}));
    assert_eq!(n["plugins"], json!({"status": "COMPLETE"}));
    // All of them, and an id with no record is left out.
    let (_, all) = get(&f, "/_nodes/shutdown").await;
    assert_eq!(all["nodes"].as_array().map(Vec::len), Some(1));
    let (_, none) = get(&f, "/_nodes/nobody/shutdown").await;
    assert_eq!(none, json!({"nodes": []}));
    // While the node is away its replicas wait for it (allocation_delay,
    // not the stand-in's 1 s), and come back to it.
    let others: Vec<String> = pods(&f.t, 3).into_iter().filter(|p| *p != node).collect();
    f.es.set_nodes(&f.host, others);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_ne!(f.es.health(&f.host), Health::Green);
    f.es.set_nodes(&f.host, pods(&f.t, 3));
    assert_eq!(f.es.health(&f.host), Health::Green);
    let (s, _, b) = send(
        &f,
        Method::DELETE,
        &format!("/_nodes/{id}/shutdown"),
        Auth::Elastic,
        None,
    )
    .await;
    assert_eq!((s, b), (StatusCode::OK, json!({"acknowledged": true})));
    let (s, _, b) = send(
        &f,
        Method::DELETE,
        &format!("/_nodes/{id}/shutdown"),
        Auth::Elastic,
        None,
    )
    .await;
    assert_es_error(
        s,
        &b,
        StatusCode::NOT_FOUND,
        "resource_not_found_exception",
        &format!("node [{id}] is not currently shutting down"),
    );
}

#[tokio::test]
async fn a_remove_shutdown_drains_the_node_and_completes() {
    let f = fixture(3, Duration::from_millis(600)).await;
    let node = pods(&f.t, 3)[2].clone();
    let id = f.es.node_id(&node);
    let (s, _) = put_shutdown(&f, &id, json!({"type": "remove", "reason": "scale in"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = get(&f, &format!("/_nodes/{id}/shutdown")).await;
    assert_eq!(b["nodes"][0]["status"], "IN_PROGRESS", "{b}");
    assert!(b["nodes"][0]["shard_migration"]["shard_migrations_remaining"].as_u64() > Some(0));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(f.es.shards_on(&f.host, &node), 0);
    let (_, b) = get(&f, &format!("/_nodes/{id}/shutdown")).await;
    assert_eq!(b["nodes"][0]["status"], "COMPLETE", "{b}");
    // One for a node that never joined has not started.
    let (_, _) = put_shutdown(&f, "stranger", json!({"type": "remove", "reason": "x"})).await;
    let (_, b) = get(&f, "/_nodes/stranger/shutdown").await;
    assert_eq!(b["nodes"][0]["status"], "NOT_STARTED", "{b}");
    assert_eq!(
        b["nodes"][0]["shard_migration"]["explanation"],
        "node is not currently part of the cluster"
    );
}

#[tokio::test]
async fn put_shutdown_refuses_what_elasticsearch_refuses() {
    let f = fixture(1, Duration::from_secs(1)).await;
    let id = f.es.node_id(&pods(&f.t, 1)[0]);
    let bad = StatusCode::BAD_REQUEST;
    let cases = [
        (json!({"reason": "x"}), "illegal_argument_exception", "Required [type]".to_string()),
        (json!({}), "illegal_argument_exception", "Required [type, reason]".into()),
        (json!({"type": "restart"}), "illegal_argument_exception", "Required [reason]".into()),
        (
            json!({"type": "restart", "reason": "x", "delay": "1m"}),
            "x_content_parse_exception",
            "[put_node_shutdown_request] unknown field [delay]".into(),
        ),
        (
            json!({"type": 5, "reason": "x"}),
            "x_content_parse_exception",
            "[put_node_shutdown_request] type doesn't support values of type: VALUE_NUMBER".into(),
        ),
        (
            json!({"type": "remove", "reason": "x", "allocation_delay": "1m"}),
            "action_request_validation_exception",
            "Validation Failed: 1: allocation_delay is only allowed for RESTART-type shutdown requests;"
                .into(),
        ),
        (
            json!({"type": "replace", "reason": "x"}),
            "action_request_validation_exception",
            "Validation Failed: 1: target node name is required for REPLACE type shutdowns;".into(),
        ),
        (
            json!({"type": "restart", "reason": "x", "target_node_name": "b"}),
            "action_request_validation_exception",
            "Validation Failed: 1: target node name is only valid for REPLACE type shutdowns, but was given type [RESTART] and target node name [b];"
                .into(),
        ),
        (
            json!({"type": "sigterm", "reason": "x"}),
            "action_request_validation_exception",
            "Validation Failed: 1: grace period is required for SIGTERM shutdowns;".into(),
        ),
    ];
    for (body, kind, reason) in cases {
        let (s, b) = put_shutdown(&f, &id, body.clone()).await;
        assert_es_error(s, &b, bad, kind, &reason);
    }
    // What the request's builder throws comes wrapped, with its cause.
    let (s, b) = put_shutdown(&f, &id, json!({"type": "reboot", "reason": "x"})).await;
    assert_es_error(
        s,
        &b,
        bad,
        "x_content_parse_exception",
        "Failed to build [put_node_shutdown_request] after last required field arrived",
    );
    assert_eq!(
        b["error"]["caused_by"],
        json!({"type": "illegal_argument_exception", "reason": "unknown shutdown type: reboot"})
    );
    let (s, b) = put_shutdown(
        &f,
        &id,
        json!({"type": "restart", "reason": "x", "allocation_delay": "ten"}),
    )
    .await;
    assert_eq!(s, bad);
    assert_eq!(b["error"]["caused_by"]["type"], "parse_exception", "{b}");
    // No body at all.
    let (s, _, b) = send(
        &f,
        Method::PUT,
        &format!("/_nodes/{id}/shutdown"),
        Auth::Elastic,
        None,
    )
    .await;
    assert_es_error(s, &b, bad, "parse_exception", "request body is required");
    // Nothing refused was stored; a valid sigterm and replace are taken.
    assert!(f.es.shutdowns(&f.host).is_empty());
    for body in [
        json!({"type": "SIGTERM", "reason": "x", "grace_period": "30s"}),
        json!({"type": "replace", "reason": "x", "target_node_name": "other"}),
    ] {
        let (s, b) = put_shutdown(&f, &id, body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // A method the path does not take.
    let (s, _, b) = send(&f, Method::POST, "/_nodes/shutdown", Auth::Elastic, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
}

#[tokio::test]
async fn voting_exclusions_are_added_read_and_refused_as_elasticsearch_does() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let p = pods(&f.t, 3);
    let post = |q: String| {
        let f = &f;
        async move {
            let (s, h, b) = send(
                f,
                Method::POST,
                &format!("/_cluster/voting_config_exclusions{q}"),
                Auth::Elastic,
                None,
            )
            .await;
            (s, h, b)
        }
    };
    let bad = StatusCode::BAD_REQUEST;
    let both = "You must set [node_names] or [node_ids] but not both";
    let (s, _, b) = post(String::new()).await;
    assert_es_error(s, &b, bad, "illegal_argument_exception", both);
    let (s, _, b) = post("?node_names=a&node_ids=b".into()).await;
    assert_es_error(s, &b, bad, "illegal_argument_exception", both);
    let (s, _, b) = post("?node_names=".into()).await;
    assert_es_error(s, &b, bad, "illegal_argument_exception", both);
    let (s, _, b) = post("?node_names=a&timeout=soon".into()).await;
    assert_es_error(
        s,
        &b,
        bad,
        "parse_exception",
        "failed to parse setting [RestAddVotingConfigExclusionAction.timeout] with value [soon] as a time value: unit is missing or unrecognized",
    );
    // A known node by id and name, an unknown one with `_absent_`; an
    // empty text/plain 200.
    let (s, h, _) = post(format!("?node_names={},gone-0&timeout=5s", p[0])).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; charset=UTF-8")
    );
    assert_eq!(
        f.es.voting_exclusions(&f.host),
        vec![
            (f.es.node_id(&p[0]), p[0].clone()),
            ("_absent_".into(), "gone-0".into())
        ]
    );
    // Again: nothing new.
    let (s, _, _) = post(format!("?node_names={}", p[0])).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(f.es.voting_exclusions(&f.host).len(), 2);
    let (s, b) = get(
        &f,
        "/_cluster/state/metadata?filter_path=metadata.cluster_coordination.voting_config_exclusions",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"metadata": {"cluster_coordination": {"voting_config_exclusions": [
            {"node_id": f.es.node_id(&p[0]), "node_name": p[0]},
            {"node_id": "_absent_", "node_name": "gone-0"}
        ]}}})
    );
    let (_, b) = get(
        &f,
        "/_cluster/state/metadata?filter_path=metadata.cluster_coordination.last_committed_config",
    )
    .await;
    let config = &b["metadata"]["cluster_coordination"]["last_committed_config"];
    assert_eq!(config.as_array().map(Vec::len), Some(1), "{b}");
    // The rest of the state is not modelled: refused, not guessed.
    let (s, _) = get(&f, "/_cluster/state/metadata").await;
    assert_eq!(s, bad);
    let (s, _) = get(&f, "/_cluster/state/metadata?filter_path=metadata.indices").await;
    assert_eq!(s, bad);
    // The maximum (cluster.max_voting_config_exclusions, a known setting).
    let (s, _, b) = send(
        &f,
        Method::PUT,
        "/_cluster/settings",
        Auth::Elastic,
        Some(json!({"persistent": {"cluster.max_voting_config_exclusions": 0}})),
    )
    .await;
    assert_es_error(
        s,
        &b,
        bad,
        "illegal_argument_exception",
        "Failed to parse value [0] for setting [cluster.max_voting_config_exclusions] must be >= 1",
    );
    let (s, _, _) = send(
        &f,
        Method::PUT,
        "/_cluster/settings",
        Auth::Elastic,
        Some(json!({"persistent": {"cluster.max_voting_config_exclusions": 3}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = post(format!("?node_names={},{}", p[1], p[2])).await;
    assert_es_error(
        s,
        &b,
        bad,
        "illegal_argument_exception",
        &format!(
            "add voting config exclusions request for nodes named [{}, {}] would add [2] exclusions to the existing [2] which would exceed the maximum of [3] set by [cluster.max_voting_config_exclusions]",
            p[1], p[2]
        ),
    );
    assert_eq!(f.es.voting_exclusions(&f.host).len(), 2);
}

#[tokio::test]
async fn clearing_voting_exclusions_waits_for_the_nodes_to_leave() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let p = pods(&f.t, 3);
    let (s, _, _) = send(
        &f,
        Method::POST,
        &format!("/_cluster/voting_config_exclusions?node_names={}", p[2]),
        Auth::Elastic,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let delete = |q: &'static str| {
        let f = &f;
        async move {
            send(
                f,
                Method::DELETE,
                &format!("/_cluster/voting_config_exclusions{q}"),
                Auth::Elastic,
                None,
            )
            .await
        }
    };
    // Still there: a timeout after master_timeout, and nothing cleared.
    let started = Instant::now();
    let (s, _, b) = delete("?master_timeout=300ms").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_es_error(
        s,
        &b,
        StatusCode::TOO_MANY_REQUESTS,
        "timeout_exception",
        &format!(
            "timed out waiting for removal of nodes; if nodes should not be removed, set ?wait_for_removal=false. [{{{}}}{{{}}}]",
            f.es.node_id(&p[2]),
            p[2]
        ),
    );
    assert_eq!(f.es.voting_exclusions(&f.host).len(), 1);
    let (s, _, b) = delete("?wait_for_removal=maybe").await;
    assert_es_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "illegal_argument_exception",
        "Failed to parse value [maybe] as only [true] or [false] are allowed.",
    );
    let (s, _, _) = delete("?timeout=1s").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The node leaves while the request waits: it answers then.
    let es = f.es.clone();
    let host = f.host.clone();
    let left = p[..2].to_vec();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        es.set_nodes(&host, left);
    });
    let (s, _, _) = delete("").await;
    assert_eq!(s, StatusCode::OK);
    assert!(f.es.voting_exclusions(&f.host).is_empty());
    // wait_for_removal=false clears at once.
    let (s, _, _) = send(
        &f,
        Method::POST,
        &format!("/_cluster/voting_config_exclusions?node_names={}", p[0]),
        Auth::Elastic,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = delete("?wait_for_removal=false").await;
    assert_eq!(s, StatusCode::OK);
    assert!(f.es.voting_exclusions(&f.host).is_empty());
    // Only the final answer of a waiting request is logged.
    let deletes =
        f.es.requests()
            .into_iter()
            .filter(|r| {
                r.path
                    .starts_with("/_cluster/voting_config_exclusions?master")
            })
            .count();
    assert_eq!(deletes, 1);
}

#[tokio::test]
async fn the_client_registers_reads_and_clears_a_restart() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let node = pods(&f.t, 3)[0].clone();
    f.client
        .register_restart(&f.t, &node, "rolling upgrade to 9.1.0")
        .await
        .expect("register");
    // Idempotent: a restart registered already is left as it is.
    f.client
        .register_restart(&f.t, &node, "another reason")
        .await
        .expect("again");
    let (_, b) = get(&f, &format!("/_nodes/{}/shutdown", f.es.node_id(&node))).await;
    assert_eq!(b["nodes"][0]["reason"], "rolling upgrade to 9.1.0", "{b}");
    assert_eq!(
        f.es.shutdowns(&f.host),
        vec![(node.clone(), "RESTART".into())]
    );
    let statuses = f.client.shutdowns(&f.t).await.expect("shutdowns");
    assert_eq!(
        statuses,
        BTreeMap::from([(node.clone(), "COMPLETE".to_string())])
    );
    // While the pod is away it is still listed by name.
    let others: Vec<String> = pods(&f.t, 3).into_iter().filter(|p| *p != node).collect();
    f.es.set_nodes(&f.host, others);
    let statuses = f.client.shutdowns(&f.t).await.expect("shutdowns");
    assert!(statuses.contains_key(&node), "{statuses:?}");
    // Back: cleared, and clearing again is fine.
    f.es.set_nodes(&f.host, pods(&f.t, 3));
    f.client.clear_shutdown(&f.t, &node).await.expect("clear");
    f.client
        .clear_shutdown(&f.t, &node)
        .await
        .expect("none left");
    assert!(f.es.shutdowns(&f.host).is_empty());
    assert!(f.client.shutdowns(&f.t).await.expect("none").is_empty());
    // A node the cluster does not have: retryable (it may join yet).
    let e = f
        .client
        .register_restart(&f.t, "logs-data-hot-9", "x")
        .await
        .expect_err("unknown node");
    assert_eq!((e.retryable, e.reason.as_str()), (true, "ES_NODE_UNKNOWN"));
}

#[tokio::test]
async fn the_client_excludes_from_voting_and_clears_after_the_nodes_left() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let p = pods(&f.t, 3);
    let leaving = vec![p[1].clone(), p[2].clone()];
    assert!(
        f.client
            .voting_exclusions(&f.t)
            .await
            .expect("none")
            .is_empty()
    );
    f.client
        .exclude_from_voting(&f.t, &leaving)
        .await
        .expect("exclude");
    f.client
        .exclude_from_voting(&f.t, &leaving)
        .await
        .expect("again: nothing to add");
    assert_eq!(
        f.client.voting_exclusions(&f.t).await.expect("read"),
        leaving
    );
    let posts =
        f.es.requests()
            .iter()
            .filter(|r| {
                r.path
                    .starts_with("/_cluster/voting_config_exclusions?node_names=")
            })
            .count();
    assert_eq!(posts, 1);
    // Still in the cluster: clearing times out (retryable), nothing cleared.
    let e = f
        .client
        .clear_voting_exclusions(&f.t)
        .await
        .expect_err("nodes still there");
    assert_eq!(
        (e.retryable, e.reason.as_str()),
        (true, "ES_TIMEOUT"),
        "{e:?}"
    );
    assert_eq!(f.es.voting_exclusions(&f.host).len(), 2);
    f.es.set_nodes(&f.host, vec![p[0].clone()]);
    f.client
        .clear_voting_exclusions(&f.t)
        .await
        .expect("cleared");
    assert!(f.es.voting_exclusions(&f.host).is_empty());
    // A name that cannot be one is refused before anything is sent.
    let e = f
        .client
        .exclude_from_voting(&f.t, &["a,b".to_string()])
        .await
        .expect_err("bad name");
    assert!(!e.retryable);
    // More than the maximum: Elasticsearch's 400, permanent.
    let many: Vec<String> = (0..11).map(|i| format!("gone-{i}")).collect();
    let e = f
        .client
        .exclude_from_voting(&f.t, &many)
        .await
        .expect_err("too many");
    assert_eq!((e.retryable, e.reason.as_str()), (false, "ES_REFUSED"));
    assert!(
        e.message.contains("would exceed the maximum of [10]"),
        "{}",
        e.message
    );
}
