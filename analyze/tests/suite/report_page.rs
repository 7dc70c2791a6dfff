//! report.html looked at as a person would: opened in headless Chromium
//! (our own CDP driver), its DOM read for the verdict, the tables and the
//! findings' links to their charts, and its screenshot's pixels checked
//! for the verdict's colour and the charts' variety.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Synth, analyze_bin};
use playwright_driver::{Browser, LaunchOptions};

/// Decodes a PNG into RGB pixels.
fn pixels(png: &[u8]) -> Vec<[u8; 3]> {
    let decoder = png::Decoder::new(png);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let step = info.color_type.samples();
    buf[..info.buffer_size()].chunks(step).map(|p| [p[0], p[1], p[2]]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_page_shows_the_verdict_tables_and_findings_linked_to_their_charts() {
    if let Err(e) = playwright_driver::find_chromium(None) {
        eprintln!("SKIPPED: no Chromium on this machine ({e})");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("dropped");
    Synth { drop: Some((200, 0.3)), ..Synth::clean(300) }.write(&run);
    // A failed run with two thresholds, one of which failed.
    let path = run.join("summary.json");
    let mut s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    s["verdict"] = "FAIL".into();
    s["thresholds"] = serde_json::json!([
        {"expression": "latency_p95_ms < 250", "metric": "latency_p95_ms", "op": "<", "limit": 250.0, "value": 12.5, "pass": true},
        {"expression": "error_rate < 0.001", "metric": "error_rate", "op": "<", "limit": 0.001, "value": 0.02, "pass": false}
    ]);
    std::fs::write(&path, serde_json::to_string_pretty(&s).unwrap()).unwrap();
    let out = root.path().join("out");
    let (code, _, stderr) =
        analyze_bin(&[run.to_str().unwrap(), "--format", "html", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let report = out.join("report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(!html.contains("<pre>"), "a page, not Markdown in a <pre>");
    assert!(!html.contains("http://") || !html.contains("<script src"), "self-contained");

    let browser = Browser::launch(LaunchOptions::default()).await.unwrap();
    let page = browser.new_page().await.unwrap();
    page.goto(&format!("file://{}", report.display())).await.unwrap();
    let dom = page
        .evaluate(
            r#"(() => {
                const q = (s) => Array.from(document.querySelectorAll(s));
                const links = q('#findings a');
                return {
                    verdict: document.querySelector('#verdict').textContent,
                    verdictClass: document.querySelector('#verdict').className,
                    thresholds: q('#thresholds tbody tr').length,
                    failed: q('#thresholds tr.fail').length,
                    phases: q('#phases tbody tr').map(r => r.cells[0].textContent),
                    findings: q('#findings li').map(li => li.className),
                    linksResolve: links.length > 0 && links.every(a => document.querySelector(a.getAttribute('href')) !== null),
                    charts: q('figure svg').length,
                    captions: q('figcaption').map(c => c.textContent.length),
                    widest: Math.max(...q('figure svg').map(s => s.getBoundingClientRect().width)),
                    viewport: window.innerWidth,
                };
            })()"#,
        )
        .await
        .unwrap();
    assert_eq!(dom["verdict"], "FAIL", "{dom}");
    assert_eq!(dom["verdictClass"], "verdict fail", "{dom}");
    assert_eq!((dom["thresholds"].as_u64(), dom["failed"].as_u64()), (Some(2), Some(1)), "{dom}");
    let phases: Vec<&str> = dom["phases"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(phases.contains(&"sustained"), "{dom}");
    let findings = dom["findings"].as_array().unwrap();
    assert!(findings.iter().any(|c| c.as_str().unwrap().contains("warning")), "the drop, coloured: {dom}");
    assert_eq!(dom["linksResolve"], true, "each finding links to a chart on the page: {dom}");
    assert_eq!(dom["charts"].as_u64(), Some(stampede_analyze::plots::CHARTS.len() as u64), "{dom}");
    assert!(
        dom["captions"].as_array().unwrap().iter().all(|n| n.as_u64().unwrap() > 40),
        "captions say what to look for"
    );
    assert!(
        dom["widest"].as_f64().unwrap() <= dom["viewport"].as_f64().unwrap(),
        "charts fit the window: {dom}"
    );

    // The pixels: the red FAIL badge, the pink failed-threshold row, and
    // charts in many colours.
    let png = page.screenshot().await.unwrap();
    let px = pixels(&png);
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 12);
    let red = px.iter().filter(|p| near(p, [0xcf, 0x22, 0x2e])).count();
    assert!(red > 200, "the FAIL badge is red: {red} red pixels");
    let colours: HashSet<[u8; 3]> = px.iter().map(|p| [p[0] & 0xf0, p[1] & 0xf0, p[2] & 0xf0]).collect();
    assert!(colours.len() >= 12, "{} colours on screen", colours.len());
    tokio::time::timeout(Duration::from_secs(10), browser.close()).await.ok();
}

#[test]
fn several_runs_get_a_comparison_page_with_the_overlaid_chart() {
    let root = tempfile::tempdir().unwrap();
    let (base, slow) = (root.path().join("a-base"), root.path().join("b-slow"));
    Synth::clean(300).write(&base);
    Synth { latency_plateau: Some((100, 150, 6.0)), ..Synth::clean(300) }.write(&slow);
    let out = root.path().join("out");
    let (code, stdout, stderr) = analyze_bin(&[
        base.to_str().unwrap(),
        slow.to_str().unwrap(),
        "--format",
        "html",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let page = out.join("comparison.html");
    assert!(stdout.contains(page.to_str().unwrap()), "its path is printed: {stdout}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Comparison against a-base"), "{html}");
    assert!(html.contains(r#"class="verdict fail" id="verdict">REGRESSION"#), "{html}");
    let regressed = html.matches("<tr class=\"fail\">").count();
    assert!(regressed >= 1, "the regressed metrics' rows are marked");
    assert!(html.contains("<td>latency_p95_ms"), "{html}");
    assert!(html.contains("<figure id=\"chart-compare_latency\"><svg"), "the overlaid chart is inline");
    assert!(!html.contains("<img") && !html.contains("src=\"http"), "self-contained");
}
