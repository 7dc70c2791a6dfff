//! A small HTTP/1.1 client for flows' `http` steps: one request per
//! connection (`Connection: close`), to the run's target over plain TCP or
//! the run's TLS client, and a response read under hard limits.
//!
//! Everything a server sends is hostile until proven otherwise: the head is
//! read up to [`MAX_HEAD`] bytes and parsed by `httparse`; the body is read
//! by `Content-Length`, chunked transfer coding or until the server closes,
//! and never beyond the caller's `max_body`; anything longer, malformed or
//! cut short is an [`HttpError`], never a panic and never unbounded memory.
//! Interim `1xx` responses are skipped. One deadline covers the whole
//! exchange (connect, TLS, request, response) in [`fetch`].
//!
//! Not a general client on purpose: no keep-alive, no redirects, no
//! compression, no proxies. A flow step measures one request, so one
//! connection per request keeps each measurement independent.

use std::net::IpAddr;
use std::time::Duration;

use stampede_model::Cause;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::target::Target;
use crate::tls::Stream;

/// Largest response head (status line, headers, and any interim `1xx`
/// responses before it; trailers of a chunked body too), bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in one response head.
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line of a chunked body (the size and its
/// extensions), bytes.
const MAX_CHUNK_LINE: usize = 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange produced no usable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request cannot be sent as given (a line break in a header value,
    /// a space in the path, ...).
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    /// TCP or TLS could not be set up.
    #[error("cannot connect: {0}")]
    Connect(Cause),
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(Cause),
    /// The server closed before the response was complete.
    #[error("the server closed the connection before the response was complete")]
    Truncated,
    /// The status line and headers exceed [`MAX_HEAD`].
    #[error("the response head exceeds {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The body exceeds the caller's limit (bytes).
    #[error("the response body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// Not an HTTP/1.x response.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The deadline passed first.
    #[error("no complete response in time")]
    Timeout,
}

impl HttpError {
    /// The cause a flow step counts it under: [`Cause::Timeout`] for the
    /// deadline, [`Cause::StepHttpFailed`] for everything else.
    pub fn cause(&self) -> Cause {
        match self {
            HttpError::Timeout => Cause::Timeout,
            _ => Cause::StepHttpFailed,
        }
    }
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, ... (an HTTP token).
    pub method: &'a str,
    /// The request target in origin form: a path from `/`, with its query.
    pub target: &'a str,
    /// The `Host` header's value (the target URL's authority).
    pub host: &'a str,
    /// Extra headers (name, value); `Host`, `Connection` and
    /// `Content-Length` are set here and must not be among them.
    pub headers: &'a [(String, String)],
    /// The body, sent with `Content-Length`. Without one, `POST`, `PUT`
    /// and `PATCH` send `Content-Length: 0` (servers may insist on it).
    pub body: Option<&'a [u8]>,
}

/// A response: its status and its whole body (headers are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, decoded from chunked transfer coding if it was chunked.
    pub body: Vec<u8>,
}

/// Whether `s` is an HTTP token (RFC 9110 section 5.6.2): what method and
/// header names are made of.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Request<'_> {
    /// The request's bytes; an error if a part would break the message's
    /// framing (text coming from templates, possibly from what a server
    /// sent earlier, is checked here, where it is written).
    pub fn encode(&self) -> Result<Vec<u8>, HttpError> {
        if !is_token(self.method) {
            return Err(HttpError::BadRequest("the method is not an HTTP token"));
        }
        let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80);
        if !self.target.starts_with('/') || !visible(self.target) {
            return Err(HttpError::BadRequest(
                "the path must start with / and hold no spaces or control characters",
            ));
        }
        let value_ok = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if !value_ok(self.host) {
            return Err(HttpError::BadRequest("the host holds a line break"));
        }
        let body = self.body.unwrap_or_default();
        let mut out = Vec::with_capacity(128 + self.target.len() + body.len());
        let mut line = |parts: &[&[u8]]| {
            parts.iter().for_each(|p| out.extend_from_slice(p));
            out.extend_from_slice(b"\r\n");
        };
        line(&[self.method.as_bytes(), b" ", self.target.as_bytes(), b" HTTP/1.1"]);
        line(&[b"Host: ", self.host.as_bytes()]);
        line(&[b"User-Agent: stampede"]);
        line(&[b"Connection: close"]);
        for (name, value) in self.headers {
            if !is_token(name) {
                return Err(HttpError::BadRequest("a header name is not an HTTP token"));
            }
            if !value_ok(value) {
                return Err(HttpError::BadRequest("a header value holds a line break"));
            }
            line(&[name.as_bytes(), b": ", value.as_bytes()]);
        }
        if self.body.is_some() || matches!(self.method, "POST" | "PUT" | "PATCH") {
            line(&[b"Content-Length: ", body.len().to_string().as_bytes()]);
        }
        line(&[]);
        out.extend_from_slice(body);
        Ok(out)
    }
}

