//! Session pairs.
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::connection::RunContext;

/// Runs pair slot `slot` until `cancel` fires.
pub async fn run_pair(ctx: Arc<RunContext>, slot: u64, cancel: CancellationToken) {
    let _ = (ctx, slot);
    cancel.cancelled().await;
}
