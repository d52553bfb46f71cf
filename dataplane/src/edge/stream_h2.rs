//! One request through an HTTP/2 tunnel connection (cloudflared's `--protocol http2`): the
//! edge is the HTTP/2 client and each public request is a stream it opens.
//!
//! - Request: `:method`, `:scheme http`, `:authority` = the Host (the connector's ingress
//!   matches it), `:path` = the origin-form target; then the same fields QUIC sends as
//!   metadata (forwarding fields included) except `host`, `expect` (the edge already
//!   answered `100-continue` itself) and what Go's HTTP/2 server refuses
//!   ([`refused_request_field`]). Names are lowercased, as HTTP/2 requires. The body goes
//!   under the connector's flow control ([`send_all`]) and ends with END_STREAM.
//! - Upgrade (WebSocket): the request carries `cf-cloudflared-proxy-connection-upgrade:
//!   websocket` and no END_STREAM; its DATA frames carry the client's bytes after the switch.
//!   The connector answers the origin's 101 as 200 with the origin's `Upgrade` field, which
//!   the edge turns back into 101.
//! - Response: the status as sent; the origin's fields only from [`RESPONSE_HEADERS`] (Go adds its own
//!   `content-type` and `date`, which are ignored); [`RESPONSE_META`] `{"src":"cloudflared"}`
//!   is the connector's own error, the same 502 as a QUIC `ConnectResponse.error`. Body
//!   credit is released once the bytes have been written to the client, so a slow client
//!   holds back the connector instead of filling memory.

use std::future::poll_fn;

use bytes::Bytes;
use futures::FutureExt;
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::error::ForwardError;
use super::transport::{Tunnel, TunnelDown, TunnelResponse, TunnelStream, TunnelUp};
use super::tunnel_h2::H2Conn;
use crate::h2stream::send_all;
use crate::http::RequestHead;
use crate::wire::http2::{
    RESPONSE_HEADERS, RESPONSE_META, ResponseSource, UPGRADE, UPGRADE_WEBSOCKET,
    decode_response_headers, refused_request_field,
};

/// An HTTP/2 stream carrying one request.
pub(crate) struct H2Stream {
    /// The request half (its END_STREAM state included).
    up: H2Up,
    /// Until the answer's head arrives.
    response: Option<ResponseFuture>,
    /// After it.
    recv: Option<RecvStream>,
    /// Body bytes read but not yet written to the client (credit not yet released).
    unreleased: usize,
    /// Opened as an upgrade: the connector's 200 with an `Upgrade` field is the origin's 101.
    upgrade: bool,
}

impl Tunnel for H2Conn {
    type Stream = H2Stream;

    async fn open(&self, head: &RequestHead, upgrade: bool) -> Result<H2Stream, ForwardError> {
        let mut request = h2_request(head)?;
        if upgrade {
            // cloudflared's marker for a WebSocket; HTTP/2 itself cannot say `Upgrade`.
            request.headers_mut().insert(
                HeaderName::from_static(UPGRADE),
                HeaderValue::from_static(UPGRADE_WEBSOCKET),
            );
        }
        // An upgrade's request half stays open: it carries the client's bytes after the 101.
        let end = !head.body.has_body() && !upgrade;
        // Waits while the connector's concurrent-stream limit (250 on the stock one) is full.
        let mut sender = self
            .sender()
            .ready()
            .await
            .map_err(ForwardError::OpenHttp2Stream)?;
        let (response, send) = sender
            .send_request(request, end)
            .map_err(ForwardError::OpenHttp2Stream)?;
        Ok(H2Stream {
            up: H2Up { send, ended: end },
            response: Some(response),
            recv: None,
            unreleased: 0,
            upgrade,
        })
    }
}

impl TunnelStream for H2Stream {
    type ReadError = h2::Error;
    type Up = H2Up;
    type Down = H2Down;

    async fn send(&mut self, data: Bytes) -> bool {
        self.up.send(data).await
    }

    fn finish(&mut self) {
        self.up.finish();
    }

    fn abandon(&mut self) {
        self.up.abandon();
    }

    async fn response(&mut self) -> Result<TunnelResponse, ForwardError> {
        let future = self.response.take().ok_or(ForwardError::NoAnswer)?;
        let (parts, body) = future
            .await
            .map_err(ForwardError::Http2Stream)?
            .into_parts();
        let (mut status, headers) = response_fields(parts.status.as_u16(), &parts.headers)?;
        // HTTP/2 has no 101: the connector sends 200 with the origin's `Upgrade` field.
        if self.upgrade
            && status == 200
            && headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("upgrade"))
        {
            status = 101;
        }
        self.recv = Some(body);
        Ok(TunnelResponse {
            status,
            headers,
            first: Bytes::new(),
        })
    }

    async fn read_chunk(&mut self) -> Result<Option<Bytes>, h2::Error> {
        read_data(self.recv.as_mut(), &mut self.unreleased).await
    }

    fn try_read_chunk(&mut self) -> Option<Result<Option<Bytes>, h2::Error>> {
        self.read_chunk().now_or_never()
    }

    fn stop(&mut self) {
        if !self.recv.as_ref().is_some_and(RecvStream::is_end_stream) {
            self.up.abandon();
        }
    }

    fn delivered(&mut self) {
        release(self.recv.as_mut(), &mut self.unreleased);
    }

    fn split(self) -> (H2Up, H2Down) {
        (
            self.up,
            H2Down {
                recv: self.recv,
                unreleased: self.unreleased,
            },
        )
    }
}

