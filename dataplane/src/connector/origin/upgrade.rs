//! An upgraded origin connection: the origin answered 101 to an upgrade request (a WebSocket),
//! and from then on bytes move both ways between the tunnel stream and the origin, at the same
//! time, until either side ends; then both end (cloudflared's `stream.Pipe`).
//!
//! The connection is a poll-io stream ([`super::conn::connect_poll`]), so its two halves are
//! independent futures and either can be dropped when the other ends: nothing here owns an
//! in-flight io_uring op.

use std::pin::pin;

use bytes::BytesMut;
use futures::future::{Either, select};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::conn::Conn;
use super::{ProxyError, RequestBody, ResponseSink};

/// What one origin read asks for.
const READ_SIZE: usize = 32 * 1024;

/// Pipes `conn` (after its 101) and the tunnel stream both ways. `pending`: origin bytes read
/// past the 101's head. `Ok(())` when either side ended cleanly.
pub(crate) async fn pipe(
    conn: Conn,
    pending: BytesMut,
    body: &mut impl RequestBody,
    sink: &mut impl ResponseSink,
) -> Result<(), ProxyError> {
    let Some(io) = conn.into_poll_io() else {
        return Err(ProxyError::OriginIo {
            what: "switching protocols",
            source: std::io::Error::other("the connection cannot be split"),
            head_sent: true,
        });
    };
    let (mut from_origin, mut to_origin) = tokio::io::split(io);
    let upward = async {
        // Bound: each turn writes one chunk from the edge or ends.
        loop {
            match body.next_chunk().await {
                Ok(Some(chunk)) => {
                    let written = async {
                        to_origin.write_all(&chunk).await?;
                        to_origin.flush().await
                    };
                    written.await.map_err(|source| ProxyError::OriginIo {
                        what: "writing to the upgraded connection",
                        source,
                        head_sent: true,
                    })?;
                }
                Ok(None) => {
                    let _ = to_origin.shutdown().await;
                    return Ok(());
                }
                // The edge reset its side (its client went away, or it gave up).
                Err(source) => {
                    return Err(ProxyError::Sink {
                        source,
                        head_sent: true,
                    });
                }
            }
        }
    };
    let downward = async {
        if !pending.is_empty() {
            sink.send_body(pending.freeze())
                .await
                .map_err(|source| ProxyError::Sink {
                    source,
                    head_sent: true,
                })?;
        }
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        // Bound: each turn forwards one read or ends.
        loop {
            buf.reserve(READ_SIZE);
            match from_origin.read_buf(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => sink
                    .send_body(buf.split().freeze())
                    .await
                    .map_err(|source| ProxyError::Sink {
                        source,
                        head_sent: true,
                    })?,
                // An end without TLS close_notify is an end.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(source) => {
                    return Err(ProxyError::OriginIo {
                        what: "reading the upgraded connection",
                        source,
                        head_sent: true,
                    });
                }
            }
        }
    };
    match select(pin!(upward), pin!(downward)).await {
        Either::Left((r, _)) | Either::Right((r, _)) => r,
    }
}
