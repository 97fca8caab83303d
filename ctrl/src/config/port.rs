//! `[[port]]`: the ports, each an AF_XDP interface or a memif; `type` says which, and so which
//! section struct holds the entry's other keys.

use std::collections::HashMap;
use std::path::PathBuf;

use toml::{Table, Value};
use vwire_mechanisms::memif::driver::MemifConfig;
use vwire_mechanisms::memif::msg::Mode;
use vwire_mechanisms::memif::port::Role;

use super::de::{section, EnvValue, Section};
use super::{in_range, ConfigError, Ctx, Host, PortConfig, PortKind};

/// The key that picks the port's section struct.
const TYPE: &str = "type";

section! {
    /// `[[port]]` with `type = "afxdp"`.
    pub(super) struct AfxdpPortSection {
        /// Unique, 1-64 of `A-Z a-z 0-9 - _ .`; cross-connects and metrics use it.
        name: String,
        /// The network interface.
        interface: String,
    }
}

section! {
    /// `[[port]]` with `type = "memif"`.
    pub(super) struct MemifPortSection {
        /// Unique, 1-64 of `A-Z a-z 0-9 - _ .`; cross-connects and metrics use it.
        name: String,
        /// The control socket's path, or `"@name"` for an abstract socket.
        socket: String,
        /// `"server"` (default) or `"client"` (re-dials every second).
        role: Option<String>,
        /// The interface id on the socket; default 0.
        id: Option<i64>,
        /// `"ethernet"` (default) or `"ip"`.
        mode: Option<String>,
        /// Queue pairs, 1-64; default 1.
        queues: Option<i64>,
        /// Descriptors per ring, a power of two from 2 to 16384; default 1024.
        ring_size: Option<i64>,
        /// Bytes per buffer, 128-65535; default 2048 (used by the client role, which allocates
        /// the shared memory).
        buffer_size: Option<i64>,
        /// At most 23 bytes; default none.
        secret: Option<String>,
        /// The network namespace an abstract socket lives in; default this process's.
        netns: Option<String>,
    }
}

/// [`Section::env_value`] of a port: `type` or a key of either port type (the port's `type`
/// decides which are valid).
pub(super) fn env_value(key: &str, raw: &str) -> Option<Result<Value, String>> {
    if key == TYPE {
        return Some(String::from_env(raw));
    }
    AfxdpPortSection::env_value(key, raw).or_else(|| MemifPortSection::env_value(key, raw))
}

/// The validated ports, and their indices by name for the cross-connects.
#[derive(Default)]
pub(super) struct Ports {
    pub(super) ports: Vec<PortConfig>,
    pub(super) by_name: HashMap<String, usize>,
    /// Interface → the port that uses it.
    interfaces: HashMap<String, usize>,
    /// (socket, netns, id, role) → the memif port that uses it.
    memifs: HashMap<(String, Option<PathBuf>, u32, Role), usize>,
}

impl Ports {
    /// Validates the `[[port]]` entries, in file order.
    pub(super) fn validate(
        ctx: &Ctx,
        host: &dyn Host,
        entries: Vec<Table>,
    ) -> Result<Ports, ConfigError> {
        let mut ports = Ports::default();
        for (i, mut entry) in entries.into_iter().enumerate() {
            let path = format!("port[{i}]");
            let kind = match entry.remove(TYPE) {
                None => return Err(ctx.err(&format!("{path}.{TYPE}"), "is required")),
                Some(v) => ctx.deserialize::<String>(&format!("{path}.{TYPE}"), v)?,
            };
            let entry = Value::Table(entry);
            let port = match kind.as_str() {
                "afxdp" => ctx
                    .deserialize::<AfxdpPortSection>(&path, entry)?
                    .validate(ctx, &path, host, &mut ports)?,
                "memif" => ctx
                    .deserialize::<MemifPortSection>(&path, entry)?
                    .validate(ctx, &path, &mut ports)?,
                other => {
                    return Err(ctx.err(
                        &format!("{path}.{TYPE}"),
                        format!(
                        "{other:?} is not a supported port type (supported: \"afxdp\", \"memif\")"
                    ),
                    ))
                }
            };
            ports.ports.push(port);
        }
        Ok(ports)
    }

    /// Checks `name` (the key `path.name`) and reserves it for the next port.
    fn add_name(&mut self, ctx: &Ctx, path: &str, name: &str) -> Result<(), ConfigError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ctx.err(
                &format!("{path}.name"),
                format!("{name:?} is not a valid name (1-64 of A-Z a-z 0-9 - _ .)"),
            ));
        }
        if let Some(j) = self.by_name.insert(name.to_string(), self.ports.len()) {
            return Err(ctx.err(
                &format!("{path}.name"),
                format!("duplicate port name {name:?} (also port[{j}])"),
            ));
        }
        Ok(())
    }
}

