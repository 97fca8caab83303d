//! memif control messages: the pure codec for the 128-byte datagrams of the control channel.
//!
//! Contract:
//!
//! - **Pure.** No I/O, no file descriptors: the socket driver passes the `SCM_RIGHTS` fd that
//!   [`Msg::carries_fd`] says goes with a message. This module only turns [`Msg`] into bytes
//!   and back.
//! - **Panic-free on any input.** [`Msg::decode`] accepts any `&[u8]` from the peer and returns
//!   a [`MsgError`] for a wrong size, an unknown type or an unknown INIT mode. Every field
//!   offset is a constant checked at compile time to lie inside [`MSG_SIZE`], so no index can
//!   go out of bounds. A string that is not UTF-8 is converted lossily, never rejected.
//! - **Layout per the memif fact sheet, §3** (`memif_msg_t`, version 2.0): little-endian,
//!   packed, `type` as a u16 at byte 0, the payload at byte 2, zero padding to 128 bytes. The
//!   offsets in `field` are absolute within the datagram. Multi-byte fields are unaligned,
//!   so they are read and written with `from_le_bytes`/`to_le_bytes` on byte copies.
//! - **Encode is canonical.** [`Msg::encode`] zeroes every unused byte (peers zero the message
//!   before filling it) and writes a string field like `strlcpy`: at most `len - 1` bytes, cut
//!   back to a UTF-8 character boundary, then NUL. A string with an interior NUL is cut there
//!   by whoever decodes it. So `decode(encode(m)) == m` whenever every string fits (and has no
//!   NUL), and `encode(decode(encode(m))) == encode(m)` always.
//! - **Decode is liberal.** Padding bytes, the ADD_RING flag bits other than S2M, and the
//!   semantic checks of the handshake (version, `private_hdr_size == 0`, index order) are the
//!   caller's business: this module only rejects what cannot be represented as a [`Msg`].

/// Size of every control message: one `SOCK_SEQPACKET` datagram (spec §2, §3).
pub const MSG_SIZE: usize = 128;

/// memif protocol version 2.0, `(2 << 8) | 0`; both sides send exactly this (spec §3).
pub const VERSION: u16 = 0x0200;

/// Ring cookie written by the client in every ring header.
pub const COOKIE: u32 = 0x03E3_1F20;

/// Message type values (`memif_msg_type_t`); 0 is `NONE` and never valid on the wire.
mod ty {
    pub(super) const ACK: u16 = 1;
    pub(super) const HELLO: u16 = 2;
    pub(super) const INIT: u16 = 3;
    pub(super) const ADD_REGION: u16 = 4;
    pub(super) const ADD_RING: u16 = 5;
    pub(super) const CONNECT: u16 = 6;
    pub(super) const CONNECTED: u16 = 7;
    pub(super) const DISCONNECT: u16 = 8;
}

/// Absolute byte offsets of every field (spec §3 table). Fixed-width fields are given by their
/// first byte (the width is the Rust type's), strings by their whole range.
mod field {
    use core::ops::Range;

    pub(super) const TYPE: usize = 0;

    pub(super) mod hello {
        use super::Range;
        pub(crate) const NAME: Range<usize> = 2..34;
        pub(crate) const MIN_VERSION: usize = 34;
        pub(crate) const MAX_VERSION: usize = 36;
        pub(crate) const MAX_REGION: usize = 38;
        pub(crate) const MAX_M2S_RING: usize = 40;
        pub(crate) const MAX_S2M_RING: usize = 42;
        pub(crate) const MAX_LOG2_RING_SIZE: usize = 44;
    }

    pub(super) mod init {
        use super::Range;
        pub(crate) const VERSION: usize = 2;
        pub(crate) const ID: usize = 4;
        /// An enum bit-field `:8` in C, so one byte.
        pub(crate) const MODE: usize = 8;
        pub(crate) const SECRET: Range<usize> = 9..33;
        pub(crate) const NAME: Range<usize> = 33..65;
    }

    pub(super) mod add_region {
        pub(crate) const INDEX: usize = 2;
        pub(crate) const SIZE: usize = 4;
    }

    pub(super) mod add_ring {
        pub(crate) const FLAGS: usize = 2;
        pub(crate) const INDEX: usize = 4;
        pub(crate) const REGION: usize = 6;
        pub(crate) const OFFSET: usize = 8;
        pub(crate) const LOG2_RING_SIZE: usize = 12;
        pub(crate) const PRIVATE_HDR_SIZE: usize = 13;
        /// `MEMIF_MSG_ADD_RING_FLAG_S2M` (DPDK: C2S).
        pub(crate) const FLAG_S2M: u16 = 1;
    }

