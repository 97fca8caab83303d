//! The NSM gRPC API as vwire speaks it: prost messages and tonic clients and servers.
//!
//! The `.proto` files in `nsm/` are vwire's own, written from `shared/spec/nsm-api.md` (the NSM
//! api v1.15.0 wire contract); the build script compiles them with the pure-Rust `protox`, so no
//! `protoc` is needed, and generates this crate's modules with `tonic-prost-build`.
//!
//! One module per proto package. NSM spreads its networkservice API over three packages, so the
//! type URLs and gRPC paths do not all start with `networkservice.`:
//!
//! | module | proto package | contents |
//! |---|---|---|
//! | [`networkservice`] | `networkservice` | `NetworkServiceRequest`; service `NetworkService` (`Request`, `Close`) |
//! | [`connection`] | `connection` | `Connection`, `Mechanism`, `Path`, `PathSegment`, `State`, `ConnectionEvent`, `MonitorScopeSelector`; service `MonitorConnection` (`MonitorConnections`, server-streaming) |
//! | [`connectioncontext`] | `connectioncontext` | `ConnectionContext` and its IP, DNS and Ethernet parts |
//! | [`registry`] | `registry` | `NetworkService`, `NetworkServiceEndpoint`, queries and responses; services `NetworkServiceRegistry` and `NetworkServiceEndpointRegistry` (`Register`, `Find` server-streaming, `Unregister`) |
//!
//! Each service has a `<service>_client` module (e.g. `networkservice::network_service_client::NetworkServiceClient`)
//! and a `<service>_server` module with the trait to implement and the tower service that wraps it
//! (e.g. `connection::monitor_connection_server::{MonitorConnection, MonitorConnectionServer}`).
//!
//! Mapping notes: `google.protobuf.Timestamp` is [`prost_types::Timestamp`], `google.protobuf.Empty`
//! is `()`. prost renames a few fields and types to Rust style: `Mechanism.type` is `r#type`,
//! `ConnectionContext.MTU` is `mtu`, `Route.nextHop` is `next_hop`, `IPContext` is `IpContext`,
//! `DNSContext` is `DnsContext`; enum fields are stored as `i32` with typed accessors (`state()`,
//! `set_state()`). Maps are `HashMap`s, so encoding order of several map entries is not fixed.
//!
//! The IPAM package is left out: nothing here imports it and a forwarder does not use it.
//!
//! Besides the generated code, [`mechanism`] gives the strings NSM carries in `Mechanism.cls`,
//! `Mechanism.type`, `Connection.payload` and the mechanism parameters their types, with typed
//! views over a mechanism's parameters.

/// The encoded `google.protobuf.FileDescriptorSet` of the NSM files, with the well-known
/// `google/protobuf/*.proto` files they import: what a gRPC reflection service serves, and what the
/// tests check the file names, packages and imports against.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nsm_descriptor_set.bin"));

pub mod mechanism;

pub use prost;
pub use prost_types;
pub use tonic;

/// Package `networkservice`: the request message and the `NetworkService` service.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::cast_possible_truncation,
    rustdoc::all
)]
pub mod networkservice {
    tonic::include_proto!("networkservice");
}

/// Package `connection`: connections, mechanisms, paths, events and the `MonitorConnection` service.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::cast_possible_truncation,
    rustdoc::all
)]
pub mod connection {
    tonic::include_proto!("connection");
}

/// Package `connectioncontext`: the IP, DNS, Ethernet and MTU context of a connection.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::cast_possible_truncation,
    rustdoc::all
)]
pub mod connectioncontext {
    tonic::include_proto!("connectioncontext");
}

/// Package `registry`: network service and endpoint registration and discovery.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::cast_possible_truncation,
    rustdoc::all
)]
pub mod registry {
    tonic::include_proto!("registry");
}
