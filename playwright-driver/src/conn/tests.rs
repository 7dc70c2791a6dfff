//! The connection task against a scripted fake browser on a pair of pipes:
//! the rules that do not need Chromium (ids, deadlines, closing, routing,
//! surprising messages).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::*;
use crate::cdp::{Evaluate, GetVersion};
use crate::events::WebSocketEvent;

/// The browser's side of the pipes.
struct FakeBrowser {
    reader: pipe::Receiver,
    writer: pipe::Sender,
    buffer: Vec<u8>,
}

impl FakeBrowser {
    /// The next command the driver wrote.
    async fn command(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == 0) {
                let message: Vec<u8> = self.buffer.drain(..=end).collect();
                return serde_json::from_slice(&message[..end]).unwrap();
            }
            let mut chunk = [0u8; 4096];
            let n = self.reader.read(&mut chunk).await.unwrap();
            assert!(n > 0, "driver closed its end");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, message: &str) {
        self.writer.write_all(message.as_bytes()).await.unwrap();
        self.writer.write_all(b"\0").await.unwrap();
    }
}

fn connect(timeout: Duration, event_capacity: usize) -> (Connection, JoinHandle<()>, FakeBrowser) {
    let (to_browser_r, to_browser_w) = std::io::pipe().unwrap();
    let (from_browser_r, from_browser_w) = std::io::pipe().unwrap();
    let (conn, task) = Connection::spawn(
        pipe::Receiver::from_owned_fd(from_browser_r.into()).unwrap(),
        pipe::Sender::from_owned_fd(to_browser_w.into()).unwrap(),
        ConnOptions { default_timeout: timeout, event_capacity },
    );
    let fake = FakeBrowser {
        reader: pipe::Receiver::from_owned_fd(to_browser_r.into()).unwrap(),
        writer: pipe::Sender::from_owned_fd(from_browser_w.into()).unwrap(),
        buffer: Vec::new(),
    };
    (conn, task, fake)
}

fn evaluate(expression: &str) -> Evaluate {
    Evaluate { expression: expression.into(), return_by_value: true, await_promise: false }
}

#[tokio::test]
async fn responses_are_matched_by_id_even_out_of_order() {
    let (conn, _task, mut fake) = connect(Duration::from_secs(5), 16);
    let session: SessionId = "S1".into();
    let (a, b) = (conn.clone(), conn.clone());
    let first = tokio::spawn(async move { a.call(None, &GetVersion {}, Duration::from_secs(5)).await });
    let c1 = fake.command().await;
    let s = session.clone();
    let second =
        tokio::spawn(async move { b.call(Some(&s), &evaluate("1+1"), Duration::from_secs(5)).await });
    let c2 = fake.command().await;
    assert_eq!(c1["method"], "Browser.getVersion");
    assert!(c1.get("sessionId").is_none());
    assert_eq!((c2["method"].as_str(), c2["sessionId"].as_str()), (Some("Runtime.evaluate"), Some("S1")));
    assert_eq!(c2["params"]["expression"], "1+1");

    fake.send(&format!(r#"{{"id":{},"result":{{"result":{{"type":"number","value":2}}}}}}"#, c2["id"])).await;
    fake.send(&format!(
        r#"{{"id":{},"result":{{"protocolVersion":"1.3","product":"Fake/1","userAgent":"x","jsVersion":"1"}}}}"#,
        c1["id"]
    ))
    .await;
    assert_eq!(second.await.unwrap().unwrap().result.value, Some(json!(2)));
    assert_eq!(first.await.unwrap().unwrap().product, "Fake/1");
}

#[tokio::test]
async fn an_unanswered_call_fails_at_its_deadline_and_its_late_answer_is_ignored() {
    let (conn, _task, mut fake) = connect(Duration::from_secs(5), 16);
    let started = Instant::now();
    let err = conn.call(None, &GetVersion {}, Duration::from_millis(200)).await.unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_millis(900), "{waited:?}");

    // The late answer is dropped; the next call still works.
    let late = fake.command().await;
    fake.send(&format!(r#"{{"id":{},"result":{{}}}}"#, late["id"])).await;
    let next = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call(None, &evaluate("3"), Duration::from_secs(5)).await }
    });
    let cmd = fake.command().await;
    fake.send(&format!(r#"{{"id":{},"result":{{"result":{{"type":"number","value":3}}}}}}"#, cmd["id"]))
        .await;
    assert_eq!(next.await.unwrap().unwrap().result.value, Some(json!(3)));
}

#[tokio::test]
async fn when_the_browser_goes_away_pending_and_later_calls_fail_promptly() {
    let (conn, task, mut fake) = connect(Duration::from_secs(30), 16);
    let mut events = conn.subscribe(Some("S1".into())).await.unwrap();
    let pending = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call(None, &GetVersion {}, Duration::from_secs(30)).await }
    });
    fake.command().await;
    let started = Instant::now();
    drop(fake); // both pipe ends: like a SIGKILLed browser

    let err = pending.await.unwrap().unwrap_err();
    assert!(err.is_connection_closed(), "{err}");
    assert!(err.to_string().contains("end of pipe"), "{err}");
    let later = conn.call(None, &GetVersion {}, Duration::from_secs(30)).await.unwrap_err();
    assert!(later.is_connection_closed(), "{later}");
    assert!(events.recv().await.is_none(), "subscriptions end with the connection");
    assert!(started.elapsed() < Duration::from_secs(1));
    task.await.unwrap();
}

