//! The PostgreSQL store: the control plane's source of truth.
//!
//! The store loads, locks and saves; it decides nothing. Every change runs
//! in one transaction ([`Store::transaction`], or [`Store::run`] for the
//! API's mutating calls): load and lock the rows (`load`), ask the rule in
//! `esaas_core::lifecycle` what changes, write its change set (`save`). A
//! cluster, its operations and its event commit together or not at all, and
//! the change notification (`pg_notify`) is delivered by PostgreSQL only when
//! that transaction commits. SQLSTATE codes become domain errors in `error`.
//!
//! Queries are checked at run time by the integration tests, which run every
//! one of them against a real PostgreSQL. The only dynamic SQL
//! (`AssertSqlSafe`) interpolates constant column lists; values are always
//! bound parameters.

mod clusters;
mod error;
mod events;
mod feed;
mod keys;
mod leases;
mod load;
mod observations;
mod operations;
mod retention;
mod rows;
mod save;
mod tenants;
mod tx;
mod workers;

pub use clusters::{ClusterFilter, ClusterPage};
pub use feed::{Change, ChangeFeed};
pub use keys::{KeyFilter, KeyScope, NewApiKey};
pub use leases::{Claimed, LeaseSettings, QueueStats};
pub use operations::OperationFilter;
pub use retention::Swept;
pub use tx::{Idempotency, Mode, Outcome};

use std::time::Duration;

use esaas_core::Result;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use error::db_error;

/// Migrations embedded from the workspace's `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Handle on the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects a pool of at most `max_connections` to `url`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_with(url, max_connections, None).await
    }

    /// [`Store::connect`], every statement of the pool's sessions bounded
    /// by `statement_timeout` (PostgreSQL's `statement_timeout`: a statement
    /// that runs longer is cancelled and answered as an error, so a stuck
    /// query ends one call instead of holding a connection for ever).
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        statement_timeout: Option<Duration>,
    ) -> Result<Self> {
        let mut options: sqlx::postgres::PgConnectOptions = url.parse().map_err(db_error)?;
        if let Some(t) = statement_timeout.filter(|t| !t.is_zero()) {
            options = options.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Ok(Self { pool })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations. Safe to run from several processes at once
    /// (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| esaas_core::Error::Internal(format!("migration failed: {e}")))
    }
}

/// The connection type a change runs on (see [`Store::run`]).
pub type Conn = sqlx::PgConnection;

impl Store {
    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
