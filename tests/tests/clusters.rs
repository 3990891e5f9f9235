//! ClusterService against a real PostgreSQL: the lifecycle of a request,
//! idempotency, etags, validate_only, quotas, coalescing and pagination.

use std::collections::HashSet;

use esaas_proto::v1 as pb;
use esaas_tests::*;
use tonic::Code;

#[tokio::test]
async fn create_records_cluster_operation_and_first_event() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("cluster");
    let op = created.operation.expect("operation");
    assert_eq!(cluster.name, "tenants/search/clusters/logs");
    let status = cluster.status.clone().expect("status");
    assert_eq!(status.state, pb::ClusterState::Provisioning as i32);
    assert_eq!(status.health, pb::ClusterHealth::Unknown as i32);
    assert_eq!(status.observed_generation, 0, "nothing acted on yet");
    assert_eq!(status.current_operation, op.name);
    assert_eq!(cluster.generation, 1);
    assert_eq!(cluster.revision, 1);
    assert_eq!(op.state, pb::OperationState::Queued as i32);
    assert_eq!(op.kind, pb::OperationKind::Create as i32);
    assert!(!op.done);
    assert!(
        op.message.contains("waiting for a worker"),
        "{}",
        op.message
    );
    assert_eq!(
        op.initiator.as_ref().map(|i| i.kind),
        Some(pb::InitiatorKind::Tenant as i32)
    );
    assert_eq!(
        op.initiator.as_ref().map(|i| i.principal.clone()),
        Some(t.admin_key_name.clone())
    );
    // defaults are explicit in the stored spec
    let ns = &cluster.spec.as_ref().expect("spec").node_sets[0];
    assert_eq!((ns.storage_iops, ns.storage_throughput_mibps), (3000, 125));

    // it is all really in the database
    let got = app
        .clusters()
        .get_cluster(authed(
            &t.viewer,
            pb::GetClusterRequest {
                name: cluster.name.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    assert_eq!(got, cluster);
    let got_op = app
        .operations()
        .get_operation(authed(
            &t.viewer,
            pb::GetOperationRequest {
                name: op.name.clone(),
            },
        ))
        .await
        .expect("get op")
        .into_inner()
        .operation
        .expect("op");
    assert_eq!(got_op.state, pb::OperationState::Queued as i32);
    let pool = app.db.pool().await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(events, 1);

    // the name is taken while the cluster lives
    let again = app
        .clusters()
        .create_cluster(authed(&t.admin, create_request("search", "logs", 1)))
        .await
        .expect_err("duplicate");
    assert_eq!(again.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn request_id_makes_create_idempotent() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let mut req = create_request("search", "logs", 3);
    req.request_id = uuid::Uuid::new_v4().to_string();
    let first = app
        .clusters()
        .create_cluster(authed(&t.admin, req.clone()))
        .await
        .expect("first")
        .into_inner();
    let retry = app
        .clusters()
        .create_cluster(authed(&t.admin, req.clone()))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(first, retry, "a retry returns the original result");

    // concurrent retries of one request all get the same answer
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut c = app.clusters();
        let (key, req) = (t.admin.clone(), req.clone());
        set.spawn(async move {
            c.create_cluster(authed(&key, req))
                .await
                .map(|r| r.into_inner())
        });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.expect("join").expect("retry"), first);
    }
    let pool = app.db.pool().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM operations")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 1);

    let mut other = req.clone();
    other.cluster_id = "other".into();
    let err = app
        .clusters()
        .create_cluster(authed(&t.admin, other))
        .await
        .expect_err("reused id");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["request_id"]);
    assert_eq!(reason(&err), "REQUEST_ID_REUSED");
}

