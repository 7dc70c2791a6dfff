//! Relay configuration.
//!
//! Kept in its own module so the binary, the controller and tests can all
//! build a relay from plain values without pulling in CLI parsing.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a [`Relay`](crate::Relay) listens and behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Address to bind. Port 0 picks a free port, which is what tests and
    /// the in-process controller want.
    pub listen: SocketAddr,
    /// Injected echo delay, to emulate a slow backend without serialising
    /// the connection: each message is echoed at its receive time + delay.
    pub delay: Duration,
    /// Set `SO_REUSEPORT` so several relay processes can share one port and
    /// let the kernel spread connections across them.
    pub reuse_port: bool,
    /// Upper bound on concurrent WebSocket sessions; upgrades beyond it get
    /// `503`. 0 means unlimited.
    pub max_connections: usize,
    /// Anomalies injected on purpose (none by default).
    pub faults: Faults,
    /// Serve `wss://` with these certificates (and, with a client CA,
    /// require client certificates); `None`: plain `ws://`.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Require an HS256 JWT signed with this secret on every upgrade
    /// (`401` otherwise).
    pub jwt_secret: Option<crate::jwt::JwtSecret>,
    /// Channels (`/pubsub`, `POST /publish/<channel>`): history, limits and
    /// their test faults.
    pub pubsub: PubsubConfig,
    /// Whether /metrics gives this process's memory and CPU. Off for a
    /// relay inside another program (the controller's bundled relay): those
    /// figures would be the program's, not the relay's.
    pub process_figures: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            delay: Duration::ZERO,
            reuse_port: false,
            max_connections: 0,
            faults: Faults::default(),
            tls: None,
            jwt_secret: None,
            pubsub: PubsubConfig::default(),
            process_figures: true,
        }
    }
}

/// Channels: how much history each keeps, global limits, and the delivery
/// faults tests use. Channels live in one relay process (several processes
/// sharing a port do not share channels).
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubConfig {
    /// Messages kept per channel for `subscribe` with `since`; 0 turns
    /// history off. Flag: `--history-messages`.
    pub history_messages: usize,
    /// History entries older than this are dropped. Flag: `--history-age-s`.
    pub history_age: Duration,
    /// Bytes of history kept across all channels (each entry costs its
    /// frame plus a fixed overhead); beyond it the oldest entries of any
    /// channel go first. Flag: `--history-bytes`.
    pub history_bytes: usize,
    /// Channels that may exist at once; creating one more is refused.
    /// Flag: `--max-channels`.
    pub max_channels: usize,
    /// Fault: this share of message deliveries is sent twice. Flag:
    /// `--fault-duplicate FRACTION`.
    pub fault_duplicate: Option<f64>,
    /// Fault: this share of message deliveries is held and sent after the
    /// next delivery of the same channel to the same connection. Flag:
    /// `--fault-reorder FRACTION`.
    pub fault_reorder: Option<f64>,
}

/// Default of `--history-messages`.
pub const DEFAULT_HISTORY_MESSAGES: usize = 1000;
/// Default of `--history-age-s`.
pub const DEFAULT_HISTORY_AGE_S: f64 = 300.0;
/// Default of `--history-bytes`: 64 MiB.
pub const DEFAULT_HISTORY_BYTES: usize = 64 << 20;
/// Default of `--max-channels`.
pub const DEFAULT_MAX_CHANNELS: usize = 100_000;

impl Default for PubsubConfig {
    fn default() -> Self {
        Self {
            history_messages: DEFAULT_HISTORY_MESSAGES,
            history_age: Duration::from_secs_f64(DEFAULT_HISTORY_AGE_S),
            history_bytes: DEFAULT_HISTORY_BYTES,
            max_channels: DEFAULT_MAX_CHANNELS,
            fault_duplicate: None,
            fault_reorder: None,
        }
    }
}

impl PubsubConfig {
    /// The `relay` flags for the settings that differ from the defaults.
    pub fn to_args(&self) -> Vec<String> {
        let default = PubsubConfig::default();
        let mut args = Vec::new();
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_string());
            args.push(value);
        };
        if self.history_messages != default.history_messages {
            push("--history-messages", self.history_messages.to_string());
        }
        if self.history_age != default.history_age {
            push("--history-age-s", self.history_age.as_secs_f64().to_string());
        }
        if self.history_bytes != default.history_bytes {
            push("--history-bytes", self.history_bytes.to_string());
        }
        if self.max_channels != default.max_channels {
            push("--max-channels", self.max_channels.to_string());
        }
        if let Some(f) = self.fault_duplicate {
            push("--fault-duplicate", f.to_string());
        }
        if let Some(f) = self.fault_reorder {
            push("--fault-reorder", f.to_string());
        }
        args
    }
}

