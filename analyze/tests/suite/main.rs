//! analyze's integration tests, in one test binary: each linked binary
//! carries polars (~600 MB unoptimized), so one binary instead of six saves
//! gigabytes of disk and minutes of linking in every build.

mod common;

mod damaged;
mod detectors;
mod figures;
mod generated;
mod inputs;
mod plots;
mod report_page;
