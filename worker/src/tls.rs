//! TLS for `wss://` targets: the client configuration, built once per run
//! from the run's [`TlsSpec`] and shared by every connection; the byte
//! stream a WebSocket runs over (TCP, or TLS over TCP); and which cause a
//! TLS failure is counted under.
//!
//! rustls with the ring provider, passed explicitly: nothing here depends
//! on a process-wide default provider (none is installed).
//!
//! The TLS stream drives rustls's unbuffered API ([`TlsConn`]) instead of
//! its buffered `ClientConnection` (what tokio-rustls wraps): that one
//! keeps a 4 KiB zero-filled record buffer per connection for its whole
//! life, over a third of what an idle `wss://` connection costs. Here the
//! buffers are ours, and empty ones are freed, so an idle connection holds
//! only rustls's session state (README: memory per idle connection).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, UnbufferedClientConnection};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use stampede_model::Cause;
use stampede_model::spec::TlsSpec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a run's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM value that holds nothing usable.
    #[error("TLS {what}: {reason}")]
    Pem {
        /// Which setting (`ca_file`, `client_cert_file`, ...).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Only one of the client certificate and its key.
    #[error("TLS client certificate: give both client_cert_file and client_key_file (only {0} is given)")]
    HalfClientAuth(&'static str),
    /// rustls refused the configuration (e.g. a key that does not match
    /// its certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Not a name a certificate can be checked against.
    #[error("TLS server name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
}

/// What every TLS connection of a run shares: the client configuration
/// (one, behind an `Arc`) and the name sent as SNI and checked against the
/// server's certificate.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsClient {
    /// The client for a run: trusts the system's roots (a missing system
    /// store is not an error) plus `spec.ca_pem`, presents the client
    /// certificate if given, and checks the certificate against
    /// `spec.server_name` or else `host` (the URL's).
    pub fn new(spec: &TlsSpec, host: &str) -> Result<TlsClient, TlsError> {
        let provider = ring();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if spec.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
        } else {
            builder.with_root_certificates(roots(spec)?)
        };
        let mut config = match (&spec.client_cert_pem, &spec.client_key_pem) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "client_cert_file")?;
                let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).map_err(|e| {
                    TlsError::Pem { what: "client_key_file", reason: format!("no usable private key: {e}") }
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?
            }
            (Some(_), None) => return Err(TlsError::HalfClientAuth("client_cert_file")),
            (None, Some(_)) => return Err(TlsError::HalfClientAuth("client_key_file")),
            (None, None) => builder.with_no_client_auth(),
        };
        // Every connection does a full handshake, as many distinct clients
        // would: resumed sessions would make the TLS time depend on which
        // connection happened to come first, and the session cache would
        // be one more thing held per server name.
        config.resumption = Resumption::disabled();
        let name = spec.server_name.as_deref().unwrap_or(host);
        let server_name =
            ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.to_string()))?;
        Ok(TlsClient { config: Arc::new(config), server_name })
    }

    /// Runs the TLS handshake over `tcp`.
    pub async fn connect(&self, tcp: TcpStream) -> Result<TlsConn, Cause> {
        let conn = UnbufferedClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| cause_of(&e))?;
        let mut tls = TlsConn {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            out_at: 0,
            peer_closed: false,
            close_sent: false,
        };
        std::future::poll_fn(|cx| tls.poll_handshake(cx)).await.map_err(|e| handshake_cause(&e))?;
        Ok(tls)
    }
}

/// The system's trusted roots plus the scenario's CA.
fn roots(spec: &TlsSpec) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    // A host without a CA bundle (a slim container) can still test against
    // a server whose CA the scenario names, so a missing store is no error.
    let system = rustls_native_certs::load_native_certs();
    let (added, unusable) = roots.add_parsable_certificates(system.certs);
    if !system.errors.is_empty() || unusable > 0 {
        tracing::debug!(
            added,
            unusable,
            errors = ?system.errors,
            "system CA store: some certificates could not be used"
        );
    }
    if let Some(pem) = &spec.ca_pem {
        for cert in certificates(pem, "ca_file")? {
            roots.add(cert).map_err(|e| TlsError::Pem { what: "ca_file", reason: e.to_string() })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted CA: the system has none and the scenario gives no ca_file");
    }
    Ok(roots)
}

