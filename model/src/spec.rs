//! How every connection of a run is opened and what it does once open: the
//! part of the plan each worker needs beyond the load shape. The controller
//! builds it from the scenario (files read, `${VAR}` references resolved)
//! and it travels to the workers inside Assign as JSON, so a worker on
//! another host needs neither the scenario nor its files.
//!
//! Secrets (JWT keys, client keys) live here in memory only: [`Secret`]
//! never prints its value, and nothing here is written to the results.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::template::Template;

/// Everything a worker needs to open and drive its connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectSpec {
    /// TLS settings for `wss://` targets (ignored for `ws://`).
    #[serde(default)]
    pub tls: TlsSpec,
    /// What the opening handshake carries beyond RFC 6455's required headers.
    #[serde(default)]
    pub handshake: HandshakeSpec,
    /// A token minted per connection, if the server wants one.
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
    /// What an open connection sends and how replies are matched.
    #[serde(default)]
    pub session: SessionSpec,
}

/// TLS client settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// Extra trusted CA certificates, PEM (trusted beside the system roots).
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Client certificate chain for mutual TLS, PEM.
    #[serde(default)]
    pub client_cert_pem: Option<String>,
    /// The client certificate's private key, PEM.
    #[serde(default)]
    pub client_key_pem: Option<Secret>,
    /// Name sent as SNI and checked against the certificate, instead of the
    /// URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any certificate (self-signed test servers only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Handshake additions; values are templates rendered per connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeSpec {
    /// Extra request headers, in order.
    #[serde(default)]
    pub headers: Vec<(String, Template)>,
    /// The `Origin` header.
    #[serde(default)]
    pub origin: Option<Template>,
    /// Offered subprotocols (`Sec-WebSocket-Protocol`), in preference order;
    /// when not empty, the server must pick one of them.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// Query parameters appended to the URL's own.
    #[serde(default)]
    pub query: Vec<(String, Template)>,
}

/// A JSON Web Token minted for each connection attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Signing algorithm.
    pub alg: JwtAlg,
    /// HS256: the shared secret's bytes; RS256/ES256: the private key, PEM.
    pub key: Secret,
    /// Claims; string values are templates. `exp` and `iat` are added.
    pub claims: Vec<(String, ClaimValue)>,
    /// Lifetime: `exp` = now + this, seconds.
    pub expires_in_s: u64,
    /// Where the token goes.
    pub send_as: JwtPlacement,
}

/// A claim's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ClaimValue {
    /// A string, rendered per connection.
    Text(Template),
    /// A number, boolean, array or object, as JSON text.
    Json(String),
}

/// JWT signing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlg {
    /// HMAC with SHA-256.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

/// Where a minted token is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum JwtPlacement {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A query parameter of this name.
    Query(String),
    /// The first message after the upgrade; `{{jwt}}` in the template is
    /// the token.
    FirstMessage(Template),
}

/// What an open connection does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum SessionSpec {
    /// Stamped messages the server echoes back (the bundled relay, echo
    /// servers): loss, duplication, corruption and order are exact.
    #[default]
    Echo,
    /// The server answers each message with its own reply.
    Request(RequestSpec),
    /// The server pushes; the client only listens.
    Receive(ReceiveSpec),
    /// Two connections per session joined through the relay's channels,
    /// exchanging end-to-end encrypted messages.
    Pairs(PairsSpec),
    /// Publishers and subscribers on the relay's channels.
    Broadcast(BroadcastSpec),
    /// A scripted session.
    Flow(crate::flow::FlowSpec),
    /// Headless Chromium pages running a flow of page actions (a
    /// `[[group]]` with `engine = "browser"`).
    Browser(BrowserSpec),
}

