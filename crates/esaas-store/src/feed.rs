//! Change notifications across server processes: one `LISTEN` connection per
//! process fans PostgreSQL notifications out to every watcher in it.
//!
//! A notification only says "something changed"; watchers then read what
//! changed from the tables, so a lost or coalesced notification can delay an
//! update but never lose one. When the listening connection drops, watchers
//! get `Change::Resync` and read again.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Store;

pub(crate) const CLUSTER_CHANNEL: &str = "esaas_cluster_events";
pub(crate) const OPERATION_CHANNEL: &str = "esaas_operations";
pub(crate) const KEYS_CHANNEL: &str = "esaas_api_keys";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A cluster's log reached `revision`.
    Cluster {
        /// The cluster uid.
        uid: Uuid,
        /// Its newest revision.
        revision: i64,
    },
    /// An operation changed.
    Operation {
        /// The operation id.
        id: Uuid,
    },
    /// An API key was revoked: forget cached keys.
    Keys,
    /// Notifications may have been missed: read everything again.
    Resync,
    /// The periodic safety re-read: every watcher of the process reads
    /// again at the same moment, so their reads can be shared.
    Tick,
}

/// The process-wide change feed.
#[derive(Debug)]
pub struct ChangeFeed {
    tx: broadcast::Sender<Change>,
    task: JoinHandle<()>,
    ticker: JoinHandle<()>,
}

impl ChangeFeed {
    /// Starts listening on `store`'s database, and sends [`Change::Tick`]
    /// every `tick`.
    pub fn start(store: &Store, tick: Duration) -> Self {
        let (tx, _) = broadcast::channel(16 * 1024);
        let task = tokio::spawn(listen(store.clone(), tx.clone()));
        let ticks = tx.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                let _ = ticks.send(Change::Tick);
            }
        });
        Self { tx, task, ticker }
    }

    /// A new receiver of changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
        self.ticker.abort();
    }
}

fn parse(channel: &str, payload: &str) -> Option<Change> {
    match channel {
        CLUSTER_CHANNEL => {
            let (uid, rev) = payload.split_once(':')?;
            Some(Change::Cluster {
                uid: uid.parse().ok()?,
                revision: rev.parse().ok()?,
            })
        }
        OPERATION_CHANNEL => Some(Change::Operation {
            id: payload.parse().ok()?,
        }),
        KEYS_CHANNEL => Some(Change::Keys),
        _ => None,
    }
}

async fn listen(store: Store, tx: broadcast::Sender<Change>) {
    loop {
        let mut listener = match PgListener::connect_with(store.pool()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "change feed cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener
            .listen_all([CLUSTER_CHANNEL, OPERATION_CHANNEL, KEYS_CHANNEL])
            .await
        {
            tracing::warn!(error = %e, "change feed cannot listen; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything that happened while we were not listening is re-read.
        let _ = tx.send(Change::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(change) = parse(n.channel(), n.payload()) {
                        let _ = tx.send(change);
                    }
                }
                Ok(None) => {
                    tracing::warn!("change feed connection lost; reconnected");
                    let _ = tx.send(Change::Resync);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        let id = Uuid::new_v4();
        assert_eq!(
            parse(CLUSTER_CHANNEL, &format!("{id}:7")),
            Some(Change::Cluster {
                uid: id,
                revision: 7
            })
        );
        assert_eq!(
            parse(OPERATION_CHANNEL, &id.to_string()),
            Some(Change::Operation { id })
        );
        assert_eq!(parse(CLUSTER_CHANNEL, "garbage"), None);
        assert_eq!(parse("other", "x"), None);
    }
}
