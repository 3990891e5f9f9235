//! The Rust SDK of esaas: Elasticsearch clusters as a service.
//!
//! [`Client`] connects to the control plane by URL (TLS for `https://`, plaintext for
//! `http://`), sends an API key with every call, and adds what every caller would
//! otherwise write by hand:
//!
//! - **safe retries** (AIP-194): `UNAVAILABLE`, and `RESOURCE_EXHAUSTED` when the server
//!   says when to come back (`google.rpc.RetryInfo`), are retried with exponential
//!   backoff and jitter; a mutation gets its `request_id` once, before its first attempt,
//!   so a retried create is never a second cluster ([`RetryPolicy`]);
//! - **typed errors**: [`Error::Api`] decodes the `google.rpc` details the server sends
//!   (field violations, quota and precondition failures, the stable reason);
//! - **waiting**: [`Client::wait_operation`] and the progress stream
//!   [`Client::watch_operation`], which reconnect when the connection drops;
//! - **watching**: [`Client::watch_cluster`] resumes from the last revision it saw
//!   after a reconnect, so no event is missed or repeated;
//! - **paging**: list calls are streams over every page ([`Client::list_clusters`]);
//! - **snapshots**: [`Client::create_snapshot`], [`Client::list_snapshots`] and
//!   [`Client::restore_snapshot`]; a new cluster from a snapshot with
//!   [`v1::CreateClusterRequest::with_restore_from`], a delete without its final
//!   snapshot with [`v1::DeleteClusterRequest::without_final_snapshot`].
//!
//! The generated messages and service clients are in [`v1`]; [`Client`]'s accessors
//! such as [`Client::cluster_service`] give the raw clients, already authenticated.
//!
//! # Create a cluster and wait until it is ready
//!
//! ```no_run
//! use esaas_client::{Client, v1};
//!
//! # async fn run() -> Result<(), esaas_client::Error> {
//! // ESAAS_ADDR (for example https://esaas.internal:443) and ESAAS_KEY (esk_...).
//! let client = Client::from_env().await?;
//! let spec = v1::ClusterSpec::new("8.17.10")
//!     .with_node_set(v1::NodeSet::new("default", 3, "small", 100)
//!         .with_roles(&[v1::NodeRole::Master, v1::NodeRole::Data]));
//! let created = client
//!     .create_cluster(v1::CreateClusterRequest::new("tenants/search", "logs", spec))
//!     .await?;
//! let op = client.wait_operation(created.operation_name()).await?;
//! println!("ready after {} attempt(s)", op.attempts.len());
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! [`Client::from_env`] reads `ESAAS_ADDR` and `ESAAS_KEY`; [`Client::builder`] takes
//! them from code, with a custom CA, timeouts and the retry policy.

#![warn(missing_docs)]

mod admin;
mod client;
mod clusters;
mod error;
mod ext;
mod operations;
mod paging;
mod retry;
mod snapshots;
mod watch;

pub use client::{AuthChannel, Authorization, Client, ClientBuilder};
pub use error::{ApiError, Error, Result, code_name};
pub use retry::RetryPolicy;
pub use watch::WatchItem;

/// `tonic-types`, whose `google.rpc` messages the API uses (`Operation.error`) and
/// whose [`ErrorDetails`](tonic_types::ErrorDetails) [`ApiError`] exposes.
pub use tonic_types;

/// `esaas.v1`: every message and service of the API, generated from the protos.
///
/// Service clients are tonic clients over any channel, for example
/// `v1::cluster_service_client::ClusterServiceClient::new(channel)`; the ones
/// [`Client`] hands out send its key. Servers (`v1::cluster_service_server`) are
/// generated too, so a service can run a fake esaas in its own tests.
pub mod v1 {
    #![allow(
        missing_docs,
        clippy::doc_lazy_continuation,
        clippy::large_enum_variant,
        clippy::doc_overindented_list_items
    )]
    tonic::include_proto!("esaas.v1");
}

/// The encoded `FileDescriptorSet` of the API (with `google.rpc`'s error details),
/// for a server's reflection service.
///
/// ```
/// use prost::Message;
/// let set = prost_types::FileDescriptorSet::decode(esaas_client::FILE_DESCRIPTOR_SET).unwrap();
/// assert!(set.file.iter().any(|f| f.name() == "esaas/v1/cluster.proto"));
/// ```
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("esaas_descriptor");
