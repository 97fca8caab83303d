//! IP protocol numbers (IPv4 protocol / IPv6 next header, IANA "Assigned Internet Protocol
//! Numbers").

/// An IP protocol or IPv6 next-header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProtocol {
    /// 0: IPv6 hop-by-hop options.
    HopByHop,
    /// 1: ICMP.
    Icmp,
    /// 4: an IPv4 packet (IP in IP, SRv6 H.Encaps / End.DX4).
    Ipv4,
    /// 6: TCP.
    Tcp,
    /// 17: UDP.
    Udp,
    /// 41: an IPv6 packet (SRv6 H.Encaps / End.DX6).
    Ipv6,
    /// 43: IPv6 routing header (the SRH is routing type 4).
    Ipv6Route,
    /// 44: IPv6 fragment header.
    Ipv6Frag,
    /// 51: authentication header.
    Ah,
    /// 58: ICMPv6.
    Icmpv6,
    /// 60: IPv6 destination options.
    Ipv6Opts,
    /// 132: SCTP.
    Sctp,
    /// 136: UDP-Lite.
    UdpLite,
    /// 143: an Ethernet frame (SRv6 H.Encaps.L2 / End.DX2, RFC 8986 §10.1).
    Ethernet,
    /// Any other value.
    Unknown(u8),
}

impl IpProtocol {
    /// The protocol of a raw value.
    #[inline(always)]
    #[must_use]
    pub const fn from_raw(v: u8) -> Self {
        match v {
            0 => Self::HopByHop,
            1 => Self::Icmp,
            4 => Self::Ipv4,
            6 => Self::Tcp,
            17 => Self::Udp,
            41 => Self::Ipv6,
            43 => Self::Ipv6Route,
            44 => Self::Ipv6Frag,
            51 => Self::Ah,
            58 => Self::Icmpv6,
            60 => Self::Ipv6Opts,
            132 => Self::Sctp,
            136 => Self::UdpLite,
            143 => Self::Ethernet,
            v => Self::Unknown(v),
        }
    }

    /// The raw value.
    #[inline(always)]
    #[must_use]
    pub const fn raw(self) -> u8 {
        match self {
            Self::HopByHop => 0,
            Self::Icmp => 1,
            Self::Ipv4 => 4,
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Ipv6 => 41,
            Self::Ipv6Route => 43,
            Self::Ipv6Frag => 44,
            Self::Ah => 51,
            Self::Icmpv6 => 58,
            Self::Ipv6Opts => 60,
            Self::Sctp => 132,
            Self::UdpLite => 136,
            Self::Ethernet => 143,
            Self::Unknown(v) => v,
        }
    }

    /// Whether the first four L4 bytes are the source and destination ports (TCP, UDP, SCTP,
    /// UDP-Lite).
    #[inline(always)]
    #[must_use]
    pub const fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp | Self::UdpLite)
    }

    /// Whether this is an IPv6 extension header (RFC 8200 §4, IANA "IPv6 Extension Header
    /// Types") other than the fragment header, which parsers report on its own.
    #[inline(always)]
    #[must_use]
    pub const fn is_ipv6_extension(self) -> bool {
        // 135 mobility, 139 HIP, 140 shim6, 253/254 experiments.
        matches!(
            self,
            Self::HopByHop
                | Self::Ipv6Route
                | Self::Ah
                | Self::Ipv6Opts
                | Self::Unknown(135 | 139 | 140 | 253 | 254)
        )
    }
}

impl From<u8> for IpProtocol {
    #[inline(always)]
    fn from(v: u8) -> Self {
        Self::from_raw(v)
    }
}

impl From<IpProtocol> for u8 {
    #[inline(always)]
    fn from(p: IpProtocol) -> Self {
        p.raw()
    }
}
