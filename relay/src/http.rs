//! HTTP/1.1 request-head parsing and routing.
//!
//! The relay reads the request head itself instead of using an HTTP server
//! crate so it can serve `/health`, `/metrics` and `POST /publish/<channel>`
//! on the same port as `/ws` and `/pubsub` and hand the exact leftover bytes
//! to the WebSocket layer (or the publish body reader). Everything here
//! is pure (bytes in, decision out) so it can be unit-tested without sockets.

/// Upper bound on a request head; larger heads are rejected so a client
/// cannot make the relay buffer arbitrary amounts before upgrading.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// Headers beyond this count make the request a `400`.
const MAX_HEADERS: usize = 64;

/// Largest body of `POST /publish/<channel>`; larger is a `413`.
pub(crate) const MAX_PUBLISH_BODY: usize = 1 << 20;

/// The WebSocket endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/ws`: echo.
    Echo,
    /// `/pubsub`: channels.
    Pubsub,
}

/// A well-formed `POST /publish/<channel>` head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish {
    /// Percent-decoded and checked.
    pub(crate) channel: String,
    /// The body's length (at most [`MAX_PUBLISH_BODY`]).
    pub(crate) length: usize,
    /// The client waits for `100 Continue` before sending the body.
    pub(crate) expect_continue: bool,
}

/// What to do with a complete request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Valid RFC 6455 upgrade; carries the client's `Sec-WebSocket-Key`.
    Upgrade {
        key: String,
        /// A bearer token from `Authorization` or the `access_token` /
        /// `token` query parameter, if the request carries one.
        token: Option<String>,
        endpoint: Endpoint,
    },
    /// `POST /publish/<channel>`, its body still to read; token as above.
    Publish {
        publish: Publish,
        token: Option<String>,
    },
    Health,
    Metrics,
    /// The demo app's page (`/`, `/app`).
    App,
    NotFound,
    /// The path exists, the method does not; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// `411`: a publish without `Content-Length` (chunked bodies included).
    LengthRequired,
    /// `413`: a publish body over [`MAX_PUBLISH_BODY`].
    PayloadTooLarge,
    /// `426`: the upgrade asked for a WebSocket version other than 13.
    UpgradeRequired,
    BadRequest(&'static str),
}

/// Result of feeding the bytes read so far to the parser.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The head is not complete yet; read more.
    Partial,
    /// The head ends at `head_len`; bytes after it belong to the next layer.
    Complete { route: Route, head_len: usize },
}

/// Parses `buf` as far as possible. Malformed heads route to `BadRequest`
/// rather than erroring, because the caller answers them like any route.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(head_len)) => Parsed::Complete { route: route(&req), head_len },
        Err(_) => {
            Parsed::Complete { route: Route::BadRequest("malformed request head"), head_len: buf.len() }
        }
    }
}

fn route(req: &httparse::Request<'_, '_>) -> Route {
    let path = req.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if let Some(channel) = path.strip_prefix("/publish/") {
        return publish_route(req, channel);
    }
    let route = match path {
        "/ws" => upgrade_route(req, Endpoint::Echo),
        "/pubsub" => upgrade_route(req, Endpoint::Pubsub),
        "/health" => Route::Health,
        "/metrics" => Route::Metrics,
        "/" | "/app" => Route::App,
        _ => return Route::NotFound,
    };
    if req.method != Some("GET") {
        return Route::MethodNotAllowed("GET");
    }
    route
}

/// `POST /publish/<channel>`: the channel percent-decoded and checked, the
/// body's length known and within bounds.
fn publish_route(req: &httparse::Request<'_, '_>, encoded: &str) -> Route {
    if req.method != Some("POST") {
        return Route::MethodNotAllowed("POST");
    }
    let Some(channel) = percent_decode(encoded) else {
        return Route::BadRequest("bad percent-encoding in the channel name");
    };
    if let Err(why) = crate::ops::check_channel(&channel) {
        return Route::BadRequest(why);
    }
    if headers(req, "transfer-encoding").next().is_some() {
        return Route::LengthRequired;
    }
    let mut lengths = headers(req, "content-length")
        .map(|v| std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or(()));
    let length = match lengths.next() {
        None => return Route::LengthRequired,
        Some(Ok(n)) if lengths.all(|other| other == Ok(n)) => n,
        Some(_) => return Route::BadRequest("invalid Content-Length"),
    };
    if length > MAX_PUBLISH_BODY as u64 {
        return Route::PayloadTooLarge;
    }
    let expect_continue = header_has_token(req, "expect", "100-continue");
    Route::Publish {
        publish: Publish { channel, length: length as usize, expect_continue },
        token: token(req),
    }
}