#[tokio::test]
async fn validate_only_checks_everything_and_changes_nothing() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_quota(
            "search",
            Some(pb::Quota {
                max_clusters: 1,
                max_nodes: 3,
                max_storage_gib: 1000,
            }),
        )
        .await;
    let mut req = create_request("search", "logs", 3);
    req.validate_only = true;
    let r = app
        .clusters()
        .create_cluster(authed(&t.admin, req.clone()))
        .await
        .expect("dry run")
        .into_inner();
    assert!(r.operation.is_none());
    assert_eq!(r.disruption, pb::Disruption::None as i32);
    let status = r.cluster.and_then(|c| c.status).expect("status");
    assert_eq!(
        status.current_operation, "",
        "no pointer to the rolled-back operation"
    );
    assert!(status.conditions.is_empty(), "{:?}", status.conditions);
    let pool = app.db.pool().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 0, "validate_only wrote nothing");

    // the same checks as the real call: quota
    let mut big = create_request("search", "logs", 4);
    big.validate_only = true;
    let err = app
        .clusters()
        .create_cluster(authed(&t.admin, big))
        .await
        .expect_err("over quota");
    assert_eq!(err.code(), Code::ResourceExhausted);

    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("cluster");
    let mut upd = pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: cluster.name.clone(),
            spec: Some(pb::ClusterSpec {
                version: "8.19.3".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.version".into()],
        }),
        request_id: String::new(),
        validate_only: true,
    };
    let r = app
        .clusters()
        .update_cluster(authed(&t.admin, upd.clone()))
        .await
        .expect("dry update")
        .into_inner();
    assert_eq!(
        r.disruption,
        pb::Disruption::Rolling as i32,
        "an upgrade rolls"
    );
    assert_eq!(
        r.cluster.as_ref().map(|c| c.generation),
        Some(2),
        "what it would look like"
    );
    let now = app
        .clusters()
        .get_cluster(authed(
            &t.admin,
            pb::GetClusterRequest {
                name: cluster.name.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    assert_eq!(now, cluster, "validate_only left the cluster as it was");

    upd.cluster.as_mut().expect("c").spec = Some(pb::ClusterSpec {
        node_sets: vec![pb::NodeSet {
            storage_gib: 300,
            ..spec(3).node_sets[0].clone()
        }],
        ..Default::default()
    });
    upd.update_mask = Some(prost_types::FieldMask {
        paths: vec!["spec.node_sets".into()],
    });
    let r = app
        .clusters()
        .update_cluster(authed(&t.admin, upd))
        .await
        .expect("dry resize")
        .into_inner();
    assert_eq!(
        r.disruption,
        pb::Disruption::InPlace as i32,
        "a larger volume is in place"
    );

    let del = pb::DeleteClusterRequest {
        name: cluster.name.clone(),
        validate_only: true,
        ..Default::default()
    };
    let r = app
        .clusters()
        .delete_cluster(authed(&t.admin, del))
        .await
        .expect("dry delete")
        .into_inner();
    assert_eq!(r.disruption, pb::Disruption::Destructive as i32);
    let state: String = sqlx::query_scalar("SELECT state FROM clusters")
        .fetch_one(&pool)
        .await
        .expect("state");
    assert_eq!(state, "PROVISIONING");
}

#[tokio::test]
async fn quota_failure_names_each_limit() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_quota(
            "small",
            Some(pb::Quota {
                max_clusters: 1,
                max_nodes: 3,
                max_storage_gib: 300,
            }),
        )
        .await;
    app.create_cluster(&t.admin, "small", "one", 3).await;
    let err = app
        .clusters()
        .create_cluster(authed(&t.admin, create_request("small", "two", 1)))
        .await
        .expect_err("over quota");
    assert_eq!(err.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let qf = err.get_details_quota_failure().expect("QuotaFailure");
    let subjects: HashSet<_> = qf.violations.iter().map(|v| v.subject.as_str()).collect();
    assert_eq!(
        subjects,
        HashSet::from([
            "tenants/small:clusters",
            "tenants/small:nodes",
            "tenants/small:storage_gib"
        ])
    );
    assert_eq!(reason(&err), "QUOTA_EXCEEDED");

    // concurrent creates cannot both squeeze under the limit
    let t2 = app
        .tenant_with_quota(
            "race",
            Some(pb::Quota {
                max_clusters: 3,
                max_nodes: 50,
                max_storage_gib: 100_000,
            }),
        )
        .await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut c = app.clusters();
        let key = t2.admin.clone();
        set.spawn(async move {
            c.create_cluster(authed(&key, create_request("race", &format!("c{i}"), 1)))
                .await
        });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        match r.expect("join") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted),
        }
    }
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn update_bumps_generation_and_folds_into_the_queued_operation() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("cluster");
    let create_op = created.operation.expect("op");

    let upd = |etag: &str, version: &str| pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: cluster.name.clone(),
            etag: etag.into(),
            spec: Some(pb::ClusterSpec {
                version: version.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: None,
        request_id: String::new(),
        validate_only: false,
    };
    let r = app
        .clusters()
        .update_cluster(authed(&t.admin, upd(&cluster.etag, "8.19.3")))
        .await
        .expect("update")
        .into_inner();
    let c2 = r.cluster.expect("cluster");
    assert_eq!(c2.generation, 2);
    assert_eq!(c2.spec.as_ref().map(|s| s.version.as_str()), Some("8.19.3"));
    assert_eq!(
        c2.spec.as_ref().map(|s| s.node_sets[0].count),
        Some(3),
        "unmasked fields kept"
    );
    assert_eq!(
        c2.status.as_ref().map(|s| s.state),
        Some(pb::ClusterState::Provisioning as i32)
    );
    let op = r.operation.expect("op");
    assert_eq!(
        op.name, create_op.name,
        "the queued create carries the change"
    );
    assert_eq!(op.target_generation, 2);
    assert_ne!(c2.etag, cluster.etag);

    // the old etag is stale now
    let err = app
        .clusters()
        .update_cluster(authed(&t.admin, upd(&cluster.etag, "9.1.4")))
        .await
        .expect_err("stale etag");
    assert_eq!(err.code(), Code::Aborted);
    let err = app
        .clusters()
        .delete_cluster(authed(
            &t.admin,
            pb::DeleteClusterRequest {
                name: cluster.name.clone(),
                etag: cluster.etag.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(err.code(), Code::Aborted);

    // downgrades and shrinking volumes are refused with the field named
    let err = app
        .clusters()
        .update_cluster(authed(&t.admin, upd("", "8.15.5")))
        .await
        .expect_err("downgrade");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["cluster.spec.version"]);

    // an update that changes nothing is not a new generation
    let same = app
        .clusters()
        .update_cluster(authed(&t.admin, upd("", "8.19.3")))
        .await
        .expect("no-op")
        .into_inner();
    assert_eq!(same.cluster.map(|c| c.generation), Some(2));
    assert_eq!(same.disruption, pb::Disruption::None as i32);

    let ops = app
        .operations()
        .list_operations(authed(
            &t.viewer,
            pb::ListOperationsRequest {
                parent: "tenants/search".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list ops")
        .into_inner();
    assert_eq!(ops.operations.len(), 1, "one queued operation per cluster");
}

#[tokio::test]
async fn update_of_a_failed_cluster_queues_an_update_operation() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let name = created.cluster.expect("c").name;
    let pool = app.db.pool().await;
    // The worker pool is not part of this control plane yet: record its verdict directly.
    sqlx::query("UPDATE operations SET state = 'FAILED', end_time = now(), error = '{\"code\":\"UNAVAILABLE\",\"reason\":\"EKS_UNAVAILABLE\",\"message\":\"node group create failed\"}'")
        .execute(&pool)
        .await
        .expect("fail op");
    sqlx::query("UPDATE clusters SET state = 'FAILED'")
        .execute(&pool)
        .await
        .expect("fail cluster");

    let r = app
        .clusters()
        .update_cluster(authed(
            &t.admin,
            pb::UpdateClusterRequest {
                cluster: Some(pb::Cluster {
                    name: name.clone(),
                    spec: Some(spec(5)),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["spec".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("update")
        .into_inner();
    let op = r.operation.expect("op");
    assert_eq!(op.kind, pb::OperationKind::Update as i32);
    assert_eq!(op.state, pb::OperationState::Queued as i32);
    assert_eq!(r.disruption, pb::Disruption::NewNodesFirst as i32);
    assert_eq!(
        r.cluster.and_then(|c| c.status).map(|s| s.state),
        Some(pb::ClusterState::Updating as i32)
    );
}

#[tokio::test]
async fn delete_supersedes_the_queued_change_and_is_idempotent() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let name = created.cluster.expect("c").name;
    let create_op = created.operation.expect("op");
    let del = pb::DeleteClusterRequest {
        name: name.clone(),
        ..Default::default()
    };
    let r = app
        .clusters()
        .delete_cluster(authed(&t.admin, del.clone()))
        .await
        .expect("delete")
        .into_inner();
    let c = r.cluster.expect("cluster");
    assert_eq!(
        c.status.as_ref().map(|s| s.state),
        Some(pb::ClusterState::Deleting as i32)
    );
    assert!(c.delete_time.is_some());
    let del_op = r.operation.expect("delete op");
    assert_eq!(del_op.kind, pb::OperationKind::Delete as i32);
    let old = app
        .operations()
        .get_operation(authed(
            &t.admin,
            pb::GetOperationRequest {
                name: create_op.name.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .operation
        .expect("op");
    assert_eq!(old.state, pb::OperationState::Cancelled as i32);
    assert!(old.done);

    let again = app
        .clusters()
        .delete_cluster(authed(&t.admin, del))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(again.operation.map(|o| o.name), Some(del_op.name));

    let err = app
        .clusters()
        .update_cluster(authed(
            &t.admin,
            pb::UpdateClusterRequest {
                cluster: Some(pb::Cluster {
                    name,
                    spec: Some(spec(5)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .expect_err("update while deleting");
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn credentials_wait_for_a_ready_cluster() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let name = app
        .create_cluster(&t.admin, "search", "logs", 1)
        .await
        .cluster
        .expect("c")
        .name;
    let err = app
        .clusters()
        .get_cluster_credentials(authed(&t.admin, pb::GetClusterCredentialsRequest { name }))
        .await
        .expect_err("not ready");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("PROVISIONING"), "{}", err.message());
}

#[tokio::test]
async fn pagination_returns_every_cluster_once_under_concurrent_inserts() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_quota(
            "big",
            Some(pb::Quota {
                max_clusters: 1000,
                max_nodes: 1000,
                max_storage_gib: 1_000_000,
            }),
        )
        .await;
    let mut before = HashSet::new();
    for i in 0..45 {
        let id = format!("c{i:03}");
        app.create_cluster(&t.admin, "big", &id, 1).await;
        before.insert(format!("tenants/big/clusters/{id}"));
    }
    // Insert more while paging: the listing must still hold every earlier
    // cluster exactly once.
    let writer = {
        let mut c = app.clusters();
        let key = t.admin.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                let id = format!("n{i:03}");
                c.create_cluster(authed(&key, create_request("big", &id, 1)))
                    .await
                    .expect("concurrent create");
            }
        })
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .clusters()
            .list_clusters(authed(
                &t.viewer,
                pb::ListClustersRequest {
                    parent: "tenants/big".into(),
                    page_size: 7,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner();
        assert!(page.clusters.len() <= 7);
        seen.extend(page.clusters.into_iter().map(|c| c.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    writer.await.expect("writer");
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no cluster twice");
    assert!(
        before.is_subset(&unique),
        "every cluster that existed is listed"
    );

    // a token is bound to its query
    let first = app
        .clusters()
        .list_clusters(authed(
            &t.viewer,
            pb::ListClustersRequest {
                parent: "tenants/big".into(),
                page_size: 5,
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    let err = app
        .clusters()
        .list_clusters(authed(
            &t.viewer,
            pb::ListClustersRequest {
                parent: "tenants/big".into(),
                page_size: 5,
                page_token: first.next_page_token,
                filter: "state = READY".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("token of another query");
    assert_eq!(violated_fields(&err), vec!["page_token"]);
}

#[tokio::test]
async fn list_filters_by_state_and_hides_nothing_else() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    app.create_cluster(&t.admin, "search", "a", 1).await;
    let b = app
        .create_cluster(&t.admin, "search", "b", 1)
        .await
        .cluster
        .expect("b")
        .name;
    app.clusters()
        .delete_cluster(authed(
            &t.admin,
            pb::DeleteClusterRequest {
                name: b,
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    let list = |filter: &str| {
        let mut c = app.clusters();
        let key = t.viewer.clone();
        let filter = filter.to_string();
        async move {
            c.list_clusters(authed(
                &key,
                pb::ListClustersRequest {
                    parent: "tenants/search".into(),
                    filter,
                    ..Default::default()
                },
            ))
            .await
            .map(|r| {
                r.into_inner()
                    .clusters
                    .into_iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>()
            })
        }
    };
    assert_eq!(
        list("").await.expect("all"),
        vec!["tenants/search/clusters/a", "tenants/search/clusters/b"]
    );
    assert_eq!(
        list("state = DELETING").await.expect("deleting"),
        vec!["tenants/search/clusters/b"]
    );
    assert_eq!(
        list("state=CLUSTER_STATE_PROVISIONING")
            .await
            .expect("prov"),
        vec!["tenants/search/clusters/a"]
    );
    let err = list("name = a").await.expect_err("unsupported filter");
    assert_eq!(violated_fields(&err), vec!["filter"]);
}
