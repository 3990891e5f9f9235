//! The worker's side of `WorkerService.Connect`: one stream, reconnected
//! with backoff; each assignment runs in its own task; every report waits
//! for its ack; heartbeats renew the leases three times per lease time. A
//! lost stream stops all work (its leases will go to another worker); a
//! shutdown stops the work and hands every lease back first.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use esaas_core::backend::{Elasticsearch, NodeGroups, Workloads};
use esaas_core::lifecycle::lease::LeaseEvent;
use esaas_core::names::OperationName;
use esaas_proto::convert::{
    assignment_from_pb, json_to_struct, lease_event_to_pb, lease_to_pb, observation_target_from_pb,
};
use esaas_proto::v1 as pb;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::executor::{Backends, ExecSettings, Job, Reporter, Stopped, execute, observe_facts};

/// How a worker process connects and works.
#[derive(Clone)]
pub struct WorkerConfig {
    /// `https://host[:port]` (or `http://` to loopback or in a mesh) of the control plane.
    pub control_plane: String,
    /// A PEM CA bundle that verifies an `https://` control plane instead of
    /// the system's roots.
    pub ca_pem: Option<String>,
    /// A WORKER key.
    pub key: String,
    /// Stable id of this worker.
    pub id: String,
    /// Region it provisions in.
    pub region: String,
    /// Operations it runs at once.
    pub capacity: i32,
    /// Observations it runs at once, besides its operations.
    pub observe_capacity: i32,
    /// Executor timing.
    pub exec: ExecSettings,
    /// How long to wait for the ack of a report.
    pub ack_timeout: Duration,
    /// How long a shutdown may take to hand leases back.
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("control_plane", &self.control_plane)
            .field("private_ca", &self.ca_pem.is_some())
            .field("key", &"<redacted>")
            .field("id", &self.id)
            .field("capacity", &self.capacity)
            .finish()
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<pb::ReportAck>>>>;

/// Sends reports on one lease and waits for their acks.
#[derive(Clone)]
struct LeaseReporter {
    lease: pb::LeaseRef,
    out: mpsc::Sender<pb::ConnectRequest>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    ack_timeout: Duration,
    /// How long a report answered "retry" (the control plane's database out
    /// of reach) is sent again before the worker gives up on it.
    retry_for: Duration,
}

/// How a report was not recorded.
enum NotRecorded {
    /// The control plane could not reach its database: send it again.
    Retry(String),
    /// Refused (or unanswered): the lease is not this worker's any more.
    Refused(String),
}

impl Reporter for LeaseReporter {
    async fn report(&self, event: LeaseEvent) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut delay = Duration::from_millis(200);
        loop {
            match self.send_once(event.clone()).await {
                Ok(()) => return Ok(()),
                Err(NotRecorded::Refused(reason)) => return Err(reason),
                Err(NotRecorded::Retry(reason))
                    if tokio::time::Instant::now() + delay > deadline =>
                {
                    return Err(format!("not recorded in time: {reason}"));
                }
                Err(NotRecorded::Retry(reason)) => {
                    tracing::warn!(operation = %self.lease.operation, %reason, "report not recorded; sending it again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

impl LeaseReporter {
    /// Sends one report and waits for its ack.
    async fn send_once(&self, event: LeaseEvent) -> Result<(), NotRecorded> {
        let gone = || NotRecorded::Refused("the stream to the control plane is gone".into());
        let report_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(report_id, tx);
        let msg = pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Report(pb::LeaseReport {
                lease: Some(self.lease.clone()),
                report_id,
                event: Some(lease_event_to_pb(event)),
            })),
        };
        if self.out.send(msg).await.is_err() {
            self.pending.lock().await.remove(&report_id);
            return Err(gone());
        }
        match tokio::time::timeout(self.ack_timeout, rx).await {
            Ok(Ok(ack)) if ack.accepted => Ok(()),
            Ok(Ok(ack)) if ack.retry => Err(NotRecorded::Retry(ack.reason)),
            Ok(Ok(ack)) => Err(NotRecorded::Refused(ack.reason)),
            Ok(Err(_)) => Err(gone()),
            Err(_) => {
                self.pending.lock().await.remove(&report_id);
                Err(NotRecorded::Refused(
                    "no ack from the control plane in time".into(),
                ))
            }
        }
    }
}

fn job_of(a: &pb::Assignment) -> esaas_core::Result<(Uuid, i64, Job, usize)> {
    let assigned = assignment_from_pb(a)?;
    Ok((
        assigned.target.operation,
        assigned.token,
        Job {
            target: assigned.target,
            kind: assigned.kind,
            gate_override: assigned.gate_override,
            params: assigned.params,
        },
        assigned.previous_attempts,
    ))
}

/// The span of one attempt at an operation: a child of the call that
/// queued it (its stored `traceparent`), however much later and in
/// whichever process it runs.
fn operation_span(a: &pb::Assignment, attempt: usize, worker: &str, job: &Job) -> tracing::Span {
    let span = tracing::info_span!(
        "operation",
        otel.name = %format_args!("operation {}", job.kind.as_str()),
        operation = %OperationName(job.target.operation),
        tenant = %job.target.tenant,
        cluster = %format_args!("tenants/{}/clusters/{}", job.target.tenant, job.target.cluster_id),
        kind = job.kind.as_str(),
        attempt,
        worker,
    );
    esaas_telemetry::context::continue_from(&span, &a.traceparent);
    span
}

struct Running {
    token: i64,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the worker until `shutdown` is cancelled, reconnecting as needed.
pub async fn run<N: NodeGroups, W: Workloads, E: Elasticsearch>(
    config: WorkerConfig,
    backends: Arc<Backends<N, W, E>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    // The session of the last stream: the next hello names it, so its
    // leases (whose work stopped with it) go back to the queue at once.
    let mut previous: Option<String> = None;
    loop {
        match session(&config, &backends, &shutdown, &mut previous).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(worker = %config.id, error = %format!("{e:#}"), "worker stream ended; reconnecting")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn session<N: NodeGroups, W: Workloads, E: Elasticsearch>(
    config: &WorkerConfig,
    backends: &Arc<Backends<N, W, E>>,
    shutdown: &CancellationToken,
    previous: &mut Option<String>,
) -> anyhow::Result<()> {
    // The SDK's connection: http:// or https:// (TLS), the key on every call.
    let mut builder = esaas_client::Client::builder(&config.control_plane)
        .key(&config.key)
        .connect_timeout(Duration::from_secs(5));
    if let Some(pem) = &config.ca_pem {
        builder = builder.ca_certificate_pem(pem.clone());
    }
    let control_plane = builder
        .connect()
        .await
        .context("connecting to the control plane")?;
    let (out, rx) = mpsc::channel::<pb::ConnectRequest>(256);
    out.send(pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Hello(pb::WorkerHello {
            worker_id: config.id.clone(),
            region: config.region.clone(),
            capacity: config.capacity,
            version: env!("CARGO_PKG_VERSION").into(),
            observe_capacity: config.observe_capacity,
            previous_session_id: previous.clone().unwrap_or_default(),
        })),
    })
    .await?;
    let mut inbound = control_plane
        .worker_service()
        .connect(ReceiverStream::new(rx))
        .await
        .context("WorkerService.Connect")?
        .into_inner();
    tracing::info!(worker = %config.id, "connected to the control plane");

    let pending: Pending = Arc::default();
    let next_id = Arc::new(AtomicU64::new(1));
    let mut running: HashMap<Uuid, Running> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Uuid>();
    // Observations in flight; dropped (aborted) with the session.
    let mut observations = tokio::task::JoinSet::new();
    let mut ttl = Duration::from_secs(30);
    let mut heartbeat = tokio::time::interval(ttl / 3);

    let result = loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => break Err(anyhow!("the control plane closed the stream")),
                    Err(s) => break Err(anyhow!("stream failed: {s}")),
                };
                match msg.message {
                    Some(pb::connect_response::Message::SessionStarted(s)) => {
                        tracing::info!(worker = %config.id, session = %s.session_id, "session started");
                        *previous = Some(s.session_id);
                    }
                    Some(pb::connect_response::Message::Assignment(a)) => {
                        if let Some(t) = a.lease_ttl.and_then(|d| Duration::try_from(d).ok())
                            && t != ttl
                        {
                            ttl = t;
                            heartbeat = tokio::time::interval(ttl / 3);
                        }
                        let (id, token, job, attempt) = match job_of(&a) {
                            Ok(j) => j,
                            Err(e) => {
                                tracing::error!(error = %e, "unusable assignment");
                                continue;
                            }
                        };
                        let reporter = LeaseReporter {
                            lease: lease_to_pb(id, token),
                            out: out.clone(),
                            pending: pending.clone(),
                            next_id: next_id.clone(),
                            ack_timeout: config.ack_timeout,
                            retry_for: ttl,
                        };
                        // Not a child of `shutdown`: on shutdown the hand-back
                        // stops each lease itself, then gives it back. A task
                        // that stopped on its own first would leave nothing to give.
                        let cancel = CancellationToken::new();
                        let span = operation_span(&a, attempt, &config.id, &job);
                        let task = tokio::spawn(run_lease(
                            job,
                            backends.clone(),
                            reporter,
                            config.exec,
                            cancel.clone(),
                            done_tx.clone(),
                            id,
                        ).instrument(span));
                        tracing::info!(worker = %config.id, operation = %id, token, "assignment started");
                        running.insert(id, Running { token, cancel, task });
                    }
                    Some(pb::connect_response::Message::Cancellation(c)) => {
                        if let Some(id) = c.lease.as_ref().and_then(|l| OperationName::parse("lease", &l.operation).ok())
                            && let Some(r) = running.remove(&id.0)
                        {
                            tracing::warn!(worker = %config.id, operation = %id, reason = %c.reason, "work cancelled by the control plane");
                            r.cancel.cancel();
                        }
                    }
                    Some(pb::connect_response::Message::Observe(req)) => {
                        let target = match observation_target_from_pb(&req) {
                            Ok(t) => t,
                            Err(e) => {
                                tracing::error!(error = %e, "unusable observation request");
                                continue;
                            }
                        };
                        let deadline = req
                            .deadline
                            .and_then(|d| Duration::try_from(d).ok())
                            .unwrap_or(Duration::from_secs(20));
                        // No lease: a lost observation is only a late one. The
                        // control plane bounds how many run at once.
                        let (backends, out) = (backends.clone(), out.clone());
                        let span = tracing::debug_span!("observe", cluster_uid = %target.uid);
                        observations.spawn(async move {
                            let facts = observe_facts(&backends, &target, deadline).await;
                            let facts = match serde_json::to_value(&facts) {
                                Ok(v) => json_to_struct(&v),
                                Err(e) => {
                                    tracing::error!(error = %e, "observation facts do not encode");
                                    return;
                                }
                            };
                            let report = pb::ConnectRequest {
                                message: Some(pb::connect_request::Message::Observation(pb::ObservationReport {
                                    cluster_uid: target.uid.to_string(),
                                    facts: Some(facts),
                                })),
                            };
                            let _ = out.send(report).await;
                        }.instrument(span));
                    }
                    Some(pb::connect_response::Message::Ack(ack)) => {
                        if let Some(tx) = pending.lock().await.remove(&ack.report_id) {
                            let _ = tx.send(ack);
                        }
                    }
                    None => {}
                }
            }
            _ = heartbeat.tick() => {
                let leases = running
                    .iter()
                    .map(|(id, r)| lease_to_pb(*id, r.token))
                    .collect();
                let hb = pb::ConnectRequest {
                    message: Some(pb::connect_request::Message::Heartbeat(pb::WorkerHeartbeat { leases })),
                };
                if out.send(hb).await.is_err() {
                    break Err(anyhow!("the stream to the control plane is gone"));
                }
            }
            Some(id) = done_rx.recv() => {
                running.remove(&id);
            }
            Some(_) = observations.join_next(), if !observations.is_empty() => {}
            _ = shutdown.cancelled() => {
                hand_back(config, &mut running, &out, &pending, &next_id, &mut inbound).await;
                break Ok(());
            }
        }
    };
    // Without the stream, the work of these leases must stop: the control
    // plane gives them to another worker.
    for (_, r) in running.drain() {
        r.cancel.cancel();
        r.task.abort();
    }
    result
}

async fn run_lease<N: NodeGroups, W: Workloads, E: Elasticsearch>(
    job: Job,
    backends: Arc<Backends<N, W, E>>,
    reporter: LeaseReporter,
    exec: ExecSettings,
    cancel: CancellationToken,
    done: mpsc::UnboundedSender<Uuid>,
    id: Uuid,
) {
    match execute(&job, &backends, &reporter, exec, &cancel).await {
        Ok(last) => {
            if let Err(reason) = reporter.report(last).await {
                tracing::warn!(operation = %id, %reason, "final report not accepted");
            }
        }
        Err(Stopped::Cancelled) => {}
        Err(Stopped::LeaseLost(reason)) => {
            tracing::warn!(operation = %id, %reason, "lease lost; stopping")
        }
    }
    let _ = done.send(id);
}

/// Stops every running lease and gives it back, so another worker takes it
/// over at once instead of after the lease expires.
async fn hand_back(
    config: &WorkerConfig,
    running: &mut HashMap<Uuid, Running>,
    out: &mpsc::Sender<pb::ConnectRequest>,
    pending: &Pending,
    next_id: &Arc<AtomicU64>,
    inbound: &mut tonic::Streaming<pb::ConnectResponse>,
) {
    let handed = running.drain().map(|(id, r)| {
        r.cancel.cancel();
        let reporter = LeaseReporter {
            lease: lease_to_pb(id, r.token),
            out: out.clone(),
            pending: pending.clone(),
            next_id: next_id.clone(),
            ack_timeout: config.shutdown_grace,
            retry_for: config.shutdown_grace,
        };
        async move {
            let _ = r.task.await;
            match reporter.report(LeaseEvent::HandedBack).await {
                Ok(()) => tracing::info!(operation = %id, "lease handed back"),
                Err(reason) => tracing::warn!(operation = %id, %reason, "hand-back not accepted; the lease will expire"),
            }
        }
    });
    let all = futures::future::join_all(handed);
    tokio::pin!(all);
    let deadline = tokio::time::sleep(config.shutdown_grace);
    tokio::pin!(deadline);
    // The acks of the hand-backs arrive on the stream: keep reading it.
    loop {
        tokio::select! {
            _ = &mut all => return,
            _ = &mut deadline => {
                tracing::warn!("shutdown grace ran out; remaining leases will expire");
                return;
            }
            msg = inbound.message() => match msg {
                Ok(Some(pb::ConnectResponse { message: Some(pb::connect_response::Message::Ack(ack)) })) => {
                    if let Some(tx) = pending.lock().await.remove(&ack.report_id) {
                        let _ = tx.send(ack);
                    }
                }
                Ok(Some(_)) => {}
                _ => return,
            },
        }
    }
}
