//! The run's vocabulary, defined once: the counters every part measures,
//! sums and writes; why connections fail; phases and the load shape both the
//! controller's plan and the worker's ramp follow; the run clock; the target
//! URL; and the results-folder schema that the controller writes and
//! `analyze` reads.
//!
//! Plain data only (serde + hdrhistogram): no async runtime, no wire format,
//! no dataframes, so every crate can stand on it.
#![deny(missing_docs)]

pub mod cause;
pub mod clock;
pub mod counters;
pub mod figures;
pub mod flow;
pub mod histogram;
pub mod jsonpath;
pub mod limits;
pub mod results;
pub mod shape;
pub mod spec;
pub mod target;
pub mod template;
pub mod time;

pub use cause::Cause;
pub use counters::{AtomicCounters, Counters};
pub use shape::{Arrivals, Churn, Phase, Ramp, Shape, StageKind, Wave};
pub use spec::ConnectSpec;
pub use target::TargetUrl;
pub use template::Template;
