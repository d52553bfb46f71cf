use super::*;
use crate::http::fields::*;

fn parse(s: &str) -> Result<Option<(RequestHead, usize)>, RequestHeadError> {
    parse_request_head(s.as_bytes(), &Limits::default())
}

fn parse_ok(s: &str) -> RequestHead {
    match parse(s) {
        Ok(Some((h, n))) => {
            assert_eq!(n, s.len(), "whole input should be the head");
            h
        }
        other => panic!("expected a head, got {other:?}"),
    }
}

fn parse_err(s: &str) -> RequestHeadError {
    match parse(s) {
        Err(e) => e,
        other => panic!("expected an error for {s:?}, got {other:?}"),
    }
}

#[test]
fn simple_get() {
    let h = parse_ok("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n");
    assert_eq!(h.method, "GET");
    assert_eq!(h.target, "/a?b=1");
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.host.as_deref(), Some("example.com"));
    assert!(h.keep_alive);
    assert_eq!(h.body, BodyKind::None);
    assert!(!h.expect_continue);
    assert_eq!(h.headers.len(), 2);
    assert_eq!(h.headers[1].name(), "X-A");
    assert_eq!(h.headers[1].value(), b"1");
}

#[test]
fn pipelined_requests_in_one_buffer() {
    let buf = b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: b\r\n\r\nGET /three HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n";
    let limits = Limits::default();
    let (h1, n1) = parse_request_head(buf, &limits).unwrap().unwrap();
    assert_eq!(h1.target, "/one");
    assert_eq!(h1.body, BodyKind::Length(5));
    assert_eq!(&buf[n1..n1 + 5], b"hello");
    let rest = &buf[n1 + 5..];
    let (h2, n2) = parse_request_head(rest, &limits).unwrap().unwrap();
    assert_eq!(h2.target, "/two");
    assert_eq!(h2.host.as_deref(), Some("b"));
    let (h3, n3) = parse_request_head(&rest[n2..], &limits).unwrap().unwrap();
    assert_eq!(h3.target, "/three");
    assert!(!h3.keep_alive);
    assert_eq!(n2 + n3, rest.len());
}

#[test]
fn split_at_every_byte_boundary() {
    let req = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let limits = Limits::default();
    for cut in 0..req.len() {
        assert_eq!(
            parse_request_head(&req[..cut], &limits),
            Ok(None),
            "prefix of {cut} bytes"
        );
    }
    let (h, n) = parse_request_head(req, &limits).unwrap().unwrap();
    assert_eq!(n, req.len());
    assert_eq!(h.body, BodyKind::Chunked);
    assert!(h.expect_continue);
}

#[test]
fn leading_empty_lines_are_skipped() {
    let (h, n) = parse("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.target, "/");
    assert_eq!(n, 4 + 27);
}

#[test]
fn smuggling_cases_rejected_with_status() {
    let cases: &[(&str, RequestHeadError, u16)] = &[
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            RequestHeadError::LengthAndTransferEncoding,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            RequestHeadError::LengthAndTransferEncoding,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            RequestHeadError::DuplicateContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            RequestHeadError::DuplicateContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            RequestHeadError::DuplicateContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            RequestHeadError::UnsupportedTransferEncoding,
            501,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            RequestHeadError::ChunkedNotFinal,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            RequestHeadError::ChunkedNotFinal,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            RequestHeadError::InvalidTransferEncoding,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
            RequestHeadError::InvalidTransferEncoding,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            RequestHeadError::ChunkedNotFinal,
            400,
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            RequestHeadError::TransferEncodingInHttp10,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            RequestHeadError::InvalidContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            RequestHeadError::InvalidContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n",
            RequestHeadError::InvalidContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
            RequestHeadError::InvalidContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
            RequestHeadError::InvalidContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            RequestHeadError::InvalidContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            RequestHeadError::InvalidContentLength,
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
            RequestHeadError::InvalidContentLength,
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            RequestHeadError::Malformed(httparse::Error::HeaderName),
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
            RequestHeadError::Malformed(httparse::Error::HeaderName),
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
            RequestHeadError::Malformed(httparse::Error::HeaderName),
            400,
        ),
        ("GET / HTTP/1.1\r\n\r\n", RequestHeadError::MissingHost, 400),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            RequestHeadError::DuplicateHost,
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: \r\n\r\n",
            RequestHeadError::InvalidHost,
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n",
            RequestHeadError::InvalidHost,
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            RequestHeadError::InvalidHost,
            400,
        ),
        (
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            RequestHeadError::UnsupportedVersion,
            505,
        ),
        (
            "GET foo HTTP/1.1\r\nHost: a\r\n\r\n",
            RequestHeadError::InvalidTarget,
            400,
        ),
        (
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            RequestHeadError::InvalidTarget,
            400,
        ),
    ];
    for (req, want, status) in cases {
        let got = parse_err(req);
        assert_eq!(&got, want, "for {req:?}");
        assert_eq!(got.status(), *status, "for {req:?}");
    }
}

