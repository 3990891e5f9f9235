//! The EKS node stand-in: what EKS does with instances, which moto does not model. An HTTP
//! front in front of moto (point the platform's EKS endpoint at [`EksNodes::endpoint`])
//! and a loop that plays the node groups' Auto Scaling groups and kubelets against the
//! Kubernetes stand-in:
//!
//! - **Instances.** Each node group has as many nodes as its `scalingConfig.desiredSize`,
//!   registered as Node objects ([`crate::kube_standin::NodeApi`]) with what EKS gives its
//!   nodes: the group's labels and taints, `eks.amazonaws.com/nodegroup`,
//!   `eks.amazonaws.com/nodegroup-image` (the AMI of the release), `eks.amazonaws.com/
//!   capacityType`, `node.kubernetes.io/instance-type`, `topology.kubernetes.io/zone` (the
//!   zone of the group's subnets; here its `esaas.io/zone` tag) and `kubernetes.io/hostname`.
//!   A new node turns `Ready` [`NODE_BOOT`] after launch. A node boots the release its group
//!   has at launch and keeps it. Shrinking terminates first the instances of the oldest
//!   launch template (another release), then the oldest: the Auto Scaling group's default
//!   termination policy ("Choose a termination policy", Amazon EC2 Auto Scaling User Guide).
//! - **`UpdateNodegroupVersion`** (`POST /clusters/{c}/node-groups/{ng}/update-version`,
//!   which moto does not implement), as "Managed node update behavior" (Amazon EKS User
//!   Guide) describes it: the group is `UPDATING` and refuses another update or a
//!   config change (`409 ResourceInUseException`); the scale-up phase launches the new
//!   release's nodes in the group's zone first (up to twice the number of its zones, at
//!   least `maxUnavailable`, here one per old node up to 2), and waits until they are
//!   Ready; the upgrade phase then takes one old node at a time (`maxUnavailable` 1):
//!   cordons it, evicts its pods through the Eviction API (refused while a
//!   PodDisruptionBudget allows no disruption; retried, since `force` is not set), and
//!   terminates it once empty; the scale-down phase returns the group to its size. Then the
//!   group is `ACTIVE` at the new `releaseVersion`. A same `clientRequestToken` returns the
//!   same update (EKS's idempotency); the current release again is `400
//!   InvalidParameterException`.
//! - `DescribeNodegroup` answers are moto's with the status and release EKS would report.
//!
//! Everything else passes to moto unchanged. [`EksNodes::timeline`] says what happened
//! when, for tests to check the order of things.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::kube_standin::NodeApi;

/// How long an instance takes from launch to a Ready node.
pub const NODE_BOOT: Duration = Duration::from_millis(400);
/// How often the instances are reconciled.
const TICK: Duration = Duration::from_millis(50);

/// What happened to a node, in [`NodeEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEventKind {
    /// `UpdateNodegroupVersion` accepted, to this release.
    UpdateStarted(String),
    /// An instance launched at this release.
    Launched(String),
    /// Its node turned Ready.
    Ready,
    /// Cordoned (`spec.unschedulable`).
    Cordoned,
    /// This pod (`{namespace}/{name}`) evicted from it.
    Evicted(String),
    /// An eviction of this pod refused by its disruption budget.
    EvictionRefused(String),
    /// The instance terminated.
    Terminated,
    /// The update done: the group ACTIVE at its new release.
    UpdateFinished(String),
}

/// One thing that happened, with its node group and node.
#[derive(Debug, Clone)]
pub struct NodeEvent {
    /// When.
    pub at: Instant,
    /// The node group.
    pub group: String,
    /// The node (empty for the group's own events).
    pub node: String,
    /// What.
    pub kind: NodeEventKind,
}

struct SimNode {
    release: String,
    launched: Instant,
    ready: bool,
    cordoned: bool,
}

struct Update {
    id: String,
    token: Option<String>,
    release: String,
    created: f64,
}

#[derive(Default)]
struct Group {
    /// The release once an update finished (moto keeps the one it was created with).
    release: Option<String>,
    update: Option<Update>,
    nodes: BTreeMap<String, SimNode>,
}

#[derive(Default)]
struct Inner {
    groups: BTreeMap<String, Group>,
    timeline: Vec<NodeEvent>,
    next_node: u32,
}

