//! HTTP/2 towards an origin: `http2Origin` on a TLS origin that chose `h2` by ALPN.
//!
//! One connection per origin (per [`PoolKey`]) per worker carries every request to it as a
//! stream, as Go's transport does; [`Http2Pool`] keeps its send handle. The `h2` crate owns
//! the protocol; its connection future runs as a task on the same worker (monoio tasks need
//! not be `Send`). This file maps [`OriginRequest`] to an `http::Request`, moves the body in
//! both directions under h2's flow control (so a slow origin or a slow client holds back
//! the other side instead of filling memory), and names which side failed.
//!
//! Trailers from the origin are read and dropped: the tunnel's response metadata is sent
//! before the body and has no place for them.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{Either, select};
use h2::client::SendRequest;
use h2::{Reason, SendStream};

use super::conn::PollIo;
use super::exchange::ExchangeError;
use super::pool::PoolKey;
use super::request::{Plan, ReqBody, unsafe_value, wants_trailers};
use super::{OriginRequest, OriginResponse, ProxyError, RequestBody, ResponseSink};
use crate::h2stream::{h2_error, io_error, send_all};
use crate::http::{is_token, strip_hop_by_hop};

/// Receive windows. The connection window bounds what one origin connection can have
/// buffered here across all its streams (the sinks drain it at the client's pace); the stream
/// window lets one large response flow without waiting for WINDOW_UPDATE round trips.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Per-worker HTTP/2 connections, one per origin identity.
#[derive(Debug, Default)]
pub(crate) struct Http2Pool {
    conns: HashMap<PoolKey, Pooled>,
}

#[derive(Debug)]
struct Pooled {
    send: SendRequest<Bytes>,
    used: Instant,
}

impl Http2Pool {
    /// The connection for `key`, unless it has been idle past `max_idle` (then it is
    /// dropped, which closes it once its streams are done).
    pub(crate) fn checkout(
        &mut self,
        key: &PoolKey,
        now: Instant,
        max_idle: Duration,
    ) -> Option<SendRequest<Bytes>> {
        let pooled = self.conns.get_mut(key)?;
        if now.saturating_duration_since(pooled.used) > max_idle {
            self.conns.remove(key);
            return None;
        }
        pooled.used = now;
        Some(pooled.send.clone())
    }

    /// Keeps `send` as `key`'s connection (replacing an older one, which closes when its
    /// streams end).
    pub(crate) fn insert(&mut self, key: PoolKey, send: SendRequest<Bytes>, now: Instant) {
        self.conns.insert(key, Pooled { send, used: now });
    }

    /// Forgets `key`'s connection after it failed.
    pub(crate) fn remove(&mut self, key: &PoolKey) {
        self.conns.remove(key);
    }

    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }
}

/// The HTTP/2 handshake on `io`; the connection task is spawned on this worker and ends when
/// the origin closes or every handle is dropped. With `confirm_within` (h2c, where nothing
/// negotiated HTTP/2), the origin must answer a PING within it: an HTTP/1.1 server answers
/// the preface with an HTTP/1.1 error or closes, and the connection fails instead.
pub(crate) async fn handshake(
    io: Box<dyn PollIo>,
    addr: &str,
    confirm_within: Option<Duration>,
) -> Result<SendRequest<Bytes>, ProxyError> {
    let start_failed = |e: h2::Error| ProxyError::OriginIo {
        what: "starting HTTP/2",
        source: io_error(e),
        head_sent: false,
    };
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(start_failed)?;
    let ping = match confirm_within {
        Some(limit) => conn.ping_pong().map(|p| (p, limit)),
        None => None,
    };
    let owner = addr.to_owned();
    monoio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(origin = %owner, error = %e, "HTTP/2 origin connection ended");
        }
    });
    if let Some((mut ping, limit)) = ping {
        // Dropping the PING on timeout is safe: it is a handle on the connection task.
        match monoio::time::timeout(limit, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(start_failed(e)),
            Err(_) => {
                return Err(ProxyError::OriginIo {
                    what: "starting h2c",
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer to a PING within {}s", limit.as_secs_f64()),
                    ),
                    head_sent: false,
                });
            }
        }
    }
    Ok(send)
}

