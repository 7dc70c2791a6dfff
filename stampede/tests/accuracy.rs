//! Measurement accuracy: a relay echoes after an injected 20 ms, two worker
//! processes measure it, and the merged percentiles must say 20 ms, not 21
//! or 22 (no timer-granularity or scheduling error of ours).
//!
//! The relay's sleep, the kernel and the host's other tenants also add to
//! every round trip, and on a shared machine that tail moves from run to run
//! (CI once read p99 23.6 ms). So a minimal reference client (two plain
//! threads, blocking sockets, hand-made frames: nothing of ours) measures the
//! same relay at the same time, and stampede is judged against the looser
//! of the fixed bounds (p50 21 ms, p99 23 ms) and what the reference saw
//! plus README's accuracy goal (its p50 plus 0.5 ms, its p99 plus 2 ms).
//! CI once read our p99 1.5 ms over the reference's (25.487 against 23.983
//! ms, p50s 20.303 and 20.319) where three reruns on the same machine
//! gave -0.45 to +0.29 ms: one connection on its own thread and 200 on two
//! workers do not meet a host's hiccup alike, so the tail is held to the
//! goal, not to less.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Relay, Scratch, num, read_json};
use stampede_model::histogram::new_histogram;
use stampede_model::results::Percentiles;

#[test]
fn an_injected_20ms_delay_is_measured_as_20ms() {
    let relay = Relay::with(&["--delay-ms", "20"]);
    let scratch = Scratch::new();
    let path = scratch.file(
        "accuracy.toml",
        &format!(
            r#"
name = "accuracy"
[target]
url = "ws://127.0.0.1:{}/ws"
[load]
connections = 200
message_interval_s = 0.1
[phases]
warmup_s = 1
ramp_up_s = 2
sustained_s = 8
cooldown_s = 1
[fleet]
workers = 2
"#,
            relay.1
        ),
    );
    let reference = Reference::start(relay.1, Duration::from_millis(5));
    let run = scratch.run(&path, Duration::from_secs(90));
    let (reference, sent) = reference.stop();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(summary["workers"], 2);
    for worker in summary["worker_details"].as_array().unwrap() {
        assert!(worker["snapshots"].as_u64().unwrap() >= 10, "both workers reported: {worker}");
    }
    let (p50, p99) = (num(&summary, "latency_ms.p50"), num(&summary, "latency_ms.p99"));
    eprintln!(
        "injected 20 ms: measured p50 {p50} ms, p99 {p99} ms; reference client at the same time: p50 {} ms, p99 {} ms",
        reference.p50, reference.p99
    );
    assert_eq!(reference.count, sent, "the reference got every echo");
    assert!(reference.count >= 1500, "{} reference samples", reference.count);
    // The relay really delays (an echo before 20 ms would be a relay bug);
    // how far past 20 ms its echoes land is the host's, read by the
    // reference (CI once saw its p50 at 21.007 ms and p99 at 43.6 ms on a
    // busy host).
    assert!(reference.p50 >= 20.0, "the relay echoes after 20 ms: reference p50 {}", reference.p50);
    assert!(num(&summary, "latency_ms.count") > 15_000.0);
    // Our p50 adds at most 0.5 ms (README's accuracy goal) to what a
    // client with nothing of ours measured at the same time.
    let middle = 21.0_f64.max(reference.p50 + 0.5);
    assert!(
        (20.0..=middle).contains(&p50),
        "p50 {p50} ms, over {middle} ms (reference p50 {} ms)",
        reference.p50
    );
    // p99 within 2 ms of the reference's (README's accuracy goal).
    let tail = 23.0_f64.max(reference.p99 + 2.0);
    assert!(p99 < tail, "p99 {p99} ms, over {tail} ms (reference p99 {} ms)", reference.p99);
    assert!(num(&summary, "latency_ms.max") >= 20.0, "never below the injected delay");
    assert_eq!(num(&summary, "messages.lost"), 0.0);
}

/// One WebSocket connection to the relay's echo, written by hand: a writer
/// thread sends the sequence number as a masked text frame every interval,
/// a reader thread times each echo from its intended send time, as stampede
/// does.
struct Reference {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    writer: JoinHandle<()>,
    reader: JoinHandle<Percentiles>,
}

impl Reference {
    fn start(port: u16, interval: Duration) -> Reference {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket.set_nodelay(true).unwrap();
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        write!(
            socket,
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            socket.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
            assert!(head.len() < 4096, "handshake answer too long");
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));

        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let start = Instant::now() + Duration::from_millis(10);
        let mut out = socket.try_clone().unwrap();
        let writer = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                for seq in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let due = start + interval * seq as u32;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    out.write_all(&masked_text(seq.to_string().as_bytes(), seq)).unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let reader = std::thread::spawn(move || {
            socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut latency = new_histogram();
            let mut header = [0u8; 2];
            // Ends when the writer has stopped and nothing came for 2 s.
            while socket.read_exact(&mut header).is_ok() {
                let len = usize::from(header[1] & 0x7f);
                assert!(header[1] & 0x80 == 0 && len < 126, "a short unmasked frame from the server");
                let mut payload = vec![0u8; len];
                socket.read_exact(&mut payload).unwrap();
                if header[0] & 0x0f != 1 {
                    continue; // a ping or other control frame: not an echo
                }
                let seq: u64 = std::str::from_utf8(&payload).unwrap().parse().unwrap();
                let took = Instant::now() - (start + interval * seq as u32);
                latency.record(took.as_micros() as u64).unwrap();
            }
            Percentiles::of(&latency)
        });
        Reference { stop, sent, writer, reader }
    }

    /// Stops sending, waits for the last echoes; returns the latency and the
    /// number of messages sent.
    fn stop(self) -> (Percentiles, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.writer.join().unwrap();
        (self.reader.join().unwrap(), self.sent.load(Ordering::Relaxed))
    }
}

/// A final text frame carrying `payload` (under 126 bytes), masked as a
/// client must (RFC 6455 5.3) with a key that changes per frame.
fn masked_text(payload: &[u8], seq: u64) -> Vec<u8> {
    let mask = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    let mask = mask.to_be_bytes();
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}
