use super::*;

/// Runs the decoder over `input` fed in pieces of `step` bytes; returns the payload and
/// the bytes left after End.
fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    // Bound: each outer iteration feeds `step` more bytes or finishes; the inner loop is
    // bounded by the decoder's own progress guarantee.
    loop {
        loop {
            match dec.decode(&mut buf)? {
                DecodeEvent::Data(d) => out.extend_from_slice(&d),
                DecodeEvent::NeedMore => break,
                DecodeEvent::End => {
                    buf.extend_from_slice(&input[fed..]);
                    return Ok((out, buf.to_vec()));
                }
            }
        }
        assert!(fed < input.len(), "decoder wants more than the input has");
        let end = (fed + step).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
    }
}

const BODY: &[u8] =
    b"5\r\nhello\r\n7;name=value;x=\"q\"\r\n, world\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\nX-Other: two\r\n\r\nGET /next";

#[test]
fn normal_body_with_extensions_and_trailers() {
    let (data, rest) = decode_in_steps(BODY, usize::MAX / 2).unwrap();
    assert_eq!(data, b"hello, worldabcdefghijklmnopqrstuvwxyz");
    // Trailers were dropped; the pipelined bytes remain.
    assert_eq!(rest, b"GET /next");
}

#[test]
fn split_at_every_byte() {
    for step in 1..=8 {
        let (data, rest) = decode_in_steps(BODY, step).unwrap();
        assert_eq!(
            data, b"hello, worldabcdefghijklmnopqrstuvwxyz",
            "step {step}"
        );
        assert_eq!(rest, b"GET /next");
    }
    // And every single split point into two pieces.
    let body_len = BODY.len() - b"GET /next".len();
    for cut in 0..body_len {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&BODY[..cut]);
        let mut out = Vec::new();
        // Bound: each decode returns Data (consuming bytes), NeedMore or End.
        loop {
            match dec.decode(&mut buf).unwrap() {
                DecodeEvent::Data(d) => out.extend_from_slice(&d),
                DecodeEvent::NeedMore => break,
                DecodeEvent::End => panic!("ended early at cut {cut}"),
            }
        }
        buf.extend_from_slice(&BODY[cut..body_len]);
        // Bound: as above; ends at End.
        while let DecodeEvent::Data(d) = dec.decode(&mut buf).unwrap() {
            out.extend_from_slice(&d);
        }
        assert!(dec.is_done(), "cut {cut}");
        assert!(buf.is_empty(), "cut {cut}");
        assert_eq!(out, b"hello, worldabcdefghijklmnopqrstuvwxyz");
    }
}

#[test]
fn zero_copy_data_points_into_input() {
    let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
    let base = buf.as_ptr() as usize;
    let mut dec = ChunkedDecoder::default();
    let DecodeEvent::Data(d) = dec.decode(&mut buf).unwrap() else {
        panic!("expected data");
    };
    assert_eq!(&d[..], b"hello");
    assert_eq!(
        d.as_ptr() as usize,
        base + 3,
        "payload must be a view of the input"
    );
    assert_eq!(dec.decode(&mut buf).unwrap(), DecodeEvent::End);
    assert!(buf.is_empty());

    let mut buf = BytesMut::from(&b"abcdefXYZ"[..]);
    let base = buf.as_ptr() as usize;
    let mut dec = LengthDecoder::new(6);
    let DecodeEvent::Data(d) = dec.decode(&mut buf) else {
        panic!("expected data");
    };
    assert_eq!(d.as_ptr() as usize, base);
    assert_eq!(&d[..], b"abcdef");
    assert_eq!(dec.decode(&mut buf), DecodeEvent::End);
    assert_eq!(&buf[..], b"XYZ");
}

#[test]
fn partial_chunk_data_is_delivered_early() {
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::from(&b"a\r\nhel"[..]);
    assert_eq!(
        dec.decode(&mut buf).unwrap(),
        DecodeEvent::Data(Bytes::from_static(b"hel"))
    );
    assert_eq!(dec.decode(&mut buf).unwrap(), DecodeEvent::NeedMore);
    buf.extend_from_slice(b"loworld\r\n0\r\n\r\n");
    assert_eq!(
        dec.decode(&mut buf).unwrap(),
        DecodeEvent::Data(Bytes::from_static(b"loworld"))
    );
    assert_eq!(dec.decode(&mut buf).unwrap(), DecodeEvent::End);
    assert_eq!(dec.decode(&mut buf).unwrap(), DecodeEvent::End);
}

