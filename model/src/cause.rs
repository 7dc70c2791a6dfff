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
}

impl Cause {
    /// The key under which the cause is reported, e.g. `refused`, `http_503`,
    /// `closed_1001`, `message_lost`.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Classifies an I/O error.
    pub fn from_io(err: &std::io::Error) -> Cause {
        use std::io::ErrorKind::*;
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_keys_are_stable() {
        assert_eq!(Cause::ClosedByServer(1001).key(), "closed_1001");
        assert_eq!(Cause::from_io(&std::io::ErrorKind::ConnectionRefused.into()).key(), "refused");
        assert_eq!(Cause::Io(std::io::ErrorKind::AddrNotAvailable).key(), "io_addrnotavailable");
        assert_eq!(Cause::MessageLost.key(), "message_lost");
    }
}
