//! `stampede-relay`: the bundled target server for load tests.
//!
//! A small but real tokio WebSocket echo server with `/health` and a
//! Prometheus `/metrics` endpoint on the same port, and channels
//! (publish/subscribe with history, `/pubsub` and `POST /publish/<channel>`)
//! for the protocol modes that are not echo. It is the default target
//! of `stampede`, and tests and the controller run it in-process, so the
//! library exposes start/stop rather than a `main`.
//!
//! Modules: [`config`] (what to run), `server` (binding, accept loop,
//! lifetime), `conn` (request head, plain HTTP, handshake), `http` (pure
//! parsing and routing), `echo` (the WebSocket session), `pubsub` (the
//! channel session), `ops` (its wire format), `hub` (channels, history,
//! delivery), `outbox` (a subscriber's bounded queue), `faults`
//! (anomalies injected on purpose), [`stats`] (counters and metrics text),
//! [`processes`] (several relay processes sharing a port), [`tls`]
//! (`wss://`: server configuration and the TLS byte stream), [`pki`]
//! (certificates made on the fly).

pub mod config;
mod conn;
mod echo;
mod error;
mod faults;
mod http;
mod hub;
pub mod jwt;
mod ops;
mod outbox;
pub mod pki;
pub mod processes;
mod pubsub;
mod server;
pub mod stats;
pub mod tls;

pub use config::RelayConfig;
pub use error::RelayError;
pub use processes::RelayProcesses;
pub use server::Relay;
pub use stats::{PubsubSnapshot, Stats, StatsSnapshot};
