//! `Workloads` with kube-rs: every object is applied with server-side apply
//! under one field manager (`esaas`), so a repeated step is a no-op and
//! fields others own are left alone.
//!
//! The Secret's password and TLS material are generated once, on the first
//! apply, and read back on every later one: they never change by accident.
//! A StatefulSet counts as ready when the controller has seen its latest
//! spec and the ready pods run the current revision; it is up to date when
//! the hash of its rendered pod template (stored as an annotation on it and
//! on the template, so every pod carries it too) matches what the spec
//! renders now. Its claim template is compared with the spec field by field
//! (name, size, attributes class): a claim template cannot change on a
//! StatefulSet, so volumes grow by patching each claim, and the StatefulSet is
//! then deleted with its pods orphaned and applied again; the new one adopts
//! the pods, whose template has not changed, without restarting them.

use std::collections::BTreeMap;

use esaas_core::backend::{StepError, StepResult, Target, Workloads, WorkloadsObs};
use esaas_core::catalog::Catalog;
use esaas_core::plan::{VolumeObs, WorkloadObs};
use esaas_core::spec::VolumeRetention;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttributesClass};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::names::{self, secret_keys};
use crate::render::{self, Secrets};
use crate::snapshot_storage::SnapshotStorage;
use crate::tls::{self, TlsMaterial};

/// Annotation with the hash of the rendered pod template, on the
/// StatefulSet and on its pod template (so on every pod).
pub const TEMPLATE_HASH: &str = "esaas.io/template-hash";
/// Annotation with the Elasticsearch version the StatefulSet runs.
pub const VERSION: &str = "esaas.io/version";
/// Annotation with the Elasticsearch roles of the StatefulSet's nodes
/// (comma-separated), so a node set that left the spec is still known to be
/// master-eligible when its pods leave.
pub const ROLES: &str = "esaas.io/roles";

/// Kubernetes objects of Elasticsearch clusters.
#[derive(Clone)]
pub struct KubeWorkloads {
    client: kube::Client,
    catalog: Catalog,
    /// How long a node certificate it issues is valid.
    cert_validity: time::Duration,
    /// The pods' IRSA role and S3 endpoint for snapshots.
    storage: SnapshotStorage,
}

impl std::fmt::Debug for KubeWorkloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeWorkloads").finish_non_exhaustive()
    }
}

/// Maps a kube error: 5xx, 429, 409 and transport trouble are retryable;
/// 4xx (forbidden, invalid) are permanent with the API server's message.
pub fn kube_error(what: &str, e: kube::Error) -> StepError {
    match &e {
        kube::Error::Api(s) => {
            let text = format!("{what}: {} {}: {}", s.code, s.reason, s.message);
            match s.code {
                409 | 429 => StepError::retryable("KUBE_CONFLICT", text),
                c if c >= 500 => StepError::retryable("KUBE_SERVER_ERROR", text),
                401 | 403 => StepError::permanent("KUBE_FORBIDDEN", text),
                _ => StepError::permanent("KUBE_INVALID", text),
            }
        }
        // The cause says what went wrong on the way ("operation timed out",
        // "connection refused"); kube's own text ("client error (SendRequest)") does not.
        _ => StepError::retryable(
            "KUBE_UNREACHABLE",
            format!("{what}: {}", crate::es::chain(&e)),
        ),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn hash<T: Serialize>(v: &T) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..12])
}

/// The hash that says whether a StatefulSet's pods run what the spec asks:
/// the rendered pod template, before [`stamp`] adds the hash to it.
fn template_hash(sts: &StatefulSet) -> String {
    hash(&sts.spec.template)
}

/// Adds the template hash (to the StatefulSet and its pod template), the
/// version and the roles of `node_set` to a rendered StatefulSet; returns the hash.
fn stamp(sts: &mut StatefulSet, t: &Target, node_set: &str) -> String {
    let version = t.spec.version.as_str();
    let roles: Vec<&str> = t
        .spec
        .node_sets
        .iter()
        .find(|n| n.name == node_set)
        .map(|n| n.roles.iter().map(|r| r.as_str()).collect())
        .unwrap_or_default();
    let h = template_hash(sts);
    sts.spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH.into(), h.clone());
    let annotations = sts.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(TEMPLATE_HASH.into(), h.clone());
    annotations.insert(VERSION.into(), version.to_string());
    annotations.insert(ROLES.into(), roles.join(","));
    h
}

