//! `[[flow]]`: scripted sessions as a scenario writes them, checked and read
//! into the [`FlowSpec`] every worker runs. Each `[[flow]]` table is one
//! step, `step = "KIND"` says what it does, and only the keys of that kind
//! are accepted:
//!
//! ```toml
//! [[flow]]
//! step = "connect"
//!
//! [[flow]]
//! step = "expect"
//! name = "established"            # metric name (default: the kind, numbered)
//! json = "op"                     # with equals = VALUE or matches = "RE";
//! equals = "connection_established"  # or regex = "RE" on the whole text
//! timeout = "5s"
//! capture = { id = "json:id" }    # or "regex:RE" (its first group)
//!
//! [[flow]]
//! step = "loop"
//! count = 10                      # and/or duration = "30s"
//! steps = [
//!   { step = "http", method = "POST", path = "/publish/conn/{{var.id}}", body = '{"n":{{seq}}}', status = 200 },
//!   { step = "expect", json = "op", equals = "message" },
//!   { step = "sleep", min = "100ms", max = "300ms" },   # or duration = "1s"
//! ]
//! ```
//!
//! Everything that can be checked before a run is checked here, at the line
//! and column of the value at fault: templates parsed (`${VAR}` expanded,
//! `{{jwt}}` refused, `{{var.NAME}}` only after a step captured NAME),
//! regular expressions compiled, JSON paths parsed, the WebSocket opened
//! before it is used (also on a loop's second run; a `connect` while it is
//! open reopens it, as workers do), step names unique, and the thresholds
//! on steps (`step_<name>_p95_ms`, ...) checked to name a step of the flow.
//!
//! Defaults: a step's metric name is its kind (`expect`, then `expect_2`,
//! ... skipping names written elsewhere); `timeout` is
//! [`DEFAULT_STEP_TIMEOUT`]; an `http` step is a `GET` that must answer
//! `200`; `${VAR}` is read from the controller's environment in templates
//! and in `equals` strings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use stampede_model::flow::{
    Check, Extract, FlowSpec, HTTP_METHODS, HttpStep, MAX_STEPS, RESERVED_HEADERS, Step, StepKind,
};
use stampede_model::jsonpath;
use stampede_model::template::{Piece, Template, Var};
use toml::Spanned;

use crate::connect::{expand_env, redacted_headers};
use crate::scenario::{Count, Length, Scenario, ScenarioError, Seconds};
use crate::threshold::{Metric, valid_step_name};

/// How long an `expect` or `http` step waits unless its `timeout` says.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Loops inside loops, at most.
pub const MAX_LOOP_DEPTH: usize = 4;

/// One `[[flow]]` table (or one table of a loop's `steps`) as written: the
/// keys of every kind, each checked against the step's kind afterwards.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepTable {
    /// The kind: connect, send, expect, capture, sleep, loop, http, close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Spanned<String>>,
    /// The metric name (default: the kind, numbered when repeated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Spanned<String>>,
    /// send: the message, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Spanned<String>>,
    /// send: as a binary frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<Spanned<bool>>,
    /// expect: a dotted JSON path the check reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Spanned<String>>,
    /// expect: the value at `json` must equal this (compared as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Spanned<toml::Value>>,
    /// expect: the value at `json` must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Spanned<String>>,
    /// expect: the message's whole text must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<Spanned<String>>,
    /// expect, http: the longest wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<Length>>,
    /// expect: variables set from the matched message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// capture: variables set from the last matched message or response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// sleep: a fixed wait; loop: how long to keep running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Spanned<Length>>,
    /// sleep: the shortest random wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Spanned<Seconds>>,
    /// sleep: the longest random wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Spanned<Length>>,
    /// loop: how many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<Spanned<Count>>,
    /// loop: the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Spanned<Vec<Spanned<StepTable>>>>,
    /// http: the method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Spanned<String>>,
    /// http: the path, a template starting with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Spanned<String>>,
    /// http: the request body, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Spanned<String>>,
    /// http: extra request headers, values are templates. Sensitive literal
    /// values are redacted in the results' copy of the scenario.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", serialize_with = "redacted_headers")]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// http: the status the response must have (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Spanned<i64>>,
}

/// What a step does, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    Send,
    Expect,
    Capture,
    Sleep,
    Loop,
    Http,
    Close,
}

const KINDS: &str = "connect, send, expect, capture, sleep, loop, http or close";

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "connect" => Kind::Connect,
            "send" => Kind::Send,
            "expect" => Kind::Expect,
            "capture" => Kind::Capture,
            "sleep" => Kind::Sleep,
            "loop" => Kind::Loop,
            "http" => Kind::Http,
            "close" => Kind::Close,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Send => "send",
            Kind::Expect => "expect",
            Kind::Capture => "capture",
            Kind::Sleep => "sleep",
            Kind::Loop => "loop",
            Kind::Http => "http",
            Kind::Close => "close",
        }
    }

    /// `a send step`, `an expect step`.
    fn step(self) -> String {
        let article = if matches!(self, Kind::Expect | Kind::Http) { "an" } else { "a" };
        format!("{article} {} step", self.name())
    }

    /// The keys it takes besides `step` and `name`.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Connect | Kind::Close => &[],
            Kind::Send => &["message", "binary"],
            Kind::Expect => &["json", "equals", "matches", "regex", "timeout", "capture"],
            Kind::Capture => &["vars"],
            Kind::Sleep => &["duration", "min", "max"],
            Kind::Loop => &["count", "duration", "steps"],
            Kind::Http => &["method", "path", "body", "headers", "status", "timeout"],
        }
    }

    /// Whether it uses the session's WebSocket.
    fn uses_socket(self) -> bool {
        matches!(self, Kind::Send | Kind::Expect | Kind::Close)
    }
}

