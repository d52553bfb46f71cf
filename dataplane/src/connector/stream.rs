//! One task per stream the edge opens on a QUIC connection: a data stream (`ConnectRequest` →
//! origin → `ConnectResponse` + body; for a WebSocket, after the origin's 101, the stream's
//! bytes both ways) or an RPC stream (`updateConfiguration`). Also the
//! routing key both transports match ingress rules with ([`RouteKey`]).

use std::borrow::Cow;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};

use super::ConnectorShared;
use super::origin::{OriginRequest, OriginResponse, ProxyError, RequestBody, ResponseSink};
use crate::http::host_without_port;
use crate::metrics::TunnelMetrics;
use crate::quic::VarInt;
use crate::quic::endpoint::{RecvStream, SendStream};
use crate::quic::stream_io::{StreamReader, StreamWriter};
use crate::wire::rpc::{ConfigurationHandler, UpdateConfigurationResponse, serve_configuration};
use crate::wire::stream::{
    ConnectRequest, ConnectResponse, ConnectionType, Decoded, StreamHeaderDecoder, encode_response,
    http_response_metadata, parse_request_metadata,
};

/// Serves one edge-opened stream to the end.
pub(crate) async fn serve_stream(
    shared: Rc<ConnectorShared>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let mut dec = StreamHeaderDecoder::<ConnectRequest>::new().accepting_rpc();
    // Bounded by the decoder's message-size limit.
    let (req, rest) = loop {
        match recv.read_chunk(usize::MAX).await {
            Ok(Some(chunk)) => match dec.feed(chunk) {
                Ok(Decoded::NeedMore) => {}
                Ok(Decoded::Done(req, rest)) => break (req, rest),
                Ok(Decoded::Rpc(rest)) => {
                    serve_rpc(send, recv, rest).await;
                    return;
                }
                Err(e) => {
                    // cloudflared resets a stream whose preamble is bad; so do we.
                    debug!(error = %e, "bad data stream header");
                    send.reset(VarInt::from_u32(0));
                    recv.stop(VarInt::from_u32(0));
                    return;
                }
            },
            Ok(None) | Err(_) => return,
        }
    };
    match req.kind {
        ConnectionType::Http | ConnectionType::Websocket => {
            serve_http(&shared, req, rest, send, recv).await;
        }
        ConnectionType::Tcp => {
            let resp = ConnectResponse {
                error: "ringway connector: TCP streams are not supported yet".into(),
                metadata: Vec::new(),
            };
            let _ = send.write_all(encode_response(&resp)).await;
            let _ = send.finish();
        }
    }
}

async fn serve_http(
    shared: &ConnectorShared,
    req: ConnectRequest,
    first: Bytes,
    mut send: SendStream,
    recv: RecvStream,
) {
    let metrics = &shared.metrics;
    let meta = match parse_request_metadata(&req.metadata) {
        Ok(m) => m,
        Err(e) => {
            answer_502(&mut send, &format!("bad request metadata: {e}")).await;
            metrics.request_error();
            return;
        }
    };
    let key = RouteKey::of_request(&meta.host, &req.dest);
    let target = shared.ingress.route(key.host, &key.path);
    let host = request_authority(&meta.host, &req.dest).to_owned();
    let upgrade = (req.kind == ConnectionType::Websocket).then(|| upgrade_protocol(&meta.headers));
    let request = OriginRequest {
        method: meta.method,
        dest: req.dest,
        host,
        headers: meta.headers,
        upgrade,
    };
    metrics.request_started();
    let body = QuicBody {
        first: Some(first),
        recv,
        metrics: metrics.clone(),
    };
    let mut status = 0u16;
    let sink = QuicSink {
        send: &mut send,
        status: &mut status,
        shared,
    };
    match shared.origins.proxy(&target, request, body, sink).await {
        Ok(()) => {
            metrics.request_finished(status);
            let _ = send.finish();
        }
        Err(e @ ProxyError::Sink { .. }) => {
            // The edge side failed (stopped, gone, or took nothing within the write limit):
            // part of a head may be queued, so a 502 would garble the stream. Reset it.
            log_sink_failure(&e);
            metrics.request_error();
            metrics.request_finished(status);
            send.reset(VarInt::from_u32(0));
        }
        Err(e) if !e.head_sent() => {
            // The operator's view of a 502: the edge shows public clients only which side
            // failed, so the address and OS error are logged here (and sent to the edge's log).
            warn!(error = %e, "origin request failed");
            metrics.request_error();
            metrics.request_finished(502);
            answer_502(&mut send, &e.to_string()).await;
        }
        Err(e) => {
            debug!(error = %e, "origin response failed mid-body");
            metrics.request_error();
            metrics.request_finished(status);
            send.reset(VarInt::from_u32(0));
        }
    }
}

