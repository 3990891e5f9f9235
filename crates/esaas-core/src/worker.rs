//! Workers as the control plane knows them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Result, Violations};

/// Most operations one worker may run at once.
pub const MAX_CAPACITY: i32 = 1000;

/// A worker as it introduces itself on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its id: 1 to 63 lowercase letters, digits, '-' or '.'.
    pub id: String,
    /// The region it provisions in.
    pub region: String,
    /// Operations it runs at once (1 to [`MAX_CAPACITY`]).
    pub capacity: i32,
    /// Its build version.
    pub version: String,
}

impl WorkerInfo {
    /// Checks the id and the capacity; `prefix` is the hello's path in the request.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let mut v = Violations::default();
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 63
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !id_ok {
            v.add(
                format!("{prefix}.worker_id"),
                "must be 1 to 63 lowercase letters, digits, '-' or '.'",
            );
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            v.add(
                format!("{prefix}.capacity"),
                format!(
                    "must be between 1 and {MAX_CAPACITY}, got {}",
                    self.capacity
                ),
            );
        }
        v.finish()
    }
}

/// One stream of a worker, as the control plane opened it. Leases belong to
/// a session, not to the worker id: two processes that call themselves the
/// same, or a reconnect that overlaps its old stream, never touch each
/// other's leases.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerSession {
    /// The worker id it said in its hello (shown in attempts and events).
    pub worker: String,
    /// Issued by the control plane when the stream opened.
    pub id: Uuid,
}

/// A connected worker: one entry per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Its id.
    pub id: String,
    /// The session of its stream.
    pub session: Uuid,
    /// The region it provisions in.
    pub region: String,
    /// Operations it runs at once.
    pub capacity: i32,
    /// Its build version.
    pub version: String,
    /// The operations leased to it now.
    pub leases: Vec<Uuid>,
    /// When its stream opened.
    pub connect_time: DateTime<Utc>,
    /// When it was last heard from.
    pub last_heartbeat_time: DateTime<Utc>,
}