impl StepTable {
    /// The keys written besides `step` and `name`, with where each value starts.
    fn written(&self) -> Vec<(&'static str, usize)> {
        fn at<T>(v: &Option<Spanned<T>>) -> Option<usize> {
            v.as_ref().map(|s| s.span().start)
        }
        [
            ("message", at(&self.message)),
            ("binary", at(&self.binary)),
            ("json", at(&self.json)),
            ("equals", at(&self.equals)),
            ("matches", at(&self.matches)),
            ("regex", at(&self.regex)),
            ("timeout", at(&self.timeout)),
            ("capture", at(&self.capture)),
            ("vars", at(&self.vars)),
            ("duration", at(&self.duration)),
            ("min", at(&self.min)),
            ("max", at(&self.max)),
            ("count", at(&self.count)),
            ("steps", at(&self.steps)),
            ("method", at(&self.method)),
            ("path", at(&self.path)),
            ("body", at(&self.body)),
            ("headers", self.headers.values().map(|v| v.span().start).min()),
            ("status", at(&self.status)),
        ]
        .into_iter()
        .filter_map(|(k, at)| at.map(|a| (k, a)))
        .collect()
    }
}

/// What the steps before the one being read leave behind.
#[derive(Debug, Clone, Default)]
struct State {
    /// The WebSocket is open.
    connected: bool,
    /// Where the last `close` is, while the WebSocket is closed after one.
    closed: Option<usize>,
    /// Variables captured so far.
    captured: BTreeSet<String>,
    /// An `expect` or `http` step ran: a `capture` step has something to read.
    answered: bool,
}

/// Reads a flow, keeping what errors need.
struct Reader<'a> {
    path: &'a Path,
    source: &'a str,
    /// Every step's name by metric index: written ones, `None` for those
    /// named after their kind once all written names are known.
    names: Vec<(Option<String>, Kind)>,
    /// Written names, with where they are.
    written: BTreeMap<String, usize>,
}

fn us(seconds: f64) -> u64 {
    Duration::from_secs_f64(seconds).as_micros().max(1) as u64
}

impl<'a> Reader<'a> {
    fn err(&self, at: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError::at(self.path, self.source, at, message)
    }

    fn line(&self, at: usize) -> usize {
        self.source[..at.min(self.source.len())].matches('\n').count() + 1
    }

    fn steps(
        &mut self,
        tables: &[Spanned<StepTable>],
        depth: usize,
        st: &mut State,
    ) -> Result<Vec<Step>, ScenarioError> {
        tables.iter().map(|t| self.step(t, depth, st)).collect()
    }

    fn step(&mut self, t: &Spanned<StepTable>, depth: usize, st: &mut State) -> Result<Step, ScenarioError> {
        let table = t.get_ref();
        let Some(kind_text) = &table.step else {
            return Err(
                self.err(t.span().start, format!("a flow step needs `step = \"KIND\"`: one of {KINDS}"))
            );
        };
        let at = kind_text.span().start;
        let kind = Kind::parse(kind_text.get_ref()).ok_or_else(|| {
            self.err(at, format!("unknown step kind {:?}: use {KINDS}", kind_text.get_ref()))
        })?;
        if let Some((key, key_at)) = table.written().into_iter().find(|(k, _)| !kind.keys().contains(k)) {
            let takes = match kind.keys() {
                [] => "only `name`".to_string(),
                keys => format!("{}, name", keys.join(", ")),
            };
            return Err(
                self.err(key_at, format!("`{key}` does not belong to {} (it takes {takes})", kind.step()))
            );
        }
        let metric = self.names.len();
        if metric == MAX_STEPS {
            return Err(self.err(
                at,
                format!("more than {MAX_STEPS} steps (a loop and each of its steps count): each step has its own metrics, keep the flow to {MAX_STEPS}"),
            ));
        }
        let name = match &table.name {
            Some(n) => Some(self.name(n)?),
            None => None,
        };
        self.names.push((name, kind));
        if kind.uses_socket() {
            match (st.connected, st.closed) {
                (true, _) => {}
                (false, Some(closed)) => {
                    return Err(self.err(
                        at,
                        format!(
                            "{} after the close at line {}: the WebSocket is closed, put a connect step before it",
                            kind.step(),
                            self.line(closed)
                        ),
                    ));
                }
                (false, None) => {
                    return Err(self.err(
                        at,
                        format!("{} before any connect: put a connect step before it", kind.step()),
                    ));
                }
            }
        }
        let what = match kind {
            Kind::Connect => {
                // A connect while the WebSocket is open closes it first
                // (a loop of connect, send, expect reconnects each time).
                st.connected = true;
                st.closed = None;
                StepKind::Connect
            }
            Kind::Close => {
                st.connected = false;
                st.closed = Some(at);
                StepKind::Close
            }
            Kind::Send => {
                let Some(message) = &table.message else {
                    return Err(self.err(at, "a send step needs message = '...' (a template)"));
                };
                StepKind::Send {
                    message: self.template(message, "message", st)?,
                    binary: table.binary.as_ref().is_some_and(|b| *b.get_ref()),
                }
            }
            Kind::Expect => {
                let check = self.check(table)?;
                let capture = match &table.capture {
                    Some(c) => self.captures(c.get_ref())?,
                    None => Vec::new(),
                };
                st.captured.extend(capture.iter().map(|(n, _)| n.clone()));
                st.answered = true;
                StepKind::Expect { check, timeout_us: timeout(&table.timeout), capture }
            }
            Kind::Capture => {
                let Some(vars) = &table.vars else {
                    return Err(self
                        .err(at, "a capture step needs vars = { NAME = \"json:PATH\" } (or \"regex:RE\")"));
                };
                if vars.get_ref().is_empty() {
                    return Err(
                        self.err(vars.span().start, "vars is empty: name at least one variable to capture")
                    );
                }
                if !st.answered {
                    return Err(self.err(
                        at,
                        "a capture step reads the last message an expect matched (or the last http response): \
                         put an expect or http step before it, or capture in the expect itself",
                    ));
                }
                let vars = self.captures(vars.get_ref())?;
                st.captured.extend(vars.iter().map(|(n, _)| n.clone()));
                StepKind::Capture { vars }
            }
            Kind::Sleep => {
                let (min_us, max_us) = match (&table.duration, &table.min, &table.max) {
                    (Some(d), None, None) => (us(d.get_ref().0), us(d.get_ref().0)),
                    (None, Some(min), Some(max)) => {
                        let (lo, hi) = (min.get_ref().0, max.get_ref().0);
                        if lo > hi {
                            return Err(self.err(max.span().start, format!("max {hi} s is below min {lo} s")));
                        }
                        (Duration::from_secs_f64(lo).as_micros() as u64, us(hi))
                    }
                    (Some(_), min, max) => {
                        let at = min.as_ref().map(|m| m.span().start);
                        let at = at.or(max.as_ref().map(|m| m.span().start)).unwrap_or_default();
                        return Err(self.err(
                            at,
                            "give either duration (a fixed wait) or min and max (a random one), not both",
                        ));
                    }
                    (None, Some(min), None) => {
                        return Err(
                            self.err(min.span().start, "min needs max: a random wait between min and max")
                        );
                    }
                    (None, None, Some(max)) => {
                        return Err(
                            self.err(max.span().start, "max needs min: a random wait between min and max")
                        );
                    }
                    (None, None, None) => {
                        return Err(self.err(
                            at,
                            "a sleep step needs duration = \"1s\" (or min = \"100ms\" and max = \"300ms\" for a random wait)",
                        ));
                    }
                };
                StepKind::Sleep { min_us, max_us }
            }
            Kind::Loop => {
                if depth >= MAX_LOOP_DEPTH {
                    return Err(
                        self.err(at, format!("loops nested deeper than {MAX_LOOP_DEPTH}: flatten the flow"))
                    );
                }
                if table.count.is_none() && table.duration.is_none() {
                    return Err(self.err(
                        at,
                        "a loop needs count = N, duration = \"30s\", or both (whichever ends first)",
                    ));
                }
                let body = match &table.steps {
                    Some(b) if !b.get_ref().is_empty() => b,
                    Some(b) => {
                        return Err(self.err(b.span().start, "the loop's steps are empty: give at least one"));
                    }
                    None => return Err(self.err(at, "a loop needs steps = [ { step = \"...\" }, ... ]")),
                };
                let entered_open = st.connected;
                let steps = self.steps(body.get_ref(), depth + 1, st)?;
                // Its second run begins as its first ended: a body that
                // closes the WebSocket must open it before using it again.
                if let Some(close) = st.closed.filter(|_| entered_open)
                    && let Some((kind, used)) =
                        first_socket_step(body.get_ref()).filter(|(k, _)| *k != Kind::Connect)
                {
                    return Err(self.err(
                        used,
                        format!(
                            "{} runs again after the loop's close at line {}, with the WebSocket closed: \
                             move the close after the loop, or put a connect step before this one",
                            kind.step(),
                            self.line(close)
                        ),
                    ));
                }
                StepKind::Loop {
                    count: table.count.as_ref().map(|c| c.get_ref().0),
                    duration_us: table.duration.as_ref().map(|d| us(d.get_ref().0)),
                    steps,
                }
            }
            Kind::Http => {
                let http = self.http(table, at, st)?;
                st.answered = true;
                StepKind::Http(http)
            }
        };
        Ok(Step { metric, kind: what })
    }

