//! Reading `[[flow]]` tables into steps, checking each as it goes (see
//! [`super`] for what is checked).

use super::*;

/// What the steps before the one being read leave behind.
#[derive(Debug, Clone, Default)]
pub(super) struct State {
    /// The WebSocket is open.
    pub(super) connected: bool,
    /// Where the last `close` is, while the WebSocket is closed after one.
    pub(super) closed: Option<usize>,
    /// Variables captured so far.
    pub(super) captured: BTreeSet<String>,
    /// An `expect` or `http` step ran: a `capture` step has something to read.
    pub(super) answered: bool,
}

/// Reads a flow, keeping what errors need.
pub(super) struct Reader<'a> {
    pub(super) path: &'a Path,
    pub(super) source: &'a str,
    /// Every step's name by metric index: written ones, `None` for those
    /// named after their kind once all written names are known.
    pub(super) names: Vec<(Option<String>, Kind)>,
    /// Written names, with where they are.
    pub(super) written: BTreeMap<String, usize>,
    /// Reading a browser group's flow, named this: page actions instead of
    /// a WebSocket of our own, and default names start with the group's.
    pub(super) group: Option<String>,
}

pub(super) fn us(seconds: f64) -> u64 {
    Duration::from_secs_f64(seconds).as_micros().max(1) as u64
}

impl<'a> Reader<'a> {
    pub(super) fn new(path: &'a Path, source: &'a str, group: Option<String>) -> Reader<'a> {
        Reader { path, source, names: Vec::new(), written: BTreeMap::new(), group }
    }

    pub(super) fn err(&self, at: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError::at(self.path, self.source, at, message)
    }

    pub(super) fn line(&self, at: usize) -> usize {
        self.source[..at.min(self.source.len())].matches('\n').count() + 1
    }

    pub(super) fn steps(
        &mut self,
        tables: &[Spanned<StepTable>],
        depth: usize,
        st: &mut State,
    ) -> Result<Vec<Step>, ScenarioError> {
        tables.iter().map(|t| self.step(t, depth, st)).collect()
    }

    pub(super) fn step(
        &mut self,
        t: &Spanned<StepTable>,
        depth: usize,
        st: &mut State,
    ) -> Result<Step, ScenarioError> {
        let table = t.get_ref();
        let Some(kind_text) = &table.step else {
            return Err(
                self.err(t.span().start, format!("a flow step needs `step = \"KIND\"`: one of {KINDS}"))
            );
        };
        let at = kind_text.span().start;
        let kinds = if self.group.is_some() { PAGE_KINDS } else { KINDS };
        let kind = Kind::parse(kind_text.get_ref()).ok_or_else(|| {
            self.err(at, format!("unknown step kind {:?}: use {kinds}", kind_text.get_ref()))
        })?;
        if let Some(group) = &self.group
            && kind.is_native_only()
        {
            return Err(self.err(
                at,
                format!(
                    "{} in browser group {group}: the page opens its own WebSockets (the app's); a browser \
                     session's steps are {PAGE_KINDS}",
                    kind.step()
                ),
            ));
        }
        if self.group.is_none() && kind.is_page_action() {
            return Err(self.err(
                at,
                format!(
                    "{} is a page action: it runs in a browser session, so put it in the flow of a \
                     [[group]] with engine = \"browser\"",
                    kind.step()
                ),
            ));
        }
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
        // A browser session's expect reads the app's frames: no socket of ours.
        if kind.uses_socket() && self.group.is_none() {
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
            Kind::Goto => {
                let Some(url) = &table.url else {
                    return Err(self.err(
                        at,
                        "a goto step needs url = \"/path\" (on the target's host) or a whole http(s) URL",
                    ));
                };
                let t = self.template(url, "url", st)?;
                let text = t.source();
                if !(text.starts_with('/') || text.starts_with("http://") || text.starts_with("https://")) {
                    return Err(self.err(
                        url.span().start,
                        format!("url {text:?}: give a path starting with `/` (on the target's host) or an http(s):// URL"),
                    ));
                }
                StepKind::Goto { url: t }
            }
            Kind::Click => StepKind::Click {
                selector: self.selector(table, at, kind, st)?,
                wait_for: table.wait_for.as_ref().map(|w| self.template(w, "wait_for", st)).transpose()?,
                timeout_us: timeout(&table.timeout),
            },
            Kind::Fill => {
                let Some(text) = &table.text else {
                    return Err(
                        self.err(at, "a fill step needs text = \"...\" (a template; \"\" clears the field)")
                    );
                };
                StepKind::Fill {
                    selector: self.selector(table, at, kind, st)?,
                    text: self.template(text, "text", st)?,
                }
            }
            Kind::WaitFor => StepKind::WaitFor {
                selector: self.selector(table, at, kind, st)?,
                timeout_us: timeout(&table.timeout),
            },
            Kind::Evaluate => {
                let Some(expression) = &table.expression else {
                    return Err(self.err(at, "an evaluate step needs expression = \"...\" (JavaScript)"));
                };
                let equals = match &table.equals {
                    Some(v) => Some(
                        to_json(v.get_ref())
                            .map_err(|e| self.err(v.span().start, format!("equals: {e}")))?
                            .to_string(),
                    ),
                    None => None,
                };
                st.answered = true;
                StepKind::Evaluate { expression: self.template(expression, "expression", st)?, equals }
            }
        };
        Ok(Step { metric, kind: what })
    }

    /// A page action's CSS selector (a template).
    fn selector(&self, t: &StepTable, at: usize, kind: Kind, st: &State) -> Result<Template, ScenarioError> {
        let Some(selector) = &t.selector else {
            return Err(self.err(at, format!("{} needs selector = \"CSS\" (e.g. \"#send\")", kind.step())));
        };
        if selector.get_ref().trim().is_empty() {
            return Err(self.err(selector.span().start, "selector is empty: give a CSS selector"));
        }
        self.template(selector, "selector", st)
    }

    /// A written step name, checked.
    pub(super) fn name(&mut self, n: &Spanned<String>) -> Result<String, ScenarioError> {
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
    pub(super) fn template(
        &self,
        s: &Spanned<String>,
        what: &str,
        st: &State,
    ) -> Result<Template, ScenarioError> {
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
    pub(super) fn check(&self, t: &StepTable) -> Result<Check, ScenarioError> {
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
    pub(super) fn captures(
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

    pub(super) fn http(&self, t: &StepTable, at: usize, st: &State) -> Result<HttpStep, ScenarioError> {
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
    pub(super) fn finish_names(&self) -> Vec<String> {
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
                let base = match &self.group {
                    Some(group) => format!("{group}_{k}"),
                    None => k.to_string(),
                };
                loop {
                    let candidate = if *n == 1 { base.clone() } else { format!("{base}_{n}") };
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
pub(super) fn first_socket_step(tables: &[Spanned<StepTable>]) -> Option<(Kind, usize)> {
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

pub(super) fn timeout(t: &Option<Spanned<Length>>) -> u64 {
    t.as_ref().map_or(DEFAULT_STEP_TIMEOUT.as_micros() as u64, |t| us(t.get_ref().0))
}

/// A TOML value as JSON; dates and non-finite numbers have no JSON form.
pub(super) fn to_json(v: &toml::Value) -> Result<Json, String> {
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
