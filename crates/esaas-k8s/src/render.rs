//! The Kubernetes objects of an Elasticsearch cluster, as typed `k8s-openapi`
//! values. Pure: the same target, secrets and catalog always give the same
//! objects, so a repeated server-side apply changes nothing.
//!
//! Per tenant, a Namespace. Per cluster: a Secret (the `elastic` password and
//! the TLS material), a ConfigMap with one `elasticsearch.yml` per node set,
//! a headless transport Service (9300, pod DNS), a client Service (9200), a
//! PodDisruptionBudget and a NetworkPolicy; per node set, a StatefulSet.
//! Every object carries [`names::cluster_labels`] (the per-node-set ones
//! [`names::node_set_labels`]), so `names::cluster_selector` finds them all.
//!
//! Decisions worth knowing:
//! - Selectors. The Services, the PodDisruptionBudget, the NetworkPolicy and
//!   the anti-affinity select the cluster's pods by the full
//!   [`names::cluster_labels`] (uid included: a leftover pod of an earlier
//!   cluster of the same name is never selected); a StatefulSet selects its
//!   node set's pods by [`names::node_set_labels`], which its pod template
//!   carries — a superset of the cluster labels.
//! - Readiness. A TCP probe on Elasticsearch's readiness port
//!   ([`READINESS_PORT`], `readiness.port` in `elasticsearch.yml`, 8.2 and
//!   later): Elasticsearch opens it only once the node has joined a cluster
//!   with an elected master, and the probe needs no credentials, which an
//!   HTTP probe against 9200 would (security is on, so it would get 401).
//!   There is no liveness probe: a long garbage collection must not get a
//!   node killed.
//! - Network. Pods of the cluster accept 9300 only from pods of the same
//!   cluster; 9200 from any pod of the tenant's namespace, from namespaces
//!   labelled [`ACCESS_LABEL`]` = {tenant}` (a tenant's applications in
//!   namespaces of their own) and from the esaas workers' pods
//!   ([`WORKER_POD_LABELS`] in namespaces labelled [`PLATFORM_LABEL`]` =
//!   "true"), which check health and drain nodes over 9200; nothing else
//!   (the kubelet's probes come from the node, which network policies always
//!   admit). They send only DNS to kube-dns, 9300 to pods of the same cluster,
//!   and HTTPS (443, snapshot repositories such as S3) anywhere but the
//!   link-local range, so never to the instance metadata endpoint
//!   (169.254.169.254, fd00:ec2::254) and its node credentials.
//! - Bootstrap. `cluster.initial_master_nodes` is only for the very first
//!   start of a cluster: [`base`] / [`config_map`] take `bootstrap`, and the
//!   workload backend passes `false` once the cluster has formed
//!   ([`config_map_without_bootstrap`]), so a master that comes back with an
//!   empty disk can never bootstrap a second cluster. A pod reads the config
//!   when it starts (the file is a `subPath` mount), so pods already running
//!   are not affected by the change.
//! - Upgrades. `RollingUpdate` with a partition ([`set_partition`]): the
//!   backend lowers the partition one pod at a time, with Elasticsearch's
//!   health gate in between. Rendered objects carry partition 0.
//! - Volumes. The claim template names the StorageClass [`STORAGE_CLASS`]
//!   (gp3, expandable) and the VolumeAttributesClass of the node set's gp3
//!   profile ([`volume_attributes_class`]): the EBS CSI driver provisions the
//!   volume with that class's IOPS and throughput, and applies a new class to
//!   an existing volume with ModifyVolume. The claim template is named after
//!   the cluster's uid ([`names::data_claim`]), so a later cluster of the same
//!   name never mounts the volumes an earlier one retained. The StatefulSet
//!   deletes the claim of a pod a scale-in removed (`whenScaled: Delete`) and
//!   keeps them all when it is itself deleted (`whenDeleted: Retain`): the
//!   backend deletes them, or not, as the delete asks.
//! - Zones. Every pod's zone is fixed before its volume exists: the
//!   platform makes the claim of pod `n` itself, before the StatefulSet
//!   would, with the StorageClass of zone `n % zone_count` of the cluster
//!   ([`zone_storage_class`], [`data_volume`]); the StatefulSet finds the
//!   claim by name and uses it. The node set's node group in that zone has
//!   a node for it, and a node EKS replaces comes back in that zone.
//!   `node.attr.zone` comes from the pod's
//!   `topology.kubernetes.io/zone` label, which Kubernetes copies from the
//!   node at binding (`PodTopologyLabelsAdmission`, on by default from 1.35);
//!   with more than one zone, shard allocation is zone-aware.
//! - Pod Security. The tenant Namespace enforces the `restricted` Pod
//!   Security Standard, and the pods meet it: user 1000, non-root, no
//!   privilege escalation, every capability dropped, seccomp `RuntimeDefault`.
//!   `vm.max_map_count` (at least [`MAX_MAP_COUNT`]) is a node setting no such
//!   pod can change: the node groups' launch template sets it
//!   (`eks.launch_template`, `deploy/launch-template/`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use esaas_core::backend::Target;
use esaas_core::catalog::Catalog;
use esaas_core::placement;
use esaas_core::spec::{NodeRole, NodeSet};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, KeyToPath, Namespace, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    TCPSocketAction, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::core::v1::{TopologySelectorLabelRequirement, TopologySelectorTerm};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttributesClass};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::names::{self, labels, secret_keys};
use crate::snapshot_storage::SnapshotStorage;
use crate::tls::TlsMaterial;