/// Faults injected on purpose, so load tests (and tests of the tools that
/// read their results) can produce realistic anomalies. Times count from
/// [`Relay::start`](crate::Relay::start), or, with `external_clock`, from
/// the instant given to
/// [`Relay::start_fault_clock`](crate::Relay::start_fault_clock).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Extra echo delay during a window. Flag: `--fault-slow START_S,LENGTH_S,EXTRA_MS`.
    pub slow: Option<SlowWindow>,
    /// Close a share of the open WebSocket connections at one moment, with
    /// close code 1011. Flag: `--fault-drop AT_S,FRACTION`.
    pub drop: Option<DropAt>,
    /// Grow memory by this many MB (10^6 bytes) per minute, steadily, kept
    /// until shutdown (at most [`LEAK_CAP_BYTES`]). Flag:
    /// `--fault-leak-mb-per-min MB`.
    pub leak_mb_per_min: Option<f64>,
    /// Fault times count from the instant passed to
    /// [`Relay::start_fault_clock`](crate::Relay::start_fault_clock) (the
    /// controller passes its run start) instead of from `Relay::start`; no
    /// fault fires before that call. Flag: `--fault-clock-stdin`.
    pub external_clock: bool,
}

/// Echoes of messages received in `[start, start + length)` leave after
/// the relay's delay plus `extra`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowWindow {
    /// Offset of the window from the fault clock's start.
    pub start: Duration,
    /// Length of the window.
    pub length: Duration,
    /// Added echo delay.
    pub extra: Duration,
}

/// At `at`, `round(fraction * open)` of the WebSocket connections open at
/// that moment are closed with code 1011 (internal error).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropAt {
    /// Offset from the fault clock's start.
    pub at: Duration,
    /// Share of the open connections to close, in (0, 1].
    pub fraction: f64,
}

/// The leak fault stops growing at this many bytes.
pub const LEAK_CAP_BYTES: u64 = 4 << 30;

/// Longest offset a fault time may have: a week, in seconds.
const MAX_FAULT_S: f64 = 7.0 * 86_400.0;
/// Largest injected extra delay, ms: an hour.
const MAX_EXTRA_MS: f64 = 3_600_000.0;
/// Largest leak rate, MB per minute.
const MAX_LEAK_MB_PER_MIN: f64 = 1_000_000.0;

impl Faults {
    /// Whether any fault is configured.
    pub fn any(&self) -> bool {
        self.slow.is_some() || self.drop.is_some() || self.leak_mb_per_min.is_some()
    }

    /// The `relay` flags that configure these faults (`--fault-clock-stdin`
    /// included when `external_clock` is set and a fault is configured).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(s) = &self.slow {
            args.push("--fault-slow".to_string());
            args.push(format!(
                "{},{},{}",
                s.start.as_secs_f64(),
                s.length.as_secs_f64(),
                s.extra.as_secs_f64() * 1000.0
            ));
        }
        if let Some(d) = &self.drop {
            args.push("--fault-drop".to_string());
            args.push(format!("{},{}", d.at.as_secs_f64(), d.fraction));
        }
        if let Some(mb) = self.leak_mb_per_min {
            args.push("--fault-leak-mb-per-min".to_string());
            args.push(mb.to_string());
        }
        if self.external_clock && self.any() {
            args.push("--fault-clock-stdin".to_string());
        }
        args
    }
}

/// Splits `text` at commas into exactly `N` finite numbers.
fn numbers<const N: usize>(text: &str) -> Option<[f64; N]> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() != N {
        return None;
    }
    let mut out = [0.0; N];
    for (slot, part) in out.iter_mut().zip(parts) {
        *slot = part.parse::<f64>().ok().filter(|v| v.is_finite())?;
    }
    Some(out)
}

fn offset_ok(s: f64) -> bool {
    (0.0..=MAX_FAULT_S).contains(&s)
}

/// Parses `--fault-slow START_S,LENGTH_S,EXTRA_MS`.
pub fn parse_slow(text: &str) -> Result<SlowWindow, String> {
    const USAGE: &str = "--fault-slow takes START_S,LENGTH_S,EXTRA_MS, e.g. 30,20,50 \
        (from 30 s for 20 s, echoes 50 ms later)";
    let [start, length, extra] = numbers::<3>(text).ok_or(USAGE)?;
    if !offset_ok(start) || !offset_ok(length) || length == 0.0 {
        return Err(format!("{USAGE}; START_S must be 0..{MAX_FAULT_S} and LENGTH_S above 0"));
    }
    if !(extra > 0.0 && extra <= MAX_EXTRA_MS) {
        return Err(format!("{USAGE}; EXTRA_MS must be above 0 and at most {MAX_EXTRA_MS}"));
    }
    Ok(SlowWindow {
        start: Duration::from_secs_f64(start),
        length: Duration::from_secs_f64(length),
        extra: Duration::from_secs_f64(extra / 1000.0),
    })
}