#[tokio::test]
async fn surprising_messages_are_ignored_without_a_panic() {
    let (conn, task, mut fake) = connect(Duration::from_secs(5), 16);
    let call = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call(None, &evaluate("4"), Duration::from_secs(5)).await }
    });
    let cmd = fake.command().await;
    for junk in [
        "not json",
        "[1,2,3]",
        r#"{"neither":"id nor method"}"#,
        r#"{"id":999999,"result":{}}"#,
        r#"{"method":"Network.webSocketFrameSent","sessionId":"nobody","params":{"bad":1}}"#,
        r#"{"method":"Target.detachedFromTarget","params":{"sessionId":"never-attached"}}"#,
        r#"{"method":"Target.targetCrashed","params":{"targetId":"unknown","status":"x","errorCode":1}}"#,
        "",
    ] {
        fake.send(junk).await;
    }
    fake.send(&format!(r#"{{"id":{},"error":{{"code":-32000,"message":"nope"}}}}"#, cmd["id"])).await;
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(&err, Error::Protocol { code: -32000, .. }), "{err}");
    assert!(!task.is_finished());
}

#[tokio::test]
async fn events_go_to_their_session_and_a_full_channel_drops_the_oldest() {
    let (conn, _task, mut fake) = connect(Duration::from_secs(5), 4);
    let mut mine = conn.subscribe(Some("S1".into())).await.unwrap();
    let mut other = conn.subscribe(Some("S2".into())).await.unwrap();
    for i in 0..10 {
        let frame = format!(
            r#"{{"method":"Network.webSocketFrameReceived","sessionId":"S1","params":{{"requestId":"r","timestamp":{i},"response":{{"opcode":1,"mask":false,"payloadData":"m{i}"}}}}}}"#
        );
        fake.send(&frame).await;
    }
    // A marker through the other session proves all ten were routed.
    fake.send(r#"{"method":"Page.loadEventFired","sessionId":"S2","params":{"timestamp":1}}"#).await;
    assert!(matches!(&*other.recv().await.unwrap(), Event::LoadEventFired { .. }));

    let mut payloads = Vec::new();
    while let Some(event) = mine.try_recv() {
        if let Event::WebSocket(WebSocketEvent::FrameReceived(f)) = &*event {
            payloads.push(f.payload.clone());
        }
    }
    assert_eq!(payloads, ["m6", "m7", "m8", "m9"], "the newest four are kept");
    assert_eq!(mine.dropped(), 6);
    assert!(other.try_recv().is_none(), "nothing of S1 reached S2");
}

#[tokio::test]
async fn a_crashed_page_fails_its_calls_at_once_and_others_keep_working() {
    let (conn, _task, mut fake) = connect(Duration::from_secs(30), 16);
    let (s1, s2): (SessionId, SessionId) = ("S1".into(), "S2".into());
    fake.send(r#"{"method":"Target.attachedToTarget","params":{"sessionId":"S1","targetInfo":{"targetId":"T1","type":"page"},"waitingForDebugger":false}}"#).await;
    let pending = tokio::spawn({
        let (conn, s1) = (conn.clone(), s1.clone());
        async move { conn.call(Some(&s1), &evaluate("while(1){}"), Duration::from_secs(30)).await }
    });
    fake.command().await;
    fake.send(r#"{"method":"Inspector.targetCrashed","sessionId":"S1","params":{}}"#).await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(&err, Error::TargetCrashed { target_id } if target_id == "T1"), "{err}");
    let again = conn.call(Some(&s1), &evaluate("1"), Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(again, Error::TargetCrashed { .. }));

    let fine = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call(Some(&s2), &evaluate("5"), Duration::from_secs(5)).await }
    });
    let cmd = fake.command().await;
    fake.send(&format!(r#"{{"id":{},"result":{{"result":{{"type":"number","value":5}}}}}}"#, cmd["id"]))
        .await;
    assert_eq!(fine.await.unwrap().unwrap().result.value, Some(json!(5)));
}

#[tokio::test]
async fn a_message_that_never_ends_closes_the_connection_at_its_bound() {
    let (conn, task, mut fake) = connect(Duration::from_secs(60), 16);
    let pending = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call(None, &GetVersion {}, Duration::from_secs(60)).await }
    });
    fake.command().await;
    // A reply that starts and never ends: MAX_MESSAGE bytes and a little
    // more, without the NUL that ends a message.
    let chunk = vec![b'x'; 1 << 20];
    fake.writer.write_all(br#"{"id":1,"result":{"product":""#).await.unwrap();
    for _ in 0..=(MAX_MESSAGE >> 20) {
        if fake.writer.write_all(&chunk).await.is_err() {
            break; // the driver stopped reading: what we want
        }
    }
    let err = pending.await.unwrap().unwrap_err();
    assert!(err.is_connection_closed(), "{err}");
    assert!(err.to_string().contains("without its terminator"), "{err}");
    task.await.unwrap();
    let later = conn.call(None, &GetVersion {}, Duration::from_secs(1)).await.unwrap_err();
    assert!(later.is_connection_closed(), "{later}");
}
