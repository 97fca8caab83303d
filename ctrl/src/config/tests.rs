use super::*;

struct FakeHost;
impl Host for FakeHost {
    fn cpus(&self) -> Vec<usize> {
        vec![0, 1, 2, 3]
    }
    fn has_interface(&self, name: &str) -> bool {
        name.starts_with("veth")
    }
}

const GOOD: &str = r#"
[dataplane]
workers = [1, 2]
poll = "busy"
[metrics]
listen = "127.0.0.1:9200"
[[port]]
name = "left"
type = "afxdp"
interface = "veth0"
[[port]]
name = "right"
type = "afxdp"
interface = "veth1"
[[xconnect]]
a = "left"
b = "right"
"#;

fn p(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(Path::new("/etc/vwire.toml"), text, &env, &FakeHost)
}

fn err(text: &str, env: &[(&str, &str)]) -> String {
    p(text, env).unwrap_err().to_string()
}

#[test]
fn a_good_file_parses() {
    let c = p(GOOD, &[]).unwrap();
    assert_eq!(c.workers, vec![1, 2]);
    assert_eq!(c.poll, PollMode::Busy);
    assert_eq!(c.metrics_listen, "127.0.0.1:9200".parse().unwrap());
    assert_eq!(c.ports.len(), 2);
    assert_eq!(c.xconnects, vec![(0, 1)]);
    assert_eq!(c.control_cpus, vec![0, 3]);
    assert_eq!(assign_workers(&c), vec![0, 0]);
}

#[test]
fn defaults_apply() {
    let c = p("", &[]).unwrap();
    assert_eq!(c.workers, vec![3]);
    assert_eq!(c.poll, PollMode::Adaptive);
    assert_eq!(c.metrics_listen, DEFAULT_METRICS_LISTEN.parse().unwrap());
    assert!(c.ports.is_empty());
}

#[test]
fn env_overrides_every_kind_of_key() {
    let c = p(
        GOOD,
        &[
            ("VWIRE_DATAPLANE_WORKERS", "3"),
            ("VWIRE_DATAPLANE_POLL", "adaptive"),
            ("NSM_PROMETHEUS_LISTEN_ON", ":8081"),
            ("NSM_LOG_LEVEL", "DEBUG"),
            ("VWIRE_PORT_1_INTERFACE", "veth9"),
            ("VWIRE_PORT_2_NAME", "third"),
            ("VWIRE_PORT_2_TYPE", "afxdp"),
            ("VWIRE_PORT_2_INTERFACE", "veth7"),
            ("VWIRE_XCONNECT_0_B", "third"),
        ],
    )
    .unwrap();
    assert_eq!(c.workers, vec![3]);
    assert_eq!(c.poll, PollMode::Adaptive);
    assert_eq!(c.metrics_listen, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(c.log_level, "debug");
    assert_eq!(
        c.ports[1].kind,
        PortKind::AfXdp {
            interface: "veth9".into()
        }
    );
    assert_eq!(c.ports[2].name, "third");
    assert_eq!(c.xconnects, vec![(0, 2)]);
}

#[test]
fn errors_name_file_key_and_problem() {
    let e = err(&GOOD.replace("veth1", "nosuch0"), &[]);
    assert_eq!(
        e,
        "/etc/vwire.toml: key `port[1].interface`: unknown interface \"nosuch0\""
    );
    let e = err(&GOOD.replace("b = \"right\"", "b = \"middle\""), &[]);
    assert_eq!(
        e,
        "/etc/vwire.toml: key `xconnect[0].b`: no port is named \"middle\""
    );
    let e = err(&GOOD.replace("name = \"right\"", "name = \"left\""), &[]);
    assert_eq!(
        e,
        "/etc/vwire.toml: key `port[1].name`: duplicate port name \"left\" (also port[0])"
    );
    let e = err(&GOOD.replace("[1, 2]", "[1, 9]"), &[]);
    assert!(
        e.starts_with("/etc/vwire.toml: key `dataplane.workers`: CPU 9 does not exist"),
        "{e}"
    );
}

#[test]
fn env_errors_name_the_variable() {
    let e = err(GOOD, &[("VWIRE_PORT_0_INTERFACE", "nosuch0")]);
    assert!(
        e.contains("key `port[0].interface` (from $VWIRE_PORT_0_INTERFACE): "),
        "{e}"
    );
    assert!(e.ends_with("unknown interface \"nosuch0\""), "{e}");
    let e = err(GOOD, &[("VWIRE_DATAPLANE_WROKERS", "1")]);
    assert!(
        e.contains("VWIRE_DATAPLANE_WROKERS") && e.contains("unknown VWIRE_* variable"),
        "{e}"
    );
    let e = err(GOOD, &[("VWIRE_PORT_7_NAME", "x")]);
    assert!(e.contains("no port entry 7"), "{e}");
}

#[test]
fn other_mistakes_are_caught() {
    for (text, needle) in [
        ("[dataplane]\nworkers = []", "needs at least one CPU"),
        (
            "[dataplane]\nworkers = [0, 1, 2, 3]",
            "leave one for the control thread",
        ),
        ("[dataplane]\nworkers = [1, 1]", "listed twice"),
        ("[dataplane]\nworkers = [-1]", "non-negative"),
        ("[dataplane]\npoll = \"lazy\"", "not a poll mode"),
        (
            "[dataplane]\nwrokers = [1]",
            "key `dataplane.wrokers`: unknown key",
        ),
        ("[metrics]\nlisten = \"nowhere\"", "not an address:port"),
        (
            "[[port]]\nname = \"a\"\ntype = \"tap\"",
            "not a supported port type",
        ),
        (
            "[[port]]\nname = \"a\"\ntype = \"afxdp\"",
            "key `port[0].interface`: is required",
        ),
        (
            "[[port]]\nname = \"a b\"\ntype = \"afxdp\"\ninterface = \"veth0\"",
            "not a valid name",
        ),
        ("[dataplane\n", "not valid TOML (line 1)"),
        ("port = 3", "must be an array of tables"),
    ] {
        let e = err(text, &[]);
        assert!(e.contains(needle), "{text:?}: {e}");
    }
    let both = format!("{GOOD}\n[[port]]\nname = \"x\"\ntype = \"afxdp\"\ninterface = \"veth0\"\n");
    assert!(err(&both, &[]).contains("already used by port[0]"));
    let self_x = GOOD.replace("b = \"right\"", "b = \"left\"");
    assert!(
        err(&self_x, &[]).contains("already cross-connected")
            || err(&self_x, &[]).contains("itself")
    );
}

#[test]
fn unconnected_ports_are_spread_over_workers() {
    let text = GOOD.replace("[[xconnect]]\na = \"left\"\nb = \"right\"\n", "");
    let c = p(&text, &[]).unwrap();
    assert_eq!(assign_workers(&c), vec![0, 1]);
}
