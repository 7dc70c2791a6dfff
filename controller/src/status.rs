//! The status API of a run in progress (`controller run --status-addr
//! ADDR`, off by default), for dashboards, Prometheus and scripts:
//!
//! - `GET /health`: `ok` while the controller serves.
//! - `GET /status`: JSON: state (`running`, `finished`), scenario, phase,
//!   elapsed and planned seconds, the last second's row, the run's
//!   counters and errors so far, latency percentiles, workers.
//! - `GET /metrics`: the same live aggregate in the Prometheus text
//!   exposition format 0.0.4: counters as `stampede_<counter>_total`,
//!   errors by `cause`, gauges, latency and connect time as summaries in
//!   seconds (quantiles from the run's merged histograms).
//! - `POST /stop` with `Authorization: Bearer <fleet token>`: ends the run
//!   gracefully, as Ctrl-C does (results written). Without a fleet token
//!   given to the controller (`--token-file`), it is always refused.
//!
//! The run's task publishes a [`Status`] after each second's row; the
//! server only reads the latest. One request per connection, heads up to
//! 8 KiB, 5 s to send one: a slow or hostile client costs a task, briefly.
//! After the run the server keeps answering for [`LINGER`], so a scraper
//! sees the final figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use stampede_model::Counters;
use stampede_model::results::{MetricsRow, Percentiles, ThresholdOutcome};
use stampede_proto::auth::FleetToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the server answers after the run has ended.
pub const LINGER: Duration = Duration::from_secs(2);
/// Largest request head read.
const MAX_HEAD: usize = 8 << 10;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the API says, as of the last row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// `starting`, `running` or `finished`.
    pub state: &'static str,
    /// Scenario name.
    pub scenario: String,
    /// The phase of the last second.
    pub phase: String,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Seconds the schedule plans.
    pub duration_s: f64,
    /// The last second's row (as in metrics.csv).
    pub last_second: Option<MetricsRow>,
    /// The run's counters so far.
    pub counters: Counters,
    /// The run's errors so far, by cause.
    pub errors: BTreeMap<String, u64>,
    /// Round-trip latency of the run so far, ms (as summary.json's).
    pub latency_ms: Percentiles,
    /// Connect time of the run so far, ms.
    pub connect_ms: Percentiles,
    /// The workers.
    pub workers: Vec<WorkerStatus>,
    /// The load's target URL.
    pub target: String,
    /// The schedule, in order (as the run changes it: a stress stage that
    /// breaks ends early).
    pub phases: Vec<PhaseSpan>,
    /// The run's thresholds over the run so far, judged as summary.json
    /// judges the whole run at its end.
    pub thresholds: Vec<ThresholdOutcome>,
    /// Seconds so far in which a worker was saturated (their latency
    /// measures the load generator, not the target).
    pub generator_stalled_seconds: u64,
    /// The run's last lines of test.log, oldest first.
    pub log: Vec<String>,
}

/// One phase of the schedule.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSpan {
    /// Its name (`warmup`, `ramp-up`, `step-3`, ...).
    pub name: String,
    /// Its start, seconds since the run started.
    pub start_s: f64,
    /// Its length, seconds.
    pub duration_s: f64,
}

/// One worker, as the run sees it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    /// Its id.
    pub id: String,
    /// Taking part now.
    pub live: bool,
    /// Its client group.
    pub group: String,
    /// `live`, `finished`, `lost` or `banned`.
    pub state: &'static str,
    /// Its open connections at the last second.
    pub connections: u64,
    /// Its CPU at the last second, percent of one core.
    pub cpu_pct: f64,
    /// Its resident memory at the last second, MB.
    pub rss_mb: f64,
    /// Its clock offset (controller minus worker), ms.
    pub clock_offset_ms: f64,
}

/// Serves the API on `addr` until `done` fires and [`LINGER`] has passed;
/// `stop` is cancelled by an authorized `POST /stop`. Returns the bound
/// address.
pub async fn serve(
    addr: SocketAddr,
    status: watch::Receiver<Arc<Status>>,
    token: Option<FleetToken>,
    stop: CancellationToken,
    done: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let token = token.map(Arc::new);
    let clients = tasks.clone();
    tasks.spawn(async move {
        let lingering = async {
            done.cancelled().await;
            tokio::time::sleep(LINGER).await;
        };
        tokio::pin!(lingering);
        loop {
            tokio::select! {
                _ = &mut lingering => return,
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let (status, token, stop) = (status.clone(), token.clone(), stop.clone());
                    clients.spawn(async move {
                        let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(tcp, status, token, stop)).await;
                    });
                }
            }
        }
    });
    Ok(bound)
}

/// Reads one request and answers it.
async fn answer(
    mut tcp: TcpStream,
    status: watch::Receiver<Arc<Status>>,
    token: Option<Arc<FleetToken>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() >= MAX_HEAD {
            break false;
        }
        let n = match tokio::time::timeout(READ_TIMEOUT, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e),
        };
        head.extend_from_slice(&buf[..n.min(MAX_HEAD - head.len())]);
    };
    let (code, kind, body) =
        if complete { route(&head, &status, token.as_deref(), &stop) } else { too_large() };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(response.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    tcp.shutdown().await
}

