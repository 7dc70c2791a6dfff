//! The browser: a launched Chromium, its connection task, and the way to
//! its contexts and pages.

use std::path::Path;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cdp::{CloseBrowser, Command, CreateBrowserContext, GetVersion, Version};
use crate::conn::{ConnOptions, Connection};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::events::EventStream;
use crate::launch::{self, LaunchOptions, Process};
use crate::memory::{self, TreeMemory};
use crate::page::Page;

/// How long `close` waits for Chromium to exit on its own after
/// `Browser.close` before killing it.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A running headless Chromium. Dropping it kills the browser's whole
/// process tree and removes its temporary profile; pages and contexts
/// still held then fail with [`Error::ConnectionClosed`].
pub struct Browser {
    conn: Connection,
    task: AbortOnDrop,
    version: Version,
    launch_time: Duration,
    // Last: dropped after the task, so the pipe ends before the kill.
    process: Process,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("pid", &self.pid()).field("product", &self.version.product).finish()
    }
}

/// The connection task ends with the browser's pipe anyway; aborting it
/// on drop just makes the end immediate.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Browser {
    /// Finds Chromium (see [`crate::find_chromium`]), starts it and waits
    /// for it to answer `Browser.getVersion`. Call it from an async task
    /// (not `spawn_blocking`): Chromium is killed when the thread that
    /// started it exits.
    pub async fn launch(options: LaunchOptions) -> Result<Browser> {
        let started = Instant::now();
        let exe = launch::find_chromium(options.executable.as_deref())?;
        let launch::Spawned { process, reader, writer } = launch::spawn(&exe, &options.args)?;
        let conn_options = ConnOptions {
            default_timeout: options.command_timeout,
            event_capacity: options.event_capacity.max(1),
        };
        let (conn, task) = Connection::spawn(reader, writer, conn_options);
        let task = AbortOnDrop(task);
        match conn.call(None, &GetVersion {}, options.launch_timeout).await {
            Ok(version) => {
                let launch_time = started.elapsed();
                tracing::debug!(pid = process.pid(), product = %version.product, ?launch_time, "chromium up");
                Ok(Browser { conn, task, version, launch_time, process })
            }
            // `process` is dropped on the way out: killed, directory removed.
            Err(reason) => {
                Err(Error::Launch { path: exe, reason: Box::new(reason), stderr: process.stderr_tail() })
            }
        }
    }

    /// The browser process's id (the root of its process tree).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What `Browser.getVersion` said.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// From finding the executable to the first answer.
    pub fn launch_time(&self) -> Duration {
        self.launch_time
    }

    /// The temporary directory holding the profile; removed when the
    /// browser is closed or dropped.
    pub fn temp_dir(&self) -> &Path {
        self.process.dir()
    }

    /// False once the connection has ended (browser exited, crashed, killed).
    pub fn is_connected(&self) -> bool {
        !self.conn.is_closed()
    }

    /// The default context: pages in it share storage and renderers.
    pub fn default_context(&self) -> Context {
        Context::new(self.conn.clone(), None)
    }

    /// A new isolated context (`Target.createBrowserContext`).
    pub async fn new_context(&self) -> Result<Context> {
        let created = self.execute(&CreateBrowserContext::default()).await?;
        Ok(Context::new(self.conn.clone(), Some(created.browser_context_id)))
    }

    /// A new page in the default context.
    pub async fn new_page(&self) -> Result<Page> {
        self.default_context().new_page().await
    }

    /// Sends a typed browser-level command.
    pub async fn execute<C: Command>(&self, command: &C) -> Result<C::Response> {
        self.conn.call(None, command, self.conn.default_timeout()).await
    }

    /// Browser-level events from now on (targets attached, detached, crashed).
    pub async fn events(&self) -> Result<EventStream> {
        self.conn.subscribe(None).await
    }

    /// PSS (and RSS) of the browser's whole process tree.
    pub async fn memory(&self) -> Result<TreeMemory> {
        let pid = self.pid();
        // /proc reads of a hundred processes: off the runtime threads.
        let tree = tokio::task::spawn_blocking(move || memory::tree_memory(pid))
            .await
            .map_err(std::io::Error::other)??;
        Ok(tree)
    }

    /// Closes the browser gracefully (`Browser.close`), waits for it to
    /// exit (killing it after a grace period) and removes its profile.
    pub async fn close(self) -> Result<()> {
        let Browser { conn, task, process, .. } = self;
        if let Err(e) = conn.call(None, &CloseBrowser {}, CLOSE_GRACE).await
            && !e.is_connection_closed()
        {
            tracing::debug!(error = %e, "Browser.close failed; killing chromium");
        }
        process.close(CLOSE_GRACE).await?;
        drop(task);
        Ok(())
    }
}
