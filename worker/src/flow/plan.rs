//! A flow prepared once per run: every step of the [`FlowSpec`] checked
//! (a worker trusts no spec it is sent), regular expressions compiled, JSON
//! paths parsed, `{{env.NAME}}` resolved. [`super`] runs it.

use std::time::Duration;

use ring::rand::SystemRandom;
use serde_json::Value;
use stampede_model::Template;
use stampede_model::flow::{
    Check, Extract, FlowSpec, HTTP_METHODS, HttpStep, MAX_STEP_NAME, MAX_STEPS, RESERVED_HEADERS, Step,
    StepKind,
};
use stampede_model::jsonpath;
use stampede_model::template::Piece;

use crate::opening::resolve_env;

use super::LONGEST_WAIT_US;

/// A flow prepared once per run (regular expressions compiled, paths
/// parsed, values checked, `{{env.NAME}}` resolved), shared by every slot.
#[derive(Debug)]
pub struct FlowPlan {
    /// The flow as the controller sent it.
    pub spec: FlowSpec,
    pub(super) steps: Vec<Planned>,
    /// Names of the captured variables; a session's values are indexed
    /// alike.
    pub(super) var_names: Vec<String>,
    pub(super) rng: SystemRandom,
}

/// A step ready to run.
#[derive(Debug)]
pub(super) struct Planned {
    pub(super) metric: usize,
    pub(super) kind: Kind,
}

#[derive(Debug)]
pub(super) enum Kind {
    Connect,
    Send {
        message: Template,
        binary: bool,
    },
    Expect {
        check: CheckPlan,
        timeout: Duration,
        capture: Vec<Capture>,
    },
    Capture(Vec<Capture>),
    Sleep {
        min_us: u64,
        max_us: u64,
    },
    Loop {
        count: Option<u64>,
        duration: Option<Duration>,
        steps: Vec<Planned>,
    },
    Http(Box<HttpPlan>),
    Close,
    /// A browser page action (browser sessions only).
    Page(PageAction),
}

/// A page action of a browser session, ready to run.
#[derive(Debug)]
pub(crate) enum PageAction {
    Goto(Template),
    Click { selector: Template, wait_for: Option<Template>, timeout: Duration },
    Fill { selector: Template, text: Template },
    WaitFor { selector: Template, timeout: Duration },
    Evaluate { expression: Template, equals: Option<Value> },
}

/// A [`Check`], compiled.
#[derive(Debug)]
pub(super) enum CheckPlan {
    Any,
    JsonEquals(Vec<String>, Value),
    JsonRegex(Vec<String>, regex::Regex),
    Regex(regex::bytes::Regex),
}

/// A variable set from a message or body: (its index, how to read it).
#[derive(Debug)]
pub(super) struct Capture {
    pub(super) var: usize,
    pub(super) how: ExtractPlan,
}

/// An [`Extract`], compiled.
#[derive(Debug)]
pub(super) enum ExtractPlan {
    Json(Vec<String>),
    Regex(regex::bytes::Regex),
}

#[derive(Debug)]
pub(super) struct HttpPlan {
    pub(super) method: String,
    pub(super) path: Template,
    pub(super) headers: Vec<(String, Template)>,
    pub(super) body: Option<Template>,
    pub(super) status: u16,
    pub(super) timeout: Duration,
}

fn micros(us: u64) -> Duration {
    Duration::from_micros(us.min(LONGEST_WAIT_US))
}

impl FlowPlan {
    /// Prepares `spec`; the error names the step and what cannot be used.
    /// Nothing in a spec makes a worker panic: it is checked here as if
    /// the controller had not checked it.
    pub fn new(spec: &FlowSpec) -> Result<FlowPlan, String> {
        FlowPlan::prepare(spec, false)
    }

