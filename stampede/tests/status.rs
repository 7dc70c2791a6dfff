//! The status API of a run (`--status-addr`): health, a JSON status, a
//! Prometheus exposition that the Prometheus client's own parser reads and
//! whose final counters are summary.json's, and a /stop that only the
//! fleet token opens.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ONE_RUN_AT_A_TIME, Scratch, free_port, num, read_json};

const QUICK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quick.toml");

/// One HTTP request to the API: (status code, body); `None`: no answer.
fn request(port: u16, method: &str, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// Samples of a Prometheus exposition, parsed by prometheus_client's
/// parser: "name{labels}" -> value.
fn parse_prometheus(text: &str) -> serde_json::Value {
    let script = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  out = {}\nfor f in text_string_to_metric_families(sys.stdin.read()):\n    \
                  for s in f.samples:\n        \
                  key = s.name + ''.join('{%s=%s}' % kv for kv in sorted(s.labels.items()))\n        \
                  out[key] = s.value\nprint(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics (is prometheus-client installed? scripts/test installs it):\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts `controller run` on the quick example with the status API.
fn start(scratch: &Scratch, port: u16, token: &std::path::Path, duration: &str) -> std::process::Child {
    let out = scratch.results_parent();
    let addr = format!("127.0.0.1:{port}");
    Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["run", QUICK, "--ramp-up", "2", "--duration", duration, "--quiet", "--status-addr", &addr])
        .arg("--token-file")
        .arg(token)
        .arg("--output")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn metrics_parse_and_end_equal_to_the_summary_and_stop_needs_the_token() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let token = scratch.file("token", "a-fleet-token-of-32-characters!!\n");
    let port = free_port();
    let mut child = start(&scratch, port, &token, "4");
    let started = Instant::now();
    while request(port, "GET", "/health", None).is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "the status API did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(request(port, "GET", "/health", None).unwrap(), (200, "ok\n".to_string()));
    for auth in [None, Some("wrong-token-wrong-token-wrong")] {
        let (code, body) = request(port, "POST", "/stop", auth).unwrap();
        assert_eq!(code, 401, "{auth:?}: {body}");
    }
    assert_eq!(request(port, "GET", "/nope", None).unwrap().0, 404);
    assert_eq!(request(port, "DELETE", "/status", None).unwrap().0, 405);
    // Scrape until the server goes: the last answer is the run's end.
    let (mut last_metrics, mut last_status, mut running) = (String::new(), String::new(), false);
    while let Some((200, metrics)) = request(port, "GET", "/metrics", None) {
        last_metrics = metrics;
        if let Some((200, status)) = request(port, "GET", "/status", None) {
            running |= status.contains("\"state\": \"running\"");
            last_status = status;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(running, "the status said running during the run");
    let last: serde_json::Value = serde_json::from_str(&last_status).unwrap();
    assert_eq!(last["state"], "finished", "{last}");
    let summary = read_json(&scratch.results().join("summary.json"));
    let samples = parse_prometheus(&last_metrics);
    for counter in ["messages_sent", "messages_received", "connections_opened", "bytes_sent"] {
        let scraped = samples[format!("stampede_{counter}_total")].as_f64().unwrap();
        assert_eq!(scraped, num(&summary, &format!("counters.{counter}")), "{counter}: {last_metrics}");
    }
    let count = samples["stampede_latency_seconds_count"].as_f64().unwrap();
    assert_eq!(count, num(&summary, "latency_ms.count"), "{last_metrics}");
    let p99 = samples["stampede_latency_seconds{quantile=0.99}"].as_f64().unwrap();
    assert!((p99 * 1000.0 - num(&summary, "latency_ms.p99")).abs() < 1e-6, "seconds, the summary's p99");
    assert_eq!(last["counters"]["messages_sent"].as_f64().unwrap(), num(&summary, "counters.messages_sent"));
}

#[test]
fn stop_with_the_token_ends_the_run_with_its_results() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let token = scratch.file("token", "a-fleet-token-of-32-characters!!\n");
    let port = free_port();
    let mut child = start(&scratch, port, &token, "60");
    let started = Instant::now();
    loop {
        let running = request(port, "GET", "/status", None).is_some_and(|(_, s)| s.contains("\"running\""));
        if running {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the run did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = request(port, "POST", "/stop", Some("a-fleet-token-of-32-characters!!")).unwrap();
    assert_eq!(code, 202, "{body}");
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(40), "stopped long before its 60 s");
    assert_eq!(status.code(), Some(130), "ended as an interrupted run");
    assert!(scratch.results().join("summary.json").exists(), "results written");
}
