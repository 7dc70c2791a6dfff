//! Scripted sessions (`[[flow]]` in a scenario): an ordered list of steps
//! each connection runs, for protocols that are neither echo nor plain
//! request/response (the k6 tunnel seed: connect, wait for
//! `connection_established`, keep its id, make HTTP requests that land in
//! the session). The controller builds a [`FlowSpec`] from the scenario
//! (templates parsed, regular expressions and paths checked, variables
//! checked to be captured before they are used); workers run it.
//!
//! Every step has a metric name (its `name`, or its kind numbered): the
//! worker records each run of a step as a success or a failure with its
//! duration, and the controller reports them per step
//! (`step_<name>_p95_ms`, `step_<name>_failure_rate`, ...).

use serde::{Deserialize, Serialize};

use crate::template::Template;

/// Most steps a flow may have, loops' steps included: each has a histogram
/// per worker and columns in metrics.csv.
pub const MAX_STEPS: usize = 32;
/// Longest step name, bytes.
pub const MAX_STEP_NAME: usize = 40;
/// Largest HTTP response body a worker reads, bytes (more fails the step).
pub const MAX_HTTP_BODY: usize = 1 << 20;
/// The methods an `http` step may use.
pub const HTTP_METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];
/// Request headers the worker's HTTP client writes itself, lowercase: a
/// step may not set them.
pub const RESERVED_HEADERS: [&str; 4] = ["host", "connection", "content-length", "transfer-encoding"];

/// A flow: the steps one session runs, in order. When the last step is
/// done the session starts again from the first (a new connection), until
/// the load shape closes its slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Every step's metric name, indexed by [`Step::metric`] (loops' steps
    /// included, in the order they are written).
    pub names: Vec<String>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Index of its metric name in [`FlowSpec::names`].
    pub metric: usize,
    /// What it does.
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum StepKind {
    /// Opens the session's WebSocket to the target (its duration is the
    /// connect time). A flow without it runs HTTP steps only.
    Connect,
    /// Sends a message; `{{seq}}` counts the session's requests (sends and
    /// HTTP requests) from 0.
    Send {
        /// The message.
        message: Template,
        /// As a binary frame instead of text.
        binary: bool,
    },
    /// Waits for a message that passes `check` (others are skipped and
    /// counted unmatched), then captures values from it. Its duration counts
    /// from the start of the last `send` or `http` step before it (the
    /// request it answers), or from its own start when there is none.
    Expect {
        /// What the message must be.
        check: Check,
        /// Longest wait, µs; later, the step fails.
        timeout_us: u64,
        /// Variables set from the matched message: (name, how to read it).
        capture: Vec<(String, Extract)>,
    },
    /// Sets variables from the last message an `expect` matched (or the
    /// last HTTP response's body).
    Capture {
        /// (name, how to read it).
        vars: Vec<(String, Extract)>,
    },
    /// Waits; a random time in `[min_us, max_us]` (equal: fixed).
    Sleep {
        /// Shortest, µs.
        min_us: u64,
        /// Longest, µs.
        max_us: u64,
    },
    /// Runs `steps` again and again: `count` times, or for `duration_us`
    /// (whichever comes first when both are given).
    Loop {
        /// Times to run the body.
        count: Option<u64>,
        /// How long to keep running it, µs.
        duration_us: Option<u64>,
        /// The body.
        steps: Vec<Step>,
    },
    /// An HTTP/1.1 request; its duration is request written to response
    /// read.
    Http(HttpStep),
    /// Closes the WebSocket (close handshake, code 1000).
    Close,
    /// Browser: loads a page (a path on the target's host, or a whole
    /// `http(s)://` URL) and waits for its load event; duration: the
    /// navigation.
    Goto {
        /// The URL or path.
        url: Template,
    },
    /// Browser: clicks the element `selector` names (a trusted mouse
    /// click at its centre). With `wait_for`, then waits for that selector
    /// to match: the duration is click until the app's DOM changed.
    Click {
        /// CSS selector of the element.
        selector: Template,
        /// CSS selector that must match after the click.
        wait_for: Option<Template>,
        /// Longest wait for `wait_for`, µs.
        timeout_us: u64,
    },
    /// Browser: focuses the element and types `text` into it.
    Fill {
        /// CSS selector of the element.
        selector: Template,
        /// What to type.
        text: Template,
    },
    /// Browser: waits until `selector` matches an element.
    WaitFor {
        /// CSS selector.
        selector: Template,
        /// Longest wait, µs.
        timeout_us: u64,
    },
    /// Browser: evaluates a JavaScript expression in the page (promises
    /// awaited); with `equals`, its value must equal that JSON value.
    Evaluate {
        /// The expression.
        expression: Template,
        /// The value it must have, as JSON text.
        equals: Option<String>,
    },
}

/// An HTTP request step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    /// `GET`, `POST`, `PUT`, `DELETE`, `PATCH` or `HEAD`.
    pub method: String,
    /// A path (`/publish/conn/{{var.id}}`) sent to the target's host and
    /// port (`http://` for a `ws://` target, `https://` for `wss://`).
    pub path: Template,
    /// Extra request headers.
    pub headers: Vec<(String, Template)>,
    /// The request body, if any (sent with `Content-Length`).
    pub body: Option<Template>,
    /// The status the response must have.
    pub status: u16,
    /// Longest wait for the whole exchange, µs.
    pub timeout_us: u64,
}

/// What an expected message must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Check {
    /// Any message.
    Any,
    /// The JSON value at a dotted path equals this JSON value.
    JsonEquals {
        /// Dotted path ([`crate::jsonpath`]).
        path: String,
        /// The value, as JSON text.
        value: String,
    },
    /// The JSON value at a dotted path (a string, or a number or boolean
    /// as its JSON text) matches a regular expression.
    JsonRegex {
        /// Dotted path.
        path: String,
        /// The expression.
        regex: String,
    },
    /// The message's whole text matches a regular expression.
    Regex(String),
}

/// How a captured value is read from a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Extract {
    /// The value at a dotted JSON path (a string as is, anything else as
    /// its JSON text).
    JsonPath(String),
    /// The first capture group of a regular expression.
    Regex(String),
}

impl StepKind {
    /// Whether the step drives a browser page (only browser groups run
    /// these).
    pub fn is_page_action(&self) -> bool {
        matches!(
            self,
            StepKind::Goto { .. }
                | StepKind::Click { .. }
                | StepKind::Fill { .. }
                | StepKind::WaitFor { .. }
                | StepKind::Evaluate { .. }
        )
    }
}

impl FlowSpec {
    /// Whether any step opens a WebSocket.
    pub fn connects(&self) -> bool {
        fn any(steps: &[Step]) -> bool {
            steps.iter().any(|s| match &s.kind {
                StepKind::Connect => true,
                StepKind::Loop { steps, .. } => any(steps),
                _ => false,
            })
        }
        any(&self.steps)
    }
}
