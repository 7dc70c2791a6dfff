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
mod tests {
    use super::*;
    use crate::plan::{PhasePlan, Plan};
    use crate::scenario::Scenario;

    use crate::plan::tests::plan;

    const HEAD: &str = "name = \"s\"\n[target]\nbundled = true\n[load]\nconnections = 100\n\
                        [thresholds]\nerror_rate = \"< 0.01\"\nlatency_p99_ms = \"< 50\"\n";

    fn stages(body: &str) -> Result<Plan, ScenarioError> {
        plan(&format!("{HEAD}{body}"))
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.phases.iter().map(|p| p.name.as_str()).collect()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn each_kind_makes_its_phases() {
        let p = stages(
            "[[stage]]\nkind = \"ramp\"\nname = \"warmup\"\nto = 100\nduration = \"10s\"\n\
             [[stage]]\nkind = \"hold\"\nduration = 5\n\
             [[stage]]\nkind = \"spike\"\nto = 300\nduration = 2\n\
             [[stage]]\nkind = \"steps\"\nlevels = [120, 150]\nstep = \"4s\"\nramp = \"1s\"\n\
             [[stage]]\nkind = \"wave\"\nlow = 20\nhigh = 80\nperiod = 4\nduration = 8\n\
             [[stage]]\nkind = \"churn\"\nto = 50\nrate = 5\nduration = 3\n\
             [[stage]]\nkind = \"soak\"\nduration = \"1m\"\n\
             [[stage]]\nkind = \"arrivals\"\nrate = 10\nfrom_rate = 0\nsession = 2\nduration = 10\nmax = 30\n\
             [[stage]]\nkind = \"ramp\"\nto = 0\nduration = 1\n",
        )
        .unwrap();
        assert_eq!(
            names(&p),
            [
                "warmup",
                "hold",
                "spike",
                "spike-recover",
                "step-120",
                "step-150",
                "wave",
                "churn",
                "soak",
                "arrivals",
                "ramp"
            ]
        );
        let at = |t: f64| p.level_at(secs(t));
        assert_eq!(at(5.0), 50, "half way up the ramp");
        assert_eq!(at(12.0), 100, "hold keeps the level");
        assert_eq!(at(15.5), 300, "the spike jumps at once");
        assert_eq!(at(18.0), 100, "and returns to the level before");
        assert_eq!(at(19.5), 110, "half way into the first step");
        assert_eq!(at(22.0), 120);
        assert_eq!(at(25.0), 150);
        assert_eq!((at(27.0), at(28.0), at(29.0)), (20, 50, 80), "the wave starts low");
        assert_eq!(p.phases[7].churn, Some(Churn { per_s: 5.0 }));
        assert_eq!(at(36.0), 50, "churn holds its level");
        assert_eq!(at(37.0 + 30.0), 50, "soak holds");
        assert_eq!(at(98.0 + 10.0 - 0.001), 18, "arrivals: (10 s² - 8 s²) / 2 arrived in the last 2 s");
        assert_eq!(p.peak(), 300);
        let judged: Vec<&str> = p.phases.iter().filter(|p| p.judged).map(|p| p.name.as_str()).collect();
        assert_eq!(judged, ["step-120", "step-150"]);
        assert_eq!(p.duration(), secs(109.0));
        assert!(p.stress.is_none());
    }

    #[test]
    fn a_stress_stage_rises_by_steps_then_cools_down() {
        let p = stages(
            "[[stage]]\nkind = \"stress\"\nfrom = 50\nstep_by = 50\nmax = 200\nstep = 3\nuntil = \"error_rate\"\n",
        )
        .unwrap();
        assert_eq!(names(&p), ["stress-50", "stress-100", "stress-150", "stress-200", "stress-cooldown"]);
        let s = p.stress.as_ref().unwrap();
        assert_eq!((s.window_s, s.until), (3, Some(Metric::ErrorRate)));
        assert_eq!(p.level_at(secs(10.0)), 200);
        assert_eq!(p.level_at(secs(13.5)), 100, "the cooldown ramps to 0 over a step");
        let listed =
            stages("[[stage]]\nkind = \"stress\"\nlevels = [10, 20, 40]\nstep = 2\nwindow = 1\n").unwrap();
        assert_eq!(names(&listed), ["stress-10", "stress-20", "stress-40", "stress-cooldown"]);
        assert_eq!(listed.stress.as_ref().unwrap().window_s, 1);
        let default_max =
            stages("[[stage]]\nkind = \"stress\"\nfrom = 40\nstep_by = 30\nstep = 1\n").unwrap();
        assert_eq!(default_max.stress.unwrap().steps.last().unwrap().1, 100, "up to load.connections");
    }

    #[test]
    fn names_default_from_the_kind_and_stay_unique() {
        let p = stages(
            "[[stage]]\nkind = \"ramp\"\nto = 10\nduration = 1\n[[stage]]\nkind = \"ramp\"\nto = 20\nduration = 1\n\
             [[stage]]\nkind = \"steps\"\nlevels = [5]\nstep = 1\n[[stage]]\nkind = \"steps\"\nlevels = [5]\nstep = 1\n",
        )
        .unwrap();
        assert_eq!(names(&p), ["ramp", "ramp-2", "step-5", "step-2-5"]);
    }

    #[test]
    fn stage_errors_point_at_the_line() {
        for (body, at, says) in [
            (
                "[[stage]]\nkind = \"surge\"\n",
                "t.toml:10:8",
                "unknown stage kind \"surge\": the kinds are ramp, hold",
            ),
            ("[[stage]]\nkind = \"ramp\"\nduration = 5\n", "t.toml:10:8", "a ramp stage needs `to`"),
            ("[[stage]]\nkind = \"ramp\"\nto = 5\n", "t.toml:10:8", "needs `duration`"),
            (
                "[[stage]]\nkind = \"ramp\"\nto = 5\nduration = 1\nlevels = [1]\n",
                "t.toml:13:10",
                "`levels` does not apply to a ramp stage",
            ),
            (
                "[[stage]]\nkind = \"ramp\"\nto = -5\nduration = 1\n",
                "t.toml:11:6",
                "-5 is not a number of connections",
            ),
            ("[[stage]]\nkind = \"hold\"\nduration = 0\n", "t.toml:11:12", "duration 0 s"),
            (
                "[[stage]]\nkind = \"hold\"\nduration = 1\nsurprise = 1\n",
                "t.toml:12:1",
                "unknown field `surprise`",
            ),
            (
                "[[stage]]\nkind = \"stress\"\nlevels = [100, 50]\nstep = 1\n",
                "t.toml:11:10",
                "levels must increase in a stress stage: 50 comes after 100",
            ),
            (
                "[[stage]]\nkind = \"steps\"\nlevels = [10, 10]\nstep = 1\n",
                "t.toml:11:10",
                "level 10 is given twice",
            ),
            ("[[stage]]\nkind = \"steps\"\nlevels = []\nstep = 1\n", "t.toml:11:10", "levels is empty"),
            (
                "[[stage]]\nkind = \"steps\"\nlevels = [10]\nstep = 2\nramp = 2\n",
                "t.toml:13:8",
                "must be shorter",
            ),
            (
                "[[stage]]\nkind = \"hold\"\nname = \"x\"\nduration = 1\n[[stage]]\nkind = \"hold\"\nname = \"x\"\nduration = 1\n",
                "t.toml:15:8",
                "two stages are named \"x\"",
            ),
            (
                "[[stage]]\nkind = \"hold\"\nname = \"step-10\"\nduration = 1\n[[stage]]\nkind = \"steps\"\nlevels = [10]\nstep = 1\n",
                "t.toml:14:8",
                "phase name \"step-10\" is already made by the stage at line 11",
            ),
            ("[[stage]]\nkind = \"hold\"\nname = \"a b\"\nduration = 1\n", "t.toml:11:8", "name \"a b\""),
            (
                "[[stage]]\nkind = \"stress\"\nfrom = 10\nstep_by = 10\nstep = 1\nuntil = \"latency_p95_ms\"\n",
                "t.toml:14:9",
                "until = \"latency_p95_ms\" is not in [thresholds]",
            ),
            ("[[stage]]\nkind = \"stress\"\nfrom = 10\nstep = 1\n", "t.toml:10:8", "needs `step_by`"),
            ("[[stage]]\nkind = \"stress\"\nstep = 1\n", "t.toml:10:8", "needs `from` and `step_by`"),
            (
                "[[stage]]\nkind = \"stress\"\nfrom = 10\nstep_by = 10\nstep = 2\nwindow = 3\n",
                "t.toml:14:10",
                "longer than a step",
            ),
            (
                "[[stage]]\nkind = \"stress\"\nfrom = 500\nstep_by = 10\nstep = 2\n",
                "t.toml:11:8",
                "from 500 is above max 100",
            ),
            (
                "[[stage]]\nkind = \"wave\"\nfrom = 50\nto = 10\nperiod = 2\nduration = 4\n",
                "t.toml:12:6",
                "give `to` above it",
            ),
            (
                "[[stage]]\nkind = \"churn\"\nrate = 5\nduration = 4\n",
                "t.toml:10:8",
                "the level before it is 0",
            ),
            (
                "[[stage]]\nkind = \"arrivals\"\nrate = 0\nsession = 1\nduration = 4\n",
                "t.toml:11:8",
                "rate 0",
            ),
        ] {
            let err = stages(body).unwrap_err().to_string();
            assert!(err.starts_with(at) && err.contains(says), "{body:?} gave {err}");
            assert!(!err.contains("invalid type"), "no serde internals: {err}");
        }
        let err = plan("name = \"s\"\n[target]\nbundled = true\n[[stage]]\nkind = \"stress\"\nfrom = 1\nstep_by = 1\nstep = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:5:8: a stress stage rises until a threshold fails"), "{err}");
        let err = stages("[phases]\nsustained_s = 1\n[[stage]]\nkind = \"hold\"\nduration = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("either [phases] or [[stage]]"), "{err}");
        let text = format!("{HEAD}[[stage]]\nkind = \"hold\"\nduration = 1\n");
        let mut sc = Scenario::parse(Path::new("t.toml"), &text).unwrap();
        crate::plan::Overrides { duration_s: Some(3.0), ..Default::default() }.apply(&mut sc).unwrap();
        let err = Plan::new(&sc, Path::new("t.toml"), &text).unwrap_err().to_string();
        assert!(
            err.contains("--duration and --ramp-up set [phases]"),
            "a flag never silently does nothing: {err}"
        );
        let err = stages(
            "[[stage]]\nkind = \"stress\"\nfrom = 1\nstep_by = 1\nmax = 5\nstep = 1\n[[stage]]\nkind = \"stress\"\nfrom = 1\nstep_by = 1\nmax = 5\nstep = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("t.toml:16:8: a scenario may have one stress stage"), "{err}");
    }

    #[test]
    fn a_stage_list_round_trips_through_the_saved_scenario() {
        let text = format!(
            "{HEAD}[[stage]]\nkind = \"steps\"\nlevels = [1, 2]\nstep = \"2s\"\n\
             [[stage]]\nkind = \"wave\"\nlow = 1\nhigh = 3\nperiod = 1\nduration = 2\n"
        );
        let sc = Scenario::parse(Path::new("t.toml"), &text).unwrap();
        let saved = toml::to_string_pretty(&sc).unwrap();
        let again = plan(&saved).unwrap_or_else(|e| panic!("{e}\n{saved}"));
        assert_eq!(names(&again), ["step-1", "step-2", "wave"]);
        assert!(!saved.contains("[phases]"), "{saved}");
    }

    #[test]
    fn a_message_rate_sets_each_phases_interval() {
        let head = "name = \"s\"\n[target]\nbundled = true\n[load]\nconnections = 100\nmessage_rate = 200\n";
        let p = plan(&format!(
            "{head}[[stage]]\nkind = \"ramp\"\nto = 10\nduration = 1\n[[stage]]\nkind = \"steps\"\nlevels = [20, 40]\nstep = 1\n\
             [[stage]]\nkind = \"ramp\"\nto = 0\nduration = 1\n[[stage]]\nkind = \"hold\"\nduration = 1\n\
             [[stage]]\nkind = \"arrivals\"\nrate = 5\nsession = 2\nduration = 1\n"
        ))
        .unwrap();
        let ms = |p: &PhasePlan| p.message_interval.map(|iv| iv.as_millis());
        let intervals: Vec<Option<u128>> = p.phases.iter().map(ms).collect();
        // 200 messages a second over each phase's peak: 10, 20, 40, 40 (the
        // ramp down starts there), none (nothing open), 5 x 2 s sessions.
        assert_eq!(intervals, [Some(50), Some(100), Some(200), Some(200), None, Some(50)]);
        assert_eq!(
            p.message_interval,
            Some(Duration::from_millis(50)),
            "the run starts with the first phase's"
        );
        let both = plan(&format!("{head}message_interval_s = 1\n")).unwrap_err().to_string();
        assert!(both.starts_with("t.toml:7:1: give either message_interval_s"), "{both}");
        // The fastest rate over one connection: a message every microsecond.
        let fastest = plan(
            &format!("{head}[[stage]]\nkind = \"ramp\"\nto = 1\nduration = 1\n").replace("200", "1000000"),
        )
        .unwrap();
        assert_eq!(fastest.phases[0].message_interval, Some(Duration::from_micros(1)));
    }

    #[test]
    fn a_phase_split_over_workers_keeps_the_fleets_totals() {
        let p = stages(
            "[[stage]]\nkind = \"churn\"\nto = 100\nrate = 10\nduration = 1\n\
             [[stage]]\nkind = \"wave\"\nlow = 10\nhigh = 50\nperiod = 2\nduration = 2\n\
             [[stage]]\nkind = \"arrivals\"\nrate = 7\nfrom_rate = 1\nsession = 3\nmax = 11\nduration = 5\n",
        )
        .unwrap();
        let caps = [1000, 2000, 1000];
        let sum = |c: &[stampede_proto::fleet::PhaseStart],
                   f: fn(&stampede_proto::fleet::PhaseStart) -> f64| {
            c.iter().map(f).sum::<f64>()
        };
        let churn = p.phases[0].commands(0, &caps, Duration::ZERO);
        assert_eq!(churn.iter().map(|c| c.connections).collect::<Vec<_>>(), [25, 50, 25]);
        assert!((sum(&churn, |c| c.churn_per_s) - 10.0).abs() < 1e-9);
        let wave = p.phases[1].commands(1, &caps, Duration::from_millis(500));
        assert_eq!((sum(&wave, |c| c.wave_low as f64), sum(&wave, |c| c.connections as f64)), (10.0, 50.0));
        assert!(
            wave.iter().all(|c| c.wave_period_us == 2_000_000 && c.offset_us == 500_000 && c.name == "wave")
        );
        let arrivals = p.phases[2].commands(2, &caps, Duration::ZERO);
        assert_eq!(sum(&arrivals, |c| c.connections as f64), 11.0, "the cap, split");
        assert!((sum(&arrivals, |c| c.arrival_per_s) - 7.0).abs() < 1e-9);
        assert!((sum(&arrivals, |c| c.arrival_from_per_s) - 1.0).abs() < 1e-9);
        assert!(arrivals.iter().all(|c| c.session_us == 3_000_000 && c.duration_us == 5_000_000));
    }
}
