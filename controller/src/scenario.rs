//! The scenario file as written: TOML read with serde, every table with
//! `deny_unknown_fields`, values checked while they are read so that an
//! error points at the line and column of the offending value. The second
//! stage, [`crate::plan`], derives the schedule from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

use crate::connect::{JwtSection, SecretRef, redacted_headers};
use crate::threshold::{Condition, Metric};

/// A scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Names the results folder: `results/<name>-<timestamp>/`.
    pub name: Name,
    /// Free text, copied into the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What to load.
    pub target: TargetSection,
    /// How much load.
    #[serde(default)]
    pub load: LoadSection,
    /// What connections send and how answers are read (servers that do
    /// not echo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<crate::messages::MessagesSection>,
    /// A scripted session every connection runs (`[[flow]]`), instead of
    /// `[messages]`.
    #[serde(default, rename = "flow", skip_serializing_if = "Vec::is_empty")]
    pub flow: Vec<toml::Spanned<crate::flow::StepTable>>,
    /// The schedule as the fixed table (warmup, ramp-up, sustained,
    /// cooldown); the default when there is no `[[stage]]` list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<PhasesSection>,
    /// Client groups (`[[group]]`): native and browser clients sharing
    /// each phase's level by weight.
    #[serde(default, rename = "group", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<crate::groups::GroupSection>,
    /// The schedule as a list of load shapes, in order (`[[stage]]`),
    /// instead of `[phases]`.
    #[serde(default, rename = "stage", skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<crate::stages::StageSpec>,
    /// Who generates the load.
    #[serde(default)]
    pub fleet: FleetSection,
    /// Where results go.
    #[serde(default)]
    pub output: OutputSection,
    /// PASS/FAIL conditions: metric name = "< limit".
    #[serde(default)]
    pub thresholds: BTreeMap<Metric, Spanned<Condition>>,
}

/// `[target]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// A `ws://` URL of a server that echoes what it receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Spanned<String>>,
    /// Start the bundled relay in-process on a free loopback port.
    #[serde(default)]
    pub bundled: bool,
    /// Echo delay injected by the bundled relay, ms (for accuracy checks).
    #[serde(default)]
    pub bundled_delay_ms: u64,
    /// Prometheus endpoint of the target (`http://host:port/metrics`),
    /// scraped every second for its memory, CPU and connections; automatic
    /// for the bundled relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<Spanned<String>>,
    /// Relay processes sharing the port (default: in-process up to 15,000
    /// connections, then one process per 15,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_processes: Option<Count>,
    /// Bundled relay fault: echoes of messages received in a window leave
    /// `extra_ms` later. Times count from the run's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_fault_slow: Option<Spanned<FaultSlow>>,
    /// Bundled relay fault: at `at_s` close `fraction` of the open
    /// connections with close code 1011.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_fault_drop: Option<Spanned<FaultDrop>>,
    /// Bundled relay fault: grow its memory by this many MB per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_fault_leak_mb_per_min: Option<Spanned<LeakRate>>,
    /// Bundled relay fault: this share (0..1) of channel message deliveries
    /// is sent twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_fault_duplicate: Option<Spanned<f64>>,
    /// Bundled relay fault: this share (0..1) of channel message deliveries
    /// is held back and sent after the next one of the same channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_fault_reorder: Option<Spanned<f64>>,
    /// Bundled relay: messages each channel keeps for subscribers that come
    /// back (`subscribe` with `since`); 0 turns history off (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_history_messages: Option<Spanned<u64>>,
    /// Bundled relay: channel history older than this is dropped (default
    /// 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_history_age: Option<Spanned<Length>>,
    /// `wss://`: a CA certificate file (PEM) trusted beside the system's
    /// roots; relative to the scenario's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<Spanned<PathBuf>>,
    /// `wss://`: a client certificate file (PEM) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<Spanned<PathBuf>>,
    /// `wss://`: the client certificate's private key file (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<Spanned<PathBuf>>,
    /// `wss://`: the name sent as SNI and checked against the server's
    /// certificate, instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<Spanned<String>>,
    /// `wss://`: accept any certificate (only handshake signatures are
    /// checked); warned about in test.log and on stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<Spanned<bool>>,
    /// The bundled relay serves `wss://` with a CA and certificate the
    /// controller makes for the run (workers trust that CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_tls: Option<Spanned<bool>>,
    /// The bundled relay answers upgrades beyond this many open connections
    /// with HTTP 503 (a limit for a stress stage to break on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_max_connections: Option<Spanned<Count>>,
    /// The bundled relay requires an HS256 JWT signed with this secret:
    /// `bundled_jwt = { secret_env = "NAME" }` or `{ secret_file = "path" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled_jwt: Option<Spanned<SecretRef>>,
    /// Extra handshake headers; values are templates (`{{conn}}`) and may
    /// use `${VAR}`. Sensitive literal values are redacted in the results.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", serialize_with = "redacted_headers")]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// The `Origin` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Spanned<String>>,
    /// Subprotocols to offer; the server must pick one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subprotocols: Vec<Spanned<String>>,
    /// Query parameters added to the URL's; values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, Spanned<String>>,
    /// A JWT minted for every connection attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSection>,
}