/// Browser sessions: each runs `flow` (page actions, `expect` on the
/// app's own WebSocket frames, sleeps, loops) in a page of its own; many
/// sessions share one Chromium process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserSpec {
    /// The page actions of one session.
    pub flow: crate::flow::FlowSpec,
    /// Sessions per Chromium process.
    pub sessions_per_browser: u32,
    /// Whether each session gets an isolated context (its own cookies and
    /// storage, like an incognito window) or all share the default one.
    pub contexts: BrowserContexts,
    /// Whether a browser's pages of one site share a renderer process.
    pub renderers: BrowserRenderers,
    /// The Chromium executable; `None`: `CHROME_PATH`, then `chromium`,
    /// `chromium-browser`, `google-chrome` on `PATH`.
    pub chromium: Option<String>,
    /// Where a failed session's page is saved as a PNG (at most
    /// [`MAX_SCREENSHOTS`] per worker); `None`: no screenshots.
    pub screenshot_dir: Option<String>,
}

/// Most failure screenshots one worker saves in a run.
pub const MAX_SCREENSHOTS: u32 = 20;

/// How many renderer processes a browser's pages get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrowserRenderers {
    /// Pages of one site in one context share a renderer
    /// (`--process-per-site`): ~5 MB a session instead of ~14 (README), but
    /// one main thread runs all their scripts.
    PerSite,
    /// A renderer per page (Chromium's default).
    PerPage,
}

/// How browser sessions are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrowserContexts {
    /// One context per session: nothing shared (cookies, storage, cache).
    Isolated,
    /// Every session of a browser in its default context: cheaper, but
    /// sessions of one site share storage.
    Shared,
}

/// Session pairs (the MetaMask seed): each pair is two connections, side
/// `a` (the dApp) and side `b` (the wallet); each subscribes to its own
/// inbox channel and publishes to the other's, every message sealed with
/// the pair's key (ChaCha20-Poly1305).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsSpec {
    /// What a session does.
    pub mode: PairsMode,
    /// Messages each side sends per session (realistic-session; in
    /// async-delivery, what `a` sends while `b` is away).
    pub messages_per_side: u64,
    /// async-delivery: how long `b` stays away, µs.
    pub away_us: u64,
    /// How long a session waits for its last messages before counting them
    /// lost, µs.
    pub delivery_timeout_us: u64,
    /// Prefix of the channel names, unique to the run (set by the
    /// controller), so runs sharing a relay never see each other.
    pub channel_prefix: String,
    /// Test aid: side `b` opens with a key of its own, so nothing it gets
    /// can be decrypted.
    #[serde(default)]
    pub wrong_key: bool,
}

/// What a pair's session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairsMode {
    /// Both sides connect, each sends `messages_per_side` at the message
    /// interval, both wait for what the other sent, both close; then a new
    /// session.
    RealisticSession,
    /// Both sides send every message interval for as long as the pair is
    /// held.
    SteadyMessaging,
    /// Both connect; `b` leaves for `away`, during which `a` sends
    /// `messages_per_side`; `b` comes back, subscribes from the last message
    /// it had, and must get every one; then a new session.
    AsyncDelivery,
}

impl PairsMode {
    /// Its name in scenarios.
    pub fn name(self) -> &'static str {
        match self {
            PairsMode::RealisticSession => "realistic-session",
            PairsMode::SteadyMessaging => "steady-messaging",
            PairsMode::AsyncDelivery => "async-delivery",
        }
    }
}

/// Broadcast (the 10K suite's flash sale, live event and IoT; Odin): some
/// connections publish to channels, the others subscribe; every message
/// must reach every subscriber of its channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastSpec {
    /// Publishers on this worker: its first connection slots (the
    /// controller splits the scenario's publishers over the workers).
    pub publishers: u64,
    /// Channels in the run.
    pub channels: u64,
    /// Channels each connection subscribes (or publishes) to.
    pub channels_per_connection: u64,
    /// Publishers wait this long after connecting before the first
    /// message, µs (lets subscribers subscribe first).
    pub publish_delay_us: u64,
    /// Prefix of the channel names, unique to the run.
    pub channel_prefix: String,
    /// This worker's number in the fleet and the fleet's size: connection
    /// `slot` of this worker is number `slot * workers + worker_index` of
    /// the fleet, so subscribers on different workers spread over the
    /// channels.
    #[serde(default)]
    pub worker_index: u64,
    /// Workers in the fleet (at least 1).
    #[serde(default)]
    pub workers: u64,
}

