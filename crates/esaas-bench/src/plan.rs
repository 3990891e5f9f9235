//! How big a run is: `full` measures what the issue asks for, `tiny` runs
//! every scenario through the same code at a size CI can afford.

use std::time::Duration;

use serde::Serialize;

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 6] = [
    "unary",
    "overhead",
    "watch",
    "inflight",
    "coldstart",
    "observe",
];

/// The size of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// Every scenario at the smallest size that still runs every code path (CI).
    Tiny,
    /// What the issue asks for.
    Full,
}

/// Every number a run uses.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The size it came from.
    pub size: Size,
    /// Runs per point.
    pub runs: usize,
    /// Load before each measured window, not counted.
    #[serde(with = "millis")]
    pub warmup: Duration,
    /// Length of each measured window.
    #[serde(with = "millis")]
    pub measure: Duration,
    /// Unary: requests in flight.
    pub unary_in_flight: Vec<usize>,
    /// Unary: HTTP/2 connections the requests are spread over.
    pub unary_connections: Vec<usize>,
    /// Unary: the in-flight point whose throughput the half-load run halves.
    pub half_load_of: usize,
    /// Overhead: worker processes.
    pub overhead_workers: Vec<usize>,
    /// Overhead: operations each worker runs at once (the product's default).
    pub overhead_capacity: u32,
    /// Overhead: creates in flight for the throughput runs.
    pub overhead_in_flight: usize,
    /// Overhead: measured window of each throughput run (a create takes
    /// longer than a unary call, so the window is longer).
    #[serde(with = "millis")]
    pub overhead_measure: Duration,
    /// Overhead: creates measured one at a time, per run.
    pub overhead_sequential: usize,
    /// Watch: numbers of open streams.
    pub watch_streams: Vec<usize>,
    /// Watch: state changes timed per number of streams (the runs).
    pub watch_changes: usize,
    /// Watch: streams per HTTP/2 connection.
    pub streams_per_connection: usize,
    /// In-flight: operations in one worker.
    pub inflight_ops: usize,
    /// In-flight: how long each mutating step of the stand-ins takes.
    pub inflight_step_ms: u64,
    /// In-flight: the lease time-to-live (workers heartbeat every third of it).
    pub inflight_lease_ttl_s: u64,
    /// In-flight: longest quiet window in which heartbeat traffic is counted.
    #[serde(with = "millis")]
    pub inflight_window: Duration,
    /// Cold start: starts per kind.
    pub coldstart_runs: usize,
    /// Observe: READY clusters in the fleet.
    pub observe_clusters: usize,
    /// Observe: the observation interval, seconds.
    pub observe_interval_s: u64,
    /// Observe: observations the worker runs at once.
    pub observe_capacity: u32,
    /// Observe: faults timed.
    pub observe_faults: usize,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl Plan {
    /// The plan of `size`.
    pub fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                size,
                runs: 5,
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(2),
                unary_in_flight: vec![1, 16, 64, 256],
                unary_connections: vec![1, 4],
                half_load_of: 64,
                overhead_workers: vec![1, 4, 16],
                overhead_capacity: 16,
                overhead_in_flight: 64,
                overhead_measure: Duration::from_secs(5),
                overhead_sequential: 40,
                watch_streams: vec![1_000, 10_000],
                watch_changes: 5,
                streams_per_connection: 1_000,
                inflight_ops: 1_000,
                inflight_step_ms: 40_000,
                inflight_lease_ttl_s: 15,
                inflight_window: Duration::from_secs(20),
                coldstart_runs: 5,
                observe_clusters: 10_000,
                observe_interval_s: 30,
                observe_capacity: 256,
                observe_faults: 5,
            },
            Size::Tiny => Self {
                size,
                runs: 1,
                warmup: Duration::from_millis(50),
                measure: Duration::from_millis(200),
                unary_in_flight: vec![1, 16],
                unary_connections: vec![1, 2],
                half_load_of: 16,
                overhead_workers: vec![1, 2],
                overhead_capacity: 16,
                overhead_in_flight: 8,
                overhead_measure: Duration::from_millis(1000),
                overhead_sequential: 5,
                watch_streams: vec![200],
                watch_changes: 2,
                streams_per_connection: 100,
                inflight_ops: 20,
                inflight_step_ms: 6_000,
                inflight_lease_ttl_s: 3,
                inflight_window: Duration::from_secs(2),
                coldstart_runs: 1,
                observe_clusters: 20,
                observe_interval_s: 2,
                observe_capacity: 32,
                observe_faults: 1,
            },
        }
    }
}
