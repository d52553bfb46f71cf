//! One task per public HTTP/1.1 client connection.
//!
//! Per request: read and validate the head (`http::parse_request_head`, which rejects
//! smuggling-shaped framing), route Host → tunnel → the live connection with the fewest open
//! streams, hand the client to the owning worker if that is another one, then open a data
//! stream on it (QUIC or HTTP/2, through `transport`), stream the request body up with its
//! framing removed, and stream the response back with framing chosen for this client. Bodies
//! are never buffered whole: each piece is a `Bytes` split off the receive buffer (upload) or
//! handed out by the transport (download) and goes to the socket as it is.
//!
//! Every wait on the client is bounded by the body idle timeout, and every wait at all by the
//! optional total deadline (`limits::RequestClock`); giving up resets the stream both ways so
//! the connector drops its origin connection. A tunnel at its stream cap answers 503.
//!
//! An upgrade request (`Connection: upgrade` + `Upgrade`, e.g. a WebSocket) opens its stream
//! as an upgrade, keeps the request half open, and after the origin's 101 hands both the
//! client socket and the stream to `splice`; the connection then ends with the splice.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tracing::{debug, warn};
use uuid::Uuid;

use super::error::ForwardError;
use super::limits::{RequestClock, TimedOut};
use super::listener::{linger_close, read_head, write_canned};
use super::routes::HostRoute;
use super::splice::splice;
use super::transport::{Tunnel, TunnelConn, TunnelResponse, TunnelStream, add_forwarding_fields};
use super::{ClientSlot, EdgeMsg, EdgeWorker, HandedClient, LiveConn};
use crate::buf::BytesVec;
use crate::http::{
    BodyDecoder, BodyFraming, BodyKind, ChunkedEncoder, ChunkedLimits, DecodeEvent, EdgeError,
    GatewayFailure, HeaderField, RequestHead, ResponseContext, ResponseHead, body_framing,
    continue_100, error_response, options_asterisk_response, write_response_head,
};

/// Hand-offs allowed for one request before the edge serves it only from connections its
/// current worker owns: the registry can change while a client is in flight, and this stops
/// two workers from passing it back and forth.
const MAX_HOPS: u8 = 2;

/// How many more open streams the best local connection may have than the best connection
/// anywhere before a request is handed to another worker.
const HAND_OFF_MARGIN: usize = 16;

/// Receive buffer growth step: large enough for most heads and a good slice of a body per read.
const READ_RESERVE: usize = 16 * 1024;

/// Response chunks already waiting in quinn-proto that are gathered into one `writev`; bounds
/// the iovec count (3 per chunk when chunked) well under IOV_MAX.
const MAX_CHUNKS_PER_WRITE: usize = 32;

/// Whether the client connection can carry another request.
enum Next {
    KeepAlive,
    Close,
}

enum Route {
    /// Answer with this error.
    Answer(EdgeError),
    /// Forward on this worker.
    Local(Arc<LiveConn>, TunnelConn),
    /// Hand the client to the worker that owns the chosen connection.
    HandOff(Arc<LiveConn>, u8),
}

