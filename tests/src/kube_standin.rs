//! A small Kubernetes API server stand-in for tests and the local setup: plain HTTP on
//! 127.0.0.1, no TLS, no authentication, and the JSON wire protocol of the real API server,
//! so the real kube-rs client (typed `Api<K>` with k8s-openapi types) talks to it unchanged.
//! Reach it with [`KubeStandin::client`] or with a kubeconfig ([`KubeStandin::write_kubeconfig`],
//! the `esaas-kube-standin` binary writes one).
//!
//! # Resources and routes
//! URL shapes are those of Kubernetes (`/api/v1/...` for the core group,
//! `/apis/{group}/{version}/...` for the others):
//!
//! | resource | group/version | scope | subresources |
//! | --- | --- | --- | --- |
//! | `namespaces` | `v1` | cluster | `status` |
//! | `secrets`, `configmaps` | `v1` | namespaced | |
//! | `services`, `persistentvolumeclaims` | `v1` | namespaced | `status` |
//! | `pods` (read and delete only; made by the StatefulSet controller) | `v1` | namespaced | `status` (read) |
//! | `statefulsets` | `apps/v1` | namespaced | `status`, `scale` |
//! | `poddisruptionbudgets` | `policy/v1` | namespaced | `status` |
//! | `networkpolicies` | `networking.k8s.io/v1` | namespaced | |
//!
//! - collection `.../{plural}`: `GET` list (or `?watch=true`), `POST` create, `DELETE`
//!   deletecollection (namespaced only); `/api/v1/{plural}` and `/apis/{g}/{v}/{plural}` list
//!   and watch across namespaces;
//! - object `.../{plural}/{name}`: `GET`, `PUT`, `PATCH`, `DELETE`;
//! - `.../{name}/status`: `GET`, `PUT`, `PATCH` (only `status` changes);
//!   `.../statefulsets/{name}/scale`: `GET`, `PUT`, `PATCH` (an `autoscaling/v1` `Scale`);
//! - discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`; `/healthz`,
//!   `/readyz`, `/livez`.
//!
//! Anything else is `404 NotFound` (a `Status`: "the server could not find the requested
//! resource"); a method a route does not take is `405 MethodNotAllowed`.
//!
//! # Semantics kept from the real server
//! - Errors are `Status` objects with the real codes, reasons, messages and details
//!   (`statefulsets.apps "x" not found`, `AlreadyExists`, `Conflict` "the object has been
//!   modified; …", `Invalid` with causes, `BadRequest`, `UnsupportedMediaType`), so kube-rs
//!   answers `kube::Error::Api(Status { code, reason, .. })`.
//! - Writes: `POST` (201, `generateName` honoured), `PUT`, and `PATCH` as server-side apply
//!   (`application/apply-patch+yaml`; JSON or YAML body; `fieldManager` required, else 422;
//!   `force`; creates with 201, updates with 200), JSON merge patch, strategic merge patch
//!   and JSON patch. `dryRun=All` validates and answers without storing.
//! - `metadata`: `uid` (kept for the object's life), `creationTimestamp`, `resourceVersion`
//!   (one global counter, moved by every write including the controllers'), `generation`
//!   (StatefulSets, PodDisruptionBudgets, NetworkPolicies: +1 when `spec` changes),
//!   `managedFields` (manager, `Apply` or `Update`, apiVersion, time, `FieldsV1`,
//!   subresource). A write that changes nothing is not a write: same object, same
//!   `resourceVersion`, as in Kubernetes.
//! - A `metadata.resourceVersion` (or `uid`) in a `PUT`, patch or apply body that does not
//!   match is `409 Conflict`; a create in a missing namespace is `404` for the namespace.
//! - The main endpoint of a kind with a `status` subresource ignores `status`; `/status`
//!   changes only `status`.
//! - Defaults and server-set fields: Namespace label `kubernetes.io/metadata.name`,
//!   `spec.finalizers`, `status.phase: Active`; Secret `type: Opaque`, `stringData` folded
//!   into `data`; Service `type`, an allocated `clusterIP`/`clusterIPs` (10.96.0.0/16),
//!   `sessionAffinity`, port `protocol`/`targetPort`; PVC `volumeMode`, `volumeName`, status
//!   `Bound` with `capacity` = requested storage; StatefulSet `replicas: 1`,
//!   `podManagementPolicy: OrderedReady`, `updateStrategy` RollingUpdate/partition 0,
//!   `revisionHistoryLimit: 10`, `persistentVolumeClaimRetentionPolicy` Retain/Retain;
//!   NetworkPolicy `policyTypes`.
//! - Validation (422 `Invalid`): names (RFC 1123 label for namespaces and services,
//!   subdomain otherwise), label keys and values, Secret/ConfigMap data keys and base64
//!   Secret data (400), StatefulSet selector required and matching the template labels,
//!   containers required, updates to StatefulSet spec fields other than `replicas`,
//!   `ordinals`, `template`, `updateStrategy`, `revisionHistoryLimit`,
//!   `persistentVolumeClaimRetentionPolicy` and `minReadySeconds` forbidden, PVC spec
//!   immutable except `resources.requests` (and storage may not shrink), immutable
//!   Secrets/ConfigMaps, Service `clusterIP` immutable, PDB `minAvailable` xor
//!   `maxUnavailable`.
//! - List: `labelSelector` (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`),
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`, and a few per kind), `limit` /
//!   `continue`; `{kind: XList, apiVersion, metadata: {resourceVersion}, items}` with items
//!   without `apiVersion`/`kind`, as the real server sends them. `Accept:
//!   ...;as=PartialObjectMetadata` answers metadata only.
//! - Watch: `?watch=true` streams `ADDED`/`MODIFIED`/`DELETED` events from a
//!   `resourceVersion` (synthetic `ADDED` for everything when it is unset or `0`), honours
//!   the selectors (an object leaving the selection is `DELETED` to that watcher), ends after
//!   `timeoutSeconds`; a `resourceVersion` older than the kept history (10 000 events) gets
//!   an `ERROR` event with `410 Expired`.
//! - Delete: `200` with a `Success` `Status` (`details` name/group/kind/uid), or the object
//!   for pods, services, PVCs and namespaces (a namespace as `Terminating`); preconditions
//!   (`uid`, `resourceVersion`) → 409; `propagationPolicy=Orphan` keeps a StatefulSet's pods.
//!   Deleting a namespace deletes everything in it.
//! - The StatefulSet controller, per pod: pods `{sts}-{ordinal}` (labels of the template
//!   plus `controller-revision-hash`, `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index`; owner reference; a volume per claim template) are
//!   created (all at once with `podManagementPolicy: Parallel`, one at a time once the
//!   previous one is ready with `OrderedReady`) and turn `Ready` [`KubeStandin::set_ready_after`]
//!   after their creation. Claims `{template}-{sts}-{ordinal}` are created with the
//!   template's labels plus the selector's `matchLabels` (as Kubernetes does), and kept when
//!   the StatefulSet shrinks or is deleted unless `persistentVolumeClaimRetentionPolicy`
//!   says `Delete`. Status: `observedGeneration`, `replicas` (pods that exist),
//!   `readyReplicas`, `availableReplicas`, `currentReplicas`, `updatedReplicas`,
//!   `currentRevision`, `updateRevision` (`{sts}-{hash of the pod template}`). A template
//!   change rolls the pods with `RollingUpdate` one at a time from the highest ordinal down
//!   to `partition`, each only when all pods are ready; `currentRevision` becomes the update
//!   revision when all pods are updated and ready. With `OnDelete` a deleted pod comes back
//!   at the update revision and, as in Kubernetes up to 1.35 (kubernetes#73492),
//!   `currentRevision` does not move: compare `updatedReplicas` with `replicas` instead.
//!   `/version` says v1.33.
//! - PodDisruptionBudget status (`expectedPods`, `currentHealthy`, `desiredHealthy`,
//!   `disruptionsAllowed`, condition `DisruptionAllowed`) from the ready pods it selects.
//!
//! # Simplifications
//! - Server-side apply tracks ownership per leaf field with lists atomic (a list is owned
//!   and replaced as a whole; Kubernetes merges lists with merge keys, such as containers by
//!   name, item by item). Re-applying removes the fields this manager applied before and no
//!   longer sends unless another manager owns them too; a field another manager owns with a
//!   different value is a 409 conflict (`Apply failed with N conflict(s): conflict with
//!   "m": .spec.replicas`) unless `force=true`, which takes it over. `PUT` and patches give
//!   the fields they change to their manager (operation `Update`, default manager the
//!   User-Agent up to `/`). Strategic merge patch is a JSON merge patch (lists replaced).
//! - No schema: unknown fields are kept, wrong types are not refused (`fieldValidation` is
//!   ignored); the product's manifests are checked against the real schemas elsewhere.
//! - Deletion is immediate: no finalizers, no grace periods, no `Terminating` phase that
//!   lasts (a deleted namespace and its contents are gone at once).
//! - Scale-down removes the surplus pods at once; a pod is `Running` from its creation and
//!   its containers never restart; no nodes, events, endpoints or ControllerRevisions.
//! - Apply on `/scale` is treated as a merge patch of `spec.replicas`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::ReceiverStream;

type Body = BoxBody<Bytes, Infallible>;
type FieldPath = Vec<String>;
type Query = HashMap<String, String>;
type Key = (usize, String, String);

/// One request as [`KubeStandin::requests`] reports it: method, path (without the query),
/// `Content-Type` and the `fieldManager` query parameter.
pub type RequestSummary = (String, String, Option<String>, Option<String>);

/// Events kept for watches that resume from a `resourceVersion`.
const EVENT_HISTORY: usize = 10_000;
/// Requests kept for [`KubeStandin::requests`].
const REQUEST_HISTORY: usize = 50_000;
/// How often the controllers run without a request.
const TICK: Duration = Duration::from_millis(10);
/// The Kubernetes version the stand-in claims to be.
const SERVER_MINOR: &str = "33";

// ---------------------------------------------------------------------------------------
// Resources

struct Resource {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Has a `status` subresource: the main endpoint ignores `status`, `/status` the rest.
    status: bool,
    /// `metadata.generation` moves with `spec`.
    generation: bool,
    /// Clients may create, update and patch it (pods are the StatefulSet controller's).
    writable: bool,
    short: &'static [&'static str],
}

const NS: usize = 0;
const SECRET: usize = 1;
const CONFIGMAP: usize = 2;
const SERVICE: usize = 3;
const PVC: usize = 4;
const POD: usize = 5;
const STS: usize = 6;
const PDB: usize = 7;
const NETPOL: usize = 8;

static RESOURCES: [Resource; 9] = [
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        status: true,
        generation: false,
        writable: true,
        short: &["ns"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        status: false,
        generation: false,
        writable: true,
        short: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        status: false,
        generation: false,
        writable: true,
        short: &["cm"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        status: true,
        generation: false,
        writable: true,
        short: &["svc"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        status: true,
        generation: false,
        writable: true,
        short: &["pvc"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        status: true,
        generation: false,
        writable: false,
        short: &["po"],
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
        status: true,
        generation: true,
        writable: true,
        short: &["sts"],
    },
    Resource {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        status: true,
        generation: true,
        writable: true,
        short: &["pdb"],
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        status: false,
        generation: true,
        writable: true,
        short: &["netpol"],
    },
];

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `statefulsets.apps`, `secrets`: how NotFound, AlreadyExists and Conflict name it.
    fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `StatefulSet.apps`, `Secret`: how Invalid names it.
    fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn verbs(&self) -> Vec<&'static str> {
        let mut v = vec!["delete"];
        if self.plural != "namespaces" {
            v.push("deletecollection");
        }
        v.extend(["get", "list", "watch"]);
        if self.writable {
            v.extend(["create", "patch", "update"]);
        }
        v.sort_unstable();
        v
    }
}

fn resource_by_name(name: &str) -> Option<usize> {
    let n = name.to_ascii_lowercase();
    RESOURCES.iter().position(|r| {
        r.kind.eq_ignore_ascii_case(&n)
            || r.plural == n
            || r.singular == n
            || r.short.contains(&n.as_str())
    })
}

// ---------------------------------------------------------------------------------------
// Errors

/// A failure, answered as a Kubernetes `Status`.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

/// One cause of an `Invalid` answer.
struct Cause {
    field: String,
    reason: &'static str,
    message: String,
}

impl Cause {
    fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Self {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {shown}: {detail}"),
        }
    }

    fn required(field: impl Into<String>, detail: &str) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueRequired",
            message: if detail.is_empty() {
                "Required value".into()
            } else {
                format!("Required value: {detail}")
            },
        }
    }

    fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
        }
    }

    fn unsupported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            field: field.into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    fn details(res: &Resource, name: &str) -> Value {
        let mut d = json!({ "name": name, "kind": res.plural });
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        d
    }

    fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.group_resource()),
        )
        .with_details(Self::details(res, name))
    }

    fn already_exists(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.group_resource()),
        )
        .with_details(Self::details(res, name))
    }

    fn conflict(res: &Resource, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.group_resource()
            ),
        )
        .with_details(Self::details(res, name))
    }

    fn stale(res: &Resource, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    fn invalid_named(
        group: &str,
        group_kind: &str,
        kind: &str,
        name: &str,
        causes: Vec<Cause>,
    ) -> Self {
        let parts: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let what = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
            .collect();
        let mut details = json!({ "name": name, "kind": kind, "causes": causes });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self::new(
            422,
            "Invalid",
            format!("{group_kind} \"{name}\" is invalid: {what}"),
        )
        .with_details(details)
    }

    fn invalid(res: &Resource, name: &str, causes: Vec<Cause>) -> Self {
        Self::invalid_named(res.group, &res.group_kind(), res.kind, name, causes)
    }

    fn patch_options(cause: Cause) -> Self {
        Self::invalid_named(
            "meta.k8s.io",
            "PatchOptions.meta.k8s.io",
            "PatchOptions",
            "",
            vec![cause],
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }
}

// ---------------------------------------------------------------------------------------
// The server

struct RequestRecord {
    method: String,
    path: String,
    content_type: Option<String>,
    field_manager: Option<String>,
}

struct Event {
    rv: u64,
    r: usize,
    ns: String,
    kind: &'static str,
    obj: Value,
    old: Option<Value>,
}

#[derive(Default)]
struct StsSim {
    pods: BTreeMap<i64, PodSim>,
}

struct PodSim {
    revision: String,
    since: Instant,
    ready: bool,
    ready_at: Option<String>,
    uid: String,
    created: String,
    ip: String,
}

struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    sims: BTreeMap<(String, String), StsSim>,
    ready_after: Duration,
    requests: VecDeque<RequestRecord>,
    events: VecDeque<Event>,
    /// The `resourceVersion` of the last event no longer kept.
    compacted_rv: u64,
    next_pod_ip: u32,
    next_service_ip: u32,
    server_address: String,
}

struct Shared {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, rv: u64) {
        self.changes.send_if_modified(|v| {
            if *v == rv {
                false
            } else {
                *v = rv;
                true
            }
        });
    }
}