/// `bundled_fault_slow = { start_s = 30, length_s = 20, extra_ms = 50 }`
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSlow {
    /// Start of the window, s from the run's start.
    pub start_s: Seconds,
    /// Length of the window, s.
    pub length_s: Length,
    /// Added echo delay, ms.
    pub extra_ms: ExtraMs,
}

/// `bundled_fault_drop = { at_s = 60, fraction = 0.3 }`
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDrop {
    /// When, s from the run's start.
    pub at_s: Seconds,
    /// Share of the open connections to close.
    pub fraction: Fraction,
}

/// `[load]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSection {
    /// Connections to hold during the sustained phase.
    pub connections: Count,
    /// Seconds between two messages on one connection; 0: connect only.
    pub message_interval_s: Seconds,
    /// Size of each message, bytes (at least 32: the stamp must fit).
    pub payload_bytes: PayloadBytes,
    /// Limit for TCP connect plus WebSocket upgrade, s (above 0).
    pub connect_timeout_s: Length,
    /// Open a new connection when one fails or the server closes it.
    pub reconnect: bool,
    /// Per-connection read buffer, bytes (512 .. 1 MiB).
    pub buffer_bytes: BufferBytes,
    /// Messages per second over the whole fleet (an open model for
    /// messages), instead of `message_interval_s`: each phase's
    /// per-connection interval is this rate spread over the connections the
    /// phase plans at its peak, so the rate holds at each phase's planned
    /// level (fewer connections than planned send fewer messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_rate: Option<Spanned<crate::stages::Rate>>,
}

impl Default for LoadSection {
    fn default() -> Self {
        LoadSection {
            connections: Count(100),
            message_interval_s: Seconds(1.0),
            payload_bytes: PayloadBytes(64),
            connect_timeout_s: Length(10.0),
            reconnect: true,
            buffer_bytes: BufferBytes(512),
            message_rate: None,
        }
    }
}

/// `[phases]`: run in this order; a phase of 0 s is skipped.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhasesSection {
    /// Ramp from 0 to `warmup_connections`, s.
    pub warmup_s: Seconds,
    /// Connections at the end of warmup (default: 10% of `load.connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_connections: Option<Spanned<u64>>,
    /// Ramp linearly to `load.connections`, s.
    pub ramp_up_s: Seconds,
    /// Hold `load.connections`, s.
    pub sustained_s: Seconds,
    /// Ramp down to 0, closing connections with close frames, s.
    pub cooldown_s: Seconds,
}

impl Default for PhasesSection {
    fn default() -> Self {
        PhasesSection {
            warmup_s: Seconds(5.0),
            warmup_connections: None,
            ramp_up_s: Seconds(10.0),
            sustained_s: Seconds(30.0),
            cooldown_s: Seconds(5.0),
        }
    }
}

/// `[fleet]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSection {
    /// Local worker processes to start (default: one per 15,000
    /// connections); with `remote`, how many workers to wait for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<Count>,
    /// Start no local workers: wait for remote ones to dial in at `listen`.
    pub remote: bool,
    /// Address of the fleet gRPC server (default 127.0.0.1:0 locally,
    /// 0.0.0.0:7700 for a remote fleet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// How long to wait for the workers to join, s (default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_timeout_s: Option<Seconds>,
    /// No worker gets more connections than this, whatever it claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_worker: Option<Count>,
    /// "rebalance" (default: the lost share goes to the other workers) or
    /// "abort".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_worker_lost: Option<crate::fleet_plan::LostPolicy>,
    /// What one worker costs per hour, for the estimate in `check`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_worker_hour: Option<Amount>,
    /// Refuse to start when the estimated cost is above this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<Amount>,
    /// Memory one worker has, MB (sizes the fleet and its manifests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_memory_mb: Option<Count>,
}

/// `[output]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Folder that holds the results folders.
    pub dir: PathBuf,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection { dir: PathBuf::from("results") }
    }
}

/// A count of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Int(n) if n >= 1 => Ok(Count(n as u64)),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not a count: give a whole number of at least 1"
            ))),
        }
    }
}

/// A TOML value where a number is expected, kept to say in words what was
/// written instead.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Value {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A duration in seconds: finite, not negative, at most a week.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

/// A TOML number, integer or float; anything else is an error in words.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match Value::deserialize(d)? {
        Value::Int(i) => Ok(i as f64),
        Value::Float(f) => Ok(f),
        other => Err(serde::de::Error::custom(format!("{other} is not a number"))),
    }
}

impl Seconds {
    /// Seconds from a duration as written (`20`, `"250ms"`, `"5m"`), checked
    /// to lie in 0 .. a week.
    pub fn parse(text: &str) -> Result<Seconds, String> {
        Seconds::checked(stampede_model::time::parse_duration(text)?)
    }