/// Whether the claim template of `sts` is the one `t` renders for `node_set`:
/// the uid's claim name, the spec's size and attributes class.
fn claims_match(sts: &StatefulSet, t: &Target, node_set: &str) -> bool {
    let Some(ns) = t.spec.node_sets.iter().find(|n| n.name == node_set) else {
        return true;
    };
    let Some([claim]) = sts.spec.volume_claim_templates.as_deref() else {
        return false;
    };
    let spec = claim.spec.as_ref();
    let size = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(gib);
    claim.metadata.name.as_deref() == Some(names::data_claim(t).as_str())
        && size == Some(ns.storage_gib)
        && spec.and_then(|s| s.volume_attributes_class_name.as_deref())
            == Some(ns.attributes_class().as_str())
}

/// A storage quantity in whole GiB (rounded down), from the forms the API
/// server and the CSI driver write: `30Gi`, `1Ti`, `512Mi`, or bytes.
fn gib(q: &Quantity) -> Option<i32> {
    let s = q.0.trim();
    let (digits, unit): (&str, f64) = if let Some(d) = s.strip_suffix("Ti") {
        (d, 1024.0)
    } else if let Some(d) = s.strip_suffix("Gi") {
        (d, 1.0)
    } else if let Some(d) = s.strip_suffix("Mi") {
        (d, 1.0 / 1024.0)
    } else if let Some(d) = s.strip_suffix("Ki") {
        (d, 1.0 / (1024.0 * 1024.0))
    } else if let Some(d) = s.strip_suffix('T') {
        (d, 1e12 / f64::from(1u32 << 30))
    } else if let Some(d) = s.strip_suffix('G') {
        (d, 1e9 / f64::from(1u32 << 30))
    } else {
        (s, 1.0 / f64::from(1u32 << 30))
    };
    let n: f64 = digits.parse().ok()?;
    let g = (n * unit + 1e-9).floor();
    (0.0..=f64::from(i32::MAX)).contains(&g).then_some(g as i32)
}

/// The volumes of `node_set` among `pvcs` (this cluster's claims), by the
/// ordinal at the end of their names (`{claim}-{statefulset}-{ordinal}`).
fn volumes_of(pvcs: &[PersistentVolumeClaim], t: &Target, node_set: &str) -> Vec<VolumeObs> {
    let prefix = format!(
        "{}-{}-",
        names::data_claim(t),
        names::stateful_set(t, node_set)
    );
    let mut out: Vec<VolumeObs> = pvcs
        .iter()
        .filter_map(|pvc| {
            let ordinal = pvc
                .metadata
                .name
                .as_deref()?
                .strip_prefix(&prefix)?
                .parse()
                .ok()?;
            let spec = pvc.spec.as_ref();
            let status = pvc.status.as_ref();
            Some(VolumeObs {
                ordinal,
                requested_gib: spec
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .and_then(gib)
                    .unwrap_or(0),
                capacity_gib: status
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage"))
                    .and_then(gib)
                    .unwrap_or(0),
                attributes_class: spec.and_then(|s| s.volume_attributes_class_name.clone()),
                current_attributes_class: status
                    .and_then(|s| s.current_volume_attributes_class_name.clone()),
            })
        })
        .collect();
    out.sort_by_key(|v| v.ordinal);
    out
}

fn secret_text(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// The cluster's password and TLS material from its Secret, if complete.
pub fn secrets_of(s: &Secret) -> Option<Secrets> {
    Some(Secrets {
        password: secret_text(s, secret_keys::PASSWORD)?,
        tls: TlsMaterial {
            ca_cert_pem: secret_text(s, secret_keys::CA_CERT)?,
            cert_pem: secret_text(s, secret_keys::TLS_CERT)?,
            key_pem: secret_text(s, secret_keys::TLS_KEY)?,
            ca_key_pem: secret_text(s, secret_keys::CA_KEY).unwrap_or_default(),
        },
        rotated_by: s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::ROTATED_BY_ANNOTATION))
            .cloned(),
    })
}

impl KubeWorkloads {
    /// Uses `client` (from a kubeconfig, or in-cluster) and the size classes of `catalog`.
    pub fn new(client: kube::Client, catalog: Catalog) -> Self {
        Self {
            client,
            catalog,
            cert_validity: tls::NODE_CERT_VALIDITY,
            storage: SnapshotStorage::default(),
        }
    }

    /// Renders the pods with the snapshot bucket's access (`[snapshots]`).
    pub fn with_snapshot_storage(mut self, storage: SnapshotStorage) -> Self {
        self.storage = storage;
        self
    }

