//! Snapshot repositories, snapshots and restores on the wire, with their
//! data in moto's S3: Elasticsearch's status codes and error bodies, and
//! real objects in the bucket that another cluster can restore from.

use serde_json::json;

use super::super::s3::S3;
use super::*;

/// A bucket of its own in the shared moto, and the stand-in's client to it.
async fn bucket() -> (S3, String) {
    let moto = crate::moto::shared().await;
    let s3 = S3::new(&moto.endpoint);
    let name = format!("snaps-{}", Uuid::new_v4().simple());
    let created = {
        let (s3, name) = (s3.clone(), name.clone());
        tokio::task::spawn_blocking(move || s3.create_bucket(&name))
            .await
            .expect("join")
    };
    created.expect("create the bucket");
    (s3, name)
}

/// A fixture whose stand-in stores to the shared moto.
async fn fixture_s3() -> Fixture {
    let f = fixture(1, Duration::from_millis(10)).await;
    f.es.set_s3_endpoint(&crate::moto::shared().await.endpoint);
    f
}

async fn call(f: &Fixture, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let (status, _, body) = send(f, method, path, Auth::Elastic, body).await;
    (status, body)
}

async fn object(s3: &S3, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let (s3, bucket, key) = (s3.clone(), bucket.to_string(), key.to_string());
    tokio::task::spawn_blocking(move || s3.get(&bucket, &key))
        .await
        .expect("join")
        .expect("S3 get")
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, kind: &str, reason: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["status"], want.as_u16(), "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["root_cause"][0]["type"], kind, "{body}");
    let got = body["error"]["reason"].as_str().unwrap_or_default();
    assert!(got.contains(reason), "{got:?} should contain {reason:?}");
}

fn repo_body(bucket: &str, base_path: &str) -> Value {
    json!({ "type": "s3", "settings": { "bucket": bucket, "base_path": base_path } })
}

#[tokio::test]
async fn a_repository_in_a_bucket_that_does_not_exist_fails_verification_as_s3_would() {
    let f = fixture_s3().await;
    let (status, body) = call(
        &f,
        Method::PUT,
        "/_snapshot/platform",
        Some(repo_body("no-such-bucket-at-all", "acme/1234")),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "repository_verification_exception",
        "[platform] path [acme][1234] is not accessible on master node",
    );
    let cause = body["error"]["caused_by"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(cause.contains("Error Code: NoSuchBucket"), "{cause}");
    // Verification again, on its own endpoint, fails the same way.
    let (status, body) = call(&f, Method::POST, "/_snapshot/platform/_verify", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    // Another type, or no bucket: RepositoryException.
    let (status, body) = call(
        &f,
        Method::PUT,
        "/_snapshot/other",
        Some(json!({ "type": "fs", "settings": { "location": "/x" } })),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "repository_exception",
        "[other] repository type [fs] does not exist",
    );
    let (status, body) = call(
        &f,
        Method::PUT,
        "/_snapshot/other",
        Some(json!({ "type": "s3", "settings": {} })),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "repository_exception",
        "No bucket defined for s3 repository",
    );
}

#[tokio::test]
async fn snapshot_apis_refuse_a_missing_repository_or_snapshot_and_invalid_names() {
    let f = fixture_s3().await;
    let (_, bucket) = bucket().await;
    for (method, path) in [
        (
            Method::PUT,
            "/_snapshot/nope/snap-1?wait_for_completion=true",
        ),
        (Method::GET, "/_snapshot/nope/_all"),
        (Method::DELETE, "/_snapshot/nope/snap-1"),
        (Method::POST, "/_snapshot/nope/snap-1/_restore"),
        (Method::GET, "/_snapshot/nope"),
    ] {
        let (status, body) = call(&f, method.clone(), path, None).await;
        assert_error(
            status,
            &body,
            StatusCode::NOT_FOUND,
            "repository_missing_exception",
            "[nope] missing",
        );
    }
    let (status, body) = call(
        &f,
        Method::PUT,
        "/_snapshot/r",
        Some(repo_body(&bucket, "t/c")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "acknowledged": true }));
    for (name, why) in [
        ("Snap-1", "must be lowercase"),
        ("_snap", "must not start with '_'"),
        (
            "a*b",
            "must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?]",
        ),
    ] {
        let (status, body) = call(&f, Method::PUT, &format!("/_snapshot/r/{name}"), None).await;
        assert_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "invalid_snapshot_name_exception",
            &format!("[r:{name}] Invalid snapshot name [{name}], {why}"),
        );
    }
    for (method, path) in [
        (Method::GET, "/_snapshot/r/snap-9"),
        (Method::DELETE, "/_snapshot/r/snap-9"),
        (Method::POST, "/_snapshot/r/snap-9/_restore"),
    ] {
        let (status, body) = call(&f, method, path, None).await;
        assert_error(
            status,
            &body,
            StatusCode::NOT_FOUND,
            "snapshot_missing_exception",
            "[r:snap-9] is missing",
        );
    }
}

