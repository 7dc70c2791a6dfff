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
    /// goto: the page, a path on the target's host or a whole http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Spanned<String>>,
    /// click, fill, wait_for: the element's CSS selector, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Spanned<String>>,
    /// click: a CSS selector that must match after the click (the app's
    /// reaction; the click's duration lasts until it does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<Spanned<String>>,
    /// fill: what to type, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Spanned<String>>,
    /// evaluate: a JavaScript expression, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<Spanned<String>>,
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
    Goto,
    Click,
    Fill,
    WaitFor,
    Evaluate,
}

const KINDS: &str = "connect, send, expect, capture, sleep, loop, http or close";
/// The kinds of a browser group's flow.
const PAGE_KINDS: &str = "goto, click, fill, wait_for, evaluate, expect, capture, sleep or loop";

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
            "goto" => Kind::Goto,
            "click" => Kind::Click,
            "fill" => Kind::Fill,
            "wait_for" => Kind::WaitFor,
            "evaluate" => Kind::Evaluate,
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
            Kind::Goto => "goto",
            Kind::Click => "click",
            Kind::Fill => "fill",
            Kind::WaitFor => "wait_for",
            Kind::Evaluate => "evaluate",
        }
    }

    /// `a send step`, `an expect step`.
    fn step(self) -> String {
        let article = if matches!(self, Kind::Expect | Kind::Http | Kind::Evaluate) { "an" } else { "a" };
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
            Kind::Goto => &["url"],
            Kind::Click => &["selector", "wait_for", "timeout"],
            Kind::Fill => &["selector", "text"],
            Kind::WaitFor => &["selector", "timeout"],
            Kind::Evaluate => &["expression", "equals"],
        }
    }

    /// Whether it drives a browser page.
    fn is_page_action(self) -> bool {
        matches!(self, Kind::Goto | Kind::Click | Kind::Fill | Kind::WaitFor | Kind::Evaluate)
    }

    /// Whether a browser session's flow may not have it: it uses a
    /// WebSocket or HTTP client of the worker's own.
    fn is_native_only(self) -> bool {
        matches!(self, Kind::Connect | Kind::Send | Kind::Close | Kind::Http)
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
            ("url", at(&self.url)),
            ("selector", at(&self.selector)),
            ("wait_for", at(&self.wait_for)),
            ("text", at(&self.text)),
            ("expression", at(&self.expression)),
        ]
        .into_iter()
        .filter_map(|(k, at)| at.map(|a| (k, a)))
        .collect()
    }
}

mod read;
#[cfg(test)]
mod tests;

use read::{Reader, State};

/// The flow of `sc`, if it has one; `path` and `source` are the scenario
/// file and its text (errors point into it).
pub fn flow_spec(sc: &Scenario, path: &Path, source: &str) -> Result<Option<FlowSpec>, ScenarioError> {
    let mut reader = Reader::new(path, source, None);
    let Some(first) = sc.flow.first() else { return Ok(None) };
    if let Some(m) = &sc.messages {
        refuse_messages(m, &reader, first.span().start)?;
    }
    let steps = reader.steps(&sc.flow, 0, &mut State::default())?;
    Ok(Some(FlowSpec { steps, names: reader.finish_names() }))
}

/// The flow of browser group `group` (`[[group]] flow = [...]`): page
/// actions, `expect` on the app's WebSocket frames, `capture`, `sleep` and
/// `loop`. Steps named after their kind get the group's name in front
/// (`web_click`), so groups' steps never share a metric.
pub fn browser_flow(
    tables: &[Spanned<StepTable>],
    group: &str,
    path: &Path,
    source: &str,
) -> Result<FlowSpec, ScenarioError> {
    let mut reader = Reader::new(path, source, Some(group.to_string()));
    let steps = reader.steps(tables, 0, &mut State::default())?;
    Ok(FlowSpec { steps, names: reader.finish_names() })
}

/// Checks that thresholds on steps name a step of the run (`names`: every
/// flow's step names).
pub fn check_step_thresholds(
    sc: &Scenario,
    path: &Path,
    source: &str,
    names: &[String],
) -> Result<(), ScenarioError> {
    for (metric, cond) in &sc.thresholds {
        let Metric::Step(step) = metric else { continue };
        if names.iter().any(|n| n == step.step()) {
            continue;
        }
        let message = if names.is_empty() {
            format!("threshold {metric}: no step named {}; the scenario has no flow steps", step.step())
        } else {
            format!("threshold {metric}: no step named {}; the steps are: {}", step.step(), names.join(", "))
        };
        return Err(ScenarioError::at(path, source, cond.span().start, message));
    }
    Ok(())
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
