//! Elasticsearch on Kubernetes for esaas workers.
//!
//! - `render`: the typed `k8s-openapi` objects of a cluster (pure).
//! - `tls`: the cluster's CA and node certificate (rcgen).
//! - `workloads`: `Workloads` with kube-rs server-side apply.
//! - `es`: `Elasticsearch` over HTTPS with the cluster's CA.
//! - `client`: the deadlines of the Kubernetes client.
//! - `snapshot_storage`: the `[snapshots]` configuration (bucket, IRSA role, S3 endpoint).

pub mod access;
pub mod client;
pub mod es;
pub mod names;
pub mod render;
pub mod snapshot_storage;
pub mod tls;
pub mod workloads;

pub use snapshot_storage::SnapshotStorage;