/// A Kubernetes API server stand-in on 127.0.0.1 (see the module documentation). Dropping
/// it stops it.
pub struct KubeStandin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeStandin {
    /// Starts a stand-in on a free port of 127.0.0.1 whose StatefulSet pods turn ready
    /// `ready_after` after they are created.
    pub async fn start(ready_after: Duration) -> Self {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), ready_after)
            .await
            .expect("start the Kubernetes stand-in")
    }

    /// Starts a stand-in on `addr` (port 0 for a free one).
    pub async fn bind(addr: SocketAddr, ready_after: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(ready_after, addr.to_string())),
            changes,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        let ticker = tokio::spawn(ticker(shared.clone()));
        Ok(Self {
            addr,
            shared,
            tasks: vec![accept, ticker],
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs configuration for it (namespace `default`, no credentials).
    pub fn config(&self) -> kube::Config {
        let mut c = kube::Config::new(self.url().parse().expect("stand-in URL"));
        c.default_namespace = "default".into();
        c
    }

    /// A kube-rs client for it. Needs a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("kube client for the stand-in")
    }

    /// A kubeconfig pointing at it (see [`kubeconfig`]).
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    /// Writes [`Self::kubeconfig`] to `path` (atomically: written beside it, then renamed).
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kubeconfig".into());
        let tmp = path.with_file_name(format!(".{file}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, self.kubeconfig())?;
        std::fs::rename(&tmp, path)
    }

    /// Every stored object of `kind` (a kind, plural, singular or short name: `StatefulSet`,
    /// `statefulsets`, `sts`), with `apiVersion` and `kind`, ordered by namespace and name.
    /// Panics on an unknown kind.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        let r = resource_by_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        let mut s = self.shared.lock();
        s.tick();
        let rv = s.rv;
        let out = s.range(r).map(|(_, v)| v.clone()).collect();
        drop(s);
        self.shared.notify(rv);
        out
    }

    /// One stored object (`namespace` is ignored for cluster-scoped kinds).
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = resource_by_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        let ns = if RESOURCES[r].namespaced {
            namespace
        } else {
            ""
        };
        let mut s = self.shared.lock();
        s.tick();
        s.objects
            .get(&(r, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The requests so far (the last 50 000), in arrival order: (method, path without
    /// query, Content-Type, fieldManager).
    pub fn requests(&self) -> Vec<RequestSummary> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(|r| {
                (
                    r.method.clone(),
                    r.path.clone(),
                    r.content_type.clone(),
                    r.field_manager.clone(),
                )
            })
            .collect()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// How long a StatefulSet pod takes to turn ready from its creation (pods already ready
    /// stay ready).
    pub fn set_ready_after(&self, ready_after: Duration) {
        self.shared.lock().ready_after = ready_after;
    }

    /// The current `resourceVersion` of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for KubeStandin {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A kubeconfig for a server at `url` without credentials: cluster, user and context
/// `esaas-standin` (current), namespace `default`.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: esaas-standin
  cluster:
    server: {url}
users:
- name: esaas-standin
  user: {{}}
contexts:
- name: esaas-standin
  context:
    cluster: esaas-standin
    user: esaas-standin
    namespace: default
current-context: esaas-standin
preferences: {{}}
"
    )
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn ticker(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let rv = {
            let mut s = shared.lock();
            s.tick();
            s.rv
        };
        shared.notify(rv);
    }
}

/// What one request asks.
struct Req {
    method: Method,
    path: String,
    query: Query,
    content_type: Option<String>,
    accept: Option<String>,
    user_agent: Option<String>,
    body: Bytes,
}

impl Req {
    fn partial_metadata(&self) -> bool {
        self.accept
            .as_deref()
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    }

    fn media_type(&self) -> String {
        self.content_type
            .as_deref()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }
}

enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = ApiError::bad_request(format!("reading the request body: {e}"));
            return Ok(json_response(err.code, &err.status()));
        }
    };
    let req = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        content_type: header(header::CONTENT_TYPE),
        accept: header(header::ACCEPT),
        user_agent: header(header::USER_AGENT),
        query,
        body,
    };
    {
        let mut s = shared.lock();
        if s.requests.len() >= REQUEST_HISTORY {
            s.requests.pop_front();
        }
        s.requests.push_back(RequestRecord {
            method: req.method.to_string(),
            path: req.path.clone(),
            content_type: req.content_type.clone(),
            field_manager: req.query.get("fieldManager").cloned(),
        });
    }
    let watching = req.method == Method::GET
        && req
            .query
            .get("watch")
            .is_some_and(|w| w == "true" || w == "1");
    if watching {
        return Ok(match watch_response(&shared, &req) {
            Ok(resp) => resp,
            Err(e) => json_response(e.code, &e.status()),
        });
    }
    let (reply, rv) = {
        let mut s = shared.lock();
        s.tick();
        let reply = s.dispatch(&req);
        s.tick();
        (reply, s.rv)
    };
    shared.notify(rv);
    Ok(match reply {
        Reply::Json(code, v) => {
            tracing::debug!(method = %req.method, path = %req.path, code, "kube stand-in");
            json_response(code, &v)
        }
        Reply::Text(code, t) => Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(t.as_bytes())).boxed())
            .expect("response"),
    })
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .expect("response")
}

fn parse_query(q: &str) -> Query {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
        } else if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 2;
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Routing

enum Route {
    Text(&'static str),
    Json(Value),
    Collection {
        r: usize,
        ns: Option<String>,
    },
    Object {
        r: usize,
        ns: Option<String>,
        name: String,
        sub: Option<String>,
    },
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Ok(Route::Json(version_json())),
        ["healthz" | "readyz" | "livez"] => Ok(Route::Text("ok")),
        ["api"] => Ok(Route::Json(Value::Null)), // filled in with the server address
        ["apis"] => Ok(Route::Json(api_groups())),
        ["api", v, rest @ ..] => group_route("", v, rest),
        ["apis", g, v, rest @ ..] => group_route(g, v, rest),
        _ => Err(ApiError::no_route()),
    }
}

fn group_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    if !RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
    {
        return Err(ApiError::no_route());
    }
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let sub_ok = |r: usize, sub: &str| {
        (sub == "status" && RESOURCES[r].status) || (sub == "scale" && r == STS)
    };
    let object = |r: usize, ns: Option<&str>, name: &str, sub: Option<&str>| {
        if let Some(s) = sub
            && !sub_ok(r, s)
        {
            return Err(ApiError::no_route());
        }
        Ok(Route::Object {
            r,
            ns: ns.map(str::to_string),
            name: name.to_string(),
            sub: sub.map(str::to_string),
        })
    };
    match rest {
        [] => Ok(Route::Json(resource_list(group, version))),
        [p] => match find(p) {
            Some(r) => Ok(Route::Collection { r, ns: None }),
            None => Err(ApiError::no_route()),
        },
        ["namespaces", ns, p] if find(p).is_some_and(|r| RESOURCES[r].namespaced) => {
            Ok(Route::Collection {
                r: find(p).unwrap_or(NS),
                ns: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, p, name] => match find(p) {
            Some(r) if RESOURCES[r].namespaced => object(r, Some(ns), name, None),
            _ => Err(ApiError::no_route()),
        },
        ["namespaces", ns, p, name, sub] => match find(p) {
            Some(r) if RESOURCES[r].namespaced => object(r, Some(ns), name, Some(sub)),
            _ => Err(ApiError::no_route()),
        },
        [p, name] => match find(p) {
            Some(r) if !RESOURCES[r].namespaced => object(r, None, name, None),
            _ => Err(ApiError::no_route()),
        },
        [p, name, sub] => match find(p) {
            Some(r) if !RESOURCES[r].namespaced => object(r, None, name, Some(sub)),
            _ => Err(ApiError::no_route()),
        },
        _ => Err(ApiError::no_route()),
    }
}

fn version_json() -> Value {
    json!({
        "major": "1",
        "minor": SERVER_MINOR,
        "gitVersion": format!("v1.{SERVER_MINOR}.0"),
        "gitCommit": "esaas-kube-standin",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_groups() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if seen.insert(r.group) {
            let gv = json!({ "groupVersion": r.api_version(), "version": r.version });
            groups
                .push(json!({ "name": r.group, "versions": [gv.clone()], "preferredVersion": gv }));
        }
    }
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
            "shortNames": r.short,
        }));
        if r.status {
            let verbs: &[&str] = if r.writable {
                &["get", "patch", "update"]
            } else {
                &["get"]
            };
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
            }));
        }
        if r.plural == "statefulsets" {
            resources.push(json!({
                "name": "statefulsets/scale",
                "singularName": "",
                "namespaced": true,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources })
}

// ---------------------------------------------------------------------------------------
// Requests

#[derive(Clone, Copy, PartialEq, Debug)]
enum PatchType {
    Apply,
    Merge,
    Strategic,
    Json,
}

enum Op {
    Create(Value),
    Replace(Value),
    Patch(PatchType, Value),
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Scope {
    /// Every field (kinds without a status subresource).
    All,
    /// Everything but `status`.
    Main,
    /// Only `status`.
    Status,
}

struct WriteOpts {
    manager: String,
    force: bool,
    dry_run: bool,
}

#[derive(Default)]
struct DeleteOpts {
    propagation: Option<String>,
    uid: Option<String>,
    rv: Option<String>,
    dry_run: bool,
}

fn patch_type(req: &Req) -> Result<PatchType, ApiError> {
    match req.media_type().as_str() {
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/json-patch+json" => Ok(PatchType::Json),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json ({other:?} given)"
            ),
        )),
    }
}

fn parse_body(req: &Req, yaml: bool) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) => Ok(v),
        Err(e) if yaml => serde_yaml::from_slice::<Value>(&req.body).map_err(|y| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON ({e}) or YAML ({y})"
            ))
        }),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body of the request could not be decoded: {e}"
        ))),
    }
}

fn write_opts(req: &Req, apply: bool) -> Result<WriteOpts, ApiError> {
    let manager = req
        .query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned();
    let force = match req.query.get("force").map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "force: invalid boolean value {other:?}"
            )));
        }
    };
    if apply && manager.is_none() {
        return Err(ApiError::patch_options(Cause::required(
            "fieldManager",
            "is required for apply patch",
        )));
    }
    if !apply && force.is_some() && req.method == Method::PATCH {
        return Err(ApiError::patch_options(Cause::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )));
    }
    if let Some(m) = &manager
        && m.len() > 128
    {
        return Err(ApiError::patch_options(Cause {
            field: "fieldManager".into(),
            reason: "FieldValueTooLong",
            message: "Too long: may not be more than 128 bytes".into(),
        }));
    }
    let dry_run = match req.query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )));
        }
    };
    let manager = manager.unwrap_or_else(|| {
        req.user_agent
            .as_deref()
            .and_then(|ua| ua.split('/').next())
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
            .chars()
            .take(128)
            .collect()
    });
    Ok(WriteOpts {
        manager,
        force: force.unwrap_or(false),
        dry_run,
    })
}

fn delete_opts(req: &Req) -> Result<DeleteOpts, ApiError> {
    let mut d = DeleteOpts::default();
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        let body = parse_body(req, false)?;
        d.propagation = str_at(&body, &["propagationPolicy"]).map(str::to_string);
        if body.get("orphanDependents") == Some(&json!(true)) {
            d.propagation = Some("Orphan".into());
        }
        d.uid = str_at(&body, &["preconditions", "uid"]).map(str::to_string);
        d.rv = str_at(&body, &["preconditions", "resourceVersion"]).map(str::to_string);
        d.dry_run = body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    }
    if let Some(p) = req.query.get("propagationPolicy") {
        d.propagation = Some(p.clone());
    }
    if req.query.get("dryRun").is_some_and(|v| v == "All") {
        d.dry_run = true;
    }
    if let Some(p) = &d.propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid_named(
            "meta.k8s.io",
            "DeleteOptions.meta.k8s.io",
            "DeleteOptions",
            "",
            vec![Cause::unsupported(
                "propagationPolicy",
                p,
                &["Foreground", "Background", "Orphan", "nil"],
            )],
        ));
    }
    Ok(d)
}

impl State {
    fn new(ready_after: Duration, server_address: String) -> Self {
        let mut s = Self {
            rv: 0,
            objects: BTreeMap::new(),
            sims: BTreeMap::new(),
            ready_after,
            requests: VecDeque::new(),
            events: VecDeque::new(),
            compacted_rv: 0,
            next_pod_ip: 0,
            next_service_ip: 10,
            server_address,
        };
        let opts = WriteOpts {
            manager: "kube-apiserver".into(),
            force: false,
            dry_run: false,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body =
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
            let _ = s.write(NS, None, None, None, Op::Create(body), &opts);
        }
        s
    }

