//! Typed CDP events and the streams pages read them from.
//!
//! The connection task parses each event once ([`Event::parse`]) and hands
//! the same `Arc` to every subscriber of the session it belongs to. A
//! session's channel is a bounded `tokio::sync::broadcast`: when a
//! subscriber falls behind, the oldest events are overwritten and the
//! subscriber is told how many it missed (counted in
//! [`EventStream::dropped`]); the connection task never waits for a slow
//! reader.

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::broadcast;

/// An event from Chromium. Events the driver has no type for arrive as
/// [`Event::Other`] with their method only (their parameters are dropped,
/// which keeps unknown traffic cheap).
#[derive(Debug, Clone)]
pub enum Event {
    /// `Network.webSocket*`: the page's own WebSocket traffic.
    WebSocket(WebSocketEvent),
    /// `Page.loadEventFired`.
    LoadEventFired {
        /// Monotonic seconds.
        timestamp: f64,
    },
    /// `Page.lifecycleEvent` (init, DOMContentLoaded, load, networkIdle, ...).
    Lifecycle(LifecycleEvent),
    /// `Target.attachedToTarget` (browser level).
    AttachedToTarget {
        /// The new flat session.
        session_id: String,
        /// Its target.
        target_id: String,
    },
    /// `Target.detachedFromTarget` (browser level): the session is over.
    DetachedFromTarget {
        /// The session that ended.
        session_id: String,
    },
    /// `Target.targetCrashed` (browser level, with target discovery on).
    TargetCrashed {
        /// The crashed target.
        target_id: String,
    },
    /// `Inspector.targetCrashed` on a page's session: its renderer died.
    InspectorTargetCrashed,
    /// `Inspector.detached` on a page's session.
    InspectorDetached {
        /// e.g. "target_closed", "Render process gone.".
        reason: String,
    },
    /// Any other event, by method.
    Other {
        /// The CDP method, e.g. "Network.requestWillBeSent".
        method: String,
    },
}

/// The Network domain's WebSocket events for one page.
#[derive(Debug, Clone)]
pub enum WebSocketEvent {
    /// `Network.webSocketCreated`: the page called `new WebSocket(url)`.
    Created {
        /// Identifies the WebSocket in the other events.
        request_id: String,
        /// Its URL.
        url: String,
    },
    /// `Network.webSocketHandshakeResponseReceived`: the upgrade answer.
    HandshakeResponse {
        /// The WebSocket.
        request_id: String,
        /// HTTP status (101 on success).
        status: u16,
        /// Monotonic seconds.
        timestamp: f64,
    },
    /// `Network.webSocketFrameSent`.
    FrameSent(WebSocketFrame),
    /// `Network.webSocketFrameReceived`.
    FrameReceived(WebSocketFrame),
    /// `Network.webSocketFrameError`.
    FrameError {
        /// The WebSocket.
        request_id: String,
        /// Chromium's message.
        message: String,
    },
    /// `Network.webSocketClosed`.
    Closed {
        /// The WebSocket.
        request_id: String,
        /// Monotonic seconds.
        timestamp: f64,
    },
}

/// One frame the page sent or received.
#[derive(Debug, Clone)]
pub struct WebSocketFrame {
    /// The WebSocket.
    pub request_id: String,
    /// Monotonic seconds (Chromium's clock, comparable between frames).
    pub timestamp: f64,
    /// 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// Text as is; binary frames base64-encoded (as Chromium sends them).
    pub payload: String,
}

/// A `Page.lifecycleEvent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    /// The frame.
    pub frame_id: String,
    /// The document's loader (matches `Page.navigate`'s answer).
    pub loader_id: String,
    /// e.g. "load".
    pub name: String,
}

