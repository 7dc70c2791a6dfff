//! `[messages]` end to end: the controller binary and its worker processes
//! against servers that do not echo, on loopback: a third-party JSON-RPC 2.0
//! server (Python's `websockets`) in request mode, a push server written
//! here in receive mode, and a bad `[messages]` table.

mod common;
#[path = "../../worker/tests/servers/jsonrpc.rs"]
mod jsonrpc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ONE_RUN_AT_A_TIME, Scratch, controller, num, read_csv, read_json};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const PHASES: &str = "[phases]\nwarmup_s = 0\nramp_up_s = 1\nsustained_s = 3\ncooldown_s = 1\n";

#[test]
fn request_mode_against_a_json_rpc_server_matches_every_reply() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = jsonrpc::JsonRpcServer::start();
    let scratch = Scratch::new();
    scratch.file("ping.json", "{\"jsonrpc\":\"2.0\",\"id\":{{seq}},\"method\":\"ping\"}\n");
    let path = scratch.file(
        "jsonrpc.toml",
        &format!(
            "name = \"jsonrpc\"\n[target]\nurl = \"{}\"\n[load]\nconnections = 5\nmessage_interval_s = 0.05\n\
             {PHASES}[messages]\nmode = \"request\"\ntemplate_file = \"ping.json\"\nmatch = \"json:id\"\n\
             reply_timeout = \"5s\"\n[thresholds]\nmessages_unmatched = \"< 1\"\nmessage_loss_rate = \"<= 0\"\n",
            server.url
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    let sent = num(&summary, "messages.sent");
    assert!(sent > 200.0, "{sent} requests");
    assert_eq!(num(&summary, "messages.received"), sent, "every request answered");
    assert_eq!(num(&summary, "messages.unmatched"), 0.0);
    assert_eq!(num(&summary, "messages.lost"), 0.0);
    assert_eq!(num(&summary, "latency_ms.count"), sent, "a latency for every reply");
    assert!(num(&summary, "latency_ms.p50") < 100.0);
    let (header, _) = read_csv(&dir.join("metrics.csv"));
    for column in ["receive_gaps", "timestamps_missing", "timestamps_future"] {
        assert!(header.iter().any(|h| h == column), "metrics.csv has {column}");
    }
    let scenario = std::fs::read_to_string(dir.join("scenario.toml")).unwrap();
    assert!(scenario.contains("match = \"json:id\""), "the table is saved as run:\n{scenario}");
}

/// Each connection, once it has sent its subscription, gets `PUSHES`
/// messages stamped with the wall clock in ms, 25 ms apart, then silence.
const PUSHES: u64 = 40;

fn push_server() -> (String, Arc<AtomicU64>, std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let subscribed = Arc::new(AtomicU64::new(0));
    let subs = subscribed.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let serve = async {
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let subs = subs.clone();
                    tokio::spawn(async move {
                        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                        let Some(Ok(Message::Text(sub))) = ws.next().await else { return };
                        if !sub.contains("\"subscribe\"") {
                            return;
                        }
                        subs.fetch_add(1, Relaxed);
                        let (mut tx, mut rx) = ws.split();
                        tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
                        for n in 0..PUSHES {
                            let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
                            if tx.send(Message::text(format!("{{\"n\":{n},\"ts\":{ms}}}"))).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    });
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = stop_rx => {}
            }
        });
    });
    (url, subscribed, thread, stop_tx)
}

#[test]
fn receive_mode_counts_pushed_messages_latency_and_gaps() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (url, subscribed, thread, stop) = push_server();
    let scratch = Scratch::new();
    let path = scratch.file(
        "feed.toml",
        &format!(
            "name = \"feed\"\n[target]\nurl = \"{url}\"\n[load]\nconnections = 4\nreconnect = false\n{PHASES}\
             [messages]\nmode = \"receive\"\nsubscribe = ['{{\"op\":\"subscribe\",\"conn\":{{{{conn}}}}}}']\n\
             timestamp = \"json:ts\"\ntimestamp_unit = \"ms\"\ngap = \"1s\"\n"
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    let _ = stop.send(());
    thread.join().unwrap();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert_eq!(subscribed.load(Relaxed), 4, "each connection subscribed once");
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(num(&summary, "messages.received"), (4 * PUSHES) as f64, "every pushed message");
    assert_eq!(num(&summary, "messages.sent"), 4.0, "the subscriptions");
    assert_eq!(num(&summary, "latency_ms.count"), (4 * PUSHES) as f64, "a one-way latency each");
    assert!(num(&summary, "latency_ms.p50") < 100.0);
    // Pushing ends a second after each connection opens; it closes 3 s or
    // more after that: one silence over 1 s each.
    assert_eq!(num(&summary, "counters.receive_gaps"), 4.0);
    assert_eq!(num(&summary, "counters.timestamps_missing"), 0.0);
    assert_eq!(num(&summary, "counters.timestamps_future"), 0.0);
}

#[test]
fn a_bad_messages_table_exits_2_naming_the_line() {
    let scratch = Scratch::new();
    let path = scratch.file(
        "bad.toml",
        "name = \"bad\"\n[target]\nurl = \"ws://127.0.0.1:9/\"\n[messages]\nmode = \"request\"\n\
         template = '{\"id\":1}'\nmatch = \"json:id\"\n",
    );
    let run = controller(&["check", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(run.code, 2, "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("bad.toml:7:9"), "names file, line and column:\n{}", run.stderr);
    assert!(run.stderr.contains("is 1 in every request"), "{}", run.stderr);
}