/// `%XX` escapes decoded (`+` stays a plus, as in any URL path); `None`
/// for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            // Two hex digits: ASCII, and a byte's value.
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 6455 section 4.2.1 checks, in the order that gives the most useful
/// status: a request that is not an upgrade at all is a 400, a real upgrade
/// with the wrong version is a 426 so the client can retry with 13.
fn upgrade_route(req: &httparse::Request<'_, '_>, endpoint: Endpoint) -> Route {
    if req.version != Some(1) {
        return Route::BadRequest("WebSocket upgrade requires HTTP/1.1");
    }
    if !header_has_token(req, "upgrade", "websocket") {
        return Route::BadRequest("missing Upgrade: websocket");
    }
    if !header_has_token(req, "connection", "upgrade") {
        return Route::BadRequest("missing Connection: upgrade");
    }
    let version = headers(req, "sec-websocket-version").next();
    if version.map(|v| v.trim_ascii()) != Some(b"13") {
        return Route::UpgradeRequired;
    }
    let mut keys = headers(req, "sec-websocket-key");
    match (keys.next(), keys.next()) {
        (Some(key), None) if is_valid_key(key.trim_ascii()) => Route::Upgrade {
            // A valid key is plain base64, hence ASCII.
            key: String::from_utf8_lossy(key.trim_ascii()).into_owned(),
            token: token(req),
            endpoint,
        },
        _ => Route::BadRequest("invalid Sec-WebSocket-Key"),
    }
}

/// The bearer token of an upgrade or publish request, if any.
fn token(req: &httparse::Request<'_, '_>) -> Option<String> {
    let bearer = headers(req, "authorization").find_map(|v| {
        let v = std::str::from_utf8(v).ok()?.trim();
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
    });
    bearer.or_else(|| {
        let query = req.path?.split_once('?')?.1;
        query.split('&').find_map(|pair| match pair.split_once('=') {
            Some(("access_token" | "token", v)) => Some(v.to_string()),
            _ => None,
        })
    })
}