#[test]
fn obs_fold_on_first_header_rejected() {
    // Folding right after the request line is the variant some parsers read as a
    // continuation of the request line.
    let e = parse_err("GET / HTTP/1.1\r\n Host: a\r\n\r\n");
    assert_eq!(e.status(), 400);
    let e = parse_err("GET / HTTP/1.1\r\nHost: a\r\n\tX: y\r\n\r\n");
    assert_eq!(e.status(), 400);
}

#[test]
fn valid_lengths_and_codings_accepted() {
    let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n");
    assert_eq!(h.body, BodyKind::Length(7));
    let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n");
    assert_eq!(h.body, BodyKind::Length(u64::MAX));
    let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.body, BodyKind::Length(0));
    assert!(!h.body.has_body());
    let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n");
    assert_eq!(h.body, BodyKind::Chunked);
    let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked ,\r\n\r\n");
    assert_eq!(h.body, BodyKind::Chunked);
}

#[test]
fn oversize_head_is_too_large() {
    let limits = Limits {
        max_head_bytes: 1024,
        max_headers: 128,
    };
    let mut req = String::from("GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    req.push_str(&"a".repeat(2000));
    req.push_str("\r\n\r\n");
    let e = parse_request_head(req.as_bytes(), &limits).unwrap_err();
    assert_eq!(e, RequestHeadError::TooLarge { limit: 1024 });
    assert_eq!(e.status(), 431);
    // Incomplete but already at the limit: also too large, no waiting for more.
    let e = parse_request_head(&req.as_bytes()[..1024], &limits).unwrap_err();
    assert_eq!(e.status(), 431);
    // Just under the limit and incomplete: keep reading.
    assert_eq!(
        parse_request_head(&req.as_bytes()[..1023], &limits),
        Ok(None)
    );
    // Large headers up to the default limit are fine.
    let mut big = String::from("GET / HTTP/1.1\r\nHost: a\r\nCookie: ");
    big.push_str(&"c".repeat(60 * 1024));
    big.push_str("\r\n\r\n");
    let h = parse_ok(&big);
    assert_eq!(h.header("cookie").unwrap().value().len(), 60 * 1024);
}

#[test]
fn header_count_limit() {
    let limits = Limits {
        max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
        max_headers: 10,
    };
    let mut req = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..9 {
        req.push_str(&format!("X-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let (h, _) = parse_request_head(req.as_bytes(), &limits)
        .unwrap()
        .unwrap();
    assert_eq!(h.headers.len(), 10);
    let req = req.replacen("\r\n\r\n", "\r\nX-extra: v\r\n\r\n", 1);
    let e = parse_request_head(req.as_bytes(), &limits).unwrap_err();
    assert_eq!(e, RequestHeadError::TooManyHeaders { limit: 10 });
    assert_eq!(e.status(), 431);
}

#[test]
fn keep_alive_matrix() {
    let cases = [
        ("HTTP/1.1", None, true),
        ("HTTP/1.1", Some("close"), false),
        ("HTTP/1.1", Some("keep-alive"), true),
        ("HTTP/1.1", Some("Keep-Alive, Close"), false),
        ("HTTP/1.1", Some("upgrade"), true),
        ("HTTP/1.0", None, false),
        ("HTTP/1.0", Some("keep-alive"), true),
        ("HTTP/1.0", Some("Keep-Alive"), true),
        ("HTTP/1.0", Some("close"), false),
        ("HTTP/1.0", Some("keep-alive, close"), false),
        ("HTTP/1.0", Some("x-foo, keep-alive"), true),
    ];
    for (version, conn, want) in cases {
        let mut req = format!("GET / {version}\r\nHost: a\r\n");
        if let Some(c) = conn {
            req.push_str(&format!("Connection: {c}\r\n"));
        }
        req.push_str("\r\n");
        let h = parse_ok(&req);
        assert_eq!(h.keep_alive, want, "{version} Connection: {conn:?}");
    }
    // Two Connection lines combine.
    let h = parse_ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: close\r\n\r\n");
    assert!(!h.keep_alive);
}

#[test]
fn http10_without_host_is_fine() {
    let h = parse_ok("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.host, None);
    assert_eq!(h.version, Version::Http10);
    assert!(!h.keep_alive);
}

#[test]
fn expect_continue_only_on_11() {
    let h =
        parse_ok("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
    assert!(h.expect_continue);
    let h = parse_ok("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(!h.expect_continue);
}

#[test]
fn absolute_form_target_sets_host() {
    let h = parse_ok("GET http://Other.example:8080/p?q HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.host.as_deref(), Some("Other.example:8080"));
    assert_eq!(h.host_name(), Some("Other.example"));
    let h = parse_ok("GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n");
    assert_eq!(h.host_name(), Some("::1"));
    let h = parse_ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.target, "*");
}

#[test]
fn hop_by_hop_stripping_includes_connection_listed_names() {
    for name in [
        "Connection",
        "keep-alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "UPGRADE",
    ] {
        assert!(is_hop_by_hop(name), "{name}");
    }
    assert!(!is_hop_by_hop("Content-Length"));
    assert!(!is_hop_by_hop("Host"));

    let mut h = parse_ok(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, close\r\nConnection: x-other\r\nX-Secret: 1\r\nX-Other: 2\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: websocket\r\nX-Keep: 3\r\nAccept: */*\r\n\r\n",
    );
    h.strip_hop_by_hop();
    let names: Vec<&str> = h.headers.iter().map(HeaderField::name).collect();
    assert_eq!(names, ["Host", "X-Keep", "Accept"]);

    // A chunked request keeps exactly one normalized TE so cloudflared forwards the body.
    let mut h = parse_ok(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , Chunked\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
    );
    h.strip_hop_by_hop();
    let fields: Vec<(&str, &[u8])> = h.headers.iter().map(|f| (f.name(), f.value())).collect();
    assert_eq!(
        fields,
        [
            ("Host", &b"a"[..]),
            ("X-B", b"2"),
            ("Transfer-Encoding", b"chunked")
        ]
    );

    // The same helper works on response metadata.
    let mut resp: Vec<(String, String)> = vec![
        ("Content-Type".into(), "text/plain".into()),
        ("Connection".into(), "keep-alive, X-Hop".into()),
        ("x-hop".into(), "1".into()),
        ("Keep-Alive".into(), "timeout=5".into()),
        ("Transfer-Encoding".into(), "chunked".into()),
        ("Set-Cookie".into(), "a=b".into()),
    ];
    strip_hop_by_hop(&mut resp);
    let names: Vec<&str> = resp.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Content-Type", "Set-Cookie"]);
}

#[test]
fn connection_cannot_make_length_or_host_hop_by_hop() {
    // `Connection: Content-Length` once made the edge forward a body without its length:
    // the client got 200 and the origin read nothing.
    let mut h = parse_ok(
        "POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, host, X-Drop\r\nContent-Length: 5\r\nX-Drop: 1\r\n\r\n",
    );
    assert_eq!(h.body, BodyKind::Length(5));
    h.strip_hop_by_hop();
    let names: Vec<&str> = h.headers.iter().map(HeaderField::name).collect();
    assert_eq!(names, ["Host", "Content-Length"]);
    let mut resp: Vec<(String, String)> = vec![
        ("Connection".into(), "content-length".into()),
        ("Content-Length".into(), "2".into()),
    ];
    strip_hop_by_hop(&mut resp);
    assert_eq!(resp, [("Content-Length".to_owned(), "2".to_owned())]);
}

#[test]
fn header_values_share_one_allocation() {
    let h = parse_ok("GET / HTTP/1.1\r\nHost: a\r\nX-A: hello\r\nX-B: world\r\n\r\n");
    let a = h.headers[1].value_bytes().as_ptr() as usize;
    let b = h.headers[2].value_bytes().as_ptr() as usize;
    // Both point into the same copied head, 12 bytes apart ("hello\r\nX-B: ").
    assert_eq!(b - a, 12);
}

#[test]
fn content_length_parser() {
    assert_eq!(parse_content_length(b"0"), Some(0));
    assert_eq!(parse_content_length(b"123"), Some(123));
    assert_eq!(parse_content_length(b""), None);
    assert_eq!(parse_content_length(b"+1"), None);
    assert_eq!(parse_content_length(b" 1"), None);
    assert_eq!(
        parse_content_length(b"18446744073709551615"),
        Some(u64::MAX)
    );
    assert_eq!(parse_content_length(b"18446744073709551616"), None);
    assert_eq!(parse_content_length("１".as_bytes()), None);
}

#[test]
fn fuzz_random_heads_never_panic() {
    use crate::http::test_util::Rng;
    const PIECES: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"/",
        b"*",
        b"http://a/",
        b" HTTP/1.1",
        b" HTTP/1.0",
        b"\r\n",
        b"\n",
        b"\r",
        b": ",
        b":",
        b" ",
        b"\t",
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Connection",
        b"chunked",
        b"close",
        b"keep-alive",
        b",",
        b"5",
        b"99999999999999999999999",
        b"\0",
        b"\xff",
        b"[::1]",
    ];
    let small = Limits {
        max_head_bytes: 256,
        max_headers: 8,
    };
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut ok = 0;
    // 20 000 cases: enough to reach every branch many times, fast in debug builds.
    for i in 0..20_000 {
        let mut buf = Vec::new();
        let parts = rng.below(40);
        for _ in 0..parts {
            if rng.below(4) == 0 {
                buf.push(rng.next() as u8);
            } else {
                buf.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
        }
        if i % 3 == 0 {
            buf.extend_from_slice(b"\r\n\r\n");
        }
        let limits = if i % 2 == 0 { small } else { Limits::default() };
        if let Ok(Some((head, n))) = parse_request_head(&buf, &limits) {
            ok += 1;
            assert!(n <= buf.len());
            assert!(n <= limits.max_head_bytes);
            assert!(head.headers.len() <= limits.max_headers);
        }
    }
    // Sanity: the generator does produce some valid heads, so the success path is fuzzed.
    assert!(ok > 0);
}