    fn checked(v: f64) -> Result<Seconds, String> {
        if (0.0..=7.0 * 86_400.0).contains(&v) {
            Ok(Seconds(v))
        } else {
            Err(format!("{v} s is out of range: give a duration from 0 to 604800 s (a week)"))
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let checked = match Value::deserialize(d)? {
            Value::Int(i) => Seconds::checked(i as f64),
            Value::Float(f) => Seconds::checked(f),
            Value::Text(t) => Seconds::parse(&t),
            Value::Bool(b) => Err(format!("{b} is not a duration: write seconds (20) or \"20s\", \"5m\"")),
        };
        checked.map_err(serde::de::Error::custom)
    }
}

/// A window length in seconds: above 0, at most a week.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Length(pub f64);

impl<'de> Deserialize<'de> for Length {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Seconds::deserialize(d)?.0;
        if v == 0.0 {
            return Err(serde::de::Error::custom("0 s: give a duration above 0 (up to 604800 s)"));
        }
        Ok(Length(v))
    }
}

/// An added delay in milliseconds: above 0, at most an hour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ExtraMs(pub f64);

impl<'de> Deserialize<'de> for ExtraMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = number(d)?;
        if !(v > 0.0 && v <= 3_600_000.0) {
            return Err(serde::de::Error::custom(format!(
                "extra_ms {v}: give milliseconds above 0 and at most 3600000"
            )));
        }
        Ok(ExtraMs(v))
    }
}

/// An amount of money: finite, not negative.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Amount(pub f64);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Int(i) if i >= 0 => Ok(Amount(i as f64)),
            Value::Float(v) if v.is_finite() && v >= 0.0 => Ok(Amount(v)),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not an amount: give a number of at least 0, e.g. 0.34"
            ))),
        }
    }
}

/// A share in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = number(d)?;
        if !(v > 0.0 && v <= 1.0) {
            return Err(serde::de::Error::custom(format!(
                "fraction {v}: give a share above 0 and at most 1, e.g. 0.3 for 30%"
            )));
        }
        Ok(Fraction(v))
    }
}

/// A memory growth rate in MB per minute: above 0, at most 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct LeakRate(pub f64);

impl<'de> Deserialize<'de> for LeakRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = number(d)?;
        if !(v > 0.0 && v <= 1_000_000.0) {
            return Err(serde::de::Error::custom(format!(
                "{v} MB per minute: give a rate above 0 and at most 1000000"
            )));
        }
        Ok(LeakRate(v))
    }
}

/// A payload size between 32 bytes (the stamp must fit) and 16 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PayloadBytes(pub u32);

impl<'de> Deserialize<'de> for PayloadBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = match Value::deserialize(d)? {
            Value::Int(n) => n,
            other => return Err(serde::de::Error::custom(format!("{other} is not a number of bytes"))),
        };
        use stampede_model::limits::{MAX_PAYLOAD_BYTES, MIN_PAYLOAD_BYTES};
        if !(i64::from(MIN_PAYLOAD_BYTES)..=i64::from(MAX_PAYLOAD_BYTES)).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "{n} bytes: give between {MIN_PAYLOAD_BYTES} (the stamp must fit) and {MAX_PAYLOAD_BYTES}"
            )));
        }
        Ok(PayloadBytes(n as u32))
    }
}

/// A read buffer size between 512 bytes and 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BufferBytes(pub u32);

impl<'de> Deserialize<'de> for BufferBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Int(n) if (512..=1 << 20).contains(&n) => Ok(BufferBytes(n as u32)),
            other => Err(serde::de::Error::custom(format!(
                "{other} bytes: give a read buffer between 512 and 1048576 (any message size works with any buffer)"
            ))),
        }
    }
}

/// A scenario name, usable in a folder name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Name(pub String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !s.starts_with('.');
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "name {s:?}: use 1-64 letters, digits, '-', '_' or '.' (it names the results folder)"
            )));
        }
        Ok(Name(s))
    }
}

/// A scenario error with the place it refers to.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{path}:{line}:{column}: {message}\n{snippet}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what to change.
        message: String,
        /// The line, with a caret under the column.
        snippet: String,
    },
}

impl ScenarioError {
    /// An error at byte offset `at` of `source`.
    pub fn at(path: &Path, source: &str, at: usize, message: impl Into<String>) -> ScenarioError {
        let at = at.min(source.len());
        let before = &source[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..at].chars().count() + 1;
        let text = source[line_start..].lines().next().unwrap_or("");
        let snippet = format!("{line:>4} | {text}\n     | {}^", " ".repeat(column - 1));
        ScenarioError::Invalid { path: path.to_path_buf(), line, column, message: message.into(), snippet }
    }
}

impl Scenario {
    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<(Scenario, String), ScenarioError> {
        let source = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.to_path_buf(), source })?;
        let scenario = Scenario::parse(path, &source)?;
        Ok((scenario, source))
    }

    /// Parses scenario text; `path` only names it in errors.
    pub fn parse(path: &Path, source: &str) -> Result<Scenario, ScenarioError> {
        toml::from_str::<Scenario>(source).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            ScenarioError::at(path, source, at, e.message().trim().to_string())
        })
    }
}