pub(crate) async fn serve_client(
    w: Rc<EdgeWorker>,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut buf: BytesMut,
    mut handed: Option<(Uuid, u8)>,
    // Counts this client against the per-worker cap until the task ends (or hands it over).
    _slot: ClientSlot,
) {
    let mut first_request = true;
    // One request per turn; the client decides how many (keep-alive) and each turn waits on
    // its bytes (or times out), so the loop cannot spin.
    loop {
        let (head, consumed) = match read_head(&w, &mut stream, &mut buf, first_request).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(answer) => {
                if write_canned(&w, &mut stream, answer).await.is_ok() {
                    linger_close(&mut stream).await;
                }
                return;
            }
        };
        first_request = false;
        let ctx = ResponseContext::for_request(&head);
        if let Some(answer) = local_answer(&head, &ctx) {
            // Neither form carries a body the edge could forward; close unless it is the
            // OPTIONS answer to a keep-alive client without a body.
            let close = head.body.has_body() || !head.keep_alive || head.method == "CONNECT";
            if write_canned(&w, &mut stream, answer).await.is_err() || close {
                return;
            }
            let _ = buf.split_to(consumed);
            continue;
        }
        let (live, conn) = match route(&w, &head, handed.take()) {
            Route::Answer(err) => {
                let close = head.body.has_body() || !head.keep_alive;
                if write_canned(&w, &mut stream, error_response(err, &ctx))
                    .await
                    .is_err()
                    || close
                {
                    return;
                }
                let _ = buf.split_to(consumed);
                continue;
            }
            Route::HandOff(live, hops) => {
                hand_off(&w, stream, peer, buf, &live, hops);
                return;
            }
            Route::Local(live, conn) => (live, conn),
        };
        let _ = buf.split_to(consumed);
        live.streams.fetch_add(1, Ordering::Relaxed);
        let clock = RequestClock::start(&w.public);
        // One copy of `forward` per transport: no dispatch inside it.
        let r = match &conn {
            TunnelConn::Quic(c) => {
                forward(&mut stream, peer, &mut buf, head, ctx, &**c, clock).await
            }
            TunnelConn::Http2(c) => {
                forward(&mut stream, peer, &mut buf, head, ctx, &**c, clock).await
            }
        };
        live.streams.fetch_sub(1, Ordering::Relaxed);
        match r {
            Next::KeepAlive => {}
            Next::Close => return,
        }
    }
}

fn route(w: &EdgeWorker, head: &RequestHead, handed: Option<(Uuid, u8)>) -> Route {
    let Some(host) = head.host_name() else {
        return Route::Answer(EdgeError::BadRequest);
    };
    let tunnel = match w.routes().route_for_host(host) {
        None => return Route::Answer(EdgeError::NotFound),
        Some(HostRoute::Tunnel(t)) => t,
        Some(HostRoute::LoadBalancer(lb)) => {
            let registry = w.registry.borrow();
            match lb.choose(|t| registry.is_healthy(*t), rand::random::<f64>()) {
                Some(t) => t,
                None => return Route::Answer(EdgeError::TunnelUnavailable),
            }
        }
    };
    // Shed rather than queue: past the cap, every stream would wait for the connector's
    // stream credit or sit in the flow-control budget the others need.
    if w.registry.borrow().tunnel_streams(tunnel) >= w.public.max_tunnel_streams {
        debug!(%tunnel, cap = w.public.max_tunnel_streams, "tunnel at its stream cap; 503");
        return Route::Answer(EdgeError::Overloaded {
            retry_after_secs: w.public.retry_after_secs(),
        });
    }
    let hops = handed.map_or(0, |(_, h)| h);
    // A handed-over request first tries the connection it was handed over for.
    if let Some((id, _)) = handed
        && let Some(conn) = w.owned.borrow().get(&id).cloned()
        && let Some(live) = w.registry.borrow().connection(tunnel, id)
    {
        return Route::Local(live, conn);
    }
    let mut registry = w.registry.borrow_mut();
    // Prefer a connection this worker owns: a hand-off costs a descriptor transfer and a
    // wake-up on another core, more than a busier local connection costs. Another worker's
    // connection wins only when it is clearly less loaded.
    let local = registry.pick_on_worker(tunnel, w.index);
    let picked = match local {
        Some(l) if hops >= MAX_HOPS => Some(l),
        None if hops >= MAX_HOPS => None,
        Some(l) => match registry.pick(tunnel) {
            // A full local connection (HTTP/2 at the connector's stream limit) would make the
            // request wait while another worker's connection has room.
            Some(g)
                if g.open_streams() + HAND_OFF_MARGIN < l.open_streams()
                    || (l.is_full() && !g.is_full()) =>
            {
                Some(g)
            }
            _ => Some(l),
        },
        None => registry.pick(tunnel),
    };
    let Some(live) = picked else {
        return Route::Answer(EdgeError::TunnelUnavailable);
    };
    if live.worker != w.index {
        return Route::HandOff(live, hops + 1);
    }
    match w.owned.borrow().get(&live.id) {
        Some(conn) => Route::Local(live, conn.clone()),
        None => Route::Answer(EdgeError::TunnelUnavailable),
    }
}

