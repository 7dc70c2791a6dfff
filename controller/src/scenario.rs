//! The scenario file as written: TOML read with serde, every table with
//! `deny_unknown_fields`, values checked while they are read so that an
//! error points at the line and column of the offending value. The second
//! stage, [`crate::plan`], derives the schedule from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

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
    /// The schedule.
    #[serde(default)]
    pub phases: PhasesSection,
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
    /// Size of each message, bytes (at least 64: the stamp must fit).
    pub payload_bytes: PayloadBytes,
    /// Limit for TCP connect plus WebSocket upgrade, s.
    pub connect_timeout_s: Seconds,
    /// Open a new connection when one fails or the server closes it.
    pub reconnect: bool,
    /// Per-connection read buffer, bytes.
    pub buffer_bytes: u32,
}

impl Default for LoadSection {
    fn default() -> Self {
        LoadSection {
            connections: Count(100),
            message_interval_s: Seconds(1.0),
            payload_bytes: PayloadBytes(64),
            connect_timeout_s: Seconds(10.0),
            reconnect: true,
            buffer_bytes: 512,
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
        let n = u64::deserialize(d)?;
        if n == 0 {
            return Err(serde::de::Error::custom("must be at least 1"));
        }
        Ok(Count(n))
    }
}

/// A duration in seconds: finite, not negative, at most a week.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

/// A TOML number, integer or float.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Float(f64),
    }
    Ok(match Num::deserialize(d)? {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    })
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = number(d)?;
        if !(0.0..=7.0 * 86_400.0).contains(&v) {
            return Err(serde::de::Error::custom(format!(
                "{v} is not a duration: give seconds between 0 and 604800"
            )));
        }
        Ok(Seconds(v))
    }
}

/// A window length in seconds: above 0, at most a week.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Length(pub f64);

impl<'de> Deserialize<'de> for Length {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = number(d)?;
        if !(v > 0.0 && v <= 7.0 * 86_400.0) {
            return Err(serde::de::Error::custom(format!(
                "length {v}: give seconds above 0 and at most 604800"
            )));
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

/// A payload size between 64 bytes and 16 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PayloadBytes(pub u32);

impl<'de> Deserialize<'de> for PayloadBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if !(64..=16 << 20).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "{n} bytes: give between 64 (the stamp must fit) and 16777216"
            )));
        }
        Ok(PayloadBytes(n as u32))
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
