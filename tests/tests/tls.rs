//! TLS on every hop, through real processes: `esaas serve` terminating TLS
//! with a certificate from a private CA, an `esaas worker` process that
//! reaches it over https:// with that CA and runs a cluster to READY on the
//! real backends (moto, the Kubernetes and Elasticsearch stand-ins), the Rust
//! SDK and grpcurl as clients, OTLP over https:// to a TLS collector, a
//! plaintext client refused, and a new certificate served without a restart.
//! Then the configuration check, as an operator meets it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use esaas_proto::v1 as pb;
use esaas_tests::es_standin::EsStandin;
use esaas_tests::kube_standin::KubeStandin;
use esaas_tests::otlp::Collector;
use esaas_tests::pki::{TestCa, presented_leaf};
use esaas_tests::*;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("esaas-{what}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn grpcurl() -> PathBuf {
    let path = std::env::var("ESAAS_GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/esaas-venv/bin/grpcurl")
        });
    assert!(
        path.exists(),
        "no grpcurl at {}: set ESAAS_GRPCURL (scripts/ensure-tools.sh installs it)",
        path.display()
    );
    path
}

/// The SDK over https:// to `port`, trusting `ca` only.
async fn sdk_tls(port: u16, ca: &str, key: &str) -> esaas_client::Result<esaas_client::Client> {
    esaas_client::Client::builder(format!("https://localhost:{port}"))
        .ca_certificate_pem(ca)
        .key(key)
        .connect_timeout(Duration::from_secs(5))
        .retry(esaas_client::RetryPolicy::none())
        .connect()
        .await
}

/// The kubeconfig of the stand-in, in `dir`.
fn kubeconfig(dir: &Path, kube: &KubeStandin) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             users:\n- name: standin\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n\
             current-context: standin\n",
            kube.url()
        ),
    )
    .expect("kubeconfig");
    path
}