    /// CONNECT and CONNECTED share this layout.
    pub(super) mod connect {
        use super::Range;
        pub(crate) const IF_NAME: Range<usize> = 2..34;
    }

    pub(super) mod disconnect {
        use super::Range;
        pub(crate) const CODE: usize = 2;
        pub(crate) const REASON: Range<usize> = 6..102;
    }
}

// Panic-freedom of every `buf[..]` below: each field ends inside the datagram. Checked once,
// here, at compile time; the readers and writers index a `[u8; MSG_SIZE]` with these constants
// only.
const _: () = {
    const fn fits(at: usize, width: usize) -> bool {
        at + width <= MSG_SIZE
    }
    const fn fits_str(r: core::ops::Range<usize>) -> bool {
        r.start < r.end && r.end <= MSG_SIZE
    }
    assert!(fits(field::TYPE, 2));
    assert!(fits_str(field::hello::NAME));
    assert!(fits(field::hello::MIN_VERSION, 2));
    assert!(fits(field::hello::MAX_VERSION, 2));
    assert!(fits(field::hello::MAX_REGION, 2));
    assert!(fits(field::hello::MAX_M2S_RING, 2));
    assert!(fits(field::hello::MAX_S2M_RING, 2));
    assert!(fits(field::hello::MAX_LOG2_RING_SIZE, 1));
    assert!(fits(field::init::VERSION, 2));
    assert!(fits(field::init::ID, 4));
    assert!(fits(field::init::MODE, 1));
    assert!(fits_str(field::init::SECRET));
    assert!(fits_str(field::init::NAME));
    assert!(fits(field::add_region::INDEX, 2));
    assert!(fits(field::add_region::SIZE, 8));
    assert!(fits(field::add_ring::FLAGS, 2));
    assert!(fits(field::add_ring::INDEX, 2));
    assert!(fits(field::add_ring::REGION, 2));
    assert!(fits(field::add_ring::OFFSET, 4));
    assert!(fits(field::add_ring::LOG2_RING_SIZE, 1));
    assert!(fits(field::add_ring::PRIVATE_HDR_SIZE, 2));
    assert!(fits_str(field::connect::IF_NAME));
    assert!(fits(field::disconnect::CODE, 4));
    assert!(fits_str(field::disconnect::REASON));
};

/// What a memif interface carries (INIT `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// L2 frames without FCS; the only mode DPDK servers accept.
    Ethernet = 0,
    /// Raw L3 packets, no L2 header.
    Ip = 1,
    /// VPP-internal punt/inject; not implemented for the data path by DPDK or libmemif.
    PuntInject = 2,
}

impl From<Mode> for u8 {
    fn from(mode: Mode) -> u8 {
        // Lossless: `Mode` is `repr(u8)`.
        mode as u8
    }
}

impl TryFrom<u8> for Mode {
    type Error = MsgError;

    fn try_from(v: u8) -> Result<Mode, MsgError> {
        match v {
            0 => Ok(Mode::Ethernet),
            1 => Ok(Mode::Ip),
            2 => Ok(Mode::PuntInject),
            _ => Err(MsgError::BadMode(v)),
        }
    }
}

/// HELLO (server → client, sent unprompted after `accept`): the server's limits.
///
/// The limits are maximum *indices*: the client uses `max + 1` as a count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Application name, e.g. "VPP 25.x" (at most 31 bytes on the wire).
    pub name: String,
    /// Lowest protocol version supported.
    pub min_version: u16,
    /// Highest protocol version supported.
    pub max_version: u16,
    /// Highest region index accepted.
    pub max_region: u16,
    /// Highest M2S (DPDK: S2C) ring index accepted.
    pub max_m2s_ring: u16,
    /// Highest S2M (DPDK: C2S) ring index accepted.
    pub max_s2m_ring: u16,
    /// Largest log2 of the ring size accepted.
    pub max_log2_ring_size: u8,
}

impl Hello {
    /// What vwire's server sends: the same limits as libmemif, DPDK and gomemif
    /// (255/255/255/14), which advertise implementation limits, not configured queue counts.
    pub fn vwire() -> Hello {
        Hello {
            name: "vwire".to_owned(),
            min_version: VERSION,
            max_version: VERSION,
            max_region: 255,
            max_m2s_ring: 255,
            max_s2m_ring: 255,
            max_log2_ring_size: 14,
        }
    }
}

