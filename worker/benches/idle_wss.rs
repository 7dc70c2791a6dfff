//! Memory per idle connection, `wss://` against `ws://`: one worker engine
//! in this process opens 10,000 idle connections to relay processes on
//! loopback, and the marginal resident memory per connection is printed
//! for both schemes.
//!
//! `cargo bench -p stampede-worker --bench idle_wss`
//!
//! Each scheme is measured in a fresh child process (memory freed by one
//! run would otherwise be reused by the next and hide its cost). The
//! servers live in other processes, because a process may hold only
//! ~20,000 files here: this executable doubles as the relay (`idle_wss
//! relay ...`, what [`RelayProcesses`] runs), one process per 15,000
//! connections.

use std::net::IpAddr;
use std::time::Instant;

use clap::Parser;
use stampede_model::spec::{ConnectSpec, TlsSpec};
use stampede_proto::fleet::{Assign, PhaseStart, Snapshot};
use stampede_relay::config::RelayArgs;
use stampede_relay::tls::TlsSettings;
use stampede_relay::{RelayConfig, RelayProcesses};
use stampede_worker::capacity::raise_open_files_limit;
use stampede_worker::engine::Engine;
use stampede_worker::process::rss_bytes;
use tokio::sync::mpsc;

/// Connections at the first measurement (the base) and at the second.
const BASE: u64 = 2_000;
const TOP: u64 = 10_000;
/// Connections one relay process serves at most (as the controller plans).
const PER_RELAY: u64 = 15_000;
/// Source addresses: at most ~7,500 connections per address to one target
/// here before connect() slows down (README).
const SOURCES: [&str; 2] = ["127.0.0.1", "127.0.0.2"];

#[derive(Parser)]
struct RelayCli {
    #[command(flatten)]
    args: RelayArgs,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("relay") => relay(&args[1..]),
        Some("measure") => measure(args.get(2).map(String::as_str) == Some("wss")),
        _ => orchestrate(),
    }
}

/// Runs each measurement in a child process of its own and prints both.
fn orchestrate() {
    let exe = std::env::current_exe().expect("own path");
    let mut lines = Vec::new();
    for scheme in ["ws", "wss"] {
        let out = std::process::Command::new(&exe)
            .args(["measure", scheme])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run a measurement");
        assert!(out.status.success(), "the {scheme} measurement failed");
        lines.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    println!("idle connections, marginal RSS between {BASE} and {TOP} connections in one worker engine:");
    for line in lines {
        println!("  {line}");
    }
}

/// `idle_wss relay ...`: a relay process, as `controller relay` would be.
fn relay(args: &[String]) {
    raise_open_files_limit();
    let cli = RelayCli::parse_from(args);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        stampede_child::stop_on_signals(shutdown.clone());
        stampede_relay::config::serve(&cli.args, shutdown).await.expect("relay");
    });
}

/// Opens BASE, then TOP idle connections of one scheme and prints the
/// marginal RSS per connection.
fn measure(tls: bool) {
    raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let exe = std::env::current_exe().expect("own path");
        let ca = stampede_relay::pki::Ca::new("bench CA").unwrap();
        let server = ca.server(&["127.0.0.1"]).unwrap();
        let settings = TlsSettings { cert_pem: server.cert, key_pem: server.key, client_ca_pem: None };
        let processes = TOP.div_ceil(PER_RELAY);
        let config = RelayConfig { tls: tls.then_some(settings), ..RelayConfig::default() };
        let relays = RelayProcesses::start(&exe, processes, &config).await.expect("relay processes");
        let url = relays.ws_url().to_string();
        let spec = ConnectSpec {
            tls: TlsSpec { ca_pem: Some(ca.cert_pem().to_string()), ..Default::default() },
            ..Default::default()
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let assign = Assign {
            run_id: "bench".into(),
            target_url: url.clone(),
            message_interval_us: 0,
            payload_bytes: 64,
            connect_timeout_us: 10_000_000,
            run_start_unix_us: now.as_micros() as i64,
            clock_offset_us: 0,
            source_addresses: SOURCES.iter().map(|s| s.to_string()).collect(),
            reconnect: false,
            buffer_bytes: 512,
            connect_spec_json: spec.to_json(),
        };
        let (tx, mut rx) = mpsc::channel(64);
        let engine = Engine::start(&assign, "bench", &[] as &[IpAddr], tx).await.expect("engine");
        let empty = rss_bytes();
        let at_base = level(&engine, &mut rx, BASE, &url).await;
        let at_top = level(&engine, &mut rx, TOP, &url).await;
        let per_conn = (at_top as f64 - at_base as f64) / (TOP - BASE) as f64;
        let scheme = if tls { "wss://" } else { "ws:// " };
        println!(
            "{scheme} {:.2} KB per connection (RSS {:.1} MB empty, {:.1} MB at {BASE}, {:.1} MB at {TOP})",
            per_conn / 1000.0,
            empty as f64 / 1e6,
            at_base as f64 / 1e6,
            at_top as f64 / 1e6
        );
        engine.stop();
        while rx.recv().await.is_some() {}
        relays.stop().await;
    });
}

/// Moves the engine to `n` connections and returns the RSS once they are
/// open.
async fn level(engine: &Engine, rx: &mut mpsc::Receiver<Snapshot>, n: u64, url: &str) -> u64 {
    let phase = PhaseStart {
        index: 0,
        name: "hold".into(),
        connections: n,
        ramp_us: 4_000_000,
        duration_us: 3_600_000_000,
        ..Default::default()
    };
    engine.phase(phase).await;
    let started = Instant::now();
    let (opened, rss) = hold(rx, n).await;
    eprintln!(
        "{url}: {opened} opened in {:.1} s, RSS {:.1} MB",
        started.elapsed().as_secs_f64(),
        rss as f64 / 1e6
    );
    rss
}

/// Waits until `n` connections are open and two reports in a row agree
/// (the last handshakes' buffers are gone), then returns the connections
/// opened in all and this process's RSS.
async fn hold(rx: &mut mpsc::Receiver<Snapshot>, n: u64) -> (u64, u64) {
    let mut steady = 0;
    let mut opened = 0;
    while let Some(s) = rx.recv().await {
        opened += s.model_counters().expect("counters").connections_opened;
        let failed: u64 = s.errors.values().sum();
        assert_eq!(failed, 0, "connections failed: {:?}", s.errors);
        let active = s.gauges.map_or(0, |g| g.connections_active);
        steady = if active == n { steady + 1 } else { 0 };
        if steady == 2 {
            return (opened, rss_bytes());
        }
    }
    panic!("the engine ended before {n} connections were open");
}
