//! The per-interface queue-redirect program ([`super::XdpProgram::QueueRedirect`]): six
//! instructions, assembled here so that vwire needs neither clang nor libbpf, with an XSKMAP of
//! the interface's own keyed by receive queue:
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)     ; ctx->rx_queue_index
//! r1 = xskmap ll             ; the map, by fd (BPF_PSEUDO_MAP_FD)
//! r3 = XDP_PASS              ; returned when no socket is bound to that queue
//! call bpf_redirect_map
//! exit
//! ```
//!
//! Frames of a queue with a socket in the map go to that socket; frames of other queues, and all
//! frames before the socket is inserted, pass to the kernel stack. Unlike libxdp's default
//! program, nothing is taken from queues vwire does not serve. The shared program keeps that
//! contract per interface (see its listing in [`super::shared`]).

use super::asm::{BPF_PSEUDO_MAP_FD, FN_REDIRECT_MAP, XDP_PASS};
use crate::afxdp::abi::BpfInsn;

/// The program's name in the kernel (`bpftool prog`, `ip link`).
pub(crate) const NAME: &str = "vwire_xsk";

/// Maximum queues per interface the maps can serve: the size of the per-interface XSKMAP, and
/// the most slots one interface takes in the shared one.
pub(crate) const MAX_QUEUES: u32 = 64;

/// The instructions of the program, with `map_fd` patched in.
pub fn program(map_fd: i32) -> [BpfInsn; 6] {
    [
        // r2 = *(u32 *)(r1 + 16): BPF_LDX | BPF_MEM | BPF_W
        BpfInsn {
            code: 0x61,
            regs: 2 | (1 << 4),
            off: 16,
            imm: 0,
        },
        // r1 = map (ld_imm64, two slots): BPF_LD | BPF_DW | BPF_IMM
        BpfInsn {
            code: 0x18,
            regs: 1 | (BPF_PSEUDO_MAP_FD << 4),
            off: 0,
            imm: map_fd,
        },
        BpfInsn {
            code: 0,
            regs: 0,
            off: 0,
            imm: 0,
        },
        // r3 = XDP_PASS: BPF_ALU64 | BPF_MOV | BPF_K
        BpfInsn {
            code: 0xb7,
            regs: 3,
            off: 0,
            imm: XDP_PASS,
        },
        // call bpf_redirect_map: BPF_JMP | BPF_CALL
        BpfInsn {
            code: 0x85,
            regs: 0,
            off: 0,
            imm: FN_REDIRECT_MAP,
        },
        // exit: BPF_JMP | BPF_EXIT
        BpfInsn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_encodes_the_documented_instructions() {
        let p = program(7);
        assert_eq!(p.len(), 6);
        // dst r2, src r1 (ctx), offset of rx_queue_index in struct xdp_md
        assert_eq!((p[0].code, p[0].regs, p[0].off), (0x61, 0x12, 16));
        // the map fd goes in the first half of the wide load, marked as a map fd
        assert_eq!((p[1].code, p[1].regs, p[1].imm), (0x18, 0x11, 7));
        assert_eq!(p[2], BpfInsn::default());
        assert_eq!((p[3].regs, p[3].imm), (3, XDP_PASS));
        assert_eq!(p[4].imm, FN_REDIRECT_MAP);
        assert_eq!(p[5].code, 0x95);
    }
}