/// INIT (client → server, the client's first message): which interface it wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Init {
    /// Protocol version; servers require exactly [`VERSION`].
    pub version: u16,
    /// Interface id, matched against the server's interfaces on this socket.
    pub id: u32,
    /// Interface mode.
    pub mode: Mode,
    /// Shared secret, empty for none (at most 23 bytes on the wire).
    pub secret: String,
    /// Client application name (at most 31 bytes on the wire).
    pub name: String,
}

/// ADD_RING (client → server, with the ring's interrupt eventfd): where one ring lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddRing {
    /// Direction: true for S2M (DPDK: C2S), false for M2S (S2C). Flag bit 0 on the wire.
    pub s2m: bool,
    /// Ring index within its direction.
    pub index: u16,
    /// Region holding the ring header.
    pub region: u16,
    /// Byte offset of the ring header inside that region.
    pub offset: u32,
    /// log2 of the number of descriptors.
    pub log2_ring_size: u8,
    /// Private header size; every implementation requires 0.
    pub private_hdr_size: u16,
}

/// One memif control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Server: the previous message was accepted.
    Ack,
    /// Server: limits, sent first.
    Hello(Hello),
    /// Client: interface id, mode and secret.
    Init(Init),
    /// Client, with the region's memfd: one shared-memory region.
    AddRegion {
        /// Region index; servers require 0, 1, 2, … in order.
        index: u16,
        /// Region size in bytes, as the server must map it.
        size: u64,
    },
    /// Client, with the ring's eventfd: one ring.
    AddRing(AddRing),
    /// Client: all regions and rings are announced; go up.
    Connect {
        /// The client's interface name (at most 31 bytes on the wire).
        if_name: String,
    },
    /// Server: mapped and checked; up.
    Connected {
        /// The server's interface name (at most 31 bytes on the wire).
        if_name: String,
    },
    /// Either side: closing, and why.
    Disconnect {
        /// Error code (implementations send 0 or a small errno-like number).
        code: u32,
        /// Human-readable reason (at most 95 bytes on the wire).
        reason: String,
    },
}

/// A datagram that is not a memif control message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsgError {
    /// the datagram is not exactly 128 bytes
    #[error("memif control message of {0} bytes, expected 128")]
    WrongSize(usize),
    /// the type field is NONE (0) or beyond DISCONNECT (8)
    #[error("unknown memif control message type {0}")]
    UnknownType(u16),
    /// the INIT mode is not ethernet (0), ip (1) or punt/inject (2)
    #[error("unknown memif interface mode {0} in INIT")]
    BadMode(u8),
}