/// Parses `--fault-drop AT_S,FRACTION`.
pub fn parse_drop(text: &str) -> Result<DropAt, String> {
    const USAGE: &str = "--fault-drop takes AT_S,FRACTION, e.g. 60,0.3 \
        (at 60 s close 30% of the open connections)";
    let [at, fraction] = numbers::<2>(text).ok_or(USAGE)?;
    if !offset_ok(at) {
        return Err(format!("{USAGE}; AT_S must be 0..{MAX_FAULT_S}"));
    }
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(format!("{USAGE}; FRACTION must be above 0 and at most 1"));
    }
    Ok(DropAt { at: Duration::from_secs_f64(at), fraction })
}

/// Parses `--fault-leak-mb-per-min MB`.
pub fn parse_leak(text: &str) -> Result<f64, String> {
    let usage = "--fault-leak-mb-per-min takes MB per minute above 0, e.g. 5 or 0.5";
    match text.trim().parse::<f64>() {
        Ok(mb) if mb > 0.0 && mb <= MAX_LEAK_MB_PER_MIN => Ok(mb),
        _ => Err(usage.to_string()),
    }
}

/// Parses `--history-age-s S`.
pub fn parse_history_age(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && offset_ok(s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("--history-age-s takes seconds above 0 and at most {MAX_FAULT_S}, e.g. 300 or 0.5")),
    }
}

/// Parses `--max-channels N` (at least 1).
fn parse_max_channels(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("--max-channels takes a number of channels, at least 1".to_string()),
    }
}

/// A share of deliveries for `flag`: above 0, at most 1.
fn fraction(flag: &str, text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("{flag} takes a FRACTION of deliveries above 0 and at most 1, e.g. 0.1")),
    }
}

/// Parses `--fault-duplicate FRACTION`.
pub fn parse_duplicate(text: &str) -> Result<f64, String> {
    fraction("--fault-duplicate", text)
}

/// Parses `--fault-reorder FRACTION`.
pub fn parse_reorder(text: &str) -> Result<f64, String> {
    fraction("--fault-reorder", text)
}

/// Flags of the `relay` binary (and of `controller relay`, which the
/// controller starts when a run needs more than one relay process).
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Injected echo delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Set SO_REUSEPORT so several relays can share the port.
    #[arg(long)]
    pub reuse_port: bool,
    /// Maximum concurrent WebSocket connections (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,
    /// Fault: echo EXTRA_MS later for messages received from START_S for
    /// LENGTH_S seconds (counted from the relay's start).
    #[arg(long, value_name = "START_S,LENGTH_S,EXTRA_MS", value_parser = parse_slow)]
    pub fault_slow: Option<SlowWindow>,
    /// Fault: at AT_S seconds close FRACTION of the open WebSocket
    /// connections with close code 1011.
    #[arg(long, value_name = "AT_S,FRACTION", value_parser = parse_drop)]
    pub fault_drop: Option<DropAt>,
    /// Fault: grow memory steadily by MB (10^6 bytes) per minute, kept until
    /// shutdown (at most 4 GiB).
    #[arg(long, value_name = "MB", value_parser = parse_leak)]
    pub fault_leak_mb_per_min: Option<f64>,
    /// Count fault times from a UNIX time in microseconds read as one line on
    /// stdin (what the controller sends: its run start) instead of from the
    /// relay's start; no fault fires before the line arrives.
    #[arg(long)]
    pub fault_clock_stdin: bool,
    /// Serve wss:// (TLS) with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Require an HS256 JWT on every upgrade, signed with the secret in
    /// this environment variable (never on the command line, where `ps`
    /// shows it).
    #[arg(long, value_name = "NAME", conflicts_with = "jwt_secret_file")]
    pub jwt_secret_env: Option<String>,
    /// Require an HS256 JWT on every upgrade, signed with the secret in
    /// this file (trailing newline ignored).
    #[arg(long, value_name = "FILE")]
    pub jwt_secret_file: Option<std::path::PathBuf>,
    /// Channels: messages of history kept per channel, replayed to a
    /// subscribe with `since` (0 = no history).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HISTORY_MESSAGES)]
    pub history_messages: usize,
    /// Channels: history entries older than this many seconds are dropped.
    #[arg(long = "history-age-s", value_name = "S", default_value = "300", value_parser = parse_history_age)]
    pub history_age: Duration,
    /// Channels: bytes of history kept across all channels; the oldest
    /// entries go first.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_HISTORY_BYTES)]
    pub history_bytes: usize,
    /// Channels: how many may exist at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CHANNELS, value_parser = parse_max_channels)]
    pub max_channels: usize,
    /// Fault: send FRACTION of the channel message deliveries twice (of N
    /// deliveries exactly floor(N * FRACTION), spread evenly).
    #[arg(long, value_name = "FRACTION", value_parser = parse_duplicate)]
    pub fault_duplicate: Option<f64>,
    /// Fault: hold FRACTION of the channel message deliveries and send each
    /// after the next delivery of its channel to the same connection.
    #[arg(long, value_name = "FRACTION", value_parser = parse_reorder)]
    pub fault_reorder: Option<f64>,
}

