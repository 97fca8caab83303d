//! The environment overlay: variables set keys of the TOML value before it is deserialised.
//!
//! - `NSM_*` where forwarder-vpp has a name for the key ([`NSM_ENV`]);
//! - `VWIRE_<SECTION>_<KEY>` otherwise: `VWIRE_DATAPLANE_WORKERS=1,2`, `VWIRE_DATAPLANE_POLL=busy`;
//! - `VWIRE_<ARRAY>_<i>_<KEY>` for an entry of an array of tables, by position:
//!   `VWIRE_PORT_0_INTERFACE=eth1`, `VWIRE_XCONNECT_0_B=right`; an index one past the end adds
//!   an entry.
//!
//! Which keys exist and what type their values have comes from the section structs
//! ([`Section::env_value`]); a value is typed here, so a bad one is an error naming its variable.
//! An unknown `VWIRE_*` variable is an error, not silently ignored. An `NSM_*` variable not in
//! [`NSM_ENV`] is one of forwarder-vpp's that vwire has no use for (a pod spec carries them
//! over): it is not an error, and [`ignored`] lists it for a warning.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::de::{EnvValueFn, Section};
use super::{ConfigError, Ctx};
use super::{
    DataplaneSection, EndpointSection, LogSection, MetricsSection, NsmSection, Srv6Section,
    XconnectSection,
};

/// forwarder-vpp's names for keys vwire shares with it: (variable, section, key).
pub(super) const NSM_ENV: &[(&str, &str, &str)] = &[
    ("NSM_PROMETHEUS_LISTEN_ON", "metrics", "listen"),
    ("NSM_LOG_LEVEL", "log", "level"),
    ("NSM_NAME", "nsm", "name"),
    ("NSM_LISTEN_ON", "nsm", "listen_on"),
    ("NSM_TUNNEL_IP", "nsm", "tunnel_ip"),
    ("NSM_VXLAN_PORT", "nsm", "vxlan_port"),
    ("NSM_MECHANISM_PRIORITY", "nsm", "mechanism_priority"),
    ("NSM_CONNECT_TO", "nsm", "connect_to"),
    ("NSM_NSNAME", "nsm", "nsname"),
    ("NSM_LABELS", "nsm", "labels"),
    ("NSM_DIAL_TIMEOUT", "nsm", "dial_timeout"),
    ("NSM_MAX_TOKEN_LIFETIME", "nsm", "max_token_lifetime"),
    ("NSM_INSECURE", "nsm", "insecure"),
    ("SPIFFE_ENDPOINT_SOCKET", "nsm", "spiffe_endpoint_socket"),
    ("NSM_AUTHORIZE_POLICIES", "nsm", "authorize_policies"),
    ("NSM_MONITOR_POLICIES", "nsm", "monitor_policies"),
    (
        "NSM_OPEN_TELEMETRY_ENDPOINT",
        "nsm",
        "open_telemetry_endpoint",
    ),
];

/// The `NSM_*` variables of `env` that are not in [`NSM_ENV`], sorted.
pub(super) fn ignored(env: &BTreeMap<String, String>) -> Vec<String> {
    env.keys()
        .filter(|k| k.starts_with("NSM_") && !NSM_ENV.iter().any(|(v, _, _)| v == k))
        .cloned()
        .collect()
}

/// The tables, by their name in the file (the fields of `ConfigFile`).
const SECTIONS: &[(&str, EnvValueFn)] = &[
    ("dataplane", DataplaneSection::env_value),
    ("metrics", MetricsSection::env_value),
    ("log", LogSection::env_value),
    ("nsm", NsmSection::env_value),
    ("srv6", Srv6Section::env_value),
];

/// The arrays of tables, by their name in the file.
const ARRAYS: &[(&str, EnvValueFn)] = &[
    ("port", super::port::env_value),
    ("xconnect", XconnectSection::env_value),
    ("endpoint", EndpointSection::env_value),
];

/// Sets the keys `env` names in `root`, and records in `ctx` which variable set which key.
pub(super) fn overlay(
    ctx: &mut Ctx,
    root: &mut Table,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (var, section, key) in NSM_ENV {
        if let Some(raw) = env.get(*var) {
            // Cannot fail: NSM_ENV is a constant naming sections and keys that exist, which the
            // unit test `every_nsm_variable_names_a_key` checks for every entry.
            let env_value = find(SECTIONS, section).expect("NSM_ENV names a section");
            let value = env_value(key, raw).expect("NSM_ENV names a key of the section");
            set_key(ctx, root, var, section, key, value)?;
        }
    }
    for (var, raw) in env.iter().filter(|(k, _)| k.starts_with("VWIRE_")) {
        let rest = var["VWIRE_".len()..].to_ascii_lowercase();
        let unknown = || ConfigError::UnknownVariable {
            file: ctx.file.to_path_buf(),
            var: var.clone(),
        };
        let (section, tail) = rest.split_once('_').ok_or_else(unknown)?;
        if let Some(env_value) = find(SECTIONS, section) {
            let value = env_value(tail, raw).ok_or_else(unknown)?;
            set_key(ctx, root, var, section, tail, value)?;
        } else if let Some(env_value) = find(ARRAYS, section) {
            let (idx, key) = tail.split_once('_').ok_or_else(unknown)?;
            let idx: usize = idx.parse().map_err(|_| unknown())?;
            let value = env_value(key, raw).ok_or_else(unknown)?;
            set_entry_key(ctx, root, var, (section, idx, key), value)?;
        } else {
            return Err(unknown());
        }
    }
    Ok(())
}

fn find(table: &[(&str, EnvValueFn)], name: &str) -> Option<EnvValueFn> {
    table.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Sets `section.key` to `value` (typed, or what is wrong with it), set by `var`.
fn set_key(
    ctx: &mut Ctx,
    root: &mut Table,
    var: &str,
    section: &str,
    key: &str,
    value: Result<Value, String>,
) -> Result<(), ConfigError> {
    let path = format!("{section}.{key}");
    ctx.from_env.insert(path.clone(), var.to_string());
    let value = value.map_err(|problem| ctx.err(&path, problem))?;
    root.entry(section.to_string())
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| ctx.err(section, "must be a table"))?
        .insert(key.to_string(), value);
    Ok(())
}

/// Sets `key` of entry `idx` of the array of tables `array`, set by `var`.
fn set_entry_key(
    ctx: &mut Ctx,
    root: &mut Table,
    var: &str,
    (array, idx, key): (&str, usize, &str),
    value: Result<Value, String>,
) -> Result<(), ConfigError> {
    let path = format!("{array}[{idx}].{key}");
    ctx.from_env.insert(path.clone(), var.to_string());
    let entries = root
        .entry(array.to_string())
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| ctx.err(array, "must be an array of tables ([[...]])"))?;
    if idx == entries.len() {
        entries.push(Value::Table(Table::new()));
    }
    let entry = entries
        .get_mut(idx)
        .and_then(Value::as_table_mut)
        .ok_or_else(|| {
            ctx.err(
                &path,
                format!("there is no {array} entry {idx} to override, and it is not the next one"),
            )
        })?;
    let value = value.map_err(|problem| ctx.err(&path, problem))?;
    entry.insert(key.to_string(), value);
    Ok(())
}
