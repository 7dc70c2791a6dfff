//! The `[[stage]]` list: load shapes beyond the fixed `[phases]` table.
//! Each stage becomes one or more phases of the plan (each phase has its own
//! name in metrics.csv and its own figures in summary.json) that follow a
//! shape of the model ([`stampede_model::Shape`]), the same function the
//! workers follow. A stress stage is also watched while the run goes
//! ([`crate::stress::StressWatch`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stampede_model::{Arrivals, Churn, Ramp, Shape, StageKind, Wave};
use toml::Spanned;

use crate::plan::PhasePlan;
use crate::scenario::{ScenarioError, Seconds, Value};
use crate::threshold::{Condition, Metric};

/// Most phases a stage may make (a stress or steps stage: one per level).
pub const MAX_LEVELS: usize = 1000;

/// One `[[stage]]` as written. Every key any kind takes is here; which ones
/// a kind takes is checked when the plan is made, so an error names the
/// key and its line rather than a serde variant.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// What the stage does.
    pub kind: Spanned<Kind>,
    /// Its name in results (default from the kind, made unique: `ramp-2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Spanned<String>>,
    /// Level to move to (ramp, spike, churn), or the wave's high.
    #[serde(default, alias = "high", skip_serializing_if = "Option::is_none")]
    pub to: Option<Spanned<Level>>,
    /// The wave's low, or the first level of a stress stage.
    #[serde(default, alias = "low", skip_serializing_if = "Option::is_none")]
    pub from: Option<Spanned<Level>>,
    /// Length of the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Spanned<Seconds>>,
    /// Levels of a steps (or stress) stage, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Spanned<Vec<Level>>>,
    /// Length of each step (steps, stress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Spanned<Seconds>>,
    /// Connections added at each step of a stress stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_by: Option<Spanned<Level>>,
    /// Time to move into each step's level (its first part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Spanned<Seconds>>,
    /// Length of one up-and-down of a wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Spanned<Seconds>>,
    /// Per second: replacements (churn) or arrivals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Spanned<Rate>>,
    /// Arrivals per second at the stage's start (ramping to `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_rate: Option<Spanned<Rate>>,
    /// How long each arriving session lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Spanned<Seconds>>,
    /// Most sessions open at once (arrivals), or the top level (stress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Spanned<Level>>,
    /// The threshold metric whose failure ends a stress stage (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Spanned<Metric>>,
    /// How long a threshold must fail, second after second, to count as a
    /// break (default: the step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Spanned<Seconds>>,
    /// How long a spike's return to the level before is held (default: the
    /// spike's duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover: Option<Spanned<Seconds>>,
    /// The ramp to 0 that ends a stress stage (default: the step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Spanned<Seconds>>,
}

/// A stage kind as written; an unknown one is an error listing the kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(pub StageKind);

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map(Kind).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// A number of connections: a whole number, 0 or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Level(pub u64);

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Int(n) if n >= 0 => Ok(Level(n as u64)),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not a number of connections: give a whole number, 0 or more"
            ))),
        }
    }
}

/// Events per second: a number from 0 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Rate(pub f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = match Value::deserialize(d)? {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            other => return Err(serde::de::Error::custom(format!("{other} is not a rate per second"))),
        };
        if !(0.0..=1_000_000.0).contains(&v) {
            return Err(serde::de::Error::custom(format!("{v} per second: give a rate from 0 to 1000000")));
        }
        Ok(Rate(v))
    }
}

/// A stress stage as planned: its steps (phase name, level) in order, the
/// ramp to 0 that ends it, and what ends it early.
#[derive(Debug, Clone, PartialEq)]
pub struct StressPlan {
    /// Phase name and level of each step, rising.
    pub steps: Vec<(String, u64)>,
    /// The name of its closing ramp to 0.
    pub cooldown: String,
    /// The threshold metric watched; `None`: every threshold.
    pub until: Option<Metric>,
    /// Seconds a threshold must fail in a row to count as a break.
    pub window_s: u64,
}

/// What the stages need from the rest of the scenario.
pub struct Context<'a> {
    /// The scenario file (for errors).
    pub path: &'a Path,
    /// Its text (for errors).
    pub source: &'a str,
    /// `load.connections`: the default `max` of arrivals and stress stages.
    pub connections: u64,
    /// The scenario's thresholds.
    pub thresholds: &'a [(Metric, Condition)],
}

