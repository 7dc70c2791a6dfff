//! What a connection does once it is open, apart from how it is opened,
//! kept open and closed ([`crate::connection`]). The lifecycle drives the
//! socket and the timer; a session decides what to send when, and what each
//! frame received means: echo ([`crate::echo`]), request/response
//! ([`crate::request`]) or receive-only ([`crate::feed`]).

use std::sync::Arc;
use std::time::Instant;

use stampede_model::spec::SessionSpec;
use tokio_tungstenite::tungstenite::Message;

use crate::connection::RunContext;
use crate::feed::FeedPlan;
use crate::flow::FlowPlan;
use crate::request::RequestPlan;

/// The run's session kind, prepared once when the engine starts (templates
/// resolved, regular expressions compiled) and shared by every connection.
#[derive(Debug, Default)]
pub enum SessionPlan {
    /// Stamped messages echoed back ([`crate::echo`]).
    #[default]
    Echo,
    /// Requests answered by replies ([`crate::request`]).
    Request(Arc<RequestPlan>),
    /// Messages the server pushes ([`crate::feed`]).
    Receive(Arc<FeedPlan>),
    /// Encrypted session pairs ([`crate::pair`]): a slot holds two
    /// connections.
    Pairs(Arc<stampede_model::spec::PairsSpec>),
    /// Publishers and subscribers on channels ([`crate::broadcast`]).
    Broadcast(Arc<stampede_model::spec::BroadcastSpec>),
    /// Scripted sessions ([`crate::flow`]).
    Flow(Arc<FlowPlan>),
    /// Browser sessions ([`crate::browser`]): a slot is a page.
    Browser(Arc<crate::browser::BrowserPlan>),
}

impl SessionPlan {
    /// Prepares `spec`; the error names what cannot be used (a missing
    /// environment variable, a bad regular expression).
    pub fn new(spec: &SessionSpec) -> Result<SessionPlan, String> {
        Ok(match spec {
            SessionSpec::Echo => SessionPlan::Echo,
            SessionSpec::Request(r) => SessionPlan::Request(Arc::new(RequestPlan::new(r)?)),
            SessionSpec::Receive(r) => SessionPlan::Receive(Arc::new(FeedPlan::new(r)?)),
            SessionSpec::Pairs(p) => SessionPlan::Pairs(Arc::new(p.clone())),
            SessionSpec::Broadcast(b) => SessionPlan::Broadcast(Arc::new(b.clone())),
            SessionSpec::Flow(f) => SessionPlan::Flow(Arc::new(FlowPlan::new(f)?)),
            SessionSpec::Browser(b) => SessionPlan::Browser(Arc::new(crate::browser::BrowserPlan::new(b)?)),
        })
    }

    /// Connections one slot of the load shape holds: a pair is two.
    pub fn connections_per_slot(&self) -> u64 {
        match self {
            SessionPlan::Pairs(_) => 2,
            _ => 1,
        }
    }
}

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

    /// We are closing the connection: what to send before the answers
    /// still on their way are waited for (an unsubscribe).
    fn farewell(&mut self, _ctx: &RunContext) -> Vec<Message> {
        Vec::new()
    }

    /// The connection ended: settle what never came back.
    fn ended(&mut self, ctx: &RunContext);
}