/// The certificates of a PEM text; none at all is an error.
fn certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, reason: format!("unreadable PEM: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, reason: "no CERTIFICATE block in the PEM text".into() });
    }
    Ok(certs)
}

/// `insecure_skip_verify`: any certificate is accepted, whoever issued it
/// and whatever it names, but the handshake's signatures are still checked,
/// so the session is at least bound to the key of the certificate shown.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The cause a rustls error is counted under: a small fixed set, never
/// anything built from what the server sent.
pub fn cause_of(err: &rustls::Error) -> Cause {
    use CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => Cause::TlsUnknownCa,
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                Cause::TlsExpired
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => Cause::TlsHostname,
            _ => Cause::TlsBadCertificate,
        },
        rustls::Error::AlertReceived(_) => Cause::TlsAlert,
        _ => Cause::TlsHandshake,
    }
}

/// The cause of a rustls error inside an `io::Error` (tokio-rustls wraps
/// them so); `None` when there is none.
pub fn cause_of_io(err: &io::Error) -> Option<Cause> {
    err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).map(cause_of)
}

/// How a failed TLS handshake is counted: by its rustls error; a timeout
/// as a timeout; anything else that ended the handshake (the server
/// closing or resetting the connection mid-way) as `tls_handshake`.
fn handshake_cause(err: &io::Error) -> Cause {
    match cause_of_io(err) {
        Some(cause) => cause,
        None if err.kind() == io::ErrorKind::TimedOut => Cause::Timeout,
        None => Cause::TlsHandshake,
    }
}

/// A TLS error after the handshake (a fatal alert while the upgrade or the
/// session reads, e.g. a TLS 1.3 server rejecting our client certificate
/// only once it has read it) carries its cause inside the `io::Error`, so
/// code that classifies I/O errors counts it right.
fn tagged(err: io::Error) -> io::Error {
    match cause_of_io(&err) {
        Some(cause) => cause.into_io(err.kind()),
        None => err,
    }
}

/// Bytes read from the socket at a time.
const READ_SIZE: usize = 4096;
/// Plaintext encrypted per write: bounds the outgoing buffer (a 16 MiB
/// message is written in pieces).
const WRITE_CHUNK: usize = 64 * 1024;

/// A TLS client session over TCP, on rustls's unbuffered API. Every buffer
/// is emptied and freed once its bytes are consumed: an idle connection
/// keeps none.
pub struct TlsConn {
    tcp: TcpStream,
    conn: UnbufferedClientConnection,
    /// Bytes received and not yet processed: at most part of one record
    /// once processing stops.
    incoming: Vec<u8>,
    /// Decrypted application data not yet read, from `plain_at` on.
    plaintext: Vec<u8>,
    plain_at: usize,
    /// Records encoded and not yet written, from `out_at` on.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The server sent close_notify: reads end.
    peer_closed: bool,
    /// We queued our close_notify.
    close_sent: bool,
}

/// Where the TLS state machine stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The handshake needs more bytes from the server.
    Blocked,
    /// The handshake is done; application data may flow.
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// Appends what `encode` writes to `out`, growing `out` to the size it
/// asks for (`Err(Some(size))`); `Err(None)` is a failure.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(needed)) if needed > room => room = needed,
            Err(_) => {
                out.truncate(start);
                return Err(io::Error::other("TLS: a record could not be encoded"));
            }
        }
    }
}

