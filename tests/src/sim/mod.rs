//! A simulated world for workers under test: EKS node groups, Kubernetes
//! workloads and Elasticsearch, kept in `sim_*` tables of the test database
//! so that several worker processes share one world and a test can look at
//! it. It counts every mutating call, can fail calls on demand, and moves
//! through time-based states (node groups CREATING then ACTIVE, pods becoming
//! ready, rollouts held and then moving one pod at a time, shards draining)
//! with configurable delays.
//!
//! Only tests use it: the product binary has no fake backend.
//!
//! Time is the database's clock (`clock_timestamp()`), so processes agree on
//! it. Every mutating call takes a per-cluster advisory lock and records its
//! side effect in `sim_calls` in the same transaction as the change, so a
//! worker killed mid-call leaves either both or neither.
//!
//! One module per concern: [`schema`] (the tables), [`calls`] (recording
//! and the start of every mutating call), [`faults`] (injection),
//! [`node_groups`], [`workloads`], [`elasticsearch`] (the three backends),
//! [`rollout`] (how the StatefulSet controller moves pods to a new template)
//! and [`world`] (the snapshot tests assert on).

mod calls;
mod elasticsearch;
mod faults;
mod node_groups;
mod rollout;
mod schema;
mod workloads;
mod world;

#[cfg(test)]
mod tests;

use std::time::Duration;

use esaas_core::backend::StepError;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

pub use calls::{HELD, SimCall};
pub use world::{SimPod, SimWorkload, SimWorld};

/// Delays of the simulated world. All zero by default: everything happens at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimConfig {
    /// How long a node group stays CREATING, UPDATING or DELETING after a change.
    pub node_group_delay: Duration,
    /// How long a pod takes to be ready after it starts (created, or
    /// recreated on a new template when a rollout reaches it).
    pub pods_ready_delay: Duration,
    /// How long an excluded pod takes to drain its shards (linearly).
    pub drain_delay: Duration,
    /// How long every mutating call sleeps before it does anything, so a
    /// test can kill a worker in the middle of a step.
    pub step_delay: Duration,
}

/// The simulated world. Cheap to clone (a pool inside).
#[derive(Debug, Clone)]
pub struct Sim {
    pool: PgPool,
    config: SimConfig,
}

/// Connections of a simulator's pool unless told otherwise.
pub const DEFAULT_POOL: u32 = 8;

fn db(e: sqlx::Error) -> StepError {
    StepError::retryable("SIM_DB", format!("simulator database: {e}"))
}

fn lock_key(uid: Uuid) -> i64 {
    uid.as_u64_pair().0 as i64
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Sim {
    /// Connects to the database at `url` and creates the `sim_*` tables if
    /// they are missing (safe from several processes at once).
    pub async fn connect(url: &str, config: SimConfig) -> anyhow::Result<Self> {
        Self::connect_with_pool(url, config, DEFAULT_POOL).await
    }

    /// Like [`Sim::connect`], with at most `max_connections` connections
    /// (many worker processes on one PostgreSQL each need fewer).
    pub async fn connect_with_pool(
        url: &str,
        config: SimConfig,
        max_connections: u32,
    ) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        schema::create(&pool).await?;
        Ok(Self { pool, config })
    }

    /// Its pool, for queries of a test's own.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
