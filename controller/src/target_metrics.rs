//! The target server's own figures, scraped once a second from its
//! Prometheus `/metrics` while the run lasts: resident memory, CPU and open
//! connections, so a post-mortem can tell a server that leaks from a load
//! generator that does. Any server with the standard process collector
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`) qualifies.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// Longest scrape we wait for.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest response we read.
const MAX_RESPONSE: usize = 4 << 20;

/// One second of the target's figures; `None` where it does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetSample {
    /// Resident memory, bytes.
    pub rss_bytes: Option<f64>,
    /// CPU since the previous sample, percent of one core.
    pub cpu_pct: Option<f64>,
    /// Open connections.
    pub connections: Option<f64>,
}

/// What a metrics page says, before CPU becomes a rate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Reading {
    rss_bytes: Option<f64>,
    cpu_seconds: Option<f64>,
    connections: Option<f64>,
}

/// Metric names that count open connections, in order of preference.
const CONNECTION_GAUGES: &[&str] =
    &["relay_connections_active", "centrifugo_node_num_clients", "connections_active"];

fn parse(text: &str) -> Reading {
    let mut r = Reading::default();
    let mut conn_rank = usize::MAX;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(series), Some(value)) = (parts.next(), parts.next()) else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let name = series.split('{').next().unwrap_or(series);
        match name {
            "process_resident_memory_bytes" => r.rss_bytes = Some(value),
            "process_cpu_seconds_total" => r.cpu_seconds = Some(value),
            _ => {
                if let Some(rank) = CONNECTION_GAUGES.iter().position(|g| *g == name)
                    && rank < conn_rank
                {
                    conn_rank = rank;
                    r.connections = Some(value);
                }
            }
        }
    }
    r
}

/// `http://host:port/path` -> (host:port, path).
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    Some((authority, path.to_string()))
}

async fn fetch(authority: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: text/plain\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut body = Vec::new();
    (&mut stream).take(MAX_RESPONSE as u64).read_to_end(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or("no status line");
        return Err(std::io::Error::other(status.to_string()));
    }
    Ok(rest.to_string())
}

/// Checks that `url` is an `http://` URL.
pub fn valid_url(url: &str) -> bool {
    split_url(url).is_some()
}

/// Scrapes `url` in the middle of every second of the run until `stop`,
/// sending `(second, sample)`. A failed scrape leaves its second empty.
pub async fn scrape(
    url: String,
    run_start: Instant,
    out: mpsc::Sender<(u64, TargetSample)>,
    stop: CancellationToken,
) {
    let Some((authority, path)) = split_url(&url) else { return };
    let mut last: Option<(Instant, f64)> = None;
    let mut warned = false;
    for second in 0u64.. {
        let at = run_start + Duration::from_millis(second * 1000 + 500);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        let reading = match timeout(SCRAPE_TIMEOUT, fetch(&authority, &path)).await {
            Ok(Ok(text)) => parse(&text),
            Ok(Err(e)) => {
                if !warned {
                    tracing::warn!("target metrics {url}: {e}");
                    warned = true;
                }
                continue;
            }
            Err(_) => continue,
        };
        let now = Instant::now();
        let cpu_pct = match (last, reading.cpu_seconds) {
            (Some((then, before)), Some(cpu)) => {
                let wall = now.duration_since(then).as_secs_f64();
                (wall > 0.0).then(|| (cpu - before).max(0.0) / wall * 100.0)
            }
            _ => None,
        };
        if let Some(cpu) = reading.cpu_seconds {
            last = Some((now, cpu));
        }
        let sample = TargetSample { rss_bytes: reading.rss_bytes, cpu_pct, connections: reading.connections };
        if out.send((second, sample)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_process_and_connection_metrics() {
        let page = "# HELP process_resident_memory_bytes Resident memory.\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 1.2e+07\n\
                    process_cpu_seconds_total{pid=\"1\"} 3.5\n\
                    connections_active 9\n\
                    relay_connections_active 42\n\
                    garbage line\n";
        let r = parse(page);
        assert_eq!(r.rss_bytes, Some(12_000_000.0));
        assert_eq!(r.cpu_seconds, Some(3.5));
        assert_eq!(r.connections, Some(42.0), "the preferred gauge wins");
        assert_eq!(parse("nothing here"), Reading::default());
    }

    #[test]
    fn splits_urls() {
        assert_eq!(split_url("http://127.0.0.1:9/metrics"), Some(("127.0.0.1:9".into(), "/metrics".into())));
        assert_eq!(split_url("http://host"), Some(("host:80".into(), "/".into())));
        assert_eq!(split_url("https://host/metrics"), None);
    }

    #[tokio::test]
    async fn scrapes_the_bundled_relay() {
        let stop = CancellationToken::new();
        let relay = stampede_relay::Relay::start(Default::default(), stop.clone()).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let url = format!("http://{}/metrics", relay.local_addr());
        let start = Instant::now() - Duration::from_millis(400);
        tokio::spawn(scrape(url, start, tx, stop.clone()));
        let (second, first) = rx.recv().await.unwrap();
        assert_eq!(second, 0);
        assert!(first.rss_bytes.unwrap() > 1e6);
        assert_eq!(first.connections, Some(0.0));
        assert_eq!(first.cpu_pct, None, "a rate needs two samples");
        let (_, next) = rx.recv().await.unwrap();
        assert!(next.cpu_pct.is_some());
        stop.cancel();
    }
}
