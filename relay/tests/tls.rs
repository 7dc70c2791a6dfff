//! The relay serving TLS: plain HTTP and WebSocket over TLS, a stalled
//! handshake that must not hold up anyone else, and client certificates
//! when a client CA is given. Certificates are made in the test.

mod common;

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use stampede_relay::pki::{Ca, Pem};
use stampede_relay::tls::TlsSettings;
use stampede_relay::{Relay, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use common::STEP;

async fn tls_relay(server: &Pem, client_ca: Option<&str>) -> (Relay, tokio_util::sync::CancellationToken) {
    let tls = TlsSettings {
        cert_pem: server.cert.clone(),
        key_pem: server.key.clone(),
        client_ca_pem: client_ca.map(str::to_string),
    };
    common::start(RelayConfig { tls: Some(tls), ..RelayConfig::default() }).await
}

fn connector(ca: &Ca, client: Option<&Pem>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// `GET /health` over TLS: the whole answer, or the error.
async fn health(relay: &Relay, tls: &TlsConnector) -> std::io::Result<String> {
    let tcp = TcpStream::connect(relay.local_addr()).await?;
    let mut s = tls.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn plain_http_and_websocket_work_over_tls() {
    let ca = Ca::new("test CA").unwrap();
    let (relay, token) = tls_relay(&ca.server(&["127.0.0.1"]).unwrap(), None).await;
    assert!(relay.ws_url().starts_with("wss://"), "{}", relay.ws_url());
    let tls = connector(&ca, None);
    let answer = timeout(STEP, health(&relay, &tls)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");

    let tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    let stream = tls.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(relay.ws_url(), stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    use futures_util::{SinkExt, StreamExt};
    ws.send("over tls".into()).await.unwrap();
    let echo = timeout(STEP, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap(), "over tls");
    token.cancel();
    relay.wait().await;
}

#[tokio::test]
async fn a_stalled_handshake_holds_up_no_one_else() {
    let ca = Ca::new("test CA").unwrap();
    let (relay, token) = tls_relay(&ca.server(&["127.0.0.1"]).unwrap(), None).await;
    // Connected, and silent: its handshake never starts.
    let _stalled: Vec<TcpStream> =
        futures_util::future::join_all((0..3).map(|_| TcpStream::connect(relay.local_addr())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let answer = timeout(STEP, health(&relay, &connector(&ca, None))).await;
    assert!(answer.expect("served while others stall").unwrap().ends_with("ok\n"));
    token.cancel();
    relay.wait().await;
}

#[tokio::test]
async fn a_client_ca_requires_a_certificate_it_signed() {
    let (ca, clients) = (Ca::new("server CA").unwrap(), Ca::new("client CA").unwrap());
    let (relay, token) = tls_relay(&ca.server(&["127.0.0.1"]).unwrap(), Some(clients.cert_pem())).await;
    let mine = clients.client("me").unwrap();
    let answer = timeout(STEP, health(&relay, &connector(&ca, Some(&mine)))).await.unwrap();
    assert!(answer.unwrap().ends_with("ok\n"));
    // Without a certificate, and with one from another CA: refused (TLS
    // 1.3 reports it once the client reads).
    let stranger = Ca::new("other CA").unwrap().client("them").unwrap();
    for tls in [connector(&ca, None), connector(&ca, Some(&stranger))] {
        let refused = timeout(STEP, health(&relay, &tls)).await.unwrap();
        let err = refused.expect_err("no answer without an accepted certificate");
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(matches!(inner, Some(rustls::Error::AlertReceived(_))), "{err:?}");
    }
    assert_eq!(relay.stats().snapshot().connections_active, 0);
    token.cancel();
    relay.wait().await;
}
