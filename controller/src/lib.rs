//! The stampede controller: reads a scenario, runs it across a fleet of
//! workers joined over gRPC, merges their measurements and writes a results
//! folder with a PASS/FAIL verdict.
//!
//! The `controller` executable (crate `stampede`) parses flags and calls
//! [`cli::run_command`]; tests call [`run::run`].

pub mod aggregate;
pub mod bundled;
pub mod cli;
pub mod connect;
pub mod deploy;
pub mod fleet;
pub mod fleet_plan;
pub mod flow;
pub mod groups;
pub mod junit;
pub mod local_fleet;
pub mod machine;
pub mod members;
pub mod messages;
pub mod overrides;
pub mod plan;
pub mod progress;
pub mod results;
pub mod run;
pub mod running;
pub mod scenario;
pub mod stages;
pub mod status;
pub mod stress;
pub mod summary;
pub mod target_metrics;
pub mod threshold;
pub mod tls;
pub mod totals;
pub mod tui;

/// Exit code of a run whose verdict is PASS.
pub const EXIT_PASS: i32 = 0;
/// Exit code of a run that went wrong before it could start.
pub const EXIT_ERROR: i32 = 1;
/// Exit code of a bad scenario or bad flags.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code of a run whose verdict is FAIL (as k6 does for thresholds).
pub const EXIT_FAIL: i32 = 99;
/// Exit code of a run ended by Ctrl-C (results are still written).
pub const EXIT_INTERRUPTED: i32 = stampede_child::EXIT_INTERRUPTED;
/// Exit code of a run ended by SIGTERM (results are still written).
pub const EXIT_TERMINATED: i32 = stampede_child::EXIT_TERMINATED;
