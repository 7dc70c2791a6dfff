//! `[messages]`: what an open connection sends and how the answers are
//! read, for servers that do not echo. `mode = "echo"` (the default) sends
//! stamped payloads the server echoes; `"request"` sends a template every
//! message interval and matches each reply to its request; `"receive"`
//! subscribes once and measures what the server pushes. Everything that can
//! be checked is checked here, with the line and column of the value at
//! fault: templates are parsed (a file relative to the scenario's folder),
//! regular expressions compiled, and a JSON matcher's path looked up in the
//! template rendered with sample values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use stampede_model::Template;
use stampede_model::jsonpath;
use stampede_model::spec::{
    BroadcastSpec, Matcher, PairsMode, PairsSpec, ReceiveSpec, RequestSpec, SessionSpec, TimeUnit,
    TimestampField, TimestampSpec,
};
use stampede_model::template::Var;
use toml::Spanned;

use crate::scenario::{Length, Scenario, ScenarioError, Seconds};

/// How long a request waits for its reply unless `reply_timeout` says.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

mod channels;

use channels::{broadcast, pairs};

/// `[messages]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesSection {
    /// `"echo"` (default), `"request"` or `"receive"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Spanned<Mode>>,
    /// Request mode: the message, a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Spanned<String>>,
    /// Request mode: a file holding the template, relative to the scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_file: Option<Spanned<PathBuf>>,
    /// Request mode: send binary frames instead of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<Spanned<bool>>,
    /// Request mode: how a reply finds its request.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<Spanned<MatchRule>>,
    /// Request mode: a reply later than this counts the request lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_timeout: Option<Spanned<Length>>,
    /// Receive mode: messages sent once after opening, templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Spanned<Vec<Spanned<String>>>>,
    /// Receive mode: where a pushed message carries its send time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Spanned<TimestampRule>>,
    /// Receive mode: the timestamp's unit since the Unix epoch (default ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_unit: Option<Spanned<TimeUnit>>,
    /// Receive mode: a silence longer than this on a connection is a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Spanned<Seconds>>,
    /// Pairs mode: `"realistic-session"` (default), `"steady-messaging"` or
    /// `"async-delivery"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs_mode: Option<Spanned<PairsMode>>,
    /// Pairs mode: messages each side sends per session (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_side: Option<Spanned<u64>>,
    /// Pairs mode, async-delivery: how long side b stays away (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<Spanned<Length>>,
    /// Pairs mode: how long a session waits for its last messages before
    /// counting them lost (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_timeout: Option<Spanned<Length>>,
    /// Pairs mode, a test aid: side b holds a key of its own, so every
    /// message is undecryptable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrong_key: Option<Spanned<bool>>,
    /// Broadcast mode: connections that publish, fleet-wide (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishers: Option<Spanned<u64>>,
    /// Broadcast mode: channels (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Spanned<u64>>,
    /// Broadcast mode: channels each connection uses (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels_per_connection: Option<Spanned<u64>>,
    /// Broadcast mode: publishers wait this long after connecting before
    /// their first message (default 2 s), so subscribers are in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_delay: Option<Spanned<Seconds>>,
}

/// What a connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Stamped payloads, echoed.
    Echo,
    /// A template every interval, each reply matched.
    Request,
    /// Subscribe, then listen.
    Receive,
    /// Two connections per session, end-to-end encrypted, through the
    /// relay's channels.
    Pairs,
    /// Publishers and subscribers on the relay's channels.
    Broadcast,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Request => "request",
            Mode::Receive => "receive",
            Mode::Pairs => "pairs",
            Mode::Broadcast => "broadcast",
        }
    }

    /// Whether the mode speaks the relay's channel protocol (`/pubsub`).
    pub fn uses_channels(self) -> bool {
        matches!(self, Mode::Pairs | Mode::Broadcast)
    }
}

pub use channels::{
    DEFAULT_AWAY, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_MESSAGES_PER_SIDE, DEFAULT_PUBLISH_DELAY, MAX_CHANNELS,
};

/// `match = "json:PATH" | "regex:RE" | "any"`, checked as it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchRule {
    text: String,
    /// What it means.
    pub matcher: Matcher,
}

const MATCH_FORMS: &str = "write \"json:PATH\" (a field the server copies from the request, e.g. \
     json:id), \"regex:RE\" (its first group is the request's {{seq}}) or \"any\" (a reply \
     answers the oldest request waiting)";

