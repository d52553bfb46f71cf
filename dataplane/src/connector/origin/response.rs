//! The origin's answer: head parsing (httparse), interim 1xx responses, body framing, and
//! streaming the body to the sink with chunked framing removed.
//!
//! Lenient where only the origin is affected (obs-fold, spaces before a colon, non-UTF-8
//! values are accepted), strict where it decides where the message ends: an invalid or
//! conflicting Content-Length is an error, since guessing could deliver another
//! response's bytes.

use std::io;

use bytes::{Bytes, BytesMut};

use super::conn::Conn;
use super::{OriginResponse, ProxyError, ResponseSink};
use crate::http::{ChunkedDecoder, DecodeEvent, LengthDecoder};

/// Largest response head (status line and fields) accepted from an origin.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header fields per response head (httparse slots are on the stack).
const MAX_HEADERS: usize = 128;
/// Interim (1xx) responses skipped before the final one: real origins send one or two
/// (100 Continue, 103 Early Hints); more is an origin looping.
const MAX_INTERIM: usize = 16;
/// What one read asks for.
pub(crate) const READ_SIZE: usize = 32 * 1024;

/// A parsed final response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// HTTP/1.x minor version.
    pub(crate) minor: u8,
    /// Values as sent (obs-text kept), obs-fold unfolded.
    pub(crate) headers: Vec<(String, Bytes)>,
}

/// How the response body is delimited on the origin connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the origin closes; the connection cannot be reused.
    Close,
}

/// Why reading the head failed.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// End-of-stream or an I/O error; `any_bytes` says whether anything of a response had
    /// arrived (if not, and the connection was pooled, the request can be retried).
    Closed {
        any_bytes: bool,
        source: Option<io::Error>,
    },
    Malformed(String),
}

/// The comma-separated tokens of every `name` field. A token that is not UTF-8 reads as NUL,
/// which matches no keyword and is no number (so a bad Content-Length is still an error).
fn tokens<'a>(headers: &'a [(String, Bytes)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |h| h.0.eq_ignore_ascii_case(name))
        .flat_map(|h| h.1.split(|&b| b == b','))
        .map(|t| std::str::from_utf8(t.trim_ascii()).unwrap_or("\u{0}"))
        .filter(|t| !t.is_empty())
}

impl Head {
    /// Whether the origin lets the connection persist (RFC 9112 §9.3).
    pub(crate) fn keep_alive(&self) -> bool {
        let mut close = false;
        let mut keep = false;
        for t in tokens(&self.headers, "connection") {
            close |= t.eq_ignore_ascii_case("close");
            keep |= t.eq_ignore_ascii_case("keep-alive");
        }
        !close && (self.minor >= 1 || keep)
    }

    /// Body framing (RFC 9112 §6.3).
    pub(crate) fn framing(&self, head_request: bool) -> Result<Framing, String> {
        if head_request
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::None);
        }
        if self
            .headers
            .iter()
            .any(|h| h.0.eq_ignore_ascii_case("transfer-encoding"))
        {
            // Chunked only if it is the final coding; anything else runs to the close.
            let last = tokens(&self.headers, "transfer-encoding").last();
            return Ok(match last {
                Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked,
                _ => Framing::Close,
            });
        }
        let mut len: Option<u64> = None;
        for v in tokens(&self.headers, "content-length") {
            let n = v
                .parse::<u64>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("invalid Content-Length {v:?}"))?;
            if len.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values".to_owned());
            }
            len = Some(n);
        }
        Ok(len.map_or(Framing::Close, Framing::Length))
    }
}

/// Parses one head from the front of `buf`; `Ok(None)` wants more bytes.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut slots);
    // Only the first MAX_HEAD_BYTES are looked at: a head that arrives whole in one large
    // read must not slip past the limit just because it parsed as complete.
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let parsed = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .parse_response(&mut res, window);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(format!("response head over {MAX_HEAD_BYTES} bytes"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!("more than {MAX_HEADERS} header fields"));
        }
        Err(e) => return Err(format!("invalid response head ({e})")),
    };
    let status = res.code.ok_or("no status code")?;
    if !(100..=999).contains(&status) {
        return Err(format!("invalid status {status}"));
    }
    let minor = res.version.unwrap_or(1);
    let headers = res
        .headers
        .iter()
        .map(|h| {
            let value = if h.value.iter().any(|&b| b == b'\r' || b == b'\n') {
                // Unfold obs-fold: each CR LF (or lone CR/LF) becomes one space.
                let mut v = Vec::with_capacity(h.value.len());
                let mut prev_cr = false;
                for &b in h.value {
                    match b {
                        b'\n' if prev_cr => {}
                        b'\r' | b'\n' => v.push(b' '),
                        _ => v.push(b),
                    }
                    prev_cr = b == b'\r';
                }
                Bytes::from(v)
            } else {
                Bytes::copy_from_slice(h.value)
            };
            (h.name.to_owned(), value)
        })
        .collect();
    let _ = buf.split_to(len);
    Ok(Some(Head {
        status,
        minor,
        headers,
    }))
}

