//! Tests of the shared program builder and the slot allocator, with no kernel.
//!
//! The program is run on an interpreter of the eBPF subset it uses ([`run`]), with the interface
//! map as a plain `HashMap`. The interpreter refuses what the verifier would: a load through the
//! lookup's result before it is checked against null, loads outside the context, the 8-byte
//! value or the written stack bytes, and calls with other arguments than the listing's. Its
//! verdicts are compared with the contract ([`model`]) by proptest. The verifier and the real
//! datapath are exercised by the privileged test (`tests/afxdp_shared.rs`).

use super::*;
use proptest::prelude::*;

const IFACES_FD: i32 = 7;
const XSKS_FD: i32 = 8;

// Where the interpreter places the context, the stack, the maps and the looked-up value (any
// distinct, non-overlapping values).
const CTX: u64 = 0x1_0000_0000;
const STACK_TOP: u64 = 0x2_0000_0000;
const IFACES: u64 = 0x3_0000_0000;
const XSKS: u64 = 0x4_0000_0000;
const VALUE: u64 = 0x5_0000_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Redirect { slot: u64 },
}

/// Runs `prog` on a frame received on interface `ifindex`, queue `queue`, with interface map
/// `map`. Errors on anything outside the subset or what the verifier would refuse (see the
/// module docs).
fn run(
    prog: &[BpfInsn],
    map: &HashMap<u32, SlotRange>,
    ifindex: u32,
    queue: u32,
) -> Result<Verdict, String> {
    let mut r = [0u64; 11];
    r[1] = CTX;
    r[10] = STACK_TOP;
    // The stack's bytes below the frame pointer, `None` until written.
    let mut stack: [Option<u8>; 16] = [None; 16];
    let mut value: Option<SlotRange> = None;
    let mut redirected = None;
    let mut pc = 0usize;
    for _ in 0..1000 {
        let i = *prog.get(pc).ok_or(format!("ran past the end at {pc}"))?;
        let at = pc;
        pc += 1;
        let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
        let class = i.code & 0x07;
        let op = i.code & 0xf0;
        let imm64 = i64::from(i.imm) as u64;
        if dst == 10 && class != BPF_STX && class != BPF_JMP {
            return Err(format!("write to r10 at {at}"));
        }
        match class {
            BPF_LDX => {
                if i.code != BPF_LDX | BPF_MEM | BPF_W {
                    return Err(format!("load size or mode at {at}"));
                }
                r[dst] = if r[src] == CTX {
                    match i.off {
                        CTX_INGRESS_IFINDEX => u64::from(ifindex),
                        CTX_RX_QUEUE => u64::from(queue),
                        o => return Err(format!("context field {o} at {at}")),
                    }
                } else if r[src] == VALUE {
                    let v = value.ok_or(format!("load from a null lookup result at {at}"))?;
                    match i.off {
                        VALUE_BASE => u64::from(v.base),
                        VALUE_QUEUES => u64::from(v.queues),
                        o => return Err(format!("value offset {o} at {at}")),
                    }
                } else {
                    return Err(format!("load from {:#x} at {at}", r[src]));
                };
            }
            BPF_STX => {
                if i.code != BPF_STX | BPF_MEM | BPF_W || dst != 10 {
                    return Err(format!("store other than a word to the stack at {at}"));
                }
                let start = stack_index(i.off, 4).ok_or(format!("stack offset at {at}"))?;
                let bytes = u32::try_from(r[src] & 0xffff_ffff)
                    .map_err(|e| e.to_string())?
                    .to_ne_bytes();
                for (k, b) in bytes.into_iter().enumerate() {
                    stack[start + k] = Some(b);
                }
            }
            BPF_ALU64 => {
                let v = if i.code & BPF_X != 0 { r[src] } else { imm64 };
                r[dst] = match op {
                    BPF_ADD => r[dst].wrapping_add(v),
                    BPF_MOV => v,
                    _ => return Err(format!("alu op {op:#x} at {at}")),
                };
            }
            BPF_JMP => match op {
                BPF_EXIT => {
                    return match (r[0], redirected) {
                        (2, None) => Ok(Verdict::Pass),
                        (4, Some(slot)) => Ok(Verdict::Redirect { slot }),
                        other => Err(format!("exit with {other:?} at {at}")),
                    };
                }
                BPF_CALL => {
                    match i.imm {
                        FN_MAP_LOOKUP_ELEM => {
                            if r[1] != IFACES {
                                return Err(format!("lookup in {:#x} at {at}", r[1]));
                            }
                            let off = i16::try_from(r[2].wrapping_sub(STACK_TOP) as i64)
                                .map_err(|_| format!("key not on the stack at {at}"))?;
                            let start = stack_index(off, 4).ok_or(format!("key at {at}"))?;
                            let mut key = [0u8; 4];
                            for (k, b) in key.iter_mut().enumerate() {
                                *b = stack[start + k].ok_or(format!("unwritten key at {at}"))?;
                            }
                            value = map.get(&u32::from_ne_bytes(key)).copied();
                            r[0] = if value.is_some() { VALUE } else { 0 };
                        }
                        FN_REDIRECT_MAP => {
                            if r[1] != XSKS || r[3] != XDP_PASS as u64 {
                                return Err(format!("redirect r1 {:#x} r3 {} at {at}", r[1], r[3]));
                            }
                            redirected = Some(r[2]);
                            r[0] = 4; // XDP_REDIRECT (the slot's socket is assumed present)
                        }
                        f => return Err(format!("call {f} at {at}")),
                    }
                    // Calls clobber r1-r5.
                    r[1..=5].iter_mut().for_each(|x| *x = 0xdead);
                }
                _ => {
                    let v = if i.code & BPF_X != 0 { r[src] } else { imm64 };
                    let taken = match op {
                        BPF_JA => true,
                        BPF_JEQ => r[dst] == v,
                        BPF_JGE => r[dst] >= v,
                        _ => return Err(format!("jump op {op:#x} at {at}")),
                    };
                    if taken {
                        pc = usize::try_from(pc as i64 + i64::from(i.off))
                            .map_err(|_| format!("jump before the start at {at}"))?;
                    }
                }
            },
            BPF_LD if i.code == BPF_LD | BPF_DW | BPF_IMM => {
                if src != usize::from(BPF_PSEUDO_MAP_FD) {
                    return Err(format!("wide load of something else than a map at {at}"));
                }
                r[dst] = match i.imm {
                    IFACES_FD => IFACES,
                    XSKS_FD => XSKS,
                    fd => return Err(format!("unknown map fd {fd} at {at}")),
                };
                if prog.get(pc) != Some(&BpfInsn::default()) {
                    return Err(format!("wide load without its empty second half at {at}"));
                }
                pc += 1;
            }
            _ => return Err(format!("opcode {:#x} at {at}", i.code)),
        }
    }
    Err("no exit after 1000 steps".into())
}

