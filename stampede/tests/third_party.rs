//! A real service that stampede did not write, set up as real services are:
//! Python's `websockets` serving JSON-RPC 2.0 over wss:// with a certificate
//! from its own CA, requiring a subprotocol and an API-key header, and
//! answering with its own messages (never echoing). The controller binary
//! and its workers must open every connection, time every request from its
//! intended send time and match every reply; without the header or the
//! subprotocol, every attempt fails, counted by cause.

mod common;
#[path = "../../worker/tests/servers/jsonrpc.rs"]
#[allow(dead_code)]
mod jsonrpc;

use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, num, read_json};
use stampede_relay::pki::Ca;

struct Service {
    scratch: Scratch,
    server: jsonrpc::JsonRpcServer,
}

fn service() -> Service {
    let scratch = Scratch::new();
    let ca = Ca::new("third-party test CA").unwrap();
    let leaf = ca.server(&["127.0.0.1", "localhost"]).unwrap();
    let cert = scratch.file("server.pem", &leaf.cert);
    let key = scratch.file("server.key", &leaf.key);
    scratch.file("ca.pem", ca.cert_pem());
    let server = jsonrpc::JsonRpcServer::start_with(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--subprotocol",
        "jsonrpc.v2",
        "--require-header",
        "X-Api-Key=k-123",
    ]);
    assert!(server.url.starts_with("wss://"), "{}", server.url);
    Service { scratch, server }
}

/// The scenario, with `target_extra` lines in [target].
fn scenario(s: &Service, target_extra: &str) -> std::path::PathBuf {
    s.scratch.file(
        "service.toml",
        &format!(
            "name = \"jsonrpc-wss\"\n[target]\nurl = \"{}\"\nca_file = \"ca.pem\"\n{target_extra}\n\
             [load]\nconnections = 10\nmessage_interval_s = \"100ms\"\n\
             [phases]\nwarmup_s = 0\nramp_up_s = 1\nsustained_s = 3\ncooldown_s = 1\n\
             [messages]\nmode = \"request\"\ntemplate = '{{\"jsonrpc\":\"2.0\",\"id\":{{{{seq}}}},\"method\":\"ping\"}}'\n\
             match = \"json:id\"\n\
             [thresholds]\nmessages_unmatched = \"< 1\"\nmessage_loss_rate = \"<= 0\"\nconnect_success_rate = \">= 1\"\n",
            s.server.url
        ),
    )
}

#[test]
fn wss_with_a_subprotocol_and_a_header_to_a_json_rpc_service() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = service();
    let path =
        scenario(&s, "subprotocols = [\"jsonrpc.v1\", \"jsonrpc.v2\"]\nheaders = { X-Api-Key = \"k-123\" }");
    let run = s.scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let summary = read_json(&s.scratch.results().join("summary.json"));
    assert_eq!(num(&summary, "connections.opened"), 10.0);
    assert_eq!(summary["subprotocols"]["jsonrpc.v2"].as_f64(), Some(10.0), "the server's pick is recorded");
    let sent = num(&summary, "messages.sent");
    assert!(sent > 200.0, "{sent} requests");
    assert_eq!(num(&summary, "messages.received"), sent, "every request answered");
    assert_eq!(num(&summary, "latency_ms.count"), sent, "a latency for every request");
    assert_eq!(num(&summary, "messages.unmatched"), 0.0);
    assert_eq!(num(&summary, "messages.lost"), 0.0);
}

#[test]
fn without_the_header_or_the_subprotocol_every_attempt_fails_by_cause() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for (extra, cause) in [
        ("subprotocols = [\"jsonrpc.v2\"]", "http_401"),
        ("headers = { X-Api-Key = \"k-123\" }", "http_400"),
        ("subprotocols = [\"jsonrpc.v2\"]\nheaders = { X-Api-Key = \"wrong\" }", "http_401"),
    ] {
        let s = service();
        let text = scenario(&s, &format!("{extra}\n")).to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&text).unwrap().replace("[load]", "[load]\nreconnect = false");
        let path = s.scratch.file("service.toml", &text);
        let run = s.scratch.run(&path, Duration::from_secs(60));
        assert_eq!(run.code, 99, "{extra}: stderr:\n{}", run.stderr);
        let summary = read_json(&s.scratch.results().join("summary.json"));
        assert_eq!(num(&summary, "connections.opened"), 0.0, "{extra}");
        let failed = num(&summary, "connections.failed");
        assert!(failed >= 10.0, "{extra}: {failed}");
        assert_eq!(summary["errors"][cause].as_f64(), Some(failed), "{extra}: {}", summary["errors"]);
    }
}
