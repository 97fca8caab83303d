//! Logs: `[log] format = "json"` writes one JSON object per line; SIGUSR1 raises the level to
//! TRACE at run time (the chain's elements then log their outcome in their spans), SIGUSR2
//! brings back NSM_LOG_LEVEL.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vwire::transport::{dial, Url, DIAL_TIMEOUT};
use vwire_proto::connection::Connection;
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;

/// The log lines, each parsed as JSON (a line that is not JSON fails the test).
fn lines(vw: &Vwire) -> Vec<serde_json::Value> {
    vw.logs()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}\n{}", vw.logs()))
        })
        .collect()
}

fn level(v: &serde_json::Value) -> &str {
    v["level"].as_str().unwrap_or("")
}

fn message(v: &serde_json::Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or("")
}

/// Waits (up to 5 s) until a line satisfies `pred`; returns its index.
fn wait_for(vw: &Vwire, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(i) = lines(vw).iter().position(&pred) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no log line {what}:\n{}",
            vw.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(vw: &Vwire, sig: libc::c_int) {
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(vw.pid() as i32, sig) }, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn json_lines_and_the_level_changes_at_run_time() {
    let sock = temp_file("x", "").with_file_name("nsm.sock");
    let mut vw = Vwire::start(&format!(
        "[log]\nformat = \"json\"\nlevel = \"info\"\n\
         [nsm]\nlisten_on = \"unix://{}\"\ninsecure = true\ntunnel_ip = \"none\"\n",
        sock.display()
    ));
    wait_for(&vw, "\"vwire running\"", |l| message(l) == "vwire running");
    let all = lines(&vw);
    assert!(
        all.iter()
            .all(|l| level(l) != "DEBUG" && level(l) != "TRACE"),
        "nothing below INFO at level info:\n{}",
        vw.logs()
    );
    let channel = dial(&Url::Unix(sock.clone()), DIAL_TIMEOUT).await.unwrap();
    let mut ns = NetworkServiceClient::new(channel);
    let close = |id: &str| Connection {
        id: id.into(),
        network_service: "svc".into(),
        ..Default::default()
    };

    signal(&vw, libc::SIGUSR1);
    let raised = wait_for(&vw, "for SIGUSR1", |l| {
        message(l).starts_with("SIGUSR1") && l["fields"]["level"] == "trace"
    });
    ns.close(close("traced")).await.unwrap();
    // The elements' TRACE lines, in their spans, with the connection id.
    let traced = wait_for(&vw, "at TRACE from the chain", |l| {
        level(l) == "TRACE"
            && l["target"] == "vwire::chain"
            && l["span"]["connection_id"] == "traced"
    });
    assert!(traced > raised);

    signal(&vw, libc::SIGUSR2);
    let restored = wait_for(&vw, "for SIGUSR2", |l| {
        message(l).starts_with("SIGUSR2") && l["fields"]["level"] == "info"
    });
    ns.close(close("quiet")).await.unwrap();
    // Let a line of the second Close show if it were logged: the Close has returned, and the
    // SIGUSR1 line took at most this long to appear.
    std::thread::sleep(Duration::from_millis(100));
    let after: Vec<_> = lines(&vw).into_iter().skip(restored + 1).collect();
    assert!(
        after
            .iter()
            .all(|l| level(l) != "DEBUG" && level(l) != "TRACE"),
        "nothing below INFO after SIGUSR2: {after:#?}"
    );
    let (status, _) = vw.terminate(Duration::from_secs(5));
    assert!(status.success());
}
