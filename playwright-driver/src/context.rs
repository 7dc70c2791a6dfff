//! Browser contexts: the unit of isolation between sessions.
//!
//! An isolated context (`Target.createBrowserContext`) has its own
//! cookies, storage and cache, like an incognito window; Chromium gives it
//! its own renderer process, which is what makes it expensive (~50 MB per
//! context measured here, DEPENDENCIES.md). Pages of the default (shared)
//! context share storage and may share renderers (~11 MB per page). Which
//! one a load test wants is its choice; both are a [`Context`].

use std::sync::Arc;

use crate::cdp::DisposeBrowserContext;
use crate::conn::Connection;
use crate::error::Result;
use crate::page::Page;

/// A browser context. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Context {
    conn: Connection,
    /// `None` for the default context.
    id: Option<Arc<str>>,
}

impl Context {
    pub(crate) fn new(conn: Connection, id: Option<String>) -> Context {
        Context { conn, id: id.map(Into::into) }
    }

    /// The context id; `None` for the default context.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// True for contexts made by `Browser::new_context`.
    pub fn is_isolated(&self) -> bool {
        self.id.is_some()
    }

    /// Opens a new page (about:blank) in this context.
    pub async fn new_page(&self) -> Result<Page> {
        Page::open(self.conn.clone(), self.id.as_deref()).await
    }

    /// Closes an isolated context with all its pages and storage. The
    /// default context lives as long as the browser: closing it does
    /// nothing (close its pages instead).
    pub async fn close(&self) -> Result<()> {
        let Some(id) = &self.id else { return Ok(()) };
        let dispose = DisposeBrowserContext { browser_context_id: id.to_string() };
        self.conn.call(None, &dispose, self.conn.default_timeout()).await?;
        Ok(())
    }
}