fn hand_off(
    w: &EdgeWorker,
    stream: TcpStream,
    peer: SocketAddr,
    buf: BytesMut,
    live: &LiveConn,
    hops: u8,
) {
    // No operation is in flight on `stream` (this task only awaits one at a time), so monoio
    // gives the descriptor back.
    // SAFETY: `into_raw_fd` transfers ownership of a valid, open descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(stream.into_raw_fd()) };
    let msg = EdgeMsg::Client(HandedClient {
        fd,
        peer,
        buffered: buf,
        conn: live.id,
        hops,
    });
    if let Err(e) = w.handle.send(live.worker, msg) {
        // The client sees its connection close; it may retry.
        debug!(error = %e, "hand-off to the owning worker failed");
    }
}

/// Forwards one request on `conn` and streams the answer back.
async fn forward<T: Tunnel>(
    stream: &mut TcpStream,
    peer: SocketAddr,
    buf: &mut BytesMut,
    mut head: RequestHead,
    ctx: ResponseContext,
    conn: &T,
    clock: RequestClock,
) -> Next {
    let body = head.body;
    let expect_continue = head.expect_continue;
    let keep_alive = head.keep_alive;
    let upgrade = head.upgrade().map(Bytes::copy_from_slice);
    add_forwarding_fields(&mut head, peer);
    if let Some(protocol) = &upgrade {
        // `Upgrade` is hop-by-hop, but the connector needs the protocol asked for; it restores
        // `Connection: Upgrade` itself.
        head.headers.push(HeaderField::new(
            Bytes::from_static(b"Upgrade"),
            protocol.clone(),
        ));
    }
    let mut tunnel = match clock.tunnel(conn.open(&head, upgrade.is_some())).await {
        Ok(Ok(s)) => s,
        Err(TimedOut) => {
            debug!("request timed out waiting for a tunnel stream");
            return answer_504(stream, &ctx, &clock).await;
        }
        Ok(Err(e)) => return answer_502(stream, &ctx, &e, body).await,
    };

    // Upload. The body is read from the client only as the stream takes it (flow control
    // reaches back to the client's TCP window).
    let mut body_complete = !body.has_body();
    if body.has_body() {
        if expect_continue
            && !matches!(
                clock.client(write_bytes(stream, continue_100())).await,
                Ok(Ok(()))
            )
        {
            tunnel.abandon();
            return Next::Close;
        }
        let mut dec = BodyDecoder::new(body, ChunkedLimits::default());
        // Bounded by the body's framing: every turn consumes bytes or reads more, and EOF or
        // a framing error ends it.
        loop {
            match dec.decode(buf) {
                Ok(DecodeEvent::Data(b)) => match clock.tunnel(tunnel.send(b)).await {
                    Ok(true) => {}
                    // The connector stopped reading (the origin answered early): the rest
                    // of the body is never read, so the connection closes after the answer.
                    Ok(false) => break,
                    Err(TimedOut) => {
                        debug!("request timed out sending its body into the tunnel");
                        tunnel.abandon();
                        return Next::Close;
                    }
                },
                Ok(DecodeEvent::NeedMore) => match clock.client(read_more(stream, buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    r => {
                        if r.is_err() {
                            debug!("request body idle; closing the client and the stream");
                        }
                        // A reset (not a FIN) tells the connector the body is incomplete, so
                        // it drops the origin connection instead of finishing the request.
                        tunnel.abandon();
                        return Next::Close;
                    }
                },
                Ok(DecodeEvent::End) => {
                    body_complete = true;
                    break;
                }
                Err(_) => {
                    tunnel.abandon();
                    let _ = write_bytes(stream, error_response(EdgeError::BadRequest, &ctx)).await;
                    return Next::Close;
                }
            }
        }
    }
    // An upgrade's request half stays open for the client's bytes after the 101.
    if upgrade.is_none() {
        tunnel.finish();
    }

    // The connector's answer.
    let resp = match clock.tunnel(tunnel.response()).await {
        Ok(Ok(r)) => r,
        Err(TimedOut) => {
            debug!("request timed out waiting for the origin's answer");
            tunnel.abandon();
            return answer_504(stream, &ctx, &clock).await;
        }
        Ok(Err(e)) => {
            return answer_502(stream, &ctx, &e, BodyKind::None)
                .await
                .and(body_complete);
        }
    };
    let TunnelResponse {
        status,
        headers,
        first,
    } = resp;
    let framing = body_framing(&ctx, status, &headers);
    let mut out = BytesMut::with_capacity(256 + headers.len() * 48);
    let head_out = ResponseHead {
        status,
        reason: None,
        headers,
    };
    let persist = match write_response_head(&head_out, framing, &ctx, &mut out) {
        Ok(p) => p,
        Err(e) => {
            let e = ForwardError::UnforwardableResponse(e);
            return answer_502(stream, &ctx, &e, BodyKind::None)
                .await
                .and(body_complete);
        }
    };
    if status == 101 {
        if upgrade.is_none() {
            // A 101 nobody asked for cannot be honoured: the client would not switch.
            tunnel.abandon();
            let e = ForwardError::UnrequestedUpgrade;
            return answer_502(stream, &ctx, &e, BodyKind::None).await;
        }
        if !matches!(
            clock.client(write_bytes(stream, out.freeze())).await,
            Ok(Ok(()))
        ) {
            tunnel.abandon();
            return Next::Close;
        }
        splice(stream, buf, first, tunnel).await;
        return Next::Close;
    }
    if upgrade.is_some() {
        // The origin declined the switch and answered normally: the request is complete.
        tunnel.finish();
    }
    let delivered = send_body(stream, &mut tunnel, out.freeze(), first, framing, &clock).await;
    if delivered && persist && keep_alive && body_complete {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

impl Next {
    /// Keep-alive only if the request body was fully read as well.
    fn and(self, body_complete: bool) -> Next {
        match self {
            Next::KeepAlive if body_complete => Next::KeepAlive,
            _ => Next::Close,
        }
    }
}

/// Requests the edge answers itself because no origin request can express them:
/// `CONNECT host:port` (the edge is not a forward proxy: 501, and the connection closes, since
/// the client would start tunnelling bytes) and `OPTIONS *` (a question about the server the
/// client reached, which is the edge). Forwarding either as `... /` would change its meaning.
fn local_answer(head: &RequestHead, ctx: &ResponseContext) -> Option<Bytes> {
    if head.method == "CONNECT" {
        return Some(error_response(EdgeError::NotImplemented, ctx));
    }
    if head.target == "*" {
        return Some(options_asterisk_response(ctx));
    }
    None
}

/// Streams the response body. Returns whether the whole response reached the client in a
/// state that allows another request.
async fn send_body<S: TunnelStream>(
    stream: &mut TcpStream,
    recv: &mut S,
    head: Bytes,
    first: Bytes,
    framing: BodyFraming,
    clock: &RequestClock,
) -> bool {
    let mut remaining = match framing {
        BodyFraming::Length(n) => n,
        _ => u64::MAX,
    };
    let chunked = framing == BodyFraming::Chunked;
    let mut enc = ChunkedEncoder::new();
    let mut out = BytesVec::with_capacity(4 + 3 * MAX_CHUNKS_PER_WRITE);
    out.push(head);
    if framing == BodyFraming::None {
        recv.stop();
        return matches!(clock.client(write_vec(stream, out)).await, Ok(Ok(_)));
    }
    let mut pending = Some(first);
    let mut ended = false;
    // Bounded by the response body: each turn forwards at least one chunk or ends.
    loop {
        // Gather the first chunk (waiting if needed), then whatever else is already there.
        let mut gathered = 0;
        while gathered < MAX_CHUNKS_PER_WRITE && !ended {
            let chunk = match pending.take() {
                Some(c) => Ok(Some(c)),
                None if gathered == 0 => match clock.tunnel(recv.read_chunk()).await {
                    Ok(r) => r,
                    Err(TimedOut) => {
                        debug!("request timed out waiting for the response body");
                        recv.stop();
                        return false;
                    }
                },
                None => match recv.try_read_chunk() {
                    Some(r) => r,
                    None => break,
                },
            };
            match chunk {
                Ok(Some(mut c)) => {
                    if c.is_empty() {
                        continue;
                    }
                    if (c.len() as u64) > remaining {
                        // More than Content-Length promised: drop the excess.
                        c.truncate(remaining as usize);
                    }
                    remaining -= c.len() as u64;
                    gathered += 1;
                    if chunked {
                        if let Some([h, p, crlf]) = enc.encode(c) {
                            out.push(h);
                            out.push(p);
                            out.push(crlf);
                        }
                    } else {
                        out.push(c);
                    }
                    if remaining == 0 {
                        recv.stop();
                        ended = true;
                    }
                }
                Ok(None) => ended = true,
                Err(e) => {
                    // The connector reset the stream: the client cannot get a complete body.
                    debug!(error = %e, "response stream failed mid-body");
                    let _ = clock.client(write_vec(stream, out)).await;
                    return false;
                }
            }
        }
        if ended && chunked {
            out.push(ChunkedEncoder::finish());
        }
        // A client that does not read holds only this stream: the edge stops reading it (its
        // window fills and the connector stops reading the origin), and after the body idle
        // timeout the stream is stopped, which makes the connector drop the origin connection.
        match clock.client(write_vec(stream, out)).await {
            Ok(Ok(mut v)) => {
                v.clear();
                out = v;
                recv.delivered();
            }
            Ok(Err(_)) => {
                recv.stop();
                return false;
            }
            Err(TimedOut) => {
                debug!("client stopped reading the response; closing it and the stream");
                recv.stop();
                return false;
            }
        }
        if ended {
            break;
        }
    }
    match framing {
        BodyFraming::Length(_) => remaining == 0,
        BodyFraming::Chunked => true,
        BodyFraming::CloseDelimited | BodyFraming::None => false,
    }
}

/// Answers 502 for a failed exchange with the connector. The error goes to the log only:
/// public clients learn which side failed ([`ForwardError::side`]), never addresses or OS
/// errors (the origin's cause names both). Keep-alive only when the request had no body left
/// unread.
async fn answer_502(
    stream: &mut TcpStream,
    ctx: &ResponseContext,
    error: &ForwardError,
    body: BodyKind,
) -> Next {
    warn!(
        %error,
        side = ?error.side(),
        retryable = error.retryable(),
        "502: no answer through the tunnel"
    );
    write_502(stream, ctx, error.side(), body).await
}

async fn write_502(
    stream: &mut TcpStream,
    ctx: &ResponseContext,
    failure: GatewayFailure,
    body: BodyKind,
) -> Next {
    let persist_ok = !body.has_body() && ctx.keep_alive;
    match write_bytes(stream, error_response(EdgeError::BadGateway(failure), ctx)).await {
        Ok(()) if persist_ok => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// Answers 504 when the request's total time ran out before any of the answer was sent; the
/// connection closes (the request body may be unread).
async fn answer_504(stream: &mut TcpStream, ctx: &ResponseContext, clock: &RequestClock) -> Next {
    let answer = error_response(EdgeError::GatewayTimeout, ctx);
    // The total deadline has passed; the write gets the idle timeout on its own.
    let _ = monoio::time::timeout(clock.idle(), write_bytes(stream, answer)).await;
    Next::Close
}

/// Reads more bytes onto the end of `buf`. Returns the count (0 at EOF).
pub(super) async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_RESERVE / 4 {
        buf.reserve(READ_RESERVE);
    }
    let taken = std::mem::take(buf);
    let (len, cap) = (taken.len(), taken.capacity());
    let (r, slice) = stream.read(taken.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    r
}

pub(super) async fn write_bytes(stream: &mut TcpStream, b: Bytes) -> io::Result<()> {
    let (r, _) = stream.write_all(b).await;
    r.map(|_| ())
}

async fn write_vec(stream: &mut TcpStream, v: BytesVec) -> io::Result<BytesVec> {
    if v.is_empty() {
        return Ok(v);
    }
    let (r, v) = crate::buf::write_all_vectored(stream, v).await;
    r.map(|()| v)
}
