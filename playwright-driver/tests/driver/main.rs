//! Driver tests against real headless Chromium, one binary (one link, one
//! harness). Each test launches its own browser and serves its pages from
//! in-process servers on 127.0.0.1:0. Without Chromium they print
//! "skipped: no chromium (...)" and pass, unless STAMPEDE_REQUIRE_CHROMIUM=1
//! (the `launch` tests use fake browsers and always run).

mod contexts;
mod crash;
mod launch;
mod page;
mod support;
mod websocket;
