//! Snapshots to S3: where a cluster's snapshots live, what they are called,
//! when the next one is due and which ones retention lets go. Pure rules;
//! the Elasticsearch adapter registers the repository and takes the
//! snapshots, the worker calls these to decide.
//!
//! Each cluster has one repository in the platform's snapshot bucket, under
//! `{tenant}/{cluster uid}`: the uid, not the name, so a cluster created
//! again under a deleted one's name never writes into the old one's
//! snapshots, and a restore can still find a deleted cluster's snapshots by
//! the uid its tombstone keeps. A restore registers the source's path
//! read-only in the new cluster (only one cluster may write to a repository,
//! the Elasticsearch reference says in "Snapshot repositories").

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::{ClusterId, TenantId};

/// The name a cluster's own repository has inside Elasticsearch.
pub const REPOSITORY: &str = "esaas";
/// The name a restore source's repository has in the cluster restoring from it.
pub const SOURCE_REPOSITORY: &str = "esaas-restore-source";

/// An `s3` snapshot repository as Elasticsearch is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Its name in the cluster.
    pub name: String,
    /// The platform's snapshot bucket.
    pub bucket: String,
    /// `{tenant}/{cluster uid}`.
    pub base_path: String,
    /// Registered without write access (a restore source).
    pub readonly: bool,
}

/// The base path of cluster `uid` of `tenant` in the bucket.
pub fn base_path(tenant: &TenantId, uid: Uuid) -> String {
    format!("{}/{uid}", tenant.as_str())
}

/// The cluster's own repository, which it writes its snapshots to.
pub fn own_repository(bucket: &str, tenant: &TenantId, uid: Uuid) -> Repository {
    Repository {
        name: REPOSITORY.into(),
        bucket: bucket.into(),
        base_path: base_path(tenant, uid),
        readonly: false,
    }
}

/// Another cluster's repository (`source_uid`, same tenant), read-only, to restore from.
pub fn source_repository(bucket: &str, tenant: &TenantId, source_uid: Uuid) -> Repository {
    Repository {
        name: SOURCE_REPOSITORY.into(),
        bucket: bucket.into(),
        base_path: base_path(tenant, source_uid),
        readonly: true,
    }
}

text_enum!(
    /// Why a snapshot was taken; part of its name.
    SnapshotKind {
        /// On the policy's schedule.
        Scheduled = "SCHEDULED",
        /// Asked for (`CreateSnapshot`).
        Manual = "MANUAL",
        /// Taken by a delete before anything is removed.
        Final = "FINAL",
    }
);

impl SnapshotKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
            Self::Final => "final",
        }
    }

    /// The kind a platform snapshot name says (`None`: not one of the platform's).
    pub fn of_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| name.starts_with(&format!("{}-", k.prefix())))
    }
}

/// The name of a snapshot the platform takes at `at`: `{kind}-{UTC time}`,
/// lowercase and free of the characters Elasticsearch refuses in a
/// snapshot name, sortable by time within a kind. Ties within a second
/// are left to Elasticsearch, which refuses a name that exists (a retry
/// of the same step then finds the snapshot it took).
pub fn snapshot_name(kind: SnapshotKind, at: DateTime<Utc>) -> String {
    format!("{}-{}", kind.prefix(), at.format("%Y%m%d-%H%M%S"))
}

/// The snapshot operation `operation` (a UUIDv7) takes: [`snapshot_name`]
/// at the operation's creation time, with six hex digits of its id so two
/// snapshots asked for in the same second get names of their own. Derived
/// from the operation alone, so every attempt of it means the same snapshot
/// (a retry finds the one an earlier attempt took).
pub fn operation_snapshot_name(kind: SnapshotKind, operation: Uuid) -> String {
    let at = operation
        .get_timestamp()
        .map(|t| {
            let (secs, nanos) = t.to_unix();
            DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), nanos)
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let id = operation.simple().to_string();
    format!("{}-{}", snapshot_name(kind, at), &id[id.len() - 6..])
}

