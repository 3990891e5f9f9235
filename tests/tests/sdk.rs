//! The Rust SDK (`esaas-client`) against the real control plane: create-and-wait,
//! retries that reuse their request id when an answer is lost, typed errors, list
//! streams over every page, and the calls admins were missing (ListApiKeys, GetCatalog).

use std::time::Duration;

use esaas_client::v1::{self, NodeRole};
use esaas_client::{Client, Error, RetryPolicy};
use esaas_tests::grpc_faults::{GrpcFaultProxy, Loss};
use esaas_tests::sim::SimConfig;
use esaas_tests::*;
use futures::TryStreamExt;
use tonic::Code;

fn sdk_spec(nodes: i32) -> v1::ClusterSpec {
    v1::ClusterSpec::new("8.17.10").with_node_set(
        v1::NodeSet::new("default", nodes, "small", 100)
            .with_roles(&[NodeRole::Master, NodeRole::Data]),
    )
}

async fn client(url: &str, key: &str) -> Client {
    Client::builder(url)
        .key(key)
        .retry(
            RetryPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(100)),
        )
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn create_and_wait_in_a_few_lines() {
    let (app, _sim) = spawn_app_with_workers(1, SimConfig::default(), |_| {}).await;
    let t = app.tenant("search").await;
    let client = client(&format!("http://{}", app.addr), &t.admin).await;

    let created = client
        .create_cluster(v1::CreateClusterRequest::new(
            "tenants/search",
            "logs",
            sdk_spec(3),
        ))
        .await
        .expect("create");
    let op = tokio::time::timeout(
        Duration::from_secs(60),
        client.wait_operation(created.operation_name()),
    )
    .await
    .expect("done within a minute")
    .expect("succeeded");
    assert_eq!(op.state(), v1::OperationState::Succeeded);
    let cluster = client
        .get_cluster("tenants/search/clusters/logs")
        .await
        .expect("get");
    assert_eq!(
        cluster.status.unwrap_or_default().state(),
        v1::ClusterState::Ready
    );

    // Progress is a stream: every message of a finished operation's watch is the end.
    let seen: Vec<_> = client
        .watch_operation(&op.name)
        .try_collect()
        .await
        .expect("watch a done operation");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].done);
}

/// The answer of the first CreateCluster is lost after the server acted on it: the
/// client retries with the same request id, gets the first answer back, and there is
/// exactly one cluster.
#[tokio::test]
async fn a_create_whose_answer_is_lost_is_retried_into_one_cluster() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let proxy = GrpcFaultProxy::start(app.addr).await;
    let client = client(&proxy.url(), &t.admin).await;

    proxy.fail_next("/CreateCluster", Loss::Answer, 2);
    let created = client
        .create_cluster(v1::CreateClusterRequest::new(
            "tenants/search",
            "logs",
            sdk_spec(3),
        ))
        .await
        .expect("the third attempt gets the first answer");

    let calls = proxy.calls("/CreateCluster");
    assert_eq!(
        calls.len(),
        3,
        "two lost answers, one retry that got through"
    );
    let ids: Vec<String> = calls
        .iter()
        .map(|c| {
            c.message::<v1::CreateClusterRequest>()
                .expect("a request")
                .request_id
        })
        .collect();
    assert!(!ids[0].is_empty(), "the client chose a request id");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every attempt carried the same id: {ids:?}"
    );

    let pool = app.db.pool().await;
    let clusters: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(clusters, 1, "one cluster, however many attempts");
    let ops: i64 = sqlx::query_scalar("SELECT count(*) FROM operations")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(ops, 1, "one create operation");
    pool.close().await;
    let cluster = created.cluster.clone().expect("cluster");
    let again = client.get_cluster(&cluster.name).await.expect("get");
    assert_eq!(
        again.uid, cluster.uid,
        "the answer is the first attempt's cluster"
    );
    assert_eq!(
        created.operation_name(),
        again.status.unwrap_or_default().current_operation
    );
}

