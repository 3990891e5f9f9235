//! `WatchCluster`, resumed from the last revision after every reconnect.

use futures::stream::BoxStream;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::retry::is_resumable;
use crate::v1;
use crate::v1::watch_cluster_response::Payload;

/// One item of [`Client::watch_cluster`].
///
/// ```
/// use esaas_client::WatchItem;
/// fn revision(item: &WatchItem) -> i64 {
///     match item {
///         WatchItem::Cluster(c) => c.revision,
///         WatchItem::Event(e) => e.revision,
///         WatchItem::Resumed { revision } => *revision,
///         WatchItem::Resynced { cluster, .. } => cluster.revision,
///     }
/// }
/// assert_eq!(revision(&WatchItem::Resumed { revision: 7 }), 7);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// The cluster as it was when the watch began (the first item).
    Cluster(v1::Cluster),
    /// One event of the cluster's log, in revision order, none missed or repeated.
    Event(v1::ClusterEvent),
    /// The connection dropped and the watch was opened again after `revision`, the
    /// last one received: what follows continues without a gap.
    Resumed {
        /// The last revision received before the reconnect.
        revision: i64,
    },
    /// The events after `after` had expired on the server (its retention period)
    /// when the watch asked for them, so they cannot be delivered: here is the
    /// cluster as it is now instead, and the events that follow continue from its
    /// revision. What happened in between is summed up by this state, not told
    /// event by event.
    Resynced {
        /// The last revision received (or asked for) before the gap.
        after: i64,
        /// The cluster now.
        cluster: v1::Cluster,
    },
}

/// What the next snapshot of the cluster means to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// The first connection: the watch's first item.
    First,
    /// A reconnect after a drop: the events continue without a gap.
    Resume,
    /// A reconnect after the events after this revision expired.
    Resync(i64),
}

impl Client {
    /// The cluster now, then every event after `since_revision` (0: after the
    /// state sent first), as long as the stream is read. When the connection drops
    /// (a control plane restarting, a network blip) the watch is opened again from
    /// the last revision it delivered and says so with [`WatchItem::Resumed`]. When
    /// the server no longer keeps the events after that revision (`OUT_OF_RANGE`,
    /// they outlived its retention period), the watch resynchronises by itself: it
    /// opens again from now and yields [`WatchItem::Resynced`] with the cluster as it
    /// is, then the events after it. After the policy's reconnects run out, or on an
    /// answer that retrying cannot change (NOT_FOUND, PERMISSION_DENIED), the stream
    /// ends with that error.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use esaas_client::WatchItem;
    /// use futures::TryStreamExt;
    /// let mut watch = client.watch_cluster("tenants/search/clusters/logs", 0);
    /// while let Some(item) = watch.try_next().await? {
    ///     match item {
    ///         WatchItem::Cluster(c) => println!("now at revision {}", c.revision),
    ///         WatchItem::Event(e) => println!("{:>4} {:?} {}", e.revision, e.r#type(), e.message),
    ///         WatchItem::Resumed { revision } => eprintln!("reconnected after {revision}"),
    ///         WatchItem::Resynced { after, cluster } => {
    ///             eprintln!("events after {after} expired; now at {}", cluster.revision)
    ///         }
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch_cluster(
        &self,
        name: &str,
        since_revision: i64,
    ) -> BoxStream<'static, Result<WatchItem>> {
        let client = self.clone();
        let name = name.to_string();
        Box::pin(async_stream::try_stream! {
            let mut reconnects = client.retry.reconnects();
            // None until the first snapshot tells where "now" is, when asked for 0.
            let mut last: Option<i64> = (since_revision > 0).then_some(since_revision);
            let mut opening = Opening::First;
            loop {
                let req = v1::WatchClusterRequest {
                    name: name.clone(),
                    since_revision: last.unwrap_or(0),
                };
                let failure = match client.cluster_service().watch_cluster(req).await {
                    Err(status) => status,
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        loop {
                            let msg = match stream.message().await {
                                Ok(Some(msg)) => msg,
                                Ok(None) => break tonic::Status::unavailable("the watch ended"),
                                Err(status) => break status,
                            };
                            reconnects = client.retry.reconnects();
                            match msg.payload {
                                Some(Payload::Cluster(c)) => match opening {
                                    // The reader has this cluster's history up to
                                    // `last`; the events that follow continue it.
                                    Opening::Resume => {
                                        yield WatchItem::Resumed { revision: last.unwrap_or(0) }
                                    }
                                    Opening::First => {
                                        last.get_or_insert(c.revision);
                                        yield WatchItem::Cluster(c);
                                    }
                                    Opening::Resync(after) => {
                                        last = Some(c.revision);
                                        yield WatchItem::Resynced { after, cluster: c };
                                    }
                                },
                                Some(Payload::Event(e)) if last.is_none_or(|l| e.revision > l) => {
                                    last = Some(e.revision);
                                    yield WatchItem::Event(e);
                                }
                                // Already delivered before a reconnect.
                                Some(Payload::Event(_)) | None => {}
                            }
                        }
                    }
                };
                // The events after `last` expired: start again from now (a watch
                // from 0 is never out of range, so this cannot repeat).
                if failure.code() == tonic::Code::OutOfRange
                    && let Some(after) = last.take()
                {
                    opening = Opening::Resync(after);
                    continue;
                }
                if !is_resumable(&failure) || !reconnects.wait(&failure).await {
                    Err(Error::from(failure))?;
                }
                // A resync not yet told stays a resync.
                if !matches!(opening, Opening::Resync(_)) {
                    opening = Opening::Resume;
                }
            }
        })
    }
}