/// The EKS node stand-in (see the module documentation). Dropping it stops it.
pub struct EksNodes {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    tasks: Vec<JoinHandle<()>>,
}

struct Ctx {
    moto: String,
    eks_cluster: String,
    inner: Arc<Mutex<Inner>>,
    kube: NodeApi,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EksNodes {
    /// A front for the moto at `moto` (`http://127.0.0.1:PORT`) whose node groups in the
    /// EKS cluster `eks_cluster` get nodes in the Kubernetes stand-in behind `kube`.
    pub async fn start(moto: &str, eks_cluster: &str, kube: NodeApi) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the EKS node stand-in");
        let addr = listener.local_addr().expect("its address");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let ctx = Arc::new(Ctx {
            moto: moto.trim_end_matches('/').to_string(),
            eks_cluster: eks_cluster.to_string(),
            inner: inner.clone(),
            kube,
        });
        let serve = {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let ctx = ctx.clone();
                            async move { Ok::<_, std::convert::Infallible>(handle(&ctx, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        let reconcile = tokio::spawn(async move {
            let eks = eks_client(&ctx.moto).await;
            loop {
                tokio::time::sleep(TICK).await;
                if let Ok(groups) = read_groups(&eks, &ctx.eks_cluster).await {
                    step(&ctx, &groups);
                }
            }
        });
        Self {
            addr,
            inner,
            tasks: vec![serve, reconcile],
        }
    }

    /// `http://127.0.0.1:PORT`: the EKS endpoint to give the platform.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything that happened so far, oldest first.
    pub fn timeline(&self) -> Vec<NodeEvent> {
        lock(&self.inner).timeline.clone()
    }

    /// The release each node of `group` runs, by node.
    pub fn releases(&self, group: &str) -> BTreeMap<String, String> {
        lock(&self.inner)
            .groups
            .get(group)
            .map(|g| {
                g.nodes
                    .iter()
                    .map(|(n, s)| (n.clone(), s.release.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for EksNodes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn eks_client(endpoint: &str) -> aws_sdk_eks::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(crate::moto::REGION))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "eks-nodes",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_eks::Client::new(&sdk)
}

/// A node group as moto has it.
struct GroupView {
    desired: usize,
    release: String,
    zone: String,
    labels: BTreeMap<String, String>,
    taints: Vec<Value>,
    instance_type: String,
    capacity_type: String,
}

async fn read_groups(
    eks: &aws_sdk_eks::Client,
    cluster: &str,
) -> Result<BTreeMap<String, GroupView>, aws_sdk_eks::Error> {
    let names = eks
        .list_nodegroups()
        .cluster_name(cluster)
        .send()
        .await?
        .nodegroups
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for name in names {
        let Some(ng) = eks
            .describe_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(&name)
            .send()
            .await?
            .nodegroup
        else {
            continue;
        };
        let desired = ng
            .scaling_config()
            .and_then(|s| s.desired_size())
            .unwrap_or(0);
        out.insert(
            name,
            GroupView {
                desired: usize::try_from(desired).unwrap_or(0),
                release: ng.release_version().unwrap_or_default().to_string(),
                zone: ng
                    .tags()
                    .and_then(|t| t.get("esaas.io/zone"))
                    .cloned()
                    .unwrap_or_default(),
                labels: ng
                    .labels()
                    .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                taints: ng
                    .taints()
                    .iter()
                    .map(|t| {
                        json!({
                            "key": t.key().unwrap_or_default(),
                            "value": t.value().unwrap_or_default(),
                            // EKS's NO_SCHEDULE is Kubernetes' NoSchedule.
                            "effect": match t.effect().map(|e| e.as_str()) {
                                Some("NO_EXECUTE") => "NoExecute",
                                Some("PREFER_NO_SCHEDULE") => "PreferNoSchedule",
                                _ => "NoSchedule",
                            },
                        })
                    })
                    .collect(),
                instance_type: ng.instance_types().first().cloned().unwrap_or_default(),
                capacity_type: ng
                    .capacity_type()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| "ON_DEMAND".into()),
            },
        );
    }
    Ok(out)
}

/// 17 hex digits of a hash of `s` (an AMI or instance id).
fn id17(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:017x}", h.finish() & 0x0fff_ffff_ffff_ffff)
}

/// The AMI id a release's nodes boot (one per release).
fn ami(release: &str) -> String {
    format!("ami-{}", id17(release))
}

fn node_json(name: &str, group: &str, view: &GroupView, n: &SimNode) -> Value {
    let mut labels: BTreeMap<String, String> = view.labels.clone();
    for (k, v) in [
        ("eks.amazonaws.com/nodegroup", group.to_string()),
        ("eks.amazonaws.com/nodegroup-image", ami(&n.release)),
        ("eks.amazonaws.com/capacityType", view.capacity_type.clone()),
        (
            "node.kubernetes.io/instance-type",
            view.instance_type.clone(),
        ),
        ("topology.kubernetes.io/zone", view.zone.clone()),
        (
            "topology.kubernetes.io/region",
            crate::moto::REGION.to_string(),
        ),
        ("kubernetes.io/hostname", name.to_string()),
        ("kubernetes.io/os", "linux".to_string()),
    ] {
        labels.insert(k.to_string(), v);
    }
    let kubelet = n.release.split('-').next().unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "providerID": format!("aws:///{}/i-{}", view.zone, id17(name)),
            "taints": view.taints,
            "unschedulable": n.cordoned,
        },
        "status": {
            "conditions": [{
                "type": "Ready",
                "status": if n.ready { "True" } else { "False" },
                "reason": if n.ready { "KubeletReady" } else { "KubeletNotReady" },
            }],
            "nodeInfo": {
                "kubeletVersion": format!("v{kubelet}-eks"),
                "osImage": format!("Amazon Linux 2023 (EKS node image {})", n.release),
            },
        },
    })
}

fn event(inner: &mut Inner, group: &str, node: &str, kind: NodeEventKind) {
    inner.timeline.push(NodeEvent {
        at: Instant::now(),
        group: group.to_string(),
        node: node.to_string(),
        kind,
    });
}

/// One reconciliation of every group's instances.
fn step(ctx: &Ctx, views: &BTreeMap<String, GroupView>) {
    let mut inner = lock(&ctx.inner);
    let inner = &mut *inner;
    // Groups gone: their instances with them.
    let gone: Vec<String> = inner
        .groups
        .keys()
        .filter(|g| !views.contains_key(*g))
        .cloned()
        .collect();
    for g in gone {
        if let Some(group) = inner.groups.remove(&g) {
            for node in group.nodes.keys() {
                ctx.kube.remove_node(node);
            }
        }
    }
    for (name, view) in views {
        let mut group = inner.groups.remove(name).unwrap_or_default();
        let mut events = Vec::new();
        reconcile_group(
            ctx,
            name,
            view,
            &mut group,
            &mut inner.next_node,
            &mut events,
        );
        inner.groups.insert(name.clone(), group);
        for (node, kind) in events {
            event(inner, name, &node, kind);
        }
    }
}

fn launch(
    group: &mut Group,
    next: &mut u32,
    release: &str,
    events: &mut Vec<(String, NodeEventKind)>,
) {
    *next += 1;
    let name = format!("ip-10-0-{}-{}.ec2.internal", *next / 250, *next % 250);
    group.nodes.insert(
        name.clone(),
        SimNode {
            release: release.to_string(),
            launched: Instant::now(),
            ready: false,
            cordoned: false,
        },
    );
    events.push((name, NodeEventKind::Launched(release.to_string())));
}

fn terminate(ctx: &Ctx, group: &mut Group, node: &str, events: &mut Vec<(String, NodeEventKind)>) {
    group.nodes.remove(node);
    ctx.kube.remove_node(node);
    events.push((node.to_string(), NodeEventKind::Terminated));
}

fn reconcile_group(
    ctx: &Ctx,
    name: &str,
    view: &GroupView,
    group: &mut Group,
    next: &mut u32,
    events: &mut Vec<(String, NodeEventKind)>,
) {
    let current = group
        .release
        .clone()
        .unwrap_or_else(|| view.release.clone());
    // Boots: a node the kubelet reports Ready is Ready in Kubernetes before EKS acts on it.
    for (node, n) in group.nodes.iter_mut() {
        if !n.ready && n.launched.elapsed() >= NODE_BOOT {
            n.ready = true;
            ctx.kube.put_node(node_json(node, name, view, n));
            events.push((node.clone(), NodeEventKind::Ready));
        }
    }
    match group.update.as_ref().map(|u| u.release.clone()) {
        None => {
            while group.nodes.len() < view.desired {
                launch(group, next, &current, events);
            }
            while group.nodes.len() > view.desired {
                // Oldest launch template first, then the oldest instance.
                let Some(victim) = group
                    .nodes
                    .iter()
                    .min_by_key(|(_, n)| (n.release == current, n.launched))
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                terminate(ctx, group, &victim, events);
            }
        }
        Some(target) => {
            let old: Vec<String> = group
                .nodes
                .iter()
                .filter(|(_, n)| n.release != target)
                .map(|(k, _)| k.clone())
                .collect();
            let new = group.nodes.len() - old.len();
            let surge = old.len().clamp(1, 2);
            // Scale up: the new release first, in the group's zone.
            let mut launched = new;
            while launched < view.desired && group.nodes.len() < view.desired + surge {
                launch(group, next, &target, events);
                launched += 1;
            }
            let waiting = group
                .nodes
                .values()
                .any(|n| n.release == target && !n.ready);
            if !waiting && let Some(victim) = old.first() {
                // Upgrade: one old node at a time, cordoned, emptied, terminated.
                if let Some(n) = group.nodes.get_mut(victim)
                    && !n.cordoned
                {
                    // Cordoned first, so no evicted pod comes back here; drained after.
                    n.cordoned = true;
                    events.push((victim.clone(), NodeEventKind::Cordoned));
                    ctx.kube.put_node(node_json(victim, name, view, n));
                }
                let pods = ctx.kube.pods_on(victim);
                for pod in &pods {
                    let (ns, pod_name) = pod.split_once('/').unwrap_or(("", pod));
                    match ctx.kube.evict(ns, pod_name) {
                        Ok(()) => {
                            events.push((victim.clone(), NodeEventKind::Evicted(pod.clone())))
                        }
                        Err(_) => events
                            .push((victim.clone(), NodeEventKind::EvictionRefused(pod.clone()))),
                    }
                }
                if ctx.kube.pods_on(victim).is_empty() {
                    terminate(ctx, group, victim, events);
                }
            } else if !waiting {
                // Scale down, then done.
                while group.nodes.len() > view.desired {
                    let Some(victim) = group
                        .nodes
                        .iter()
                        .min_by_key(|(_, n)| n.launched)
                        .map(|(k, _)| k.clone())
                    else {
                        break;
                    };
                    terminate(ctx, group, &victim, events);
                }
                group.release = Some(target.clone());
                group.update = None;
                events.push((String::new(), NodeEventKind::UpdateFinished(target)));
            }
        }
    }
    for (node, n) in &group.nodes {
        ctx.kube.put_node(node_json(node, name, view, n));
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, code: &'static str, message: String) -> Response<Full<Bytes>> {
    let mut r = reply(status, json!({ "message": message }));
    r.headers_mut().insert(
        "x-amzn-ErrorType",
        hyper::header::HeaderValue::from_static(code),
    );
    r
}

/// `(cluster, node group, rest)` of `/clusters/{c}/node-groups/{ng}{rest}`.
fn group_path(path: &str) -> Option<(String, String, String)> {
    let rest = path.strip_prefix("/clusters/")?;
    let (cluster, rest) = rest.split_once("/node-groups/")?;
    let (group, tail) = match rest.split_once('/') {
        Some((g, t)) => (g, format!("/{t}")),
        None => (rest, String::new()),
    };
    Some((cluster.to_string(), group.to_string(), tail))
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                e.to_string(),
            );
        }
    };
    let path = parts.uri.path().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let target = group_path(&path);
    if let Some((cluster, group, tail)) = &target
        && cluster == &ctx.eks_cluster
    {
        let updating = lock(&ctx.inner)
            .groups
            .get(group)
            .is_some_and(|g| g.update.is_some());
        match (parts.method.as_str(), tail.as_str()) {
            ("POST", "/update-version") => {
                return update_version(ctx, &parts, group, &body).await;
            }
            ("POST", "/update-config") if updating => {
                return error(
                    StatusCode::CONFLICT,
                    "ResourceInUseException",
                    format!("Nodegroup {group} is currently being updated"),
                );
            }
            _ => {}
        }
    }
    let answer = match forward(
        &ctx.moto,
        &parts.method,
        &parts.headers,
        &path_and_query,
        body,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_GATEWAY, "ServerException", e),
    };
    // DescribeNodegroup: the status and release EKS would report.
    match &target {
        Some((cluster, group, tail))
            if cluster == &ctx.eks_cluster && tail.is_empty() && parts.method == "GET" =>
        {
            patch_describe(ctx, group, answer).await
        }
        _ => answer,
    }
}

