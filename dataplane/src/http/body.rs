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

use super::fields::is_token;
use super::request::BodyKind;
use super::response::BodyFraming;

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
    if !is_token(name) {
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
        let n = self.take(buf.len());
        DecodeEvent::Data(buf.split_to(n).freeze())
    }

    /// Advances past up to `remaining` bytes of `buf` without handing them out; whether the
    /// body is complete.
    pub fn skip(&mut self, buf: &mut BytesMut) -> bool {
        let n = self.take(buf.len());
        buf.advance(n);
        self.is_done()
    }

    /// How many of `available` bytes belong to this body; counts them as consumed.
    fn take(&mut self, available: usize) -> usize {
        let n = usize::try_from(self.remaining.min(available as u64)).unwrap_or(available);
        self.remaining -= n as u64;
        n
    }
}

/// The decoder for one message body, so a caller drives one type: a request's
/// [`BodyKind`] (the edge) or a response's [`BodyFraming`] (the HTTP clients).
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    Empty,
    Length(LengthDecoder),
    Chunked(ChunkedDecoder),
    /// Everything until the peer closes the connection (responses only).
    CloseDelimited,
}

impl BodyDecoder {
    pub fn new(kind: BodyKind, limits: ChunkedLimits) -> Self {
        match kind {
            BodyKind::None => BodyDecoder::Empty,
            BodyKind::Length(n) => BodyDecoder::Length(LengthDecoder::new(n)),
            BodyKind::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(limits)),
        }
    }

    /// The decoder for a response body framed as `framing`.
    pub fn for_response(framing: BodyFraming, limits: ChunkedLimits) -> Self {
        match framing {
            BodyFraming::None => BodyDecoder::Empty,
            BodyFraming::Length(n) => BodyDecoder::Length(LengthDecoder::new(n)),
            BodyFraming::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(limits)),
            BodyFraming::CloseDelimited => BodyDecoder::CloseDelimited,
        }
    }

    /// The next payload piece, split off `buf` without copying. A close-delimited body
    /// takes all of `buf` and never ends here: see [`complete_at_eof`](Self::complete_at_eof).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<DecodeEvent, BodyError> {
        match self {
            BodyDecoder::Empty => Ok(DecodeEvent::End),
            BodyDecoder::Length(d) => Ok(d.decode(buf)),
            BodyDecoder::Chunked(d) => d.decode(buf),
            BodyDecoder::CloseDelimited if buf.is_empty() => Ok(DecodeEvent::NeedMore),
            BodyDecoder::CloseDelimited => Ok(DecodeEvent::Data(buf.split().freeze())),
        }
    }

    /// Consumes body bytes from the front of `buf` without handing them out, for a caller
    /// that only counts them (a load generator); `Ok(true)` once the body is complete.
    /// Content-Length and close-delimited payload is advanced past, so the buffer is never
    /// split and stays reusable in place.
    pub fn skip(&mut self, buf: &mut BytesMut) -> Result<bool, BodyError> {
        match self {
            BodyDecoder::Empty => Ok(true),
            BodyDecoder::Length(d) => Ok(d.skip(buf)),
            // Bound: each Data event consumes at least one byte of `buf`.
            BodyDecoder::Chunked(d) => loop {
                match d.decode(buf)? {
                    DecodeEvent::Data(_) => {}
                    DecodeEvent::NeedMore => return Ok(false),
                    DecodeEvent::End => return Ok(true),
                }
            },
            BodyDecoder::CloseDelimited => {
                buf.clear();
                Ok(false)
            }
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Empty => true,
            BodyDecoder::Length(d) => d.is_done(),
            BodyDecoder::Chunked(d) => d.is_done(),
            BodyDecoder::CloseDelimited => false,
        }
    }

    /// Whether the peer closing the connection now ends the body cleanly: always for a
    /// close-delimited body, otherwise only once it is complete (else it was cut short).
    pub fn complete_at_eof(&self) -> bool {
        matches!(self, BodyDecoder::CloseDelimited) || self.is_done()
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
#[path = "body_tests.rs"]
mod tests;
