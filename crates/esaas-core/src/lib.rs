//! The esaas domain, free of I/O: resource names with their rules, the cluster
//! spec and its validation against the platform catalog, lifecycle states,
//! operations, quotas, roles and the one error type every adapter maps into.
//!
//! Nothing here depends on tonic, sqlx, kube or the AWS SDK; the adapters
//! convert to and from these types.

pub mod auth;
pub mod backend;
pub mod catalog;
pub mod cluster;
pub mod error;
pub mod event;
pub mod lease;
pub mod names;
pub mod operation;
pub mod plan;
pub mod spec;
pub mod tenant;

pub use error::{Error, FieldViolation, Result};

/// The current time at the precision the store keeps (microseconds), so that
/// what a call returns equals what a later read returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
