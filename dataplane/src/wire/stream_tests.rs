//! Tests of the data-stream preambles, `ConnectRequest` / `ConnectResponse` and metadata.

use super::*;

fn req_fixture() -> ConnectRequest {
    ConnectRequest {
        dest: "http://a/".into(),
        kind: ConnectionType::Websocket,
        metadata: vec![("HttpMethod".into(), "GET".into())],
    }
}

/// The exact bytes of `req_fixture()`, laid out by hand from the schema:
/// ConnectRequest is 1 data word (type: UInt16 at bit 0) + 2 pointers (dest, metadata);
/// Metadata is 0 data words + 2 pointers (key, val).
#[rustfmt::skip]
const REQ_FIXTURE: [u8; 8 + 8 + 96] = [
    // signature, version "01"
    0x0A, 0x36, 0xCD, 0x12, 0xA1, 0x3E, b'0', b'1',
    // segment table: 1 segment (count-1 = 0), 12 words
    0, 0, 0, 0, 12, 0, 0, 0,
    // w0: root struct pointer: offset 0, 1 data word, 2 pointers
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00,
    // w1: data: type = websocket (1)
    0x01, 0, 0, 0, 0, 0, 0, 0,
    // w2: dest: list pointer, offset 1 (-> w4), byte elements (2), 10 elements
    0x05, 0, 0, 0, 0x52, 0, 0, 0,
    // w3: metadata: list pointer, offset 2 (-> w6), composite (7), 2 words
    0x09, 0, 0, 0, 0x17, 0, 0, 0,
    // w4-5: "http://a/\0" padded
    b'h', b't', b't', b'p', b':', b'/', b'/', b'a', b'/', 0, 0, 0, 0, 0, 0, 0,
    // w6: composite tag: 1 element, 0 data words, 2 pointers
    0x04, 0, 0, 0, 0x00, 0x00, 0x02, 0x00,
    // w7: key: offset 1 (-> w9), bytes, 11 elements
    0x05, 0, 0, 0, 0x5A, 0, 0, 0,
    // w8: val: offset 2 (-> w11), bytes, 4 elements
    0x09, 0, 0, 0, 0x22, 0, 0, 0,
    // w9-10: "HttpMethod\0" padded
    b'H', b't', b't', b'p', b'M', b'e', b't', b'h', b'o', b'd', 0, 0, 0, 0, 0, 0,
    // w11: "GET\0" padded
    b'G', b'E', b'T', 0, 0, 0, 0, 0,
];