impl Msg {
    /// The 128-byte datagram for this message; every unused byte is zero.
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut buf = [0u8; MSG_SIZE];
        let b = &mut buf;
        match self {
            Msg::Ack => put(b, field::TYPE, ty::ACK.to_le_bytes()),
            Msg::Hello(h) => {
                use field::hello as f;
                put(b, field::TYPE, ty::HELLO.to_le_bytes());
                put_str(b, f::NAME, &h.name);
                put(b, f::MIN_VERSION, h.min_version.to_le_bytes());
                put(b, f::MAX_VERSION, h.max_version.to_le_bytes());
                put(b, f::MAX_REGION, h.max_region.to_le_bytes());
                put(b, f::MAX_M2S_RING, h.max_m2s_ring.to_le_bytes());
                put(b, f::MAX_S2M_RING, h.max_s2m_ring.to_le_bytes());
                put(b, f::MAX_LOG2_RING_SIZE, [h.max_log2_ring_size]);
            }
            Msg::Init(i) => {
                use field::init as f;
                put(b, field::TYPE, ty::INIT.to_le_bytes());
                put(b, f::VERSION, i.version.to_le_bytes());
                put(b, f::ID, i.id.to_le_bytes());
                put(b, f::MODE, [u8::from(i.mode)]);
                put_str(b, f::SECRET, &i.secret);
                put_str(b, f::NAME, &i.name);
            }
            Msg::AddRegion { index, size } => {
                use field::add_region as f;
                put(b, field::TYPE, ty::ADD_REGION.to_le_bytes());
                put(b, f::INDEX, index.to_le_bytes());
                put(b, f::SIZE, size.to_le_bytes());
            }
            Msg::AddRing(r) => {
                use field::add_ring as f;
                let flags = if r.s2m { f::FLAG_S2M } else { 0 };
                put(b, field::TYPE, ty::ADD_RING.to_le_bytes());
                put(b, f::FLAGS, flags.to_le_bytes());
                put(b, f::INDEX, r.index.to_le_bytes());
                put(b, f::REGION, r.region.to_le_bytes());
                put(b, f::OFFSET, r.offset.to_le_bytes());
                put(b, f::LOG2_RING_SIZE, [r.log2_ring_size]);
                put(b, f::PRIVATE_HDR_SIZE, r.private_hdr_size.to_le_bytes());
            }
            Msg::Connect { if_name } => {
                put(b, field::TYPE, ty::CONNECT.to_le_bytes());
                put_str(b, field::connect::IF_NAME, if_name);
            }
            Msg::Connected { if_name } => {
                put(b, field::TYPE, ty::CONNECTED.to_le_bytes());
                put_str(b, field::connect::IF_NAME, if_name);
            }
            Msg::Disconnect { code, reason } => {
                use field::disconnect as f;
                put(b, field::TYPE, ty::DISCONNECT.to_le_bytes());
                put(b, f::CODE, code.to_le_bytes());
                put_str(b, f::REASON, reason);
            }
        }
        buf
    }

    /// Parses one received datagram. Never panics, whatever the peer sent.
    ///
    /// Rejects only what is not a message: a length other than [`MSG_SIZE`], type NONE or an
    /// unknown type, and an unknown INIT mode. Strings end at the first NUL (or the field's
    /// end) and are converted lossily.
    pub fn decode(buf: &[u8]) -> Result<Msg, MsgError> {
        //# Receivers treat any other size as malformed (libmemif `MEMIF_ERR_MFMSG`, DPDK
        //# "Invalid message size").
        let b: &[u8; MSG_SIZE] = buf.try_into().map_err(|_| MsgError::WrongSize(buf.len()))?;
        let msg = match u16::from_le_bytes(get(b, field::TYPE)) {
            ty::ACK => Msg::Ack,
            ty::HELLO => {
                use field::hello as f;
                Msg::Hello(Hello {
                    name: get_str(b, f::NAME),
                    min_version: u16::from_le_bytes(get(b, f::MIN_VERSION)),
                    max_version: u16::from_le_bytes(get(b, f::MAX_VERSION)),
                    max_region: u16::from_le_bytes(get(b, f::MAX_REGION)),
                    max_m2s_ring: u16::from_le_bytes(get(b, f::MAX_M2S_RING)),
                    max_s2m_ring: u16::from_le_bytes(get(b, f::MAX_S2M_RING)),
                    max_log2_ring_size: u8::from_le_bytes(get(b, f::MAX_LOG2_RING_SIZE)),
                })
            }
            ty::INIT => {
                use field::init as f;
                Msg::Init(Init {
                    version: u16::from_le_bytes(get(b, f::VERSION)),
                    id: u32::from_le_bytes(get(b, f::ID)),
                    mode: Mode::try_from(u8::from_le_bytes(get(b, f::MODE)))?,
                    secret: get_str(b, f::SECRET),
                    name: get_str(b, f::NAME),
                })
            }
            ty::ADD_REGION => {
                use field::add_region as f;
                Msg::AddRegion {
                    index: u16::from_le_bytes(get(b, f::INDEX)),
                    size: u64::from_le_bytes(get(b, f::SIZE)),
                }
            }
            ty::ADD_RING => {
                use field::add_ring as f;
                // Other flag bits are undefined; ignored like every implementation does.
                let flags = u16::from_le_bytes(get(b, f::FLAGS));
                Msg::AddRing(AddRing {
                    s2m: flags & f::FLAG_S2M != 0,
                    index: u16::from_le_bytes(get(b, f::INDEX)),
                    region: u16::from_le_bytes(get(b, f::REGION)),
                    offset: u32::from_le_bytes(get(b, f::OFFSET)),
                    log2_ring_size: u8::from_le_bytes(get(b, f::LOG2_RING_SIZE)),
                    private_hdr_size: u16::from_le_bytes(get(b, f::PRIVATE_HDR_SIZE)),
                })
            }
            ty::CONNECT => Msg::Connect {
                if_name: get_str(b, field::connect::IF_NAME),
            },
            ty::CONNECTED => Msg::Connected {
                if_name: get_str(b, field::connect::IF_NAME),
            },
            ty::DISCONNECT => {
                use field::disconnect as f;
                Msg::Disconnect {
                    code: u32::from_le_bytes(get(b, f::CODE)),
                    reason: get_str(b, f::REASON),
                }
            }
            other => return Err(MsgError::UnknownType(other)),
        };
        Ok(msg)
    }

    /// Whether this message travels with one `SCM_RIGHTS` file descriptor: the region memfd
    /// for ADD_REGION, the interrupt eventfd for ADD_RING. Both are mandatory (spec §2).
    pub fn carries_fd(&self) -> bool {
        matches!(self, Msg::AddRegion { .. } | Msg::AddRing(_))
    }

    /// The protocol's name for this message type, for logs: "ACK", "HELLO", ….
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Ack => "ACK",
            Msg::Hello(_) => "HELLO",
            Msg::Init(_) => "INIT",
            Msg::AddRegion { .. } => "ADD_REGION",
            Msg::AddRing(_) => "ADD_RING",
            Msg::Connect { .. } => "CONNECT",
            Msg::Connected { .. } => "CONNECTED",
            Msg::Disconnect { .. } => "DISCONNECT",
        }
    }
}

