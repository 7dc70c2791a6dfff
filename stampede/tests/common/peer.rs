//! A fleet peer written by hand for hostile tests: it speaks the fleet
//! protocol over real gRPC and sends whatever a test makes it send.

use std::time::Duration;

use stampede_proto::fleet::{self, WorkerMessage, fleet_client::FleetClient, worker_message::Body};

/// A fleet client of the controller at `port`, once it listens.
async fn client(port: u16) -> FleetClient<tonic::transport::Channel> {
    let url = format!("http://127.0.0.1:{port}");
    loop {
        match FleetClient::connect(url.clone()).await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A fleet peer speaking the protocol by hand: Hello (or not) first, then
/// whatever the test sends. Returns the sender of its messages, or the
/// controller's refusal.
pub async fn peer(
    port: u16,
    first: WorkerMessage,
) -> Result<tokio::sync::mpsc::Sender<WorkerMessage>, tonic::Status> {
    Ok(assigned_peer(port, first).await?.0)
}

/// [`peer`], also giving the run id of the Assign it gets.
pub async fn assigned_peer(
    port: u16,
    first: WorkerMessage,
) -> Result<(tokio::sync::mpsc::Sender<WorkerMessage>, tokio::sync::watch::Receiver<String>), tonic::Status> {
    let mut client = client(port).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    tx.send(first).await.unwrap();
    let mut inbound = client.join(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    // Read the commands, as a live worker would, and ignore them but the
    // Assign's run id.
    let (run_tx, run_rx) = tokio::sync::watch::channel(String::new());
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(fleet::controller_message::Body::Assign(a)) = m.body {
                let _ = run_tx.send(a.run_id);
            }
        }
    });
    Ok((tx, run_rx))
}

/// A peer that joins and never reads what the controller sends (its
/// answers pile up on the controller's side, which must bound them).
/// Returns its sender and the unread stream (hold it to stay joined).
pub async fn deaf_peer(
    port: u16,
    first: WorkerMessage,
) -> Result<
    (tokio::sync::mpsc::Sender<WorkerMessage>, tonic::Streaming<fleet::ControllerMessage>),
    tonic::Status,
> {
    let mut client = client(port).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    tx.send(first).await.unwrap();
    let inbound = client.join(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, inbound))
}

/// A heartbeat, as a worker sends one every second.
pub fn heartbeat() -> WorkerMessage {
    WorkerMessage {
        body: Some(Body::Heartbeat(fleet::Heartbeat {
            worker_sent_at_unix_us: stampede_model::clock::unix_us(std::time::SystemTime::now()),
            controller_at_unix_us: 0,
        })),
    }
}

/// Waits for a peer's Assign; its run id.
pub async fn run_id(mut assigned: tokio::sync::watch::Receiver<String>) -> String {
    let id = assigned.wait_for(|id| !id.is_empty()).await.expect("the controller assigns a run");
    id.clone()
}

pub fn hello(id: &str, protocol_version: u32) -> WorkerMessage {
    WorkerMessage {
        body: Some(Body::Hello(fleet::Hello {
            protocol_version,
            worker_id: id.into(),
            hostname: "rogue".into(),
            engines: vec!["native".into()],
            capacity: Some(fleet::Capacity { max_connections: 10, ..Default::default() }),
            ..Default::default()
        })),
    }
}

pub fn snapshot(
    run: &str,
    seq: u64,
    second: u64,
    counters: &[(&str, u64)],
    histogram: &[u8],
) -> WorkerMessage {
    WorkerMessage {
        body: Some(Body::Snapshot(fleet::Snapshot {
            run_id: run.into(),
            seq,
            second,
            counters: counters.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            latency_histogram: histogram.to_vec(),
            ..Default::default()
        })),
    }
}

/// `hello` with a proof of `token` (as a worker holding it makes one).
pub fn proved(mut hello: WorkerMessage, token: &stampede_proto::auth::FleetToken) -> WorkerMessage {
    if let Some(Body::Hello(h)) = &mut hello.body {
        h.sent_at_unix_us = stampede_model::clock::unix_us(std::time::SystemTime::now());
        h.token_proof = token.prove(&h.worker_id, h.sent_at_unix_us);
    }
    hello
}
