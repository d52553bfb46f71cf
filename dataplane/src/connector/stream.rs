//! One task per stream the edge opens: a data stream (`ConnectRequest` → origin →
//! `ConnectResponse` + body) or an RPC stream (`updateConfiguration`).

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};

use super::ConnectorShared;
use super::origin::{OriginRequest, OriginResponse, RequestBody, ResponseSink};
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
    let host = if meta.host.is_empty() {
        host_of(&req.dest).to_owned()
    } else {
        meta.host.clone()
    };
    let path = path_of(&req.dest);
    let target = shared.ingress.route(strip_port(&host), path);
    let request = OriginRequest {
        method: meta.method,
        dest: req.dest,
        host,
        headers: meta.headers,
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
        metrics: metrics.as_ref(),
    };
    match shared.origins.proxy(&target, request, body, sink).await {
        Ok(()) => {
            metrics.request_finished(status);
            let _ = send.finish();
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
    metrics: &'a TunnelMetrics,
}

impl ResponseSink for QuicSink<'_> {
    async fn send_head(&mut self, head: OriginResponse) -> io::Result<()> {
        *self.status = head.status;
        let resp = ConnectResponse {
            error: String::new(),
            metadata: http_response_metadata(head.status, head.headers),
        };
        self.send
            .write_all(encode_response(&resp))
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
    }

    async fn send_body(&mut self, chunk: Bytes) -> io::Result<()> {
        self.metrics.bytes_from_origin(chunk.len() as u64);
        self.send
            .write_all(chunk)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
    }
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
        UpdateConfigurationResponse {
            latest_applied_version: version,
            err: "ringway connector: this tunnel is locally managed; remote configuration is not applied".into(),
        }
    }
}

fn host_of(url: &str) -> &str {
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

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_stream_url_parts() {
        assert_eq!(
            host_of("http://a.example.com:8080/x?y"),
            "a.example.com:8080"
        );
        assert_eq!(path_of("http://a.example.com/x/y?q=1"), "/x/y");
        assert_eq!(path_of("http://a.example.com"), "/");
        assert_eq!(path_of("http://a.example.com?q"), "/");
        assert_eq!(strip_port("a.example.com:8080"), "a.example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.example.com"), "a.example.com");
    }
}
