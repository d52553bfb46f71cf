//! One request the edge sent on an HTTP/2 transport connection: an HTTP request proxied to the
//! origin (the same ingress, [`super::origin::OriginClient::proxy`] and metrics as a QUIC data
//! stream; a WebSocket piped both ways after the origin's 101), a remote configuration push,
//! or a kind a locally managed tunnel does not serve (502).
//!
//! Response framing (cloudflared's `connection/http2.go`): `:status` is the origin's (101 as
//! 200), the origin's fields travel serialised in [`RESPONSE_HEADERS`], [`RESPONSE_META`] says
//! `{"src":"origin"}`; a failure before the head is `502` with `{"src":"cloudflared"}` and no
//! body, after it the stream is reset.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use tracing::{debug, warn};

use super::ConnectorShared;
use super::origin::{OriginRequest, OriginResponse, ProxyError, RequestBody, ResponseSink};
use super::stream::{RouteKey, locally_managed_answer, log_sink_failure, upgrade_protocol};
use crate::h2stream::{io_error, send_all};
use crate::metrics::TunnelMetrics;
use crate::wire::http2::{
    RESPONSE_HEADERS, RESPONSE_META, RequestKind, ResponseSource, UPGRADE, encode_response_headers,
    transport_status,
};

/// The largest update-configuration body read (the edge's remote configuration, JSON).
const MAX_CONFIGURATION_BODY: usize = 4 << 20;

/// Serves one edge request to the end.
pub(crate) async fn serve_request(
    shared: &ConnectorShared,
    kind: RequestKind,
    parts: http::request::Parts,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
) {
    match kind {
        RequestKind::Http => serve_http(shared, parts, body, respond, false).await,
        RequestKind::Websocket => serve_http(shared, parts, body, respond, true).await,
        RequestKind::Configuration => serve_configuration(body, respond).await,
        RequestKind::Tcp | RequestKind::ControlStream => {
            // A second control stream, or a private-network TCP flow (WARP routing), which a
            // locally managed tunnel does not serve.
            debug!(?kind, path = %parts.uri, "HTTP/2 request kind not served");
            answer_502(&mut respond);
        }
    }
}

/// The origin request for an edge request: `:method`, `http://{:authority}{:path}`, the Host
/// from `:authority` (else a `host` field), every field as sent except the transport's own.
pub(crate) fn origin_request(
    parts: &http::request::Parts,
    body_open: bool,
    websocket: bool,
) -> OriginRequest {
    let host_field = || {
        parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    };
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(host_field)
        .unwrap_or("")
        .to_owned();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut headers: Vec<(String, Bytes)> = parts
        .headers
        .iter()
        .filter(|(n, _)| !n.as_str().eq_ignore_ascii_case(UPGRADE))
        .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    // HTTP/2 has no chunked framing: a body of unknown length is one whose stream stays open
    // with no Content-Length (Go hands it on with ContentLength -1, sent chunked).
    // A WebSocket's open stream is the new protocol's bytes, not a body.
    if body_open
        && !websocket
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        headers.push((
            "transfer-encoding".to_owned(),
            Bytes::from_static(b"chunked"),
        ));
    }
    let upgrade = websocket.then(|| upgrade_protocol(&headers));
    OriginRequest {
        method: parts.method.as_str().to_owned(),
        dest: format!("http://{host}{path}"),
        host,
        headers,
        upgrade,
    }
}

