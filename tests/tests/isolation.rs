//! The isolation matrix: every RPC of every service against every kind of
//! caller that must not get (full) access to tenant `a`'s resources. The
//! matrix is one table of (rpc, caller, expected code), driven by one
//! function that performs the call; every cell is checked and a failure names
//! its cell.

use std::fmt;
use std::time::Duration;

use esaas_proto::v1 as pb;
use esaas_proto::v1::worker_service_client::WorkerServiceClient;
use esaas_tests::*;
use futures::StreamExt;
use rand::Rng;
use tonic::{Code, Status};

/// Every call of the API, with the variants of a list call's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    CreateCluster,
    GetCluster,
    /// ListClusters with parent `tenants/a`.
    ListClustersOfA,
    /// ListClusters with parent `tenants/-`.
    ListClustersOfAll,
    UpdateCluster,
    DeleteCluster,
    WatchCluster,
    GetClusterCredentials,
    GetOperation,
    /// ListOperations with parent `tenants/a`.
    ListOperationsOfA,
    /// ListOperations with parent `tenants/-`.
    ListOperationsOfAll,
    WatchOperation,
    CancelOperation,
    RescheduleOperation,
    GetCatalog,
    CreateTenant,
    /// GetTenant of `tenants/a`.
    GetTenant,
    ListTenants,
    UpdateTenantQuota,
    CreateApiKey,
    /// ListApiKeys with parent `tenants/a`.
    ListApiKeysOfA,
    /// ListApiKeys with an empty parent: the platform's own keys.
    ListPlatformApiKeys,
    RevokeApiKey,
    RetryOperation,
    ListWorkers,
    Connect,
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoToken,
    BadToken,
    RevokedKey,
    OtherTenantAdmin,
    OwnViewer,
}

const CALLERS: [Caller; 5] = [
    Caller::NoToken,
    Caller::BadToken,
    Caller::RevokedKey,
    Caller::OtherTenantAdmin,
    Caller::OwnViewer,
];

use Code::{NotFound, Ok as Allowed, PermissionDenied as Denied};

/// (rpc, expected for tenant b's admin, expected for tenant a's viewer).
/// Callers without a valid key get UNAUTHENTICATED everywhere.
const ROWS: &[(Rpc, Code, Code)] = &[
    (Rpc::CreateCluster, NotFound, Denied),
    (Rpc::GetCluster, NotFound, Allowed),
    (Rpc::ListClustersOfA, NotFound, Allowed),
    (Rpc::ListClustersOfAll, Denied, Denied),
    (Rpc::UpdateCluster, NotFound, Denied),
    (Rpc::DeleteCluster, NotFound, Denied),
    (Rpc::WatchCluster, NotFound, Allowed),
    (Rpc::GetClusterCredentials, NotFound, Denied),
    (Rpc::GetOperation, NotFound, Allowed),
    (Rpc::ListOperationsOfA, NotFound, Allowed),
    (Rpc::ListOperationsOfAll, Denied, Denied),
    (Rpc::WatchOperation, NotFound, Allowed),
    (Rpc::CancelOperation, NotFound, Denied),
    (Rpc::RescheduleOperation, NotFound, Denied),
    (Rpc::GetCatalog, Allowed, Allowed),
    (Rpc::CreateTenant, Denied, Denied),
    (Rpc::GetTenant, NotFound, Allowed),
    (Rpc::ListTenants, Denied, Denied),
    (Rpc::UpdateTenantQuota, Denied, Denied),
    (Rpc::CreateApiKey, Denied, Denied),
    (Rpc::ListApiKeysOfA, NotFound, Denied),
    (Rpc::ListPlatformApiKeys, Denied, Denied),
    (Rpc::RevokeApiKey, Denied, Denied),
    (Rpc::RetryOperation, NotFound, Denied),
    (Rpc::ListWorkers, Denied, Denied),
    (Rpc::Connect, Denied, Denied),
];