    fn range(&self, r: usize) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects
            .range((r, String::new(), String::new())..(r + 1, String::new(), String::new()))
    }

    fn names(&self, r: usize) -> Vec<(String, String)> {
        self.range(r)
            .map(|((_, ns, n), _)| (ns.clone(), n.clone()))
            .collect()
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&(NS, String::new(), ns.to_string()))
    }

    // -- storage ------------------------------------------------------------------------

    fn store(&mut self, r: usize, ns: &str, name: &str, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let old = self
            .objects
            .insert((r, ns.to_string(), name.to_string()), obj.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.emit(r, ns, kind, obj.clone(), old);
        obj
    }

    fn remove(&mut self, r: usize, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(r, ns.to_string(), name.to_string()))?;
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.emit(r, ns, "DELETED", obj.clone(), None);
        Some(obj)
    }

    fn emit(&mut self, r: usize, ns: &str, kind: &'static str, obj: Value, old: Option<Value>) {
        self.events.push_back(Event {
            rv: self.rv,
            r,
            ns: ns.to_string(),
            kind,
            obj,
            old,
        });
        while self.events.len() > EVENT_HISTORY {
            if let Some(e) = self.events.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
    }

    fn set_status(&mut self, r: usize, ns: &str, name: &str, status: Value) {
        let Some(obj) = self.objects.get(&(r, ns.to_string(), name.to_string())) else {
            return;
        };
        if obj.get("status") == Some(&status) {
            return;
        }
        let mut obj = obj.clone();
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), status);
        }
        self.store(r, ns, name, obj);
    }

    /// Creates an object on behalf of a controller (manager `kube-controller-manager`).
    fn controller_create(&mut self, r: usize, ns: &str, name: &str, mut obj: Value) {
        let res = &RESOURCES[r];
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            m.insert("namespace".into(), json!(ns));
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now_ts()));
        }
        self.defaults(r, &mut obj, None);
        let mut entries = Vec::new();
        record_update(
            &mut entries,
            "kube-controller-manager",
            None,
            &res.api_version(),
            None,
            &obj,
            if res.status { Scope::Main } else { Scope::All },
        );
        set_managed(&mut obj, &entries);
        self.store(r, ns, name, obj);
    }

    // -- dispatch -----------------------------------------------------------------------

    fn dispatch(&mut self, req: &Req) -> Reply {
        match self.run(req) {
            Ok(reply) => reply,
            Err(e) => Reply::Json(e.code, e.status()),
        }
    }

    fn run(&mut self, req: &Req) -> Result<Reply, ApiError> {
        let route = route(&req.path)?;
        let m = &req.method;
        match route {
            Route::Text(t) if *m == Method::GET => Ok(Reply::Text(200, t)),
            Route::Json(Value::Null) if *m == Method::GET => Ok(Reply::Json(
                200,
                json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address }],
                }),
            )),
            Route::Json(v) if *m == Method::GET => Ok(Reply::Json(200, v)),
            Route::Text(_) | Route::Json(_) => Err(ApiError::method_not_allowed()),
            Route::Collection { r, ns } => {
                let res = &RESOURCES[r];
                let scoped = ns.is_some() || !res.namespaced;
                match *m {
                    Method::GET => Ok(Reply::Json(
                        200,
                        self.list(r, ns.as_deref(), &req.query, req.partial_metadata())?,
                    )),
                    Method::POST if scoped && res.writable => {
                        let body = parse_body(req, false)?;
                        let opts = write_opts(req, false)?;
                        let (code, v) =
                            self.write(r, ns.as_deref(), None, None, Op::Create(body), &opts)?;
                        Ok(Reply::Json(code, v))
                    }
                    Method::DELETE if ns.is_some() => {
                        let d = delete_opts(req)?;
                        Ok(Reply::Json(
                            200,
                            self.delete_collection(r, ns.as_deref().unwrap_or(""), &req.query, &d)?,
                        ))
                    }
                    _ => Err(ApiError::method_not_allowed()),
                }
            }
            Route::Object { r, ns, name, sub } => {
                let res = &RESOURCES[r];
                let ns = ns.as_deref();
                match (sub.as_deref(), m.clone()) {
                    (None | Some("status"), Method::GET) => {
                        let obj = self.get(r, ns, &name)?;
                        Ok(Reply::Json(
                            200,
                            if req.partial_metadata() {
                                partial(&obj)
                            } else {
                                obj
                            },
                        ))
                    }
                    (Some("scale"), Method::GET) => {
                        Ok(Reply::Json(200, scale_json(&self.get(r, ns, &name)?)))
                    }
                    (None, Method::DELETE) => {
                        let d = delete_opts(req)?;
                        Ok(Reply::Json(
                            200,
                            self.delete(r, ns.unwrap_or(""), &name, &d)?,
                        ))
                    }
                    (_, Method::PUT | Method::PATCH) if !res.writable => {
                        Err(ApiError::method_not_allowed())
                    }
                    (Some("scale"), Method::PUT | Method::PATCH) => Ok(Reply::Json(
                        200,
                        self.write_scale(req, ns.unwrap_or(""), &name)?,
                    )),
                    (sub @ (None | Some("status")), Method::PUT) => {
                        let body = parse_body(req, false)?;
                        let opts = write_opts(req, false)?;
                        let (code, v) =
                            self.write(r, ns, Some(&name), sub, Op::Replace(body), &opts)?;
                        Ok(Reply::Json(code, v))
                    }
                    (sub @ (None | Some("status")), Method::PATCH) => {
                        let pt = patch_type(req)?;
                        let body = parse_body(req, pt == PatchType::Apply)?;
                        let opts = write_opts(req, pt == PatchType::Apply)?;
                        let (code, v) =
                            self.write(r, ns, Some(&name), sub, Op::Patch(pt, body), &opts)?;
                        Ok(Reply::Json(code, v))
                    }
                    _ => Err(ApiError::method_not_allowed()),
                }
            }
        }
    }

    fn get(&self, r: usize, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(r, ns.unwrap_or("").to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&RESOURCES[r], name))
    }

    // -- list ---------------------------------------------------------------------------

    fn list(
        &self,
        r: usize,
        ns: Option<&str>,
        q: &Query,
        partial_meta: bool,
    ) -> Result<Value, ApiError> {
        let res = &RESOURCES[r];
        let sel = Selection::parse(r, q)?;
        let limit = match q.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?,
            None => 0,
        };
        let after = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut remaining = 0u64;
        let mut last = None;
        for ((_, ons, oname), obj) in self.range(r) {
            if ns.is_some_and(|ns| ns != ons) {
                continue;
            }
            if let Some((ans, aname)) = &after
                && (ons.as_str(), oname.as_str()) <= (ans.as_str(), aname.as_str())
            {
                continue;
            }
            if !sel.matches(r, obj) {
                continue;
            }
            if limit > 0 && items.len() >= limit {
                remaining += 1;
                continue;
            }
            items.push(if partial_meta {
                partial(obj)
            } else {
                list_item(obj)
            });
            last = Some((ons.clone(), oname.clone()));
        }
        let mut meta = json!({ "resourceVersion": self.rv.to_string() });
        if remaining > 0
            && let Some((lns, lname)) = last
        {
            meta["continue"] = json!(encode_continue(&lns, &lname));
            meta["remainingItemCount"] = json!(remaining);
        }
        let (kind, api_version) = if partial_meta {
            (
                "PartialObjectMetadataList".to_string(),
                "meta.k8s.io/v1".to_string(),
            )
        } else {
            (format!("{}List", res.kind), res.api_version())
        };
        Ok(json!({ "kind": kind, "apiVersion": api_version, "metadata": meta, "items": items }))
    }

    // -- writes -------------------------------------------------------------------------

    fn create_name(&self, res: &Resource, body: &Value) -> Result<String, ApiError> {
        if let Some(n) = str_at(body, &["metadata", "name"]).filter(|n| !n.is_empty()) {
            return Ok(n.to_string());
        }
        if let Some(g) = str_at(body, &["metadata", "generateName"]).filter(|n| !n.is_empty()) {
            const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let id = uuid::Uuid::new_v4();
            let suffix: String = id.as_bytes()[..5]
                .iter()
                .map(|b| ALPHANUMS[*b as usize % ALPHANUMS.len()] as char)
                .collect();
            return Ok(format!("{g}{suffix}"));
        }
        Err(ApiError::invalid(
            res,
            "",
            vec![Cause::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ))
    }

    fn write(
        &mut self,
        r: usize,
        ns: Option<&str>,
        url_name: Option<&str>,
        sub: Option<&str>,
        op: Op,
        opts: &WriteOpts,
    ) -> Result<(u16, Value), ApiError> {
        let res = &RESOURCES[r];
        let api_version = res.api_version();
        let name = match (url_name, &op) {
            (Some(n), _) => n.to_string(),
            (None, Op::Create(body)) => self.create_name(res, body)?,
            (None, _) => return Err(ApiError::bad_request("a resource name is required")),
        };
        let ns = if res.namespaced {
            ns.unwrap_or("").to_string()
        } else {
            String::new()
        };
        let existing = self.objects.get(&(r, ns.clone(), name.clone())).cloned();
        if res.namespaced && !self.namespace_exists(&ns) {
            let creates = matches!(op, Op::Create(_) | Op::Patch(PatchType::Apply, _));
            return Err(if creates {
                ApiError::not_found(&RESOURCES[NS], &ns)
            } else {
                ApiError::not_found(res, &name)
            });
        }
        let scope = match (sub, res.status) {
            (Some("status"), _) => Scope::Status,
            (_, true) => Scope::Main,
            (_, false) => Scope::All,
        };
        let ns_opt = res.namespaced.then_some(ns.as_str());
        let mut entries = existing.as_ref().map(managed_entries).unwrap_or_default();
        let is_apply = matches!(op, Op::Patch(PatchType::Apply, _));
        let mut new = match op {
            Op::Create(mut body) => {
                check_body(res, &body, &name, ns_opt, false)?;
                if existing.is_some() {
                    return Err(ApiError::already_exists(res, &name));
                }
                if res.status
                    && let Some(m) = body.as_object_mut()
                {
                    m.remove("status");
                }
                body
            }
            Op::Replace(body) => {
                check_body(res, &body, &name, ns_opt, false)?;
                let Some(old) = &existing else {
                    return Err(ApiError::not_found(res, &name));
                };
                check_preconditions(res, &name, &body, old)?;
                overlay(scope, old, body)
            }
            Op::Patch(PatchType::Apply, body) => {
                check_body(res, &body, &name, ns_opt, true)?;
                match &existing {
                    Some(old) => check_preconditions(res, &name, &body, old)?,
                    None if rv_of(&body).is_some() => return Err(ApiError::stale(res, &name)),
                    None => {}
                }
                let base = existing.clone().unwrap_or_else(|| {
                    json!({ "apiVersion": api_version, "kind": res.kind, "metadata": { "name": name } })
                });
                let ctx = ApplyCtx {
                    res,
                    name: &name,
                    manager: &opts.manager,
                    sub,
                    force: opts.force,
                    scope,
                };
                apply_fields(&ctx, &base, &body, &mut entries)?
            }
            Op::Patch(pt, patch) => {
                let Some(old) = &existing else {
                    return Err(ApiError::not_found(res, &name));
                };
                let mut merged = old.clone();
                if pt == PatchType::Json {
                    json_patch(&mut merged, &patch).map_err(|e| {
                        ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                    })?;
                    if rv_of(&merged) != rv_of(old) {
                        return Err(ApiError::stale(res, &name));
                    }
                } else {
                    if !patch.is_object() {
                        return Err(ApiError::bad_request(
                            "the body of a merge patch must be a JSON object",
                        ));
                    }
                    check_preconditions(res, &name, &patch, old)?;
                    let patch = if pt == PatchType::Strategic {
                        strip_directives(&patch)
                    } else {
                        patch
                    };
                    merge_patch(&mut merged, &patch);
                }
                overlay(scope, old, merged)
            }
        };
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        if let Some(m) = new.as_object_mut() {
            m.insert("apiVersion".into(), json!(api_version));
            m.insert("kind".into(), json!(res.kind));
        }
        {
            let now = now_ts();
            let (uid, created) = match &existing {
                Some(o) => (
                    str_at(o, &["metadata", "uid"])
                        .unwrap_or_default()
                        .to_string(),
                    str_at(o, &["metadata", "creationTimestamp"])
                        .unwrap_or_default()
                        .to_string(),
                ),
                None => (uuid::Uuid::new_v4().to_string(), now),
            };
            let m = meta_mut(&mut new);
            for k in [
                "resourceVersion",
                "managedFields",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "uid",
                "creationTimestamp",
                "namespace",
            ] {
                m.remove(k);
            }
            m.insert("name".into(), json!(name));
            if res.namespaced {
                m.insert("namespace".into(), json!(ns));
            }
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(created));
        }
        self.defaults(r, &mut new, existing.as_ref());
        validate(r, &new, existing.as_ref())?;
        if !is_apply {
            record_update(
                &mut entries,
                &opts.manager,
                sub,
                &api_version,
                existing.as_ref(),
                &new,
                scope,
            );
        }
        if res.generation {
            let generation = match &existing {
                None => 1,
                Some(o) => {
                    let g = o
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    if o.get("spec") != new.get("spec") {
                        g + 1
                    } else {
                        g
                    }
                }
            };
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        set_managed(&mut new, &entries);
        if let Some(old) = &existing {
            if let Some(rv) = rv_of(old) {
                meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
            }
            if *old == new {
                return Ok((200, old.clone()));
            }
        }
        let operation = if is_apply { "Apply" } else { "Update" };
        if let Some(e) = entries.iter_mut().find(|e| {
            e.manager == opts.manager && e.operation == operation && e.subresource.as_deref() == sub
        }) {
            e.time = now_ts();
        }
        set_managed(&mut new, &entries);
        let code = if existing.is_some() { 200 } else { 201 };
        if opts.dry_run {
            return Ok((code, new));
        }
        let stored = self.store(r, &ns, &name, new);
        if r == STS {
            self.reconcile_sts(&ns, &name, Instant::now());
        }
        Ok((code, stored))
    }

    fn write_scale(&mut self, req: &Req, ns: &str, name: &str) -> Result<Value, ApiError> {
        let sts = self.get(STS, Some(ns), name)?;
        let current = scale_json(&sts);
        let (new, apply) = if req.method == Method::PUT {
            (parse_body(req, false)?, false)
        } else {
            let pt = patch_type(req)?;
            let body = parse_body(req, pt == PatchType::Apply)?;
            let mut merged = current.clone();
            if pt == PatchType::Json {
                json_patch(&mut merged, &body).map_err(|e| ApiError::new(422, "Invalid", e))?;
            } else {
                merge_patch(&mut merged, &body);
            }
            (merged, pt == PatchType::Apply)
        };
        let res = &RESOURCES[STS];
        if let Some(rv) = rv_of(&new)
            && Some(rv) != rv_of(&sts)
        {
            return Err(ApiError::stale(res, name));
        }
        let replicas = new
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid_named(
                "autoscaling",
                "Scale.autoscaling",
                "Scale",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let opts = write_opts(req, apply)?;
        let patch = json!({ "spec": { "replicas": replicas } });
        let (_, stored) = self.write(
            STS,
            Some(ns),
            Some(name),
            None,
            Op::Patch(PatchType::Merge, patch),
            &opts,
        )?;
        Ok(scale_json(&stored))
    }

    // -- delete -------------------------------------------------------------------------

    fn delete(
        &mut self,
        r: usize,
        ns: &str,
        name: &str,
        d: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let res = &RESOURCES[r];
        let ns = if res.namespaced { ns } else { "" };
        let Some(obj) = self
            .objects
            .get(&(r, ns.to_string(), name.to_string()))
            .cloned()
        else {
            return Err(ApiError::not_found(res, name));
        };
        let uid = str_at(&obj, &["metadata", "uid"]).unwrap_or_default();
        if let Some(p) = d.uid.as_deref().filter(|p| *p != uid) {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {p}, UID in object meta: {uid}"
                ),
            ));
        }
        let rv = rv_of(&obj).unwrap_or_default();
        if let Some(p) = d.rv.as_deref().filter(|p| *p != rv) {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {p}, ResourceVersion in object meta: {rv}"
                ),
            ));
        }
        if d.dry_run {
            return Ok(deleted_reply(r, obj));
        }
        let removed = self.remove(r, ns, name).unwrap_or(obj);
        self.cascade(r, ns, name, &removed, d.propagation.as_deref());
        Ok(deleted_reply(r, removed))
    }

    fn cascade(&mut self, r: usize, ns: &str, name: &str, obj: &Value, propagation: Option<&str>) {
        match r {
            NS => {
                let keys: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|(kr, kns, _)| *kr != NS && kns == name)
                    .cloned()
                    .collect();
                for (kr, kns, kname) in keys {
                    self.remove(kr, &kns, &kname);
                }
                self.sims.retain(|(sns, _), _| sns != name);
            }
            STS => {
                let sim = self
                    .sims
                    .remove(&(ns.to_string(), name.to_string()))
                    .unwrap_or_default();
                for ord in sim.pods.keys() {
                    let pod = pod_name(name, *ord);
                    if propagation == Some("Orphan") {
                        if let Some(mut p) = self
                            .objects
                            .get(&(POD, ns.to_string(), pod.clone()))
                            .cloned()
                        {
                            meta_mut(&mut p).remove("ownerReferences");
                            self.store(POD, ns, &pod, p);
                        }
                    } else {
                        self.remove(POD, ns, &pod);
                    }
                }
                if obj.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
                    == Some(&json!("Delete"))
                {
                    let templates = claim_templates(obj);
                    let doomed: Vec<String> = self
                        .names(PVC)
                        .into_iter()
                        .filter(|(pns, pname)| {
                            pns == ns
                                && templates.iter().any(|t| {
                                    pname
                                        .strip_prefix(&format!("{t}-{name}-"))
                                        .is_some_and(|o| o.parse::<u64>().is_ok())
                                })
                        })
                        .map(|(_, n)| n)
                        .collect();
                    for pvc in doomed {
                        self.remove(PVC, ns, &pvc);
                    }
                }
            }
            POD => {
                let owner = obj
                    .pointer("/metadata/ownerReferences/0/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let ord = str_at(obj, &["metadata", "labels", "apps.kubernetes.io/pod-index"])
                    .and_then(|o| o.parse::<i64>().ok());
                if let (Some(sim), Some(ord)) = (self.sims.get_mut(&(ns.to_string(), owner)), ord) {
                    sim.pods.remove(&ord);
                }
            }
            _ => {}
        }
    }

    fn delete_collection(
        &mut self,
        r: usize,
        ns: &str,
        q: &Query,
        d: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let res = &RESOURCES[r];
        if r == NS {
            return Err(ApiError::method_not_allowed());
        }
        let sel = Selection::parse(r, q)?;
        let names: Vec<String> = self
            .range(r)
            .filter(|((_, ons, _), obj)| ons == ns && sel.matches(r, obj))
            .map(|((_, _, n), _)| n.clone())
            .collect();
        let mut items = Vec::new();
        for n in names {
            let obj = self.get(r, Some(ns), &n)?;
            if d.dry_run {
                items.push(list_item(&obj));
                continue;
            }
            if let Some(removed) = self.remove(r, ns, &n) {
                self.cascade(r, ns, &n, &removed, d.propagation.as_deref());
                items.push(list_item(&removed));
            }
        }
        Ok(json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": { "resourceVersion": self.rv.to_string() },
            "items": items,
        }))
    }

    // -- defaults -----------------------------------------------------------------------

    fn defaults(&mut self, r: usize, obj: &mut Value, old: Option<&Value>) {
        let name = str_at(obj, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        match r {
            NS => {
                let labels = obj_mut(meta_mut(obj), "labels");
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
                obj_mut(root_mut(obj), "spec")
                    .entry("finalizers")
                    .or_insert(json!(["kubernetes"]));
                obj_mut(root_mut(obj), "status")
                    .entry("phase")
                    .or_insert(json!("Active"));
            }
            SECRET => {
                let root = root_mut(obj);
                root.entry("type").or_insert(json!("Opaque"));
                if let Some(Value::Object(sd)) = root.remove("stringData") {
                    let data = obj_mut(root, "data");
                    for (k, v) in sd {
                        let text = v
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string());
                        data.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(text)),
                        );
                    }
                }
            }
            SERVICE => {
                let old_ip = old
                    .and_then(|o| str_at(o, &["spec", "clusterIP"]))
                    .map(str::to_string);
                let spec = obj_mut(root_mut(obj), "spec");
                let ty = spec
                    .entry("type")
                    .or_insert(json!("ClusterIP"))
                    .as_str()
                    .unwrap_or("ClusterIP")
                    .to_string();
                if ty != "ExternalName" {
                    let has_ip = spec
                        .get("clusterIP")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty());
                    if !has_ip {
                        let ip = match old_ip {
                            Some(ip) => ip,
                            None => {
                                self.next_service_ip += 1;
                                let n = self.next_service_ip;
                                format!("10.96.{}.{}", (n >> 8) & 255, n & 255)
                            }
                        };
                        spec.insert("clusterIP".into(), json!(ip));
                    }
                    let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
                    spec.insert("clusterIPs".into(), json!([ip]));
                    spec.entry("sessionAffinity").or_insert(json!("None"));
                    spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
                    spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
                    spec.entry("internalTrafficPolicy")
                        .or_insert(json!("Cluster"));
                }
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            p.entry("targetPort").or_insert(port);
                        }
                    }
                }
                obj_mut(root_mut(obj), "status")
                    .entry("loadBalancer")
                    .or_insert(json!({}));
            }
            PVC => {
                let uid = str_at(obj, &["metadata", "uid"])
                    .unwrap_or_default()
                    .to_string();
                let spec = obj_mut(root_mut(obj), "spec");
                spec.entry("volumeMode").or_insert(json!("Filesystem"));
                let volume = old
                    .and_then(|o| str_at(o, &["spec", "volumeName"]))
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("pvc-{uid}"));
                spec.entry("volumeName").or_insert(json!(volume));
                let modes = spec.get("accessModes").cloned().unwrap_or(json!([]));
                let storage = spec
                    .get("resources")
                    .and_then(|r| r.get("requests"))
                    .and_then(|r| r.get("storage"))
                    .cloned();
                let mut status = json!({ "phase": "Bound", "accessModes": modes });
                if let Some(s) = storage {
                    status["capacity"] = json!({ "storage": s });
                }
                root_mut(obj).insert("status".into(), status);
            }
            STS => {
                let spec = obj_mut(root_mut(obj), "spec");
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("podManagementPolicy")
                    .or_insert(json!("OrderedReady"));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                let strategy = obj_mut(spec, "updateStrategy");
                strategy.entry("type").or_insert(json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    obj_mut(strategy, "rollingUpdate")
                        .entry("partition")
                        .or_insert(json!(0));
                }
                let retention = obj_mut(spec, "persistentVolumeClaimRetentionPolicy");
                retention.entry("whenDeleted").or_insert(json!("Retain"));
                retention.entry("whenScaled").or_insert(json!("Retain"));
            }
            NETPOL => {
                let spec = obj_mut(root_mut(obj), "spec");
                if !spec.contains_key("policyTypes") {
                    let mut types = vec![json!("Ingress")];
                    if spec.contains_key("egress") {
                        types.push(json!("Egress"));
                    }
                    spec.insert("policyTypes".into(), Value::Array(types));
                }
            }
            _ => {}
        }
    }

    // -- controllers --------------------------------------------------------------------

    fn tick(&mut self) {
        let now = Instant::now();
        for (ns, name) in self.names(STS) {
            self.reconcile_sts(&ns, &name, now);
        }
        self.reconcile_pdbs();
    }

    fn new_pod(&mut self, revision: String, now: Instant) -> PodSim {
        self.next_pod_ip += 1;
        let n = self.next_pod_ip;
        let ready = self.ready_after.is_zero();
        let created = now_ts();
        PodSim {
            revision,
            since: now,
            ready,
            ready_at: ready.then(|| created.clone()),
            uid: uuid::Uuid::new_v4().to_string(),
            created,
            ip: format!("10.244.{}.{}", (n >> 8) & 255, n & 255),
        }
    }

    fn reconcile_sts(&mut self, ns: &str, name: &str, now: Instant) {
        let Some(sts) = self
            .objects
            .get(&(STS, ns.to_string(), name.to_string()))
            .cloned()
        else {
            return;
        };
        let spec = sts.get("spec").cloned().unwrap_or(json!({}));
        let replicas = spec
            .get("replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let start = spec
            .pointer("/ordinals/start")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0);
        let parallel = spec.get("podManagementPolicy") == Some(&json!("Parallel"));
        let on_delete = spec.pointer("/updateStrategy/type") == Some(&json!("OnDelete"));
        let partition = spec
            .pointer("/updateStrategy/rollingUpdate/partition")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let delete_scaled = spec.pointer("/persistentVolumeClaimRetentionPolicy/whenScaled")
            == Some(&json!("Delete"));
        let template = spec.get("template").cloned().unwrap_or(json!({}));
        let update_rev = revision_name(name, &template);
        let mut current_rev = sts
            .pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| update_rev.clone());
        let ready_after = self.ready_after;
        let wanted = start..start + replicas;
        let key = (ns.to_string(), name.to_string());
        let mut sim = self.sims.remove(&key).unwrap_or_default();
        let mut dirty = BTreeSet::new();

        // Readiness (the kubelet's part), written before the controller acts on it.
        for (ord, p) in sim.pods.iter_mut() {
            if !p.ready && now.duration_since(p.since) >= ready_after {
                p.ready = true;
                p.ready_at = Some(now_ts());
                let pod = pod_json(&sts, ns, name, *ord, p);
                self.store(POD, ns, &pod_name(name, *ord), pod);
            }
        }
        // Scale down: the surplus goes at once.
        let surplus: Vec<i64> = sim
            .pods
            .keys()
            .filter(|o| !wanted.contains(o))
            .copied()
            .collect();
        for ord in surplus {
            sim.pods.remove(&ord);
            dirty.remove(&ord);
            self.remove(POD, ns, &pod_name(name, ord));
            if delete_scaled {
                for t in claim_templates(&sts) {
                    self.remove(PVC, ns, &claim_name(&t, name, ord));
                }
            }
        }
        // Scale up: all at once (Parallel) or one at a time once the previous ones are ready.
        for ord in wanted.clone() {
            if let Some(p) = sim.pods.get(&ord) {
                if !parallel && !p.ready {
                    break;
                }
                continue;
            }
            let revision = if !on_delete && ord < start + partition {
                current_rev.clone()
            } else {
                update_rev.clone()
            };
            self.create_claims(ns, &sts, ord);
            let pod = self.new_pod(revision, now);
            let ready = pod.ready;
            sim.pods.insert(ord, pod);
            dirty.insert(ord);
            if !parallel && !ready {
                break;
            }
        }
        // Rolling update: one pod at a time, highest ordinal first, while all are ready.
        if !on_delete {
            loop {
                let all_ready =
                    sim.pods.len() as i64 == replicas && sim.pods.values().all(|p| p.ready);
                if !all_ready {
                    break;
                }
                let Some(ord) = sim
                    .pods
                    .iter()
                    .rev()
                    .find(|(o, p)| **o >= start + partition && p.revision != update_rev)
                    .map(|(o, _)| *o)
                else {
                    break;
                };
                self.remove(POD, ns, &pod_name(name, ord));
                let pod = self.new_pod(update_rev.clone(), now);
                sim.pods.insert(ord, pod);
                dirty.insert(ord);
            }
        }
        for ord in &dirty {
            if let Some(p) = sim.pods.get(ord) {
                let pod = pod_json(&sts, ns, name, *ord, p);
                self.store(POD, ns, &pod_name(name, *ord), pod);
            }
        }
        // Status.
        let count = sim.pods.len() as i64;
        let ready = sim.pods.values().filter(|p| p.ready).count() as i64;
        let updated = sim
            .pods
            .values()
            .filter(|p| p.revision == update_rev)
            .count() as i64;
        if !on_delete && updated == count && ready == count {
            current_rev = update_rev.clone();
        }
        let current = sim
            .pods
            .values()
            .filter(|p| p.revision == current_rev)
            .count() as i64;
        let mut status = json!({
            "observedGeneration": sts.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": count,
            "availableReplicas": ready,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        });
        for (field, n) in [
            ("readyReplicas", ready),
            ("currentReplicas", current),
            ("updatedReplicas", updated),
        ] {
            if n > 0 {
                status[field] = json!(n);
            }
        }
        self.sims.insert(key, sim);
        self.set_status(STS, ns, name, status);
    }

    fn create_claims(&mut self, ns: &str, sts: &Value, ord: i64) {
        let sts_name = str_at(sts, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        let selector = sts
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let templates = sts
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in templates {
            let Some(tname) = str_at(&t, &["metadata", "name"]) else {
                continue;
            };
            let cname = claim_name(tname, &sts_name, ord);
            if self
                .objects
                .contains_key(&(PVC, ns.to_string(), cname.clone()))
            {
                continue;
            }
            let mut labels = t
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            labels.extend(selector.clone());
            let mut meta = json!({ "labels": labels });
            if let Some(a) = t.pointer("/metadata/annotations") {
                meta["annotations"] = a.clone();
            }
            let obj = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": meta,
                "spec": t.get("spec").cloned().unwrap_or(json!({})),
            });
            self.controller_create(PVC, ns, &cname, obj);
        }
    }

    fn reconcile_pdbs(&mut self) {
        for (ns, name) in self.names(PDB) {
            let Some(pdb) = self.objects.get(&(PDB, ns.clone(), name.clone())).cloned() else {
                continue;
            };
            let reqs = pdb.pointer("/spec/selector").map(selector_reqs);
            let (mut expected, mut healthy) = (0i64, 0i64);
            if let Some(reqs) = &reqs {
                for ((_, pns, _), pod) in self.range(POD) {
                    if *pns == ns && reqs.iter().all(|r| r.matches(labels_of(pod))) {
                        expected += 1;
                        if pod_ready(pod) {
                            healthy += 1;
                        }
                    }
                }
            }
            let amount = |v: &Value| -> i64 {
                match v {
                    Value::Number(n) => n.as_i64().unwrap_or(0),
                    Value::String(s) => {
                        match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                            Some(p) => (expected * p + 99) / 100,
                            None => s.parse().unwrap_or(0),
                        }
                    }
                    _ => 0,
                }
            };
            let desired = if let Some(min) = pdb.pointer("/spec/minAvailable") {
                amount(min)
            } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
                (expected - amount(max)).max(0)
            } else {
                0
            };
            let allowed = (healthy - desired).max(0);
            let generation = pdb
                .pointer("/metadata/generation")
                .cloned()
                .unwrap_or(json!(1));
            let cond_status = if allowed > 0 { "True" } else { "False" };
            let old_cond = pdb.pointer("/status/conditions/0").cloned();
            let since = match &old_cond {
                Some(c) if c.get("status") == Some(&json!(cond_status)) => c
                    .get("lastTransitionTime")
                    .cloned()
                    .unwrap_or(json!(now_ts())),
                _ => json!(now_ts()),
            };
            let status = json!({
                "observedGeneration": generation,
                "disruptionsAllowed": allowed,
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
                "conditions": [{
                    "type": "DisruptionAllowed",
                    "status": cond_status,
                    "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" },
                    "message": "",
                    "observedGeneration": generation,
                    "lastTransitionTime": since,
                }],
            });
            self.set_status(PDB, &ns, &name, status);
        }
    }

    // -- watch --------------------------------------------------------------------------

    /// Event lines after `after` for `w`; Err when `after` is older than the history.
    fn watch_batch(&self, w: &WatchSpec, after: u64) -> Result<(Vec<Value>, u64), ()> {
        if after < self.compacted_rv {
            return Err(());
        }
        let start = self.events.partition_point(|e| e.rv <= after);
        let mut out = Vec::new();
        let mut last = after;
        for e in self.events.range(start..) {
            last = e.rv;
            if e.r != w.r || w.ns.as_deref().is_some_and(|ns| ns != e.ns) {
                continue;
            }
            let is = w.sel.matches(w.r, &e.obj);
            let typ = match e.kind {
                "ADDED" if is => "ADDED",
                "DELETED" if is => "DELETED",
                "MODIFIED" => {
                    let was = e.old.as_ref().is_some_and(|o| w.sel.matches(w.r, o));
                    match (was, is) {
                        (true, true) => "MODIFIED",
                        (false, true) => "ADDED",
                        (true, false) => "DELETED",
                        (false, false) => continue,
                    }
                }
                _ => continue,
            };
            out.push(json!({ "type": typ, "object": e.obj }));
        }
        Ok((out, last))
    }
}

