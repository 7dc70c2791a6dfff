//! Scripted sessions: runs a [`FlowSpec`]'s steps on one slot.

use std::sync::Arc;

use stampede_model::flow::FlowSpec;
use tokio_util::sync::CancellationToken;

use crate::connection::RunContext;

/// A flow prepared once per run (regular expressions compiled, paths
/// parsed), shared by every slot.
#[derive(Debug)]
pub struct FlowPlan {
    /// The flow as the controller sent it.
    pub spec: FlowSpec,
}

impl FlowPlan {
    /// Prepares `spec`; the error names what cannot be used.
    pub fn new(spec: &FlowSpec) -> Result<FlowPlan, String> {
        Ok(FlowPlan { spec: spec.clone() })
    }
}

/// Runs slot `slot`'s sessions until `cancel` fires.
pub async fn run_flow(ctx: Arc<RunContext>, slot: u64, cancel: CancellationToken) {
    let _ = (ctx, slot);
    cancel.cancelled().await;
}