/// Elasticsearch's HTTP port (HTTPS).
pub const HTTP_PORT: i32 = 9200;
/// Elasticsearch's transport port (TLS).
pub const TRANSPORT_PORT: i32 = 9300;
/// Elasticsearch's readiness port (`readiness.port`), probed over TCP.
pub const READINESS_PORT: i32 = 8080;
/// The StorageClass of data volumes (gp3, expandable, from `deploy/`).
pub const STORAGE_CLASS: &str = "esaas-gp3";
/// The EBS CSI driver, which provisions, expands and modifies the volumes.
pub const EBS_CSI_DRIVER: &str = "ebs.csi.aws.com";
/// The EBS CSI driver's topology key: the zone of a node, and of a volume.
pub const EBS_ZONE_KEY: &str = "topology.ebs.csi.aws.com/zone";
/// Annotation on a data volume's claim: the zone it was made for.
pub const ZONE_ANNOTATION: &str = "esaas.io/zone";
/// Largest heap: below 32 GiB, so the JVM keeps compressed object pointers.
pub const MAX_HEAP_MIB: u32 = 31744;
/// User and group of the Elasticsearch image.
pub const ES_UID: i64 = 1000;
/// Grace for a node to stop cleanly (flush, leave the cluster).
pub const TERMINATION_GRACE_SECONDS: i64 = 180;
/// The `vm.max_map_count` Elasticsearch needs at least.
pub const MAX_MAP_COUNT: u32 = 262144;
/// Elasticsearch's home in the image.
pub const ES_HOME: &str = "/usr/share/elasticsearch";
/// Where the data volume is mounted.
pub const DATA_DIR: &str = "/usr/share/elasticsearch/data";
/// Where `elasticsearch.yml` is mounted (a `subPath` of the ConfigMap).
pub const CONFIG_FILE: &str = "/usr/share/elasticsearch/config/elasticsearch.yml";
/// Where the CA, node certificate and key from the Secret are mounted.
pub const CERTS_DIR: &str = "/usr/share/elasticsearch/config/certs";
/// The Elasticsearch container.
pub const CONTAINER: &str = "elasticsearch";

/// Namespace label that opens a tenant's clusters' 9200 to the namespace:
/// `esaas.io/access: {tenant}`.
pub const ACCESS_LABEL: &str = "esaas.io/access";
/// Namespace label of the esaas platform (`"true"`), whose workers reach
/// every cluster's 9200.
pub const PLATFORM_LABEL: &str = "esaas.io/platform";
/// Labels of the esaas workers' pods (`deploy/base/worker.yaml`): of the
/// platform's namespace, only these reach a cluster's 9200.
pub const WORKER_POD_LABELS: [(&str, &str); 1] = [("app.kubernetes.io/name", "esaas-worker")];
/// The Pod Security Standard every tenant namespace enforces.
pub const POD_SECURITY_LEVEL: &str = "restricted";
/// What pods of a cluster may send HTTPS to: anywhere but the link-local
/// ranges, where the instance metadata service (and its node role
/// credentials) answers, on IPv4 and on IPv6.
pub const HTTPS_EGRESS: [(&str, &str); 2] = [
    ("0.0.0.0/0", "169.254.0.0/16"),
    ("::/0", "fd00:ec2::254/128"),
];
/// The annotation through which EKS gives a ServiceAccount's pods an IAM
/// role (IRSA: a projected web identity token the AWS SDKs exchange for
/// short-lived credentials).
pub const IRSA_ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// Hash of the node set's `elasticsearch.yml` (without the bootstrap list) on
/// the pod template, so a change of the file rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "esaas.io/config-sha256";
/// Node label of the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Node label of the host name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The password and TLS material of a cluster, as its Secret holds them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Password of the `elastic` user.
    pub password: String,
    /// CA, node certificate and key.
    pub tls: TlsMaterial,
    /// The operation that last rotated the certificates (an annotation).
    pub rotated_by: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("password", &"<redacted>")
            .field("tls", &self.tls)
            .finish()
    }
}

/// The objects of a cluster that are not per node set. Its `Debug` leaves the
/// Secret's data out.
#[derive(Clone, PartialEq)]
pub struct BaseObjects {
    /// The tenant's namespace (shared by the tenant's clusters).
    pub namespace: Namespace,
    /// Password and TLS material.
    pub secret: Secret,
    /// `elasticsearch.yml` per node set.
    pub config_map: ConfigMap,
    /// Headless Service for transport and pod DNS.
    pub transport_service: Service,
    /// Client Service.
    pub http_service: Service,
    /// At most one pod of the cluster down at a time.
    pub pdb: PodDisruptionBudget,
    /// Who may reach 9200 and 9300.
    pub network_policy: NetworkPolicy,
    /// The pods' identity: with `snapshots.role_arn`, the IAM role that
    /// reaches the snapshot bucket (IRSA).
    pub service_account: ServiceAccount,
}

impl std::fmt::Debug for BaseObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseObjects")
            .field("namespace", &self.namespace)
            .field("secret", &self.secret.metadata.name)
            .field("config_map", &self.config_map)
            .field("transport_service", &self.transport_service)
            .field("http_service", &self.http_service)
            .field("pdb", &self.pdb)
            .field("network_policy", &self.network_policy)
            .field("service_account", &self.service_account)
            .finish()
    }
}

/// Why a StatefulSet cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The spec has no node set of that name.
    #[error("the spec has no node set {0:?}")]
    UnknownNodeSet(String),
    /// The node set's size class is not in the catalog.
    #[error("size class {size_class:?} of node set {node_set:?} is not in the catalog")]
    UnknownSizeClass {
        /// The node set.
        node_set: String,
        /// Its size class.
        size_class: String,
    },
}

/// Renders the shared objects. `bootstrap` puts `cluster.initial_master_nodes`
/// into the configuration: only before the cluster has ever formed.
pub fn base(
    t: &Target,
    secrets: &Secrets,
    bootstrap: bool,
    storage: &SnapshotStorage,
) -> BaseObjects {
    BaseObjects {
        namespace: namespace(t),
        secret: secret(t, secrets),
        config_map: config_map(t, bootstrap, storage),
        transport_service: transport_service(t),
        http_service: http_service(t),
        pdb: pdb(t),
        network_policy: network_policy(t),
        service_account: service_account(t, storage),
    }
}

