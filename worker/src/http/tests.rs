use super::*;
use tokio::io::AsyncWriteExt;

/// Reads a response that a peer writes as `chunks` and then closes.
async fn read(chunks: &[&[u8]], head_only: bool, max_body: usize) -> Result<Response, HttpError> {
    let (mut client, mut server) = tokio::io::duplex(64);
    let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
    let writer = tokio::spawn(async move {
        for c in chunks {
            if server.write_all(&c).await.is_err() {
                return;
            }
        }
    });
    let result = read_response(&mut client, head_only, max_body).await;
    drop(client);
    writer.await.unwrap();
    result
}

fn ok(status: u16, body: &str) -> Result<Response, HttpError> {
    Ok(Response { status, body: body.as_bytes().to_vec() })
}

#[test]
fn requests_carry_host_close_and_length() {
    let headers = vec![("X-Id".to_string(), "7".to_string())];
    let req =
        Request { method: "POST", target: "/p?q=1", host: "h:80", headers: &headers, body: Some(b"{}") };
    let text = String::from_utf8(req.encode().unwrap()).unwrap();
    assert_eq!(
        text,
        "POST /p?q=1 HTTP/1.1\r\nHost: h:80\r\nUser-Agent: stampede\r\nConnection: close\r\n\
         X-Id: 7\r\nContent-Length: 2\r\n\r\n{}"
    );
    let get = Request { method: "GET", target: "/", host: "h", headers: &[], body: None };
    assert!(!String::from_utf8(get.encode().unwrap()).unwrap().contains("Content-Length"));
    let post = Request { method: "POST", body: None, ..get };
    assert!(String::from_utf8(post.encode().unwrap()).unwrap().contains("Content-Length: 0\r\n"));
}

#[test]
fn text_that_would_break_the_framing_is_refused() {
    let base = Request { method: "GET", target: "/", host: "h", headers: &[], body: None };
    assert!(Request { target: "/a b", ..base }.encode().is_err());
    assert!(Request { target: "/a\r\nX: y", ..base }.encode().is_err());
    assert!(Request { target: "a", ..base }.encode().is_err());
    assert!(Request { method: "GE T", ..base }.encode().is_err());
    let injected = vec![("X".to_string(), "v\r\nEvil: 1".to_string())];
    assert!(Request { headers: &injected, ..base }.encode().is_err());
    let bad_name = vec![("X Y".to_string(), "v".to_string())];
    assert!(Request { headers: &bad_name, ..base }.encode().is_err());
}

#[tokio::test]
async fn bodies_by_length_chunks_or_close() {
    assert_eq!(
        read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"], false, 100).await,
        ok(200, "hello")
    );
    // Split anywhere, extra bytes after the body ignored.
    assert_eq!(
        read(&[b"HTTP/1.1 201 Cre", b"ated\r\ncontent-length: 3\r", b"\n\r\nab", b"cXYZ"], false, 100).await,
        ok(201, "abc")
    );
    assert_eq!(
        read(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n"],
            false,
            100
        )
        .await,
        ok(200, "Wikipedia")
    );
    // Chunked wins over Content-Length; a missing final CRLF is forgiven.
    assert_eq!(
        read(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"],
            false,
            100
        )
        .await,
        ok(200, "ok")
    );
    assert_eq!(read(&[b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"close"], false, 100).await, ok(200, "until close"));
    assert_eq!(
        read(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz"], false, 100).await,
        ok(200, "zz")
    );
}

#[tokio::test]
async fn no_body_for_head_204_304_and_interim_responses_are_skipped() {
    assert_eq!(read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"], true, 100).await, ok(200, ""));
    assert_eq!(read(&[b"HTTP/1.1 204 No Content\r\n\r\n"], false, 100).await, ok(204, ""));
    assert_eq!(
        read(&[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!"], false, 100).await,
        ok(200, "!")
    );
}

#[tokio::test]
async fn too_large_is_refused_without_reading_it_all() {
    let max = 16;
    assert_eq!(
        read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n"], false, max).await,
        Err(HttpError::BodyTooLarge(max))
    );
    assert_eq!(
        read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"], false, max).await,
        Err(HttpError::Malformed("an invalid Content-Length"))
    );
    let close_delimited = [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &[b'x'; 100]];
    assert_eq!(read(&close_delimited, false, max).await, Err(HttpError::BodyTooLarge(max)));
    let chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n";
    assert_eq!(read(&[chunked], false, max).await, Err(HttpError::BodyTooLarge(max)));
    let huge_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
    assert_eq!(read(&[huge_chunk], false, max).await, Err(HttpError::BodyTooLarge(max)));
    let endless_head = [b"HTTP/1.1 200 OK\r\nX-Pad: ".as_slice(), &[b'a'; 2 * MAX_HEAD]];
    assert_eq!(read(&endless_head, false, max).await, Err(HttpError::HeadTooLarge));
    let many = [b"HTTP/1.1 200 OK\r\n".as_slice(), &b"A: b\r\n".repeat(100), b"\r\n"];
    assert_eq!(read(&many, false, max).await, Err(HttpError::Malformed("too many headers")));
}

#[tokio::test]
async fn garbage_and_cut_responses_are_errors() {
    assert!(matches!(
        read(&[b"SSH-2.0-OpenSSH_9.6\r\n\r\n"], false, 100).await,
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(read(&[b"\x00\x01\x02garbage"], false, 100).await, Err(HttpError::Malformed(_))));
    assert!(matches!(read(&[], false, 100).await, Err(HttpError::Malformed(_))));
    assert_eq!(read(&[b"HTTP/1.1 200 OK\r\nConte"], false, 100).await, Err(HttpError::Truncated));
    assert_eq!(
        read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"], false, 100).await,
        Err(HttpError::Truncated)
    );
    assert!(matches!(
        read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"], false, 100).await,
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(
        read(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], false, 100).await,
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(
        read(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n"], false, 100).await,
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(
        read(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &[b'1'; 2000]], false, 100).await,
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(
        read(&[b"HTTP/1.1 101 Switching\r\n\r\n"], false, 100).await,
        Err(HttpError::Malformed(_))
    ));
}

#[tokio::test]
async fn fetch_talks_to_a_real_server_and_keeps_its_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // The first connection is answered, the second never.
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = vec![0u8; 1024];
        let n = tcp.read(&mut head).await.unwrap();
        let seen = String::from_utf8_lossy(&head[..n]).into_owned();
        tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").await.unwrap();
        let (silent, _) = listener.accept().await.unwrap();
        (seen, silent)
    });
    let target = Target::resolve(&format!("ws://{addr}/ws")).await.unwrap();
    let req = Request { method: "GET", target: "/x", host: &target.url.authority, headers: &[], body: None };
    let got = fetch(&target, None, &req, 100, Duration::from_secs(5)).await;
    assert_eq!(got, ok(200, "hi"));
    let started = std::time::Instant::now();
    let late = fetch(&target, None, &req, 100, Duration::from_millis(200)).await;
    assert_eq!(late, Err(HttpError::Timeout));
    assert_eq!(late.unwrap_err().cause(), Cause::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));
    let (seen, _silent) = server.await.unwrap();
    assert!(seen.starts_with("GET /x HTTP/1.1\r\nHost: 127.0.0.1:"), "{seen}");
    assert!(seen.contains("Connection: close\r\n"), "{seen}");
}
