//! The esaas gRPC API on the server side.
//!
//! The wire types, clients and servers are generated once, in `esaas-client` (from its
//! copy of `proto/`, which `make test` keeps equal to the repository's), and re-exported
//! here so that the control plane, the worker and the SDK share one set of types. What
//! this crate adds is [`convert`]: every conversion between the wire and the domain.

/// `google.rpc` messages (status and error details) as they appear in the API: those of
/// `tonic-types`.
pub mod google {
    pub use esaas_client::tonic_types::pb as rpc;
}

/// The `esaas` package.
pub mod esaas {
    pub use esaas_client::v1;
}

pub use esaas_client::v1;

pub mod convert;

/// The encoded `FileDescriptorSet` of the API, for server reflection.
pub use esaas_client::FILE_DESCRIPTOR_SET;
