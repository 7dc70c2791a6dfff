//! Post-mortem analysis of stampede result folders.
pub mod causes;
pub mod cli;
pub mod compare;
pub mod detect;
pub mod growth;
pub mod hlog;
pub mod load;
pub mod metrics;
pub mod model;
pub mod plots;
pub mod report;
pub mod stats;
pub mod trend;
pub mod workers;
