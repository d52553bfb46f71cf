//! Body framing: an incremental chunked decoder, a Content-Length decoder and a chunked
//! encoder, all sans-IO and zero-copy for payload bytes.
//!
//! Decoders take the caller's receive buffer (`BytesMut`) and return payload as `Bytes`
//! *split off the front of that buffer*: no payload byte is copied, and the framing bytes are
//! simply advanced past. Whatever follows the body (a pipelined request) stays in the buffer.
//!
//! argotunnel carries bodies raw with chunked framing removed and no trailers, so the decoder
//! drops chunk extensions and trailers after checking that they are well-formed and bounded.

use std::fmt::Write as _;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::request::BodyKind;

/// Default cap on one chunk-size line or trailer line, CRLF included. Real chunk-size lines
/// are a few bytes; 4 KiB leaves room for legitimate extensions.
pub const DEFAULT_MAX_CHUNK_LINE: usize = 4096;
/// Default cap on all trailer lines of one body together.
pub const DEFAULT_MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Default cap on the chunk-extension bytes of one body together. Without it a client could
/// send endless 1-byte chunks, each with a 4 KiB extension, and make us parse 4 KiB per
/// payload byte (hyper uses the same 16 KiB budget).
pub const DEFAULT_MAX_EXTENSION_BYTES: usize = 16 * 1024;

/// Every line in chunked framing ends with exactly this (no bare LF, see `find_line`).
const CRLF: &[u8] = b"\r\n";

/// Limits for [`ChunkedDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedLimits {
    pub max_line: usize,
    pub max_trailer_bytes: usize,
    pub max_extension_bytes: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        Self {
            max_line: DEFAULT_MAX_CHUNK_LINE,
            max_trailer_bytes: DEFAULT_MAX_TRAILER_BYTES,
            max_extension_bytes: DEFAULT_MAX_EXTENSION_BYTES,
        }
    }
}

/// What one `decode` call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeEvent {
    /// Payload bytes, never empty, split from the input buffer without copying.
    Data(Bytes),
    /// The buffer holds no complete next element; append more bytes and call again.
    NeedMore,
    /// The body is complete; bytes after it are still in the buffer.
    End,
}

/// A malformed chunked body. The stream cannot be resynchronised after one, so the
/// connection must be closed (and the request aborted towards the origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BodyError {
    #[error("chunk-size or trailer line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("invalid chunk size")]
    InvalidChunkSize,
    #[error("chunk size overflows u64")]
    ChunkSizeOverflow,
    #[error("invalid chunk extension")]
    InvalidExtension,
    #[error("chunk extensions exceed {limit} bytes")]
    ExtensionsTooLong { limit: usize },
    #[error("missing CRLF")]
    MissingCrlf,
    #[error("invalid trailer field")]
    InvalidTrailer,
    #[error("trailers exceed {limit} bytes")]
    TrailersTooLarge { limit: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Expecting `chunk-size [chunk-ext] CRLF`.
    Size,
    /// Inside chunk data.
    Data {
        remaining: u64,
    },
    /// Expecting the CRLF that closes chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line.
    Trailers,
    Done,
}

/// Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
///
/// Strict on purpose (a lenient chunked parser is a smuggling vector): line ends must be
/// CRLF (no bare LF or CR), whitespace is allowed only before a `;`, sizes are 1*HEXDIG
/// without sign or `0x`.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkedState,
    limits: ChunkedLimits,
    extension_bytes: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new(ChunkedLimits::default())
    }
}

