//! The two tunnel transports as the proxy sees them: a connection routing can pick
//! ([`TunnelConn`]), opening a stream for one request on it ([`Tunnel`]), and moving that
//! request's bytes ([`TunnelStream`]). `proxy::forward` is generic over these, so each
//! transport gets its own monomorphised copy and QUIC's path has no dispatch or allocation
//! it did not have before.
//!
//! - QUIC (this file): a bidirectional stream, `ConnectRequest` (signature, version and
//!   message in one write, as the stock cloudflared requires), then the raw body; the answer
//!   is a `ConnectResponse` then the raw body.
//! - HTTP/2 (`stream_h2`): one request per stream, the fields as HTTP/2 headers, the
//!   origin's response fields serialised in one header.
//!
//! Forwarding fields (`X-Forwarded-For`, `X-Forwarded-Proto`, `Cf-Connecting-IP`) are added
//! here once for both ([`add_forwarding_fields`]).

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use futures::FutureExt;

use super::error::ForwardError;
use super::tunnel_h2::H2Conn;
use crate::http::{HeaderField, RequestHead};
use crate::quic::VarInt;
use crate::quic::endpoint::{Connection, RecvStream, SendStream, StreamReadError};
use crate::wire::stream::{
    ConnectRequest, ConnectResponse, ConnectionType, Decoded, StreamHeaderDecoder, encode_request,
    http_request_metadata, parse_response_metadata,
};

/// A registered connector connection on this worker, as routing reaches it.
#[derive(Clone)]
pub(crate) enum TunnelConn {
    Quic(Rc<Connection>),
    Http2(Rc<H2Conn>),
}

impl TunnelConn {
    /// The connector's address as the edge sees it.
    pub(crate) fn remote_address(&self) -> SocketAddr {
        match self {
            TunnelConn::Quic(c) => c
                .remote_address()
                .unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            TunnelConn::Http2(c) => c.remote(),
        }
    }

    /// The transport's name, as cloudflared logs it (`protocol=`).
    pub(crate) fn protocol(&self) -> &'static str {
        match self {
            TunnelConn::Quic(_) => "quic",
            TunnelConn::Http2(_) => "http2",
        }
    }

    /// Streams the connector admits at once ([`super::registry::LiveConn::stream_limit`]);
    /// known once its SETTINGS arrived, which precedes its registration.
    pub(crate) fn stream_limit(&self) -> usize {
        match self {
            TunnelConn::Quic(_) => usize::MAX,
            TunnelConn::Http2(c) => c.sender().current_max_send_streams(),
        }
    }

    /// Closes the connection (edge shutdown).
    pub(crate) fn close(&self, reason: &'static str) {
        match self {
            TunnelConn::Quic(c) => c.close(VarInt::from_u32(0), reason.as_bytes()),
            TunnelConn::Http2(c) => c.close(),
        }
    }
}

/// The start of an answer through the tunnel: the origin's status and fields, and the first
/// body bytes that came with them (possibly none).
pub(crate) struct TunnelResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) first: Bytes,
}

/// A transport connection that carries requests.
pub(crate) trait Tunnel {
    type Stream: TunnelStream;

    /// Opens a stream for `head` (its forwarding fields already added) and sends the request
    /// head on it; `upgrade`: the client asked to switch protocols (a WebSocket), which both
    /// transports mark so that the connector restores the upgrade towards the origin. Errors
    /// name the tunnel side.
    async fn open(&self, head: &RequestHead, upgrade: bool) -> Result<Self::Stream, ForwardError>;
}

/// One request's stream through the tunnel.
pub(crate) trait TunnelStream {
    type ReadError: std::fmt::Display;
    type Up: TunnelUp;
    type Down: TunnelDown;

    /// Sends request body bytes as the connector's flow control admits them. `false`: the
    /// connector stopped reading (the origin answered early).
    async fn send(&mut self, data: Bytes) -> bool;

    /// Ends the request body.
    fn finish(&mut self);