/// The full matrix.
fn matrix() -> Vec<(Rpc, Caller, Code)> {
    let mut cells = Vec::new();
    for &(rpc, other, viewer) in ROWS {
        for caller in CALLERS {
            let expected = match caller {
                Caller::NoToken | Caller::BadToken | Caller::RevokedKey => Code::Unauthenticated,
                Caller::OtherTenantAdmin => other,
                Caller::OwnViewer => viewer,
            };
            cells.push((rpc, caller, expected));
        }
    }
    cells
}

/// Tenant `a` with a cluster and its operation, tenant `b` with keys.
struct Fixture {
    a: TenantKeys,
    b: TenantKeys,
    /// A TENANT_ADMIN key of `a`, revoked.
    revoked: String,
    /// A random key in the product's secret format that was never issued.
    bad: String,
    cluster: pb::Cluster,
    op: pb::Operation,
}

impl Fixture {
    fn key(&self, caller: Caller) -> &str {
        match caller {
            Caller::NoToken => "",
            Caller::BadToken => &self.bad,
            Caller::RevokedKey => &self.revoked,
            Caller::OtherTenantAdmin => &self.b.admin,
            Caller::OwnViewer => &self.a.viewer,
        }
    }

    /// What tenant `a` has that no outsider may learn from an error.
    fn secrets_of_a(&self) -> Vec<String> {
        let op_id = self
            .op
            .name
            .strip_prefix("operations/")
            .expect("operation name")
            .to_string();
        let key_id = self
            .a
            .admin_key_name
            .rsplit('/')
            .next()
            .expect("key id")
            .to_string();
        vec![
            self.cluster.uid.clone(),
            self.cluster.etag.clone(),
            op_id,
            key_id,
            A_NODE_SET.to_string(),
            A_VERSION.to_string(),
            "team a".to_string(),
        ]
    }
}

const A_NODE_SET: &str = "secretset";
const A_VERSION: &str = "8.19.3";

fn spec_of_a() -> pb::ClusterSpec {
    let mut s = spec(3);
    s.version = A_VERSION.into();
    s.node_sets[0].name = A_NODE_SET.into();
    s
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("esk_{hex}")
}

