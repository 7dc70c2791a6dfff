use super::*;

fn spec(messages: &str) -> Result<SessionSpec, String> {
    let text = format!("name = \"m\"\n[target]\nurl = \"ws://127.0.0.1:9/\"\n[messages]\n{messages}\n");
    let path = Path::new("t.toml");
    let sc = Scenario::parse(path, &text).map_err(|e| e.to_string())?;
    session_spec(&sc, path, &text).map_err(|e| e.to_string())
}

#[test]
fn a_json_rpc_request_scenario_becomes_a_request_spec() {
    let s = spec(
        "mode = \"request\"\ntemplate = '{\"jsonrpc\":\"2.0\",\"id\":{{seq}},\"method\":\"ping\"}'\n\
         match = \"json:id\"\nreply_timeout = \"2s\"\nbinary = true",
    )
    .unwrap();
    let SessionSpec::Request(r) = s else { panic!("{s:?}") };
    assert_eq!(r.matcher, Matcher::JsonField("id".into()));
    assert_eq!(r.reply_timeout_us, 2_000_000);
    assert!(r.binary);
    assert!(r.message.uses(&Var::Seq));
    let r = spec("mode = \"request\"\ntemplate = 'ping {{seq}}'\nmatch = \"regex:pong (\\\\d+)\"").unwrap();
    assert!(matches!(
        r,
        SessionSpec::Request(RequestSpec { matcher: Matcher::Regex(_), reply_timeout_us: 10_000_000, .. })
    ));
    assert_eq!(spec("").unwrap(), SessionSpec::Echo);
    assert_eq!(spec("mode = \"echo\"").unwrap(), SessionSpec::Echo);
}

#[test]
fn a_receive_scenario_becomes_a_receive_spec() {
    let s = spec(
        "mode = \"receive\"\nsubscribe = ['{\"op\":\"sub\",\"conn\":{{conn}}}', 'hello']\n\
         timestamp = \"json:data.ts\"\ntimestamp_unit = \"us\"\ngap = \"5s\"",
    )
    .unwrap();
    let SessionSpec::Receive(r) = s else { panic!("{s:?}") };
    assert_eq!(r.subscribe.len(), 2);
    assert_eq!(
        r.timestamp,
        Some(TimestampSpec { field: TimestampField::JsonPath("data.ts".into()), unit: TimeUnit::Us })
    );
    assert_eq!(r.gap_us, 5_000_000);
    let s = spec("mode = \"receive\"\ntimestamp = \"regex:t=(\\\\d+)\"").unwrap();
    let SessionSpec::Receive(r) = s else { panic!("{s:?}") };
    assert_eq!(r.timestamp.unwrap().unit, TimeUnit::Ms, "ms by default");
    assert_eq!(r.gap_us, 0);
}

#[test]
fn mistakes_are_errors_at_their_line() {
    let req = "mode = \"request\"\n";
    for (body, at, says) in [
        (format!("{req}template = 'x {{{{seq}}}}'\nmatch = \"regex:((\""), "t.toml:7:9", "not valid"),
        (
            format!("{req}template = 'x {{{{seq}}}}'\nmatch = \"regex:x\\\\d+\""),
            "t.toml:7:9",
            "no capture group",
        ),
        (
            format!("{req}template = 'x {{{{user}}}}'\nmatch = \"any\""),
            "t.toml:6:12",
            "unknown template variable {{user}}",
        ),
        (format!("{req}template = 'x {{{{jwt}}}}'\nmatch = \"any\""), "t.toml:6:12", "handshake's token"),
        (
            format!("{req}template = '{{\"id\":{{{{seq}}}}}}'\nmatch = \"json:ref\""),
            "t.toml:7:9",
            "the template has no `ref`",
        ),
        (
            format!("{req}template = 'ping {{{{seq}}}}'\nmatch = \"json:id\""),
            "t.toml:6:12",
            "the template is not JSON",
        ),
        (
            format!("{req}template = '{{\"id\":1}}'\nmatch = \"json:id\""),
            "t.toml:7:9",
            "is 1 in every request",
        ),
        (
            format!("{req}template = '{{\"id\":{{\"a\":{{{{seq}}}}}}}}'\nmatch = \"json:id\""),
            "t.toml:7:9",
            "not a string or a number",
        ),
        (format!("{req}template = 'ping'\nmatch = \"regex:(\\\\d+)\""), "t.toml:7:9", "does not use {{seq}}"),
        (format!("{req}template = 'x'\nmatch = \"xml:id\""), "t.toml:7:9", "write \"json:PATH\""),
        (format!("{req}template = 'x'\nmatch = \"json:a..b\""), "t.toml:7:9", "empty step"),
        (format!("{req}match = \"any\""), "t.toml:5:8", "needs the message"),
        (format!("{req}template = 'x'"), "t.toml:5:8", "needs match"),
        (
            format!("{req}template = 'x'\ntemplate_file = \"x.json\"\nmatch = \"any\""),
            "t.toml:7:17",
            "not both",
        ),
        (format!("{req}template_file = \"nope.json\"\nmatch = \"any\""), "t.toml:6:17", "cannot read"),
        (
            format!("{req}template = 'x'\nmatch = \"any\"\ngap = 1"),
            "t.toml:8:7",
            "applies to mode = \"receive\"",
        ),
        (format!("{req}template = 'x'\nmatch = \"any\"\nreply_timeout = 0"), "t.toml:8:17", "above 0"),
        ("template = 'x'".to_string(), "t.toml:5:12", "(the default): set mode"),
        ("mode = \"receive\"\nmatch = \"any\"".to_string(), "t.toml:6:9", "applies to mode = \"request\""),
        ("mode = \"receive\"\ntimestamp_unit = \"ms\"".to_string(), "t.toml:6:18", "needs timestamp"),
        ("mode = \"receive\"\ntimestamp_unit = \"hours\"".to_string(), "t.toml:6:18", "unknown variant"),
        ("mode = \"receive\"\ntimestamp = \"ts\"".to_string(), "t.toml:6:13", "write \"json:PATH\""),
        (
            "mode = \"receive\"\nsubscribe = ['{{nope}}']".to_string(),
            "t.toml:6:14",
            "unknown template variable",
        ),
        ("mode = \"receive\"\ngap = \"-1s\"".to_string(), "t.toml:6:7", "out of range"),
        ("mode = \"push\"".to_string(), "t.toml:5:8", "unknown variant `push`"),
        ("modes = \"echo\"".to_string(), "t.toml:5:1", "unknown field `modes`"),
    ] {
        let err = spec(&body).unwrap_err();
        assert!(err.starts_with(at) && err.contains(says), "{body:?} gave {err}");
    }
}