impl BroadcastSpec {
    /// The channels connection `slot` of this worker uses (by number).
    pub fn channels_of(&self, slot: u64) -> impl Iterator<Item = u64> + '_ {
        let global = slot.wrapping_mul(self.workers.max(1)).wrapping_add(self.worker_index);
        let first = global.wrapping_mul(self.channels_per_connection);
        (0..self.channels_per_connection.min(self.channels)).map(move |j| (first + j) % self.channels.max(1))
    }

    /// Channel `n`'s name.
    pub fn channel_name(&self, n: u64) -> String {
        format!("{}/{n}", self.channel_prefix)
    }
}

/// Request/response: a message from a template every interval, its reply
/// found by a matcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// The message; `{{seq}}` is the request's number on its connection.
    pub message: Template,
    /// Sent as a binary frame instead of text.
    #[serde(default)]
    pub binary: bool,
    /// How a reply is recognised.
    pub matcher: Matcher,
    /// A reply later than this counts as lost, µs.
    pub reply_timeout_us: u64,
}

/// How a reply is matched to its request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Matcher {
    /// A JSON field (dotted path, e.g. `id` or `result.ref`) the server
    /// copies from the request; the request's own value comes from the
    /// same path in the rendered message.
    JsonField(String),
    /// A regular expression whose first capture group holds the request's
    /// `{{seq}}`.
    Regex(String),
    /// Any next message answers the oldest request waiting.
    AnyNext,
}

/// Receive-only: server push.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveSpec {
    /// Messages to send once after opening (a subscription), rendered per
    /// connection.
    #[serde(default)]
    pub subscribe: Vec<Template>,
    /// Where a message carries its send time, for one-way latency.
    #[serde(default)]
    pub timestamp: Option<TimestampSpec>,
    /// A silence longer than this on one connection counts as a gap, µs
    /// (0: not checked).
    #[serde(default)]
    pub gap_us: u64,
}

/// Where a pushed message carries its send time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampSpec {
    /// How to find it.
    pub field: TimestampField,
    /// Its unit since the Unix epoch.
    pub unit: TimeUnit,
}

/// How to find a timestamp in a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum TimestampField {
    /// A dotted JSON path to a number.
    JsonPath(String),
    /// A regular expression whose first capture group is the number.
    Regex(String),
}

/// A unit of time since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Seconds (may be fractional).
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl TimeUnit {
    /// Microseconds in one of this unit.
    pub fn us_per_unit(self) -> f64 {
        match self {
            TimeUnit::S => 1e6,
            TimeUnit::Ms => 1e3,
            TimeUnit::Us => 1.0,
            TimeUnit::Ns => 1e-3,
        }
    }
}

/// A secret value: used, never shown. Debug and Display print
/// `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl ConnectSpec {
    /// The spec as it travels in Assign.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }

    /// A spec from Assign; empty text is the default (echo, no extras).
    pub fn from_json(text: &str) -> Result<ConnectSpec, String> {
        if text.is_empty() {
            return Ok(ConnectSpec::default());
        }
        serde_json::from_str(text).map_err(|e| format!("connection spec: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_specs_round_trip() {
        let spec = ConnectSpec {
            jwt: Some(JwtSpec {
                alg: JwtAlg::HS256,
                key: Secret::new("hunter2"),
                claims: vec![("sub".into(), ClaimValue::Text(Template::parse("user-{{conn}}").unwrap()))],
                expires_in_s: 60,
                send_as: JwtPlacement::Bearer,
            }),
            ..Default::default()
        };
        assert!(!format!("{spec:?}").contains("hunter2"));
        assert_eq!(ConnectSpec::from_json(&spec.to_json()), Ok(spec));
        assert_eq!(ConnectSpec::from_json(""), Ok(ConnectSpec::default()));
        assert!(ConnectSpec::from_json("{\"bogus\":1}").is_err());
    }
}