#[test]
fn wire_request_fixture_exact_bytes() {
    let bytes = encode_request(&req_fixture());
    assert_eq!(&bytes[..], &REQ_FIXTURE[..]);
    let mut dec = StreamHeaderDecoder::<ConnectRequest>::new();
    match dec.push(&REQ_FIXTURE).unwrap() {
        Decoded::Done(m, rest) => {
            assert_eq!(m, req_fixture());
            assert!(rest.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

/// A ConnectResponse built by hand in a layout our encoder never produces (metadata list
/// before the error text, a far-away text, a trailing padding word): decoding follows the
/// pointers, not the order.
#[rustfmt::skip]
const RESP_HAND: [u8; 8 + 8 + 88] = [
    0x0A, 0x36, 0xCD, 0x12, 0xA1, 0x3E, b'0', b'1',
    // 1 segment, 11 words
    0, 0, 0, 0, 11, 0, 0, 0,
    // w0: root: offset 0, 0 data, 2 pointers
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
    // w1: error -> w9 (offset 7): (7<<2)|1 = 0x1D, bytes, 5 elements ("oops\0"): 2|(5<<3)=0x2A
    0x1D, 0, 0, 0, 0x2A, 0, 0, 0,
    // w2: metadata -> w3 (offset 0), composite, 2 words: 0x01 / 0x17
    0x01, 0, 0, 0, 0x17, 0, 0, 0,
    // w3: tag: 1 element, 0 data, 2 pointers
    0x04, 0, 0, 0, 0x00, 0x00, 0x02, 0x00,
    // w4: key -> w6 (offset 1), 11 bytes ("HttpStatus\0"): 2|(11<<3)=0x5A
    0x05, 0, 0, 0, 0x5A, 0, 0, 0,
    // w5: val -> w8 (offset 2), 4 bytes ("502\0"): 0x22
    0x09, 0, 0, 0, 0x22, 0, 0, 0,
    // w6-7: "HttpStatus\0"
    b'H', b't', b't', b'p', b'S', b't', b'a', b't', b'u', b's', 0, 0, 0, 0, 0, 0,
    // w8: "502\0"
    b'5', b'0', b'2', 0, 0, 0, 0, 0,
    // w9: "oops\0"
    b'o', b'o', b'p', b's', 0, 0, 0, 0,
    // w10: unused padding word
    0, 0, 0, 0, 0, 0, 0, 0,
];

#[test]
fn wire_response_hand_built_fixture_decodes() {
    let mut input = RESP_HAND.to_vec();
    input.extend_from_slice(b"body");
    let mut dec = StreamHeaderDecoder::<ConnectResponse>::new();
    match dec.push(&input).unwrap() {
        Decoded::Done(m, rest) => {
            assert_eq!(m.error, "oops");
            assert_eq!(
                m.metadata,
                vec![("HttpStatus".to_owned(), Bytes::from_static(b"502"))]
            );
            assert_eq!(&rest[..], b"body");
            assert_eq!(parse_response_metadata(&m.metadata).unwrap().0, 502);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wire_response_fixture_exact_bytes() {
    // Empty error stays a null pointer; one metadata entry.
    let resp = ConnectResponse {
        error: String::new(),
        metadata: vec![("HttpStatus".into(), "200".into())],
    };
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &[0x0A, 0x36, 0xCD, 0x12, 0xA1, 0x3E, b'0', b'1'][..],
        &[0, 0, 0, 0, 9, 0, 0, 0],
        // w0 root: 0 data, 2 pointers
        &[0, 0, 0, 0, 0, 0, 2, 0],
        // w1 error: null
        &[0; 8],
        // w2 metadata -> w3 (offset 0), composite, 2 words
        &[0x01, 0, 0, 0, 0x17, 0, 0, 0],
        // w3 tag
        &[0x04, 0, 0, 0, 0, 0, 2, 0],
        // w4 key -> w6, 11 bytes; w5 val -> w8, 4 bytes
        &[0x05, 0, 0, 0, 0x5A, 0, 0, 0],
        &[0x09, 0, 0, 0, 0x22, 0, 0, 0],
        b"HttpStatus\0\0\0\0\0\0",
        b"200\0\0\0\0\0",
    ]
    .concat();
    assert_eq!(&encode_response(&resp)[..], &expected[..]);
}

fn decode_all<M: HeaderMessage + fmt::Debug>(bytes: &[u8]) -> (M, Bytes) {
    match StreamHeaderDecoder::<M>::new().push(bytes).unwrap() {
        Decoded::Done(m, rest) => (m, rest),
        other => panic!("{other:?}"),
    }
}

#[test]
fn wire_round_trip_every_connection_type() {
    for kind in [
        ConnectionType::Http,
        ConnectionType::Websocket,
        ConnectionType::Tcp,
    ] {
        let req = ConnectRequest {
            dest: "https://example.com/päth?q=1".into(),
            kind,
            metadata: http_request_metadata(
                "POST",
                "example.com",
                [("Content-Length", "3"), ("Accept", "a"), ("Accept", "b")],
            ),
        };
        let (got, rest) = decode_all::<ConnectRequest>(&encode_request(&req));
        assert_eq!(got, req);
        assert!(rest.is_empty());
    }
    // Empty everything.
    let req = ConnectRequest {
        dest: String::new(),
        kind: ConnectionType::Http,
        metadata: vec![],
    };
    assert_eq!(decode_all::<ConnectRequest>(&encode_request(&req)).0, req);
}

#[test]
fn wire_round_trip_responses() {
    for resp in [
        ConnectResponse::default(),
        ConnectResponse {
            error: "dial tcp: connection refused".into(),
            metadata: http_response_metadata(502, [("a", "b")]),
        },
        ConnectResponse {
            error: String::new(),
            metadata: http_response_metadata(
                200,
                [
                    ("Set-Cookie", "a=1"),
                    ("Set-Cookie", "b=2"),
                    ("Connection", "keep-alive"),
                ],
            ),
        },
    ] {
        let (got, _) = decode_all::<ConnectResponse>(&encode_response(&resp));
        assert_eq!(got, resp);
    }
}

#[test]
fn wire_multi_segment_message_decodes() {
    // A builder with a tiny first segment spreads the message over several segments.
    let req = ConnectRequest {
        dest: "http://x/".repeat(20),
        kind: ConnectionType::Tcp,
        metadata: (0..10)
            .map(|i| (format!("k{i}"), Bytes::from("v".repeat(i * 7))))
            .collect(),
    };
    let mut message = capnp::message::Builder::new(
        capnp::message::HeapAllocator::new()
            .first_segment_words(4)
            .allocation_strategy(capnp::message::AllocationStrategy::FixedSize),
    );
    {
        let mut root = message.init_root::<schema::connect_request::Builder>();
        root.set_dest(req.dest.as_str());
        root.set_type(schema::ConnectionType::Tcp);
        write_metadata(root.init_metadata(10), &req.metadata);
    }
    assert!(message.get_segments_for_output().len() > 1);
    let mut bytes = Vec::from(&DATA_STREAM_SIGNATURE[..]);
    bytes.extend_from_slice(VERSION);
    capnp::serialize::write_message(&mut bytes, &message).unwrap();
    assert_eq!(decode_all::<ConnectRequest>(&bytes).0, req);
}

#[test]
fn wire_metadata_values_keep_raw_bytes() {
    // obs-text and bytes that are not UTF-8 cross the wire unchanged (no U+FFFD).
    let raw: &[u8] = b"caf\xe9 \xff\x80 \xc3\xa9";
    let req = ConnectRequest {
        dest: "http://h/".into(),
        kind: ConnectionType::Http,
        metadata: http_request_metadata("GET", "h", [("X-Raw", raw)]),
    };
    let (back, _) = decode_all::<ConnectRequest>(&encode_request(&req));
    let parsed = parse_request_metadata(&back.metadata).unwrap();
    assert_eq!(&parsed.headers[0].1[..], raw);
    let resp = ConnectResponse {
        error: String::new(),
        metadata: http_response_metadata(200, [("X-Raw", raw)]),
    };
    let (back, _) = decode_all::<ConnectResponse>(&encode_response(&resp));
    assert_eq!(
        &parse_response_metadata(&back.metadata).unwrap().1[0].1[..],
        raw
    );
    // Method and host must still be text.
    let bad = [("HttpMethod".to_owned(), Bytes::from_static(b"G\xffT"))];
    assert!(parse_request_metadata(&bad).is_err());
}

#[test]
fn wire_metadata_helpers_preserve_multi_values_in_order() {
    let headers = [
        ("Accept", "text/html"),
        ("X-Forwarded-For", "1.1.1.1"),
        ("Accept", "application/json"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    ];
    let meta = http_request_metadata("GET", "h.example", headers);
    assert_eq!(meta[0], ("HttpMethod".into(), "GET".into()));
    assert_eq!(meta[1], ("HttpHost".into(), "h.example".into()));
    assert_eq!(meta[2], ("HttpHeader:Accept".into(), "text/html".into()));
    assert_eq!(meta.len(), 2 + headers.len());
    let parsed = parse_request_metadata(&meta).unwrap();
    assert_eq!(parsed.method, "GET");
    assert_eq!(parsed.host, "h.example");
    let want: Vec<(String, Bytes)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    assert_eq!(parsed.headers, want);

    let meta = http_response_metadata(204, headers);
    assert_eq!(meta[0], ("HttpStatus".into(), "204".into()));
    let (status, hs) = parse_response_metadata(&meta).unwrap();
    assert_eq!(status, 204);
    assert_eq!(hs, want);

    // Unknown keys are ignored; malformed ones and a missing/bad status are errors.
    let mut meta = http_response_metadata(200, [("a", "b")]);
    meta.push(("FlowID".into(), "x".into()));
    assert_eq!(parse_response_metadata(&meta).unwrap().1.len(), 1);
    assert!(parse_response_metadata(&[("HttpHeader:a".into(), "b".into())]).is_err());
    assert!(parse_response_metadata(&[("HttpStatus".into(), "abc".into())]).is_err());
    assert!(parse_response_metadata(&[("HttpStatus".into(), "99".into())]).is_err());
    assert!(parse_request_metadata(&[("HttpHeader:".into(), "b".into())]).is_err());
    assert!(parse_request_metadata(&[("HttpHost".into(), "h".into())]).is_err());
}

#[test]
fn wire_decoder_byte_by_byte() {
    let req = ConnectRequest {
        dest: "http://origin/x".into(),
        kind: ConnectionType::Http,
        metadata: http_request_metadata("PUT", "origin", [("Content-Length", "5")]),
    };
    let mut input = encode_request(&req).to_vec();
    let header_len = input.len();
    input.extend_from_slice(b"hello");
    let mut dec = StreamHeaderDecoder::<ConnectRequest>::new();
    for (i, b) in input.iter().enumerate() {
        match dec.push(std::slice::from_ref(b)).unwrap() {
            Decoded::NeedMore => assert!(i + 1 < header_len, "NeedMore at {i}"),
            Decoded::Done(m, rest) => {
                assert_eq!(i + 1, header_len);
                assert_eq!(m, req);
                assert!(rest.is_empty());
                break;
            }
            Decoded::Rpc(_) => panic!("rpc"),
        }
    }
    assert!(matches!(dec.push(b"x"), Err(WireError::Finished)));
}

#[test]
fn wire_decoder_leftover_body_in_same_buffer() {
    let resp = ConnectResponse {
        error: String::new(),
        metadata: http_response_metadata(200, [("a", "b")]),
    };
    let mut input = encode_response(&resp).to_vec();
    input.extend_from_slice(b"the body starts here");
    // Zero-copy path.
    let mut dec = StreamHeaderDecoder::<ConnectResponse>::new();
    match dec.feed(Bytes::from(input.clone())).unwrap() {
        Decoded::Done(m, rest) => {
            assert_eq!(m, resp);
            assert_eq!(&rest[..], b"the body starts here");
        }
        other => panic!("{other:?}"),
    }
    // Split in two chunks at every point.
    for split in 0..input.len() {
        let mut dec = StreamHeaderDecoder::<ConnectResponse>::new();
        let first = dec.feed(Bytes::copy_from_slice(&input[..split])).unwrap();
        let (m, rest) = match first {
            Decoded::Done(m, rest) => {
                let mut rest = rest.to_vec();
                rest.extend_from_slice(&input[split..]);
                (m, Bytes::from(rest))
            }
            Decoded::NeedMore => match dec.feed(Bytes::copy_from_slice(&input[split..])).unwrap() {
                Decoded::Done(m, rest) => (m, rest),
                other => panic!("{other:?}"),
            },
            Decoded::Rpc(_) => panic!("rpc"),
        };
        assert_eq!(m, resp);
        assert_eq!(&rest[..], b"the body starts here");
    }
}

#[test]
fn wire_truncated_at_every_prefix() {
    let req = ConnectRequest {
        dest: "tcp://10.0.0.1:22".into(),
        kind: ConnectionType::Tcp,
        metadata: http_request_metadata("GET", "h", [("a", "1"), ("b", "2")]),
    };
    let full = encode_request(&req);
    for len in 0..full.len() {
        let mut dec = StreamHeaderDecoder::<ConnectRequest>::new();
        assert!(
            matches!(dec.push(&full[..len]), Ok(Decoded::NeedMore)),
            "prefix {len}"
        );
        let mut dec = StreamHeaderDecoder::<ConnectRequest>::new();
        assert!(
            matches!(dec.feed(full.slice(..len)), Ok(Decoded::NeedMore)),
            "prefix {len}"
        );
    }
    // Corrupting any single byte of the message never panics.
    for i in PREAMBLE_LEN..full.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = full.to_vec();
            bad[i] ^= flip;
            let _ = StreamHeaderDecoder::<ConnectRequest>::new().push(&bad);
            let _ = StreamHeaderDecoder::<ConnectResponse>::new().push(&bad);
        }
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn wire_random_garbage_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..5000 {
        let len = (rng.next() % 300) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Most rounds get a valid preamble so the segment table and message are exercised.
        if round % 4 != 0 && buf.len() >= PREAMBLE_LEN {
            buf[..6].copy_from_slice(&DATA_STREAM_SIGNATURE);
            buf[6..8].copy_from_slice(VERSION);
            if round % 3 == 0 && buf.len() >= 16 {
                // A plausible table: one segment that fits in the buffer.
                let words = ((buf.len() - 16) / 8) as u32;
                buf[8..12].copy_from_slice(&0u32.to_le_bytes());
                buf[12..16].copy_from_slice(&words.to_le_bytes());
            }
        }
        let mut dec = StreamHeaderDecoder::<ConnectRequest>::new().accepting_rpc();
        let _ = dec.push(&buf);
        assert!(dec.buffered() <= buf.len());
        let mut dec = StreamHeaderDecoder::<ConnectResponse>::new();
        let _ = dec.feed(Bytes::from(buf));
    }
}

#[test]
fn wire_wrong_signature_and_version() {
    let mut bad = encode_request(&req_fixture()).to_vec();
    bad[0] = 0x0B;
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new().push(&bad),
        Err(WireError::BadSignature(_))
    ));
    let mut bad = encode_request(&req_fixture()).to_vec();
    bad[7] = b'2';
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new().push(&bad),
        Err(WireError::BadVersion([b'0', b'2']))
    ));
    // An RPC stream: rejected unless accepted; when accepted the rest is handed back.
    let mut rpc = RPC_STREAM_SIGNATURE.to_vec();
    rpc.extend_from_slice(b"\0\0\0\0capnp");
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new().push(&rpc),
        Err(WireError::UnexpectedRpcStream)
    ));
    match StreamHeaderDecoder::<ConnectRequest>::new()
        .accepting_rpc()
        .push(&rpc)
        .unwrap()
    {
        Decoded::Rpc(rest) => assert_eq!(&rest[..], b"\0\0\0\0capnp"),
        other => panic!("{other:?}"),
    }
    // The data signature still works on an accepting decoder.
    let (m, _) = match StreamHeaderDecoder::<ConnectRequest>::new()
        .accepting_rpc()
        .push(&REQ_FIXTURE)
        .unwrap()
    {
        Decoded::Done(m, rest) => (m, rest),
        other => panic!("{other:?}"),
    };
    assert_eq!(m, req_fixture());
}

