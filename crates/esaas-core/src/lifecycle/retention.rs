//! What the platform forgets, and when; and where a watch may resume.
//!
//! Four kinds of record would otherwise grow for ever: cluster events (each
//! with a full snapshot of its cluster), the stored answers of idempotent
//! requests, the attempt logs of operations that ended long ago, and the
//! tombstones of deleted clusters. Each has a period ([`Retention`]); a sweep
//! turns the periods into [`Cutoffs`] at one instant and removes what the
//! predicates here call expired. The store's statements say the same thing in
//! SQL (`esaas-store/src/retention.rs`), and an integration test checks them
//! against these functions row by row.
//!
//! A watch resumes from a revision ([`resume_from`]): once the events after it
//! have expired, the watcher cannot be told what it missed, so it is told
//! that ([`Error::RevisionExpired`]) together with the oldest revision still
//! kept, and resynchronises: read the cluster, watch from its revision.

use chrono::{DateTime, Duration, Utc};

use crate::cluster::ClusterState;
use crate::error::{Error, Result};
use crate::operation::OperationState;

/// How long each kind of record is kept (configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events, counted from when they were written. The newest event of
    /// every cluster is kept whatever its age.
    pub events: Duration,
    /// The answers of idempotent requests (AIP-155 request ids): a retry
    /// with the same id within this period gets the first answer; after it
    /// the id is new again.
    pub idempotency: Duration,
    /// A DELETED cluster's tombstone (with its events and operations),
    /// counted from when it became DELETED. A tombstone that lists retained
    /// volumes stays while it lists them.
    pub tombstones: Duration,
    /// The attempt log of an ended operation beyond its last attempt,
    /// counted from when the operation ended.
    pub attempt_logs: Duration,
}

/// Attempts an ended operation keeps once its log has expired: the last,
/// which decided how the operation ended.
pub const KEPT_ATTEMPTS: usize = 1;

/// The instants before which each kind of record has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Events written before this have expired (except each cluster's newest).
    pub events: DateTime<Utc>,
    /// Idempotency records written before this have expired.
    pub idempotency: DateTime<Utc>,
    /// Tombstones last changed before this have expired (unless they list
    /// retained volumes).
    pub tombstones: DateTime<Utc>,
    /// Operations that ended before this keep only their last attempt.
    pub attempt_logs: DateTime<Utc>,
}

impl Retention {
    /// The cutoffs of a sweep at `now`. A period too long to subtract
    /// expires nothing.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Cutoffs {
        let before = |period: Duration| {
            now.checked_sub_signed(period)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        Cutoffs {
            events: before(self.events),
            idempotency: before(self.idempotency),
            tombstones: before(self.tombstones),
            attempt_logs: before(self.attempt_logs),
        }
    }
}

/// Whether an event has expired: older than the cutoff and not its
/// cluster's newest (`newest_revision`, the cluster's own revision). The
/// newest is kept so that every cluster's log says where it stands, and a
/// watcher one event behind can always resume.
pub fn event_expired(
    create_time: DateTime<Utc>,
    revision: i64,
    newest_revision: i64,
    cutoffs: &Cutoffs,
) -> bool {
    revision < newest_revision && create_time < cutoffs.events
}

/// Whether a stored answer to a request id has expired.
pub fn idempotency_expired(create_time: DateTime<Utc>, cutoffs: &Cutoffs) -> bool {
    create_time < cutoffs.idempotency
}

/// Whether a cluster's tombstone has expired: DELETED, unchanged since
/// before the cutoff (`update_time` is when it became DELETED), listing no
/// retained volumes — those volumes still exist, and the tombstone is where
/// their owner finds them — and no final snapshot that is still kept
/// (`final_snapshot_kept`: its record exists), for the same reason.
pub fn tombstone_expired(
    state: ClusterState,
    update_time: DateTime<Utc>,
    retained_volumes: &[String],
    final_snapshot_kept: bool,
    cutoffs: &Cutoffs,
) -> bool {
    state == ClusterState::Deleted
        && retained_volumes.is_empty()
        && !final_snapshot_kept
        && update_time < cutoffs.tombstones
}

