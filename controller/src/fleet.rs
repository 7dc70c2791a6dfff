//! The controller's gRPC server. Each worker's Join stream is turned into
//! events on one bounded channel that the run loop owns, so all run state
//! lives in a single task and needs no locks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use stampede_model::clock::unix_us;

use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::auth::FleetToken;
use stampede_proto::fleet::fleet_server::{Fleet, FleetServer};
use stampede_proto::fleet::{
    ControllerMessage, Heartbeat, Hello, WorkerMessage, controller_message::Body as Cmd, worker_message::Body,
};
use stampede_proto::transport::{KEEPALIVE, KEEPALIVE_TIMEOUT, ServerTls};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

/// Where the controller's messages to one worker go.
pub type Link = mpsc::Sender<Result<ControllerMessage, Status>>;

/// What happens in the fleet.
pub enum FleetEvent {
    /// A worker said Hello.
    Joined {
        /// This stream's number: events of an earlier stream of the same
        /// worker (one that rejoined) are told apart by it.
        session: u64,
        /// Its Hello.
        hello: Hello,
        /// Commands to it.
        link: Link,
        /// Controller clock minus worker clock, us (transit time ignored).
        offset_us: i64,
    },
    /// A worker sent a message.
    Message {
        /// Worker id.
        worker: String,
        /// The stream it came on.
        session: u64,
        /// The message (boxed: a snapshot is much larger than the other
        /// events).
        body: Box<Body>,
    },
    /// A would-be worker was refused (no or a wrong fleet token).
    Refused {
        /// Its address.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A worker's stream ended.
    Left {
        /// Worker id.
        worker: String,
        /// The stream that ended.
        session: u64,
        /// Why.
        reason: String,
    },
}

struct Service {
    /// Workers must prove it in their Hello; `None`: anyone may join
    /// (a remote fleet on loopback only).
    token: Option<FleetToken>,
    events: mpsc::Sender<FleetEvent>,
    /// Each worker's stream reader, awaited at shutdown.
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Numbers the streams.
    sessions: AtomicU64,
}

#[tonic::async_trait]
impl Fleet for Service {
    type JoinStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn join(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        let peer = request.remote_addr().map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await;
        let hello = match first {
            Ok(Ok(Some(WorkerMessage { body: Some(Body::Hello(hello)) }))) => hello,
            _ => return Err(Status::invalid_argument("the first message of a Join must be a Hello")),
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker speaks fleet protocol {}, this controller speaks {PROTOCOL_VERSION}: use the same stampede version",
                hello.protocol_version
            )));
        }
        if let Err(why) = check_hello(&hello) {
            tracing::warn!("refused a worker from {peer}: {why}");
            let _ = self.events.try_send(FleetEvent::Refused { peer, reason: why.clone() });
            return Err(Status::invalid_argument(why));
        }
        let now = unix_us(SystemTime::now());
        if let Some(token) = &self.token
            && let Err(why) = token.check(&hello.worker_id, hello.sent_at_unix_us, &hello.token_proof, now)
        {
            // Refused before anything about the run reaches it.
            let id: String = hello.worker_id.chars().take(64).collect();
            tracing::warn!("refused a worker from {peer} (calling itself {id:?}): {why}");
            let _ = self.events.try_send(FleetEvent::Refused { peer, reason: why.clone() });
            return Err(Status::unauthenticated(why));
        }
        let worker = hello.worker_id.clone();
        let offset_us = now - hello.sent_at_unix_us;
        let session = self.sessions.fetch_add(1, Relaxed);
        let (link, rx) = mpsc::channel(64);
        // Weak: dropping the run's `link` must end the stream.
        let replies = link.downgrade();
        self.events
            .send(FleetEvent::Joined { session, hello, link, offset_us })
            .await
            .map_err(|_| Status::unavailable("the controller is shutting down"))?;
        let events = self.events.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let reason = loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = inbound.message() => m,
                };
                match message {
                    Ok(Some(WorkerMessage { body: Some(body) })) => {
                        if let Body::Heartbeat(beat) = &body {
                            // Answered here, not in the run loop: the
                            // worker's clock offset is measured from it.
                            // A full link drops the answer (the worker is
                            // not reading; its own timeout tells it).
                            let answer = Heartbeat {
                                worker_sent_at_unix_us: beat.worker_sent_at_unix_us,
                                controller_at_unix_us: unix_us(SystemTime::now()),
                            };
                            if let Some(replies) = replies.upgrade() {
                                let answer = ControllerMessage { body: Some(Cmd::Heartbeat(answer)) };
                                let _ = replies.try_send(Ok(answer));
                            }
                        }
                        let event =
                            FleetEvent::Message { worker: worker.clone(), session, body: Box::new(body) };
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break "stream closed".to_string(),
                    Err(status) => break status.message().to_string(),
                }
            };
            let _ = events.send(FleetEvent::Left { worker, session, reason }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Checks the sizes of what a Hello says (it ends up in logs, results and
/// memory for the whole run).
fn check_hello(hello: &Hello) -> Result<(), String> {
    let printable = |s: &str| !s.chars().any(char::is_control);
    if hello.worker_id.is_empty() || hello.worker_id.len() > 64 || !printable(&hello.worker_id) {
        return Err("a worker id must be 1-64 printable bytes".into());
    }
    if hello.hostname.len() > 255 || !printable(&hello.hostname) {
        return Err("a hostname must be at most 255 printable bytes".into());
    }
    if hello.engines.len() > 8 || hello.engines.iter().any(|e| e.len() > 32) {
        return Err("at most 8 engines of at most 32 bytes".into());
    }
    if hello.resume_run_id.len() > 200 || hello.token_proof.len() > 64 {
        return Err("resume_run_id or token_proof too long".into());
    }
    Ok(())
}

/// Why the fleet server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address cannot be bound.
    #[error("cannot listen for workers on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS material cannot be used.
    #[error("fleet TLS: {0}")]
    Tls(String),
}

/// A snapshot holds a few histograms of at most 1 MiB each
/// (stampede_model::histogram): anything bigger is not one of ours.
pub const MAX_MESSAGE: usize = 8 << 20;

/// Binds the fleet server (with `tls`, HTTPS) and serves it until
/// `shutdown` on `tasks`; returns the bound address at once.
pub async fn serve(
    listen: SocketAddr,
    token: Option<FleetToken>,
    tls: Option<&ServerTls>,
    events: mpsc::Sender<FleetEvent>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<SocketAddr, ServeError> {
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.config().map_err(ServeError::Tls)?)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let listener =
        TcpListener::bind(listen).await.map_err(|source| ServeError::Listen { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: listen, source })?;
    let incoming = TcpListenerStream::new(listener);
    let service = Service {
        token,
        events,
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        sessions: AtomicU64::new(1),
    };
    let service = FleetServer::new(service).max_decoding_message_size(MAX_MESSAGE);
    tasks.spawn(async move {
        let result = builder
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(err) = result {
            tracing::error!("fleet server: {err}");
        }
    });
    Ok(addr)
}