impl RelayArgs {
    /// The TLS settings the flags name, read from their files.
    pub fn tls(&self) -> Result<Option<crate::tls::TlsSettings>, String> {
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
        };
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        Ok(Some(crate::tls::TlsSettings {
            cert_pem: read("--tls-cert", cert)?,
            key_pem: read("--tls-key", key)?,
            client_ca_pem: self.tls_client_ca.as_deref().map(|p| read("--tls-client-ca", p)).transpose()?,
        }))
    }

    /// The configuration these flags describe.
    pub fn config(&self) -> RelayConfig {
        RelayConfig {
            listen: self.listen,
            delay: Duration::from_millis(self.delay_ms),
            reuse_port: self.reuse_port,
            max_connections: self.max_connections,
            faults: Faults {
                slow: self.fault_slow,
                drop: self.fault_drop,
                leak_mb_per_min: self.fault_leak_mb_per_min,
                external_clock: self.fault_clock_stdin,
            },
            tls: None,
            jwt_secret: None,
            pubsub: PubsubConfig {
                history_messages: self.history_messages,
                history_age: self.history_age,
                history_bytes: self.history_bytes,
                max_channels: self.max_channels,
                fault_duplicate: self.fault_duplicate,
                fault_reorder: self.fault_reorder,
            },
            // A relay process of its own.
            process_figures: true,
        }
    }

    /// The JWT secret the flags name, read from its variable or file.
    pub fn jwt_secret(&self) -> Result<Option<crate::jwt::JwtSecret>, String> {
        let bytes = match (&self.jwt_secret_env, &self.jwt_secret_file) {
            (Some(name), _) => std::env::var(name)
                .map_err(|_| format!("--jwt-secret-env {name}: the variable is not set"))?
                .into_bytes(),
            (None, Some(path)) => {
                let mut b =
                    std::fs::read(path).map_err(|e| format!("--jwt-secret-file {}: {e}", path.display()))?;
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                b
            }
            (None, None) => return Ok(None),
        };
        if bytes.is_empty() {
            return Err("the JWT secret is empty".into());
        }
        Ok(Some(crate::jwt::JwtSecret::new(bytes)))
    }
}

/// The instant of a UNIX time in microseconds, on this process's monotonic
/// clock (`None` if the text is not such a number).
pub fn instant_of_unix_us(text: &str) -> Option<Instant> {
    let us: u64 = text.trim().parse().ok()?;
    let wall = UNIX_EPOCH + Duration::from_micros(us);
    let (now_wall, now) = (SystemTime::now(), Instant::now());
    match wall.duration_since(now_wall) {
        Ok(ahead) => now.checked_add(ahead),
        Err(behind) => now.checked_sub(behind.duration()),
    }
}

/// What the relay prints on stdout once it listens; whoever started it may
/// read the URL from this line.
pub const READY_PREFIX: &str = "relay listening on ";

/// Runs a relay until `shutdown`, announcing its URL on stdout.
pub async fn serve(
    args: &RelayArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), crate::RelayError> {
    let mut config = args.config();
    config.tls = args.tls().map_err(crate::RelayError::Config)?;
    config.jwt_secret = args.jwt_secret().map_err(crate::RelayError::Config)?;
    let relay = crate::Relay::start(config, shutdown.clone()).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{READY_PREFIX}{}", relay.ws_url());
        let _ = out.flush();
    }
    if args.fault_clock_stdin {
        // A blocking read on a thread of its own: tokio's stdin is not
        // enabled here, and the line comes once.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                let _ = tx.send(line);
            }
        });
        tokio::select! {
            line = rx => match line.ok().as_deref().map(|l| (l, instant_of_unix_us(l))) {
                Some((_, Some(epoch))) => relay.start_fault_clock(epoch),
                Some((line, None)) => {
                    tracing::warn!("--fault-clock-stdin: {line:?} is not a UNIX time in microseconds; faults stay off");
                }
                None => tracing::warn!("--fault-clock-stdin: stdin closed; faults stay off"),
            },
            () = shutdown.cancelled() => {}
        }
    }
    shutdown.cancelled().await;
    relay.wait().await;
    Ok(())
}
