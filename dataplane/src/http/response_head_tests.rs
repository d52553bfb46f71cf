use super::*;
use crate::http::body::{BodyDecoder, ChunkedLimits, DecodeEvent};

fn reader(head_request: bool) -> ResponseHeadReader {
    ResponseHeadReader::new(head_request, Limits::default())
}

/// The final head of `input` (given whole), or its error.
fn summary(input: &[u8], head_request: bool) -> Result<ResponseSummary, ResponseHeadError> {
    let mut buf = BytesMut::from(input);
    let s = reader(head_request).read_summary(&mut buf)?;
    Ok(s.expect("complete head"))
}

fn framing(input: &str) -> Result<BodyFraming, ResponseHeadError> {
    summary(input.as_bytes(), false).map(|s| s.framing)
}

/// One exchange's worth of client state: the head reader, then the body decoder.
enum State {
    Head(ResponseHeadReader),
    Body(ResponseSummary, BodyDecoder),
}

/// Feeds `input` in pieces of `step` bytes through summary + body skipping (loadgen's way)
/// and returns every complete response; at the end of input the stream is closed.
fn read_all_counting(input: &[u8], step: usize) -> Vec<ResponseSummary> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut state = State::Head(reader(false));
    for chunk in input.chunks(step) {
        buf.extend_from_slice(chunk);
        // Bound: each round completes a head or a body, or breaks for more input.
        loop {
            match &mut state {
                State::Head(r) => match r.read_summary(&mut buf).unwrap() {
                    None => break,
                    Some(s) => {
                        let dec = BodyDecoder::for_response(s.framing, ChunkedLimits::default());
                        state = State::Body(s, dec);
                    }
                },
                State::Body(s, dec) => {
                    if !dec.skip(&mut buf).unwrap() {
                        break;
                    }
                    out.push(*s);
                    state = State::Head(reader(false));
                }
            }
        }
    }
    if let State::Body(s, dec) = state
        && dec.complete_at_eof()
    {
        out.push(s);
    }
    out
}

/// The same through full heads and payload-yielding decoding (the connector's way):
/// (status, reason, fields, body) per response.
type Full = (u16, Bytes, Vec<HeaderField>, Vec<u8>);

fn read_all_full(input: &[u8], step: usize) -> Vec<Full> {
    let mut buf = BytesMut::new();
    let mut out: Vec<Full> = Vec::new();
    let mut head_reader = reader(false);
    let mut current: Option<(Full, BodyDecoder)> = None;
    for chunk in input.chunks(step) {
        buf.extend_from_slice(chunk);
        // Bound: as in read_all_counting.
        loop {
            match &mut current {
                None => match head_reader.read_head(&mut buf).unwrap() {
                    None => break,
                    Some(h) => {
                        let dec = BodyDecoder::for_response(h.framing, ChunkedLimits::default());
                        current = Some(((h.status, h.reason, h.headers, Vec::new()), dec));
                    }
                },
                Some((full, dec)) => match dec.decode(&mut buf).unwrap() {
                    DecodeEvent::Data(d) => full.3.extend_from_slice(&d),
                    DecodeEvent::NeedMore => break,
                    DecodeEvent::End => out.push(current.take().expect("current").0),
                },
            }
        }
    }
    if let Some((full, dec)) = current
        && dec.complete_at_eof()
    {
        out.push(full);
    }
    out
}

const SEQUENCE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
    HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: one\r\n\r\nhello\
    HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
    HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nT: v\r\n\r\n\
    HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n\
    HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n\
    HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the end";

#[test]
fn a_sequence_of_responses_split_at_every_byte_counting() {
    for step in 1..=SEQUENCE.len() {
        let got = read_all_counting(SEQUENCE, step);
        let statuses: Vec<u16> = got.iter().map(|d| d.status).collect();
        assert_eq!(statuses, [200, 404, 204, 500, 200], "step {step}");
        let keep: Vec<bool> = got.iter().map(|d| d.keep_alive).collect();
        assert_eq!(keep, [true, true, true, false, false], "step {step}");
        assert_eq!(got[4].framing, BodyFraming::CloseDelimited);
        assert_eq!(got[4].version, Version::Http10);
    }
}