#[tokio::test]
async fn unreached_servers_and_refusals_are_typed_errors() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let proxy = GrpcFaultProxy::start(app.addr).await;
    let client = client(&proxy.url(), &t.admin).await;

    // Never reached: retried up to the policy's attempts, then UNAVAILABLE.
    proxy.fail_next("/GetCluster", Loss::Request, 3);
    let err = client
        .with_retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(1), Duration::from_millis(5)),
        )
        .get_cluster("tenants/search/clusters/none")
        .await
        .expect_err("unavailable");
    assert_eq!(err.code(), Some(Code::Unavailable));
    assert_eq!(proxy.calls("/GetCluster").len(), 3);

    // A refusal is not retried, and its details are decoded.
    let mut bad = sdk_spec(-1);
    bad.node_sets[0].size_class = "gigantic".into();
    let before = proxy.calls("/CreateCluster").len();
    let err = client
        .create_cluster(v1::CreateClusterRequest::new(
            "tenants/search",
            "Bad_Name",
            bad,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(
        proxy.calls("/CreateCluster").len(),
        before + 1,
        "not retried"
    );
    let Error::Api(e) = err else {
        panic!("an API error: {err:?}")
    };
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.reason(), Some("INVALID_ARGUMENT"));
    let fields: Vec<&str> = e
        .field_violations()
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    for f in [
        "cluster_id",
        "cluster.spec.node_sets[0].count",
        "cluster.spec.node_sets[0].size_class",
    ] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }

    let err = client
        .get_cluster("tenants/search/clusters/none")
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Some(Code::NotFound));
    assert_eq!(
        err.api()
            .and_then(|e| e.resource())
            .map(|r| r.resource_name.as_str()),
        Some("tenants/search/clusters/none")
    );
}

