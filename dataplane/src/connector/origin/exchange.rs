//! One request/response exchange on one origin connection, and the verdict the client
//! needs afterwards: reuse the connection, retry elsewhere, or fail.
//!
//! The HTTP rules are the codec's ([`crate::http::ResponseHeadReader`],
//! [`crate::http::BodyDecoder`]); this file only moves bytes between the connection, the
//! codec and the sink, and names which side failed.

use bytes::BytesMut;

use super::conn::Conn;
use super::request::{Plan, SendError, send};
use super::{MalformedResponse, OriginResponse, ProxyError, RequestBody, ResponseSink};
use crate::http::{
    BodyDecoder, BodyFraming, ChunkedLimits, DecodeEvent, Limits, ParsedResponseHead,
    ResponseHeadError, ResponseHeadReader,
};

/// What one read asks for.
const READ_SIZE: usize = 32 * 1024;

#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// Nothing of the request body was consumed and no response byte arrived: the request
    /// can be replayed on another connection (when this one came from the pool, this is the
    /// origin having closed it while idle).
    Retryable(ProxyError),
    Fatal(ProxyError),
}

impl ExchangeError {
    pub(crate) fn into_inner(self) -> ProxyError {
        match self {
            Self::Retryable(e) | Self::Fatal(e) => e,
        }
    }
}

/// Why no final response head arrived.
enum HeadFailure {
    Malformed(ResponseHeadError),
    /// End-of-stream or an I/O error; `any_bytes` says whether anything of a response had
    /// arrived (if not, and the connection was pooled, the request can be retried).
    Closed {
        any_bytes: bool,
        source: Option<std::io::Error>,
    },
}

/// How an exchange ended.
pub(crate) enum Exchanged {
    /// The whole response reached the sink; `reusable`: the connection is at a clean message
    /// boundary and both sides allow reuse.
    Done { reusable: bool },
    /// The origin switched protocols (101 to an upgrade request) and the head reached the
    /// sink; the bytes already read past the head are the new protocol's.
    Switched(BytesMut),
}

/// Sends the request, delivers the response to `sink`.
pub(crate) async fn exchange(
    conn: &mut Conn,
    plan: &Plan,
    body: &mut impl RequestBody,
    sink: &mut impl ResponseSink,
) -> Result<Exchanged, ExchangeError> {
    let mut consumed = false;
    // The request is written completely before the response is read. An origin that
    // answers early and stops reading makes the write fail; the answer it sent is then
    // still read and delivered below (as Go's transport does), instead of the write error.
    let write_failed = match send(conn, &plan.head, &plan.body, body, &mut consumed).await {
        Ok(()) => None,
        Err(SendError::Client(e)) => return Err(ExchangeError::Fatal(e)),
        Err(SendError::Origin(e)) => Some(e),
    };

    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let head = match read_head(conn, &mut buf, plan.head_request).await {
        Ok(head) => head,
        Err(HeadFailure::Malformed(e)) => {
            return Err(ExchangeError::Fatal(ProxyError::Malformed {
                cause: MalformedResponse::Head(e),
                head_sent: false,
            }));
        }
        Err(HeadFailure::Closed { any_bytes, source }) => {
            let err = match (write_failed, source) {
                (Some(source), _) => ProxyError::OriginIo {
                    what: "writing the request",
                    source,
                    head_sent: false,
                },
                (None, Some(source)) => ProxyError::OriginIo {
                    what: "reading the response head",
                    source,
                    head_sent: false,
                },
                (None, None) => ProxyError::OriginClosed {
                    detail: if any_bytes {
                        "inside the response head".to_owned()
                    } else {
                        "before sending a response".to_owned()
                    },
                    head_sent: false,
                },
            };
            return Err(if any_bytes || consumed {
                ExchangeError::Fatal(err)
            } else {
                ExchangeError::Retryable(err)
            });
        }
    };

    let framing = head.framing;
    let reusable = head.keep_alive && write_failed.is_none();
    let switched = plan.upgrade && head.status == 101;
    sink.send_head(origin_response(head))
        .await
        .map_err(|source| {
            ExchangeError::Fatal(ProxyError::Sink {
                source,
                head_sent: false,
            })
        })?;
    if switched {
        return Ok(Exchanged::Switched(buf));
    }
    let clean = stream_body(conn, &mut buf, framing, sink)
        .await
        .map_err(ExchangeError::Fatal)?;
    Ok(Exchanged::Done {
        reusable: reusable && clean,
    })
}

/// Reads until the final (or 101) response head; interim 1xx heads are skipped by the
/// codec.
async fn read_head(
    conn: &mut Conn,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<ParsedResponseHead, HeadFailure> {
    let mut reader = ResponseHeadReader::new(head_request, Limits::default());
    let mut any_bytes = !buf.is_empty();
    // Bound: each round either parses (the codec bounds interim heads and head size) or
    // reads more bytes, which ends in data, end-of-stream or an error.
    loop {
        if !buf.is_empty()
            && let Some(head) = reader.read_head(buf).map_err(HeadFailure::Malformed)?
        {
            return Ok(head);
        }
        match conn.read(buf, READ_SIZE).await {
            Ok(0) => {
                return Err(HeadFailure::Closed {
                    any_bytes,
                    source: None,
                });
            }
            Ok(_) => any_bytes = true,
            Err(e) => {
                return Err(HeadFailure::Closed {
                    any_bytes,
                    source: Some(e),
                });
            }
        }
    }
}

/// Streams the body to the sink. Returns whether it ended cleanly on a reusable boundary
/// (complete, not close-delimited, and nothing left over in the buffer).
async fn stream_body(
    conn: &mut Conn,
    buf: &mut BytesMut,
    framing: BodyFraming,
    sink: &mut impl ResponseSink,
) -> Result<bool, ProxyError> {
    let mut dec = BodyDecoder::for_response(framing, ChunkedLimits::default());
    // Bound: every round hands the sink bytes, ends, or reads from the origin, which ends
    // in data, end-of-stream or an error; the body's own length bounds the total.
    loop {
        let event = dec.decode(buf).map_err(|e| ProxyError::Malformed {
            cause: MalformedResponse::Body(e),
            head_sent: true,
        })?;
        match event {
            DecodeEvent::Data(b) => sink.send_body(b).await.map_err(|source| ProxyError::Sink {
                source,
                head_sent: true,
            })?,
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
                if n > 0 {
                    continue;
                }
                if dec.complete_at_eof() {
                    // Close-delimited: complete, but the connection is gone.
                    return Ok(false);
                }
                let detail = match (&dec, framing) {
                    (BodyDecoder::Length(d), BodyFraming::Length(total)) => {
                        format!("after {} of {total} body bytes", total - d.remaining())
                    }
                    _ => "inside a chunked body".to_owned(),
                };
                return Err(ProxyError::OriginClosed {
                    detail,
                    head_sent: true,
                });
            }
        }
    }
}

/// The head as the sink gets it: status and every field as received.
fn origin_response(head: ParsedResponseHead) -> OriginResponse {
    OriginResponse {
        status: head.status,
        headers: head
            .headers
            .into_iter()
            .map(|h| (h.name().to_owned(), h.value_bytes().clone()))
            .collect(),
    }
}
