//! Tests of the assembler and the steering program builder, with no kernel.
//!
//! Besides checking the encoding, the programs are run on an interpreter of the eBPF subset they
//! use ([`run`]), whose packet loads fail unless they lie inside the frame: the same frames as
//! the privileged test (`tests/afxdp_steer.rs`), and mutated and truncated frames compared with
//! a plain-Rust model of the contract ([`model`]) by proptest. The kernel verifier and the real
//! datapath are exercised by the privileged test.

use super::*;
use proptest::prelude::*;

const MAP_FD: i32 = 9;

// ---------------------------------------------------------------------------------------------
// An interpreter of the eBPF subset the builder emits.

/// Where the interpreter places the context and the frame (any distinct, non-overlapping values).
const CTX: u64 = 0x1_0000_0000;
const DATA: u64 = 0x2_0000_0000;
const MAP: u64 = 0x3_0000_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Redirect { queue: u64 },
}

/// Runs `prog` on `frame` received on `queue`. Errors on an instruction outside the subset, a
/// load outside the context or the frame, or a run past the end.
fn run(prog: &[BpfInsn], frame: &[u8], queue: u32) -> Result<Verdict, String> {
    let end = DATA + frame.len() as u64;
    let mut r = [0u64; 11];
    r[1] = CTX;
    let mut redirected = None;
    let mut pc = 0usize;
    for _ in 0..10_000 {
        let i = *prog.get(pc).ok_or(format!("ran past the end at {pc}"))?;
        let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
        let class = i.code & 0x07;
        let op = i.code & 0xf0;
        let imm64 = i64::from(i.imm) as u64;
        pc += 1;
        match class {
            BPF_LDX => {
                let size: usize = match i.code & 0x18 {
                    BPF_B => 1,
                    BPF_H => 2,
                    BPF_W => 4,
                    _ => return Err(format!("load size at {}", pc - 1)),
                };
                let addr = r[src].wrapping_add(i64::from(i.off) as u64);
                r[dst] = if r[src] == CTX {
                    match i.off {
                        CTX_DATA => DATA,
                        CTX_DATA_END => end,
                        CTX_RX_QUEUE => u64::from(queue),
                        o => return Err(format!("context field {o}")),
                    }
                } else if addr >= DATA && addr + size as u64 <= end {
                    let at = usize::try_from(addr - DATA).map_err(|e| e.to_string())?;
                    let mut b = [0u8; 8];
                    b[..size].copy_from_slice(&frame[at..at + size]);
                    // eBPF loads in the host's byte order, as here.
                    match size {
                        1 => u64::from(b[0]),
                        2 => u64::from(u16::from_ne_bytes([b[0], b[1]])),
                        _ => u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
                    }
                } else {
                    return Err(format!(
                        "load of {size} bytes at frame offset {} (frame of {}) at insn {}",
                        addr.wrapping_sub(DATA) as i64,
                        frame.len(),
                        pc - 1
                    ));
                };
            }
            BPF_ALU64 | BPF_ALU => {
                let v = if i.code & BPF_X != 0 { r[src] } else { imm64 };
                let d = r[dst];
                let out = match op {
                    BPF_ADD => d.wrapping_add(v),
                    BPF_AND => d & v,
                    BPF_LSH => d << (v & 63),
                    BPF_MOV => v,
                    _ => return Err(format!("alu op {op:#x}")),
                };
                r[dst] = if class == BPF_ALU {
                    out & 0xffff_ffff
                } else {
                    out
                };
            }
            BPF_JMP | BPF_JMP32 => {
                match op {
                    BPF_EXIT => {
                        return match (r[0], redirected) {
                            (2, None) => Ok(Verdict::Pass),
                            (4, Some(queue)) => Ok(Verdict::Redirect { queue }),
                            other => Err(format!("exit with {other:?}")),
                        }
                    }
                    BPF_CALL => {
                        if i.imm != FN_REDIRECT_MAP || r[1] != MAP || r[3] != XDP_PASS as u64 {
                            return Err(format!("call {} r1 {:#x} r3 {}", i.imm, r[1], r[3]));
                        }
                        redirected = Some(r[2]);
                        r[0] = 4; // XDP_REDIRECT
                        continue;
                    }
                    _ => {}
                }
                let v = if i.code & BPF_X != 0 { r[src] } else { imm64 };
                let (a, b) = if class == BPF_JMP32 {
                    (r[dst] & 0xffff_ffff, v & 0xffff_ffff)
                } else {
                    (r[dst], v)
                };
                let taken = match op {
                    BPF_JA => true,
                    BPF_JEQ => a == b,
                    BPF_JNE => a != b,
                    BPF_JGT => a > b,
                    BPF_JLT => a < b,
                    _ => return Err(format!("jump op {op:#x}")),
                };
                if taken {
                    pc = usize::try_from(pc as i64 + i64::from(i.off))
                        .map_err(|_| format!("jump before the start at {}", pc - 1))?;
                }
            }
            BPF_LD if i.code == BPF_LD | BPF_DW | BPF_IMM => {
                if src != usize::from(BPF_PSEUDO_MAP_FD) || i.imm != MAP_FD {
                    return Err("wide load of something else than the map".into());
                }
                r[dst] = MAP;
                pc += 1;
            }
            _ => return Err(format!("opcode {:#x}", i.code)),
        }
    }
    Err("no exit after 10000 steps".into())
}

