//! Watch streams. Each stream subscribes to the process's change feed first,
//! then reads state from the database, then, on every relevant notification
//! (or a periodic safety re-read), reads again what it has not sent yet. The
//! database is the only source of what is sent, so a stream never skips or
//! repeats an event, whichever server process made the change.
//!
//! Every stream holds one of its tenant's slots (`max_watch_streams_per_tenant`
//! in this process) while it is open, and ends with UNAUTHENTICATED once the
//! key that opened it is revoked. Streams are polled by the connection that
//! sends them: no task and no channel of their own.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use esaas_core::cluster::ClusterState;
use esaas_core::lifecycle::retention;
use esaas_core::names::{ClusterName, OperationName};
use esaas_core::{Error, Result};
use esaas_proto::v1 as pb;
use futures::Stream;
use tokio::sync::broadcast;
use tonic::{Request, Status};
use uuid::Uuid;

use crate::Api;
use crate::auth::Revocations;
use crate::error::to_status;
use crate::fanout::Wake;
use crate::streams::Slot;
use esaas_proto::convert::{cluster_to_pb, operation_to_pb};

/// A server stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Events read from the database per query.
const BATCH: i64 = 256;
const SHUTTING_DOWN: &str =
    "the server is shutting down; reconnect and resume from the last revision you saw";

/// What every stream holds while it is open: its tenant's slot, and the
/// revocation of the key that opened it.
struct Held {
    _slot: Slot,
    key: String,
    revocations: Revocations,
    _open: esaas_telemetry::metrics::Open,
}

impl Held {
    async fn revoked(&mut self) -> Status {
        self.revocations.revoked(&self.key).await;
        Status::unauthenticated("the API key of this stream was revoked")
    }
}

/// What woke a stream waiting for news.
enum Woken {
    /// A wake: whether there is something after what was sent to read.
    Read(bool),
    /// Nothing more will come.
    Closed,
    /// The stream ends with this status (shutdown, or its key revoked).
    Ended(Status),
}

/// Waits for the next wake of a stream that has sent up to `sent` (a
/// revision or a version), for the server's shutdown, or for its key's revocation.
async fn woken(api: &Api, held: &mut Held, rx: &mut broadcast::Receiver<Wake>, sent: i64) -> Woken {
    tokio::select! {
        _ = api.inner.shutdown.cancelled() => Woken::Ended(Status::unavailable(SHUTTING_DOWN)),
        status = held.revoked() => Woken::Ended(status),
        msg = rx.recv() => match msg {
            Ok(Wake::Read) => Woken::Read(true),
            Ok(Wake::Revision(at)) => Woken::Read(at > sent),
            // Missed notifications: read again to be safe.
            Err(broadcast::error::RecvError::Lagged(_)) => Woken::Read(true),
            Err(broadcast::error::RecvError::Closed) => Woken::Closed,
        },
    }
}

/// One WatchCluster stream: what is left to send, and where it is in the log.
struct ClusterWatch {
    api: Api,
    uid: Uuid,
    /// The cluster's name, for errors.
    name: String,
    /// The newest revision sent.
    last: i64,
    rx: broadcast::Receiver<Wake>,
    pending: VecDeque<pb::WatchClusterResponse>,
    /// The log must be read (a change, the safety tick, or more to page).
    read: bool,
    /// Nothing more will come: end after `pending`.
    done: bool,
    held: Held,
}

type WatchItem = Result<pb::WatchClusterResponse, Status>;

impl ClusterWatch {
    async fn next(mut self) -> Option<(WatchItem, Self)> {
        loop {
            if let Some(msg) = self.pending.pop_front() {
                return Some((Ok(msg), self));
            }
            if self.done {
                return None;
            }
            if self.read {
                let inner = &self.api.inner;
                let events = match inner
                    .events
                    .after(&inner.store, self.uid, self.last, BATCH)
                    .await
                {
                    Ok(events) => events,
                    Err(status) => {
                        self.done = true;
                        return Some((Err(status), self));
                    }
                };
                self.read = events.len() as i64 == BATCH;
                for event in events.iter() {
                    // Events behind a slow watcher can expire while it reads.
                    if let Err(e) = retention::continues(&self.name, self.last, event.revision) {
                        self.done = true;
                        self.pending.clear();
                        return Some((Err(to_status(e)), self));
                    }
                    self.last = event.revision;
                    self.pending.push_back(event.message.clone());
                    if event.tombstone {
                        // The tombstone is the last event a cluster ever has.
                        self.done = true;
                        break;
                    }
                }
                continue;
            }
            match woken(&self.api, &mut self.held, &mut self.rx, self.last).await {
                Woken::Read(read) => self.read = read,
                Woken::Closed => self.done = true,
                Woken::Ended(status) => {
                    self.done = true;
                    return Some((Err(status), self));
                }
            }
        }
    }
}

