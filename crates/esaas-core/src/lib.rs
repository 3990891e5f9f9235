//! The esaas domain, free of I/O: resource names with their rules, the cluster
//! spec and its validation against the platform catalog, lifecycle states,
//! operations, quotas, roles and the one error type every adapter maps into.
//!
//! Every rule about a cluster's lifecycle lives in [`lifecycle`]: each command
//! (create, update, delete, retry) and each worker report is a pure function
//! from the loaded state and the request to a [`lifecycle::ChangeSet`], which
//! the store writes in one transaction. [`plan`] decides what a worker does
//! next; [`backend`] names what it drives.
//!
//! Nothing here depends on tonic, sqlx, kube or the AWS SDK; the adapters
//! convert to and from these types.

/// An enum with one text spelling, used everywhere it is stored: in text
/// columns, in JSON columns and in event snapshots.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($(#[$vdoc])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod auth;
pub mod backend;
pub mod catalog;
pub mod cluster;
pub mod error;
pub mod event;
pub mod lifecycle;
pub mod names;
pub mod operation;
pub mod placement;
pub mod plan;
pub mod snapshots;
pub mod spec;
pub mod tenant;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod worker;

pub use error::{Error, FieldViolation, Result};

/// The current time at the precision the store keeps (microseconds), so that
/// what a call returns equals what a later read returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
