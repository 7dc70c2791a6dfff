//! `[messages]` for the modes that use the relay's channels: `pairs` and
//! `broadcast`.

use super::*;

/// Most channels a broadcast run may use.
pub const MAX_CHANNELS: u64 = 100_000;
/// Default of `messages_per_side`.
pub const DEFAULT_MESSAGES_PER_SIDE: u64 = 3;
/// Default of `away`.
pub const DEFAULT_AWAY: Duration = Duration::from_secs(30);
/// Default of `delivery_timeout`.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `publish_delay`.
pub const DEFAULT_PUBLISH_DELAY: Duration = Duration::from_secs(2);

fn micros(d: Duration) -> u64 {
    d.as_micros().max(1) as u64
}

fn length_or(v: &Option<Spanned<Length>>, default: Duration) -> Duration {
    v.as_ref().map_or(default, |l| Duration::from_secs_f64(l.get_ref().0))
}

pub(super) fn pairs(m: &MessagesSection, place: &Place) -> Result<PairsSpec, ScenarioError> {
    let messages_per_side = m.messages_per_side.as_ref().map_or(DEFAULT_MESSAGES_PER_SIDE, |n| *n.get_ref());
    if let Some(n) = &m.messages_per_side
        && !(1..=1_000_000).contains(n.get_ref())
    {
        return Err(place.err(n.span().start, "messages_per_side: give 1 to 1000000 messages"));
    }
    let mode = m.pairs_mode.as_ref().map_or(PairsMode::RealisticSession, |p| *p.get_ref());
    if mode != PairsMode::AsyncDelivery
        && let Some(away) = &m.away
    {
        return Err(place.err(
            away.span().start,
            format!(
                "`away` applies to pairs_mode = \"async-delivery\", and pairs_mode is \"{}\"",
                mode.name()
            ),
        ));
    }
    if mode == PairsMode::SteadyMessaging
        && let Some(n) = &m.messages_per_side
    {
        return Err(place.err(
            n.span().start,
            "steady-messaging sends every message interval for as long as the pair is held: \
             messages_per_side applies to realistic-session and async-delivery",
        ));
    }
    Ok(PairsSpec {
        mode,
        messages_per_side,
        away_us: micros(length_or(&m.away, DEFAULT_AWAY)),
        delivery_timeout_us: micros(length_or(&m.delivery_timeout, DEFAULT_DELIVERY_TIMEOUT)),
        channel_prefix: String::new(),
        wrong_key: m.wrong_key.as_ref().is_some_and(|w| *w.get_ref()),
    })
}

pub(super) fn broadcast(m: &MessagesSection, place: &Place) -> Result<BroadcastSpec, ScenarioError> {
    let count = |v: &Option<Spanned<u64>>, what: &str, max: u64| -> Result<u64, ScenarioError> {
        match v {
            None => Ok(1),
            Some(n) if (1..=max).contains(n.get_ref()) => Ok(*n.get_ref()),
            Some(n) => Err(place.err(n.span().start, format!("{what}: give 1 to {max}"))),
        }
    };
    let channels = count(&m.channels, "channels", MAX_CHANNELS)?;
    let per = count(&m.channels_per_connection, "channels_per_connection", 64)?;
    if per > channels
        && let Some(p) = &m.channels_per_connection
    {
        return Err(place.err(
            p.span().start,
            format!("channels_per_connection is {per} but there are only {channels} channels"),
        ));
    }
    let delay =
        m.publish_delay.as_ref().map_or(DEFAULT_PUBLISH_DELAY, |d| Duration::from_secs_f64(d.get_ref().0));
    Ok(BroadcastSpec {
        publishers: count(&m.publishers, "publishers", 1_000_000)?,
        channels,
        channels_per_connection: per,
        publish_delay_us: delay.as_micros() as u64,
        channel_prefix: String::new(),
        worker_index: 0,
        workers: 1,
    })
}
