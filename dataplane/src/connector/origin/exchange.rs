//! One request/response exchange on one origin connection, and the verdict the client
//! needs afterwards: reuse the connection, retry elsewhere, or fail.

use bytes::BytesMut;

use super::conn::Conn;
use super::request::{Plan, SendError, send};
use super::response::{Framing, HeadError, READ_SIZE, read_head, stream_body, to_origin_response};
use super::{ProxyError, RequestBody, ResponseSink};

#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// Nothing of the request body was consumed and no response byte arrived: the request
    /// can be replayed on another connection (when this one came from the pool, this is the
    /// origin having closed it while idle).
    Retryable(ProxyError),
    Fatal(ProxyError),
}

/// Sends the request, delivers the response to `sink`. `Ok(true)`: the connection is at a
/// clean message boundary and both sides allow reuse.
pub(crate) async fn exchange(
    conn: &mut Conn,
    plan: &Plan,
    body: &mut impl RequestBody,
    sink: &mut impl ResponseSink,
) -> Result<bool, ExchangeError> {
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
    let head = match read_head(conn, &mut buf).await {
        Ok(head) => head,
        Err(HeadError::Malformed(reason)) => {
            return Err(ExchangeError::Fatal(ProxyError::Malformed {
                reason,
                head_sent: false,
            }));
        }
        Err(HeadError::Closed { any_bytes, source }) => {
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

    let framing = head.framing(plan.head_request).map_err(|reason| {
        ExchangeError::Fatal(ProxyError::Malformed {
            reason,
            head_sent: false,
        })
    })?;
    // 101 hands the connection to another protocol, which this client does not carry on.
    let reusable = head.keep_alive() && write_failed.is_none() && head.status != 101;
    sink.send_head(to_origin_response(head))
        .await
        .map_err(|source| {
            ExchangeError::Fatal(ProxyError::Sink {
                source,
                head_sent: false,
            })
        })?;
    let clean = stream_body(conn, &mut buf, framing, sink)
        .await
        .map_err(ExchangeError::Fatal)?;
    Ok(reusable && clean && framing != Framing::Close)
}