    /// A written step name, checked.
    fn name(&mut self, n: &Spanned<String>) -> Result<String, ScenarioError> {
        let (name, at) = (n.get_ref(), n.span().start);
        if !valid_step_name(name) {
            return Err(self.err(
                at,
                format!(
                    "step name {name:?}: use 1 to {} of a-z, 0-9 and _ (it names metrics and columns: step_<name>_p95_ms)",
                    stampede_model::flow::MAX_STEP_NAME
                ),
            ));
        }
        if let Some(first) = self.written.get(name) {
            return Err(self.err(
                at,
                format!(
                    "step name `{name}` is already the name of the step at line {}: give each step its own",
                    self.line(*first)
                ),
            ));
        }
        self.written.insert(name.clone(), at);
        Ok(name.clone())
    }

    /// A template as written, `${VAR}` expanded; `what` names it in errors.
    fn template(&self, s: &Spanned<String>, what: &str, st: &State) -> Result<Template, ScenarioError> {
        let at = s.span().start;
        let text = expand_env(s.get_ref(), |name| std::env::var(name).ok()).map_err(|e| self.err(at, e))?;
        let t = Template::parse(&text).map_err(|e| self.err(at, format!("{what}: {e}")))?;
        if t.uses(&Var::Jwt) {
            return Err(self.err(
                at,
                format!("{what}: {{{{jwt}}}} is the handshake's token; flow steps cannot use it (send it with [target.jwt])"),
            ));
        }
        for piece in t.pieces() {
            if let Piece::Var(Var::Captured(name)) = piece
                && !st.captured.contains(name)
            {
                return Err(self.err(
                    at,
                    format!(
                        "{what}: {{{{var.{name}}}}} is used before any step captures it: capture it in an earlier \
                         step (capture = {{ {name} = \"json:PATH\" }} in an expect, or a capture step){}",
                        if st.captured.is_empty() {
                            String::new()
                        } else {
                            format!("; captured so far: {}", st.captured.iter().cloned().collect::<Vec<_>>().join(", "))
                        }
                    ),
                ));
            }
        }
        Ok(t)
    }

    /// What an expect step's message must be.
    fn check(&self, t: &StepTable) -> Result<Check, ScenarioError> {
        let regex = |s: &Spanned<String>| -> Result<String, ScenarioError> {
            regex::Regex::new(s.get_ref()).map_err(|e| {
                self.err(s.span().start, format!("regex {:?} is not valid: {e}", s.get_ref()))
            })?;
            Ok(s.get_ref().clone())
        };
        match (&t.json, &t.equals, &t.matches, &t.regex) {
            (None, None, None, None) => Ok(Check::Any),
            (None, None, None, Some(re)) => Ok(Check::Regex(regex(re)?)),
            (Some(_), _, _, Some(re)) => Err(self.err(
                re.span().start,
                "regex tests the message's whole text; to test the value at json, write matches = \"RE\"",
            )),
            (_, Some(_), Some(m), _) => {
                Err(self.err(m.span().start, "give either equals (a value) or matches (a regex), not both"))
            }
            (None, Some(v), _, _) => Err(self.err(
                v.span().start,
                "equals compares the value at a JSON path: add json = \"PATH\" (e.g. json = \"op\")",
            )),
            (None, None, Some(m), _) => Err(self.err(
                m.span().start,
                "matches tests the value at a JSON path: add json = \"PATH\", or write regex = \"RE\" to test the whole text",
            )),
            (Some(path), None, None, None) => Err(self.err(
                path.span().start,
                "json needs equals = VALUE or matches = \"RE\" (leave out json to accept any message)",
            )),
            (Some(path), equals, matches, None) => {
                jsonpath::parse(path.get_ref()).map_err(|e| self.err(path.span().start, e))?;
                let path_text = path.get_ref().clone();
                if let Some(v) = equals {
                    let value = to_json(v.get_ref()).map_err(|e| self.err(v.span().start, format!("equals: {e}")))?;
                    return Ok(Check::JsonEquals { path: path_text, value: value.to_string() });
                }
                let m = matches.as_ref().expect("one of equals and matches");
                Ok(Check::JsonRegex { path: path_text, regex: regex(m)? })
            }
        }
    }