/// The protocol a WebSocket-kind request switches to: the `Upgrade` field a ringway edge
/// passes on, else `websocket` (what cloudflared always sends, and all the kind can mean to
/// Cloudflare's edge).
pub(crate) fn upgrade_protocol(headers: &[(String, Bytes)]) -> String {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("upgrade"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("websocket")
        .to_owned()
}

/// A response the edge stopped taking: loud when the write limit ended it (the operator set
/// it and wants to know), quiet when the edge or its client went away.
pub(crate) fn log_sink_failure(e: &ProxyError) {
    let timed_out =
        matches!(e, ProxyError::Sink { source, .. } if source.kind() == io::ErrorKind::TimedOut);
    if timed_out {
        warn!(error = %e, "Closing the stream: writing towards the edge timed out");
    } else {
        debug!(error = %e, "writing the response to the edge failed");
    }
}

async fn answer_502(send: &mut SendStream, cause: &str) {
    let resp = ConnectResponse {
        error: cause.to_owned(),
        metadata: http_response_metadata::<&str, &str>(502, []),
    };
    let _ = send.write_all(encode_response(&resp)).await;
    let _ = send.finish();
}

/// The request body: the rest of the edge → connector half of the stream.
struct QuicBody {
    first: Option<Bytes>,
    recv: RecvStream,
    metrics: Arc<TunnelMetrics>,
}

impl RequestBody for QuicBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if let Some(b) = self.first.take().filter(|b| !b.is_empty()) {
            self.metrics.bytes_to_origin(b.len() as u64);
            return Ok(Some(b));
        }
        match self.recv.read_chunk(usize::MAX).await {
            Ok(Some(b)) => {
                self.metrics.bytes_to_origin(b.len() as u64);
                Ok(Some(b))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::new(io::ErrorKind::ConnectionReset, e)),
        }
    }
}

/// The response: `ConnectResponse` then the raw body on the connector → edge half.
struct QuicSink<'a> {
    send: &'a mut SendStream,
    status: &'a mut u16,
    shared: &'a ConnectorShared,
}

impl ResponseSink for QuicSink<'_> {
    async fn send_head(&mut self, head: OriginResponse) -> io::Result<()> {
        *self.status = head.status;
        let resp = ConnectResponse {
            error: String::new(),
            metadata: http_response_metadata(head.status, head.headers),
        };
        let write = self.send.write_all(encode_response(&resp));
        self.shared
            .write_to_edge(async { write.await.map_err(broken_pipe) })
            .await
    }

    async fn send_body(&mut self, chunk: Bytes) -> io::Result<()> {
        self.shared.metrics.bytes_from_origin(chunk.len() as u64);
        let write = self.send.write_all(chunk);
        self.shared
            .write_to_edge(async { write.await.map_err(broken_pipe) })
            .await
    }
}

fn broken_pipe(e: crate::quic::endpoint::StreamWriteError) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}

/// An edge → connector RPC stream: `ConfigurationManager.updateConfiguration`.
async fn serve_rpc(send: SendStream, recv: RecvStream, rest: Bytes) {
    let rpc = serve_configuration(
        RemoteConfig,
        StreamReader::with_prefix(recv, rest),
        StreamWriter::new(send),
    );
    if let Err(e) = rpc.await {
        debug!(error = %e, "configuration RPC stream failed");
    }
}

/// ringway tunnels are locally managed: remote configuration is acknowledged and ignored,
/// with the reason, as cloudflared does for a locally configured tunnel.
struct RemoteConfig;

impl ConfigurationHandler for RemoteConfig {
    async fn update_configuration(
        &self,
        version: i32,
        _config: Vec<u8>,
    ) -> UpdateConfigurationResponse {
        locally_managed_answer(version)
    }
}

