//! SQLSTATE codes become domain errors here, and only here.

use std::time::Duration;

use esaas_core::Error;

/// Maps a database error to the domain error.
pub fn db_error(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::Unavailable {
                message: "the database is not reachable".into(),
                retry_after: Duration::from_secs(1),
            }
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // serialization_failure, deadlock_detected: safe to retry.
            Some("40001") | Some("40P01") => Error::Unavailable {
                message: "a concurrent change conflicted; retry".into(),
                retry_after: Duration::from_millis(100),
            },
            // admin_shutdown, cannot_connect_now, too_many_connections, and
            // class 08 (connection exceptions): a restart or an outage.
            Some(code) if matches!(code, "57P01" | "57P03" | "53300") || code.starts_with("08") => {
                Error::Unavailable {
                    message: "the database is restarting or busy".into(),
                    retry_after: Duration::from_secs(1),
                }
            }
            _ => Error::Internal(format!("database: {e}")),
        },
        _ => Error::Internal(format!("database: {e}")),
    }
}

/// Whether `e` is a unique violation of `constraint`.
pub(crate) fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}