#[tokio::test]
async fn documents_survive_a_snapshot_in_s3_and_a_restore_into_another_cluster() {
    let f = fixture_s3().await;
    let (s3, bucket) = bucket().await;
    for id in ["1", "2", "3"] {
        let (status, body) = call(
            &f,
            Method::PUT,
            &format!("/orders/_doc/{id}"),
            Some(json!({"n": id})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["result"], "created");
    }
    let (status, body) = call(&f, Method::PUT, "/orders/_doc/3", Some(json!({"n": 3}))).await;
    assert_eq!(
        (status, body["result"].clone()),
        (StatusCode::OK, json!("updated"))
    );
    let (status, body) = call(&f, Method::POST, "/orders/_doc", Some(json!({"n": 4}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(&f, Method::GET, "/orders/_count", None).await;
    assert_eq!((status, body["count"].clone()), (StatusCode::OK, json!(4)));
    let (status, body) = call(&f, Method::GET, "/nothing/_count", None).await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "index_not_found_exception",
        "no such index [nothing]",
    );

    let (status, body) = call(
        &f,
        Method::PUT,
        "/_snapshot/r",
        Some(repo_body(&bucket, "acme/uid-1")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        &f,
        Method::PUT,
        "/_snapshot/r/snap-1?wait_for_completion=true",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["snapshot"]["state"], "SUCCESS", "{body}");
    assert_eq!(body["snapshot"]["snapshot"], "snap-1");
    let uuid = body["snapshot"]["uuid"].as_str().expect("uuid").to_string();
    // Real objects in the bucket, under the base path.
    assert_eq!(
        object(&s3, &bucket, "acme/uid-1/index.latest").await,
        Some(b"0".to_vec())
    );
    assert!(
        object(&s3, &bucket, &format!("acme/uid-1/snap-{uuid}.dat"))
            .await
            .is_some()
    );
    let (status, body) = call(&f, Method::PUT, "/_snapshot/r/snap-1", None).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_snapshot_name_exception",
        "[r:snap-1] Invalid snapshot name [snap-1], snapshot with the same name already exists",
    );
    let (status, body) = call(&f, Method::GET, "/_snapshot/r/_all", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["snapshots"][0]["snapshot"], "snap-1");

    // Over an open index of the same name: refused; renamed: restored.
    let (status, body) = call(
        &f,
        Method::POST,
        "/_snapshot/r/snap-1/_restore?wait_for_completion=true",
        Some(json!({ "indices": "orders" })),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "snapshot_restore_exception",
        "cannot restore index [orders] because an open index with same name already exists in the cluster",
    );
    let (status, body) = call(
        &f,
        Method::POST,
        "/_snapshot/r/snap-1/_restore?wait_for_completion=true",
        Some(json!({ "indices": "orders", "rename_pattern": "(.+)", "rename_replacement": "restored-$1" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["snapshot"]["indices"], json!(["restored-orders"]));
    let (_, body) = call(&f, Method::GET, "/restored-orders/_count", None).await;
    assert_eq!(body["count"], 4, "{body}");
    // The recovery API tells a restored index from one created by writes.
    let (status, body) = call(&f, Method::GET, "/restored-orders,orders/_recovery", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let restored = &body["restored-orders"]["shards"][0];
    assert_eq!(restored["type"], "SNAPSHOT", "{body}");
    assert_eq!(restored["primary"], true, "{body}");
    assert_eq!(restored["source"]["repository"], "r", "{body}");
    assert_eq!(restored["source"]["snapshot"], "snap-1", "{body}");
    assert_eq!(restored["source"]["index"], "orders", "{body}");
    assert_eq!(body["orders"]["shards"][0]["type"], "EMPTY_STORE", "{body}");
    let (status, body) = call(&f, Method::GET, "/nothing/_recovery", None).await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "index_not_found_exception",
        "no such index [nothing]",
    );

    // Another cluster (another stand-in) registers the same place read-only:
    // what it restores comes from the bucket.
    let other = fixture_s3().await;
    let mut readonly = repo_body(&bucket, "acme/uid-1");
    readonly["settings"]["readonly"] = json!(true);
    let (status, body) = call(&other, Method::PUT, "/_snapshot/source", Some(readonly)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&other, Method::PUT, "/_snapshot/source/snap-2", None).await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "repository_exception",
        "[source] cannot create snapshot in a readonly repository",
    );
    let (status, body) = call(
        &other,
        Method::POST,
        "/_snapshot/source/snap-1/_restore?wait_for_completion=true",
        Some(json!({ "indices": "orders" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(other.es.doc_counts(&other.host).get("orders"), Some(&4));

    let (status, body) = call(&f, Method::DELETE, "/_snapshot/r/snap-1", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "acknowledged": true }))
    );
    assert!(
        object(&s3, &bucket, &format!("acme/uid-1/snap-{uuid}.dat"))
            .await
            .is_none()
    );
    let (status, body) = call(&f, Method::GET, "/_snapshot/r/snap-1", None).await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "snapshot_missing_exception",
        "[r:snap-1] is missing",
    );
}

/// Through the product's client: the repository a cluster gets, a snapshot
/// taken twice by a retried step, and a restore into another cluster from the
/// source's path registered read-only.
#[tokio::test]
async fn the_products_client_snapshots_and_restores_into_another_cluster() {
    use esaas_core::snapshots::{own_repository, source_repository};
    let f = fixture_s3().await;
    let (_, bucket) = bucket().await;
    let own = own_repository(&bucket, &f.t.tenant, f.t.uid);
    let missing = own_repository("no-such-bucket-here", &f.t.tenant, f.t.uid);
    let e = f
        .client
        .register_repository(&f.t, &missing)
        .await
        .expect_err("no bucket");
    assert!(
        e.message.contains("repository_verification_exception"),
        "{e:?}"
    );
    f.client
        .register_repository(&f.t, &own)
        .await
        .expect("register");
    f.es.write_docs(&f.host, "orders", 25);
    let taken = f
        .client
        .create_snapshot(&f.t, &own.name, "manual-20260101-000000")
        .await
        .expect("snapshot");
    assert_eq!(taken.state, "SUCCESS");
    assert!(taken.indices.contains(&"orders".to_string()), "{taken:?}");
    let again = f
        .client
        .create_snapshot(&f.t, &own.name, "manual-20260101-000000")
        .await
        .expect("a retry finds the snapshot");
    assert_eq!(again.name, taken.name);
    let listed = f
        .client
        .list_snapshots(&f.t, &own.name)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");

    let other = fixture_s3().await;
    let source = source_repository(&bucket, &f.t.tenant, f.t.uid);
    other
        .client
        .register_repository(&other.t, &source)
        .await
        .expect("register the source");
    let restored = other
        .client
        .restore_snapshot(&other.t, &source.name, &taken.name, &["orders".to_string()])
        .await
        .expect("restore");
    assert_eq!(restored, ["orders"]);
    assert_eq!(other.es.doc_counts(&other.host).get("orders"), Some(&25));
    // Restoring again over the open index: Elasticsearch's refusal, retryable (a 500).
    let e = other
        .client
        .restore_snapshot(&other.t, &source.name, &taken.name, &["orders".to_string()])
        .await
        .expect_err("open index");
    assert!(e.message.contains("snapshot_restore_exception"), "{e:?}");
    f.client
        .delete_snapshot(&f.t, &own.name, &taken.name)
        .await
        .expect("delete");
    f.client
        .delete_snapshot(&f.t, &own.name, &taken.name)
        .await
        .expect("gone already is done");
    assert!(
        f.client
            .list_snapshots(&f.t, &own.name)
            .await
            .expect("list")
            .is_empty()
    );
}
