//! The one error type of the driver. Variants say what failed in terms a
//! caller can act on: the browser is gone (every page fails the same way),
//! a deadline passed, Chromium answered with an error, the page did
//! something unexpected.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to Chromium.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Chromium executable was found; `tried` lists every place looked at.
    #[error(
        "no Chromium found (tried {tried}); install Debian's `chromium` or set CHROME_PATH to the executable"
    )]
    NotFound {
        /// Human-readable list of the paths, variables and names tried.
        tried: String,
    },

    /// The executable exists but could not be started.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The executable.
        path: PathBuf,
        /// Why the OS refused.
        source: std::io::Error,
    },

    /// Chromium started but never answered its first command.
    #[error("{path} did not come up: {reason}{stderr}")]
    Launch {
        /// The executable.
        path: PathBuf,
        /// The error of the first command (timeout, closed pipe).
        reason: Box<Error>,
        /// The end of Chromium's stderr, prefixed with a newline, or empty.
        stderr: String,
    },

    /// Local I/O: the temporary profile directory, /proc.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// A command or a wait did not finish before its deadline.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The CDP method or the thing waited for.
        what: String,
        /// The deadline that passed, measured from the start of the call.
        after: Duration,
    },

    /// The connection to the browser is gone (it exited, crashed or was
    /// killed, or was closed): this and every later command fail this way.
    #[error("browser connection closed: {reason}")]
    ConnectionClosed {
        /// Why the connection task ended, e.g. "end of pipe (browser exited)".
        reason: String,
    },

    /// The page's renderer crashed; the page is unusable, others are not.
    #[error("page crashed (target {target_id})")]
    TargetCrashed {
        /// The crashed target.
        target_id: String,
    },

    /// The page was closed or detached while a command was pending.
    #[error("page closed or detached ({reason})")]
    TargetClosed {
        /// What Chromium said, if anything.
        reason: String,
    },

    /// Chromium answered a command with an error object.
    #[error("{method} failed: {message} (code {code})")]
    Protocol {
        /// The CDP method.
        method: &'static str,
        /// The CDP error code.
        code: i64,
        /// The CDP error message (and its `data`, when present).
        message: String,
    },

    /// A response or event did not have the shape its type expects.
    #[error("cannot decode the answer to {method}: {source}")]
    Decode {
        /// The CDP method.
        method: &'static str,
        /// serde_json's description.
        source: serde_json::Error,
    },

    /// Navigation failed before the page loaded (DNS, refused, aborted).
    #[error("navigation to {url} failed: {reason}")]
    Navigation {
        /// Where the page was sent.
        url: String,
        /// Chromium's `errorText`, e.g. `net::ERR_CONNECTION_REFUSED`.
        reason: String,
    },

    /// JavaScript threw (or a promise rejected) in `evaluate`.
    #[error("script threw: {0}")]
    Script(String),

    /// No element matched the selector.
    #[error("no element matches {selector:?}")]
    NoElement {
        /// The CSS selector.
        selector: String,
    },

    /// The element exists but cannot take the action (zero size, not an input).
    #[error("element {selector:?} cannot be used: {reason}")]
    NotInteractable {
        /// The CSS selector.
        selector: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// True when the browser as a whole is gone: the caller should drop
    /// every page of it rather than retry.
    pub fn is_connection_closed(&self) -> bool {
        matches!(self, Error::ConnectionClosed { .. })
    }

    /// True for deadline errors (commands and waits).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}