struct WatchSpec {
    r: usize,
    ns: Option<String>,
    sel: Selection,
}

fn watch_response(shared: &Arc<Shared>, req: &Req) -> Result<Response<Body>, ApiError> {
    let (r, ns, name) = match route(&req.path)? {
        Route::Collection { r, ns } => (r, ns, None),
        Route::Object {
            r,
            ns,
            name,
            sub: None,
        } => (r, ns, Some(name)),
        _ => return Err(ApiError::method_not_allowed()),
    };
    let mut sel = Selection::parse(r, &req.query)?;
    if let Some(n) = name {
        sel.fields.push(("metadata.name".into(), true, n));
    }
    let spec = WatchSpec { r, ns, sel };
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let mut changes = shared.changes.subscribe();
    let (initial, mut cursor, expired) = {
        let mut s = shared.lock();
        s.tick();
        match req.query.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => {
                let items: Vec<Value> = s
                    .range(r)
                    .filter(|((_, ons, _), obj)| {
                        spec.ns.as_deref().is_none_or(|ns| ns == ons) && spec.sel.matches(r, obj)
                    })
                    .map(|(_, obj)| json!({ "type": "ADDED", "object": obj }))
                    .collect();
                (items, s.rv, false)
            }
            Some(v) => {
                let rv = v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {v:?}"))
                })?;
                let expired = rv < s.compacted_rv;
                (Vec::new(), rv, expired)
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let shared = shared.clone();
    tokio::spawn(async move {
        let line = |v: &Value| {
            let mut b = serde_json::to_vec(v).unwrap_or_default();
            b.push(b'\n');
            Ok(Frame::data(Bytes::from(b)))
        };
        let gone = |rv: u64, oldest: u64| {
            json!({ "type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {rv} ({oldest})"),
                "reason": "Expired", "code": 410,
            }})
        };
        if expired {
            let oldest = shared.lock().compacted_rv;
            let _ = tx.send(line(&gone(cursor, oldest))).await;
            return;
        }
        for ev in &initial {
            if tx.send(line(ev)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let batch = shared.lock().watch_batch(&spec, cursor);
            match batch {
                Ok((events, last)) => {
                    cursor = last;
                    for ev in &events {
                        if tx.send(line(ev)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(()) => {
                    let oldest = shared.lock().compacted_rv;
                    let _ = tx.send(line(&gone(cursor, oldest))).await;
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(ReceiverStream::new(rx)).boxed())
        .expect("response"))
}

// ---------------------------------------------------------------------------------------
// Objects

fn root_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

fn obj_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    root_mut(m.entry(key).or_insert_with(|| Value::Object(Map::new())))
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    obj_mut(root_mut(v), "metadata")
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn rv_of(v: &Value) -> Option<&str> {
    str_at(v, &["metadata", "resourceVersion"]).filter(|s| !s.is_empty())
}

fn labels_of(v: &Value) -> Option<&Map<String, Value>> {
    v.pointer("/metadata/labels").and_then(Value::as_object)
}

fn list_item(obj: &Value) -> Value {
    let mut item = obj.clone();
    if let Some(m) = item.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    item
}

fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn encode_continue(ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([ns, name]).to_string())
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice::<(String, String)>(&b).ok())
        .ok_or_else(|| ApiError::bad_request(format!("continue key is not valid: {token:?}")))
}

fn deleted_reply(r: usize, mut obj: Value) -> Value {
    let res = &RESOURCES[r];
    match r {
        NS => {
            meta_mut(&mut obj).insert("deletionTimestamp".into(), json!(now_ts()));
            obj_mut(root_mut(&mut obj), "status").insert("phase".into(), json!("Terminating"));
            obj
        }
        POD | SERVICE | PVC => obj,
        _ => {
            let name = str_at(&obj, &["metadata", "name"]).unwrap_or_default();
            let mut details = ApiError::details(res, name);
            details["uid"] = json!(str_at(&obj, &["metadata", "uid"]).unwrap_or_default());
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details })
        }
    }
}

fn scale_json(sts: &Value) -> Value {
    let mut selector: Vec<String> = sts
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    selector.sort();
    let meta = sts.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": { "replicas": sts.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
        "status": {
            "replicas": sts.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector.join(","),
        },
    })
}