/// Whether an operation's attempt log is trimmed to its last
/// [`KEPT_ATTEMPTS`]: it ended before the cutoff and has more than that.
pub fn attempt_log_expired(
    state: OperationState,
    end_time: Option<DateTime<Utc>>,
    attempts: usize,
    cutoffs: &Cutoffs,
) -> bool {
    state.is_done()
        && attempts > KEPT_ATTEMPTS
        && end_time.is_some_and(|t| t < cutoffs.attempt_logs)
}

/// Where a watch of `cluster` (whose newest revision is `newest`, and
/// whose oldest kept event is `oldest_kept`, `None` when it has none) that
/// asks for the events after `since` starts: the revision after which it
/// reads. `0` means "from now". A revision ahead of the log is invalid; one
/// whose next event has expired is [`Error::RevisionExpired`], naming the
/// oldest revision kept. A revision that is old but still followed by every
/// event is served as asked.
pub fn resume_from(
    cluster: &str,
    since: i64,
    newest: i64,
    oldest_kept: Option<i64>,
) -> Result<i64> {
    if since < 0 {
        return Err(Error::invalid("since_revision", "must not be negative"));
    }
    if since > newest {
        return Err(Error::invalid(
            "since_revision",
            format!("{since} is ahead of the cluster's log, whose newest revision is {newest}"),
        ));
    }
    if since == 0 || since == newest {
        return Ok(newest);
    }
    match oldest_kept {
        Some(oldest) if since + 1 >= oldest => Ok(since),
        // Events after `since` exist (since < newest) but the next one is gone.
        _ => Err(Error::RevisionExpired {
            name: cluster.to_string(),
            since,
            oldest: oldest_kept.unwrap_or(newest),
        }),
    }
}

