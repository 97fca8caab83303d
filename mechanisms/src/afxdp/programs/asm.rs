//! eBPF instruction encoding and a small label-resolving assembler, shared by vwire's generated
//! programs: the uplink's steering program ([`super::steer`]), the shared queue-redirect
//! program ([`super::shared`]) and the in-kernel cross-connect of KERNEL connections
//! (`crate::tcx`).
//!
//! Pure: nothing here talks to the kernel. Jump offsets are resolved from labels by
//! [`Asm::finish`], never counted by hand; misuse is reported as [`AfXdpError::Assemble`].

use crate::afxdp::abi::BpfInsn;
use crate::afxdp::error::AfXdpError;

// Instruction classes, sizes, modes and operations of eBPF (linux/bpf_common.h, linux/bpf.h).
pub(crate) const BPF_LD: u8 = 0x00;
pub(crate) const BPF_LDX: u8 = 0x01;
pub(crate) const BPF_STX: u8 = 0x03;
pub(crate) const BPF_ALU: u8 = 0x04;
pub(crate) const BPF_JMP: u8 = 0x05;
pub(crate) const BPF_JMP32: u8 = 0x06;
pub(crate) const BPF_ALU64: u8 = 0x07;
pub(crate) const BPF_W: u8 = 0x00;
pub(crate) const BPF_H: u8 = 0x08;
pub(crate) const BPF_B: u8 = 0x10;
pub(crate) const BPF_DW: u8 = 0x18;
pub(crate) const BPF_IMM: u8 = 0x00;
pub(crate) const BPF_MEM: u8 = 0x60;
pub(crate) const BPF_ATOMIC: u8 = 0xc0;
pub(crate) const BPF_K: u8 = 0x00;
pub(crate) const BPF_X: u8 = 0x08;
pub(crate) const BPF_ADD: u8 = 0x00;
pub(crate) const BPF_AND: u8 = 0x50;
pub(crate) const BPF_LSH: u8 = 0x60;
pub(crate) const BPF_MOV: u8 = 0xb0;
pub(crate) const BPF_JA: u8 = 0x00;
pub(crate) const BPF_JEQ: u8 = 0x10;
pub(crate) const BPF_JGT: u8 = 0x20;
pub(crate) const BPF_JGE: u8 = 0x30;
pub(crate) const BPF_JNE: u8 = 0x50;
pub(crate) const BPF_JLT: u8 = 0xa0;
pub(crate) const BPF_CALL: u8 = 0x80;
pub(crate) const BPF_EXIT: u8 = 0x90;
pub(crate) const BPF_PSEUDO_MAP_FD: u8 = 1;

// XDP verdicts and helper functions (linux/bpf.h).
pub(crate) const XDP_PASS: i32 = 2;
pub(crate) const FN_MAP_LOOKUP_ELEM: i32 = 1;
pub(crate) const FN_REDIRECT_MAP: i32 = 51;

// Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6-r9 kept across calls,
// r10 the read-only frame pointer. What each program keeps where is documented with it.
pub(crate) const R0: u8 = 0;
pub(crate) const R1: u8 = 1;
pub(crate) const R2: u8 = 2;
pub(crate) const R3: u8 = 3;
pub(crate) const R4: u8 = 4;
pub(crate) const R5: u8 = 5;
pub(crate) const R6: u8 = 6;
pub(crate) const R7: u8 = 7;
pub(crate) const R10: u8 = 10;

// Offsets in `struct xdp_md`.
pub(crate) const CTX_DATA: i16 = 0;
pub(crate) const CTX_DATA_END: i16 = 4;
pub(crate) const CTX_INGRESS_IFINDEX: i16 = 12;
pub(crate) const CTX_RX_QUEUE: i16 = 16;

/// One instruction.
pub(crate) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (dst & 0x0f) | (src << 4),
        off,
        imm,
    }
}

/// `dst = *(size *)(src + off)`.
pub(crate) const fn ldx(size: u8, dst: u8, src: u8, off: i16) -> BpfInsn {
    insn(BPF_LDX | BPF_MEM | size, dst, src, off, 0)
}

/// `dst op= imm` on 64 bits.
pub(crate) const fn alu64_imm(op: u8, dst: u8, imm: i32) -> BpfInsn {
    insn(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm)
}

/// `dst op= src` on 64 bits.
pub(crate) const fn alu64_reg(op: u8, dst: u8, src: u8) -> BpfInsn {
    insn(BPF_ALU64 | op | BPF_X, dst, src, 0, 0)
}

/// `wdst op= imm` on the low 32 bits (the high half is zeroed).
pub(crate) const fn alu32_imm(op: u8, dst: u8, imm: i32) -> BpfInsn {
    insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm)
}

/// `*(size *)(dst + off) = src`.
pub(crate) const fn stx(size: u8, dst: u8, src: u8, off: i16) -> BpfInsn {
    insn(BPF_STX | BPF_MEM | size, dst, src, off, 0)
}

