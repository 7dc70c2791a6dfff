//! What a controller may ask of this worker. The controller is
//! authenticated, but a buggy or compromised one must not make a worker
//! allocate without bound: every number of an Assign and a PhaseStart is
//! checked against the ranges a scenario can produce (controller/src
//! scenario.rs and plan.rs), and connection counts are capped at this
//! worker's own capacity. A refusal names the field.

use stampede_model::limits::{MAX_PAYLOAD_BYTES as MAX_PAYLOAD, MIN_INTERVAL_US};
use stampede_model::spec::SessionSpec;
use stampede_proto::fleet::{Assign, PhaseStart};

/// Most channels a broadcast run has (as the scenario allows).
const MAX_CHANNELS: u64 = 100_000;
/// Longest channel prefix the controller makes (`stampede/<µs>`), with room.
const MAX_PREFIX: usize = 64;

/// Largest read buffer a scenario can ask for (1 MiB).
const MAX_BUFFER: u32 = 1 << 20;
/// Longest duration anywhere: a week.
const MAX_US: u64 = 7 * 86_400 * 1_000_000;
/// Fastest churn or arrival rate per second on one worker.
const MAX_RATE: f64 = 1_000_000.0;

/// Checks an Assign's numbers.
pub fn check_assign(a: &Assign) -> Result<(), String> {
    let bad =
        |field: &str, v: String, range: &str| Err(format!("refused Assign: {field} = {v}, outside {range}"));
    if a.payload_bytes > MAX_PAYLOAD {
        return bad("payload_bytes", a.payload_bytes.to_string(), "0..=16777216");
    }
    if a.buffer_bytes > MAX_BUFFER {
        return bad("buffer_bytes", a.buffer_bytes.to_string(), "0..=1048576");
    }
    if a.message_interval_us != 0 && !(MIN_INTERVAL_US..=MAX_US).contains(&a.message_interval_us) {
        return bad("message_interval_us", a.message_interval_us.to_string(), "0 or 1 µs..a week");
    }
    if a.connect_timeout_us > MAX_US {
        return bad("connect_timeout_us", a.connect_timeout_us.to_string(), "at most a week");
    }
    if a.source_addresses.len() > 1024 || a.connect_spec_json.len() > 1 << 20 || a.run_id.len() > 200 {
        return Err("refused Assign: source_addresses, connect_spec_json or run_id too long".into());
    }
    check_session(&a.connect_spec().map_err(|e| format!("refused Assign: {e}"))?.session)
}