/// The client → connector direction of an upgraded HTTP/2 stream.
pub(crate) struct H2Up {
    send: SendStream<Bytes>,
    ended: bool,
}

impl TunnelUp for H2Up {
    async fn send(&mut self, data: Bytes) -> bool {
        send_all(&mut self.send, data).await.is_ok()
    }

    fn finish(&mut self) {
        if !self.ended {
            self.ended = true;
            // A reset stream (the connector answered early) refuses this; the answer says
            // the rest.
            let _ = self.send.send_data(Bytes::new(), true);
        }
    }

    fn abandon(&mut self) {
        self.send.send_reset(Reason::CANCEL);
    }
}

/// The connector → client direction of an upgraded HTTP/2 stream.
pub(crate) struct H2Down {
    recv: Option<RecvStream>,
    unreleased: usize,
}

impl TunnelDown for H2Down {
    type ReadError = h2::Error;

    async fn read_chunk(&mut self) -> Result<Option<Bytes>, h2::Error> {
        read_data(self.recv.as_mut(), &mut self.unreleased).await
    }

    fn delivered(&mut self) {
        release(self.recv.as_mut(), &mut self.unreleased);
    }
}

/// The next non-empty DATA frame of `recv`, counted as unreleased credit.
async fn read_data(
    recv: Option<&mut RecvStream>,
    unreleased: &mut usize,
) -> Result<Option<Bytes>, h2::Error> {
    let Some(recv) = recv else {
        return Ok(None);
    };
    // Bound: an empty DATA frame is skipped; each round takes a frame or ends.
    loop {
        match poll_fn(|cx| recv.poll_data(cx)).await {
            Some(Ok(data)) if data.is_empty() => {}
            Some(Ok(data)) => {
                *unreleased += data.len();
                return Ok(Some(data));
            }
            Some(Err(e)) => return Err(e),
            // Trailers, if any, are dropped: the client's head is already written.
            None => return Ok(None),
        }
    }
}

/// Gives the connector back the credit of everything written to the client.
fn release(recv: Option<&mut RecvStream>, unreleased: &mut usize) {
    if *unreleased > 0
        && let Some(recv) = recv
    {
        let _ = recv.flow_control().release_capacity(*unreleased);
    }
    *unreleased = 0;
}

/// The HTTP/2 request head for `head` (its forwarding fields already added).
pub(crate) fn h2_request(head: &RequestHead) -> Result<http::Request<()>, ForwardError> {
    let bad = |what: String| ForwardError::Http2Request(what);
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| bad(format!("method {:?}", head.method)))?;
    let host = head.host.as_deref().unwrap_or_default();
    let path = origin_form(&head.target);
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(host)
        .path_and_query(path)
        .build()
        .map_err(|e| bad(format!("authority {host:?} or target {path:?}: {e}")))?;
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let fields = request.headers_mut();
    fields.reserve(head.headers.len());
    // Bound: the head's fields, bounded by the head limits.
    for h in &head.headers {
        let (name, value) = (h.name(), h.value());
        if name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("expect")
            || refused_request_field(name, value)
        {
            continue;
        }
        // `HeaderName` lowercases; httparse admitted only token names.
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("field name {name:?}")))?;
        let v = HeaderValue::from_bytes(value).map_err(|_| bad(format!("field {name:?}")))?;
        fields.append(n, v);
    }
    Ok(request)
}

/// The path and query of a target: origin-form as it is, absolute-form's path (or `/`).
fn origin_form(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    // Absolute-form: skip `scheme://authority`.
    let after_scheme = target.find("://").map_or(target, |i| &target[i + 3..]);
    match after_scheme.find(['/', '?']) {
        Some(i) if after_scheme[i..].starts_with('/') => &after_scheme[i..],
        _ => "/",
    }
}

