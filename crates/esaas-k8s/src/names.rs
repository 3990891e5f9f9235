//! Names, labels and keys every part agrees on: the renderer, the workload
//! backend, the Elasticsearch client, the control plane's credential reader,
//! and the stand-ins in the tests.

use std::collections::BTreeMap;

use esaas_core::backend::Target;
use esaas_core::names::{STATEFUL_SET_HASH_LEN, uid_hash};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "esaas";

/// Keys of the cluster's Secret.
pub mod secret_keys {
    /// Password of the `elastic` user.
    pub const PASSWORD: &str = "elastic-password";
    /// PEM CA certificate that signs the node certificate.
    pub const CA_CERT: &str = "ca.crt";
    /// PEM node certificate (HTTP and transport), for every pod of the cluster.
    pub const TLS_CERT: &str = "tls.crt";
    /// PEM private key of the node certificate.
    pub const TLS_KEY: &str = "tls.key";
    /// PEM private key of the cluster's CA: signs the next certificates.
    /// Never mounted into a pod (the Secret volume lists its files).
    pub const CA_KEY: &str = "ca.key";
}

/// Annotation on the Secret: the operation that last rotated its certificates.
pub const ROTATED_BY_ANNOTATION: &str = "esaas.io/certificates-rotated-by";

/// Label keys.
pub mod labels {
    /// `app.kubernetes.io/name`: always `elasticsearch`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/managed-by`: always `esaas`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The tenant (the same key as the node label the pods select).
    pub const TENANT: &str = esaas_core::placement::TENANT_LABEL;
    /// The cluster id (the same key as the node label the pods select).
    pub const CLUSTER: &str = esaas_core::placement::CLUSTER_LABEL;
    /// The cluster uid (tells an old incarnation's leftovers from the current one's).
    pub const CLUSTER_UID: &str = "esaas.io/cluster-uid";
    /// The node set, on per-node-set objects and pods (the same key as the
    /// node label the pods select).
    pub const NODE_SET: &str = esaas_core::placement::NODE_SET_LABEL;
}

/// The tenant's namespace.
pub fn namespace(t: &Target) -> String {
    namespace_of(&t.tenant)
}

/// The namespace of `tenant`.
pub fn namespace_of(tenant: &esaas_core::names::TenantId) -> String {
    format!("esaas-{tenant}")
}

/// The Secret with the `elastic` password and the TLS material.
pub fn secret(t: &Target) -> String {
    secret_of(&t.cluster_id)
}

/// The Secret of `cluster`.
pub fn secret_of(cluster: &esaas_core::names::ClusterId) -> String {
    format!("{cluster}-es")
}

/// The ServiceAccount of the cluster's pods (IRSA for snapshots).
pub fn service_account(t: &Target) -> String {
    format!("{}-es", t.cluster_id)
}

/// The ConfigMap with `elasticsearch.yml` (one key per node set).
pub fn config_map(t: &Target) -> String {
    format!("{}-es-config", t.cluster_id)
}

/// The headless Service for transport (9300) and pod DNS.
pub fn transport_service(t: &Target) -> String {
    format!("{}-es-transport", t.cluster_id)
}

/// The client Service (9200).
pub fn http_service(t: &Target) -> String {
    format!("{}-es-http", t.cluster_id)
}

/// The PodDisruptionBudget.
pub fn pdb(t: &Target) -> String {
    format!("{}-es", t.cluster_id)
}

/// The NetworkPolicy.
pub fn network_policy(t: &Target) -> String {
    format!("{}-es", t.cluster_id)
}

/// The claim template of the data volumes: `data-` and 12 hex digits of the
/// cluster uid's SHA-256, so claims (`{this}-{statefulset}-{ordinal}`) of two
/// clusters that shared a name never collide.
pub fn data_claim(t: &Target) -> String {
    format!("data-{}", uid_hash(&t.uid, 12))
}

/// The claim of pod `ordinal`'s data volume: `{data_claim}-{statefulset}-{ordinal}`,
/// the name the StatefulSet gives it.
pub fn data_volume(t: &Target, node_set: &str, ordinal: i32) -> String {
    format!("{}-{}-{ordinal}", data_claim(t), stateful_set(t, node_set))
}

/// The label selector of exactly this cluster's objects (its uid): what a
/// delete of its volumes uses, so retained volumes of an earlier cluster of
/// the same name are left alone.
pub fn uid_selector(t: &Target) -> String {
    format!("{}={}", labels::CLUSTER_UID, t.uid)
}

