//! The contracts between stampede's parts: the controller <-> worker gRPC
//! protocol (`fleet`) and the results-folder schema (`results`) that the
//! controller writes and the post-mortem tools read.
#![deny(missing_docs)]

/// Generated from `proto/fleet.proto`.
#[allow(missing_docs, clippy::all)]
pub mod fleet {
    tonic::include_proto!("stampede.fleet.v1");
}

pub mod histogram;
pub mod results;
pub mod time;

/// Version of the fleet protocol a worker announces in its Hello; the
/// controller refuses workers that speak another one.
pub const PROTOCOL_VERSION: u32 = 1;