fn decode_err(input: &[u8]) -> BodyError {
    decode_in_steps(input, input.len().max(1)).expect_err("should fail")
}

#[test]
fn malformed_bodies_rejected() {
    assert_eq!(decode_err(b"g\r\n"), BodyError::InvalidChunkSize);
    assert_eq!(decode_err(b"\r\n"), BodyError::InvalidChunkSize);
    assert_eq!(decode_err(b"-5\r\nhello\r\n"), BodyError::InvalidChunkSize);
    assert_eq!(decode_err(b"+5\r\nhello\r\n"), BodyError::InvalidChunkSize);
    assert_eq!(decode_err(b"0x5\r\nhello\r\n"), BodyError::InvalidChunkSize);
    assert_eq!(decode_err(b"5 \r\nhello\r\n"), BodyError::InvalidChunkSize);
    assert_eq!(decode_err(b"5z\r\nhello\r\n"), BodyError::InvalidChunkSize);
    assert_eq!(
        decode_err(b"10000000000000000\r\n"),
        BodyError::ChunkSizeOverflow
    );
    // Missing CRLF after data, bare LF, bare CR.
    assert_eq!(
        decode_err(b"5\r\nhelloX\r\n0\r\n\r\n"),
        BodyError::MissingCrlf
    );
    assert_eq!(decode_err(b"5\r\nhello\n0\r\n\r\n"), BodyError::MissingCrlf);
    assert_eq!(decode_err(b"5\nhello\r\n0\r\n\r\n"), BodyError::MissingCrlf);
    assert_eq!(decode_err(b"5\rhello\r\n0\r\n\r\n"), BodyError::MissingCrlf);
    assert_eq!(decode_err(b"0\r\n\n"), BodyError::MissingCrlf);
    // Control bytes in an extension, bad trailers.
    assert_eq!(
        decode_err(b"5;a\x01\r\nhello\r\n"),
        BodyError::InvalidExtension
    );
    assert_eq!(
        decode_err(b"0\r\nno-colon\r\n\r\n"),
        BodyError::InvalidTrailer
    );
    assert_eq!(
        decode_err(b"0\r\n folded: x\r\n\r\n"),
        BodyError::InvalidTrailer
    );
}