impl ChunkedDecoder {
    pub fn new(limits: ChunkedLimits) -> Self {
        Self {
            state: ChunkedState::Size,
            limits,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the terminating empty line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == ChunkedState::Done
    }

    /// Consumes framing from the front of `buf` and returns the next event. Call in a loop
    /// until `NeedMore` or `End`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<DecodeEvent, BodyError> {
        // Bound: every iteration either returns or advances `buf` by at least two bytes (a
        // line or the data CRLF), so there are at most buf.len() / 2 + 1 iterations.
        loop {
            match self.state {
                ChunkedState::Size => {
                    let Some(len) = find_line(buf, self.limits.max_line)? else {
                        return Ok(DecodeEvent::NeedMore);
                    };
                    let size = self.parse_size_line(&buf[..len - CRLF.len()])?;
                    buf.advance(len);
                    self.state = if size == 0 {
                        ChunkedState::Trailers
                    } else {
                        ChunkedState::Data { remaining: size }
                    };
                }
                ChunkedState::Data { remaining } => {
                    if buf.is_empty() {
                        return Ok(DecodeEvent::NeedMore);
                    }
                    // min() of a u64 and a usize fits in usize.
                    let n = usize::try_from(remaining.min(buf.len() as u64)).unwrap_or(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        ChunkedState::DataEnd
                    } else {
                        ChunkedState::Data { remaining: left }
                    };
                    return Ok(DecodeEvent::Data(data));
                }
                ChunkedState::DataEnd => {
                    match buf.len() {
                        0 => return Ok(DecodeEvent::NeedMore),
                        // Fail early on a wrong first byte instead of waiting for a second.
                        1 if buf[0] == b'\r' => return Ok(DecodeEvent::NeedMore),
                        _ => {}
                    }
                    if !buf.starts_with(CRLF) {
                        return Err(BodyError::MissingCrlf);
                    }
                    buf.advance(CRLF.len());
                    self.state = ChunkedState::Size;
                }
                ChunkedState::Trailers => {
                    let Some(len) = find_line(buf, self.limits.max_line)? else {
                        return Ok(DecodeEvent::NeedMore);
                    };
                    if len == CRLF.len() {
                        buf.advance(len);
                        self.state = ChunkedState::Done;
                        return Ok(DecodeEvent::End);
                    }
                    self.trailer_bytes += len;
                    if self.trailer_bytes > self.limits.max_trailer_bytes {
                        return Err(BodyError::TrailersTooLarge {
                            limit: self.limits.max_trailer_bytes,
                        });
                    }
                    check_trailer_line(&buf[..len - CRLF.len()])?;
                    // Trailers are dropped: argotunnel has no way to carry them.
                    buf.advance(len);
                }
                ChunkedState::Done => return Ok(DecodeEvent::End),
            }
        }
    }

    /// `1*HEXDIG [ *( BWS ";" ext ) ]`, CRLF already removed.
    fn parse_size_line(&mut self, line: &[u8]) -> Result<u64, BodyError> {
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(BodyError::InvalidChunkSize);
        }
        // At most max_line iterations.
        let size = line[..digits].iter().try_fold(0u64, |acc, &b| {
            let d = (b as char).to_digit(16).map_or(0, u64::from);
            acc.checked_mul(16)
                .and_then(|v| v.checked_add(d))
                .ok_or(BodyError::ChunkSizeOverflow)
        })?;
        let rest = &line[digits..];
        let ws = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let ext = &rest[ws..];
        if ext.is_empty() {
            // "5 \r\n": whitespace not followed by an extension is not in the grammar.
            return if ws == 0 {
                Ok(size)
            } else {
                Err(BodyError::InvalidChunkSize)
            };
        }
        if ext[0] != b';' {
            return Err(BodyError::InvalidChunkSize);
        }
        // Extensions are ignored, but must not smuggle control bytes (CR/LF were already
        // excluded by find_line).
        if ext.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(BodyError::InvalidExtension);
        }
        self.extension_bytes += ext.len();
        if self.extension_bytes > self.limits.max_extension_bytes {
            return Err(BodyError::ExtensionsTooLong {
                limit: self.limits.max_extension_bytes,
            });
        }
        Ok(size)
    }
}

