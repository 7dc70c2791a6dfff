//! Third-party peers run beside stampede: a Node `ws` echo server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// A Node `ws` echo server on loopback, killed when dropped.
pub struct NodeEcho {
    child: Child,
    pub port: u16,
}

impl NodeEcho {
    pub fn start(node_dir: &Path) -> Result<NodeEcho> {
        if !node_dir.join("node_modules/ws").is_dir() {
            bail!(
                "{}: no node_modules/ws (bench/run installs it: npm ci --prefix bench/node)",
                node_dir.display()
            );
        }
        let mut child = Command::new("node")
            .arg(node_dir.join("echo.js"))
            .stdout(Stdio::piped())
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("node's stdout")?).read_line(&mut line)?;
        let port = line.trim().parse().with_context(|| format!("node echo server said {line:?}"))?;
        Ok(NodeEcho { child, port })
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

impl Drop for NodeEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
