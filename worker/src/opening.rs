//! What a connection sends to open: the request target with its query
//! parameters, the extra handshake headers (custom headers, `Origin`,
//! `Sec-WebSocket-Protocol`, `Authorization`), and the first message. All
//! rendered per connection attempt from the run's [`HandshakeSpec`] and
//! [`JwtSpec`], so `{{conn}}` and a fresh JWT differ per connection and per
//! reconnect. Everything that can be checked is checked once, in
//! [`Opener::new`]: the hot path only renders.
//!
//! [`HandshakeSpec`]: stampede_model::spec::HandshakeSpec
//! [`JwtSpec`]: stampede_model::spec::JwtSpec

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use stampede_model::spec::{ConnectSpec, JwtPlacement};
use stampede_model::template::{Piece, Var};
use stampede_model::{Cause, TargetUrl, Template};

use crate::jwt::Minter;

/// Request headers the handshake itself sets; a scenario may not replace
/// them (RFC 6455 section 4.1).
const RESERVED: [&str; 6] =
    ["host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol"];

/// How this run's connections open; built once per run.
pub struct Opener {
    path: String,
    query: Option<String>,
    headers: Vec<(String, Template)>,
    origin: Option<Template>,
    query_params: Vec<(String, Template)>,
    protocols: Vec<String>,
    jwt: Option<(Minter, JwtPlacement)>,
    worker: String,
    rng: SystemRandom,
}

/// One connection's opening, rendered.
#[derive(Debug, Default)]
pub struct Opening {
    /// Path and query of the request line.
    pub request_target: String,
    /// Extra header lines, each ending in CRLF.
    pub headers: String,
    /// Offered subprotocols; when not empty the server must pick one.
    pub protocols: Vec<String>,
    /// A message to send right after the upgrade (a JWT, a login).
    pub first_message: Option<String>,
}

/// The values of one connection attempt's template variables.
pub struct Vars<'a> {
    /// The slot.
    pub conn: u64,
    /// The worker's id.
    pub worker: &'a str,
    /// The message number (0 outside messages).
    pub seq: u64,
    /// The connection's token, if one was minted.
    pub jwt: Option<&'a str>,
}

impl Vars<'_> {
    /// Writes `var`'s value to `out`. `{{env.NAME}}` was resolved when the
    /// run started, so it does not reach this point; `{{var.NAME}}` is a
    /// flow's (its sessions write it themselves) and is empty here.
    pub fn write(&self, var: &Var, rng: &SystemRandom, out: &mut String) {
        match var {
            Var::Conn => _ = write!(out, "{}", self.conn),
            Var::Worker => out.push_str(self.worker),
            Var::Seq => _ = write!(out, "{}", self.seq),
            Var::Jwt => out.push_str(self.jwt.unwrap_or_default()),
            Var::Uuid => push_uuid(rng, out),
            Var::NowMs => _ = write!(out, "{}", unix_us() / 1000),
            Var::NowUs => _ = write!(out, "{}", unix_us()),
            Var::Env(_) | Var::Captured(_) => {}
        }
    }
}

fn unix_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

/// A random (version 4) UUID.
fn push_uuid(rng: &SystemRandom, out: &mut String) {
    let mut b = [0u8; 16];
    if rng.fill(&mut b).is_err() {
        b = (unix_us() ^ 0x5eed).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{byte:02x}");
    }
}

/// Resolves `{{env.NAME}}` from this process's environment.
pub fn resolve_env(t: &Template) -> Result<Template, String> {
    t.resolve_env(|name| std::env::var(name).ok())
}

/// Checks that text going into a header cannot end the header early.
fn header_safe(t: &Template, what: &str) -> Result<(), String> {
    let bad = t.pieces().iter().any(|p| matches!(p, Piece::Literal(s) if s.contains(['\r', '\n', '\0'])));
    if bad { Err(format!("{what}: a header value may not contain a line break")) } else { Ok(()) }
}