    /// `NAME = "json:PATH" | "regex:RE"` pairs, checked.
    fn captures(
        &self,
        vars: &BTreeMap<String, Spanned<String>>,
    ) -> Result<Vec<(String, Extract)>, ScenarioError> {
        let mut out = Vec::with_capacity(vars.len());
        for (name, how) in vars {
            let at = how.span().start;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(
                    at,
                    format!(
                        "variable name {name:?}: use letters, digits and _ (it is read as {{{{var.NAME}}}})"
                    ),
                ));
            }
            let text = how.get_ref();
            let extract = if let Some(path) = text.strip_prefix("json:") {
                jsonpath::parse(path).map_err(|e| self.err(at, format!("{name}: {e}")))?;
                Extract::JsonPath(path.to_string())
            } else if let Some(re) = text.strip_prefix("regex:") {
                let compiled = regex::Regex::new(re)
                    .map_err(|e| self.err(at, format!("{name}: regex {re:?} is not valid: {e}")))?;
                if compiled.captures_len() < 2 {
                    return Err(self.err(
                        at,
                        format!("{name}: regex {re:?} has no capture group: put the value in (parentheses)"),
                    ));
                }
                Extract::Regex(re.to_string())
            } else {
                return Err(self.err(
                    at,
                    format!(
                        "{name} = {text:?}: write \"json:PATH\" (e.g. \"json:data.id\") or \"regex:RE\" (its first group)"
                    ),
                ));
            };
            out.push((name.clone(), extract));
        }
        Ok(out)
    }

    fn http(&self, t: &StepTable, at: usize, st: &State) -> Result<HttpStep, ScenarioError> {
        let method = match &t.method {
            None => "GET".to_string(),
            Some(m) => {
                let upper = m.get_ref().to_ascii_uppercase();
                if !HTTP_METHODS.contains(&upper.as_str()) {
                    return Err(self.err(
                        m.span().start,
                        format!("method {:?}: use one of {}", m.get_ref(), HTTP_METHODS.join(", ")),
                    ));
                }
                upper
            }
        };
        let Some(path) = &t.path else {
            return Err(
                self.err(at, "an http step needs path = \"/...\" (sent to the target's host and port)")
            );
        };
        let path_t = self.template(path, "path", st)?;
        if !path_t.source().starts_with('/') {
            return Err(self.err(
                path.span().start,
                format!(
                    "path {:?} must start with `/`: the request goes to the target's host and port",
                    path_t.source()
                ),
            ));
        }
        let mut headers = Vec::with_capacity(t.headers.len());
        for (name, value) in &t.headers {
            let token = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(
                    self.err(value.span().start, format!("header name {name:?} is not a valid HTTP token"))
                );
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(self.err(
                    value.span().start,
                    format!("header {name}: the worker writes it itself, leave it out"),
                ));
            }
            headers.push((name.clone(), self.template(value, &format!("header {name}"), st)?));
        }
        let body = t.body.as_ref().map(|b| self.template(b, "body", st)).transpose()?;
        let status = match &t.status {
            None => 200,
            Some(s) => match u16::try_from(*s.get_ref()) {
                Ok(code) if (100..=599).contains(&code) => code,
                _ => {
                    return Err(self.err(
                        s.span().start,
                        format!("status {}: give an HTTP status from 100 to 599", s.get_ref()),
                    ));
                }
            },
        };
        Ok(HttpStep { method, path: path_t, headers, body, status, timeout_us: timeout(&t.timeout) })
    }

    /// The names by metric index: written ones as written, the others
    /// after their kind (`expect`, then `expect_2`, ...), skipping names
    /// already taken.
    fn finish_names(&self) -> Vec<String> {
        let mut taken: BTreeSet<String> = self.written.keys().cloned().collect();
        let mut next: BTreeMap<&str, usize> = BTreeMap::new();
        self.names
            .iter()
            .map(|(name, kind)| {
                if let Some(n) = name {
                    return n.clone();
                }
                let k = kind.name();
                let n = next.entry(k).or_insert(1);
                loop {
                    let candidate = if *n == 1 { k.to_string() } else { format!("{k}_{n}") };
                    *n += 1;
                    if taken.insert(candidate.clone()) {
                        return candidate;
                    }
                }
            })
            .collect()
    }
}

/// The first step of `tables` (loops' steps included) that opens or uses
/// the WebSocket, with where its kind is written.
fn first_socket_step(tables: &[Spanned<StepTable>]) -> Option<(Kind, usize)> {
    tables.iter().find_map(|t| {
        let t = t.get_ref();
        let kind = t.step.as_ref()?;
        match Kind::parse(kind.get_ref())? {
            Kind::Loop => first_socket_step(t.steps.as_ref()?.get_ref()),
            k @ (Kind::Connect | Kind::Send | Kind::Expect | Kind::Close) => Some((k, kind.span().start)),
            _ => None,
        }
    })
}

fn timeout(t: &Option<Spanned<Length>>) -> u64 {
    t.as_ref().map_or(DEFAULT_STEP_TIMEOUT.as_micros() as u64, |t| us(t.get_ref().0))
}

/// A TOML value as JSON; dates and non-finite numbers have no JSON form.
fn to_json(v: &toml::Value) -> Result<Json, String> {
    Ok(match v {
        toml::Value::String(s) => Json::String(expand_env(s, |name| std::env::var(name).ok())?),
        toml::Value::Integer(i) => Json::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| format!("{f} has no JSON form: give a finite number"))?,
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => {
            return Err(format!(
                "{d} is a TOML date, which JSON does not have: quote it to compare a string"
            ));
        }
        toml::Value::Array(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => {
            Json::Object(t.iter().map(|(k, v)| Ok((k.clone(), to_json(v)?))).collect::<Result<_, String>>()?)
        }
    })
}