async fn patch_describe(
    ctx: &Ctx,
    group: &str,
    answer: Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    let (head, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(head, Full::new(bytes));
    };
    {
        let inner = lock(&ctx.inner);
        if let Some(g) = inner.groups.get(group)
            && let Some(ng) = v.get_mut("nodegroup")
        {
            if let Some(r) = &g.release {
                ng["releaseVersion"] = json!(r);
            }
            if g.update.is_some() {
                ng["status"] = json!("UPDATING");
            }
        }
    }
    let mut head = head;
    head.headers.remove(hyper::header::CONTENT_LENGTH);
    Response::from_parts(head, Full::new(Bytes::from(v.to_string())))
}

async fn update_version(
    ctx: &Ctx,
    parts: &hyper::http::request::Parts,
    group: &str,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let req: Value = serde_json::from_slice(body).unwrap_or(json!({}));
    let token = req
        .get("clientRequestToken")
        .and_then(Value::as_str)
        .map(str::to_string);
    // The group must exist: ask moto, as the caller would.
    let mut headers = parts.headers.clone();
    headers.remove(hyper::header::CONTENT_LENGTH);
    headers.remove(hyper::header::CONTENT_TYPE);
    let describe = forward(
        &ctx.moto,
        &hyper::Method::GET,
        &headers,
        &format!("/clusters/{}/node-groups/{group}", ctx.eks_cluster),
        Bytes::new(),
    )
    .await;
    let moto_release = match describe {
        Ok(r) if r.status().is_success() => {
            let bytes = r
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.pointer("/nodegroup/releaseVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_default()
        }
        Ok(r) => return r,
        Err(e) => return error(StatusCode::BAD_GATEWAY, "ServerException", e),
    };
    let Some(release) = req
        .get("releaseVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "releaseVersion is required by this stand-in (EKS would take the latest)".into(),
        );
    };
    let mut inner = lock(&ctx.inner);
    let g = inner.groups.entry(group.to_string()).or_default();
    if let Some(u) = &g.update {
        if token.is_some() && u.token == token {
            return reply(StatusCode::OK, update_json(u));
        }
        return error(
            StatusCode::CONFLICT,
            "ResourceInUseException",
            format!("Nodegroup {group} is currently being updated"),
        );
    }
    let current = g.release.clone().unwrap_or(moto_release);
    if current == release {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            format!("Nodegroup {group} is already at release version {release}"),
        );
    }
    let u = Update {
        id: uuid::Uuid::new_v4().to_string(),
        token,
        release: release.clone(),
        created: chrono::Utc::now().timestamp() as f64,
    };
    let answer = update_json(&u);
    g.update = Some(u);
    event(&mut inner, group, "", NodeEventKind::UpdateStarted(release));
    reply(StatusCode::OK, answer)
}

fn update_json(u: &Update) -> Value {
    json!({
        "update": {
            "id": u.id,
            "status": "InProgress",
            "type": "VersionUpdate",
            "params": [{ "type": "ReleaseVersion", "value": u.release }],
            "createdAt": u.created,
            "errors": [],
        }
    })
}

async fn forward(
    upstream: &str,
    method: &hyper::Method,
    headers: &hyper::HeaderMap,
    path_and_query: &str,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, String> {
    let authority = upstream
        .strip_prefix("http://")
        .unwrap_or(upstream)
        .to_string();
    let exchange = async {
        let stream = TcpStream::connect(&authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let connection = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = headers.clone();
        request.headers_mut().remove(hyper::header::CONNECTION);
        if !request.headers().contains_key(hyper::header::HOST) {
            request.headers_mut().insert(
                hyper::header::HOST,
                hyper::header::HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
            );
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (head, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        drop(sender);
        connection.abort();
        let mut head = head;
        head.headers.remove(hyper::header::CONNECTION);
        head.headers.remove(hyper::header::TRANSFER_ENCODING);
        Ok::<_, String>(Response::from_parts(head, Full::new(body)))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "moto did not answer".to_string())?
}
