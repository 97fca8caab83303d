//! The cross-connect program: pure. [`program`] builds it for a `peers` map fd; nothing here
//! talks to the kernel.
//!
//! # Contract
//!
//! Attached to the TCX ingress of a host veth, for every packet the host end receives (what the
//! pod sent on its end):
//!
//! - if the peers map has an entry for the interface's index (`skb->ifindex`), the packet is
//!   counted in that entry (`packets` += its segments: `gso_segs`, at least 1; `bytes` +=
//!   `skb->len`; `gso_packets` += 1 if it is a super-packet of more than one segment) and
//!   redirected with `bpf_redirect_peer` to the *peer* of the entry's `target` (the other
//!   connection's veth end, inside the other pod): it enters that pod's stack as it left this
//!   one, super-packet and checksum state included, without a trip through the host's backlog.
//!   A redirect the kernel refuses (the target gone or not a veth) is counted in `drops` and the
//!   packet dropped;
//! - otherwise the packet goes on to the next program or the host stack (`TCX_NEXT`).
//!
//! The counters are updated with atomic adds (one entry per interface, shared by all CPUs: at
//! most one add per super-packet, so the contention is negligible).
//!
//! # Listing
//!
//! ```text
//!         r6 = r1                        ; the skb, kept across calls
//!         r2 = *(u32 *)(r6 + 40)         ; skb->ifindex: the host veth it arrived on
//!         *(u32 *)(r10 - 4) = r2
//!         r2 = r10
//!         r2 += -4
//!         r1 = peers ll
//!         call map_lookup_elem
//!         if r0 == 0 goto next           ; not a connection's veth
//!         r7 = r0                        ; its entry, kept across calls
//!         r1 = *(u32 *)(r6 + 164)        ; skb->gso_segs
//!         if r1 > 1 goto gso
//!         r1 = 1
//!         goto count
//! gso:    r2 = 1
//!         lock *(u64 *)(r7 + 24) += r2   ; gso_packets
//! count:  lock *(u64 *)(r7 + 8) += r1    ; packets
//!         r1 = *(u32 *)(r6 + 0)          ; skb->len
//!         lock *(u64 *)(r7 + 16) += r1   ; bytes
//!         r1 = *(u32 *)(r7 + 0)          ; target
//!         r2 = 0
//!         call redirect_peer
//!         if r0 == 7 goto out            ; TC_ACT_REDIRECT
//!         r1 = 1
//!         lock *(u64 *)(r7 + 32) += r1   ; drops
//!         r0 = 2                         ; TCX_DROP
//! out:    exit
//! next:   r0 = -1                        ; TCX_NEXT
//!         exit
//! ```

use crate::afxdp::abi::BpfInsn;
use crate::afxdp::programs::asm::*;
use crate::afxdp::AfXdpError;

/// The program's name in the kernel (`bpftool prog`), by which a restarted vwire finds it.
pub const NAME: &str = "vwire_tcx";

/// One entry of the peers map, keyed by the index of the host veth the packets arrive on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Peer {
    /// The index of the other side's host veth, whose peer receives the packets.
    pub(crate) target: u32,
    pub(crate) _pad: u32,
    /// Packets redirected, counted in segments (a super-packet of n segments counts n).
    pub(crate) packets: u64,
    /// Bytes redirected (`skb->len`: a super-packet's headers count once).
    pub(crate) bytes: u64,
    /// Super-packets among them (more than one segment).
    pub(crate) gso_packets: u64,
    /// Packets whose redirect the kernel refused.
    pub(crate) drops: u64,
}
const _: () = assert!(std::mem::size_of::<Peer>() == 40);
const _: () = assert!(std::mem::offset_of!(Peer, packets) == OFF_PACKETS as usize);
const _: () = assert!(std::mem::offset_of!(Peer, bytes) == OFF_BYTES as usize);
const _: () = assert!(std::mem::offset_of!(Peer, gso_packets) == OFF_GSO as usize);
const _: () = assert!(std::mem::offset_of!(Peer, drops) == OFF_DROPS as usize);