    /// Issues node certificates valid `validity` (default two years).
    pub fn with_certificate_validity(mut self, validity: std::time::Duration) -> Self {
        self.cert_validity = time::Duration::try_from(validity).unwrap_or(tls::NODE_CERT_VALIDITY);
        self
    }

    fn ns_api<K>(&self, t: &Target) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &names::namespace(t))
    }

    #[tracing::instrument(name = "kube", skip_all, fields(otel.name = %format_args!("kube apply {name}"), otel.kind = "client", verb = "apply", url.path = %api.resource_url(), name))]
    async fn apply<K>(&self, api: &Api<K>, name: &str, obj: &K) -> StepResult<()>
    where
        K: kube::Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        api.patch(
            name,
            &PatchParams::apply(names::FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map(|_| ())
        .map_err(|e| kube_error(&format!("apply {name}"), e))
    }

    #[tracing::instrument(name = "kube", skip_all, fields(otel.name = %format_args!("kube get {name}"), otel.kind = "client", verb = "get", url.path = %api.resource_url(), name))]
    async fn get_opt<K>(&self, api: &Api<K>, name: &str) -> StepResult<Option<K>>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        match api.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(kube_error(&format!("get {name}"), e)),
        }
    }

    #[tracing::instrument(name = "kube", skip_all, fields(otel.name = %format_args!("kube delete {name}"), otel.kind = "client", verb = "delete", url.path = %api.resource_url(), name))]
    async fn delete_opt<K>(&self, api: &Api<K>, name: &str) -> StepResult<()>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(kube_error(&format!("delete {name}"), e)),
        }
    }

    /// The password and TLS material of the cluster: read back when they
    /// exist, generated once when they do not.
    async fn secrets(&self, t: &Target) -> StepResult<Secrets> {
        let api: Api<Secret> = self.ns_api(t);
        if let Some(s) = self.get_opt(&api, &names::secret(t)).await?
            && let Some(existing) = secrets_of(&s)
        {
            return Ok(existing);
        }
        let tls = tls::generate_valid_for(t, self.cert_validity)
            .map_err(|e| StepError::permanent("TLS_GENERATION", e.to_string()))?;
        Ok(Secrets {
            password: tls::random_password(),
            tls,
            rotated_by: None,
        })
    }

    /// Applies the VolumeAttributesClass of `node_set`'s gp3 profile
    /// (cluster-wide, shared by every cluster with that profile; its
    /// parameters never change, so applying it again is a no-op).
    async fn ensure_attributes_class(&self, t: &Target, node_set: &str) -> StepResult<()> {
        let Some(ns) = t.spec.node_sets.iter().find(|n| n.name == node_set) else {
            return Ok(());
        };
        let classes: Api<VolumeAttributesClass> = Api::all(self.client.clone());
        let vac = render::volume_attributes_class(ns);
        self.apply(&classes, &ns.attributes_class(), &vac).await
    }

    /// Makes the claims of pods `0..replicas` of `node_set` that do not exist
    /// yet, each in its pod's zone (with that zone's StorageClass), before
    /// the StatefulSet would make them zone-free: a pod's zone is settled
    /// before its volume is, and the node group of that zone has its node.
    /// A claim that exists is left as it is (it may have grown since).
    async fn ensure_claims(
        &self,
        t: &Target,
        sts: &StatefulSet,
        node_set: &str,
        replicas: i32,
    ) -> StepResult<()> {
        let zones = esaas_core::placement::cluster_zones(&t.spec, &self.catalog);
        let classes: Api<StorageClass> = Api::all(self.client.clone());
        for zone in &zones {
            let sc = render::zone_storage_class(zone);
            self.apply(&classes, &render::zone_storage_class_name(zone), &sc)
                .await?;
        }
        let have: std::collections::BTreeSet<i32> = volumes_of(&self.claims(t).await?, t, node_set)
            .into_iter()
            .map(|v| v.ordinal)
            .collect();
        let api: Api<PersistentVolumeClaim> = self.ns_api(t);
        let pp = PostParams {
            field_manager: Some(names::FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        for ordinal in (0..replicas).filter(|o| !have.contains(o)) {
            let Some(zone) = esaas_core::placement::zone_of(&zones, ordinal) else {
                return Err(StepError::permanent(
                    "NO_ZONES",
                    "the cluster has no zones: catalog.zones is empty",
                ));
            };
            let Some(claim) = render::data_volume(t, sts, node_set, ordinal, zone) else {
                continue;
            };
            let name = names::data_volume(t, node_set, ordinal);
            match api.create(&pp, &claim).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(kube_error(&format!("create {name}"), e)),
            }
        }
        Ok(())
    }

    /// This cluster's volume claims (by its uid, not its name).
    async fn claims(&self, t: &Target) -> StepResult<Vec<PersistentVolumeClaim>> {
        let api: Api<PersistentVolumeClaim> = self.ns_api(t);
        let lp = ListParams::default().labels(&names::uid_selector(t));
        match api.list(&lp).await {
            Ok(list) => Ok(list.items),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(kube_error("list volume claims", e)),
        }
    }

    /// The pods of `node_set` of this cluster, with or without their StatefulSet.
    async fn pods(&self, t: &Target, node_set: &str) -> StepResult<Vec<Pod>> {
        let api: Api<Pod> = self.ns_api(t);
        let lp = ListParams::default().labels(&format!(
            "{},{}={node_set}",
            names::uid_selector(t),
            names::labels::NODE_SET
        ));
        match api.list(&lp).await {
            Ok(list) => Ok(list.items),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(kube_error("list pods", e)),
        }
    }

    async fn stateful_sets(&self, t: &Target) -> StepResult<Vec<StatefulSet>> {
        let api: Api<StatefulSet> = self.ns_api(t);
        let lp = ListParams::default().labels(&names::cluster_selector(t));
        match api.list(&lp).await {
            Ok(list) => Ok(list.items),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(kube_error("list statefulsets", e)),
        }
    }
}