/// `lock *(u64 *)(dst + off) += src` (an atomic add, `BPF_ATOMIC | BPF_ADD`).
pub(crate) const fn atomic_add64(dst: u8, src: u8, off: i16) -> BpfInsn {
    insn(BPF_STX | BPF_ATOMIC | BPF_DW, dst, src, off, BPF_ADD as i32)
}

/// `call helper`.
pub(crate) const fn call(helper: i32) -> BpfInsn {
    insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
}

/// `exit`: return r0.
pub(crate) const fn exit() -> BpfInsn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// A jump target of an [`Asm`]: created by [`Asm::label`], placed by [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// A tiny assembler: appends instructions and resolves jumps to labels when finished, so no
/// offset is ever counted by hand. Misuse (a label bound twice, a jump to a label never bound or
/// past the last instruction, an offset beyond 16 bits) is reported by [`Asm::finish`].
#[derive(Debug, Default)]
pub(crate) struct Asm {
    insns: Vec<BpfInsn>,
    /// Where each label is bound: the index of the instruction that follows it.
    labels: Vec<Option<usize>>,
    /// Jumps waiting for their label: (instruction index, label).
    fixups: Vec<(usize, Label)>,
    /// The first misuse seen while emitting: (instruction index, what).
    error: Option<(usize, &'static str)>,
}

impl Asm {
    /// A new, unbound label.
    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the next instruction emitted.
    pub(crate) fn bind(&mut self, l: Label) {
        let at = self.insns.len();
        match self.labels.get_mut(l.0) {
            Some(slot @ None) => *slot = Some(at),
            Some(Some(_)) => self.fail(at, "label bound twice"),
            None => self.fail(at, "label of another assembler"),
        }
    }

    fn fail(&mut self, at: usize, what: &'static str) {
        self.error.get_or_insert((at, what));
    }

    /// Appends one instruction.
    pub(crate) fn emit(&mut self, i: BpfInsn) {
        self.insns.push(i);
    }

    /// Appends a jump whose offset will be resolved to `target`.
    fn jump_insn(&mut self, i: BpfInsn, target: Label) {
        self.fixups.push((self.insns.len(), target));
        self.insns.push(i);
    }

    /// `if wdst op imm goto target`, comparing the low 32 bits (`BPF_JMP32`).
    pub(crate) fn jmp32_imm(&mut self, op: u8, dst: u8, imm: i32, target: Label) {
        self.jump_insn(insn(BPF_JMP32 | op | BPF_K, dst, 0, 0, imm), target);
    }

    /// `if dst op imm goto target`, comparing 64 bits (the immediate is sign-extended).
    pub(crate) fn jmp_imm(&mut self, op: u8, dst: u8, imm: i32, target: Label) {
        self.jump_insn(insn(BPF_JMP | op | BPF_K, dst, 0, 0, imm), target);
    }

    /// `if dst op src goto target`, comparing 64 bits.
    pub(crate) fn jmp_reg(&mut self, op: u8, dst: u8, src: u8, target: Label) {
        self.jump_insn(insn(BPF_JMP | op | BPF_X, dst, src, 0, 0), target);
    }

    /// `goto target`.
    pub(crate) fn ja(&mut self, target: Label) {
        self.jump_insn(insn(BPF_JMP | BPF_JA, 0, 0, 0, 0), target);
    }

    /// `dst = map_fd ll`: the two-slot wide load of a map by fd.
    pub(crate) fn ld_map_fd(&mut self, dst: u8, map_fd: i32) {
        self.emit(insn(
            BPF_LD | BPF_DW | BPF_IMM,
            dst,
            BPF_PSEUDO_MAP_FD,
            0,
            map_fd,
        ));
        self.emit(BpfInsn::default());
    }

    /// Resolves every jump and returns the program.
    pub(crate) fn finish(mut self) -> Result<Vec<BpfInsn>, AfXdpError> {
        let err = |at, what| AfXdpError::Assemble { at, what };
        if let Some((at, what)) = self.error {
            return Err(err(at, what));
        }
        for &(at, Label(l)) in &self.fixups {
            let target = match self.labels.get(l) {
                Some(Some(t)) => *t,
                Some(None) => return Err(err(at, "jump to a label never bound")),
                None => return Err(err(at, "jump to a label of another assembler")),
            };
            if target >= self.insns.len() {
                return Err(err(at, "jump past the last instruction"));
            }
            // The offset counts from the instruction after the jump.
            let off = i64::try_from(target).unwrap_or(i64::MAX)
                - i64::try_from(at).unwrap_or(i64::MAX)
                - 1;
            let off = i16::try_from(off).map_err(|_| err(at, "jump offset beyond 16 bits"))?;
            if let Some(i) = self.insns.get_mut(at) {
                i.off = off;
            }
        }
        Ok(self.insns)
    }
}
