//! Watch streams. Each stream subscribes to the process's change feed first,
//! then reads state from the database, then, on every relevant notification
//! (or a periodic safety re-read), reads again what it has not sent yet. The
//! database is the only source of what is sent, so a stream never skips or
//! repeats an event, whichever server process made the change.

use std::collections::VecDeque;
use std::pin::Pin;

use esaas_core::cluster::ClusterState;
use esaas_core::lifecycle::retention;
use esaas_core::names::{ClusterName, OperationName};
use esaas_core::{Error, Result};
use esaas_proto::v1 as pb;
use esaas_store::Change;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};
use uuid::Uuid;

use crate::Api;
use crate::error::to_status;
use crate::fanout::Wake;
use esaas_proto::convert::{cluster_to_pb, operation_to_pb};

type Sender<T> = mpsc::Sender<Result<T, Status>>;
/// A server stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Events read from the database per query.
const BATCH: i64 = 256;
/// Messages buffered per stream before the stream's reader waits for the client.
const BUFFER: usize = 64;

/// Waits until a change relevant to `wanted` arrives, the process-wide
/// safety tick (every `watch_poll_seconds`: all streams re-read together, so
/// their reads are shared), or the client goes away (returns false then).
async fn wait_for_change<T>(
    rx: &mut broadcast::Receiver<Change>,
    tx: &Sender<T>,
    shutdown: &tokio_util::sync::CancellationToken,
    wanted: impl Fn(&Change) -> bool,
) -> bool {
    loop {
        tokio::select! {
            _ = tx.closed() => return false,
            _ = shutdown.cancelled() => {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the server is shutting down; reconnect and resume from the last revision you saw",
                    )))
                    .await;
                return false;
            }
            msg = rx.recv() => match msg {
                Ok(Change::Resync | Change::Tick) => return true,
                Ok(change) if wanted(&change) => return true,
                Ok(_) => {}
                // Missed notifications: read again to be safe.
                Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Err(broadcast::error::RecvError::Closed) => return true,
            },
        }
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
    _open: esaas_telemetry::metrics::Open,
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
            let last = self.last;
            tokio::select! {
                _ = self.api.inner.shutdown.cancelled() => {
                    self.done = true;
                    return Some((Err(Status::unavailable(
                        "the server is shutting down; reconnect and resume from the last revision you saw",
                    )), self));
                }
                msg = self.rx.recv() => {
                    self.read = match msg {
                        Ok(Wake::Read) => true,
                        Ok(Wake::Revision(revision)) => revision > last,
                        // Missed notifications: read again to be safe.
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => {
                            self.done = true;
                            false
                        }
                    };
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
            _open: esaas_telemetry::metrics::metrics().watch_opened(),
        };
        Ok(Box::pin(futures::stream::unfold(watch, ClusterWatch::next)))
    }

    pub(crate) async fn watch_operation_impl(
        &self,
        req: Request<pb::WatchOperationRequest>,
    ) -> Result<BoxStream<pb::WatchOperationResponse>> {
        let principal = self.principal(&req).await?;
        let name = OperationName::parse("name", &req.get_ref().name)?;
        let rx = self.inner.feed.subscribe();
        let op = self.store().get_operation(name.0).await?;
        principal.can_read(&op.tenant, "Operation", &name.to_string())?;
        let (tx, out) = mpsc::channel(BUFFER);
        let api = self.clone();
        let open = esaas_telemetry::metrics::metrics().watch_opened();
        tokio::spawn(async move {
            let _open = open;
            api.pump_operation(op, rx, tx).await
        });
        Ok(Box::pin(ReceiverStream::new(out)))
    }

    async fn pump_operation(
        &self,
        mut op: esaas_core::operation::Operation,
        mut rx: broadcast::Receiver<Change>,
        tx: Sender<pb::WatchOperationResponse>,
    ) {
        let id = op.id;
        let mut sent = 0;
        loop {
            if op.version > sent {
                sent = op.version;
                let msg = pb::WatchOperationResponse {
                    operation: Some(operation_to_pb(&op)),
                };
                if tx.send(Ok(msg)).await.is_err() || op.state.is_done() {
                    return;
                }
            }
            if !wait_for_change(
                &mut rx,
                &tx,
                &self.inner.shutdown,
                |c| matches!(c, Change::Operation { id: i } if *i == id),
            )
            .await
            {
                return;
            }
            op = match self.store().get_operation(id).await {
                Ok(op) => op,
                Err(e) => {
                    let _ = tx.send(Err(to_status(e))).await;
                    return;
                }
            };
        }
    }
}
