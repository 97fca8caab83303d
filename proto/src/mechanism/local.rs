//! Typed views over the parameters of the LOCAL mechanisms, KERNEL and MEMIF.

use super::keys;
use super::params::{Raw, RawMut};

/// The parameters of a KERNEL mechanism.
#[derive(Clone, Copy)]
pub struct KernelParams<'a>(pub(super) Raw<'a>);

impl<'a> KernelParams<'a> {
    /// The interface name, `None` when absent (the forwarder then picks one). Whether it is a
    /// valid Linux interface name is the kernel mechanism's to check
    /// (`vwire_mechanisms::kernel::validate_ifname`).
    pub fn name(&self) -> Option<&'a str> {
        self.0.get(keys::NAME)
    }

    /// The network namespace URL, if any.
    pub fn inode_url(&self) -> Option<&'a str> {
        self.0.get(keys::INODE_URL)
    }
}

/// Sets the parameters of a KERNEL mechanism.
pub struct KernelParamsMut<'a>(pub(super) RawMut<'a>);

impl KernelParamsMut<'_> {
    /// Sets `name`.
    pub fn set_name(&mut self, name: &str) -> &mut Self {
        self.0.set(keys::NAME, name);
        self
    }

    /// Sets `inodeURL`.
    pub fn set_inode_url(&mut self, url: &str) -> &mut Self {
        self.0.set(keys::INODE_URL, url);
        self
    }
}

/// The parameters of a MEMIF mechanism.
#[derive(Clone, Copy)]
pub struct MemifParams<'a>(pub(super) Raw<'a>);

impl<'a> MemifParams<'a> {
    /// The memif control socket, if any (the server side sets it).
    pub fn socketfile(&self) -> Option<&'a str> {
        self.0.get(keys::SOCKETFILE)
    }

    /// The network namespace URL in which the socket lives, if any.
    pub fn inode_url(&self) -> Option<&'a str> {
        self.0.get(keys::INODE_URL)
    }
}

/// Sets the parameters of a MEMIF mechanism.
pub struct MemifParamsMut<'a>(pub(super) RawMut<'a>);

impl MemifParamsMut<'_> {
    /// Sets `socketfile`.
    pub fn set_socketfile(&mut self, socket: &str) -> &mut Self {
        self.0.set(keys::SOCKETFILE, socket);
        self
    }

    /// Sets `inodeURL`.
    pub fn set_inode_url(&mut self, url: &str) -> &mut Self {
        self.0.set(keys::INODE_URL, url);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::with;
    use super::super::*;

    #[test]
    fn kernel_and_memif_views() {
        let mut m = MechanismType::Kernel.mechanism();
        assert_eq!(m.kernel().name(), None);
        assert_eq!(m.kernel().inode_url(), None);
        m.kernel_mut()
            .set_name("nsm-1")
            .set_inode_url("file:///proc/1/ns/net");
        assert_eq!(m.kernel().name(), Some("nsm-1"));
        assert_eq!(m.kernel().inode_url(), Some("file:///proc/1/ns/net"));
        assert_eq!(m.parameters[keys::INODE_URL], "file:///proc/1/ns/net");
        assert_eq!(
            with(MechanismType::Kernel, &[("name", "")]).kernel().name(),
            None
        );
        // An empty value is an absent one.
        let m = with(
            MechanismType::Memif,
            &[("inodeURL", ""), ("socketfile", "@s")],
        );
        assert_eq!(m.memif().inode_url(), None);
        assert_eq!(m.memif().socketfile(), Some("@s"));
        let mut m = MechanismType::Memif.mechanism();
        m.memif_mut()
            .set_socketfile("@x")
            .set_inode_url("inode://4/5");
        assert_eq!(
            (m.memif().socketfile(), m.memif().inode_url()),
            (Some("@x"), Some("inode://4/5"))
        );
    }
}