/// The StatefulSet of a node set: `{cluster}-{node set}-{6 hex digits of the
/// uid's SHA-256}`. Without the hash, cluster `a` node set `b-c` and cluster
/// `a-b` node set `c` of one tenant would share a StatefulSet (and its pods);
/// with it, so do no two clusters, nor two incarnations of one cluster name.
/// At most 48 characters (`esaas_core::names`), within the 52 that leave room
/// for the pods' revision label.
pub fn stateful_set(t: &Target, node_set: &str) -> String {
    format!(
        "{}-{node_set}-{}",
        t.cluster_id,
        uid_hash(&t.uid, STATEFUL_SET_HASH_LEN)
    )
}

/// A pod, which is also its Elasticsearch node name.
pub fn pod(t: &Target, node_set: &str, ordinal: i32) -> String {
    format!("{}-{ordinal}", stateful_set(t, node_set))
}

/// `(node set, ordinal)` of the pod `name` of `t`'s cluster
/// (`{cluster}-{node set}-{uid hash}-{ordinal}`), whatever node sets the spec
/// names now; `None` for any other name.
pub fn parse_pod(t: &Target, name: &str) -> Option<(String, i32)> {
    let rest = name.strip_prefix(&format!("{}-", t.cluster_id))?;
    let (set_and_hash, ordinal) = rest.rsplit_once('-')?;
    let hash = format!("-{}", uid_hash(&t.uid, STATEFUL_SET_HASH_LEN));
    let node_set = set_and_hash.strip_suffix(&hash)?;
    if node_set.is_empty() || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ordinal: i32 = ordinal.parse().ok()?;
    (pod(t, node_set, ordinal) == name).then(|| (node_set.to_string(), ordinal))
}

/// DNS name of the client Service inside Kubernetes.
pub fn http_host(t: &Target) -> String {
    format!("{}.{}.svc", http_service(t), namespace(t))
}

/// The HTTPS endpoint tenants get.
pub fn endpoint(t: &Target) -> String {
    format!("https://{}:9200", http_host(t))
}

/// Labels of every object of the cluster.
pub fn cluster_labels(t: &Target) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), "elasticsearch".to_string()),
        (labels::MANAGED_BY.to_string(), "esaas".to_string()),
        (labels::TENANT.to_string(), t.tenant.to_string()),
        (labels::CLUSTER.to_string(), t.cluster_id.to_string()),
        (labels::CLUSTER_UID.to_string(), t.uid.to_string()),
    ])
}

/// Labels of the objects and pods of one node set.
pub fn node_set_labels(t: &Target, node_set: &str) -> BTreeMap<String, String> {
    let mut l = cluster_labels(t);
    l.insert(labels::NODE_SET.to_string(), node_set.to_string());
    l
}

/// The label selector that finds every object of the cluster (a delete uses it).
pub fn cluster_selector(t: &Target) -> String {
    format!(
        "{}={},{}={}",
        labels::TENANT,
        t.tenant,
        labels::CLUSTER,
        t.cluster_id
    )
}

#[cfg(test)]
mod tests {
    use esaas_core::names::{ClusterId, TenantId};
    use esaas_core::spec::ClusterSpec;
    use uuid::Uuid;

    use super::*;

    fn target(cluster: &str, uid: u128) -> Target {
        Target {
            uid: Uuid::from_u128(uid),
            tenant: TenantId::parse("t", "x").expect("tenant"),
            cluster_id: ClusterId::parse("c", cluster).expect("cluster"),
            spec: ClusterSpec::test(),
            generation: 1,
            operation: Uuid::from_u128(9),
        }
    }

    #[test]
    fn clusters_whose_ids_read_alike_get_their_own_pods() {
        let (a, ab) = (target("a", 1), target("a-b", 2));
        assert_ne!(stateful_set(&a, "b-c"), stateful_set(&ab, "c"));
        let pod_a = pod(&a, "b-c", 3);
        assert_eq!(parse_pod(&a, &pod_a), Some(("b-c".to_string(), 3)));
        assert_eq!(parse_pod(&ab, &pod_a), None, "not the other cluster's");
        assert_eq!(
            parse_pod(&target("a", 3), &pod_a),
            None,
            "nor a later one's"
        );
        assert!(stateful_set(&target(&"c".repeat(24), 1), &"n".repeat(16)).len() <= 52);
    }
}
