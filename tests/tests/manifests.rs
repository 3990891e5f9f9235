//! Every object esaas renders for a cluster, for a set of specs, checked
//! against the official Kubernetes OpenAPI schemas with `kubernetes-validate
//! --strict` (unknown fields fail), and compared with the golden files in
//! `tests/golden/`, which show a reviewer the manifests as applied.
//!
//! `UPDATE_GOLDEN=1 cargo test -p esaas-tests --test manifests` rewrites the
//! golden files. The target, password and TLS material are fixed here, so
//! the files only change when the rendering does.

use std::path::{Path, PathBuf};
use std::process::Command;

use esaas_core::backend::Target;
use esaas_core::catalog::{Catalog, SizeClass};
use esaas_core::names::{ClusterId, TenantId};
use esaas_core::spec::{ClusterSpec, NodeRole, NodeSet, VolumeRetention};
use esaas_k8s::SnapshotStorage;
use esaas_k8s::names;
use esaas_k8s::render::{self, Secrets};
use esaas_k8s::tls::TlsMaterial;
use k8s_openapi::serde::Serialize;
use uuid::Uuid;

/// Kubernetes versions the manifests must be valid for: the oldest and the
/// newest that k8s-openapi 0.29 (and this renderer) supports.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.34.0", "1.37.0"];

/// The platform's default catalog (crates/esaas-runtime/esaas.default.toml).
fn catalog() -> Catalog {
    let class = |name: &str, instance_type: &str, cpu_millis, memory_mib| SizeClass {
        name: name.into(),
        instance_type: instance_type.into(),
        cpu_millis,
        memory_mib,
    };
    Catalog {
        versions: vec!["8.15.5".into(), "8.19.3".into(), "9.1.4".into()],
        size_classes: vec![
            class("small", "r6i.large", 1500, 12288),
            class("medium", "r6i.xlarge", 3500, 27648),
            class("large", "r6i.2xlarge", 7000, 57344),
            class("xlarge", "r6i.4xlarge", 15000, 118784),
        ],
        min_storage_gib: 10,
        max_storage_gib: 16384,
        max_node_sets: 8,
        max_nodes_per_set: 50,
        max_zones: 3,
        zones: ["us-east-1a", "us-east-1b", "us-east-1c"]
            .map(String::from)
            .to_vec(),
        upgrades: Default::default(),
    }
}

fn node_set(name: &str, roles: &[NodeRole], count: i32, size_class: &str, gib: i32) -> NodeSet {
    NodeSet {
        name: name.into(),
        roles: roles.to_vec(),
        count,
        size_class: size_class.into(),
        storage_gib: gib,
        storage_iops: 0,
        storage_throughput_mibps: 0,
    }
}

fn spec(version: &str, zones: i32, node_sets: Vec<NodeSet>) -> ClusterSpec {
    ClusterSpec {
        version: version.into(),
        node_sets,
        zone_count: zones,
        zones: Vec::new(),
        volume_retention: VolumeRetention::Delete,
        deletion_protection: false,
        maintenance_window: None,
        change_freezes: Vec::new(),
        snapshot_policy: None,
    }
    .with_defaults()
}

/// The specs under test, by golden file name.
fn scenario(name: &str) -> (&'static str, ClusterSpec) {
    use NodeRole::*;
    match name {
        "single-node" => (
            "single",
            spec(
                "8.15.5",
                1,
                vec![node_set("default", &[Master, Data, Ingest], 1, "small", 50)],
            ),
        ),
        "dedicated-masters" => (
            "dedicated",
            spec(
                "8.19.3",
                1,
                vec![
                    node_set("master", &[Master], 3, "small", 20),
                    node_set("data", &[Data, Ingest, Transform], 3, "large", 500),
                ],
            ),
        ),
        "three-zones" => (
            "zones",
            spec(
                "9.1.4",
                3,
                vec![
                    node_set("master", &[Master], 3, "small", 20),
                    node_set("hot", &[Data, Ingest], 6, "medium", 1000),
                    node_set("ml", &[Ml], 1, "medium", 50),
                ],
            ),
        ),
        "large-storage" => {
            let mut big = node_set("data", &[Master, Data], 3, "xlarge", 16384);
            big.storage_iops = 16000;
            big.storage_throughput_mibps = 1000;
            ("large", spec("9.1.4", 2, vec![big]))
        }
        other => panic!("no scenario {other}"),
    }
}