impl Context<'_> {
    fn err(&self, at: usize, msg: String) -> ScenarioError {
        ScenarioError::at(self.path, self.source, at, msg)
    }
}

/// The keys each kind takes besides `kind` and `name`.
fn keys_of(kind: StageKind) -> &'static [&'static str] {
    match kind {
        StageKind::Ramp => &["to", "duration"],
        StageKind::Hold | StageKind::Soak => &["duration"],
        StageKind::Spike => &["to", "duration", "recover"],
        StageKind::Steps => &["levels", "step", "ramp"],
        StageKind::Wave => &["from", "to", "period", "duration"],
        StageKind::Churn => &["to", "rate", "duration"],
        StageKind::Arrivals => &["rate", "from_rate", "session", "duration", "max"],
        StageKind::Stress => {
            &["from", "step_by", "max", "levels", "step", "ramp", "until", "window", "cooldown"]
        }
    }
}

impl StageSpec {
    /// The keys written, with where each value starts.
    fn written(&self) -> Vec<(&'static str, usize)> {
        fn at<T>(v: &Option<Spanned<T>>) -> Option<usize> {
            v.as_ref().map(|s| s.span().start)
        }
        [
            ("to", at(&self.to)),
            ("from", at(&self.from)),
            ("duration", at(&self.duration)),
            ("levels", at(&self.levels)),
            ("step", at(&self.step)),
            ("step_by", at(&self.step_by)),
            ("ramp", at(&self.ramp)),
            ("period", at(&self.period)),
            ("rate", at(&self.rate)),
            ("from_rate", at(&self.from_rate)),
            ("session", at(&self.session)),
            ("max", at(&self.max)),
            ("until", at(&self.until)),
            ("window", at(&self.window)),
            ("recover", at(&self.recover)),
            ("cooldown", at(&self.cooldown)),
        ]
        .into_iter()
        .filter_map(|(k, at)| at.map(|a| (k, a)))
        .collect()
    }

    fn kind(&self) -> StageKind {
        self.kind.get_ref().0
    }

    /// Where errors about the stage as a whole point: its `kind`.
    fn at(&self) -> usize {
        self.kind.span().start
    }
}

/// A required key's value, or an error at the stage's `kind`.
fn need<'a, T>(
    cx: &Context,
    st: &StageSpec,
    v: &'a Option<Spanned<T>>,
    key: &str,
) -> Result<&'a Spanned<T>, ScenarioError> {
    v.as_ref().ok_or_else(|| {
        let keys = keys_of(st.kind()).join(", ");
        cx.err(st.at(), format!("a {} stage needs `{key}` (it takes: {keys}, name)", st.kind()))
    })
}

/// A duration above 0 as a `Duration`.
fn positive(cx: &Context, v: &Spanned<Seconds>, key: &str) -> Result<Duration, ScenarioError> {
    let s = v.get_ref().0;
    if s <= 0.0 {
        return Err(cx.err(v.span().start, format!("{key} 0 s: give a duration above 0")));
    }
    Ok(Duration::from_secs_f64(s))
}

/// An optional duration above 0, or `default`.
fn positive_or(
    cx: &Context,
    v: &Option<Spanned<Seconds>>,
    key: &str,
    default: Duration,
) -> Result<Duration, ScenarioError> {
    v.as_ref().map_or(Ok(default), |v| positive(cx, v, key))
}

/// A ramp into each step: shorter than the step.
fn ramp_within(cx: &Context, st: &StageSpec, step: Duration) -> Result<Duration, ScenarioError> {
    let Some(r) = &st.ramp else { return Ok(Duration::ZERO) };
    let ramp = Duration::from_secs_f64(r.get_ref().0);
    if ramp >= step {
        return Err(cx.err(
            r.span().start,
            format!(
                "ramp {} s: the ramp into a level is part of its step ({} s), so it must be shorter",
                ramp.as_secs_f64(),
                step.as_secs_f64()
            ),
        ));
    }
    Ok(ramp)
}

/// A count of at least 1.
fn at_least_one(cx: &Context, v: &Spanned<Level>, key: &str) -> Result<u64, ScenarioError> {
    match v.get_ref().0 {
        0 => Err(cx.err(v.span().start, format!("{key} 0: give at least 1"))),
        n => Ok(n),
    }
}