/// The index in the interpreter's 16-byte stack of `len` bytes at `off` from r10.
fn stack_index(off: i16, len: usize) -> Option<usize> {
    let start = 16 + isize::from(off);
    let start = usize::try_from(start).ok()?;
    (start + len <= 16).then_some(start)
}

/// The contract, in plain Rust.
fn model(map: &HashMap<u32, SlotRange>, ifindex: u32, queue: u32) -> Verdict {
    match map.get(&ifindex) {
        Some(r) if queue < r.queues => Verdict::Redirect {
            slot: u64::from(r.base) + u64::from(queue),
        },
        _ => Verdict::Pass,
    }
}

fn prog() -> Vec<BpfInsn> {
    program(IFACES_FD, XSKS_FD).expect("the shared program assembles")
}

#[test]
fn program_follows_the_listing() {
    let p = prog();
    // 19 lines in the listing, two of them wide loads.
    assert_eq!(p.len(), 21);
    // r6 = r1, then the ingress ifindex from the context into the key on the stack.
    assert_eq!((p[0].code, p[0].regs), (0xbf, 0x16));
    assert_eq!((p[1].code, p[1].regs, p[1].off), (0x61, 0x62, 12));
    assert_eq!((p[2].code, p[2].regs, p[2].off), (0x63, 0x2a, -4));
    // The interface map, then the lookup.
    assert_eq!((p[5].code, p[5].regs, p[5].imm), (0x18, 0x11, IFACES_FD));
    assert_eq!((p[7].code, p[7].imm), (0x85, FN_MAP_LOOKUP_ELEM));
    // The null check and the queue bound both jump to `pass`, the last two instructions.
    let pass = p.len() - 2;
    for j in [8, 11] {
        let target = usize::try_from(j as i64 + 1 + i64::from(p[j].off)).expect("forward");
        assert_eq!(target, pass, "jump at {j}");
    }
    assert_eq!((p[8].code, p[8].regs, p[8].imm), (0x15, 0x00, 0));
    assert_eq!((p[11].code, p[11].regs), (0x3d, 0x43), "unsigned r3 >= r4");
    // The XSKMAP and the redirect with the XDP_PASS fallback.
    assert_eq!((p[14].code, p[14].regs, p[14].imm), (0x18, 0x11, XSKS_FD));
    assert_eq!((p[16].regs, p[16].imm), (3, XDP_PASS));
    assert_eq!((p[17].code, p[17].imm), (0x85, FN_REDIRECT_MAP));
    assert_eq!((p[pass].regs, p[pass].imm), (0, XDP_PASS));
    assert_eq!(p[pass + 1].code, 0x95);
}

