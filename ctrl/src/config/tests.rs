use super::*;
use std::time::Duration;

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

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

#[test]
fn an_unknown_key_is_named_in_every_section() {
    let port = "[[port]]\nname = \"p\"\ntype = \"afxdp\"\ninterface = \"veth0\"\n";
    let memif = "[[port]]\nname = \"m\"\ntype = \"memif\"\nsocket = \"@m\"\n";
    for (text, key) in [
        ("colour = 1".to_string(), "colour"),
        ("[dataplane]\ncolour = 1".into(), "dataplane.colour"),
        ("[metrics]\ncolour = 1".into(), "metrics.colour"),
        ("[log]\ncolour = 1".into(), "log.colour"),
        ("[nsm]\ncolour = 1".into(), "nsm.colour"),
        ("[srv6]\ncolour = 1".into(), "srv6.colour"),
        (format!("{port}colour = 1"), "port[0].colour"),
        (format!("{port}{memif}colour = 1"), "port[1].colour"),
        (format!("{port}socket = \"@m\""), "port[0].socket"),
        (format!("{memif}interface = \"veth0\""), "port[0].interface"),
        (
            "[[xconnect]]\na = \"x\"\nb = \"y\"\ncolour = 1".into(),
            "xconnect[0].colour",
        ),
        (
            "[[endpoint]]\nname = \"e\"\nurl = \"unix:///e\"\ncolour = 1".into(),
            "endpoint[0].colour",
        ),
    ] {
        let e = err(&text, &[]);
        assert!(
            e.starts_with(&format!(
                "/etc/vwire.toml: key `{key}`: unknown key (expected one of: "
            )),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    for (text, needle) in [
        (
            "[nsm]\nvxlan_port = \"4789\"",
            "key `nsm.vxlan_port`: must be an integer, not string",
        ),
        (
            "[dataplane]\nworkers = [1, \"2\"]",
            "key `dataplane.workers[1]`: must be an integer, not string",
        ),
        (
            "[log]\nlevel = 3",
            "key `log.level`: must be a string, not integer",
        ),
        (
            "[[xconnect]]\na = 1\nb = \"y\"",
            "key `xconnect[0].a`: must be a string",
        ),
        (
            "[[xconnect]]\na = \"x\"",
            "key `xconnect[0].b`: is required",
        ),
        (
            "[[endpoint]]\nurl = \"unix:///e\"",
            "key `endpoint[0].name`: is required",
        ),
        (
            "[[port]]\nname = \"m\"\ntype = \"memif\"\nsocket = \"@m\"\nqueues = \"2\"",
            "key `port[0].queues`: must be an integer, not string",
        ),
        ("[[port]]\nname = \"m\"", "key `port[0].type`: is required"),
        (
            "[[port]]\nname = \"m\"\ntype = 1",
            "key `port[0].type`: must be a string",
        ),
        ("port = [1]", "key `port[0]`: must be a table"),
        ("nsm = 1", "key `nsm`: must be a table"),
    ] {
        let e = err(text, &[]);
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn env_overlay_sets_keys_of_array_entries() {
    let text = format!(
        "{GOOD}[[port]]\nname = \"m\"\ntype = \"memif\"\nsocket = \"@m\"\n\
         [[endpoint]]\nname = \"e\"\nurl = \"unix:///e\"\n"
    );
    let c = p(
        &text,
        &[
            ("VWIRE_PORT_2_QUEUES", "4"),
            ("VWIRE_PORT_2_RING_SIZE", "256"),
            ("VWIRE_PORT_2_ROLE", "client"),
            ("VWIRE_ENDPOINT_0_SERVICE", "icmp-responder"),
            ("VWIRE_ENDPOINT_1_NAME", "f"),
            ("VWIRE_ENDPOINT_1_URL", "tcp://127.0.0.1:5002"),
        ],
    )
    .unwrap();
    let PortKind::Memif(m) = &c.ports[2].kind else {
        panic!("port 2 is a memif: {:?}", c.ports[2]);
    };
    assert_eq!(
        (m.queues, m.log2_ring_size, m.role),
        (4, 8, vwire_mechanisms::memif::port::Role::Client)
    );
    assert_eq!(c.endpoints[0].service.as_deref(), Some("icmp-responder"));
    assert_eq!(c.endpoints[1].name, "f");
    // A validation error in an overlaid entry names the variable.
    let e = err(&text, &[("VWIRE_PORT_2_RING_SIZE", "1000")]);
    assert_eq!(
        e,
        "/etc/vwire.toml: key `port[2].ring_size` (from $VWIRE_PORT_2_RING_SIZE): \
         1000 is not a power of two"
    );
}

#[test]
fn a_badly_typed_env_value_names_the_variable() {
    for (var, value, expected) in [
        (
            "NSM_VXLAN_PORT",
            "x",
            "key `nsm.vxlan_port` (from $NSM_VXLAN_PORT): \"x\" is not an integer",
        ),
        (
            "VWIRE_DATAPLANE_WORKERS",
            "1,a",
            "key `dataplane.workers` (from $VWIRE_DATAPLANE_WORKERS): \"a\" is not an integer",
        ),
        (
            "VWIRE_PORT_0_ID",
            "zero",
            "key `port[0].id` (from $VWIRE_PORT_0_ID): \"zero\" is not an integer",
        ),
    ] {
        let e = err(GOOD, &[(var, value)]);
        assert!(e.ends_with(expected), "{var}={value}: {e}");
    }
    let c = p(GOOD, &[("VWIRE_DATAPLANE_WORKERS", "[1, 3]")]).unwrap();
    assert_eq!(c.workers, vec![1, 3]);
}

#[test]
fn every_nsm_variable_names_a_key() {
    let env = [
        ("NSM_PROMETHEUS_LISTEN_ON", ":9300"),
        ("NSM_LOG_LEVEL", "warn"),
        ("NSM_NAME", "fwd"),
        ("NSM_LISTEN_ON", "tcp://127.0.0.1:5001"),
        ("NSM_TUNNEL_IP", "none"),
        ("NSM_VXLAN_PORT", "4790"),
        ("NSM_MECHANISM_PRIORITY", "srv6,vxlan"),
        (
            "NSM_CONNECT_TO",
            "unix:///var/lib/networkservicemesh/nsm.io.sock",
        ),
        ("NSM_NSNAME", "fwd-svc"),
        ("NSM_LABELS", "p2p:true, zone:a:b"),
        ("NSM_DIAL_TIMEOUT", "2s"),
        ("NSM_MAX_TOKEN_LIFETIME", "1m30s"),
        ("NSM_OPEN_TELEMETRY_ENDPOINT", "otel:4317"),
        ("NSM_INSECURE", "false"),
        (
            "SPIFFE_ENDPOINT_SOCKET",
            "unix:///run/spire/sockets/agent.sock",
        ),
        ("NSM_AUTHORIZE_POLICIES", "/"),
        ("NSM_MONITOR_POLICIES", "/, /proc"),
    ];
    let c = p(GOOD, &env).unwrap();
    assert_eq!(
        c.security,
        SecurityConfig::Spiffe {
            endpoint: "unix:///run/spire/sockets/agent.sock".into(),
            authorize_policies: vec!["/".into()],
            monitor_policies: vec!["/".into(), "/proc".into()],
        }
    );
    let r = &c.registration;
    assert_eq!(
        r.connect_to,
        Some(crate::transport::Url::Unix(
            "/var/lib/networkservicemesh/nsm.io.sock".into()
        ))
    );
    assert_eq!(r.service_name, "fwd-svc");
    assert_eq!(r.labels, labels(&[("p2p", "true"), ("zone", "a:b")]));
    assert_eq!(r.dial_timeout, Duration::from_secs(2));
    assert_eq!(r.max_token_lifetime, Duration::from_secs(90));
    assert_eq!(r.open_telemetry_endpoint, "otel:4317");
    assert!(c.ignored_variables.is_empty(), "{:?}", c.ignored_variables);
    for (var, _, _) in env::NSM_ENV {
        assert!(
            env.iter().any(|(v, _)| v == var),
            "{var} is not checked here"
        );
    }
    assert_eq!(c.metrics_listen, "0.0.0.0:9300".parse().unwrap());
    assert_eq!(c.log_level, "warn");
    assert_eq!(c.nsm_name, "fwd");
    assert!(c.nsm_listen_on.is_some());
    assert!(c.remote.off);
    assert_eq!(c.remote.vxlan_port, 4790);
    assert_eq!(c.remote.priority, vec!["SRV6", "VXLAN"]);
}

#[test]
fn registration_defaults_are_forwarder_vpps_and_off_with_a_file() {
    let c = p(GOOD, &[]).unwrap();
    let r = &c.registration;
    assert_eq!(r.connect_to, None);
    assert_eq!(c.nsm_listen_on, None);
    assert_eq!(c.nsm_name, "forwarder");
    assert_eq!(r.service_name, "forwarder");
    assert_eq!(r.labels, labels(&[("p2p", "true")]));
    assert_eq!(r.dial_timeout, Duration::from_millis(750));
    assert_eq!(r.max_token_lifetime, Duration::from_secs(600));
    assert_eq!(
        r.open_telemetry_endpoint,
        "otel-collector.observability.svc.cluster.local:4317"
    );
    assert_eq!(c.remote.vxlan_port, 4789);
}

#[test]
fn the_file_sets_the_registration_keys_too() {
    let text = "[nsm]\nconnect_to = \"tcp://nsmgr:5001\"\nnsname = \"fw\"\nlabels = \"a:1,b:2\"\n\
                dial_timeout = \"100ms\"\nmax_token_lifetime = \"24h\"\nopen_telemetry_endpoint = \"o:1\"\n\
                insecure = true\n";
    let c = p(text, &[]).unwrap();
    assert_eq!(c.security, SecurityConfig::Insecure);
    let r = c.registration;
    assert_eq!(
        r.connect_to,
        Some(crate::transport::Url::Tcp("nsmgr:5001".into()))
    );
    assert_eq!(r.service_name, "fw");
    assert_eq!(r.labels, labels(&[("a", "1"), ("b", "2")]));
    assert_eq!(r.dial_timeout, Duration::from_millis(100));
    assert_eq!(r.max_token_lifetime, Duration::from_secs(86_400));
    assert_eq!(r.open_telemetry_endpoint, "o:1");
}

#[test]
fn a_run_without_a_file_starts_from_forwarder_vpps_sockets() {
    let spire = (
        "SPIFFE_ENDPOINT_SOCKET",
        "unix:///run/spire/sockets/agent.sock",
    );
    let env: BTreeMap<String, String> = [spire]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let c = from_env(&env, &FakeHost).unwrap();
    assert_eq!(
        c.nsm_listen_on,
        Some(crate::transport::Url::Unix("/listen.on.socket".into()))
    );
    assert_eq!(
        c.registration.connect_to,
        Some(crate::transport::Url::Unix("/connect.to.socket".into()))
    );
    let env: BTreeMap<String, String> = [
        ("NSM_LISTEN_ON", "unix:///listen.on.sock"),
        ("NSM_CONNECT_TO", ""),
        spire,
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let c = from_env(&env, &FakeHost).unwrap();
    assert_eq!(
        c.nsm_listen_on,
        Some(crate::transport::Url::Unix("/listen.on.sock".into()))
    );
    assert_eq!(
        c.registration.connect_to, None,
        "empty turns registration off"
    );
    let env: BTreeMap<String, String> = [("NSM_LABELS", "p2p")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let e = from_env(&env, &FakeHost).unwrap_err().to_string();
    assert!(
        e.starts_with("(no config file): key `nsm.labels` (from $NSM_LABELS): "),
        "{e}"
    );
}

#[test]
fn the_nsm_api_needs_spiffe_or_the_insecure_opt_out() {
    let env = BTreeMap::new();
    let e = from_env(&env, &FakeHost).unwrap_err().to_string();
    assert!(
        e.starts_with("(no config file): key `nsm.spiffe_endpoint_socket`: must be set"),
        "{e}"
    );
    assert!(e.contains("NSM_INSECURE"), "{e}");
    let insecure: BTreeMap<String, String> =
        [("NSM_INSECURE".to_string(), "true".to_string())].into();
    assert_eq!(
        from_env(&insecure, &FakeHost).unwrap().security,
        SecurityConfig::Insecure
    );
    // Without the NSM API, nothing needs securing.
    assert_eq!(p(GOOD, &[]).unwrap().security, SecurityConfig::Insecure);
    let e = err(
        "[nsm]\nlisten_on = \"unix:///x.sock\"\nspiffe_endpoint_socket = \"/run/agent.sock\"",
        &[],
    );
    assert!(
        e.contains("key `nsm.spiffe_endpoint_socket`: \"/run/agent.sock\": expected unix:///path"),
        "{e}"
    );
    let e = err(
        "[nsm]\nlisten_on = \"unix:///x.sock\"",
        &[
            ("SPIFFE_ENDPOINT_SOCKET", "unix:///a.sock"),
            ("NSM_AUTHORIZE_POLICIES", "/nonexistent/p.rego"),
        ],
    );
    assert!(
        e.contains("key `nsm.authorize_policies` (from $NSM_AUTHORIZE_POLICIES): \"/nonexistent/p.rego\" does not exist"),
        "{e}"
    );
}

#[test]
fn bad_registration_values_name_their_variable() {
    for (var, value, expected) in [
        (
            "NSM_LABELS",
            "p2p",
            "key `nsm.labels` (from $NSM_LABELS): \"p2p\" is not key:value (labels are written k1:v1,k2:v2)",
        ),
        (
            "NSM_LABELS",
            "a:1,:2",
            "key `nsm.labels` (from $NSM_LABELS): \":2\" has an empty key",
        ),
        (
            "NSM_LABELS",
            "a:1,a:2",
            "key `nsm.labels` (from $NSM_LABELS): label \"a\" is given twice",
        ),
        (
            "NSM_DIAL_TIMEOUT",
            "750",
            "key `nsm.dial_timeout` (from $NSM_DIAL_TIMEOUT): \"750\" is not a duration",
        ),
        (
            "NSM_DIAL_TIMEOUT",
            "0s",
            "key `nsm.dial_timeout` (from $NSM_DIAL_TIMEOUT): must be more than 0",
        ),
        (
            "NSM_MAX_TOKEN_LIFETIME",
            "10 minutes",
            "key `nsm.max_token_lifetime` (from $NSM_MAX_TOKEN_LIFETIME): \"10 minutes\" is not a duration",
        ),
        (
            "NSM_CONNECT_TO",
            "/var/lib/nsm.sock",
            "key `nsm.connect_to` (from $NSM_CONNECT_TO): listen URL \"/var/lib/nsm.sock\"",
        ),
        ("NSM_NSNAME", "", "key `nsm.nsname` (from $NSM_NSNAME): must not be empty"),
        (
            "NSM_VXLAN_PORT",
            "65536",
            "key `nsm.vxlan_port` (from $NSM_VXLAN_PORT): 65536 is out of range (0 to 65535)",
        ),
    ] {
        let e = err(GOOD, &[(var, value)]);
        assert!(e.contains(expected), "{var}={value}: {e}");
    }
    assert!(p(GOOD, &[("NSM_LABELS", "")])
        .unwrap()
        .registration
        .labels
        .is_empty());
}

#[test]
fn vxlan_port_0_means_4789() {
    let c = p(GOOD, &[("NSM_VXLAN_PORT", "0")]).unwrap();
    assert_eq!(c.remote.vxlan_port, 4789);
    let c = p("[nsm]\nvxlan_port = 0", &[]).unwrap();
    assert_eq!(c.remote.vxlan_port, 4789);
}

#[test]
fn unknown_nsm_variables_are_listed_for_one_warning() {
    let c = p(
        GOOD,
        &[
            ("NSM_VPP_INIT", "AF_XDP"),
            ("NSM_SRIOV_CONFIG_FILE", "/etc/sriov.yaml"),
            ("NSM_NAME", "fwd"),
            ("NSM_REGISTRY_CLIENT_POLICIES", ""),
            ("NSMX", "not ours"),
            ("PATH", "/bin"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.ignored_variables,
        vec![
            "NSM_REGISTRY_CLIENT_POLICIES",
            "NSM_SRIOV_CONFIG_FILE",
            "NSM_VPP_INIT"
        ]
    );
    assert_eq!(
        c.ignored_variables_warning().unwrap(),
        "ignoring NSM_* variables vwire does not use: NSM_REGISTRY_CLIENT_POLICIES, NSM_SRIOV_CONFIG_FILE, NSM_VPP_INIT"
    );
    assert_eq!(p(GOOD, &[]).unwrap().ignored_variables_warning(), None);
}

/// A host with the CPUs of a Guaranteed pod's cpuset (not starting at 0).
struct PodHost;
impl Host for PodHost {
    fn cpus(&self) -> Vec<usize> {
        vec![7, 5, 6]
    }
    fn has_interface(&self, _: &str) -> bool {
        false
    }
}

#[test]
fn auto_workers_take_every_cpu_of_the_cpuset_but_one() {
    let env = BTreeMap::new();
    let path = Path::new("/etc/vwire.toml");
    let c = parse(path, "[dataplane]\nworkers = \"auto\"\n", &env, &PodHost).unwrap();
    assert_eq!(c.workers, vec![6, 7]);
    assert_eq!(c.control_cpus, vec![5]);
    let env: BTreeMap<String, String> =
        [("VWIRE_DATAPLANE_WORKERS".to_string(), "auto".to_string())].into();
    let c = parse(path, "", &env, &PodHost).unwrap();
    assert_eq!(c.workers, vec![6, 7]);
    // Explicit lists still work, and a CPU outside the cpuset is refused.
    assert_eq!(
        p("[dataplane]\nworkers = [3]", &[]).unwrap().workers,
        vec![3]
    );
    let e = parse(
        path,
        "[dataplane]\nworkers = [1]\n",
        &BTreeMap::new(),
        &PodHost,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("CPU 1 does not exist or is not available"),
        "{e}"
    );
    // One CPU: nothing is left for a worker.
    struct One;
    impl Host for One {
        fn cpus(&self) -> Vec<usize> {
            vec![4]
        }
        fn has_interface(&self, _: &str) -> bool {
            false
        }
    }
    let e = parse(
        path,
        "[dataplane]\nworkers = \"auto\"\n",
        &BTreeMap::new(),
        &One,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs at least one CPU"), "{e}");
    let e = err("[dataplane]\nworkers = \"all\"", &[]);
    assert!(e.contains("key `dataplane.workers`"), "{e}");
    assert!(e.contains("\"auto\""), "{e}");
}

#[test]
fn the_log_format_is_text_by_default_and_json_on_request() {
    assert_eq!(p("", &[]).unwrap().log_format, LogFormat::Text);
    assert_eq!(
        p("[log]\nformat = \"json\"", &[]).unwrap().log_format,
        LogFormat::Json
    );
    assert_eq!(
        p("", &[("VWIRE_LOG_FORMAT", "JSON")]).unwrap().log_format,
        LogFormat::Json
    );
    let e = err("", &[("VWIRE_LOG_FORMAT", "xml")]);
    assert!(
        e.contains("log.format") && e.contains("VWIRE_LOG_FORMAT") && e.contains("text or json"),
        "{e}"
    );
}

#[test]
fn spans_are_exported_when_telemetry_is_on_or_the_endpoint_is_set() {
    // The default collector: only with TELEMETRY=true, as in the sdk.
    assert_eq!(p("", &[]).unwrap().otlp_endpoint, None);
    assert_eq!(
        p("", &[("TELEMETRY", "true")])
            .unwrap()
            .otlp_endpoint
            .as_deref(),
        Some("http://otel-collector.observability.svc.cluster.local:4317")
    );
    // A collector of one's own: exported without TELEMETRY.
    assert_eq!(
        p("", &[("NSM_OPEN_TELEMETRY_ENDPOINT", "10.0.0.1:4317")])
            .unwrap()
            .otlp_endpoint
            .as_deref(),
        Some("http://10.0.0.1:4317")
    );
    assert_eq!(
        p("[nsm]\nopen_telemetry_endpoint = \"https://c:4317\"", &[])
            .unwrap()
            .otlp_endpoint
            .as_deref(),
        Some("https://c:4317")
    );
    // Empty: never, whatever TELEMETRY says.
    assert_eq!(
        p(
            "",
            &[("NSM_OPEN_TELEMETRY_ENDPOINT", ""), ("TELEMETRY", "true")]
        )
        .unwrap()
        .otlp_endpoint,
        None
    );
    assert_eq!(
        p("", &[("TELEMETRY", "false")]).unwrap().otlp_endpoint,
        None
    );
}

#[test]
fn connection_state_and_frames_have_defaults_and_checks() {
    let c = p("", &[]).unwrap();
    assert_eq!(c.state_dir, Some("/run/vwire/state".into()));
    assert_eq!(c.connection_frames, 16384);
    let c = p(
        "[nsm]\nstate_dir = \"\"\n[dataplane]\nconnection_frames = 2048",
        &[],
    )
    .unwrap();
    assert_eq!(c.state_dir, None);
    assert_eq!(c.connection_frames, 2048);
    let c = p(
        "",
        &[
            ("VWIRE_NSM_STATE_DIR", "/var/lib/vwire"),
            ("VWIRE_DATAPLANE_CONNECTION_FRAMES", "65536"),
        ],
    )
    .unwrap();
    assert_eq!(c.state_dir, Some("/var/lib/vwire".into()));
    assert_eq!(c.connection_frames, 65536);
    let e = err("[nsm]\nstate_dir = \"run/vwire\"", &[]);
    assert!(
        e.contains("nsm.state_dir") && e.contains("not an absolute path"),
        "{e}"
    );
    let e = err("[dataplane]\nconnection_frames = 10", &[]);
    assert!(
        e.contains("dataplane.connection_frames") && e.contains("out of range"),
        "{e}"
    );
}

#[test]
fn kernel_xconnect_defaults_to_tcx_and_is_checked() {
    assert_eq!(p("", &[]).unwrap().kernel_xconnect, KernelXconnect::Tcx);
    let c = p("[nsm]\nkernel_xconnect = \"afxdp\"", &[]).unwrap();
    assert_eq!(c.kernel_xconnect, KernelXconnect::Afxdp);
    let c = p("", &[("VWIRE_NSM_KERNEL_XCONNECT", "afxdp")]).unwrap();
    assert_eq!(c.kernel_xconnect, KernelXconnect::Afxdp);
    let e = err("[nsm]\nkernel_xconnect = \"veth\"", &[]);
    assert!(
        e.contains("nsm.kernel_xconnect") && e.contains("\"tcx\" or \"afxdp\""),
        "{e}"
    );
}
