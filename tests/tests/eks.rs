//! EKS node groups for real: the aws-sdk-eks adapter against moto (an
//! independent emulator of the AWS API), directly and behind a proxy that
//! injects throttling, 500s, delays and dropped connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_eks::types::TaintEffect;
use esaas_core::backend::{NodeGroups, Target};
use esaas_core::catalog::Catalog;
use esaas_core::names::{ClusterId, TenantId};
use esaas_core::plan::NodeGroupStatus;
use esaas_core::spec::{ClusterSpec, NodeRole, NodeSet};
use esaas_eks::{EksConfig, EksNodeGroups, node_group_name};
use esaas_proto::v1 as pb;
use esaas_tests::faultproxy::{FaultProxy, Faults, Outcome};
use esaas_tests::sim::{Sim, SimConfig};
use esaas_tests::*;
use uuid::Uuid;

fn catalog() -> Catalog {
    esaas_runtime::Config::load(None).expect("defaults").catalog
}

fn eks_config(endpoint: &str, cluster: &str) -> EksConfig {
    let mut c = esaas_runtime::Config::load(None).expect("defaults").eks;
    c.cluster_name = cluster.into();
    c.endpoint_url = Some(endpoint.into());
    c.initial_backoff_ms = 10;
    c.tags.insert("cost-center".into(), "search-team".into());
    c
}

async fn adapter(endpoint: &str, config: EksConfig) -> EksNodeGroups {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    EksNodeGroups::with_sdk_config(&sdk, config, catalog())
}