fn target(cluster: &str, spec: ClusterSpec) -> Target {
    Target {
        uid: Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0001),
        tenant: TenantId::parse("tenant", "acme").expect("valid tenant id"),
        cluster_id: ClusterId::parse("cluster", cluster).expect("valid cluster id"),
        spec,
        generation: 1,
        operation: Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0002),
    }
}

/// Snapshots on, as in production: the pods' ServiceAccount carries the IRSA role.
fn storage() -> SnapshotStorage {
    SnapshotStorage {
        bucket: "esaas-snapshots".into(),
        role_arn: "arn:aws:iam::123456789012:role/esaas-snapshots".into(),
        s3_endpoint: String::new(),
    }
}

/// Fixed stand-ins for the generated material, so the golden files are stable.
fn fixed_secrets() -> Secrets {
    let pem = |label: &str, body: &str| {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    };
    Secrets {
        password: "golden-password-not-a-secret-000".into(),
        tls: TlsMaterial {
            ca_cert_pem: pem("CERTIFICATE", "golden-ca-certificate"),
            cert_pem: pem("CERTIFICATE", "golden-node-certificate"),
            key_pem: pem("PRIVATE KEY", "golden-node-key"),
            ca_key_pem: pem("PRIVATE KEY", "golden-ca-key"),
        },
        rotated_by: None,
    }
}

fn doc<T: Serialize>(obj: &T) -> serde_json::Value {
    serde_json::to_value(obj).expect("k8s-openapi objects serialize")
}

/// Every object of the cluster, as applied on the first bootstrap.
fn render_all(t: &Target) -> Vec<serde_json::Value> {
    let b = render::base(t, &fixed_secrets(), true, &storage());
    let mut docs = vec![
        doc(&b.namespace),
        doc(&b.secret),
        doc(&b.config_map),
        doc(&b.transport_service),
        doc(&b.http_service),
        doc(&b.pdb),
        doc(&b.network_policy),
        doc(&b.service_account),
    ];
    let zones = esaas_core::placement::cluster_zones(&t.spec, &catalog());
    for zone in &zones {
        docs.push(doc(&render::zone_storage_class(zone)));
    }
    for ns in &t.spec.node_sets {
        docs.push(doc(&render::volume_attributes_class(ns)));
        let sts =
            render::stateful_set(t, &catalog(), &storage(), &ns.name, ns.count).expect("renders");
        // The claims the worker makes before the StatefulSet would, each in its pod's zone.
        for ordinal in 0..ns.count {
            let zone = esaas_core::placement::zone_of(&zones, ordinal).expect("a zone");
            let claim = render::data_volume(t, &sts, &ns.name, ordinal, zone).expect("a claim");
            docs.push(doc(&claim));
        }
        docs.push(doc(&sts));
    }
    docs
}

fn to_yaml(docs: &[serde_json::Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn kubernetes_validate() -> PathBuf {
    if let Some(venv) = std::env::var_os("ESAAS_TEST_VENV") {
        let bin = PathBuf::from(venv).join("bin/kubernetes-validate");
        if bin.is_file() {
            return bin;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("kubernetes-validate");
            if bin.is_file() {
                return bin;
            }
        }
    }
    panic!(
        "kubernetes-validate not found: set ESAAS_TEST_VENV to a venv with kubernetes-validate \
         installed (run make test, or scripts/ensure-tools.sh)"
    )
}

/// Runs `kubernetes-validate --strict` on `file` for every version in
/// [`KUBERNETES_VERSIONS`]; the error is its output.
fn validate(file: &Path) -> Result<(), String> {
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(kubernetes_validate())
            .args(["--strict", "--kubernetes-version", version])
            .arg(file)
            .output()
            .expect("runs kubernetes-validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let what = format!(
            "kubernetes-validate --strict -k {version} {}",
            file.display()
        );
        if !out.status.success() {
            return Err(format!("{what} failed ({}):\n{text}", out.status));
        }
        // It exits 0 on warnings (for example a version it has no schema
        // for, or a deprecated API): those are failures here too.
        if let Some(line) = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with("INFO"))
        {
            return Err(format!("{what}: {line}\n{text}"));
        }
        if !text.contains("passed") {
            return Err(format!("{what} checked nothing:\n{text}"));
        }
    }
    Ok(())
}