async fn serve_http(
    shared: &ConnectorShared,
    parts: http::request::Parts,
    recv: RecvStream,
    mut respond: SendResponse<Bytes>,
    websocket: bool,
) {
    let metrics = &shared.metrics;
    let request = origin_request(&parts, !recv.is_end_stream(), websocket);
    let key = RouteKey::of_request(&request.host, &request.dest);
    let target = shared.ingress.route(key.host, &key.path);
    metrics.request_started();
    let body = H2Body {
        recv,
        metrics: metrics.clone(),
    };
    let mut status = 0u16;
    let mut send: Option<SendStream<Bytes>> = None;
    let sink = H2Sink {
        respond: &mut respond,
        send: &mut send,
        status: &mut status,
        shared,
    };
    let outcome = shared.origins.proxy(&target, request, body, sink).await;
    match outcome {
        Ok(()) => {
            metrics.request_finished(status);
            match send {
                Some(mut send) => {
                    let _ = send.send_data(Bytes::new(), true);
                }
                // `proxy` sends a head before it succeeds; answer anyway rather than hang.
                None => answer_502(&mut respond),
            }
        }
        Err(e) if !e.head_sent() && send.is_none() => {
            // As on QUIC: the operator's view of the 502; the edge names only the side.
            warn!(error = %e, "origin request failed");
            metrics.request_error();
            metrics.request_finished(502);
            answer_502(&mut respond);
        }
        Err(e) => {
            if matches!(e, ProxyError::Sink { .. }) {
                log_sink_failure(&e);
            } else {
                debug!(error = %e, "origin response failed mid-body");
            }
            metrics.request_error();
            metrics.request_finished(status);
            if let Some(mut send) = send {
                send.send_reset(Reason::INTERNAL_ERROR);
            }
        }
    }
}

/// `502`, `{"src":"cloudflared"}`, `content-length: 0`, END_STREAM on the HEADERS.
fn answer_502(respond: &mut SendResponse<Bytes>) {
    let response = http::Response::builder()
        .status(502)
        .header(
            RESPONSE_META,
            ResponseSource::Connector {
                flow_limited: false,
            }
            .meta(),
        )
        .header(http::header::CONTENT_LENGTH, "0")
        .body(())
        .expect("static fields are valid");
    let _ = respond.send_response(response, true);
}

/// The request body: the stream's DATA, credit released as each piece is handed on.
struct H2Body {
    recv: RecvStream,
    metrics: Arc<TunnelMetrics>,
}

impl RequestBody for H2Body {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        // Bound: empty DATA frames are skipped; each turn takes a frame or ends.
        loop {
            match self.recv.data().await {
                Some(Ok(b)) => {
                    let _ = self.recv.flow_control().release_capacity(b.len());
                    if b.is_empty() {
                        continue;
                    }
                    self.metrics.bytes_to_origin(b.len() as u64);
                    return Ok(Some(b));
                }
                Some(Err(e)) => return Err(io_error(e)),
                None => return Ok(None),
            }
        }
    }
}

/// The response: the head with the origin's fields serialised, then DATA under flow control.
struct H2Sink<'a> {
    respond: &'a mut SendResponse<Bytes>,
    send: &'a mut Option<SendStream<Bytes>>,
    status: &'a mut u16,
    shared: &'a ConnectorShared,
}

impl ResponseSink for H2Sink<'_> {
    async fn send_head(&mut self, head: OriginResponse) -> io::Result<()> {
        *self.status = head.status;
        let serialised =
            encode_response_headers(head.headers.iter().map(|(n, v)| (n.as_str(), &v[..])));
        let response = http::Response::builder()
            .status(transport_status(head.status))
            .header(RESPONSE_HEADERS, serialised)
            .header(RESPONSE_META, ResponseSource::Origin.meta())
            .body(())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let send = self
            .respond
            .send_response(response, false)
            .map_err(io_error)?;
        *self.send = Some(send);
        Ok(())
    }

    async fn send_body(&mut self, chunk: Bytes) -> io::Result<()> {
        let Some(send) = self.send.as_mut() else {
            return Err(io::Error::other("response body before its head"));
        };
        self.shared.metrics.bytes_from_origin(chunk.len() as u64);
        self.shared
            .write_to_edge(async { send_all(send, chunk).await.map_err(io_error) })
            .await
    }
}

/// `update-configuration`: read the JSON body `{"version":N,"config":{…}}` and answer as the
/// QUIC `updateConfiguration` handler decides (a locally managed tunnel applies nothing), in
/// cloudflared's JSON: `{"lastAppliedVersion":N,"err":null}`. A body that is not that JSON is
/// answered 502, as cloudflared does.
async fn serve_configuration(mut recv: RecvStream, mut respond: SendResponse<Bytes>) {
    let mut body = Vec::new();
    // Bounded by MAX_CONFIGURATION_BODY.
    while let Some(chunk) = recv.data().await {
        let Ok(chunk) = chunk else {
            return;
        };
        let _ = recv.flow_control().release_capacity(chunk.len());
        if body.len() + chunk.len() > MAX_CONFIGURATION_BODY {
            debug!("update-configuration body too large");
            answer_502(&mut respond);
            return;
        }
        body.extend_from_slice(&chunk);
    }
    let Some(version) = configuration_version(&body) else {
        debug!("update-configuration body is not {{\"version\":N,...}}");
        answer_502(&mut respond);
        return;
    };
    let answer = locally_managed_answer(version);
    debug!(version, reason = %answer.err, "remote configuration not applied");
    let json = format!(
        r#"{{"lastAppliedVersion":{},"err":null}}"#,
        answer.latest_applied_version
    );
    let response = http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_LENGTH, json.len())
        .body(())
        .expect("static fields are valid");
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(Bytes::from(json), true);
    }
}