impl<'de> Deserialize<'de> for MatchRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let matcher = if text == "any" {
            Matcher::AnyNext
        } else if let Some(path) = text.strip_prefix("json:") {
            jsonpath::parse(path).map_err(serde::de::Error::custom)?;
            Matcher::JsonField(path.to_string())
        } else if let Some(re) = text.strip_prefix("regex:") {
            check_regex(re, "the request's {{seq}}").map_err(serde::de::Error::custom)?;
            Matcher::Regex(re.to_string())
        } else {
            return Err(serde::de::Error::custom(format!("match {text:?}: {MATCH_FORMS}")));
        };
        Ok(MatchRule { text, matcher })
    }
}

impl Serialize for MatchRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// `timestamp = "json:PATH" | "regex:RE"`, checked as it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct TimestampRule {
    text: String,
    /// What it means.
    pub field: TimestampField,
}

impl<'de> Deserialize<'de> for TimestampRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let field = if let Some(path) = text.strip_prefix("json:") {
            jsonpath::parse(path).map_err(serde::de::Error::custom)?;
            TimestampField::JsonPath(path.to_string())
        } else if let Some(re) = text.strip_prefix("regex:") {
            check_regex(re, "the timestamp").map_err(serde::de::Error::custom)?;
            TimestampField::Regex(re.to_string())
        } else {
            return Err(serde::de::Error::custom(format!(
                "timestamp {text:?}: write \"json:PATH\" (a number field, e.g. json:ts) or \"regex:RE\" \
                 (its first group is the number)"
            )));
        };
        Ok(TimestampRule { text, field })
    }
}

impl Serialize for TimestampRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Compiles `re` (as the workers will) and checks it has a group for `what`.
fn check_regex(re: &str, what: &str) -> Result<(), String> {
    let compiled = regex::Regex::new(re).map_err(|e| format!("regex {re:?} is not valid: {e}"))?;
    if compiled.captures_len() < 2 {
        return Err(format!("regex {re:?} has no capture group: put {what} in (parentheses)"));
    }
    Ok(())
}

/// Where errors point.
struct Place<'a> {
    path: &'a Path,
    source: &'a str,
}

impl Place<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError::at(self.path, self.source, at, message)
    }

    /// Where `[messages]` starts, for errors about what it lacks.
    fn table(&self) -> usize {
        self.source.find("[messages]").unwrap_or(0)
    }
}

/// The session every connection runs, from `[messages]`; `path` and
/// `source` are the scenario file and its text (errors point into it,
/// `template_file` is relative to its folder).
pub fn session_spec(sc: &Scenario, path: &Path, source: &str) -> Result<SessionSpec, ScenarioError> {
    if let Some(flow) = crate::flow::flow_spec(sc, path, source)? {
        return Ok(SessionSpec::Flow(flow));
    }
    let Some(m) = &sc.messages else { return Ok(SessionSpec::Echo) };
    let place = Place { path, source };
    let mode = m.mode.as_ref().map_or(Mode::Echo, |s| *s.get_ref());
    let request_keys = [
        ("template", m.template.as_ref().map(|v| v.span().start)),
        ("template_file", m.template_file.as_ref().map(|v| v.span().start)),
        ("binary", m.binary.as_ref().map(|v| v.span().start)),
        ("match", m.matcher.as_ref().map(|v| v.span().start)),
        ("reply_timeout", m.reply_timeout.as_ref().map(|v| v.span().start)),
    ];
    let receive_keys = [
        ("subscribe", m.subscribe.as_ref().map(|v| v.span().start)),
        ("timestamp", m.timestamp.as_ref().map(|v| v.span().start)),
        ("timestamp_unit", m.timestamp_unit.as_ref().map(|v| v.span().start)),
        ("gap", m.gap.as_ref().map(|v| v.span().start)),
    ];
    let pairs_keys = [
        ("pairs_mode", m.pairs_mode.as_ref().map(|v| v.span().start)),
        ("messages_per_side", m.messages_per_side.as_ref().map(|v| v.span().start)),
        ("away", m.away.as_ref().map(|v| v.span().start)),
        ("delivery_timeout", m.delivery_timeout.as_ref().map(|v| v.span().start)),
        ("wrong_key", m.wrong_key.as_ref().map(|v| v.span().start)),
    ];
    let broadcast_keys = [
        ("publishers", m.publishers.as_ref().map(|v| v.span().start)),
        ("channels", m.channels.as_ref().map(|v| v.span().start)),
        ("channels_per_connection", m.channels_per_connection.as_ref().map(|v| v.span().start)),
        ("publish_delay", m.publish_delay.as_ref().map(|v| v.span().start)),
    ];
    let misplaced = |keys: &[(&str, Option<usize>)], belongs: Mode| -> Result<(), ScenarioError> {
        match keys.iter().find_map(|(k, at)| at.map(|at| (k, at))) {
            Some((key, at)) => Err(place.err(
                at,
                format!(
                    "`{key}` applies to mode = \"{}\", and [messages] mode is \"{}\"{}",
                    belongs.name(),
                    mode.name(),
                    if m.mode.is_none() { " (the default): set mode" } else { "" }
                ),
            )),
            None => Ok(()),
        }
    };
    let groups = [
        (Mode::Request, &request_keys[..]),
        (Mode::Receive, &receive_keys[..]),
        (Mode::Pairs, &pairs_keys[..]),
        (Mode::Broadcast, &broadcast_keys[..]),
    ];
    for (belongs, keys) in groups {
        if belongs != mode {
            misplaced(keys, belongs)?;
        }
    }
    match mode {
        Mode::Echo => Ok(SessionSpec::Echo),
        Mode::Request => request(m, &place).map(SessionSpec::Request),
        Mode::Receive => receive(m, &place).map(SessionSpec::Receive),
        Mode::Pairs => pairs(m, &place).map(SessionSpec::Pairs),
        Mode::Broadcast => broadcast(m, &place).map(SessionSpec::Broadcast),
    }
}