/// Length of the CRLF-terminated line at the front of `buf`, CRLF included, or `None` if no
/// line end has arrived yet. Only the first `max_line` bytes are searched, so a never-ending
/// line costs at most that much per call.
fn find_line(buf: &[u8], max_line: usize) -> Result<Option<usize>, BodyError> {
    let window = &buf[..buf.len().min(max_line)];
    match window.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(i) if window[i] == b'\n' => Err(BodyError::MissingCrlf), // bare LF
        Some(i) => match buf.get(i + 1) {
            Some(b'\n') if i + 2 <= max_line => Ok(Some(i + 2)),
            Some(b'\n') => Err(BodyError::LineTooLong { limit: max_line }),
            Some(_) => Err(BodyError::MissingCrlf), // bare CR
            None if buf.len() >= max_line => Err(BodyError::LineTooLong { limit: max_line }),
            None => Ok(None),
        },
        None if buf.len() >= max_line => Err(BodyError::LineTooLong { limit: max_line }),
        None => Ok(None),
    }
}

/// `field-name ":" OWS field-value OWS` with a token name; no obs-fold.
fn check_trailer_line(line: &[u8]) -> Result<(), BodyError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(BodyError::InvalidTrailer)?;
    let name = &line[..colon];
    let value = &line[colon + 1..];
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || !name.iter().all(token) {
        return Err(BodyError::InvalidTrailer);
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(BodyError::InvalidTrailer);
    }
    Ok(())
}

/// Decoder for a `Content-Length` body: hands out at most `remaining` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthDecoder {
    remaining: u64,
}

impl LengthDecoder {
    pub fn new(len: u64) -> Self {
        Self { remaining: len }
    }

    /// Body bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// Splits up to `remaining` bytes off the front of `buf` (no copy).
    pub fn decode(&mut self, buf: &mut BytesMut) -> DecodeEvent {
        if self.remaining == 0 {
            return DecodeEvent::End;
        }
        if buf.is_empty() {
            return DecodeEvent::NeedMore;
        }
        let n = usize::try_from(self.remaining.min(buf.len() as u64)).unwrap_or(buf.len());
        self.remaining -= n as u64;
        DecodeEvent::Data(buf.split_to(n).freeze())
    }
}

/// The decoder for a request's [`BodyKind`], so the edge drives one type.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    Empty,
    Length(LengthDecoder),
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    pub fn new(kind: BodyKind, limits: ChunkedLimits) -> Self {
        match kind {
            BodyKind::None => BodyDecoder::Empty,
            BodyKind::Length(n) => BodyDecoder::Length(LengthDecoder::new(n)),
            BodyKind::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(limits)),
        }
    }

    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<DecodeEvent, BodyError> {
        match self {
            BodyDecoder::Empty => Ok(DecodeEvent::End),
            BodyDecoder::Length(d) => Ok(d.decode(buf)),
            BodyDecoder::Chunked(d) => d.decode(buf),
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Empty => true,
            BodyDecoder::Length(d) => d.is_done(),
            BodyDecoder::Chunked(d) => d.is_done(),
        }
    }
}

/// Chunked framing for a body of unknown length (responses to HTTP/1.1 clients).
///
/// The payload is never copied: each chunk is three `Bytes` (header, payload, CRLF) for a
/// vectored write. Headers are carved from one scratch buffer, so steady state allocates
/// once per ~4 KiB of headers rather than once per chunk.
#[derive(Debug, Default)]
pub struct ChunkedEncoder {
    scratch: BytesMut,
}

impl ChunkedEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// `"{len:x}\r\n"`.
    pub fn chunk_header(&mut self, len: usize) -> Bytes {
        // 16 hex digits + CRLF is the longest header.
        if self.scratch.capacity() < 18 {
            self.scratch.reserve(4096);
        }
        // Writing into a BytesMut cannot fail.
        let _ = write!(self.scratch, "{len:x}\r\n");
        self.scratch.split().freeze()
    }

    /// One chunk as header, payload, CRLF; `None` for an empty payload, which would otherwise
    /// encode the last-chunk and end the body early.
    pub fn encode(&mut self, payload: Bytes) -> Option<[Bytes; 3]> {
        if payload.is_empty() {
            return None;
        }
        Some([
            self.chunk_header(payload.len()),
            payload,
            Bytes::from_static(CRLF),
        ])
    }

    /// The last-chunk and the empty trailer section: `0\r\n\r\n`.
    pub fn finish() -> Bytes {
        Bytes::from_static(b"0\r\n\r\n")
    }
}

#[cfg(test)]
mod tests {
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
}
