//! Wire-format fixtures written by hand from the field numbers in `shared/spec/nsm-api.md` §2–3.
//!
//! Every fixture spells out its tag bytes, `(field_number << 3) | wire_type` with wire type 0
//! (varint) or 2 (length-delimited), and its lengths, so these tests check the `.proto` files
//! against the spec rather than against themselves: prost must encode each message to exactly
//! these bytes and decode them back. Maps hold a single entry so their encoding order is fixed;
//! prost writes fields in field-number order, as the fixtures do. All lengths are below 128, so
//! each fits in one varint byte.

use std::collections::HashMap;

use prost::Message;
use vwire_proto::connection::{
    Connection, ConnectionEvent, ConnectionEventType, Mechanism, MonitorScopeSelector, Path,
    PathSegment, State,
};
use vwire_proto::connectioncontext::{
    ip_family::Family, ConnectionContext, EthernetContext, ExtraPrefixRequest, IpContext, IpFamily,
    Route,
};
use vwire_proto::networkservice::NetworkServiceRequest;
use vwire_proto::registry::{NetworkServiceEndpoint, NetworkServiceLabels};

/// 2025-09-08T00:00:00Z, the `expires` of the fixture's path segment.
const EXPIRES_SECONDS: i64 = 1_757_289_600;
/// Varint of [`EXPIRES_SECONDS`] = 0x68_BE_1C_80, in 7-bit groups from the low end:
/// 0x00, 0x39, 0x78, 0x45, 0x06, each but the last with the continuation bit set.
const EXPIRES_SECONDS_VARINT: [u8; 5] = [0x80, 0xb9, 0xf8, 0xc5, 0x06];

fn map1(k: &str, v: &str) -> HashMap<String, String> {
    HashMap::from([(k.to_owned(), v.to_owned())])
}

/// Asserts that `msg` encodes to exactly `bytes` and that `bytes` decode to `msg`.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, bytes: &[u8]) {
    assert_eq!(msg.encode_to_vec(), bytes, "encoding of {msg:?}");
    assert_eq!(&M::decode(bytes).expect("fixture decodes"), msg);
}

// -- connection.Mechanism -------------------------------------------------------------------------

fn mechanism() -> Mechanism {
    Mechanism {
        cls: "LOCAL".into(),
        r#type: "KERNEL".into(),
        parameters: map1("name", "nsm-1"),
    }
}

/// 30 bytes.
fn mechanism_bytes() -> Vec<u8> {
    [
        &[0x0a, 5][..], // 1 cls, LEN
        b"LOCAL",
        &[0x12, 6], // 2 type, LEN
        b"KERNEL",
        &[0x1a, 13], // 3 parameters: one map entry, LEN
        &[0x0a, 4],  //   entry 1 key
        b"name",
        &[0x12, 5], //   entry 2 value
        b"nsm-1",
    ]
    .concat()
}

#[test]
fn mechanism_wire() {
    let bytes = mechanism_bytes();
    assert_eq!(bytes.len(), 30);
    assert_wire(&mechanism(), &bytes);
}

// -- connection.Connection ------------------------------------------------------------------------

fn connection() -> Connection {
    Connection {
        id: "conn-1".into(),
        network_service: "my-ns".into(),
        mechanism: Some(mechanism()),
        context: Some(ConnectionContext {
            ip_context: Some(IpContext {
                src_ip_addrs: vec!["172.16.1.101/32".into()],
                ..IpContext::default()
            }),
            ..ConnectionContext::default()
        }),
        path: Some(Path {
            index: 0,
            path_segments: vec![PathSegment {
                name: "nsc".into(),
                id: "conn-1".into(),
                expires: Some(prost_types::Timestamp {
                    seconds: EXPIRES_SECONDS,
                    nanos: 500,
                }),
                ..PathSegment::default()
            }],
        }),
        payload: "ETHERNET".into(),
        state: State::Down.into(),
        ..Connection::default()
    }
}

/// 108 bytes.
fn connection_bytes() -> Vec<u8> {
    [
        &[0x0a, 6][..], // 1 id
        b"conn-1",
        &[0x12, 5], // 2 network_service
        b"my-ns",
        &[0x1a, 30], // 3 mechanism
        &mechanism_bytes(),
        &[0x22, 19], // 4 context: ConnectionContext
        &[0x0a, 17], //   1 ip_context: IPContext
        &[0x0a, 15], //     1 src_ip_addrs[0]
        b"172.16.1.101/32",
        &[0x32, 26], // 6 path: Path (index 0 is the default, so not written)
        &[0x12, 24], //   2 path_segments[0]: PathSegment
        &[0x0a, 3],  //     1 name
        b"nsc",
        &[0x12, 6], //     2 id
        b"conn-1",
        &[0x22, 9], //     4 expires: google.protobuf.Timestamp
        &[0x08],    //       1 seconds, VARINT
        &EXPIRES_SECONDS_VARINT,
        &[0x10, 0xf4, 0x03], //       2 nanos = 500 = 0b11_1110100
        &[0x42, 8],          // 8 payload
        b"ETHERNET",
        &[0x48, 0x01], // 9 state = DOWN (1), VARINT
    ]
    .concat()
}