/// `[messages] mode`, as written (echo when absent).
pub fn mode_of(sc: &Scenario) -> Mode {
    sc.messages.as_ref().and_then(|m| m.mode.as_ref()).map_or(Mode::Echo, |s| *s.get_ref())
}

fn mode_at(m: &MessagesSection, place: &Place) -> usize {
    m.mode.as_ref().map_or_else(|| place.table(), |s| s.span().start)
}

/// A message template as written at `at`; `what` names it in errors.
fn template(text: &str, at: usize, what: &str, place: &Place) -> Result<Template, ScenarioError> {
    let t = Template::parse(text).map_err(|e| place.err(at, format!("{what}: {e}")))?;
    if let Some(name) = t.pieces().iter().find_map(|p| match p {
        stampede_model::template::Piece::Var(Var::Captured(n)) => Some(n),
        _ => None,
    }) {
        return Err(place.err(
            at,
            format!("{what}: {{{{var.{name}}}}} is a value a flow captured; only [[flow]] steps can use it"),
        ));
    }
    if t.uses(&Var::Jwt) {
        return Err(place.err(
            at,
            format!("{what}: {{{{jwt}}}} is the handshake's token; messages cannot use it (send it with [target.jwt])"),
        ));
    }
    Ok(t)
}

fn request(m: &MessagesSection, place: &Place) -> Result<RequestSpec, ScenarioError> {
    let (message, template_at) = match (&m.template, &m.template_file) {
        (Some(_), Some(file)) => {
            return Err(place.err(file.span().start, "give either template or template_file, not both"));
        }
        (Some(t), None) => (template(t.get_ref(), t.span().start, "template", place)?, t.span().start),
        (None, Some(file)) => {
            let at = file.span().start;
            let full = place.path.parent().unwrap_or(Path::new(".")).join(file.get_ref());
            let text = std::fs::read_to_string(&full)
                .map_err(|e| place.err(at, format!("template_file {}: cannot read: {e}", full.display())))?;
            // A file's trailing newline is the editor's, not the message's.
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            (template(text, at, &format!("template_file {}", full.display()), place)?, at)
        }
        (None, None) => {
            return Err(place.err(
                mode_at(m, place),
                "mode = \"request\" needs the message: template = '...' or template_file = \"path\"",
            ));
        }
    };
    let Some(rule) = &m.matcher else {
        return Err(place.err(mode_at(m, place), format!("mode = \"request\" needs match: {MATCH_FORMS}")));
    };
    let match_at = rule.span().start;
    match &rule.get_ref().matcher {
        Matcher::JsonField(path) => check_json_key(&message, path, template_at, match_at, place)?,
        Matcher::Regex(_) if !message.uses(&Var::Seq) => {
            return Err(place.err(
                match_at,
                "a regex match compares its first group with the request's {{seq}}, and the template \
                 does not use {{seq}}: put it in the message, or use match = \"any\"",
            ));
        }
        Matcher::Regex(_) | Matcher::AnyNext => {}
    }
    let timeout =
        m.reply_timeout.as_ref().map_or(DEFAULT_REPLY_TIMEOUT, |t| Duration::from_secs_f64(t.get_ref().0));
    Ok(RequestSpec {
        message,
        binary: m.binary.as_ref().is_some_and(|b| *b.get_ref()),
        matcher: rule.get_ref().matcher.clone(),
        reply_timeout_us: timeout.as_micros().max(1) as u64,
    })
}

