//! The uplink's steering XDP program: only vwire's tunnel traffic goes to the AF_XDP socket.
//!
//! On the node's uplink, vwire shares the interface with the host network stack. The
//! queue-redirect programs ([`super::shared`], [`super::queue`]) would take every frame
//! of a served queue; this one takes only what vwire terminates and returns `XDP_PASS` for
//! everything else (ARP, ND, ICMP, the host's own TCP and UDP, other tunnels), untouched. It is
//! loaded per interface, with an XSKMAP of its own.
//!
//! # Contract
//!
//! A frame is redirected to the socket bound to its receive queue (through the XSKMAP, keyed by
//! `rx_queue_index`, falling back to `XDP_PASS` when no socket is bound, like the per-interface
//! queue-redirect program) if and only if one of these holds, each optional ([`Steering`];
//! absent never matches):
//!
//! 1. **VXLAN over IPv4** ([`Steering::ipv4`]): EtherType 0x0800, a version-4 header with
//!    IHL ≥ 5, destination address equal to the tunnel address, protocol UDP (17), not a
//!    fragment (MF clear and fragment offset 0; DF is ignored), and a UDP header, found at
//!    `14 + IHL * 4`, whose destination port is [`Steering::vxlan_port`].
//! 2. **VXLAN over IPv6** ([`Steering::ipv6`]): EtherType 0x86DD, destination address equal to
//!    the tunnel address, next header UDP (17) directly after the fixed header (a packet with
//!    extension headers does not match), and UDP destination port [`Steering::vxlan_port`].
//! 3. **SRv6** ([`Steering::srv6_locator`]): EtherType 0x86DD and a destination address inside
//!    the locator prefix (the address masked to the prefix length equals the masked locator),
//!    whatever the next header (43 for an SRH, 4, 41, 143, ...). A `/0` locator takes every IPv6
//!    frame, Neighbor Discovery included: configure a real locator.
//!
//! Everything else passes: frames too short for the headers a rule needs, other EtherTypes, and
//! **802.1Q-tagged frames** (EtherType 0x8100 never matches: the tunnel addresses of a tagged
//! uplink live on a VLAN device whose traffic the kernel untags, and vwire's decapsulation
//! expects untagged frames). The program never writes to the frame.
//!
//! Every packet load is preceded by a comparison of `data + end of the field` with `data_end`,
//! which is what the kernel verifier requires; the variable-offset UDP header of IPv4 is checked
//! through a pointer derived from the same `data + IHL * 4`, so the verifier can track it.
//!
//! Multi-byte fields are compared as loaded: eBPF loads use the host's byte order, and the
//! program is built on the host that runs it, so each expected value is the field's network-order
//! bytes read with `from_ne_bytes`. Address words are compared 32 bits at a time with `JMP32`,
//! which compares the low halves (a `JMP` would sign-extend an immediate with its top bit set).
//! `JMP32` needs Linux ≥ 5.1; vwire's bpf_link attach already needs 5.9.
//!
//! # Listing
//!
//! With all three rules configured (lines in brackets are emitted only when needed: an absent
//! rule emits nothing, and a locator word entirely outside the prefix is not compared):
//!
//! ```text
//!         r2 = *(u32 *)(r1 + 0)          ; ctx->data (r1, the context, is kept for the redirect)
//!         r3 = *(u32 *)(r1 + 4)          ; ctx->data_end
//!         r4 = r2
//!         r4 += 14
//!         if r4 > r3 goto pass           ; no full Ethernet header
//!         r4 = *(u16 *)(r2 + 12)         ; EtherType
//!        [if w4 == 0x0800 goto ipv4]
//!        [if w4 == 0x86dd goto ipv6]
//!         goto pass
//! ipv4:   r4 = r2
//!         r4 += 34
//!         if r4 > r3 goto pass           ; fixed IPv4 header
//!         r4 = *(u32 *)(r2 + 30)         ; destination address
//!         if w4 != TUNNEL4 goto pass
//!         r4 = *(u8 *)(r2 + 23)          ; protocol
//!         if w4 != 17 goto pass
//!         r4 = *(u16 *)(r2 + 20)         ; flags and fragment offset
//!         w4 &= 0x3fff                   ; MF and the offset (DF may be set)
//!         if w4 != 0 goto pass
//!         r4 = *(u8 *)(r2 + 14)          ; version and IHL
//!         if w4 < 0x45 goto pass         ; version 4, IHL >= 5 ...
//!         if w4 > 0x4f goto pass         ; ... and <= 15
//!         r4 &= 15
//!         r4 <<= 2                       ; header length, 20..=60
//!         r5 = r2
//!         r5 += r4                       ; the UDP header is at r5 + 14
//!         r4 = r5
//!         r4 += 22
//!         if r4 > r3 goto pass           ; full UDP header
//!         r4 = *(u16 *)(r5 + 16)         ; UDP destination port
//!         if w4 != PORT goto pass
//!         goto redirect
//! ipv6:   r4 = r2
//!         r4 += 54
//!         if r4 > r3 goto pass           ; fixed IPv6 header
//!         r4 = *(u32 *)(r2 + 38)         ; destination address, word 0 (then + 42, 46, 50)
//!         if w4 != TUNNEL6[0] goto srv6  ; (and the three other words)
//!         r4 = *(u8 *)(r2 + 20)          ; next header
//!         if w4 != 17 goto srv6
//!         r4 = r2
//!         r4 += 62
//!         if r4 > r3 goto srv6           ; full UDP header
//!         r4 = *(u16 *)(r2 + 56)         ; UDP destination port
//!         if w4 != PORT goto srv6
//!         goto redirect
//! srv6:   r4 = *(u32 *)(r2 + 38)         ; destination word i, for each word the prefix covers
//!        [w4 &= MASK[i]]                 ; only for the word the prefix ends inside
//!         if w4 != LOCATOR[i] goto pass
//!         goto redirect
//! pass:   r0 = XDP_PASS
//!         exit
//! redirect:
//!         r2 = *(u32 *)(r1 + 16)         ; ctx->rx_queue_index
//!         r1 = xskmap ll                 ; the map, by fd (BPF_PSEUDO_MAP_FD)
//!         r3 = XDP_PASS                  ; returned when no socket is bound to that queue
//!         call bpf_redirect_map
//!         exit
//! ```
//!
//! (`srv6` is `pass` when no locator is configured.) With no rule at all the program is
//! `r0 = XDP_PASS; exit`: the socket never receives.
//!
//! Jump offsets come from a small label-resolving assembler (`Asm`, in `super::asm`, shared
//! with the queue-redirect program), never from hand counting.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::asm::*;
use crate::afxdp::abi::BpfInsn;
use crate::afxdp::error::AfXdpError;

