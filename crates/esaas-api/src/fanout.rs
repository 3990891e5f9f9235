//! Shared reads of what watchers send. When a cluster changes, every
//! watcher of it wakes wanting the same events (those after the revision
//! they last sent). One read per `(cluster, revision)` per process serves
//! them all: the first watcher starts it, the others wait for its answer,
//! and each sends the same encoded events. Operations likewise: one read
//! per operation, and at the safety tick one statement for the versions of
//! every watched operation, so only those that changed are read. The
//! database stays the only source of what is sent; only the number of
//! identical queries changes.

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

type Read<V> = Shared<BoxFuture<'static, Result<V, Status>>>;

/// Reads in flight by key: one read answers every caller that asks while it runs.
#[derive(Debug)]
struct SharedReads<K, V> {
    inflight: Arc<Mutex<HashMap<K, Read<V>>>>,
}

impl<K, V> Default for SharedReads<K, V> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

impl<K, V> SharedReads<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The answer of `read` for `key`, read once however many callers ask
    /// at the same time. The read runs in a task of its own, so it finishes
    /// (and leaves the table) even when every caller has gone.
    async fn get(
        &self,
        key: K,
        read: impl FnOnce() -> BoxFuture<'static, Result<V, Status>>,
    ) -> Result<V, Status> {
        let shared = {
            let mut inflight = self
                .inflight
                .lock()
                .map_err(|_| Status::internal("internal error"))?;
            match inflight.get(&key) {
                Some(shared) => shared.clone(),
                None => {
                    let table = self.inflight.clone();
                    let (done, fut) = (key.clone(), read());
                    let task = tokio::spawn(async move {
                        let result = fut.await;
                        if let Ok(mut map) = table.lock() {
                            map.remove(&done);
                        }
                        result
                    });
                    let shared = task
                        .map(|joined| {
                            joined.unwrap_or_else(|e| {
                                tracing::error!(error = %e, "a shared read failed");
                                Err(Status::internal("internal error"))
                            })
                        })
                        .boxed()
                        .shared();
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        shared.await
    }
}

/// Reads of cluster event logs in flight, by cluster and revision.
#[derive(Debug, Default)]
pub(crate) struct EventReads {
    reads: SharedReads<(Uuid, i64), Batch>,
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
        let store = store.clone();
        self.reads
            .get((uid, after), move || {
                async move {
                    let events = store
                        .events_after(uid, after, limit)
                        .await
                        .map_err(to_status)?;
                    Ok(Arc::new(
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
                    ))
                }
                .boxed()
            })
            .await
    }
}

/// The watchers of each operation: woken by its own changes, and at the
/// safety tick only when its version moved (one statement for all).
#[derive(Debug, Clone)]
pub(crate) struct OperationHub {
    store: Store,
    operations: Arc<Mutex<HashMap<Uuid, tokio::sync::broadcast::Sender<Wake>>>>,
    reads: Arc<SharedReads<Uuid, Arc<esaas_core::operation::Operation>>>,
}

impl OperationHub {
    /// Starts routing `changes` to the watchers of each operation.
    pub(crate) fn start(
        store: Store,
        changes: tokio::sync::broadcast::Receiver<esaas_store::Change>,
    ) -> Self {
        let hub = Self {
            store,
            operations: Arc::default(),
            reads: Arc::default(),
        };
        tokio::spawn(hub.clone().route(changes));
        hub
    }

    /// The wakes of operation `id` from now on.
    pub(crate) fn subscribe(&self, id: Uuid) -> tokio::sync::broadcast::Receiver<Wake> {
        match self.operations.lock() {
            Ok(mut ops) => ops
                .entry(id)
                .or_insert_with(|| tokio::sync::broadcast::channel(WAKES).0)
                .subscribe(),
            Err(_) => tokio::sync::broadcast::channel(1).1,
        }
    }

    /// Operation `id`, read once however many of its watchers ask at once.
    pub(crate) async fn read(
        &self,
        id: Uuid,
    ) -> Result<Arc<esaas_core::operation::Operation>, Status> {
        let store = self.store.clone();
        self.reads
            .get(id, move || {
                async move {
                    store
                        .get_operation(id)
                        .await
                        .map(Arc::new)
                        .map_err(to_status)
                }
                .boxed()
            })
            .await
    }

    async fn route(self, mut changes: tokio::sync::broadcast::Receiver<esaas_store::Change>) {
        use esaas_store::Change;
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let change = changes.recv().await;
            let watched: Vec<Uuid> = {
                let Ok(mut ops) = self.operations.lock() else {
                    return;
                };
                match change {
                    Ok(Change::Operation { id }) => {
                        if let Some(tx) = ops.get(&id)
                            && tx.send(Wake::Read).is_err()
                        {
                            ops.remove(&id);
                        }
                        continue;
                    }
                    Ok(Change::Resync | Change::Tick) | Err(RecvError::Lagged(_)) => {
                        // Operations nobody watches any more leave the table here.
                        ops.retain(|_, tx| tx.receiver_count() > 0);
                        ops.keys().copied().collect()
                    }
                    Ok(_) => continue,
                    Err(RecvError::Closed) => return,
                }
            };
            if watched.is_empty() {
                continue;
            }
            // Beside the routing, so a slow statement never holds up a change.
            let hub = self.clone();
            tokio::spawn(async move { hub.recheck(watched).await });
        }
    }

    /// One statement for the versions of `ids`: each watcher learns its
    /// operation's version and reads only when it moved. When the statement
    /// fails, every watcher reads (the safety net must not depend on it).
    async fn recheck(&self, ids: Vec<Uuid>) {
        let versions: HashMap<Uuid, i64> = match self.store.operation_versions(&ids).await {
            Ok(v) => v.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "re-checking watched operations failed");
                HashMap::new()
            }
        };
        let Ok(ops) = self.operations.lock() else {
            return;
        };
        for id in ids {
            if let Some(tx) = ops.get(&id) {
                let _ = tx.send(versions.get(&id).map_or(Wake::Read, |v| Wake::Revision(*v)));
            }
        }
    }
}

