use super::*;
use crate::http::fields::Limits;
use crate::http::request::parse_request_head;

fn ctx(version: Version, keep_alive: bool, head: bool) -> ResponseContext {
    ResponseContext {
        head_request: head,
        version,
        keep_alive,
    }
}

fn hdrs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn write(head: &ResponseHead, c: &ResponseContext) -> (String, bool, BodyFraming) {
    let framing = body_framing(c, head.status, &head.headers);
    let mut out = BytesMut::new();
    let persist = write_response_head(head, framing, c, &mut out).unwrap();
    (String::from_utf8(out.to_vec()).unwrap(), persist, framing)
}

#[test]
fn no_body_framing_for_head_204_304_1xx() {
    let h = hdrs(&[("Content-Length", "10")]);
    let c11 = ctx(Version::Http11, true, false);
    assert_eq!(
        body_framing(&ctx(Version::Http11, true, true), 200, &h),
        BodyFraming::None
    );
    assert_eq!(body_framing(&c11, 204, &h), BodyFraming::None);
    assert_eq!(body_framing(&c11, 304, &h), BodyFraming::None);
    assert_eq!(body_framing(&c11, 101, &h), BodyFraming::None);
    assert_eq!(body_framing(&c11, 200, &h), BodyFraming::Length(10));
}

#[test]
fn framing_for_unknown_length() {
    let none: Vec<(String, String)> = Vec::new();
    let te = hdrs(&[("Transfer-Encoding", "chunked"), ("Content-Length", "10")]);
    let bad = hdrs(&[("Content-Length", "abc")]);
    let conflict = hdrs(&[("Content-Length", "1"), ("Content-Length", "2")]);
    let same = hdrs(&[("Content-Length", "3, 3")]);
    let c11 = ctx(Version::Http11, true, false);
    let c10 = ctx(Version::Http10, true, false);
    assert_eq!(body_framing(&c11, 200, &none), BodyFraming::Chunked);
    assert_eq!(body_framing(&c10, 200, &none), BodyFraming::CloseDelimited);
    assert_eq!(body_framing(&c11, 200, &te), BodyFraming::Chunked);
    assert_eq!(body_framing(&c10, 200, &te), BodyFraming::CloseDelimited);
    assert_eq!(body_framing(&c11, 200, &bad), BodyFraming::Chunked);
    assert_eq!(body_framing(&c11, 200, &conflict), BodyFraming::Chunked);
    assert_eq!(body_framing(&c11, 200, &same), BodyFraming::Length(3));
}

