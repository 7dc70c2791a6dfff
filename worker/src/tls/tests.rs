use super::*;
use rustls::AlertDescription;

#[test]
fn rustls_errors_map_to_a_fixed_set_of_causes() {
    let cert = |e: CertificateError| cause_of(&rustls::Error::InvalidCertificate(e));
    assert_eq!(cert(CertificateError::UnknownIssuer), Cause::TlsUnknownCa);
    assert_eq!(cert(CertificateError::Expired), Cause::TlsExpired);
    assert_eq!(cert(CertificateError::NotValidYet), Cause::TlsExpired);
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_000_000_000));
    let then = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_000_000_000));
    assert_eq!(cert(CertificateError::ExpiredContext { time: now, not_after: then }), Cause::TlsExpired);
    assert_eq!(cert(CertificateError::NotValidForName), Cause::TlsHostname);
    assert_eq!(
        cert(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("example.com").unwrap(),
            presented: vec!["DnsName(\"other.example\")".into()],
        }),
        Cause::TlsHostname
    );
    assert_eq!(cert(CertificateError::BadSignature), Cause::TlsBadCertificate);
    assert_eq!(cert(CertificateError::Revoked), Cause::TlsBadCertificate);
    assert_eq!(
        cert(CertificateError::Other(rustls::OtherError(Arc::new(io::Error::other("x"))))),
        Cause::TlsBadCertificate
    );
    let alert = |a: AlertDescription| cause_of(&rustls::Error::AlertReceived(a));
    assert_eq!(alert(AlertDescription::CertificateRequired), Cause::TlsAlert);
    assert_eq!(alert(AlertDescription::UnknownCA), Cause::TlsAlert);
    assert_eq!(cause_of(&rustls::Error::DecryptError), Cause::TlsHandshake);
    assert_eq!(cause_of(&rustls::Error::General("from the server".into())), Cause::TlsHandshake);
}

#[test]
fn causes_are_found_inside_io_errors() {
    let wrapped = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
    );
    assert_eq!(cause_of_io(&wrapped), Some(Cause::TlsUnknownCa));
    assert_eq!(handshake_cause(&wrapped), Cause::TlsUnknownCa);
    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
    assert_eq!(cause_of_io(&eof), None);
    assert_eq!(handshake_cause(&eof), Cause::TlsHandshake, "the server left mid-handshake");
    assert_eq!(handshake_cause(&io::ErrorKind::TimedOut.into()), Cause::Timeout);
    // After the handshake, the cause travels inside the io::Error to
    // whoever classifies it.
    let alert = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
    );
    assert_eq!(Cause::from_io(&tagged(alert)), Cause::TlsAlert);
    assert_eq!(Cause::from_io(&tagged(io::ErrorKind::ConnectionReset.into())), Cause::Reset);
}

#[test]
fn bad_settings_are_errors_that_say_what_is_wrong() {
    let spec = TlsSpec { ca_pem: Some("not pem".into()), ..Default::default() };
    let err = TlsClient::new(&spec, "localhost").unwrap_err().to_string();
    assert!(err.contains("ca_file") && err.contains("no CERTIFICATE"), "{err}");
    let spec = TlsSpec { client_cert_pem: Some("x".into()), ..Default::default() };
    let err = TlsClient::new(&spec, "localhost").unwrap_err().to_string();
    assert!(err.contains("client_key_file"), "{err}");
    let spec = TlsSpec { server_name: Some("not a name!".into()), ..Default::default() };
    assert!(matches!(TlsClient::new(&spec, "localhost"), Err(TlsError::ServerName(_))));
    assert!(TlsClient::new(&TlsSpec::default(), "127.0.0.1").is_ok(), "an IP address is a server name");
}