impl Api {
    pub(crate) async fn watch_cluster_impl(
        &self,
        req: Request<pb::WatchClusterRequest>,
    ) -> Result<BoxStream<pb::WatchClusterResponse>> {
        let principal = self.principal(&req).await?;
        let r = req.into_inner();
        let name = ClusterName::parse("name", &r.name)?;
        tracing::Span::current().record("cluster", name.to_string());
        principal.can_read(&name.tenant, "Cluster", &name.to_string())?;
        let held = self.hold(&principal)?;
        if r.since_revision < 0 {
            return Err(Error::invalid("since_revision", "must not be negative"));
        }
        let cluster = self.store().get_cluster(&name).await?;
        // The stream's first step reads the log after `from`, and it
        // subscribes before that read: nothing committed in between is missed.
        let rx = self.inner.watches.subscribe(cluster.uid);
        // Only a resume from the past needs to know what is still kept.
        let oldest = match r.since_revision {
            since if since > 0 && since < cluster.revision => {
                self.store().oldest_revision(cluster.uid).await?
            }
            _ => None,
        };
        let from = retention::resume_from(
            &name.to_string(),
            r.since_revision,
            cluster.revision,
            oldest,
        )?;
        let first = pb::WatchClusterResponse {
            payload: Some(pb::watch_cluster_response::Payload::Cluster(cluster_to_pb(
                &cluster,
            ))),
        };
        let deleted = cluster.state == ClusterState::Deleted && from == cluster.revision;
        // The stream is polled by the connection that sends it: no task and
        // no channel of its own per watcher, and it ends when the client goes.
        let watch = ClusterWatch {
            api: self.clone(),
            uid: cluster.uid,
            name: name.to_string(),
            last: from,
            rx,
            pending: VecDeque::from([first]),
            read: !deleted,
            done: deleted,
            held,
        };
        Ok(Box::pin(futures::stream::unfold(watch, ClusterWatch::next)))
    }

    /// A slot for a new stream of `principal`, and its key's revocation.
    fn hold(&self, principal: &esaas_core::auth::Principal) -> Result<Held> {
        Ok(Held {
            _slot: self.inner.streams.open(principal)?,
            key: principal.key.clone(),
            revocations: self.inner.auth.revocations(),
            _open: esaas_telemetry::metrics::metrics().watch_opened(),
        })
    }

    pub(crate) async fn watch_operation_impl(
        &self,
        req: Request<pb::WatchOperationRequest>,
    ) -> Result<BoxStream<pb::WatchOperationResponse>> {
        let principal = self.principal(&req).await?;
        let name = OperationName::parse("name", &req.get_ref().name)?;
        // Subscribed before the first read: nothing committed after it is missed.
        let rx = self.inner.operations.subscribe(name.0);
        let op = self.store().get_operation(name.0).await?;
        principal.can_read(&op.tenant, "Operation", &name.to_string())?;
        let held = self.hold(&principal)?;
        let watch = OperationWatch {
            api: self.clone(),
            id: op.id,
            sent: 0,
            rx,
            op: Some(Arc::new(op)),
            read: false,
            done: false,
            held,
        };
        Ok(Box::pin(futures::stream::unfold(
            watch,
            OperationWatch::next,
        )))
    }
}

/// One WatchOperation stream: the operation each time its version moves,
/// until it is done.
struct OperationWatch {
    api: Api,
    id: Uuid,
    /// The newest version sent.
    sent: i64,
    rx: broadcast::Receiver<Wake>,
    /// Read and not yet looked at.
    op: Option<Arc<esaas_core::operation::Operation>>,
    /// The operation must be read again.
    read: bool,
    /// Nothing more will come.
    done: bool,
    held: Held,
}

type OperationItem = Result<pb::WatchOperationResponse, Status>;

impl OperationWatch {
    async fn next(mut self) -> Option<(OperationItem, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(op) = self.op.take() {
                if op.version > self.sent {
                    self.sent = op.version;
                    self.done = op.state.is_done();
                    let msg = pb::WatchOperationResponse {
                        operation: Some(operation_to_pb(&op)),
                    };
                    return Some((Ok(msg), self));
                }
                continue;
            }
            if self.read {
                self.read = false;
                match self.api.inner.operations.read(self.id).await {
                    Ok(op) => self.op = Some(op),
                    Err(status) => {
                        self.done = true;
                        return Some((Err(status), self));
                    }
                }
                continue;
            }
            match woken(&self.api, &mut self.held, &mut self.rx, self.sent).await {
                Woken::Read(read) => self.read = read,
                Woken::Closed => self.done = true,
                Woken::Ended(status) => {
                    self.done = true;
                    return Some((Err(status), self));
                }
            }
        }
    }
}
