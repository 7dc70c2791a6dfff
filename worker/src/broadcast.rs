//! Broadcast sessions.
use std::time::Instant;

use tokio_tungstenite::tungstenite::Message;

use crate::connection::RunContext;
use crate::session::Session;

/// One connection of a broadcast run.
pub struct BroadcastSession;

impl Session for BroadcastSession {
    fn open(_ctx: &RunContext, _slot: u64, _opened: Instant) -> Self {
        BroadcastSession
    }
    fn next_due(&self) -> Option<Instant> {
        None
    }
    fn due(&mut self, _ctx: &RunContext, _busy: bool) -> Option<Message> {
        None
    }
    fn received(&mut self, _ctx: &RunContext, _payload: &[u8]) {}
    fn awaiting(&self) -> bool {
        false
    }
    fn ended(&mut self, _ctx: &RunContext) {}
}
