//! Why something counted as an error happened. Every error is counted under
//! exactly one cause, so an error total is the sum of its causes.

use std::fmt;

/// Why a connection attempt failed, an open connection ended, or a message
/// was not delivered intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// TCP connection refused (nothing listens).
    Refused,
    /// Connect or upgrade took longer than the connect timeout.
    Timeout,
    /// The server answered the upgrade with another HTTP status.
    HttpStatus(u16),
    /// The upgrade response was not a valid WebSocket handshake.
    BadHandshake,
    /// The server sent a close frame with this code (1005: none given).
    ClosedByServer(u16),
    /// The connection was reset.
    Reset,
    /// The server closed TCP without a close frame.
    Eof,
    /// The server broke the WebSocket protocol.
    Protocol,
    /// Name resolution failed.
    Dns,
    /// Any other I/O error, by kind.
    Io(std::io::ErrorKind),
    /// A message whose echo never came back.
    MessageLost,
    /// An echo that came back altered or truncated.
    MessageCorrupted,
    /// A send the schedule asked for that could not leave: the previous
    /// message was still being written.
    MessageUnsent,
    /// TLS: the server's certificate chains to no trusted CA.
    TlsUnknownCa,
    /// TLS: the server's certificate has expired or is not valid yet.
    TlsExpired,
    /// TLS: the server's certificate is not valid for the name checked.
    TlsHostname,
    /// TLS: the server's certificate is unusable for another reason.
    TlsBadCertificate,
    /// TLS: the peer sent a fatal alert (e.g. it rejected our client
    /// certificate, or we sent none).
    TlsAlert,
    /// TLS: any other failure of the TLS handshake or record layer.
    TlsHandshake,
    /// Subprotocols were offered and the server picked none.
    SubprotocolMissing,
    /// The server picked a subprotocol that was not offered.
    SubprotocolMismatch,
    /// The connection's JWT could not be signed.
    JwtMint,
    /// A pair's message that did not authenticate under the pair's key
    /// (another key, another pair's message, altered on the way).
    MessageUndecryptable,
    /// A flow's `expect` step saw no matching message in time.
    ExpectTimeout,
    /// A flow's `http` step got another status than expected.
    StepHttpStatus(u16),
    /// A flow's `http` step failed before a response (connect, I/O, a
    /// response too large or not HTTP).
    StepHttpFailed,
    /// A flow's `capture` found nothing at its path or regex.
    CaptureFailed,
    /// Chromium could not be started (or found).
    BrowserLaunch,
    /// The browser or the session's page crashed or went away.
    BrowserCrashed,
    /// A page did not load (`goto`).
    NavigationFailed,
    /// A selector did not match in time (`wait_for`, a click's `wait_for`).
    SelectorTimeout,
    /// A page action could not be done (no element to click or fill, a
    /// script that threw, a value other than `equals`).
    ActionFailed,
}

/// An I/O error whose cause is already known: a layer that understands more
/// than `io::ErrorKind` (the TLS transport) puts it inside the `io::Error`
/// it returns, so code that only sees the `io::Error` (the WebSocket
/// handshake, the frame reader) still counts the right cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownCause(pub Cause);

impl fmt::Display for KnownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for KnownCause {}

impl Cause {
    /// An `io::Error` of `kind` that carries this cause (see [`KnownCause`]).
    pub fn into_io(self, kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::new(kind, KnownCause(self))
    }

    /// The key under which the cause is reported, e.g. `refused`, `http_503`,
    /// `closed_1001`, `message_lost`.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Classifies an I/O error (a cause carried inside it as [`KnownCause`]
    /// wins over its kind).
    pub fn from_io(err: &std::io::Error) -> Cause {
        use std::io::ErrorKind::*;
        if let Some(known) = err.get_ref().and_then(|e| e.downcast_ref::<KnownCause>()) {
            return known.0;
        }
        match err.kind() {
            ConnectionRefused => Cause::Refused,
            ConnectionReset | ConnectionAborted | BrokenPipe => Cause::Reset,
            TimedOut => Cause::Timeout,
            UnexpectedEof => Cause::Eof,
            kind => Cause::Io(kind),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Refused => f.write_str("refused"),
            Cause::Timeout => f.write_str("timeout"),
            Cause::HttpStatus(code) => write!(f, "http_{code}"),
            Cause::BadHandshake => f.write_str("bad_handshake"),
            Cause::ClosedByServer(code) => write!(f, "closed_{code}"),
            Cause::Reset => f.write_str("reset"),
            Cause::Eof => f.write_str("eof"),
            Cause::Protocol => f.write_str("protocol"),
            Cause::Dns => f.write_str("dns"),
            Cause::Io(kind) => write!(f, "io_{}", format!("{kind:?}").to_lowercase()),
            Cause::MessageLost => f.write_str("message_lost"),
            Cause::MessageCorrupted => f.write_str("message_corrupted"),
            Cause::MessageUnsent => f.write_str("message_unsent"),
            Cause::TlsUnknownCa => f.write_str("tls_unknown_ca"),
            Cause::TlsExpired => f.write_str("tls_expired"),
            Cause::TlsHostname => f.write_str("tls_hostname"),
            Cause::TlsBadCertificate => f.write_str("tls_bad_certificate"),
            Cause::TlsAlert => f.write_str("tls_alert"),
            Cause::TlsHandshake => f.write_str("tls_handshake"),
            Cause::SubprotocolMissing => f.write_str("subprotocol_missing"),
            Cause::SubprotocolMismatch => f.write_str("subprotocol_mismatch"),
            Cause::JwtMint => f.write_str("jwt_mint"),
            Cause::MessageUndecryptable => f.write_str("message_undecryptable"),
            Cause::ExpectTimeout => f.write_str("expect_timeout"),
            Cause::StepHttpStatus(code) => write!(f, "step_http_{code}"),
            Cause::StepHttpFailed => f.write_str("step_http_failed"),
            Cause::CaptureFailed => f.write_str("capture_failed"),
            Cause::BrowserLaunch => f.write_str("browser_launch"),
            Cause::BrowserCrashed => f.write_str("browser_crashed"),
            Cause::NavigationFailed => f.write_str("navigation_failed"),
            Cause::SelectorTimeout => f.write_str("selector_timeout"),
            Cause::ActionFailed => f.write_str("action_failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_carried_in_an_io_error_wins_over_its_kind() {
        let err = Cause::TlsAlert.into_io(std::io::ErrorKind::InvalidData);
        assert_eq!(Cause::from_io(&err), Cause::TlsAlert);
        let plain = std::io::Error::new(std::io::ErrorKind::InvalidData, "something else");
        assert_eq!(Cause::from_io(&plain), Cause::Io(std::io::ErrorKind::InvalidData));
    }

    #[test]
    fn cause_keys_are_stable() {
        assert_eq!(Cause::ClosedByServer(1001).key(), "closed_1001");
        assert_eq!(Cause::from_io(&std::io::ErrorKind::ConnectionRefused.into()).key(), "refused");
        assert_eq!(Cause::Io(std::io::ErrorKind::AddrNotAvailable).key(), "io_addrnotavailable");
        assert_eq!(Cause::MessageLost.key(), "message_lost");
        assert_eq!(Cause::TlsUnknownCa.key(), "tls_unknown_ca");
        assert_eq!(Cause::TlsBadCertificate.key(), "tls_bad_certificate");
    }
}