#[tokio::test]
async fn lists_are_streams_over_every_page() {
    let app = spawn_app_with(|c| c.default_quota.max_clusters = 20).await;
    let t = app.tenant("search").await;
    let client = client(&format!("http://{}", app.addr), &t.admin).await;
    for i in 0..7 {
        client
            .create_cluster(v1::CreateClusterRequest::new(
                "tenants/search",
                format!("c{i}"),
                sdk_spec(1),
            ))
            .await
            .expect("create");
    }
    let names: Vec<String> = client
        .list_clusters(v1::ListClustersRequest {
            parent: "tenants/search".into(),
            page_size: 2,
            ..Default::default()
        })
        .map_ok(|c| c.name)
        .try_collect()
        .await
        .expect("list");
    let want: Vec<String> = (0..7)
        .map(|i| format!("tenants/search/clusters/c{i}"))
        .collect();
    assert_eq!(names, want, "four pages, in name order, none repeated");
    let ops: Vec<_> = client
        .list_operations(v1::ListOperationsRequest {
            parent: "tenants/search".into(),
            page_size: 3,
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("operations");
    assert_eq!(ops.len(), 7);
}

#[tokio::test]
async fn list_api_keys_pages_and_never_shows_a_secret() {
    let app = spawn_app().await;
    let a = app.tenant("a").await;
    let _b = app.tenant("b").await;
    let admin = client(&format!("http://{}", app.addr), ADMIN_KEY).await;
    let mut made = vec![a.admin_key_name.clone()];
    for i in 0..3 {
        let issued = admin
            .create_api_key(v1::CreateApiKeyRequest {
                parent: "tenants/a".into(),
                api_key: Some(v1::ApiKey {
                    display_name: format!("ci {i}"),
                    role: v1::Role::TenantViewer as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create key");
        assert!(issued.secret.starts_with("esk_"));
        made.push(issued.api_key.expect("key").name);
    }
    let revoked = made.pop().expect("one to revoke");
    admin.revoke_api_key(&revoked).await.expect("revoke");

    let list = |client: Client, parent: &str, show_revoked: bool| {
        let req = v1::ListApiKeysRequest {
            parent: parent.into(),
            page_size: 1,
            show_revoked,
            ..Default::default()
        };
        async move { client.list_api_keys(req).try_collect::<Vec<_>>().await }
    };
    // a's own admin sees a's keys, oldest first, one page per key; the revoked one only on request.
    let tenant_admin = admin.with_key(&a.admin).expect("key");
    let keys = list(tenant_admin.clone(), "tenants/a", false)
        .await
        .expect("list");
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    // The fixture's viewer key comes between the admin key and the CI keys.
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names[0], a.admin_key_name);
    assert!(
        made[1..].iter().all(|m| names.contains(&m.as_str())),
        "{names:?}"
    );
    assert!(!names.contains(&revoked.as_str()));
    assert!(
        keys.iter()
            .all(|k| k.name.starts_with("tenants/a/apiKeys/"))
    );
    let with_revoked = list(tenant_admin.clone(), "tenants/a", true)
        .await
        .expect("list");
    let gone = with_revoked
        .iter()
        .find(|k| k.name == revoked)
        .expect("the revoked key");
    assert!(gone.revoke_time.is_some());

    // No secret and no hash anywhere in the answer.
    let raw = admin
        .admin_service()
        .list_api_keys(v1::ListApiKeysRequest {
            parent: "tenants/a".into(),
            ..Default::default()
        })
        .await
        .expect("raw list")
        .into_inner();
    let bytes = prost::Message::encode_to_vec(&raw);
    assert!(
        !String::from_utf8_lossy(&bytes).contains("esk_"),
        "no secret in the answer"
    );

    // The platform's own keys and every tenant's, for platform admins only.
    let worker_key = app.worker_key().await;
    assert!(worker_key.starts_with("esk_"));
    let platform = list(admin.clone(), "", false).await.expect("platform keys");
    assert!(
        platform.iter().all(|k| !k.name.starts_with("tenants/")),
        "{platform:?}"
    );
    assert!(platform.iter().any(|k| k.role() == v1::Role::Worker));
    let every = list(admin.clone(), "tenants/-", false)
        .await
        .expect("all tenants");
    assert!(every.iter().any(|k| k.name.starts_with("tenants/b/")));
    let err = list(tenant_admin.clone(), "", false)
        .await
        .expect_err("not a platform admin");
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    let viewer = admin.with_key(&a.viewer).expect("key");
    let err = list(viewer, "tenants/a", false)
        .await
        .expect_err("viewers may not");
    assert_eq!(err.code(), Some(Code::PermissionDenied));

    // A token is bound to its query.
    let first = tenant_admin
        .admin_service()
        .list_api_keys(v1::ListApiKeysRequest {
            parent: "tenants/a".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    let err = tenant_admin
        .admin_service()
        .list_api_keys(v1::ListApiKeysRequest {
            parent: "tenants/a".into(),
            page_size: 1,
            page_token: first.next_page_token,
            show_revoked: true,
        })
        .await
        .expect_err("another query");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_catalog_is_the_configured_one() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let config = esaas_runtime::Config::load(None).expect("defaults").catalog;
    let viewer = client(&format!("http://{}", app.addr), &t.viewer).await;
    let c = viewer.get_catalog().await.expect("catalog");
    assert_eq!(c.versions, config.versions);
    let classes: Vec<(String, String, i32, i32)> = c
        .size_classes
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.instance_type.clone(),
                s.cpu_millis,
                s.memory_mib,
            )
        })
        .collect();
    let want: Vec<(String, String, i32, i32)> = config
        .size_classes
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.instance_type.clone(),
                s.cpu_millis as i32,
                s.memory_mib as i32,
            )
        })
        .collect();
    assert_eq!(classes, want);
    let paths: Vec<(String, Vec<String>)> = c
        .upgrade_paths
        .iter()
        .map(|p| (p.from_minor.clone(), p.to_minors.clone()))
        .collect();
    assert_eq!(
        paths,
        config.upgrades.clone().into_iter().collect::<Vec<_>>()
    );
    assert!(!paths.is_empty(), "the default catalog has upgrade paths");
    let s = c.storage.expect("storage limits");
    assert_eq!(
        (s.min_gib, s.max_gib),
        (config.min_storage_gib, config.max_storage_gib)
    );
    assert_eq!(
        (s.min_iops, s.max_iops, s.max_iops_per_gib),
        (3000, 16000, 500)
    );
    assert_eq!(c.max_zones, config.max_zones);

    let worker = app.worker_key().await;
    let err = viewer
        .with_key(&worker)
        .expect("key")
        .get_catalog()
        .await
        .expect_err("workers may not");
    assert_eq!(err.code(), Some(Code::PermissionDenied));
}

/// A queued create is cancelled at once: the operation ends CANCELLED, the cluster
/// (which never served) is FAILED saying so, and both steps are events of its log. A
/// second cancel returns it unchanged, a retry resumes it, and a delete cannot be
/// cancelled.
#[tokio::test]
async fn cancel_stops_a_queued_operation_and_a_retry_resumes_it() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let client = client(&format!("http://{}", app.addr), &t.admin).await;
    let created = client
        .create_cluster(v1::CreateClusterRequest::new(
            "tenants/search",
            "logs",
            sdk_spec(1),
        ))
        .await
        .expect("create");
    let op_name = created.operation_name().to_string();

    let cancelled = client.cancel_operation(&op_name).await.expect("cancel");
    assert_eq!(cancelled.state(), v1::OperationState::Cancelled);
    assert!(cancelled.done);
    assert_eq!(
        client.get_operation(&op_name).await.expect("get").state(),
        v1::OperationState::Cancelled
    );
    let status = client
        .get_cluster("tenants/search/clusters/logs")
        .await
        .expect("get")
        .status
        .unwrap_or_default();
    assert_eq!(status.state(), v1::ClusterState::Failed);
    assert!(
        status.message.contains("creation cancelled"),
        "{}",
        status.message
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .expect("a Ready condition");
    assert_eq!(
        (ready.status(), ready.reason.as_str()),
        (v1::ConditionStatus::False, "OperationCancelled")
    );
    assert_eq!(status.current_operation, op_name);

    // The log: created, then cancelled by the caller's key.
    let mut events = Vec::new();
    let mut watch = client.watch_cluster("tenants/search/clusters/logs", 1);
    while let Some(item) = tokio::time::timeout(Duration::from_millis(500), watch.try_next())
        .await
        .ok()
        .and_then(|r| r.expect("watch"))
    {
        if let esaas_client::WatchItem::Event(e) = item {
            events.push(e);
        }
    }
    let cancel_event = events
        .iter()
        .find(|e| e.message.contains("cancelled by"))
        .unwrap_or_else(|| panic!("no cancellation event in {events:?}"));
    assert!(
        cancel_event.message.contains(&op_name),
        "{}",
        cancel_event.message
    );

    // Idempotent: the same answer, nothing new in the log.
    let again = client.cancel_operation(&op_name).await.expect("again");
    assert_eq!(again.state(), v1::OperationState::Cancelled);
    assert_eq!(again.update_time, cancelled.update_time);

    // A retry resumes it.
    let resumed = client.retry_operation(&op_name).await.expect("retry");
    assert_eq!(resumed.state(), v1::OperationState::Queued);
    let status = client
        .get_cluster("tenants/search/clusters/logs")
        .await
        .expect("get")
        .status
        .unwrap_or_default();
    assert_eq!(status.state(), v1::ClusterState::Provisioning);

    // A delete cannot be cancelled, and says why.
    let deleted = client
        .delete_cluster(v1::DeleteClusterRequest {
            name: "tenants/search/clusters/logs".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let delete_op = deleted.operation.expect("delete operation").name;
    let err = client
        .cancel_operation(&delete_op)
        .await
        .expect_err("a delete is not cancellable");
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    let api = err.api().expect("an API error");
    let v = api.precondition_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].subject, delete_op);
    assert!(
        v[0].description.contains("deletion cannot be cancelled"),
        "{v:?}"
    );
    // The resumed create was cancelled by the delete; nothing revives it now.
    let err = client
        .retry_operation(&op_name)
        .await
        .expect_err("superseded");
    assert_eq!(err.code(), Some(Code::FailedPrecondition));

    let err = client
        .with_key("esk_unknown")
        .expect("key")
        .cancel_operation(&op_name)
        .await
        .expect_err("unauthenticated first");
    assert_eq!(err.code(), Some(Code::Unauthenticated));
}

/// The snapshot calls on a platform without a snapshot bucket: CreateSnapshot is refused
/// with its precondition (and a retry reuses its request id), the list is an empty
/// stream, restores name snapshots nobody took, and a delete says it takes no final
/// snapshot, and why.
#[tokio::test]
async fn snapshot_calls_without_a_bucket_are_typed_refusals() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let proxy = GrpcFaultProxy::start(app.addr).await;
    let client = client(&proxy.url(), &t.admin).await;
    let name = "tenants/search/clusters/logs";
    client
        .create_cluster(v1::CreateClusterRequest::new(
            "tenants/search",
            "logs",
            sdk_spec(3),
        ))
        .await
        .expect("create");

    proxy.fail_next("/CreateSnapshot", Loss::Request, 1);
    let err = client
        .create_snapshot(v1::CreateSnapshotRequest::new(name))
        .await
        .expect_err("no bucket");
    let Error::Api(e) = err else {
        panic!("an API error: {err:?}")
    };
    assert_eq!(e.code(), Code::FailedPrecondition);
    let kinds: Vec<&str> = e
        .precondition_violations()
        .iter()
        .map(|v| v.r#type.as_str())
        .collect();
    assert_eq!(kinds, ["SNAPSHOTS_NOT_CONFIGURED"]);
    let ids: Vec<String> = proxy
        .calls("/CreateSnapshot")
        .iter()
        .map(|c| {
            c.message::<v1::CreateSnapshotRequest>()
                .expect("a request")
                .request_id
        })
        .collect();
    assert_eq!(ids.len(), 2, "one lost request, one retry");
    assert!(
        !ids[0].is_empty() && ids[0] == ids[1],
        "one request id: {ids:?}"
    );

    let listed: Vec<_> = client
        .list_snapshots(v1::ListSnapshotsRequest {
            page_size: 1,
            ..v1::ListSnapshotsRequest::new(name)
        })
        .try_collect()
        .await
        .expect("list");
    assert!(listed.is_empty(), "{listed:?}");

    let source = v1::RestoreSource::new(name, "manual-nope").with_indices(&["orders"]);
    let err = client
        .restore_snapshot(v1::RestoreSnapshotRequest::new(name, source.clone()))
        .await
        .expect_err("unknown snapshot");
    assert_eq!(err.code(), Some(Code::NotFound));
    let err = client
        .restore_snapshot(v1::RestoreSnapshotRequest::new(
            name,
            v1::RestoreSource::new(name, "manual-nope"),
        ))
        .await
        .expect_err("no index");
    let fields: Vec<String> = err
        .api()
        .map(|e| {
            e.field_violations()
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(fields, ["source.indices"]);
    let mut from_snapshot =
        v1::CreateClusterRequest::new("tenants/search", "restored", sdk_spec(3))
            .with_restore_from(source);
    from_snapshot.validate_only = true;
    let err = client
        .create_cluster(from_snapshot)
        .await
        .expect_err("unknown snapshot");
    assert_eq!(err.code(), Some(Code::NotFound));

    let dry = client
        .delete_cluster(v1::DeleteClusterRequest {
            validate_only: true,
            ..v1::DeleteClusterRequest::new(name)
        })
        .await
        .expect("dry run");
    assert_eq!(dry.final_snapshot_id(), None);
    let why = dry.final_snapshot.clone().unwrap_or_default().reason;
    assert!(why.contains("not configured"), "{why}");
    let deleted = client
        .delete_cluster(v1::DeleteClusterRequest::new(name).without_final_snapshot())
        .await
        .expect("delete");
    assert!(!deleted.operation_name().is_empty());
    assert_eq!(
        deleted.final_snapshot.unwrap_or_default().reason,
        "skip_final_snapshot was set"
    );
}
