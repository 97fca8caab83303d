//! The Linux kernel as the far end of vwire's REMOTE mechanisms, with no second vwire.
//!
//! Node B runs vwire B (NSM API on `tcp://10.97.0.2:5002`) and vwire-nse in the NSE pod. The
//! test plays the client-side forwarder of node A: from inside node A it sends vwire B a gRPC
//! Request with one REMOTE mechanism preference (VXLAN or SRV6) and its own tunnel parameters,
//! checks the reply (mechanism, the server's parameters, the clamped MTU, the NSE's addresses),
//! configures node A's kernel as the tunnel's other end from the reply, pings across both ways
//! (56 and 3000 bytes), Closes over gRPC, and checks that vwire B removed everything.
//!
//! - VXLAN (ETHERNET payload), IPv4 and IPv6 underlays: a kernel `vxlan` device in node A holds
//!   the NSC address 172.16.1.101; ARP crosses the L2 tunnel.
//! - SRv6 End.DX2 (ETHERNET payload): node A is an SRv6 router in front of a small "client host"
//!   namespace (172.16.1.101 on `p0`, whose veth peer `hp0` is in node A). Node A encapsulates
//!   what the host sends to 172.16.1.100 with `encap seg6 mode l2encap` toward vwire B's SID and
//!   decapsulates vwire B's traffic with `seg6local End.DX2 oif hp0`. The kernel's l2encap works
//!   on routed IP packets only (ARP does not enter it, and the frame keeps the MAC header it
//!   arrived with), so hp0 takes the NSE interface's MAC and both ends get a permanent neighbour
//!   for the other.
//! - SRv6 End.DX4 (IP payload): the same client host; node A routes 172.16.1.100 with
//!   `encap seg6 mode encap` and decapsulates with `seg6local End.DX4 nh4 172.16.1.101`.
//!
//! The SRv6 tests need the kernel's seg6 lightweight tunnels (`CONFIG_IPV6_SEG6_LWTUNNEL`), which
//! some kernels of this kind are built without. Each first probes them with throwaway routes in
//! a throwaway namespace ([`seg6_lwtunnel`]): where the kernel answers that the encapsulation
//! type is not supported, the test reports what it did not check ([`common::not_checked`]) and
//! ends; any other probe failure fails the test. Where the kernel has them, the test runs in full.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::nodes::*;
use common::nsm::Ns;
use common::{not_checked, require, run, sh, unique};
use tonic::Status;
use vwire_proto::connection::{Connection, Mechanism, Path, PathSegment};
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

/// The path segment name of the test's forwarder.
const PEER_NAME: &str = "kernel-peer";
/// Node A's End.DX2 SID (the `src_localsid` of an ETHERNET request).
const SID_DX2: &str = "fc00:a::d2";
/// Node A's End.DX4 SID (the `src_localsid` of an IP request).
const SID_DX4: &str = "fc00:a::d4";

/// Node B with vwire B and vwire-nse; node A is left to the kernel. Processes drop first.
struct Peer {
    vw_b: NodeVwire,
    _nse_app: Nse,
    nse: Ns,
    nodes: Nodes,
    dir: PathBuf,
}

impl Peer {
    /// Starts vwire B with [`Fwd::b`] changed by `edit_b`, and vwire-nse.
    fn start(edit_b: impl FnOnce(&mut Fwd)) -> Self {
        require(&["ip", "ping", "ss", "sysctl"]);
        let nodes = Nodes::new();
        let nse = Ns::new("e");
        let dir = test_dir();
        let mut b = Fwd::b(&dir);
        edit_b(&mut b);
        let vw_b = NodeVwire::start("vwire-B", &nodes.b, &dir, &b);
        let nse_app = start_nse(&nse, &dir, &[]);
        Self {
            vw_b,
            _nse_app: nse_app,
            nse,
            nodes,
            dir,
        }
    }

    /// Sends `req` to vwire B from inside node A.
    fn request(&self, req: NetworkServiceRequest) -> Result<Connection, Status> {
        block_on_in(&self.nodes.a.0, move || async move {
            let mut c = NetworkServiceClient::new(channel_to_b().await);
            let mut r = tonic::Request::new(req);
            r.set_timeout(Duration::from_secs(30));
            c.request(r).await.map(tonic::Response::into_inner)
        })
    }