fn check_body(
    res: &Resource,
    body: &Value,
    name: &str,
    ns: Option<&str>,
    apply: bool,
) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is not a JSON object",
        ));
    }
    let api_version = body.get("apiVersion").and_then(Value::as_str);
    let kind = body.get("kind").and_then(Value::as_str);
    if apply && kind.is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{body}'"
        )));
    }
    if apply && api_version.is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{body}'"
        )));
    }
    if let Some(v) = api_version
        && v != res.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    if let Some(k) = kind
        && k != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            res.kind
        )));
    }
    if let Some(n) = str_at(body, &["metadata", "name"]).filter(|n| !n.is_empty())
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(ns), Some(bns)) = (ns, str_at(body, &["metadata", "namespace"]))
        && !bns.is_empty()
        && bns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

fn check_preconditions(
    res: &Resource,
    name: &str,
    body: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    if let Some(rv) = rv_of(body)
        && Some(rv) != rv_of(old)
    {
        return Err(ApiError::stale(res, name));
    }
    if let Some(uid) = str_at(body, &["metadata", "uid"]).filter(|u| !u.is_empty()) {
        let have = str_at(old, &["metadata", "uid"]).unwrap_or_default();
        if uid != have {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    Ok(())
}

/// What a write through `scope` makes of `old` when the request says `new`.
fn overlay(scope: Scope, old: &Value, new: Value) -> Value {
    match scope {
        Scope::All => new,
        Scope::Main => {
            let mut out = new;
            let root = root_mut(&mut out);
            match old.get("status") {
                Some(s) => root.insert("status".into(), s.clone()),
                None => root.remove("status"),
            };
            out
        }
        Scope::Status => {
            let mut out = old.clone();
            let root = root_mut(&mut out);
            match new.get("status") {
                Some(s) => root.insert("status".into(), s.clone()),
                None => root.remove("status"),
            };
            out
        }
    }
}

// ---------------------------------------------------------------------------------------
// Patches

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(pm) => {
            let tm = root_mut(target);
            for (k, v) in pm {
                if v.is_null() {
                    tm.remove(k);
                } else {
                    merge_patch(tm.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A strategic merge patch without its `$patch`, `$retainKeys`, `$setElementOrder` …
/// directives (it is then applied as a JSON merge patch).
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$') && !k.starts_with("$setElementOrder"))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).ok_or("missing op")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("missing path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("missing value for {path}"))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("missing from for {path}"))
        };
        match kind {
            "add" => ptr_add(doc, path, value()?)?,
            "remove" => {
                ptr_remove(doc, path)?;
            }
            "replace" => {
                if doc.pointer(path).is_none() {
                    return Err(format!(
                        "replace operation does not apply: doc is missing key: {path}"
                    ));
                }
                *doc.pointer_mut(path).ok_or("missing path")? = value()?;
            }
            "move" => {
                let v = ptr_remove(doc, from()?)?;
                ptr_add(doc, path, v)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| format!("copy from missing path {path}"))?;
                ptr_add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("unexpected op {other:?}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let i = path
        .rfind('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((
        &path[..i],
        path[i + 1..].replace("~1", "/").replace("~0", "~"),
    ))
}

fn ptr_add(doc: &mut Value, path: &str, v: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = v;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last, v);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid index in {path}"))?;
            if i > a.len() {
                return Err(format!("index out of bounds in {path}"));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err(format!(
            "add operation does not apply: doc is missing path: {path}"
        )),
    }
}

fn ptr_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: {path}");
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(missing),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

// ---------------------------------------------------------------------------------------
// Field ownership (server-side apply)

#[derive(Clone, Debug)]
struct Managed {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: BTreeSet<FieldPath>,
}

fn managed_entries(obj: &Value) -> Vec<Managed> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                parse_fields(f, &mut Vec::new(), &mut fields);
            }
            Managed {
                manager: e
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                operation: e
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                time: e
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                fields,
            }
        })
        .collect()
}

fn parse_fields(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(m) = v.as_object() else { return };
    let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, c) in children {
        prefix.push(k.strip_prefix("f:").unwrap_or(k).to_string());
        parse_fields(c, prefix, out);
        prefix.pop();
    }
}

fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Value::Object(Map::new());
    for p in fields {
        let mut cur = &mut root;
        for seg in p {
            cur = root_mut(cur)
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// Sets `metadata.managedFields` (left out when no manager owns anything).
fn set_managed(obj: &mut Value, entries: &[Managed]) {
    let meta = meta_mut(obj);
    match entries_json(entries) {
        Value::Array(a) if a.is_empty() => meta.remove("managedFields"),
        v => meta.insert("managedFields".into(), v),
    };
}

fn entries_json(entries: &[Managed]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(&e.fields),
                });
                if let Some(s) = &e.subresource {
                    v["subresource"] = json!(s);
                }
                v
            })
            .collect(),
    )
}

/// Leaf fields: scalars, lists (atomic) and empty objects.
fn leaves(v: &Value) -> Vec<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            Value::Null => {}
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Whether a field takes part in ownership through `scope`.
fn tracked(scope: Scope, p: &FieldPath) -> bool {
    match p.first().map(String::as_str) {
        None | Some("apiVersion" | "kind") => false,
        Some("metadata") => {
            scope != Scope::Status
                && !matches!(
                    p.get(1).map(String::as_str),
                    Some(
                        "name"
                            | "namespace"
                            | "uid"
                            | "resourceVersion"
                            | "generation"
                            | "creationTimestamp"
                            | "managedFields"
                            | "selfLink"
                            | "deletionTimestamp"
                            | "deletionGracePeriodSeconds"
                            | "generateName"
                    )
                )
        }
        Some("status") => scope != Scope::Main,
        Some(_) => scope != Scope::Status,
    }
}

fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in p {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

fn set_leaf(v: &mut Value, p: &[String], val: Value) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        cur = root_mut(cur)
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let m = root_mut(cur);
    if val.as_object().is_some_and(Map::is_empty) && m.get(last).is_some_and(Value::is_object) {
        return;
    }
    m.insert(last.clone(), val);
}

/// Removes a field and the objects its removal leaves empty.
fn remove_path(v: &mut Value, p: &[String]) {
    fn inner(v: &mut Value, p: &[String]) -> bool {
        let Some(m) = v.as_object_mut() else {
            return false;
        };
        let Some((first, rest)) = p.split_first() else {
            return false;
        };
        if rest.is_empty() {
            return m.remove(first).is_some() && m.is_empty();
        }
        if let Some(child) = m.get_mut(first)
            && inner(child, rest)
        {
            m.remove(first);
            return m.is_empty();
        }
        false
    }
    inner(v, p);
}

fn overlaps(p: &[String], q: &[String]) -> bool {
    p.starts_with(q) || q.starts_with(p)
}

fn dotted(p: &[String]) -> String {
    p.iter().map(|s| format!(".{s}")).collect()
}

struct ApplyCtx<'a> {
    res: &'a Resource,
    name: &'a str,
    manager: &'a str,
    sub: Option<&'a str>,
    force: bool,
    scope: Scope,
}

fn apply_fields(
    ctx: &ApplyCtx<'_>,
    base: &Value,
    applied: &Value,
    entries: &mut Vec<Managed>,
) -> Result<Value, ApiError> {
    let new_set: BTreeSet<FieldPath> = leaves(applied)
        .into_iter()
        .filter(|p| tracked(ctx.scope, p))
        .collect();
    let me = match entries.iter().position(|e| {
        e.manager == ctx.manager && e.operation == "Apply" && e.subresource.as_deref() == ctx.sub
    }) {
        Some(i) => i,
        None => {
            entries.push(Managed {
                manager: ctx.manager.to_string(),
                operation: "Apply".into(),
                api_version: ctx.res.api_version(),
                time: now_ts(),
                subresource: ctx.sub.map(str::to_string),
                fields: BTreeSet::new(),
            });
            entries.len() - 1
        }
    };
    let prev = entries[me].fields.clone();
    // Conflicts: fields another manager owns with another value.
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i == me || e.subresource.as_deref() != ctx.sub {
            continue;
        }
        for q in &e.fields {
            let hit = new_set.iter().find(|p| {
                overlaps(p, q) && {
                    let shorter: &[String] = if p.len() <= q.len() { p } else { q };
                    get_path(base, shorter) != get_path(applied, shorter)
                }
            });
            if hit.is_some() {
                conflicts.push((i, q.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !ctx.force {
        return Err(conflict_error(ctx, entries, &conflicts));
    }
    for (i, q) in &conflicts {
        entries[*i].fields.remove(q);
    }
    let mut out = base.clone();
    for p in prev.difference(&new_set) {
        let shared = entries
            .iter()
            .enumerate()
            .any(|(i, e)| i != me && e.fields.iter().any(|q| overlaps(p, q)));
        if !shared {
            remove_path(&mut out, p);
        }
    }
    for p in &new_set {
        if let Some(v) = get_path(applied, p) {
            set_leaf(&mut out, p, v.clone());
        }
    }
    entries[me].fields = new_set;
    entries[me].api_version = ctx.res.api_version();
    entries.retain(|e| !e.fields.is_empty());
    Ok(out)
}

fn conflict_error(
    ctx: &ApplyCtx<'_>,
    entries: &[Managed],
    conflicts: &[(usize, FieldPath)],
) -> ApiError {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut causes = Vec::new();
    for (i, q) in conflicts {
        let e = &entries[*i];
        let label = if e.operation == "Apply" {
            format!("conflict with \"{}\"", e.manager)
        } else {
            format!("conflict with \"{}\" using {}", e.manager, e.api_version)
        };
        causes.push(
            json!({ "reason": "FieldManagerConflict", "message": label, "field": dotted(q) }),
        );
        by.entry(label).or_default().push(dotted(q));
    }
    let n = conflicts.len();
    let message = if n == 1 {
        let (label, fields) = by
            .iter()
            .next()
            .map(|(l, f)| (l.clone(), f[0].clone()))
            .unwrap_or_default();
        format!("Apply failed with 1 conflict: {label}: {fields}")
    } else {
        let parts: Vec<String> = by
            .iter()
            .map(|(label, fields)| {
                if fields.len() == 1 {
                    format!("{label}: {}", fields[0])
                } else {
                    let label = label.replacen("conflict with", "conflicts with", 1);
                    format!("{label}:\n- {}", fields.join("\n- "))
                }
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
    };
    let mut details = ApiError::details(ctx.res, ctx.name);
    details["causes"] = Value::Array(causes);
    ApiError::new(409, "Conflict", message).with_details(details)
}

/// Gives the fields a non-apply write changed to its manager (operation `Update`).
fn record_update(
    entries: &mut Vec<Managed>,
    manager: &str,
    sub: Option<&str>,
    api_version: &str,
    old: Option<&Value>,
    new: &Value,
    scope: Scope,
) {
    let null = Value::Null;
    let old = old.unwrap_or(&null);
    let changed: Vec<FieldPath> = leaves(new)
        .into_iter()
        .filter(|p| tracked(scope, p) && get_path(old, p) != get_path(new, p))
        .collect();
    let removed: Vec<FieldPath> = leaves(old)
        .into_iter()
        .filter(|p| tracked(scope, p) && get_path(new, p).is_none())
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        e.fields
            .retain(|q| !changed.iter().chain(&removed).any(|p| overlaps(p, q)));
    }
    let i = match entries.iter().position(|e| {
        e.manager == manager && e.operation == "Update" && e.subresource.as_deref() == sub
    }) {
        Some(i) => i,
        None => {
            entries.push(Managed {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now_ts(),
                subresource: sub.map(str::to_string),
                fields: BTreeSet::new(),
            });
            entries.len() - 1
        }
    };
    entries[i].fields.extend(changed);
    entries[i].api_version = api_version.to_string();
    entries.retain(|e| !e.fields.is_empty());
}

// ---------------------------------------------------------------------------------------
// Selectors

#[derive(Debug)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelReq {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        match self {
            Self::Eq(k, v) => get(k) == Some(v.as_str()),
            Self::Ne(k, v) => get(k) != Some(v.as_str()),
            Self::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Self::Exists(k) => get(k).is_some(),
            Self::NotExists(k) => get(k).is_none(),
        }
    }
}

/// Splits a selector on the commas outside parentheses.
fn selector_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    terms.push(cur);
    terms
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let bad = |t: &str, why: &str| {
        ApiError::bad_request(format!("unable to parse requirement: {t:?}: {why}"))
    };
    let mut reqs = Vec::new();
    for term in selector_terms(s) {
        let t = term.as_str();
        let req = if let Some(k) = t.strip_prefix('!') {
            LabelReq::NotExists(k.trim().to_string())
        } else if let Some(open) = t.find('(') {
            let close = t
                .rfind(')')
                .ok_or_else(|| bad(t, "found '(', expected: ')'"))?;
            let head: Vec<&str> = t[..open].split_whitespace().collect();
            let values: Vec<String> = t[open + 1..close]
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            match head.as_slice() {
                [k, "in"] => LabelReq::In(k.to_string(), values),
                [k, "notin"] => LabelReq::NotIn(k.to_string(), values),
                _ => return Err(bad(t, "expected 'in' or 'notin'")),
            }
        } else if let Some((k, v)) = t.split_once("!=") {
            LabelReq::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = t.split_once("==") {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = t.split_once('=') {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else {
            LabelReq::Exists(t.to_string())
        };
        let key = match &req {
            LabelReq::Eq(k, _)
            | LabelReq::Ne(k, _)
            | LabelReq::In(k, _)
            | LabelReq::NotIn(k, _)
            | LabelReq::Exists(k)
            | LabelReq::NotExists(k) => k,
        };
        if !is_qualified_name(key) {
            return Err(bad(t, "invalid label key"));
        }
        reqs.push(req);
    }
    Ok(reqs)
}

/// A `metav1.LabelSelector` as requirements (`matchLabels` and `matchExpressions`).
fn selector_reqs(sel: &Value) -> Vec<LabelReq> {
    let mut reqs = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push(LabelReq::Eq(
                k.clone(),
                v.as_str().unwrap_or_default().into(),
            ));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => reqs.push(LabelReq::In(key, values)),
                Some("NotIn") => reqs.push(LabelReq::NotIn(key, values)),
                Some("Exists") => reqs.push(LabelReq::Exists(key)),
                Some("DoesNotExist") => reqs.push(LabelReq::NotExists(key)),
                _ => reqs.push(LabelReq::In(key, Vec::new())),
            }
        }
    }
    reqs
}

/// Label and field selectors of a list or watch.
struct Selection {
    labels: Vec<LabelReq>,
    /// (field, equal?, value)
    fields: Vec<(String, bool, String)>,
}

impl Selection {
    fn parse(r: usize, q: &Query) -> Result<Self, ApiError> {
        let labels =
            parse_label_selector(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
        let mut fields = Vec::new();
        for t in selector_terms(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
            let (f, eq, v) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{t}'; can't understand '{t}'"
                )));
            };
            let f = f.trim().to_string();
            if field_value(r, &Value::Null, &f).is_none() {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f}"
                )));
            }
            fields.push((f, eq, v.trim().to_string()));
        }
        Ok(Self { labels, fields })
    }

    fn matches(&self, r: usize, obj: &Value) -> bool {
        let labels = labels_of(obj);
        self.labels.iter().all(|l| l.matches(labels))
            && self.fields.iter().all(|(f, eq, v)| {
                let have = field_value(r, obj, f).flatten().unwrap_or_default();
                (have == *v) == *eq
            })
    }
}