#[test]
fn connection_wire() {
    let bytes = connection_bytes();
    assert_eq!(bytes.len(), 108);
    assert_wire(&connection(), &bytes);
}

#[test]
fn connection_without_state_decodes_as_up() {
    // Only field 1 (id): "because UP = 0, a Connection with no state set decodes as UP".
    let c = Connection::decode(&[0x0a, 1, b'x'][..]).expect("decodes");
    assert_eq!(c.state(), State::Up);
}

#[test]
fn legacy_singular_src_ip_addr_decodes_as_one_element() {
    // v0.2's singular `src_ip_addr` had the same number 1 and wire type 2, so one value reads back as
    // a one-element `src_ip_addrs`.
    let bytes = [&[0x0a, 11][..], b"10.0.0.1/32"].concat();
    let ip = IpContext::decode(&bytes[..]).expect("decodes");
    assert_eq!(ip.src_ip_addrs, ["10.0.0.1/32"]);
}

// -- networkservice.NetworkServiceRequest ---------------------------------------------------------

#[test]
fn network_service_request_wire() {
    let memif = Mechanism {
        cls: "LOCAL".into(),
        r#type: "MEMIF".into(),
        parameters: HashMap::new(),
    };
    let req = NetworkServiceRequest {
        connection: Some(connection()),
        mechanism_preferences: vec![memif, mechanism()],
    };
    let bytes = [
        &[0x0a, 108][..], // 1 connection
        &connection_bytes(),
        &[0x12, 14], // 2 mechanism_preferences[0]
        &[0x0a, 5],  //   1 cls
        b"LOCAL",
        &[0x12, 5], //   2 type
        b"MEMIF",
        &[0x12, 30], // 2 mechanism_preferences[1]: order is preference order
        &mechanism_bytes(),
    ]
    .concat();
    assert_eq!(bytes.len(), 158);
    assert_wire(&req, &bytes);
}

// -- connection.ConnectionEvent -------------------------------------------------------------------

#[test]
fn connection_event_wire() {
    let ev = ConnectionEvent {
        r#type: ConnectionEventType::Update.into(),
        connections: HashMap::from([("conn-1".to_owned(), connection())]),
    };
    let bytes = [
        &[0x08, 0x01][..], // 1 type = UPDATE (1), VARINT
        &[0x12, 118],      // 2 connections: one map entry
        &[0x0a, 6],        //   1 key
        b"conn-1",
        &[0x12, 108], //   2 value: Connection
        &connection_bytes(),
    ]
    .concat();
    assert_wire(&ev, &bytes);

    // The first event of every stream: INITIAL_STATE_TRANSFER (0) with no connections is empty.
    assert_wire(&ConnectionEvent::default(), &[]);
    assert_eq!(
        ConnectionEvent::default().r#type(),
        ConnectionEventType::InitialStateTransfer
    );
}

// -- connection.MonitorScopeSelector --------------------------------------------------------------

#[test]
fn monitor_scope_selector_wire() {
    let sel = MonitorScopeSelector {
        path_segments: vec![PathSegment {
            name: "fwd".into(),
            id: "id-2".into(),
            ..PathSegment::default()
        }],
        network_services: vec!["my-ns".into()],
    };
    let bytes = [
        &[0x0a, 11][..], // 1 path_segments[0]
        &[0x0a, 3],      //   1 name
        b"fwd",
        &[0x12, 4], //   2 id
        b"id-2",
        &[0x12, 5], // 2 network_services[0]
        b"my-ns",
    ]
    .concat();
    assert_wire(&sel, &bytes);
}

// -- connectioncontext: MTU, nextHop, nested IpFamily enum, int32 vlan_tag ------------------------