/// A fresh EKS cluster in the shared moto and an adapter for it.
async fn fresh(endpoint: &str) -> (EksNodeGroups, EksConfig) {
    let moto = esaas_tests::moto::shared().await;
    let name = format!("eks-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let setup = adapter(&moto.endpoint, eks_config(&moto.endpoint, &name)).await;
    setup
        .ensure_cluster(&esaas_tests::moto::role_arn("esaas-eks-cluster"))
        .await
        .expect("create the EKS cluster");
    let config = eks_config(endpoint, &name);
    (adapter(endpoint, config.clone()).await, config)
}

fn two_node_sets() -> ClusterSpec {
    ClusterSpec {
        node_sets: vec![
            NodeSet {
                roles: vec![NodeRole::Master],
                count: 3,
                ..NodeSet::test("masters")
            },
            NodeSet {
                roles: vec![NodeRole::Data, NodeRole::Ingest],
                count: 2,
                size_class: "large".into(),
                storage_gib: 500,
                ..NodeSet::test("data")
            },
        ],
        zone_count: 3,
        zones: ["us-east-1a", "us-east-1b", "us-east-1c"]
            .map(String::from)
            .to_vec(),
        ..ClusterSpec::test()
    }
}

/// Desired size of the group `name`, or None when there is no such group.
async fn group_size(eks: &EksNodeGroups, config: &EksConfig, name: &str) -> Option<i32> {
    let out = eks
        .client()
        .describe_nodegroup()
        .cluster_name(&config.cluster_name)
        .nodegroup_name(name)
        .send()
        .await
        .ok()?;
    out.nodegroup?.scaling_config?.desired_size
}

/// The name of `t`'s node group of `node_set` in zone `us-east-{suffix}`.
fn group_name(t: &Target, node_set: &str, suffix: &str) -> String {
    let zone = format!("us-east-{suffix}");
    node_group_name(&t.uid, &t.tenant, &t.cluster_id, node_set, &zone)
}

fn target(tenant: &str, cluster: &str, spec: ClusterSpec) -> Target {
    Target {
        uid: Uuid::new_v4(),
        tenant: TenantId::parse("t", tenant).expect("tenant"),
        cluster_id: ClusterId::parse("c", cluster).expect("cluster"),
        spec,
        generation: 1,
        operation: Uuid::now_v7(),
    }
}

#[tokio::test]
async fn node_groups_are_made_as_the_spec_asks_and_read_back_from_the_emulator() {
    let moto = esaas_tests::moto::shared().await;
    let (eks, config) = fresh(&moto.endpoint).await;
    let t = target("search", "logs", two_node_sets());
    eks.ensure(&t, "masters", 3).await.expect("masters");
    eks.ensure(&t, "data", 2).await.expect("data");

    let observed = eks.observe(&t).await.expect("observe");
    assert_eq!(observed.len(), 2);
    assert_eq!(
        observed["masters"].desired_size, 3,
        "the zones' groups add up"
    );
    assert_eq!(observed["data"].desired_size, 2);
    // One group per node set and zone, sized to the pods of that zone
    // (pod n in zone n % 3); a zone without pods gets no group.
    for (name, size) in [
        (group_name(&t, "masters", "1a"), Some(1)),
        (group_name(&t, "masters", "1b"), Some(1)),
        (group_name(&t, "masters", "1c"), Some(1)),
        (group_name(&t, "data", "1a"), Some(1)),
        (group_name(&t, "data", "1b"), Some(1)),
        (group_name(&t, "data", "1c"), None),
    ] {
        assert_eq!(group_size(&eks, &config, &name).await, size, "{name}");
    }
    assert_eq!(
        observed["data"].instance_type, "r6i.2xlarge",
        "from the size class"
    );
    assert!(
        observed
            .values()
            .all(|g| g.status == NodeGroupStatus::Active)
    );

    let ng = eks
        .client()
        .describe_nodegroup()
        .cluster_name(&config.cluster_name)
        .nodegroup_name(group_name(&t, "data", "1b"))
        .send()
        .await
        .expect("describe")
        .nodegroup
        .expect("node group");
    let labels = ng.labels().expect("labels");
    assert_eq!(
        labels.get("esaas.io/tenant").map(String::as_str),
        Some("search")
    );
    assert_eq!(
        labels.get("esaas.io/cluster").map(String::as_str),
        Some("logs")
    );
    assert_eq!(
        labels.get("esaas.io/node-set").map(String::as_str),
        Some("data")
    );
    let taint = &ng.taints()[0];
    assert_eq!(
        (taint.key(), taint.value(), taint.effect()),
        (
            Some("esaas.io/dedicated"),
            Some("search.logs"),
            Some(&TaintEffect::NoSchedule)
        )
    );
    assert_eq!(ng.instance_types(), ["r6i.2xlarge".to_string()]);
    let scaling = ng.scaling_config().expect("scaling");
    assert_eq!(
        (
            scaling.min_size(),
            scaling.max_size(),
            scaling.desired_size()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        ng.subnets(),
        config.zone_subnets["us-east-1b"].as_slice(),
        "only its zone's subnets, so a replaced node comes back in that zone"
    );
    assert_eq!(
        ng.tags()
            .and_then(|t| t.get("esaas.io/zone"))
            .map(String::as_str),
        Some("us-east-1b")
    );
    assert_eq!(ng.node_role(), Some(config.node_role_arn.as_str()));
    assert_eq!(
        ng.ami_type().map(|a| a.as_str()),
        Some("AL2023_x86_64_STANDARD")
    );
    assert_eq!(ng.capacity_type().map(|c| c.as_str()), Some("ON_DEMAND"));
    assert_eq!(ng.disk_size(), Some(50));
    let tags = ng.tags().expect("tags");
    assert_eq!(tags.get("esaas.io/cluster-uid"), Some(&t.uid.to_string()));
    assert_eq!(
        tags.get("esaas.io/managed-by").map(String::as_str),
        Some("esaas")
    );
    assert_eq!(
        tags.get("cost-center").map(String::as_str),
        Some("search-team"),
        "cost allocation tags"
    );

    // Scale out: pods 2 and 3 land in zones c and a.
    eks.ensure(&t, "data", 4).await.expect("scale");
    assert_eq!(
        eks.observe(&t).await.expect("observe")["data"].desired_size,
        4
    );
    for (name, size) in [
        (group_name(&t, "data", "1a"), Some(2)),
        (group_name(&t, "data", "1b"), Some(1)),
        (group_name(&t, "data", "1c"), Some(1)),
    ] {
        assert_eq!(group_size(&eks, &config, &name).await, size, "{name}");
    }
    // Scale in to 2: pods 3 (zone a) and 2 (zone c) leave, and only their
    // zones' groups shrink; the emptied group stays, at 0 nodes.
    eks.ensure(&t, "data", 2).await.expect("scale in");
    for (name, size) in [
        (group_name(&t, "data", "1a"), Some(1)),
        (group_name(&t, "data", "1b"), Some(1)),
        (group_name(&t, "data", "1c"), Some(0)),
    ] {
        assert_eq!(group_size(&eks, &config, &name).await, size, "{name}");
    }
    // Delete until gone.
    eks.delete(&t, "data").await.expect("delete");
    eks.delete(&t, "data")
        .await
        .expect("deleting what is gone is done");
    eks.delete(&t, "masters").await.expect("delete");
    assert!(eks.observe(&t).await.expect("observe").is_empty());
}

#[tokio::test]
async fn a_repeated_or_lost_create_makes_one_node_group() {
    let moto = esaas_tests::moto::shared().await;
    // Every CreateNodegroup reaches moto, but its answer is lost: the SDK retries it.
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Faults {
            drop_after_forward: 1.0,
            path_contains: Some("/node-groups".into()),
            max_consecutive: Some(1),
            seed: 1,
            ..Faults::none()
        },
    )
    .await;
    let (eks, config) = fresh(&proxy.endpoint()).await;
    let t = target("search", "logs", two_node_sets());
    // The create lands but its answer is lost; the retry is told it exists.
    eks.ensure(&t, "masters", 3)
        .await
        .expect("ensure despite a lost answer");
    let lost = proxy.stats().dropped_after_forward;
    assert!(lost >= 1, "an answer was lost");
    // The same step again, and several at once (a worker crash, a second attempt).
    proxy.set_faults(Faults::none());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (eks, t) = (eks.clone(), t.clone());
        set.spawn(async move { eks.ensure(&t, "masters", 3).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("join").expect("ensure");
    }
    let names = eks
        .client()
        .list_nodegroups()
        .cluster_name(&config.cluster_name)
        .send()
        .await
        .expect("list")
        .nodegroups
        .unwrap_or_default();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["us-east-1a", "us-east-1b", "us-east-1c"]
            .map(|z| node_group_name(&t.uid, &t.tenant, &t.cluster_id, "masters", z))
            .to_vec()
    );
}

#[tokio::test]
async fn a_same_named_group_that_esaas_does_not_own_is_refused() {
    let moto = esaas_tests::moto::shared().await;
    let (eks, config) = fresh(&moto.endpoint).await;
    let t = target("search", "logs", two_node_sets());
    let name = node_group_name(&t.uid, &t.tenant, &t.cluster_id, "masters", "us-east-1a");
    eks.client()
        .create_nodegroup()
        .cluster_name(&config.cluster_name)
        .nodegroup_name(&name)
        .node_role(&config.node_role_arn)
        .set_subnets(Some(config.zone_subnets["us-east-1a"].clone()))
        .scaling_config(
            aws_sdk_eks::types::NodegroupScalingConfig::builder()
                .min_size(1)
                .max_size(1)
                .desired_size(1)
                .build(),
        )
        .send()
        .await
        .expect("someone else's node group");
    let err = eks.ensure(&t, "masters", 3).await.expect_err("foreign");
    assert!(!err.retryable);
    assert_eq!(err.reason, "NODEGROUP_FOREIGN");
    assert!(err.message.contains(&name));
    assert!(
        eks.observe(&t).await.expect("observe").is_empty(),
        "not counted as ours"
    );
    eks.delete(&t, "masters")
        .await
        .expect("never deletes what is not ours");
    assert!(
        eks.client()
            .describe_nodegroup()
            .cluster_name(&config.cluster_name)
            .nodegroup_name(&name)
            .send()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn permanent_errors_carry_the_aws_code_and_message() {
    let moto = esaas_tests::moto::shared().await;
    let eks = adapter(
        &moto.endpoint,
        eks_config(&moto.endpoint, "no-such-cluster"),
    )
    .await;
    let t = target("search", "logs", two_node_sets());
    let err = eks.ensure(&t, "masters", 3).await.expect_err("no cluster");
    assert!(!err.retryable);
    assert_eq!(err.reason, "EKS_CLUSTER_NOT_FOUND");
    assert!(
        err.message.contains("ResourceNotFoundException"),
        "{}",
        err.message
    );
    assert!(err.message.contains("No cluster found"), "{}", err.message);

    let (_, mut config) = fresh(&moto.endpoint).await;
    config.node_role_arn = "not-an-arn".into();
    let eks = adapter(&moto.endpoint, config).await;
    let err = eks.ensure(&t, "masters", 3).await.expect_err("bad role");
    assert!(!err.retryable);
    assert_eq!(err.reason, "EKS_INVALID_REQUEST");
    assert!(
        err.message.contains("InvalidParameterException"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn create_nodegroup_sends_update_config_and_the_request_token() {
    // moto drops updateConfig, so what the SDK sends is checked on the wire.
    let moto = esaas_tests::moto::shared().await;
    let proxy = FaultProxy::start(&moto.endpoint, Faults::none()).await;
    let (eks, _) = fresh(&proxy.endpoint()).await;
    let t = target("search", "logs", two_node_sets());
    eks.ensure(&t, "data", 2).await.expect("ensure");
    let create = proxy
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/node-groups"))
        .expect("a CreateNodegroup request");
    let body: serde_json::Value = serde_json::from_slice(&create.body).expect("json body");
    assert_eq!(body["updateConfig"]["maxUnavailable"], 1);
    assert_eq!(
        body["clientRequestToken"],
        t.idempotency_key("nodegroup-data-us-east-1a")
    );
    assert_eq!(body["nodegroupName"], group_name(&t, "data", "1a"));
    assert_eq!(
        body["diskSize"], 50,
        "no launch template: the configured root disk"
    );
    assert!(body.get("launchTemplate").is_none());
    assert_eq!(body["scalingConfig"]["desiredSize"], 1);
    assert_eq!(body["taints"][0]["effect"], "NO_SCHEDULE");
}

#[tokio::test]
async fn a_cluster_reaches_ready_through_throttling_500s_delays_and_dropped_connections() {
    let moto = esaas_tests::moto::shared().await;
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Faults {
            throttle: 0.15,
            error_500: 0.10,
            drop: 0.05,
            drop_after_forward: 0.05,
            delay: 0.10,
            delay_ms: 50,
            seed: 7,
            path_contains: Some("/clusters/".into()),
            // The SDK tries each call 3 times: at most 2 faults in a row lets every call finish.
            max_consecutive: Some(2),
            ..Faults::none()
        },
    )
    .await;
    let (eks, config) = fresh(&proxy.endpoint()).await;
    let db = TestDb::new().await;
    let sim = Sim::connect(&db.url, SimConfig::default())
        .await
        .expect("sim");
    let mut c = esaas_tests::config(&db);
    fast(&mut c);
    c.workers = 1;
    let backends = Arc::new(esaas_worker::Backends {
        node_groups: eks.clone(),
        workloads: sim.clone(),
        elasticsearch: sim.clone(),
    });
    let running = esaas_runtime::start_with_workers(&c, backends)
        .await
        .expect("start");
    let ch = channel(running.addr).await;
    let mut admin = esaas_proto::v1::admin_service_client::AdminServiceClient::new(ch.clone());
    admin
        .create_tenant(authed(
            ADMIN_KEY,
            pb::CreateTenantRequest {
                tenant_id: "search".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("tenant");
    let mut clusters =
        esaas_proto::v1::cluster_service_client::ClusterServiceClient::new(ch.clone());
    let mut req = create_request("search", "logs", 3);
    req.cluster
        .as_mut()
        .and_then(|c| c.spec.as_mut())
        .expect("spec")
        .node_sets
        .push(pb::NodeSet {
            name: "data".into(),
            roles: vec![pb::NodeRole::Data as i32],
            count: 2,
            size_class: "medium".into(),
            storage_gib: 200,
            ..Default::default()
        });
    let created = clusters
        .create_cluster(authed(ADMIN_KEY, req))
        .await
        .expect("create")
        .into_inner()
        .cluster
        .expect("c");
    let name = created.name.clone();
    // A one-zone cluster: the platform picked its zone, and says which.
    let zones = created.spec.expect("spec").zones;
    assert_eq!(zones.len(), 1, "{zones:?}");
    assert!(catalog().zones.contains(&zones[0]));
    let suffix = zones[0].rsplit('-').next().unwrap_or_default().to_string();
    wait_cluster_at(ch.clone(), &name, Duration::from_secs(60), |c| {
        state(c) == pb::ClusterState::Ready as i32
    })
    .await;

    let list = |eks: EksNodeGroups, cluster: String| async move {
        let mut names = eks
            .client()
            .list_nodegroups()
            .cluster_name(cluster)
            .send()
            .await
            .expect("list")
            .nodegroups
            .unwrap_or_default();
        names.sort();
        names
    };
    let direct = adapter(
        &moto.endpoint,
        eks_config(&moto.endpoint, &config.cluster_name),
    )
    .await;
    let h = esaas_core::names::uid_hash(&created.uid.parse().expect("uid"), 8);
    assert_eq!(
        list(direct.clone(), config.cluster_name.clone()).await,
        vec![
            format!("esaas-search-logs-data-{suffix}-{h}"),
            format!("esaas-search-logs-default-{suffix}-{h}")
        ],
        "one node group per node set in its one zone, no duplicates"
    );

    clusters
        .delete_cluster(authed(
            ADMIN_KEY,
            pb::DeleteClusterRequest {
                name: name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    wait_cluster_at(ch, &name, Duration::from_secs(60), |c| {
        state(c) == pb::ClusterState::Deleted as i32
    })
    .await;
    assert!(
        list(direct, config.cluster_name.clone()).await.is_empty(),
        "every node group deleted"
    );

    let stats = proxy.stats();
    assert!(
        stats.throttled > 0 && stats.errors_500 > 0 && stats.dropped > 0 && stats.delayed > 0,
        "{stats:?}"
    );
    // Retries are counted and bounded: no call went past the SDK's 3 attempts.
    let mut attempts: HashMap<String, u32> = HashMap::new();
    for r in proxy.requests() {
        if let (Some(id), Some(n)) = (r.invocation_id.clone(), r.attempt) {
            let e = attempts.entry(id).or_default();
            *e = (*e).max(n);
        }
    }
    let retried = attempts.values().filter(|n| **n > 1).count();
    assert!(retried > 0, "faults made the SDK retry");
    assert!(attempts.values().all(|n| *n <= 3), "{attempts:?}");
    let forwarded_creates = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/node-groups"))
        .filter(|r| {
            matches!(r.outcome, Outcome::Forwarded | Outcome::DroppedAfterForward)
                && r.status != Some(409)
        })
        .count();
    assert!(
        forwarded_creates >= 2,
        "both node groups were created through the proxy"
    );
    eprintln!(
        "fault proxy: {stats:?}; {} calls, {retried} retried",
        attempts.len()
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_permanent_aws_error_ends_the_operation_with_its_code_and_message() {
    let moto = esaas_tests::moto::shared().await;
    // A worker configured for an EKS cluster that does not exist.
    let eks = adapter(
        &moto.endpoint,
        eks_config(&moto.endpoint, "missing-cluster"),
    )
    .await;
    let db = TestDb::new().await;
    let sim = Sim::connect(&db.url, SimConfig::default())
        .await
        .expect("sim");
    let mut c = esaas_tests::config(&db);
    fast(&mut c);
    c.workers = 1;
    let backends = Arc::new(esaas_worker::Backends {
        node_groups: eks,
        workloads: sim.clone(),
        elasticsearch: sim,
    });
    let running = esaas_runtime::start_with_workers(&c, backends)
        .await
        .expect("start");
    let ch = channel(running.addr).await;
    esaas_proto::v1::admin_service_client::AdminServiceClient::new(ch.clone())
        .create_tenant(authed(
            ADMIN_KEY,
            pb::CreateTenantRequest {
                tenant_id: "search".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("tenant");
    let created = esaas_proto::v1::cluster_service_client::ClusterServiceClient::new(ch.clone())
        .create_cluster(authed(ADMIN_KEY, create_request("search", "logs", 3)))
        .await
        .expect("create")
        .into_inner();
    let op_name = created.operation.expect("op").name;
    let mut ops =
        esaas_proto::v1::operation_service_client::OperationServiceClient::new(ch.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let op = loop {
        let op = ops
            .get_operation(authed(
                ADMIN_KEY,
                pb::GetOperationRequest {
                    name: op_name.clone(),
                },
            ))
            .await
            .expect("get")
            .into_inner()
            .operation
            .expect("op");
        if op.done {
            break op;
        }
        assert!(tokio::time::Instant::now() < deadline, "{op:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(op.state, pb::OperationState::Failed as i32);
    assert_eq!(
        op.attempts.len(),
        1,
        "permanent: no retry: {:#?}",
        op.attempts
    );
    let error = op.error.expect("error");
    assert!(
        error.message.contains("ResourceNotFoundException"),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .contains("No cluster found for name: missing-cluster"),
        "{}",
        error.message
    );

    // The owner deletes the failed cluster. The EKS cluster is gone, and with
    // it everything the cluster had: the delete completes.
    let name = created.cluster.expect("cluster").name;
    esaas_proto::v1::cluster_service_client::ClusterServiceClient::new(ch.clone())
        .delete_cluster(authed(
            ADMIN_KEY,
            pb::DeleteClusterRequest {
                name: name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    wait_cluster_at(ch.clone(), &name, Duration::from_secs(30), |c| {
        state(c) == pb::ClusterState::Deleted as i32
    })
    .await;
    // Retrying the old create cannot bring the deleted cluster back.
    let refused = esaas_proto::v1::admin_service_client::AdminServiceClient::new(ch)
        .retry_operation(authed(
            ADMIN_KEY,
            pb::RetryOperationRequest {
                name: op_name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("delete was asked"),
        "{refused:?}"
    );
    running.shutdown().await.expect("shutdown");
}

/// An EKS endpoint that takes the request and never answers (the fault proxy
/// holds it): each try ends at the attempt timeout, the SDK tries again, and
/// the call ends at its own deadline with a retryable EKS_TIMEOUT saying so.
#[tokio::test]
async fn a_call_to_an_eks_that_never_answers_ends_at_its_deadline() {
    let moto = esaas_tests::moto::shared().await;
    let proxy = FaultProxy::start(&moto.endpoint, Faults::none()).await;
    let (_, mut config) = fresh(&proxy.endpoint()).await;
    config.attempt_timeout_seconds = 1;
    config.timeout_seconds = 3;
    let eks = adapter(&proxy.endpoint(), config).await;
    proxy.set_faults(Faults {
        hold: 1.0,
        ..Faults::none()
    });
    let t = target("search", "logs", ClusterSpec::test());
    let start = tokio::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), eks.observe(&t))
        .await
        .expect("the call ended by itself")
        .expect_err("no answer");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(err.retryable, "{err}");
    assert_eq!(err.reason, "EKS_TIMEOUT", "{err}");
    assert!(
        err.message
            .starts_with("ListNodegroups: EKS did not answer in time")
            && err.message.contains("3s"),
        "{err}"
    );
    let held: Vec<Option<u32>> = proxy
        .requests()
        .iter()
        .filter(|r| r.outcome == Outcome::Held)
        .map(|r| r.attempt)
        .collect();
    assert!(
        held.len() >= 2 && held[..2] == [Some(1), Some(2)],
        "the SDK tried again after the first try's timeout: {held:?}"
    );
}

#[tokio::test]
async fn a_launch_template_replaces_the_disk_size() {
    // moto, like EKS, refuses diskSize beside a launch template, so sending both fails here.
    let moto = esaas_tests::moto::shared().await;
    let proxy = FaultProxy::start(&moto.endpoint, Faults::none()).await;
    let (_, mut config) = fresh(&proxy.endpoint()).await;
    config.launch_template = Some(esaas_eks::LaunchTemplate {
        id: None,
        name: Some("esaas-nodes".into()),
        version: Some("3".into()),
    });
    let eks = adapter(&proxy.endpoint(), config.clone()).await;
    let t = target("search", "logs", two_node_sets());
    eks.ensure(&t, "data", 1).await.expect("ensure");

    let create = proxy
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/node-groups"))
        .expect("a CreateNodegroup request");
    let body: serde_json::Value = serde_json::from_slice(&create.body).expect("json body");
    assert_eq!(
        body["launchTemplate"],
        serde_json::json!({"name": "esaas-nodes", "version": "3"})
    );
    assert!(body.get("diskSize").is_none(), "{body}");
    assert!(body.get("remoteAccess").is_none(), "{body}");
    let ng = eks
        .client()
        .describe_nodegroup()
        .cluster_name(&config.cluster_name)
        .nodegroup_name(group_name(&t, "data", "1a"))
        .send()
        .await
        .expect("describe")
        .nodegroup
        .expect("node group");
    let lt = ng.launch_template().expect("the template, read back");
    assert_eq!(lt.name(), Some("esaas-nodes"));
    assert_eq!(lt.version(), Some("3"));
}
