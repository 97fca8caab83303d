//! Typed views over the parameters of the REMOTE mechanisms, VXLAN and SRV6, each with its two
//! halves (see [`End`]).

use std::net::{IpAddr, Ipv6Addr};

use super::params::{parse_mac, Mac, Raw, RawMut, AN_IP, A_MAC, A_PORT, A_VNI};
use super::{keys, End, ParamError};

/// The parameters of a VXLAN mechanism.
#[derive(Clone, Copy)]
pub struct VxlanParams<'a>(pub(super) Raw<'a>);

impl<'a> VxlanParams<'a> {
    /// `src_ip` or `dst_ip`: that side's tunnel IP.
    pub fn ip(&self, end: End) -> Result<IpAddr, ParamError> {
        self.0.ip(end.pick(keys::SRC_IP, keys::DST_IP))
    }

    /// `src_port` or `dst_port`, `Ok(None)` when absent (the default VXLAN port); 0 is malformed.
    pub fn port(&self, end: End) -> Result<Option<u16>, ParamError> {
        let key = end.pick(keys::SRC_PORT, keys::DST_PORT);
        self.0
            .opt(key, A_PORT, |v| v.parse().ok().filter(|&p: &u16| p != 0))
    }

    /// `orig_src_ip` or `orig_dst_ip`: that side's address before NAT, if given.
    pub fn orig_ip(&self, end: End) -> Result<Option<IpAddr>, ParamError> {
        let key = end.pick(keys::ORIG_SRC_IP, keys::ORIG_DST_IP);
        self.0.opt(key, AN_IP, |v| v.parse().ok())
    }

    /// The VNI: a decimal number below 2^24.
    pub fn vni(&self) -> Result<u32, ParamError> {
        self.0.req(keys::VNI, A_VNI, |v| {
            v.parse().ok().filter(|&v: &u32| v < (1 << 24))
        })
    }

    /// The MTU, if given.
    pub fn mtu(&self) -> Result<Option<u32>, ParamError> {
        self.0.mtu()
    }
}

/// Sets the parameters of a VXLAN mechanism.
pub struct VxlanParamsMut<'a>(pub(super) RawMut<'a>);

impl VxlanParamsMut<'_> {
    /// Sets `src_ip` or `dst_ip`.
    pub fn set_ip(&mut self, end: End, ip: IpAddr) -> &mut Self {
        self.0.set(end.pick(keys::SRC_IP, keys::DST_IP), ip);
        self
    }

    /// Sets `src_port` or `dst_port`.
    pub fn set_port(&mut self, end: End, port: u16) -> &mut Self {
        self.0.set(end.pick(keys::SRC_PORT, keys::DST_PORT), port);
        self
    }

    /// Sets `vni`.
    pub fn set_vni(&mut self, vni: u32) -> &mut Self {
        self.0.set(keys::VNI, vni);
        self
    }

    /// Sets `MTU`.
    pub fn set_mtu(&mut self, mtu: u32) -> &mut Self {
        self.0.set(keys::MTU, mtu);
        self
    }
}

/// The parameters of an SRV6 mechanism.
#[derive(Clone, Copy)]
pub struct Srv6Params<'a>(pub(super) Raw<'a>);

impl<'a> Srv6Params<'a> {
    /// `src_host_ip` or `dst_host_ip`: that side's encapsulation source.
    pub fn host_ip(&self, end: End) -> Result<Ipv6Addr, ParamError> {
        self.0.ipv6(end.pick(keys::SRC_HOST_IP, keys::DST_HOST_IP))
    }

    /// `src_localsid` or `dst_localsid`: that side's SID for the connection.
    pub fn localsid(&self, end: End) -> Result<Ipv6Addr, ParamError> {
        self.0
            .ipv6(end.pick(keys::SRC_LOCALSID, keys::DST_LOCALSID))
    }

    /// `src_bsid` or `dst_bsid`: that side's binding SID.
    pub fn bsid(&self, end: End) -> Result<Ipv6Addr, ParamError> {
        self.0.ipv6(end.pick(keys::SRC_BSID, keys::DST_BSID))
    }

    /// `src_hw_addr` or `dst_hw_addr`: that side's uplink MAC.
    pub fn hw_addr(&self, end: End) -> Result<[u8; 6], ParamError> {
        let key = end.pick(keys::SRC_HW_ADDR, keys::DST_HW_ADDR);
        self.0.req(key, A_MAC, parse_mac)
    }

    /// The MTU, if given.
    pub fn mtu(&self) -> Result<Option<u32>, ParamError> {
        self.0.mtu()
    }
}

/// Sets the parameters of an SRV6 mechanism.
pub struct Srv6ParamsMut<'a>(pub(super) RawMut<'a>);