// SAFETY: `#[repr(C)]`, u32s then u64s at 8-byte offsets (asserted above): no padding, every
// bit pattern valid.
unsafe impl crate::afxdp::sys::maps::Plain for Peer {}

const OFF_PACKETS: i16 = 8;
const OFF_BYTES: i16 = 16;
const OFF_GSO: i16 = 24;
const OFF_DROPS: i16 = 32;

// Offsets in `struct __sk_buff` (linux/bpf.h).
const SKB_LEN: i16 = 0;
const SKB_IFINDEX: i16 = 40;
const SKB_GSO_SEGS: i16 = 164;

// Helpers and verdicts (linux/bpf.h, linux/pkt_cls.h).
const FN_REDIRECT_PEER: i32 = 155;
const TC_ACT_REDIRECT: i32 = 7;
const TCX_DROP: i32 = 2;
const TCX_NEXT: i32 = -1;

/// The program, reading and counting in the peers map `peers_fd`.
pub(crate) fn program(peers_fd: i32) -> Result<Vec<BpfInsn>, AfXdpError> {
    let mut a = Asm::default();
    let (next, gso, count, out) = (a.label(), a.label(), a.label(), a.label());
    a.emit(alu64_reg(BPF_MOV, R6, R1));
    a.emit(ldx(BPF_W, R2, R6, SKB_IFINDEX));
    a.emit(stx(BPF_W, R10, R2, -4));
    a.emit(alu64_reg(BPF_MOV, R2, R10));
    a.emit(alu64_imm(BPF_ADD, R2, -4));
    a.ld_map_fd(R1, peers_fd);
    a.emit(call(FN_MAP_LOOKUP_ELEM));
    a.jmp_imm(BPF_JEQ, R0, 0, next);
    a.emit(alu64_reg(BPF_MOV, R7, R0));
    a.emit(ldx(BPF_W, R1, R6, SKB_GSO_SEGS));
    a.jmp_imm(BPF_JGT, R1, 1, gso);
    a.emit(alu64_imm(BPF_MOV, R1, 1));
    a.ja(count);
    a.bind(gso);
    a.emit(alu64_imm(BPF_MOV, R2, 1));
    a.emit(atomic_add64(R7, R2, OFF_GSO));
    a.bind(count);
    a.emit(atomic_add64(R7, R1, OFF_PACKETS));
    a.emit(ldx(BPF_W, R1, R6, SKB_LEN));
    a.emit(atomic_add64(R7, R1, OFF_BYTES));
    a.emit(ldx(BPF_W, R1, R7, 0));
    a.emit(alu64_imm(BPF_MOV, R2, 0));
    a.emit(call(FN_REDIRECT_PEER));
    a.jmp_imm(BPF_JEQ, R0, TC_ACT_REDIRECT, out);
    a.emit(alu64_imm(BPF_MOV, R1, 1));
    a.emit(atomic_add64(R7, R1, OFF_DROPS));
    a.emit(alu64_imm(BPF_MOV, R0, TCX_DROP));
    a.bind(out);
    a.emit(exit());
    a.bind(next);
    a.emit(alu64_imm(BPF_MOV, R0, TCX_NEXT));
    a.emit(exit());
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_with_the_map_patched_in() {
        let p = program(42).expect("assembles");
        assert_eq!(
            p.len(),
            29,
            "the listing's 28 lines, the map load taking two slots"
        );
        let map_load = p
            .iter()
            .position(|i| i.code == (BPF_LD | BPF_DW | BPF_IMM))
            .expect("a map load");
        assert_eq!(p[map_load].imm, 42);
        assert_eq!(p[map_load].regs >> 4, BPF_PSEUDO_MAP_FD);
        assert_eq!(p.last().map(|i| i.code), Some(BPF_JMP | BPF_EXIT));
        // The null check jumps to `next`, the last two instructions.
        let null_check = map_load + 3;
        assert_eq!(p[null_check].code, BPF_JMP | BPF_JEQ | BPF_K);
        let target = null_check + 1 + usize::try_from(p[null_check].off).expect("forward");
        assert_eq!(target, p.len() - 2);
    }
}
