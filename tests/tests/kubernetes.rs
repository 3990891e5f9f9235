//! Elasticsearch on Kubernetes end to end, through the public API with real
//! processes: `esaas serve` with its in-process worker on the real backends,
//! driving moto (EKS), the Kubernetes API-server stand-in (with the real
//! kube-rs client) and the Elasticsearch stand-in (over HTTPS with the
//! cluster's own CA).

use std::time::Duration;

use esaas_core::cluster::Health;
use esaas_proto::v1 as pb;
use esaas_proto::v1::admin_service_client::AdminServiceClient;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::es_standin::EsStandin;
use esaas_tests::kube_standin::KubeStandin;
use esaas_tests::*;
use tokio_stream::StreamExt;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

/// The whole local platform: moto, both stand-ins, and `esaas serve` with one worker.
struct Platform {
    server: ServerProcess,
    /// The configuration every process of this platform reads.
    config: std::path::PathBuf,
    /// Environment for EKS (moto).
    env: Vec<(&'static str, String)>,
    kube: KubeStandin,
    es: EsStandin,
    eks_cluster: String,
    /// The EKS node stand-in in front of moto, when the platform has one.
    nodes: Option<esaas_tests::eks_nodes::EksNodes>,
    db: TestDb,
    _dir: std::path::PathBuf,
}

async fn platform(gate_timeout_seconds: u64) -> Platform {
    platform_with(gate_timeout_seconds, 1, &[], "").await
}

/// The platform with `workers` in-process workers, more environment for
/// `esaas serve`, and more configuration (TOML) for every process, laid
/// over the platform's own key by key (it may set keys of `[worker]` or `[eks]`).
async fn platform_with(
    gate_timeout_seconds: u64,
    workers: u32,
    more_env: &[(&'static str, String)],
    more_config: &str,
) -> Platform {
    platform_at(gate_timeout_seconds, workers, more_env, more_config, None).await
}

/// [`platform_with`], its EKS calls sent to `eks_endpoint` (a fault proxy in
/// front of moto) instead of moto itself.
async fn platform_at(
    gate_timeout_seconds: u64,
    workers: u32,
    more_env: &[(&'static str, String)],
    more_config: &str,
    eks_endpoint: Option<String>,
) -> Platform {
    platform_full(
        gate_timeout_seconds,
        workers,
        more_env,
        more_config,
        eks_endpoint,
        false,
    )
    .await
}

/// [`platform_at`]; with `nodes`, EKS is moto behind the EKS node stand-in,
/// whose node groups have Node objects the pods are scheduled onto.
async fn platform_full(
    gate_timeout_seconds: u64,
    workers: u32,
    more_env: &[(&'static str, String)],
    more_config: &str,
    eks_endpoint: Option<String>,
    nodes: bool,
) -> Platform {
    let moto = esaas_tests::moto::shared().await;
    let eks_cluster = format!("eks-{}", &Uuid::new_v4().simple().to_string()[..8]);
    // Long enough that a worker on a loaded machine sees the pods before they
    // are ready, so the stages it waits in are there to assert on.
    let kube = KubeStandin::start(Duration::from_millis(1500)).await;
    let node_standin = if nodes {
        Some(
            esaas_tests::eks_nodes::EksNodes::start(&moto.endpoint, &eks_cluster, kube.node_api())
                .await,
        )
    } else {
        None
    };
    let eks_endpoint = eks_endpoint
        .or_else(|| node_standin.as_ref().map(|n| n.endpoint()))
        .unwrap_or_else(|| moto.endpoint.clone());
    let es = EsStandin::start().await;
    // Real pods are ready only after their node joined Elasticsearch; the
    // stand-in learns of ready pods by watching, as soon as they are.
    es.follow(kube.client());
    let dir = std::env::temp_dir().join(format!("esaas-k8s-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             users:\n- name: standin\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n\
             current-context: standin\n",
            kube.url()
        ),
    )
    .expect("kubeconfig");
    let db = TestDb::new().await;
    let extra = format!(
        "workers = {workers}\nlease_ttl_seconds = 3\nreap_interval_ms = 200\nclaim_interval_ms = 100\n\
         retry_backoff_base_seconds = 0\nretry_backoff_max_seconds = 0\n\
         [worker]\npoll_interval_ms = 100\ngate_timeout_seconds = {gate_timeout_seconds}\n\
         [eks]\ncluster_name = \"{eks_cluster}\"\nendpoint_url = \"{}\"\ninitial_backoff_ms = 10\n\
         [kubernetes]\nkubeconfig = \"{}\"\n\
         [elasticsearch]\nconnect_to = \"{}\"\n",
        eks_endpoint,
        kubeconfig.display(),
        es.addr()
    );
    let extra = overlay(&extra, more_config);
    let mut env = esaas_tests::moto::env_for(&moto.endpoint);
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL_EKS");
    // The EKS cluster the configuration names, as `esaas eks-setup` makes it locally.
    let status = tokio::process::Command::new(esaas_bin())
        .arg("eks-setup")
        .arg("--config")
        .arg({
            let p = dir.join("setup.toml");
            std::fs::write(&p, &extra).expect("setup config");
            p
        })
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("DATABASE_URL", &db.url)
        .status()
        .await
        .expect("eks-setup");
    assert!(status.success(), "eks-setup failed");
    let config = dir.join("setup.toml");
    let serve_env: Vec<(&str, String)> = env.iter().chain(more_env).cloned().collect();
    let server = ServerProcess::start_with_env(&db, free_port(), &extra, &serve_env).await;
    Platform {
        server,
        config,
        env,
        kube,
        es,
        eks_cluster,
        nodes: node_standin,
        db,
        _dir: dir,
    }
}

/// `top` (TOML) laid over `base` section by section, key by key.
fn overlay(base: &str, top: &str) -> String {
    let mut base: toml::Table = base.parse().expect("platform configuration");
    let top: toml::Table = top.parse().expect("more configuration");
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(more)) => section.extend(more),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
    toml::to_string(&base).expect("configuration as TOML")
}

impl Platform {
    async fn channel(&self) -> tonic::transport::Channel {
        channel(self.server.addr).await
    }

    /// A tenant and its admin key.
    async fn tenant(&self, id: &str) -> String {
        let mut admin = AdminServiceClient::new(self.channel().await);
        admin
            .create_tenant(authed(
                ADMIN_KEY,
                pb::CreateTenantRequest {
                    tenant_id: id.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("tenant");
        admin
            .create_api_key(authed(
                ADMIN_KEY,
                pb::CreateApiKeyRequest {
                    parent: format!("tenants/{id}"),
                    api_key: Some(pb::ApiKey {
                        role: pb::Role::TenantAdmin as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await
            .expect("key")
            .into_inner()
            .secret
    }

    async fn wait(&self, name: &str, generation: i64, want: pb::ClusterState) -> pb::Cluster {
        wait_cluster_at(self.channel().await, name, LONG, |c| {
            state(c) == want as i32
                && c.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation >= generation)
        })
        .await
    }

    /// Creates a cluster as the tenant `key`; its name.
    async fn create(&self, key: &str, req: pb::CreateClusterRequest) -> String {
        ClusterServiceClient::new(self.channel().await)
            .create_cluster(authed(key, req))
            .await
            .expect("create")
            .into_inner()
            .cluster
            .expect("cluster")
            .name
    }

    fn objects(&self, kind: &str, cluster: &str) -> Vec<serde_json::Value> {
        self.kube
            .objects(kind)
            .into_iter()
            .filter(|o| o["metadata"]["labels"]["esaas.io/cluster"] == cluster)
            .collect()
    }
}

impl Platform {
    /// The uid of the cluster `name`.
    async fn uid(&self, name: &str) -> Uuid {
        ClusterServiceClient::new(self.channel().await)
            .get_cluster(authed(
                ADMIN_KEY,
                pb::GetClusterRequest { name: name.into() },
            ))
            .await
            .expect("get")
            .into_inner()
            .cluster
            .expect("cluster")
            .uid
            .parse()
            .expect("a uuid")
    }

    /// The StatefulSet of `node_set` of the cluster `name`, as README names it:
    /// `{cluster}-{node set}-{6 hex digits of the SHA-256 of its uid}`.
    async fn stateful_set(&self, name: &str, node_set: &str) -> String {
        let cluster = name.rsplit('/').next().unwrap_or_default();
        let hash = esaas_core::names::uid_hash(&self.uid(name).await, 6);
        format!("{cluster}-{node_set}-{hash}")
    }

    /// An EKS client to moto, where this platform's node groups are.
    async fn eks(&self) -> aws_sdk_eks::Client {
        let moto = esaas_tests::moto::shared().await;
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(&moto.endpoint)
            .load()
            .await;
        aws_sdk_eks::Client::new(&sdk)
    }

    /// `(zone tag, subnets, desired size)` of every node group whose name starts
    /// with `prefix`, by name.
    async fn node_groups(
        &self,
        prefix: &str,
    ) -> std::collections::BTreeMap<String, (String, Vec<String>, i32)> {
        let eks = self.eks().await;
        let names = eks
            .list_nodegroups()
            .cluster_name(&self.eks_cluster)
            .send()
            .await
            .expect("list node groups")
            .nodegroups
            .unwrap_or_default();
        let mut out = std::collections::BTreeMap::new();
        for name in names.into_iter().filter(|n| n.starts_with(prefix)) {
            let ng = eks
                .describe_nodegroup()
                .cluster_name(&self.eks_cluster)
                .nodegroup_name(&name)
                .send()
                .await
                .expect("describe")
                .nodegroup
                .expect("node group");
            let zone = ng
                .tags()
                .and_then(|t| t.get("esaas.io/zone"))
                .cloned()
                .unwrap_or_default();
            let size = ng
                .scaling_config()
                .and_then(|s| s.desired_size())
                .unwrap_or(-1);
            out.insert(name, (zone, ng.subnets().to_vec(), size));
        }
        out
    }
}

fn resize(name: &str, nodes: i32, version: &str) -> pb::UpdateClusterRequest {
    let mut spec = spec(nodes);
    spec.version = version.into();
    pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.into(),
            spec: Some(spec),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.node_sets".into(), "spec.version".into()],
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_scale_upgrade_and_delete_an_elasticsearch_cluster() {
    let p = platform(60).await;
    let key = p.tenant("search").await;
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let created = clusters
        .create_cluster(authed(&key, create_request("search", "logs", 3)))
        .await
        .expect("create")
        .into_inner();
    let name = created.cluster.expect("cluster").name;
    let mut watch = clusters
        .watch_cluster(authed(
            &key,
            pb::WatchClusterRequest {
                name: name.clone(),
                since_revision: 1,
            },
        ))
        .await
        .expect("watch")
        .into_inner();

    // READY with an endpoint, every Kubernetes object in place.
    let ready = p.wait(&name, 1, pb::ClusterState::Ready).await;
    let status = ready.status.expect("status");
    assert_eq!(
        status.endpoint,
        "https://logs-es-http.esaas-search.svc:9200"
    );
    assert_eq!(status.health, pb::ClusterHealth::Green as i32);
    for kind in [
        "secrets",
        "configmaps",
        "services",
        "statefulsets",
        "poddisruptionbudgets",
        "networkpolicies",
    ] {
        assert!(!p.objects(kind, "logs").is_empty(), "no {kind}");
    }
    let sts = &p.objects("statefulsets", "logs")[0];
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["metadata"]["managedFields"][0]["manager"], "esaas");

    // The watcher saw the stages in order.
    let mut started = Vec::new();
    while started.last() != Some(&"health_gate".to_string()) {
        let msg = tokio::time::timeout(LONG, watch.next())
            .await
            .expect("event")
            .expect("open")
            .expect("ok");
        if let Some(pb::watch_cluster_response::Payload::Event(e)) = msg.payload
            && let Some(stage) = e
                .message
                .split("stage ")
                .nth(1)
                .and_then(|s| s.strip_suffix(" started"))
        {
            started.push(stage.to_string());
        }
    }
    // In order; a gate that opened at once (moto's node groups are ACTIVE
    // immediately) has no stage of its own.
    let order = [
        "namespace",
        "node_groups",
        "node_groups_active",
        "elasticsearch_objects",
        "pods_ready",
        "health_gate",
    ];
    let positions: Vec<usize> = started
        .iter()
        .map(|s| order.iter().position(|o| o == s).expect("a known stage"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{started:?}");
    for must in [
        "namespace",
        "node_groups",
        "elasticsearch_objects",
        "pods_ready",
        "health_gate",
    ] {
        assert!(
            started.iter().any(|s| s == must),
            "{must} missing from {started:?}"
        );
    }

    // Credentials come from the Secret, for the owner; the database never holds them.
    let creds = clusters
        .get_cluster_credentials(authed(
            &key,
            pb::GetClusterCredentialsRequest { name: name.clone() },
        ))
        .await
        .expect("credentials")
        .into_inner();
    assert_eq!(creds.username, "elastic");
    assert!(
        creds
            .ca_certificate_pem
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(creds.password.len(), 32);
    let pool = p.db.pool().await;
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(string_agg(t::text, ''), '') FROM (SELECT c::text AS t FROM clusters c UNION ALL \
         SELECT e::text FROM cluster_events e UNION ALL SELECT o::text FROM operations o) x",
    )
    .fetch_all(&pool)
    .await
    .expect("dump");
    assert!(
        !dump.concat().contains(&creds.password),
        "the password is not in the database"
    );

    // Scale out, then in: the leaving pod is drained before it goes.
    clusters
        .update_cluster(authed(&key, resize(&name, 5, "8.17.10")))
        .await
        .expect("grow");
    p.wait(&name, 2, pb::ClusterState::Ready).await;
    assert_eq!(p.objects("statefulsets", "logs")[0]["spec"]["replicas"], 5);
    clusters
        .update_cluster(authed(&key, resize(&name, 4, "8.17.10")))
        .await
        .expect("shrink");
    p.wait(&name, 3, pb::ClusterState::Ready).await;
    assert_eq!(p.objects("statefulsets", "logs")[0]["spec"]["replicas"], 4);
    let host = "logs-es-http.esaas-search.svc";
    let departures = p.es.departures(host);
    let leaving = format!("{}-4", p.stateful_set(&name, "default").await);
    assert!(
        departures
            .iter()
            .any(|(node, shards)| *node == leaving && *shards == 0),
        "{leaving} left holding no shards: {departures:?}"
    );

    // Back out to 5: the returning pod may hold shards again.
    clusters
        .update_cluster(authed(&key, resize(&name, 5, "8.17.10")))
        .await
        .expect("grow again");
    p.wait(&name, 4, pb::ClusterState::Ready).await;
    assert!(
        p.es.exclusions(host).is_empty(),
        "still excluded: {:?}",
        p.es.exclusions(host)
    );

    // Upgrade: the new template is held, then pods move one at a time, with
    // every pod ready and health green before the next.
    p.kube.clear_requests();
    clusters
        .update_cluster(authed(&key, resize(&name, 5, "8.19.3")))
        .await
        .expect("upgrade");
    p.wait(&name, 5, pb::ClusterState::Ready).await;
    let sts = &p.objects("statefulsets", "logs")[0];
    assert_eq!(sts["metadata"]["annotations"]["esaas.io/version"], "8.19.3");
    let image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default();
    assert!(image.ends_with(":8.19.3"), "{image}");
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        0
    );
    let sts_path = format!("/statefulsets/{}", p.stateful_set(&name, "default").await);
    let sts_writes = p
        .kube
        .requests()
        .iter()
        .filter(|(method, path, _, _)| method == "PATCH" && path.ends_with(&sts_path))
        .count();
    assert_eq!(
        sts_writes, 6,
        "the held template, then partitions 4, 3, 2, 1, 0"
    );

    // Delete: every object and the node group go; the cluster stays as a tombstone.
    clusters
        .delete_cluster(authed(
            &key,
            pb::DeleteClusterRequest {
                name: name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    p.wait(&name, 0, pb::ClusterState::Deleted).await;
    for kind in [
        "secrets",
        "configmaps",
        "services",
        "statefulsets",
        "poddisruptionbudgets",
        "networkpolicies",
        "persistentvolumeclaims",
    ] {
        assert!(
            p.objects(kind, "logs").is_empty(),
            "{kind} left: {:?}",
            p.objects(kind, "logs")
        );
    }
    let groups = p
        .eks()
        .await
        .list_nodegroups()
        .cluster_name(&p.eks_cluster)
        .send()
        .await
        .expect("list node groups")
        .nodegroups
        .unwrap_or_default();
    assert!(groups.is_empty(), "{groups:?}");

    // The server's log of the whole run holds no secret it handled.
    let log = std::fs::read_to_string(&p.server.log).expect("server log");
    assert!(log.contains("serving esaas.v1"), "the log was captured");
    for (what, secret) in [
        ("the tenant's API key", key.as_str()),
        ("the bootstrap admin key", ADMIN_KEY),
        ("the elastic password", creds.password.as_str()),
        ("a private key", "PRIVATE KEY"),
    ] {
        assert!(!log.contains(secret), "{what} is in the server's log");
    }
    p.server.kill().await;
}

#[tokio::test]
async fn a_health_gate_stuck_on_yellow_stalls_with_the_index_named() {
    let p = platform(3).await;
    let key = p.tenant("search").await;
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let created = clusters
        .create_cluster(authed(&key, create_request("search", "logs", 1)))
        .await
        .expect("create")
        .into_inner();
    let name = created.cluster.expect("cluster").name;
    let op = created.operation.expect("op").name;
    let host = "logs-es-http.esaas-search.svc";
    // As soon as the stand-in knows the cluster, an index stays yellow.
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if p.es.is_registered(host) {
            p.es.force_health(host, Health::Yellow, vec![("logs-7".into(), 2, false)]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ops =
        esaas_proto::v1::operation_service_client::OperationServiceClient::new(p.channel().await);
    let deadline = tokio::time::Instant::now() + LONG;
    let stalled = loop {
        let o = ops
            .get_operation(authed(&key, pb::GetOperationRequest { name: op.clone() }))
            .await
            .expect("op")
            .into_inner()
            .operation
            .expect("op");
        if o.state == pb::OperationState::Stalled as i32 {
            break o;
        }
        assert!(tokio::time::Instant::now() < deadline, "{o:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        stalled.blocking_check.contains("logs-7"),
        "{}",
        stalled.blocking_check
    );
    assert!(
        stalled.blocking_check.contains("2 unassigned replicas"),
        "{}",
        stalled.blocking_check
    );
    let _ = name;
    p.server.kill().await;
}

/// `esaas worker` as a child process of this platform, exporting to `otel`.
fn worker_process(
    p: &Platform,
    key: &str,
    id: &str,
    otel: &[(&'static str, String)],
) -> (tokio::process::Child, std::path::PathBuf) {
    let log = std::env::temp_dir().join(format!("esaas-worker-{id}-{}.log", p.server.addr.port()));
    let child = tokio::process::Command::new(esaas_bin())
        .arg("worker")
        .arg("--config")
        .arg(&p.config)
        .envs(p.env.iter().chain(otel).map(|(k, v)| (*k, v.as_str())))
        .env(
            "ESAAS_CONTROL_PLANE_URL",
            format!("http://{}", p.server.addr),
        )
        .env("ESAAS_WORKER_KEY", key)
        .env("ESAAS_WORKER_ID", id)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(
            std::fs::File::create(&log).expect("worker log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn esaas worker");
    (child, log)
}

#[tokio::test]
async fn one_trace_runs_from_the_create_call_through_a_worker_process_and_metrics_arrive() {
    use esaas_tests::otlp::Collector;
    let collector = Collector::start().await;
    let otel = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_string()),
    ];
    // No in-process worker: the operation can only run in the other process.
    let mut serve_env = otel.clone();
    serve_env.push(("ESAAS_WORKERS", "0".into()));
    let p = platform_with(
        60,
        0,
        &serve_env,
        "\n[telemetry]\nqueue_sample_interval_ms = 100\n",
    )
    .await;
    let worker_key = worker_key_on(p.channel().await).await;
    let (mut worker, worker_log) = worker_process(&p, &worker_key, "traced-worker", &otel);
    let key = p.tenant("traced").await;
    let mut clusters = ClusterServiceClient::new(p.channel().await);

    // The caller's own trace: the platform must continue it, not start one.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut req = authed(&key, create_request("traced", "logs", 3));
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("traceparent"),
    );
    let name = clusters
        .create_cluster(req)
        .await
        .expect("create")
        .into_inner()
        .cluster
        .expect("cluster")
        .name;
    // A watcher, so the stream gauge has something to count.
    let _watch = clusters
        .watch_cluster(authed(
            &key,
            pb::WatchClusterRequest {
                name: name.clone(),
                since_revision: 0,
            },
        ))
        .await
        .expect("watch");
    p.wait(&name, 1, pb::ClusterState::Ready).await;

    let in_trace = |spans: &[esaas_tests::otlp::SpanRecord], service: &str, name: &str| {
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id && s.service == service && s.name.starts_with(name))
            .cloned()
            .collect::<Vec<_>>()
    };
    collector
        .wait_for(LONG, "the API span and the worker's spans", |spans, _| {
            !in_trace(
                spans,
                "esaas-control-plane",
                "esaas.v1.ClusterService/CreateCluster",
            )
            .is_empty()
                && !in_trace(spans, "esaas-worker", "stage health_gate").is_empty()
                && !in_trace(spans, "esaas-worker", "operation CREATE").is_empty()
        })
        .await;
    let spans = collector.spans();
    let api = &in_trace(
        &spans,
        "esaas-control-plane",
        "esaas.v1.ClusterService/CreateCluster",
    )[0];
    assert_eq!(
        api.parent_span_id, caller_span,
        "the API span continues the caller's traceparent"
    );
    assert_eq!(
        api.attributes.get("tenant").map(String::as_str),
        Some("traced")
    );
    assert_eq!(api.attributes.get("cluster"), Some(&name));
    assert_eq!(
        api.attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("OK")
    );
    // The worker picked the operation up from the queue, in another
    // process, and its span is the API span's child.
    let op = &in_trace(&spans, "esaas-worker", "operation CREATE")[0];
    assert_eq!(op.parent_span_id, api.span_id, "{op:?}");
    assert_eq!(
        op.attributes.get("tenant").map(String::as_str),
        Some("traced")
    );
    assert_eq!(
        op.attributes.get("worker").map(String::as_str),
        Some("traced-worker")
    );
    assert!(
        op.attributes
            .get("operation")
            .is_some_and(|o| o.starts_with("operations/"))
    );
    for stage in [
        "namespace",
        "node_groups",
        "elasticsearch_objects",
        "pods_ready",
        "health_gate",
    ] {
        let s = in_trace(&spans, "esaas-worker", &format!("stage {stage}"));
        assert!(!s.is_empty(), "no span of stage {stage}");
        assert!(s.iter().all(|s| s.parent_span_id == op.span_id), "{s:?}");
    }
    // Cloud calls, each under a step of that trace.
    for call in ["EKS.CreateNodegroup", "kube apply", "ES GET"] {
        assert!(
            !in_trace(&spans, "esaas-worker", call).is_empty(),
            "no {call} span in the trace: {:#?}",
            spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| &s.name)
                .collect::<Vec<_>>()
        );
    }
    let worker_text = std::fs::read_to_string(&worker_log).unwrap_or_default();
    assert!(
        !worker_text.contains(&worker_key),
        "the worker logged its key"
    );

    // A worker that is stopped exports what it still holds before it exits.
    let exited = sigterm(&mut worker, Duration::from_secs(20))
        .await
        .expect("the worker exits on SIGTERM");
    assert!(exited.success(), "{exited:?}");
    // With the worker gone, new work waits: the queue gauges show it.
    clusters
        .create_cluster(authed(&key, create_request("traced", "waits", 3)))
        .await
        .expect("second create");
    let has = |points: &[esaas_tests::otlp::PointRecord],
               service: &str,
               metric: &str,
               attrs: &[(&str, &str)]| {
        points.iter().any(|p| {
            p.service == service
                && p.metric == metric
                && attrs
                    .iter()
                    .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
    };
    collector
        .wait_for(LONG, "the metrics", |_, points| {
            has(
                points,
                "esaas-control-plane",
                "esaas.operations",
                &[("kind", "CREATE"), ("state", "QUEUED")],
            ) && points
                .iter()
                .any(|p| p.metric == "esaas.queue.depth" && p.value >= 1.0)
        })
        .await;
    let points = collector.points();
    let cp = "esaas-control-plane";
    for (metric, attrs) in [
        (
            "esaas.rpc.server.requests",
            vec![
                ("rpc.service", "esaas.v1.ClusterService"),
                ("rpc.method", "CreateCluster"),
                ("rpc.grpc.status_code", "OK"),
            ],
        ),
        (
            "esaas.rpc.server.duration",
            vec![("rpc.method", "GetCluster"), ("rpc.grpc.status_code", "OK")],
        ),
        ("esaas.queue.oldest_age", vec![]),
        ("esaas.workers.connected", vec![]),
        ("esaas.watch.streams", vec![]),
    ] {
        assert!(
            has(&points, cp, metric, &attrs),
            "no {metric} {attrs:?} from the control plane"
        );
    }
    assert!(
        points
            .iter()
            .any(|p| p.service == cp && p.metric == "esaas.workers.connected" && p.value >= 1.0),
        "a connected worker was never counted"
    );
    assert!(
        points
            .iter()
            .any(|p| p.service == cp && p.metric == "esaas.watch.streams" && p.value >= 1.0),
        "an open watch was never counted"
    );
    for stage in ["namespace", "node_groups", "pods_ready"] {
        assert!(
            has(
                &points,
                "esaas-worker",
                "esaas.operation.stage.duration",
                &[("stage", stage), ("outcome", "succeeded")]
            ),
            "no duration of stage {stage} from the worker"
        );
    }
}

/// An update of the node set's volumes (and nothing else) of cluster `name`.
fn volumes(
    name: &str,
    nodes: i32,
    gib: i32,
    iops: i32,
    validate_only: bool,
) -> pb::UpdateClusterRequest {
    let mut spec = spec(nodes);
    spec.node_sets[0].storage_gib = gib;
    spec.node_sets[0].storage_iops = iops;
    pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.into(),
            spec: Some(spec),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.node_sets".into()],
        }),
        validate_only,
        ..Default::default()
    }
}

/// The pods of `cluster` by name, with their uid (a restarted or replaced
/// pod would be a new object with a new uid).
fn pod_uids(p: &Platform, cluster: &str) -> std::collections::BTreeMap<String, String> {
    p.objects("pods", cluster)
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// `(name, requested, capacity, attributes class asked, attributes class now)` of
/// every claim of `cluster`.
fn claims(p: &Platform, cluster: &str) -> Vec<(String, String, String, String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut out: Vec<_> = p
        .objects("persistentvolumeclaims", cluster)
        .iter()
        .map(|c| {
            (
                s(&c["metadata"]["name"]),
                s(&c["spec"]["resources"]["requests"]["storage"]),
                s(&c["status"]["capacity"]["storage"]),
                s(&c["spec"]["volumeAttributesClassName"]),
                s(&c["status"]["currentVolumeAttributesClassName"]),
            )
        })
        .collect();
    out.sort();
    out
}

/// Storage grows and IOPS change online (claims patched, the StatefulSet replaced
/// around its pods, no pod restarted); a second volume change inside EBS's six hours is
/// refused, dry run included; a scale-in deletes the leaving pod's volume; retained
/// volumes stay with their cluster and a later cluster of the same name never mounts
/// them.
#[tokio::test]
async fn volumes_grow_online_and_belong_to_one_cluster() {
    let p = platform(60).await;
    let key = p.tenant("search").await;
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let mut create = create_request("search", "logs", 3);
    if let Some(spec) = create.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        spec.volume_retention = pb::VolumeRetention::Retain as i32;
    }
    let name = p.create(&key, create).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let first = claims(&p, "logs");
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(
        first
            .iter()
            .all(|c| c.1 == "100Gi" && c.3 == "esaas-gp3-3000iops-125mibps"),
        "{first:?}"
    );
    let pods = pod_uids(&p, "logs");
    assert_eq!(pods.len(), 3);

    // The dry run says in place; the change grows every volume and moves it to the
    // 6000-IOPS class, and no pod restarts.
    let dry = clusters
        .update_cluster(authed(&key, volumes(&name, 3, 150, 6000, true)))
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(dry.disruption, pb::Disruption::InPlace as i32);
    clusters
        .update_cluster(authed(&key, volumes(&name, 3, 150, 6000, false)))
        .await
        .expect("grow");
    p.wait(&name, 2, pb::ClusterState::Ready).await;
    let grown = claims(&p, "logs");
    let class = "esaas-gp3-6000iops-125mibps";
    assert!(
        grown
            .iter()
            .all(|c| c.1 == "150Gi" && c.2 == "150Gi" && c.3 == class && c.4 == class),
        "{grown:?}"
    );
    assert_eq!(
        grown.iter().map(|c| &c.0).collect::<Vec<_>>(),
        first.iter().map(|c| &c.0).collect::<Vec<_>>(),
        "the same claims, grown"
    );
    let vac = p
        .kube
        .objects("volumeattributesclasses")
        .into_iter()
        .find(|o| o["metadata"]["name"] == class)
        .expect("the profile's VolumeAttributesClass");
    assert_eq!(vac["parameters"]["iops"], "6000");
    assert_eq!(vac["driverName"], "ebs.csi.aws.com");
    let sts = &p.objects("statefulsets", "logs")[0];
    let template = &sts["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(template["resources"]["requests"]["storage"], "150Gi");
    assert_eq!(template["volumeAttributesClassName"], class);
    assert_eq!(
        pod_uids(&p, "logs"),
        pods,
        "no pod was restarted or replaced"
    );

    // EBS takes the next modification of a volume six hours later: refused now, with
    // the time it becomes possible, dry run or not.
    for validate_only in [true, false] {
        let err = clusters
            .update_cluster(authed(&key, volumes(&name, 3, 200, 6000, validate_only)))
            .await
            .expect_err("inside the cooldown");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("6 hours"), "{}", err.message());
    }

    // Scale out and in: the volume of a pod that leaves goes with it.
    clusters
        .update_cluster(authed(&key, volumes(&name, 5, 150, 6000, false)))
        .await
        .expect("grow to 5");
    p.wait(&name, 3, pb::ClusterState::Ready).await;
    assert_eq!(claims(&p, "logs").len(), 5);
    clusters
        .update_cluster(authed(&key, volumes(&name, 3, 150, 6000, false)))
        .await
        .expect("shrink to 3");
    p.wait(&name, 4, pb::ClusterState::Ready).await;
    assert_eq!(
        claims(&p, "logs"),
        grown,
        "exactly the three volumes of the pods that stay"
    );

    // Deleted with RETAIN: the volumes stay. A new cluster of the same name gets
    // volumes of its own, and deleting it (DELETE) leaves the retained ones.
    clusters
        .delete_cluster(authed(
            &key,
            pb::DeleteClusterRequest {
                name: name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    let tombstone = p.wait(&name, 0, pb::ClusterState::Deleted).await;
    assert_eq!(claims(&p, "logs"), grown, "retained");
    // The tombstone lists them.
    let mut listed = tombstone.status.expect("status").retained_volumes;
    listed.sort();
    let kept: Vec<String> = grown
        .iter()
        .map(|c| format!("esaas-search/{}", c.0))
        .collect();
    assert_eq!(listed, kept);
    clusters
        .create_cluster(authed(&key, create_request("search", "logs", 3)))
        .await
        .expect("create again");
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let both = claims(&p, "logs");
    assert_eq!(both.len(), 6, "{both:?}");
    let fresh: Vec<_> = both.iter().filter(|c| !grown.contains(c)).collect();
    assert!(
        fresh.iter().all(|c| c.1 == "100Gi" && c.2 == "100Gi"),
        "the new cluster's volumes are new: {fresh:?}"
    );
    clusters
        .delete_cluster(authed(
            &key,
            pb::DeleteClusterRequest {
                name: name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete again");
    let second = p.wait(&name, 0, pb::ClusterState::Deleted).await;
    assert_eq!(
        claims(&p, "logs"),
        grown,
        "only the second cluster's volumes went"
    );
    assert!(
        second.status.expect("status").retained_volumes.is_empty(),
        "a delete that deletes its volumes keeps none"
    );
    p.server.kill().await;
}

/// Dedicated masters and data nodes: an upgrade Elasticsearch does not support in one
/// step is refused with the way to take; the two hops are two operations, and each
/// rolls the data nodes first and the master-eligible ones last.
#[tokio::test]
async fn upgrades_take_supported_paths_and_move_masters_last() {
    let p = platform(60).await;
    let key = p.tenant("search").await;
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let mut create = create_request("search", "logs", 3);
    let node_sets = |version: &str| {
        let mut s = spec(3);
        s.version = version.into();
        s.node_sets[0].name = "masters".into();
        s.node_sets[0].roles = vec![pb::NodeRole::Master as i32];
        let mut data = s.node_sets[0].clone();
        data.name = "data".into();
        data.roles = vec![pb::NodeRole::Data as i32];
        data.count = 2;
        s.node_sets.push(data);
        s
    };
    if let Some(c) = create.cluster.as_mut() {
        c.spec = Some(node_sets("8.17.10"));
    }
    let name = p.create(&key, create).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let upgrade = |version: &str, validate_only: bool| pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.clone(),
            spec: Some(node_sets(version)),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.version".into()],
        }),
        validate_only,
        ..Default::default()
    };

    // 8.17 -> 9.1 in one step is refused on the field, naming the way.
    let err = clusters
        .update_cluster(authed(&key, upgrade("9.1.4", true)))
        .await
        .expect_err("not in one step");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("8.19.3"), "{}", err.message());

    for (generation, version) in [(2, "8.19.3"), (3, "9.1.4")] {
        p.kube.clear_requests();
        clusters
            .update_cluster(authed(&key, upgrade(version, false)))
            .await
            .expect("one hop");
        p.wait(&name, generation, pb::ClusterState::Ready).await;
        // The order the StatefulSets were written in: every write of the data nodes'
        // (their held template, then each pod's turn) before the masters'.
        let order: Vec<String> = p
            .kube
            .requests()
            .iter()
            .filter(|(method, path, _, _)| method == "PATCH" && path.contains("/statefulsets/"))
            .filter_map(|(_, path, _, _)| path.rsplit('/').next().map(str::to_string))
            .collect();
        let (data, masters) = (
            p.stateful_set(&name, "data").await,
            p.stateful_set(&name, "masters").await,
        );
        let last_data = order.iter().rposition(|s| *s == data);
        let first_master = order.iter().position(|s| *s == masters);
        assert!(
            last_data.is_some() && first_master.is_some() && last_data < first_master,
            "{version}: {order:?}"
        );
        for sts in p.objects("statefulsets", "logs") {
            assert_eq!(sts["metadata"]["annotations"]["esaas.io/version"], version);
        }
        // Elasticsearch saw every node come back on the new version (its
        // allocation refused replicas to older nodes in between).
        let host = "logs-es-http.esaas-search.svc";
        let mut versions = Vec::new();
        for _ in 0..100 {
            versions = p.es.versions(host);
            if versions.len() == 5 && versions.iter().all(|(_, v)| v == version) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            versions.len() == 5 && versions.iter().all(|(_, v)| v == version),
            "{version}: {versions:?}"
        );
    }
    // Every restart was announced to Elasticsearch, and every announcement removed.
    let calls = |method: &str| {
        p.es.requests()
            .iter()
            .filter(|r| {
                r.method == method
                    && r.status == 200
                    && r.path.starts_with("/_nodes/")
                    && r.path.ends_with("/shutdown")
                    && r.path != "/_nodes/shutdown"
            })
            .count()
    };
    assert_eq!(calls("PUT"), 10, "a restart shutdown per pod per hop");
    assert_eq!(calls("DELETE"), 10, "each removed once the pod was back");
    assert!(p.es.shutdowns("logs-es-http.esaas-search.svc").is_empty());
    p.server.kill().await;
}

/// Masters shrink 3 -> 1 without losing quorum: each leaving master is drained and
/// excluded from the voting configuration before it goes, and the exclusions are
/// cleared once both have left.
#[tokio::test]
async fn masters_leave_out_of_the_voting_configuration() {
    let p = platform(60).await;
    let key = p.tenant("search").await;
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let name = p.create(&key, create_request("search", "logs", 3)).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    clusters
        .update_cluster(authed(&key, resize(&name, 1, "8.17.10")))
        .await
        .expect("shrink");
    p.wait(&name, 2, pb::ClusterState::Ready).await;
    assert_eq!(p.objects("statefulsets", "logs")[0]["spec"]["replicas"], 1);
    let voting: Vec<String> =
        p.es.requests()
            .iter()
            .filter(|r| r.path.starts_with("/_cluster/voting_config_exclusions") && r.status == 200)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
    assert_eq!(voting.len(), 3, "{voting:?}");
    let sts = p.stateful_set(&name, "default").await;
    assert!(
        voting[0].starts_with("POST") && voting[0].contains(&format!("{sts}-2")),
        "{voting:?}"
    );
    assert!(
        voting[1].starts_with("POST") && voting[1].contains(&format!("{sts}-1")),
        "{voting:?}"
    );
    assert!(voting[2].starts_with("DELETE"), "{voting:?}");
    assert!(
        p.es.voting_exclusions("logs-es-http.esaas-search.svc")
            .is_empty()
    );
    // Each left holding no shards.
    let departures = p.es.departures("logs-es-http.esaas-search.svc");
    for node in [format!("{sts}-2"), format!("{sts}-1")] {
        assert!(
            departures
                .iter()
                .any(|(n, shards)| *n == node && *shards == 0),
            "{node}: {departures:?}"
        );
    }
    p.server.kill().await;
}

/// A worker killed with SIGKILL after it patched the claims and before it replaced the
/// StatefulSet: the next worker finishes the job from what it observes, with the volumes
/// grown and no pod restarted.
#[tokio::test]
async fn a_worker_killed_between_the_claim_patch_and_the_replacement_is_finished_by_the_next() {
    let p = platform_with(60, 0, &[("ESAAS_WORKERS", "0".into())], "").await;
    let worker_key = worker_key_on(p.channel().await).await;
    let (mut first, _) = worker_process(&p, &worker_key, "first", &[]);
    let key = p.tenant("search").await;
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let name = p.create(&key, create_request("search", "logs", 2)).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let pods = pod_uids(&p, "logs");
    clusters
        .update_cluster(authed(&key, volumes(&name, 2, 150, 0, false)))
        .await
        .expect("grow");
    // The claims are patched (the volumes grow for 1.5 s in the stand-in) while the
    // StatefulSet still has the old claim template: kill the worker there.
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let patched = claims(&p, "logs").iter().all(|c| c.1 == "150Gi");
        let old_template = p.objects("statefulsets", "logs").iter().all(|s| {
            s["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
                == "100Gi"
        });
        if patched && old_template {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never between the two"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("reaped");
    let (_second, _) = worker_process(&p, &worker_key, "second", &[]);
    p.wait(&name, 2, pb::ClusterState::Ready).await;
    let grown = claims(&p, "logs");
    assert!(
        grown.iter().all(|c| c.1 == "150Gi" && c.2 == "150Gi"),
        "{grown:?}"
    );
    let sts = &p.objects("statefulsets", "logs")[0];
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "150Gi"
    );
    assert_eq!(
        pod_uids(&p, "logs"),
        pods,
        "no pod was restarted or replaced"
    );
    p.server.kill().await;
}

/// Zone-safe capacity: a three-zone cluster gets one node group per zone, each
/// in its zone's subnets only and sized to the pods of that zone; every pod's
/// claim is made in its zone before the pod exists, so the pod runs there; a
/// scale-in shrinks exactly the zones of the pods that left.
#[tokio::test]
async fn every_pod_and_its_node_live_in_the_zone_of_its_volume() {
    let p = platform(60).await;
    let key = p.tenant("search").await;
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let mut create = create_request("search", "zoned", 5);
    create
        .cluster
        .as_mut()
        .and_then(|c| c.spec.as_mut())
        .expect("spec")
        .zone_count = 3;
    let created = clusters
        .create_cluster(authed(&key, create))
        .await
        .expect("create")
        .into_inner()
        .cluster
        .expect("cluster");
    let name = created.name.clone();
    let zones = created.spec.expect("spec").zones;
    let offered = esaas_runtime::Config::load(None).expect("defaults");
    assert_eq!(zones, offered.catalog.zones, "three of three offered zones");
    p.wait(&name, 1, pb::ClusterState::Ready).await;

    let zone_of = |ordinal: usize| zones[ordinal % zones.len()].clone();
    let pod_zones = || {
        let mut out = std::collections::BTreeMap::new();
        for pod in p.objects("pods", "zoned") {
            let ordinal: usize = pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("pod index");
            out.insert(
                ordinal,
                (
                    pod["metadata"]["labels"]["topology.kubernetes.io/zone"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    pod["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            );
        }
        out
    };
    let claim_classes = || {
        let mut out: Vec<(String, String)> = p
            .objects("persistentvolumeclaims", "zoned")
            .iter()
            .map(|c| {
                (
                    c["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    c["spec"]["storageClassName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        out.sort();
        out
    };
    // Pod n runs in zone n % 3, where its claim's class puts its volume.
    let before = pod_zones();
    assert_eq!(before.len(), 5);
    for (ordinal, (zone, _)) in &before {
        assert_eq!(zone, &zone_of(*ordinal), "pod {ordinal}");
    }
    let classes = claim_classes();
    assert_eq!(classes.len(), 5);
    for (claim, class) in &classes {
        let ordinal: usize = claim
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("ordinal");
        assert_eq!(class, &format!("esaas-gp3-{}", zone_of(ordinal)), "{claim}");
    }
    // One node group per zone, in that zone's subnets, sized 2, 2, 1.
    let h = esaas_core::names::uid_hash(&p.uid(&name).await, 8);
    let groups = p.node_groups("esaas-search-zoned-default-").await;
    assert_eq!(groups.len(), 3, "{groups:?}");
    for (i, zone) in zones.iter().enumerate() {
        let suffix = zone.rsplit('-').next().unwrap_or_default();
        let (tag, subnets, size) = &groups[&format!("esaas-search-zoned-default-{suffix}-{h}")];
        assert_eq!(tag, zone);
        assert_eq!(
            subnets, &offered.eks.zone_subnets[zone],
            "{zone}'s subnets only"
        );
        assert_eq!(*size, [2, 2, 1][i], "{zone}");
    }

    // Scale in to 3: pods 3 (zone a) and 4 (zone b) leave with their volumes; the
    // others keep their pods and zones; zones a and b lose a node, c keeps its.
    clusters
        .update_cluster(authed(&key, resize(&name, 3, "8.17.10")))
        .await
        .expect("scale in");
    p.wait(&name, 2, pb::ClusterState::Ready).await;
    let after = pod_zones();
    assert_eq!(after.len(), 3);
    for (ordinal, was) in before.iter().filter(|(o, _)| **o < 3) {
        assert_eq!(&after[ordinal], was, "pod {ordinal} untouched, in its zone");
    }
    assert_eq!(claim_classes(), classes[..3].to_vec());
    let groups = p.node_groups("esaas-search-zoned-default-").await;
    let sizes: Vec<i32> = zones
        .iter()
        .map(|z| {
            groups[&format!(
                "esaas-search-zoned-default-{}-{h}",
                z.rsplit('-').next().unwrap_or_default()
            )]
                .2
        })
        .collect();
    assert_eq!(sizes, vec![1, 1, 1]);
    p.server.kill().await;
}

/// Observation at a one-second interval, repairs that back off 8 s, then 16 s.
const OBSERVE_FAST: &str = "[observe]\ninterval_seconds = 1\njitter = 0\ndeadline_seconds = 5\n\
     pods_unready_grace_seconds = 5\nrepair_backoff_base_seconds = 8\nrepair_backoff_max_seconds = 16\n";

/// The condition `kind` of `c`: (status, reason, message).
fn condition_of(c: &pb::Cluster, kind: &str) -> Option<(i32, String, String)> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.r#type == kind)
        .map(|x| (x.status, x.reason.clone(), x.message.clone()))
}

/// The REPAIR operations of cluster `name`.
async fn repairs(p: &Platform, key: &str, name: &str) -> Vec<pb::Operation> {
    operations_of(p, key, name, pb::OperationKind::Repair).await
}

/// The operations of `kind` on cluster `name`, newest first.
async fn operations_of(
    p: &Platform,
    key: &str,
    name: &str,
    kind: pb::OperationKind,
) -> Vec<pb::Operation> {
    let mut ops =
        esaas_proto::v1::operation_service_client::OperationServiceClient::new(p.channel().await);
    ops.list_operations(authed(
        key,
        pb::ListOperationsRequest {
            parent: "tenants/search".into(),
            cluster: name.to_string(),
            ..Default::default()
        },
    ))
    .await
    .expect("list operations")
    .into_inner()
    .operations
    .into_iter()
    .filter(|o| o.kind == kind as i32)
    .collect()
}

/// Observation and repair, faults injected only through the stand-ins'
/// own protocols: a red index is shown, named, and clears by itself without
/// an operation; a StatefulSet deleted behind the platform's back turns the
/// cluster DEGRADED within two intervals and a platform-initiated REPAIR
/// brings it back to READY and green; deleting it again right after, the next
/// repair backs off and says so; a paused cluster is reported, not repaired.
#[tokio::test]
async fn drift_is_seen_and_repaired_and_a_red_index_recovers_by_itself() {
    let p = platform_with(60, 1, &[], OBSERVE_FAST).await;
    let key = p.tenant("search").await;
    let name = p.create(&key, create_request("search", "logs", 3)).await;
    let ready = p.wait(&name, 1, pb::ClusterState::Ready).await;
    for kind in [
        "NodeGroupsHealthy",
        "ObjectsInSync",
        "PodsReady",
        "ElasticsearchHealthy",
    ] {
        let (status, _, _) = condition_of(&ready, kind).unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(status, pb::ConditionStatus::True as i32, "{kind}");
    }
    let host = "logs-es-http.esaas-search.svc";
    let ch = p.channel().await;

    // An index goes red: RED, DEGRADED, the index named; then green by itself.
    p.es.force_health(host, Health::Red, vec![("logs-3".into(), 1, true)]);
    let red = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.health == pb::ClusterHealth::Red as i32)
    })
    .await;
    assert_eq!(state(&red), pb::ClusterState::Degraded as i32);
    let (status, reason, message) = condition_of(&red, "ElasticsearchHealthy").expect("condition");
    assert_eq!(
        (status, reason.as_str()),
        (pb::ConditionStatus::False as i32, "Red")
    );
    assert!(message.contains("logs-3"), "{message}");
    p.es.clear_forced_health(host);
    let green = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        state(c) == pb::ClusterState::Ready as i32
            && c.status
                .as_ref()
                .is_some_and(|s| s.health == pb::ClusterHealth::Green as i32)
    })
    .await;
    assert!(
        green
            .status
            .expect("status")
            .message
            .contains("healthy again")
    );
    assert!(
        repairs(&p, &key, &name).await.is_empty(),
        "no operation for a red index"
    );

    // A disk past the flood stage: DiskOk names the node, the cluster is DEGRADED, and no
    // repair is queued (bigger volumes help, a repair does not); freed, READY again.
    p.es.set_disk_percent(host, 96);
    let full = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        condition_of(c, "DiskOk").is_some_and(|d| d.1 == "FloodStage")
    })
    .await;
    assert_eq!(state(&full), pb::ClusterState::Degraded as i32);
    let (_, _, message) = condition_of(&full, "DiskOk").expect("condition");
    assert!(
        message.contains("logs-default-") && message.contains("96 %"),
        "{message}"
    );
    p.es.set_disk_percent(host, 20);
    let freed = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        state(c) == pb::ClusterState::Ready as i32
            && condition_of(c, "DiskOk").is_some_and(|d| d.1 == "AsExpected")
    })
    .await;
    assert!(
        repairs(&p, &key, &name).await.is_empty(),
        "no operation for a full disk"
    );

    // Idle and healthy: nothing is written (the revision stands still over 3 intervals).
    let before = freed.revision;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = ClusterServiceClient::new(ch.clone())
        .get_cluster(authed(&key, pb::GetClusterRequest { name: name.clone() }))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    assert_eq!(idle.revision, before, "an idle cluster writes no events");

    // The StatefulSet deleted behind the platform's back.
    let sts: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
        kube::Api::namespaced(p.kube.client(), "esaas-search");
    let sts_name = p.stateful_set(&name, "default").await;
    let deleted_at = tokio::time::Instant::now();
    sts.delete(&sts_name, &Default::default())
        .await
        .expect("kubectl delete");
    let degraded = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        state(c) == pb::ClusterState::Degraded as i32
            || c.status
                .as_ref()
                .is_some_and(|s| !s.current_operation.is_empty())
    })
    .await;
    let seen = deleted_at.elapsed();
    assert!(
        seen < Duration::from_secs(3),
        "seen after {seen:?}, more than two intervals"
    );
    let (status, reason, _) = condition_of(&degraded, "ObjectsInSync").expect("condition");
    assert_eq!(
        (status, reason.as_str()),
        (pb::ConditionStatus::False as i32, "ObjectMissing")
    );
    // A REPAIR by the platform puts it back.
    let repaired = wait_cluster_at(ch.clone(), &name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
            && c.status.as_ref().is_some_and(|s| {
                s.health == pb::ClusterHealth::Green as i32 && s.current_operation.is_empty()
            })
    })
    .await;
    let first = repairs(&p, &key, &name).await;
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0].state, pb::OperationState::Succeeded as i32);
    let initiator = first[0].initiator.as_ref().expect("initiator");
    assert_eq!(initiator.kind, pb::InitiatorKind::Platform as i32);
    assert!(sts.get(&sts_name).await.is_ok(), "the StatefulSet is back");
    assert_eq!(
        condition_of(&repaired, "ObjectsInSync").map(|c| c.1),
        Some("AsExpected".to_string())
    );

    // Undone again at once: the next repair waits (8 s after the first) and says so.
    sts.delete(&sts_name, &Default::default())
        .await
        .expect("kubectl delete");
    let backing_off = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        condition_of(c, "AutoRepair").is_some_and(|a| a.1 == "BackingOff")
    })
    .await;
    let (_, _, message) = condition_of(&backing_off, "AutoRepair").expect("condition");
    assert!(message.contains("did not hold"), "{message}");
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let _ = wait_cluster_at(ch.clone(), &name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
            && c.status
                .as_ref()
                .is_some_and(|s| s.current_operation.is_empty())
    })
    .await;
    assert_eq!(repairs(&p, &key, &name).await.len(), 2);

    // Paused by an admin: reported, not repaired; the pause is in the event log.
    let mut admin = AdminServiceClient::new(ch.clone());
    let st = admin
        .set_auto_repair(authed(
            &key,
            pb::SetAutoRepairRequest {
                name: name.clone(),
                enabled: false,
                justification: "by hand".into(),
            },
        ))
        .await
        .expect_err("tenants may not");
    assert_eq!(st.code(), tonic::Code::PermissionDenied);
    let paused = admin
        .set_auto_repair(authed(
            ADMIN_KEY,
            pb::SetAutoRepairRequest {
                name: name.clone(),
                enabled: false,
                justification: "investigating the node group by hand".into(),
            },
        ))
        .await
        .expect("pause")
        .into_inner()
        .cluster
        .expect("cluster");
    let (_, reason, message) = condition_of(&paused, "AutoRepair").expect("condition");
    assert_eq!(reason, "Paused");
    assert!(
        message.contains("investigating the node group by hand"),
        "{message}"
    );
    sts.delete(&sts_name, &Default::default())
        .await
        .expect("kubectl delete");
    let _ = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        state(c) == pb::ClusterState::Degraded as i32
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        repairs(&p, &key, &name).await.len(),
        2,
        "no repair while paused"
    );
    assert!(sts.get(&sts_name).await.is_err(), "left as it is");
    admin
        .set_auto_repair(authed(
            ADMIN_KEY,
            pb::SetAutoRepairRequest {
                name: name.clone(),
                enabled: true,
                justification: "done".into(),
            },
        ))
        .await
        .expect("resume");
    let _ = wait_cluster_at(ch.clone(), &name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
            && c.status
                .as_ref()
                .is_some_and(|s| s.current_operation.is_empty())
    })
    .await;
    assert!(sts.get(&sts_name).await.is_ok(), "repaired once resumed");
    p.server.kill().await;
}

/// A TLS handshake with the cluster's endpoint (the Elasticsearch stand-in,
/// by SNI), trusting only the CA certificates in `ca_pem`, as a tenant's
/// client does: the leaf certificate it was shown, or why it was refused.
async fn handshake(
    addr: std::net::SocketAddr,
    host: &str,
    ca_pem: &str,
) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| format!("{e:?}"))?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok(leaf)
}

/// Certificates are renewed before they expire (here: valid 90 s, renewed
/// 75 s before), by a platform ROTATE_CERTIFICATES operation with a new CA
/// that the old one cross-signs: a client that holds only the old CA is never
/// refused, before, during or after; the new CA comes with the credentials.
#[tokio::test]
async fn expiring_certificates_are_rotated_without_cutting_off_any_client() {
    let config = format!(
        "{OBSERVE_FAST}[certificates]\nnode_validity_seconds = 90\nrenew_before_seconds = 75\n"
    );
    let p = platform_with(60, 1, &[], &config).await;
    let key = p.tenant("search").await;
    let name = p.create(&key, create_request("search", "logs", 1)).await;
    let ready = p.wait(&name, 1, pb::ClusterState::Ready).await;
    let expires = ready
        .status
        .as_ref()
        .and_then(|s| s.certificate_expire_time)
        .expect("the expiry is in the status");
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let creds = |clusters: &mut ClusterServiceClient<tonic::transport::Channel>| {
        let mut c = clusters.clone();
        let name = name.clone();
        let key = key.clone();
        async move {
            c.get_cluster_credentials(authed(&key, pb::GetClusterCredentialsRequest { name }))
                .await
                .expect("credentials")
                .into_inner()
                .ca_certificate_pem
        }
    };
    let old_ca = creds(&mut clusters).await;
    let host = "logs-es-http.esaas-search.svc";
    let addr = p.es.addr();
    let first_leaf = handshake(addr, host, &old_ca)
        .await
        .expect("the old CA works");

    // A client holding the old CA keeps connecting through the rotation.
    let stop = tokio_util::sync::CancellationToken::new();
    let checker = {
        let (stop, old_ca) = (stop.clone(), old_ca.clone());
        tokio::spawn(async move {
            let (mut ok, mut refused, mut leaves) =
                (0u32, Vec::new(), std::collections::BTreeSet::new());
            while !stop.is_cancelled() {
                match handshake(addr, host, &old_ca).await {
                    Ok(leaf) => {
                        ok += 1;
                        leaves.insert(leaf);
                    }
                    Err(e) => refused.push(e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, refused, leaves)
        })
    };

    // 15 s after creation the certificates are due: a rotation by the platform.
    let deadline = tokio::time::Instant::now() + LONG;
    let rotation = loop {
        let rotations = operations_of(&p, &key, &name, pb::OperationKind::RotateCertificates).await;
        if let Some(op) = rotations
            .into_iter()
            .find(|o| o.state == pb::OperationState::Succeeded as i32)
        {
            break op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation succeeded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        rotation.initiator.as_ref().map(|i| i.kind),
        Some(pb::InitiatorKind::Platform as i32)
    );
    let after = p.wait(&name, 1, pb::ClusterState::Ready).await;
    let renewed = after
        .status
        .as_ref()
        .and_then(|s| s.certificate_expire_time)
        .expect("expiry");
    assert!(
        renewed.seconds > expires.seconds,
        "a later expiry: {renewed:?} vs {expires:?}"
    );

    // The new chain is being served; the old-CA client never noticed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leaf = handshake(addr, host, &old_ca)
            .await
            .expect("old CA, new chain");
        if leaf != first_leaf {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let (ok, refused, leaves) = checker.await.expect("checker");
    assert!(
        refused.is_empty(),
        "a client with the old CA was refused: {refused:?}"
    );
    assert!(
        ok > 10 && leaves.len() >= 2,
        "{ok} handshakes, {} certificates seen",
        leaves.len()
    );

    // The credentials now carry both CAs; the new one alone verifies too.
    let bundle = creds(&mut clusters).await;
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");
    let new_only = bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .next()
        .unwrap_or_default()
        .to_string();
    assert_ne!(new_only.trim(), old_ca.trim());
    handshake(addr, host, &new_only)
        .await
        .expect("the new CA alone works");

    // The event log told the tenant.
    let mut watch = clusters
        .watch_cluster(authed(
            &key,
            pb::WatchClusterRequest {
                name: name.clone(),
                since_revision: 1,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    let told = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = watch.next().await {
            if let Some(pb::watch_cluster_response::Payload::Event(e)) = msg.payload
                && e.message.contains("new CA")
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(told, "no event names the new CA");
    p.server.kill().await;
}

/// A worker killed while it observes, or in the middle of a repair, costs
/// time and nothing else: the idle cluster's record does not move, the
/// repair is finished by the next worker as one REPAIR operation, and no
/// node group is made twice.
#[tokio::test]
async fn a_worker_killed_during_observation_or_repair_changes_only_the_timing() {
    let p = platform_with(60, 0, &[("ESAAS_WORKERS", "0".into())], OBSERVE_FAST).await;
    let worker_key = worker_key_on(p.channel().await).await;
    let (mut first, _) = worker_process(&p, &worker_key, "first", &[]);
    let key = p.tenant("search").await;
    let name = p.create(&key, create_request("search", "logs", 3)).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let get = || {
        let (ch, key, name) = (p.channel(), key.clone(), name.clone());
        async move {
            ClusterServiceClient::new(ch.await)
                .get_cluster(authed(&key, pb::GetClusterRequest { name }))
                .await
                .expect("get")
                .into_inner()
                .cluster
                .expect("cluster")
        }
    };
    // Observed every second; killed at some point of one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    let before = get().await;
    let (mut second, _) = worker_process(&p, &worker_key, "second", &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get().await;
    assert_eq!(
        after.revision, before.revision,
        "nothing but the timing changed"
    );
    assert_eq!(state(&after), pb::ClusterState::Ready as i32);

    // Killed while the repair runs: the next worker finishes it.
    let sts: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
        kube::Api::namespaced(p.kube.client(), "esaas-search");
    let sts_name = p.stateful_set(&name, "default").await;
    sts.delete(&sts_name, &Default::default())
        .await
        .expect("kubectl delete");
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if repairs(&p, &key, &name)
            .await
            .iter()
            .any(|o| o.state == pb::OperationState::Running as i32)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no repair ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.start_kill().expect("SIGKILL");
    let _ = second.wait().await;
    let (_third, _) = worker_process(&p, &worker_key, "third", &[]);
    let repaired = wait_cluster_at(p.channel().await, &name, LONG, |c| {
        state(c) == pb::ClusterState::Ready as i32
            && c.status.as_ref().is_some_and(|s| {
                s.current_operation.is_empty() && s.health == pb::ClusterHealth::Green as i32
            })
    })
    .await;
    let ops = repairs(&p, &key, &name).await;
    assert_eq!(ops.len(), 1, "one repair: {ops:#?}");
    assert_eq!(ops[0].state, pb::OperationState::Succeeded as i32);
    assert!(
        ops[0].attempts.len() >= 2,
        "the killed attempt and the one that finished"
    );
    assert!(sts.get(&sts_name).await.is_ok());
    assert_eq!(
        condition_of(&repaired, "ObjectsInSync").map(|c| c.1),
        Some("AsExpected".to_string())
    );
    let zones = repaired.spec.expect("spec").zones;
    let groups = p.node_groups("esaas-search-logs-").await;
    assert_eq!(
        groups.len(),
        zones.len(),
        "one node group per zone: {groups:?}"
    );
    p.server.kill().await;
}

/// A node group EKS reports degraded (the fault proxy in front of moto answers
/// DescribeNodegroup as EKS does for one) turns the cluster DEGRADED with
/// EKS's health issue in `NodeGroupsHealthy`, queues no repair (re-applying
/// cannot fix an instance that fails to launch), and READY returns when EKS
/// reports the group healthy again.
#[tokio::test]
async fn a_node_group_eks_reports_degraded_is_shown_not_repaired() {
    let moto = esaas_tests::moto::shared().await;
    let proxy = esaas_tests::faultproxy::FaultProxy::start(
        &moto.endpoint,
        esaas_tests::faultproxy::Faults::none(),
    )
    .await;
    let p = platform_at(60, 1, &[], OBSERVE_FAST, Some(proxy.endpoint())).await;
    let key = p.tenant("search").await;
    let name = p.create(&key, create_request("search", "logs", 3)).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    proxy.set_faults(esaas_tests::faultproxy::Faults {
        degrade_node_groups: Some("search-logs-default".into()),
        ..esaas_tests::faultproxy::Faults::none()
    });
    let ch = p.channel().await;
    let degraded = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        state(c) == pb::ClusterState::Degraded as i32
    })
    .await;
    let (status, reason, message) =
        condition_of(&degraded, "NodeGroupsHealthy").expect("condition");
    assert_eq!(
        (status, reason.as_str()),
        (pb::ConditionStatus::False as i32, "NodeGroupDegraded")
    );
    assert!(message.contains("AsgInstanceLaunchFailures"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        repairs(&p, &key, &name).await.is_empty(),
        "no repair for EKS's own fault"
    );
    proxy.set_faults(esaas_tests::faultproxy::Faults::none());
    let _ = wait_cluster_at(ch.clone(), &name, Duration::from_secs(10), |c| {
        state(c) == pb::ClusterState::Ready as i32
            && condition_of(c, "NodeGroupsHealthy").is_some_and(|n| n.1 == "AsExpected")
    })
    .await;
    p.server.kill().await;
}

/// Deadlines small enough for a test: 1 s per try of an EKS call, 3 s per
/// call, 8 s per step (a step outlasts its calls, as the configuration demands).
const DEADLINES_SMALL: &str = "[eks]\nattempt_timeout_seconds = 1\ntimeout_seconds = 3\n\
     [kubernetes]\ntimeout_seconds = 5\n[elasticsearch]\ntimeout_seconds = 5\n\
     [worker]\nstep_timeout_seconds = 8\n";

/// A worker whose EKS endpoint takes CreateNodegroup and never answers (the
/// fault proxy holds the connection) ends the create's first attempt at the
/// step deadline, its heartbeats notwithstanding, with an error that names
/// EKS, the call and its timeout; the attempt costs one of the budget, and
/// once EKS answers again a later attempt brings the cluster to READY.
#[tokio::test]
async fn a_hung_eks_ends_the_attempt_within_its_deadline_and_a_later_one_finishes() {
    use esaas_tests::faultproxy::{FaultProxy, Faults, Outcome};
    let moto = esaas_tests::moto::shared().await;
    let proxy = FaultProxy::start(&moto.endpoint, Faults::none()).await;
    let p = platform_at(60, 1, &[], DEADLINES_SMALL, Some(proxy.endpoint())).await;
    proxy.set_faults(Faults {
        hold: 1.0,
        method: Some("POST".into()),
        path_contains: Some("/node-groups".into()),
        ..Faults::none()
    });
    let key = p.tenant("search").await;
    let created = ClusterServiceClient::new(p.channel().await)
        .create_cluster(authed(&key, create_request("search", "logs", 3)))
        .await
        .expect("create")
        .into_inner();
    let name = created.cluster.expect("cluster").name;
    let op_name = created.operation.expect("operation").name;
    let mut ops =
        esaas_proto::v1::operation_service_client::OperationServiceClient::new(p.channel().await);
    let get = |ops: &mut esaas_proto::v1::operation_service_client::OperationServiceClient<_>| {
        let req = authed(
            &key,
            pb::GetOperationRequest {
                name: op_name.clone(),
            },
        );
        let mut ops = ops.clone();
        async move {
            ops.get_operation(req)
                .await
                .expect("get operation")
                .into_inner()
                .operation
                .expect("operation")
        }
    };
    // Before deadlines existed, this attempt stayed RUNNING for as long as anyone waited.
    let until = tokio::time::Instant::now() + Duration::from_secs(40);
    let first = loop {
        let op = get(&mut ops).await;
        if let Some(a) = op.attempts.first()
            && a.end_time.is_some()
        {
            break a.clone();
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the first attempt did not end: {op:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    proxy.set_faults(Faults::none());
    let time = |t: Option<prost_types::Timestamp>| {
        let t = t.expect("time");
        Duration::new(t.seconds as u64, t.nanos as u32)
    };
    let took = time(first.end_time) - time(first.start_time);
    eprintln!("first attempt: {took:?}: {}", first.outcome);
    // The step deadline (8 s) plus the steps before it and the reports, on a busy machine.
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(14),
        "{took:?}"
    );
    for part in [
        "failed: STEP_TIMEOUT: step EnsureNodeGroup",
        "did not finish within 8 s (worker.step_timeout_seconds)",
        "last error: EKS_TIMEOUT: CreateNodegroup: EKS did not answer in time",
        "after 3s",
    ] {
        assert!(
            first.outcome.contains(part),
            "{part:?} in {}",
            first.outcome
        );
    }
    let held = proxy
        .requests()
        .iter()
        .filter(|r| r.outcome == Outcome::Held)
        .count();
    assert!(held >= 3, "CreateNodegroup was tried and held: {held}");

    let ready = p.wait(&name, 1, pb::ClusterState::Ready).await;
    assert!(ready.status.is_some());
    let op = get(&mut ops).await;
    assert_eq!(op.state, pb::OperationState::Succeeded as i32, "{op:#?}");
    assert!(op.attempts.len() >= 2, "{:#?}", op.attempts);
    p.server.kill().await;
}

/// A cluster of one node whose one node set is `node_set`.
fn one_node_set(tenant: &str, cluster: &str, node_set: &str) -> pb::CreateClusterRequest {
    let mut req = create_request(tenant, cluster, 1);
    if let Some(spec) = req.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        spec.node_sets[0].name = node_set.into();
    }
    req
}

#[tokio::test]
async fn ids_that_read_alike_get_node_groups_and_stateful_sets_of_their_own() {
    let p = platform(60).await;
    // Joined with '-', each pair reads the same: a-b-c-d and x/a-b-c.
    let clusters = [
        ("a-b", "c", "d"), // tenant a-b, cluster c, node set d
        ("a", "b-c", "d"), // tenant a, cluster b-c, node set d
        ("x", "a", "b-c"), // one tenant: cluster a, node set b-c ...
        ("x", "a-b", "c"), // ... and cluster a-b, node set c
    ];
    let mut keys = std::collections::BTreeMap::new();
    for tenant in ["a-b", "a", "x"] {
        keys.insert(tenant, p.tenant(tenant).await);
    }
    let mut names = Vec::new();
    for (tenant, cluster, node_set) in clusters {
        let req = one_node_set(tenant, cluster, node_set);
        names.push(p.create(&keys[tenant], req).await);
    }
    for name in &names {
        let c = wait_cluster_at(p.channel().await, name, LONG, |c| {
            state(c) == pb::ClusterState::Ready as i32
                || state(c) == pb::ClusterState::Failed as i32
        })
        .await;
        assert_eq!(
            state(&c),
            pb::ClusterState::Ready as i32,
            "{name}: {:?}",
            c.status
        );
    }

    // EKS: one node group per cluster (one node, one zone), each tagged with
    // its own cluster's uid, four names in all.
    let groups = p.node_groups("esaas-").await;
    assert_eq!(groups.len(), 4, "{groups:?}");
    let eks = p.eks().await;
    let mut owners = std::collections::BTreeSet::new();
    for group in groups.keys() {
        let ng = eks
            .describe_nodegroup()
            .cluster_name(&p.eks_cluster)
            .nodegroup_name(group)
            .send()
            .await
            .expect("describe")
            .nodegroup
            .expect("node group");
        let uid = ng
            .tags()
            .and_then(|t| t.get("esaas.io/cluster-uid"))
            .cloned();
        owners.insert(uid.expect("an owner tag"));
    }
    let mut uids = std::collections::BTreeSet::new();
    for name in &names {
        uids.insert(p.uid(name).await.to_string());
    }
    assert_eq!(
        owners, uids,
        "each group belongs to one cluster, each cluster has one"
    );

    // Kubernetes: tenant x's namespace holds two StatefulSets with one ready pod each,
    // each selecting its own cluster's pods.
    let in_x: Vec<serde_json::Value> = p
        .kube
        .objects("statefulsets")
        .into_iter()
        .filter(|o| o["metadata"]["namespace"] == "esaas-x")
        .collect();
    let mut sts_names: Vec<String> = in_x
        .iter()
        .map(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    sts_names.sort();
    let mut want = vec![
        p.stateful_set(&names[2], "b-c").await,
        p.stateful_set(&names[3], "c").await,
    ];
    want.sort();
    assert_eq!(sts_names, want);
    for sts in &in_x {
        assert_eq!(sts["status"]["readyReplicas"], 1, "{sts}");
        let selector = &sts["spec"]["selector"]["matchLabels"];
        assert_eq!(
            selector["esaas.io/cluster"], sts["metadata"]["labels"]["esaas.io/cluster"],
            "{sts}"
        );
    }
    p.server.kill().await;
}

/// `create_request` with a weekly maintenance window opening at `opens` (UTC), one hour long.
fn create_in_window(
    cluster: &str,
    opens: chrono::DateTime<chrono::Utc>,
) -> pb::CreateClusterRequest {
    use chrono::Datelike;
    let mut req = create_request("search", cluster, 1);
    let day = match opens.weekday() {
        chrono::Weekday::Mon => pb::DayOfWeek::Monday,
        chrono::Weekday::Tue => pb::DayOfWeek::Tuesday,
        chrono::Weekday::Wed => pb::DayOfWeek::Wednesday,
        chrono::Weekday::Thu => pb::DayOfWeek::Thursday,
        chrono::Weekday::Fri => pb::DayOfWeek::Friday,
        chrono::Weekday::Sat => pb::DayOfWeek::Saturday,
        chrono::Weekday::Sun => pb::DayOfWeek::Sunday,
    };
    if let Some(spec) = req.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        spec.maintenance_window = Some(pb::MaintenanceWindow {
            day_of_week: day as i32,
            start_time: opens.format("%H:%M:%S").to_string(),
            duration: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        });
    }
    req
}

/// The first ROTATE_CERTIFICATES operation of `name` once there is one.
async fn rotation_of(p: &Platform, key: &str, name: &str) -> pb::Operation {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let mut ops = operations_of(p, key, name, pb::OperationKind::RotateCertificates).await;
        if let Some(op) = ops.pop() {
            return op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation queued for {name}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Maintenance windows through real processes: certificates due for renewal
/// (valid an hour, renewed within 3590 s of expiry, so due at once and far
/// from urgent) on a cluster whose window opens ~45 s after the test starts:
/// the platform's rotation is queued with `not_before` at the window's start,
/// does not start before it, then runs and succeeds. A second cluster's
/// window is days away, so its rotation is scheduled for its deadline (the
/// last quarter of the renewal margin), and runs at once when its owner
/// reschedules it to now; a finished operation cannot be rescheduled.
#[tokio::test]
async fn a_scheduled_rotation_waits_for_the_window_then_runs_and_can_be_run_now() {
    use esaas_proto::v1::operation_service_client::OperationServiceClient;
    let config = format!(
        "{OBSERVE_FAST}[certificates]\nnode_validity_seconds = 3600\nrenew_before_seconds = 3590\n"
    );
    let p = platform_with(60, 1, &[], &config).await;
    let key = p.tenant("search").await;
    let now = chrono::Utc::now();
    let opens = chrono::DateTime::from_timestamp(now.timestamp() + 45, 0).expect("time");
    let far = chrono::DateTime::from_timestamp(now.timestamp() + 3 * 86_400, 0).expect("time");
    let name = p.create(&key, create_in_window("logs", opens)).await;
    let other = p.create(&key, create_in_window("later", far)).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    p.wait(&other, 1, pb::ClusterState::Ready).await;

    let op = rotation_of(&p, &key, &name).await;
    assert!(
        chrono::Utc::now() < opens,
        "the rotation was queued only after the window opened; the machine is too slow for this test"
    );
    assert_eq!(op.state, pb::OperationState::Queued as i32, "{op:?}");
    assert_eq!(
        op.not_before.as_ref().map(|t| t.seconds),
        Some(opens.timestamp()),
        "not_before is the window's start: {op:?}"
    );
    assert_eq!(op.next_attempt_time, op.not_before);
    let shown = opens.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(op.message.contains(&shown), "{}", op.message);
    let cluster = p.wait(&name, 1, pb::ClusterState::Ready).await;
    let message = cluster
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default();
    assert_eq!(
        message,
        format!("rotate certificates scheduled for {shown} (maintenance window)")
    );

    // Until the window opens it stays queued, not started.
    let mut ops = OperationServiceClient::new(p.channel().await);
    let get = |ops: &mut OperationServiceClient<tonic::transport::Channel>, op: String| {
        let mut ops = ops.clone();
        let key = key.clone();
        async move {
            ops.get_operation(authed(&key, pb::GetOperationRequest { name: op }))
                .await
                .expect("get operation")
                .into_inner()
                .operation
                .expect("operation")
        }
    };
    while chrono::Utc::now() < opens - chrono::Duration::milliseconds(500) {
        let o = get(&mut ops, op.name.clone()).await;
        assert_eq!(
            o.state,
            pb::OperationState::Queued as i32,
            "started early: {o:?}"
        );
        assert!(o.start_time.is_none() && o.attempts.is_empty(), "{o:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then it runs and succeeds, having started no sooner than the window.
    let deadline = tokio::time::Instant::now() + LONG;
    let done = loop {
        let o = get(&mut ops, op.name.clone()).await;
        if o.done {
            break o;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ran: {o:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done.state, pb::OperationState::Succeeded as i32, "{done:?}");
    let started = done
        .start_time
        .as_ref()
        .map(|t| t.seconds)
        .unwrap_or_default();
    assert!(
        started >= opens.timestamp(),
        "started at {started}, before {opens}"
    );

    // The event log said when.
    let want = format!("scheduled for {shown} (maintenance window)");
    let told = event_saying(&p, &key, &name, &want, Duration::from_secs(10))
        .await
        .is_some();
    assert!(told, "no event says {want}");

    // The other cluster's window is days away, after its certificates would be
    // urgent: the rotation waits until the last quarter of the renewal margin
    // (expiry - 3590 s / 4, ~45 minutes from now), not for the window. Its owner runs it now.
    let later = rotation_of(&p, &key, &other).await;
    let at = later
        .not_before
        .as_ref()
        .map(|t| t.seconds)
        .unwrap_or_default();
    let in_minutes = (at - chrono::Utc::now().timestamp()) / 60;
    assert!(
        (30..=60).contains(&in_minutes) && at < far.timestamp(),
        "scheduled in {in_minutes} minutes: {later:?}"
    );
    assert!(later.message.contains("scheduled for"), "{}", later.message);
    let reschedule = |name: String, target: pb::RescheduleTarget| pb::RescheduleOperationRequest {
        name,
        target: target as i32,
        not_before: None,
        request_id: Uuid::new_v4().to_string(),
    };
    let moved = ops
        .reschedule_operation(authed(
            &key,
            reschedule(later.name.clone(), pb::RescheduleTarget::Now),
        ))
        .await
        .expect("reschedule now")
        .into_inner()
        .operation
        .expect("operation");
    assert!(
        moved
            .not_before
            .as_ref()
            .map(|t| t.seconds)
            .unwrap_or(i64::MAX)
            <= chrono::Utc::now().timestamp(),
        "{moved:?}"
    );
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let o = get(&mut ops, later.name.clone()).await;
        if o.done {
            assert_eq!(o.state, pb::OperationState::Succeeded as i32, "{o:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ran: {o:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A finished operation cannot move; a time 31 days ahead is a field error.
    let err = ops
        .reschedule_operation(authed(
            &key,
            reschedule(later.name.clone(), pb::RescheduleTarget::Now),
        ))
        .await
        .expect_err("done");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let mut far_off = reschedule(later.name.clone(), pb::RescheduleTarget::Time);
    far_off.not_before = Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 31 * 86_400,
        nanos: 0,
    });
    let err = ops
        .reschedule_operation(authed(&key, far_off))
        .await
        .expect_err("too far");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), ["not_before"]);
    p.server.kill().await;
}

/// Snapshots on: a bucket of its own in moto's S3, the platform configured
/// with it and an IRSA role, the Elasticsearch stand-in storing to that S3.
async fn platform_with_snapshots(bucket: &str) -> Platform {
    snapshot_platform(bucket, "").await
}

/// [`platform_with_snapshots`] with more configuration (TOML).
async fn snapshot_platform(bucket: &str, more_config: &str) -> Platform {
    let moto = esaas_tests::moto::shared().await;
    let endpoint = moto.endpoint.clone();
    let config = format!(
        "[snapshots]\nbucket = \"{bucket}\"\nrole_arn = \"{}\"\ns3_endpoint = \"{endpoint}\"\n",
        esaas_tests::moto::role_arn("esaas-snapshots")
    );
    let config = overlay(&config, more_config);
    let p = platform_with(60, 1, &[], &config).await;
    p.es.set_s3_endpoint(&endpoint);
    p
}

async fn new_bucket() -> String {
    let endpoint = esaas_tests::moto::shared().await.endpoint.clone();
    let bucket = format!("snaps-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let b = bucket.clone();
    tokio::task::spawn_blocking(move || esaas_tests::es_standin::create_bucket(&endpoint, &b))
        .await
        .expect("join")
        .expect("create the bucket");
    bucket
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_cluster_registers_its_snapshot_repository_under_its_tenant_and_uid_through_irsa() {
    let bucket = new_bucket().await;
    let p = platform_with_snapshots(&bucket).await;
    let key = p.tenant("search").await;
    let name = p.create(&key, create_request("search", "logs", 3)).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let uid = p.uid(&name).await;

    // The repository: the cluster's own, in the platform's bucket, under {tenant}/{uid}.
    let host = "logs-es-http.esaas-search.svc";
    assert_eq!(
        p.es.repositories(host),
        [(
            "esaas".to_string(),
            bucket.clone(),
            format!("search/{uid}"),
            false
        )]
    );
    // Its own stage, after the health gate.
    let create = operations_of(&p, &key, &name, pb::OperationKind::Create).await;
    let stage = create[0]
        .stages
        .iter()
        .find(|s| s.name == "snapshot_repository")
        .expect("a snapshot_repository stage");
    assert_eq!(stage.state, pb::StageState::Succeeded as i32, "{stage:?}");

    // The pods reach S3 as their own ServiceAccount, annotated with the role (IRSA).
    let accounts = p.objects("serviceaccounts", "logs");
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(
        accounts[0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        esaas_tests::moto::role_arn("esaas-snapshots")
    );
    let sts = &p.objects("statefulsets", "logs")[0];
    assert_eq!(
        sts["spec"]["template"]["spec"]["serviceAccountName"],
        accounts[0]["metadata"]["name"]
    );
}

/// The node image the rotation test's cluster starts on, and the one it moves to.
const RELEASE_BEFORE: &str = "1.31.2-20241121";
const RELEASE_AFTER: &str = "1.31.3-20250105";

/// What the rotation test sees of the stand-ins at one moment.
struct Sample {
    at: std::time::Instant,
    health: Health,
    /// Pods: (name, ready, node).
    pods: Vec<(String, bool, Option<String>)>,
    /// Nodes that are cordoned.
    cordoned: usize,
}

fn sample(p: &Platform, host: &str) -> Sample {
    let pods = p
        .objects("pods", "rot")
        .iter()
        .map(|pod| {
            let ready = pod["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
                pod["spec"]["nodeName"].as_str().map(str::to_string),
            )
        })
        .collect();
    Sample {
        at: std::time::Instant::now(),
        health: p.es.health(host),
        pods,
        cordoned: p
            .kube
            .nodes()
            .iter()
            .filter(|n| n["spec"]["unschedulable"] == true)
            .count(),
    }
}

/// Node image rotation end to end: a 3-node cluster over 3 zones, each pod on
/// a node of its zone's node group; the platform's node image moves (the
/// control plane restarts with a new `[eks] node_release_version`), and
/// observation queues a platform ROTATE_NODES to it. Watching the stand-ins
/// throughout: EKS's update of one zone's group at a time (never two at once),
/// each new node Ready before the old one is cordoned (surge first), every
/// eviction let through by the disruption budget (no fight), at most one pod
/// away and at most one node cordoned at any moment, no pod ever Pending and
/// every pod bound only to nodes of its volume's zone, Elasticsearch green
/// between groups (and the operation's health gate between them); at the end
/// every group ACTIVE at the new release with its original size, each node
/// at the new release, and no further rotation.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_image_rotation_replaces_nodes_one_zone_at_a_time_with_green_between() {
    let config = format!("{OBSERVE_FAST}[eks]\nnode_release_version = \"{RELEASE_BEFORE}\"\n");
    let mut p = platform_full(60, 1, &[], &config, None, true).await;
    let key = p.tenant("search").await;
    let mut create = create_request("search", "rot", 3);
    if let Some(spec) = create.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        spec.zone_count = 3;
    }
    let name = p.create(&key, create).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let host = "rot-es-http.esaas-search.svc";
    let standin = p.nodes.as_ref().expect("the node stand-in");

    // Each zone's group has one node at the first release, and each pod runs on
    // its zone's node.
    let h = esaas_core::names::uid_hash(&p.uid(&name).await, 8);
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let group_of = |zone: &str| {
        format!(
            "esaas-search-rot-default-{}-{h}",
            zone.rsplit('-').next().unwrap_or_default()
        )
    };
    for zone in zones {
        let releases = standin.releases(&group_of(zone));
        assert_eq!(releases.len(), 1, "{zone}: {releases:?}");
        assert!(
            releases.values().all(|r| r == RELEASE_BEFORE),
            "{releases:?}"
        );
    }
    // The zone of each pod's volume (its claim's StorageClass `esaas-gp3-{zone}`).
    let volume_zone: std::collections::BTreeMap<String, String> = p
        .objects("persistentvolumeclaims", "rot")
        .iter()
        .filter_map(|c| {
            let claim = c["metadata"]["name"].as_str()?;
            let zone = c["spec"]["storageClassName"]
                .as_str()?
                .strip_prefix("esaas-gp3-")?;
            let pod = claim.split_once('-').map(|(_, rest)| rest)?;
            // data-{12 hex}-{statefulset}-{i}: the pod is {statefulset}-{i}.
            let pod = pod.split_once('-').map(|(_, rest)| rest)?;
            Some((pod.to_string(), zone.to_string()))
        })
        .collect();
    assert_eq!(volume_zone.len(), 3, "{volume_zone:?}");
    let first_placements = p.kube.placements().len();
    assert!(first_placements >= 3);

    // The platform's node image moves.
    let moved = overlay(
        &std::fs::read_to_string(&p.config).expect("config"),
        &format!("[eks]\nnode_release_version = \"{RELEASE_AFTER}\"\n"),
    );
    let serve_env = p.env.clone();
    let next = ServerProcess::start_with_env(&p.db, free_port(), &moved, &serve_env).await;
    std::mem::replace(&mut p.server, next).kill().await;

    let mut samples = Vec::new();
    let finished = {
        let p = &p;
        let key = &key;
        let name = &name;
        let wait = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
            loop {
                let ops = operations_of(p, key, name, pb::OperationKind::RotateNodes).await;
                if let Some(op) = ops.iter().find(|o| o.done) {
                    return op.clone();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no node rotation finished: {ops:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::pin!(wait);
        loop {
            tokio::select! {
                op = &mut wait => break op,
                _ = tokio::time::sleep(Duration::from_millis(20)) => samples.push(sample(p, host)),
            }
        }
    };
    samples.push(sample(&p, host));

    // The operation: the platform's, to the new release, done, with its stages.
    assert_eq!(
        finished.state,
        pb::OperationState::Succeeded as i32,
        "{finished:?}"
    );
    let initiator = finished.initiator.clone().expect("initiator");
    assert_eq!(initiator.kind, pb::InitiatorKind::Platform as i32);
    assert_eq!(initiator.principal, "platform/node-images");
    assert_eq!(finished.node_release_version, RELEASE_AFTER);
    for stage in ["rotate_nodes", "health_gate"] {
        let s = finished
            .stages
            .iter()
            .find(|s| s.name == stage)
            .unwrap_or_else(|| panic!("stage {stage}: {:?}", finished.stages));
        assert_eq!(s.state, pb::StageState::Succeeded as i32, "{s:?}");
    }

    // EKS's side: each group updated once, one after the other, surge first.
    use esaas_tests::eks_nodes::NodeEventKind as K;
    let timeline = standin.timeline();
    let mut spans = Vec::new();
    for zone in zones {
        let group = group_of(zone);
        let events: Vec<_> = timeline.iter().filter(|e| e.group == group).collect();
        let started = events
            .iter()
            .find(|e| e.kind == K::UpdateStarted(RELEASE_AFTER.into()))
            .unwrap_or_else(|| panic!("{group} was not updated: {events:?}"));
        let done = events
            .iter()
            .find(|e| e.kind == K::UpdateFinished(RELEASE_AFTER.into()))
            .unwrap_or_else(|| panic!("{group}'s update did not finish: {events:?}"));
        let ready_new = events
            .iter()
            .filter(|e| e.at >= started.at)
            .find(|e| e.kind == K::Ready)
            .unwrap_or_else(|| panic!("{group}: no new node came up: {events:?}"));
        let cordoned = events
            .iter()
            .find(|e| e.kind == K::Cordoned)
            .unwrap_or_else(|| panic!("{group}: the old node was never cordoned: {events:?}"));
        assert!(
            ready_new.at <= cordoned.at,
            "{group}: surge first: the new node is Ready before the old one is cordoned: {events:?}"
        );
        assert!(
            events
                .iter()
                .all(|e| !matches!(e.kind, K::EvictionRefused(_))),
            "{group}: no eviction refused by the disruption budget: {events:?}"
        );
        spans.push((started.at, done.at));
        let releases = standin.releases(&group);
        assert_eq!(releases.len(), 1, "{group} back to its size: {releases:?}");
        assert!(
            releases.values().all(|r| r == RELEASE_AFTER),
            "{releases:?}"
        );
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "one group at a time: {spans:?}");
        // Green between the end of one group and the start of the next.
        assert!(
            samples
                .iter()
                .any(|s| s.at >= pair[0].1 && s.at <= pair[1].0 && s.health == Health::Green),
            "green between groups"
        );
    }

    // Kubernetes' side, throughout: at most one pod away, one node cordoned, none Pending.
    assert!(samples.len() > 50, "{} samples", samples.len());
    for s in &samples {
        let away = s.pods.iter().filter(|(_, ready, _)| !ready).count()
            + 3usize.saturating_sub(s.pods.len());
        assert!(away <= 1, "more than one pod away: {:?}", s.pods);
        assert!(s.cordoned <= 1, "{} nodes cordoned at once", s.cordoned);
        assert!(
            s.pods.iter().all(|(_, _, node)| node.is_some()),
            "a pod stranded (Pending): {:?}",
            s.pods
        );
    }
    // Every binding, from the start: a node of the pod's volume's zone; each pod moved once.
    let placements = p.kube.placements();
    for pl in &placements {
        let pod = pl.pod.rsplit('/').next().unwrap_or_default();
        assert_eq!(
            Some(&pl.zone),
            volume_zone.get(pod),
            "{pod} bound to {} in {}",
            pl.node,
            pl.zone
        );
    }
    assert_eq!(
        placements.len() - first_placements,
        3,
        "each pod moved exactly once: {placements:?}"
    );

    // At the end: each group ACTIVE at the new release with its size, and nothing more to do.
    let eks_view = {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(standin.endpoint())
            .load()
            .await;
        aws_sdk_eks::Client::new(&sdk)
    };
    for zone in zones {
        let ng = eks_view
            .describe_nodegroup()
            .cluster_name(&p.eks_cluster)
            .nodegroup_name(group_of(zone))
            .send()
            .await
            .expect("describe")
            .nodegroup
            .expect("node group");
        assert_eq!(ng.release_version(), Some(RELEASE_AFTER), "{zone}");
        assert_eq!(ng.status().map(|s| s.as_str()), Some("ACTIVE"), "{zone}");
        assert_eq!(
            ng.scaling_config().and_then(|s| s.desired_size()),
            Some(1),
            "{zone}"
        );
    }
    let c = p.wait(&name, 1, pb::ClusterState::Ready).await;
    assert_eq!(
        c.status.as_ref().map(|s| s.health),
        Some(pb::ClusterHealth::Green as i32)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rotations = operations_of(&p, &key, &name, pb::OperationKind::RotateNodes).await;
    assert_eq!(rotations.len(), 1, "no further rotation: {rotations:?}");
    p.server.kill().await;
}

/// The first event of cluster `name`'s log (from its start) whose message
/// contains `says`, within `wait`; `None` when none came.
async fn event_saying(
    p: &Platform,
    key: &str,
    name: &str,
    says: &str,
    wait: Duration,
) -> Option<pb::ClusterEvent> {
    let mut watch = ClusterServiceClient::new(p.channel().await)
        .watch_cluster(authed(
            key,
            pb::WatchClusterRequest {
                name: name.into(),
                since_revision: 1,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(wait, async {
        while let Some(Ok(msg)) = watch.next().await {
            if let Some(pb::watch_cluster_response::Payload::Event(e)) = msg.payload
                && e.message.contains(says)
            {
                return Some(e);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Waits until operation `name` has ended; the operation then.
async fn finished(p: &Platform, key: &str, name: &str) -> pb::Operation {
    use esaas_proto::v1::operation_service_client::OperationServiceClient;
    let mut ops = OperationServiceClient::new(p.channel().await);
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let o = ops
            .get_operation(authed(key, pb::GetOperationRequest { name: name.into() }))
            .await
            .expect("get operation")
            .into_inner()
            .operation
            .expect("operation");
        if o.done {
            return o;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ended: {o:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn snapshot_of(p: &Platform, key: &str, name: &str) -> pb::Operation {
    ClusterServiceClient::new(p.channel().await)
        .create_snapshot(authed(
            key,
            pb::CreateSnapshotRequest {
                name: name.into(),
                request_id: Uuid::new_v4().to_string(),
            },
        ))
        .await
        .expect("create snapshot")
        .into_inner()
        .operation
        .expect("operation")
}

async fn snapshots_listed(p: &Platform, key: &str, name: &str) -> Vec<pb::Snapshot> {
    ClusterServiceClient::new(p.channel().await)
        .list_snapshots(authed(
            key,
            pb::ListSnapshotsRequest {
                parent: name.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list snapshots")
        .into_inner()
        .snapshots
}

async fn cluster_of(p: &Platform, key: &str, name: &str) -> pb::Cluster {
    ClusterServiceClient::new(p.channel().await)
        .get_cluster(authed(key, pb::GetClusterRequest { name: name.into() }))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster")
}

fn snapshot_status(c: &pb::Cluster) -> pb::SnapshotStatus {
    c.status
        .as_ref()
        .and_then(|s| s.snapshots.clone())
        .unwrap_or_default()
}

async fn objects_under(bucket: &str, prefix: &str) -> Vec<String> {
    let endpoint = esaas_tests::moto::shared().await.endpoint.clone();
    let (b, p) = (bucket.to_string(), prefix.to_string());
    tokio::task::spawn_blocking(move || esaas_tests::es_standin::list_objects(&endpoint, &b, &p))
        .await
        .expect("join")
        .expect("list the bucket")
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_survive_a_delete_with_its_final_snapshot_and_a_restore_into_a_new_cluster() {
    let bucket = new_bucket().await;
    let p = platform_with_snapshots(&bucket).await;
    let key = p.tenant("search").await;
    let name = p.create(&key, create_request("search", "logs", 3)).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let uid = p.uid(&name).await;
    let host = "logs-es-http.esaas-search.svc";
    p.es.write_docs(host, "orders", 25);
    p.es.write_docs(host, "audit-2026", 7);

    // A snapshot asked for: an operation, recorded, in the status, its objects in S3.
    let op = snapshot_of(&p, &key, &name).await;
    assert_eq!(op.kind, pb::OperationKind::Snapshot as i32);
    let manual = op.snapshot.clone();
    assert!(manual.starts_with("manual-"), "{op:?}");
    let done = finished(&p, &key, &op.name).await;
    assert_eq!(done.state, pb::OperationState::Succeeded as i32, "{done:?}");
    let c = cluster_of(&p, &key, &name).await;
    assert_eq!(snapshot_status(&c).last_success, manual);
    assert_eq!(
        condition_of(&c, "SnapshotsOk").map(|(s, r, _)| (s, r)),
        Some((
            pb::ConditionStatus::True as i32,
            "SnapshotSucceeded".to_string()
        ))
    );
    assert_eq!(
        state(&c),
        pb::ClusterState::Ready as i32,
        "a snapshot leaves it READY"
    );
    let listed = snapshots_listed(&p, &key, &name).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].snapshot_id, manual);
    assert_eq!(listed[0].kind, pb::SnapshotKind::Manual as i32);
    assert_eq!(listed[0].state, pb::SnapshotState::Success as i32);
    for index in ["audit-2026", "orders"] {
        assert!(listed[0].indices.iter().any(|i| i == index), "{listed:?}");
    }
    let objects = objects_under(&bucket, &format!("search/{uid}/")).await;
    assert!(
        objects.iter().any(|k| k.contains("snap-")) && objects.iter().any(|k| k.contains("index-")),
        "{objects:?}"
    );

    // Chosen indices restored into the running cluster: one its owner deleted comes back;
    // one still open stands in the way and is named.
    p.es.delete_index(host, "orders");
    p.es.write_docs(host, "audit-2026", 3);
    let restore_into = |indices: &[&str]| pb::RestoreSnapshotRequest {
        name: name.clone(),
        source: Some(pb::RestoreSource {
            cluster: name.clone(),
            snapshot: manual.clone(),
            indices: indices.iter().map(|s| s.to_string()).collect(),
        }),
        request_id: Uuid::new_v4().to_string(),
    };
    let mut clusters = ClusterServiceClient::new(p.channel().await);
    let op = clusters
        .restore_snapshot(authed(&key, restore_into(&["orders"])))
        .await
        .expect("restore")
        .into_inner()
        .operation
        .expect("operation");
    assert_eq!(op.kind, pb::OperationKind::Restore as i32);
    let done = finished(&p, &key, &op.name).await;
    assert_eq!(done.state, pb::OperationState::Succeeded as i32, "{done:?}");
    let counts = p.es.doc_counts(host);
    assert_eq!(counts.get("orders"), Some(&25), "{counts:?}");
    assert_eq!(counts.get("audit-2026"), Some(&10), "untouched: {counts:?}");
    let op = clusters
        .restore_snapshot(authed(&key, restore_into(&["audit-2026"])))
        .await
        .expect("restore")
        .into_inner()
        .operation
        .expect("operation");
    let done = finished(&p, &key, &op.name).await;
    assert_eq!(done.state, pb::OperationState::Failed as i32, "{done:?}");
    let error = done.error.expect("error");
    assert!(error.message.contains("audit-2026"), "{error:?}");
    let err = clusters
        .restore_snapshot(authed(&key, restore_into(&[])))
        .await
        .expect_err("no indices");
    assert_eq!(violated_fields(&err), ["source.indices"]);
    assert_eq!(p.es.doc_counts(host).get("audit-2026"), Some(&10));

    // The dry run of a delete says a final snapshot will be taken.
    let dry = clusters
        .delete_cluster(authed(
            &key,
            pb::DeleteClusterRequest {
                name: name.clone(),
                validate_only: true,
                ..Default::default()
            },
        ))
        .await
        .expect("dry run")
        .into_inner();
    let final_dry = dry.final_snapshot.expect("final snapshot");
    assert!(final_dry.taken, "{final_dry:?}");
    let dry_skip = clusters
        .delete_cluster(authed(
            &key,
            pb::DeleteClusterRequest {
                name: name.clone(),
                validate_only: true,
                skip_final_snapshot: true,
                ..Default::default()
            },
        ))
        .await
        .expect("dry run, skipping")
        .into_inner()
        .final_snapshot
        .expect("final snapshot");
    assert!(
        !dry_skip.taken && dry_skip.reason.contains("skip_final_snapshot"),
        "{dry_skip:?}"
    );

    // The delete takes the final snapshot first; the tombstone lists it.
    let deleted = clusters
        .delete_cluster(authed(
            &key,
            pb::DeleteClusterRequest {
                name: name.clone(),
                request_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete")
        .into_inner();
    let final_name = deleted.final_snapshot.expect("final").snapshot;
    let delete_op = deleted.operation.expect("operation");
    assert_eq!(delete_op.snapshot, final_name);
    let done = finished(&p, &key, &delete_op.name).await;
    assert_eq!(done.state, pb::OperationState::Succeeded as i32, "{done:?}");
    assert_eq!(done.stages[0].name, "snapshot");
    assert_eq!(done.stages[0].state, pb::StageState::Succeeded as i32);
    let tombstone = p.wait(&name, 1, pb::ClusterState::Deleted).await;
    assert_eq!(snapshot_status(&tombstone).final_snapshot, final_name);
    assert!(p.objects("statefulsets", "logs").is_empty());
    let listed = snapshots_listed(&p, &key, &name).await;
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.snapshot_id.clone(), s.kind))
            .collect::<Vec<_>>(),
        [
            (final_name.clone(), pb::SnapshotKind::Final as i32),
            (manual.clone(), pb::SnapshotKind::Manual as i32)
        ],
        "newest first"
    );

    // Bad restores are refused with the field named.
    let restore = |snapshot: &str, indices: Vec<String>| pb::CreateClusterRequest {
        restore_from: Some(pb::RestoreSource {
            cluster: name.clone(),
            snapshot: snapshot.into(),
            indices,
        }),
        ..create_request("search", "logs-restored", 3)
    };
    let err = clusters
        .create_cluster(authed(
            &key,
            restore("final-19990101-000000-000000", vec![]),
        ))
        .await
        .expect_err("no such snapshot");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = clusters
        .create_cluster(authed(&key, restore(&final_name, vec!["nope".into()])))
        .await
        .expect_err("no such index");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), ["restore_from.indices[0]"]);

    // A new cluster from the deleted one's final snapshot has every document. (The
    // stand-in starts every cluster with indices of its own, `logs-1` and `metrics-1`,
    // which a real new cluster does not have; so the restore names the tenant's.)
    let restored = p
        .create(
            &key,
            restore(&final_name, vec!["orders".into(), "audit-2026".into()]),
        )
        .await;
    p.wait(&restored, 1, pb::ClusterState::Ready).await;
    let new_host = "logs-restored-es-http.esaas-search.svc";
    let counts = p.es.doc_counts(new_host);
    assert_eq!(counts.get("orders"), Some(&25), "{counts:?}");
    assert_eq!(counts.get("audit-2026"), Some(&10), "{counts:?}");
    let create = operations_of(&p, &key, &restored, pb::OperationKind::Create).await;
    let stage = create[0]
        .stages
        .iter()
        .find(|s| s.name == "restore")
        .expect("a restore stage");
    assert_eq!(stage.state, pb::StageState::Succeeded as i32, "{stage:?}");
    assert_eq!(
        create[0].restore.as_ref().map(|r| r.source_uid.clone()),
        Some(uid.to_string())
    );
    // It read the source read-only and writes its own repository.
    let repos = p.es.repositories(new_host);
    assert!(
        repos.contains(&(
            "esaas-restore-source".to_string(),
            bucket.clone(),
            format!("search/{uid}"),
            true
        )),
        "{repos:?}"
    );
    p.server.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_failure_shows_as_a_condition_and_an_event() {
    // A bucket that does not exist (yet).
    let bucket = format!("snaps-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let p = platform_with_snapshots(&bucket).await;
    let key = p.tenant("search").await;
    let name = p.create(&key, create_request("search", "logs", 1)).await;
    // The create still finishes: the cluster works without its repository.
    let c = p.wait(&name, 1, pb::ClusterState::Ready).await;
    let (status, reason, message) = condition_of(&c, "SnapshotsOk").expect("SnapshotsOk");
    assert_eq!(status, pb::ConditionStatus::False as i32);
    assert_eq!(reason, "RepositoryUnavailable");
    assert!(
        message.contains("repository_verification_exception") && message.contains("NoSuchBucket"),
        "{message}"
    );

    // A snapshot asked for fails, says why, and leaves the cluster READY.
    let op = snapshot_of(&p, &key, &name).await;
    let done = finished(&p, &key, &op.name).await;
    assert_eq!(done.state, pb::OperationState::Failed as i32, "{done:?}");
    let c = cluster_of(&p, &key, &name).await;
    assert_eq!(state(&c), pb::ClusterState::Ready as i32);
    let s = snapshot_status(&c);
    assert!(
        s.last_failure_time.is_some() && !s.last_failure_reason.is_empty(),
        "{s:?}"
    );
    assert_eq!(
        condition_of(&c, "SnapshotsOk").map(|(s, _, _)| s),
        Some(pb::ConditionStatus::False as i32)
    );
    // The event log says so.
    let failure = event_saying(
        &p,
        &key,
        &name,
        "snapshot repository could not be registered",
        LONG,
    )
    .await
    .expect("a failure event");
    assert!(
        failure.message.contains("NoSuchBucket"),
        "{}",
        failure.message
    );

    // The operator creates the bucket: the next snapshot registers the repository and succeeds.
    let endpoint = esaas_tests::moto::shared().await.endpoint.clone();
    let b = bucket.clone();
    tokio::task::spawn_blocking(move || esaas_tests::es_standin::create_bucket(&endpoint, &b))
        .await
        .expect("join")
        .expect("create the bucket");
    let op = snapshot_of(&p, &key, &name).await;
    let done = finished(&p, &key, &op.name).await;
    assert_eq!(done.state, pb::OperationState::Succeeded as i32, "{done:?}");
    let c = cluster_of(&p, &key, &name).await;
    assert_eq!(
        condition_of(&c, "SnapshotsOk").map(|(s, r, _)| (s, r)),
        Some((
            pb::ConditionStatus::True as i32,
            "SnapshotSucceeded".to_string()
        ))
    );
    p.server.kill().await;
}

/// Moves the cluster's clock back: its creation and last snapshot `minutes`
/// earlier, as if that much time had passed (the schedule counts from them).
async fn age(p: &Platform, uid: Uuid, minutes: i64) {
    let pool = p.db.pool().await;
    let status: serde_json::Value =
        sqlx::query_scalar("SELECT snapshot_status FROM clusters WHERE uid = $1")
            .bind(uid)
            .fetch_one(&pool)
            .await
            .expect("status");
    let mut status = status;
    if let Some(t) = status["last_success_time"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        status["last_success_time"] =
            serde_json::json!((t - chrono::Duration::minutes(minutes)).to_rfc3339());
    }
    sqlx::query(
        "UPDATE clusters SET create_time = create_time - make_interval(mins => $2), \
         snapshot_status = $3 WHERE uid = $1",
    )
    .bind(uid)
    .bind(i32::try_from(minutes).expect("minutes"))
    .bind(status)
    .execute(&pool)
    .await
    .expect("age the cluster");
}

/// Waits until `count` SNAPSHOT operations of `name` have succeeded; them, newest first.
async fn scheduled_snapshots(
    p: &Platform,
    key: &str,
    name: &str,
    count: usize,
) -> Vec<pb::Operation> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let ops = operations_of(p, key, name, pb::OperationKind::Snapshot).await;
        let done: Vec<pb::Operation> = ops
            .into_iter()
            .filter(|o| o.state == pb::OperationState::Succeeded as i32)
            .collect();
        if done.len() >= count {
            return done;
        }
        assert!(tokio::time::Instant::now() < deadline, "{done:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_snapshots_follow_the_policy_and_retention_keeps_the_newest() {
    let bucket = new_bucket().await;
    let p = snapshot_platform(&bucket, OBSERVE_FAST).await;
    let key = p.tenant("search").await;
    let mut req = create_request("search", "logs", 1);
    if let Some(spec) = req.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        spec.snapshot_policy = Some(pb::SnapshotPolicy {
            interval_hours: 1,
            retention: 1,
        });
    }
    let name = p.create(&key, req).await;
    p.wait(&name, 1, pb::ClusterState::Ready).await;
    let uid = p.uid(&name).await;
    p.es.write_docs("logs-es-http.esaas-search.svc", "orders", 5);
    // Within the first hour nothing is due: a few observations pass, no snapshot.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        operations_of(&p, &key, &name, pb::OperationKind::Snapshot)
            .await
            .is_empty()
    );

    // An hour and a minute later, the observation queues one; the platform's, at once.
    age(&p, uid, 61).await;
    let first = scheduled_snapshots(&p, &key, &name, 1).await;
    let op = &first[0];
    assert_eq!(
        op.initiator.as_ref().map(|i| i.kind),
        Some(pb::InitiatorKind::Platform as i32)
    );
    assert!(op.snapshot.starts_with("scheduled-"), "{op:?}");
    assert!(op.not_before.is_none(), "{op:?}");
    let c = cluster_of(&p, &key, &name).await;
    assert_eq!(snapshot_status(&c).last_success, op.snapshot);

    // Another hour: a second one, and retention (1) deletes the first, record and all.
    age(&p, uid, 61).await;
    let both = scheduled_snapshots(&p, &key, &name, 2).await;
    let (newest, oldest) = (&both[0].snapshot, &both[1].snapshot);
    assert_ne!(newest, oldest);
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let listed: Vec<String> = snapshots_listed(&p, &key, &name)
            .await
            .into_iter()
            .map(|s| s.snapshot_id)
            .collect();
        if listed == [newest.clone()] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let objects = objects_under(&bucket, &format!("search/{uid}/")).await;
    assert!(!objects.is_empty());
    p.server.kill().await;
}