    /// Prepares the flow of a browser session: page actions, `expect` on
    /// the app's WebSocket frames, `capture`, `sleep` and `loop`; steps
    /// that use a WebSocket of our own are refused.
    pub fn for_browser(spec: &FlowSpec) -> Result<FlowPlan, String> {
        FlowPlan::prepare(spec, true)
    }

    fn prepare(spec: &FlowSpec, browser: bool) -> Result<FlowPlan, String> {
        if spec.steps.is_empty() {
            return Err("the flow has no steps".into());
        }
        if spec.names.len() > MAX_STEPS {
            return Err(format!("the flow has {} step names, more than {MAX_STEPS}", spec.names.len()));
        }
        for (i, name) in spec.names.iter().enumerate() {
            if name.is_empty() || name.len() > MAX_STEP_NAME {
                return Err(format!("flow step name {name:?}: give 1 to {MAX_STEP_NAME} bytes"));
            }
            if spec.names[..i].contains(name) {
                return Err(format!("flow step name {name:?} is used twice"));
            }
        }
        let mut b = Builder {
            names: &spec.names,
            used: vec![false; spec.names.len()],
            vars: Vec::new(),
            steps: 0,
            browser,
        };
        let steps = b.steps(&spec.steps)?;
        Ok(FlowPlan { spec: spec.clone(), steps, var_names: b.vars, rng: SystemRandom::new() })
    }

    pub(super) fn var_index(&self, name: &str) -> Option<usize> {
        self.var_names.iter().position(|n| n == name)
    }
}

/// Compiles steps, counting them and their metrics.
pub(super) struct Builder<'s> {
    pub(super) names: &'s [String],
    pub(super) used: Vec<bool>,
    pub(super) vars: Vec<String>,
    pub(super) steps: usize,
    /// Preparing a browser session's flow.
    pub(super) browser: bool,
}

