//! Fuzzes SRv6 decapsulation (End.DX2/DX4/DX6) with arbitrary frames from the uplink (anyone
//! can send to an address inside vwire's locator).
//!
//! The first input byte places the frame in the buffer (as headroom would), the rest is the
//! frame. Checks: `decap` never panics; what it accepts lies inside the packet, is at least as
//! long as its payload's own header, and passes exactly one behaviour's check; and
//! re-encapsulating the payload toward the same SID decapsulates back to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vwire_mechanisms::srv6::{decap, Behavior, EncapHeader, EncapParams, Payload};

fuzz_target!(|data: &[u8]| {
    let Some((&[off], frame)) = data.split_first_chunk::<1>() else {
        return;
    };
    let off = usize::from(off);
    let mut buf = vec![0u8; off + frame.len()];
    buf[off..].copy_from_slice(frame);
    let Ok(d) = decap(&buf, off, frame.len()) else {
        return;
    };
    assert!(
        d.offset >= off + 54 && d.offset + d.len <= buf.len(),
        "{d:?}"
    );
    assert!(d.len >= 14);
    let ok = [Behavior::EndDx2, Behavior::EndDx4, Behavior::EndDx6]
        .iter()
        .filter(|b| b.check(&d).is_ok())
        .count();
    assert_eq!(ok, 1);

    let payload = &buf[d.offset..d.offset + d.len];
    let h = EncapHeader::new(&EncapParams {
        src: d.sid,
        sid: d.sid,
        local_mac: [2, 0, 0, 0, 0, 1],
        next_hop_mac: [2, 0, 0, 0, 0, 2],
        hop_limit: 64,
    });
    let mut out = vec![0xa5u8; 256 + payload.len()];
    out[256..].copy_from_slice(payload);
    let r = match d.payload {
        Payload::Ethernet => h.encap_l2(&mut out, 256, payload.len()),
        // H.Encaps picks 4 or 41 from the version nibble, which the outer next header need
        // not agree with: only a consistent payload round-trips.
        Payload::Ipv4 if payload[0] >> 4 == 4 => h.encap_ip(&mut out, 256, payload.len()),
        Payload::Ipv6 if payload[0] >> 4 == 6 => h.encap_ip(&mut out, 256, payload.len()),
        _ => return,
    };
    let Ok((o, l)) = r else {
        assert!(payload.len() + 24 > 65_535);
        return;
    };
    let d2 = decap(&out, o, l).expect("our own encapsulation must decap");
    assert_eq!((d2.sid, d2.payload), (d.sid, d.payload));
    assert_eq!(&out[d2.offset..d2.offset + d2.len], payload);
});