/// A rate above 0.
fn rate_above_zero(cx: &Context, v: &Spanned<Rate>, key: &str) -> Result<f64, ScenarioError> {
    match v.get_ref().0 {
        r if r > 0.0 => Ok(r),
        _ => Err(cx.err(v.span().start, format!("{key} 0: give a rate above 0 per second"))),
    }
}

/// The phases as they are built, with their names kept unique.
struct Builder<'a> {
    cx: &'a Context<'a>,
    phases: Vec<PhasePlan>,
    start: Duration,
    /// The level the plan has reached.
    level: u64,
    names: HashMap<String, usize>,
}

impl Builder<'_> {
    /// Adds a phase named `name` (of the stage written at `at`).
    fn push(
        &mut self,
        at: usize,
        name: String,
        kind: StageKind,
        duration: Duration,
        shape: Shape,
    ) -> Result<&mut PhasePlan, ScenarioError> {
        if let Some(first) = self.names.get(&name) {
            let line = self.cx.source[..*first].matches('\n').count() + 1;
            return Err(self.cx.err(
                at,
                format!(
                    "phase name {name:?} is already made by the stage at line {line}: \
                     give one of them another `name`"
                ),
            ));
        }
        self.names.insert(name.clone(), at);
        self.phases.push(PhasePlan {
            name,
            kind: Some(kind),
            start: self.start,
            duration,
            shape,
            churn: None,
            judged: false,
            message_interval: None,
        });
        self.start += duration;
        self.level = shape.level_at(duration);
        Ok(self.phases.last_mut().expect("just pushed"))
    }
}

fn ramp(from: u64, to: u64, over: Duration) -> Shape {
    Shape::Ramp(Ramp { from, to, ramp: over })
}

/// Checks a stage name: usable in a CSV cell and a command line.
fn check_name(cx: &Context, name: &Spanned<String>) -> Result<String, ScenarioError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= 48
        && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && n != "all";
    if !ok {
        return Err(cx.err(
            name.span().start,
            format!(
                "name {n:?}: use 1-48 letters, digits, '-', '_' or '.' (and not \"all\", which analyze uses)"
            ),
        ));
    }
    Ok(n.clone())
}

