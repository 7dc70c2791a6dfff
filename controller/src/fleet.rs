//! The controller's gRPC server. Each worker's Join stream is turned into
//! events on one bounded channel that the run loop owns, so all run state
//! lives in a single task and needs no locks.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use stampede_model::clock::unix_us;

use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::auth::FleetToken;
use stampede_proto::fleet::fleet_server::{Fleet, FleetServer};
use stampede_proto::fleet::{ControllerMessage, Hello, WorkerMessage, worker_message::Body};
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
        /// The message.
        body: Body,
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
        let (link, rx) = mpsc::channel(64);
        self.events
            .send(FleetEvent::Joined { hello, link, offset_us })
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
                        let event = FleetEvent::Message { worker: worker.clone(), body };
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break "stream closed".to_string(),
                    Err(status) => break status.message().to_string(),
                }
            };
            let _ = events.send(FleetEvent::Left { worker, reason }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Binds the fleet server and serves it until `shutdown` on `tasks`;
/// returns the bound address at once.
pub async fn serve(
    listen: SocketAddr,
    token: Option<FleetToken>,
    events: mpsc::Sender<FleetEvent>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let incoming = TcpListenerStream::new(listener);
    let service = Service { token, events, tasks: tasks.clone(), shutdown: shutdown.clone() };
    let service = FleetServer::new(service).max_decoding_message_size(64 << 20);
    tasks.spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(err) = result {
            tracing::error!("fleet server: {err}");
        }
    });
    Ok(addr)
}
