//! The request towards the origin: request line and head from [`OriginRequest`], the body
//! framing decision, and sending the body.
//!
//! The head is rebuilt, never copied from the client: hop-by-hop fields are dropped, Host
//! is ours, and the framing fields (Content-Length / Transfer-Encoding) are written for the
//! body we actually send. Names and values from the edge's metadata are checked for bytes
//! that would split a header (CR, LF, NUL), so metadata cannot inject a second request.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::conn::Conn;
use super::{OriginRequest, ProxyError, RequestBody};
use crate::http::{ChunkedEncoder, HeaderLike, is_token, strip_hop_by_hop};

/// `disableChunkedEncoding` buffers a chunked request body to learn its length; beyond
/// this the request fails rather than holding unbounded memory per stream.
pub(crate) const MAX_BUFFERED_BODY: u64 = 64 * 1024 * 1024;

/// How the request body goes to the origin.
#[derive(Debug)]
pub(crate) enum ReqBody {
    /// No body; the body source is never polled.
    None,
    /// Content-Length: exactly this many bytes from the body source.
    Length(u64),
    /// Unknown length: chunked-encode what the body source yields.
    Chunked,
    /// Read ahead (disableChunkedEncoding): sent with a Content-Length, and retryable since
    /// we own the bytes.
    Buffered(Vec<Bytes>),
}

/// Everything decided before connecting.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Request line and header fields, without the framing field and the final CRLF.
    pub(crate) head: BytesMut,
    pub(crate) body: ReqBody,
    pub(crate) head_request: bool,
    /// The Host sent (after `http_host_header`).
    pub(crate) host: String,
    /// The path and query sent.
    pub(crate) path: String,
    /// The request asks to switch protocols ([`OriginRequest::upgrade`]).
    pub(crate) upgrade: bool,
}