/// The phases of a `[[stage]]` list, in order, and its stress stage if any.
pub fn expand(
    stages: &[StageSpec],
    cx: &Context,
) -> Result<(Vec<PhasePlan>, Option<StressPlan>), ScenarioError> {
    let mut b = Builder { cx, phases: Vec::new(), start: Duration::ZERO, level: 0, names: HashMap::new() };
    let mut stage_names: Vec<String> = Vec::new();
    let mut stress = None;
    for st in stages {
        let kind = st.kind();
        if let Some((key, at)) = st.written().into_iter().find(|(k, _)| !keys_of(kind).contains(k)) {
            let keys = keys_of(kind).join(", ");
            return Err(
                cx.err(at, format!("`{key}` does not apply to a {kind} stage (it takes: {keys}, name)"))
            );
        }
        let name = match &st.name {
            Some(n) => check_name(cx, n)?,
            None => {
                let base = if kind == StageKind::Steps { "step" } else { kind.name() };
                let mut n = 1;
                loop {
                    let candidate = if n == 1 { base.to_string() } else { format!("{base}-{n}") };
                    if !stage_names.contains(&candidate) {
                        break candidate;
                    }
                    n += 1;
                }
            }
        };
        let at = st.name.as_ref().map_or(st.at(), |n| n.span().start);
        if stage_names.contains(&name) {
            return Err(cx.err(at, format!("two stages are named {name:?}: names must be unique")));
        }
        stage_names.push(name.clone());
        let before = b.level;
        match kind {
            StageKind::Ramp => {
                let to = need(cx, st, &st.to, "to")?.get_ref().0;
                let d = positive(cx, need(cx, st, &st.duration, "duration")?, "duration")?;
                b.push(at, name, kind, d, ramp(before, to, d))?;
            }
            StageKind::Hold | StageKind::Soak => {
                let d = positive(cx, need(cx, st, &st.duration, "duration")?, "duration")?;
                b.push(at, name, kind, d, ramp(before, before, Duration::ZERO))?;
            }
            StageKind::Spike => {
                let to = need(cx, st, &st.to, "to")?.get_ref().0;
                let d = positive(cx, need(cx, st, &st.duration, "duration")?, "duration")?;
                let recover = positive_or(cx, &st.recover, "recover", d)?;
                b.push(at, name.clone(), kind, d, ramp(before, to, Duration::ZERO))?;
                // The return is a phase of its own, so what the spike left
                // behind (latency, reconnects) shows apart from the spike.
                b.push(at, format!("{name}-recover"), kind, recover, ramp(to, before, Duration::ZERO))?;
            }
            StageKind::Steps => {
                let levels = need(cx, st, &st.levels, "levels")?;
                let step = positive(cx, need(cx, st, &st.step, "step")?, "step")?;
                let into = ramp_within(cx, st, step)?;
                let list = check_levels(cx, levels, false)?;
                for level in list {
                    let from = b.level;
                    let p = b.push(at, format!("{name}-{level}"), kind, step, ramp(from, level, into))?;
                    p.judged = true;
                }
            }
            StageKind::Wave => {
                let low = need(cx, st, &st.from, "from")?.get_ref().0;
                let high = need(cx, st, &st.to, "to")?;
                if high.get_ref().0 <= low {
                    return Err(cx.err(
                        high.span().start,
                        format!("a wave goes from `from` ({low}) up to `to`: give `to` above it"),
                    ));
                }
                let period = positive(cx, need(cx, st, &st.period, "period")?, "period")?;
                let d = positive(cx, need(cx, st, &st.duration, "duration")?, "duration")?;
                let wave = Wave { from: low, to: high.get_ref().0, period };
                b.push(at, name, kind, d, Shape::Wave(wave))?;
            }
            StageKind::Churn => {
                let to = match &st.to {
                    Some(t) => t.get_ref().0,
                    None => before,
                };
                if to == 0 {
                    return Err(cx.err(
                        st.at(),
                        "a churn stage replaces open connections, and the level before it is 0: give `to`"
                            .into(),
                    ));
                }
                let per_s = rate_above_zero(cx, need(cx, st, &st.rate, "rate")?, "rate")?;
                let d = positive(cx, need(cx, st, &st.duration, "duration")?, "duration")?;
                let p = b.push(at, name, kind, d, ramp(before, to, Duration::ZERO))?;
                p.churn = Some(Churn { per_s });
            }
            StageKind::Arrivals => {
                let rate = rate_above_zero(cx, need(cx, st, &st.rate, "rate")?, "rate")?;
                let from_rate = st.from_rate.as_ref().map_or(rate, |r| r.get_ref().0);
                let session = positive(cx, need(cx, st, &st.session, "session")?, "session")?;
                let d = positive(cx, need(cx, st, &st.duration, "duration")?, "duration")?;
                let max = match &st.max {
                    Some(m) => at_least_one(cx, m, "max")?,
                    None => cx.connections,
                };
                let arrivals = Arrivals { from_rate, rate, ramp: d, session, max };
                b.push(at, name, kind, d, Shape::Arrivals(arrivals))?;
                // Its sessions close when it ends: the next stage starts at 0.
                b.level = 0;
            }
            StageKind::Stress => {
                if stress.is_some() {
                    return Err(cx.err(st.at(), "a scenario may have one stress stage".into()));
                }
                stress = Some(stress_stage(cx, st, &name, &mut b)?);
            }
        }
    }
    Ok((b.phases, stress))
}

/// Checks a list of levels: each at least 1, none repeated, and (for a
/// stress stage) rising.
fn check_levels(cx: &Context, levels: &Spanned<Vec<Level>>, rising: bool) -> Result<Vec<u64>, ScenarioError> {
    let at = levels.span().start;
    let list: Vec<u64> = levels.get_ref().iter().map(|l| l.0).collect();
    if list.is_empty() {
        return Err(cx.err(at, "levels is empty: give at least one level, e.g. [100, 1000, 5000]".into()));
    }
    if list.len() > MAX_LEVELS {
        return Err(cx.err(at, format!("{} levels: give at most {MAX_LEVELS}", list.len())));
    }
    if list.contains(&0) {
        return Err(cx.err(at, "a level of 0 connections: give levels of at least 1".into()));
    }
    for (i, w) in list.windows(2).enumerate() {
        if rising && w[1] <= w[0] {
            return Err(cx.err(
                at,
                format!(
                    "levels must increase in a stress stage: {} comes after {} (level {})",
                    w[1],
                    w[0],
                    i + 2
                ),
            ));
        }
    }
    if let Some(dup) = list.iter().enumerate().find(|(i, l)| list[..*i].contains(l)).map(|(_, l)| l) {
        return Err(cx.err(at, format!("level {dup} is given twice: each level is a phase of its own")));
    }
    Ok(list)
}

