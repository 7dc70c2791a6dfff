//! `[[flow]]` as scenarios write it, and every mistake at its line.

use super::*;

const HEAD: &str = "name = \"f\"\n[target]\nurl = \"ws://127.0.0.1:9/\"\n";

fn scenario(text: &str) -> Result<Option<FlowSpec>, String> {
    let text = format!("{HEAD}{text}\n");
    let path = Path::new("t.toml");
    let sc = Scenario::parse(path, &text).map_err(|e| e.to_string())?;
    let flow = flow_spec(&sc, path, &text).map_err(|e| e.to_string())?;
    let names = flow.as_ref().map_or(Vec::new(), |f| f.names.clone());
    check_step_thresholds(&sc, path, &text, &names).map_err(|e| e.to_string())?;
    Ok(flow)
}

/// A browser group's flow, `steps` its tables (one per line).
fn page_flow(steps: &str) -> Result<FlowSpec, String> {
    let text = format!("{HEAD}[[group]]\nname = \"web\"\nengine = \"browser\"\nflow = [\n{steps}\n]\n");
    let path = Path::new("t.toml");
    let sc = Scenario::parse(path, &text).map_err(|e| e.to_string())?;
    browser_flow(&sc.groups[0].flow, "web", path, &text).map_err(|e| e.to_string())
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
    assert_eq!(*check, Check::JsonEquals { path: "op".into(), value: "\"connection_established\"".into() });
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
        ("[[flow]]\nstep = \"connect\"\njson = \"op\"".to_string(), "t.toml:6:8", "(it takes only `name`)"),
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
        (format!("{c}[[flow]]\nstep = \"expect\"\njson = \"a..b\"\nequals = 1"), "t.toml:8:8", "empty step"),
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
        ("[[flow]]\nstep = \"http\"\npath = \"publish\"".to_string(), "t.toml:6:8", "must start with `/`"),
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
            "[[flow]]\nstep = \"http\"\npath = \"/\"\nheaders = { \"Content-Length\" = \"3\" }".to_string(),
            "t.toml:7:32",
            "the worker writes it itself",
        ),
        (
            "[[flow]]\nstep = \"http\"\npath = \"/\"\nheaders = { \"a b\" = \"3\" }".to_string(),
            "t.toml:7:21",
            "not a valid HTTP token",
        ),
        ("[[flow]]\nstep = \"http\"\npath = \"/\"\nbody = '{{jwt}}'".to_string(), "t.toml:7:8", "{{jwt}}"),
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
        (format!("{c}[messages]\ntemplate = 'x'"), "t.toml:7:1", "`template` in [messages] has no effect"),
        (
            format!("{c}[thresholds]\nstep_connect_p95_ms = \"< 10\"\nstep_nope_p95_ms = \"< 10\""),
            "t.toml:8:20",
            "no step named nope; the steps are: connect",
        ),
        ("[thresholds]\nstep_x_ok = \"> 1\"".to_string(), "t.toml:5:13", "the scenario has no flow steps"),
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
    let secret = "[[flow]]\nstep = \"http\"\npath = \"/\"\nheaders = { Authorization = \"Bearer s3cret\" }\n";
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
    ok("[[flow]]\nstep = \"loop\"\ncount = 1\nsteps = [{ step = \"connect\" }]\n[[flow]]\nstep = \"close\"");
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

#[test]
fn a_browser_flow_reads_page_actions_and_names_its_steps_after_the_group() {
    let f = page_flow(
        r##"{ step = "goto", url = "/app" },
{ step = "fill", selector = "#text", text = "hi {{seq}}" },
{ step = "click", selector = "#send", wait_for = "li#msg-{{seq}}", timeout = "2s" },
{ step = "expect", json = "n", matches = "^[0-9]+$", capture = { n = "json:n" } },
{ step = "evaluate", expression = "document.title", equals = "stampede demo app" },
{ step = "wait_for", selector = "#msg-{{var.n}}" },
{ step = "click", name = "again", selector = "#send" },"##,
    )
    .unwrap();
    assert_eq!(
        f.names,
        ["web_goto", "web_fill", "web_click", "web_expect", "web_evaluate", "web_wait_for", "again"]
    );
    match &f.steps[2].kind {
        StepKind::Click { selector, wait_for, timeout_us } => {
            assert_eq!(selector.source(), "#send");
            assert_eq!(wait_for.as_ref().map(|w| w.source()), Some("li#msg-{{seq}}"));
            assert_eq!(*timeout_us, 2_000_000);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&f.steps[4].kind, StepKind::Evaluate { equals: Some(e), .. } if e == "\"stampede demo app\"")
    );
}

#[test]
fn page_actions_and_socket_steps_stay_in_their_own_flows() {
    let native = scenario("[[flow]]\nstep = \"click\"\nselector = \"#a\"").unwrap_err();
    assert!(native.starts_with("t.toml:5:8") && native.contains("engine = \"browser\""), "{native}");
    for (steps, at, says) in [
        (r##"{ step = "connect" },"##, "t.toml:8:10", "the page opens its own WebSockets"),
        (r##"{ step = "http", path = "/x" },"##, "t.toml:8:10", "the page opens its own WebSockets"),
        (r##"{ step = "goto" },"##, "t.toml:8:10", "needs url"),
        (r##"{ step = "goto", url = "ftp://x" },"##, "t.toml:8:24", "give a path starting with `/`"),
        (r##"{ step = "click" },"##, "t.toml:8:10", "needs selector"),
        (r##"{ step = "click", selector = " " },"##, "t.toml:8:30", "selector is empty"),
        (r##"{ step = "fill", selector = "#a" },"##, "t.toml:8:10", "needs text"),
        (r##"{ step = "evaluate" },"##, "t.toml:8:10", "needs expression"),
        (
            r##"{ step = "click", selector = "#a", text = "x" },"##,
            "t.toml:8:43",
            "`text` does not belong to a click step",
        ),
        (
            r##"{ step = "wait_for", selector = "#{{var.x}}" },"##,
            "t.toml:8:33",
            "used before any step captures it",
        ),
        (r##"{ step = "nope" },"##, "t.toml:8:10", "use goto, click, fill"),
    ] {
        let err = page_flow(steps).unwrap_err();
        assert!(err.starts_with(at) && err.contains(says), "{steps}: {err}");
    }
}
