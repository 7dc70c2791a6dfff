mod common;
#[test]
fn dump() {
    let d = std::path::Path::new("/tmp/synth");
    let _ = std::fs::remove_dir_all(d);
    common::Synth { latency_plateau: Some((300, 20, 40.0)), drop: Some((450, 0.3)), stall: Some((200, 10)), ..common::Synth::clean(600) }.write(&d.join("a"));
    common::Synth { hlog: false, ..common::Synth::clean(300) }.write(&d.join("nohlog"));
}
