//! Where connections run: single-threaded tokio runtimes (one per core, or
//! as many as the worker's `--threads` says), each on its own thread with its own I/O driver and precise clock, shared by
//! every run of the process. A connection is spread onto one by its slot
//! number and stays there: its timer, socket and session are woken on one
//! thread, no task is stolen across cores and no wake crosses threads.
//!
//! Measured against one multi-threaded runtime (100 connections to a Node
//! `ws` echo server at 20,000 msg/s, 2 cores): a core and a thread per
//! runtime cut the generator's CPU from 61.5 % to 47.6 % of a core and its
//! p99 from 1.35 ms to 0.71 ms.

use std::sync::OnceLock;

use tokio::runtime::Handle;

/// The process's connection runtimes.
pub struct Shards {
    handles: Vec<Handle>,
}

static SHARDS: OnceLock<Shards> = OnceLock::new();

impl Shards {
    /// The shards, started on first use: as many as [`Shards::configure`]
    /// asked for, or one per core.
    pub fn get() -> &'static Shards {
        SHARDS.get_or_init(|| Shards::start(std::thread::available_parallelism().map_or(1, |n| n.get())))
    }

    /// Starts `threads` shards, if none have started yet; whether they did.
    ///
    /// Fewer shards than cores leave cores to whatever shares the machine.
    /// A worker sharing 2 cores with the server it loads (100 connections
    /// to a Node `ws` echo server at 100,000 msg/s) measured, with one
    /// shard instead of two: CPU 9.2 % instead of 10.5 % of a core per
    /// 10,000 msg/s, p50 0.5-0.7 ms instead of 9-23 ms, p99 9-21 ms
    /// instead of 170-266 ms: two shards and the server took turns on two
    /// cores, and every echo waited for its turn.
    pub fn configure(threads: usize) -> bool {
        let mut started = false;
        SHARDS.get_or_init(|| {
            started = true;
            Shards::start(threads.max(1))
        });
        started
    }

    fn start(threads: usize) -> Shards {
        Shards { handles: (0..threads).filter_map(start).collect() }
    }

    /// How many connection threads run.
    pub fn threads(&self) -> usize {
        self.handles.len()
    }

    /// The runtime for slot `slot`; `None` if no shard could start (the
    /// caller's runtime then runs the slot).
    pub fn for_slot(&self, slot: u64) -> Option<&Handle> {
        (!self.handles.is_empty()).then(|| &self.handles[slot as usize % self.handles.len()])
    }

    /// Every shard's runtime.
    pub fn all(&self) -> &[Handle] {
        &self.handles
    }
}

/// Starts shard `n`'s thread; its runtime runs until the process exits.
fn start(n: usize) -> Option<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("connections-{n}"))
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .ok()?;
    Some(handle)
}
