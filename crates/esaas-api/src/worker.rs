//! `esaas.v1.WorkerService`: one bidirectional stream per worker. The first
//! message introduces the worker; then the control plane assigns operations
//! up to its capacity (claimed with SKIP LOCKED), renews leases on
//! heartbeats, answers every report with an ack (refused when the lease is
//! no longer the worker's), and tells the worker to stop work that was
//! superseded. Leases belong to the stream's session, which the control plane
//! issues on connect: another stream under the same worker id never touches
//! them. When the stream ends, the session's leases go back to the queue,
//! without costing an attempt when the control plane was the one to close it.
//! A database out of reach does not end the stream: heartbeats and claims
//! wait for the next tick, and reports are answered "retry".

use std::collections::HashMap;
use std::time::Duration;

use esaas_core::lifecycle::lease::{Closer, LeaseEvent};
use esaas_core::worker::{WorkerInfo, WorkerSession};
use esaas_core::{Error, Result};
use esaas_proto::v1 as pb;
use esaas_store::{Change, Claimed};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use crate::Api;
use crate::error::{ApiResult, to_status};
use crate::watch::BoxStream;
use esaas_proto::convert::{
    assignment_to_pb, cluster_to_pb, hello_from_pb, lease_event_from_pb, lease_from_pb,
    lease_to_pb, struct_to_json,
};

/// How long after a notification of new work a worker stream claims it.
const CLAIM_COALESCE: Duration = Duration::from_millis(20);

/// Observation reports of one stream judged at once (each takes a read, and a
/// transaction when it changes something).
const JUDGES: usize = 4;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type Out = mpsc::Sender<Result<pb::ConnectResponse, Status>>;

struct Session {
    api: Api,
    worker: WorkerInfo,
    /// Who holds this stream's leases.
    holder: WorkerSession,
    /// The key that opened the stream, and when it is revoked.
    key: String,
    revocations: crate::auth::Revocations,
    out: Out,
    /// Leases assigned on this stream and not finished: operation → token.
    held: HashMap<Uuid, i64>,
    /// Observations the worker may run at once (from its hello).
    observe_capacity: usize,
    /// Observations asked of the worker and not answered: cluster uid → deadline.
    observing: HashMap<Uuid, tokio::time::Instant>,
    /// Observation reports being judged beside the stream, so that they never
    /// hold up the acks of lease reports; at most [`JUDGES`] at once.
    judges: std::sync::Arc<tokio::sync::Semaphore>,
    /// Counts this session in `esaas.workers.connected` while it lives.
    _connected: esaas_telemetry::metrics::Open,
}

impl Session {
    async fn send(&self, msg: pb::connect_response::Message) -> bool {
        self.out
            .send(Ok(pb::ConnectResponse { message: Some(msg) }))
            .await
            .is_ok()
    }