/// Reads until a final (or 101) response head, skipping interim 1xx responses.
pub(crate) async fn read_head(conn: &mut Conn, buf: &mut BytesMut) -> Result<Head, HeadError> {
    let mut any_bytes = !buf.is_empty();
    let mut interim = 0;
    // Bound: each round either parses a head (at most MAX_INTERIM interim ones) or reads
    // more bytes, and a head is at most MAX_HEAD_BYTES.
    loop {
        if !buf.is_empty() {
            match parse_head(buf).map_err(HeadError::Malformed)? {
                Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(HeadError::Malformed(format!(
                            "more than {MAX_INTERIM} interim responses"
                        )));
                    }
                    continue;
                }
                Some(head) => return Ok(head),
                None => {}
            }
        }
        match conn.read(buf, READ_SIZE).await {
            Ok(0) => {
                return Err(HeadError::Closed {
                    any_bytes,
                    source: None,
                });
            }
            Ok(_) => any_bytes = true,
            Err(e) => {
                return Err(HeadError::Closed {
                    any_bytes,
                    source: Some(e),
                });
            }
        }
    }
}

/// Streams the body to the sink. Returns whether it ended cleanly on a reusable boundary
/// (complete, and nothing left over in the buffer).
pub(crate) async fn stream_body(
    conn: &mut Conn,
    buf: &mut BytesMut,
    framing: Framing,
    sink: &mut impl ResponseSink,
) -> Result<bool, ProxyError> {
    let sink_err = |source| ProxyError::Sink {
        source,
        head_sent: true,
    };
    enum Dec {
        Length(LengthDecoder, u64),
        Chunked(ChunkedDecoder),
        Close,
    }
    let mut dec = match framing {
        Framing::None => return Ok(buf.is_empty()),
        Framing::Length(n) => Dec::Length(LengthDecoder::new(n), n),
        Framing::Chunked => Dec::Chunked(ChunkedDecoder::default()),
        Framing::Close => Dec::Close,
    };
    // Bound: every round hands the sink bytes, ends, or reads from the origin, which ends
    // in data, end-of-stream or an error; the body's own length bounds the total.
    loop {
        let event = match &mut dec {
            Dec::Length(d, _) => d.decode(buf),
            Dec::Chunked(d) => d.decode(buf).map_err(|e| ProxyError::Malformed {
                reason: format!("chunked body: {e}"),
                head_sent: true,
            })?,
            Dec::Close if buf.is_empty() => DecodeEvent::NeedMore,
            Dec::Close => DecodeEvent::Data(buf.split().freeze()),
        };
        match event {
            DecodeEvent::Data(b) => sink.send_body(b).await.map_err(sink_err)?,
            DecodeEvent::End => return Ok(buf.is_empty()),
            DecodeEvent::NeedMore => {
                let n = conn
                    .read(buf, READ_SIZE)
                    .await
                    .map_err(|source| ProxyError::OriginIo {
                        what: "reading the response body",
                        source,
                        head_sent: true,
                    })?;
                if n == 0 {
                    return match dec {
                        Dec::Close => Ok(false),
                        Dec::Length(d, total) => Err(ProxyError::OriginClosed {
                            detail: format!(
                                "after {} of {total} body bytes",
                                total - d.remaining()
                            ),
                            head_sent: true,
                        }),
                        Dec::Chunked(_) => Err(ProxyError::OriginClosed {
                            detail: "inside a chunked body".to_owned(),
                            head_sent: true,
                        }),
                    };
                }
            }
        }
    }
}

/// The head as the sink gets it: status and every field as received.
pub(crate) fn to_origin_response(head: Head) -> OriginResponse {
    OriginResponse {
        status: head.status,
        headers: head.headers,
    }
}
