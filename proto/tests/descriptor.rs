//! The compiled descriptors against nsm-api.md §1: descriptor file names (flat for the three
//! networkservice files), proto packages, imports, and every rpc's request and response types and
//! streaming flags.

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

fn file<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a FileDescriptorProto {
    set.file
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} is not in the descriptor set"))
}

#[test]
fn files_packages_and_imports() {
    let set = FileDescriptorSet::decode(vwire_proto::FILE_DESCRIPTOR_SET).expect("decodes");
    for (name, package, imports) in [
        (
            "networkservice.proto",
            "networkservice",
            &["google/protobuf/empty.proto", "connection.proto"][..],
        ),
        (
            "connection.proto",
            "connection",
            &["google/protobuf/timestamp.proto", "connectioncontext.proto"],
        ),
        ("connectioncontext.proto", "connectioncontext", &[]),
        (
            "registry/registry.proto",
            "registry",
            &[
                "google/protobuf/empty.proto",
                "google/protobuf/timestamp.proto",
            ],
        ),
    ] {
        let f = file(&set, name);
        assert_eq!(f.package(), package, "{name}");
        assert_eq!(f.syntax(), "proto3", "{name}");
        let mut got = f.dependency.clone();
        got.sort();
        let mut want: Vec<String> = imports.iter().map(|&s| s.to_owned()).collect();
        want.sort();
        assert_eq!(got, want, "{name} imports");
    }
}

#[test]
fn networkservice_package_has_one_message_and_one_service() {
    let set = FileDescriptorSet::decode(vwire_proto::FILE_DESCRIPTOR_SET).expect("decodes");
    let f = file(&set, "networkservice.proto");
    let messages: Vec<_> = f.message_type.iter().map(|m| m.name()).collect();
    let services: Vec<_> = f.service.iter().map(|s| s.name()).collect();
    assert_eq!(messages, ["NetworkServiceRequest"]);
    assert_eq!(services, ["NetworkService"]);
}

#[test]
fn rpc_signatures() {
    let set = FileDescriptorSet::decode(vwire_proto::FILE_DESCRIPTOR_SET).expect("decodes");
    // (file, service, rpc, request, response, client streaming, server streaming), from the spec.
    let table = [
        (
            "networkservice.proto",
            "NetworkService",
            "Request",
            ".networkservice.NetworkServiceRequest",
            ".connection.Connection",
            false,
            false,
        ),
        (
            "networkservice.proto",
            "NetworkService",
            "Close",
            ".connection.Connection",
            ".google.protobuf.Empty",
            false,
            false,
        ),
        (
            "connection.proto",
            "MonitorConnection",
            "MonitorConnections",
            ".connection.MonitorScopeSelector",
            ".connection.ConnectionEvent",
            false,
            true,
        ),
        (
            "registry/registry.proto",
            "NetworkServiceEndpointRegistry",
            "Register",
            ".registry.NetworkServiceEndpoint",
            ".registry.NetworkServiceEndpoint",
            false,
            false,
        ),
        (
            "registry/registry.proto",
            "NetworkServiceEndpointRegistry",
            "Find",
            ".registry.NetworkServiceEndpointQuery",
            ".registry.NetworkServiceEndpointResponse",
            false,
            true,
        ),
        (
            "registry/registry.proto",
            "NetworkServiceEndpointRegistry",
            "Unregister",
            ".registry.NetworkServiceEndpoint",
            ".google.protobuf.Empty",
            false,
            false,
        ),
        (
            "registry/registry.proto",
            "NetworkServiceRegistry",
            "Register",
            ".registry.NetworkService",
            ".registry.NetworkService",
            false,
            false,
        ),
        (
            "registry/registry.proto",
            "NetworkServiceRegistry",
            "Find",
            ".registry.NetworkServiceQuery",
            ".registry.NetworkServiceResponse",
            false,
            true,
        ),
        (
            "registry/registry.proto",
            "NetworkServiceRegistry",
            "Unregister",
            ".registry.NetworkService",
            ".google.protobuf.Empty",
            false,
            false,
        ),
    ];
    let mut count = 0;
    for f in [
        "networkservice.proto",
        "connection.proto",
        "connectioncontext.proto",
        "registry/registry.proto",
    ] {
        for s in &file(&set, f).service {
            for m in &s.method {
                count += 1;
                let row = table
                    .iter()
                    .find(|r| r.0 == f && r.1 == s.name() && r.2 == m.name())
                    .unwrap_or_else(|| panic!("{f}: {}.{} is not in the spec", s.name(), m.name()));
                assert_eq!(
                    (
                        m.input_type(),
                        m.output_type(),
                        m.client_streaming(),
                        m.server_streaming()
                    ),
                    (row.3, row.4, row.5, row.6),
                    "{}/{}",
                    s.name(),
                    m.name()
                );
            }
        }
    }
    assert_eq!(count, table.len(), "every rpc of the spec is defined");
}
