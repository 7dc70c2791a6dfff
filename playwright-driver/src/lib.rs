//! `playwright-driver`: our own small Chrome DevTools Protocol client, for
//! driving real headless Chromium sessions as load.
//!
//! ```no_run
//! # async fn demo() -> playwright_driver::Result<()> {
//! use playwright_driver::{Browser, LaunchOptions};
//! let browser = Browser::launch(LaunchOptions::default()).await?;
//! let context = browser.new_context().await?; // isolated, like incognito
//! let page = context.new_page().await?;
//! let took = page.goto("http://127.0.0.1:8080/").await?;
//! page.fill("#name", "stampede").await?;
//! page.click("#send").await?;
//! page.wait_for_selector("#reply", std::time::Duration::from_secs(5)).await?;
//! println!("loaded in {took:?}, heap {:?}", page.metrics().await?);
//! browser.close().await
//! # }
//! ```
//!
//! Modules: `launch` (finding and starting Chromium, killing its tree,
//! the temporary profile), `conn` (the one task that owns the pipe:
//! calls matched by id with deadlines, events routed by session), [`cdp`]
//! (typed commands), [`events`] (typed events and their bounded streams),
//! `browser`, `context`, `page` (the Playwright-like API), [`memory`]
//! (PSS of a process tree from /proc), `error`.
//!
//! Every command has a deadline and fails with [`Error::Timeout`] rather
//! than hang; a browser that exits, crashes or is killed makes every
//! pending and later command of every page fail at once with
//! [`Error::ConnectionClosed`]; a message Chromium sends that we do not
//! expect is logged (`tracing`) and ignored, never a panic.

#![deny(missing_docs)]

mod browser;
pub mod cdp;
mod conn;
mod context;
mod error;
pub mod events;
mod launch;
pub mod memory;
mod page;

pub use browser::Browser;
pub use context::Context;
pub use error::{Error, Result};
pub use events::{Event, EventStream, WebSocketEvent, WebSocketEvents, WebSocketFrame};
pub use launch::{DEFAULT_FLAGS, EXECUTABLE_NAMES, LaunchOptions, find_chromium};
pub use memory::TreeMemory;
pub use page::{Page, PageMetrics};