/// Renders `t` as a worker would, with sample values: request `seq`, a
/// fixed UUID per `seq`, `{{env.NAME}}` from this process (or `0`).
fn sample(t: &Template, seq: u64) -> String {
    let mut out = String::new();
    t.render_into(&mut out, |v, out| match v {
        Var::Seq => out.push_str(&seq.to_string()),
        Var::Conn => out.push('0'),
        Var::Worker => out.push_str("local-1"),
        Var::Uuid => out.push_str(&format!("00000000-0000-4000-8000-{seq:012x}")),
        Var::NowMs => out.push_str("1700000000000"),
        Var::NowUs => out.push_str("1700000000000000"),
        Var::Env(name) => out.push_str(&std::env::var(name).unwrap_or_else(|_| "0".into())),
        Var::Jwt | Var::Captured(_) => {}
    });
    out
}

/// A JSON matcher needs JSON requests that carry a scalar at `path`, and a
/// different one in each request (else no reply could tell its request).
fn check_json_key(
    message: &Template,
    path: &str,
    template_at: usize,
    match_at: usize,
    place: &Place,
) -> Result<(), ScenarioError> {
    let steps = jsonpath::parse(path).map_err(|e| place.err(match_at, e))?;
    let key = |seq: u64| -> Result<Value, ScenarioError> {
        let text = sample(message, seq);
        let doc: Value = serde_json::from_str(&text).map_err(|e| {
            place.err(
                template_at,
                format!(
                    "the template is not JSON ({e}; rendered: {text}), and match = \"json:{path}\" reads \
                     the request's key from it: use match = \"regex:...\" or \"any\" for other formats"
                ),
            )
        })?;
        match jsonpath::lookup(&doc, &steps) {
            None => Err(place.err(
                match_at,
                format!("match = \"json:{path}\": the template has no `{path}` (rendered: {text})"),
            )),
            Some(Value::Object(_) | Value::Array(_)) => Err(place.err(
                match_at,
                format!("match = \"json:{path}\": `{path}` in the template is not a string or a number"),
            )),
            Some(v) => Ok(v.clone()),
        }
    };
    let (first, second) = (key(1)?, key(2)?);
    if first == second {
        return Err(place.err(
            match_at,
            format!(
                "match = \"json:{path}\": `{path}` is {first} in every request, so a reply cannot tell which \
                 it answers: put {{{{seq}}}} or {{{{uuid}}}} in it, or use match = \"any\""
            ),
        ));
    }
    Ok(())
}

fn receive(m: &MessagesSection, place: &Place) -> Result<ReceiveSpec, ScenarioError> {
    let subscribe = m
        .subscribe
        .iter()
        .flat_map(|list| list.get_ref())
        .map(|s| template(s.get_ref(), s.span().start, "subscribe", place))
        .collect::<Result<Vec<_>, _>>()?;
    let timestamp = match (&m.timestamp, &m.timestamp_unit) {
        (None, Some(unit)) => {
            return Err(place
                .err(unit.span().start, "timestamp_unit needs timestamp = \"json:PATH\" or \"regex:RE\""));
        }
        (None, None) => None,
        (Some(ts), unit) => Some(TimestampSpec {
            field: ts.get_ref().field.clone(),
            unit: unit.as_ref().map_or(TimeUnit::Ms, |u| *u.get_ref()),
        }),
    };
    let gap_us = m.gap.as_ref().map_or(0, |g| Duration::from_secs_f64(g.get_ref().0).as_micros() as u64);
    Ok(ReceiveSpec { subscribe, timestamp, gap_us })
}

#[cfg(test)]
mod tests;