/// The flow of `sc`, if it has one; `path` and `source` are the scenario
/// file and its text (errors point into it). Also checks that thresholds
/// on steps name a step of the flow.
pub fn flow_spec(sc: &Scenario, path: &Path, source: &str) -> Result<Option<FlowSpec>, ScenarioError> {
    let mut reader = Reader { path, source, names: Vec::new(), written: BTreeMap::new() };
    let flow = match sc.flow.first() {
        None => None,
        Some(first) => {
            if let Some(m) = &sc.messages {
                refuse_messages(m, &reader, first.span().start)?;
            }
            let steps = reader.steps(&sc.flow, 0, &mut State::default())?;
            Some(FlowSpec { steps, names: reader.finish_names() })
        }
    };
    let names: &[String] = flow.as_ref().map_or(&[], |f| &f.names);
    for (metric, cond) in &sc.thresholds {
        let Metric::Step(step) = metric else { continue };
        if names.iter().any(|n| n == step.step()) {
            continue;
        }
        let message = if names.is_empty() {
            format!("threshold {metric}: no step named {}; the scenario has no [[flow]] steps", step.step())
        } else {
            format!(
                "threshold {metric}: no step named {}; the flow's steps are: {}",
                step.step(),
                names.join(", ")
            )
        };
        return Err(reader.err(cond.span().start, message));
    }
    Ok(flow)
}