/// The value of a supported field selector (`None`: not supported for this kind).
fn field_value(r: usize, obj: &Value, field: &str) -> Option<Option<String>> {
    let path: &[&str] = match (r, field) {
        (_, "metadata.name") => &["metadata", "name"],
        (_, "metadata.namespace") => &["metadata", "namespace"],
        (SECRET, "type") => &["type"],
        (NS, "status.phase") | (POD | PVC, "status.phase") => &["status", "phase"],
        (POD, "spec.nodeName") => &["spec", "nodeName"],
        (POD, "status.podIP") => &["status", "podIP"],
        (POD, "spec.serviceAccountName") => &["spec", "serviceAccountName"],
        _ => return None,
    };
    Some(str_at(obj, path).map(str::to_string))
}

// ---------------------------------------------------------------------------------------
// Validation

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

const LABEL_VALUE_HELP: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const LABEL_KEY_HELP: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const DNS_LABEL_HELP: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS_SUBDOMAIN_HELP: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const CONFIG_KEY_HELP: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn check_labels(field: &str, labels: Option<&Value>, causes: &mut Vec<Cause>) {
    let Some(labels) = labels else { return };
    let Some(m) = labels.as_object() else {
        causes.push(Cause::invalid(
            field,
            labels,
            "labels must be a map of strings",
        ));
        return;
    };
    for (k, v) in m {
        if !is_qualified_name(k) {
            causes.push(Cause::invalid(field, &json!(k), LABEL_KEY_HELP));
        }
        match v.as_str() {
            Some(s) if is_label_value(s) => {}
            _ => causes.push(Cause::invalid(field, v, LABEL_VALUE_HELP)),
        }
    }
}

fn label_selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    selector_reqs(sel).iter().all(|r| r.matches(labels))
}

fn validate(r: usize, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let res = &RESOURCES[r];
    let name = str_at(obj, &["metadata", "name"]).unwrap_or_default();
    let mut causes = Vec::new();
    let label_names = matches!(r, NS | SERVICE);
    if label_names && !is_dns_label(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            DNS_LABEL_HELP,
        ));
    } else if !label_names && !is_dns_subdomain(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            DNS_SUBDOMAIN_HELP,
        ));
    }
    check_labels(
        "metadata.labels",
        obj.pointer("/metadata/labels"),
        &mut causes,
    );
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let old_spec = old.and_then(|o| o.get("spec"));
    match r {
        SECRET | CONFIGMAP => {
            for field in ["data", "binaryData"] {
                if let Some(m) = obj.get(field).and_then(Value::as_object) {
                    for (k, v) in m {
                        if k.is_empty()
                            || !k
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                        {
                            causes.push(Cause::invalid(
                                format!("{field}[{k}]"),
                                &json!(k),
                                CONFIG_KEY_HELP,
                            ));
                        }
                        let base64_field = r == SECRET || field == "binaryData";
                        if base64_field
                            && v.as_str().is_none_or(|s| {
                                base64::engine::general_purpose::STANDARD.decode(s).is_err()
                            })
                        {
                            return Err(ApiError::bad_request(format!(
                                "{} in version \"v1\" cannot be handled as a {}: illegal base64 data in {field}[{k}]",
                                res.kind, res.kind
                            )));
                        }
                        if !base64_field && !v.is_string() {
                            causes.push(Cause::invalid(
                                format!("{field}[{k}]"),
                                v,
                                "must be a string",
                            ));
                        }
                    }
                }
            }
            if let Some(old) = old
                && old.get("immutable") == Some(&json!(true))
            {
                for field in ["data", "binaryData", "type"] {
                    if old.get(field) != obj.get(field) {
                        causes.push(Cause::forbidden(
                            field,
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
                if obj.get("immutable") != Some(&json!(true)) {
                    causes.push(Cause::forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        SERVICE => {
            let headless = spec.get("clusterIP") == Some(&json!("None"));
            let ports = spec.get("ports").and_then(Value::as_array);
            if !headless
                && spec.get("type") != Some(&json!("ExternalName"))
                && ports.is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required("spec.ports", ""));
            }
            if let Some(ports) = ports
                && ports.len() > 1
            {
                for (i, p) in ports.iter().enumerate() {
                    if str_at(p, &["name"]).is_none_or(str::is_empty) {
                        causes.push(Cause::required(format!("spec.ports[{i}].name"), ""));
                    }
                }
            }
            if let (Some(was), Some(now)) = (
                old_spec
                    .and_then(|s| s.get("clusterIP"))
                    .and_then(Value::as_str),
                spec.get("clusterIP").and_then(Value::as_str),
            ) && was != now
            {
                causes.push(Cause::invalid(
                    "spec.clusterIP",
                    &json!(now),
                    "field is immutable",
                ));
            }
        }
        PVC => {
            if spec
                .get("accessModes")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required(
                    "spec.accessModes",
                    "at least 1 access mode is required",
                ));
            }
            let storage = |s: &Value| s.pointer("/resources/requests/storage").cloned();
            if storage(&spec).is_none() {
                causes.push(Cause::required("spec.resources[storage]", ""));
            }
            if let Some(old_spec) = old_spec {
                let strip = |s: &Value| {
                    let mut s = s.clone();
                    if let Some(m) = s.as_object_mut() {
                        m.remove("volumeAttributesClassName");
                        if let Some(res) = m.get_mut("resources").and_then(Value::as_object_mut) {
                            res.remove("requests");
                            if res.is_empty() {
                                m.remove("resources");
                            }
                        }
                    }
                    s
                };
                if strip(old_spec) != strip(&spec) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                    ));
                }
                let q = |v: Option<Value>| v.as_ref().and_then(quantity);
                if let (Some(was), Some(now)) = (q(storage(old_spec)), q(storage(&spec)))
                    && now < was
                {
                    causes.push(Cause::forbidden(
                        "spec.resources.requests.storage",
                        "field can not be less than previous value",
                    ));
                }
            }
        }
        STS => {
            let selector = spec.get("selector");
            let template_labels = spec.pointer("/template/metadata/labels");
            check_labels(
                "spec.template.metadata.labels",
                template_labels,
                &mut causes,
            );
            match selector {
                None => causes.push(Cause::required("spec.selector", "")),
                Some(sel) if selector_reqs(sel).is_empty() => causes.push(Cause::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for statefulset",
                )),
                Some(sel) => {
                    if !label_selector_matches(sel, template_labels.and_then(Value::as_object)) {
                        causes.push(Cause::invalid(
                            "spec.template.metadata.labels",
                            template_labels.unwrap_or(&Value::Null),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
            if spec
                .pointer("/template/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required("spec.template.spec.containers", ""));
            }
            if let Some(n) = spec.get("replicas").and_then(Value::as_i64)
                && n < 0
            {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &json!(n),
                    "must be greater than or equal to 0",
                ));
            }
            if let Some(p) = spec.get("podManagementPolicy").and_then(Value::as_str)
                && !matches!(p, "OrderedReady" | "Parallel")
            {
                causes.push(Cause::unsupported(
                    "spec.podManagementPolicy",
                    p,
                    &["OrderedReady", "Parallel"],
                ));
            }
            if let Some(t) = spec.pointer("/updateStrategy/type").and_then(Value::as_str)
                && !matches!(t, "RollingUpdate" | "OnDelete")
            {
                causes.push(Cause::unsupported(
                    "spec.updateStrategy.type",
                    t,
                    &["OnDelete", "RollingUpdate"],
                ));
            }
            for (i, t) in spec
                .get("volumeClaimTemplates")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if str_at(t, &["metadata", "name"]).is_none_or(|n| !is_dns_subdomain(n)) {
                    causes.push(Cause::required(
                        format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                        "",
                    ));
                }
            }
            if let Some(old_spec) = old_spec {
                let strip = |s: &Value| {
                    let mut s = s.clone();
                    if let Some(m) = s.as_object_mut() {
                        for k in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "revisionHistoryLimit",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                        ] {
                            m.remove(k);
                        }
                    }
                    s
                };
                if strip(old_spec) != strip(&spec) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                    ));
                }
            }
        }
        PDB if spec.get("minAvailable").is_some() && spec.get("maxUnavailable").is_some() => {
            causes.push(Cause::invalid(
                "spec",
                &spec,
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, name, causes))
    }
}

/// A Kubernetes quantity in its base unit (`100Gi`, `1.5G`, `500m`, `2`).
fn quantity(v: &Value) -> Option<f64> {
    if let Some(n) = v.as_f64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, mul) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix)
            && let Ok(n) = n.parse::<f64>()
        {
            return Some(n * mul);
        }
    }
    s.parse().ok()
}

// ---------------------------------------------------------------------------------------
// StatefulSet helpers

fn pod_name(sts: &str, ord: i64) -> String {
    format!("{sts}-{ord}")
}

fn claim_name(template: &str, sts: &str, ord: i64) -> String {
    format!("{template}-{sts}-{ord}")
}

