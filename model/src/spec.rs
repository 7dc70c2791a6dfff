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
