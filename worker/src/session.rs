//! What a connection does once it is open, apart from how it is opened,
//! kept open and closed ([`crate::connection`]). The lifecycle drives the
//! socket and the timer; a session decides what to send when, and what each
//! frame received means. Echo is the one session today; request/response,
//! broadcast and pairs are sessions to come.

use std::time::Instant;

use tokio_tungstenite::tungstenite::Message;

use crate::connection::RunContext;

/// The behaviour of one open connection.
pub trait Session: Send + Sized {
    /// A session on connection `slot`, opened at `opened`.
    fn open(ctx: &RunContext, slot: u64, opened: Instant) -> Self;

    /// When it next wants to send; `None`: never (connect only).
    fn next_due(&self) -> Option<Instant>;

    /// Its send time has come: the message to send, if any. `busy` says the
    /// previous message is still being written (the session decides what
    /// that means: skip and count, never queue without bound).
    fn due(&mut self, ctx: &RunContext, busy: bool) -> Option<Message>;

    /// A data frame arrived.
    fn received(&mut self, ctx: &RunContext, payload: &[u8]);

    /// Whether answers are still expected (a closing connection waits for
    /// them a little while).
    fn awaiting(&self) -> bool;

    /// The connection ended: settle what never came back.
    fn ended(&mut self, ctx: &RunContext);
}
