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
    let default_max = stages("[[stage]]\nkind = \"stress\"\nfrom = 40\nstep_by = 30\nstep = 1\n").unwrap();
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
        ("[[stage]]\nkind = \"churn\"\nrate = 5\nduration = 4\n", "t.toml:10:8", "the level before it is 0"),
        ("[[stage]]\nkind = \"arrivals\"\nrate = 0\nsession = 1\nduration = 4\n", "t.toml:11:8", "rate 0"),
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
    assert_eq!(p.message_interval, Some(Duration::from_millis(50)), "the run starts with the first phase's");
    let both = plan(&format!("{head}message_interval_s = 1\n")).unwrap_err().to_string();
    assert!(both.starts_with("t.toml:7:1: give either message_interval_s"), "{both}");
    // The fastest rate over one connection: a message every microsecond.
    let fastest =
        plan(&format!("{head}[[stage]]\nkind = \"ramp\"\nto = 1\nduration = 1\n").replace("200", "1000000"))
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
    let sum = |c: &[stampede_proto::fleet::PhaseStart], f: fn(&stampede_proto::fleet::PhaseStart) -> f64| {
        c.iter().map(f).sum::<f64>()
    };
    let churn = p.phases[0].commands(0, &caps, Duration::ZERO);
    assert_eq!(churn.iter().map(|c| c.connections).collect::<Vec<_>>(), [25, 50, 25]);
    assert!((sum(&churn, |c| c.churn_per_s) - 10.0).abs() < 1e-9);
    let wave = p.phases[1].commands(1, &caps, Duration::from_millis(500));
    assert_eq!((sum(&wave, |c| c.wave_low as f64), sum(&wave, |c| c.connections as f64)), (10.0, 50.0));
    assert!(wave.iter().all(|c| c.wave_period_us == 2_000_000 && c.offset_us == 500_000 && c.name == "wave"));
    let arrivals = p.phases[2].commands(2, &caps, Duration::ZERO);
    assert_eq!(sum(&arrivals, |c| c.connections as f64), 11.0, "the cap, split");
    assert!((sum(&arrivals, |c| c.arrival_per_s) - 7.0).abs() < 1e-9);
    assert!((sum(&arrivals, |c| c.arrival_from_per_s) - 1.0).abs() < 1e-9);
    assert!(arrivals.iter().all(|c| c.session_us == 3_000_000 && c.duration_us == 5_000_000));
}