impl Builder<'_> {
    pub(super) fn steps(&mut self, steps: &[Step]) -> Result<Vec<Planned>, String> {
        steps.iter().map(|s| self.step(s)).collect()
    }

    pub(super) fn step(&mut self, step: &Step) -> Result<Planned, String> {
        // Counted before a loop's body: this also bounds the nesting depth.
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!("the flow has more than {MAX_STEPS} steps"));
        }
        let name = self.names.get(step.metric).ok_or_else(|| {
            format!("a flow step has metric {}, but there are {} names", step.metric, self.names.len())
        })?;
        if std::mem::replace(&mut self.used[step.metric], true) {
            return Err(format!("flow step name {name:?} is given to two steps"));
        }
        let at = |e: String| format!("flow step {name:?}: {e}");
        let socket = matches!(
            step.kind,
            StepKind::Connect | StepKind::Send { .. } | StepKind::Close | StepKind::Http(_)
        );
        if self.browser && socket {
            return Err(at(
                "a browser session's flow drives its page: connect, send, close and http are not for it"
                    .into(),
            ));
        }
        if !self.browser && step.kind.is_page_action() {
            return Err(at(
                "a page action needs a browser session (a group with engine = \"browser\")".into()
            ));
        }
        let template = |t: &Template| resolve_env(t).map_err(at);
        let kind = match &step.kind {
            StepKind::Connect => Kind::Connect,
            StepKind::Send { message, binary } => {
                Kind::Send { message: resolve_env(message).map_err(at)?, binary: *binary }
            }
            StepKind::Expect { check, timeout_us, capture } => Kind::Expect {
                check: compile_check(check).map_err(at)?,
                timeout: micros(*timeout_us),
                capture: self.captures(capture).map_err(at)?,
            },
            StepKind::Capture { vars } => Kind::Capture(self.captures(vars).map_err(at)?),
            StepKind::Sleep { min_us, max_us } => {
                if min_us > max_us {
                    return Err(at(format!("min_us {min_us} is more than max_us {max_us}")));
                }
                Kind::Sleep { min_us: (*min_us).min(LONGEST_WAIT_US), max_us: (*max_us).min(LONGEST_WAIT_US) }
            }
            StepKind::Loop { count, duration_us, steps } => {
                if steps.is_empty() {
                    return Err(at("the loop has no steps".into()));
                }
                Kind::Loop { count: *count, duration: duration_us.map(micros), steps: self.steps(steps)? }
            }
            StepKind::Http(h) => Kind::Http(Box::new(compile_http(h).map_err(at)?)),
            StepKind::Close => Kind::Close,
            StepKind::Goto { url } => Kind::Page(PageAction::Goto(template(url)?)),
            StepKind::Click { selector, wait_for, timeout_us } => Kind::Page(PageAction::Click {
                selector: template(selector)?,
                wait_for: wait_for.as_ref().map(template).transpose()?,
                timeout: micros(*timeout_us),
            }),
            StepKind::Fill { selector, text } => {
                Kind::Page(PageAction::Fill { selector: template(selector)?, text: template(text)? })
            }
            StepKind::WaitFor { selector, timeout_us } => Kind::Page(PageAction::WaitFor {
                selector: template(selector)?,
                timeout: micros(*timeout_us),
            }),
            StepKind::Evaluate { expression, equals } => Kind::Page(PageAction::Evaluate {
                expression: template(expression)?,
                equals: equals
                    .as_ref()
                    .map(|e| serde_json::from_str(e).map_err(|e| at(format!("equals is not JSON: {e}"))))
                    .transpose()?,
            }),
        };
        Ok(Planned { metric: step.metric, kind })
    }

    pub(super) fn captures(&mut self, captures: &[(String, Extract)]) -> Result<Vec<Capture>, String> {
        let mut out = Vec::with_capacity(captures.len());
        for (name, how) in captures {
            let how = match how {
                Extract::JsonPath(path) => ExtractPlan::Json(jsonpath::parse(path)?),
                Extract::Regex(re) => ExtractPlan::Regex(
                    regex::bytes::Regex::new(re)
                        .map_err(|e| format!("capture {name:?}: regex {re:?}: {e}"))?,
                ),
            };
            let var = match self.vars.iter().position(|v| v == name) {
                Some(i) => i,
                None => {
                    self.vars.push(name.clone());
                    self.vars.len() - 1
                }
            };
            out.push(Capture { var, how });
        }
        Ok(out)
    }
}

pub(super) fn compile_check(check: &Check) -> Result<CheckPlan, String> {
    Ok(match check {
        Check::Any => CheckPlan::Any,
        Check::JsonEquals { path, value } => CheckPlan::JsonEquals(
            jsonpath::parse(path)?,
            serde_json::from_str(value).map_err(|e| format!("the value {value:?} is not JSON: {e}"))?,
        ),
        Check::JsonRegex { path, regex } => CheckPlan::JsonRegex(
            jsonpath::parse(path)?,
            regex::Regex::new(regex).map_err(|e| format!("regex {regex:?}: {e}"))?,
        ),
        Check::Regex(re) => {
            CheckPlan::Regex(regex::bytes::Regex::new(re).map_err(|e| format!("regex {re:?}: {e}"))?)
        }
    })
}

