//! The public listener's side of a client connection: reading a request head within the
//! head and keep-alive timeouts, the edge's own small answers bounded by the body idle
//! timeout, refusing a client over the per-worker cap, and closing without destroying an
//! answer (lingering close).

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use tracing::debug;

use super::EdgeWorker;
use super::proxy::{read_more, write_bytes};
use crate::http::{
    EdgeError, RequestHead, ResponseContext, error_response, head_error_response,
    parse_request_head,
};

/// How long a refused client gets to take its 503, and how long a closing connection's input
/// is drained (see [`linger_close`]).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Most request bytes drained from a refused client before closing anyway.
const REFUSAL_DRAIN: usize = 64 * 1024;

/// Answers a client over the per-worker connection cap: `503` with `Retry-After` and
/// `Connection: close`, without reading its request. Holds the descriptor at most
/// [`REFUSAL_LINGER`] twice.
pub(crate) async fn refuse_client(w: Rc<EdgeWorker>, mut stream: TcpStream) {
    debug!(
        cap = w.public.max_connections_per_worker,
        "client connection cap reached; 503"
    );
    let answer = error_response(
        EdgeError::Overloaded {
            retry_after_secs: w.public.retry_after_secs(),
        },
        &ResponseContext::unparsed(),
    );
    if matches!(
        monoio::time::timeout(REFUSAL_LINGER, write_bytes(&mut stream, answer)).await,
        Ok(Ok(()))
    ) {
        linger_close(&mut stream).await;
    }
}

/// Closes after an answer the client may still be sending into (a refused connection, a head
/// that timed out or was rejected): FIN first, then what the client sends is read and dropped
/// for a moment, because closing a socket with unread input sends a reset, and a reset makes
/// the client's kernel discard the answer before the client reads it.
pub(super) async fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    // Bounded by REFUSAL_DRAIN bytes and the linger time.
    let mut buf = BytesMut::new();
    let mut drained = 0;
    let _ = monoio::time::timeout(REFUSAL_LINGER, async {
        while drained < REFUSAL_DRAIN {
            match read_more(stream, &mut buf).await {
                Ok(n) if n > 0 => {
                    drained += n;
                    buf.clear();
                }
                _ => break,
            }
        }
    })
    .await;
}

/// Reads until a full head is buffered. `Ok(None)`: the client closed (or failed) between
/// requests, or stayed idle past the keep-alive timeout. `Err`: the answer to send before
/// closing (a bad head, or 408 when a started head did not complete in time).
///
/// The head timeout runs from accept for a connection's first request (a client that
/// connects and says nothing is closed after it), and from the first byte for later ones;
/// before that first byte a keep-alive connection may idle for the keep-alive timeout.
pub(super) async fn read_head(
    w: &EdgeWorker,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    first_request: bool,
) -> Result<Option<(RequestHead, usize)>, Bytes> {
    let limits = &w.public;
    let mut head_deadline =
        (first_request || !buf.is_empty()).then(|| Instant::now() + limits.head_timeout);
    // Whether part of a head arrived (a timed-out read takes `buf` with it, so this is kept
    // apart).
    let mut started = !buf.is_empty();
    // Bounded by the head size limit and the deadlines: each turn adds bytes or times out,
    // and `parse_request_head` fails once the limit is buffered without a complete head.
    loop {
        if !buf.is_empty() {
            match parse_request_head(buf, &w.limits) {
                Ok(Some(h)) => return Ok(Some(h)),
                Ok(None) => {}
                Err(e) => return Err(head_error_response(&e)),
            }
            head_deadline.get_or_insert_with(|| Instant::now() + limits.head_timeout);
        }
        let wait = match head_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => limits.keep_alive_timeout,
        };
        match monoio::time::timeout(wait, read_more(stream, buf)).await {
            Err(_) if !started => {
                debug!("idle client connection closed");
                return Ok(None);
            }
            Err(_) => {
                debug!("request head timed out");
                return Err(error_response(
                    EdgeError::RequestTimeout,
                    &ResponseContext::unparsed(),
                ));
            }
            Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(_)) => started = true,
        }
    }
}

/// Writes one of the edge's own small answers, bounded by the body idle timeout: a client
/// that pipelines requests and never reads must not hold its task forever.
pub(super) async fn write_canned(
    w: &EdgeWorker,
    stream: &mut TcpStream,
    b: Bytes,
) -> io::Result<()> {
    match monoio::time::timeout(w.public.body_idle_timeout, write_bytes(stream, b)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}