/// When and how many: a cluster's snapshot policy (`spec.snapshot_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotPolicy {
    /// Hours between scheduled snapshots; 0: no scheduled snapshots.
    pub interval_hours: u32,
    /// How many scheduled snapshots to keep (manual and final ones are kept
    /// until deleted by their owner).
    pub retention: u32,
}

impl SnapshotPolicy {
    /// The platform default: daily, a week of them.
    pub const DEFAULT: Self = Self {
        interval_hours: 24,
        retention: 7,
    };

    /// Longest interval: a snapshot at least every 30 days.
    pub const MAX_INTERVAL_HOURS: u32 = 24 * 30;
    /// Most scheduled snapshots kept.
    pub const MAX_RETENTION: u32 = 100;

    /// Checks the policy; `field` names it in the error.
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.interval_hours > Self::MAX_INTERVAL_HOURS {
            return Err(Error::invalid(
                format!("{field}.interval_hours"),
                format!("at most {} hours", Self::MAX_INTERVAL_HOURS),
            ));
        }
        if self.interval_hours > 0 && !(1..=Self::MAX_RETENTION).contains(&self.retention) {
            return Err(Error::invalid(
                format!("{field}.retention"),
                format!(
                    "between 1 and {} when snapshots are scheduled",
                    Self::MAX_RETENTION
                ),
            ));
        }
        Ok(())
    }

    /// Whether a scheduled snapshot is due at `now`, given the last
    /// successful one (any kind counts: a manual snapshot an hour ago
    /// protects the data as well as a scheduled one would).
    pub fn due(&self, last_success: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        if self.interval_hours == 0 {
            return false;
        }
        match last_success {
            None => true,
            Some(at) => now - at >= Duration::hours(i64::from(self.interval_hours)),
        }
    }

    /// The scheduled snapshots retention lets go, oldest first: all but the
    /// newest `retention` of those named [`SnapshotKind::Scheduled`].
    /// Others (manual, final, or not the platform's) are never expired.
    pub fn expired<'a>(&self, names: &'a [String]) -> Vec<&'a str> {
        let prefix = format!("{}-", SnapshotKind::Scheduled.prefix());
        let mut scheduled: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        scheduled.sort_unstable();
        let keep = self.retention.max(1) as usize;
        let expire = scheduled.len().saturating_sub(keep);
        scheduled.truncate(expire);
        scheduled
    }
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

text_enum!(
    /// Where a snapshot stands, as Elasticsearch's get snapshot API says
    /// (`SnapshotState`): `PARTIAL` and `INCOMPATIBLE` count as failures here.
    SnapshotState {
        /// Still being written.
        InProgress = "IN_PROGRESS",
        /// Every shard was written.
        Success = "SUCCESS",
        /// Some shards could not be written.
        Partial = "PARTIAL",
        /// Nothing usable was written.
        Failed = "FAILED",
    }
);

impl SnapshotState {
    /// Elasticsearch's spelling (`INCOMPATIBLE`, from a newer version, is a failure).
    pub fn from_elasticsearch(s: &str) -> Self {
        Self::parse(s).unwrap_or(Self::Failed)
    }

    /// Whether a restore may use it.
    pub fn is_usable(self) -> bool {
        self == Self::Success
    }
}

/// One snapshot of a cluster's repository, as the worker observed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotObs {
    /// Its name in the repository.
    pub name: String,
    /// Where it stands.
    pub state: SnapshotState,
    /// Why it failed, as Elasticsearch says (empty otherwise).
    #[serde(default)]
    pub reason: String,
    /// The indices in it.
    #[serde(default)]
    pub indices: Vec<String>,
    /// When it started and ended.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended (`None` while in progress).
    pub end_time: Option<DateTime<Utc>>,
}