    /// Gives up on the stream both ways, so the connector drops its origin connection.
    fn abandon(&mut self);

    /// Waits for the answer's head. Errors: the connector's answer was missing or malformed,
    /// or the connector reported that the origin failed.
    async fn response(&mut self) -> Result<TunnelResponse, ForwardError>;

    /// The next response body chunk; `None` at its end.
    async fn read_chunk(&mut self) -> Result<Option<Bytes>, Self::ReadError>;

    /// A chunk that is already here, without waiting.
    fn try_read_chunk(&mut self) -> Option<Result<Option<Bytes>, Self::ReadError>>;

    /// The rest of the response is not wanted.
    fn stop(&mut self);

    /// Everything read so far has been written to the client: the connector may send more.
    fn delivered(&mut self);

    /// The two directions as separate values, for an upgraded stream whose bytes move both
    /// ways at once (`splice`).
    fn split(self) -> (Self::Up, Self::Down);
}

/// The client → connector direction of an upgraded stream.
pub(crate) trait TunnelUp {
    /// `false`: the connector stopped reading.
    async fn send(&mut self, data: Bytes) -> bool;
    /// The client ended its side.
    fn finish(&mut self);
    /// Gives up on the stream both ways.
    fn abandon(&mut self);
}

/// The connector → client direction of an upgraded stream.
pub(crate) trait TunnelDown {
    type ReadError: std::fmt::Display;
    /// The next chunk; `None` when the connector ended its side.
    async fn read_chunk(&mut self) -> Result<Option<Bytes>, Self::ReadError>;
    /// Everything read so far has been written to the client.
    fn delivered(&mut self);
}

/// Removes hop-by-hop fields and adds the forwarding fields, as the public client's peer
/// address says: `X-Forwarded-For` appended to, `X-Forwarded-Proto: http`, and
/// `Cf-Connecting-IP` (a client-supplied one would be trusted by origins, so it is replaced).
pub(crate) fn add_forwarding_fields(head: &mut RequestHead, peer: SocketAddr) {
    head.strip_hop_by_hop();
    let ip = peer.ip().to_canonical().to_string();
    head.headers
        .retain(|h| !h.name().eq_ignore_ascii_case("cf-connecting-ip"));
    let mut xff_found = false;
    for h in head.headers.iter_mut() {
        if h.name().eq_ignore_ascii_case("x-forwarded-for") && !xff_found {
            xff_found = true;
            let mut joined = Vec::with_capacity(h.value().len() + 2 + ip.len());
            joined.extend_from_slice(h.value());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(ip.as_bytes());
            *h = HeaderField::new(Bytes::from_static(b"X-Forwarded-For"), Bytes::from(joined));
        }
    }
    if !xff_found {
        head.headers.push(HeaderField::new(
            Bytes::from_static(b"X-Forwarded-For"),
            Bytes::from(ip.clone()),
        ));
    }
    head.headers
        .retain(|h| !h.name().eq_ignore_ascii_case("x-forwarded-proto"));
    head.headers.push(HeaderField::new(
        Bytes::from_static(b"X-Forwarded-Proto"),
        Bytes::from_static(b"http"),
    ));
    head.headers.push(HeaderField::new(
        Bytes::from_static(b"Cf-Connecting-IP"),
        Bytes::from(ip),
    ));
}

/// `ConnectRequest` for a head prepared by [`add_forwarding_fields`].
fn connect_request(head: &RequestHead, upgrade: bool) -> ConnectRequest {
    let host = head.host.as_deref().unwrap_or_default();
    // `parse_request_head` admits origin-form, absolute-form, authority-form (CONNECT) and
    // `*` (OPTIONS); the last two never get here (`proxy::local_answer`).
    let dest = if head.target.starts_with('/') {
        format!("http://{host}{}", head.target)
    } else {
        head.target.clone()
    };
    // Values travel as the client sent them (obs-text included): the origin interprets them.
    let headers = head.headers.iter().map(|h| (h.name(), h.value()));
    ConnectRequest {
        dest,
        // cloudflared's connector restores `Connection`/`Upgrade` for this kind and pipes the
        // stream both ways after the origin's 101.
        kind: if upgrade {
            ConnectionType::Websocket
        } else {
            ConnectionType::Http
        },
        metadata: http_request_metadata(&head.method, host, headers),
    }
}