// Wire shapes, private: the public types above are flatter.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCreated {
    request_id: String,
    url: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireHandshake {
    request_id: String,
    timestamp: f64,
    response: WireHandshakeResponse,
}
#[derive(Deserialize)]
struct WireHandshakeResponse {
    status: f64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFrame {
    request_id: String,
    timestamp: f64,
    response: WireFrameData,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFrameData {
    opcode: f64,
    payload_data: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFrameError {
    request_id: String,
    error_message: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireClosed {
    request_id: String,
    timestamp: f64,
}
#[derive(Deserialize)]
struct WireTimestamp {
    timestamp: f64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAttached {
    session_id: String,
    target_info: WireTargetInfo,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTargetInfo {
    target_id: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSession {
    session_id: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTarget {
    target_id: String,
}
#[derive(Deserialize)]
struct WireReason {
    reason: String,
}

fn parse<T: DeserializeOwned>(params: Option<&RawValue>) -> serde_json::Result<T> {
    serde_json::from_str(params.map_or("{}", RawValue::get))
}

impl Event {
    /// Parses an event's parameters by its method. A known method whose
    /// parameters do not fit is an error (the caller logs it and passes
    /// the event on as [`Event::Other`]).
    pub fn parse(method: &str, params: Option<&RawValue>) -> serde_json::Result<Event> {
        use WebSocketEvent as Ws;
        let frame = |w: WireFrame| WebSocketFrame {
            request_id: w.request_id,
            timestamp: w.timestamp,
            opcode: w.response.opcode as u8,
            payload: w.response.payload_data,
        };
        Ok(match method {
            "Network.webSocketCreated" => {
                let w: WireCreated = parse(params)?;
                Event::WebSocket(Ws::Created { request_id: w.request_id, url: w.url })
            }
            "Network.webSocketHandshakeResponseReceived" => {
                let w: WireHandshake = parse(params)?;
                Event::WebSocket(Ws::HandshakeResponse {
                    request_id: w.request_id,
                    status: w.response.status as u16,
                    timestamp: w.timestamp,
                })
            }
            "Network.webSocketFrameSent" => Event::WebSocket(Ws::FrameSent(frame(parse(params)?))),
            "Network.webSocketFrameReceived" => Event::WebSocket(Ws::FrameReceived(frame(parse(params)?))),
            "Network.webSocketFrameError" => {
                let w: WireFrameError = parse(params)?;
                Event::WebSocket(Ws::FrameError { request_id: w.request_id, message: w.error_message })
            }
            "Network.webSocketClosed" => {
                let w: WireClosed = parse(params)?;
                Event::WebSocket(Ws::Closed { request_id: w.request_id, timestamp: w.timestamp })
            }
            "Page.loadEventFired" => {
                Event::LoadEventFired { timestamp: parse::<WireTimestamp>(params)?.timestamp }
            }
            "Page.lifecycleEvent" => Event::Lifecycle(parse(params)?),
            "Target.attachedToTarget" => {
                let w: WireAttached = parse(params)?;
                Event::AttachedToTarget { session_id: w.session_id, target_id: w.target_info.target_id }
            }
            "Target.detachedFromTarget" => {
                Event::DetachedFromTarget { session_id: parse::<WireSession>(params)?.session_id }
            }
            "Target.targetCrashed" => {
                Event::TargetCrashed { target_id: parse::<WireTarget>(params)?.target_id }
            }
            "Inspector.targetCrashed" => Event::InspectorTargetCrashed,
            "Inspector.detached" => Event::InspectorDetached { reason: parse::<WireReason>(params)?.reason },
            other => Event::Other { method: other.to_owned() },
        })
    }
}

/// A subscription to one session's events (or the browser's own).
/// Dropping it unsubscribes.
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Arc<Event>>,
    dropped: u64,
}

impl EventStream {
    pub(crate) fn new(rx: broadcast::Receiver<Arc<Event>>) -> EventStream {
        EventStream { rx, dropped: 0 }
    }

    /// The next event; `None` once the session is over (page closed or
    /// detached, browser gone).
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(n)) => self.dropped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event already buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.dropped += n,
                Err(_) => return None,
            }
        }
    }

    /// Events this subscriber missed because it fell more than the
    /// channel's capacity behind (the oldest are overwritten).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// A page's WebSocket events only (see [`crate::Page::websocket_events`]).
#[derive(Debug)]
pub struct WebSocketEvents {
    inner: EventStream,
}

impl WebSocketEvents {
    pub(crate) fn new(inner: EventStream) -> WebSocketEvents {
        WebSocketEvents { inner }
    }

    /// The next WebSocket event; `None` once the page is gone.
    pub async fn recv(&mut self) -> Option<WebSocketEvent> {
        while let Some(event) = self.inner.recv().await {
            if let Event::WebSocket(ws) = &*event {
                return Some(ws.clone());
            }
        }
        None
    }

    /// The next WebSocket event already buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<WebSocketEvent> {
        while let Some(event) = self.inner.try_recv() {
            if let Event::WebSocket(ws) = &*event {
                return Some(ws.clone());
            }
        }
        None
    }

    /// Events (of any kind) missed because this reader fell behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn websocket_frames_parse_into_flat_events() {
        let p = raw(
            r#"{"requestId":"7.1","timestamp":12.5,"response":{"opcode":1,"mask":true,"payloadData":"hi"}}"#,
        );
        let Event::WebSocket(WebSocketEvent::FrameSent(f)) =
            Event::parse("Network.webSocketFrameSent", Some(&*p)).unwrap()
        else {
            panic!("not a sent frame")
        };
        assert_eq!((f.request_id.as_str(), f.opcode, f.payload.as_str()), ("7.1", 1, "hi"));
    }

    #[test]
    fn unknown_events_keep_only_their_method_and_bad_known_ones_are_errors() {
        let p = raw(r#"{"whatever":[1,2,3]}"#);
        assert!(matches!(
            Event::parse("Network.requestWillBeSent", Some(&*p)).unwrap(),
            Event::Other { method } if method == "Network.requestWillBeSent"
        ));
        assert!(Event::parse("Network.webSocketClosed", Some(&*p)).is_err());
        assert!(matches!(
            Event::parse("Inspector.targetCrashed", None).unwrap(),
            Event::InspectorTargetCrashed
        ));
    }
}