type Response = (&'static str, &'static str, String);

fn too_large() -> Response {
    ("431 Request Header Fields Too Large", "text/plain", "request head over 8 KiB\n".into())
}

fn route(
    head: &[u8],
    status: &watch::Receiver<Arc<Status>>,
    token: Option<&FleetToken>,
    stop: &CancellationToken,
) -> Response {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return ("400 Bad Request", "text/plain", "not an HTTP/1.1 request\n".into());
    }
    let path = req.path.unwrap_or("/").split('?').next().unwrap_or("/");
    let text = "text/plain; charset=utf-8";
    match (req.method.unwrap_or(""), path) {
        ("GET", "/health") => ("200 OK", text, "ok\n".into()),
        ("GET", "/status") => {
            let s = status.borrow().clone();
            ("200 OK", "application/json", serde_json::to_string_pretty(&*s).expect("plain data") + "\n")
        }
        ("GET", "/metrics") => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", exposition(&status.borrow()))
        }
        ("POST", "/stop") => {
            let presented = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match (token, presented) {
                (None, _) => (
                    "403 Forbidden",
                    text,
                    "no fleet token was given to this controller (--token-file), so /stop is off\n".into(),
                ),
                (Some(t), Some(p)) if t.matches(p.as_bytes()) => {
                    stop.cancel();
                    ("202 Accepted", text, "stopping: results are being written\n".into())
                }
                (Some(_), _) => {
                    ("401 Unauthorized", text, "give Authorization: Bearer <the fleet token>\n".into())
                }
            }
        }
        (_, "/health" | "/status" | "/metrics" | "/stop") => {
            ("405 Method Not Allowed", text, "GET /health, /status, /metrics; POST /stop\n".into())
        }
        _ => ("404 Not Found", text, "GET /health, /status, /metrics; POST /stop\n".into()),
    }
}

/// The Prometheus text exposition of `s`.
pub fn exposition(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(8192);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {}", number(*v));
        }
    };
    for (name, v) in s.counters.iter() {
        let help = format!("stampede counter {name} over the run so far (README, Counters).");
        metric(&format!("stampede_{name}_total"), "counter", &help, &[(String::new(), v as f64)]);
    }
    let errors: Vec<(String, f64)> =
        s.errors.iter().map(|(cause, n)| (format!("{{cause=\"{}\"}}", label(cause)), *n as f64)).collect();
    metric("stampede_errors_total", "counter", "Errors over the run so far, by cause.", &errors);
    let row = s.last_second.as_ref();
    let gauges = [
        (
            "stampede_connections_active",
            "Open connections (browser sessions included) at the last second's end.",
            row.map(|r| r.connections_active as f64),
        ),
        (
            "stampede_connections_target",
            "Connections the plan asked for at the last second's end.",
            row.map(|r| r.connections_target as f64),
        ),
        ("stampede_elapsed_seconds", "Seconds since the run started.", Some(s.elapsed_s)),
        ("stampede_duration_seconds", "Seconds the schedule plans.", Some(s.duration_s)),
        (
            "stampede_workers_live",
            "Workers taking part now.",
            Some(s.workers.iter().filter(|w| w.live).count() as f64),
        ),
        (
            "stampede_worker_rss_bytes",
            "Resident memory of all workers at the last second.",
            row.map(|r| r.worker_rss_mb * 1e6),
        ),
    ];
    for (name, help, v) in gauges {
        if let Some(v) = v {
            metric(name, "gauge", help, &[(String::new(), v)]);
        }
    }
    let phase = label(&s.phase);
    metric(
        "stampede_phase_info",
        "gauge",
        "The phase running (1 for its name).",
        &[(format!("{{phase=\"{phase}\"}}"), 1.0)],
    );
    for (name, help, q) in [
        (
            "stampede_latency_seconds",
            "Round trip from the intended send time, over the run so far.",
            &s.latency_ms,
        ),
        ("stampede_connect_seconds", "Connect time (TCP, TLS, upgrade), over the run so far.", &s.connect_ms),
    ] {
        let mut samples: Vec<(String, f64)> =
            [(0.5, q.p50), (0.9, q.p90), (0.95, q.p95), (0.99, q.p99), (0.999, q.p999)]
                .iter()
                .filter(|_| q.count > 0)
                .map(|(quantile, ms)| (format!("{{quantile=\"{quantile}\"}}"), ms / 1000.0))
                .collect();
        samples.push(("_sum".into(), q.mean * q.count as f64 / 1000.0));
        samples.push(("_count".into(), q.count as f64));
        // `_sum` and `_count` are suffixes of the name, not labels.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {}", number(v));
        }
    }
    out
}

/// A sample value: integers without a fraction, NaN as Prometheus writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// A label value, escaped (backslash, quote, newline).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
