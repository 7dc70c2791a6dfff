//! Scripted sessions (flows) run by the native engine against real servers
//! on loopback: the bundled relay for the tunnel protocol, and hostile
//! servers written here. Every step run is recorded once, as a success or
//! as a failure whose cause is counted once; nothing a server does makes
//! the worker panic or hold unbounded memory.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use stampede_model::flow::{Check, Extract, FlowSpec, HttpStep, Step, StepKind};
use stampede_model::spec::{ConnectSpec, SessionSpec, TlsSpec};
use stampede_model::{Counters, Template};
use stampede_proto::fleet::Snapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

mod common;

/// Builds a flow: names are given in the order steps are written.
#[derive(Default)]
struct Flow {
    names: Vec<String>,
}

impl Flow {
    fn id(&mut self, name: &str) -> usize {
        self.names.push(name.to_string());
        self.names.len() - 1
    }

    fn step(&mut self, name: &str, kind: StepKind) -> Step {
        Step { metric: self.id(name), kind }
    }

    fn spec(self, steps: Vec<Step>) -> FlowSpec {
        FlowSpec { steps, names: self.names }
    }
}

fn t(s: &str) -> Template {
    Template::parse(s).unwrap()
}

fn expect(check: Check, timeout_ms: u64, capture: Vec<(&str, Extract)>) -> StepKind {
    StepKind::Expect {
        check,
        timeout_us: timeout_ms * 1000,
        capture: capture.into_iter().map(|(n, e)| (n.to_string(), e)).collect(),
    }
}

fn op_is(op: &str) -> Check {
    Check::JsonEquals { path: "op".into(), value: format!("{op:?}") }
}

fn http(method: &str, path: &str, body: Option<&str>, status: u16, timeout_ms: u64) -> StepKind {
    StepKind::Http(HttpStep {
        method: method.into(),
        path: t(path),
        headers: vec![("Content-Type".into(), t("application/json"))],
        body: body.map(t),
        status,
        timeout_us: timeout_ms * 1000,
    })
}

fn sleep_ms(ms: u64) -> StepKind {
    StepKind::Sleep { min_us: ms * 1000, max_us: ms * 1000 }
}

/// One step's runs over a whole run.
#[derive(Debug)]
struct StepTotals {
    ok: u64,
    failed: u64,
    durations: Histogram<u64>,
}

/// Runs `flow` against `url` on `connections` slots for `hold`.
async fn run(url: &str, flow: FlowSpec, connections: u64, hold: Duration) -> Run {
    run_with(url, ConnectSpec { session: SessionSpec::Flow(flow), ..Default::default() }, connections, hold)
        .await
}

/// Runs `spec` (a flow) against `url` on `connections` slots for `hold`.
async fn run_with(url: &str, spec: ConnectSpec, connections: u64, hold: Duration) -> Run {
    let mut assign = common::assign(url, 0, 64, false);
    assign.connect_spec_json = spec.to_json();
    let snaps = common::drive(&assign, connections, hold, async || {}).await;
    let mut steps: BTreeMap<String, StepTotals> = BTreeMap::new();
    for s in &snaps {
        for (name, stats) in &s.steps {
            let h: Histogram<u64> = Deserializer::new().deserialize(&mut stats.histogram.as_slice()).unwrap();
            let e = steps.entry(name.clone()).or_insert_with(|| StepTotals {
                ok: 0,
                failed: 0,
                durations: stampede_worker::recorder::new_histogram(),
            });
            e.ok += stats.ok;
            e.failed += stats.failed;
            e.durations.add(&h).unwrap();
        }
    }
    Run { c: common::totals(&snaps), steps, snaps }
}

struct Run {
    c: Counters,
    steps: BTreeMap<String, StepTotals>,
    snaps: Vec<Snapshot>,
}

impl Run {
    /// (ok, failed) of step `name` (0, 0 if it never ran).
    fn step(&self, name: &str) -> (u64, u64) {
        self.steps.get(name).map_or((0, 0), |s| (s.ok, s.failed))
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for s in &self.snaps {
            for (cause, n) in &s.errors {
                *all.entry(cause.clone()).or_default() += n;
            }
        }
        all
    }