#[test]
fn oversized_lines_rejected() {
    let limits = ChunkedLimits {
        max_line: 16,
        ..ChunkedLimits::default()
    };
    // A size line that never ends is rejected once it reaches the limit, without waiting.
    let mut dec = ChunkedDecoder::new(limits);
    let mut buf = BytesMut::from(&b"000000000000000"[..]);
    assert_eq!(dec.decode(&mut buf).unwrap(), DecodeEvent::NeedMore);
    buf.extend_from_slice(b"0");
    assert_eq!(
        dec.decode(&mut buf),
        Err(BodyError::LineTooLong { limit: 16 })
    );
    // A line whose CRLF would land just past the limit.
    let mut dec = ChunkedDecoder::new(limits);
    let mut buf = BytesMut::from(&b"5;aaaaaaaaaaaaa\r\n"[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(BodyError::LineTooLong { limit: 16 })
    );
    // Exactly at the limit is fine.
    let mut dec = ChunkedDecoder::new(limits);
    let mut buf = BytesMut::from(&b"5;aaaaaaaaaaaa\r\nhello"[..]);
    assert!(matches!(dec.decode(&mut buf), Ok(DecodeEvent::Data(_))));
}

#[test]
fn extension_budget_across_chunks() {
    let limits = ChunkedLimits {
        max_extension_bytes: 100,
        ..ChunkedLimits::default()
    };
    let mut dec = ChunkedDecoder::new(limits);
    let mut buf = BytesMut::new();
    // 40 bytes of extension per 1-byte chunk: the third chunk exceeds 100.
    let chunk = format!("1;{}\r\nx\r\n", "e".repeat(39));
    for _ in 0..3 {
        buf.extend_from_slice(chunk.as_bytes());
    }
    let mut result = Ok(DecodeEvent::NeedMore);
    // Bound: 3 chunks → at most 3 Data events before the error.
    for _ in 0..4 {
        result = dec.decode(&mut buf);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(BodyError::ExtensionsTooLong { limit: 100 }));
}

#[test]
fn trailer_budget() {
    let limits = ChunkedLimits {
        max_trailer_bytes: 32,
        ..ChunkedLimits::default()
    };
    let mut dec = ChunkedDecoder::new(limits);
    let mut buf = BytesMut::from(&b"0\r\nX-A: 0123456789\r\nX-B: 0123456789\r\n\r\n"[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(BodyError::TrailersTooLarge { limit: 32 })
    );
}

#[test]
fn encoder_round_trips_through_decoder() {
    let mut enc = ChunkedEncoder::new();
    let payloads: Vec<Bytes> = vec![
        Bytes::from_static(b"a"),
        Bytes::from(vec![b'x'; 4095]),
        Bytes::new(),
        Bytes::from(vec![b'y'; 70_000]),
        Bytes::from_static(b"end"),
    ];
    let mut wire = BytesMut::new();
    for p in &payloads {
        match enc.encode(p.clone()) {
            Some(parts) => {
                // The payload part is the very same allocation (no copy).
                assert_eq!(parts[1].as_ptr(), p.as_ptr());
                for part in parts {
                    wire.extend_from_slice(&part);
                }
            }
            None => assert!(p.is_empty()),
        }
    }
    wire.extend_from_slice(&ChunkedEncoder::finish());
    assert!(wire.starts_with(b"1\r\na\r\nfff\r\n"));
    let expected: Vec<u8> = payloads.iter().flat_map(|p| p.iter().copied()).collect();
    for step in [1, 7, 4096, usize::MAX / 2] {
        let (data, rest) = decode_in_steps(&wire, step).unwrap();
        assert_eq!(data, expected, "step {step}");
        assert!(rest.is_empty());
    }
}

#[test]
fn body_decoder_dispatch() {
    let mut buf = BytesMut::from(&b"abc"[..]);
    let mut d = BodyDecoder::new(BodyKind::None, ChunkedLimits::default());
    assert!(d.is_done());
    assert_eq!(d.decode(&mut buf).unwrap(), DecodeEvent::End);
    let mut d = BodyDecoder::new(BodyKind::Length(2), ChunkedLimits::default());
    assert_eq!(
        d.decode(&mut buf).unwrap(),
        DecodeEvent::Data(Bytes::from_static(b"ab"))
    );
    assert_eq!(d.decode(&mut buf).unwrap(), DecodeEvent::End);
    // "c" could still be the start of a chunk-size line.
    let mut d = BodyDecoder::new(BodyKind::Chunked, ChunkedLimits::default());
    assert_eq!(d.decode(&mut buf).unwrap(), DecodeEvent::NeedMore);
    buf.extend_from_slice(b"z\r\n");
    assert_eq!(d.decode(&mut buf).unwrap_err(), BodyError::InvalidChunkSize);
}

#[test]
fn fuzz_random_bodies_never_panic() {
    use crate::http::test_util::Rng;
    const PIECES: &[&[u8]] = &[
        b"0",
        b"1",
        b"5",
        b"a",
        b"F",
        b"ffffffffffffffffff",
        b"\r\n",
        b"\r",
        b"\n",
        b";",
        b"=",
        b" ",
        b"\t",
        b"hello",
        b":",
        b"X-T",
        b"\0",
    ];
    let limits = ChunkedLimits {
        max_line: 64,
        max_trailer_bytes: 128,
        max_extension_bytes: 128,
    };
    let mut rng = Rng(0xb0d1_e5ee_d000_0042);
    let mut ends = 0;
    // 20 000 random bodies, each fed in random-sized pieces.
    for _ in 0..20_000 {
        let mut input = Vec::new();
        for _ in 0..rng.below(30) {
            if rng.below(5) == 0 {
                input.push(rng.next() as u8);
            } else {
                input.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
        }
        let mut dec = ChunkedDecoder::new(limits);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut total = 0usize;
        // Bound: each pass feeds at least one byte, so at most input.len() + 1 passes.
        'outer: loop {
            // Bound: decoder progress guarantee (each Data consumes bytes).
            loop {
                match dec.decode(&mut buf) {
                    Ok(DecodeEvent::Data(d)) => {
                        assert!(!d.is_empty());
                        total += d.len();
                    }
                    Ok(DecodeEvent::NeedMore) => break,
                    Ok(DecodeEvent::End) => {
                        ends += 1;
                        break 'outer;
                    }
                    Err(_) => break 'outer,
                }
            }
            if fed == input.len() {
                break;
            }
            let end = (fed + 1 + rng.below(8)).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
        }
        assert!(total <= input.len());
    }
    assert!(
        ends > 0,
        "the generator should produce some complete bodies"
    );
}
