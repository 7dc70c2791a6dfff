//! One page through the whole API: navigate, evaluate, fill, click, wait,
//! screenshot, heap and the browser's PSS.

use std::time::{Duration, Instant};

use playwright_driver::{Error, LaunchOptions};
use serde_json::json;

use crate::support::{self, mb, png_size};

const PAGE: &str = r#"<!doctype html>
<html><head><title>driver test</title></head>
<body style="margin:0">
  <h1>stampede</h1>
  <input id="name" value="old">
  <button id="go" style="width:120px;height:40px">Go</button>
  <div id="cover" style="position:fixed;left:0;bottom:0;width:100%;height:60px;background:#ccc;z-index:10"></div>
  <button id="covered" style="position:fixed;left:10px;bottom:10px">under the cover</button>
  <script>
    window.inputs = 0;
    const field = document.getElementById('name');
    field.addEventListener('input', () => window.inputs++);
    document.getElementById('go').addEventListener('click', (e) => {
      window.trusted = e.isTrusted;
      const p = document.createElement('p');
      p.id = 'done';
      p.textContent = 'clicked:' + field.value;
      document.body.appendChild(p);
    });
  </script>
</body></html>"#;

#[tokio::test]
async fn a_page_navigates_clicks_fills_waits_evaluates_and_screenshots() {
    let site = support::http(vec![("/", PAGE.to_owned())]).await;
    let Some(browser) = support::launch(LaunchOptions::default()).await else { return };
    println!("chromium {} up in {:?}", browser.version().product, browser.launch_time());
    let page = browser.new_page().await.unwrap();

    let took = page.goto(&site.url("/")).await.unwrap();
    println!("navigation (Page.navigate until load): {took:?}");
    assert_eq!(page.evaluate("document.title").await.unwrap(), json!("driver test"));
    assert_eq!(page.evaluate("1 + 2").await.unwrap(), json!(3));
    assert_eq!(page.evaluate("Promise.resolve({a: [1, 'x']})").await.unwrap(), json!({"a": [1, "x"]}));
    assert_eq!(page.evaluate("undefined").await.unwrap(), json!(null));
    assert_eq!(page.evaluate("NaN").await.unwrap(), json!("NaN"));
    let thrown = page.evaluate("throw new Error('boom')").await.unwrap_err();
    assert!(matches!(&thrown, Error::Script(text) if text.contains("boom")), "{thrown}");

    page.fill("#name", "stampede").await.unwrap();
    assert_eq!(page.evaluate("field.value").await.unwrap(), json!("stampede"));
    assert_eq!(page.evaluate("window.inputs").await.unwrap(), json!(1), "one trusted input event");
    page.fill("#name", "").await.unwrap();
    assert_eq!(page.evaluate("field.value").await.unwrap(), json!(""));
    page.fill("#name", "load").await.unwrap();

    let clicked = Instant::now();
    page.click("#go").await.unwrap();
    let waited = page.wait_for_selector("#done", Duration::from_secs(5)).await.unwrap();
    println!("click until the DOM changed: {:?} (wait itself {waited:?})", clicked.elapsed());
    assert_eq!(
        page.evaluate("document.getElementById('done').textContent").await.unwrap(),
        json!("clicked:load")
    );
    assert_eq!(page.evaluate("window.trusted").await.unwrap(), json!(true), "a real mouse event");

    let missing = page.click("#nothing").await.unwrap_err();
    assert!(matches!(missing, Error::NoElement { .. }), "{missing}");
    let covered = page.click("#covered").await.unwrap_err();
    assert!(
        matches!(&covered, Error::NotInteractable { reason, .. } if reason.contains("<div")),
        "{covered}"
    );
    let not_input = page.fill("h1", "x").await.unwrap_err();
    assert!(matches!(not_input, Error::NotInteractable { .. }), "{not_input}");

    // An element that appears later is seen when it appears.
    page.evaluate("setTimeout(() => document.body.append(Object.assign(document.createElement('i'), {id: 'late'})), 300)")
        .await
        .unwrap();
    let late = page.wait_for_selector("#late", Duration::from_secs(5)).await.unwrap();
    assert!(late >= Duration::from_millis(250) && late < Duration::from_secs(3), "{late:?}");
    let started = Instant::now();
    let never = page.wait_for_selector("#never", Duration::from_millis(300)).await.unwrap_err();
    assert!(never.is_timeout(), "{never}");
    assert!(started.elapsed() >= Duration::from_millis(300) && started.elapsed() < Duration::from_secs(3));

    let png = page.screenshot().await.unwrap();
    let (width, height) = png_size(&png).expect("a PNG with an IHDR chunk");
    println!("screenshot: {width}x{height}, {} bytes", png.len());
    assert!(width >= 100 && height >= 100, "{width}x{height}");
    assert!(png.len() > 1000, "{} bytes", png.len());

    let heap = page.metrics().await.unwrap();
    assert!(heap.js_heap_used_bytes > 0 && heap.js_heap_used_bytes <= heap.js_heap_total_bytes, "{heap:?}");
    let memory = browser.memory().await.unwrap();
    println!(
        "browser with 1 page: {} processes, PSS {:.1} MB (summed RSS {:.1} MB), JS heap {:.2} MB",
        memory.processes,
        mb(memory.pss_bytes),
        mb(memory.rss_bytes),
        mb(heap.js_heap_used_bytes)
    );
    assert!(memory.processes >= 2 && memory.pss_bytes > 10_000_000, "{memory:?}");

    page.close().await.unwrap();
    let closed = page.evaluate("1").await.unwrap_err();
    assert!(!closed.is_timeout(), "a closed page fails fast: {closed}");
    let dir = browser.temp_dir().to_path_buf();
    assert!(dir.join("profile").exists());
    browser.close().await.unwrap();
    assert!(!dir.exists(), "the profile is removed on close");
}

#[tokio::test]
async fn navigation_errors_and_timeouts_are_reported_not_hung() {
    let Some(browser) = support::launch(LaunchOptions::default()).await else { return };
    let mut page = browser.new_page().await.unwrap();
    // A port that nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let refused = page.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap_err();
    assert!(matches!(&refused, Error::Navigation { reason, .. } if reason.contains("REFUSED")), "{refused}");

    // A script that never finishes: the command's own deadline ends it.
    page.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let hung = page.evaluate("new Promise(() => {})").await.unwrap_err();
    assert!(hung.is_timeout(), "{hung}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    page.set_timeout(Duration::from_secs(30));
    assert_eq!(page.evaluate("'still usable'").await.unwrap(), json!("still usable"));
}