/// Plans a stress stage: its rising steps and the ramp to 0 after them.
fn stress_stage(
    cx: &Context,
    st: &StageSpec,
    name: &str,
    b: &mut Builder,
) -> Result<StressPlan, ScenarioError> {
    if cx.thresholds.is_empty() {
        return Err(cx.err(
            st.at(),
            "a stress stage rises until a threshold fails: add [thresholds], e.g. error_rate = \"< 0.01\""
                .into(),
        ));
    }
    let until = match &st.until {
        Some(u) if !cx.thresholds.iter().any(|(m, _)| m == u.get_ref()) => {
            let m = u.get_ref();
            return Err(cx.err(
                u.span().start,
                format!("until = \"{m}\" is not in [thresholds]: add `{m} = \"< LIMIT\"` there"),
            ));
        }
        Some(u) => Some(*u.get_ref()),
        None => None,
    };
    let step = positive(cx, need(cx, st, &st.step, "step")?, "step")?;
    let into = ramp_within(cx, st, step)?;
    let levels = match (&st.levels, &st.from, &st.step_by) {
        (Some(levels), None, None) if st.max.is_none() => check_levels(cx, levels, true)?,
        (Some(levels), ..) => {
            return Err(cx.err(
                levels.span().start,
                "give either `levels` or `from` and `step_by` (and `max`), not both".into(),
            ));
        }
        (None, from, step_by) => {
            let from = from.as_ref().ok_or_else(|| {
                cx.err(st.at(), "a stress stage needs `from` and `step_by` (or a list of `levels`)".into())
            })?;
            let first = at_least_one(cx, from, "from")?;
            let by = at_least_one(cx, need(cx, st, step_by, "step_by")?, "step_by")?;
            let (max, max_at) = match &st.max {
                Some(m) => (at_least_one(cx, m, "max")?, m.span().start),
                None => (cx.connections, from.span().start),
            };
            if first > max {
                return Err(
                    cx.err(max_at, format!("from {first} is above max {max}: the stage would have no step"))
                );
            }
            let count = (max - first) / by + 1;
            if count > MAX_LEVELS as u64 {
                return Err(cx.err(
                    max_at,
                    format!("{count} steps from {first} to {max} by {by}: give at most {MAX_LEVELS} (a larger step_by)"),
                ));
            }
            (0..count).map(|i| first + i * by).collect()
        }
    };
    let window = match &st.window {
        Some(w) => {
            let window = positive(cx, w, "window")?;
            if window > step {
                return Err(cx.err(
                    w.span().start,
                    format!(
                        "window {} s is longer than a step ({} s): a failure is judged within one level",
                        window.as_secs_f64(),
                        step.as_secs_f64()
                    ),
                ));
            }
            window
        }
        None => step,
    };
    let cooldown = positive_or(cx, &st.cooldown, "cooldown", step)?;
    let at = st.name.as_ref().map_or(st.at(), |n| n.span().start);
    let mut steps = Vec::with_capacity(levels.len());
    for level in levels {
        let from = b.level;
        let p = b.push(at, format!("{name}-{level}"), StageKind::Stress, step, ramp(from, level, into))?;
        p.judged = true;
        steps.push((p.name.clone(), level));
    }
    let top = b.level;
    let cooldown_name = format!("{name}-cooldown");
    b.push(at, cooldown_name.clone(), StageKind::Stress, cooldown, ramp(top, 0, cooldown))?;
    Ok(StressPlan { steps, cooldown: cooldown_name, until, window_s: window.as_secs_f64().ceil() as u64 })
}

#[cfg(test)]
mod tests;