/// A QUIC data stream carrying one request.
pub(crate) struct QuicStream {
    send: SendStream,
    recv: RecvStream,
}

impl Tunnel for Connection {
    type Stream = QuicStream;

    async fn open(&self, head: &RequestHead, upgrade: bool) -> Result<QuicStream, ForwardError> {
        let (mut send, recv) = self.open_bi().await.map_err(ForwardError::OpenStream)?;
        send.write_all(encode_request(&connect_request(head, upgrade)))
            .await
            .map_err(ForwardError::SendRequest)?;
        Ok(QuicStream { send, recv })
    }
}

impl TunnelStream for QuicStream {
    type ReadError = StreamReadError;
    type Up = SendStream;
    type Down = RecvStream;

    async fn send(&mut self, data: Bytes) -> bool {
        self.send.write_all(data).await.is_ok()
    }

    fn finish(&mut self) {
        let _ = self.send.finish();
    }

    fn abandon(&mut self) {
        // RESET_STREAM on the request half and STOP_SENDING on the response half: the
        // connector sees an error on both.
        self.send.reset(VarInt::from_u32(0));
        self.recv.stop(VarInt::from_u32(0));
    }

    async fn response(&mut self) -> Result<TunnelResponse, ForwardError> {
        let (resp, first) = read_response_header(&mut self.recv).await?;
        if !resp.error.is_empty() {
            return Err(ForwardError::Origin(resp.error));
        }
        let (status, headers) =
            parse_response_metadata(&resp.metadata).map_err(ForwardError::BadResponseMetadata)?;
        Ok(TunnelResponse {
            status,
            headers,
            first,
        })
    }

    async fn read_chunk(&mut self) -> Result<Option<Bytes>, StreamReadError> {
        self.recv.read_chunk(usize::MAX).await
    }

    fn try_read_chunk(&mut self) -> Option<Result<Option<Bytes>, StreamReadError>> {
        self.recv.read_chunk(usize::MAX).now_or_never()
    }

    fn stop(&mut self) {
        self.recv.stop(VarInt::from_u32(0));
    }

    fn delivered(&mut self) {
        // quinn-proto releases credit as chunks are read; nothing is held back here.
    }

    fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }
}

impl TunnelUp for SendStream {
    async fn send(&mut self, data: Bytes) -> bool {
        self.write_all(data).await.is_ok()
    }

    fn finish(&mut self) {
        let _ = SendStream::finish(self);
    }

    fn abandon(&mut self) {
        self.reset(VarInt::from_u32(0));
    }
}

impl TunnelDown for RecvStream {
    type ReadError = StreamReadError;

    async fn read_chunk(&mut self) -> Result<Option<Bytes>, StreamReadError> {
        RecvStream::read_chunk(self, usize::MAX).await
    }

    fn delivered(&mut self) {}
}

async fn read_response_header(
    recv: &mut RecvStream,
) -> Result<(ConnectResponse, Bytes), ForwardError> {
    let mut dec = StreamHeaderDecoder::<ConnectResponse>::new();
    // Bounded by the decoder's message-size limit: each chunk is consumed or it fails.
    loop {
        match recv.read_chunk(usize::MAX).await {
            Ok(Some(chunk)) => match dec.feed(chunk) {
                Ok(Decoded::Done(resp, rest)) => return Ok((resp, rest)),
                Ok(Decoded::NeedMore) => {}
                Ok(Decoded::Rpc(_)) => return Err(ForwardError::RpcStream),
                Err(e) => return Err(ForwardError::BadResponseHeader(e)),
            },
            Ok(None) => return Err(ForwardError::NoAnswer),
            Err(e) => return Err(ForwardError::ReadAnswer(e)),
        }
    }
}