fn encode_size(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encrypt_size(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

impl TlsConn {
    /// Runs rustls on the bytes received until it needs more of them or
    /// allows application data; on the way, moves decrypted data into
    /// `plaintext` and encoded records into `outgoing`, then encrypts up to
    /// [`WRITE_CHUNK`] bytes of `write` (returning how many) and, with
    /// `close`, a close_notify.
    fn turn(&mut self, write: &[u8], close: bool) -> io::Result<(Turn, usize)> {
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let mut stop = None;
            match status.state {
                Err(err) => {
                    self.incoming.drain(..discard);
                    self.send_alert();
                    return Err(tls_error(err));
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        self.plaintext.extend_from_slice(record.map_err(tls_error)?.payload);
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    append(&mut self.outgoing, 1024, |buf| data.encode(buf).map_err(encode_size))?;
                }
                // What was encoded is in `outgoing`, written before anything
                // waits for the server.
                Ok(ConnectionState::TransmitTlsData(data)) => data.done(),
                Ok(ConnectionState::BlockedHandshake) => stop = Some((Turn::Blocked, 0)),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let n = write.len().min(WRITE_CHUNK);
                    if n > 0 {
                        append(&mut self.outgoing, n + 64, |buf| {
                            traffic.encrypt(&write[..n], buf).map_err(encrypt_size)
                        })?;
                    }
                    if close && !self.close_sent {
                        append(&mut self.outgoing, 64, |buf| {
                            traffic.queue_close_notify(buf).map_err(encrypt_size)
                        })?;
                        self.close_sent = true;
                    }
                    stop = Some((Turn::Traffic, n));
                }
                Ok(ConnectionState::PeerClosed) => self.peer_closed = true,
                Ok(ConnectionState::Closed) => stop = Some((Turn::Closed, 0)),
                Ok(_) => return Err(io::Error::other("TLS: unexpected state for a client")),
            }
            self.incoming.drain(..discard);
            if let Some(stop) = stop {
                if self.incoming.is_empty() {
                    self.incoming = Vec::new();
                }
                return Ok(stop);
            }
        }
    }

    /// After a TLS error rustls has queued an alert for the server: send
    /// it if the socket takes it now (courtesy; the error stands anyway).
    fn send_alert(&mut self) {
        let status = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state {
            let mut alert = Vec::new();
            if append(&mut alert, 64, |buf| data.encode(buf).map_err(encode_size)).is_ok() {
                let _ = self.tcp.try_write(&alert);
            }
        }
    }

    /// Writes `outgoing` to the socket; ready once all of it is written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.outgoing.len() {
            let n = std::task::ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads what the socket has into `incoming`; `Ok(0)` at its end.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Nothing is allocated for a read that would only wait.
        std::task::ready!(self.tcp.poll_read_ready(cx))?;
        let start = self.incoming.len();
        self.incoming.resize(start + READ_SIZE, 0);
        let mut buf = ReadBuf::new(&mut self.incoming[start..]);
        let polled = Pin::new(&mut self.tcp).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.incoming.truncate(start + n);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        polled.map_ok(|()| n)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.poll_send(cx))?;
            match self.turn(&[], false)?.0 {
                Turn::Traffic if self.outgoing.is_empty() => return Poll::Ready(Ok(())),
                Turn::Traffic => {}
                Turn::Blocked if !self.outgoing.is_empty() => {}
                Turn::Blocked => {
                    if std::task::ready!(self.poll_receive(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Turn::Closed => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
            }
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plaintext.len() {
                let n = buf.remaining().min(this.plaintext.len() - this.plain_at);
                buf.put_slice(&this.plaintext[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // Handshake messages rustls answers by itself (a key update)
            // leave with the next write or flush; try now too.
            let _ = this.poll_send(cx)?;
            let turn = this.turn(&[], false)?.0;
            if this.plain_at < this.plaintext.len() || this.peer_closed {
                continue;
            }
            if turn == Turn::Closed || std::task::ready!(this.poll_receive(cx))? == 0 {
                // TCP ended (with or without close_notify): the WebSocket
                // layer tells a clean close from a drop by its own frames.
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Back-pressure: nothing new is encrypted while earlier records wait.
        std::task::ready!(this.poll_send(cx))?;
        let had_plaintext = this.plaintext.len();
        let (turn, n) = this.turn(buf, false)?;
        if this.plaintext.len() > had_plaintext {
            // Data for the reader turned up here: make sure it is polled.
            cx.waker().wake_by_ref();
        }
        match turn {
            Turn::Traffic => {
                // Written as far as the socket takes it now; the rest goes
                // with the next write or flush.
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n))
            }
            Turn::Blocked | Turn::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            std::task::ready!(this.poll_send(cx))?;
            this.turn(&[], true)?;
        }
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// The byte stream under a WebSocket. The TLS session is boxed: it is large
/// inline, and a `ws://` connection should not pay for it.
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<TlsConn>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf).map_err(tagged),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf).map_err(tagged),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs).map_err(tagged),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx).map_err(tagged),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx).map_err(tagged),
        }
    }
}

#[cfg(test)]
mod tests;
