//! `controller run` against `wss://` targets: the bundled relay serving TLS
//! (in-process and as relay processes), and a relay process started here
//! with certificates made in the test.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, merged_hlog, num, read_csv, read_json};
use stampede_relay::pki::Ca;

/// A `controller relay` process serving `wss://`; killed when dropped.
struct TlsRelay {
    child: Child,
    url: String,
}

impl TlsRelay {
    /// Serves with a server certificate for 127.0.0.1 signed by `ca`.
    fn start(scratch: &Scratch, ca: &Ca) -> TlsRelay {
        let server = ca.server(&["127.0.0.1"]).unwrap();
        let cert = scratch.file("server.pem", &server.cert);
        let key = scratch.file("server.key", &server.key);
        let mut child = Command::new(env!("CARGO_BIN_EXE_controller"))
            .args(["relay", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix(stampede_relay::config::READY_PREFIX).unwrap().to_string();
        assert!(url.starts_with("wss://127.0.0.1:"), "{line}");
        TlsRelay { child, url }
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SHORT: &str = "[phases]\nwarmup_s = 0\nramp_up_s = 1\nsustained_s = 2\ncooldown_s = 0\n";

/// Temporary folders the bundled relay processes got their key from.
fn relay_tls_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("stampede-relay-tls-"))
        .collect()
}

fn bundled_tls_run(processes: &str, connections: u64) {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let before = relay_tls_dirs();
    let path = scratch.file(
        "tls.toml",
        &format!(
            "name = \"tls\"\n[target]\nbundled = true\nbundled_tls = true\n{processes}\n\
             [load]\nconnections = {connections}\nmessage_interval_s = 0.2\n{SHORT}\
             [thresholds]\nconnect_tls_p99_ms = \"< 5000\"\nerror_rate = \"< 0.001\"\n"
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert!(summary["target"].as_str().unwrap().starts_with("wss://127.0.0.1:"), "{}", summary["target"]);
    let c = connections as f64;
    assert_eq!(num(&summary, "connections.opened"), c);
    assert_eq!(num(&summary, "connections.failed"), 0.0);
    let sent = num(&summary, "messages.sent");
    assert!(sent >= c * 5.0, "{sent} sent");
    assert_eq!(num(&summary, "messages.received"), sent, "every message echoed over TLS");
    // The connect time split: one sample of each part per connection.
    for part in ["connect_ms", "connect_tcp_ms", "connect_tls_ms", "connect_upgrade_ms"] {
        assert_eq!(num(&summary, &format!("{part}.count")), c, "{part}");
    }
    let tls_p99 =
        summary["thresholds"].as_array().unwrap().iter().find(|t| t["metric"] == "connect_tls_p99_ms");
    let tls_p99 = tls_p99.expect("the threshold is reported");
    assert_eq!(tls_p99["pass"], true);
    assert_eq!(tls_p99["value"].as_f64(), Some(num(&summary, "connect_tls_ms.p99")));
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    let col = header.iter().position(|h| h == "connect_tls_p95_ms").expect("a connect_tls_p95_ms column");
    assert!(rows.iter().any(|r| r[col].parse::<f64>().is_ok_and(|ms| ms > 0.0)), "a second with handshakes");
    let (tls, _) = merged_hlog(&dir, "connect_tls", |_| true);
    assert_eq!(tls.len() as f64, c, "the interval log holds every handshake");
    assert_eq!(relay_tls_dirs(), before, "the relay processes' key files are removed");
}

#[test]
fn the_bundled_relay_serves_wss_and_the_run_passes() {
    bundled_tls_run("", 20);
}

#[test]
fn bundled_relay_processes_serve_wss_from_files_that_are_removed() {
    bundled_tls_run("bundled_processes = 2", 40);
}

#[test]
fn an_untrusted_ca_fails_every_attempt_and_the_run_with_99() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let relay = TlsRelay::start(&scratch, &Ca::new("the server's CA").unwrap());
    scratch.file("other-ca.pem", Ca::new("another CA").unwrap().cert_pem());
    let path = scratch.file(
        "untrusted.toml",
        &format!(
            "name = \"untrusted\"\n[target]\nurl = \"{}\"\nca_file = \"other-ca.pem\"\n\
             [load]\nconnections = 10\n{SHORT}",
            relay.url
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 99, "stderr:\n{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert!(summary["aborted"].as_str().unwrap().contains("target unreachable"), "{}", summary["aborted"]);
    assert_eq!(num(&summary, "connections.opened"), 0.0);
    let failed = num(&summary, "connections.failed");
    assert!(failed >= 10.0, "{failed} failures");
    let errors = summary["errors"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["tls_unknown_ca"], "{errors:?}");
    assert_eq!(num(&summary, "errors.tls_unknown_ca"), failed, "every attempt");
}

#[test]
fn insecure_skip_verify_opens_and_says_so_in_test_log() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let relay = TlsRelay::start(&scratch, &Ca::new("nobody trusts me").unwrap());
    let path = scratch.file(
        "insecure.toml",
        &format!(
            "name = \"insecure\"\n[target]\nurl = \"{}\"\ninsecure_skip_verify = true\n\
             [load]\nconnections = 10\nmessage_interval_s = 0.5\n{SHORT}",
            relay.url
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("insecure_skip_verify = true"), "warned on stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(num(&summary, "connections.opened"), 10.0);
    assert_eq!(num(&summary, "messages.received"), num(&summary, "messages.sent"));
    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    let warning = log.lines().find(|l| l.contains("WARNING: insecure_skip_verify = true"));
    assert!(warning.is_some_and(|l| l.contains("not verified")), "test.log:\n{log}");
}