/// Connects to `target` (TCP from `source` if given, then TLS for a
/// `wss://` target with the run's TLS client), sends `request` and reads
/// the response, all within `limit`.
pub async fn fetch(
    target: &Target,
    source: Option<IpAddr>,
    request: &Request<'_>,
    max_body: usize,
    limit: Duration,
) -> Result<Response, HttpError> {
    let bytes = request.encode()?;
    let head_only = request.method == "HEAD";
    let exchange = async {
        let tcp = crate::handshake::connect_tcp(target, source, limit).await.map_err(HttpError::Connect)?;
        let mut stream = match &target.tls {
            None => Stream::Plain(tcp),
            Some(tls) => Stream::Tls(Box::new(tls.connect(tcp).await.map_err(HttpError::Connect)?)),
        };
        exchange(&mut stream, &bytes, head_only, max_body).await
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Err(HttpError::Connect(Cause::Timeout))) | Err(_) => Err(HttpError::Timeout),
        Ok(result) => result,
    }
}

/// Writes `request` (encoded) to `stream` and reads the response; for a
/// `HEAD` request (`head_only`) the response has no body whatever its
/// headers say.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    head_only: bool,
    max_body: usize,
) -> Result<Response, HttpError> {
    let io = |e: std::io::Error| HttpError::Io(Cause::from_io(&e));
    stream.write_all(request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    read_response(stream, head_only, max_body).await
}

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Reads one response from `stream`: skips interim `1xx` responses, then
/// reads the body as its headers frame it, keeping at most `max_body`
/// bytes.
pub async fn read_response<R: AsyncRead + Unpin>(
    stream: &mut R,
    head_only: bool,
    max_body: usize,
) -> Result<Response, HttpError> {
    let mut r = Reader { stream, buf: Vec::new(), at: 0 };
    // Interim responses count against the head limit too.
    let mut head_budget = MAX_HEAD;
    let (status, framing) = loop {
        let (used, status, framing) = r.head(head_budget).await?;
        head_budget -= used;
        match status {
            101 => return Err(HttpError::Malformed("101 Switching Protocols without an upgrade asked for")),
            100..=199 => continue,
            _ => break (status, framing),
        }
    };
    let framing = if head_only || status == 204 || status == 304 { Framing::None } else { framing };
    let body = match framing {
        Framing::None => Vec::new(),
        Framing::Length(n) => {
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= max_body)
                .ok_or(HttpError::BodyTooLarge(max_body))?;
            r.take(n).await?
        }
        Framing::Chunked => r.chunked(max_body, head_budget).await?,
        Framing::UntilClose => r.until_close(max_body).await?,
    };
    Ok(Response { status, body })
}

/// A buffered reader over the response: `buf[at..]` is read but not yet
/// used.
struct Reader<'s, R> {
    stream: &'s mut R,
    buf: Vec<u8>,
    at: usize,
}

