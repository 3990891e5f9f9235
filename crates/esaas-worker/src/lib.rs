//! The esaas worker. It holds cloud credentials, never database ones: it
//! connects to the control plane with one `WorkerService.Connect` stream,
//! takes leased operations, and drives each to its end with the planner in
//! `esaas-core` and three backends (node groups, Kubernetes workloads,
//! Elasticsearch).

pub mod client;
pub mod executor;
#[cfg(test)]
mod memory;

pub use client::{WorkerConfig, run};
pub use executor::{Backends, ExecSettings};
