//! Shared reads of a cluster's event log. When a cluster changes, every
//! watcher of it wakes wanting the same events (those after the revision
//! they last sent). One read per `(cluster, revision)` per process serves
//! them all: the first watcher starts it, the others wait for its answer,
//! and each sends the same encoded events. The database stays the only
//! source of what is sent; only the number of identical queries changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use esaas_core::cluster::ClusterState;
use esaas_proto::convert::event_to_pb;
use esaas_proto::v1 as pb;
use esaas_store::Store;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tonic::Status;
use uuid::Uuid;

use crate::error::to_status;

/// One event, ready to send.
#[derive(Debug)]
pub(crate) struct Sendable {
    /// Its revision.
    pub revision: i64,
    /// Whether it is the cluster's tombstone (its last event).
    pub tombstone: bool,
    /// The message.
    pub message: pb::WatchClusterResponse,
}

/// The answer to one read: the events after a revision, in order.
pub(crate) type Batch = Arc<Vec<Sendable>>;

type Read = Shared<BoxFuture<'static, Result<Batch, Status>>>;

/// Reads in flight, by cluster and revision.
#[derive(Debug, Default)]
pub(crate) struct EventReads {
    inflight: Arc<Mutex<HashMap<(Uuid, i64), Read>>>,
}

impl EventReads {
    /// The events of `uid` after `after` (at most `limit`), read once however
    /// many callers ask at the same time.
    pub(crate) async fn after(
        &self,
        store: &Store,
        uid: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Batch, Status> {
        let read = {
            let mut inflight = self
                .inflight
                .lock()
                .map_err(|_| Status::internal("internal error"))?;
            match inflight.get(&(uid, after)) {
                Some(read) => read.clone(),
                None => {
                    let read = self.start(store.clone(), uid, after, limit);
                    inflight.insert((uid, after), read.clone());
                    read
                }
            }
        };
        read.await
    }

    /// Runs the read in a task of its own, so it finishes (and leaves the
    /// table) even when every caller has gone.
    fn start(&self, store: Store, uid: Uuid, after: i64, limit: i64) -> Read {
        let inflight = self.inflight.clone();
        let task = tokio::spawn(async move {
            let result = store
                .events_after(uid, after, limit)
                .await
                .map_err(to_status)
                .map(|events| {
                    Arc::new(
                        events
                            .iter()
                            .map(|e| Sendable {
                                revision: e.revision,
                                tombstone: e.snapshot.state == ClusterState::Deleted,
                                message: pb::WatchClusterResponse {
                                    payload: Some(pb::watch_cluster_response::Payload::Event(
                                        event_to_pb(e),
                                    )),
                                },
                            })
                            .collect::<Vec<_>>(),
                    )
                });
            if let Ok(mut map) = inflight.lock() {
                map.remove(&(uid, after));
            }
            result
        });
        task.map(|joined| {
            joined.unwrap_or_else(|e| {
                tracing::error!(error = %e, "reading cluster events failed");
                Err(Status::internal("internal error"))
            })
        })
        .boxed()
        .shared()
    }
}