#[test]
fn head_serialization_strips_hop_by_hop_and_reframes() {
    let head = ResponseHead {
        status: 200,
        reason: None,
        headers: hdrs(&[
            ("Content-Type", "text/html"),
            ("Connection", "keep-alive, X-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Hop", "secret"),
            ("Transfer-Encoding", "chunked"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("X-Evil", "a\r\nInjected: yes"),
            ("Bad Name", "x"),
        ]),
    };
    let (text, persist, framing) = write(&head, &ctx(Version::Http11, true, false));
    assert_eq!(framing, BodyFraming::Chunked);
    assert!(persist);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
}

#[test]
fn connection_header_matrix() {
    let head = ResponseHead {
        status: 200,
        reason: None,
        headers: hdrs(&[("Content-Length", "2")]),
    };
    let (t, p, _) = write(&head, &ctx(Version::Http11, true, false));
    assert!(p);
    assert_eq!(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
    let (t, p, _) = write(&head, &ctx(Version::Http11, false, false));
    assert!(!p);
    assert!(t.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"));
    let (t, p, _) = write(&head, &ctx(Version::Http10, true, false));
    assert!(p);
    assert!(t.ends_with("Connection: keep-alive\r\n\r\n"));
    let (t, p, _) = write(&head, &ctx(Version::Http10, false, false));
    assert!(!p);
    assert!(t.ends_with("Connection: close\r\n\r\n"));
    // Close-delimited bodies force close even for a keep-alive 1.0 client.
    let head = ResponseHead {
        status: 200,
        reason: None,
        headers: hdrs(&[("Content-Type", "text/plain")]),
    };
    let (t, p, f) = write(&head, &ctx(Version::Http10, true, false));
    assert_eq!(f, BodyFraming::CloseDelimited);
    assert!(!p);
    assert_eq!(
        t,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn head_and_304_keep_content_length_204_does_not() {
    let h = hdrs(&[("Content-Length", "1234"), ("ETag", "\"x\"")]);
    let head = ResponseHead {
        status: 200,
        reason: None,
        headers: h.clone(),
    };
    let (t, _, f) = write(&head, &ctx(Version::Http11, true, true));
    assert_eq!(f, BodyFraming::None);
    assert_eq!(
        t,
        "HTTP/1.1 200 OK\r\nETag: \"x\"\r\nContent-Length: 1234\r\n\r\n"
    );
    let head = ResponseHead {
        status: 304,
        reason: None,
        headers: h.clone(),
    };
    let (t, _, _) = write(&head, &ctx(Version::Http11, true, false));
    assert_eq!(
        t,
        "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 1234\r\n\r\n"
    );
    let head = ResponseHead {
        status: 204,
        reason: None,
        headers: h,
    };
    let (t, _, _) = write(&head, &ctx(Version::Http11, true, false));
    assert_eq!(t, "HTTP/1.1 204 No Content\r\nETag: \"x\"\r\n\r\n");
}

#[test]
fn upgrade_keeps_upgrade_header() {
    let head = ResponseHead {
        status: 101,
        reason: None,
        headers: hdrs(&[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "abc="),
        ]),
    };
    let (t, p, f) = write(&head, &ctx(Version::Http11, true, false));
    assert_eq!(f, BodyFraming::None);
    assert!(!p);
    assert_eq!(
        t,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: abc=\r\nConnection: upgrade\r\n\r\n"
    );
}

#[test]
fn reason_and_status_validation() {
    let mut out = BytesMut::new();
    let head: ResponseHead = ResponseHead {
        status: 42,
        reason: None,
        headers: vec![],
    };
    assert_eq!(
        write_response_head(
            &head,
            BodyFraming::None,
            &ResponseContext::unparsed(),
            &mut out
        ),
        Err(ResponseError::InvalidStatus(42))
    );
    let head: ResponseHead = ResponseHead {
        status: 299,
        reason: Some("Bad\r\nX: y".into()),
        headers: vec![],
    };
    let c = ctx(Version::Http11, true, false);
    write_response_head(&head, BodyFraming::Length(0), &c, &mut out).unwrap();
    assert_eq!(&out[..], b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n");
}

/// Splits a canned response into head text and body, checking Content-Length.
fn split(resp: &Bytes) -> (String, String) {
    let text = std::str::from_utf8(resp).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn canned_errors() {
    let keep = ctx(Version::Http11, true, false);
    let cases: [(EdgeError, u16, bool); 8] = [
        (EdgeError::BadRequest, 400, true),
        (EdgeError::NotFound, 404, false),
        (EdgeError::HeadTooLarge, 431, true),
        (EdgeError::NotImplemented, 501, true),
        (EdgeError::VersionNotSupported, 505, true),
        (EdgeError::BadGateway(GatewayFailure::Origin), 502, false),
        (EdgeError::BadGateway(GatewayFailure::Tunnel), 502, false),
        (EdgeError::TunnelUnavailable, 530, false),
    ];
    for (err, status, closes) in cases {
        let resp = error_response(err, &keep);
        let (head, body) = split(&resp);
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert_eq!(content_length(&head), body.len(), "{head}");
        assert_eq!(head.contains("Connection: close"), closes, "{head}");
    }
    let (_, body) = split(&error_response(EdgeError::TunnelUnavailable, &keep));
    assert!(body.contains("1033"));
    // A 502 says which side failed, in words, and nothing about addresses or OS errors.
    let (_, body) = split(&error_response(
        EdgeError::BadGateway(GatewayFailure::Origin),
        &keep,
    ));
    assert_eq!(
        body,
        "Bad Gateway: the origin is unreachable or failed to answer\n"
    );
    let (_, body) = split(&error_response(
        EdgeError::BadGateway(GatewayFailure::Tunnel),
        &keep,
    ));
    assert_eq!(body, "Bad Gateway: the tunnel connection failed\n");
    // HEAD: no body, Content-Length still describes it.
    let resp = error_response(EdgeError::NotFound, &ctx(Version::Http11, true, true));
    let (head, body) = split(&resp);
    assert!(body.is_empty());
    assert!(content_length(&head) > 0);
    // 1.0 keep-alive client keeps its connection on 404.
    let resp = error_response(EdgeError::NotFound, &ctx(Version::Http10, true, false));
    assert!(split(&resp).0.contains("Connection: keep-alive"));
}

#[test]
fn head_errors_map_to_canned_responses() {
    let limits = Limits {
        max_head_bytes: 100,
        max_headers: 4,
    };
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(200)
    );
    let cases: [(&str, u16); 4] = [
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (big.as_str(), 431),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        ("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    ];
    for (req, status) in cases {
        let e = parse_request_head(req.as_bytes(), &limits).unwrap_err();
        let resp = head_error_response(&e);
        let (head, _) = split(&resp);
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(head.contains("Connection: close"));
    }
}

#[test]
fn continue_bytes() {
    assert_eq!(&continue_100()[..], b"HTTP/1.1 100 Continue\r\n\r\n");
    let head: ResponseHead = ResponseHead {
        status: 100,
        reason: None,
        headers: vec![],
    };
    let mut out = BytesMut::new();
    let c = ctx(Version::Http11, true, false);
    assert!(write_response_head(&head, BodyFraming::None, &c, &mut out).unwrap());
    assert_eq!(&out[..], CONTINUE_100);
}
