//! Bad inputs: every one is answered INVALID_ARGUMENT with the offending
//! field named in `BadRequest` and an `ErrorInfo` reason, never INTERNAL;
//! many errors are reported at once; an oversized message is
//! RESOURCE_EXHAUSTED.

use std::collections::BTreeSet;
use std::time::Duration;

use esaas_proto::v1 as pb;
use esaas_tests::*;
use tonic::{Code, Status};

/// One request of any kind.
enum Req {
    CreateCluster(pb::CreateClusterRequest),
    GetCluster(pb::GetClusterRequest),
    ListClusters(pb::ListClustersRequest),
    UpdateCluster(pb::UpdateClusterRequest),
    DeleteCluster(pb::DeleteClusterRequest),
    WatchCluster(pb::WatchClusterRequest),
    GetClusterCredentials(pb::GetClusterCredentialsRequest),
    GetOperation(pb::GetOperationRequest),
    ListOperations(pb::ListOperationsRequest),
    WatchOperation(pb::WatchOperationRequest),
    CreateTenant(pb::CreateTenantRequest),
    GetTenant(pb::GetTenantRequest),
    ListTenants(pb::ListTenantsRequest),
    UpdateTenantQuota(pb::UpdateTenantQuotaRequest),
    CreateApiKey(pb::CreateApiKeyRequest),
    RevokeApiKey(pb::RevokeApiKeyRequest),
    RetryOperation(pb::RetryOperationRequest),
    RescheduleOperation(pb::RescheduleOperationRequest),
}

/// The tenant every cluster call is made in.
const TENANT: &str = "search";
/// Its existing cluster.
const CLUSTER: &str = "tenants/search/clusters/logs";

/// A valid create request with `f` applied to its spec.
fn create_with(f: impl FnOnce(&mut pb::ClusterSpec)) -> Req {
    let mut r = create_request(TENANT, "fresh", 3);
    if let Some(s) = r.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        f(s);
    }
    Req::CreateCluster(r)
}

/// A valid create request with `f` applied to the request.
fn create(f: impl FnOnce(&mut pb::CreateClusterRequest)) -> Req {
    let mut r = create_request(TENANT, "fresh", 3);
    f(&mut r);
    Req::CreateCluster(r)
}

fn node_set(name: &str) -> pb::NodeSet {
    let mut ns = spec(1).node_sets.remove(0);
    ns.name = name.into();
    ns
}

fn list_clusters(f: impl FnOnce(&mut pb::ListClustersRequest)) -> Req {
    let mut r = pb::ListClustersRequest {
        parent: format!("tenants/{TENANT}"),
        ..Default::default()
    };
    f(&mut r);
    Req::ListClusters(r)
}

fn list_operations(f: impl FnOnce(&mut pb::ListOperationsRequest)) -> Req {
    let mut r = pb::ListOperationsRequest {
        parent: format!("tenants/{TENANT}"),
        ..Default::default()
    };
    f(&mut r);
    Req::ListOperations(r)
}

fn update(spec: pb::ClusterSpec, paths: &[&str]) -> Req {
    Req::UpdateCluster(update_request(spec, paths))
}

fn update_request(spec: pb::ClusterSpec, paths: &[&str]) -> pb::UpdateClusterRequest {
    pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: CLUSTER.into(),
            spec: Some(spec),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        ..Default::default()
    }
}

fn create_key(parent: &str, role: i32) -> Req {
    Req::CreateApiKey(pb::CreateApiKeyRequest {
        parent: parent.into(),
        api_key: Some(pb::ApiKey {
            display_name: "k".into(),
            role,
            ..Default::default()
        }),
        request_id: String::new(),
    })
}

fn quota(max_clusters: i32, max_nodes: i32, max_storage_gib: i64) -> Option<pb::Quota> {
    Some(pb::Quota {
        max_clusters,
        max_nodes,
        max_storage_gib,
    })
}