/// The `N` bytes at `at`. In bounds: `at` is a `field` constant (checked above) and `N` its
/// width.
fn get<const N: usize>(buf: &[u8; MSG_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// Writes `bytes` at `at`; in bounds as for [`get`].
fn put<const N: usize>(buf: &mut [u8; MSG_SIZE], at: usize, bytes: [u8; N]) {
    buf[at..at + N].copy_from_slice(&bytes);
}

/// The string in `range`: bytes up to the first NUL or the field's end, converted lossily.
// Threat: the peer controls these bytes. A missing NUL or invalid UTF-8 must not fail the
// handshake (names and reasons are only logged and compared), so nothing here is an error.
fn get_str(buf: &[u8; MSG_SIZE], range: core::ops::Range<usize>) -> String {
    let raw = &buf[range];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Writes `s` into a zeroed `range` like `strlcpy`: at most `range.len() - 1` bytes, cut back
/// to a character boundary so the peer sees valid UTF-8, and the NUL that follows is the
/// buffer's existing zero.
fn put_str(buf: &mut [u8; MSG_SIZE], range: core::ops::Range<usize>, s: &str) {
    let field = &mut buf[range];
    let mut n = s.len().min(field.len().saturating_sub(1));
    // Terminates: `is_char_boundary(0)` is always true.
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A 128-byte datagram with `ty` at byte 0 and each `(offset, bytes)` written at its
    /// absolute offset, copied by hand from the spec §3 table (deliberately not using
    /// `field`, so the two are checked against each other).
    fn fixture(ty: u16, fields: &[(usize, &[u8])]) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[0..2].copy_from_slice(&ty.to_le_bytes());
        for (at, bytes) in fields {
            b[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        b
    }

    fn check(msg: Msg, wire: [u8; MSG_SIZE]) {
        assert_eq!(msg.encode(), wire, "encode {}", msg.name());
        assert_eq!(Msg::decode(&wire), Ok(msg));
    }

    #[test]
    fn ack() {
        check(Msg::Ack, fixture(1, &[]));
    }

    #[test]
    fn hello() {
        let wire = fixture(
            2,
            &[
                (2, b"vwire"),
                (34, &0x0200u16.to_le_bytes()),
                (36, &0x0200u16.to_le_bytes()),
                (38, &255u16.to_le_bytes()),
                (40, &255u16.to_le_bytes()),
                (42, &255u16.to_le_bytes()),
                (44, &[14]),
            ],
        );
        check(Msg::Hello(Hello::vwire()), wire);
        // Distinct values, so a swapped pair of fields would show.
        let wire = fixture(
            2,
            &[
                (2, b"VPP 25.10"),
                (34, &0x0102u16.to_le_bytes()),
                (36, &0x0304u16.to_le_bytes()),
                (38, &0x0506u16.to_le_bytes()),
                (40, &0x0708u16.to_le_bytes()),
                (42, &0x090au16.to_le_bytes()),
                (44, &[0x0b]),
            ],
        );
        let hello = Hello {
            name: "VPP 25.10".into(),
            min_version: 0x0102,
            max_version: 0x0304,
            max_region: 0x0506,
            max_m2s_ring: 0x0708,
            max_s2m_ring: 0x090a,
            max_log2_ring_size: 0x0b,
        };
        check(Msg::Hello(hello), wire);
    }

    #[test]
    fn init() {
        let wire = fixture(
            3,
            &[
                (2, &0x0200u16.to_le_bytes()),
                (4, &0xdead_beefu32.to_le_bytes()),
                (8, &[1]),
                (9, b"s3cret"),
                (33, b"libmemif-app"),
            ],
        );
        let init = Init {
            version: VERSION,
            id: 0xdead_beef,
            mode: Mode::Ip,
            secret: "s3cret".into(),
            name: "libmemif-app".into(),
        };
        check(Msg::Init(init), wire);
        for (byte, mode) in [(0, Mode::Ethernet), (2, Mode::PuntInject)] {
            let wire = fixture(3, &[(8, &[byte])]);
            let init = Init {
                version: 0,
                id: 0,
                mode,
                secret: String::new(),
                name: String::new(),
            };
            check(Msg::Init(init), wire);
        }
    }

    #[test]
    fn add_region() {
        let wire = fixture(
            4,
            &[
                (2, &3u16.to_le_bytes()),
                (4, &0x0102_0304_0506_0708u64.to_le_bytes()),
            ],
        );
        let msg = Msg::AddRegion {
            index: 3,
            size: 0x0102_0304_0506_0708,
        };
        assert!(msg.carries_fd());
        check(msg, wire);
    }

    #[test]
    fn add_ring() {
        for s2m in [false, true] {
            let wire = fixture(
                5,
                &[
                    (2, &u16::from(s2m).to_le_bytes()),
                    (4, &0x0102u16.to_le_bytes()),
                    (6, &0x0304u16.to_le_bytes()),
                    (8, &0x0506_0708u32.to_le_bytes()),
                    (12, &[10]),
                    (13, &0x090au16.to_le_bytes()),
                ],
            );
            let msg = Msg::AddRing(AddRing {
                s2m,
                index: 0x0102,
                region: 0x0304,
                offset: 0x0506_0708,
                log2_ring_size: 10,
                private_hdr_size: 0x090a,
            });
            assert!(msg.carries_fd());
            check(msg, wire);
        }
    }

    #[test]
    fn add_ring_ignores_unknown_flags() {
        let wire = fixture(5, &[(2, &0xfffeu16.to_le_bytes())]);
        match Msg::decode(&wire) {
            Ok(Msg::AddRing(r)) => assert!(!r.s2m),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_and_connected() {
        check(
            Msg::Connect {
                if_name: "memif0/0".into(),
            },
            fixture(6, &[(2, b"memif0/0")]),
        );
        check(
            Msg::Connected {
                if_name: "vwire-a".into(),
            },
            fixture(7, &[(2, b"vwire-a")]),
        );
    }

    #[test]
    fn disconnect() {
        let wire = fixture(
            8,
            &[(2, &0x0102_0304u32.to_le_bytes()), (6, b"ID not found")],
        );
        check(
            Msg::Disconnect {
                code: 0x0102_0304,
                reason: "ID not found".into(),
            },
            wire,
        );
    }

    #[test]
    fn names_and_fds() {
        let all = [
            (Msg::Ack, "ACK", false),
            (Msg::Hello(Hello::vwire()), "HELLO", false),
            (Msg::Init(init_with("", "")), "INIT", false),
            (Msg::AddRegion { index: 0, size: 0 }, "ADD_REGION", true),
            (Msg::AddRing(ring()), "ADD_RING", true),
            (Msg::Connect { if_name: "".into() }, "CONNECT", false),
            (Msg::Connected { if_name: "".into() }, "CONNECTED", false),
            (
                Msg::Disconnect {
                    code: 0,
                    reason: "".into(),
                },
                "DISCONNECT",
                false,
            ),
        ];
        for (msg, name, fd) in all {
            assert_eq!(msg.name(), name);
            assert_eq!(msg.carries_fd(), fd, "{name}");
        }
    }

    #[test]
    fn wrong_size_rejected() {
        let wire = Msg::Ack.encode();
        for len in [0, 1, 2, 127] {
            assert_eq!(Msg::decode(&wire[..len]), Err(MsgError::WrongSize(len)));
        }
        let long = [0u8; 129];
        assert_eq!(Msg::decode(&long), Err(MsgError::WrongSize(129)));
    }

    #[test]
    fn unknown_type_rejected() {
        for t in [0, 9, 0x0100, u16::MAX] {
            assert_eq!(Msg::decode(&fixture(t, &[])), Err(MsgError::UnknownType(t)));
        }
    }

    #[test]
    fn bad_mode_rejected() {
        for m in [3, 0x80, u8::MAX] {
            assert_eq!(
                Msg::decode(&fixture(3, &[(8, &[m])])),
                Err(MsgError::BadMode(m))
            );
        }
    }

    #[test]
    fn padding_is_zero_and_ignored() {
        // Encode: nothing beyond the last field of the longest message.
        let msg = Msg::Disconnect {
            code: u32::MAX,
            reason: "x".repeat(200),
        };
        assert!(msg.encode()[102..].iter().all(|&b| b == 0));
        // Decode: garbage in the padding does not matter.
        let mut wire = Msg::Ack.encode();
        wire[2..].fill(0xa5);
        assert_eq!(Msg::decode(&wire), Ok(Msg::Ack));
    }

    fn init_with(secret: &str, name: &str) -> Init {
        Init {
            version: VERSION,
            id: 7,
            mode: Mode::Ethernet,
            secret: secret.into(),
            name: name.into(),
        }
    }

    fn ring() -> AddRing {
        AddRing {
            s2m: true,
            index: 0,
            region: 0,
            offset: 0,
            log2_ring_size: 10,
            private_hdr_size: 0,
        }
    }

    #[test]
    fn strings_truncated_and_nul_terminated() {
        // 24-byte secret field holds 23 bytes + NUL; 32-byte name 31 + NUL.
        let long = "abcdefghijklmnopqrstuvwxyz0123456789";
        let wire = Msg::Init(init_with(long, long)).encode();
        assert_eq!(&wire[9..32], &long.as_bytes()[..23]);
        assert_eq!(wire[32], 0);
        assert_eq!(&wire[33..64], &long.as_bytes()[..31]);
        assert_eq!(wire[64], 0);
        assert_eq!(
            Msg::decode(&wire),
            Ok(Msg::Init(init_with(&long[..23], &long[..31])))
        );

        // Exactly len - 1 bytes fits unchanged.
        let name = "n".repeat(31);
        let msg = Msg::Connect {
            if_name: name.clone(),
        };
        assert_eq!(Msg::decode(&msg.encode()), Ok(msg));

        // 96-byte reason: 95 bytes + NUL.
        let wire = Msg::Disconnect {
            code: 1,
            reason: "r".repeat(100),
        }
        .encode();
        assert_eq!(wire[6 + 95], 0);
        assert_eq!(
            Msg::decode(&wire),
            Ok(Msg::Disconnect {
                code: 1,
                reason: "r".repeat(95)
            })
        );
    }

    #[test]
    fn truncation_keeps_utf8() {
        // 30 ASCII bytes then a 2-byte character: 32 bytes, cut to 30, not 31.
        let name = format!("{}é", "a".repeat(30));
        let wire = Msg::Connect { if_name: name }.encode();
        assert_eq!(wire[2 + 30], 0);
        assert_eq!(
            Msg::decode(&wire),
            Ok(Msg::Connect {
                if_name: "a".repeat(30)
            })
        );
    }

    #[test]
    fn decode_string_edges() {
        // No NUL at all: the whole field is the string, and the next field is not read.
        let wire = fixture(6, &[(2, &[b'x'; 32]), (34, b"tail")]);
        assert_eq!(
            Msg::decode(&wire),
            Ok(Msg::Connect {
                if_name: "x".repeat(32)
            })
        );
        // Stops at the first NUL even if bytes follow.
        let wire = fixture(7, &[(2, b"ab\0cd")]);
        assert_eq!(
            Msg::decode(&wire),
            Ok(Msg::Connected {
                if_name: "ab".into()
            })
        );
        // Invalid UTF-8 is replaced, not rejected.
        let wire = fixture(8, &[(6, &[b'o', 0xff, b'k'])]);
        assert_eq!(
            Msg::decode(&wire),
            Ok(Msg::Disconnect {
                code: 0,
                reason: "o\u{fffd}k".into()
            })
        );
        // An interior NUL in an encoded string cuts it for the receiver.
        let msg = Msg::Connect {
            if_name: "ab\0cd".into(),
        };
        assert_eq!(
            Msg::decode(&msg.encode()),
            Ok(Msg::Connect {
                if_name: "ab".into()
            })
        );
    }

    /// The `(string, capacity)` pairs of a message, and the message with them emptied.
    fn split_strings(m: &Msg) -> (Msg, Vec<(String, usize)>) {
        let mut m = m.clone();
        let strs = match &mut m {
            Msg::Hello(h) => vec![(std::mem::take(&mut h.name), 31)],
            Msg::Init(i) => vec![
                (std::mem::take(&mut i.secret), 23),
                (std::mem::take(&mut i.name), 31),
            ],
            Msg::Connect { if_name } | Msg::Connected { if_name } => {
                vec![(std::mem::take(if_name), 31)]
            }
            Msg::Disconnect { reason, .. } => vec![(std::mem::take(reason), 95)],
            Msg::Ack | Msg::AddRegion { .. } | Msg::AddRing(_) => vec![],
        };
        (m, strs)
    }

    /// Any string, shortened (by characters) to fit `cap` bytes, with no NUL.
    fn fitting(cap: usize) -> impl Strategy<Value = String> {
        any::<String>().prop_map(move |s| {
            let mut out = String::new();
            for c in s.chars().filter(|&c| c != '\0') {
                if out.len() + c.len_utf8() > cap {
                    break;
                }
                out.push(c);
            }
            out
        })
    }

    fn arb_mode() -> impl Strategy<Value = Mode> {
        prop_oneof![Just(Mode::Ethernet), Just(Mode::Ip), Just(Mode::PuntInject)]
    }

    /// Messages; `s(cap)` makes each string field of capacity `cap` bytes.
    fn arb_msg<S, F>(s: F) -> impl Strategy<Value = Msg>
    where
        S: Strategy<Value = String> + 'static,
        F: Fn(usize) -> S,
    {
        prop_oneof![
            Just(Msg::Ack),
            (s(31), any::<[u16; 5]>(), any::<u8>()).prop_map(|(name, v, l)| {
                Msg::Hello(Hello {
                    name,
                    min_version: v[0],
                    max_version: v[1],
                    max_region: v[2],
                    max_m2s_ring: v[3],
                    max_s2m_ring: v[4],
                    max_log2_ring_size: l,
                })
            }),
            (any::<u16>(), any::<u32>(), arb_mode(), s(23), s(31)).prop_map(
                |(version, id, mode, secret, name)| Msg::Init(Init {
                    version,
                    id,
                    mode,
                    secret,
                    name,
                })
            ),
            (any::<u16>(), any::<u64>()).prop_map(|(index, size)| Msg::AddRegion { index, size }),
            (any::<bool>(), any::<[u16; 3]>(), any::<u32>(), any::<u8>()).prop_map(
                |(s2m, v, offset, log2_ring_size)| Msg::AddRing(AddRing {
                    s2m,
                    index: v[0],
                    region: v[1],
                    offset,
                    log2_ring_size,
                    private_hdr_size: v[2],
                })
            ),
            s(31).prop_map(|if_name| Msg::Connect { if_name }),
            s(31).prop_map(|if_name| Msg::Connected { if_name }),
            (any::<u32>(), s(95)).prop_map(|(code, reason)| Msg::Disconnect { code, reason }),
        ]
    }

    proptest! {
        #[test]
        fn decode_never_panics_128(buf in any::<[u8; MSG_SIZE]>()) {
            let _ = Msg::decode(&buf);
        }

        #[test]
        fn decode_never_panics_any_len(buf in prop::collection::vec(any::<u8>(), 0..300)) {
            let r = Msg::decode(&buf);
            if buf.len() != MSG_SIZE {
                prop_assert_eq!(r, Err(MsgError::WrongSize(buf.len())));
            }
        }

        /// Decoded messages re-encode canonically: the second round trip is exact.
        #[test]
        fn decode_encode_decode(mut buf in any::<[u8; MSG_SIZE]>(), t in 1u16..=8, mode in 0u8..=2) {
            buf[0..2].copy_from_slice(&t.to_le_bytes());
            if t == 3 {
                buf[8] = mode;
            }
            let m = Msg::decode(&buf).expect("valid type and mode");
            let wire = m.encode();
            let m2 = Msg::decode(&wire).expect("encode output decodes");
            prop_assert_eq!(m2.encode(), wire);
            let (bare, strs) = split_strings(&m);
            let (bare2, strs2) = split_strings(&m2);
            prop_assert_eq!(bare, bare2);
            for ((s, _), (s2, cap)) in strs.iter().zip(&strs2) {
                prop_assert!(s.starts_with(s2.as_str()) && s2.len() <= *cap);
            }
        }

        #[test]
        fn round_trip(m in arb_msg(fitting)) {
            prop_assert_eq!(Msg::decode(&m.encode()), Ok(m));
        }

        /// Any strings (too long, with NULs, multi-byte): the receiver gets a prefix within
        /// the field, and encoding is idempotent.
        #[test]
        fn round_trip_truncates(m in arb_msg(|_| any::<String>())) {
            let wire = m.encode();
            let m2 = Msg::decode(&wire).expect("encode output decodes");
            prop_assert_eq!(m2.encode(), wire);
            let (bare, strs) = split_strings(&m);
            let (bare2, strs2) = split_strings(&m2);
            prop_assert_eq!(bare, bare2);
            for ((s, _), (s2, cap)) in strs.iter().zip(&strs2) {
                prop_assert!(s.starts_with(s2.as_str()) && s2.len() <= *cap);
                if s.len() <= *cap && !s.contains('\0') {
                    prop_assert_eq!(s, s2);
                }
            }
        }
    }
}