#[test]
fn connection_context_wire() {
    let ctx = ConnectionContext {
        ip_context: Some(IpContext {
            dst_ip_addrs: vec!["172.16.1.100/32".into()],
            src_routes: vec![Route {
                prefix: "10.0.0.0/8".into(),
                next_hop: "172.16.1.100".into(),
            }],
            extra_prefix_request: vec![ExtraPrefixRequest {
                addr_family: Some(IpFamily {
                    family: Family::Ipv6.into(),
                }),
                prefix_len: 64,
                required_number: 1,
                requested_number: 2,
            }],
            ..IpContext::default()
        }),
        ethernet_context: Some(EthernetContext {
            vlan_tag: 100,
            ..EthernetContext::default()
        }),
        mtu: 1450,
        ..ConnectionContext::default()
    };
    let bytes = [
        &[0x0a, 57][..], // 1 ip_context: IPContext
        &[0x12, 15],     //   2 dst_ip_addrs[0]
        b"172.16.1.100/32",
        &[0x2a, 26], //   5 src_routes[0]: Route
        &[0x0a, 10], //     1 prefix
        b"10.0.0.0/8",
        &[0x12, 12], //     2 nextHop
        b"172.16.1.100",
        &[0x4a, 10],         //   9 extra_prefix_request[0]
        &[0x0a, 2],          //     1 addr_family: IpFamily message
        &[0x08, 0x01],       //       1 family = IPV6 (1)
        &[0x10, 64],         //     2 prefix_len
        &[0x18, 1],          //     3 required_number
        &[0x20, 2],          //     4 requested_number
        &[0x1a, 2],          // 3 ethernet_context
        &[0x18, 100],        //   3 vlan_tag
        &[0x28, 0xaa, 0x0b], // 5 MTU = 1450 = 0b1011_0101010
    ]
    .concat();
    assert_wire(&ctx, &bytes);
}

#[test]
fn vlan_tag_is_int32_not_sint32() {
    // A negative int32 is sign-extended to a 10-byte varint; sint32 would zigzag it to one byte.
    let eth = EthernetContext {
        vlan_tag: -1,
        ..EthernetContext::default()
    };
    let mut bytes = vec![0x18];
    bytes.extend([0xff; 9]);
    bytes.push(0x01);
    assert_wire(&eth, &bytes);
}

// -- registry.NetworkServiceEndpoint: a forwarder's registration ----------------------------------

#[test]
fn forwarder_registration_wire() {
    let nse = NetworkServiceEndpoint {
        name: "forwarder-a".into(),
        network_service_names: vec!["forwarder".into()],
        network_service_labels: HashMap::from([(
            "forwarder".to_owned(),
            NetworkServiceLabels {
                labels: map1("p2p", "true"),
            },
        )]),
        url: "unix:///listen.on.sock".into(),
        expiration_time: Some(prost_types::Timestamp {
            seconds: EXPIRES_SECONDS + 600,
            nanos: 0,
        }),
        ..NetworkServiceEndpoint::default()
    };
    let bytes = [
        &[0x0a, 11][..], // 1 name
        b"forwarder-a",
        &[0x12, 9], // 2 network_service_names[0]
        b"forwarder",
        &[0x1a, 26], // 3 network_service_labels: one map entry
        &[0x0a, 9],  //   1 key
        b"forwarder",
        &[0x12, 13], //   2 value: NetworkServiceLabels
        &[0x0a, 11], //     1 labels: one map entry
        &[0x0a, 3],  //       1 key
        b"p2p",
        &[0x12, 4], //       2 value
        b"true",
        &[0x22, 22], // 4 url
        b"unix:///listen.on.sock",
        &[0x2a, 6], // 5 expiration_time: Timestamp (nanos 0 not written)
        &[0x08, 0xd8, 0xbd, 0xf8, 0xc5, 0x06], // 1 seconds = EXPIRES_SECONDS + 600
    ]
    .concat();
    assert_eq!(bytes.len(), 84);
    assert_wire(&nse, &bytes);
}

// -- enum values (spec §2) ------------------------------------------------------------------------

#[test]
fn state_values() {
    for (v, n, s) in [
        (State::Up, 0, "UP"),
        (State::Down, 1, "DOWN"),
        (State::RefreshRequested, 2, "REFRESH_REQUESTED"),
        (State::ReselectRequested, 3, "RESELECT_REQUESTED"),
    ] {
        assert_eq!(v as i32, n);
        assert_eq!(v.as_str_name(), s);
        assert_eq!(State::try_from(n), Ok(v));
    }
    assert!(State::try_from(4).is_err());
    assert_eq!(State::default(), State::Up);
}

#[test]
fn connection_event_type_values() {
    for (v, n, s) in [
        (
            ConnectionEventType::InitialStateTransfer,
            0,
            "INITIAL_STATE_TRANSFER",
        ),
        (ConnectionEventType::Update, 1, "UPDATE"),
        (ConnectionEventType::Delete, 2, "DELETE"),
    ] {
        assert_eq!(v as i32, n);
        assert_eq!(v.as_str_name(), s);
        assert_eq!(ConnectionEventType::try_from(n), Ok(v));
    }
    assert!(ConnectionEventType::try_from(3).is_err());
}

#[test]
fn ip_family_values() {
    for (v, n, s) in [(Family::Ipv4, 0, "IPV4"), (Family::Ipv6, 1, "IPV6")] {
        assert_eq!(v as i32, n);
        assert_eq!(v.as_str_name(), s);
        assert_eq!(Family::try_from(n), Ok(v));
    }
    assert!(Family::try_from(2).is_err());
    assert_eq!(IpFamily::default().family(), Family::Ipv4);
}