/// A snapshot the platform took, as recorded for `ListSnapshots` and restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The tenant that owns the cluster.
    pub tenant: TenantId,
    /// The cluster's name when it was taken.
    pub cluster_id: ClusterId,
    /// The incarnation it was taken of (its repository is `{tenant}/{uid}`).
    pub cluster_uid: Uuid,
    /// Why it was taken.
    pub kind: SnapshotKind,
    /// The operation that took it.
    pub operation: Uuid,
    /// What Elasticsearch reported.
    pub snapshot: SnapshotObs,
}

/// The snapshot part of a cluster's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    /// The newest snapshot that succeeded.
    #[serde(default)]
    pub last_success: Option<String>,
    /// When it ended.
    #[serde(default)]
    pub last_success_time: Option<DateTime<Utc>>,
    /// When the newest failure happened (newer than the last success while
    /// snapshots fail).
    #[serde(default)]
    pub last_failure_time: Option<DateTime<Utc>>,
    /// Why it failed.
    #[serde(default)]
    pub last_failure_reason: String,
    /// The snapshot a delete took before removing anything (a tombstone's).
    #[serde(default)]
    pub final_snapshot: Option<String>,
}

impl SnapshotStatus {
    /// Whether the newest outcome is a failure.
    pub fn failing(&self) -> bool {
        match (self.last_failure_time, self.last_success_time) {
            (Some(f), Some(s)) => f > s,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Where a restore reads from: a snapshot of a cluster of the same tenant
/// (which may be deleted), found by the cluster's name in the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// The source cluster's name when the snapshot was taken.
    pub cluster_id: ClusterId,
    /// The source incarnation (its repository is `{tenant}/{uid}`).
    pub cluster_uid: Uuid,
    /// The snapshot.
    pub snapshot: String,
    /// The indices to restore; empty: every index in the snapshot.
    #[serde(default)]
    pub indices: Vec<String>,
}

/// How long after a failed scheduled snapshot the next is tried: the
/// policy's interval, but at most an hour (a bucket fixed is seen soon; a
/// broken one is not hammered).
pub fn retry_after_failure(policy: &SnapshotPolicy) -> Duration {
    Duration::hours(i64::from(policy.interval_hours.clamp(1, 24))).min(Duration::hours(1))
}

/// Whether the observation queues a scheduled snapshot of a cluster
/// created at `created` with snapshot status `status`: the policy is due
/// counting from the last success (or, before any, from the cluster's
/// creation: a new cluster holds nothing worth a snapshot at once), and no
/// failure within [`retry_after_failure`].
pub fn scheduled_due(
    policy: &SnapshotPolicy,
    status: &SnapshotStatus,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let since = status.last_success_time.unwrap_or(created);
    if !policy.due(Some(since), now) {
        return false;
    }
    status
        .last_failure_time
        .is_none_or(|f| f <= since || now - f >= retry_after_failure(policy))
}

/// What a delete does about a final snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalSnapshot {
    /// It takes this snapshot before removing anything.
    Take(String),
    /// It takes none, for this reason.
    Skip(&'static str),
}

/// Whether delete operation `operation` takes a final snapshot: unless the
/// caller skips it, the platform has no snapshot bucket, or the cluster
/// never finished its create (it holds no data of its own).
pub fn final_snapshot(
    snapshots_enabled: bool,
    skip_requested: bool,
    created_once: bool,
    operation: Uuid,
) -> FinalSnapshot {
    match final_snapshot_skipped(snapshots_enabled, skip_requested, created_once) {
        Some(why) => FinalSnapshot::Skip(why),
        None => FinalSnapshot::Take(operation_snapshot_name(SnapshotKind::Final, operation)),
    }
}

/// Why a delete takes no final snapshot (see [`final_snapshot`]); `None`: it takes one.
pub fn final_snapshot_skipped(
    snapshots_enabled: bool,
    skip_requested: bool,
    created_once: bool,
) -> Option<&'static str> {
    if skip_requested {
        Some("skip_final_snapshot was set")
    } else if !snapshots_enabled {
        Some("snapshots are not configured on this platform")
    } else if !created_once {
        Some("the cluster never became ready, so it holds no data")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn repositories_live_under_the_tenant_and_the_cluster_uid() {
        let tenant = TenantId::parse("t", "acme").expect("tenant");
        let uid = Uuid::nil();
        let own = own_repository("snaps", &tenant, uid);
        assert_eq!(own.base_path, format!("acme/{uid}"));
        assert!(!own.readonly);
        let source = source_repository("snaps", &tenant, uid);
        assert_eq!(source.base_path, own.base_path);
        assert!(source.readonly);
        assert_ne!(source.name, own.name);
    }

    #[test]
    fn names_are_lowercase_timestamps_elasticsearch_takes() {
        let t = at("2026-03-04T05:06:07Z");
        for (kind, want) in [
            (SnapshotKind::Scheduled, "scheduled-20260304-050607"),
            (SnapshotKind::Manual, "manual-20260304-050607"),
            (SnapshotKind::Final, "final-20260304-050607"),
        ] {
            let name = snapshot_name(kind, t);
            assert_eq!(name, want);
            assert_eq!(name.to_lowercase(), name);
            assert!(!name.starts_with('_'));
            assert!(!name.contains(|c: char| "\\/*?\"<>|, #".contains(c)));
        }
    }

    #[test]
    fn a_snapshot_is_due_after_the_interval_since_the_last_success() {
        let now = at("2026-03-04T12:00:00Z");
        let daily = SnapshotPolicy::DEFAULT;
        let off = SnapshotPolicy {
            interval_hours: 0,
            retention: 0,
        };
        for (policy, last, due) in [
            (daily, None, true),
            (daily, Some("2026-03-03T12:00:00Z"), true),
            (daily, Some("2026-03-03T12:00:01Z"), false),
            (daily, Some("2026-03-04T11:00:00Z"), false),
            (off, None, false),
            (off, Some("2020-01-01T00:00:00Z"), false),
        ] {
            assert_eq!(policy.due(last.map(at), now), due, "{policy:?} {last:?}");
        }
    }

    #[test]
    fn retention_expires_only_the_oldest_scheduled_snapshots() {
        let names: Vec<String> = [
            "scheduled-20260301-000000",
            "manual-20260101-000000",
            "scheduled-20260303-000000",
            "final-20250101-000000",
            "scheduled-20260302-000000",
            "someone-elses",
        ]
        .map(String::from)
        .to_vec();
        let keep = |retention| SnapshotPolicy {
            interval_hours: 24,
            retention,
        };
        assert_eq!(
            keep(1).expired(&names),
            ["scheduled-20260301-000000", "scheduled-20260302-000000"]
        );
        assert_eq!(keep(2).expired(&names), ["scheduled-20260301-000000"]);
        assert!(keep(3).expired(&names).is_empty());
        assert!(keep(9).expired(&names).is_empty());
        // Never all of them, whatever the policy says.
        assert_eq!(keep(0).expired(&names).len(), 2);
    }

    #[test]
    fn policies_are_checked() {
        let ok = [
            SnapshotPolicy::DEFAULT,
            SnapshotPolicy {
                interval_hours: 0,
                retention: 0,
            },
            SnapshotPolicy {
                interval_hours: 1,
                retention: 100,
            },
        ];
        for p in ok {
            assert!(p.validate("snapshot_policy").is_ok(), "{p:?}");
        }
        let bad = [
            (24 * 31, 7, "snapshot_policy.interval_hours"),
            (24, 0, "snapshot_policy.retention"),
            (24, 101, "snapshot_policy.retention"),
        ];
        for (interval_hours, retention, field) in bad {
            let p = SnapshotPolicy {
                interval_hours,
                retention,
            };
            let e = p.validate("snapshot_policy").expect_err("refused");
            assert!(format!("{e:?}").contains(field), "{e:?}");
        }
    }

    #[test]
    fn an_operation_names_one_snapshot_of_its_own() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let name = operation_snapshot_name(SnapshotKind::Manual, a);
        assert_eq!(name, operation_snapshot_name(SnapshotKind::Manual, a));
        assert_ne!(name, operation_snapshot_name(SnapshotKind::Manual, b));
        assert!(name.starts_with("manual-20"), "{name}");
        assert_eq!(SnapshotKind::of_name(&name), Some(SnapshotKind::Manual));
        assert_eq!(SnapshotKind::of_name("final-x"), Some(SnapshotKind::Final));
        assert_eq!(SnapshotKind::of_name("nightly"), None);
        assert_eq!(name.to_lowercase(), name);
    }

    #[test]
    fn scheduled_snapshots_count_from_creation_and_back_off_after_a_failure() {
        let created = at("2026-03-01T00:00:00Z");
        let daily = SnapshotPolicy::DEFAULT;
        let none = SnapshotStatus::default();
        let ok_at = |t| SnapshotStatus {
            last_success_time: Some(at(t)),
            ..SnapshotStatus::default()
        };
        let failed_at = |ok: Option<&str>, f: &str| SnapshotStatus {
            last_success_time: ok.map(at),
            last_failure_time: Some(at(f)),
            last_failure_reason: "bucket".into(),
            ..SnapshotStatus::default()
        };
        let off = SnapshotPolicy {
            interval_hours: 0,
            retention: 0,
        };
        for (policy, status, now, due) in [
            (daily, none.clone(), "2026-03-01T23:59:59Z", false),
            (daily, none.clone(), "2026-03-02T00:00:00Z", true),
            (
                daily,
                ok_at("2026-03-05T00:00:00Z"),
                "2026-03-05T12:00:00Z",
                false,
            ),
            (
                daily,
                ok_at("2026-03-05T00:00:00Z"),
                "2026-03-06T00:00:00Z",
                true,
            ),
            (
                daily,
                failed_at(None, "2026-03-02T00:00:00Z"),
                "2026-03-02T00:30:00Z",
                false,
            ),
            (
                daily,
                failed_at(None, "2026-03-02T00:00:00Z"),
                "2026-03-02T01:00:00Z",
                true,
            ),
            // A failure older than the last success holds nothing back.
            (
                daily,
                failed_at(Some("2026-03-05T00:00:00Z"), "2026-03-04T23:00:00Z"),
                "2026-03-06T00:00:00Z",
                true,
            ),
            (off, none.clone(), "2027-01-01T00:00:00Z", false),
        ] {
            assert_eq!(
                scheduled_due(&policy, &status, created, at(now)),
                due,
                "{policy:?} {status:?} {now}"
            );
        }
        assert!(failed_at(None, "2026-03-02T00:00:00Z").failing());
        assert!(!failed_at(Some("2026-03-05T00:00:00Z"), "2026-03-04T00:00:00Z").failing());
        assert!(!none.failing());
    }

    #[test]
    fn a_delete_takes_a_final_snapshot_unless_skipped_off_or_never_created() {
        let op = Uuid::now_v7();
        assert!(matches!(
            final_snapshot(true, false, true, op),
            FinalSnapshot::Take(n) if n.starts_with("final-")
        ));
        for (enabled, skip, created, why) in [
            (true, true, true, "skip_final_snapshot"),
            (false, false, true, "not configured"),
            (true, false, false, "never became ready"),
        ] {
            match final_snapshot(enabled, skip, created, op) {
                FinalSnapshot::Skip(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn elasticsearch_states_that_are_not_success_are_not_usable() {
        for (s, usable) in [
            ("SUCCESS", true),
            ("PARTIAL", false),
            ("FAILED", false),
            ("IN_PROGRESS", false),
            ("INCOMPATIBLE", false),
        ] {
            assert_eq!(
                SnapshotState::from_elasticsearch(s).is_usable(),
                usable,
                "{s}"
            );
        }
    }
}
