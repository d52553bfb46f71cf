//! Plain HTTP/1.1 over TCP: framing both ways, keep-alive, retries, errors.

use sha2::{Digest, Sha256};

use super::*;

#[test]
fn get_with_content_length() {
    let origin =
        Origin::tcp(|_| Action::Reply(ok("hello", "X-Test: 1\r\nConnection: keep-alive\r\n")));
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/a/b?x=1"), VecBody::empty()));
    res.expect("proxy");
    assert_eq!(rec.status(), 200);
    assert_eq!(rec.text(), "hello");
    // Headers as received, hop-by-hop included.
    assert_eq!(rec.header("x-test"), Some("1"));
    assert_eq!(rec.header("connection"), Some("keep-alive"));
    let seen = origin.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/a/b?x=1");
    assert_eq!(seen[0].header("host"), Some("app.example.com"));
    assert_eq!(client.idle_connections(), 1);
}

#[test]
fn request_headers_pass_except_hop_by_hop() {
    let origin = Origin::tcp(|_| Action::Reply(ok("", "")));
    let target = origin.target();
    let client = OriginClient::new();
    let r = req(
        "GET",
        "",
        vec![
            ("X-Forwarded-For", "203.0.113.7"),
            ("Cf-Connecting-IP", "203.0.113.7"),
            ("Accept", "a"),
            ("Accept", "b"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "dropped"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "h2c"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
            ("Trailer", "X"),
            ("Host", "ignored.example"),
        ],
    );
    let (res, _) = run(call(&client, &target, r, VecBody::empty()));
    res.expect("proxy");
    let seen = &origin.seen()[0];
    assert_eq!(seen.target, "/", "no path in dest means /");
    let names: Vec<&str> = seen.headers.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "Host",
            "X-Forwarded-For",
            "Cf-Connecting-IP",
            "Accept",
            "Accept"
        ]
    );
    assert_eq!(seen.header("host"), Some("app.example.com"));
}

#[test]
fn host_override() {
    let origin = Origin::tcp(|_| Action::Reply(ok("", "")));
    let mut target = origin.target();
    target.options.http_host_header = Some("internal.local:8080".to_owned());
    let client = OriginClient::new();
    run(call(&client, &target, get("/"), VecBody::empty()))
        .0
        .expect("proxy");
    assert_eq!(origin.seen()[0].header("host"), Some("internal.local:8080"));
}

#[test]
fn chunked_response_is_decoded() {
    let origin = Origin::tcp(|_| {
        Action::Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
        )
    });
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    res.expect("proxy");
    assert_eq!(rec.text(), "hello, world");
    assert_eq!(rec.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        client.idle_connections(),
        1,
        "complete chunked body: reusable"
    );
}

#[test]
fn head_and_204_have_no_body_and_keep_the_connection() {
    let origin = Origin::tcp(|r| {
        Action::Reply(match r.method.as_str() {
            "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n".to_vec(),
        })
    });
    let target = origin.target();
    let client = OriginClient::new();
    run(async {
        let (res, rec) = call(&client, &target, req("HEAD", "/", vec![]), VecBody::empty()).await;
        res.expect("head");
        assert_eq!((rec.status(), rec.body.len()), (200, 0));
        assert_eq!(rec.header("content-length"), Some("1000"));
        let (res, rec) = call(&client, &target, get("/"), VecBody::empty()).await;
        res.expect("204");
        assert_eq!((rec.status(), rec.body.len()), (204, 0));
    });
    assert_eq!(origin.accepts(), 1);
    assert_eq!(client.idle_connections(), 1);
}

#[test]
fn close_delimited_response() {
    let origin = Origin::tcp(|_| {
        Action::ReplyClose(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
        )
    });
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    res.expect("proxy");
    assert_eq!(rec.text(), "until the end");
    assert_eq!(client.idle_connections(), 0);
}

#[test]
fn interim_100_is_skipped() {
    let origin = Origin::tcp(|_| {
        let mut b =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n".to_vec();
        b.extend(ok("final", ""));
        Action::Reply(b)
    });
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    res.expect("proxy");
    assert_eq!(
        (rec.heads, rec.status(), rec.text().as_str()),
        (1, 200, "final")
    );
}