/// The answer to a remote configuration push, on either transport: the version is
/// acknowledged, nothing is applied, and `err` says why.
pub(crate) fn locally_managed_answer(version: i32) -> UpdateConfigurationResponse {
    UpdateConfigurationResponse {
        latest_applied_version: version,
        err:
            "ringway connector: this tunnel is locally managed; remote configuration is not applied"
                .into(),
    }
}

/// What the ingress rules match a request on. Live traffic and `ringway tunnel ingress rule`
/// both build it here, so the CLI prints the rule a request for the same URL reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteKey<'a> {
    /// The routing host ([`crate::http::Authority::host`]): no port, brackets or final dot.
    pub host: &'a str,
    /// The URL path without query or fragment, percent-decoded as Go's `URL.Path` holds it
    /// (cloudflared matches path rules against that form).
    pub path: Cow<'a, str>,
}

impl<'a> RouteKey<'a> {
    /// For a request from the edge: the `Host` it forwarded, else `dest`'s authority (an
    /// HTTP/1.0 request may have neither, and then the host is empty); the path from `dest`.
    pub fn of_request(host: &'a str, dest: &'a str) -> Self {
        Self {
            host: host_without_port(request_authority(host, dest)),
            path: percent_decode(path_of(dest)),
        }
    }

    /// For a URL as `ingress rule` takes it: the request a client sends for that URL.
    pub fn of_url(url: &'a str) -> Self {
        Self::of_request("", url)
    }
}

/// The authority a request names: the `Host` the edge forwarded, else `dest`'s.
fn request_authority<'a>(host: &'a str, dest: &'a str) -> &'a str {
    if host.is_empty() {
        authority_of(dest)
    } else {
        host
    }
}

fn authority_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => {
            let p = &rest[i..];
            p.split(['?', '#']).next().unwrap_or("/")
        }
        None => "/",
    }
}

/// `%XX` → the byte; a `%` not followed by two hex digits stays as written. Borrowed when
/// there is nothing to decode, which is nearly always.
fn percent_decode(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_stream_url_parts() {
        assert_eq!(
            authority_of("http://a.example.com:8080/x?y"),
            "a.example.com:8080"
        );
        assert_eq!(path_of("http://a.example.com/x/y?q=1"), "/x/y");
        assert_eq!(path_of("http://a.example.com"), "/");
        assert_eq!(path_of("http://a.example.com?q"), "/");
        assert_eq!(path_of("http://a.example.com/x#f"), "/x");
    }

    #[test]
    fn connector_stream_route_key() {
        let k = |host, dest| {
            let k = RouteKey::of_request(host, dest);
            (k.host, k.path.into_owned())
        };
        // The forwarded Host wins over dest's authority.
        assert_eq!(
            k("a.example.com:8080", "http://b.example.com/x"),
            ("a.example.com", "/x".to_owned())
        );
        assert_eq!(
            k("", "http://b.example.com:81/x?q"),
            ("b.example.com", "/x".to_owned())
        );
        assert_eq!(
            k("[::1]:8080", "http://[::1]:8080/"),
            ("::1", "/".to_owned())
        );
        assert_eq!(k("[::1]", "http://[::1]/"), ("::1", "/".to_owned()));
        assert_eq!(
            k("A.Example.com.", "http://x/"),
            ("A.Example.com", "/".to_owned())
        );
        assert_eq!(k("", "/only/a/path"), ("", "/only/a/path".to_owned()));
        assert_eq!(
            RouteKey::of_url("http://[::1]:8080/x"),
            RouteKey::of_request("[::1]:8080", "http://[::1]:8080/x")
        );
    }

    #[test]
    fn connector_stream_path_is_decoded_like_go() {
        assert!(matches!(percent_decode("/plain"), Cow::Borrowed("/plain")));
        assert_eq!(percent_decode("/a%20b"), "/a b");
        assert_eq!(percent_decode("/a%2Fb%zz%4"), "/a/b%zz%4");
        assert_eq!(percent_decode("/%E2%82%AC"), "/\u{20ac}");
        assert_eq!(percent_decode("/%FF"), "/\u{fffd}");
    }
}