/// A flow decides what a session sends: `[messages]` may only say the
/// default (`mode = "echo"`). Read from the section as serialized, so a key
/// added to `[messages]` is refused here without a change.
fn refuse_messages(
    m: &crate::messages::MessagesSection,
    reader: &Reader,
    flow_at: usize,
) -> Result<(), ScenarioError> {
    let written = match toml::Value::try_from(m) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let table_at = reader.source.find("[messages]").unwrap_or(0);
    let flow_line = reader.line(flow_at);
    match written.get("mode").and_then(toml::Value::as_str) {
        Some(mode) if mode != "echo" => {
            let at = m.mode.as_ref().map_or(table_at, |s| s.span().start);
            return Err(reader.err(
                at,
                format!(
                    "[messages] mode = \"{mode}\" and the [[flow]] steps (line {flow_line}) both say what a \
                     session does: remove [messages], or remove the [[flow]] steps"
                ),
            ));
        }
        _ => {}
    }
    if let Some(key) = written.keys().find(|k| *k != "mode") {
        // The key's line: the first line of the section that starts with it.
        let at = reader.source[table_at..].find(&format!("\n{key}")).map_or(table_at, |i| table_at + i + 1);
        return Err(reader.err(
            at,
            format!(
                "`{key}` in [messages] has no effect with [[flow]] steps (line {flow_line}), which say what a \
                 session does: remove it"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "name = \"f\"\n[target]\nurl = \"ws://127.0.0.1:9/\"\n";

    fn scenario(text: &str) -> Result<Option<FlowSpec>, String> {
        let text = format!("{HEAD}{text}\n");
        let path = Path::new("t.toml");
        let sc = Scenario::parse(path, &text).map_err(|e| e.to_string())?;
        flow_spec(&sc, path, &text).map_err(|e| e.to_string())
    }

    fn spec(flow: &str) -> Result<FlowSpec, String> {
        scenario(flow).map(|f| f.expect("a flow"))
    }

    /// The k6 tunnel seed: connect, wait for the connection id, then
    /// publish to it over HTTP and expect each message on the socket.
    const TUNNEL: &str = r#"
[[flow]]
step = "connect"

[[flow]]
step = "expect"
name = "established"
json = "op"
equals = "connection_established"
timeout = "5s"
capture = { id = "json:id" }

[[flow]]
step = "loop"
count = 10
duration = "30s"
steps = [
  { step = "http", name = "tunnel_http", method = "POST", path = "/publish/conn/{{var.id}}", body = '{"n":{{seq}}}', headers = { "Content-Type" = "application/json" }, status = 200, timeout = "5s" },
  { step = "expect", json = "op", equals = "message", timeout = "2s" },
  { step = "sleep", min = "100ms", max = "300ms" },
]

[[flow]]
step = "send"
message = '{"op":"ping","n":{{seq}}}'
binary = true

[[flow]]
step = "expect"
regex = "pong"

[[flow]]
step = "capture"
vars = { token = "json:data.token", num = 'regex:n=(\d+)' }

[[flow]]
step = "sleep"
duration = "1s"

[[flow]]
step = "close"
"#;

    #[test]
    fn a_tunnel_flow_becomes_a_flow_spec() {
        let f = spec(TUNNEL).unwrap();
        assert_eq!(
            f.names,
            [
                "connect",
                "established",
                "loop",
                "tunnel_http",
                "expect",
                "sleep",
                "send",
                "expect_2",
                "capture",
                "sleep_2",
                "close"
            ]
        );
        assert!(f.connects());
        let metrics: Vec<usize> = f.steps.iter().map(|s| s.metric).collect();
        assert_eq!(metrics, [0, 1, 2, 6, 7, 8, 9, 10], "loop steps are numbered in the order written");
        assert_eq!(f.steps[0].kind, StepKind::Connect);
        let StepKind::Expect { check, timeout_us, capture } = &f.steps[1].kind else {
            panic!("{:?}", f.steps[1])
        };
        assert_eq!(
            *check,
            Check::JsonEquals { path: "op".into(), value: "\"connection_established\"".into() }
        );
        assert_eq!(*timeout_us, 5_000_000);
        assert_eq!(*capture, [("id".to_string(), Extract::JsonPath("id".into()))]);
        let StepKind::Loop { count, duration_us, steps } = &f.steps[2].kind else { panic!() };
        assert_eq!((*count, *duration_us), (Some(10), Some(30_000_000)));
        assert_eq!(steps.iter().map(|s| s.metric).collect::<Vec<_>>(), [3, 4, 5]);
        let StepKind::Http(http) = &steps[0].kind else { panic!() };
        assert_eq!((http.method.as_str(), http.status, http.timeout_us), ("POST", 200, 5_000_000));
        assert!(http.path.uses(&Var::Captured("id".into())));
        assert_eq!(http.body.as_ref().unwrap().source(), "{\"n\":{{seq}}}");
        assert_eq!(http.headers[0].0, "Content-Type");
        let StepKind::Expect { timeout_us, capture, .. } = &steps[1].kind else { panic!() };
        assert_eq!((*timeout_us, capture.len()), (2_000_000, 0));
        assert_eq!(steps[2].kind, StepKind::Sleep { min_us: 100_000, max_us: 300_000 });
        let StepKind::Send { message, binary } = &f.steps[3].kind else { panic!() };
        assert!(*binary && message.uses(&Var::Seq));
        assert_eq!(
            f.steps[4].kind,
            StepKind::Expect {
                check: Check::Regex("pong".into()),
                timeout_us: DEFAULT_STEP_TIMEOUT.as_micros() as u64,
                capture: Vec::new()
            }
        );
        let StepKind::Capture { vars } = &f.steps[5].kind else { panic!() };
        assert_eq!(vars[0], ("num".to_string(), Extract::Regex("n=(\\d+)".into())));
        assert_eq!(f.steps[6].kind, StepKind::Sleep { min_us: 1_000_000, max_us: 1_000_000 });
        assert_eq!(f.steps[7].kind, StepKind::Close);
        // The spec travels to workers as JSON.
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<FlowSpec>(&json).unwrap(), f);
    }

    #[test]
    fn no_flow_is_none_and_other_checks_read_as_json() {
        assert_eq!(scenario("").unwrap(), None);
        let f = spec(
            "[[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"expect\"\njson = \"data.n\"\nequals = { a = [1, 2.5, true] }\n\
             [[flow]]\nstep = \"expect\"\njson = \"items.0.id\"\nmatches = \"^u-\\\\d+$\"\n[[flow]]\nstep = \"expect\"",
        )
        .unwrap();
        let kinds: Vec<&StepKind> = f.steps.iter().map(|s| &s.kind).collect();
        assert!(
            matches!(kinds[1], StepKind::Expect { check: Check::JsonEquals { value, .. }, .. } if value == "{\"a\":[1,2.5,true]}")
        );
        assert!(
            matches!(kinds[2], StepKind::Expect { check: Check::JsonRegex { regex, .. }, .. } if regex == "^u-\\d+$")
        );
        assert!(matches!(kinds[3], StepKind::Expect { check: Check::Any, .. }));
        assert_eq!(f.names, ["connect", "expect", "expect_2", "expect_3"]);
        // HTTP only, no WebSocket: allowed; GET and 200 by default.
        let f = spec("[[flow]]\nstep = \"http\"\npath = \"/health\"").unwrap();
        assert!(!f.connects());
        let StepKind::Http(h) = &f.steps[0].kind else { panic!() };
        assert_eq!((h.method.as_str(), h.status, h.body.is_none()), ("GET", 200, true));
    }

    #[test]
    fn written_names_are_kept_and_default_names_go_around_them() {
        let f = spec(
            "[[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"close\"\nname = \"connect_2\"\n\
             [[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"close\"\nname = \"close\"\n\
             [[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"close\"",
        )
        .unwrap();
        assert_eq!(f.names, ["connect", "connect_2", "connect_3", "close", "connect_4", "close_2"]);
    }

    #[test]
    fn env_references_are_expanded_in_templates() {
        // SAFETY: a variable only this test reads.
        unsafe { std::env::set_var("STAMPEDE_FLOW_TEST_TENANT", "acme") };
        let f = spec(
            "[[flow]]\nstep = \"http\"\npath = \"/t/${STAMPEDE_FLOW_TEST_TENANT}/x\"\n\
             headers = { Authorization = \"Bearer ${STAMPEDE_FLOW_TEST_TENANT}\" }",
        )
        .unwrap();
        let StepKind::Http(h) = &f.steps[0].kind else { panic!() };
        assert_eq!(h.path.source(), "/t/acme/x");
        assert_eq!(h.headers[0].1.source(), "Bearer acme");
    }

    fn deep_loops(depth: usize) -> String {
        let mut inner = "{ step = \"sleep\", duration = \"1ms\" }".to_string();
        for _ in 0..depth {
            inner = format!("{{ step = \"loop\", count = 2, steps = [{inner}] }}");
        }
        format!(
            "[[flow]]\nstep = \"sleep\"\nduration = \"1ms\"\n[[flow]]\nstep = \"loop\"\ncount = 1\nsteps = [{inner}]"
        )
    }

    #[test]
    fn loops_nest_four_deep_and_no_deeper() {
        assert!(spec(&deep_loops(3)).is_ok());
        let err = spec(&deep_loops(4)).unwrap_err();
        assert!(err.contains("loops nested deeper than 4"), "{err}");
    }

    #[test]
    fn a_flow_has_at_most_max_steps() {
        let steps = |n: usize| "[[flow]]\nstep = \"sleep\"\nduration = \"1ms\"\n".repeat(n);
        assert_eq!(spec(&steps(MAX_STEPS)).unwrap().names.len(), MAX_STEPS);
        let err = spec(&steps(MAX_STEPS + 1)).unwrap_err();
        let line = 4 + 3 * MAX_STEPS + 1;
        assert!(err.starts_with(&format!("t.toml:{line}:8: more than {MAX_STEPS} steps")), "{err}");
    }

    #[test]
    fn mistakes_are_errors_at_their_line() {
        let c = "[[flow]]\nstep = \"connect\"\n";
        let mut wrong = Vec::new();
        for (body, at, says) in [
            ("[[flow]]\nname = \"x\"".to_string(), "t.toml:4:1", "needs `step = \"KIND\"`"),
            ("[[flow]]\nstep = \"wait\"".to_string(), "t.toml:5:8", "unknown step kind \"wait\""),
            ("[[flow]]\nstep = \"connect\"\nhost = \"x\"".to_string(), "t.toml:6:1", "unknown field `host`"),
            (
                format!("{c}[[flow]]\nstep = \"send\"\nmessage = 'x'\ntimeout = 1"),
                "t.toml:9:11",
                "`timeout` does not belong to a send step (it takes message, binary, name)",
            ),
            (
                "[[flow]]\nstep = \"connect\"\njson = \"op\"".to_string(),
                "t.toml:6:8",
                "(it takes only `name`)",
            ),
            (format!("{c}[[flow]]\nstep = \"send\""), "t.toml:7:8", "a send step needs message"),
            (
                format!("{c}[[flow]]\nstep = \"send\"\nmessage = '{{{{jwt}}}}'"),
                "t.toml:8:11",
                "{{jwt}} is the handshake's token",
            ),
            (
                format!("{c}[[flow]]\nstep = \"send\"\nmessage = '{{{{user}}}}'"),
                "t.toml:8:11",
                "unknown template variable {{user}}",
            ),
            (
                format!("{c}[[flow]]\nstep = \"send\"\nmessage = '${{STAMPEDE_FLOW_UNSET}}'"),
                "t.toml:8:11",
                "STAMPEDE_FLOW_UNSET is not set",
            ),
            (
                format!("{c}[[flow]]\nstep = \"send\"\nmessage = '{{{{var.id}}}}'"),
                "t.toml:8:11",
                "{{var.id}} is used before any step captures it",
            ),
            (
                format!(
                    "{c}[[flow]]\nstep = \"expect\"\ncapture = {{ a = \"json:a\" }}\n[[flow]]\nstep = \"send\"\nmessage = '{{{{var.id}}}}'"
                ),
                "t.toml:11:11",
                "captured so far: a",
            ),
            (
                // Used in a loop before the loop's own capture: its first run has no value.
                format!(
                    "{c}[[flow]]\nstep = \"loop\"\ncount = 2\nsteps = [{{ step = \"send\", message = '{{{{var.id}}}}' }}, {{ step = \"expect\", capture = {{ id = \"json:id\" }} }}]"
                ),
                "t.toml:9:37",
                "{{var.id}} is used before",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\nregex = \"((\""),
                "t.toml:8:9",
                "regex \"((\" is not valid",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\njson = \"op\"\nmatches = \"[\""),
                "t.toml:9:11",
                "is not valid",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\njson = \"a..b\"\nequals = 1"),
                "t.toml:8:8",
                "empty step",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\njson = \"op\""),
                "t.toml:8:8",
                "json needs equals = VALUE or matches",
            ),
            (format!("{c}[[flow]]\nstep = \"expect\"\nequals = 1"), "t.toml:8:10", "add json = \"PATH\""),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\nmatches = \"x\""),
                "t.toml:8:11",
                "write regex = \"RE\" to test the whole text",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\njson = \"op\"\nequals = 1\nmatches = \"x\""),
                "t.toml:10:11",
                "not both",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\njson = \"op\"\nregex = \"x\""),
                "t.toml:9:9",
                "write matches = \"RE\"",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\njson = \"op\"\nequals = 1979-05-27"),
                "t.toml:9:10",
                "quote it",
            ),
            (format!("{c}[[flow]]\nstep = \"expect\"\ntimeout = \"soon\""), "t.toml:8:11", ""),
            (format!("{c}[[flow]]\nstep = \"expect\"\ntimeout = 0"), "t.toml:8:11", "above 0"),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\ncapture = {{ id = \"xml:id\" }}"),
                "t.toml:8:18",
                "write \"json:PATH\"",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\ncapture = {{ id = \"regex:id=\\\\d+\" }}"),
                "t.toml:8:18",
                "has no capture group",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\ncapture = {{ id = \"regex:(\" }}"),
                "t.toml:8:18",
                "is not valid",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\ncapture = {{ id = \"json:\" }}"),
                "t.toml:8:18",
                "empty JSON path",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\ncapture = {{ \"a-b\" = \"json:x\" }}"),
                "t.toml:8:21",
                "variable name \"a-b\"",
            ),
            (
                format!("{c}[[flow]]\nstep = \"capture\"\nvars = {{ a = \"json:a\" }}"),
                "t.toml:7:8",
                "put an expect or http step before it",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\n[[flow]]\nstep = \"capture\""),
                "t.toml:9:8",
                "a capture step needs vars",
            ),
            (
                format!("{c}[[flow]]\nstep = \"expect\"\n[[flow]]\nstep = \"capture\"\nvars = {{}}"),
                "t.toml:10:8",
                "vars is empty",
            ),
            ("[[flow]]\nstep = \"sleep\"".to_string(), "t.toml:5:8", "a sleep step needs duration"),
            (
                "[[flow]]\nstep = \"sleep\"\nduration = \"1s\"\nmin = \"1ms\"".to_string(),
                "t.toml:7:7",
                "not both",
            ),
            ("[[flow]]\nstep = \"sleep\"\nmin = \"1ms\"".to_string(), "t.toml:6:7", "min needs max"),
            ("[[flow]]\nstep = \"sleep\"\nmax = \"1ms\"".to_string(), "t.toml:6:7", "max needs min"),
            (
                "[[flow]]\nstep = \"sleep\"\nmin = \"2s\"\nmax = \"1s\"".to_string(),
                "t.toml:7:7",
                "max 1 s is below min 2 s",
            ),
            ("[[flow]]\nstep = \"sleep\"\nduration = \"-1s\"".to_string(), "t.toml:6:12", "out of range"),
            (
                "[[flow]]\nstep = \"loop\"\nsteps = [{ step = \"connect\" }]".to_string(),
                "t.toml:5:8",
                "a loop needs count = N, duration",
            ),
            ("[[flow]]\nstep = \"loop\"\ncount = 0\nsteps = []".to_string(), "t.toml:6:9", "at least 1"),
            ("[[flow]]\nstep = \"loop\"\ncount = 2".to_string(), "t.toml:5:8", "a loop needs steps"),
            (
                "[[flow]]\nstep = \"loop\"\ncount = 2\nsteps = []".to_string(),
                "t.toml:7:9",
                "the loop's steps are empty",
            ),
            (
                "[[flow]]\nstep = \"loop\"\ncount = 2\nsteps = [{ step = \"nap\" }]".to_string(),
                "t.toml:7:19",
                "unknown step kind \"nap\"",
            ),
            (
                format!(
                    "{c}[[flow]]\nstep = \"loop\"\ncount = 2\nsteps = [{{ step = \"loop\", count = 1, steps = [{{ step = \"expect\" }}] }}, {{ step = \"close\" }}]"
                ),
                "t.toml:9:56",
                "an expect step runs again after the loop's close at line 9",
            ),
            ("[[flow]]\nstep = \"http\"".to_string(), "t.toml:5:8", "an http step needs path"),
            (
                "[[flow]]\nstep = \"http\"\npath = \"publish\"".to_string(),
                "t.toml:6:8",
                "must start with `/`",
            ),
            (
                "[[flow]]\nstep = \"http\"\npath = \"/\"\nstatus = 700".to_string(),
                "t.toml:7:10",
                "status 700: give an HTTP status from 100 to 599",
            ),
            (
                "[[flow]]\nstep = \"http\"\npath = \"/\"\nstatus = 99".to_string(),
                "t.toml:7:10",
                "from 100 to 599",
            ),
            (
                "[[flow]]\nstep = \"http\"\npath = \"/\"\nmethod = \"FETCH\"".to_string(),
                "t.toml:7:10",
                "method \"FETCH\": use one of GET, POST",
            ),
            (
                "[[flow]]\nstep = \"http\"\npath = \"/\"\nheaders = { \"Content-Length\" = \"3\" }"
                    .to_string(),
                "t.toml:7:32",
                "the worker writes it itself",
            ),
            (
                "[[flow]]\nstep = \"http\"\npath = \"/\"\nheaders = { \"a b\" = \"3\" }".to_string(),
                "t.toml:7:21",
                "not a valid HTTP token",
            ),
            (
                "[[flow]]\nstep = \"http\"\npath = \"/\"\nbody = '{{jwt}}'".to_string(),
                "t.toml:7:8",
                "{{jwt}}",
            ),
            (
                "[[flow]]\nstep = \"send\"\nmessage = 'x'".to_string(),
                "t.toml:5:8",
                "a send step before any connect",
            ),
            ("[[flow]]\nstep = \"expect\"".to_string(), "t.toml:5:8", "an expect step before any connect"),
            ("[[flow]]\nstep = \"close\"".to_string(), "t.toml:5:8", "a close step before any connect"),
            (
                format!("{c}[[flow]]\nstep = \"close\"\n[[flow]]\nstep = \"send\"\nmessage = 'x'"),
                "t.toml:9:8",
                "after the close at line 7",
            ),
            (format!("{c}name = \"Connect\""), "t.toml:6:8", "step name \"Connect\": use 1 to 40 of a-z"),
            (format!("{c}name = \"{}\"", "a".repeat(41)), "t.toml:6:8", "use 1 to 40"),
            (
                format!("{c}name = \"a\"\n[[flow]]\nstep = \"close\"\nname = \"a\""),
                "t.toml:9:8",
                "step name `a` is already the name of the step at line 6",
            ),
            (
                format!("{c}[messages]\nmode = \"request\""),
                "t.toml:7:8",
                "remove [messages], or remove the [[flow]] steps",
            ),
            (
                format!("{c}[messages]\ntemplate = 'x'"),
                "t.toml:7:1",
                "`template` in [messages] has no effect",
            ),
            (
                format!("{c}[thresholds]\nstep_connect_p95_ms = \"< 10\"\nstep_nope_p95_ms = \"< 10\""),
                "t.toml:8:20",
                "no step named nope; the flow's steps are: connect",
            ),
            (
                "[thresholds]\nstep_x_ok = \"> 1\"".to_string(),
                "t.toml:5:13",
                "the scenario has no [[flow]] steps",
            ),
            ("[thresholds]\nstep_x_p42_ms = \"< 1\"".to_string(), "t.toml:5:1", "followed by one of"),
            ("[thresholds]\nstep_X_ok = \"> 1\"".to_string(), "t.toml:5:1", "`X` cannot be a step name"),
        ] {
            match scenario(&body) {
                Err(err) if err.starts_with(at) && err.contains(says) => {}
                other => wrong.push(format!("{body:?} gave {other:?}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    }

    #[test]
    fn the_results_copy_of_a_scenario_reads_back_as_the_same_flow() {
        let text = format!("{HEAD}{TUNNEL}");
        let path = Path::new("t.toml");
        let sc = Scenario::parse(path, &text).unwrap();
        let copy = toml::to_string_pretty(&sc).unwrap();
        let again = Scenario::parse(path, &copy).unwrap_or_else(|e| panic!("{e}\n{copy}"));
        assert_eq!(flow_spec(&again, path, &copy).unwrap(), flow_spec(&sc, path, &text).unwrap());
        // Sensitive header values are not copied.
        let secret =
            "[[flow]]\nstep = \"http\"\npath = \"/\"\nheaders = { Authorization = \"Bearer s3cret\" }\n";
        let sc = Scenario::parse(path, &format!("{HEAD}{secret}")).unwrap();
        let copy = toml::to_string_pretty(&sc).unwrap();
        assert!(!copy.contains("s3cret") && copy.contains("<redacted>"), "{copy}");
    }

    #[test]
    fn a_loop_may_open_and_close_the_websocket_if_each_run_finds_it_as_it_needs() {
        let ok = |flow: &str| spec(flow).unwrap_or_else(|e| panic!("{flow}: {e}"));
        // Reconnects each time (a connect while open closes it first).
        ok(
            "[[flow]]\nstep = \"loop\"\ncount = 3\nsteps = [{ step = \"connect\" }, { step = \"send\", message = \"x\" }]",
        );
        ok("[[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"connect\"");
        // Closes, then opens again before using it.
        ok("[[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"loop\"\ncount = 3\n\
            steps = [{ step = \"send\", message = \"x\" }, { step = \"close\" }, { step = \"connect\" }]");
        ok("[[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"loop\"\ncount = 3\n\
            steps = [{ step = \"close\" }, { step = \"sleep\", duration = \"1s\" }, { step = \"connect\" }, { step = \"expect\" }]");
        // Opened in the loop: used after it.
        ok(
            "[[flow]]\nstep = \"loop\"\ncount = 1\nsteps = [{ step = \"connect\" }]\n[[flow]]\nstep = \"close\"",
        );
        let err = spec(
            "[[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"loop\"\ncount = 2\n\
             steps = [{ step = \"send\", message = \"x\" }, { step = \"close\" }]\n",
        )
        .unwrap_err();
        assert!(err.starts_with("t.toml:9:19: a send step runs again after the loop's close"), "{err}");
    }

    #[test]
    fn an_echo_messages_section_may_stay_beside_a_flow() {
        assert!(spec("[[flow]]\nstep = \"connect\"\n[messages]\nmode = \"echo\"").is_ok());
    }
}
