//! Point-to-point IPv4 address management: each connection gets one pair of adjacent addresses,
//! the even (first) one for the NSE (dst) and the odd (second) one for the NSC (src).
//!
//! The pool comes from a CIDR such as `172.16.1.100/31`. It starts at the given address (rounded
//! down to an even one) and ends at the end of the CIDR's network; a `/31` or `/32`, the form the
//! NSM examples use, holds a single pair, so for those the pool runs on to the end of the
//! enclosing `/24` (`172.16.1.100/31` → .100/.101, .102/.103, …, .254/.255). The lowest free
//! pair is handed out first, so a freed pair is reused.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    /// The CIDR is not `a.b.c.d/len` with len ≤ 32.
    #[error("CIDR {0:?}: expected an IPv4 prefix a.b.c.d/len")]
    BadCidr(String),
    /// Every pair is in use or excluded.
    #[error("the address pool {0} is exhausted")]
    Exhausted(String),
}

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The address as written.
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub len: u8,
}

impl Prefix {
    /// Parses `a.b.c.d/len` (a bare address is a `/32`).
    pub fn parse(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::BadCidr(s.to_string());
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let len: u8 = l.trim().parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        Ok(Self { addr, len })
    }

    fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == (u32::from(self.addr) & self.mask())
    }
}

/// The addresses of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The NSE's (dst) address: the first of the pair.
    pub nse: Ipv4Addr,
    /// The NSC's (src) address: the second of the pair.
    pub nsc: Ipv4Addr,
}

/// A pool of point-to-point pairs, keyed by connection id.
#[derive(Debug)]
pub struct P2pIpam {
    cidr: String,
    /// First address of the first pair.
    start: u32,
    /// Number of pairs.
    pairs: u32,
    by_id: HashMap<String, u32>,
}

impl P2pIpam {
    /// A pool from `cidr` (see the module docs for its extent).
    pub fn new(cidr: &str) -> Result<Self, IpamError> {
        let p = Prefix::parse(cidr)?;
        let addr = u32::from(p.addr);
        let start = addr & !1;
        let end = if p.len >= 31 {
            addr | 0xff
        } else {
            (addr & p.mask()) | !p.mask()
        };
        Ok(Self {
            cidr: cidr.to_string(),
            start,
            pairs: (end - start) / 2 + 1,
            by_id: HashMap::new(),
        })
    }

    fn pair(&self, n: u32) -> Pair {
        let a = self.start + 2 * n;
        Pair {
            nse: Ipv4Addr::from(a),
            nsc: Ipv4Addr::from(a + 1),
        }
    }

    /// The pair of connection `id`: the one it already has, or the lowest free pair none of whose
    /// addresses is in `excluded` (strings that are not IPv4 prefixes are ignored).
    pub fn allocate(&mut self, id: &str, excluded: &[String]) -> Result<Pair, IpamError> {
        if let Some(&n) = self.by_id.get(id) {
            return Ok(self.pair(n));
        }
        let excluded: Vec<Prefix> = excluded
            .iter()
            .filter_map(|s| Prefix::parse(s).ok())
            .collect();
        let used: std::collections::HashSet<u32> = self.by_id.values().copied().collect();
        let n = (0..self.pairs)
            .find(|n| {
                let p = self.pair(*n);
                !used.contains(n)
                    && !excluded
                        .iter()
                        .any(|x| x.contains(p.nse) || x.contains(p.nsc))
            })
            .ok_or_else(|| IpamError::Exhausted(self.cidr.clone()))?;
        self.by_id.insert(id.to_string(), n);
        Ok(self.pair(n))
    }

    /// The pair `id` holds, if any.
    pub fn get(&self, id: &str) -> Option<Pair> {
        self.by_id.get(id).map(|&n| self.pair(n))
    }

    /// Frees the pair of `id`; returns it if there was one.
    pub fn free(&mut self, id: &str) -> Option<Pair> {
        self.by_id.remove(id).map(|n| self.pair(n))
    }

    /// How many pairs are in use.
    pub fn in_use(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn pairs_are_allocated_in_order_kept_and_reused() {
        let mut p = P2pIpam::new("172.16.1.100/31").unwrap();
        let a = p.allocate("a", &[]).unwrap();
        assert_eq!((a.nse, a.nsc), (ip("172.16.1.100"), ip("172.16.1.101")));
        assert_eq!(p.allocate("a", &[]).unwrap(), a);
        let b = p.allocate("b", &[]).unwrap();
        assert_eq!((b.nse, b.nsc), (ip("172.16.1.102"), ip("172.16.1.103")));
        assert_eq!(p.free("a"), Some(a));
        assert_eq!(p.free("a"), None);
        assert_eq!(p.allocate("c", &[]).unwrap(), a);
        assert_eq!(p.in_use(), 2);
    }

    #[test]
    fn extent_exclusions_and_exhaustion() {
        let mut p = P2pIpam::new("10.0.0.4/30").unwrap();
        assert_eq!(p.allocate("a", &[]).unwrap().nse, ip("10.0.0.4"));
        assert_eq!(p.allocate("b", &[]).unwrap().nse, ip("10.0.0.6"));
        assert!(matches!(p.allocate("c", &[]), Err(IpamError::Exhausted(_))));

        let mut p = P2pIpam::new("172.16.1.254/31").unwrap();
        p.allocate("a", &[]).unwrap();
        assert!(p.allocate("b", &[]).is_err());

        let mut p = P2pIpam::new("172.16.1.100/31").unwrap();
        let x = p
            .allocate("a", &["172.16.1.101/32".into(), "fd00::/8".into()])
            .unwrap();
        assert_eq!(x.nse, ip("172.16.1.102"));

        for bad in ["172.16.1.100/33", "x/24", "fd00::1/64", ""] {
            assert!(P2pIpam::new(bad).is_err(), "{bad}");
        }
    }
}