impl Opener {
    /// Checks and prepares the spec for `url`; errors say what to change.
    pub fn new(spec: &ConnectSpec, url: &TargetUrl, worker: &str) -> Result<Opener, String> {
        let hs = &spec.handshake;
        let mut headers = Vec::new();
        for (name, value) in &hs.headers {
            let token_ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token_ok {
                return Err(format!("header name {name:?} is not a valid HTTP header name"));
            }
            if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!("header {name:?} is set by the WebSocket handshake itself"));
            }
            let value = resolve_env(value)?;
            header_safe(&value, &format!("header {name}"))?;
            headers.push((name.clone(), value));
        }
        let origin = hs.origin.as_ref().map(resolve_env).transpose()?;
        if let Some(o) = &origin {
            header_safe(o, "origin")?;
        }
        let query_params = hs
            .query
            .iter()
            .map(|(k, v)| Ok((percent_encode(k), resolve_env(v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        if let Some(p) = hs.subprotocols.iter().find(|p| !is_token(p)) {
            return Err(format!("subprotocol {p:?} is not a valid token"));
        }
        let jwt = match &spec.jwt {
            Some(j) => {
                let mut j = j.clone();
                for (_, claim) in &mut j.claims {
                    if let stampede_model::spec::ClaimValue::Text(t) = claim {
                        *t = resolve_env(t)?;
                    }
                }
                if let JwtPlacement::FirstMessage(t) = &mut j.send_as {
                    *t = resolve_env(t)?;
                }
                let placement = j.send_as.clone();
                Some((Minter::new(&j).map_err(|e| e.to_string())?, placement))
            }
            None => None,
        };
        Ok(Opener {
            path: url.path.clone(),
            query: url.query.clone(),
            headers,
            origin,
            query_params,
            protocols: hs.subprotocols.clone(),
            jwt,
            worker: worker.to_string(),
            rng: SystemRandom::new(),
        })
    }

    /// The opening of connection `conn`, with a freshly minted token.
    pub fn open(&self, conn: u64) -> Result<Opening, Cause> {
        let token = match &self.jwt {
            Some((minter, _)) => {
                let vars = Vars { conn, worker: &self.worker, seq: 0, jwt: None };
                Some(minter.mint(|v, out| vars.write(v, &self.rng, out)).map_err(|_| Cause::JwtMint)?)
            }
            None => None,
        };
        let vars = Vars { conn, worker: &self.worker, seq: 0, jwt: token.as_deref() };
        let render =
            |t: &Template, out: &mut String| t.render_into(out, |v, out| vars.write(v, &self.rng, out));

        let mut target = self.path.clone();
        let mut sep = '?';
        if let Some(q) = &self.query {
            target.push('?');
            target.push_str(q);
            sep = '&';
        }
        let mut value = String::new();
        let mut push_param = |target: &mut String, key: &str, value: &str| {
            target.push(sep);
            sep = '&';
            target.push_str(key);
            target.push('=');
            target.push_str(&percent_encode(value));
        };
        for (key, t) in &self.query_params {
            value.clear();
            render(t, &mut value);
            push_param(&mut target, key, &value);
        }
        let mut headers = String::new();
        for (name, t) in &self.headers {
            headers.push_str(name);
            headers.push_str(": ");
            render(t, &mut headers);
            headers.push_str("\r\n");
        }
        if let Some(t) = &self.origin {
            headers.push_str("Origin: ");
            render(t, &mut headers);
            headers.push_str("\r\n");
        }
        if !self.protocols.is_empty() {
            let _ = write!(headers, "Sec-WebSocket-Protocol: {}\r\n", self.protocols.join(", "));
        }
        let mut first_message = None;
        if let (Some((_, placement)), Some(token)) = (&self.jwt, &token) {
            match placement {
                JwtPlacement::Bearer => {
                    let _ = write!(headers, "Authorization: Bearer {token}\r\n");
                }
                JwtPlacement::Query(name) => push_param(&mut target, &percent_encode(name), token),
                JwtPlacement::FirstMessage(t) => {
                    let mut m = String::new();
                    render(t, &mut m);
                    first_message = Some(m);
                }
            }
        }
        Ok(Opening { request_target: target, headers, protocols: self.protocols.clone(), first_message })
    }
}

/// RFC 7230 token characters (what a subprotocol name may use).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use stampede_model::spec::{ClaimValue, HandshakeSpec, JwtAlg, JwtSpec, Secret};

    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    #[test]
    fn renders_headers_query_origin_and_protocols_per_connection() {
        let spec = ConnectSpec {
            handshake: HandshakeSpec {
                headers: vec![("X-Client".into(), t("stampede-{{worker}}-{{conn}}"))],
                origin: Some(t("https://app.example")),
                subprotocols: vec!["v2".into(), "v1".into()],
                query: vec![("room".into(), t("r {{conn}}&x"))],
            },
            ..Default::default()
        };
        let url = TargetUrl::parse("ws://127.0.0.1:9/ws?a=1").unwrap();
        let o = Opener::new(&spec, &url, "w1").unwrap().open(42).unwrap();
        assert_eq!(o.request_target, "/ws?a=1&room=r%2042%26x");
        assert_eq!(
            o.headers,
            "X-Client: stampede-w1-42\r\nOrigin: https://app.example\r\nSec-WebSocket-Protocol: v2, v1\r\n"
        );
        assert_eq!(o.protocols, ["v2", "v1"]);
        assert!(o.first_message.is_none());
    }

    #[test]
    fn a_token_goes_where_the_spec_says_and_is_fresh_per_connection() {
        let jwt = |send_as| JwtSpec {
            alg: JwtAlg::HS256,
            key: Secret::new("k"),
            claims: vec![("sub".into(), ClaimValue::Text(t("u{{conn}}")))],
            expires_in_s: 60,
            send_as,
        };
        let url = TargetUrl::parse("ws://127.0.0.1:9/ws").unwrap();
        let open = |send_as, conn| {
            let spec = ConnectSpec { jwt: Some(jwt(send_as)), ..Default::default() };
            Opener::new(&spec, &url, "w").unwrap().open(conn).unwrap()
        };
        let bearer = open(JwtPlacement::Bearer, 1);
        assert!(bearer.headers.starts_with("Authorization: Bearer ey"), "{}", bearer.headers);
        assert_ne!(bearer.headers, open(JwtPlacement::Bearer, 2).headers, "another subject, another token");
        let query = open(JwtPlacement::Query("access_token".into()), 1);
        assert!(query.request_target.starts_with("/ws?access_token=ey"), "{}", query.request_target);
        let first = open(JwtPlacement::FirstMessage(t(r#"{"auth":"{{jwt}}"}"#)), 1);
        assert!(first.first_message.unwrap().starts_with(r#"{"auth":"ey"#));
    }

    #[test]
    fn refuses_what_would_break_the_request() {
        let url = TargetUrl::parse("ws://127.0.0.1:9/ws").unwrap();
        let with =
            |hs: HandshakeSpec| Opener::new(&ConnectSpec { handshake: hs, ..Default::default() }, &url, "w");
        let header =
            |n: &str, v: &str| HandshakeSpec { headers: vec![(n.into(), t(v))], ..Default::default() };
        assert!(with(header("X-A", "ok\r\nEvil: 1")).err().unwrap().contains("line break"));
        assert!(with(header("Bad Name", "x")).err().unwrap().contains("not a valid"));
        assert!(with(header("Sec-WebSocket-Key", "x")).err().unwrap().contains("handshake itself"));
        let protocols = HandshakeSpec { subprotocols: vec!["a b".into()], ..Default::default() };
        assert!(with(protocols).err().unwrap().contains("token"));
        let env = header("X-A", "{{env.STAMPEDE_SURELY_UNSET_VAR}}");
        assert!(with(env).err().unwrap().contains("is not set"));
    }

    #[test]
    fn uuids_are_version_4_and_differ() {
        let rng = SystemRandom::new();
        let (mut a, mut b) = (String::new(), String::new());
        push_uuid(&rng, &mut a);
        push_uuid(&rng, &mut b);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }
}