/// The top-level `"version"` (an int32) of a JSON object; `None` when the text is not a JSON
/// object or has no such member. Other members are skipped without being interpreted.
pub(crate) fn configuration_version(json: &[u8]) -> Option<i32> {
    let mut p = Json { s: json, i: 0 };
    p.ws();
    p.eat(b'{')?;
    let mut version = None;
    p.ws();
    if p.peek() == Some(b'}') {
        return None;
    }
    // Bounded by the input: every member consumes bytes or fails.
    loop {
        p.ws();
        let key = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        if &json[key] == b"version" {
            let start = p.i;
            p.value()?;
            let text = std::str::from_utf8(&json[start..p.i]).ok()?;
            version = Some(text.parse::<i32>().ok()?);
        } else {
            p.value()?;
        }
        p.ws();
        match p.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    p.ws();
    if p.i != json.len() {
        return None;
    }
    version
}

/// Just enough of a JSON reader to skip values.
struct Json<'a> {
    s: &'a [u8],
    i: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }
    fn eat(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    /// A string's raw bytes (escapes kept as written), as a range of the input.
    fn string(&mut self) -> Option<std::ops::Range<usize>> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.next()? {
                b'"' => return Some(start..self.i - 1),
                b'\\' => {
                    self.next()?;
                }
                _ => {}
            }
        }
    }
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                // Depth-counted skip; strings are skipped whole so brackets in them don't count.
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                let start = self.i;
                while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
                {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_version_reads_the_top_level_member_only() {
        assert_eq!(
            configuration_version(br#"{"version":3,"config":{"ingress":[]}}"#),
            Some(3)
        );
        assert_eq!(
            configuration_version(
                br#" { "config" : {"version": 9, "s": "}\"{"}, "version" : -1 } "#
            ),
            Some(-1)
        );
        assert_eq!(configuration_version(br#"{"config":{}}"#), None);
        assert_eq!(configuration_version(br#"{"version":"3"}"#), None);
        assert_eq!(configuration_version(br#"{"version":3"#), None);
        assert_eq!(configuration_version(b"not json"), None);
        assert_eq!(configuration_version(br#"{"version":99999999999}"#), None);
    }

    #[test]
    fn origin_request_from_edge_fields() {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://app.example.com/a/b?c=d")
            .header(UPGRADE, "none")
            .header("x-forwarded-for", "192.0.2.1")
            .header("cf-cloudflared-proxy-src", "")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let r = origin_request(&parts, true, false);
        assert_eq!(r.method, "POST");
        assert_eq!(r.host, "app.example.com");
        assert_eq!(r.dest, "http://app.example.com/a/b?c=d");
        let names: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), &v[..]))
            .collect();
        assert_eq!(
            names,
            [
                ("x-forwarded-for", &b"192.0.2.1"[..]),
                ("cf-cloudflared-proxy-src", b""),
                ("cookie", b"a=1"),
                ("cookie", b"b=2"),
                ("transfer-encoding", b"chunked"),
            ]
        );
        // A known length, or no body at all: no chunked framing is invented.
        let req = http::Request::builder()
            .uri("/only-path")
            .header("host", "h.example.com:8443")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let r = origin_request(&parts, true, false);
        assert_eq!(r.host, "h.example.com:8443");
        assert_eq!(r.dest, "http://h.example.com:8443/only-path");
        assert!(!r.headers.iter().any(|(n, _)| n == "transfer-encoding"));
        assert!(
            !origin_request(&parts, false, false)
                .headers
                .iter()
                .any(|(n, _)| n == "transfer-encoding")
        );
    }
}