    fn failures(&self) -> u64 {
        self.steps.values().map(|s| s.failed).sum()
    }
}

/// connect /pubsub; expect connection_established (capture id); 5 x
/// { POST /publish/conn/{{var.id}}; expect the message }; close.
fn tunnel(tail: Option<StepKind>) -> FlowSpec {
    let mut f = Flow::default();
    let mut steps = vec![
        f.step("connect", StepKind::Connect),
        f.step(
            "established",
            expect(op_is("connection_established"), 2000, vec![("id", Extract::JsonPath("id".into()))]),
        ),
    ];
    let rounds = f.id("rounds");
    let body = vec![
        f.step("publish", http("POST", "/publish/conn/{{var.id}}", Some(r#"{"n":{{seq}}}"#), 200, 2000)),
        f.step("message", expect(op_is("message"), 2000, vec![])),
    ];
    steps.push(Step {
        metric: rounds,
        kind: StepKind::Loop { count: Some(5), duration_us: None, steps: body },
    });
    steps.push(f.step("close", StepKind::Close));
    if let Some(kind) = tail {
        steps.push(f.step("rest", kind));
    }
    f.spec(steps)
}

async fn relay() -> (stampede_relay::Relay, CancellationToken) {
    let shutdown = CancellationToken::new();
    let relay = stampede_relay::Relay::start(Default::default(), shutdown.clone()).await.unwrap();
    (relay, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_flow_runs_every_step_exactly_once_per_session() {
    // Each slot runs one session and then rests until the stop: every
    // count is exact.
    let (relay, shutdown) = relay().await;
    let slots = 3;
    let r = run(&relay.pubsub_url(), tunnel(Some(sleep_ms(60_000))), slots, Duration::from_secs(3)).await;
    shutdown.cancel();
    let expected = [
        ("connect", slots),
        ("established", slots),
        ("publish", 5 * slots),
        ("message", 5 * slots),
        ("rounds", slots),
        ("close", slots),
    ];
    for (name, n) in expected {
        assert_eq!(r.step(name), (n, 0), "{name}: {:?}", r.steps);
        let durations = &r.steps[name].durations;
        assert_eq!(durations.len(), n, "{name}: one duration per success");
        assert!(durations.min() >= 1, "{name}");
    }
    assert!(!r.steps.contains_key("rest"), "the interrupted step is not recorded");
    // A message answers the publish before it: it cannot take less than
    // the publish's round trip (its duration counts from the publish's start).
    assert!(r.steps["message"].durations.min() >= r.steps["publish"].durations.min());
    assert!(r.errors().is_empty(), "{:?}", r.errors());
    let c = r.c;
    assert_eq!((c.connections_opened, c.connections_closed_by_client), (slots, slots));
    assert_eq!((c.connections_closed_by_server, c.connections_dropped, c.connections_failed), (0, 0, 0));
    assert_eq!(c.messages_received, 6 * slots, "established + 5 messages each");
    assert_eq!(c.messages_unmatched, 0);
    assert_eq!((c.sessions_completed, c.sessions_failed), (0, 0), "every session was still resting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_flow_runs_over_wss_with_http_steps_on_tls_too() {
    let shutdown = CancellationToken::new();
    let ca = stampede_relay::pki::Ca::new("test CA").unwrap();
    let server = ca.server(&["127.0.0.1"]).unwrap();
    let tls =
        stampede_relay::tls::TlsSettings { cert_pem: server.cert, key_pem: server.key, client_ca_pem: None };
    let config = stampede_relay::RelayConfig { tls: Some(tls), ..Default::default() };
    let relay = stampede_relay::Relay::start(config, shutdown.clone()).await.unwrap();
    let url = relay.pubsub_url();
    assert!(url.starts_with("wss://"), "{url}");
    let spec = ConnectSpec {
        session: SessionSpec::Flow(tunnel(Some(sleep_ms(60_000)))),
        tls: TlsSpec { ca_pem: Some(ca.cert_pem().to_string()), ..Default::default() },
        ..Default::default()
    };
    let r = run_with(&url, spec, 2, Duration::from_secs(3)).await;
    shutdown.cancel();
    for (name, n) in [("connect", 2), ("established", 2), ("publish", 10), ("message", 10), ("close", 2)] {
        assert_eq!(r.step(name), (n, 0), "{name}: {:?}", r.errors());
    }

    assert!(r.errors().is_empty(), "{:?}", r.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flows_open_connections_are_counted_while_open() {
    let (relay, shutdown) = relay().await;
    let mut f = Flow::default();
    let steps = vec![
        f.step("connect", StepKind::Connect),
        f.step("established", expect(op_is("connection_established"), 2000, vec![])),
        f.step("hold", sleep_ms(60_000)),
        f.step("close", StepKind::Close),
    ];
    let r = run(&relay.pubsub_url(), f.spec(steps), 2, Duration::from_millis(2500)).await;
    shutdown.cancel();
    let active: Vec<u64> = r.snaps.iter().map(|s| s.gauges.unwrap().connections_active).collect();
    // Both open from the first second to the stop, then none.
    assert!(active.len() >= 3, "{active:?}");
    assert!(active[..active.len() - 1].iter().skip(1).all(|&n| n == 2), "{active:?}");
    assert_eq!(active.last(), Some(&0), "none left open: {active:?}");
    assert_eq!(r.step("connect"), (2, 0));
    assert_eq!(r.c.connections_closed_by_client, 2, "both closed when the run stopped: {:?}", r.c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_sessions_repeat_and_every_frame_is_matched_or_unmatched() {
    let (relay, shutdown) = relay().await;
    let slots = 2;
    let r = run(&relay.pubsub_url(), tunnel(None), slots, Duration::from_secs(2)).await;
    shutdown.cancel();
    let c = r.c;
    let done = c.sessions_completed;
    eprintln!("{done} sessions completed: {:?}", r.steps.iter().map(|(n, s)| (n, s.ok)).collect::<Vec<_>>());
    assert!(done >= 2 * slots, "{c:?}");
    assert_eq!(c.sessions_failed, 0);
    assert_eq!(r.failures(), 0, "{:?}", r.steps);
    assert!(r.errors().is_empty(), "{:?}", r.errors());
    // The last step completes a session: exact. Others may have run once
    // more in the session each slot was in when the run stopped.
    assert_eq!(r.step("close").0, done);
    for (name, per_session) in
        [("connect", 1), ("established", 1), ("rounds", 1), ("publish", 5), ("message", 5)]
    {
        let ok = r.step(name).0;
        assert!((per_session * done..=per_session * (done + slots)).contains(&ok), "{name}: {ok} for {done}");
    }
    assert_eq!(c.connections_opened, r.step("connect").0);
    assert_eq!(c.connections_closed_by_client, c.connections_opened, "every connection closed by us");
    let last = r.snaps.last().unwrap().gauges.unwrap();
    assert_eq!(last.connections_active, 0, "no connection left open");
    // (Sessions here last about a millisecond, so a once-a-second gauge may
    // catch none open: a_flows_open_connections_are_counted_while_open.)
    let matched = r.step("established").0 + r.step("message").0;
    assert_eq!(c.messages_received, matched + c.messages_unmatched, "{c:?}");
    assert!(c.messages_unmatched <= slots, "only a stopped session leaves a frame behind: {c:?}");
}

/// A WebSocket server that runs `serve` on each connection.
async fn ws_server<F, Fut>(serve: F) -> String
where
    F: Fn(tokio_tungstenite::WebSocketStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let serve = serve.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    serve(ws).await;
                }
            });
        }
    });
    url
}

/// Reads (and so answers pings and closes) until the client leaves.
async fn drain(mut ws: tokio_tungstenite::WebSocketStream<TcpStream>) {
    while let Some(Ok(_)) = ws.next().await {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expect_against_a_silent_server_times_out_once_per_session() {
    let url = ws_server(drain).await;
    let mut f = Flow::default();
    let steps = vec![f.step("connect", StepKind::Connect), f.step("wait", expect(Check::Any, 300, vec![]))];
    let r = run(&url, f.spec(steps), 1, Duration::from_millis(1500)).await;
    let (ok, failed) = r.step("wait");
    assert_eq!(ok, 0);
    assert!(failed >= 2, "{:?}", r.steps);
    assert_eq!(r.errors(), BTreeMap::from([("expect_timeout".to_string(), failed)]), "one cause per failure");
    assert_eq!(r.c.sessions_failed, failed);
    assert_eq!(r.step("connect"), (r.c.connections_opened, 0));
    assert_eq!(r.c.connections_closed_by_client, r.c.connections_opened, "each failed session closes");
    // 300 ms per session plus a backoff of 100, 200, 400 ms (jittered).
    assert!(failed <= 4, "sessions back off: {failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_backs_off_instead_of_hammering() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut f = Flow::default();
    let steps = vec![f.step("connect", StepKind::Connect), f.step("close", StepKind::Close)];
    let r = run(&format!("ws://127.0.0.1:{port}/"), f.spec(steps), 1, Duration::from_millis(1500)).await;
    let (ok, failed) = r.step("connect");
    assert_eq!(ok, 0);
    // 100, 200, 400, 800 ms (each x0.5..1.5): at most 6 attempts in 1.5 s.
    assert!((2..=6).contains(&failed), "{failed} attempts");
    assert_eq!(
        r.errors(),
        BTreeMap::from([("refused".to_string(), failed)]),
        "counted by the connect itself, once"
    );
    assert_eq!((r.c.connections_failed, r.c.sessions_failed), (failed, failed));
    assert!(!r.steps.contains_key("close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_stays_bounded_and_every_frame_is_counted() {
    const FLOOD: u64 = 100_000;
    let url = ws_server(|mut ws| async move {
        let filler = "f".repeat(256);
        for _ in 0..FLOOD {
            // Fed without a flush per frame: a flood, not a trickle.
            if ws.feed(Message::text(filler.as_str())).await.is_err() {
                return;
            }
        }
        if ws.send(Message::text("last")).await.is_err() {
            return;
        }
        drain(ws).await;
    })
    .await;
    let mut f = Flow::default();
    let steps = vec![
        f.step("connect", StepKind::Connect),
        // The flood arrives while the session sleeps: buffered, bounded.
        f.step("soak", sleep_ms(500)),
        f.step("last", expect(Check::Regex("^last$".into()), 10_000, vec![])),
        f.step("rest", sleep_ms(60_000)),
    ];
    let r = run(&url, f.spec(steps), 1, Duration::from_secs(5)).await;
    assert_eq!(r.step("soak"), (1, 0));
    assert_eq!(r.step("last"), (1, 0), "the newest frame is never the one dropped: {:?}", r.errors());
    assert_eq!(r.c.messages_received, FLOOD + 1);
    assert_eq!(r.c.messages_unmatched, FLOOD, "dropped from the full buffer or skipped by the expect");
    assert_eq!(r.c.bytes_received, FLOOD * 256 + 4);
    assert!(r.errors().is_empty(), "{:?}", r.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_while_a_step_sleeps() {
    let url = ws_server(|mut ws| async move {
        if ws.send(Message::Ping(b"are you there".to_vec().into())).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Pong(p) = msg {
                let answer = format!("pong seen: {}", String::from_utf8_lossy(&p));
                if ws.send(Message::text(answer)).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let mut f = Flow::default();
    let steps = vec![
        f.step("connect", StepKind::Connect),
        f.step("nap", sleep_ms(300)),
        // Timeout 0: only what was buffered during the nap can match.
        f.step("pong", expect(Check::Regex("^pong seen: are you there$".into()), 0, vec![])),
        f.step("rest", sleep_ms(60_000)),
    ];
    let r = run(&url, f.spec(steps), 1, Duration::from_millis(800)).await;
    assert_eq!(r.step("pong"), (1, 0), "{:?}", r.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_close_fails_the_step_running_with_its_code() {
    let url = ws_server(|mut ws| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let frame = CloseFrame { code: CloseCode::Error, reason: "bye".into() };
        let _ = ws.close(Some(frame)).await;
        drain(ws).await;
    })
    .await;
    let mut f = Flow::default();
    let steps = vec![f.step("connect", StepKind::Connect), f.step("nap", sleep_ms(60_000))];
    let r = run(&url, f.spec(steps), 1, Duration::from_millis(1200)).await;
    let (ok, failed) = r.step("nap");
    assert_eq!(ok, 0);
    assert!(failed >= 2, "{:?}", r.steps);
    assert_eq!(r.errors(), BTreeMap::from([("closed_1011".to_string(), failed)]));
    assert_eq!(r.c.connections_closed_by_server, failed);
    assert_eq!(r.c.connections_closed_by_client, 0, "nothing left for us to close");
    assert_eq!(r.c.sessions_failed, failed);
}

/// What a hostile HTTP server answers.
#[derive(Clone, Copy)]
enum Answer {
    Status500,
    /// A 10 MiB body with its Content-Length.
    HugeLength,
    /// A 10 MiB body until close.
    HugeUntilClose,
    Garbage,
    Silent,
    Json(&'static str),
}

/// A plain TCP server answering every request per `answer`; the URL is
/// given as ws:// (flows' HTTP steps go to the target's host and port).
async fn http_server(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let ten_mib = vec![b'x'; 10 << 20];
                let _ = match answer {
                    Answer::Status500 => {
                        tcp.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops")
                            .await
                    }
                    Answer::HugeLength => {
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", ten_mib.len());
                        let _ = tcp.write_all(head.as_bytes()).await;
                        tcp.write_all(&ten_mib).await
                    }
                    Answer::HugeUntilClose => {
                        let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                        tcp.write_all(&ten_mib).await
                    }
                    Answer::Garbage => tcp.write_all(b"\x16\x03\x01garbage\x00\xff\r\n\r\nmore").await,
                    Answer::Silent => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok(())
                    }
                    Answer::Json(body) => {
                        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        tcp.write_all(resp.as_bytes()).await
                    }
                };
            });
        }
    });
    url
}

/// One `http` step against a server answering `answer`: (ok, failed) and
/// the errors.
async fn one_request(answer: Answer) -> (u64, u64, BTreeMap<String, u64>) {
    let url = http_server(answer).await;
    let mut f = Flow::default();
    let steps = vec![f.step("get", http("GET", "/x", None, 200, 300))];
    let r = run(&url, f.spec(steps), 1, Duration::from_millis(700)).await;
    let (ok, failed) = r.step("get");
    assert_eq!(r.c.sessions_failed, failed);
    (ok, failed, r.errors())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_answers_fail_the_step_under_their_cause() {
    for (answer, cause) in [
        (Answer::Status500, "step_http_500"),
        (Answer::HugeLength, "step_http_failed"),
        (Answer::HugeUntilClose, "step_http_failed"),
        (Answer::Garbage, "step_http_failed"),
        (Answer::Silent, "timeout"),
    ] {
        let (ok, failed, errors) = one_request(answer).await;
        assert_eq!(ok, 0, "{cause}");
        assert!(failed >= 1, "{cause}");
        assert_eq!(errors, BTreeMap::from([(cause.to_string(), failed)]), "{cause}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_read_http_bodies_and_a_wrong_path_fails() {
    let url = http_server(Answer::Json(r#"{"token":"abc","n":7}"#)).await;
    // Captured from the body, then used in the next request's path.
    let mut f = Flow::default();
    let steps = vec![
        f.step("login", http("GET", "/login", None, 200, 1000)),
        f.step(
            "keep",
            StepKind::Capture {
                vars: vec![
                    ("token".into(), Extract::JsonPath("token".into())),
                    ("n".into(), Extract::Regex(r#""n":(\d+)"#.into())),
                ],
            },
        ),
        f.step("use", http("GET", "/use/{{var.token}}/{{var.n}}", None, 200, 1000)),
        f.step(
            "wrong",
            StepKind::Capture { vars: vec![("x".into(), Extract::JsonPath("result.id".into()))] },
        ),
        f.step("never", sleep_ms(1)),
    ];
    let r = run(&url, f.spec(steps), 1, Duration::from_millis(600)).await;
    let (ok, failed) = r.step("wrong");
    assert!(failed >= 1 && ok == 0, "{:?}", r.steps);
    assert_eq!(r.step("keep"), (failed, 0));
    assert_eq!(r.step("use"), (failed, 0));
    assert_eq!(r.step("never"), (0, 0), "a failed step ends the session");
    assert_eq!(r.errors(), BTreeMap::from([("capture_failed".to_string(), failed)]));
    assert_eq!(r.c.sessions_failed, failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_from_a_path_the_message_lacks_fails_the_expect() {
    let (relay, shutdown) = relay().await;
    let mut f = Flow::default();
    let steps = vec![
        f.step("connect", StepKind::Connect),
        f.step(
            "established",
            expect(op_is("connection_established"), 2000, vec![("id", Extract::JsonPath("nope".into()))]),
        ),
        f.step("close", StepKind::Close),
    ];
    let r = run(&relay.pubsub_url(), f.spec(steps), 1, Duration::from_millis(600)).await;
    shutdown.cancel();
    let (ok, failed) = r.step("established");
    assert_eq!(ok, 0);
    assert!(failed >= 1);
    assert_eq!(r.errors(), BTreeMap::from([("capture_failed".to_string(), failed)]));
    assert_eq!(r.c.messages_received, failed, "the message was received (and matched) each time");
    assert_eq!(r.c.messages_unmatched, 0);
    assert_eq!(r.c.connections_closed_by_client, r.c.connections_opened, "closed after the failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_of_sends_still_yields_and_stops_on_time() {
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = received.clone();
    let url = ws_server(move |mut ws| {
        let count = count.clone();
        async move {
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    let mut f = Flow::default();
    let steps = vec![f.step("connect", StepKind::Connect), {
        let id = f.id("forever");
        let body = vec![f.step("send", StepKind::Send { message: t("x{{seq}}"), binary: false })];
        Step { metric: id, kind: StepKind::Loop { count: None, duration_us: None, steps: body } }
    }];
    let started = std::time::Instant::now();
    let r = run(&url, f.spec(steps), 1, Duration::from_millis(500)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the stop was seen: {:?}", started.elapsed());
    let sent = r.c.messages_sent;
    assert_eq!(r.step("send"), (sent, 0));
    assert!(sent > 100, "{sent}");
    assert_eq!(r.step("forever"), (0, 0), "the interrupted loop is not recorded");
    assert_eq!(r.c.bytes_sent, (0..sent).map(|i| 1 + i.to_string().len() as u64).sum::<u64>());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    assert!((sent..=sent + 1).contains(&got), "the server got {got} of {sent} (+1 cut short by the stop)");
    assert_eq!(r.c.connections_closed_by_client, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_that_never_waits_still_yields_to_the_stop() {
    // A capture never awaits anything: only the loop's own yield lets the
    // stop through.
    let url = http_server(Answer::Json(r#"{"token":"abc"}"#)).await;
    let mut f = Flow::default();
    let steps = vec![f.step("login", http("GET", "/login", None, 200, 1000)), {
        let id = f.id("forever");
        let body = vec![f.step(
            "keep",
            StepKind::Capture { vars: vec![("token".into(), Extract::JsonPath("token".into()))] },
        )];
        Step { metric: id, kind: StepKind::Loop { count: None, duration_us: None, steps: body } }
    }];
    let started = std::time::Instant::now();
    let r = run(&url, f.spec(steps), 1, Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the stop was seen: {:?}", started.elapsed());
    assert_eq!(r.step("login"), (1, 0));
    assert!(r.step("keep").0 > 1000, "{:?}", r.steps);
    assert_eq!(r.step("forever"), (0, 0));
}