    async fn assign(&mut self) -> Result<bool> {
        let free = i64::from(self.worker.capacity) - self.held.len() as i64;
        if free <= 0 {
            return Ok(true);
        }
        let settings = self.api.settings().lease;
        let claimed = self
            .api
            .store()
            .claim(&self.holder, free, &settings)
            .await?;
        for Claimed { operation, cluster } in claimed {
            let assignment = assignment_to_pb(&operation, &cluster, settings.ttl);
            let token = assignment.lease.as_ref().map_or(0, |l| l.lease_token);
            self.held.insert(operation.id, token);
            tracing::info!(worker = %self.worker.id, operation = %operation.name(), cluster = %cluster.name(), token, "assigned");
            if !self
                .send(pb::connect_response::Message::Assignment(assignment))
                .await
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Asks the worker to observe the clusters that are due, up to its
    /// observation capacity. One it did not answer by the deadline is
    /// forgotten: the cluster's next observation is already scheduled.
    async fn observe(&mut self) -> Result<bool> {
        let now = tokio::time::Instant::now();
        self.observing.retain(|_, deadline| *deadline > now);
        let free = self.observe_capacity.saturating_sub(self.observing.len());
        if free == 0 {
            return Ok(true);
        }
        let settings = &self.api.settings().observe;
        let due = self
            .api
            .store()
            .claim_observations(free as i64, settings.interval, settings.jitter)
            .await?;
        let deadline = settings.deadline;
        for cluster in due {
            self.observing.insert(cluster.uid, now + deadline);
            let req = pb::ObservationRequest {
                cluster: Some(cluster_to_pb(&cluster)),
                deadline: prost_types::Duration::try_from(deadline).ok(),
            };
            if !self.send(pb::connect_response::Message::Observe(req)).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies what the worker saw. A report the session did not ask for
    /// (or too late), or that does not parse, is dropped with a warning: it
    /// changes nothing, and the stream stays.
    async fn observed(&mut self, report: pb::ObservationReport) {
        let Ok(uid) = Uuid::parse_str(&report.cluster_uid) else {
            tracing::warn!(worker = %self.worker.id, "observation report without a cluster uid");
            return;
        };
        if self.observing.remove(&uid).is_none() {
            tracing::info!(worker = %self.worker.id, cluster_uid = %uid, "observation report not asked for, or too late; ignored");
            return;
        }
        let facts = report
            .facts
            .as_ref()
            .map(struct_to_json)
            .map(serde_json::from_value::<esaas_core::lifecycle::observe::Facts>);
        let Some(Ok(facts)) = facts else {
            tracing::warn!(worker = %self.worker.id, cluster_uid = %uid, "observation report does not parse; ignored");
            return;
        };
        // Past JUDGES in flight the stream waits here: back-pressure, not a queue.
        let Ok(permit) = self.judges.clone().acquire_owned().await else {
            return;
        };
        let api = self.api.clone();
        tokio::spawn(
            async move {
                let settings = api.settings();
                let ctx = esaas_core::lifecycle::Ctx {
                    now: esaas_core::now(),
                    operation_id: Uuid::now_v7(),
                    cluster_uid: uid,
                    traceparent: None,
                };
                match api
                    .store()
                    .apply_observation(uid, &facts, &settings.observe.rules, &settings.rules, &ctx)
                    .await
                {
                    Ok(Some(change)) => {
                        tracing::info!(cluster = %change.cluster.name(), state = change.cluster.state.as_str(), health = change.cluster.health.as_str(), repair = ?change.operation.as_ref().map(|o| o.name().to_string()), "observation changed the cluster");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(cluster_uid = %uid, error = %e, "applying an observation failed; the next one will tell");
                    }
                }
                drop(permit);
            }
            .instrument(tracing::Span::current()),
        );
    }

    async fn handle(&mut self, msg: pb::ConnectRequest) -> Result<bool> {
        use pb::connect_request::Message;
        match msg.message {
            Some(Message::Observation(report)) => {
                self.observed(report).await;
                // Half the slots free: ask for more now rather than at the next
                // tick, so one stream keeps pace with a fleet larger than its
                // capacity per tick.
                if self.observing.len() * 2 <= self.observe_capacity {
                    self.observe().await
                } else {
                    Ok(true)
                }
            }
            Some(Message::Hello(_)) => {
                Err(Error::invalid("hello", "may only be the first message"))
            }
            None => Err(Error::invalid("message", "is required")),
            Some(Message::Heartbeat(hb)) => {
                let leases = hb
                    .leases
                    .iter()
                    .map(|l| lease_from_pb(Some(l), "lease"))
                    .collect::<Result<Vec<_>>>()?;
                let lost = match self
                    .api
                    .store()
                    .heartbeat(&self.holder, &leases, &self.api.settings().lease)
                    .await
                {
                    Ok(lost) => lost,
                    Err(e) if outage(&e) => {
                        // Not renewed, not lost either: the next heartbeat tries again.
                        tracing::warn!(worker = %self.worker.id, error = %e, "heartbeat not recorded");
                        return Ok(true);
                    }
                    Err(e) => return Err(e),
                };
                for l in lost {
                    self.held.remove(&l.operation);
                    let c = pb::Cancellation {
                        lease: Some(lease_to_pb(l.operation, l.token)),
                        reason: l.reason,
                    };
                    if !self
                        .send(pb::connect_response::Message::Cancellation(c))
                        .await
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Some(Message::Report(r)) => {
                let (id, token) = lease_from_pb(r.lease.as_ref(), "lease")?;
                let event = lease_event_from_pb(r.event)?;
                let last = event.ends_attempt();
                if let LeaseEvent::Failed {
                    retryable: true,
                    reason,
                    ..
                } = &event
                {
                    esaas_telemetry::metrics::metrics().retry(reason, "attempt");
                }
                let outcome = match self
                    .api
                    .store()
                    .report(&self.holder, id, token, event, &self.api.settings().lease)
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(e) if outage(&e) => {
                        let ack = pb::ReportAck {
                            lease: Some(lease_to_pb(id, token)),
                            report_id: r.report_id,
                            accepted: false,
                            reason: e.to_string(),
                            retry: true,
                        };
                        return Ok(self.send(pb::connect_response::Message::Ack(ack)).await);
                    }
                    Err(e) => return Err(e),
                };
                if last || outcome.is_err() {
                    self.held.remove(&id);
                }
                let ack = pb::ReportAck {
                    lease: Some(lease_to_pb(id, token)),
                    report_id: r.report_id,
                    accepted: outcome.is_ok(),
                    reason: outcome.err().map(|r| r.0).unwrap_or_default(),
                    retry: false,
                };
                if !ack.accepted {
                    tracing::warn!(worker = %self.worker.id, operation = %id, token, reason = %ack.reason, "report refused");
                }
                Ok(self.send(pb::connect_response::Message::Ack(ack)).await)
            }
        }
    }

    /// Claims and observation requests: an outage waits for the next tick.
    fn tolerate(&self, step: Result<bool>, what: &str) -> Result<bool> {
        match step {
            Err(e) if outage(&e) => {
                tracing::warn!(worker = %self.worker.id, error = %e, "{what} skipped; the next tick tries again");
                Ok(true)
            }
            other => other,
        }
    }

    async fn run(mut self, mut inbound: Streaming<pb::ConnectRequest>) {
        let mut feed = self.api.inner.feed.subscribe();
        let mut tick = tokio::time::interval(self.api.settings().claim_interval);
        // Notifications about operations come in bursts (every report is one):
        // they mark the session as having work to look for, and one claim
        // answers a burst, at most CLAIM_COALESCE after its first notification.
        let mut wake: Option<tokio::time::Instant> = None;
        // Who ends the stream decides whether its leases cost an attempt.
        let mut closer = Closer::Worker;
        loop {
            let wake_at = wake.unwrap_or_else(|| tokio::time::Instant::now() + CLAIM_COALESCE);
            let step = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => self.handle(msg).await,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(worker = %self.worker.id, %status, "worker stream broke");
                        break;
                    }
                },
                _ = tick.tick() => match self.assign().await {
                    Ok(true) => {
                        let observed = self.observe().await;
                        self.tolerate(observed, "observation requests")
                    }
                    other => self.tolerate(other, "claiming work"),
                },
                change = feed.recv() => match change {
                    Ok(Change::Cluster { .. } | Change::Keys | Change::Tick) => Ok(true),
                    // New or re-queued work, or missed notifications.
                    _ => {
                        wake.get_or_insert_with(|| tokio::time::Instant::now() + CLAIM_COALESCE);
                        Ok(true)
                    }
                },
                _ = tokio::time::sleep_until(wake_at), if wake.is_some() => {
                    wake = None;
                    let assigned = self.assign().await;
                    self.tolerate(assigned, "claiming work")
                }
                _ = self.out.closed() => break,
                _ = self.api.inner.shutdown.cancelled() => {
                    closer = Closer::ControlPlane;
                    break;
                }
                _ = self.revocations.revoked(&self.key) => {
                    // Its leases go back at no cost: the work was not at fault.
                    tracing::warn!(worker = %self.worker.id, session = %self.holder.id, "the worker's key was revoked; ending its stream");
                    let _ = self
                        .out
                        .send(Err(Status::unauthenticated("the API key of this stream was revoked")))
                        .await;
                    closer = Closer::ControlPlane;
                    break;
                }
            };
            match step {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let _ = self.out.send(Err(to_status(e))).await;
                    break;
                }
            }
        }
        let store = self.api.store();
        let session = self.holder.id;
        // Gone from the list first, then its leases back in the queue: whoever
        // sees a returned lease no longer sees its worker.
        if let Err(e) = store.unregister_worker(session).await {
            tracing::warn!(worker = %self.worker.id, %session, error = %e, "unregistering worker failed");
        }
        match store
            .release_session(session, None, closer, &self.api.settings().lease)
            .await
        {
            Ok(n) if n > 0 => {
                tracing::warn!(worker = %self.worker.id, %session, leases = n, ?closer, "stream ended; its leases are back in the queue")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(worker = %self.worker.id, error = %e, "returning leases failed; they will expire")
            }
        }
        tracing::info!(worker = %self.worker.id, %session, "worker disconnected");
    }
}

/// The database is out of reach (or restarting): worth waiting out, never
/// a reason to end a worker's stream.
fn outage(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. })
}

