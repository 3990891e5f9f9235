//! What the stand-in answers on the wire, where Elasticsearch refuses or
//! marks what the product's client would not notice.

use serde_json::json;

use super::*;

const SETTINGS: &str = "/_cluster/settings?flat_settings=true";
const EXCLUDE_NAME: &str = "cluster.routing.allocation.exclude._name";

/// `PUT /_cluster/settings` with `body`.
async fn put(f: &Fixture, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = send(
        f,
        Method::PUT,
        "/_cluster/settings",
        Auth::Elastic,
        Some(body),
    )
    .await;
    (status, body)
}

/// The stored settings, flat: `(persistent, transient)`.
async fn stored(f: &Fixture) -> (Value, Value) {
    let (status, _, body) = send(f, Method::GET, SETTINGS, Auth::Elastic, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (body["persistent"].clone(), body["transient"].clone())
}

/// Asserts an Elasticsearch error body: status, type and reason, in the
/// error and its root cause.
fn assert_es_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str, reason: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["status"], want.as_u16(), "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["reason"], reason, "{body}");
    assert_eq!(body["error"]["root_cause"][0]["type"], kind, "{body}");
    assert_eq!(body["error"]["root_cause"][0]["reason"], reason, "{body}");
}

fn product(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-elastic-product")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn every_answer_but_a_401_names_the_product_as_elasticsearch_does() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let calls: Vec<(Method, &str, Option<Value>, StatusCode)> = vec![
        (Method::GET, "/_cluster/health", None, StatusCode::OK),
        (Method::GET, SETTINGS, None, StatusCode::OK),
        (
            Method::GET,
            "/_cat/nodes?format=json&h=name",
            None,
            StatusCode::OK,
        ),
        (
            Method::PUT,
            "/_cluster/settings",
            Some(json!({"persistent": {EXCLUDE_NAME: null}})),
            StatusCode::OK,
        ),
        (Method::GET, "/_nope", None, StatusCode::BAD_REQUEST),
        (
            Method::DELETE,
            "/_cluster/health",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/_cluster/health?level=shards",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/_cluster/settings",
            Some(json!({"persistent": {"cluster.routing.alocation.enable": "none"}})),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, body, want) in calls {
        let (status, headers, answer) = send(&f, method.clone(), path, Auth::Elastic, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert_eq!(product(&headers), Some("Elasticsearch"), "{method} {path}");
    }
    // No master: a 503 carries it too.
    f.es.set_nodes(&f.host, vec![]);
    let (status, headers, _) = send(&f, Method::GET, "/_cluster/health", Auth::Elastic, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(product(&headers), Some("Elasticsearch"));
    // A 401 does not: Elasticsearch strips it (RestResponse.filterHeaders).
    for auth in [Auth::None, Auth::WrongPassword] {
        let (status, headers, _) = send(&f, Method::GET, "/_cluster/health", auth, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(product(&headers), None);
    }
}

#[tokio::test]
async fn unknown_or_misspelt_settings_are_refused_in_elasticsearchs_words_and_not_stored() {
    let f = fixture(3, Duration::from_secs(1)).await;
    for (body, reason) in [
        (
            json!({"persistent": {"cluster.routing.alocation.enable": "none"}}),
            "persistent setting [cluster.routing.alocation.enable], not recognized",
        ),
        (
            json!({"transient": {"cluster.routing.allocation.exclud._name": "x"}}),
            "transient setting [cluster.routing.allocation.exclud._name], not recognized",
        ),
        // Nested, as Elasticsearch flattens it.
        (
            json!({"persistent": {"cluster": {"routing": {"allocation": {"enabled": "all"}}}}}),
            "persistent setting [cluster.routing.allocation.enabled], not recognized",
        ),
        // A reset of an unknown setting is refused too.
        (
            json!({"persistent": {"cluster.routing.allocation.enable.x": null}}),
            "persistent setting [cluster.routing.allocation.enable.x], not recognized",
        ),
        // Transient is checked first, and one refusal fails the whole
        // request: the good setting beside it is not stored either.
        (
            json!({
                "persistent": {EXCLUDE_NAME: "logs-data-hot-2", "zzz": "1"},
                "transient": {"cluster.routing.allocation.enable": "none", "aaa": "1"},
            }),
            "transient setting [aaa], not recognized",
        ),
        // Wrong values for known settings.
        (
            json!({"persistent": {"cluster.routing.allocation.enable": "sometimes"}}),
            "Illegal allocation.enable value [SOMETIMES]",
        ),
        (
            json!({"persistent": {"cluster.routing.allocation.enable": ["all"]}}),
            "Found list type value for setting [cluster.routing.allocation.enable] but but did \
             not expect a list for it.",
        ),
        (
            json!({"persistent": {"cluster.routing.allocation.exclude._ip": "logs-data-hot-2"}}),
            "invalid IP address [logs-data-hot-2] for [cluster.routing.allocation.exclude._ip]",
        ),
    ] {
        let (status, answer) = put(&f, body.clone()).await;
        assert_es_error(
            status,
            &answer,
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            reason,
        );
        assert_eq!(stored(&f).await, (json!({}), json!({})), "{body}");
    }
    assert!(f.es.exclusions(&f.host).is_empty());
    let (status, answer) = put(&f, json!({"persistent": {}, "transient": {}})).await;
    assert_es_error(
        status,
        &answer,
        StatusCode::BAD_REQUEST,
        "action_request_validation_exception",
        "Validation Failed: 1: no settings to update;",
    );
}

#[tokio::test]
async fn known_settings_are_stored_as_elasticsearch_stores_them() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let (status, answer) = put(
        &f,
        json!({
            "persistent": {
                "cluster.routing.allocation.exclude._name": ["logs-data-hot-1", "logs-data-hot-2"],
                "cluster": {"routing": {"allocation": {"enable": "ALL"}}},
            },
            "transient": {"cluster.routing.allocation.exclude._ip": "10.0.0.*"},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["acknowledged"], true);
    // The answer holds what was set, nested (no flat_settings).
    assert_eq!(
        answer["persistent"]["cluster"]["routing"]["allocation"]["enable"],
        "ALL"
    );
    assert_eq!(
        stored(&f).await,
        (
            json!({
                "cluster.routing.allocation.enable": "ALL",
                "cluster.routing.allocation.exclude._name": ["logs-data-hot-1", "logs-data-hot-2"],
            }),
            json!({"cluster.routing.allocation.exclude._ip": "10.0.0.*"}),
        )
    );
    assert_eq!(
        f.es.exclusions(&f.host),
        vec!["logs-data-hot-1", "logs-data-hot-2"]
    );
    // A key ending in `*` resets every setting it matches.
    let (status, answer) = put(
        &f,
        json!({
            "persistent": {"cluster.routing.allocation.exclude.*": null},
            "transient": {"cluster.routing.allocation.*": null},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        stored(&f).await,
        (
            json!({"cluster.routing.allocation.enable": "ALL"}),
            json!({})
        )
    );
}

#[tokio::test]
async fn a_misspelt_exclude_attribute_is_a_filter_on_an_attribute_no_node_has() {
    let f = fixture(3, Duration::ZERO).await;
    let victim = names::pod(&f.t, "data-hot", 2);
    let held = f.es.shards_on(&f.host, &victim);
    assert!(held > 0);
    // Elasticsearch takes any `exclude.{attribute}` (a custom node
    // attribute), so it takes the typo, and excludes nothing with it.
    let (status, answer) = put(
        &f,
        json!({"persistent": {"cluster.routing.allocation.exclude._nmae": victim}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        stored(&f).await.0,
        json!({"cluster.routing.allocation.exclude._nmae": victim})
    );
    assert!(f.es.exclusions(&f.host).is_empty());
    assert_eq!(f.es.shards_on(&f.host, &victim), held);
}

#[tokio::test]
async fn exclude_filters_match_names_with_wildcards_ips_and_ids() {
    let f = fixture(3, Duration::ZERO).await;
    let node = |i| names::pod(&f.t, "data-hot", i);
    for (attr, value, drained) in [
        ("_name", json!("*-hot-*-2"), 2),
        ("_ip", json!("10.0.0.2"), 1),
        ("_host", json!(["10.0.0.1"]), 0),
        (
            "_id",
            json!(crate::es_standin::cluster::node_id(&node(2))),
            2,
        ),
    ] {
        let key = format!("cluster.routing.allocation.exclude.{attr}");
        let (status, answer) = put(&f, json!({"persistent": {&key: value}})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(f.es.shards_on(&f.host, &node(drained)), 0, "{key}");
        for other in (0..3).filter(|i| *i != drained) {
            assert!(f.es.shards_on(&f.host, &node(other)) > 0, "{key}: {other}");
        }
        let (status, _) = put(&f, json!({"persistent": {&key: null}})).await;
        assert_eq!(status, StatusCode::OK);
        assert!(f.es.shards_on(&f.host, &node(drained)) > 0, "{key} back");
    }
}

#[tokio::test]
async fn allocation_enable_holds_shards_where_they_are() {
    let f = fixture(3, Duration::ZERO).await;
    let victim = names::pod(&f.t, "data-hot", 2);
    let on_victim = |primary: bool| {
        cat_rows(&f)
            .iter()
            .filter(|r| r["node"] == victim.as_str() && (r["prirep"] == "p") == primary)
            .count()
    };
    let (primaries, replicas) = (on_victim(true), on_victim(false));
    assert!(primaries > 0 && replicas > 0, "{primaries} {replicas}");
    let enable = |v: Value| json!({"persistent": {"cluster.routing.allocation.enable": v}});
    assert_eq!(put(&f, enable(json!("none"))).await.0, StatusCode::OK);
    let (status, _) = put(&f, json!({"persistent": {EXCLUDE_NAME: victim}})).await;
    assert_eq!(status, StatusCode::OK);
    // Nothing may move: the excluded node keeps everything.
    assert_eq!((on_victim(true), on_victim(false)), (primaries, replicas));
    // Primaries may move, replicas stay.
    assert_eq!(put(&f, enable(json!("primaries"))).await.0, StatusCode::OK);
    assert_eq!((on_victim(true), on_victim(false)), (0, replicas));
    // Back to the default: the node drains.
    assert_eq!(put(&f, enable(Value::Null)).await.0, StatusCode::OK);
    assert_eq!(f.es.shards_on(&f.host, &victim), 0);
    assert_eq!(f.es.health(&f.host), esaas_core::cluster::Health::Green);

    // A node that leaves while allocation is off leaves its replicas
    // unassigned until it is on again.
    assert_eq!(put(&f, enable(json!("none"))).await.0, StatusCode::OK);
    let (status, _) = put(&f, json!({"persistent": {EXCLUDE_NAME: null}})).await;
    assert_eq!(status, StatusCode::OK);
    let leaving = names::pod(&f.t, "data-hot", 1);
    assert!(f.es.shards_on(&f.host, &leaving) > 0);
    f.es.set_nodes(
        &f.host,
        vec![names::pod(&f.t, "data-hot", 0), victim.clone()],
    );
    assert_eq!(f.es.health(&f.host), esaas_core::cluster::Health::Yellow);
    assert_eq!(put(&f, enable(json!("all"))).await.0, StatusCode::OK);
    assert_eq!(f.es.health(&f.host), esaas_core::cluster::Health::Green);
}

#[tokio::test]
async fn query_parameters_the_stand_in_does_not_model_are_refused() {
    let f = fixture(3, Duration::from_secs(1)).await;
    for (path, reason) in [
        (
            "/_cluster/health?wait_for_status=green",
            "request [/_cluster/health] contains unrecognized parameter: [wait_for_status]",
        ),
        (
            "/_cluster/settings?flat_setting=true&pretty",
            "request [/_cluster/settings] contains unrecognized parameters: [flat_setting], [pretty]",
        ),
    ] {
        let (status, _, answer) = send(&f, Method::GET, path, Auth::Elastic, None).await;
        assert_es_error(
            status,
            &answer,
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            reason,
        );
    }
    // Authentication comes first, as in Elasticsearch.
    let (status, _, _) = send(
        &f,
        Method::GET,
        "/_cluster/health?wait_for_status=green",
        Auth::None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cat_answers_the_columns_it_models_as_json_and_refuses_the_rest() {
    let f = fixture(3, Duration::from_secs(1)).await;
    let (status, _, rows) = send(
        &f,
        Method::GET,
        esaas_k8s::es::CAT_SHARDS,
        Auth::Elastic,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 16, "8 primaries and 8 replicas");
    let keys: Vec<&String> = rows[0].as_object().expect("row").keys().collect();
    assert_eq!(
        keys,
        [
            "index",
            "node",
            "prirep",
            "shard",
            "state",
            "unassigned.reason"
        ]
    );
    for path in [
        "/_cat/shards?format=json&h=index,docs",
        "/_cat/shards?format=json",
        "/_cat/nodes?h=name",
    ] {
        let (status, _, answer) = send(&f, Method::GET, path, Auth::Elastic, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(answer["error"]["type"], "illegal_argument_exception");
        let reason = answer["error"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("the Elasticsearch stand-in does not model"),
            "{reason}"
        );
    }
}