/// The program's name in the kernel (`bpftool prog`, `ip link`).
pub(crate) const NAME: &str = "vwire_steer";

/// Which frames of the uplink the steering program hands to vwire. See the module docs for the
/// exact contract. `Default` is the VXLAN port 4789 and no rule: nothing is steered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steering {
    /// UDP destination port of VXLAN (host order; compared in network order).
    pub vxlan_port: u16,
    /// The tunnel's IPv4 address: VXLAN over IPv4 to it is steered.
    pub ipv4: Option<Ipv4Addr>,
    /// The tunnel's IPv6 address: VXLAN over IPv6 to it is steered.
    pub ipv6: Option<Ipv6Addr>,
    /// The SRv6 locator (prefix, length 0..=128): IPv6 to any address inside it is steered.
    pub srv6_locator: Option<(Ipv6Addr, u8)>,
}

impl Default for Steering {
    fn default() -> Self {
        Self {
            vxlan_port: crate::vxlan::VXLAN_PORT,
            ipv4: None,
            ipv6: None,
            srv6_locator: None,
        }
    }
}

// Offsets from the start of the frame.
const ETH_LEN: i16 = 14;
const ETHERTYPE: i16 = 12;
const IP4_VIHL: i16 = ETH_LEN;
const IP4_FRAG: i16 = ETH_LEN + 6;
const IP4_PROTO: i16 = ETH_LEN + 9;
const IP4_DST: i16 = ETH_LEN + 16;
const IP4_MIN_END: i16 = ETH_LEN + 20;
const IP6_NEXT: i16 = ETH_LEN + 6;
const IP6_DST: i16 = ETH_LEN + 24;
const IP6_END: i16 = ETH_LEN + 40;
const UDP_LEN: i16 = 8;
const UDP_DPORT: i16 = 2;
const IPPROTO_UDP: i32 = 17;