/// The path-and-query of `dest` ("/" when it has none); a bare path is used as is.
pub(crate) fn path_and_query(dest: &str) -> String {
    let dest = dest.split('#').next().unwrap_or(dest);
    let rest = match dest.find("://") {
        Some(i) => &dest[i + 3..],
        None if dest.starts_with('/') => return dest.to_owned(),
        None => dest,
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_owned(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".to_owned(),
    }
}

fn bad(reason: impl Into<String>) -> ProxyError {
    ProxyError::BadRequest {
        reason: reason.into(),
    }
}

fn has_token(headers: &[(String, Bytes)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.0.eq_ignore_ascii_case(name))
        .flat_map(|h| h.1.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What both protocols check and decide before connecting: the method and target are sane,
/// the Host to send (after `host_override`), and how the body is framed.
struct Checked {
    path: String,
    host: String,
    body: ReqBody,
}

/// Whether a header value would split a header (or a request) on HTTP/1.1.
pub(crate) fn unsafe_value(v: &[u8]) -> bool {
    v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

fn check(
    req: &OriginRequest,
    host_override: Option<&str>,
    chunked_allowed: bool,
) -> Result<Checked, ProxyError> {
    if !is_token(req.method.as_bytes()) {
        return Err(bad(format!("method {:?} is not a token", req.method)));
    }
    let path = path_and_query(&req.dest);
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("request target has whitespace or control bytes"));
    }
    let host = host_override.unwrap_or(&req.host).to_owned();
    if unsafe_value(host.as_bytes()) {
        return Err(bad("host has control bytes"));
    }

    let mut length: Option<u64> = None;
    // Bound: the header list, itself bounded by the edge's head limits.
    for (_, value) in req
        .headers
        .iter()
        .filter(|h| h.header_name().eq_ignore_ascii_case("content-length"))
    {
        let n = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                bad(format!(
                    "invalid Content-Length {:?}",
                    String::from_utf8_lossy(value)
                ))
            })?;
        if length.is_some_and(|l| l != n) {
            return Err(bad("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    let chunked = has_token(&req.headers, "transfer-encoding", "chunked");
    let body = match (length, chunked) {
        (Some(0), _) | (None, false) => ReqBody::None,
        (Some(n), _) => ReqBody::Length(n),
        (None, true) if chunked_allowed => ReqBody::Chunked,
        (None, true) => ReqBody::Buffered(Vec::new()),
    };
    Ok(Checked { path, host, body })
}

/// Whether the client asked for trailers (`TE: trailers`), which HTTP/2 forwards.
pub(crate) fn wants_trailers(req: &OriginRequest) -> bool {
    has_token(&req.headers, "te", "trailers")
}

/// Decides the head and body framing. `keep_alive` false adds `Connection: close`.
pub(crate) fn plan(
    req: &OriginRequest,
    host_override: Option<&str>,
    chunked_allowed: bool,
    keep_alive: bool,
) -> Result<Plan, ProxyError> {
    let Checked {
        path,
        host,
        mut body,
    } = check(req, host_override, chunked_allowed)?;
    let mut fields: Vec<(String, Bytes)> = req.headers.clone();
    strip_hop_by_hop(&mut fields);
    let websocket = req
        .upgrade
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("websocket"));
    if req.upgrade.is_some() {
        // cloudflared sends an upgrade without a body; the stream's bytes after the head are
        // the new protocol's, sent after the 101.
        body = ReqBody::None;
    }
    if websocket {
        // Set, not added, as cloudflared does: version 13 is the only one (RFC 6455).
        fields.retain(|f| !f.0.eq_ignore_ascii_case("sec-websocket-version"));
    }
    let mut head = BytesMut::with_capacity(
        256 + fields
            .iter()
            .map(|f| f.0.len() + f.1.len() + 4)
            .sum::<usize>(),
    );
    // Writing into a BytesMut cannot fail.
    let _ = write!(
        head,
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method, path, host
    );
    for (name, value) in &fields {
        if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if !is_token(name.as_bytes()) || unsafe_value(value) {
            return Err(bad(format!("header {name:?} is not a valid field")));
        }
        // Values go out byte for byte: obs-text is the origin's to interpret.
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    if let Some(protocol) = &req.upgrade {
        if !is_token_list(protocol.as_bytes()) {
            return Err(bad(format!("upgrade protocol {protocol:?} is not a token")));
        }
        let _ = write!(head, "Connection: Upgrade\r\nUpgrade: {protocol}\r\n");
        if websocket {
            head.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
        }
    } else if !keep_alive {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    Ok(Plan {
        head,
        body,
        head_request: req.method.eq_ignore_ascii_case("HEAD"),
        host,
        path,
        upgrade: req.upgrade.is_some(),
    })
}

/// An `Upgrade` value: protocol names (tokens, `/version` allowed) separated by commas.
fn is_token_list(v: &[u8]) -> bool {
    !v.is_empty()
        && v.split(|&b| b == b',').all(|p| {
            let p = p.trim_ascii();
            !p.is_empty() && p.split(|&b| b == b'/').all(is_token)
        })
}

/// Reads a chunked request body into memory for `disableChunkedEncoding`.
pub(crate) async fn buffer_body(body: &mut impl RequestBody) -> Result<Vec<Bytes>, ProxyError> {
    let mut chunks = Vec::new();
    let mut total = 0u64;
    // Bound: MAX_BUFFERED_BODY bytes; empty chunks are bounded by the body source (the
    // QUIC stream yields data or end).
    while let Some(chunk) = body
        .next_chunk()
        .await
        .map_err(|source| ProxyError::RequestBody { source })?
    {
        total += chunk.len() as u64;
        if total > MAX_BUFFERED_BODY {
            return Err(bad(format!(
                "body over {MAX_BUFFERED_BODY} bytes cannot be buffered (disableChunkedEncoding)"
            )));
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
    }
    Ok(chunks)
}

/// Why sending the request stopped.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The client side failed (body read error, framing mismatch): not the origin's fault.
    Client(ProxyError),
    /// Writing to the origin failed.
    Origin(std::io::Error),
}

/// Writes head and body. `consumed` turns true once the body source has been polled, from
/// which point the request cannot be replayed on another connection.
pub(crate) async fn send(
    conn: &mut Conn,
    head: &BytesMut,
    plan_body: &ReqBody,
    body: &mut impl RequestBody,
    consumed: &mut bool,
) -> Result<(), SendError> {
    let mut head = head.clone();
    match plan_body {
        ReqBody::None => {}
        ReqBody::Length(n) => {
            let _ = write!(head, "Content-Length: {n}\r\n");
        }
        ReqBody::Chunked => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ReqBody::Buffered(chunks) => {
            let n: usize = chunks.iter().map(Bytes::len).sum();
            let _ = write!(head, "Content-Length: {n}\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    let head = head.freeze();
    match plan_body {
        ReqBody::None => conn.write_all(vec![head]).await.map_err(SendError::Origin),
        ReqBody::Buffered(chunks) => {
            let mut bufs = Vec::with_capacity(chunks.len() + 1);
            bufs.push(head);
            bufs.extend(chunks.iter().cloned());
            conn.write_all(bufs).await.map_err(SendError::Origin)
        }
        ReqBody::Length(n) => {
            conn.write_all(vec![head])
                .await
                .map_err(SendError::Origin)?;
            send_length(conn, *n, body, consumed).await
        }
        ReqBody::Chunked => {
            conn.write_all(vec![head])
                .await
                .map_err(SendError::Origin)?;
            send_chunked(conn, body, consumed).await
        }
    }
}

async fn next(
    body: &mut impl RequestBody,
    consumed: &mut bool,
) -> Result<Option<Bytes>, SendError> {
    *consumed = true;
    body.next_chunk()
        .await
        .map_err(|source| SendError::Client(ProxyError::RequestBody { source }))
}

async fn send_length(
    conn: &mut Conn,
    len: u64,
    body: &mut impl RequestBody,
    consumed: &mut bool,
) -> Result<(), SendError> {
    let mut left = len;
    // Bound: `len` bytes; each non-empty chunk shrinks `left`, and the body source ends.
    while left > 0 {
        let Some(chunk) = next(body, consumed).await? else {
            return Err(SendError::Client(bad(format!(
                "body ended after {} of {len} bytes (Content-Length)",
                len - left
            ))));
        };
        if chunk.len() as u64 > left {
            return Err(SendError::Client(bad(format!(
                "body longer than its Content-Length {len}"
            ))));
        }
        left -= chunk.len() as u64;
        if !chunk.is_empty() {
            conn.write_all(vec![chunk])
                .await
                .map_err(SendError::Origin)?;
        }
    }
    Ok(())
}

async fn send_chunked(
    conn: &mut Conn,
    body: &mut impl RequestBody,
    consumed: &mut bool,
) -> Result<(), SendError> {
    let mut enc = ChunkedEncoder::new();
    // Bound: the body source's length; it ends with `None`.
    while let Some(chunk) = next(body, consumed).await? {
        if let Some(parts) = enc.encode(chunk) {
            conn.write_all(parts.to_vec())
                .await
                .map_err(SendError::Origin)?;
        }
    }
    conn.write_all(vec![ChunkedEncoder::finish()])
        .await
        .map_err(SendError::Origin)
}