#[test]
fn a_sequence_of_responses_split_at_every_byte_with_fields() {
    let whole = read_all_full(SEQUENCE, SEQUENCE.len());
    for step in 1..=SEQUENCE.len() {
        assert_eq!(read_all_full(SEQUENCE, step), whole, "step {step}");
    }
    let (status, reason, fields, body) = &whole[0];
    assert_eq!((*status, &reason[..]), (200, &b"OK"[..]));
    assert_eq!(fields.len(), 2);
    assert_eq!((fields[1].name(), fields[1].value()), ("X-A", &b"one"[..]));
    assert_eq!(body, b"hello");
    assert_eq!(
        whole[1].3, b"abc",
        "chunked framing, extension and trailer removed"
    );
    assert_eq!(whole[1].1, "Not Found");
    assert!(whole[2].3.is_empty());
    assert_eq!(whole[4].3, b"until the end");
}

#[test]
fn no_body_for_head_requests_1xx_204_304() {
    let s = summary(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true).unwrap();
    assert_eq!((s.framing, s.keep_alive), (BodyFraming::None, true));
    let s = summary(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        true,
    )
    .unwrap();
    assert_eq!(s.framing, BodyFraming::None);
    for status in ["204 No Content", "304 Not Modified"] {
        let head = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(framing(&head), Ok(BodyFraming::None), "{status}");
    }
    // 101 is final (the connection changes protocol) and never reusable as HTTP.
    let s = summary(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(
        (s.status, s.framing, s.keep_alive),
        (101, BodyFraming::None, false)
    );
}

#[test]
fn framing_chunked_length_and_close_delimited() {
    let cases: [(&str, Result<BodyFraming, ResponseHeadError>); 14] = [
        ("Content-Length: 12", Ok(BodyFraming::Length(12))),
        ("Content-Length: 0", Ok(BodyFraming::Length(0))),
        ("Content-Length:  7 ", Ok(BodyFraming::Length(7))),
        (
            "Content-Length: 5\r\nContent-Length: 5",
            Ok(BodyFraming::Length(5)),
        ),
        ("X-None: 1", Ok(BodyFraming::CloseDelimited)),
        ("Transfer-Encoding: chunked", Ok(BodyFraming::Chunked)),
        ("Transfer-Encoding: CHUNKED", Ok(BodyFraming::Chunked)),
        ("Transfer-Encoding: gzip, chunked", Ok(BodyFraming::Chunked)),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked,",
            Ok(BodyFraming::Chunked),
        ),
        (
            "Transfer-Encoding: chunked, gzip",
            Ok(BodyFraming::CloseDelimited),
        ),
        ("Transfer-Encoding: gzip", Ok(BodyFraming::CloseDelimited)),
        ("Transfer-Encoding: ", Ok(BodyFraming::CloseDelimited)),
        // Transfer-Encoding overrides a (valid) Content-Length.
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 10",
            Ok(BodyFraming::Chunked),
        ),
        (
            "Content-Length: 10\r\nTransfer-Encoding: gzip",
            Ok(BodyFraming::CloseDelimited),
        ),
    ];
    for (fields, want) in cases {
        let head = format!("HTTP/1.1 200 OK\r\n{fields}\r\n\r\n");
        assert_eq!(framing(&head), want, "{fields:?}");
    }
}

#[test]
fn content_length_that_could_be_read_two_ways_is_an_error() {
    use ResponseHeadError::{ConflictingContentLength as Conflict, InvalidContentLength as Bad};
    let cases: [(&str, ResponseHeadError); 10] = [
        ("Content-Length: 5\r\nContent-Length: 6", Conflict),
        ("Content-Length: 5, 5", Bad),
        ("Content-Length: 5,", Bad),
        ("Content-Length: ", Bad),
        ("Content-Length: -1", Bad),
        ("Content-Length: +5", Bad),
        ("Content-Length: x", Bad),
        ("Content-Length: 0x10", Bad),
        ("Content-Length: 123456789012345678901", Bad),
        ("Content-Length: 99999999999999999999", Bad),
    ];
    for (fields, want) in cases {
        let head = format!("HTTP/1.1 200 OK\r\n{fields}\r\n\r\n");
        assert_eq!(framing(&head), Err(want), "{fields:?}");
        // Checked even where the length frames nothing.
        let head = format!("HTTP/1.1 304 Not Modified\r\n{fields}\r\n\r\n");
        assert_eq!(framing(&head), Err(want), "304 {fields:?}");
    }
}

#[test]
fn keep_alive_matrix() {
    let cases: [(&str, bool); 9] = [
        ("HTTP/1.1 200 OK\r\nContent-Length: 0", true),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close",
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive, CLOSE",
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x\r\nConnection: close",
            false,
        ),
        ("HTTP/1.0 200 OK\r\nContent-Length: 0", false),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive",
            true,
        ),
        // `close` wins, whatever the order.
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: close\r\nConnection: keep-alive",
            false,
        ),
        // A body that runs to the close ends the connection with it.
        ("HTTP/1.1 200 OK", false),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", false),
    ];
    for (head, want) in cases {
        let s = summary(format!("{head}\r\n\r\n").as_bytes(), false).unwrap();
        assert_eq!(s.keep_alive, want, "{head:?}");
    }
}