pub(super) fn compile_http(h: &HttpStep) -> Result<HttpPlan, String> {
    if !HTTP_METHODS.contains(&h.method.as_str()) {
        return Err(format!("method {:?}: use one of {}", h.method, HTTP_METHODS.join(", ")));
    }
    if !(100..=599).contains(&h.status) {
        return Err(format!("status {} is not an HTTP status", h.status));
    }
    let no_breaks = |t: &Template, what: &str| {
        let bad = t.pieces().iter().any(|p| matches!(p, Piece::Literal(s) if s.contains(['\r', '\n', '\0'])));
        if bad { Err(format!("{what} may not contain a line break")) } else { Ok(()) }
    };
    let path = resolve_env(&h.path)?;
    no_breaks(&path, "the path")?;
    if path.pieces().first().is_some_and(|p| matches!(p, Piece::Literal(s) if !s.starts_with('/'))) {
        return Err(format!("path {:?} must start with /", h.path.source()));
    }
    let mut headers = Vec::with_capacity(h.headers.len());
    for (name, value) in &h.headers {
        if !crate::http::is_token(name) {
            return Err(format!("header name {name:?} is not a valid HTTP header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("header {name:?} is set by the HTTP client itself"));
        }
        let value = resolve_env(value)?;
        no_breaks(&value, &format!("header {name}"))?;
        headers.push((name.clone(), value));
    }
    Ok(HttpPlan {
        method: h.method.clone(),
        path,
        headers,
        body: h.body.as_ref().map(resolve_env).transpose()?,
        status: h.status,
        timeout: micros(h.timeout_us),
    })
}

impl CheckPlan {
    pub(super) fn passes(&self, frame: &[u8]) -> bool {
        let at = |path: &[String]| -> Option<Value> {
            let doc: Value = serde_json::from_slice(frame).ok()?;
            jsonpath::lookup(&doc, path).cloned()
        };
        match self {
            CheckPlan::Any => true,
            CheckPlan::Regex(re) => re.is_match(frame),
            CheckPlan::JsonEquals(path, want) => at(path).is_some_and(|v| json_eq(&v, want)),
            CheckPlan::JsonRegex(path, re) => match at(path) {
                Some(Value::String(s)) => re.is_match(&s),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => re.is_match(&v.to_string()),
                _ => false,
            },
        }
    }
}

/// JSON equality where numbers are equal as numbers (`1` is `1.0`) and
/// integers compare exactly.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || ((x.is_f64() || y.is_f64()) && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(metric: usize, kind: StepKind) -> Step {
        Step { metric, kind }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    fn plan_err(steps: Vec<Step>, n: usize) -> String {
        FlowPlan::new(&FlowSpec { steps, names: names(n) }).unwrap_err()
    }

    fn expect(check: Check, capture: Vec<(String, Extract)>) -> StepKind {
        StepKind::Expect { check, timeout_us: 1000, capture }
    }

    #[test]
    fn checks_read_json_as_values() {
        let eq = |path: &str, value: &str| {
            compile_check(&Check::JsonEquals { path: path.into(), value: value.into() })
        };
        let frame = br#"{"op":"message","n":1.0,"big":18446744073709551615,"o":{"a":[1,"x"]}}"#;
        assert!(eq("op", r#""message""#).unwrap().passes(frame));
        assert!(!eq("op", r#""other""#).unwrap().passes(frame));
        assert!(eq("n", "1").unwrap().passes(frame), "1.0 is 1");
        assert!(!eq("big", "18446744073709551614").unwrap().passes(frame), "integers compare exactly");
        assert!(eq("o", r#"{"a":[1.0,"x"]}"#).unwrap().passes(frame));
        assert!(!eq("missing", "1").unwrap().passes(frame));
        assert!(!eq("op", r#""message""#).unwrap().passes(b"not json"));
        let re = |path: &str, regex: &str| {
            compile_check(&Check::JsonRegex { path: path.into(), regex: regex.into() })
        };
        assert!(re("op", "^mess").unwrap().passes(frame));
        assert!(re("n", r"^1\.0$").unwrap().passes(frame));
        assert!(!re("o", ".").unwrap().passes(frame), "objects are not matched as text");
        assert!(compile_check(&Check::Regex("age\",\"n".into())).unwrap().passes(frame));
        assert!(CheckPlan::Any.passes(b"\xff\xfe binary"));
    }

    #[test]
    fn anything_invalid_is_refused_with_the_step_named() {
        let bad_regex = plan_err(vec![step(0, expect(Check::Regex("(".into()), vec![]))], 1);
        assert!(bad_regex.contains("\"s0\"") && bad_regex.contains("regex"), "{bad_regex}");
        let bad_value = plan_err(
            vec![step(0, expect(Check::JsonEquals { path: "a".into(), value: "{".into() }, vec![]))],
            1,
        );
        assert!(bad_value.contains("not JSON"), "{bad_value}");
        let bad_path = plan_err(
            vec![step(0, expect(Check::Any, vec![("id".into(), Extract::JsonPath("a..b".into()))]))],
            1,
        );
        assert!(bad_path.contains("empty step"), "{bad_path}");
        let bad_capture = plan_err(
            vec![step(0, StepKind::Capture { vars: vec![("x".into(), Extract::Regex("[".into()))] })],
            1,
        );
        assert!(bad_capture.contains("capture \"x\""), "{bad_capture}");
        assert!(plan_err(vec![step(3, StepKind::Connect)], 1).contains("metric 3"));
        assert!(
            plan_err(vec![step(0, StepKind::Connect), step(0, StepKind::Close)], 1).contains("two steps")
        );
        assert!(plan_err(vec![], 0).contains("no steps"));
        assert!(plan_err(vec![step(0, StepKind::Sleep { min_us: 5, max_us: 1 })], 1).contains("min_us"));
        let empty_loop = StepKind::Loop { count: Some(1), duration_us: None, steps: vec![] };
        assert!(plan_err(vec![step(0, empty_loop)], 1).contains("no steps"));
        let http = |method: &str, path: &str, headers: Vec<(&str, &str)>| {
            StepKind::Http(HttpStep {
                method: method.into(),
                path: Template::parse(path).unwrap(),
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), Template::parse(v).unwrap()))
                    .collect(),
                body: None,
                status: 200,
                timeout_us: 1000,
            })
        };
        assert!(plan_err(vec![step(0, http("TRACE", "/", vec![]))], 1).contains("method"));
        assert!(plan_err(vec![step(0, http("GET", "x", vec![]))], 1).contains("start with /"));
        assert!(
            plan_err(vec![step(0, http("GET", "/", vec![("Host", "h")]))], 1)
                .contains("set by the HTTP client")
        );
        assert!(plan_err(vec![step(0, http("GET", "/", vec![("A B", "h")]))], 1).contains("header name"));
        assert!(plan_err(vec![step(0, http("GET", "/", vec![("X", "a\r\nb")]))], 1).contains("line break"));
        // Names: too many, too long, twice.
        let many = FlowSpec { steps: vec![step(0, StepKind::Connect)], names: names(MAX_STEPS + 1) };
        assert!(FlowPlan::new(&many).is_err());
        let long =
            FlowSpec { steps: vec![step(0, StepKind::Connect)], names: vec!["x".repeat(MAX_STEP_NAME + 1)] };
        assert!(FlowPlan::new(&long).is_err());
        let twice = FlowSpec { steps: vec![step(0, StepKind::Connect)], names: vec!["a".into(), "a".into()] };
        assert!(FlowPlan::new(&twice).unwrap_err().contains("used twice"));
    }

    #[test]
    fn nesting_is_bounded_by_the_step_count() {
        // Loops nested deeper than MAX_STEPS: refused before recursing far.
        let mut kind = StepKind::Connect;
        for i in (1..=MAX_STEPS + 5).rev() {
            kind = StepKind::Loop { count: Some(1), duration_us: None, steps: vec![step(i, kind)] };
        }
        let spec = FlowSpec { steps: vec![step(0, kind)], names: names(MAX_STEPS) };
        assert!(FlowPlan::new(&spec).is_err());
        let huge = StepKind::Sleep { min_us: 0, max_us: u64::MAX };
        let waits = StepKind::Expect { check: Check::Any, timeout_us: u64::MAX, capture: vec![] };
        let plan =
            FlowPlan::new(&FlowSpec { steps: vec![step(0, huge), step(1, waits)], names: names(2) }).unwrap();
        assert!(matches!(plan.steps[0].kind, Kind::Sleep { max_us: LONGEST_WAIT_US, .. }));
    }
}
