//! The JSON-RPC 2.0 server of `jsonrpc.py` (third-party: Python's
//! `websockets` package), started for a test and stopped with it.
//! Included by path from the worker's and the executable's tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../worker/tests/servers/jsonrpc.py");

/// A running `jsonrpc.py`; killed when dropped.
pub struct JsonRpcServer {
    child: Child,
    /// Its `ws://` URL.
    pub url: String,
}

impl JsonRpcServer {
    /// Starts it; fails the test, saying what to install, when python3 or
    /// the websockets package is missing (scripts/test installs it).
    pub fn start() -> JsonRpcServer {
        JsonRpcServer::start_with(&[])
    }

    /// Starts it with `jsonrpc.py`'s options (`--cert F --key F` for
    /// wss://, `--subprotocol NAME`, `--require-header N=V`).
    pub fn start_with(options: &[&str]) -> JsonRpcServer {
        let scheme = if options.contains(&"--cert") { "wss" } else { "ws" };
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Not piped: a pipe nobody reads would stall the server once
            // full; its errors show in the test's output instead.
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start python3 ({e}): this test needs python3 with the websockets package")
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "jsonrpc.py did not start (its error is above): this test needs python3 with the websockets \
                 package: python3 -m pip install --user websockets (scripts/test does)"
            );
        };
        JsonRpcServer { child, url: format!("{scheme}://127.0.0.1:{port}/") }
    }
}

impl Drop for JsonRpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