async fn fixture(app: &App) -> Fixture {
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let created = app
        .clusters()
        .create_cluster(authed(
            &a.admin,
            pb::CreateClusterRequest {
                parent: "tenants/a".into(),
                cluster_id: "logs".into(),
                cluster: Some(pb::Cluster {
                    spec: Some(spec_of_a()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("create a's cluster")
        .into_inner();
    let cluster = created.cluster.expect("cluster");
    let op = created.operation.expect("operation");

    // A second admin key of a, proven to work, then revoked.
    let key = app
        .admin()
        .create_api_key(authed(
            ADMIN_KEY,
            pb::CreateApiKeyRequest {
                parent: "tenants/a".into(),
                api_key: Some(pb::ApiKey {
                    display_name: "to be revoked".into(),
                    role: pb::Role::TenantAdmin as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("create key")
        .into_inner();
    let key_name = key.api_key.expect("api key").name;
    app.clusters()
        .get_cluster(authed(
            &key.secret,
            pb::GetClusterRequest {
                name: cluster.name.clone(),
            },
        ))
        .await
        .expect("the key works before it is revoked");
    app.admin()
        .revoke_api_key(authed(
            ADMIN_KEY,
            pb::RevokeApiKeyRequest { name: key_name },
        ))
        .await
        .expect("revoke");

    Fixture {
        a,
        b,
        revoked: key.secret,
        bad: random_secret(),
        cluster,
        op,
    }
}

/// What a call came to.
enum Outcome {
    /// It succeeded and the answer was checked.
    Ok,
    /// It failed with this status.
    Failed(Status),
    /// It succeeded but the answer was wrong.
    Wrong(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => write!(f, "OK"),
            Outcome::Failed(s) => write!(f, "{:?}: {}", s.code(), s.message()),
            Outcome::Wrong(why) => write!(f, "OK with a wrong answer: {why}"),
        }
    }
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Outcome {
    if ok {
        Outcome::Ok
    } else {
        Outcome::Wrong(why())
    }
}

impl<T> From<Result<T, Status>> for Outcome {
    fn from(r: Result<T, Status>) -> Self {
        match r {
            Ok(_) => Outcome::Ok,
            Err(s) => Outcome::Failed(s),
        }
    }
}

/// The first message of a server stream; an error may come from the call or
/// as the first item.
async fn first<T>(
    r: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> Result<Option<T>, Status> {
    let mut stream = r?.into_inner();
    stream.message().await
}

/// The name the call asks for: what an error is allowed to repeat.
fn requested_name(rpc: Rpc, fx: &Fixture) -> String {
    match rpc {
        Rpc::GetOperation
        | Rpc::WatchOperation
        | Rpc::RetryOperation
        | Rpc::CancelOperation
        | Rpc::RescheduleOperation => fx.op.name.clone(),
        Rpc::RevokeApiKey => fx.a.admin_key_name.clone(),
        Rpc::CreateCluster => "tenants/a/clusters/logs".into(),
        _ => fx.cluster.name.clone(),
    }
}

/// Performs `rpc` on tenant a's resources as `key` and checks a successful answer.
async fn call(app: &App, fx: &Fixture, rpc: Rpc, key: &str) -> Outcome {
    call_on(app, fx, rpc, key, &fx.cluster.name, &fx.op.name).await
}

/// Performs `rpc` as `key` on the cluster and operation named.
async fn call_on(app: &App, fx: &Fixture, rpc: Rpc, key: &str, cluster: &str, op: &str) -> Outcome {
    let a_cluster = cluster.to_string();
    let a_op = op.to_string();
    let mut clusters = app.clusters();
    let mut ops = app.operations();
    let mut admin = app.admin();
    match rpc {
        Rpc::CreateCluster => {
            // A valid request for a new cluster in a.
            clusters
                .create_cluster(authed(key, create_request("a", "another", 1)))
                .await
                .into()
        }
        Rpc::GetCluster => match clusters
            .get_cluster(authed(
                key,
                pb::GetClusterRequest {
                    name: a_cluster.clone(),
                },
            ))
            .await
        {
            Ok(r) => {
                let c = r.into_inner().cluster.unwrap_or_default();
                check(c.uid == fx.cluster.uid, || format!("got cluster {c:?}"))
            }
            Err(s) => Outcome::Failed(s),
        },
        Rpc::ListClustersOfA | Rpc::ListClustersOfAll => {
            let parent = if rpc == Rpc::ListClustersOfA {
                "tenants/a"
            } else {
                "tenants/-"
            };
            match clusters
                .list_clusters(authed(
                    key,
                    pb::ListClustersRequest {
                        parent: parent.into(),
                        ..Default::default()
                    },
                ))
                .await
            {
                Ok(r) => {
                    let names: Vec<_> = r
                        .into_inner()
                        .clusters
                        .into_iter()
                        .map(|c| c.name)
                        .collect();
                    check(names == vec![a_cluster.clone()], || {
                        format!("listed {names:?}")
                    })
                }
                Err(s) => Outcome::Failed(s),
            }
        }
        Rpc::UpdateCluster => clusters
            .update_cluster(authed(
                key,
                pb::UpdateClusterRequest {
                    cluster: Some(pb::Cluster {
                        name: a_cluster.clone(),
                        spec: Some(pb::ClusterSpec {
                            version: "9.1.4".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["spec.version".into()],
                    }),
                    ..Default::default()
                },
            ))
            .await
            .into(),
        Rpc::DeleteCluster => clusters
            .delete_cluster(authed(
                key,
                pb::DeleteClusterRequest {
                    name: a_cluster.clone(),
                    ..Default::default()
                },
            ))
            .await
            .into(),
        Rpc::WatchCluster => {
            let r = clusters
                .watch_cluster(authed(
                    key,
                    pb::WatchClusterRequest {
                        name: a_cluster.clone(),
                        since_revision: 0,
                    },
                ))
                .await;
            match first(r).await {
                Ok(Some(pb::WatchClusterResponse {
                    payload: Some(pb::watch_cluster_response::Payload::Cluster(c)),
                })) => check(c.uid == fx.cluster.uid, || format!("first snapshot {c:?}")),
                Ok(other) => Outcome::Wrong(format!("first message {other:?}")),
                Err(s) => Outcome::Failed(s),
            }
        }
        Rpc::GetClusterCredentials => clusters
            .get_cluster_credentials(authed(
                key,
                pb::GetClusterCredentialsRequest {
                    name: a_cluster.clone(),
                },
            ))
            .await
            .into(),
        Rpc::GetOperation => match ops
            .get_operation(authed(key, pb::GetOperationRequest { name: a_op.clone() }))
            .await
        {
            Ok(r) => {
                let o = r.into_inner().operation.unwrap_or_default();
                check(o.cluster == a_cluster, || format!("got operation {o:?}"))
            }
            Err(s) => Outcome::Failed(s),
        },
        Rpc::ListOperationsOfA | Rpc::ListOperationsOfAll => {
            let parent = if rpc == Rpc::ListOperationsOfA {
                "tenants/a"
            } else {
                "tenants/-"
            };
            match ops
                .list_operations(authed(
                    key,
                    pb::ListOperationsRequest {
                        parent: parent.into(),
                        ..Default::default()
                    },
                ))
                .await
            {
                Ok(r) => {
                    let names: Vec<_> = r
                        .into_inner()
                        .operations
                        .into_iter()
                        .map(|o| o.name)
                        .collect();
                    check(names == vec![a_op.clone()], || format!("listed {names:?}"))
                }
                Err(s) => Outcome::Failed(s),
            }
        }
        Rpc::WatchOperation => {
            let r = ops
                .watch_operation(authed(
                    key,
                    pb::WatchOperationRequest { name: a_op.clone() },
                ))
                .await;
            match first(r).await {
                Ok(Some(pb::WatchOperationResponse { operation: Some(o) })) => {
                    check(o.name == a_op, || format!("first message {o:?}"))
                }
                Ok(other) => Outcome::Wrong(format!("first message {other:?}")),
                Err(s) => Outcome::Failed(s),
            }
        }
        Rpc::CancelOperation => ops
            .cancel_operation(authed(
                key,
                pb::CancelOperationRequest {
                    name: a_op.clone(),
                    request_id: String::new(),
                },
            ))
            .await
            .into(),
        Rpc::RescheduleOperation => ops
            .reschedule_operation(authed(
                key,
                pb::RescheduleOperationRequest {
                    name: a_op.clone(),
                    target: pb::RescheduleTarget::Now as i32,
                    not_before: None,
                    request_id: String::new(),
                },
            ))
            .await
            .into(),
        Rpc::GetCatalog => match clusters
            .get_catalog(authed(key, pb::GetCatalogRequest {}))
            .await
        {
            Ok(r) => {
                let c = r.into_inner().catalog.unwrap_or_default();
                check(
                    c.versions.iter().any(|v| v == A_VERSION) && !c.size_classes.is_empty(),
                    || format!("got catalog {c:?}"),
                )
            }
            Err(s) => Outcome::Failed(s),
        },
        Rpc::ListApiKeysOfA | Rpc::ListPlatformApiKeys => {
            let parent = if rpc == Rpc::ListApiKeysOfA {
                "tenants/a"
            } else {
                ""
            };
            match admin
                .list_api_keys(authed(
                    key,
                    pb::ListApiKeysRequest {
                        parent: parent.into(),
                        ..Default::default()
                    },
                ))
                .await
            {
                Ok(r) => {
                    let names: Vec<_> = r
                        .into_inner()
                        .api_keys
                        .into_iter()
                        .map(|k| k.name)
                        .collect();
                    check(names.contains(&fx.a.admin_key_name), || {
                        format!("listed {names:?}")
                    })
                }
                Err(s) => Outcome::Failed(s),
            }
        }
        Rpc::CreateTenant => admin
            .create_tenant(authed(
                key,
                pb::CreateTenantRequest {
                    tenant_id: "intruder".into(),
                    ..Default::default()
                },
            ))
            .await
            .into(),
        Rpc::GetTenant => match admin
            .get_tenant(authed(
                key,
                pb::GetTenantRequest {
                    name: "tenants/a".into(),
                },
            ))
            .await
        {
            Ok(r) => {
                let t = r.into_inner().tenant.unwrap_or_default();
                check(t.name == "tenants/a", || format!("got tenant {t:?}"))
            }
            Err(s) => Outcome::Failed(s),
        },
        Rpc::ListTenants => admin
            .list_tenants(authed(key, pb::ListTenantsRequest::default()))
            .await
            .into(),
        Rpc::UpdateTenantQuota => admin
            .update_tenant_quota(authed(
                key,
                pb::UpdateTenantQuotaRequest {
                    name: "tenants/a".into(),
                    quota: Some(pb::Quota {
                        max_clusters: 100,
                        max_nodes: 1000,
                        max_storage_gib: 100_000,
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .into(),
        Rpc::CreateApiKey => admin
            .create_api_key(authed(
                key,
                pb::CreateApiKeyRequest {
                    parent: "tenants/a".into(),
                    api_key: Some(pb::ApiKey {
                        display_name: "stolen".into(),
                        role: pb::Role::TenantAdmin as i32,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .into(),
        Rpc::RevokeApiKey => admin
            .revoke_api_key(authed(
                key,
                pb::RevokeApiKeyRequest {
                    name: fx.a.admin_key_name.clone(),
                },
            ))
            .await
            .into(),
        Rpc::RetryOperation => admin
            .retry_operation(authed(
                key,
                pb::RetryOperationRequest {
                    name: a_op.clone(),
                    request_id: String::new(),
                },
            ))
            .await
            .into(),
        Rpc::ListWorkers => admin
            .list_workers(authed(key, pb::ListWorkersRequest {}))
            .await
            .into(),
        Rpc::Connect => {
            let hello = pb::ConnectRequest {
                message: Some(pb::connect_request::Message::Hello(pb::WorkerHello {
                    worker_id: "intruder".into(),
                    region: "eu-west-1".into(),
                    capacity: 1,
                    version: "0".into(),
                    ..Default::default()
                })),
            };
            // Keep the request stream open, as a real worker does.
            let outbound = futures::stream::iter(vec![hello]).chain(futures::stream::pending());
            let r = WorkerServiceClient::new(app.channel())
                .connect(authed(key, outbound))
                .await;
            first(r).await.into()
        }
    }
}

#[tokio::test]
async fn isolation_matrix() {
    let app = spawn_app().await;
    let fx = fixture(&app).await;
    let secrets = fx.secrets_of_a();

    let cells = matrix();
    let mut failures = Vec::new();
    for &(rpc, caller, expected) in &cells {
        let key = fx.key(caller);
        let outcome =
            match tokio::time::timeout(Duration::from_secs(5), call(&app, &fx, rpc, key)).await {
                Ok(o) => o,
                Err(_) => Outcome::Wrong("no answer within 5 s".into()),
            };
        let cell = format!("{rpc:?} × {caller:?}: expected {expected:?}, got {outcome}");
        match (&outcome, expected) {
            (Outcome::Ok, Code::Ok) => {}
            (Outcome::Failed(s), want) if s.code() == want && want != Code::Ok => {
                if caller != Caller::OwnViewer {
                    // An outsider learns nothing of a beyond the name it asked for.
                    let asked = requested_name(rpc, &fx);
                    let text = format!("{} {}", s.message(), String::from_utf8_lossy(s.details()));
                    for secret in &secrets {
                        if !asked.contains(secret.as_str()) && text.contains(secret.as_str()) {
                            failures
                                .push(format!("{cell}; the error reveals {secret:?}: {text:?}"));
                        }
                    }
                }
                if s.code() == NotFound && !s.message().contains(&requested_name_short(rpc, &fx)) {
                    failures.push(format!(
                        "{cell}; NOT_FOUND does not name what was asked for: {}",
                        s.message()
                    ));
                }
            }
            _ => failures.push(cell),
        }
    }
    println!("isolation matrix: {} cells checked", cells.len());
    assert_eq!(cells.len(), ROWS.len() * CALLERS.len());
    assert_eq!(cells.len(), 130, "26 calls × 5 callers");
    assert!(
        failures.is_empty(),
        "{} of {} cells failed:\n{}",
        failures.len(),
        cells.len(),
        failures.join("\n")
    );

    // Nothing the refused callers tried changed a's state.
    let after = app
        .clusters()
        .get_cluster(authed(
            ADMIN_KEY,
            pb::GetClusterRequest {
                name: fx.cluster.name.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    assert_eq!(after.etag, fx.cluster.etag, "a's cluster is unchanged");
    assert_eq!(after.spec, fx.cluster.spec);
    let pool = app.db.pool().await;
    let tenants: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("tenants");
    assert_eq!(tenants, vec!["a", "b"], "no tenant was created");
    let clusters: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters")
        .fetch_one(&pool)
        .await
        .expect("clusters");
    assert_eq!(clusters, 1, "no cluster was created");
    let live_keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoke_time IS NULL")
            .fetch_one(&pool)
            .await
            .expect("keys");
    assert_eq!(live_keys, 4, "no key was created or revoked");
    let (state, max_quota): (String, i32) = sqlx::query_as(
        "SELECT o.state, t.max_clusters FROM operations o JOIN tenants t ON t.id = o.tenant_id",
    )
    .fetch_one(&pool)
    .await
    .expect("op");
    assert_eq!(state, "QUEUED");
    assert_eq!(max_quota, 5, "a's quota is the default still");
    pool.close().await;
}

/// The part of the requested name a NOT_FOUND must repeat.
fn requested_name_short(rpc: Rpc, fx: &Fixture) -> String {
    match rpc {
        Rpc::CreateCluster
        | Rpc::ListClustersOfA
        | Rpc::ListOperationsOfA
        | Rpc::GetTenant
        | Rpc::ListApiKeysOfA => "tenants/a".into(),
        _ => requested_name(rpc, fx),
    }
}

#[tokio::test]
async fn another_tenant_lists_only_its_own() {
    let app = spawn_app().await;
    let fx = fixture(&app).await;
    // b has a cluster of the same id.
    let b_cluster = app
        .create_cluster(&fx.b.admin, "b", "logs", 1)
        .await
        .cluster
        .expect("b's cluster");
    assert_ne!(b_cluster.uid, fx.cluster.uid);

    let list = app
        .clusters()
        .list_clusters(authed(
            &fx.b.admin,
            pb::ListClustersRequest {
                parent: "tenants/b".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("b lists its clusters")
        .into_inner();
    let uids: Vec<_> = list.clusters.iter().map(|c| c.uid.as_str()).collect();
    assert_eq!(uids, vec![b_cluster.uid.as_str()], "only b's cluster");
    assert!(
        list.clusters
            .iter()
            .all(|c| c.name.starts_with("tenants/b/"))
    );

    let ops = app
        .operations()
        .list_operations(authed(
            &fx.b.viewer,
            pb::ListOperationsRequest {
                parent: "tenants/b".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("b lists its operations")
        .into_inner();
    assert_eq!(ops.operations.len(), 1);
    assert!(ops.operations.iter().all(|o| o.name != fx.op.name));
    assert_eq!(ops.operations[0].cluster, "tenants/b/clusters/logs");

    // a's name in b's filter is refused, not answered with a's operations.
    let err = app
        .operations()
        .list_operations(authed(
            &fx.b.admin,
            pb::ListOperationsRequest {
                parent: "tenants/b".into(),
                cluster: fx.cluster.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a's cluster under b's parent");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["cluster"]);
    assert!(!err.message().contains(&fx.op.name));

    // b's GetCluster of its own "logs" is b's, never a's.
    let got = app
        .clusters()
        .get_cluster(authed(
            &fx.b.viewer,
            pb::GetClusterRequest {
                name: "tenants/b/clusters/logs".into(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    assert_eq!(got.uid, b_cluster.uid);
}

#[tokio::test]
async fn platform_admin_reads_every_tenant() {
    let app = spawn_app().await;
    let fx = fixture(&app).await;
    let got = app
        .clusters()
        .get_cluster(authed(
            ADMIN_KEY,
            pb::GetClusterRequest {
                name: fx.cluster.name.clone(),
            },
        ))
        .await
        .expect("platform admin reads a's cluster")
        .into_inner()
        .cluster
        .expect("cluster");
    assert_eq!(got.uid, fx.cluster.uid);
    assert_eq!(
        got.spec.as_ref().map(|s| s.version.as_str()),
        Some(A_VERSION)
    );
    let op = app
        .operations()
        .get_operation(authed(
            ADMIN_KEY,
            pb::GetOperationRequest {
                name: fx.op.name.clone(),
            },
        ))
        .await
        .expect("platform admin reads a's operation")
        .into_inner()
        .operation
        .expect("op");
    assert_eq!(op.cluster, fx.cluster.name);
    let all = app
        .clusters()
        .list_clusters(authed(
            ADMIN_KEY,
            pb::ListClustersRequest {
                parent: "tenants/-".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("platform admin lists every tenant")
        .into_inner();
    assert!(all.clusters.iter().any(|c| c.uid == fx.cluster.uid));
}

/// `bytes` with every occurrence of `name` masked.
fn mask(bytes: &[u8], name: &str) -> Vec<u8> {
    let n = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if !n.is_empty() && bytes[i..].starts_with(n) {
            out.extend(std::iter::repeat_n(b'#', n.len()));
            i += n.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// For an outsider, another tenant's resource and a resource that does not
/// exist at all get the same answer, byte for byte except the name asked for.
#[tokio::test]
async fn another_tenants_resource_looks_like_a_missing_one() {
    let app = spawn_app().await;
    let fx = fixture(&app).await;
    // Same length as the real names, so the answers can be compared byte for byte.
    let ghost_cluster = "tenants/a/clusters/gone";
    let ghost_tenant_cluster = "tenants/z/clusters/logs";
    let ghost_op = format!("operations/{}", uuid::Uuid::new_v4());
    assert_eq!(ghost_cluster.len(), fx.cluster.name.len());
    assert_eq!(ghost_op.len(), fx.op.name.len());

    let rpcs = [
        Rpc::GetCluster,
        Rpc::UpdateCluster,
        Rpc::DeleteCluster,
        Rpc::WatchCluster,
        Rpc::GetClusterCredentials,
        Rpc::GetOperation,
        Rpc::WatchOperation,
        Rpc::RetryOperation,
    ];
    let mut failures = Vec::new();
    for rpc in rpcs {
        let is_op = matches!(
            rpc,
            Rpc::GetOperation | Rpc::WatchOperation | Rpc::RetryOperation
        );
        let real = if is_op { &fx.op.name } else { &fx.cluster.name };
        let ghosts: Vec<&str> = if is_op {
            vec![&ghost_op]
        } else {
            vec![ghost_cluster, ghost_tenant_cluster]
        };
        let answer = |outcome: Outcome, name: &str| match outcome {
            Outcome::Failed(s) => Some((
                s.code(),
                mask(s.message().as_bytes(), name),
                mask(s.details(), name),
            )),
            _ => None,
        };
        let (c, o) = if is_op {
            (fx.cluster.name.as_str(), real.as_str())
        } else {
            (real.as_str(), fx.op.name.as_str())
        };
        let theirs = answer(call_on(&app, &fx, rpc, &fx.b.admin, c, o).await, real);
        if theirs.as_ref().map(|a| a.0) != Some(NotFound) {
            failures.push(format!("{rpc:?} on a's resource: not NOT_FOUND"));
            continue;
        }
        for ghost in ghosts {
            let (c, o) = if is_op {
                (fx.cluster.name.as_str(), ghost)
            } else {
                (ghost, fx.op.name.as_str())
            };
            let missing = answer(call_on(&app, &fx, rpc, &fx.b.admin, c, o).await, ghost);
            if missing != theirs {
                let show = |a: &Option<(Code, Vec<u8>, Vec<u8>)>| {
                    a.as_ref().map(|(c, m, d)| {
                        format!(
                            "{c:?} {:?} {:?}",
                            String::from_utf8_lossy(m),
                            String::from_utf8_lossy(d)
                        )
                    })
                };
                failures.push(format!(
                    "{rpc:?}: a's resource gives {:?}, missing {ghost} gives {:?}",
                    show(&theirs),
                    show(&missing)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "an outsider can tell a's resources from missing ones:\n{}",
        failures.join("\n")
    );
}
