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
//! | `secrets`, `configmaps`, `serviceaccounts` | `v1` | namespaced | |
//! | `services`, `persistentvolumeclaims` | `v1` | namespaced | `status` |
//! | `pods` (read and delete only; made by the StatefulSet controller) | `v1` | namespaced | `status` (read) |
//! | `statefulsets` | `apps/v1` | namespaced | `status`, `scale` |
//! | `poddisruptionbudgets` | `policy/v1` | namespaced | `status` |
//! | `networkpolicies` | `networking.k8s.io/v1` | namespaced | |
//! | `nodes` (registered by [`crate::eks_nodes`]; clients cordon them) | `v1` | cluster | `status` |
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
//!   previous one is ready with `OrderedReady`) and turn `Ready` the `ready_after` given to
//!   [`KubeStandin::start`] after their creation. Claims `{template}-{sts}-{ordinal}` are
//!   created with the template's labels plus the selector's `matchLabels` (as Kubernetes
//!   does), and kept when the StatefulSet shrinks or is deleted unless
//!   `persistentVolumeClaimRetentionPolicy` says `Delete`. Status: `observedGeneration`,
//!   `replicas` (pods that exist), `readyReplicas`, `availableReplicas`, `currentReplicas`,
//!   `updatedReplicas`, `currentRevision`, `updateRevision` (`{sts}-{hash of the pod
//!   template}`). A template
//!   change rolls the pods with `RollingUpdate` one at a time from the highest ordinal down
//!   to `partition`, each only when all pods are ready; `currentRevision` becomes the update
//!   revision when all pods are updated and ready. With `OnDelete` a deleted pod comes back
//!   at the update revision and, as in Kubernetes up to 1.35 (kubernetes#73492),
//!   `currentRevision` does not move: compare `updatedReplicas` with `replicas` instead.
//!   `/version` says v1.34.
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
//!   its containers never restart; no events, endpoints or ControllerRevisions. Nodes
//!   exist only when something registers them (`nodes`: the scheduler's filters then).
//! - Apply on `/scale` is treated as a merge patch of `spec.replicas`.
//!
//! # Layout
//! - `server`: the accept loop, the controllers' ticker, reading a request and answering it;
//!   `routing`: URL shapes, discovery, and which operation a method on a route is;
//!   `resources`: the kinds served; `errors`: `Status` answers.
//! - `store`: objects, the `resourceVersion` counter and the event history; `select`: lists
//!   and selectors; `watch`: watch streams.
//! - `write`: creates, updates, patches and `/scale`; `patch`: merge, strategic and JSON
//!   patches; `apply`: field ownership and server-side apply; `delete`: deletes and what
//!   goes with them; `defaults` and `validate`: server-set fields and refusals, per kind.
//! - `sim`: the StatefulSet and PodDisruptionBudget controllers; `pods`: the pods and claims
//!   they write. `util`: JSON helpers.

mod apply;
mod defaults;
mod delete;
mod errors;
mod nodes;
mod patch;
mod pod_security;
mod pods;
mod resources;
mod routing;
mod select;
mod server;
mod sim;
mod store;
#[cfg(test)]
mod tests;
mod util;
mod validate;
mod watch;
mod write;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use resources::{RESOURCES, resource_by_name};
use server::{accept_loop, ticker};
use sim::{Pending, StsSim};

pub use nodes::{NodeApi, Placement};

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
const SERVER_MINOR: &str = "34";

/// One request, as [`KubeStandin::requests`] reports it.
struct RequestRecord {
    method: String,
    path: String,
    content_type: Option<String>,
    field_manager: Option<String>,
}

/// One change, kept for watches that resume from a `resourceVersion`.
struct Event {
    rv: u64,
    r: usize,
    ns: String,
    kind: &'static str,
    obj: Value,
    old: Option<Value>,
}

/// Everything the stand-in holds, behind one lock.
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    sims: BTreeMap<(String, String), StsSim>,
    /// Pods of StatefulSets deleted with `propagationPolicy: Orphan`, by the
    /// StatefulSet's namespace and name: a new StatefulSet of that name adopts them.
    orphaned: BTreeMap<(String, String), StsSim>,
    /// When each claim's volume was last modified (resized or re-classed).
    volume_modified: BTreeMap<(String, String), std::time::Instant>,
    /// What the controllers have to look at on their next run.
    pending: Pending,
    /// How long a pod takes to turn ready; fixed at start, since the controllers' queue of
    /// readiness deadlines is computed from it.
    ready_after: Duration,
    requests: VecDeque<RequestRecord>,
    events: VecDeque<Event>,
    /// The `resourceVersion` of the last event no longer kept.
    compacted_rv: u64,
    next_pod_ip: u32,
    next_service_ip: u32,
    server_address: String,
    /// Why the StatefulSet controller could not create a StatefulSet's pods (Pod
    /// Security admission), by its namespace and name; the latest refusal.
    refused_pods: BTreeMap<(String, String), String>,
    /// Where the scheduler bound pods, oldest first.
    placements: Vec<nodes::Placement>,
    /// Pods go only to registered Nodes ([`KubeStandin::node_api`]).
    with_nodes: bool,
}

struct Shared {
    state: Mutex<State>,
    changes: tokio::sync::watch::Sender<u64>,
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
        let (changes, _) = tokio::sync::watch::channel(0);
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

    /// A kube-rs client for it (namespace `default`, no credentials). Needs a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("stand-in URL"));
        config.default_namespace = "default".into();
        kube::Client::try_from(config).expect("kube client for the stand-in")
    }

    /// Writes a [`kubeconfig`] pointing at it to `path` (atomically: written beside it, then
    /// renamed).
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kubeconfig".into());
        let tmp = path.with_file_name(format!(".{file}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, kubeconfig(&self.url()))?;
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

    /// The StatefulSets whose pods Pod Security admission refused, as
    /// `(namespace, name, why)`: the event a real controller records (`FailedCreate`).
    pub fn refused_pods(&self) -> Vec<(String, String, String)> {
        let mut s = self.shared.lock();
        s.tick();
        s.refused_pods
            .iter()
            .map(|((ns, name), why)| (ns.clone(), name.clone(), why.clone()))
            .collect()
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
