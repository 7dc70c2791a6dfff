//! `[[flow]]`: scripted sessions, read into a [`FlowSpec`].

use std::path::Path;

use serde::{Deserialize, Serialize};
use stampede_model::flow::FlowSpec;

use crate::scenario::{Scenario, ScenarioError};

/// One `[[flow]]` table as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct StepTable {}

/// The flow of `sc`, if it has one.
pub fn flow_spec(sc: &Scenario, path: &Path, source: &str) -> Result<Option<FlowSpec>, ScenarioError> {
    let _ = (sc, path, source);
    Ok(None)
}