fn bad(reason: impl Into<String>) -> ProxyError {
    ProxyError::BadRequest {
        reason: reason.into(),
    }
}

/// The request as HTTP/2 carries it: `:authority` is the Host we send, hop-by-hop fields
/// are dropped (HTTP/2 forbids them), `TE: trailers` is kept when the client sent it.
pub(crate) fn build_request(
    req: &OriginRequest,
    checked: &Plan,
) -> Result<http::Request<()>, ProxyError> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| bad(format!("method {:?} is not a token", req.method)))?;
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(checked.host.as_str())
        .path_and_query(checked.path.as_str())
        .build()
        .map_err(|e| bad(format!("request target: {e}")))?;
    let mut fields: Vec<(String, Bytes)> = req.headers.clone();
    let trailers = wants_trailers(req);
    strip_hop_by_hop(&mut fields);
    let mut builder = http::Request::builder().method(method).uri(uri);
    // Bound: the header list, bounded by the edge's head limits.
    for (name, value) in &fields {
        let name = name.as_str();
        if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if !is_token(name.as_bytes()) || unsafe_value(value) {
            return Err(bad(format!("header {name:?} is not a valid field")));
        }
        let value = http::HeaderValue::from_bytes(value)
            .map_err(|_| bad(format!("header {name:?} has an invalid value")))?;
        builder = builder.header(name, value);
    }
    match &checked.body {
        ReqBody::Length(n) => builder = builder.header("content-length", *n),
        ReqBody::Buffered(chunks) => {
            builder = builder.header(
                "content-length",
                chunks.iter().map(Bytes::len).sum::<usize>(),
            );
        }
        ReqBody::None | ReqBody::Chunked => {}
    }
    if trailers {
        builder = builder.header("te", "trailers");
    }
    builder
        .body(())
        .map_err(|e| bad(format!("request head: {e}")))
}

/// Sends one request on `send` and delivers the answer to `sink`.
///
/// The upload and the download run together, as HTTP/2 allows: an origin may answer before
/// it has read the body. `Retryable` only when the origin refused the stream before any of
/// the body was read (a dead pooled connection, `REFUSED_STREAM`, a GOAWAY that excluded it).
pub(crate) async fn exchange(
    send: SendRequest<Bytes>,
    request: http::Request<()>,
    plan: &ReqBody,
    body: &mut impl RequestBody,
    sink: &mut impl ResponseSink,
) -> Result<(), ExchangeError> {
    let refused = |what: &'static str, e: h2::Error| {
        ExchangeError::Retryable(ProxyError::OriginIo {
            what,
            source: io_error(e),
            head_sent: false,
        })
    };
    let mut send = send
        .ready()
        .await
        .map_err(|e| refused("opening an HTTP/2 stream", e))?;
    let no_body = match plan {
        ReqBody::None => true,
        ReqBody::Buffered(chunks) => chunks.is_empty(),
        ReqBody::Length(_) | ReqBody::Chunked => false,
    };
    let (response, stream) = send
        .send_request(request, no_body)
        .map_err(|e| refused("sending the request head", e))?;

    let consumed = Cell::new(false);
    let head_sent = Cell::new(false);
    let upload = std::pin::pin!(async {
        if no_body {
            return Ok(());
        }
        upload(stream, plan, body, &consumed).await
    });
    let download = std::pin::pin!(download(response, sink, &head_sent));
    let result = match select(upload, download).await {
        Either::Left((Ok(()), download)) => download.await,
        Either::Left((Err(client), download)) => {
            // The stream was reset. An answer already under way can only end broken now,
            // which the download reports with the head sent.
            if head_sent.get() {
                download.await
            } else {
                Err(client)
            }
        }
        // The answer is complete (or failed): the rest of the upload is not wanted; dropping
        // it resets the stream if it is still open.
        Either::Right((r, _)) => r,
    };
    result.map_err(|e| match e {
        ProxyError::OriginIo { ref source, .. }
            if !consumed.get() && !head_sent.get() && refused_stream(source) =>
        {
            ExchangeError::Retryable(e)
        }
        e => ExchangeError::Fatal(e),
    })
}