impl Srv6ParamsMut<'_> {
    /// Sets `src_host_ip` or `dst_host_ip`.
    pub fn set_host_ip(&mut self, end: End, ip: Ipv6Addr) -> &mut Self {
        self.0
            .set(end.pick(keys::SRC_HOST_IP, keys::DST_HOST_IP), ip);
        self
    }

    /// Sets `src_localsid` or `dst_localsid`.
    pub fn set_localsid(&mut self, end: End, sid: Ipv6Addr) -> &mut Self {
        self.0
            .set(end.pick(keys::SRC_LOCALSID, keys::DST_LOCALSID), sid);
        self
    }

    /// Sets `src_bsid` or `dst_bsid`.
    pub fn set_bsid(&mut self, end: End, sid: Ipv6Addr) -> &mut Self {
        self.0.set(end.pick(keys::SRC_BSID, keys::DST_BSID), sid);
        self
    }

    /// Sets `src_hw_addr` or `dst_hw_addr`.
    pub fn set_hw_addr(&mut self, end: End, mac: [u8; 6]) -> &mut Self {
        self.0
            .set(end.pick(keys::SRC_HW_ADDR, keys::DST_HW_ADDR), Mac(mac));
        self
    }

    /// Sets `MTU`.
    pub fn set_mtu(&mut self, mtu: u32) -> &mut Self {
        self.0.set(keys::MTU, mtu);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::with;
    use super::super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn vxlan_view_round_trips_and_names_bad_keys() {
        let mut m = MechanismType::Vxlan.mechanism();
        let v = m.vxlan();
        assert_eq!(
            v.ip(End::Src),
            Err(ParamError::Missing {
                key: "src_ip",
                expected: "an IP address"
            })
        );
        assert_eq!(
            v.vni().unwrap_err().to_string(),
            "parameters[vni]: missing (expected a 24-bit VNI)"
        );
        assert_eq!(v.port(End::Dst), Ok(None));
        assert_eq!(v.mtu(), Ok(None));
        assert_eq!(v.orig_ip(End::Src), Ok(None));
        m.vxlan_mut()
            .set_ip(End::Src, "10.0.0.1".parse().unwrap())
            .set_ip(End::Dst, "fd00::2".parse().unwrap())
            .set_port(End::Src, 4789)
            .set_vni(0x00ff_fffe)
            .set_mtu(1446);
        let v = m.vxlan();
        assert_eq!(v.ip(End::Src), Ok("10.0.0.1".parse().unwrap()));
        assert_eq!(v.ip(End::Src.other()), Ok("fd00::2".parse().unwrap()));
        assert_eq!(v.port(End::Src), Ok(Some(4789)));
        assert_eq!(v.vni(), Ok(0x00ff_fffe));
        assert_eq!(v.mtu(), Ok(Some(1446)));
        assert_eq!(m.parameters["dst_ip"], "fd00::2");

        let bad = with(
            MechanismType::Vxlan,
            &[
                ("src_ip", "nope"),
                ("src_port", "0"),
                ("dst_port", "70000"),
                ("vni", "16777216"),
                ("MTU", "-1"),
                ("orig_dst_ip", "x"),
            ],
        );
        let v = bad.vxlan();
        assert_eq!(
            v.ip(End::Src).unwrap_err().to_string(),
            "parameters[src_ip]: \"nope\" is not an IP address"
        );
        assert_eq!(v.port(End::Src).unwrap_err().key(), "src_port");
        assert_eq!(
            v.port(End::Dst).unwrap_err().to_string(),
            "parameters[dst_port]: \"70000\" is not a UDP port"
        );
        assert_eq!(
            v.vni().unwrap_err().to_string(),
            "parameters[vni]: \"16777216\" is not a 24-bit VNI"
        );
        assert_eq!(v.mtu().unwrap_err().key(), "MTU");
        assert_eq!(v.orig_ip(End::Dst).unwrap_err().key(), "orig_dst_ip");
    }

    #[test]
    fn srv6_view_round_trips_and_names_bad_keys() {
        let mut m = MechanismType::Srv6.mechanism();
        let sid: Ipv6Addr = "fc00:a::1".parse().unwrap();
        m.srv6_mut()
            .set_host_ip(End::Dst, "fd97::1".parse().unwrap())
            .set_localsid(End::Dst, sid)
            .set_bsid(End::Dst, "fc00:a::2".parse().unwrap())
            .set_hw_addr(End::Dst, [2, 0, 0, 0, 0, 0xab])
            .set_mtu(1418);
        let s = m.srv6();
        assert_eq!(s.host_ip(End::Dst), Ok("fd97::1".parse().unwrap()));
        assert_eq!(s.localsid(End::Dst), Ok(sid));
        assert_eq!(s.bsid(End::Dst), Ok("fc00:a::2".parse().unwrap()));
        assert_eq!(s.hw_addr(End::Dst), Ok([2, 0, 0, 0, 0, 0xab]));
        assert_eq!(m.parameters["dst_hw_addr"], "02:00:00:00:00:ab");
        assert_eq!(s.mtu(), Ok(Some(1418)));
        assert_eq!(s.localsid(End::Src).unwrap_err().key(), "src_localsid");

        let bad = with(
            MechanismType::Srv6,
            &[
                ("src_host_ip", "10.0.0.1"),
                ("src_localsid", "zz"),
                ("src_hw_addr", "02:00:00:00:00"),
                ("dst_hw_addr", "02:00:00:00:00:00:00"),
            ],
        );
        let s = bad.srv6();
        assert_eq!(
            s.host_ip(End::Src).unwrap_err().to_string(),
            "parameters[src_host_ip]: \"10.0.0.1\" is not an IPv6 address"
        );
        assert_eq!(s.localsid(End::Src).unwrap_err().key(), "src_localsid");
        assert!(matches!(
            s.hw_addr(End::Src),
            Err(ParamError::Malformed {
                key: "src_hw_addr",
                ..
            })
        ));
        assert!(s.hw_addr(End::Dst).is_err());
        assert!(matches!(
            s.bsid(End::Src),
            Err(ParamError::Missing {
                key: "src_bsid",
                ..
            })
        ));
    }
}