// ---------------------------------------------------------------------------------------------
// The contract, in plain Rust.

fn model(s: &Steering, f: &[u8]) -> bool {
    let be16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    if f.len() < 14 {
        return false;
    }
    match be16(12) {
        0x0800 => {
            let Some(addr) = s.ipv4 else { return false };
            if f.len() < 34 || f[30..34] != addr.octets() || f[23] != 17 {
                return false;
            }
            let (version, ihl) = (f[14] >> 4, usize::from(f[14] & 0x0f));
            let not_fragment = be16(20) & 0x3fff == 0;
            let udp = 14 + ihl * 4;
            version == 4
                && ihl >= 5
                && not_fragment
                && f.len() >= udp + 8
                && be16(udp + 2) == s.vxlan_port
        }
        0x86dd => {
            if f.len() < 54 {
                return false;
            }
            let dst = u128::from_be_bytes(f[38..54].try_into().expect("16 bytes"));
            let tunnel = s.ipv6.is_some_and(|a| {
                dst == u128::from(a) && f[20] == 17 && f.len() >= 62 && be16(56) == s.vxlan_port
            });
            let srv6 = s.srv6_locator.is_some_and(|(p, len)| {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                dst & mask == u128::from(p) & mask
            });
            tunnel || srv6
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Frames.

const A4: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
const A6: Ipv6Addr = Ipv6Addr::new(0xfd97, 0, 0, 0, 0, 0, 0, 1);
const LOC: Ipv6Addr = Ipv6Addr::new(0xfc00, 1, 0, 0, 0, 0, 0, 0);

fn all_rules() -> Steering {
    Steering {
        vxlan_port: 4789,
        ipv4: Some(A4),
        ipv6: Some(A6),
        srv6_locator: Some((LOC, 48)),
    }
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("small");
    let mut u = Vec::new();
    u.extend_from_slice(&50000u16.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An IPv4 frame with `options` bytes of options (a multiple of 4) and the flags/offset word.
fn ipv4(dst: Ipv4Addr, proto: u8, frag: u16, options: usize, l4: &[u8]) -> Vec<u8> {
    let ihl = u8::try_from(5 + options / 4).expect("small");
    let total = u16::try_from(20 + options + l4.len()).expect("small");
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0, 10, 97, 0, 2]);
    h.extend_from_slice(&dst.octets());
    h.extend(std::iter::repeat_n(1u8, options)); // NOP options
    h.extend_from_slice(l4);
    eth(0x0800, &h)
}

fn ipv6(dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let len = u16::try_from(l4.len()).expect("small");
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&Ipv6Addr::new(0xfd97, 0, 0, 0, 0, 0, 0, 2).octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    eth(0x86dd, &h)
}

/// A segment routing header with one segment, then `inner`.
fn srh(segment: Ipv6Addr, inner: &[u8]) -> Vec<u8> {
    let mut s = vec![4, 2, 4, 0, 0, 0, 0, 0];
    s.extend_from_slice(&segment.octets());
    s.extend_from_slice(inner);
    s
}

/// Frames of every kind the contract names, each with the verdict under [`all_rules`].
fn fixtures() -> Vec<(&'static str, Vec<u8>, bool)> {
    let vx = udp(4789, b"vxlan payload");
    let in_loc = Ipv6Addr::new(0xfc00, 1, 0, 0xffff, 0, 0, 0, 7);
    let mut tagged = ipv4(A4, 17, 0, 0, &vx);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
    let mut ihl15 = ipv4(A4, 17, 0, 40, &vx);
    ihl15[14] = 0x4f;
    let mut v6_as_v4 = ipv4(A4, 17, 0, 0, &vx);
    v6_as_v4[14] = 0x65;
    vec![
        ("vxlan/ipv4", ipv4(A4, 17, 0, 0, &vx), true),
        ("vxlan/ipv4 with DF", ipv4(A4, 17, 0x4000, 0, &vx), true),
        ("vxlan/ipv4 ihl 6", ipv4(A4, 17, 0, 4, &vx), true),
        ("vxlan/ipv4 ihl 15", ihl15.clone(), true),
        (
            "vxlan/ipv4 ihl 15 truncated",
            ihl15[..14 + 60 + 7].to_vec(),
            false,
        ),
        (
            "ipv4 header length 16",
            {
                let mut f = ipv4(A4, 17, 0, 0, &vx);
                f[14] = 0x44;
                f
            },
            false,
        ),
        ("ipv4 version 6", v6_as_v4, false),
        ("first fragment (MF)", ipv4(A4, 17, 0x2000, 0, &vx), false),
        ("later fragment", ipv4(A4, 17, 0x0010, 0, &vx), false),
        (
            "ipv4 other port",
            ipv4(A4, 17, 0, 0, &udp(4790, b"x")),
            false,
        ),
        (
            "ipv4 other address",
            ipv4(Ipv4Addr::new(10, 97, 0, 3), 17, 0, 0, &vx),
            false,
        ),
        ("ipv4 tcp", ipv4(A4, 6, 0, 0, &vx), false),
        (
            "ipv4 truncated udp",
            ipv4(A4, 17, 0, 0, &vx)[..41].to_vec(),
            false,
        ),
        (
            "ipv4 truncated header",
            ipv4(A4, 17, 0, 0, &vx)[..33].to_vec(),
            false,
        ),
        ("802.1Q tagged vxlan/ipv4", tagged, false),
        ("arp", eth(0x0806, &[0; 28]), false),
        ("runt", vec![0xff; 13], false),
        ("empty", Vec::new(), false),
        ("vxlan/ipv6", ipv6(A6, 17, &vx), true),
        ("ipv6 other port", ipv6(A6, 17, &udp(53, b"x")), false),
        ("ipv6 hop-by-hop then udp", ipv6(A6, 0, &vx), false),
        ("ipv6 icmp (nd)", ipv6(A6, 58, &[135, 0, 0, 0]), false),
        (
            "ipv6 truncated udp",
            ipv6(A6, 17, &vx)[..61].to_vec(),
            false,
        ),
        (
            "ipv6 truncated header",
            ipv6(A6, 17, &vx)[..53].to_vec(),
            false,
        ),
        (
            "srv6 srh in locator",
            ipv6(in_loc, 43, &srh(in_loc, &[0x45; 20])),
            true,
        ),
        ("srv6 ipip6 at locator", ipv6(LOC, 4, &[0x45; 20]), true),
        (
            "srv6 udp in locator",
            ipv6(in_loc, 17, &udp(9999, b"x")),
            true,
        ),
        ("srv6 header only", ipv6(in_loc, 43, &[]), true),
        (
            "srv6 just outside /48",
            ipv6(Ipv6Addr::new(0xfc00, 1, 1, 0, 0, 0, 0, 5), 43, &[]),
            false,
        ),
        (
            "srv6 other locator",
            ipv6(Ipv6Addr::new(0xfc00, 2, 0, 0, 0, 0, 0, 5), 43, &[]),
            false,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Assembler.

#[test]
fn asm_resolves_forward_and_backward_labels() {
    let mut a = Asm::default();
    let back = a.label();
    let fwd = a.label();
    a.bind(back);
    a.emit(alu64_imm(BPF_MOV, R0, 0)); // 0
    a.jmp32_imm(BPF_JEQ, R0, 1, fwd); // 1
    a.ja(back); // 2
    a.emit(alu64_imm(BPF_MOV, R0, 1)); // 3
    a.bind(fwd);
    a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)); // 4
    let p = a.finish().expect("assembles");
    assert_eq!(p.len(), 5);
    assert_eq!(p[1].off, 2, "from 2 to 4");
    assert_eq!(p[2].off, -3, "from 3 back to 0");
    assert_eq!((p[1].code, p[1].imm), (BPF_JMP32 | BPF_JEQ, 1));
}

#[test]
fn asm_takes_the_widest_jumps_and_rejects_wider() {
    for (filler, ok) in [(i16::MAX as usize, true), (i16::MAX as usize + 1, false)] {
        let mut a = Asm::default();
        let l = a.label();
        a.ja(l);
        for _ in 0..filler {
            a.emit(alu64_imm(BPF_MOV, R0, 0));
        }
        a.bind(l);
        a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
        match a.finish() {
            Ok(p) => assert!(ok && p[0].off == i16::MAX),
            Err(AfXdpError::Assemble { at: 0, what }) => {
                assert!(!ok && what.contains("16 bits"), "{what}")
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let mut a = Asm::default();
    let l = a.label();
    a.bind(l);
    for _ in 0..=i16::MAX as usize + 1 {
        a.emit(alu64_imm(BPF_MOV, R0, 0));
    }
    a.ja(l);
    a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    assert!(matches!(a.finish(), Err(AfXdpError::Assemble { .. })));
}

#[test]
fn asm_rejects_misused_labels() {
    let what = |a: Asm| match a.finish() {
        Err(AfXdpError::Assemble { what, .. }) => what,
        other => panic!("expected an assembly error, got {other:?}"),
    };
    // never bound
    let mut a = Asm::default();
    let l = a.label();
    a.ja(l);
    a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    assert!(what(a).contains("never bound"));
    // bound twice
    let mut a = Asm::default();
    let l = a.label();
    a.bind(l);
    a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    a.bind(l);
    assert!(what(a).contains("twice"));
    // bound after the last instruction
    let mut a = Asm::default();
    let l = a.label();
    a.ja(l);
    a.bind(l);
    assert!(what(a).contains("past the last"));
    // from another assembler
    let mut other = Asm::default();
    other.label();
    let foreign = other.label();
    let mut a = Asm::default();
    a.ja(foreign);
    a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    assert!(what(a).contains("another assembler"));
}

// ---------------------------------------------------------------------------------------------
// Builder: encoding.

fn is_compare(i: &BpfInsn) -> bool {
    let class = i.code & 0x07;
    let op = i.code & 0xf0;
    (class == BPF_JMP || class == BPF_JMP32) && ![BPF_JA, BPF_CALL, BPF_EXIT].contains(&op)
}

/// Immediates of the comparisons with a constant.
fn compared(p: &[BpfInsn]) -> Vec<i32> {
    p.iter()
        .filter(|i| is_compare(i) && i.code & BPF_X == 0)
        .map(|i| i.imm)
        .collect()
}

#[test]
fn no_rule_is_a_plain_pass() {
    let p = Steering::default().program(MAP_FD).expect("builds");
    assert_eq!(
        p,
        vec![
            alu64_imm(BPF_MOV, R0, XDP_PASS),
            insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
        ]
    );
    assert_eq!(Steering::default().vxlan_port, 4789);
}

/// Lengths from the listing in the module docs: prologue 6, one EtherType jump per family plus
/// `goto pass`, IPv4 block 23, IPv6 bounds check 3, IPv6 tunnel 16, locator 2 per word (+1 for
/// the partial word) + 1, then `pass` (2) and `redirect` (6).
#[test]
fn program_lengths_follow_the_listing() {
    let len = |s: Steering| s.program(MAP_FD).expect("builds").len();
    let only = |f: fn(&mut Steering)| {
        let mut s = Steering::default();
        f(&mut s);
        s
    };
    assert_eq!(len(only(|s| s.ipv4 = Some(A4))), 6 + 2 + 23 + 8);
    assert_eq!(len(only(|s| s.ipv6 = Some(A6))), 6 + 2 + 3 + 16 + 8);
    assert_eq!(
        len(only(|s| s.srv6_locator = Some((LOC, 48)))),
        6 + 2 + 3 + (2 + 3 + 1) + 8
    );
    assert_eq!(len(all_rules()), 6 + 3 + 23 + 3 + 16 + 6 + 8);
}

#[test]
fn absent_rules_emit_no_comparisons() {
    let v4 = be16(0x0800);
    let v6 = be16(0x86dd);
    let port = be16(4789);
    let addr4 = be32(A4.octets());
    // Distinct words, none equal to the locator's or to another constant.
    let t6 = Ipv6Addr::new(
        0xfd97, 0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666, 0x7777,
    );
    let addr6 = prefix_words(t6, 128);

    let p = Steering {
        ipv4: Some(A4),
        ..Default::default()
    }
    .program(MAP_FD)
    .expect("builds");
    let c = compared(&p);
    assert!(c.contains(&v4) && c.contains(&addr4) && c.contains(&port));
    assert!(!c.contains(&v6), "no IPv6 rule, no IPv6 EtherType test");

    let p = Steering {
        srv6_locator: Some((LOC, 48)),
        ..Default::default()
    }
    .program(MAP_FD)
    .expect("builds");
    let c = compared(&p);
    assert_eq!(c.len(), 1 + 2, "the EtherType, then two locator words");
    assert!(c.contains(&v6) && !c.contains(&v4), "no IPv4 rule");
    assert!(!c.contains(&port), "no tunnel rule, no port test");
    assert!(
        !c.contains(&IPPROTO_UDP),
        "no tunnel rule, no protocol test"
    );
    assert!(!addr6.iter().any(|&(_, _, w)| c.contains(&w)));

    let p = Steering {
        ipv6: Some(t6),
        ..Default::default()
    }
    .program(MAP_FD)
    .expect("builds");
    let c = compared(&p);
    assert!(addr6.iter().all(|&(_, _, w)| c.contains(&w)));
    assert!(!c.contains(&v4));
    assert!(
        !p.iter().any(|i| i.code == BPF_ALU | BPF_AND | BPF_K),
        "no locator, no masked word"
    );
}

#[test]
fn locator_words_and_masks() {
    let loc = Ipv6Addr::new(0xfc00, 0x1234, 0x5678, 0x9abc, 0, 0, 0, 1);
    let words = |len| prefix_words(loc, len);
    assert!(words(0).is_empty());
    let w = words(48);
    assert_eq!(w.len(), 2);
    assert_eq!(w[0], (0, -1, be32([0xfc, 0x00, 0x12, 0x34])));
    assert_eq!(
        w[1],
        (1, be32([0xff, 0xff, 0, 0]), be32([0x56, 0x78, 0, 0]))
    );
    assert_eq!(words(33)[1].1, be32([0x80, 0, 0, 0]));
    assert_eq!(words(64).len(), 2);
    assert!(words(128).iter().all(|&(_, m, _)| m == -1));
    assert_eq!(words(128).len(), 4);

    // A /0 locator compares nothing after the IPv6 EtherType: all IPv6 goes.
    let p = Steering {
        srv6_locator: Some((loc, 0)),
        ..Default::default()
    }
    .program(MAP_FD)
    .expect("builds");
    assert_eq!(compared(&p), vec![be16(0x86dd)]);
}

#[test]
fn invalid_locator_is_refused() {
    let s = Steering {
        srv6_locator: Some((LOC, 129)),
        ..Default::default()
    };
    assert!(matches!(s.validate(), Err(AfXdpError::BadSteering(_))));
    assert!(matches!(s.program(1), Err(AfXdpError::BadSteering(_))));
}

#[test]
fn map_fd_and_redirect_tail() {
    let p = all_rules().program(MAP_FD).expect("builds");
    let n = p.len();
    // r2 = rx_queue_index; r1 = map ll; r3 = XDP_PASS; call bpf_redirect_map; exit
    assert_eq!(
        (p[n - 6].code, p[n - 6].regs, p[n - 6].off),
        (0x61, 0x12, 16)
    );
    assert_eq!(
        (p[n - 5].code, p[n - 5].regs, p[n - 5].imm),
        (0x18, 0x11, MAP_FD)
    );
    assert_eq!(p[n - 4], BpfInsn::default());
    assert_eq!(
        (p[n - 3].code, p[n - 3].regs, p[n - 3].imm),
        (0xb7, 3, XDP_PASS)
    );
    assert_eq!((p[n - 2].code, p[n - 2].imm), (0x85, FN_REDIRECT_MAP));
    assert_eq!(p[n - 1].code, 0x95);
    // Exactly one map load, and every jump lands inside the program.
    assert_eq!(p.iter().filter(|i| i.code == 0x18).count(), 1);
    for (at, i) in p.iter().enumerate() {
        if is_compare(i) || i.code == BPF_JMP | BPF_JA {
            let to = at as i64 + 1 + i64::from(i.off);
            assert!((0..n as i64).contains(&to) && to > at as i64, "insn {at}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Builder: behaviour.

#[test]
fn fixtures_get_the_contract_verdict() {
    let p = all_rules().program(MAP_FD).expect("builds");
    for (name, frame, steered) in fixtures() {
        assert_eq!(
            model(&all_rules(), &frame),
            steered,
            "model disagrees on {name}"
        );
        let want = if steered {
            Verdict::Redirect { queue: 3 }
        } else {
            Verdict::Pass
        };
        assert_eq!(run(&p, &frame, 3), Ok(want), "{name}");
    }
}

#[test]
fn each_rule_alone_steers_only_its_frames() {
    let singles = [
        Steering {
            ipv4: Some(A4),
            ..Default::default()
        },
        Steering {
            ipv6: Some(A6),
            ..Default::default()
        },
        Steering {
            srv6_locator: Some((LOC, 48)),
            ..Default::default()
        },
        Steering::default(),
    ];
    for s in singles {
        let p = s.program(MAP_FD).expect("builds");
        for (name, frame, _) in fixtures() {
            let want = model(&s, &frame);
            let got = run(&p, &frame, 0).expect(name) != Verdict::Pass;
            assert_eq!(got, want, "{name} with {s:?}");
        }
    }
}

#[test]
fn other_vxlan_port() {
    let s = Steering {
        vxlan_port: 8472,
        ..all_rules()
    };
    let p = s.program(MAP_FD).expect("builds");
    let vx = udp(8472, b"x");
    assert_ne!(run(&p, &ipv4(A4, 17, 0, 0, &vx), 0), Ok(Verdict::Pass));
    assert_ne!(run(&p, &ipv6(A6, 17, &vx), 0), Ok(Verdict::Pass));
    let std = udp(4789, b"x");
    assert_eq!(run(&p, &ipv4(A4, 17, 0, 0, &std), 0), Ok(Verdict::Pass));
}

fn steering() -> impl Strategy<Value = Steering> {
    (
        prop_oneof![Just(4789u16), Just(8472)],
        proptest::option::of(Just(A4)),
        proptest::option::of(Just(A6)),
        proptest::option::of((Just(LOC), 0u8..=128)),
    )
        .prop_map(|(vxlan_port, ipv4, ipv6, srv6_locator)| Steering {
            vxlan_port,
            ipv4,
            ipv6,
            srv6_locator,
        })
}

proptest! {
    /// Frames near the rules (a fixture with a few bytes changed in the headers, then cut
    /// anywhere) get the model's verdict under any combination of rules, and the program never
    /// loads outside the frame.
    #[test]
    fn program_agrees_with_the_model(
        s in steering(),
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let fixtures = fixtures();
        let mut frame = fixtures[which.index(fixtures.len())].1.clone();
        for (at, v) in edits {
            if let Some(b) = frame.get_mut(at) {
                *b = v;
            }
        }
        if let Some(cut) = cut {
            frame.truncate(cut.index(frame.len() + 1));
        }
        let p = s.program(MAP_FD).expect("builds");
        let got = run(&p, &frame, 1).map_err(TestCaseError::fail)?;
        prop_assert_eq!(got != Verdict::Pass, model(&s, &frame), "{:?} {:02x?}", s, frame);
    }

    /// Any frame at all: never a load outside the frame, and the model's verdict.
    #[test]
    fn random_frames(
        s in steering(),
        ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), any::<u16>()],
        mut frame in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        if let Some(t) = frame.get_mut(12..14) {
            t.copy_from_slice(&ethertype.to_be_bytes());
        }
        let p = s.program(MAP_FD).expect("builds");
        let got = run(&p, &frame, 0).map_err(TestCaseError::fail)?;
        prop_assert_eq!(got != Verdict::Pass, model(&s, &frame));
    }
}