fn check_golden(name: &str, rendered: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(format!("{name}.yaml"));
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("mkdir golden");
        std::fs::write(&path, rendered).expect("write golden file");
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test -p esaas-tests --test manifests",
            path.display()
        )
    });
    if golden != rendered {
        let first = golden
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| golden.lines().count().min(rendered.lines().count()));
        panic!(
            "rendered manifests differ from {} at line {}:\n  golden:   {:?}\n  rendered: {:?}\n\
             if the change is intended, run UPDATE_GOLDEN=1 cargo test -p esaas-tests --test manifests \
             and review the diff",
            path.display(),
            first + 1,
            golden.lines().nth(first).unwrap_or("<end of file>"),
            rendered.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

/// Labels every object must carry, and where it must live.
fn check_labels(t: &Target, docs: &[serde_json::Value]) {
    let cluster = names::cluster_labels(t);
    for d in docs {
        let kind = d["kind"].as_str().expect("kind");
        assert!(d["apiVersion"].is_string(), "{kind} has an apiVersion");
        let labels = &d["metadata"]["labels"];
        if kind == "Namespace" {
            assert_eq!(labels[names::labels::TENANT], t.tenant.as_str());
            assert_eq!(labels[names::labels::MANAGED_BY], "esaas");
            continue;
        }
        // Cluster-wide and shared by every cluster with the same gp3 profile, or zone.
        if kind == "VolumeAttributesClass" || kind == "StorageClass" {
            assert!(d["metadata"]["namespace"].is_null());
            assert_eq!(labels[names::labels::MANAGED_BY], "esaas");
            continue;
        }
        assert_eq!(
            d["metadata"]["namespace"],
            names::namespace(t).as_str(),
            "{kind}"
        );
        for (k, v) in &cluster {
            assert_eq!(labels[k], v.as_str(), "{kind} label {k}");
        }
        if kind == "StatefulSet" {
            let node_set = labels[names::labels::NODE_SET]
                .as_str()
                .expect("node set label");
            let own = names::node_set_labels(t, node_set);
            let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
            let claim_labels = &d["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"];
            for (k, v) in &own {
                assert_eq!(pod_labels[k], v.as_str(), "pod label {k}");
                assert_eq!(claim_labels[k], v.as_str(), "claim label {k}");
            }
        }
    }
}

fn check(name: &str) {
    let (cluster, spec) = scenario(name);
    spec.validate(&catalog(), "spec")
        .expect("the scenario is a valid spec");
    let t = target(cluster, spec);
    let docs = render_all(&t);
    check_labels(&t, &docs);
    let yaml = to_yaml(&docs);

    let dir = std::env::temp_dir().join(format!("esaas-manifests-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, &yaml).expect("write manifests");
    if let Err(e) = validate(&file) {
        panic!("{e}");
    }
    // A formed cluster's ConfigMap (no initial masters) is valid too.
    let formed = dir.join(format!("{name}-formed.yaml"));
    let cm = doc(&render::config_map_without_bootstrap(&t, &storage()));
    std::fs::write(&formed, to_yaml(&[cm])).expect("write manifests");
    if let Err(e) = validate(&formed) {
        panic!("{e}");
    }
    std::fs::remove_dir_all(&dir).ok();

    check_golden(name, &yaml);
}

#[test]
fn single_node() {
    check("single-node");
}

#[test]
fn dedicated_masters_and_data() {
    check("dedicated-masters");
}

#[test]
fn three_zones() {
    check("three-zones");
}

#[test]
fn large_storage() {
    check("large-storage");
}

/// The checker really checks: an unknown field and a wrong type fail.
#[test]
fn the_schema_check_rejects_bad_manifests() {
    let (cluster, spec) = scenario("single-node");
    let t = target(cluster, spec);
    let mut svc = doc(&render::base(&t, &fixed_secrets(), true, &storage()).http_service);
    let dir = std::env::temp_dir().join(format!("esaas-manifests-{}-bad", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.yaml");

    svc["spec"]["clusterIPx"] = "None".into();
    std::fs::write(&file, to_yaml(std::slice::from_ref(&svc))).expect("write");
    let err = validate(&file).expect_err("an unknown field passed --strict");
    assert!(err.contains("clusterIPx"), "{err}");

    svc["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("clusterIPx");
    svc["spec"]["ports"][0]["port"] = "nine-thousand-two-hundred".into();
    std::fs::write(&file, to_yaml(std::slice::from_ref(&svc))).expect("write");
    let err = validate(&file).expect_err("a string port passed");
    assert!(err.contains("nine-thousand-two-hundred"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
