//! Fuzzes the memif control-message codec with arbitrary datagrams from a hostile peer.
//!
//! Checks: `Msg::decode` never panics; whatever it accepts re-encodes to a datagram that
//! decodes again; that second decode is an exact round trip (`encode` is canonical); and the
//! only thing re-encoding may change is to shorten a string that did not fit its field
//! (a 32-byte name with no NUL, or one grown by lossy UTF-8 replacement).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vwire_mechanisms::memif::msg::{Msg, MSG_SIZE};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Msg::decode(data) else {
        return;
    };
    assert_eq!(data.len(), MSG_SIZE);
    let wire = m.encode();
    let m2 = Msg::decode(&wire).expect("encode output must decode");
    assert_eq!(m2.encode(), wire, "encode is not canonical for {m2:?}");
    let (bare, strs) = split_strings(&m);
    let (bare2, strs2) = split_strings(&m2);
    assert_eq!(bare, bare2);
    for (s, s2) in strs.iter().zip(&strs2) {
        assert!(s.starts_with(s2.as_str()), "{s:?} re-decoded as {s2:?}");
    }
    // A canonical input (what a conforming peer sends) round-trips exactly.
    if data == wire.as_slice() {
        assert_eq!(m, m2);
    }
});

/// The message with its strings emptied, and the strings.
fn split_strings(m: &Msg) -> (Msg, Vec<String>) {
    let mut m = m.clone();
    let strs = match &mut m {
        Msg::Hello(h) => vec![std::mem::take(&mut h.name)],
        Msg::Init(i) => vec![std::mem::take(&mut i.secret), std::mem::take(&mut i.name)],
        Msg::Connect { if_name } | Msg::Connected { if_name } => vec![std::mem::take(if_name)],
        Msg::Disconnect { reason, .. } => vec![std::mem::take(reason)],
        Msg::Ack | Msg::AddRegion { .. } | Msg::AddRing(_) => vec![],
    };
    (m, strs)
}