/// (what, request, the fields the answer must name — exactly these).
fn cases() -> Vec<(&'static str, Req, Vec<&'static str>)> {
    let count = "cluster.spec.node_sets[0].count";
    let storage = "cluster.spec.node_sets[0].storage_gib";
    let master = pb::NodeRole::Master as i32;
    let data = pb::NodeRole::Data as i32;
    vec![
        // cluster ids
        (
            "empty cluster_id",
            create(|r| r.cluster_id.clear()),
            vec!["cluster_id"],
        ),
        (
            "cluster_id of 25 characters",
            create(|r| r.cluster_id = "a".repeat(25)),
            vec!["cluster_id"],
        ),
        (
            "cluster_id Bad_Name",
            create(|r| r.cluster_id = "Bad_Name".into()),
            vec!["cluster_id"],
        ),
        (
            "cluster_id a.b",
            create(|r| r.cluster_id = "a.b".into()),
            vec!["cluster_id"],
        ),
        (
            "cluster_id 1abc",
            create(|r| r.cluster_id = "1abc".into()),
            vec!["cluster_id"],
        ),
        (
            "cluster_id -a",
            create(|r| r.cluster_id = "-a".into()),
            vec!["cluster_id"],
        ),
        (
            "cluster_id a-",
            create(|r| r.cluster_id = "a-".into()),
            vec!["cluster_id"],
        ),
        (
            "cluster_id unicode",
            create(|r| r.cluster_id = "lögs".into()),
            vec!["cluster_id"],
        ),
        (
            "cluster_id with a slash",
            create(|r| r.cluster_id = "a/b".into()),
            vec!["cluster_id"],
        ),
        // the spec
        (
            "missing cluster",
            create(|r| r.cluster = None),
            vec!["cluster.spec"],
        ),
        (
            "missing spec",
            create(|r| r.cluster = Some(pb::Cluster::default())),
            vec!["cluster.spec"],
        ),
        (
            "unknown size class",
            create_with(|s| s.node_sets[0].size_class = "huge".into()),
            vec!["cluster.spec.node_sets[0].size_class"],
        ),
        (
            "empty size class",
            create_with(|s| s.node_sets[0].size_class.clear()),
            vec!["cluster.spec.node_sets[0].size_class"],
        ),
        (
            "unknown version",
            create_with(|s| s.version = "7.17.0".into()),
            vec!["cluster.spec.version"],
        ),
        (
            "empty version",
            create_with(|s| s.version.clear()),
            vec!["cluster.spec.version"],
        ),
        // A node set of no nodes also leaves the cluster without a master.
        (
            "negative count",
            create_with(|s| s.node_sets[0].count = -1),
            vec![count, "cluster.spec.node_sets"],
        ),
        (
            "count 0",
            create_with(|s| s.node_sets[0].count = 0),
            vec![count, "cluster.spec.node_sets"],
        ),
        (
            "count 51",
            create_with(|s| s.node_sets[0].count = 51),
            vec![count],
        ),
        (
            "storage 5 GiB",
            create_with(|s| s.node_sets[0].storage_gib = 5),
            vec![storage],
        ),
        (
            "storage 20000 GiB",
            create_with(|s| s.node_sets[0].storage_gib = 20_000),
            vec![storage],
        ),
        (
            "IOPS 20000",
            create_with(|s| s.node_sets[0].storage_iops = 20_000),
            vec!["cluster.spec.node_sets[0].storage_iops"],
        ),
        (
            "IOPS over 500 per GiB",
            create_with(|s| {
                s.node_sets[0].storage_gib = 10;
                s.node_sets[0].storage_iops = 6000;
            }),
            vec!["cluster.spec.node_sets[0].storage_iops"],
        ),
        (
            "throughput too high for the IOPS",
            create_with(|s| s.node_sets[0].storage_throughput_mibps = 1000),
            vec!["cluster.spec.node_sets[0].storage_throughput_mibps"],
        ),
        (
            "throughput over the gp3 maximum",
            create_with(|s| {
                s.node_sets[0].storage_iops = 16_000;
                s.node_sets[0].storage_throughput_mibps = 2000;
            }),
            vec!["cluster.spec.node_sets[0].storage_throughput_mibps"],
        ),
        (
            "no master node set",
            create_with(|s| s.node_sets[0].roles = vec![data]),
            vec!["cluster.spec.node_sets"],
        ),
        (
            "no node sets",
            create_with(|s| s.node_sets.clear()),
            vec!["cluster.spec.node_sets"],
        ),
        (
            "no roles",
            create_with(|s| {
                s.node_sets.push(node_set("extra"));
                s.node_sets[1].roles.clear();
            }),
            vec!["cluster.spec.node_sets[1].roles"],
        ),
        (
            "duplicate node set names",
            create_with(|s| s.node_sets.push(node_set("default"))),
            vec!["cluster.spec.node_sets[1].name"],
        ),
        (
            "node set name of 17 characters",
            create_with(|s| s.node_sets[0].name = "n".repeat(17)),
            vec!["cluster.spec.node_sets[0].name"],
        ),
        (
            "empty node set name",
            create_with(|s| s.node_sets[0].name.clear()),
            vec!["cluster.spec.node_sets[0].name"],
        ),
        (
            "node set name Hot_Nodes",
            create_with(|s| s.node_sets[0].name = "Hot_Nodes".into()),
            vec!["cluster.spec.node_sets[0].name"],
        ),
        (
            "9 node sets",
            create_with(|s| {
                for i in 1..9 {
                    s.node_sets.push(node_set(&format!("set{i}")));
                }
            }),
            vec!["cluster.spec.node_sets"],
        ),
        (
            "zone_count 4",
            create_with(|s| s.zone_count = 4),
            vec!["cluster.spec.zone_count"],
        ),
        (
            "negative zone_count",
            create_with(|s| s.zone_count = -1),
            vec!["cluster.spec.zone_count"],
        ),
        (
            "unknown role 99",
            create_with(|s| s.node_sets[0].roles = vec![99, master]),
            vec!["cluster.spec.node_sets[0].roles[0]"],
        ),
        (
            "role UNSPECIFIED",
            create_with(|s| s.node_sets[0].roles = vec![master, 0]),
            vec!["cluster.spec.node_sets[0].roles[1]"],
        ),
        (
            "unknown volume retention",
            create_with(|s| s.volume_retention = 42),
            vec!["cluster.spec.volume_retention"],
        ),
        (
            "request_id not a UUID",
            create(|r| r.request_id = "retry-1".into()),
            vec!["request_id"],
        ),
        // parents
        (
            "parent tenant/x",
            create(|r| r.parent = "tenant/x".into()),
            vec!["parent"],
        ),
        (
            "parent tenants/",
            create(|r| r.parent = "tenants/".into()),
            vec!["parent"],
        ),
        (
            "parent tenants/UPPER",
            create(|r| r.parent = "tenants/UPPER".into()),
            vec!["parent"],
        ),
        (
            "parent tenants/a/b",
            create(|r| r.parent = "tenants/a/b".into()),
            vec!["parent"],
        ),
        (
            "ListClusters parent tenant/x",
            list_clusters(|r| r.parent = "tenant/x".into()),
            vec!["parent"],
        ),
        (
            "ListClusters empty parent",
            list_clusters(|r| r.parent.clear()),
            vec!["parent"],
        ),
        (
            "ListOperations parent tenants/UPPER",
            list_operations(|r| r.parent = "tenants/UPPER".into()),
            vec!["parent"],
        ),
        // cluster names
        (
            "GetCluster tenants/a/clusters",
            Req::GetCluster(pb::GetClusterRequest {
                name: "tenants/a/clusters".into(),
            }),
            vec!["name"],
        ),
        (
            "GetCluster clusters/x",
            Req::GetCluster(pb::GetClusterRequest {
                name: "clusters/x".into(),
            }),
            vec!["name"],
        ),
        (
            "GetCluster empty name",
            Req::GetCluster(pb::GetClusterRequest {
                name: String::new(),
            }),
            vec!["name"],
        ),
        (
            "DeleteCluster tenants/a/clusters",
            Req::DeleteCluster(pb::DeleteClusterRequest {
                name: "tenants/a/clusters".into(),
                ..Default::default()
            }),
            vec!["name"],
        ),
        (
            "DeleteCluster clusters/x",
            Req::DeleteCluster(pb::DeleteClusterRequest {
                name: "clusters/x".into(),
                ..Default::default()
            }),
            vec!["name"],
        ),
        (
            "DeleteCluster bad request_id",
            Req::DeleteCluster(pb::DeleteClusterRequest {
                name: CLUSTER.into(),
                request_id: "x".into(),
                ..Default::default()
            }),
            vec!["request_id"],
        ),
        (
            "WatchCluster tenants/a/clusters",
            Req::WatchCluster(pb::WatchClusterRequest {
                name: "tenants/a/clusters".into(),
                since_revision: 0,
            }),
            vec!["name"],
        ),
        (
            "WatchCluster clusters/x",
            Req::WatchCluster(pb::WatchClusterRequest {
                name: "clusters/x".into(),
                since_revision: 0,
            }),
            vec!["name"],
        ),
        (
            "WatchCluster negative since_revision",
            Req::WatchCluster(pb::WatchClusterRequest {
                name: CLUSTER.into(),
                since_revision: -1,
            }),
            vec!["since_revision"],
        ),
        (
            "WatchCluster since_revision ahead of the log",
            Req::WatchCluster(pb::WatchClusterRequest {
                name: CLUSTER.into(),
                since_revision: 1000,
            }),
            vec!["since_revision"],
        ),
        (
            "GetClusterCredentials clusters/x",
            Req::GetClusterCredentials(pb::GetClusterCredentialsRequest {
                name: "clusters/x".into(),
            }),
            vec!["name"],
        ),
        (
            "UpdateCluster clusters/x",
            Req::UpdateCluster(pb::UpdateClusterRequest {
                cluster: Some(pb::Cluster {
                    name: "clusters/x".into(),
                    spec: Some(spec(3)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            vec!["cluster.name"],
        ),
        (
            "UpdateCluster without a cluster",
            Req::UpdateCluster(pb::UpdateClusterRequest::default()),
            vec!["cluster"],
        ),
        // pages and filters
        (
            "ListClusters negative page_size",
            list_clusters(|r| r.page_size = -1),
            vec!["page_size"],
        ),
        (
            "ListOperations negative page_size",
            list_operations(|r| r.page_size = -5),
            vec!["page_size"],
        ),
        (
            "ListTenants negative page_size",
            Req::ListTenants(pb::ListTenantsRequest {
                page_size: -1,
                page_token: String::new(),
            }),
            vec!["page_size"],
        ),
        (
            "ListClusters garbage page_token",
            list_clusters(|r| r.page_token = "garbage!!".into()),
            vec!["page_token"],
        ),
        (
            "ListClusters base64 page_token that is no token",
            list_clusters(|r| r.page_token = "aGVsbG8".into()),
            vec!["page_token"],
        ),
        (
            "ListOperations garbage page_token",
            list_operations(|r| r.page_token = "%%%".into()),
            vec!["page_token"],
        ),
        (
            "ListTenants garbage page_token",
            Req::ListTenants(pb::ListTenantsRequest {
                page_size: 0,
                page_token: "not-a-token".into(),
            }),
            vec!["page_token"],
        ),
        (
            "ListClusters unsupported filter",
            list_clusters(|r| r.filter = "name = a".into()),
            vec!["filter"],
        ),
        (
            "ListClusters unknown state",
            list_clusters(|r| r.filter = "state = SLEEPING".into()),
            vec!["filter"],
        ),
        (
            "ListOperations unsupported filter",
            list_operations(|r| r.filter = "kind = CREATE".into()),
            vec!["filter"],
        ),
        (
            "ListOperations bad cluster",
            list_operations(|r| r.cluster = "clusters/x".into()),
            vec!["cluster"],
        ),
        // updates
        (
            "update_mask path labels",
            update(spec(3), &["labels"]),
            vec!["update_mask.paths[0]"],
        ),
        (
            "second update_mask path bad",
            update(spec(3), &["spec.version", "spec.bogus"]),
            vec!["update_mask.paths[1]"],
        ),
        (
            "update to count 51",
            update(spec(51), &["spec.node_sets"]),
            vec![count],
        ),
        (
            "update to an unknown version",
            update(
                pb::ClusterSpec {
                    version: "1.0.0".into(),
                    ..Default::default()
                },
                &["spec.version"],
            ),
            vec!["cluster.spec.version"],
        ),
        (
            "create with a window of 10 minutes starting at 25:00",
            create_with(|s| {
                s.maintenance_window = Some(pb::MaintenanceWindow {
                    day_of_week: pb::DayOfWeek::Saturday as i32,
                    start_time: "25:00".into(),
                    duration: Some(prost_types::Duration {
                        seconds: 600,
                        nanos: 0,
                    }),
                });
            }),
            vec!["cluster.spec.maintenance_window.start_time"],
        ),
        (
            "update to a window of 10 minutes, without a day",
            update(
                pb::ClusterSpec {
                    maintenance_window: Some(pb::MaintenanceWindow {
                        day_of_week: 0,
                        start_time: "02:00".into(),
                        duration: Some(prost_types::Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                    }),
                    ..Default::default()
                },
                &["spec.maintenance_window"],
            ),
            vec!["cluster.spec.maintenance_window.day_of_week"],
        ),
        (
            "update to a window of 10 minutes",
            update(
                pb::ClusterSpec {
                    maintenance_window: Some(pb::MaintenanceWindow {
                        day_of_week: pb::DayOfWeek::Sunday as i32,
                        start_time: "02:00".into(),
                        duration: Some(prost_types::Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                    }),
                    ..Default::default()
                },
                &["spec.maintenance_window"],
            ),
            vec!["cluster.spec.maintenance_window.duration"],
        ),
        (
            "update to a freeze that ends before it starts, and one of 40 days",
            update(
                pb::ClusterSpec {
                    change_freezes: vec![
                        pb::ChangeFreeze {
                            start_time: Some(prost_types::Timestamp {
                                seconds: 2_000_000_000,
                                nanos: 0,
                            }),
                            end_time: Some(prost_types::Timestamp {
                                seconds: 1_999_999_000,
                                nanos: 0,
                            }),
                            reason: String::new(),
                        },
                        pb::ChangeFreeze {
                            start_time: Some(prost_types::Timestamp {
                                seconds: 2_000_000_000,
                                nanos: 0,
                            }),
                            end_time: Some(prost_types::Timestamp {
                                seconds: 2_000_000_000 + 40 * 86_400,
                                nanos: 0,
                            }),
                            reason: String::new(),
                        },
                    ],
                    ..Default::default()
                },
                &["spec.change_freezes"],
            ),
            vec![
                "cluster.spec.change_freezes[0].end_time",
                "cluster.spec.change_freezes[1].end_time",
            ],
        ),
        (
            "RescheduleOperation without a target",
            Req::RescheduleOperation(pb::RescheduleOperationRequest {
                name: format!("operations/{}", uuid::Uuid::nil()),
                ..Default::default()
            }),
            vec!["target"],
        ),
        (
            "update with bad request_id",
            Req::UpdateCluster(pb::UpdateClusterRequest {
                request_id: "nope".into(),
                ..update_request(spec(5), &["spec"])
            }),
            vec!["request_id"],
        ),
        // operations
        (
            "GetOperation name not a UUID",
            Req::GetOperation(pb::GetOperationRequest {
                name: "operations/abc".into(),
            }),
            vec!["name"],
        ),
        (
            "GetOperation without prefix",
            Req::GetOperation(pb::GetOperationRequest {
                name: uuid::Uuid::new_v4().to_string(),
            }),
            vec!["name"],
        ),
        (
            "WatchOperation name not a UUID",
            Req::WatchOperation(pb::WatchOperationRequest {
                name: "operations/abc".into(),
            }),
            vec!["name"],
        ),
        (
            "RetryOperation name not a UUID",
            Req::RetryOperation(pb::RetryOperationRequest {
                name: "operations/abc".into(),
                request_id: String::new(),
            }),
            vec!["name"],
        ),
        (
            "RetryOperation cluster name",
            Req::RetryOperation(pb::RetryOperationRequest {
                name: CLUSTER.into(),
                request_id: String::new(),
            }),
            vec!["name"],
        ),
        // admin
        (
            "CreateTenant tenant_id Bad_Name",
            Req::CreateTenant(pb::CreateTenantRequest {
                tenant_id: "Bad_Name".into(),
                ..Default::default()
            }),
            vec!["tenant_id"],
        ),
        (
            "CreateTenant empty tenant_id",
            Req::CreateTenant(pb::CreateTenantRequest::default()),
            vec!["tenant_id"],
        ),
        (
            "CreateTenant tenant_id of 21 characters",
            Req::CreateTenant(pb::CreateTenantRequest {
                tenant_id: "t".repeat(21),
                ..Default::default()
            }),
            vec!["tenant_id"],
        ),
        (
            "CreateTenant negative quota",
            Req::CreateTenant(pb::CreateTenantRequest {
                tenant_id: "fine".into(),
                tenant: Some(pb::Tenant {
                    quota: quota(1, -1, 10),
                    ..Default::default()
                }),
                request_id: String::new(),
            }),
            vec!["tenant.quota.max_nodes"],
        ),
        (
            "CreateTenant display name of 201 characters",
            Req::CreateTenant(pb::CreateTenantRequest {
                tenant_id: "fine".into(),
                tenant: Some(pb::Tenant {
                    display_name: "d".repeat(201),
                    ..Default::default()
                }),
                request_id: String::new(),
            }),
            vec!["tenant.display_name"],
        ),
        (
            "CreateTenant display name with a NUL",
            Req::CreateTenant(pb::CreateTenantRequest {
                tenant_id: "fine".into(),
                tenant: Some(pb::Tenant {
                    display_name: "a\u{0}b".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }),
            vec!["tenant.display_name"],
        ),
        (
            "CreateApiKey display name with a newline",
            Req::CreateApiKey(pb::CreateApiKeyRequest {
                parent: format!("tenants/{TENANT}"),
                api_key: Some(pb::ApiKey {
                    display_name: "a\nb".into(),
                    role: pb::Role::TenantViewer as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            }),
            vec!["api_key.display_name"],
        ),
        (
            "CreateTenant bad request_id",
            Req::CreateTenant(pb::CreateTenantRequest {
                tenant_id: "fine".into(),
                request_id: "1234".into(),
                ..Default::default()
            }),
            vec!["request_id"],
        ),
        (
            "GetTenant bad name",
            Req::GetTenant(pb::GetTenantRequest {
                name: "search".into(),
            }),
            vec!["name"],
        ),
        (
            "UpdateTenantQuota negative",
            Req::UpdateTenantQuota(pb::UpdateTenantQuotaRequest {
                name: format!("tenants/{TENANT}"),
                quota: quota(-1, 1, -1),
                request_id: String::new(),
            }),
            vec!["quota.max_clusters", "quota.max_storage_gib"],
        ),
        (
            "UpdateTenantQuota without quota",
            Req::UpdateTenantQuota(pb::UpdateTenantQuotaRequest {
                name: format!("tenants/{TENANT}"),
                quota: None,
                request_id: String::new(),
            }),
            vec!["quota"],
        ),
        (
            "UpdateTenantQuota bad name",
            Req::UpdateTenantQuota(pb::UpdateTenantQuotaRequest {
                name: "tenants/".into(),
                quota: quota(1, 1, 1),
                request_id: String::new(),
            }),
            vec!["name"],
        ),
        (
            "CreateApiKey tenant role without parent",
            create_key("", pb::Role::TenantAdmin as i32),
            vec!["parent"],
        ),
        (
            "CreateApiKey viewer role without parent",
            create_key("", pb::Role::TenantViewer as i32),
            vec!["parent"],
        ),
        (
            "CreateApiKey platform role with parent",
            create_key("tenants/search", pb::Role::PlatformAdmin as i32),
            vec!["parent"],
        ),
        (
            "CreateApiKey worker role with parent",
            create_key("tenants/search", pb::Role::Worker as i32),
            vec!["parent"],
        ),
        (
            "CreateApiKey no role",
            create_key("tenants/search", 0),
            vec!["api_key.role"],
        ),
        (
            "CreateApiKey unknown role",
            create_key("", 99),
            vec!["api_key.role"],
        ),
        (
            "CreateApiKey bad parent",
            create_key("tenants/UPPER", pb::Role::TenantAdmin as i32),
            vec!["parent"],
        ),
        (
            "RevokeApiKey bad name",
            Req::RevokeApiKey(pb::RevokeApiKeyRequest {
                name: "apiKeys/x".into(),
            }),
            vec!["name"],
        ),
    ]
}

/// The tenant admin for tenant calls, the platform admin for AdminService.
async fn send(app: &App, tenant_admin: &str, req: Req) -> Result<(), Status> {
    let t = tenant_admin;
    let mut c = app.clusters();
    let mut o = app.operations();
    let mut a = app.admin();
    match req {
        Req::CreateCluster(r) => c.create_cluster(authed(t, r)).await.map(drop),
        Req::GetCluster(r) => c.get_cluster(authed(t, r)).await.map(drop),
        Req::ListClusters(r) => c.list_clusters(authed(t, r)).await.map(drop),
        Req::UpdateCluster(r) => c.update_cluster(authed(t, r)).await.map(drop),
        Req::DeleteCluster(r) => c.delete_cluster(authed(t, r)).await.map(drop),
        Req::WatchCluster(r) => {
            // The error may come from the call or as the first item.
            let mut s = c.watch_cluster(authed(t, r)).await?.into_inner();
            s.message().await.map(drop)
        }
        Req::GetClusterCredentials(r) => c.get_cluster_credentials(authed(t, r)).await.map(drop),
        Req::GetOperation(r) => o.get_operation(authed(t, r)).await.map(drop),
        Req::ListOperations(r) => o.list_operations(authed(t, r)).await.map(drop),
        Req::WatchOperation(r) => {
            let mut s = o.watch_operation(authed(t, r)).await?.into_inner();
            s.message().await.map(drop)
        }
        Req::RetryOperation(r) => a.retry_operation(authed(t, r)).await.map(drop),
        Req::RescheduleOperation(r) => o.reschedule_operation(authed(t, r)).await.map(drop),
        Req::CreateTenant(r) => a.create_tenant(authed(ADMIN_KEY, r)).await.map(drop),
        Req::GetTenant(r) => a.get_tenant(authed(ADMIN_KEY, r)).await.map(drop),
        Req::ListTenants(r) => a.list_tenants(authed(ADMIN_KEY, r)).await.map(drop),
        Req::UpdateTenantQuota(r) => a.update_tenant_quota(authed(ADMIN_KEY, r)).await.map(drop),
        Req::CreateApiKey(r) => a.create_api_key(authed(ADMIN_KEY, r)).await.map(drop),
        Req::RevokeApiKey(r) => a.revoke_api_key(authed(ADMIN_KEY, r)).await.map(drop),
    }
}

#[tokio::test]
async fn each_bad_input_names_its_field() {
    let app = spawn_app().await;
    let t = app.tenant(TENANT).await;
    let logs = app.create_cluster(&t.admin, TENANT, "logs", 3).await;
    let logs = logs.cluster.expect("cluster");
    let pool = app.db.pool().await;
    let count_rows = async |pool: &sqlx::PgPool| -> (i64, i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM clusters), \
             (SELECT count(*) FROM api_keys), (SELECT count(*) FROM operations)",
        )
        .fetch_one(pool)
        .await
        .expect("count rows")
    };
    let before = count_rows(&pool).await;

    let cases = cases();
    let total = cases.len();
    let mut failures = Vec::new();
    for (what, req, expected) in cases {
        let outcome = tokio::time::timeout(Duration::from_secs(5), send(&app, &t.admin, req)).await;
        let expected: BTreeSet<&str> = expected.into_iter().collect();
        let err = match outcome {
            Err(_) => {
                failures.push(format!("{what}: no answer within 5 s"));
                continue;
            }
            Ok(Ok(())) => {
                failures.push(format!(
                    "{what}: accepted, expected INVALID_ARGUMENT on {expected:?}"
                ));
                continue;
            }
            Ok(Err(e)) => e,
        };
        let fields = violated_fields(&err);
        let got: BTreeSet<&str> = fields.iter().map(String::as_str).collect();
        let mut problems = Vec::new();
        if err.code() != Code::InvalidArgument {
            problems.push(format!("code {:?}", err.code()));
        }
        if got != expected {
            problems.push(format!("fields {fields:?}, expected {expected:?}"));
        }
        if got.len() != fields.len() {
            problems.push(format!("a field is named twice: {fields:?}"));
        }
        if reason(&err) != "INVALID_ARGUMENT" {
            problems.push(format!("ErrorInfo reason {:?}", reason(&err)));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{what}: {} (message: {})",
                problems.join(", "),
                err.message()
            ));
        }
    }
    println!("bad inputs: {total} cases checked");
    assert!(
        failures.is_empty(),
        "{} of {total} bad inputs were not answered as specified:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing was written by any refused request.
    assert_eq!(count_rows(&pool).await, before, "no row was added");
    let after = app
        .clusters()
        .get_cluster(authed(
            &t.viewer,
            pb::GetClusterRequest {
                name: CLUSTER.into(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    assert_eq!(after.etag, logs.etag, "the cluster is unchanged");
    let q: i32 = sqlx::query_scalar("SELECT max_clusters FROM tenants WHERE id = $1")
        .bind(TENANT)
        .fetch_one(&pool)
        .await
        .expect("quota");
    assert_eq!(q, 5, "the quota is unchanged");
    pool.close().await;
}

#[tokio::test]
async fn many_errors_are_reported_at_once() {
    let app = spawn_app().await;
    let t = app.tenant(TENANT).await;
    let mut s = spec(51);
    s.version = "7.0.0".into();
    s.zone_count = 4;
    s.node_sets[0].size_class = "huge".into();
    s.node_sets[0].storage_gib = 5;
    s.node_sets[0].storage_iops = 20_000;
    s.node_sets.push(node_set("default"));
    s.node_sets[1].roles = vec![99];
    let req = pb::CreateClusterRequest {
        parent: format!("tenants/{TENANT}"),
        cluster_id: "Bad_Name".into(),
        cluster: Some(pb::Cluster {
            spec: Some(s.clone()),
            ..Default::default()
        }),
        request_id: "not-a-uuid".into(),
        validate_only: false,
        restore_from: None,
    };
    let err = app
        .clusters()
        .create_cluster(authed(&t.admin, req.clone()))
        .await
        .expect_err("many errors");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
    let got: BTreeSet<String> = violated_fields(&err).into_iter().collect();
    // The unknown role makes the spec unreadable, so the spec's other rules
    // are checked once it parses: first the parse-level errors together.
    let want: BTreeSet<String> = [
        "cluster_id",
        "request_id",
        "cluster.spec.node_sets[1].roles[0]",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want, "{}", err.message());

    // Without the unreadable role, every rule of the spec speaks at once.
    let mut readable = req;
    s.node_sets[1].roles = vec![pb::NodeRole::Data as i32];
    readable.cluster = Some(pb::Cluster {
        spec: Some(s),
        ..Default::default()
    });
    let err = app
        .clusters()
        .create_cluster(authed(&t.admin, readable))
        .await
        .expect_err("many errors");
    assert_eq!(err.code(), Code::InvalidArgument);
    let got: BTreeSet<String> = violated_fields(&err).into_iter().collect();
    let want: BTreeSet<String> = [
        "cluster_id",
        "request_id",
        "cluster.spec.version",
        "cluster.spec.zone_count",
        "cluster.spec.node_sets[0].count",
        "cluster.spec.node_sets[0].size_class",
        "cluster.spec.node_sets[0].storage_gib",
        "cluster.spec.node_sets[0].storage_iops",
        "cluster.spec.node_sets[1].name",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want, "{}", err.message());
    for field in &want {
        assert!(
            err.message().contains(field.as_str()),
            "the message names {field}: {}",
            err.message()
        );
    }
}

/// The server refused the message for its size (not, say, a transport error).
fn too_large(err: &Status) {
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("too large") && err.message().contains("1048576"),
        "the answer names the size limit: {}",
        err.message()
    );
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted() {
    let app = spawn_app().await;
    let t = app.tenant(TENANT).await;
    let big = "a".repeat(2 << 20);

    let mut clusters = app.clusters().max_encoding_message_size(8 << 20);
    let err = clusters
        .create_cluster(authed(&t.admin, create_request(TENANT, &big, 1)))
        .await
        .expect_err("2 MiB cluster_id");
    too_large(&err);

    let mut req = create_request(TENANT, "fine", 1);
    if let Some(s) = req.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        s.node_sets[0].name = big.clone();
    }
    let err = clusters
        .create_cluster(authed(&t.admin, req))
        .await
        .expect_err("2 MiB node set name");
    too_large(&err);

    let err = app
        .admin()
        .max_encoding_message_size(8 << 20)
        .create_tenant(authed(
            ADMIN_KEY,
            pb::CreateTenantRequest {
                tenant_id: "big".into(),
                tenant: Some(pb::Tenant {
                    display_name: big.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect_err("2 MiB display name");
    too_large(&err);

    // The server is fine afterwards, on the same channel.
    app.create_cluster(&t.admin, TENANT, "after", 1).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters")
        .fetch_one(&app.db.pool().await)
        .await
        .expect("count");
    assert_eq!(n, 1, "only the valid cluster exists");
}

/// A long value well under the message limit is an ordinary bad input: the
/// answer names the field, and the client can read the answer.
#[tokio::test]
async fn long_values_under_the_limit_are_invalid_argument() {
    let app = spawn_app().await;
    let t = app.tenant(TENANT).await;
    app.create_cluster(&t.admin, TENANT, "logs", 1).await;
    let long = "a".repeat(64 << 10);
    let cases = vec![
        ("cluster_id", create(|r| r.cluster_id = long.clone())),
        (
            "cluster.spec.version",
            create_with(|s| s.version = long.clone()),
        ),
        (
            "cluster.spec.node_sets[0].name",
            create_with(|s| s.node_sets[0].name = long.clone()),
        ),
        ("request_id", create(|r| r.request_id = long.clone())),
        ("parent", list_clusters(|r| r.parent = long.clone())),
        ("filter", list_clusters(|r| r.filter = long.clone())),
        (
            "name",
            Req::GetCluster(pb::GetClusterRequest { name: long.clone() }),
        ),
    ];
    let mut failures = Vec::new();
    for (field, req) in cases {
        match send(&app, &t.admin, req).await {
            Ok(()) => failures.push(format!("{field}: accepted")),
            Err(e) if e.code() == Code::InvalidArgument && violated_fields(&e) == vec![field] => {}
            Err(e) => failures.push(format!(
                "{field} of 64 KiB: {:?} {:.200} (fields {:?})",
                e.code(),
                e.message(),
                violated_fields(&e)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "long values were not answered INVALID_ARGUMENT:\n{}",
        failures.join("\n")
    );
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding, as the page tokens use.
fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64_decode(s: &str) -> Vec<u8> {
    let vals: Vec<u32> = s
        .bytes()
        .map(|c| B64.iter().position(|b| *b == c).expect("base64url") as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, v)| n | (v << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// `token` with its cursor replaced by `k`.
fn edit_token(token: &str, k: serde_json::Value) -> String {
    let mut json: serde_json::Value =
        serde_json::from_slice(&b64_decode(token)).expect("a token is base64url JSON");
    json["k"] = k;
    b64_encode(&serde_json::to_vec(&json).expect("encode"))
}

/// Page tokens are opaque to clients but not signed; one whose cursor was
/// edited is a bad page_token, and never reaches the database as an error.
#[tokio::test]
async fn edited_page_tokens_are_invalid_argument_never_internal() {
    let app = spawn_app().await;
    let t = app.tenant(TENANT).await;
    app.tenant("other").await;
    app.create_cluster(&t.admin, TENANT, "a", 1).await;
    app.create_cluster(&t.admin, TENANT, "b", 1).await;

    let tenants_token = app
        .admin()
        .list_tenants(authed(
            ADMIN_KEY,
            pb::ListTenantsRequest {
                page_size: 1,
                page_token: String::new(),
            },
        ))
        .await
        .expect("list tenants")
        .into_inner()
        .next_page_token;
    let clusters_token = app
        .clusters()
        .list_clusters(authed(
            &t.admin,
            pb::ListClustersRequest {
                parent: format!("tenants/{TENANT}"),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("list clusters")
        .into_inner()
        .next_page_token;
    assert!(!tenants_token.is_empty() && !clusters_token.is_empty());
    let uid = uuid::Uuid::new_v4().to_string();
    let cases = vec![
        (
            "tenants cursor of the wrong type",
            Req::ListTenants(pb::ListTenantsRequest {
                page_size: 1,
                page_token: edit_token(&tenants_token, serde_json::json!([1])),
            }),
        ),
        (
            "tenants cursor with a NUL",
            Req::ListTenants(pb::ListTenantsRequest {
                page_size: 1,
                page_token: edit_token(&tenants_token, serde_json::json!(["a\u{0}b"])),
            }),
        ),
        (
            "clusters cursor with a bad uid",
            list_clusters(|r| {
                r.page_size = 1;
                r.page_token = edit_token(&clusters_token, serde_json::json!([TENANT, "a", "x"]));
            }),
        ),
        (
            "clusters cursor with a NUL in the tenant",
            list_clusters(|r| {
                r.page_size = 1;
                r.page_token =
                    edit_token(&clusters_token, serde_json::json!(["a\u{0}b", "a", uid]));
            }),
        ),
        (
            "clusters cursor with a NUL in the cluster",
            list_clusters(|r| {
                r.page_size = 1;
                r.page_token =
                    edit_token(&clusters_token, serde_json::json!([TENANT, "a\u{0}", uid]));
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (what, req) in cases {
        match send(&app, &t.admin, req).await {
            Err(e)
                if e.code() == Code::InvalidArgument
                    && violated_fields(&e) == vec!["page_token"] => {}
            other => failures.push(format!(
                "{what}: {:?}",
                other.map_err(|e| (e.code(), e.message().to_string()))
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "edited tokens not answered INVALID_ARGUMENT on page_token:\n{}",
        failures.join("\n")
    );
}

/// What a hostile request under the size limit can make the server build is bounded:
/// a repeated field longer than any valid spec is refused before it is walked, an
/// answer lists at most 20 violations (then says how many more), and a value is echoed
/// only as a short prefix.
#[tokio::test]
async fn validation_of_huge_requests_is_bounded() {
    let app = spawn_app().await;
    let t = app.tenant(TENANT).await;
    let n = 150_000;
    let cases: Vec<(&str, Req, Vec<&str>)> = vec![
        (
            "150,000 empty node sets",
            create_with(|s| s.node_sets = vec![pb::NodeSet::default(); n]),
            vec!["cluster.spec.node_sets"],
        ),
        (
            "a million roles that are not roles",
            create_with(|s| s.node_sets[0].roles = vec![99; 1_000_000]),
            vec!["cluster.spec.node_sets[0].roles"],
        ),
    ];
    for (case, req, want) in cases {
        let started = std::time::Instant::now();
        let err = send(&app, &t.admin, req).await.expect_err(case);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{case}: {}",
            err.message()
        );
        assert_eq!(violated_fields(&err), want, "{case}");
        assert!(
            err.message().contains("at most 64 items"),
            "{case}: {}",
            err.message()
        );
        // Not a timing assertion on the server, only that the call did not hang.
        assert!(started.elapsed() < Duration::from_secs(30), "{case}");
    }
    // 60 node sets, each with an unknown size class 1 KiB long: 20 violations listed,
    // then the count of the rest; no value echoed whole.
    let long = "x".repeat(1024);
    let req = create_with(|s| {
        s.node_sets = (0..60)
            .map(|i| pb::NodeSet {
                size_class: long.clone(),
                ..node_set(&format!("s{i}"))
            })
            .collect();
    });
    let err = send(&app, &t.admin, req).await.expect_err("many");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violated_fields(&err);
    assert_eq!(fields.len(), 21, "{fields:?}");
    assert_eq!(fields[20], "");
    assert!(
        err.message().contains("more violations are not listed"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains(&long),
        "a long value is not echoed whole"
    );
    assert!(
        err.message().len() < 8 << 10,
        "{} bytes",
        err.message().len()
    );
}
