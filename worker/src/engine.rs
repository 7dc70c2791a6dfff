//! The engine boundary: what generates a run's load on this worker. The link
//! to the controller starts an engine for each assignment, forwards phases
//! and Stop to it, and relays its per-second snapshots; it does not know how
//! the load is made: Rust WebSocket clients or headless browser sessions,
//! by the session the assignment carries; both run as [`SlotEngine`]
//! slots.

use std::net::IpAddr;
use std::time::Duration;

use stampede_proto::fleet::{Assign, PhaseStart, Snapshot};
use tokio::sync::mpsc;

use crate::slots::SlotEngine;
use crate::target::TargetError;

/// Why a run's assignment cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad target URL.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Bad source address.
    #[error("source address {0:?} is not an IP address")]
    Source(String),
    /// The connection spec cannot be used (bad JSON, a missing
    /// environment variable, an unreadable key).
    #[error("{0}")]
    Spec(String),
}

/// A running engine.
pub enum Engine {
    /// Slots of WebSocket clients or browser sessions.
    Slots(SlotEngine),
}

impl Engine {
    /// Starts the engine `assign` asks for; snapshots go to `snapshots`,
    /// which is closed after the last one.
    pub async fn start(
        assign: &Assign,
        worker_id: &str,
        sources: &[IpAddr],
        snapshots: mpsc::Sender<Snapshot>,
    ) -> Result<Engine, EngineError> {
        Ok(Engine::Slots(SlotEngine::start(assign, worker_id, sources, snapshots).await?))
    }

    /// Starts a phase now.
    pub async fn phase(&self, phase: PhaseStart) {
        match self {
            Engine::Slots(e) => e.phase(phase).await,
        }
    }

    /// Takes a fresh measurement of the controller's clock (controller
    /// minus ours, us).
    pub fn set_clock_offset(&self, offset_us: i64) {
        match self {
            Engine::Slots(e) => e.set_clock_offset(offset_us),
        }
    }

    /// Ends the load gracefully; the last snapshot follows.
    pub fn stop(&self) {
        match self {
            Engine::Slots(e) => e.stop(),
        }
    }

    /// Stops, and waits up to `grace` for the load to end; false if it
    /// had not.
    pub async fn stop_and_wait(&self, grace: Duration) -> bool {
        match self {
            Engine::Slots(e) => e.stop_and_wait(grace).await,
        }
    }
}