/// A 16-bit network-order field as the program loads it (see the module docs).
fn be16(v: u16) -> i32 {
    i32::from(u16::from_ne_bytes(v.to_be_bytes()))
}

/// Four network-order bytes as the program loads them.
fn be32(b: [u8; 4]) -> i32 {
    i32::from_ne_bytes(b)
}

/// The 32-bit words of a prefix of `len` bits: for each word the prefix reaches, its index, the
/// mask (network order, as loaded) and the masked expected value. Words the prefix does not
/// reach are left out: they are never compared.
fn prefix_words(addr: Ipv6Addr, len: u8) -> Vec<(usize, i32, i32)> {
    let o = addr.octets();
    [(0usize, 0u32), (1, 32), (2, 64), (3, 96)]
        .into_iter()
        .filter_map(|(w, start)| {
            let bits = u32::from(len).saturating_sub(start).min(32);
            if bits == 0 {
                return None;
            }
            let mask = (u32::MAX << (32 - bits)).to_be_bytes();
            let word = [o[4 * w], o[4 * w + 1], o[4 * w + 2], o[4 * w + 3]];
            let masked = [
                word[0] & mask[0],
                word[1] & mask[1],
                word[2] & mask[2],
                word[3] & mask[3],
            ];
            Some((w, be32(mask), be32(masked)))
        })
        .collect()
}

/// The offset of the `w`th 32-bit word of the IPv6 destination address.
fn ip6_dst_word(w: usize) -> i16 {
    // w < 4: the product fits.
    IP6_DST + 4 * i16::try_from(w).unwrap_or(0)
}

impl Steering {
    /// Checks the configuration: the locator length is at most 128.
    pub fn validate(&self) -> Result<(), AfXdpError> {
        match self.srv6_locator {
            Some((_, len)) if len > 128 => Err(AfXdpError::BadSteering(
                "the SRv6 locator prefix length is above 128",
            )),
            _ => Ok(()),
        }
    }

