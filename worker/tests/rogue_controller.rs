//! A worker commanded by a controller written in this test (real gRPC on
//! loopback): what a buggy or hostile controller sends is refused or
//! capped, never obeyed without bound.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use stampede_proto::fleet::fleet_server::{Fleet, FleetServer};
use stampede_proto::fleet::{
    Assign, ControllerMessage, Heartbeat, PhaseStart, SnapshotAck, WorkerMessage,
    controller_message::Body as Cmd, worker_message::Body,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// A controller that sends `script` to the first worker that joins and
/// passes on everything the worker says; `answers`: it also acknowledges
/// snapshots and answers heartbeats, as the real one does.
struct Rogue {
    script: std::sync::Mutex<Option<Vec<Cmd>>>,
    heard: mpsc::Sender<Body>,
    answers: bool,
}

#[tonic::async_trait]
impl Fleet for Rogue {
    type JoinStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn join(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        let mut inbound = request.into_inner();
        let script = self.script.lock().unwrap().take().unwrap_or_default();
        let (tx, rx) = mpsc::channel(64);
        for cmd in script {
            tx.send(Ok(ControllerMessage { body: Some(cmd) })).await.unwrap();
        }
        let (heard, answers) = (self.heard.clone(), self.answers);
        tokio::spawn(async move {
            while let Ok(Some(WorkerMessage { body: Some(body) })) = inbound.message().await {
                let answer = match &body {
                    Body::Snapshot(s) if answers => Some(Cmd::SnapshotAck(SnapshotAck { seq: s.seq })),
                    Body::Heartbeat(b) if answers => Some(Cmd::Heartbeat(Heartbeat {
                        worker_sent_at_unix_us: b.worker_sent_at_unix_us,
                        controller_at_unix_us: stampede_model::clock::unix_us(std::time::SystemTime::now()),
                    })),
                    _ => None,
                };
                if let Some(cmd) = answer {
                    let _ = tx.send(Ok(ControllerMessage { body: Some(cmd) })).await;
                }
                if heard.send(body).await.is_err() {
                    break;
                }
            }
            drop(tx);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn rogue(script: Vec<Cmd>) -> (String, mpsc::Receiver<Body>) {
    controller(script, false).await
}

async fn controller(script: Vec<Cmd>, answers: bool) -> (String, mpsc::Receiver<Body>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (heard, rx) = mpsc::channel(1024);
    let service = FleetServer::new(Rogue { script: std::sync::Mutex::new(Some(script)), heard, answers });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, rx)
}

fn options(url: &str) -> stampede_worker::WorkerOptions {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: stampede_worker::WorkerOptions,
    }
    Cli::parse_from(["worker", "--controller", url, "--id", "w", "--max-connections", "30", "--once"]).opts
}

fn assign(target: &str) -> Assign {
    Assign {
        run_id: "rogue-run".into(),
        target_url: target.into(),
        payload_bytes: 64,
        connect_timeout_us: 5_000_000,
        run_start_unix_us: stampede_model::clock::unix_us(std::time::SystemTime::now()),
        ..Default::default()
    }
}

/// The first fatal error the worker reports, within 10 s.
async fn fatal(heard: &mut mpsc::Receiver<Body>) -> String {
    let wait = async {
        while let Some(body) = heard.recv().await {
            if let Body::Error(e) = body
                && e.fatal
            {
                return e.message;
            }
        }
        panic!("the worker left without an error");
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("an error within 10 s")
}

#[tokio::test]
async fn an_assign_asking_for_4_gib_messages_is_refused() {
    let shutdown = CancellationToken::new();
    let relay = stampede_relay::Relay::start(Default::default(), shutdown.clone()).await.unwrap();
    let huge = Assign { payload_bytes: u32::MAX, ..assign(&relay.ws_url()) };
    let (url, mut heard) = rogue(vec![Cmd::Assign(huge)]).await;
    let worker = tokio::spawn(stampede_worker::run(options(&url), shutdown.clone()));
    let said = fatal(&mut heard).await;
    assert!(said.contains("payload_bytes = 4294967295"), "{said}");
    assert_eq!(relay.stats().connections_total.load(Relaxed), 0, "nothing was opened");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
}

#[tokio::test]
async fn a_phase_of_a_trillion_connections_is_capped_at_the_workers_capacity() {
    let shutdown = CancellationToken::new();
    let relay = stampede_relay::Relay::start(Default::default(), shutdown.clone()).await.unwrap();
    let phase =
        PhaseStart { index: 0, name: "greedy".into(), connections: 1_000_000_000_000, ..Default::default() };
    let nan = PhaseStart { index: 1, name: "nan".into(), churn_per_s: f64::NAN, ..Default::default() };
    let (url, mut heard) =
        rogue(vec![Cmd::Assign(assign(&relay.ws_url())), Cmd::PhaseStart(phase), Cmd::PhaseStart(nan)]).await;
    let worker = tokio::spawn(stampede_worker::run(options(&url), shutdown.clone()));
    // The NaN rate is refused by name; the greedy phase was capped at 30.
    let said = fatal(&mut heard).await;
    assert!(said.contains("churn_per_s = NaN"), "{said}");
    let stats = relay.stats();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.connections_active.load(Relaxed) < 30 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stats.connections_active.load(Relaxed), 30, "the worker holds its capacity, not a trillion");
    assert_eq!(stats.connections_total.load(Relaxed), 30);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
}

#[tokio::test]
async fn a_broadcast_of_a_trillion_channels_per_connection_is_refused() {
    use stampede_model::spec::{BroadcastSpec, ConnectSpec, SessionSpec};
    let shutdown = CancellationToken::new();
    let relay = stampede_relay::Relay::start(Default::default(), shutdown.clone()).await.unwrap();
    let spec = BroadcastSpec {
        publishers: 1,
        channels: 1_000_000_000_000,
        channels_per_connection: 1_000_000_000_000,
        publish_delay_us: 0,
        channel_prefix: "x".into(),
        worker_index: 0,
        workers: 1,
    };
    let greedy = Assign {
        connect_spec_json: ConnectSpec { session: SessionSpec::Broadcast(spec), ..Default::default() }
            .to_json(),
        ..assign(&relay.pubsub_url())
    };
    let (url, mut heard) = rogue(vec![Cmd::Assign(greedy)]).await;
    let worker = tokio::spawn(stampede_worker::run(options(&url), shutdown.clone()));
    let said = fatal(&mut heard).await;
    assert!(said.contains("session channels = 1000000000000"), "{said}");
    assert_eq!(relay.stats().connections_total.load(Relaxed), 0, "nothing was opened");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
}

/// Snapshots and heartbeats a worker sends to a controller that answers
/// (or not), running 5 connections, in `span` from the first word heard:
/// the worker's start-up (dialing, Hello) does not eat into the window.
async fn messages_in(span: Duration, answers: bool) -> (usize, usize) {
    let shutdown = CancellationToken::new();
    let relay = stampede_relay::Relay::start(Default::default(), shutdown.clone()).await.unwrap();
    let phase = PhaseStart { index: 0, name: "hold".into(), connections: 5, ..Default::default() };
    let script = vec![Cmd::Assign(assign(&relay.ws_url())), Cmd::PhaseStart(phase)];
    let (url, mut heard) = controller(script, answers).await;
    let worker = tokio::spawn(stampede_worker::run(options(&url), shutdown.clone()));
    let (mut snapshots, mut heartbeats) = (0, 0);
    let first =
        tokio::time::timeout(Duration::from_secs(10), heard.recv()).await.expect("a word within 10 s");
    let end = tokio::time::Instant::now() + span;
    let mut next = first;
    while let Some(body) = next {
        match body {
            Body::Snapshot(_) => snapshots += 1,
            Body::Heartbeat(_) => heartbeats += 1,
            _ => {}
        }
        next = tokio::time::timeout_at(end, heard.recv()).await.ok().flatten();
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    (snapshots, heartbeats)
}

#[tokio::test]
async fn heartbeats_thin_out_while_snapshots_are_acknowledged() {
    // Acknowledged snapshots show both ends alive: a heartbeat only every
    // 5 s (for the clock offset), the first at once.
    let (snapshots, heartbeats) = messages_in(Duration::from_millis(7500), true).await;
    assert!(snapshots >= 6, "{snapshots} snapshots in 7.5 s");
    assert!((1..=3).contains(&heartbeats), "{heartbeats} heartbeats in 7.5 s beside {snapshots} snapshots");
}

#[tokio::test]
async fn heartbeats_go_every_second_to_a_controller_that_does_not_answer() {
    // Nothing comes back. The commands that opened the run count as a word
    // from the controller, so the beat in the second after them may be
    // skipped; from then on every second's beat goes (at 0, 2 and 3 s or
    // at 0, 1, 2 s) until the link is given up after 3 s of silence. A
    // controller that answers gets one beat in this window.
    let (_, heartbeats) = messages_in(Duration::from_millis(4500), false).await;
    assert!(heartbeats >= 3, "{heartbeats} heartbeats in 4.5 s");
}