/// Checks that the events a watch read continue its log without a gap:
/// `after` is the revision it last sent, `first` the revision of the first
/// event it read. Revisions of a cluster are contiguous, so a gap means
/// the events in it expired while the watch was behind.
pub fn continues(cluster: &str, after: i64, first: i64) -> Result<()> {
    if first == after + 1 {
        return Ok(());
    }
    Err(Error::RevisionExpired {
        name: cluster.to_string(),
        since: after,
        oldest: first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const NAME: &str = "tenants/t/clusters/c";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn retention() -> Retention {
        Retention {
            events: Duration::days(14),
            idempotency: Duration::hours(24),
            tombstones: Duration::days(30),
            attempt_logs: Duration::days(30),
        }
    }

    fn ago(d: Duration) -> DateTime<Utc> {
        now() - d
    }

    #[test]
    fn cutoffs_are_now_minus_each_period_and_saturate() {
        let c = retention().cutoffs(now());
        assert_eq!(c.events, ago(Duration::days(14)));
        assert_eq!(c.idempotency, ago(Duration::hours(24)));
        assert_eq!(c.tombstones, ago(Duration::days(30)));
        assert_eq!(c.attempt_logs, ago(Duration::days(30)));
        let forever = Retention {
            events: Duration::MAX,
            ..retention()
        };
        let c = forever.cutoffs(now());
        assert!(!event_expired(DateTime::<Utc>::MIN_UTC, 1, 2, &c));
    }

    #[test]
    fn events() {
        let c = retention().cutoffs(now());
        let cases = [
            // (age, revision, newest, expired, why)
            (Duration::days(15), 3, 9, true, "old and not the newest"),
            (
                Duration::days(14),
                3,
                9,
                false,
                "exactly at the cutoff is kept",
            ),
            (Duration::days(13), 3, 9, false, "young"),
            (
                Duration::days(400),
                9,
                9,
                false,
                "the newest of a cluster is kept however old",
            ),
            (
                Duration::days(400),
                8,
                9,
                true,
                "the one before the newest goes",
            ),
        ];
        for (age, revision, newest, expired, why) in cases {
            assert_eq!(
                event_expired(ago(age), revision, newest, &c),
                expired,
                "{why}"
            );
        }
    }

    #[test]
    fn idempotency_records() {
        let c = retention().cutoffs(now());
        let cases = [
            (Duration::hours(25), true, "a day and an hour old"),
            (Duration::hours(24), false, "exactly a day: kept"),
            (
                Duration::minutes(5),
                false,
                "a retry a few minutes later still replays",
            ),
        ];
        for (age, expired, why) in cases {
            assert_eq!(idempotency_expired(ago(age), &c), expired, "{why}");
        }
    }

    #[test]
    fn tombstones() {
        let c = retention().cutoffs(now());
        let kept = vec!["esaas-t/data-abc-c-default-0".to_string()];
        let cases: [(ClusterState, Duration, &[String], bool, &str); 6] = [
            (
                ClusterState::Deleted,
                Duration::days(31),
                &[],
                true,
                "old tombstone",
            ),
            (
                ClusterState::Deleted,
                Duration::days(29),
                &[],
                false,
                "young tombstone",
            ),
            (
                ClusterState::Deleted,
                Duration::days(400),
                &kept,
                false,
                "retained volumes keep it",
            ),
            (
                ClusterState::Deleting,
                Duration::days(400),
                &[],
                false,
                "still being deleted",
            ),
            (
                ClusterState::Ready,
                Duration::days(400),
                &[],
                false,
                "a live cluster never goes",
            ),
            (
                ClusterState::Failed,
                Duration::days(400),
                &[],
                false,
                "a failed cluster is live",
            ),
        ];
        for (state, age, retained, expired, why) in cases {
            assert_eq!(
                tombstone_expired(state, ago(age), retained, false, &c),
                expired,
                "{why}"
            );
        }
        // A final snapshot still kept keeps the tombstone that lists it.
        assert!(!tombstone_expired(
            ClusterState::Deleted,
            ago(Duration::days(400)),
            &[],
            true,
            &c
        ));
    }

    #[test]
    fn attempt_logs() {
        let c = retention().cutoffs(now());
        let old = Some(ago(Duration::days(31)));
        let cases = [
            (
                OperationState::Succeeded,
                old,
                3,
                true,
                "ended long ago with several attempts",
            ),
            (OperationState::Failed, old, 5, true, "failed long ago"),
            (
                OperationState::Cancelled,
                old,
                2,
                true,
                "cancelled long ago",
            ),
            (
                OperationState::Succeeded,
                old,
                1,
                false,
                "one attempt is already the minimum",
            ),
            (
                OperationState::Succeeded,
                Some(ago(Duration::days(3))),
                3,
                false,
                "ended recently",
            ),
            (
                OperationState::Running,
                old,
                3,
                false,
                "running: its log is live",
            ),
            (
                OperationState::Stalled,
                old,
                3,
                false,
                "stalled: may be retried",
            ),
            (
                OperationState::Queued,
                None,
                3,
                false,
                "queued again after a retry",
            ),
        ];
        for (state, end, attempts, expired, why) in cases {
            assert_eq!(
                attempt_log_expired(state, end, attempts, &c),
                expired,
                "{why}"
            );
        }
    }

    #[test]
    fn resuming() {
        let expired = |since, oldest| {
            Err::<i64, _>(Error::RevisionExpired {
                name: NAME.into(),
                since,
                oldest,
            })
        };
        // (since, newest, oldest kept, answer, why)
        type Case = (i64, i64, Option<i64>, Result<i64>, &'static str);
        let cases: [Case; 9] = [
            (
                0,
                40,
                Some(30),
                Ok(40),
                "0 means from now, whatever has expired",
            ),
            (40, 40, Some(30), Ok(40), "at the newest: nothing to send"),
            (
                29,
                40,
                Some(30),
                Ok(29),
                "the next event is the oldest kept",
            ),
            (35, 40, Some(30), Ok(35), "old but kept"),
            (28, 40, Some(30), expired(28, 30), "revision 29 expired"),
            (1, 40, Some(30), expired(1, 30), "long gone"),
            (1, 40, Some(1), Ok(1), "nothing expired yet"),
            (3, 40, None, expired(3, 40), "no event left"),
            (0, 0, None, Ok(0), "a log with nothing yet"),
        ];
        for (since, newest, oldest, want, why) in cases {
            let got = resume_from(NAME, since, newest, oldest);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{why}");
        }
        for (since, why) in [(-1, "negative"), (41, "ahead of the log")] {
            let got = resume_from(NAME, since, 40, Some(30));
            assert!(
                matches!(&got, Err(Error::InvalidArgument(v)) if v[0].field == "since_revision"),
                "{why}: {got:?}"
            );
        }
    }

    #[test]
    fn gaps() {
        assert!(continues(NAME, 7, 8).is_ok());
        let got = continues(NAME, 7, 12);
        assert!(
            matches!(
                got,
                Err(Error::RevisionExpired {
                    since: 7,
                    oldest: 12,
                    ..
                })
            ),
            "{got:?}"
        );
    }
}