fn claim_templates(sts: &Value) -> Vec<String> {
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| str_at(t, &["metadata", "name"]).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True"))
            })
        })
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `{sts}-{hash}` of the pod template, as the controller names its revisions (FNV-32a,
/// "safe" encoded).
fn revision_name(sts: &str, template: &Value) -> String {
    let mut s = String::new();
    canonical(template, &mut s);
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let encoded: String = h
        .to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect();
    format!("{sts}-{encoded}")
}

fn pod_json(sts: &Value, ns: &str, sts_name: &str, ord: i64, p: &PodSim) -> Value {
    let name = pod_name(sts_name, ord);
    let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert("controller-revision-hash".into(), json!(p.revision));
    labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(name));
    labels.insert(
        "apps.kubernetes.io/pod-index".into(),
        json!(ord.to_string()),
    );
    let mut spec = template
        .get("spec")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or(json!({}));
    {
        let m = root_mut(&mut spec);
        m.insert("hostname".into(), json!(name));
        if let Some(svc) = str_at(sts, &["spec", "serviceName"]).filter(|s| !s.is_empty()) {
            m.insert("subdomain".into(), json!(svc));
        }
        m.insert("nodeName".into(), json!("esaas-standin-node"));
        let volumes = m.entry("volumes").or_insert(json!([]));
        if let Some(a) = volumes.as_array_mut() {
            for t in claim_templates(sts) {
                if !a.iter().any(|v| v.get("name") == Some(&json!(t))) {
                    a.push(json!({
                        "name": t,
                        "persistentVolumeClaim": { "claimName": claim_name(&t, sts_name, ord) },
                    }));
                }
            }
        }
    }
    let containers: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c.get("name"),
                        "image": c.get("image"),
                        "imageID": "",
                        "ready": p.ready,
                        "started": true,
                        "restartCount": 0,
                        "state": { "running": { "startedAt": p.created } },
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let ready_since = p.ready_at.clone().unwrap_or_else(|| p.created.clone());
    let cond = |t: &str, ok: bool, since: &str| {
        json!({
            "type": t,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": since,
        })
    };
    let mut meta = json!({
        "name": name,
        "namespace": ns,
        "generateName": format!("{sts_name}-"),
        "uid": p.uid,
        "creationTimestamp": p.created,
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": sts_name,
            "uid": str_at(sts, &["metadata", "uid"]).unwrap_or_default(),
            "controller": true,
            "blockOwnerDeletion": true,
        }],
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        meta["annotations"] = a.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [
                cond("PodReadyToStartContainers", true, &p.created),
                cond("Initialized", true, &p.created),
                cond("Ready", p.ready, &ready_since),
                cond("ContainersReady", p.ready, &ready_since),
                cond("PodScheduled", true, &p.created),
            ],
            "hostIP": "10.0.0.1",
            "hostIPs": [{ "ip": "10.0.0.1" }],
            "podIP": p.ip,
            "podIPs": [{ "ip": p.ip }],
            "startTime": p.created,
            "containerStatuses": containers,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{
        ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
    };
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::Api;
    use kube::api::{
        DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
    };

    fn ssa() -> PatchParams {
        PatchParams::apply("esaas").force()
    }

    fn typed<K: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> K {
        serde_json::from_value(v).expect("typed object")
    }

    fn api_status(e: kube::Error) -> Box<kube::core::Status> {
        match e {
            kube::Error::Api(s) => s,
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    async fn namespace(client: &kube::Client, name: &str) -> Namespace {
        let ns: Namespace = typed(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": name, "labels": { "esaas.io/tenant": "t1" } },
        }));
        Api::<Namespace>::all(client.clone())
            .patch(name, &ssa(), &Patch::Apply(&ns))
            .await
            .expect("apply namespace")
    }

    fn secret(name: &str, labels: Value) -> Secret {
        typed(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "labels": labels },
            "stringData": { "elastic": "s3cret" },
        }))
    }

    fn statefulset(name: &str, replicas: i32, image: &str) -> StatefulSet {
        typed(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": name, "labels": { "esaas.io/cluster": "c1" } },
            "spec": {
                "replicas": replicas,
                "serviceName": format!("{name}-transport"),
                "podManagementPolicy": "Parallel",
                "selector": { "matchLabels": { "esaas.io/cluster": "c1", "esaas.io/node-set": name } },
                "template": {
                    "metadata": { "labels": { "esaas.io/cluster": "c1", "esaas.io/node-set": name, "esaas.io/tenant": "t1" } },
                    "spec": { "containers": [{ "name": "elasticsearch", "image": image }] },
                },
                "volumeClaimTemplates": [{
                    "metadata": { "name": "data" },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "gp3",
                        "resources": { "requests": { "storage": "10Gi" } },
                    },
                }],
            },
        }))
    }

    async fn eventually<T>(within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "condition not met within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One raw request: (status, JSON body or Null).
    async fn raw(
        s: &KubeStandin,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let stream = tokio::net::TcpStream::connect(s.addr())
            .await
            .expect("connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1");
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        let resp = send
            .send_request(
                b.body(Full::new(Bytes::from(body.to_string())))
                    .expect("request"),
            )
            .await
            .expect("send");
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn rv(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
        meta.resource_version
            .as_deref()
            .expect("resourceVersion")
            .parse()
            .expect("numeric rv")
    }

    #[tokio::test]
    async fn server_side_apply_creates_then_merges_and_records_the_manager() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        let ns = namespace(&client, "tenant-a").await;
        assert_eq!(
            ns.metadata.labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
            "tenant-a"
        );
        assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "tenant-a");

        let first = secrets
            .patch(
                "creds",
                &ssa(),
                &Patch::Apply(secret("creds", json!({ "a": "1", "b": "2" }))),
            )
            .await
            .expect("create by apply");
        let uid = first.metadata.uid.clone().expect("uid");
        assert!(first.metadata.creation_timestamp.is_some());
        assert_eq!(first.type_.as_deref(), Some("Opaque"));
        assert_eq!(first.data.as_ref().unwrap()["elastic"].0, b"s3cret");
        let mf = first
            .metadata
            .managed_fields
            .as_ref()
            .expect("managedFields");
        assert_eq!(mf.len(), 1);
        assert_eq!(mf[0].manager.as_deref(), Some("esaas"));
        assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
        assert_eq!(mf[0].api_version.as_deref(), Some("v1"));
        let fields = serde_json::to_value(&mf[0].fields_v1).unwrap();
        assert!(
            fields.pointer("/f:metadata/f:labels/f:a").is_some(),
            "{fields}"
        );

        // The same configuration again is not a write.
        let same = secrets
            .patch(
                "creds",
                &ssa(),
                &Patch::Apply(secret("creds", json!({ "a": "1", "b": "2" }))),
            )
            .await
            .expect("re-apply");
        assert_eq!(rv(&same.metadata), rv(&first.metadata));

        // Another label set: b is no longer applied, so it goes; c arrives.
        let second = secrets
            .patch(
                "creds",
                &ssa(),
                &Patch::Apply(secret("creds", json!({ "a": "1", "c": "3" }))),
            )
            .await
            .expect("apply again");
        assert!(rv(&second.metadata) > rv(&first.metadata));
        assert_eq!(second.metadata.uid.as_deref(), Some(uid.as_str()));
        let labels = second.metadata.labels.unwrap();
        assert_eq!(labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(labels.get("c").map(String::as_str), Some("3"));
        assert!(!labels.contains_key("b"), "{labels:?}");

        // Status codes and the request log as the wire saw them.
        let body = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cfg" }, "data": { "elasticsearch.yml": "x: 1" } }).to_string();
        let path = "/api/v1/namespaces/tenant-a/configmaps/cfg";
        let apply_ct = Some("application/apply-patch+yaml");
        assert_eq!(
            raw(
                &s,
                "PATCH",
                &format!("{path}?fieldManager=esaas"),
                apply_ct,
                &body
            )
            .await
            .0,
            201
        );
        assert_eq!(
            raw(
                &s,
                "PATCH",
                &format!("{path}?fieldManager=esaas"),
                apply_ct,
                &body
            )
            .await
            .0,
            200
        );
        let (code, status) = raw(&s, "PATCH", path, apply_ct, &body).await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (422, Some("Invalid")),
            "{status}"
        );
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  k: v\n";
        let (code, cm) = raw(
            &s,
            "PATCH",
            &format!("{path}?fieldManager=kubectl"),
            apply_ct,
            yaml,
        )
        .await;
        assert_eq!(code, 200, "{cm}");
        assert_eq!(cm["data"]["k"], "v");
        let (code, status) = raw(&s, "PATCH", path, Some("text/plain"), "{}").await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (415, Some("UnsupportedMediaType"))
        );
        let requests = s.requests();
        assert!(
            requests.contains(&(
                "PATCH".into(),
                "/api/v1/namespaces/tenant-a/secrets/creds".into(),
                Some("application/apply-patch+yaml".into()),
                Some("esaas".into()),
            )),
            "{requests:?}"
        );
    }

    #[tokio::test]
    async fn another_manager_conflicts_unless_forced() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        namespace(&client, "t").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t");
        let cm = |v: &str| -> ConfigMap {
            typed(
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" }, "data": { "k": v } }),
            )
        };
        cms.patch("c", &ssa(), &Patch::Apply(cm("one")))
            .await
            .expect("apply");
        // The same value from another manager is shared ownership, not a conflict.
        cms.patch("c", &PatchParams::apply("other"), &Patch::Apply(cm("one")))
            .await
            .expect("same value");
        let err = cms
            .patch("c", &PatchParams::apply("other"), &Patch::Apply(cm("two")))
            .await
            .expect_err("conflict");
        let st = api_status(err);
        assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            st.message,
            "Apply failed with 1 conflict: conflict with \"esaas\": .data.k"
        );
        let forced = cms
            .patch(
                "c",
                &PatchParams::apply("other").force(),
                &Patch::Apply(cm("two")),
            )
            .await
            .expect("forced");
        assert_eq!(forced.data.unwrap()["k"], "two");
        // A merge patch takes the field over silently (operation Update).
        let patched = cms
            .patch(
                "c",
                &PatchParams {
                    field_manager: Some("hand".into()),
                    ..Default::default()
                },
                &Patch::Merge(json!({ "data": { "k": "three" } })),
            )
            .await
            .expect("merge patch");
        let mf = patched.metadata.managed_fields.unwrap();
        assert!(
            mf.iter().any(|e| e.manager.as_deref() == Some("hand")
                && e.operation.as_deref() == Some("Update"))
        );
    }

    #[tokio::test]
    async fn missing_objects_are_404_as_kubernetes_answers() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
        let st = api_status(sts.get("nope").await.expect_err("404"));
        assert_eq!((st.code, st.reason.as_str()), (404, "NotFound"));
        assert_eq!(st.message, "statefulsets.apps \"nope\" not found");
        let d = st.details.expect("details");
        assert_eq!(
            (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
            ("nope", "apps", "statefulsets")
        );
        assert!(sts.get_opt("nope").await.expect("get_opt").is_none());

        let st = api_status(
            sts.delete("nope", &DeleteParams::default())
                .await
                .expect_err("delete 404"),
        );
        assert_eq!((st.code, st.reason.as_str()), (404, "NotFound"));

        // A write into a namespace that does not exist: NotFound for the namespace.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "ghost");
        let st = api_status(
            secrets
                .patch("x", &ssa(), &Patch::Apply(secret("x", json!({}))))
                .await
                .expect_err("no namespace"),
        );
        assert_eq!(
            (st.code, st.message.as_str()),
            (404, "namespaces \"ghost\" not found")
        );

        let (code, body) = raw(
            &s,
            "GET",
            "/apis/apps/v1/namespaces/default/deployments",
            None,
            "",
        )
        .await;
        assert_eq!(
            (code, body["kind"].as_str(), body["reason"].as_str()),
            (404, Some("Status"), Some("NotFound"))
        );
        let (code, body) = raw(
            &s,
            "POST",
            "/api/v1/namespaces/default/pods",
            Some("application/json"),
            "{}",
        )
        .await;
        assert_eq!(
            (code, body["reason"].as_str()),
            (405, Some("MethodNotAllowed"))
        );
    }

    #[tokio::test]
    async fn list_with_label_selectors() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        namespace(&client, "t").await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "t");
        for (name, labels) in [
            ("a", json!({ "cluster": "c1", "role": "creds" })),
            ("b", json!({ "cluster": "c1", "role": "tls" })),
            ("c", json!({ "cluster": "c2" })),
        ] {
            secrets
                .patch(name, &ssa(), &Patch::Apply(secret(name, labels)))
                .await
                .expect("apply");
        }
        let names = async |sel: &str| -> Vec<String> {
            let lp = if sel.is_empty() {
                ListParams::default()
            } else {
                ListParams::default().labels(sel)
            };
            let list = secrets.list(&lp).await.expect("list");
            assert!(list.metadata.resource_version.is_some());
            list.items
                .into_iter()
                .map(|s| s.metadata.name.unwrap())
                .collect()
        };
        assert_eq!(names("").await, ["a", "b", "c"]);
        assert_eq!(names("cluster=c1").await, ["a", "b"]);
        assert_eq!(names("cluster=c1,role=tls").await, ["b"]);
        assert_eq!(names("cluster!=c1").await, ["c"]);
        assert_eq!(names("role").await, ["a", "b"]);
        assert_eq!(names("!role").await, ["c"]);
        assert_eq!(names("role in (creds,x)").await, ["a"]);
        assert_eq!(names("role notin (creds)").await, ["b", "c"]);
        let one = secrets
            .list(&ListParams::default().fields("metadata.name=b"))
            .await
            .expect("field selector");
        assert_eq!(one.items.len(), 1);
        let page = secrets
            .list(&ListParams::default().limit(2))
            .await
            .expect("page");
        assert_eq!(page.items.len(), 2);
        let rest = secrets
            .list(
                &ListParams::default()
                    .limit(2)
                    .continue_token(page.metadata.continue_.as_deref().unwrap()),
            )
            .await
            .expect("next page");
        assert_eq!(rest.items.len(), 1);
        // Across namespaces.
        let all: Api<Secret> = Api::all(client.clone());
        assert_eq!(
            all.list(&ListParams::default().labels("cluster=c2"))
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let meta = secrets
            .list_metadata(&ListParams::default())
            .await
            .expect("metadata list");
        assert_eq!(meta.items.len(), 3);
    }

    #[tokio::test]
    async fn stale_resource_version_is_a_conflict() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        namespace(&client, "t").await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "t");
        let first = secrets
            .patch("s", &ssa(), &Patch::Apply(secret("s", json!({ "v": "1" }))))
            .await
            .unwrap();
        secrets
            .patch("s", &ssa(), &Patch::Apply(secret("s", json!({ "v": "2" }))))
            .await
            .unwrap();

        let mut stale = secret("s", json!({ "v": "3" }));
        stale.metadata.resource_version = first.metadata.resource_version.clone();
        let st = api_status(
            secrets
                .patch("s", &ssa(), &Patch::Apply(&stale))
                .await
                .expect_err("409"),
        );
        assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            st.message,
            "Operation cannot be fulfilled on secrets \"s\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let mut old = first.clone();
        old.metadata.managed_fields = None;
        let st = api_status(
            secrets
                .replace("s", &PostParams::default(), &old)
                .await
                .expect_err("put 409"),
        );
        assert_eq!(st.code, 409);
        let st = api_status(
            secrets
                .patch("s", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "resourceVersion": first.metadata.resource_version } })))
                .await
                .expect_err("merge 409"),
        );
        assert_eq!(st.code, 409);
        // The current one goes through.
        let current = secrets.get("s").await.unwrap();
        let mut fresh = secret("s", json!({ "v": "4" }));
        fresh.metadata.resource_version = current.metadata.resource_version.clone();
        secrets
            .patch("s", &ssa(), &Patch::Apply(&fresh))
            .await
            .expect("fresh rv");
    }

    #[tokio::test]
    async fn statefulset_turns_ready_after_the_delay_with_a_claim_per_replica() {
        let s = KubeStandin::start(Duration::from_millis(200)).await;
        let client = s.client();
        namespace(&client, "t").await;
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
        // Every pod is created after this instant, so none is ready before it + 200 ms.
        let started = Instant::now();
        let applied = sts
            .patch(
                "es-data",
                &ssa(),
                &Patch::Apply(statefulset("es-data", 3, "elasticsearch:8.17.10")),
            )
            .await
            .expect("apply sts");
        assert_eq!(applied.metadata.generation, Some(1));

        let early = sts.get_status("es-data").await.unwrap();
        let read_at = started.elapsed();
        let status = early.status.expect("status");
        assert_eq!(status.replicas, 3);
        if read_at < Duration::from_millis(200) {
            assert_eq!(
                status.ready_replicas.unwrap_or(0),
                0,
                "ready after {read_at:?}"
            );
        }
        assert_eq!(status.observed_generation, Some(1));
        let update = status.update_revision.clone().expect("updateRevision");
        assert!(update.starts_with("es-data-"), "{update}");

        let ready = eventually(Duration::from_secs(10), async || {
            let st = sts.get("es-data").await.unwrap().status.unwrap();
            (st.ready_replicas == Some(3)).then_some(st)
        })
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "ready too early"
        );
        assert_eq!(ready.updated_replicas, Some(3));
        assert_eq!(ready.available_replicas, Some(3));
        assert_eq!(ready.current_revision.as_deref(), Some(update.as_str()));

        // Pods, named and labelled as the controller names them.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
        let list = pods
            .list(&ListParams::default().labels("esaas.io/node-set=es-data"))
            .await
            .unwrap();
        let names: Vec<_> = list
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["es-data-0", "es-data-1", "es-data-2"]);
        let labels = list.items[0].metadata.labels.clone().unwrap();
        assert_eq!(labels["controller-revision-hash"], update);

        // A claim per replica with the template's and the selector's labels.
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "t");
        let claims = pvcs
            .list(&ListParams::default().labels("esaas.io/cluster=c1"))
            .await
            .unwrap();
        let names: Vec<_> = claims
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["data-es-data-0", "data-es-data-1", "data-es-data-2"]
        );
        assert_eq!(
            claims.items[0].status.as_ref().unwrap().phase.as_deref(),
            Some("Bound")
        );

        // Scale down: pods go, claims stay (Retain).
        let mut smaller = statefulset("es-data", 1, "elasticsearch:8.17.10");
        smaller.metadata.labels = Some([("esaas.io/cluster".to_string(), "c1".to_string())].into());
        let scaled = sts
            .patch("es-data", &ssa(), &Patch::Apply(&smaller))
            .await
            .unwrap();
        assert_eq!(scaled.metadata.generation, Some(2));
        let st = eventually(Duration::from_secs(5), async || {
            let st = sts.get("es-data").await.unwrap().status.unwrap();
            (st.replicas == 1 && st.observed_generation == Some(2)).then_some(st)
        })
        .await;
        assert_eq!(st.ready_replicas, Some(1));
        assert_eq!(
            pods.list(&ListParams::default()).await.unwrap().items.len(),
            1
        );
        assert_eq!(
            pvcs.list(&ListParams::default()).await.unwrap().items.len(),
            3
        );

        // Deleting the StatefulSet keeps the claims too; a label selector deletes them.
        let gone = sts
            .delete("es-data", &DeleteParams::background())
            .await
            .unwrap();
        assert!(gone.is_right(), "a Success Status");
        assert!(
            pods.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert_eq!(
            pvcs.list(&ListParams::default()).await.unwrap().items.len(),
            3
        );
        pvcs.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("esaas.io/node-set=es-data"),
        )
        .await
        .expect("deletecollection");
        assert!(
            pvcs.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(s.objects("PersistentVolumeClaim").is_empty());
    }

    #[tokio::test]
    async fn template_change_rolls_one_pod_at_a_time_from_the_top() {
        let s = KubeStandin::start(Duration::from_millis(100)).await;
        let client = s.client();
        namespace(&client, "t").await;
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
        sts.patch(
            "es",
            &ssa(),
            &Patch::Apply(statefulset("es", 3, "es:8.17.0")),
        )
        .await
        .unwrap();
        let old = eventually(Duration::from_secs(5), async || {
            let st = sts.get("es").await.unwrap().status.unwrap();
            (st.ready_replicas == Some(3)).then_some(st.update_revision.unwrap())
        })
        .await;
        let upgraded = sts
            .patch(
                "es",
                &ssa(),
                &Patch::Apply(statefulset("es", 3, "es:8.18.0")),
            )
            .await
            .unwrap();
        assert_eq!(upgraded.metadata.generation, Some(2));
        let done = eventually(Duration::from_secs(10), async || {
            let st = sts.get("es").await.unwrap().status.unwrap();
            (st.current_revision == st.update_revision && st.ready_replicas == Some(3))
                .then_some(st)
        })
        .await;
        assert_ne!(done.update_revision.as_deref(), Some(old.as_str()));
        assert_eq!(done.updated_replicas, Some(3));
        // Replay the pods' history since the upgrade: each pod is replaced only while all
        // are ready, from the highest ordinal down.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
        let from = upgraded.metadata.resource_version.clone().unwrap();
        let mut events = pods
            .watch(&WatchParams::default().timeout(1), &from)
            .await
            .expect("watch pods")
            .boxed();
        let mut up: BTreeMap<String, bool> = ["es-0", "es-1", "es-2"]
            .map(|n| (n.to_string(), true))
            .into();
        let mut replaced = Vec::new();
        while let Some(ev) = events.try_next().await.expect("event") {
            match ev {
                WatchEvent::Deleted(p) => {
                    let n = p.metadata.name.unwrap();
                    assert!(
                        up.len() == 3 && up.values().all(|r| *r),
                        "{n} replaced while another pod was down: {up:?}"
                    );
                    up.remove(&n);
                    replaced.push(n);
                }
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    let ready = pod_ready(&serde_json::to_value(&p).unwrap());
                    up.insert(p.metadata.name.unwrap(), ready);
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("{e:?}"),
            }
            let down = 3 - up.values().filter(|r| **r).count();
            assert!(down <= 1, "more than one pod down: {up:?}");
        }
        assert_eq!(
            replaced,
            ["es-2", "es-1", "es-0"],
            "one pod at a time from the top"
        );
        let pods = s.objects("pods");
        assert!(
            pods.iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "es:8.18.0")
        );

        // A partition holds the lower ordinals back.
        let mut held = statefulset("es", 3, "es:8.19.0");
        held.spec.update_strategy = Some(typed(
            json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": 2 } }),
        ));
        sts.patch("es", &ssa(), &Patch::Apply(&held)).await.unwrap();
        let st = eventually(Duration::from_secs(5), async || {
            let st = sts.get("es").await.unwrap().status.unwrap();
            (st.updated_replicas == Some(1) && st.ready_replicas == Some(3)).then_some(st)
        })
        .await;
        assert_ne!(st.current_revision, st.update_revision);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let pod0 = s.object("pod", "t", "es-0").unwrap();
        assert_eq!(pod0["spec"]["containers"][0]["image"], "es:8.18.0");
        let pod2 = s.object("pod", "t", "es-2").unwrap();
        assert_eq!(pod2["spec"]["containers"][0]["image"], "es:8.19.0");
    }

    #[tokio::test]
    async fn ordered_ready_on_delete_and_disruption_budget() {
        let s = KubeStandin::start(Duration::from_millis(100)).await;
        let client = s.client();
        namespace(&client, "t").await;
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
        let ordered = |image: &str| {
            let mut o = statefulset("seq", 3, image);
            o.spec.pod_management_policy = Some("OrderedReady".into());
            o.spec.update_strategy = Some(typed(json!({ "type": "OnDelete" })));
            o
        };
        let started = Instant::now();
        sts.patch("seq", &ssa(), &Patch::Apply(ordered("es:1")))
            .await
            .unwrap();
        let first = sts.get_status("seq").await.unwrap().status.unwrap();
        if started.elapsed() < Duration::from_millis(100) {
            assert_eq!(first.replicas, 1, "OrderedReady starts with one pod");
        }
        eventually(Duration::from_secs(10), async || {
            let st = sts.get("seq").await.unwrap().status.unwrap();
            (st.ready_replicas == Some(3)).then_some(())
        })
        .await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "OrderedReady waits for each pod in turn"
        );

        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "t");
        let pdb: PodDisruptionBudget = typed(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": { "name": "seq" },
            "spec": { "minAvailable": 2, "selector": { "matchLabels": { "esaas.io/node-set": "seq" } } },
        }));
        pdbs.patch("seq", &ssa(), &Patch::Apply(&pdb))
            .await
            .unwrap();
        let st = eventually(Duration::from_secs(5), async || {
            let st = pdbs.get("seq").await.unwrap().status?;
            (st.expected_pods == Some(3)).then_some(st)
        })
        .await;
        assert_eq!(
            (
                st.current_healthy,
                st.desired_healthy,
                st.disruptions_allowed
            ),
            (Some(3), Some(2), Some(1))
        );

        // OnDelete: a template change waits until a pod is deleted.
        sts.patch("seq", &ssa(), &Patch::Apply(ordered("es:2")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let st = sts.get("seq").await.unwrap().status.unwrap();
        assert_eq!(st.updated_replicas.unwrap_or(0), 0);
        let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
        let old_uid = pods.get("seq-1").await.unwrap().metadata.uid;
        pods.delete("seq-1", &DeleteParams::default())
            .await
            .unwrap();
        let st = eventually(Duration::from_secs(5), async || {
            let st = sts.get("seq").await.unwrap().status.unwrap();
            (st.updated_replicas == Some(1) && st.ready_replicas == Some(3)).then_some(st)
        })
        .await;
        // As in Kubernetes up to 1.35: OnDelete never moves currentRevision.
        assert_ne!(st.current_revision, st.update_revision);
        let pod1 = pods.get("seq-1").await.unwrap();
        assert_ne!(pod1.metadata.uid, old_uid);
        assert_eq!(
            pod1.metadata.labels.unwrap()["controller-revision-hash"],
            st.update_revision.unwrap()
        );
        assert_eq!(s.objects("pvc").len(), 3, "the claims are reused");
        let (code, _) = raw(
            &s,
            "PATCH",
            "/api/v1/namespaces/t/pods/seq-1",
            Some("application/merge-patch+json"),
            "{}",
        )
        .await;
        assert_eq!(code, 405, "pods are the controller's");
    }

    #[tokio::test]
    async fn create_json_patch_strategic_patch_and_dry_run() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        namespace(&client, "t").await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t");
        let cm: ConfigMap = typed(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "c" }, "data": { "a": "1" },
        }));
        let created = cms
            .create(&PostParams::default(), &cm)
            .await
            .expect("create");
        let mf = created.metadata.managed_fields.unwrap();
        assert_eq!(mf[0].operation.as_deref(), Some("Update"));
        let st = api_status(
            cms.create(&PostParams::default(), &cm)
                .await
                .expect_err("exists"),
        );
        assert_eq!((st.code, st.reason.as_str()), (409, "AlreadyExists"));

        let path = "/api/v1/namespaces/t/configmaps/c";
        let ops = r#"[{"op":"test","path":"/data/a","value":"1"},{"op":"add","path":"/data/b","value":"2"}]"#;
        let (code, body) = raw(&s, "PATCH", path, Some("application/json-patch+json"), ops).await;
        assert_eq!((code, &body["data"]["b"]), (200, &json!("2")), "{body}");
        let failing = r#"[{"op":"test","path":"/data/a","value":"9"}]"#;
        let (code, _) = raw(
            &s,
            "PATCH",
            path,
            Some("application/json-patch+json"),
            failing,
        )
        .await;
        assert_eq!(code, 422);

        let patched = cms
            .patch(
                "c",
                &PatchParams::default(),
                &Patch::Strategic(json!({ "data": { "c": "3", "a": null } })),
            )
            .await
            .unwrap();
        let data = patched.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["b", "c"]);

        let before = cms.get("c").await.unwrap();
        let dry = cms
            .patch(
                "c",
                &PatchParams::apply("esaas").force().dry_run(),
                &Patch::Apply(&cm),
            )
            .await
            .unwrap();
        assert_eq!(dry.data.unwrap()["a"], "1");
        assert_eq!(
            cms.get("c").await.unwrap(),
            before,
            "dry run stores nothing"
        );

        let generated: ConfigMap = typed(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "generateName": "gen-" },
        }));
        let made = cms
            .create(&PostParams::default(), &generated)
            .await
            .unwrap();
        assert!(made.metadata.name.unwrap().starts_with("gen-"));

        let bad: ConfigMap = typed(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "Bad_Name", "labels": { "ok": "not ok!" } },
        }));
        let st = api_status(
            cms.create(&PostParams::default(), &bad)
                .await
                .expect_err("invalid"),
        );
        assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
        assert!(st.message.starts_with("ConfigMap \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", st.message);
    }

    #[tokio::test]
    async fn deleting_a_namespace_deletes_what_it_holds() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        namespace(&client, "doomed").await;
        namespace(&client, "kept").await;
        for ns in ["doomed", "kept"] {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
            secrets
                .patch("s", &ssa(), &Patch::Apply(secret("s", json!({}))))
                .await
                .unwrap();
            let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            sts.patch("es", &ssa(), &Patch::Apply(statefulset("es", 2, "es:1")))
                .await
                .unwrap();
        }
        assert_eq!(s.objects("pvc").len(), 4);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let answer = namespaces
            .delete("doomed", &DeleteParams::default())
            .await
            .unwrap();
        let ns = answer.left().expect("the namespace");
        assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
        let st = api_status(namespaces.get("doomed").await.expect_err("gone"));
        assert_eq!(st.code, 404);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
        assert_eq!(
            api_status(secrets.get("s").await.expect_err("gone")).code,
            404
        );
        for kind in ["secrets", "statefulsets", "pods", "pvc"] {
            assert!(
                s.objects(kind)
                    .iter()
                    .all(|o| o["metadata"]["namespace"] == "kept"),
                "{kind} left in the deleted namespace"
            );
        }
        assert_eq!(s.objects("pods").len(), 2);
        assert_eq!(
            api_status(
                namespaces
                    .delete("doomed", &DeleteParams::default())
                    .await
                    .expect_err("404")
            )
            .code,
            404
        );
    }

    #[tokio::test]
    async fn status_subresource_and_immutable_fields() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        namespace(&client, "t").await;
        let services: Api<Service> = Api::namespaced(client.clone(), "t");
        let svc: Service = typed(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": { "name": "es-http" },
            "spec": { "selector": { "a": "b" }, "ports": [{ "name": "https", "port": 9200 }] },
        }));
        let created = services
            .patch("es-http", &ssa(), &Patch::Apply(&svc))
            .await
            .unwrap();
        let spec = created.spec.unwrap();
        assert!(
            spec.cluster_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("10.96."))
        );
        assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
        let patched = services
            .patch_status("es-http", &PatchParams::default(), &Patch::Merge(json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "1.2.3.4" }] } }, "spec": { "type": "NodePort" } })))
            .await
            .unwrap();
        assert_eq!(
            patched.spec.unwrap().type_.as_deref(),
            Some("ClusterIP"),
            "status ignores spec"
        );
        assert!(
            patched
                .status
                .unwrap()
                .load_balancer
                .unwrap()
                .ingress
                .is_some()
        );

        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
        sts.patch("es", &ssa(), &Patch::Apply(statefulset("es", 1, "es:1")))
            .await
            .unwrap();
        let mut changed = statefulset("es", 1, "es:1");
        changed.spec.volume_claim_templates.as_mut().unwrap()[0]
            .spec
            .as_mut()
            .unwrap()
            .storage_class_name = Some("gp2".into());
        let st = api_status(
            sts.patch("es", &ssa(), &Patch::Apply(&changed))
                .await
                .expect_err("forbidden"),
        );
        assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
        assert!(
            st.message.starts_with(
                "StatefulSet.apps \"es\" is invalid: spec: Forbidden: updates to statefulset spec"
            ),
            "{}",
            st.message
        );

        // Scale subresource.
        let scale = sts.get_scale("es").await.unwrap();
        assert_eq!(scale.spec.unwrap().replicas, Some(1));
        sts.patch_scale(
            "es",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
        )
        .await
        .unwrap();
        assert_eq!(sts.get("es").await.unwrap().spec.replicas, Some(2));

        // PVC storage may grow, not shrink.
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "t");
        let grow = json!({ "spec": { "resources": { "requests": { "storage": "20Gi" } } } });
        let grown = pvcs
            .patch("data-es-0", &PatchParams::default(), &Patch::Merge(&grow))
            .await
            .unwrap();
        assert_eq!(grown.status.unwrap().capacity.unwrap()["storage"].0, "20Gi");
        let shrink = json!({ "spec": { "resources": { "requests": { "storage": "5Gi" } } } });
        let st = api_status(
            pvcs.patch("data-es-0", &PatchParams::default(), &Patch::Merge(&shrink))
                .await
                .expect_err("shrink"),
        );
        assert_eq!(st.code, 422);
    }

    #[tokio::test]
    async fn watch_streams_changes() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let client = s.client();
        namespace(&client, "t").await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "t");
        let from = secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut stream = secrets
            .watch(&WatchParams::default().labels("w=1").timeout(10), &from)
            .await
            .expect("watch")
            .boxed();
        secrets
            .patch("x", &ssa(), &Patch::Apply(secret("x", json!({ "w": "1" }))))
            .await
            .unwrap();
        secrets
            .patch("y", &ssa(), &Patch::Apply(secret("y", json!({ "w": "2" }))))
            .await
            .unwrap();
        secrets.delete("x", &DeleteParams::default()).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
                Ok(Ok(Some(WatchEvent::Added(o)))) => {
                    seen.push(format!("ADDED {}", o.metadata.name.unwrap()))
                }
                Ok(Ok(Some(WatchEvent::Deleted(o)))) => {
                    seen.push(format!("DELETED {}", o.metadata.name.unwrap()))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, ["ADDED x", "DELETED x"]);
    }

    #[tokio::test]
    async fn kubeconfig_reaches_the_standin() {
        let s = KubeStandin::start(Duration::ZERO).await;
        let dir = std::env::temp_dir().join(format!("kube-standin-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        s.write_kubeconfig(&path).unwrap();
        let kc = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
        assert_eq!(kc.current_context.as_deref(), Some("esaas-standin"));
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("config");
        assert_eq!(config.cluster_url.to_string(), format!("{}/", s.url()));
        let client = kube::Client::try_from(config).unwrap();
        let all = Api::<Namespace>::all(client)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(
            all.items
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some("default"))
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