fn partition_of(sts: &StatefulSet) -> i32 {
    sts.spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

fn observe_one(
    sts: &StatefulSet,
    expected_hash: Option<&str>,
    claims_up_to_date: bool,
    volumes: Vec<VolumeObs>,
) -> WorkloadObs {
    let replicas = sts.spec.replicas.unwrap_or(1);
    let annotations = sts.metadata.annotations.clone().unwrap_or_default();
    let generation = sts.metadata.generation.unwrap_or(0);
    let partition = partition_of(sts);
    let (ready, updated) = match &sts.status {
        Some(st) if st.observed_generation.unwrap_or(0) >= generation => {
            let same_revision =
                st.current_revision.is_some() && st.current_revision == st.update_revision;
            let ready = st.ready_replicas.unwrap_or(0);
            let updated = if same_revision {
                replicas
            } else {
                st.updated_replicas.unwrap_or(0)
            };
            // While a rollout is held, ready means ready, whatever the revision;
            // otherwise only pods at the current revision count.
            let ready = if same_revision || partition > 0 {
                ready
            } else {
                ready.min(updated)
            };
            (ready, updated)
        }
        _ => (0, 0),
    };
    WorkloadObs {
        replicas,
        ready_replicas: ready,
        version: annotations.get(VERSION).cloned().unwrap_or_default(),
        up_to_date: expected_hash
            .is_some_and(|h| annotations.get(TEMPLATE_HASH).map(String::as_str) == Some(h)),
        updated_replicas: updated,
        partition,
        claims_up_to_date,
        volumes,
        master_eligible: annotations
            .get(ROLES)
            .is_some_and(|r| r.split(',').any(|r| r == "master")),
    }
}

impl Workloads for KubeWorkloads {
    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid))]
    async fn observe(&self, t: &Target) -> StepResult<WorkloadsObs> {
        let secret: Api<Secret> = self.ns_api(t);
        let service: Api<Service> = self.ns_api(t);
        let stored = self
            .get_opt(&secret, &names::secret(t))
            .await?
            .as_ref()
            .and_then(secrets_of);
        let base = stored.is_some()
            && self
                .get_opt(&service, &names::http_service(t))
                .await?
                .is_some();
        let mut workloads = BTreeMap::new();
        let stateful_sets = self.stateful_sets(t).await?;
        let pvcs = self.claims(t).await?;
        for sts in stateful_sets {
            let Some(node_set) = sts
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::labels::NODE_SET))
                .cloned()
            else {
                continue;
            };
            // Leftovers of an earlier cluster of this name are not ours.
            let uid = sts
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::labels::CLUSTER_UID));
            if uid.map(String::as_str) != Some(t.uid.to_string().as_str()) {
                continue;
            }
            let expected = render::stateful_set(t, &self.catalog, &self.storage, &node_set, 1)
                .ok()
                .map(|s| template_hash(&s));
            let claims = claims_match(&sts, t, &node_set);
            let volumes = volumes_of(&pvcs, t, &node_set);
            workloads.insert(
                node_set,
                observe_one(&sts, expected.as_deref(), claims, volumes),
            );
        }
        let namespace = names::namespace(t);
        Ok(WorkloadsObs {
            base_objects: base,
            claims: pvcs
                .iter()
                .filter_map(|p| p.metadata.name.as_ref())
                .map(|n| format!("{namespace}/{n}"))
                .collect(),
            workloads,
            endpoint: base.then(|| names::endpoint(t)),
            certificate_not_after: stored
                .as_ref()
                .and_then(|s| tls::not_after(&s.tls.cert_pem)),
            certificates_rotated_by: stored
                .as_ref()
                .and_then(|s| s.rotated_by.as_deref())
                .and_then(|s| uuid::Uuid::parse_str(s).ok()),
        })
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, operation = %t.operation))]
    async fn rotate_certificates(&self, t: &Target) -> StepResult<()> {
        let api: Api<Secret> = self.ns_api(t);
        let Some(stored) = self
            .get_opt(&api, &names::secret(t))
            .await?
            .as_ref()
            .and_then(secrets_of)
        else {
            return Err(StepError::retryable(
                "SECRET_MISSING",
                format!(
                    "the Secret {} is missing or incomplete: a repair recreates it",
                    names::secret(t)
                ),
            ));
        };
        let op = t.operation.to_string();
        if stored.rotated_by.as_deref() == Some(op.as_str()) {
            return Ok(());
        }
        let tls = tls::rotate(t, &stored.tls, self.cert_validity)
            .map_err(|e| StepError::permanent("TLS_GENERATION", e.to_string()))?;
        let secrets = Secrets {
            password: stored.password,
            tls,
            rotated_by: Some(op),
        };
        // Nodes reload the mounted files in place (Elasticsearch watches its
        // TLS files); the bundle trusts both CAs meanwhile.
        self.apply(&api, &names::secret(t), &render::secret(t, &secrets))
            .await?;
        tracing::info!("certificates rotated: a new CA, cross-signed by the previous one");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid))]
    async fn apply_base(&self, t: &Target) -> StepResult<()> {
        let secrets = self.secrets(t).await?;
        // The initial master list is for the first bootstrap only: once the
        // cluster has pods, a new config must not carry it.
        let bootstrap = self.stateful_sets(t).await?.is_empty();
        let objs = render::base(t, &secrets, bootstrap, &self.storage);
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        self.apply(&ns_api, &names::namespace(t), &objs.namespace)
            .await?;
        self.apply(&self.ns_api::<Secret>(t), &names::secret(t), &objs.secret)
            .await?;
        self.apply(
            &self.ns_api::<ServiceAccount>(t),
            &names::service_account(t),
            &objs.service_account,
        )
        .await?;
        self.apply(
            &self.ns_api::<ConfigMap>(t),
            &names::config_map(t),
            &objs.config_map,
        )
        .await?;
        self.apply(
            &self.ns_api::<Service>(t),
            &names::transport_service(t),
            &objs.transport_service,
        )
        .await?;
        self.apply(
            &self.ns_api::<Service>(t),
            &names::http_service(t),
            &objs.http_service,
        )
        .await?;
        self.apply(
            &self.ns_api::<PodDisruptionBudget>(t),
            &names::pdb(t),
            &objs.pdb,
        )
        .await?;
        self.apply(
            &self.ns_api::<NetworkPolicy>(t),
            &names::network_policy(t),
            &objs.network_policy,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, node_set, replicas))]
    async fn apply_node_set(&self, t: &Target, node_set: &str, replicas: i32) -> StepResult<()> {
        let mut sts = render::stateful_set(t, &self.catalog, &self.storage, node_set, replicas)
            .map_err(|e| StepError::permanent("RENDER", e.to_string()))?;
        let h = stamp(&mut sts, t, node_set);
        self.ensure_attributes_class(t, node_set).await?;
        self.ensure_claims(t, &sts, node_set, replicas).await?;
        // A new template on running pods is held: no pod moves until the
        // planner lets it, one at a time, with green in between (`roll`).
        let api: Api<StatefulSet> = self.ns_api(t);
        let name = names::stateful_set(t, node_set);
        let partition = match self.get_opt(&api, &name).await? {
            Some(existing) => {
                let old_hash = existing
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(TEMPLATE_HASH));
                if old_hash.map(String::as_str) == Some(h.as_str()) {
                    partition_of(&existing).min(replicas)
                } else {
                    existing.spec.replicas.unwrap_or(0).min(replicas)
                }
            }
            // Applied again around pods it orphaned (new claim templates):
            // they are adopted as they are, unless they run another template,
            // whose rollout is then held like any other.
            None => {
                let pods = self.pods(t, node_set).await?;
                let stale = pods.iter().any(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(TEMPLATE_HASH))
                        != Some(&h)
                });
                if stale { replicas } else { 0 }
            }
        };
        render::set_partition(&mut sts, partition);
        self.apply(&api, &name, &sts).await
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, node_set, partition))]
    async fn roll(&self, t: &Target, node_set: &str, partition: i32) -> StepResult<()> {
        let mut sts = render::stateful_set(t, &self.catalog, &self.storage, node_set, 1)
            .map_err(|e| StepError::permanent("RENDER", e.to_string()))?;
        let api: Api<StatefulSet> = self.ns_api(t);
        let name = names::stateful_set(t, node_set);
        let Some(existing) = self.get_opt(&api, &name).await? else {
            return Err(StepError::retryable(
                "KUBE_NOT_FOUND",
                format!("StatefulSet {name} is gone"),
            ));
        };
        // Re-apply what the StatefulSet holds, with only the partition lowered.
        sts.spec.replicas = existing.spec.replicas;
        render::set_partition(&mut sts, partition);
        stamp(&mut sts, t, node_set);
        self.apply(&api, &name, &sts).await
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, node_set, storage_gib, attributes_class))]
    async fn resize_volumes(
        &self,
        t: &Target,
        node_set: &str,
        storage_gib: i32,
        attributes_class: &str,
    ) -> StepResult<()> {
        self.ensure_attributes_class(t, node_set).await?;
        let sts_api: Api<StatefulSet> = self.ns_api(t);
        let replicas = self
            .get_opt(&sts_api, &names::stateful_set(t, node_set))
            .await?
            .and_then(|s| s.spec.replicas)
            .unwrap_or(0);
        let pvcs = self.claims(t).await?;
        let api: Api<PersistentVolumeClaim> = self.ns_api(t);
        for (pvc, v) in pvcs.iter().filter_map(|p| {
            let v = volumes_of(std::slice::from_ref(p), t, node_set).pop()?;
            Some((p, v))
        }) {
            if v.ordinal >= replicas {
                continue;
            }
            let gib = v.requested_gib.max(storage_gib);
            if gib == v.requested_gib && v.attributes_class.as_deref() == Some(attributes_class) {
                continue;
            }
            let name = pvc.metadata.name.clone().unwrap_or_default();
            // A merge patch of the two fields that may change on a bound claim.
            let patch = serde_json::json!({
                "spec": {
                    "resources": {"requests": {"storage": format!("{gib}Gi")}},
                    "volumeAttributesClassName": attributes_class,
                }
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| kube_error(&format!("resize {name}"), e))?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, node_set))]
    async fn orphan_node_set(&self, t: &Target, node_set: &str) -> StepResult<()> {
        let api: Api<StatefulSet> = self.ns_api(t);
        let name = names::stateful_set(t, node_set);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..DeleteParams::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(kube_error(&format!("delete {name} (orphan)"), e)),
        }
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid, node_set))]
    async fn delete_node_set(&self, t: &Target, node_set: &str) -> StepResult<()> {
        self.delete_opt(
            &self.ns_api::<StatefulSet>(t),
            &names::stateful_set(t, node_set),
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %t.uid))]
    async fn delete_base(&self, t: &Target, retention: VolumeRetention) -> StepResult<()> {
        self.delete_opt(&self.ns_api::<NetworkPolicy>(t), &names::network_policy(t))
            .await?;
        self.delete_opt(&self.ns_api::<PodDisruptionBudget>(t), &names::pdb(t))
            .await?;
        self.delete_opt(&self.ns_api::<Service>(t), &names::http_service(t))
            .await?;
        self.delete_opt(&self.ns_api::<Service>(t), &names::transport_service(t))
            .await?;
        self.delete_opt(&self.ns_api::<ConfigMap>(t), &names::config_map(t))
            .await?;
        self.delete_opt(
            &self.ns_api::<ServiceAccount>(t),
            &names::service_account(t),
        )
        .await?;
        if retention == VolumeRetention::Delete {
            // Exactly this cluster's volumes: by uid, not by name.
            let pvcs: Api<PersistentVolumeClaim> = self.ns_api(t);
            let lp = ListParams::default().labels(&names::uid_selector(t));
            match pvcs.delete_collection(&DeleteParams::default(), &lp).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(kube_error("delete volumes", e)),
            }
        }
        // The Secret goes last: while it exists, a retry can still reach the cluster.
        self.delete_opt(&self.ns_api::<Secret>(t), &names::secret(t))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esaas_core::names::{ClusterId, TenantId};
    use esaas_core::spec::ClusterSpec;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    fn target() -> Target {
        Target {
            uid: uuid::Uuid::nil(),
            tenant: TenantId::parse("t", "search").expect("tenant"),
            cluster_id: ClusterId::parse("c", "logs").expect("cluster"),
            spec: ClusterSpec::test().with_nodes(3),
            generation: 1,
            operation: uuid::Uuid::nil(),
        }
    }

    fn catalog() -> Catalog {
        Catalog {
            versions: vec!["8.15.3".into()],
            size_classes: vec![esaas_core::catalog::SizeClass {
                name: "small".into(),
                instance_type: "r6i.large".into(),
                cpu_millis: 1500,
                memory_mib: 12288,
            }],
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

    fn status(code: u16, reason: &str) -> Response<Body> {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "code": code, "message": reason,
        });
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response")
    }

    #[tokio::test]
    async fn a_node_set_is_server_side_applied_with_our_field_manager() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let w = KubeWorkloads::new(kube::Client::new(svc, "default"), catalog());
        let server = tokio::spawn(async move {
            // The gp3 profile's VolumeAttributesClass, cluster-wide.
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/apis/storage.k8s.io/v1/volumeattributesclasses/esaas-gp3-3000iops-125mibps"
            );
            let body = req.into_body().collect_bytes().await.expect("body");
            let vac: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(vac["driverName"], "ebs.csi.aws.com");
            assert_eq!(
                vac["parameters"],
                serde_json::json!({"type": "gp3", "iops": "3000", "throughput": "125"})
            );
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&vac).expect("json")))
                    .expect("response"),
            );
            // The StorageClass of the cluster's one zone, cluster-wide.
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/apis/storage.k8s.io/v1/storageclasses/esaas-gp3-us-east-1a"
            );
            let body = req.into_body().collect_bytes().await.expect("body");
            let sc: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(
                sc["allowedTopologies"][0]["matchLabelExpressions"][0],
                serde_json::json!({"key": "topology.ebs.csi.aws.com/zone", "values": ["us-east-1a"]})
            );
            assert_eq!(sc["allowVolumeExpansion"], true);
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&sc).expect("json")))
                    .expect("response"),
            );
            // The claims that exist (none), then one per pod, made in its zone.
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(
                req.uri().path(),
                "/api/v1/namespaces/esaas-search/persistentvolumeclaims"
            );
            send.send_response(
                Response::builder()
                    .body(Body::from(
                        br#"{"kind":"PersistentVolumeClaimList","apiVersion":"v1","metadata":{},"items":[]}"#
                            .to_vec(),
                    ))
                    .expect("response"),
            );
            for ordinal in 0..3 {
                let (req, send) = handle.next_request().await.expect("a request");
                assert_eq!(req.method(), Method::POST);
                assert_eq!(
                    req.uri().path(),
                    "/api/v1/namespaces/esaas-search/persistentvolumeclaims"
                );
                let body = req.into_body().collect_bytes().await.expect("body");
                let pvc: serde_json::Value = serde_json::from_slice(&body).expect("json");
                let name = pvc["metadata"]["name"].as_str().unwrap_or_default();
                assert_eq!(name, names::data_volume(&target(), "default", ordinal));
                assert_eq!(pvc["spec"]["storageClassName"], "esaas-gp3-us-east-1a");
                assert_eq!(
                    pvc["metadata"]["annotations"]["esaas.io/zone"],
                    "us-east-1a"
                );
                send.send_response(
                    Response::builder()
                        .status(201)
                        .body(Body::from(serde_json::to_vec(&pvc).expect("json")))
                        .expect("response"),
                );
            }
            // Then a look at what runs (nothing yet), and at orphaned pods (none:
            // no rollout to hold).
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), Method::GET);
            send.send_response(status(404, "NotFound"));
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.uri().path(), "/api/v1/namespaces/esaas-search/pods");
            send.send_response(
                Response::builder()
                    .body(Body::from(
                        br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}"#
                            .to_vec(),
                    ))
                    .expect("response"),
            );
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(
                req.uri().path(),
                format!(
                    "/apis/apps/v1/namespaces/esaas-search/statefulsets/{}",
                    names::stateful_set(&target(), "default")
                )
            );
            let query = req.uri().query().unwrap_or_default().to_string();
            assert!(query.contains("fieldManager=esaas"), "{query}");
            assert!(query.contains("force=true"), "{query}");
            assert_eq!(
                req.headers()["content-type"],
                "application/apply-patch+yaml"
            );
            let body = req.into_body().collect_bytes().await.expect("body");
            let sts: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(sts["spec"]["replicas"], 3);
            assert_eq!(
                sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
                0
            );
            let claim = &sts["spec"]["volumeClaimTemplates"][0];
            assert!(
                claim["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("data-") && n.len() == 17),
                "{claim}"
            );
            assert_eq!(
                claim["spec"]["volumeAttributesClassName"],
                "esaas-gp3-3000iops-125mibps"
            );
            assert_eq!(
                sts["spec"]["persistentVolumeClaimRetentionPolicy"],
                serde_json::json!({"whenScaled": "Delete", "whenDeleted": "Retain"})
            );
            assert_eq!(sts["metadata"]["annotations"][VERSION], "8.15.3");
            assert!(sts["metadata"]["annotations"][TEMPLATE_HASH].is_string());
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&sts).expect("json")))
                    .expect("response"),
            );
        });
        w.apply_node_set(&target(), "default", 3)
            .await
            .expect("apply");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_missing_namespace_observes_as_nothing_and_a_forbidden_call_is_permanent() {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let w = KubeWorkloads::new(kube::Client::new(svc, "default"), catalog());
        let server = tokio::spawn(async move {
            // the Secret (missing: no need to look further), then the StatefulSet list
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(
                (req.method(), req.uri().path()),
                (
                    &Method::GET,
                    "/api/v1/namespaces/esaas-search/secrets/logs-es"
                )
            );
            send.send_response(status(404, "NotFound"));
            let (req, send) = handle.next_request().await.expect("list");
            assert_eq!(
                req.uri().path(),
                "/apis/apps/v1/namespaces/esaas-search/statefulsets"
            );
            let query = req.uri().query().unwrap_or_default().to_string();
            assert!(
                query.contains(
                    "labelSelector=esaas.io%2Ftenant%3Dsearch%2Cesaas.io%2Fcluster%3Dlogs"
                ),
                "{query}"
            );
            send.send_response(status(404, "NotFound"));
            let (req, send) = handle.next_request().await.expect("claims");
            assert_eq!(
                req.uri().path(),
                "/api/v1/namespaces/esaas-search/persistentvolumeclaims"
            );
            send.send_response(status(404, "NotFound"));
            let (_, send) = handle.next_request().await.expect("delete");
            send.send_response(status(403, "Forbidden"));
        });
        let t = target();
        let seen = w.observe(&t).await.expect("observe");
        assert!(!seen.base_objects && seen.workloads.is_empty() && seen.endpoint.is_none());
        let err = w
            .delete_node_set(&t, "default")
            .await
            .expect_err("forbidden");
        assert!(!err.retryable);
        assert_eq!(err.reason, "KUBE_FORBIDDEN");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn deleting_with_retention_keeps_the_volumes() {
        for (retention, volume_call) in [
            (VolumeRetention::Retain, false),
            (VolumeRetention::Delete, true),
        ] {
            let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
            let w = KubeWorkloads::new(kube::Client::new(svc, "default"), catalog());
            let server = tokio::spawn(async move {
                let mut paths = Vec::new();
                while let Some((req, send)) = handle.next_request().await {
                    assert_eq!(req.method(), Method::DELETE);
                    paths.push(req.uri().path().to_string());
                    send.send_response(status(404, "NotFound"));
                }
                paths
            });
            w.delete_base(&target(), retention).await.expect("delete");
            drop(w);
            let paths = server.await.expect("server");
            let pvc = paths.iter().any(|p| p.ends_with("/persistentvolumeclaims"));
            assert_eq!(pvc, volume_call, "{retention:?}: {paths:?}");
            assert!(
                paths
                    .last()
                    .is_some_and(|p| p.ends_with("/secrets/logs-es")),
                "the Secret goes last"
            );
        }
    }
}