/// What a cluster's watchers are told: the log reached a revision, or read
/// again to be safe (the process-wide tick, a resync, missed notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The cluster's log reached this revision.
    Revision(i64),
    /// Read again.
    Read,
}

/// Notifications per cluster: a change wakes the watchers of that cluster
/// only, not every stream of the process.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchHub {
    clusters: Arc<Mutex<HashMap<Uuid, tokio::sync::broadcast::Sender<Wake>>>>,
}

/// Wakes buffered per cluster; a watcher that falls further behind reads again.
const WAKES: usize = 16;

impl WatchHub {
    /// Starts routing `changes` to the watchers of each cluster.
    pub(crate) fn start(changes: tokio::sync::broadcast::Receiver<esaas_store::Change>) -> Self {
        let hub = Self::default();
        tokio::spawn(hub.clone().route(changes));
        hub
    }

    /// The wakes of cluster `uid` from now on.
    pub(crate) fn subscribe(&self, uid: Uuid) -> tokio::sync::broadcast::Receiver<Wake> {
        match self.clusters.lock() {
            Ok(mut clusters) => clusters
                .entry(uid)
                .or_insert_with(|| tokio::sync::broadcast::channel(WAKES).0)
                .subscribe(),
            // A poisoned table: a receiver that only ever ends, so the stream ends.
            Err(_) => tokio::sync::broadcast::channel(1).1,
        }
    }

    async fn route(self, mut changes: tokio::sync::broadcast::Receiver<esaas_store::Change>) {
        use esaas_store::Change;
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let change = changes.recv().await;
            let Ok(mut clusters) = self.clusters.lock() else {
                return;
            };
            match change {
                Ok(Change::Cluster { uid, revision }) => {
                    if let Some(tx) = clusters.get(&uid)
                        && tx.send(Wake::Revision(revision)).is_err()
                    {
                        clusters.remove(&uid);
                    }
                }
                Ok(Change::Resync | Change::Tick) | Err(RecvError::Lagged(_)) => {
                    // Clusters nobody watches any more leave the table here.
                    clusters.retain(|_, tx| tx.send(Wake::Read).is_ok());
                }
                Ok(_) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use esaas_store::Change;
    use tokio::sync::broadcast;

    use super::*;

    async fn next(rx: &mut broadcast::Receiver<Wake>) -> Option<Wake> {
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .ok()
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn a_change_wakes_only_its_cluster_and_ticks_wake_all_and_sweep() {
        let (feed, _) = broadcast::channel(16);
        let hub = WatchHub::start(feed.subscribe());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rx_a = hub.subscribe(a);
        let mut rx_b = hub.subscribe(b);

        feed.send(Change::Cluster {
            uid: a,
            revision: 7,
        })
        .unwrap();
        assert_eq!(next(&mut rx_a).await, Some(Wake::Revision(7)));
        assert_eq!(next(&mut rx_b).await, None, "b's watchers sleep on");

        feed.send(Change::Tick).unwrap();
        assert_eq!(next(&mut rx_a).await, Some(Wake::Read));
        assert_eq!(next(&mut rx_b).await, Some(Wake::Read));

        // Nobody watches b any more: the next tick removes it.
        drop(rx_b);
        feed.send(Change::Tick).unwrap();
        assert_eq!(next(&mut rx_a).await, Some(Wake::Read));
        let watched: Vec<Uuid> = hub.clusters.lock().unwrap().keys().copied().collect();
        assert_eq!(watched, vec![a]);
    }
}