    /// The instructions of the steering program, with the XSKMAP `map_fd` patched in. Pure: the
    /// kernel is not involved. Fails if the configuration is invalid ([`Steering::validate`]).
    pub fn program(&self, map_fd: i32) -> Result<Vec<BpfInsn>, AfXdpError> {
        self.validate()?;
        let mut a = Asm::default();
        let any6 = self.ipv6.is_some() || self.srv6_locator.is_some();
        if self.ipv4.is_none() && !any6 {
            a.emit(alu64_imm(BPF_MOV, R0, XDP_PASS));
            a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
            return a.finish();
        }
        let pass = a.label();
        let redirect = a.label();
        let port = be16(self.vxlan_port);

        a.emit(ldx(BPF_W, R2, R1, CTX_DATA));
        a.emit(ldx(BPF_W, R3, R1, CTX_DATA_END));
        // if data + len > data_end goto fail
        let need = |a: &mut Asm, len: i16, fail: Label| {
            a.emit(alu64_reg(BPF_MOV, R4, R2));
            a.emit(alu64_imm(BPF_ADD, R4, i32::from(len)));
            a.jmp_reg(BPF_JGT, R4, R3, fail);
        };
        need(&mut a, ETH_LEN, pass);
        a.emit(ldx(BPF_H, R4, R2, ETHERTYPE));
        let ipv4 = a.label();
        let ipv6 = a.label();
        if self.ipv4.is_some() {
            a.jmp32_imm(BPF_JEQ, R4, be16(0x0800), ipv4);
        }
        if any6 {
            a.jmp32_imm(BPF_JEQ, R4, be16(0x86dd), ipv6);
        }
        a.ja(pass);

        if let Some(addr) = self.ipv4 {
            a.bind(ipv4);
            need(&mut a, IP4_MIN_END, pass);
            a.emit(ldx(BPF_W, R4, R2, IP4_DST));
            a.jmp32_imm(BPF_JNE, R4, be32(addr.octets()), pass);
            a.emit(ldx(BPF_B, R4, R2, IP4_PROTO));
            a.jmp32_imm(BPF_JNE, R4, IPPROTO_UDP, pass);
            a.emit(ldx(BPF_H, R4, R2, IP4_FRAG));
            a.emit(alu32_imm(BPF_AND, R4, be16(0x3fff)));
            a.jmp32_imm(BPF_JNE, R4, 0, pass);
            a.emit(ldx(BPF_B, R4, R2, IP4_VIHL));
            a.jmp32_imm(BPF_JLT, R4, 0x45, pass);
            a.jmp32_imm(BPF_JGT, R4, 0x4f, pass);
            a.emit(alu64_imm(BPF_AND, R4, 0x0f));
            a.emit(alu64_imm(BPF_LSH, R4, 2));
            a.emit(alu64_reg(BPF_MOV, R5, R2));
            a.emit(alu64_reg(BPF_ADD, R5, R4));
            // r5 + 14 is the UDP header; check its end through a pointer derived from r5.
            a.emit(alu64_reg(BPF_MOV, R4, R5));
            a.emit(alu64_imm(BPF_ADD, R4, i32::from(ETH_LEN + UDP_LEN)));
            a.jmp_reg(BPF_JGT, R4, R3, pass);
            a.emit(ldx(BPF_H, R4, R5, ETH_LEN + UDP_DPORT));
            a.jmp32_imm(BPF_JNE, R4, port, pass);
            a.ja(redirect);
        }

        if any6 {
            a.bind(ipv6);
            need(&mut a, IP6_END, pass);
            let srv6 = match self.srv6_locator {
                Some(_) => a.label(),
                None => pass,
            };
            if let Some(addr) = self.ipv6 {
                for (w, _, value) in prefix_words(addr, 128) {
                    a.emit(ldx(BPF_W, R4, R2, ip6_dst_word(w)));
                    a.jmp32_imm(BPF_JNE, R4, value, srv6);
                }
                a.emit(ldx(BPF_B, R4, R2, IP6_NEXT));
                a.jmp32_imm(BPF_JNE, R4, IPPROTO_UDP, srv6);
                need(&mut a, IP6_END + UDP_LEN, srv6);
                a.emit(ldx(BPF_H, R4, R2, IP6_END + UDP_DPORT));
                a.jmp32_imm(BPF_JNE, R4, port, srv6);
                a.ja(redirect);
            }
            if let Some((prefix, len)) = self.srv6_locator {
                a.bind(srv6);
                for (w, mask, value) in prefix_words(prefix, len) {
                    a.emit(ldx(BPF_W, R4, R2, ip6_dst_word(w)));
                    if mask != -1 {
                        a.emit(alu32_imm(BPF_AND, R4, mask));
                    }
                    a.jmp32_imm(BPF_JNE, R4, value, pass);
                }
                a.ja(redirect);
            }
        }

        a.bind(pass);
        a.emit(alu64_imm(BPF_MOV, R0, XDP_PASS));
        a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
        a.bind(redirect);
        a.emit(ldx(BPF_W, R2, R1, CTX_RX_QUEUE));
        a.ld_map_fd(R1, map_fd);
        a.emit(alu64_imm(BPF_MOV, R3, XDP_PASS));
        a.emit(insn(BPF_JMP | BPF_CALL, 0, 0, 0, FN_REDIRECT_MAP));
        a.emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
        a.finish()
    }
}

#[cfg(test)]
mod tests;
