//! Isolation: 20 contexts in one browser do not share storage.

use futures_util::future::try_join_all;
use playwright_driver::LaunchOptions;
use serde_json::json;

use crate::support::{self, mb};

const CONTEXTS: usize = 20;

#[tokio::test]
async fn twenty_isolated_contexts_do_not_see_each_others_local_storage() {
    let site = support::http(vec![("/", "<!doctype html><title>storage</title>".to_owned())]).await;
    let Some(browser) = support::launch(LaunchOptions::default()).await else { return };
    let url = site.url("/");
    let before = browser.memory().await.unwrap();

    let pages = try_join_all((0..CONTEXTS).map(|_| async {
        let context = browser.new_context().await?;
        let page = context.new_page().await?;
        page.goto(&url).await?;
        Ok::<_, playwright_driver::Error>((context, page))
    }))
    .await
    .unwrap();
    let ids: std::collections::HashSet<_> = pages.iter().map(|(c, _)| c.id().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), CONTEXTS, "distinct contexts");

    let (first_context, first) = &pages[0];
    first.evaluate("localStorage.setItem('who', 'context 0')").await.unwrap();
    // Positive control: another page of the same context sees it.
    let sibling = first_context.new_page().await.unwrap();
    sibling.goto(&url).await.unwrap();
    assert_eq!(sibling.evaluate("localStorage.getItem('who')").await.unwrap(), json!("context 0"));
    for (i, (_, page)) in pages.iter().enumerate().skip(1) {
        let seen = page.evaluate("localStorage.getItem('who')").await.unwrap();
        assert_eq!(seen, json!(null), "context {i} sees context 0's storage");
    }
    let shared = browser.new_page().await.unwrap();
    shared.goto(&url).await.unwrap();
    assert_eq!(shared.evaluate("localStorage.getItem('who')").await.unwrap(), json!(null), "default context");

    let after = browser.memory().await.unwrap();
    println!(
        "{CONTEXTS} isolated contexts: {} processes, PSS {:.0} MB -> {:.0} MB, {:.1} MB per context",
        after.processes,
        mb(before.pss_bytes),
        mb(after.pss_bytes),
        mb(after.pss_bytes.saturating_sub(before.pss_bytes)) / CONTEXTS as f64
    );
    for (context, _) in &pages {
        context.close().await.unwrap();
    }
    browser.close().await.unwrap();
}