/// The ServiceAccount the cluster's pods run as. With `snapshots.role_arn`
/// it carries [`IRSA_ROLE_ANNOTATION`]: EKS's pod identity webhook then
/// projects a web identity token into the pods, which the `repository-s3`
/// plugin exchanges for short-lived credentials of that role, so no key is
/// ever stored. Its Kubernetes API token is never mounted (the pods do not
/// call the API server); the webhook's token is a volume of its own.
pub fn service_account(t: &Target, storage: &SnapshotStorage) -> ServiceAccount {
    let role = storage.role_arn.trim();
    let mut metadata = meta(t, names::service_account(t), names::cluster_labels(t));
    if storage.enabled() && !role.is_empty() {
        metadata.annotations = Some(BTreeMap::from([(
            IRSA_ROLE_ANNOTATION.to_string(),
            role.to_string(),
        )]));
    }
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

fn meta(t: &Target, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names::namespace(t)),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// The tenant's Namespace: labelled managed-by (what `deploy/`'s admission
/// policy confines the worker's writes to) and tenant (it is shared by the
/// tenant's clusters), enforcing, auditing and warning at the `restricted`
/// Pod Security level, of the API server's version.
pub fn namespace(t: &Target) -> Namespace {
    let pss = |mode: &str, value: &str| {
        (
            format!("pod-security.kubernetes.io/{mode}"),
            value.to_string(),
        )
    };
    Namespace {
        metadata: ObjectMeta {
            name: Some(names::namespace(t)),
            labels: Some(BTreeMap::from([
                (labels::MANAGED_BY.to_string(), "esaas".to_string()),
                (labels::TENANT.to_string(), t.tenant.to_string()),
                pss("enforce", POD_SECURITY_LEVEL),
                pss("enforce-version", "latest"),
                pss("audit", POD_SECURITY_LEVEL),
                pss("warn", POD_SECURITY_LEVEL),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The Secret: the password and the PEM material under [`secret_keys`].
pub fn secret(t: &Target, secrets: &Secrets) -> Secret {
    let entry = |k: &str, v: &str| (k.to_string(), ByteString(v.as_bytes().to_vec()));
    let mut data = BTreeMap::from([
        entry(secret_keys::PASSWORD, &secrets.password),
        entry(secret_keys::CA_CERT, &secrets.tls.ca_cert_pem),
        entry(secret_keys::TLS_CERT, &secrets.tls.cert_pem),
        entry(secret_keys::TLS_KEY, &secrets.tls.key_pem),
    ]);
    if !secrets.tls.ca_key_pem.is_empty() {
        data.extend([entry(secret_keys::CA_KEY, &secrets.tls.ca_key_pem)]);
    }
    let mut metadata = meta(t, names::secret(t), names::cluster_labels(t));
    if let Some(op) = &secrets.rotated_by {
        metadata.annotations = Some(BTreeMap::from([(
            names::ROTATED_BY_ANNOTATION.to_string(),
            op.clone(),
        )]));
    }
    Secret {
        metadata,
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Names of every master-eligible pod of the spec, for the first bootstrap.
pub fn initial_master_nodes(t: &Target) -> Vec<String> {
    t.spec
        .node_sets
        .iter()
        .filter(|ns| ns.roles.contains(&NodeRole::Master))
        .flat_map(|ns| (0..ns.count.max(0)).map(|i| names::pod(t, &ns.name, i)))
        .collect()
}

/// A YAML double-quoted scalar (JSON string escaping is valid YAML).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `elasticsearch.yml` of `node_set`. `bootstrap` adds
/// `cluster.initial_master_nodes`.
pub fn elasticsearch_yml(
    t: &Target,
    node_set: &NodeSet,
    bootstrap: bool,
    storage: &SnapshotStorage,
) -> String {
    let cert = |file: &str| quote(&format!("{CERTS_DIR}/{file}"));
    let roles: Vec<String> = node_set
        .roles
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    let mut y = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(y, "{key}: {value}");
    };
    line(
        "cluster.name",
        quote(&format!("{}-{}", t.tenant, t.cluster_id)),
    );
    line("node.name", quote("${POD_NAME}"));
    line("node.roles", list(&roles));
    line("node.attr.zone", quote("${ZONE}"));
    line("network.host", quote("0.0.0.0"));
    line("http.port", HTTP_PORT.to_string());
    line("transport.port", TRANSPORT_PORT.to_string());
    line("readiness.port", READINESS_PORT.to_string());
    line("discovery.seed_hosts", list(&[names::transport_service(t)]));
    if bootstrap {
        line(
            "cluster.initial_master_nodes",
            list(&initial_master_nodes(t)),
        );
    }
    if t.spec.zone_count > 1 {
        line(
            "cluster.routing.allocation.awareness.attributes",
            quote("zone"),
        );
    }
    line("xpack.security.enabled", "true".into());
    line("xpack.security.http.ssl.enabled", "true".into());
    line(
        "xpack.security.http.ssl.certificate",
        cert(secret_keys::TLS_CERT),
    );
    line("xpack.security.http.ssl.key", cert(secret_keys::TLS_KEY));
    line(
        "xpack.security.http.ssl.certificate_authorities",
        format!("[{}]", cert(secret_keys::CA_CERT)),
    );
    line("xpack.security.transport.ssl.enabled", "true".into());
    // Nodes dial each other by IP: check the chain, not the host name.
    line(
        "xpack.security.transport.ssl.verification_mode",
        quote("certificate"),
    );
    line(
        "xpack.security.transport.ssl.client_authentication",
        quote("required"),
    );
    line(
        "xpack.security.transport.ssl.certificate",
        cert(secret_keys::TLS_CERT),
    );
    line(
        "xpack.security.transport.ssl.key",
        cert(secret_keys::TLS_KEY),
    );
    line(
        "xpack.security.transport.ssl.certificate_authorities",
        format!("[{}]", cert(secret_keys::CA_CERT)),
    );
    // The `repository-s3` plugin's client; credentials come from the pod's
    // web identity (IRSA), never from settings or the keystore.
    let endpoint = storage.s3_endpoint.trim();
    if storage.enabled() && !endpoint.is_empty() {
        line("s3.client.default.endpoint", quote(endpoint));
        if endpoint.starts_with("http://") {
            line("s3.client.default.protocol", quote("http"));
        }
        line("s3.client.default.path_style_access", "true".into());
    }
    y
}

/// The ConfigMap key of a node set's `elasticsearch.yml`.
pub fn config_key(node_set: &str) -> String {
    format!("{node_set}.yml")
}

/// The ConfigMap: `{node_set}.yml` per node set. `bootstrap` adds the
/// initial master list; the backend renders it with `false` once the
/// cluster has formed.
pub fn config_map(t: &Target, bootstrap: bool, storage: &SnapshotStorage) -> ConfigMap {
    let data = t
        .spec
        .node_sets
        .iter()
        .map(|ns| {
            (
                config_key(&ns.name),
                elasticsearch_yml(t, ns, bootstrap, storage),
            )
        })
        .collect();
    ConfigMap {
        metadata: meta(t, names::config_map(t), names::cluster_labels(t)),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The ConfigMap of a cluster that has formed: no `cluster.initial_master_nodes`.
pub fn config_map_without_bootstrap(t: &Target, storage: &SnapshotStorage) -> ConfigMap {
    config_map(t, false, storage)
}

fn tcp_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// The headless transport Service: 9300 and the pods' DNS names, published
/// before the pods are ready (nodes must find each other to become ready).
pub fn transport_service(t: &Target) -> Service {
    Service {
        metadata: meta(t, names::transport_service(t), names::cluster_labels(t)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names::cluster_labels(t)),
            ports: Some(vec![tcp_port("transport", TRANSPORT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service: 9200 (HTTPS) on the ready pods of the cluster.
pub fn http_service(t: &Target) -> Service {
    Service {
        metadata: meta(t, names::http_service(t), names::cluster_labels(t)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(names::cluster_labels(t)),
            ports: Some(vec![ServicePort {
                app_protocol: Some("https".to_string()),
                ..tcp_port("https", HTTP_PORT)
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one pod of the cluster voluntarily disrupted at a time.
pub fn pdb(t: &Target) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(t, names::pdb(t), names::cluster_labels(t)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(names::cluster_labels(t))),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn policy_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        ..NetworkPolicyPort::default()
    }
}

fn namespaces_labelled(key: &str, value: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(selector(BTreeMap::from([(
            key.to_string(),
            value.to_string(),
        )]))),
        ..NetworkPolicyPeer::default()
    }
}

/// Ingress to the cluster's pods: 9300 from the cluster's own pods; 9200
/// from the tenant's namespace, from namespaces labelled
/// `esaas.io/access: {tenant}` and from the esaas workers' pods; nothing
/// else. Egress: DNS to kube-dns, 9300 to the cluster's own pods, HTTPS
/// anywhere but link-local (the instance metadata endpoint); nothing else.
pub fn network_policy(t: &Target) -> NetworkPolicy {
    let own_pods = || NetworkPolicyPeer {
        pod_selector: Some(selector(names::cluster_labels(t))),
        ..NetworkPolicyPeer::default()
    };
    let workers = NetworkPolicyPeer {
        pod_selector: Some(selector(
            WORKER_POD_LABELS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )),
        ..namespaces_labelled(PLATFORM_LABEL, "true")
    };
    let kube_dns = NetworkPolicyPeer {
        pod_selector: Some(selector(BTreeMap::from([(
            "k8s-app".to_string(),
            "kube-dns".to_string(),
        )]))),
        ..namespaces_labelled("kubernetes.io/metadata.name", "kube-system")
    };
    let dns_port = |protocol: &str| NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        ..policy_port(53)
    };
    let https = HTTPS_EGRESS
        .iter()
        .map(|(cidr, except)| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.to_string(),
                except: Some(vec![except.to_string()]),
            }),
            ..NetworkPolicyPeer::default()
        })
        .collect();
    NetworkPolicy {
        metadata: meta(t, names::network_policy(t), names::cluster_labels(t)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(names::cluster_labels(t))),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![policy_port(TRANSPORT_PORT)]),
                    from: Some(vec![own_pods()]),
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![policy_port(HTTP_PORT)]),
                    from: Some(vec![
                        // Every pod of the policy's own (the tenant's) namespace.
                        NetworkPolicyPeer {
                            pod_selector: Some(LabelSelector::default()),
                            ..NetworkPolicyPeer::default()
                        },
                        namespaces_labelled(ACCESS_LABEL, t.tenant.as_str()),
                        workers,
                    ]),
                },
            ]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
                    to: Some(vec![kube_dns]),
                },
                NetworkPolicyEgressRule {
                    ports: Some(vec![policy_port(TRANSPORT_PORT)]),
                    to: Some(vec![own_pods()]),
                },
                NetworkPolicyEgressRule {
                    ports: Some(vec![policy_port(443)]),
                    to: Some(https),
                },
            ]),
        }),
    }
}

/// The heap of a pod with `memory_mib`: half of it, at most [`MAX_HEAP_MIB`].
pub fn heap_mib(memory_mib: u32) -> u32 {
    (memory_mib / 2).min(MAX_HEAP_MIB)
}

/// The Elasticsearch image of `version`.
pub fn image(version: &str) -> String {
    format!("docker.elastic.co/elasticsearch/elasticsearch:{version}")
}

fn resources(cpu: String, memory: String) -> ResourceRequirements {
    let r = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu)),
        ("memory".to_string(), Quantity(memory)),
    ]);
    ResourceRequirements {
        requests: Some(r.clone()),
        limits: Some(r),
        ..ResourceRequirements::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str, sub_path: Option<String>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        sub_path,
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The VolumeAttributesClass of a gp3 profile (IOPS and throughput), named by
/// [`esaas_core::spec::NodeSet::attributes_class`]: the EBS CSI driver's
/// parameters `type`, `iops` and `throughput` (MiB/s). Parameters of a class
/// are immutable, so every profile is its own class, shared by every cluster
/// that asks for it.
pub fn volume_attributes_class(ns: &esaas_core::spec::NodeSet) -> VolumeAttributesClass {
    VolumeAttributesClass {
        metadata: ObjectMeta {
            name: Some(ns.attributes_class()),
            labels: Some(BTreeMap::from([(
                names::labels::MANAGED_BY.to_string(),
                "esaas".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        driver_name: EBS_CSI_DRIVER.to_string(),
        parameters: Some(BTreeMap::from([
            ("type".to_string(), "gp3".to_string()),
            ("iops".to_string(), ns.storage_iops.to_string()),
            (
                "throughput".to_string(),
                ns.storage_throughput_mibps.to_string(),
            ),
        ])),
    }
}

/// The StorageClass of one zone's data volumes: [`STORAGE_CLASS`]'s
/// parameters, with `allowedTopologies` holding the EBS CSI driver's zone key
/// (`topology.ebs.csi.aws.com/zone`, the driver's `TopologyKeys`), so a
/// volume is made in that zone and only a node there may mount it.
pub fn zone_storage_class(zone: &str) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(zone_storage_class_name(zone)),
            labels: Some(BTreeMap::from([(
                names::labels::MANAGED_BY.to_string(),
                "esaas".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        provisioner: EBS_CSI_DRIVER.to_string(),
        parameters: Some(BTreeMap::from([
            ("type".to_string(), "gp3".to_string()),
            ("encrypted".to_string(), "true".to_string()),
            ("csi.storage.k8s.io/fstype".to_string(), "ext4".to_string()),
        ])),
        allow_volume_expansion: Some(true),
        volume_binding_mode: Some("WaitForFirstConsumer".to_string()),
        reclaim_policy: Some("Delete".to_string()),
        allowed_topologies: Some(vec![TopologySelectorTerm {
            match_label_expressions: Some(vec![TopologySelectorLabelRequirement {
                key: EBS_ZONE_KEY.to_string(),
                values: vec![zone.to_string()],
            }]),
        }]),
        ..StorageClass::default()
    }
}

/// `esaas-gp3-{zone}`.
pub fn zone_storage_class_name(zone: &str) -> String {
    format!("{STORAGE_CLASS}-{zone}")
}

/// The claim of pod `ordinal` of `node_set`, made by the platform before the
/// StatefulSet would (which then uses it, as it finds it by name): the claim
/// template of `sts`, in the zone the pod belongs to
/// ([`esaas_core::placement::zone_of`]).
pub fn data_volume(
    t: &Target,
    sts: &StatefulSet,
    node_set: &str,
    ordinal: i32,
    zone: &str,
) -> Option<PersistentVolumeClaim> {
    let mut claim = sts.spec.volume_claim_templates.as_ref()?.first()?.clone();
    claim.metadata.name = Some(names::data_volume(t, node_set, ordinal));
    claim.metadata.namespace = Some(names::namespace(t));
    claim
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ZONE_ANNOTATION.to_string(), zone.to_string());
    if let Some(spec) = claim.spec.as_mut() {
        spec.storage_class_name = Some(zone_storage_class_name(zone));
    }
    Some(claim)
}

/// Sets the partition of a rendered StatefulSet's rolling update: pods with
/// an ordinal at or above it get the new template, the others keep theirs.
pub fn set_partition(sts: &mut StatefulSet, partition: i32) {
    let strategy = sts
        .spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    strategy.type_ = Some("RollingUpdate".to_string());
    strategy
        .rolling_update
        .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
        .partition = Some(partition);
}

/// Renders the StatefulSet of `node_set` with `replicas` pods. The pod
/// template does not depend on `replicas`.
pub fn stateful_set(
    t: &Target,
    catalog: &Catalog,
    storage: &SnapshotStorage,
    node_set: &str,
    replicas: i32,
) -> Result<StatefulSet, RenderError> {
    let ns = t
        .spec
        .node_sets
        .iter()
        .find(|n| n.name == node_set)
        .ok_or_else(|| RenderError::UnknownNodeSet(node_set.to_string()))?;
    let class =
        catalog
            .size_class(&ns.size_class)
            .ok_or_else(|| RenderError::UnknownSizeClass {
                node_set: node_set.to_string(),
                size_class: ns.size_class.clone(),
            })?;
    let heap = heap_mib(class.memory_mib);
    let cluster_labels = names::cluster_labels(t);
    let pod_labels = names::node_set_labels(t, node_set);
    let config_hash = hex::encode(Sha256::digest(
        elasticsearch_yml(t, ns, false, storage).as_bytes(),
    ));

    let main = Container {
        name: CONTAINER.to_string(),
        image: Some(image(&t.spec.version)),
        env: Some(vec![
            env_field("POD_NAME", "metadata.name"),
            env_field("ZONE", &format!("metadata.labels['{ZONE_LABEL}']")),
            env("ES_JAVA_OPTS", &format!("-Xms{heap}m -Xmx{heap}m")),
            EnvVar {
                name: "ELASTIC_PASSWORD".to_string(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: names::secret(t),
                        key: secret_keys::PASSWORD.to_string(),
                        ..SecretKeySelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![
            container_port("https", HTTP_PORT),
            container_port("transport", TRANSPORT_PORT),
            container_port("readiness", READINESS_PORT),
        ]),
        resources: Some(resources(
            format!("{}m", class.cpu_millis),
            format!("{}Mi", class.memory_mib),
        )),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(READINESS_PORT),
                ..TCPSocketAction::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(ES_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(&names::data_claim(t), DATA_DIR, None, false),
            mount("config", CONFIG_FILE, Some(config_key(node_set)), true),
            mount("certs", CERTS_DIR, None, true),
        ]),
        ..Container::default()
    };

    let spread = TopologySpreadConstraint {
        max_skew: 1,
        topology_key: ZONE_LABEL.to_string(),
        when_unsatisfiable: if t.spec.zone_count > 1 {
            "DoNotSchedule"
        } else {
            "ScheduleAnyway"
        }
        .to_string(),
        label_selector: Some(selector(pod_labels.clone())),
        ..TopologySpreadConstraint::default()
    };

    let dedicated = placement::dedicated_taint(t);
    let pod = PodSpec {
        containers: vec![main],
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        service_account_name: Some(names::service_account(t)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // The `restricted` Pod Security Standard, at the pod's level.
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(ES_UID),
            run_as_group: Some(ES_UID),
            fs_group: Some(ES_UID),
            fs_group_change_policy: Some("OnRootMismatch".to_string()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        // The labels and the taint of the node set's own node group.
        node_selector: Some(placement::node_labels(t, node_set)),
        tolerations: Some(vec![Toleration {
            key: Some(dedicated.key.to_string()),
            operator: Some("Equal".to_string()),
            value: Some(dedicated.value),
            effect: Some("NoSchedule".to_string()),
            ..Toleration::default()
        }]),
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(selector(cluster_labels)),
                    topology_key: HOSTNAME_LABEL.to_string(),
                    ..PodAffinityTerm::default()
                }]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }),
        topology_spread_constraints: Some(vec![spread]),
        volumes: Some(vec![
            Volume {
                name: "config".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::config_map(t),
                    items: Some(vec![KeyToPath {
                        key: config_key(node_set),
                        path: config_key(node_set),
                        ..KeyToPath::default()
                    }]),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "certs".to_string(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names::secret(t)),
                    // Only the TLS files: the password stays out of the file system.
                    items: Some(
                        [
                            secret_keys::CA_CERT,
                            secret_keys::TLS_CERT,
                            secret_keys::TLS_KEY,
                        ]
                        .iter()
                        .map(|k| KeyToPath {
                            key: k.to_string(),
                            path: k.to_string(),
                            ..KeyToPath::default()
                        })
                        .collect(),
                    ),
                    // Readable by the owner and by fsGroup 1000, not by others.
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(names::data_claim(t)),
            labels: Some(pod_labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: Some(STORAGE_CLASS.to_string()),
            volume_attributes_class_name: Some(ns.attributes_class()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(format!("{}Gi", ns.storage_gib)),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    let mut sts = StatefulSet {
        metadata: meta(t, names::stateful_set(t, node_set), pod_labels.clone()),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            selector: selector(pod_labels.clone()),
            service_name: Some(names::transport_service(t)),
            pod_management_policy: Some("Parallel".to_string()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some("Delete".to_string()),
                    when_deleted: Some("Retain".to_string()),
                },
            ),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    };
    set_partition(&mut sts, 0);
    Ok(sts)
}

#[cfg(test)]
mod tests {
    use esaas_core::catalog::SizeClass;
    use esaas_core::names::{ClusterId, TenantId};
    use esaas_core::spec::ClusterSpec;
    use uuid::Uuid;

    use super::*;

    fn catalog() -> Catalog {
        let class = |name: &str, cpu_millis, memory_mib| SizeClass {
            name: name.into(),
            instance_type: "r6i.large".into(),
            cpu_millis,
            memory_mib,
        };
        Catalog {
            versions: vec!["8.15.3".into()],
            size_classes: vec![class("small", 1500, 12288), class("xlarge", 15000, 118784)],
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

    /// Three dedicated masters and `data_size` data nodes over `zones` zones.
    fn target(data_size: &str, zones: i32) -> Target {
        let mut spec = ClusterSpec::test();
        spec.zone_count = zones;
        spec.node_sets = vec![
            NodeSet {
                roles: vec![NodeRole::Master],
                count: 3,
                ..NodeSet::test("master")
            },
            NodeSet {
                roles: vec![NodeRole::Data, NodeRole::Ingest],
                count: 2,
                size_class: data_size.into(),
                ..NodeSet::test("data")
            },
        ];
        Target {
            uid: Uuid::from_u128(7),
            tenant: TenantId::parse("t", "acme").expect("valid tenant"),
            cluster_id: ClusterId::parse("c", "logs").expect("valid cluster"),
            spec,
            generation: 1,
            operation: Uuid::from_u128(8),
        }
    }

    fn secrets() -> Secrets {
        Secrets {
            password: "pw".into(),
            tls: TlsMaterial {
                ca_cert_pem: "ca".into(),
                cert_pem: "cert".into(),
                key_pem: "key".into(),
                ca_key_pem: "ca key".into(),
            },
            rotated_by: None,
        }
    }

    fn pod_spec(sts: &StatefulSet) -> &PodSpec {
        sts.spec.template.spec.as_ref().expect("pod spec")
    }

    fn main_container(sts: &StatefulSet) -> &Container {
        &pod_spec(sts).containers[0]
    }

    fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
        c.env.as_ref()?.iter().find(|e| e.name == name)
    }

    fn has_labels(obj: Option<&BTreeMap<String, String>>, want: &BTreeMap<String, String>) -> bool {
        obj.is_some_and(|l| want.iter().all(|(k, v)| l.get(k) == Some(v)))
    }

    #[test]
    fn heap_is_half_the_memory_at_most_31_gib() {
        assert_eq!(heap_mib(12288), 6144);
        assert_eq!(heap_mib(63488), 31744);
        assert_eq!(heap_mib(118784), MAX_HEAP_MIB);
        assert_eq!(MAX_HEAP_MIB, 31 * 1024);

        let t = target("xlarge", 1);
        let sts =
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 2).expect("renders");
        let opts = env_value(main_container(&sts), "ES_JAVA_OPTS").expect("ES_JAVA_OPTS");
        assert_eq!(opts.value.as_deref(), Some("-Xms31744m -Xmx31744m"));
        let sts = stateful_set(&t, &catalog(), &SnapshotStorage::default(), "master", 3)
            .expect("renders");
        let opts = env_value(main_container(&sts), "ES_JAVA_OPTS").expect("ES_JAVA_OPTS");
        assert_eq!(opts.value.as_deref(), Some("-Xms6144m -Xmx6144m"));
    }

    #[test]
    fn requests_equal_limits_in_every_container() {
        let t = target("xlarge", 1);
        let sts =
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 2).expect("renders");
        let pod = pod_spec(&sts);
        let all = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for c in all {
            let r = c.resources.as_ref().expect("resources");
            assert!(r.requests.is_some(), "{} has requests", c.name);
            assert_eq!(r.requests, r.limits, "{}", c.name);
        }
        let r = main_container(&sts).resources.as_ref().expect("resources");
        let requests = r.requests.as_ref().expect("requests");
        assert_eq!(requests["cpu"], Quantity("15000m".into()));
        assert_eq!(requests["memory"], Quantity("118784Mi".into()));
    }

    #[test]
    fn one_pod_per_node_on_the_clusters_own_nodes() {
        let t = target("small", 3);
        let sts =
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 2).expect("renders");
        let pod = pod_spec(&sts);

        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("required anti-affinity");
        assert_eq!(anti.len(), 1);
        assert_eq!(anti[0].topology_key, HOSTNAME_LABEL);
        let sel = anti[0].label_selector.as_ref().expect("selector");
        assert_eq!(sel.match_labels.as_ref(), Some(&names::cluster_labels(&t)));

        // The taint of the node group (esaas-eks) is tolerated, nothing else.
        let tol = pod.tolerations.as_ref().expect("tolerations");
        assert_eq!(tol.len(), 1);
        assert_eq!(tol[0].key.as_deref(), Some("esaas.io/dedicated"));
        assert_eq!(tol[0].operator.as_deref(), Some("Equal"));
        assert_eq!(tol[0].value.as_deref(), Some("acme.logs"));
        assert_eq!(tol[0].effect.as_deref(), Some("NoSchedule"));

        let sel = pod.node_selector.as_ref().expect("node selector");
        assert_eq!(sel["esaas.io/tenant"], "acme");
        assert_eq!(sel["esaas.io/cluster"], "logs");
        assert_eq!(sel["esaas.io/node-set"], "data");

        let spread = &pod.topology_spread_constraints.as_ref().expect("spread")[0];
        assert_eq!(spread.topology_key, ZONE_LABEL);
        assert_eq!(spread.max_skew, 1);
        assert_eq!(spread.when_unsatisfiable, "DoNotSchedule");
        let single = stateful_set(
            &target("small", 1),
            &catalog(),
            &SnapshotStorage::default(),
            "data",
            2,
        )
        .expect("renders");
        let spread = &pod_spec(&single)
            .topology_spread_constraints
            .as_ref()
            .expect("spread")[0];
        assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway");
    }

    #[test]
    fn labels_on_everything_and_selectors_match_the_pods() {
        let t = target("small", 2);
        let cluster = names::cluster_labels(&t);
        let b = base(&t, &secrets(), true, &SnapshotStorage::default());

        let ns_labels = b.namespace.metadata.labels.as_ref().expect("labels");
        assert_eq!(ns_labels[labels::TENANT], "acme");
        assert_eq!(ns_labels[labels::MANAGED_BY], "esaas");
        for (what, meta) in [
            ("secret", &b.secret.metadata),
            ("config map", &b.config_map.metadata),
            ("transport", &b.transport_service.metadata),
            ("http", &b.http_service.metadata),
            ("pdb", &b.pdb.metadata),
            ("network policy", &b.network_policy.metadata),
        ] {
            assert!(has_labels(meta.labels.as_ref(), &cluster), "{what}");
            assert_eq!(meta.namespace.as_deref(), Some("esaas-acme"), "{what}");
        }

        for node_set in ["master", "data"] {
            let sts = stateful_set(&t, &catalog(), &SnapshotStorage::default(), node_set, 1)
                .expect("renders");
            let own = names::node_set_labels(&t, node_set);
            let pod_labels = sts
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref())
                .expect("pod labels");
            assert_eq!(pod_labels, &own);
            assert_eq!(sts.metadata.labels.as_ref(), Some(&own));
            assert_eq!(sts.spec.selector.match_labels.as_ref(), Some(&own));
            for claim in sts.spec.volume_claim_templates.iter().flatten() {
                assert_eq!(claim.metadata.labels.as_ref(), Some(&own));
            }
            // Every selector of the cluster selects these pods.
            let selectors = [
                b.transport_service
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone()),
                b.http_service
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone()),
                b.pdb
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| s.match_labels.clone()),
                b.network_policy
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_selector.as_ref())
                    .and_then(|s| s.match_labels.clone()),
            ];
            for s in selectors {
                assert!(has_labels(Some(pod_labels), &s.expect("selector")));
            }
        }
    }

    #[test]
    fn pods_meet_the_restricted_pod_security_standard() {
        let t = target("small", 1);
        let labels = namespace(&t).metadata.labels.expect("labels");
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        let sts =
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 2).expect("renders");
        let pod = pod_spec(&sts);
        assert!(
            pod.init_containers.is_none(),
            "vm.max_map_count is the node's"
        );
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        for c in &pod.containers {
            let sc = c.security_context.as_ref().expect("security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_ne!(sc.privileged, Some(true), "{}", c.name);
            assert_ne!(sc.run_as_user.or(psc.run_as_user), Some(0), "{}", c.name);
            let caps = sc.capabilities.as_ref().expect("capabilities");
            assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
            assert!(caps.add.is_none(), "{}", c.name);
        }
    }

    #[test]
    fn the_network_policy_limits_egress_and_admits_only_the_workers() {
        let t = target("small", 1);
        let spec = network_policy(&t).spec.expect("spec");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string(), "Egress".to_string()][..])
        );
        let egress = spec.egress.expect("egress");
        let ports: Vec<Vec<i32>> = egress
            .iter()
            .map(|r| {
                r.ports
                    .iter()
                    .flatten()
                    .filter_map(|p| match p.port {
                        Some(IntOrString::Int(n)) => Some(n),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        assert_eq!(ports, [vec![53, 53], vec![TRANSPORT_PORT], vec![443]]);
        let blocks: Vec<&IPBlock> = egress[2]
            .to
            .iter()
            .flatten()
            .filter_map(|p| p.ip_block.as_ref())
            .collect();
        assert_eq!(blocks.len(), 2);
        assert!(blocks.iter().any(|b| b.cidr == "0.0.0.0/0"
            && b.except.as_deref() == Some(&["169.254.0.0/16".to_string()][..])));
        let platform = &spec.ingress.expect("ingress")[1]
            .from
            .clone()
            .expect("from")[2];
        assert_eq!(
            platform
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .map(|l| l["app.kubernetes.io/name"].as_str()),
            Some("esaas-worker"),
            "of the platform's namespace, only the workers"
        );
    }

    #[test]
    fn initial_masters_only_on_bootstrap() {
        let t = target("small", 1);
        let h = esaas_core::names::uid_hash(&t.uid, 6);
        let masters: Vec<String> = (0..3).map(|i| format!("logs-master-{h}-{i}")).collect();
        assert_eq!(initial_master_nodes(&t), masters);
        let with = config_map(&t, true, &SnapshotStorage::default());
        let without = config_map_without_bootstrap(&t, &SnapshotStorage::default());
        let data = |cm: &ConfigMap, key: &str| cm.data.as_ref().expect("data")[key].clone();
        assert!(data(&with, "master.yml").contains(&format!(
            "cluster.initial_master_nodes: [\"{}\", \"{}\", \"{}\"]",
            masters[0], masters[1], masters[2]
        )));
        assert!(data(&with, "data.yml").contains("cluster.initial_master_nodes"));
        assert!(!data(&without, "master.yml").contains("initial_master_nodes"));
        assert!(data(&with, "master.yml").contains(r#"node.roles: ["master"]"#));
        assert!(data(&with, "data.yml").contains(r#"node.roles: ["data", "ingest"]"#));
        assert!(data(&with, "data.yml").contains(r#"discovery.seed_hosts: ["logs-es-transport"]"#));
        // The pods' config hash ignores the bootstrap list: forming the
        // cluster does not roll the pods.
        let sts = stateful_set(&t, &catalog(), &SnapshotStorage::default(), "master", 3)
            .expect("renders");
        let hash = &sts
            .spec
            .template
            .metadata
            .as_ref()
            .expect("meta")
            .annotations
            .as_ref()
            .expect("annotations")[CONFIG_HASH_ANNOTATION];
        assert_eq!(
            hash,
            &hex::encode(Sha256::digest(data(&without, "master.yml").as_bytes()))
        );
    }

    #[test]
    fn the_template_does_not_depend_on_replicas() {
        let t = target("small", 1);
        let a =
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 1).expect("renders");
        let b =
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 5).expect("renders");
        assert_eq!(a.spec.template, b.spec.template);
        assert_eq!(a.spec.volume_claim_templates, b.spec.volume_claim_templates);
        assert_eq!(b.spec.replicas, Some(5));
    }

    #[test]
    fn partition_and_errors() {
        let t = target("small", 1);
        let mut sts =
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 3).expect("renders");
        set_partition(&mut sts, 2);
        let strategy = sts.spec.update_strategy.as_ref().expect("strategy");
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(
            strategy.rolling_update.as_ref().and_then(|r| r.partition),
            Some(2)
        );

        assert_eq!(
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "nope", 1),
            Err(RenderError::UnknownNodeSet("nope".into()))
        );
        let t = target("huge", 1);
        assert!(matches!(
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 1),
            Err(RenderError::UnknownSizeClass { .. })
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output_and_the_file_system() {
        let t = target("small", 1);
        let s = secrets();
        assert!(!format!("{s:?}").contains("pw"));
        let b = base(&t, &s, true, &SnapshotStorage::default());
        assert!(
            !format!("{b:?}").contains("112, 119"),
            "password bytes in Debug"
        );
        let secret = secret(&t, &s);
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data[secret_keys::PASSWORD].0, b"pw");
        assert_eq!(
            data.len(),
            5,
            "password, CA, CA key, node certificate and key"
        );
        assert!(
            !format!("{s:?}").contains("ca key"),
            "the CA key is not in Debug"
        );

        let sts =
            stateful_set(&t, &catalog(), &SnapshotStorage::default(), "data", 1).expect("renders");
        let certs = pod_spec(&sts)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "certs")
            .and_then(|v| v.secret.as_ref())
            .expect("certs volume");
        let keys: Vec<&str> = certs
            .items
            .iter()
            .flatten()
            .map(|i| i.key.as_str())
            .collect();
        assert!(!keys.contains(&secret_keys::PASSWORD));
        assert!(
            !keys.contains(&secret_keys::CA_KEY),
            "the CA key is never mounted"
        );
        let pw = env_value(main_container(&sts), "ELASTIC_PASSWORD").expect("password env");
        assert!(pw.value.is_none());
    }

    #[test]
    fn the_pods_reach_the_snapshot_bucket_through_irsa_and_the_configured_endpoint() {
        let t = target("small", 1);
        let role = "arn:aws:iam::123456789012:role/esaas-snapshots";
        let storage = |bucket: &str, role_arn: &str, s3_endpoint: &str| SnapshotStorage {
            bucket: bucket.into(),
            role_arn: role_arn.into(),
            s3_endpoint: s3_endpoint.into(),
        };
        // (case, storage, role annotation, endpoint line)
        let cases = [
            ("off", storage("", "", ""), None, None),
            ("production", storage("snaps", role, ""), Some(role), None),
            (
                "local",
                storage("snaps", "", "http://127.0.0.1:5000"),
                None,
                Some(r#"s3.client.default.endpoint: "http://127.0.0.1:5000""#),
            ),
        ];
        for (case, st, annotation, endpoint) in cases {
            let sa = service_account(&t, &st);
            let got = sa
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(IRSA_ROLE_ANNOTATION))
                .map(String::as_str);
            assert_eq!(got, annotation, "{case}");
            assert_eq!(sa.automount_service_account_token, Some(false), "{case}");
            let sts = stateful_set(&t, &catalog(), &st, "data", 1).expect("renders");
            let pod = sts.spec.template.spec.as_ref().expect("pod spec");
            assert_eq!(
                pod.service_account_name.as_deref(),
                sa.metadata.name.as_deref(),
                "{case}"
            );
            let yml = elasticsearch_yml(&t, &t.spec.node_sets[0], false, &st);
            match endpoint {
                Some(line) => {
                    assert!(yml.contains(line), "{case}: {yml}");
                    assert!(
                        yml.contains(r#"s3.client.default.protocol: "http""#),
                        "{case}"
                    );
                }
                None => assert!(!yml.contains("s3.client"), "{case}: {yml}"),
            }
        }
    }
}