    /// Closes `conn` (as vwire B returned it) from inside node A.
    fn close(&self, conn: Connection) -> Result<(), Status> {
        block_on_in(&self.nodes.a.0, move || async move {
            let mut c = NetworkServiceClient::new(channel_to_b().await);
            let mut r = tonic::Request::new(conn);
            r.set_timeout(Duration::from_secs(30));
            c.close(r).await.map(|_| ())
        })
    }

    /// vwire B removed the connection: see [`no_connection_state`].
    fn nothing_left(&self) {
        no_connection_state(&[&self.nodes.a, &self.nodes.b], &[&self.nse], &[&self.vw_b]);
    }

    /// Runs `f` with every log appended to its failure.
    fn check(&mut self, f: impl FnOnce(&mut Self)) {
        let dir = self.dir.clone();
        with_logs(|| logs_in(&dir), || f(self));
    }
}

async fn channel_to_b() -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{B_GRPC}"))
        .expect("vwire B's URL")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to vwire B at {B_GRPC} from node A: {e}"))
}

/// The Request of the test's forwarder: a fresh connection to `nse-1` for `icmp-responder` with
/// `payload`, a one-segment path (its token expiring in 10 minutes), no IP context (vwire-nse's
/// IPAM fills it), and `mech` as the only preference.
fn request(payload: &str, mech: Mechanism) -> NetworkServiceRequest {
    let id = format!("{PEER_NAME}-{}", unique(""));
    NetworkServiceRequest {
        connection: Some(Connection {
            id: id.clone(),
            network_service: "icmp-responder".into(),
            network_service_endpoint_name: "nse-1".into(),
            payload: payload.into(),
            labels: HashMap::from([("podName".to_string(), PEER_NAME.to_string())]),
            path: Some(Path {
                index: 0,
                path_segments: vec![PathSegment {
                    name: PEER_NAME.into(),
                    id,
                    expires: Some((SystemTime::now() + Duration::from_secs(600)).into()),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        mechanism_preferences: vec![mech],
    }
}

fn remote(ty: &str, params: &[(&str, &str)]) -> Mechanism {
    Mechanism {
        cls: "REMOTE".into(),
        r#type: ty.into(),
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    }
}

/// Checks what every reply must hold (the REMOTE mechanism `ty`, the connection MTU `mtu`, the
/// NSE's point-to-point addresses) and returns the mechanism's parameters.
fn check_reply(conn: &Connection, ty: &str, mtu: u32) -> HashMap<String, String> {
    let m = conn
        .mechanism
        .as_ref()
        .unwrap_or_else(|| panic!("the reply has no mechanism: {conn:?}"));
    assert_eq!(
        (m.cls.as_str(), m.r#type.as_str()),
        ("REMOTE", ty),
        "the reply's mechanism: {m:?}"
    );
    let ctx = conn
        .context
        .as_ref()
        .unwrap_or_else(|| panic!("the reply has no context: {conn:?}"));
    assert_eq!(
        ctx.mtu, mtu,
        "the connection MTU is the underlay's {UNDERLAY_MTU} minus the {ty} overhead"
    );
    let ip = ctx.ip_context.clone().unwrap_or_default();
    assert_eq!(
        ip.src_ip_addrs,
        vec![format!("{NSC_IP}/32")],
        "src_ip_addrs: {ip:?}"
    );
    assert_eq!(
        ip.dst_ip_addrs,
        vec![format!("{NSE_IP}/32")],
        "dst_ip_addrs: {ip:?}"
    );
    m.parameters.clone()
}

fn param<'a>(params: &'a HashMap<String, String>, key: &str) -> &'a str {
    params
        .get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("the reply's mechanism has no parameters[{key}]: {params:?}"))
}

fn ip_param(params: &HashMap<String, String>, key: &str) -> IpAddr {
    let v = param(params, key);
    v.parse()
        .unwrap_or_else(|_| panic!("parameters[{key}] = {v:?} is not an IP address"))
}

/// VXLAN from node A's kernel to vwire B over the IPv4 or IPv6 underlay, ETHERNET payload.
fn kernel_vxlan(v6: bool) {
    let (local, remote_ip, overhead) = if v6 {
        (A_V6, B_V6, VXLAN_V6_OVERHEAD)
    } else {
        (A_V4, B_V4, VXLAN_V4_OVERHEAD)
    };
    let mut p = Peer::start(|b| b.tunnel_ip = Some(remote_ip.into()));
    p.check(|p| {
        let port = VXLAN_PORT.to_string();
        let conn = p
            .request(request(
                "ETHERNET",
                remote("VXLAN", &[("src_ip", local), ("src_port", &port)]),
            ))
            .unwrap_or_else(|s| panic!("vwire B refused the VXLAN Request: {s:?}"));
        let mtu = UNDERLAY_MTU - overhead;
        let params = check_reply(&conn, "VXLAN", mtu);
        assert_eq!(
            ip_param(&params, "dst_ip"),
            remote_ip.parse::<IpAddr>().unwrap(),
            "dst_ip is vwire B's tunnel_ip"
        );
        assert_eq!(param(&params, "dst_port"), port, "dst_port");
        let vni: u32 = param(&params, "vni")
            .parse()
            .unwrap_or_else(|_| panic!("vni is not a number: {params:?}"));
        assert!((1..1 << 24).contains(&vni), "vni {vni} is not a 24-bit VNI");
        assert_eq!(
            vni % 2,
            0,
            "src_ip {local} < dst_ip {remote_ip}: the server picks an even VNI (nsm-api.md §4)"
        );
        p.vw_b.assert_wired_with("VXLAN", &["SRV6"]);

        // Node A's kernel is the other VTEP.
        let a = &p.nodes.a.0;
        sh(&format!(
            "ip -n {a} link add vx0 type vxlan id {vni} local {local} remote {remote_ip} \
             dstport {VXLAN_PORT} dev {UPLINK} nolearning"
        ));
        sh(&format!("ip -n {a} link set vx0 mtu {mtu}"));
        sh(&format!("ip -n {a} addr add {NSC_IP}/31 dev vx0"));
        sh(&format!("ip -n {a} link set vx0 up"));
        ping(&p.nodes.a, NSE_IP, &[56, 3000]);
        ping(&p.nse, NSC_IP, &[56, 3000]);

        p.close(conn)
            .unwrap_or_else(|s| panic!("Close failed: {s:?}"));
        p.nothing_left();
        p.vw_b.stop_cleanly(&p.nodes.b);
    });
}

#[test]
fn kernel_vxlan_ipv4_underlay() {
    kernel_vxlan(false);
}

#[test]
fn kernel_vxlan_ipv6_underlay() {
    kernel_vxlan(true);
}

/// The client host behind node A: namespace holding 172.16.1.101/31 on `p0` (MTU `mtu`, a
/// default route out of it), whose veth peer `hp0` is in node A. Node A becomes a router.
fn client_host(node_a: &Ns, mtu: u32) -> Ns {
    Nodes::router(node_a);
    let host = Ns::new("p");
    sh(&format!(
        "ip -n {} link add hp0 mtu {mtu} type veth peer name p0 mtu {mtu} netns {}",
        node_a.0, host.0
    ));
    sh(&format!("ip -n {} link set hp0 up", node_a.0));
    sh(&format!("ip -n {} addr add {NSC_IP}/31 dev p0", host.0));
    sh(&format!("ip -n {} link set p0 up", host.0));
    sh(&format!("ip -n {} route add default dev p0", host.0));
    // Node A's own route to the host (the source check of what hp0 receives, End.DX4's nh4).
    sh(&format!("ip -n {} route add {NSC_IP}/32 dev hp0", node_a.0));
    // The outer source of node A's encapsulation: its src_host_ip.
    sh(&format!("ip -n {} sr tunsrc set {A_V6}", node_a.0));
    host
}

/// Sends the SRV6 Request for `payload` with node A's SID `sid` and checks the reply; returns
/// it and vwire B's SID (`dst_localsid`).
fn srv6_request(p: &Peer, payload: &str, sid: &str, mtu: u32) -> (Connection, Ipv6Addr) {
    let a_mac = link_mac(&p.nodes.a, UPLINK);
    let conn = p
        .request(request(
            payload,
            remote(
                "SRV6",
                &[
                    ("src_host_ip", A_V6),
                    ("src_localsid", sid),
                    ("src_hw_addr", &a_mac),
                ],
            ),
        ))
        .unwrap_or_else(|s| panic!("vwire B refused the SRV6 Request: {s:?}"));
    let params = check_reply(&conn, "SRV6", mtu);
    let v = param(&params, "dst_localsid");
    let dst_sid: Ipv6Addr = v
        .parse()
        .unwrap_or_else(|_| panic!("dst_localsid {v:?} is not an IPv6 address"));
    assert_eq!(
        dst_sid.segments()[..3],
        [0xfc00, 0xb, 0],
        "dst_localsid {dst_sid} is not in vwire B's locator {LOCATOR_B}"
    );
    assert_eq!(
        ip_param(&params, "dst_host_ip"),
        B_V6.parse::<IpAddr>().unwrap(),
        "dst_host_ip is vwire B's uplink IPv6 address (the default host_ip)"
    );
    assert_eq!(
        param(&params, "dst_hw_addr").to_ascii_lowercase(),
        link_mac(&p.nodes.b, UPLINK),
        "dst_hw_addr is vwire B's uplink MAC"
    );
    p.vw_b.assert_wired_with("SRV6", &["VXLAN"]);
    (conn, dst_sid)
}

/// Whether this kernel can be the SRv6 peer: `Err` with the kernel's answer where it has no
/// seg6 lightweight tunnels. Adds, in a throwaway namespace, one route of each kind the SRv6
/// tests use (`encap seg6` in `l2encap` and `encap` modes, `seg6local` `End.DX2` and
/// `End.DX4`). Panics when a probe route fails for any other reason.
fn seg6_lwtunnel() -> Result<(), String> {
    let ns = Ns::new("s6");
    let n = &ns.0;
    sh(&format!("ip -n {n} link add s6a type veth peer name s6b"));
    sh(&format!("ip -n {n} link set s6a up"));
    sh(&format!("ip -n {n} -6 addr add fd00:5::1/64 dev s6a nodad"));
    for route in [
        "route add 192.0.2.1/32 encap seg6 mode l2encap segs fd00:5::2 dev s6a",
        "route add 192.0.2.2/32 encap seg6 mode encap segs fd00:5::2 dev s6a",
        "-6 route add fc00:5::d2/128 encap seg6local action End.DX2 oif s6a dev s6a",
        "-6 route add fc00:5::d4/128 encap seg6local action End.DX4 nh4 192.0.2.1 dev s6a",
    ] {
        let cmd = format!("ip -n {n} {route}");
        let out = run(&cmd);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if lwtunnel_missing(&err) {
                return Err(format!("`{cmd}`: {}", err.trim()));
            }
            panic!("the seg6 probe `{cmd}` failed ({}): {err}", out.status);
        }
    }
    Ok(())
}

/// Whether `ip route add`'s stderr says the kernel has no such lightweight tunnel type (the
/// extack of an `encap` whose type is not built in), as opposed to any other failure.
fn lwtunnel_missing(stderr: &str) -> bool {
    stderr
        .to_ascii_lowercase()
        .contains("encapsulation type not supported")
}

/// Runs `test` when the kernel has seg6 lightweight tunnels; otherwise reports it not checked.
fn with_seg6(test: impl FnOnce()) {
    require(&["ip"]);
    match seg6_lwtunnel() {
        Ok(()) => test(),
        Err(answer) => not_checked(&format!(
            "kernel has no seg6 lwtunnel: SRv6 kernel-peer interop not checked on this machine \
             ({answer})"
        )),
    }
}

#[test]
fn seg6_probe_tells_a_missing_lwtunnel_from_other_errors() {
    // iproute2's rendering of the kernel's extack when CONFIG_IPV6_SEG6_LWTUNNEL is off.
    assert!(lwtunnel_missing(
        "Error: lwt encapsulation type not supported.\n"
    ));
    assert!(!lwtunnel_missing("Error: Nexthop has invalid gateway.\n"));
    assert!(!lwtunnel_missing("RTNETLINK answers: File exists\n"));
    assert!(!lwtunnel_missing("Cannot find device \"s6a\"\n"));
}

/// H.Encaps.L2 / End.DX2 between node A's kernel and vwire B, ETHERNET payload.
#[test]
fn kernel_srv6_end_dx2() {
    with_seg6(kernel_srv6_end_dx2_run);
}

fn kernel_srv6_end_dx2_run() {
    let mut p = Peer::start(|b| b.host_ip = None);
    p.check(|p| {
        let mtu = UNDERLAY_MTU - SRV6_ETHERNET_OVERHEAD;
        let (conn, dst_sid) = srv6_request(p, "ETHERNET", SID_DX2, mtu);
        let a = &p.nodes.a.0;
        let host = client_host(&p.nodes.a, mtu);
        let nse_if = link_with_prefix(&p.nse, "nse-");
        let nse_mac = link_mac(&p.nse, &nse_if);
        let host_mac = link_mac(&host, "p0");
        // The frame node A encapsulates keeps the MAC header it arrived with on hp0: give hp0
        // the NSE's MAC so that the NSE accepts it. ARP does not enter the kernel's l2encap, so
        // both ends know each other statically.
        sh(&format!("ip -n {a} link set hp0 address {nse_mac}"));
        sh(&format!(
            "ip -n {} neigh replace {NSE_IP} lladdr {nse_mac} dev p0 nud permanent",
            host.0
        ));
        sh(&format!(
            "ip -n {} neigh replace {NSC_IP} lladdr {host_mac} dev {nse_if} nud permanent",
            p.nse.0
        ));
        sh(&format!(
            "ip -n {a} route add {NSE_IP}/32 encap seg6 mode l2encap segs {dst_sid} dev {UPLINK}"
        ));
        sh(&format!(
            "ip -n {a} -6 route add {SID_DX2}/128 encap seg6local action End.DX2 oif hp0 dev hp0"
        ));
        ping(&host, NSE_IP, &[56, 3000]);
        ping(&p.nse, NSC_IP, &[56, 3000]);

        p.close(conn)
            .unwrap_or_else(|s| panic!("Close failed: {s:?}"));
        p.nothing_left();
        p.vw_b.stop_cleanly(&p.nodes.b);
    });
}

/// H.Encaps / End.DX4 between node A's kernel and vwire B, IP payload.
#[test]
fn kernel_srv6_end_dx4() {
    with_seg6(kernel_srv6_end_dx4_run);
}

fn kernel_srv6_end_dx4_run() {
    let mut p = Peer::start(|b| b.host_ip = None);
    p.check(|p| {
        let mtu = UNDERLAY_MTU - SRV6_IP_OVERHEAD;
        let (conn, dst_sid) = srv6_request(p, "IP", SID_DX4, mtu);
        let a = &p.nodes.a.0;
        let host = client_host(&p.nodes.a, mtu);
        // The host sends to node A (no proxy ARP); vwire B gives the NSE a permanent neighbour
        // for the host itself, as for any IP connection.
        let hp0_mac = link_mac(&p.nodes.a, "hp0");
        sh(&format!(
            "ip -n {} neigh replace {NSE_IP} lladdr {hp0_mac} dev p0 nud permanent",
            host.0
        ));
        sh(&format!(
            "ip -n {a} route add {NSE_IP}/32 encap seg6 mode encap segs {dst_sid} dev {UPLINK}"
        ));
        sh(&format!(
            "ip -n {a} -6 route add {SID_DX4}/128 encap seg6local action End.DX4 nh4 {NSC_IP} \
             dev hp0"
        ));
        ping(&host, NSE_IP, &[56, 3000]);
        ping(&p.nse, NSC_IP, &[56, 3000]);

        p.close(conn)
            .unwrap_or_else(|s| panic!("Close failed: {s:?}"));
        p.nothing_left();
        p.vw_b.stop_cleanly(&p.nodes.b);
    });
}