/// The origin's status and fields from the connector's HTTP/2 answer.
pub(crate) fn response_fields(
    status: u16,
    fields: &HeaderMap,
) -> Result<(u16, Vec<(String, Bytes)>), ForwardError> {
    let serialised = fields.get(RESPONSE_HEADERS);
    match fields
        .get(RESPONSE_META)
        .and_then(|m| ResponseSource::parse(m.as_bytes()))
    {
        Some(ResponseSource::Connector { flow_limited }) => {
            return Err(ForwardError::Origin(if flow_limited {
                format!("the connector refused the request at its flow limit (HTTP/2 {status})")
            } else {
                format!("the connector reported a proxy error (HTTP/2 {status}, no detail)")
            }));
        }
        Some(ResponseSource::Origin) => {}
        None if serialised.is_some() => {}
        None => return Err(ForwardError::UnknownResponseSource(status)),
    }
    let headers = match serialised {
        Some(v) => {
            decode_response_headers(v.as_bytes()).map_err(ForwardError::BadResponseFields)?
        }
        None => Vec::new(),
    };
    Ok((status, headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{BodyKind, HeaderField, Version};
    use crate::wire::http2::{META_CLOUDFLARED, META_ORIGIN, encode_response_headers};

    fn head(target: &str, fields: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: target.into(),
            version: Version::Http11,
            headers: fields
                .iter()
                .map(|(n, v)| HeaderField::new(n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            keep_alive: true,
            body: BodyKind::Length(3),
            expect_continue: false,
            host: Some("app.example.com:8080".into()),
        }
    }

    #[test]
    fn edge_h2_request_carries_the_fields_go_accepts() {
        let h = head(
            "/a/b?c=d",
            &[
                ("Host", "app.example.com:8080"),
                ("Content-Length", "3"),
                ("X-Custom", "One"),
                ("x-custom", "two"),
                ("Transfer-Encoding", "chunked"),
                ("TE", "gzip"),
                ("Expect", "100-continue"),
                ("X-Forwarded-For", "192.0.2.1"),
            ],
        );
        let r = h2_request(&h).unwrap();
        assert_eq!(r.method(), "POST");
        assert_eq!(r.uri().scheme_str(), Some("http"));
        assert_eq!(
            r.uri().authority().map(|a| a.as_str()),
            Some("app.example.com:8080")
        );
        assert_eq!(r.uri().path_and_query().unwrap().as_str(), "/a/b?c=d");
        let names: Vec<&str> = r.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-length", "x-custom", "x-forwarded-for"]);
        let custom: Vec<&[u8]> = r
            .headers()
            .get_all("x-custom")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(custom, [&b"One"[..], b"two"]);
        // `te: trailers` is the one TE value Go's server admits.
        let r = h2_request(&head("/", &[("te", "trailers")])).unwrap();
        assert_eq!(r.headers()["te"], "trailers");
    }

    #[test]
    fn edge_h2_request_path_from_absolute_form() {
        assert_eq!(origin_form("/x?y"), "/x?y");
        assert_eq!(origin_form("http://h.example/p/q?r"), "/p/q?r");
        assert_eq!(origin_form("http://h.example"), "/");
        assert_eq!(origin_form("http://h.example?q"), "/");
    }

    #[test]
    fn edge_h2_response_fields_come_only_from_the_serialised_header() {
        let mut m = HeaderMap::new();
        m.insert(
            "content-type",
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        m.insert(
            "date",
            HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
        );
        m.insert(RESPONSE_META, HeaderValue::from_static(META_ORIGIN));
        let serialised =
            encode_response_headers([("Content-Type", &b"text/html"[..]), ("Set-Cookie", b"a=1")]);
        m.insert(
            RESPONSE_HEADERS,
            HeaderValue::from_str(&serialised).unwrap(),
        );
        let (status, fields) = response_fields(201, &m).unwrap();
        assert_eq!(status, 201);
        assert_eq!(
            fields,
            vec![
                ("Content-Type".to_owned(), Bytes::from_static(b"text/html")),
                ("Set-Cookie".to_owned(), Bytes::from_static(b"a=1")),
            ]
        );
        // An empty serialised value is no fields.
        m.insert(RESPONSE_HEADERS, HeaderValue::from_static(""));
        assert_eq!(response_fields(204, &m).unwrap(), (204, vec![]));
    }

    #[test]
    fn edge_h2_connector_errors_are_the_origin_side_502() {
        let mut m = HeaderMap::new();
        m.insert(RESPONSE_META, HeaderValue::from_static(META_CLOUDFLARED));
        let e = response_fields(502, &m).unwrap_err();
        assert!(matches!(e, ForwardError::Origin(_)), "{e}");
        assert_eq!(e.side(), crate::http::GatewayFailure::Origin);
        // No meta and no fields: nobody says who answered.
        let e = response_fields(200, &HeaderMap::new()).unwrap_err();
        assert!(matches!(e, ForwardError::UnknownResponseSource(200)));
        assert_eq!(e.side(), crate::http::GatewayFailure::Tunnel);
        // Malformed serialised fields.
        let mut m = HeaderMap::new();
        m.insert(RESPONSE_META, HeaderValue::from_static(META_ORIGIN));
        m.insert(RESPONSE_HEADERS, HeaderValue::from_static("YQ:Yg:Yw"));
        assert!(matches!(
            response_fields(200, &m),
            Err(ForwardError::BadResponseFields(_))
        ));
    }
}