impl Api {
    async fn connect_impl(
        &self,
        req: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<BoxStream<pb::ConnectResponse>> {
        let principal = self.principal(&req).await?;
        principal.require_worker()?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Error::invalid("hello", "the first message must be hello, within 10 s"))?
            .map_err(|s| {
                Error::invalid(
                    "hello",
                    format!("the stream failed before hello: {}", s.message()),
                )
            })?;
        let hello = match first.and_then(|m| m.message) {
            Some(pb::connect_request::Message::Hello(h)) => h,
            _ => return Err(Error::invalid("hello", "the first message must be hello")),
        };
        let worker = hello_from_pb(&hello)?;
        let previous = match hello.previous_session_id.as_str() {
            "" => None,
            s => Some(Uuid::parse_str(s).map_err(|_| {
                Error::invalid("hello.previous_session_id", "must be a session id (a UUID)")
            })?),
        };
        // A worker that comes back has stopped its previous stream's work:
        // those leases go back to the queue now rather than when they
        // lapse. Only that session's, and only under the same worker id.
        if let Some(previous) = previous {
            self.store()
                .release_session(
                    previous,
                    Some(&worker.id),
                    Closer::Worker,
                    &self.settings().lease,
                )
                .await?;
        }
        let holder = WorkerSession {
            worker: worker.id.clone(),
            id: Uuid::now_v7(),
        };
        self.store().register_worker(&worker, holder.id).await?;
        tracing::info!(worker = %worker.id, session = %holder.id, capacity = worker.capacity, region = %worker.region, "worker connected");
        let (out, rx) = mpsc::channel(256);
        let started = pb::ConnectResponse {
            message: Some(pb::connect_response::Message::SessionStarted(
                pb::SessionStarted {
                    session_id: holder.id.to_string(),
                },
            )),
        };
        // The channel is new and empty: this cannot wait.
        let _ = out.try_send(Ok(started));
        let session = Session {
            api: self.clone(),
            worker,
            holder,
            key: principal.key.clone(),
            revocations: self.inner.auth.revocations(),
            out,
            held: HashMap::new(),
            observe_capacity: usize::try_from(hello.observe_capacity.clamp(0, 1000)).unwrap_or(0),
            observing: HashMap::new(),
            judges: std::sync::Arc::new(tokio::sync::Semaphore::new(JUDGES)),
            _connected: esaas_telemetry::metrics::metrics().worker_connected(),
        };
        tokio::spawn(session.run(inbound).instrument(tracing::Span::current()));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for Api {
    type ConnectStream = BoxStream<pb::ConnectResponse>;

    async fn connect(
        &self,
        req: Request<Streaming<pb::ConnectRequest>>,
    ) -> ApiResult<Self::ConnectStream> {
        self.connect_impl(req)
            .await
            .map(tonic::Response::new)
            .map_err(to_status)
    }
}