impl AfxdpPortSection {
    fn validate(
        self,
        ctx: &Ctx,
        path: &str,
        host: &dyn Host,
        ports: &mut Ports,
    ) -> Result<PortConfig, ConfigError> {
        ports.add_name(ctx, path, &self.name)?;
        let interface = self.interface;
        if !host.has_interface(&interface) {
            return Err(ctx.err(
                &format!("{path}.interface"),
                format!("unknown interface {interface:?}"),
            ));
        }
        if let Some(j) = ports
            .interfaces
            .insert(interface.clone(), ports.ports.len())
        {
            return Err(ctx.err(
                &format!("{path}.interface"),
                format!("interface {interface:?} is already used by port[{j}]"),
            ));
        }
        Ok(PortConfig {
            name: self.name,
            kind: PortKind::AfXdp { interface },
        })
    }
}

impl MemifPortSection {
    fn validate(self, ctx: &Ctx, path: &str, ports: &mut Ports) -> Result<PortConfig, ConfigError> {
        ports.add_name(ctx, path, &self.name)?;
        let m = self.memif(ctx, path)?;
        let key = (m.socket.clone(), m.netns.clone(), m.id, m.role);
        if let Some(j) = ports.memifs.insert(key, ports.ports.len()) {
            return Err(ctx.err(
                &format!("{path}.id"),
                format!(
                    "port[{j}] already uses id {} on socket {:?} in this role",
                    m.id, m.socket
                ),
            ));
        }
        Ok(PortConfig {
            name: self.name,
            kind: PortKind::Memif(m),
        })
    }

    /// The port's own keys, checked; the defaults are those in the field docs.
    fn memif(&self, ctx: &Ctx, path: &str) -> Result<MemifConfig, ConfigError> {
        let key = |k: &str| format!("{path}.{k}");
        let socket = self.socket.clone();
        if let Err(e) = vwire_mechanisms::memif::sock::sockaddr(&socket) {
            return Err(ctx.err(&key("socket"), e.to_string()));
        }
        let role = match self.role.as_deref().unwrap_or("server") {
            "server" | "master" => Role::Server,
            "client" | "slave" => Role::Client,
            other => {
                return Err(ctx.err(
                    &key("role"),
                    format!("{other:?} is not a role (\"server\" or \"client\")"),
                ))
            }
        };
        let mode = match self.mode.as_deref().unwrap_or("ethernet") {
            "ethernet" => Mode::Ethernet,
            "ip" => Mode::Ip,
            other => {
                return Err(ctx.err(
                    &key("mode"),
                    format!("{other:?} is not a mode (\"ethernet\" or \"ip\")"),
                ))
            }
        };
        let id = in_range(ctx, &key("id"), self.id.unwrap_or(0), 0..=u32::MAX.into())?;
        let queues = in_range(ctx, &key("queues"), self.queues.unwrap_or(1), 1..=64)?;
        let ring_size: u16 = in_range(
            ctx,
            &key("ring_size"),
            self.ring_size.unwrap_or(1024),
            2..=16384,
        )?;
        if !ring_size.is_power_of_two() {
            return Err(ctx.err(
                &key("ring_size"),
                format!("{ring_size} is not a power of two"),
            ));
        }
        let buffer_size = in_range(
            ctx,
            &key("buffer_size"),
            self.buffer_size.unwrap_or(2048),
            128..=65535,
        )?;
        let secret = self.secret.clone().unwrap_or_default();
        if secret.len() > 23 {
            return Err(ctx.err(&key("secret"), "is longer than 23 bytes"));
        }
        let netns = self.netns.as_ref().map(PathBuf::from);
        if let Some(n) = &netns {
            if !socket.starts_with('@') {
                return Err(ctx.err(
                    &key("netns"),
                    "only applies to an abstract socket (\"@name\")",
                ));
            }
            if !n.exists() {
                return Err(ctx.err(&key("netns"), format!("{} does not exist", n.display())));
            }
        }
        #[allow(clippy::cast_possible_truncation)] // a power of two up to 2^14
        let log2_ring_size = ring_size.trailing_zeros() as u8;
        Ok(MemifConfig {
            name: self.name.clone(),
            socket,
            role,
            id,
            mode,
            queues,
            log2_ring_size,
            buffer_size,
            secret,
            netns,
        })
    }
}