/// Whether the origin never processed the stream: it refused it, or a GOAWAY excluded it
/// (h2 fails only the streams above the GOAWAY's last stream id that way).
fn refused_stream(e: &io::Error) -> bool {
    h2_error(e).is_some_and(|h| h.is_go_away() || h.reason() == Some(Reason::REFUSED_STREAM))
}

/// Sends the body under the origin's flow control. `Err` only for the client's side (its
/// body failed or broke its own framing), after resetting the stream; the origin's failures
/// end the upload quietly and are reported by the download.
async fn upload(
    mut stream: SendStream<Bytes>,
    plan: &ReqBody,
    body: &mut impl RequestBody,
    consumed: &Cell<bool>,
) -> Result<(), ProxyError> {
    let fail = |stream: &mut SendStream<Bytes>, e: ProxyError| {
        stream.send_reset(Reason::CANCEL);
        Err(e)
    };
    if let ReqBody::Buffered(chunks) = plan {
        for chunk in chunks {
            if send_all(&mut stream, chunk.clone()).await.is_err() {
                return Ok(());
            }
        }
        let _ = stream.send_data(Bytes::new(), true);
        return Ok(());
    }
    let limit = match plan {
        ReqBody::Length(n) => Some(*n),
        _ => None,
    };
    let mut sent = 0u64;
    // Bound: the body source's length (it ends with `None`), and `limit` when known.
    loop {
        consumed.set(true);
        let chunk = match body.next_chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(source) => return fail(&mut stream, ProxyError::RequestBody { source }),
        };
        sent += chunk.len() as u64;
        if let Some(n) = limit
            && sent > n
        {
            return fail(
                &mut stream,
                bad(format!("body longer than its Content-Length {n}")),
            );
        }
        if !chunk.is_empty() && send_all(&mut stream, chunk).await.is_err() {
            return Ok(());
        }
    }
    if let Some(n) = limit
        && sent < n
    {
        return fail(
            &mut stream,
            bad(format!(
                "body ended after {sent} of {n} bytes (Content-Length)"
            )),
        );
    }
    let _ = stream.send_data(Bytes::new(), true);
    Ok(())
}

/// Reads the response and streams it to the sink, releasing flow-control credit only as the
/// sink takes the bytes.
async fn download(
    response: h2::client::ResponseFuture,
    sink: &mut impl ResponseSink,
    head_sent: &Cell<bool>,
) -> Result<(), ProxyError> {
    let io_err = |what: &'static str, head_sent: bool| {
        move |e: h2::Error| ProxyError::OriginIo {
            what,
            source: io_error(e),
            head_sent,
        }
    };
    let response = response
        .await
        .map_err(io_err("reading the response head", false))?;
    let (parts, mut recv) = response.into_parts();
    let head = OriginResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
    };
    sink.send_head(head)
        .await
        .map_err(|source| ProxyError::Sink {
            source,
            head_sent: false,
        })?;
    head_sent.set(true);
    // Bound: the response body; the origin ends it, resets it, or the connection fails.
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(io_err("reading the response body", true))?;
        let n = chunk.len();
        sink.send_body(chunk)
            .await
            .map_err(|source| ProxyError::Sink {
                source,
                head_sent: true,
            })?;
        let _ = recv.flow_control().release_capacity(n);
    }
    // The stream may end with trailers; reading them completes it cleanly.
    recv.trailers()
        .await
        .map_err(io_err("reading the response trailers", true))?;
    Ok(())
}
