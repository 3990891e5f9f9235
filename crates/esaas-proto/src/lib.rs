//! The esaas gRPC API, generated from `proto/`.
//!
//! This crate is also the Rust SDK: `esaas_proto::v1::cluster_service_client::ClusterServiceClient`
//! and friends are tonic clients; build them with `new(channel)` on a
//! `tonic::transport::Channel`.

/// `google.rpc` messages (status and error details) as they appear in the API.
pub mod google {
    /// `google.rpc`.
    pub mod rpc {
        #![allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items)]
        tonic::include_proto!("google.rpc");
    }
}

/// The `esaas` package.
pub mod esaas {
    /// `esaas.v1`: every service and message of the API.
    pub mod v1 {
        #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
        tonic::include_proto!("esaas.v1");
    }
}

pub use esaas::v1;

pub mod convert;

/// The encoded `FileDescriptorSet` of the API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("esaas_descriptor");