/// Checks the numbers of a pairs or broadcast session (a flow is checked
/// whole when it is prepared): channel lists and counts a scenario cannot
/// produce would make every connection allocate without bound.
fn check_session(session: &SessionSpec) -> Result<(), String> {
    let bad = |field: &str, v: u64, range: &str| {
        Err(format!("refused Assign: session {field} = {v}, outside {range}"))
    };
    let prefix_ok = |p: &str| p.len() <= MAX_PREFIX;
    match session {
        SessionSpec::Pairs(p) => {
            if !(1..=1_000_000).contains(&p.messages_per_side) {
                return bad("messages_per_side", p.messages_per_side, "1..=1000000");
            }
            for (field, v) in [("away_us", p.away_us), ("delivery_timeout_us", p.delivery_timeout_us)] {
                if v > MAX_US {
                    return bad(field, v, "at most a week");
                }
            }
            if !prefix_ok(&p.channel_prefix) {
                return bad("channel_prefix length", p.channel_prefix.len() as u64, "0..=64");
            }
        }
        SessionSpec::Broadcast(b) => {
            if !(1..=MAX_CHANNELS).contains(&b.channels) {
                return bad("channels", b.channels, "1..=100000");
            }
            if !(1..=64).contains(&b.channels_per_connection) {
                return bad("channels_per_connection", b.channels_per_connection, "1..=64");
            }
            if b.publish_delay_us > MAX_US {
                return bad("publish_delay_us", b.publish_delay_us, "at most a week");
            }
            if !prefix_ok(&b.channel_prefix) {
                return bad("channel_prefix length", b.channel_prefix.len() as u64, "0..=64");
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks a PhaseStart's numbers and caps its counts at `capacity`
/// connections (what this worker said it holds).
pub fn check_phase(p: &mut PhaseStart, capacity: u64) -> Result<(), String> {
    let bad = |field: &str, v: String, range: &str| {
        Err(format!("refused phase {}: {field} = {v}, outside {range}", p.index))
    };
    for (field, v) in [
        ("ramp_us", p.ramp_us),
        ("duration_us", p.duration_us),
        ("wave_period_us", p.wave_period_us),
        ("session_us", p.session_us),
        ("offset_us", p.offset_us),
    ] {
        if v > MAX_US {
            return bad(field, v.to_string(), "at most a week");
        }
    }
    for (field, v) in [
        ("churn_per_s", p.churn_per_s),
        ("arrival_from_per_s", p.arrival_from_per_s),
        ("arrival_per_s", p.arrival_per_s),
    ] {
        if !(v.is_finite() && (0.0..=MAX_RATE).contains(&v)) {
            return bad(field, v.to_string(), "0..=1000000 per second");
        }
    }
    if p.message_interval_us != 0 && !(MIN_INTERVAL_US..=MAX_US).contains(&p.message_interval_us) {
        return bad("message_interval_us", p.message_interval_us.to_string(), "0 or 1 µs..a week");
    }
    if p.name.len() > 200 {
        return bad("name", format!("{} bytes", p.name.len()), "200 bytes");
    }
    if p.connections > capacity || p.wave_low > capacity {
        tracing::warn!(
            "phase {} asks for {} connections; this worker holds at most {capacity}",
            p.index,
            p.connections.max(p.wave_low)
        );
        p.connections = p.connections.min(capacity);
        p.wave_low = p.wave_low.min(capacity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_cannot_ask_for_unbounded_work() {
        assert!(
            check_assign(&Assign { payload_bytes: 1024, message_interval_us: 100_000, ..Default::default() })
                .is_ok()
        );
        let err = check_assign(&Assign { payload_bytes: u32::MAX, ..Default::default() }).unwrap_err();
        assert!(err.contains("payload_bytes = 4294967295"), "{err}");
        assert!(check_assign(&Assign { buffer_bytes: 1 << 30, ..Default::default() }).is_err());
        assert!(check_assign(&Assign { message_interval_us: 1, ..Default::default() }).is_ok(), "1 us");
        let err = check_assign(&Assign { message_interval_us: u64::MAX, ..Default::default() }).unwrap_err();
        assert!(err.contains("message_interval_us"), "{err}");
        assert!(check_assign(&Assign { run_id: "r".repeat(201), ..Default::default() }).is_err());

        let mut p = PhaseStart { connections: 1_000_000_000_000, wave_low: 5, ..Default::default() };
        check_phase(&mut p, 19_936).unwrap();
        assert_eq!((p.connections, p.wave_low), (19_936, 5), "capped at this worker's capacity");
        for rate in [f64::NAN, f64::INFINITY, -1.0, 1e9] {
            let mut p = PhaseStart { churn_per_s: rate, ..Default::default() };
            assert!(check_phase(&mut p, 10).unwrap_err().contains("churn_per_s"), "{rate}");
            let mut p = PhaseStart { arrival_per_s: rate, ..Default::default() };
            assert!(check_phase(&mut p, 10).is_err(), "{rate}");
        }
        let mut p = PhaseStart { ramp_us: u64::MAX, ..Default::default() };
        assert!(check_phase(&mut p, 10).unwrap_err().contains("ramp_us"));
        let mut p = PhaseStart { message_interval_us: 10, ..Default::default() };
        assert!(check_phase(&mut p, 10).is_ok(), "10 us");
        let mut p = PhaseStart { message_interval_us: 8 * 86_400 * 1_000_000, ..Default::default() };
        assert!(check_phase(&mut p, 10).unwrap_err().contains("message_interval_us"));
    }
}