#[test]
fn wire_oversize_segment_table() {
    let preamble = [&DATA_STREAM_SIGNATURE[..], VERSION].concat();
    // u32::MAX segments.
    let mut bad = preamble.clone();
    bad.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new().push(&bad),
        Err(WireError::TooManySegments(_))
    ));
    // One segment of 2^32-1 words: rejected from the table alone, before any data.
    let mut bad = preamble.clone();
    bad.extend_from_slice(&0u32.to_le_bytes());
    bad.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new().push(&bad),
        Err(WireError::MessageTooLarge { .. })
    ));
    // Several segments that add up past the limit.
    let mut bad = preamble.clone();
    bad.extend_from_slice(&3u32.to_le_bytes());
    for _ in 0..4 {
        bad.extend_from_slice(&40_000u32.to_le_bytes());
    }
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new().push(&bad),
        Err(WireError::MessageTooLarge { .. })
    ));
    // A custom limit below a real message.
    let ok = encode_request(&req_fixture());
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new()
            .with_max_message_bytes(64)
            .push(&ok),
        Err(WireError::MessageTooLarge { .. })
    ));
}

#[test]
fn wire_rejects_unknown_connection_type_and_bad_utf8_dest() {
    let mut bad = REQ_FIXTURE;
    bad[8 + 16] = 7; // type = 7
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new().push(&bad),
        Err(WireError::Invalid(_))
    ));
    let mut bad = REQ_FIXTURE;
    bad[8 + 8 + 32] = 0xFF; // first byte of dest
    assert!(matches!(
        StreamHeaderDecoder::<ConnectRequest>::new().push(&bad),
        Err(WireError::Invalid(_))
    ));
}
