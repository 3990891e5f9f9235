//! The metrics of esaas, as OpenTelemetry instruments on the global meter.
//!
//! | name | kind | attributes |
//! |---|---|---|
//! | `esaas.rpc.server.requests` | counter | `rpc.service`, `rpc.method`, `rpc.grpc.status_code` |
//! | `esaas.rpc.server.duration` | histogram, s | `rpc.service`, `rpc.method`, `rpc.grpc.status_code` |
//! | `esaas.operations` | gauge | `kind`, `state` |
//! | `esaas.queue.depth` | gauge | |
//! | `esaas.queue.oldest_age` | gauge, s | |
//! | `esaas.operation.stage.duration` | histogram, s | `stage`, `outcome` |
//! | `esaas.operation.retries` | counter | `cause`, `scope` |
//! | `esaas.lease.expiries` | counter | |
//! | `esaas.workers.connected` | up-down counter | |
//! | `esaas.watch.streams` | up-down counter | |
//!
//! The instruments bind to the meter provider installed when they are first
//! used: [`crate::init`] runs first in every process, so without an OTLP
//! endpoint they are no-ops.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, ObservableGauge, UpDownCounter};

/// Every instrument.
pub struct Metrics {
    rpc_requests: Counter<u64>,
    rpc_duration: Histogram<f64>,
    stage_duration: Histogram<f64>,
    retries: Counter<u64>,
    lease_expiries: Counter<u64>,
    workers_connected: UpDownCounter<i64>,
    watch_streams: UpDownCounter<i64>,
    _gauges: [ObservableGauge<f64>; 3],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// What the queue looked like at the last sample (see [`record_queue`]).
#[derive(Debug, Clone, Default)]
pub struct QueueSample {
    /// Operations by kind and state: `(kind, state, count)`.
    pub operations: Vec<(String, String, u64)>,
    /// Operations waiting for a worker.
    pub queued: u64,
    /// How long the oldest of them has waited.
    pub oldest_queued: Duration,
}

static QUEUE: Mutex<Option<QueueSample>> = Mutex::new(None);

/// Publishes a sample of the queue; the gauges report the latest one.
pub fn record_queue(sample: QueueSample) {
    if let Ok(mut q) = QUEUE.lock() {
        *q = Some(sample);
    }
}

fn with_queue(f: impl FnOnce(&QueueSample)) {
    if let Ok(q) = QUEUE.lock()
        && let Some(sample) = q.as_ref()
    {
        f(sample);
    }
}

/// Seconds of latency, from 0.5 ms to 10 s.
const RPC_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Seconds of a stage, from 10 ms to an hour (node groups take minutes).
const STAGE_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The instruments (created on first use).
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("esaas");
        let operations = meter
            .f64_observable_gauge("esaas.operations")
            .with_description("Operations by kind and state")
            .with_callback(|o| {
                with_queue(|q| {
                    for (kind, state, n) in &q.operations {
                        o.observe(
                            *n as f64,
                            &[
                                KeyValue::new("kind", kind.clone()),
                                KeyValue::new("state", state.clone()),
                            ],
                        );
                    }
                })
            })
            .build();
        let depth = meter
            .f64_observable_gauge("esaas.queue.depth")
            .with_description("Operations waiting for a worker")
            .with_callback(|o| with_queue(|q| o.observe(q.queued as f64, &[])))
            .build();
        let age = meter
            .f64_observable_gauge("esaas.queue.oldest_age")
            .with_unit("s")
            .with_description("How long the oldest queued operation has waited")
            .with_callback(|o| with_queue(|q| o.observe(q.oldest_queued.as_secs_f64(), &[])))
            .build();
        Metrics {
            rpc_requests: meter
                .u64_counter("esaas.rpc.server.requests")
                .with_description("gRPC calls answered, by method and status code")
                .build(),
            rpc_duration: meter
                .f64_histogram("esaas.rpc.server.duration")
                .with_unit("s")
                .with_description("Time to answer a gRPC call (for streams: to open it)")
                .with_boundaries(RPC_BUCKETS.to_vec())
                .build(),
            stage_duration: meter
                .f64_histogram("esaas.operation.stage.duration")
                .with_unit("s")
                .with_description("Time a worker spent on one stage of an operation")
                .with_boundaries(STAGE_BUCKETS.to_vec())
                .build(),
            retries: meter
                .u64_counter("esaas.operation.retries")
                .with_description("Retries, by cause and scope (step: within an attempt; attempt: a new attempt after backoff)")
                .build(),
            lease_expiries: meter
                .u64_counter("esaas.lease.expiries")
                .with_description("Leases that lapsed and were returned to the queue")
                .build(),
            workers_connected: meter
                .i64_up_down_counter("esaas.workers.connected")
                .with_description("Worker streams open on this control-plane process")
                .build(),
            watch_streams: meter
                .i64_up_down_counter("esaas.watch.streams")
                .with_description("Watch streams open on this control-plane process")
                .build(),
            _gauges: [operations, depth, age],
        }
    })
}

impl Metrics {
    /// One answered gRPC call.
    pub fn rpc(&self, service: &str, method: &str, code: &'static str, elapsed: Duration) {
        let attrs = [
            KeyValue::new("rpc.service", service.to_string()),
            KeyValue::new("rpc.method", method.to_string()),
            KeyValue::new("rpc.grpc.status_code", code),
        ];
        self.rpc_requests.add(1, &attrs);
        self.rpc_duration.record(elapsed.as_secs_f64(), &attrs);
    }

    /// One stage run by a worker; `outcome` is `done`, `waiting`, `failed`, ….
    pub fn stage(&self, stage: &'static str, outcome: &'static str, elapsed: Duration) {
        self.stage_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("stage", stage),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// One retry: `scope` is `step` (again within the attempt) or `attempt`
    /// (the operation goes back to the queue with backoff).
    pub fn retry(&self, cause: &str, scope: &'static str) {
        self.retries.add(
            1,
            &[
                KeyValue::new("cause", cause.to_string()),
                KeyValue::new("scope", scope),
            ],
        );
    }

    /// `n` leases lapsed.
    pub fn lease_expiries(&self, n: u64) {
        self.lease_expiries.add(n, &[]);
    }

    /// Counts an open worker stream until the guard drops.
    pub fn worker_connected(&'static self) -> Open {
        self.workers_connected.add(1, &[]);
        Open(&self.workers_connected)
    }

    /// Counts an open watch stream until the guard drops.
    pub fn watch_opened(&'static self) -> Open {
        self.watch_streams.add(1, &[]);
        Open(&self.watch_streams)
    }
}

/// Something open, counted until dropped.
#[derive(Debug)]
pub struct Open(&'static UpDownCounter<i64>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.add(-1, &[]);
    }
}
