//! Fuzzes VXLAN decapsulation with arbitrary frames from the uplink (any peer can send UDP to
//! the VXLAN port).
//!
//! The first input byte places the frame in the buffer (as headroom would), the rest is the
//! frame. Checks: `decap` never panics; what it accepts lies inside the packet and holds at least
//! an Ethernet header; `strip_inner_ethernet` never panics on it; and re-encapsulating the inner
//! frame toward the sender, with the same VNI, decapsulates back to the same frame and VNI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use vwire_mechanisms::vxlan::{
    decap, strip_inner_ethernet, TunnelHeader, TunnelParams, Underlay, VXLAN_PORT,
};

fuzz_target!(|data: &[u8]| {
    let Some((&[off], frame)) = data.split_first_chunk::<1>() else {
        return;
    };
    let off = usize::from(off);
    let mut buf = vec![0u8; off + frame.len()];
    buf[off..].copy_from_slice(frame);
    let Ok(d) = decap(&buf, off, frame.len(), VXLAN_PORT) else {
        return;
    };
    assert!(
        d.offset >= off + 50 && d.offset + d.len <= buf.len(),
        "{d:?}"
    );
    assert!(d.len >= 14);
    let _ = strip_inner_ethernet(&buf, d.offset, d.len);

    let inner = &buf[d.offset..d.offset + d.len];
    let underlay = match d.remote {
        IpAddr::V4(a) => Underlay::V4 {
            local: a,
            remote: a,
        },
        IpAddr::V6(a) => Underlay::V6 {
            local: a,
            remote: a,
        },
    };
    let th = TunnelHeader::new(&TunnelParams {
        underlay,
        local_mac: [2, 0, 0, 0, 0, 1],
        next_hop_mac: [2, 0, 0, 0, 0, 2],
        dst_port: VXLAN_PORT,
        vni: d.vni,
        ttl: 64,
        udp_checksum_v4: true,
    });
    let mut out = vec![0xa5u8; 256 + inner.len()];
    out[256..].copy_from_slice(inner);
    let Ok((o, l)) = th.encap(&mut out, 256, inner.len()) else {
        // Only an inner frame too long for one IP packet cannot be re-encapsulated.
        assert!(inner.len() + 36 > 65_535);
        return;
    };
    let d2 = decap(&out, o, l, VXLAN_PORT).expect("our own encapsulation must decap");
    assert_eq!((d2.remote, d2.vni), (d.remote, d.vni));
    assert_eq!(&out[d2.offset..d2.offset + d2.len], inner);
});