#[tokio::test]
async fn a_worker_and_clients_reach_a_tls_control_plane_and_a_new_certificate_needs_no_restart() {
    let ca = TestCa::new("esaas test CA");
    let dir = temp_dir("tls");
    let first = ca.leaf("esaas-first");
    let (cert_file, key_file) = first.write_to(&dir);
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).expect("ca file");
    let collector_leaf = ca.leaf("collector");
    let collector = Collector::start_tls(&collector_leaf.cert_pem, &collector_leaf.key_pem).await;
    assert!(collector.endpoint().starts_with("https://"));
    let otel = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ca_file.display().to_string(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ];

    // The backends, as in kubernetes.rs, with no in-process worker: only
    // the worker process below can run the operation.
    let moto = esaas_tests::moto::shared().await;
    let eks_cluster = format!("eks-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let kube = KubeStandin::start(Duration::from_millis(500)).await;
    let es = EsStandin::start().await;
    es.follow(kube.client());
    let db = TestDb::new().await;
    let config = format!(
        "workers = 0\nlease_ttl_seconds = 3\nreap_interval_ms = 200\nclaim_interval_ms = 100\n\
         retry_backoff_base_seconds = 0\nretry_backoff_max_seconds = 0\n\
         [tls]\nmode = \"native\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval_seconds = 1\n\
         [worker]\npoll_interval_ms = 100\n\
         [eks]\ncluster_name = \"{eks_cluster}\"\nendpoint_url = \"{}\"\ninitial_backoff_ms = 10\n\
         [kubernetes]\nkubeconfig = \"{}\"\n\
         [elasticsearch]\nconnect_to = \"{}\"\n",
        cert_file.display(),
        key_file.display(),
        moto.endpoint,
        kubeconfig(&dir, &kube).display(),
        es.addr()
    );
    let config_file = dir.join("esaas.toml");
    std::fs::write(&config_file, &config).expect("config");
    let mut env = esaas_tests::moto::env_for(&moto.endpoint);
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL_EKS");
    let status = tokio::process::Command::new(esaas_bin())
        .arg("eks-setup")
        .arg("--config")
        .arg(&config_file)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .await
        .expect("eks-setup");
    assert!(status.success(), "eks-setup failed");

    let port = free_port();
    let health_port = free_port();
    let config = format!("health_listen_addr = \"127.0.0.1:{health_port}\"\n{config}");
    let serve_env: Vec<_> = env.iter().chain(&otel).cloned().collect();
    let server = ServerProcess::start_tls(&db, port, &config, &serve_env, &ca.pem).await;
    let pid = server.pid();

    // A plaintext client gets no answer at all: the listener speaks only TLS.
    let plaintext = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(ch) => tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext client was answered");
    // Probes that cannot speak TLS ask the health-only listener.
    let health = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{health_port}"))
        .expect("uri")
        .connect()
        .await
        .expect("the health listener");
    let serving = tonic_health::pb::health_client::HealthClient::new(health.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "esaas.liveness".into(),
        })
        .await
        .expect("health over plaintext")
        .into_inner()
        .status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let api_on_health = pb::admin_service_client::AdminServiceClient::new(health)
        .list_tenants(authed(ADMIN_KEY, pb::ListTenantsRequest::default()))
        .await
        .expect_err("the API on the health listener");
    assert_eq!(
        api_on_health.code(),
        tonic::Code::Unimplemented,
        "{api_on_health:?}"
    );
    // A client that does not trust the private CA (the system's roots) is refused too.
    let untrusting = esaas_client::Client::builder(format!("https://localhost:{port}"))
        .key(ADMIN_KEY)
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await;
    assert!(untrusting.is_err(), "a client without the CA connected");

    // The platform admin, over TLS: a worker key and a tenant.
    let admin = sdk_tls(port, &ca.pem, ADMIN_KEY)
        .await
        .expect("admin over TLS");
    let worker_key = admin
        .create_api_key(pb::CreateApiKeyRequest {
            api_key: Some(pb::ApiKey {
                display_name: "tls worker".into(),
                role: pb::Role::Worker as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("worker key")
        .secret;
    admin
        .create_tenant(pb::CreateTenantRequest {
            tenant_id: "secure".into(),
            ..Default::default()
        })
        .await
        .expect("tenant");
    let tenant_key = admin
        .create_api_key(pb::CreateApiKeyRequest {
            parent: "tenants/secure".into(),
            api_key: Some(pb::ApiKey {
                role: pb::Role::TenantAdmin as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("tenant key")
        .secret;

    // `esaas worker`, verifying the control plane with the CA file.
    let worker_log = dir.join("worker.log");
    let mut worker = tokio::process::Command::new(esaas_bin())
        .arg("worker")
        .arg("--config")
        .arg(&config_file)
        .envs(env.iter().chain(&otel).map(|(k, v)| (*k, v.as_str())))
        .env(
            "ESAAS_CONTROL_PLANE_URL",
            format!("https://localhost:{port}"),
        )
        .env("ESAAS_CONTROL_PLANE_CA_FILE", &ca_file)
        .env("ESAAS_WORKER_KEY", &worker_key)
        .env("ESAAS_WORKER_ID", "tls-worker")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(
            std::fs::File::create(&worker_log).expect("worker log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn esaas worker");

    // The tenant creates a cluster through the SDK; only the worker process can run it.
    let tenant = sdk_tls(port, &ca.pem, &tenant_key)
        .await
        .expect("tenant over TLS");
    let created = tenant
        .create_cluster(create_request("secure", "logs", 1))
        .await
        .expect("create over TLS");
    let name = created.cluster.as_ref().expect("cluster").name.clone();
    let op = tokio::time::timeout(LONG, tenant.wait_operation(created.operation_name()))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the operation did not finish; worker log:\n{}",
                std::fs::read_to_string(&worker_log).unwrap_or_default()
            )
        })
        .expect("wait over TLS");
    assert_eq!(op.state(), pb::OperationState::Succeeded, "{op:#?}");
    let cluster = tenant.get_cluster(&name).await.expect("get");
    assert_eq!(
        cluster.status.as_ref().map(|s| s.state()),
        Some(pb::ClusterState::Ready)
    );
    assert_eq!(
        op.attempts.last().map(|a| a.worker.as_str()),
        Some("tls-worker"),
        "the worker process ran it"
    );

    // grpcurl with -cacert, as a platform admin would, and refused without it.
    let grpcurl_get = |extra: &[&str]| {
        std::process::Command::new(grpcurl())
            .args(extra)
            .args(["-H", &format!("authorization: Bearer {tenant_key}")])
            .args(["-d", &format!("{{\"name\": \"{name}\"}}")])
            .arg(format!("localhost:{port}"))
            .arg("esaas.v1.ClusterService/GetCluster")
            .output()
            .expect("grpcurl")
    };
    let out = grpcurl_get(&["-cacert", ca_file.to_str().expect("path")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("CLUSTER_STATE_READY"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !grpcurl_get(&["-plaintext"]).status.success(),
        "grpcurl -plaintext was answered"
    );
    assert!(
        !grpcurl_get(&[]).status.success(),
        "grpcurl without the CA was answered"
    );

    // Both processes exported over https:// to the collector, verified with the CA.
    collector
        .wait_for(LONG, "spans of both processes over TLS", |spans, _| {
            ["esaas-control-plane", "esaas-worker"]
                .iter()
                .all(|service| spans.iter().any(|s| s.service == *service))
        })
        .await;

    // A new pair in the files: new connections get it, the process stays.
    assert_eq!(
        presented_leaf(server.addr, &ca.pem)
            .await
            .expect("handshake"),
        first.der
    );
    let second = ca.leaf("esaas-second");
    second.write_to(&dir);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while presented_leaf(server.addr, &ca.pem)
        .await
        .expect("handshake")
        != second.der
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.pid(), pid, "served without a restart");
    let again = sdk_tls(port, &ca.pem, &tenant_key)
        .await
        .expect("a new connection");
    again
        .get_cluster(&name)
        .await
        .expect("a call on the new certificate");

    // Half a rotation (a new certificate, the old key): refused, the second pair stays.
    let third = ca.leaf("esaas-third");
    std::fs::write(dir.join("tls.crt"), &third.cert_pem).expect("write");
    let log = || std::fs::read_to_string(&server.log).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !log().contains("new TLS certificate refused") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal logged:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        presented_leaf(server.addr, &ca.pem)
            .await
            .expect("handshake"),
        second.der
    );
    let text = log();
    assert!(text.contains("new TLS certificate loaded"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "key material in the log");
    for secret in [tenant_key.as_str(), worker_key.as_str(), ADMIN_KEY] {
        assert!(!text.contains(secret), "a key is in the server's log");
    }

    let _ = sigterm(&mut worker, Duration::from_secs(10)).await;
    server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `esaas ARGS` with only `env` (no inherited esaas settings); its exit and stderr.
fn esaas(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let out = std::process::Command::new(esaas_bin())
        .args(args)
        .env_remove("ESAAS_CONFIG")
        .env_remove("ESAAS_LISTEN_ADDR")
        .env_remove("ESAAS_CONTROL_PLANE_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run esaas");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_configuration_check_refuses_what_cannot_work_naming_the_key() {
    let ca = TestCa::new("check CA");
    let dir = temp_dir("tls-check");
    let (cert, key) = ca.leaf("a").write_to(&dir);
    let other_key = dir.join("other.key");
    std::fs::write(&other_key, ca.leaf("b").key_pem).expect("key");
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).expect("ca");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("garbage");
    let p = |p: &Path| p.display().to_string();
    let s = |v: &str| v.to_string();
    let native = |c: &Path, k: &Path| {
        vec![
            ("ESAAS_TLS_MODE", s("native")),
            ("ESAAS_TLS_CERT_FILE", p(c)),
            ("ESAAS_TLS_KEY_FILE", p(k)),
        ]
    };
    let with = |mut base: Vec<(&'static str, String)>, more: &[(&'static str, String)]| {
        base.extend_from_slice(more);
        base
    };
    let listen_any = ("ESAAS_LISTEN_ADDR", s("0.0.0.0:50051"));

    let accepted = [
        vec![],
        vec![listen_any.clone(), ("ESAAS_TLS_MODE", s("mesh"))],
        with(native(&cert, &key), std::slice::from_ref(&listen_any)),
        vec![
            ("ESAAS_CONTROL_PLANE_URL", s("https://esaas.internal:50051")),
            ("ESAAS_CONTROL_PLANE_CA_FILE", p(&ca_file)),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                s("https://collector.internal:4317"),
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", p(&ca_file)),
        ],
    ];
    for env in accepted {
        let (ok, err) = esaas(&["config", "check"], &env);
        assert!(ok, "{env:?}: {err}");
    }

    let missing = dir.join("missing.crt");
    let refused = [
        (
            vec![listen_any.clone()],
            "listen_addr (ESAAS_LISTEN_ADDR): 0.0.0.0:50051 is not a loopback address",
        ),
        (
            vec![("ESAAS_TLS_MODE", s("native"))],
            "tls.cert_file: required",
        ),
        (
            vec![("ESAAS_TLS_MODE", s("tls"))],
            "tls.mode (ESAAS_TLS_MODE)",
        ),
        (
            vec![("ESAAS_TLS_CERT_FILE", p(&cert))],
            "tls.cert_file: set, but tls.mode is \"off\"",
        ),
        (native(&missing, &key), "tls.cert_file: reading"),
        (
            native(&cert, &other_key),
            "is not the key of the certificate in tls.cert_file",
        ),
        (native(&garbage, &key), "tls.cert_file:"),
        (
            vec![(
                "ESAAS_CONTROL_PLANE_URL",
                s("http://esaas-api.esaas-system.svc:50051"),
            )],
            "worker.control_plane_url (ESAAS_CONTROL_PLANE_URL)",
        ),
        (
            vec![
                ("ESAAS_CONTROL_PLANE_URL", s("https://esaas.internal")),
                ("ESAAS_CONTROL_PLANE_CA_FILE", p(&garbage)),
            ],
            "worker.control_plane_ca_file:",
        ),
        (
            vec![(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                s("http://otel-collector:4317"),
            )],
            "telemetry.otlp_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)",
        ),
        (
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    s("https://otel-collector:4317"),
                ),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", p(&garbage)),
            ],
            "telemetry.otlp_ca_file:",
        ),
    ];
    for (env, want) in refused {
        let (ok, err) = esaas(&["config", "check"], &env);
        assert!(!ok && err.contains(want), "{env:?}: want {want:?} in {err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }

    // The commands refuse the same before touching the network or the database.
    let (ok, err) = esaas(
        &["serve"],
        &[listen_any, ("DATABASE_URL", s("postgres://127.0.0.1:1/x"))],
    );
    assert!(!ok && err.contains("listen_addr"), "{err}");
    let (ok, err) = esaas(
        &["worker", "--control-plane", "http://10.0.0.7:50051"],
        &[("ESAAS_WORKER_KEY", s("esk_whatever"))],
    );
    assert!(!ok && err.contains("worker.control_plane_url"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
