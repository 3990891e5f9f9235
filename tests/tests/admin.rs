//! AdminService end to end: tenants, quotas, API keys, retries and workers.

use std::collections::HashSet;
use std::time::Duration;

use esaas_proto::v1 as pb;
use esaas_proto::v1::worker_service_client::WorkerServiceClient;
use esaas_tests::*;
use futures::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

fn create_tenant(id: &str, quota: Option<pb::Quota>, request_id: &str) -> pb::CreateTenantRequest {
    pb::CreateTenantRequest {
        tenant_id: id.into(),
        tenant: Some(pb::Tenant {
            display_name: format!("Team {id}"),
            quota,
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

fn key_request(parent: &str, role: pb::Role, request_id: &str) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        parent: parent.into(),
        api_key: Some(pb::ApiKey {
            display_name: format!("{role:?} key"),
            role: role as i32,
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

async fn get_tenant(app: &App, key: &str, name: &str) -> Result<pb::Tenant, tonic::Status> {
    app.admin()
        .get_tenant(authed(key, pb::GetTenantRequest { name: name.into() }))
        .await
        .map(|r| r.into_inner().tenant.expect("tenant"))
}

async fn get_cluster(app: &App, key: &str, name: &str) -> pb::Cluster {
    app.clusters()
        .get_cluster(authed(key, pb::GetClusterRequest { name: name.into() }))
        .await
        .expect("get cluster")
        .into_inner()
        .cluster
        .expect("cluster")
}

#[tokio::test]
async fn create_tenant_defaults_duplicates_and_retries() {
    let app = spawn_app().await;
    let mut admin = app.admin();
    let t = admin
        .create_tenant(authed(ADMIN_KEY, create_tenant("search", None, "")))
        .await
        .expect("create")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(t.name, "tenants/search");
    assert_eq!(t.display_name, "Team search");
    assert_eq!(
        t.quota,
        Some(pb::Quota {
            max_clusters: 5,
            max_nodes: 30,
            max_storage_gib: 10240
        }),
        "the configured default quota"
    );
    assert_eq!(t.usage, Some(pb::QuotaUsage::default()));
    assert!(t.create_time.is_some());

    // A tenant without a display name is shown by its id.
    let bare = admin
        .create_tenant(authed(
            ADMIN_KEY,
            pb::CreateTenantRequest {
                tenant_id: "bare".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create bare")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(bare.display_name, "bare");

    let err = admin
        .create_tenant(authed(ADMIN_KEY, create_tenant("search", None, "")))
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason(&err), "ALREADY_EXISTS");

    // A retry with the same request id is the same tenant, created once.
    let rid = uuid::Uuid::new_v4().to_string();
    let quota = Some(pb::Quota {
        max_clusters: 2,
        max_nodes: 4,
        max_storage_gib: 400,
    });
    let first = admin
        .create_tenant(authed(ADMIN_KEY, create_tenant("logs", quota, &rid)))
        .await
        .expect("first")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(first.quota, quota);
    let again = admin
        .create_tenant(authed(ADMIN_KEY, create_tenant("logs", quota, &rid)))
        .await
        .expect("retry is not a duplicate")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(again, first, "the same answer");
    // The same id for another request is refused.
    let err = admin
        .create_tenant(authed(ADMIN_KEY, create_tenant("other", quota, &rid)))
        .await
        .expect_err("request id reused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["request_id"]);

    let pool = app.db.pool().await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("tenants");
    assert_eq!(ids, vec!["bare", "logs", "search"]);

    let err = get_tenant(&app, ADMIN_KEY, "tenants/nobody")
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn get_tenant_shows_usage() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let empty = get_tenant(&app, ADMIN_KEY, "tenants/search")
        .await
        .expect("get");
    assert_eq!(empty.usage, Some(pb::QuotaUsage::default()));

    app.create_cluster(&t.admin, "search", "logs", 3).await;
    let mut req = create_request("search", "metrics", 2);
    if let Some(s) = req.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        s.node_sets[0].storage_gib = 250;
    }
    app.clusters()
        .create_cluster(authed(&t.admin, req))
        .await
        .expect("create metrics");
    // Another tenant's clusters are not counted.
    let other = app.tenant("other").await;
    app.create_cluster(&other.admin, "other", "x", 4).await;

    let want = pb::QuotaUsage {
        clusters: 2,
        nodes: 5,
        storage_gib: 3 * 100 + 2 * 250,
    };
    let got = get_tenant(&app, ADMIN_KEY, "tenants/search")
        .await
        .expect("get");
    assert_eq!(got.usage, Some(want));
    // Members read their own tenant, with the same numbers.
    let by_viewer = get_tenant(&app, &t.viewer, "tenants/search")
        .await
        .expect("viewer reads own tenant");
    assert_eq!(by_viewer.usage, Some(want));
    let listed = app
        .admin()
        .list_tenants(authed(ADMIN_KEY, pb::ListTenantsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    let search = listed
        .tenants
        .iter()
        .find(|t| t.name == "tenants/search")
        .expect("listed");
    assert_eq!(search.usage, Some(want));
}

#[tokio::test]
async fn list_tenants_pages_every_tenant_once() {
    let app = spawn_app().await;
    let mut admin = app.admin();
    let mut want = HashSet::new();
    for i in 0..7 {
        let id = format!("team-{i}");
        admin
            .create_tenant(authed(ADMIN_KEY, create_tenant(&id, None, "")))
            .await
            .expect("create");
        want.insert(format!("tenants/{id}"));
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_tenants(authed(
                ADMIN_KEY,
                pb::ListTenantsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                },
            ))
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert!(page.tenants.len() <= 3, "page size respected");
        seen.extend(page.tenants.iter().map(|t| t.name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        // Opaque: no tenant id or cursor in the clear.
        for t in &page.tenants {
            let id = t.name.trim_start_matches("tenants/");
            assert!(
                !page.next_page_token.contains(id),
                "token {:?} shows {id}",
                page.next_page_token
            );
        }
        assert!(!page.next_page_token.contains("team"));
        token = page.next_page_token;
        assert!(pages < 10, "pagination terminates");
    }
    assert_eq!(pages, 3, "3 + 3 + 1");
    assert_eq!(seen.len(), 7, "every tenant exactly once: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), want);

    // The default page holds them all, with no next token.
    let all = admin
        .list_tenants(authed(ADMIN_KEY, pb::ListTenantsRequest::default()))
        .await
        .expect("all")
        .into_inner();
    assert_eq!(all.tenants.len(), 7);
    assert!(all.next_page_token.is_empty());

    // A token from another list call is refused.
    let first = admin
        .list_tenants(authed(
            ADMIN_KEY,
            pb::ListTenantsRequest {
                page_size: 2,
                page_token: String::new(),
            },
        ))
        .await
        .expect("first")
        .into_inner();
    let t = app.tenant("zeta").await;
    app.create_cluster(&t.admin, "zeta", "a", 1).await;
    app.create_cluster(&t.admin, "zeta", "b", 1).await;
    let clusters_token = app
        .clusters()
        .list_clusters(authed(
            &t.admin,
            pb::ListClustersRequest {
                parent: "tenants/zeta".into(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("clusters")
        .into_inner()
        .next_page_token;
    assert!(!clusters_token.is_empty());
    let err = admin
        .list_tenants(authed(
            ADMIN_KEY,
            pb::ListTenantsRequest {
                page_size: 2,
                page_token: clusters_token,
            },
        ))
        .await
        .expect_err("token of another call");
    assert_eq!(violated_fields(&err), vec!["page_token"]);
    // And a tampered one.
    let mut tampered = first.next_page_token.clone();
    tampered.insert(3, 'x');
    let err = admin
        .list_tenants(authed(
            ADMIN_KEY,
            pb::ListTenantsRequest {
                page_size: 2,
                page_token: tampered,
            },
        ))
        .await
        .expect_err("tampered token");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["page_token"]);
}

#[tokio::test]
async fn update_quota_limits_new_clusters_and_keeps_existing_ones() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let a = app
        .create_cluster(&t.admin, "search", "a", 3)
        .await
        .cluster
        .expect("a");
    let b = app
        .create_cluster(&t.admin, "search", "b", 3)
        .await
        .cluster
        .expect("b");

    // Lower than what is in use: allowed.
    let low = pb::Quota {
        max_clusters: 1,
        max_nodes: 2,
        max_storage_gib: 100,
    };
    let updated = app
        .admin()
        .update_tenant_quota(authed(
            ADMIN_KEY,
            pb::UpdateTenantQuotaRequest {
                name: "tenants/search".into(),
                quota: Some(low),
                request_id: String::new(),
            },
        ))
        .await
        .expect("lower the quota below usage")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(updated.quota, Some(low));
    assert_eq!(
        updated.usage,
        Some(pb::QuotaUsage {
            clusters: 2,
            nodes: 6,
            storage_gib: 600
        })
    );
    // The existing clusters stay as they were.
    for c in [&a, &b] {
        let now = get_cluster(&app, &t.viewer, &c.name).await;
        assert_eq!(now.etag, c.etag, "{} unchanged", c.name);
        assert_eq!(
            now.status.map(|s| s.state),
            Some(pb::ClusterState::Provisioning as i32)
        );
    }
    let err = app
        .clusters()
        .create_cluster(authed(&t.admin, create_request("search", "c", 1)))
        .await
        .expect_err("over the new quota");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "QUOTA_EXCEEDED");
    let qf = err.get_details_quota_failure().expect("QuotaFailure");
    let subjects: HashSet<_> = qf.violations.iter().map(|v| v.subject.as_str()).collect();
    assert!(subjects.contains("tenants/search:clusters"), "{subjects:?}");

    // Raised again, a create fits.
    let raised = pb::Quota {
        max_clusters: 3,
        max_nodes: 10,
        max_storage_gib: 1000,
    };
    app.admin()
        .update_tenant_quota(authed(
            ADMIN_KEY,
            pb::UpdateTenantQuotaRequest {
                name: "tenants/search".into(),
                quota: Some(raised),
                request_id: String::new(),
            },
        ))
        .await
        .expect("raise");
    app.create_cluster(&t.admin, "search", "c", 1).await;
    let pool = app.db.pool().await;
    let (clusters, nodes): (i32, i32) =
        sqlx::query_as("SELECT max_clusters, max_nodes FROM tenants WHERE id = 'search'")
            .fetch_one(&pool)
            .await
            .expect("quota row");
    assert_eq!((clusters, nodes), (3, 10));

    let err = app
        .admin()
        .update_tenant_quota(authed(
            ADMIN_KEY,
            pb::UpdateTenantQuotaRequest {
                name: "tenants/nobody".into(),
                quota: Some(raised),
                request_id: String::new(),
            },
        ))
        .await
        .expect_err("unknown tenant");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn api_key_secret_works_at_once_and_is_never_stored() {
    let app = spawn_app().await;
    app.tenant("search").await;
    let rid = uuid::Uuid::new_v4().to_string();
    let created = app
        .admin()
        .create_api_key(authed(
            ADMIN_KEY,
            key_request("tenants/search", pb::Role::TenantAdmin, &rid),
        ))
        .await
        .expect("create key")
        .into_inner();
    let secret = created.secret.clone();
    let key = created.api_key.expect("api key");
    assert!(secret.starts_with("esk_"), "{secret}");
    assert!(secret.len() >= 40, "a long random secret");
    assert!(
        key.name.starts_with("tenants/search/apiKeys/"),
        "{}",
        key.name
    );
    assert_eq!(key.role, pb::Role::TenantAdmin as i32);
    assert!(key.revoke_time.is_none());

    // It works at once, for what its role allows.
    let created_cluster = app.create_cluster(&secret, "search", "logs", 1).await;
    let op = created_cluster.operation.expect("op");
    assert_eq!(
        op.initiator.map(|i| i.principal),
        Some(key.name.clone()),
        "the operation records the key that started it"
    );
    let viewer = app
        .admin()
        .create_api_key(authed(
            ADMIN_KEY,
            key_request("tenants/search", pb::Role::TenantViewer, ""),
        ))
        .await
        .expect("viewer key")
        .into_inner()
        .secret;
    get_cluster(&app, &viewer, "tenants/search/clusters/logs").await;
    let err = app
        .clusters()
        .create_cluster(authed(&viewer, create_request("search", "nope", 1)))
        .await
        .expect_err("a viewer cannot create");
    assert_eq!(err.code(), Code::PermissionDenied);

    // The database has only a 32-byte hash of each secret.
    let pool = app.db.pool().await;
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT secret_sha256 FROM api_keys")
        .fetch_all(&pool)
        .await
        .expect("hashes");
    assert_eq!(
        hashes.len(),
        4,
        "the harness's admin and viewer, and these two"
    );
    for h in &hashes {
        assert_eq!(h.len(), 32, "a SHA-256");
        assert!(
            !h.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "no clear secret"
        );
    }
    let matching: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE secret_sha256 = sha256($1::bytea)")
            .bind(secret.as_bytes())
            .fetch_one(&pool)
            .await
            .expect("match");
    assert_eq!(matching, 1, "the stored value is the secret's SHA-256");
    let body = secret.trim_start_matches("esk_");
    let anywhere: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM api_keys k WHERE row_to_json(k)::text LIKE '%' || $1 || '%') \
         + (SELECT count(*) FROM idempotency WHERE position(convert_to($1, 'UTF8') IN response) > 0)",
    )
    .bind(body)
    .fetch_one(&pool)
    .await
    .expect("search");
    assert_eq!(
        anywhere, 0,
        "the secret is in no row, not even the stored answer"
    );

    // A retry returns the same key, without the secret it no longer has.
    let again = app
        .admin()
        .create_api_key(authed(
            ADMIN_KEY,
            key_request("tenants/search", pb::Role::TenantAdmin, &rid),
        ))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again.api_key.map(|k| k.name), Some(key.name.clone()));
    assert_eq!(again.secret, "", "the secret is shown once");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(keys, 4, "the retry made no key");

    // A key for a tenant that does not exist is refused.
    let err = app
        .admin()
        .create_api_key(authed(
            ADMIN_KEY,
            key_request("tenants/nobody", pb::Role::TenantAdmin, ""),
        ))
        .await
        .expect_err("no such tenant");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let created = app
        .admin()
        .create_api_key(authed(
            ADMIN_KEY,
            key_request("tenants/search", pb::Role::TenantAdmin, ""),
        ))
        .await
        .expect("create")
        .into_inner();
    let secret = created.secret;
    let name = created.api_key.expect("key").name;
    app.create_cluster(&secret, "search", "logs", 1).await;

    let revoke = || {
        let mut admin = app.admin();
        let name = name.clone();
        async move {
            admin
                .revoke_api_key(authed(ADMIN_KEY, pb::RevokeApiKeyRequest { name }))
                .await
        }
    };
    let revoked = revoke()
        .await
        .expect("revoke")
        .into_inner()
        .api_key
        .expect("key");
    assert_eq!(revoked.name, name);
    assert!(revoked.revoke_time.is_some());

    let err = app
        .clusters()
        .get_cluster(authed(
            &secret,
            pb::GetClusterRequest {
                name: "tenants/search/clusters/logs".into(),
            },
        ))
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "UNAUTHENTICATED");
    let err = app
        .clusters()
        .create_cluster(authed(&secret, create_request("search", "more", 1)))
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Twice is fine, and keeps the first revoke time.
    let twice = revoke()
        .await
        .expect("revoke again")
        .into_inner()
        .api_key
        .expect("key");
    assert_eq!(twice.revoke_time, revoked.revoke_time);

    // The tenant's other keys still work.
    get_cluster(&app, &t.admin, "tenants/search/clusters/logs").await;
    get_cluster(&app, &t.viewer, "tenants/search/clusters/logs").await;

    // Unknown keys, and a key named under the wrong tenant, are not found.
    let id = name.rsplit('/').next().expect("id");
    for wrong in [
        format!("tenants/search/apiKeys/{}", uuid::Uuid::new_v4()),
        format!("tenants/other/apiKeys/{id}"),
        format!("apiKeys/{id}"),
    ] {
        let err = app
            .admin()
            .revoke_api_key(authed(
                ADMIN_KEY,
                pb::RevokeApiKeyRequest {
                    name: wrong.clone(),
                },
            ))
            .await
            .expect_err("not found");
        assert_eq!(err.code(), Code::NotFound, "{wrong}");
    }
}

#[tokio::test]
async fn a_platform_key_can_create_tenants() {
    let app = spawn_app().await;
    let created = app
        .admin()
        .create_api_key(authed(
            ADMIN_KEY,
            key_request("", pb::Role::PlatformAdmin, ""),
        ))
        .await
        .expect("platform key")
        .into_inner();
    let key = created.api_key.expect("key");
    assert!(key.name.starts_with("apiKeys/"), "{}", key.name);
    let platform = created.secret;

    let t = app
        .admin()
        .create_tenant(authed(&platform, create_tenant("made-by-key", None, "")))
        .await
        .expect("a platform key creates a tenant")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(t.name, "tenants/made-by-key");
    let tenant_key = app
        .admin()
        .create_api_key(authed(
            &platform,
            key_request("tenants/made-by-key", pb::Role::TenantAdmin, ""),
        ))
        .await
        .expect("and keys for it")
        .into_inner()
        .secret;
    app.create_cluster(&tenant_key, "made-by-key", "logs", 1)
        .await;
    let listed = app
        .admin()
        .list_tenants(authed(&platform, pb::ListTenantsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.tenants.len(), 1);
    app.admin()
        .list_workers(authed(&platform, pb::ListWorkersRequest {}))
        .await
        .expect("list workers");
}

#[tokio::test]
async fn a_worker_key_is_refused_by_the_tenant_services() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let cluster = app
        .create_cluster(&t.admin, "search", "logs", 1)
        .await
        .cluster
        .expect("cluster");
    let worker = app
        .admin()
        .create_api_key(authed(ADMIN_KEY, key_request("", pb::Role::Worker, "")))
        .await
        .expect("worker key")
        .into_inner();
    assert!(
        worker
            .api_key
            .as_ref()
            .is_some_and(|k| k.name.starts_with("apiKeys/"))
    );
    let w = worker.secret;

    let mut c = app.clusters();
    let codes = vec![
        (
            "GetCluster",
            c.get_cluster(authed(
                &w,
                pb::GetClusterRequest {
                    name: cluster.name.clone(),
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListClusters",
            c.list_clusters(authed(
                &w,
                pb::ListClustersRequest {
                    parent: "tenants/search".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ),
        (
            "CreateCluster",
            c.create_cluster(authed(&w, create_request("search", "more", 1)))
                .await
                .map(drop),
        ),
        (
            "DeleteCluster",
            c.delete_cluster(authed(
                &w,
                pb::DeleteClusterRequest {
                    name: cluster.name.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ),
        (
            "ListOperations",
            app.operations()
                .list_operations(authed(
                    &w,
                    pb::ListOperationsRequest {
                        parent: "tenants/search".into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "ListWorkers",
            app.admin()
                .list_workers(authed(&w, pb::ListWorkersRequest {}))
                .await
                .map(drop),
        ),
        (
            "CreateTenant",
            app.admin()
                .create_tenant(authed(&w, create_tenant("evil", None, "")))
                .await
                .map(drop),
        ),
    ];
    for (rpc, r) in codes {
        let err = r.expect_err(rpc);
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{rpc}: {}",
            err.message()
        );
    }
    assert_eq!(
        get_cluster(&app, &t.admin, &cluster.name).await.etag,
        cluster.etag
    );

    // WorkerService lets it in (whatever it then has to say).
    let hello = pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Hello(pb::WorkerHello {
            worker_id: "w1".into(),
            region: "eu-west-1".into(),
            capacity: 1,
            version: "test".into(),
            ..Default::default()
        })),
    };
    let outbound = futures::stream::iter(vec![hello]).chain(futures::stream::pending());
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        WorkerServiceClient::new(app.channel()).connect(authed(&w, outbound)),
    )
    .await
    .expect("an answer to Connect");
    if let Err(e) = r {
        assert!(
            !matches!(e.code(), Code::Unauthenticated | Code::PermissionDenied),
            "a worker key may connect: {e:?}"
        );
    }
}

#[tokio::test]
async fn list_workers_is_empty_without_workers() {
    let app = spawn_app().await;
    let r = app
        .admin()
        .list_workers(authed(ADMIN_KEY, pb::ListWorkersRequest {}))
        .await
        .expect("list workers")
        .into_inner();
    assert!(r.workers.is_empty(), "{:?}", r.workers);
}

#[tokio::test]
async fn retry_operation_requeues_a_failed_operation() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("cluster");
    let op = created.operation.expect("op");
    let retry = |key: &str, request_id: &str| {
        let mut admin = app.admin();
        let req = authed(
            key,
            pb::RetryOperationRequest {
                name: op.name.clone(),
                request_id: request_id.into(),
            },
        );
        async move { admin.retry_operation(req).await }
    };

    // A queued operation has nothing to retry.
    let err = retry(&t.admin, "").await.expect_err("queued");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "FAILED_PRECONDITION");
    let pf = err
        .get_details_precondition_failure()
        .expect("PreconditionFailure");
    assert_eq!(pf.violations[0].subject, op.name);

    // The worker pool is not part of this control plane yet: record its verdict directly.
    let pool = app.db.pool().await;
    sqlx::query(
        "UPDATE operations SET state = 'FAILED', end_time = now(), \
         error = '{\"code\":\"UNAVAILABLE\",\"reason\":\"X\",\"message\":\"m\"}'::jsonb WHERE id = $1",
    )
    .bind(uuid::Uuid::parse_str(op.name.trim_start_matches("operations/")).expect("uuid"))
    .execute(&pool)
    .await
    .expect("fail op");
    sqlx::query("UPDATE clusters SET state = 'FAILED' WHERE uid = $1")
        .bind(uuid::Uuid::parse_str(&cluster.uid).expect("uid"))
        .execute(&pool)
        .await
        .expect("fail cluster");
    let failed = app
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
    assert_eq!(failed.state, pb::OperationState::Failed as i32);
    assert!(failed.done);
    assert_eq!(failed.error.as_ref().map(|e| e.code), Some(14));
    let before = get_cluster(&app, &t.viewer, &cluster.name).await;
    assert_eq!(
        before.status.as_ref().map(|s| s.state),
        Some(pb::ClusterState::Failed as i32)
    );

    // A viewer may not retry.
    let err = retry(&t.viewer, "").await.expect_err("viewer");
    assert_eq!(err.code(), Code::PermissionDenied);

    let rid = uuid::Uuid::new_v4().to_string();
    let requeued = retry(&t.admin, &rid)
        .await
        .expect("retry by the tenant admin")
        .into_inner()
        .operation
        .expect("op");
    assert_eq!(requeued.name, op.name);
    assert_eq!(requeued.state, pb::OperationState::Queued as i32);
    assert!(!requeued.done);
    assert!(requeued.error.is_none(), "{:?}", requeued.error);
    assert!(requeued.end_time.is_none());
    assert!(
        requeued.max_attempts >= failed.max_attempts,
        "{} < {}",
        requeued.max_attempts,
        failed.max_attempts
    );

    let after = get_cluster(&app, &t.viewer, &cluster.name).await;
    let status = after.status.clone().expect("status");
    assert_eq!(status.state, pb::ClusterState::Provisioning as i32);
    assert_eq!(status.current_operation, op.name);
    assert!(
        after.revision > before.revision,
        "{} > {}",
        after.revision,
        before.revision
    );

    // The same request id is the same answer; a new one finds it queued.
    let replay = retry(&t.admin, &rid)
        .await
        .expect("replay")
        .into_inner()
        .operation
        .expect("op");
    assert_eq!(replay.name, requeued.name);
    assert_eq!(replay.state, pb::OperationState::Queued as i32);
    let err = retry(&t.admin, "").await.expect_err("queued again");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let (state, no_error): (String, bool) =
        sqlx::query_as("SELECT state, error IS NULL FROM operations")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(state, "QUEUED");
    assert!(no_error, "the error is cleared in the database");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_events")
        .fetch_one(&pool)
        .await
        .expect("events");
    assert_eq!(events, after.revision, "one event per revision");
}

#[tokio::test]
async fn a_key_revoked_on_one_server_stops_working_on_another_that_cached_it() {
    let db = TestDb::new().await;
    let a = ServerProcess::start_with(&db, free_port(), "migrate_on_start = true\n").await;
    // B remembers keys for a minute: only the revocation's notification
    // can make it forget in time.
    let b = ServerProcess::start_with(&db, free_port(), "auth_cache_ttl_ms = 60000\n").await;
    create_tenant_on(channel(a.addr).await, "search").await;
    let mut admin_a =
        esaas_proto::v1::admin_service_client::AdminServiceClient::new(channel(a.addr).await);
    let created = admin_a
        .create_api_key(authed(
            ADMIN_KEY,
            key_request("tenants/search", pb::Role::TenantViewer, ""),
        ))
        .await
        .expect("key")
        .into_inner();
    let list = |addr| {
        let secret = created.secret.clone();
        async move {
            esaas_proto::v1::cluster_service_client::ClusterServiceClient::new(channel(addr).await)
                .list_clusters(authed(
                    &secret,
                    pb::ListClustersRequest {
                        parent: "tenants/search".into(),
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    list(b.addr)
        .await
        .expect("B accepts the key (and caches it)");
    admin_a
        .revoke_api_key(authed(
            ADMIN_KEY,
            pb::RevokeApiKeyRequest {
                name: created.api_key.expect("key").name,
            },
        ))
        .await
        .expect("revoke on A");
    let err = list(a.addr).await.expect_err("A refuses at once");
    assert_eq!(err.code(), Code::Unauthenticated);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match list(b.addr).await {
            Err(e) => {
                assert_eq!(e.code(), Code::Unauthenticated);
                break;
            }
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "B still accepts a key revoked on A 5 s ago"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill().await;
    b.kill().await;
}

#[tokio::test]
async fn a_reserved_tenant_id_is_refused() {
    let app = spawn_app().await;
    let err = app
        .admin()
        .create_tenant(authed(
            ADMIN_KEY,
            pb::CreateTenantRequest {
                tenant_id: "system".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("reserved");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["tenant_id"]);
    assert!(err.message().contains("esaas-system"), "{}", err.message());
}
