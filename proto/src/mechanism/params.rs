//! The parsing and writing the typed views share, and the accessors that give a `Mechanism`'s
//! parameters as one mechanism type's view.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::{keys, KernelParams, KernelParamsMut, MemifParams, MemifParamsMut, ParamError};
use super::{Srv6Params, Srv6ParamsMut, VxlanParams, VxlanParamsMut};
use crate::connection::Mechanism;

pub(super) const AN_IP: &str = "an IP address";
pub(super) const AN_IPV6: &str = "an IPv6 address";
pub(super) const A_PORT: &str = "a UDP port";
pub(super) const A_VNI: &str = "a 24-bit VNI";
pub(super) const AN_MTU: &str = "an MTU";
pub(super) const A_MAC: &str = "a MAC address";

/// The parsing the views share, over one parameters map.
#[derive(Clone, Copy)]
pub(super) struct Raw<'a>(pub(super) &'a HashMap<String, String>);

impl<'a> Raw<'a> {
    /// The value of `key`; an empty one counts as absent.
    pub(super) fn get(self, key: &str) -> Option<&'a str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of `key` parsed by `parse`, `Ok(None)` when absent.
    pub(super) fn opt<T>(
        self,
        key: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ParamError> {
        self.get(key)
            .map(|v| {
                parse(v).ok_or_else(|| ParamError::Malformed {
                    key,
                    value: v.to_string(),
                    expected,
                })
            })
            .transpose()
    }

    /// The value of `key` parsed by `parse`; absent is [`ParamError::Missing`].
    pub(super) fn req<T>(
        self,
        key: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ParamError> {
        self.opt(key, expected, parse)?
            .ok_or(ParamError::Missing { key, expected })
    }

    pub(super) fn ip(self, key: &'static str) -> Result<IpAddr, ParamError> {
        self.req(key, AN_IP, |v| v.parse().ok())
    }

    pub(super) fn ipv6(self, key: &'static str) -> Result<Ipv6Addr, ParamError> {
        self.req(key, AN_IPV6, |v| v.parse().ok())
    }

    pub(super) fn mtu(self) -> Result<Option<u32>, ParamError> {
        self.opt(keys::MTU, AN_MTU, |v| v.parse().ok())
    }
}

/// Sets parameters in their canonical text form.
pub(super) struct RawMut<'a>(pub(super) &'a mut HashMap<String, String>);

impl RawMut<'_> {
    pub(super) fn set(&mut self, key: &str, value: impl fmt::Display) {
        self.0.insert(key.to_string(), value.to_string());
    }
}

pub(super) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().filter(|p| p.len() == 2)?;
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A MAC, displayed as `aa:bb:cc:dd:ee:ff`.
pub(super) struct Mac(pub(super) [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Mechanism {
    /// The parameters read as KERNEL's.
    pub fn kernel(&self) -> KernelParams<'_> {
        KernelParams(Raw(&self.parameters))
    }

    /// Sets KERNEL parameters.
    pub fn kernel_mut(&mut self) -> KernelParamsMut<'_> {
        KernelParamsMut(RawMut(&mut self.parameters))
    }

    /// The parameters read as MEMIF's.
    pub fn memif(&self) -> MemifParams<'_> {
        MemifParams(Raw(&self.parameters))
    }

    /// Sets MEMIF parameters.
    pub fn memif_mut(&mut self) -> MemifParamsMut<'_> {
        MemifParamsMut(RawMut(&mut self.parameters))
    }

    /// The parameters read as VXLAN's.
    pub fn vxlan(&self) -> VxlanParams<'_> {
        VxlanParams(Raw(&self.parameters))
    }

    /// Sets VXLAN parameters.
    pub fn vxlan_mut(&mut self) -> VxlanParamsMut<'_> {
        VxlanParamsMut(RawMut(&mut self.parameters))
    }

    /// The parameters read as SRV6's.
    pub fn srv6(&self) -> Srv6Params<'_> {
        Srv6Params(Raw(&self.parameters))
    }

    /// Sets SRV6 parameters.
    pub fn srv6_mut(&mut self) -> Srv6ParamsMut<'_> {
        Srv6ParamsMut(RawMut(&mut self.parameters))
    }
}

/// A mechanism of type `t` with `params`, for tests.
#[cfg(test)]
pub(super) fn with(t: super::MechanismType, params: &[(&str, &str)]) -> Mechanism {
    let mut m = t.mechanism();
    m.parameters = params
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    m
}