#[test]
fn get_does_not_poll_the_body() {
    let origin = Origin::tcp(|_| Action::Reply(ok("", "")));
    let target = origin.target();
    let client = OriginClient::new();
    let body = VecBody::new(vec![Bytes::from_static(b"never")]);
    let polls = body.polls.clone();
    run(call(&client, &target, get("/"), body))
        .0
        .expect("proxy");
    assert_eq!(polls.get(), 0);
    assert!(origin.seen()[0].body.is_empty());
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn data(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn echo_sha(r: &SeenRequest) -> Action {
    let sha = hex(&Sha256::digest(&r.body));
    Action::Reply(ok(&sha, ""))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn chunks_of(data: &[u8], size: usize) -> Vec<Bytes> {
    data.chunks(size).map(Bytes::copy_from_slice).collect()
}

/// Sends `payload` as `r`'s body in `chunk`-byte pieces to an [`echo_sha`] origin and checks
/// that the origin received exactly those bytes.
fn upload_to_echo_sha(target: &OriginTarget, r: OriginRequest, payload: &[u8], chunk: usize) {
    let client = OriginClient::new();
    let (res, rec) = run(call(
        &client,
        target,
        r,
        VecBody::new(chunks_of(payload, chunk)),
    ));
    res.expect("proxy");
    assert_eq!(rec.text(), hex(&Sha256::digest(payload)));
}

#[test]
fn post_content_length_1mib() {
    let origin = Origin::tcp(echo_sha);
    let target = origin.target();
    let payload = data(1 << 20, 7);
    let len = payload.len().to_string();
    let r = req("POST", "/upload", vec![("Content-Length", &len)]);
    upload_to_echo_sha(&target, r, &payload, 10_000);
    let seen = &origin.seen()[0];
    assert_eq!(seen.header("content-length"), Some(len.as_str()));
    assert!(seen.header("transfer-encoding").is_none());
}

#[test]
fn post_chunked_1mib_origin_sees_chunked_framing() {
    let origin = Origin::tcp(echo_sha);
    let target = origin.target();
    let payload = data(1 << 20, 11);
    let r = req("POST", "/upload", vec![("Transfer-Encoding", "chunked")]);
    upload_to_echo_sha(&target, r, &payload, 65_536);
    let seen = &origin.seen()[0];
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert!(seen.raw_body.starts_with(b"10000\r\n"));
    assert!(seen.raw_body.ends_with(b"\r\n0\r\n\r\n"));
}

#[test]
fn small_chunked_body_exact_wire_bytes() {
    let origin = Origin::tcp(|_| Action::Reply(ok("", "")));
    let target = origin.target();
    let client = OriginClient::new();
    let r = req("PUT", "/", vec![("Transfer-Encoding", "chunked")]);
    let body = VecBody::new(vec![
        Bytes::from_static(b"abc"),
        Bytes::new(),
        Bytes::from_static(b"defghijklmnopqr"),
    ]);
    run(call(&client, &target, r, body)).0.expect("proxy");
    assert_eq!(
        origin.seen()[0].raw_body,
        b"3\r\nabc\r\nf\r\ndefghijklmnopqr\r\n0\r\n\r\n"
    );
}

#[test]
fn disable_chunked_encoding_sends_content_length() {
    let origin = Origin::tcp(echo_sha);
    let mut target = origin.target();
    target.options.disable_chunked_encoding = true;
    let payload = data(100_000, 3);
    let r = req("POST", "/", vec![("Transfer-Encoding", "chunked")]);
    upload_to_echo_sha(&target, r, &payload, 4096);
    let seen = &origin.seen()[0];
    assert_eq!(seen.header("content-length"), Some("100000"));
    assert!(seen.header("transfer-encoding").is_none());
}

#[test]
fn body_shorter_than_content_length_is_a_client_error() {
    let origin = Origin::tcp(|_| Action::Reply(ok("", "")));
    let target = origin.target();
    let client = OriginClient::new();
    let r = req("POST", "/", vec![("Content-Length", "10")]);
    let (res, rec) = run(call(
        &client,
        &target,
        r,
        VecBody::new(vec![Bytes::from_static(b"abc")]),
    ));
    let err = res.expect_err("short body");
    assert!(err.to_string().starts_with("client "), "{err}");
    assert!(!err.head_sent());
    assert!(rec.head.is_none());
    assert_eq!(client.idle_connections(), 0);
}

#[test]
fn keep_alive_reuses_one_connection() {
    let origin = Origin::tcp(|r| Action::Reply(ok(&r.target, "")));
    let target = origin.target();
    let client = OriginClient::new();
    run(async {
        for path in ["/one", "/two", "/three"] {
            let (res, rec) = call(&client, &target, get(path), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.text(), path);
        }
    });
    assert_eq!(origin.accepts(), 1);
    assert_eq!(client.idle_connections(), 1);
}

#[test]
fn connection_close_is_not_reused() {
    let origin = Origin::tcp(|_| Action::ReplyClose(ok("x", "Connection: close\r\n")));
    let target = origin.target();
    let client = OriginClient::new();
    run(async {
        for _ in 0..2 {
            let (res, _) = call(&client, &target, get("/"), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(client.idle_connections(), 0);
        }
    });
    assert_eq!(origin.accepts(), 2);
}

#[test]
fn http10_without_keep_alive_is_not_reused() {
    let origin = Origin::tcp(|_| {
        Action::ReplyClose(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    });
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    res.expect("proxy");
    assert_eq!(rec.text(), "ok");
    assert_eq!(client.idle_connections(), 0);
}

#[test]
fn keep_alive_disabled_or_expired() {
    let origin = Origin::tcp(|_| Action::Reply(ok("", "")));
    let mut target = origin.target();
    target.options.keep_alive_connections = 0;
    let client = OriginClient::new();
    run(call(&client, &target, get("/"), VecBody::empty()))
        .0
        .expect("proxy");
    assert_eq!(client.idle_connections(), 0);
    assert_eq!(origin.seen()[0].header("connection"), Some("close"));

    // A zero idle timeout expires every pooled connection before it is reused.
    target.options.keep_alive_connections = 10;
    target.options.keep_alive_timeout = Duration::ZERO;
    run(async {
        for _ in 0..2 {
            call(&client, &target, get("/"), VecBody::empty())
                .await
                .0
                .expect("proxy");
        }
    });
    assert_eq!(origin.accepts(), 3);
}

#[test]
fn pooled_connection_closed_while_idle_is_replaced() {
    // Answers as keep-alive, then closes: the pooled connection is dead. Whether the
    // checkout peek sees the FIN or the request hits the closed socket, the client must
    // answer from a fresh connection.
    let origin = Origin::tcp(|r| Action::ReplyClose(ok(&r.target, "")));
    let target = origin.target();
    let client = OriginClient::new();
    run(async {
        for path in ["/1", "/2"] {
            let (res, rec) = call(&client, &target, get(path), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.text(), path);
        }
    });
    assert_eq!(origin.accepts(), 2);
}

#[test]
fn pooled_connection_dropped_mid_request_is_retried() {
    // The first connection serves one request, then reads the next and closes without an
    // answer (the origin's idle close racing our request): retried on a new connection.
    let origin = Origin::tcp(|r| {
        if r.conn == 0 && r.nth == 1 {
            Action::Close
        } else {
            Action::Reply(ok(&r.target, ""))
        }
    });
    let target = origin.target();
    let client = OriginClient::new();
    run(async {
        for path in ["/1", "/2", "/3"] {
            let (res, rec) = call(&client, &target, get(path), VecBody::empty()).await;
            res.expect("proxy");
            assert_eq!(rec.text(), path);
        }
    });
    assert_eq!(origin.accepts(), 2);
    let seen: Vec<(usize, String)> = origin
        .seen()
        .into_iter()
        .map(|r| (r.conn, r.target))
        .collect();
    assert_eq!(
        seen,
        [
            (0, "/1".into()),
            (0, "/2".into()),
            (1, "/2".into()),
            (1, "/3".into())
        ]
    );
}

#[test]
fn fresh_connection_closed_without_answer_is_not_retried() {
    let origin = Origin::tcp(|_| Action::Close);
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    let err = res.expect_err("closed");
    assert!(!err.head_sent());
    assert!(err.to_string().starts_with("origin "), "{err}");
    assert!(rec.head.is_none());
    assert_eq!(origin.accepts(), 1);
}

#[test]
fn connect_refused_names_the_address() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let target = OriginTarget {
        service: OriginService::Http {
            https: false,
            host: "127.0.0.1".to_owned(),
            port,
        },
        options: OriginOptions::default(),
    };
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    let err = res.expect_err("refused");
    assert!(matches!(err, ProxyError::Connect { .. }), "{err:?}");
    assert!(!err.head_sent());
    let msg = err.to_string();
    assert!(
        msg.starts_with("origin ") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(rec.head.is_none());
}

#[test]
fn garbage_from_origin_is_an_error() {
    for garbage in [
        &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
        b"HTTP/1.1 2000 Huge\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
    ] {
        let origin = Origin::tcp(move |_| Action::ReplyClose(garbage.to_vec()));
        let target = origin.target();
        let client = OriginClient::new();
        let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
        let err = res.expect_err("garbage");
        assert!(
            matches!(
                err,
                ProxyError::Malformed {
                    head_sent: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("origin "));
        assert!(rec.head.is_none());
    }
}

#[test]
fn bad_chunked_body_after_head() {
    let origin = Origin::tcp(|_| {
        Action::ReplyClose(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n".to_vec(),
        )
    });
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    let err = res.expect_err("bad chunk");
    assert!(err.head_sent());
    assert_eq!(rec.status(), 200);
}

#[test]
fn origin_closes_mid_body() {
    let origin = Origin::tcp(|_| {
        Action::ReplyClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec())
    });
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    let err = res.expect_err("truncated");
    assert!(matches!(err, ProxyError::OriginClosed { .. }), "{err:?}");
    assert!(err.head_sent());
    assert!(err.to_string().contains("after 9 of 100"), "{err}");
    assert_eq!(rec.status(), 200);
    assert_eq!(rec.text(), "only this");
    assert_eq!(client.idle_connections(), 0);
}

#[test]
fn header_injection_is_refused_before_connecting() {
    let target = OriginTarget {
        service: OriginService::Http {
            https: false,
            host: "127.0.0.1".to_owned(),
            port: 9,
        },
        options: OriginOptions::default(),
    };
    let client = OriginClient::new();
    for r in [
        req("GET", "/", vec![("X-A", "v\r\nX-Injected: 1")]),
        req("GET", "/", vec![("Bad Name", "v")]),
        req("GET /x HTTP/1.1\r\n", "/", vec![]),
        req("GET", "/a b", vec![]),
    ] {
        let (res, _) = run(call(&client, &target, r, VecBody::empty()));
        let err = res.expect_err("refused");
        assert!(matches!(err, ProxyError::BadRequest { .. }), "{err:?}");
    }
}

#[test]
fn a_response_head_over_the_limit_is_refused_even_when_it_arrives_whole() {
    // 100 KB of fields written in one go: the connector once forwarded it, because the
    // limit was checked only while the head was still incomplete.
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..100 {
        head.extend_from_slice(format!("X-Big-{i}: {}\r\n", "v".repeat(1000)).as_bytes());
    }
    head.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    let origin = Origin::tcp(move |_| Action::Reply(head.clone()));
    let target = origin.target();
    let client = OriginClient::new();
    let (res, rec) = run(call(&client, &target, get("/"), VecBody::empty()));
    let err = res.expect_err("oversized head");
    assert!(!err.head_sent());
    assert!(err.to_string().contains("over"), "{err}");
    assert!(rec.head.is_none(), "nothing reached the sink");
}

#[test]
fn header_bytes_that_are_not_utf8_pass_both_ways() {
    let origin = Origin::tcp(|_| {
        Action::Reply(b"HTTP/1.1 200 OK\r\nX-Resp: \xe9t\xe9\r\nContent-Length: 0\r\n\r\n".to_vec())
    });
    let target = origin.target();
    let client = OriginClient::new();
    let mut r = get("/");
    r.headers
        .push(("X-Raw".to_owned(), Bytes::from_static(b"caf\xe9 \xff")));
    let (res, rec) = run(call(&client, &target, r, VecBody::empty()));
    res.expect("proxy");
    let head = rec.head.as_ref().expect("head");
    let resp = head
        .headers
        .iter()
        .find(|h| h.0 == "X-Resp")
        .expect("X-Resp");
    assert_eq!(&resp.1[..], b"\xe9t\xe9");
    assert_eq!(origin.seen()[0].header("x-raw"), Some("caf\u{e9} \u{ff}"));
}
