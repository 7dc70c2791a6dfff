//! A killed browser and a crashed page: errors arrive promptly, nothing hangs.

use std::time::{Duration, Instant};

use playwright_driver::cdp::{Command, Empty};
use playwright_driver::{Error, LaunchOptions};
use serde::Serialize;
use serde_json::json;

use crate::support;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn commands_to_a_killed_browser_fail_well_within_their_deadline() {
    let options = LaunchOptions { command_timeout: DEADLINE, ..LaunchOptions::default() };
    let Some(browser) = support::launch(options).await else { return };
    let context = browser.new_context().await.unwrap();
    let (a, b) = (context.new_page().await.unwrap(), browser.new_page().await.unwrap());
    assert_eq!(a.evaluate("6 * 7").await.unwrap(), json!(42));
    // In flight when the browser dies: a promise that never settles.
    let pending = tokio::spawn({
        let a = a.clone();
        async move { a.evaluate("new Promise(() => {})").await }
    });
    let mut events = b.events().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let killed = Instant::now();
    // SAFETY: kill(2) on the pid of the browser we started and still hold.
    assert_eq!(unsafe { libc::kill(browser.pid() as i32, libc::SIGKILL) }, 0);

    let err = pending.await.unwrap().unwrap_err();
    let noticed = killed.elapsed();
    println!("pending command failed {noticed:?} after SIGKILL (deadline {DEADLINE:?}): {err}");
    assert!(err.is_connection_closed(), "{err}");
    assert!(noticed < Duration::from_secs(2), "{noticed:?}");
    for page in [&a, &b] {
        let started = Instant::now();
        let later = page.evaluate("1").await.unwrap_err();
        assert!(later.is_connection_closed(), "{later}");
        assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    }
    assert!(context.new_page().await.unwrap_err().is_connection_closed());
    assert!(browser.new_context().await.unwrap_err().is_connection_closed());
    assert!(events.recv().await.is_none(), "event streams end too");
    assert!(!browser.is_connected());

    let dir = browser.temp_dir().to_path_buf();
    drop(browser);
    assert!(!dir.exists(), "the profile is removed when a dead browser is dropped");
}

/// `Page.crash`: crashes the page's renderer (experimental CDP).
#[derive(Serialize)]
struct CrashRenderer {}
impl Command for CrashRenderer {
    const METHOD: &'static str = "Page.crash";
    type Response = Empty;
}

#[tokio::test]
async fn a_crashed_page_fails_on_its_own_and_the_browser_carries_on() {
    let options = LaunchOptions { command_timeout: DEADLINE, ..LaunchOptions::default() };
    let Some(browser) = support::launch(options).await else { return };
    // Separate contexts: separate renderers, so one crash takes one page.
    let victim = browser.new_context().await.unwrap().new_page().await.unwrap();
    let bystander = browser.new_context().await.unwrap().new_page().await.unwrap();
    let started = Instant::now();
    let crashed = victim.execute(&CrashRenderer {}).await;
    println!("Page.crash answered after {:?}: {crashed:?}", started.elapsed());
    let next = victim.evaluate("1").await.unwrap_err();
    assert!(matches!(next, Error::TargetCrashed { .. }), "{next}");
    assert!(started.elapsed() < DEADLINE / 2, "{:?}", started.elapsed());
    assert_eq!(bystander.evaluate("'alive'").await.unwrap(), json!("alive"));
    assert!(browser.is_connected());
}