#[test]
fn pairs_and_broadcast_scenarios_and_their_mistakes() {
    let SessionSpec::Pairs(p) = spec("mode = \"pairs\"").unwrap() else { panic!() };
    assert_eq!((p.mode, p.messages_per_side, p.away_us), (PairsMode::RealisticSession, 3, 30_000_000));
    assert_eq!(p.delivery_timeout_us, 10_000_000);
    let SessionSpec::Pairs(p) =
        spec("mode = \"pairs\"\npairs_mode = \"async-delivery\"\naway = \"5s\"\nwrong_key = true").unwrap()
    else {
        panic!()
    };
    assert_eq!((p.mode, p.away_us, p.wrong_key), (PairsMode::AsyncDelivery, 5_000_000, true));
    let SessionSpec::Broadcast(b) =
        spec("mode = \"broadcast\"\npublishers = 3\nchannels = 10\nchannels_per_connection = 2").unwrap()
    else {
        panic!()
    };
    assert_eq!((b.publishers, b.channels, b.channels_per_connection), (3, 10, 2));
    assert_eq!(b.publish_delay_us, 2_000_000);
    for (body, at, says) in [
        ("mode = \"pairs\"\naway = \"5s\"", "t.toml:6:8", "applies to pairs_mode = \"async-delivery\""),
        (
            "mode = \"pairs\"\npairs_mode = \"steady-messaging\"\nmessages_per_side = 2",
            "t.toml:7:21",
            "messages_per_side applies to",
        ),
        ("mode = \"pairs\"\nmessages_per_side = 0", "t.toml:6:21", "give 1 to 1000000"),
        ("mode = \"pairs\"\npairs_mode = \"lazy\"", "t.toml:6:14", "unknown variant `lazy`"),
        ("mode = \"pairs\"\npublishers = 2", "t.toml:6:14", "applies to mode = \"broadcast\""),
        ("mode = \"broadcast\"\naway = \"1s\"", "t.toml:6:8", "applies to mode = \"pairs\""),
        ("mode = \"broadcast\"\nchannels = 0", "t.toml:6:12", "channels: give 1 to 100000"),
        ("mode = \"broadcast\"\nchannels = 100001", "t.toml:6:12", "give 1 to 100000"),
        ("mode = \"broadcast\"\nchannels = 2\nchannels_per_connection = 3", "t.toml:7:27", "only 2 channels"),
        ("mode = \"broadcast\"\npublishers = -1", "t.toml:6:14", "invalid value"),
        ("mode = \"echo\"\nchannels = 2", "t.toml:6:12", "applies to mode = \"broadcast\""),
    ] {
        let err = spec(body).unwrap_err();
        assert!(err.starts_with(at) && err.contains(says), "{body:?} gave {err}");
    }
}

#[test]
fn a_template_file_is_read_beside_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("req.json"), "{\"id\":\"{{uuid}}\",\"op\":\"ping\"}\n").unwrap();
    let text = "name = \"m\"\n[target]\nurl = \"ws://127.0.0.1:9/\"\n[messages]\nmode = \"request\"\n\
                template_file = \"req.json\"\nmatch = \"json:id\"\n";
    let path = dir.path().join("s.toml");
    let sc = Scenario::parse(&path, text).unwrap();
    let SessionSpec::Request(r) = session_spec(&sc, &path, text).unwrap() else { panic!() };
    assert_eq!(r.message.source(), "{\"id\":\"{{uuid}}\",\"op\":\"ping\"}", "without the file's newline");
    std::fs::write(dir.path().join("req.json"), "not json {{seq}}").unwrap();
    let err = session_spec(&sc, &path, text).unwrap_err().to_string();
    assert!(err.contains("s.toml:6:17") && err.contains("not JSON"), "{err}");
}