impl<R: AsyncRead + Unpin> Reader<'_, R> {
    fn unread(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// Reads more; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, HttpError> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.reserve(READ_CHUNK);
        let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| HttpError::Io(Cause::from_io(&e)))?;
        Ok(n > 0)
    }

    /// Reads and parses one response head of at most `budget` bytes:
    /// (its length, the status, how its body is framed).
    async fn head(&mut self, budget: usize) -> Result<(usize, u16, Framing), HttpError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response.parse(self.unread());
            match parsed {
                Ok(httparse::Status::Complete(len)) if len <= budget => {
                    let status = response.code.ok_or(HttpError::Malformed("no status code"))?;
                    let framing = framing(response.headers)?;
                    self.at += len;
                    return Ok((len, status, framing));
                }
                Ok(httparse::Status::Complete(_)) => return Err(HttpError::HeadTooLarge),
                Ok(httparse::Status::Partial) if self.unread().len() > budget => {
                    return Err(HttpError::HeadTooLarge);
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(HttpError::Malformed("too many headers")),
                Err(_) => return Err(HttpError::Malformed("not an HTTP/1.x response head")),
            }
            if !self.fill().await? {
                return Err(if self.unread().is_empty() {
                    HttpError::Malformed("the server closed without answering")
                } else {
                    HttpError::Truncated
                });
            }
        }
    }

    /// The next `n` bytes.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, HttpError> {
        while self.unread().len() < n {
            if !self.fill().await? {
                return Err(HttpError::Truncated);
            }
        }
        let out = self.buf[self.at..self.at + n].to_vec();
        self.at += n;
        Ok(out)
    }

    /// Everything up to the end of the stream, at most `max` bytes.
    async fn until_close(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        while self.fill().await? {
            if self.unread().len() > max {
                return Err(HttpError::BodyTooLarge(max));
            }
        }
        if self.unread().len() > max {
            return Err(HttpError::BodyTooLarge(max));
        }
        Ok(self.unread().to_vec())
    }

    /// The next line without its line ending (CRLF or a bare LF), at most
    /// `max` bytes; `None` if the stream ends before any of it.
    async fn line(&mut self, max: usize) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if let Some(pos) = self.unread().iter().position(|b| *b == b'\n') {
                let mut line = self.unread()[..pos].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.at += pos + 1;
                return Ok(Some(line));
            }
            if self.unread().len() > max {
                return Err(HttpError::Malformed("a line of the chunked body is too long"));
            }
            if !self.fill().await? {
                return if self.unread().is_empty() { Ok(None) } else { Err(HttpError::Truncated) };
            }
        }
    }

    /// A chunked body (RFC 9112 section 7.1), at most `max` bytes decoded;
    /// trailers (skipped) may take `trailer_budget` bytes.
    async fn chunked(&mut self, max: usize, trailer_budget: usize) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.line(MAX_CHUNK_LINE).await?.ok_or(HttpError::Truncated)?;
            let size = line.split(|b| *b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size).map(str::trim).unwrap_or_default();
            if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(HttpError::Malformed("a chunk size that is not a hexadecimal number"));
            }
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| HttpError::Malformed("a chunk size out of range"))?;
            if size == 0 {
                break;
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|n| body.len().saturating_add(*n) <= max)
                .ok_or(HttpError::BodyTooLarge(max))?;
            body.extend_from_slice(&self.take(size).await?);
            match self.line(2).await? {
                Some(end) if end.is_empty() => {}
                _ => return Err(HttpError::Malformed("a chunk not followed by a line end")),
            }
        }
        // Trailers, up to an empty line; a server that closes right after
        // the last chunk is forgiven.
        let mut left = trailer_budget;
        while let Some(trailer) = self.line(left).await? {
            if trailer.is_empty() {
                break;
            }
            left = left.checked_sub(trailer.len() + 2).ok_or(HttpError::HeadTooLarge)?;
        }
        Ok(body)
    }
}

/// How the body of a response with `headers` is framed: chunked when
/// chunked is the last transfer coding, until close under any other
/// transfer coding, else by one agreed `Content-Length`, else until close.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
    let mut length: Option<u64> = None;
    let mut coding: Option<&[u8]> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coding = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // A list of equal values ("5, 5") is allowed; different ones are not.
            for part in h.value.split(|b| *b == b',') {
                let digits = std::str::from_utf8(part).map(str::trim).unwrap_or_default();
                if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HttpError::Malformed("an invalid Content-Length"));
                }
                let n: u64 = digits.parse().map_err(|_| HttpError::Malformed("an invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::Malformed("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        }
    }
    if let Some(coding) = coding {
        let last = coding.rsplit(|b| *b == b',').next().unwrap_or_default();
        let chunked = std::str::from_utf8(last).is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked { Framing::Chunked } else { Framing::UntilClose });
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

#[cfg(test)]
mod tests;