#[test]
fn status_and_version() {
    assert_eq!(
        summary(b"HTTP/1.1 099 Low\r\n\r\n", false),
        Err(ResponseHeadError::InvalidStatus(99))
    );
    assert!(matches!(
        summary(b"HTTP/1.1 2000 Huge\r\n\r\n", false),
        Err(ResponseHeadError::Malformed(_))
    ));
    for garbage in [
        &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
        b"garbage garbage\r\n\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
    ] {
        assert!(
            matches!(
                summary(garbage, false),
                Err(ResponseHeadError::Malformed(_))
            ),
            "{garbage:?}"
        );
    }
    let s = summary(b"HTTP/1.0 599 Custom\r\nContent-Length: 1\r\n\r\n", false).unwrap();
    assert_eq!((s.status, s.version), (599, Version::Http10));
}

#[test]
fn lenient_field_syntax_is_normalised() {
    let input = b"HTTP/1.1 200 Fine Thanks\r\nX-Fold: a\r\n  b\r\nX-Sp : v\r\nX-Raw: \xe9t\xe9\r\nContent-Length: 0\r\n\r\n";
    let mut buf = BytesMut::from(&input[..]);
    let h = reader(false).read_head(&mut buf).unwrap().expect("head");
    assert!(buf.is_empty());
    assert_eq!(&h.reason[..], b"Fine Thanks");
    let get = |n: &str| {
        h.headers
            .iter()
            .find(|f| f.name() == n)
            .map(|f| f.value().to_vec())
    };
    assert_eq!(get("X-Fold").as_deref(), Some(&b"a   b"[..]));
    assert_eq!(get("X-Sp").as_deref(), Some(&b"v"[..]));
    assert_eq!(get("X-Raw").as_deref(), Some(&b"\xe9t\xe9"[..]));
    assert_eq!(h.framing, BodyFraming::Length(0));
}

#[test]
fn limits_hold_even_when_the_head_arrives_whole() {
    let limits = Limits {
        max_head_bytes: 256,
        max_headers: 4,
    };
    // Complete in one read but over the byte limit.
    let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
    big.extend_from_slice(format!("X-Big: {}\r\n\r\n", "v".repeat(300)).as_bytes());
    let mut buf = BytesMut::from(&big[..]);
    assert_eq!(
        ResponseHeadReader::new(false, limits).read_summary(&mut buf),
        Err(ResponseHeadError::TooLarge { limit: 256 })
    );
    // No line end yet, at the limit: an error, never "need more".
    let mut buf = BytesMut::from(&vec![b'a'; 256][..]);
    assert!(
        ResponseHeadReader::new(false, limits)
            .read_summary(&mut buf)
            .is_err()
    );
    // Below the limit: more, please.
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"[..]);
    assert_eq!(
        ResponseHeadReader::new(false, limits).read_summary(&mut buf),
        Ok(None)
    );
    let many = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n";
    let mut buf = BytesMut::from(many.as_bytes());
    assert_eq!(
        ResponseHeadReader::new(false, limits).read_head(&mut buf),
        Err(ResponseHeadError::TooManyHeaders { limit: 4 })
    );
}

#[test]
fn interim_responses_are_bounded_per_request() {
    let interim = b"HTTP/1.1 103 Early Hints\r\n\r\n";
    let mut input = interim.repeat(3);
    input.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let mut r = reader(false).with_max_interim(3);
    // The count starts again for each request on the connection.
    for _ in 0..3 {
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(
            r.read_summary(&mut buf).unwrap().map(|s| s.status),
            Some(200)
        );
    }
    let mut buf = BytesMut::from(&interim.repeat(4)[..]);
    assert_eq!(
        reader(false).with_max_interim(3).read_head(&mut buf),
        Err(ResponseHeadError::TooManyInterim { limit: 3 })
    );
}

#[test]
fn bodies_cut_short_or_malformed() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"[..]);
    let s = reader(false).read_summary(&mut buf).unwrap().expect("head");
    let mut dec = BodyDecoder::for_response(s.framing, ChunkedLimits::default());
    assert!(!dec.skip(&mut buf).unwrap());
    assert!(!dec.complete_at_eof(), "a body cut short is not a response");

    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..]);
    let s = reader(false).read_summary(&mut buf).unwrap().expect("head");
    let mut dec = BodyDecoder::for_response(s.framing, ChunkedLimits::default());
    assert!(dec.skip(&mut buf).is_err());
}