fn headers<'r>(req: &'r httparse::Request<'_, '_>, name: &'r str) -> impl Iterator<Item = &'r [u8]> {
    req.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// Headers like `Connection` are comma-separated token lists and may be
/// repeated, so `keep-alive, Upgrade` must match `upgrade`.
fn header_has_token(req: &httparse::Request<'_, '_>, name: &str, token: &str) -> bool {
    headers(req, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The key must be base64 of exactly 16 bytes: 22 alphabet characters
/// followed by `==`. Checked by hand to avoid a base64 dependency.
fn is_valid_key(key: &[u8]) -> bool {
    let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key[..22].iter().all(is_b64) && &key[22..] == b"=="
}

/// Formats a complete plain-HTTP response. Every plain response closes the
/// connection, so clients never wait on keep-alive the relay won't honour.
pub(crate) fn response(status: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// The `101` answer that completes the handshake.
pub(crate) fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn route_of(head: &str) -> Route {
        match parse(head.as_bytes()) {
            Parsed::Complete { route, head_len } => {
                assert_eq!(head_len, head.len());
                route
            }
            Parsed::Partial => panic!("partial"),
        }
    }

    fn upgrade(extra: &str) -> String {
        format!("GET /ws HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
    }

    #[test]
    fn valid_upgrade_with_token_lists_and_case() {
        let head = upgrade(&format!(
            "upgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
        ));
        assert_eq!(
            route_of(&head),
            Route::Upgrade { key: KEY.into(), token: None, endpoint: Endpoint::Echo }
        );
        let ok = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
        let bearer = format!("{ok}Sec-WebSocket-Key: {KEY}\r\nAuthorization: bearer abc.def.ghi\r\n");
        assert_eq!(
            route_of(&upgrade(&bearer)),
            Route::Upgrade { key: KEY.into(), token: Some("abc.def.ghi".into()), endpoint: Endpoint::Echo }
        );
        let query =
            format!("GET /ws?room=1&access_token=t1 HTTP/1.1\r\n{ok}Sec-WebSocket-Key: {KEY}\r\n\r\n");
        assert_eq!(
            route_of(&query),
            Route::Upgrade { key: KEY.into(), token: Some("t1".into()), endpoint: Endpoint::Echo }
        );
        let pubsub = format!("GET /pubsub?token=t2 HTTP/1.1\r\n{ok}Sec-WebSocket-Key: {KEY}\r\n\r\n");
        assert_eq!(
            route_of(&pubsub),
            Route::Upgrade { key: KEY.into(), token: Some("t2".into()), endpoint: Endpoint::Pubsub }
        );
    }

    #[test]
    fn bad_upgrades() {
        let ok = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
        assert_eq!(route_of(&upgrade("")), Route::BadRequest("missing Upgrade: websocket"));
        assert!(matches!(
            route_of(&upgrade("Upgrade: websocket\r\nConnection: close\r\n")),
            Route::BadRequest(_)
        ));
        let v8 = format!("{ok}Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {KEY}\r\n");
        assert_eq!(route_of(&upgrade(&v8)), Route::UpgradeRequired);
        let short = format!("{ok}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc=\r\n");
        assert!(matches!(route_of(&upgrade(&short)), Route::BadRequest(_)));
        let none = format!("{ok}Sec-WebSocket-Version: 13\r\n");
        assert!(matches!(route_of(&upgrade(&none)), Route::BadRequest(_)));
        let http10 = format!("GET /ws HTTP/1.0\r\n{ok}\r\n");
        assert!(matches!(route_of(&http10), Route::BadRequest(_)));
    }

    #[test]
    fn plain_routes() {
        assert_eq!(route_of("GET /health HTTP/1.1\r\n\r\n"), Route::Health);
        assert_eq!(route_of("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route_of("GET /nope HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route_of("GET /app?channel=room HTTP/1.1\r\n\r\n"), Route::App);
        assert_eq!(route_of("GET / HTTP/1.1\r\n\r\n"), Route::App);
        assert_eq!(route_of("POST /health HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed("GET"));
    }

    #[test]
    fn publish_routes() {
        let publish = |channel: &str, length| Route::Publish {
            publish: Publish { channel: channel.into(), length, expect_continue: false },
            token: None,
        };
        assert_eq!(
            route_of("POST /publish/conn/1-ab HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            publish("conn/1-ab", 5)
        );
        assert_eq!(
            route_of("POST /publish/a%20b%2Fc%C3%A9+?x=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
            publish("a b/cé+", 0)
        );
        assert_eq!(
            route_of(
                "POST /publish/c?access_token=t HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
            ),
            Route::Publish {
                publish: Publish { channel: "c".into(), length: 2, expect_continue: true },
                token: Some("t".into())
            }
        );
        assert_eq!(route_of("GET /publish/c HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed("POST"));
        assert_eq!(route_of("POST /publish/c HTTP/1.1\r\n\r\n"), Route::LengthRequired);
        assert_eq!(
            route_of("POST /publish/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Route::LengthRequired
        );
        assert_eq!(
            route_of("POST /publish/c HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n"),
            Route::PayloadTooLarge
        );
        assert_eq!(
            route_of("POST /publish/c HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n"),
            publish("c", 1 << 20)
        );
        for (head, why) in [
            (
                "POST /publish/c HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                "invalid Content-Length",
            ),
            ("POST /publish/c HTTP/1.1\r\nContent-Length: -2\r\n\r\n", "invalid Content-Length"),
            ("POST /publish/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n", "channel name is empty"),
            (
                "POST /publish/a%0Ab HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                "channel name contains a control character",
            ),
            (
                "POST /publish/a%zz HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                "bad percent-encoding in the channel name",
            ),
            (
                "POST /publish/a%ff HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                "bad percent-encoding in the channel name",
            ),
            (
                "POST /publish/a%+1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                "bad percent-encoding in the channel name",
            ),
            (
                "POST /publish/a% HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                "bad percent-encoding in the channel name",
            ),
        ] {
            assert_eq!(route_of(head), Route::BadRequest(why), "{head}");
        }
        assert_eq!(route_of("POST /publish HTTP/1.1\r\n\r\n"), Route::NotFound);
    }

    #[test]
    fn partial_malformed_and_leftover() {
        assert_eq!(parse(b"GET /health HTTP/1.1\r\nHost"), Parsed::Partial);
        assert!(matches!(
            parse(b"\x00\x01 garbage\r\n\r\n"),
            Parsed::Complete { route: Route::BadRequest(_), .. }
        ));
        let buf = b"GET /health HTTP/1.1\r\n\r\n\x81\x00";
        assert_eq!(parse(buf), Parsed::Complete { route: Route::Health, head_len: buf.len() - 2 });
    }

    #[test]
    fn key_validation() {
        assert!(is_valid_key(KEY.as_bytes()));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=")); // 23 chars
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25j*Q==")); // bad alphabet
    }
}