#[test]
fn served_queues_are_redirected_to_their_slots() {
    let p = prog();
    let map = HashMap::from([
        (3, SlotRange { base: 0, queues: 1 }),
        (9, SlotRange { base: 1, queues: 4 }),
        (4000, SlotRange { base: 7, queues: 2 }),
    ]);
    for (ifindex, queue, want) in [
        (3, 0, Verdict::Redirect { slot: 0 }),
        (3, 1, Verdict::Pass),
        (9, 0, Verdict::Redirect { slot: 1 }),
        (9, 3, Verdict::Redirect { slot: 4 }),
        (9, 4, Verdict::Pass),
        (4000, 1, Verdict::Redirect { slot: 8 }),
        (5, 0, Verdict::Pass),
        (0, 0, Verdict::Pass),
        (9, u32::MAX, Verdict::Pass),
    ] {
        assert_eq!(run(&p, &map, ifindex, queue), Ok(want), "{ifindex}/{queue}");
    }
    assert_eq!(run(&p, &HashMap::new(), 3, 0), Ok(Verdict::Pass));
}

#[test]
fn interpreter_refuses_an_unchecked_lookup() {
    // Without the null check, a miss would dereference null: the verifier refuses such a
    // program, and so does the interpreter.
    let mut p = prog();
    assert_eq!(p.remove(8).code, 0x15, "the null check");
    // (The queue bound's jump and `pass` both moved up by one: its offset still holds.)
    assert_eq!(run(&prog(), &HashMap::new(), 3, 0), Ok(Verdict::Pass));
    assert!(run(&p, &HashMap::new(), 3, 0).is_err());
}

proptest! {
    #[test]
    fn program_agrees_with_the_model(
        entries in prop::collection::vec((1u32..64, 0u32..SLOTS, 0u32..=MAX_QUEUES), 0..8),
        ifindex in 0u32..70,
        queue in prop_oneof![0u32..70, Just(u32::MAX)],
    ) {
        let map: HashMap<u32, SlotRange> = entries
            .into_iter()
            .map(|(i, base, queues)| (i, SlotRange { base, queues }))
            .collect();
        let got = run(&prog(), &map, ifindex, queue).map_err(TestCaseError::fail)?;
        prop_assert_eq!(got, model(&map, ifindex, queue));
    }
}

#[test]
fn slots_are_first_fit_and_reused() {
    let mut s = SlotAllocator::new(8);
    let a = s.alloc(1).expect("room");
    let b = s.alloc(4).expect("room");
    let c = s.alloc(2).expect("room");
    assert_eq!((a.base, b.base, c.base), (0, 1, 5));
    assert_eq!(s.in_use(), 7);
    assert_eq!(s.alloc(2), None, "one slot left");
    assert_eq!(s.alloc(0), None, "no empty ranges");
    s.free(b);
    assert_eq!(s.alloc(2), Some(SlotRange { base: 1, queues: 2 }));
    assert_eq!(s.alloc(3), None, "fragmented: 2 + 1 free");
    assert_eq!(s.alloc(2), Some(SlotRange { base: 3, queues: 2 }));
    assert_eq!(s.alloc(1), Some(SlotRange { base: 7, queues: 1 }));
    assert_eq!(s.in_use(), 8);
    s.free(SlotRange {
        base: 6,
        queues: u32::MAX,
    });
    assert_eq!(s.in_use(), 6, "a range past the end frees up to the end");
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(u32),
    Free(usize),
}

proptest! {
    /// Any sequence of allocations and frees: live ranges stay inside the map and disjoint, the
    /// count of slots in use matches them, and an allocation fails only when no run of free
    /// slots is long enough (checked against the live ranges).
    #[test]
    fn slot_allocator_keeps_ranges_disjoint(
        ops in prop::collection::vec(
            prop_oneof![(0u32..6).prop_map(Op::Alloc), (0usize..16).prop_map(Op::Free)],
            0..200,
        )
    ) {
        const N: u32 = 32;
        let mut s = SlotAllocator::new(N);
        let mut live: Vec<SlotRange> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc(n) => {
                    let mut taken = [false; N as usize];
                    for r in &live {
                        for k in r.base..r.base + r.queues {
                            taken[k as usize] = true;
                        }
                    }
                    let fits = n > 0
                        && taken.windows(n as usize).any(|w| w.iter().all(|t| !t));
                    match s.alloc(n) {
                        Some(r) => {
                            prop_assert!(fits);
                            prop_assert_eq!(r.queues, n);
                            prop_assert!(r.base + r.queues <= N);
                            prop_assert!((r.base..r.base + n).all(|k| !taken[k as usize]));
                            live.push(r);
                        }
                        None => prop_assert!(!fits),
                    }
                }
                Op::Free(i) => {
                    if i < live.len() {
                        s.free(live.swap_remove(i));
                    }
                }
            }
            prop_assert_eq!(s.in_use(), live.iter().map(|r| r.queues).sum::<u32>());
        }
    }
}
