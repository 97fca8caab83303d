//! A bad configuration gets a clear error naming the file, the key and the problem, and exit
//! code 2, before vwire touches any interface.

mod common;

use std::process::Command;

use common::*;

/// Runs `vwire run --config` on `text` and returns (exit code, stderr, config path).
fn run_vwire(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let path = temp_file("bad.toml", text);
    let out = Command::new(vwire_bin())
        .args(["run", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("run vwire");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

/// A config with `workers`, ports `(name, interface)` and cross-connects `(a, b)`.
fn config(workers: &str, ports: &[(&str, &str)], xconnects: &[(&str, &str)]) -> String {
    let mut t = format!("[dataplane]\nworkers = {workers}\n");
    for (name, interface) in ports {
        t += &format!(
            "[[port]]\nname = \"{name}\"\ntype = \"afxdp\"\ninterface = \"{interface}\"\n"
        );
    }
    for (a, b) in xconnects {
        t += &format!("[[xconnect]]\na = \"{a}\"\nb = \"{b}\"\n");
    }
    t
}

fn assert_config_error(text: &str, env: &[(&str, &str)], key: &str, problem: &str) {
    let (code, stderr, path) = run_vwire(text, env);
    assert_eq!(code, Some(2), "exit code for {key}: {stderr}");
    assert!(
        stderr.contains(&path),
        "error does not name the file {path}: {stderr}"
    );
    assert!(
        stderr.contains(&format!("key `{key}`")),
        "error does not name the key {key}: {stderr}"
    );
    assert!(
        stderr.contains(problem),
        "error does not say {problem:?}: {stderr}"
    );
}

#[test]
fn unknown_interface() {
    let text = config(
        "[1]",
        &[("left", "lo"), ("right", "vwnosuch0")],
        &[("left", "right")],
    );
    assert_config_error(
        &text,
        &[],
        "port[1].interface",
        "unknown interface \"vwnosuch0\"",
    );
}

#[test]
fn cross_connect_to_an_unknown_port() {
    let text = config("[1]", &[("left", "lo")], &[("left", "middle")]);
    assert_config_error(&text, &[], "xconnect[0].b", "no port is named \"middle\"");
}

#[test]
fn duplicate_port_names() {
    let text = config("[1]", &[("left", "lo"), ("left", "lo")], &[]);
    assert_config_error(&text, &[], "port[1].name", "duplicate port name \"left\"");
}

#[test]
fn a_worker_cpu_that_does_not_exist() {
    let text = config("[4095]", &[("left", "lo")], &[]);
    assert_config_error(&text, &[], "dataplane.workers", "CPU 4095 does not exist");
}

#[test]
fn an_environment_override_is_named_too() {
    let text = config("[1]", &[("left", "lo")], &[]);
    let env = [("VWIRE_PORT_0_INTERFACE", "vwnosuch1")];
    let (code, stderr, _) = run_vwire(&text, &env);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("key `port[0].interface` (from $VWIRE_PORT_0_INTERFACE): unknown interface \"vwnosuch1\""),
        "{stderr}"
    );
}

#[test]
fn a_missing_file() {
    let out = Command::new(vwire_bin())
        .args(["run", "--config", "/nonexistent/vwire.toml"])
        .output()
        .expect("run vwire");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/vwire.toml") && stderr.contains("cannot read the file"),
        "{stderr}"
    );
}
