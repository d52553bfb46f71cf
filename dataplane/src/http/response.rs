//! Response heads the edge writes towards its client: the body-framing decision,
//! serialization, reason phrases, the interim `100 Continue`, and the edge's canned error
//! responses. Reading a response head is [`super::response_head`]'s job.
//!
//! The origin's status and headers arrive as `ConnectResponse` metadata with the body's
//! chunked framing already removed, and with the origin's hop-by-hop headers still present.
//! So the edge always re-frames: it drops the origin's Content-Length / Transfer-Encoding /
//! hop-by-hop fields and writes its own framing for *this* client.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::fields::{HeaderLike, Version, is_hop_by_hop, is_token, parse_content_length, trim_ows};
use super::request::{RequestHead, RequestHeadError};

/// The interim response sent when a client asked `Expect: 100-continue` and the edge is
/// about to read the body.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What the client said that shapes the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseContext {
    /// The request was HEAD: the response has no body, whatever its headers say.
    pub head_request: bool,
    pub version: Version,
    /// The request allowed the connection to persist.
    pub keep_alive: bool,
}

impl ResponseContext {
    pub fn for_request(req: &RequestHead) -> Self {
        Self {
            head_request: req.is_head(),
            version: req.version,
            keep_alive: req.keep_alive,
        }
    }

    /// For answers to a head that did not parse: HTTP/1.1, body allowed, then close.
    pub fn unparsed() -> Self {
        Self {
            head_request: false,
            version: Version::Http11,
            keep_alive: false,
        }
    }
}

/// How a response body is delimited on its connection (RFC 9112 §6.3): the edge's choice
/// towards its client ([`body_framing`]) and what an origin's head says
/// ([`ResponseSummary::framing`](super::ResponseSummary::framing)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: HEAD requests, 1xx, 204, 304 (RFC 9112 §6.3 items 1–2).
    None,
    /// Exactly this many bytes. A writer whose source ends early must close the connection
    /// (the peer would otherwise wait for bytes that never come); a reader stops here and
    /// leaves what follows for the next response.
    Length(u64),
    /// `Transfer-Encoding: chunked` (see `ChunkedEncoder` / `ChunkedDecoder`): the edge's
    /// choice for an HTTP/1.1 client when the length is unknown.
    Chunked,
    /// The body ends when the sender closes the connection: the edge's choice for an
    /// HTTP/1.0 client when the length is unknown, or an origin that sent no length.
    CloseDelimited,
}

/// A response head: status, optional reason (the canonical one is used when `None`, which is
/// the normal case since cloudflared's metadata carries only `HttpStatus`) and header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead<H = (String, String)> {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: Vec<H>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ResponseError {
    /// Not a three-digit status. The edge answers 502 instead.
    #[error("invalid response status {0}")]
    InvalidStatus(u16),
}

/// 1xx, 204 and 304 never carry a body (RFC 9112 §6.3 item 1).
// Inlined: it is on every head, and callers sit in other modules (codegen units).
#[inline]
pub(crate) fn no_body_status(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// The origin's valid Content-Length, if it sent exactly one value (identical repeats, as
/// lists or as lines, are folded: RFC 9110 §8.6 allows it, and on the response side the edge
/// re-frames anyway, so there is no smuggling risk in being lenient).
fn origin_content_length<H: HeaderLike>(headers: &[H]) -> Option<u64> {
    let mut found: Option<u64> = None;
    // Bounded by the number of header fields and commas in them.
    for v in headers
        .iter()
        .filter(|h| h.header_name().eq_ignore_ascii_case("content-length"))
        .flat_map(|h| h.header_value().split(|&b| b == b','))
    {
        let n = parse_content_length(trim_ows(v))?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Chooses the response framing from the request and the origin's status and headers.
///
/// An origin `Transfer-Encoding` means cloudflared already removed chunked framing and the
/// length is unknown, so it wins over any Content-Length (RFC 9112 §6.3 item 3). An invalid or
/// conflicting Content-Length is treated as unknown length rather than trusted.
pub fn body_framing<H: HeaderLike>(
    ctx: &ResponseContext,
    status: u16,
    headers: &[H],
) -> BodyFraming {
    if ctx.head_request || no_body_status(status) {
        return BodyFraming::None;
    }
    let has_te = headers
        .iter()
        .any(|h| h.header_name().eq_ignore_ascii_case("transfer-encoding"));
    if !has_te && let Some(n) = origin_content_length(headers) {
        return BodyFraming::Length(n);
    }
    match ctx.version {
        Version::Http11 => BodyFraming::Chunked,
        Version::Http10 => BodyFraming::CloseDelimited,
    }
}

/// The canonical reason phrase, or "" (RFC 9112 §4: the phrase may be empty).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        // 530 (Cloudflare's "origin unreachable") has no registered phrase; the canned
        // response names its own.
        _ => "",
    }
}

/// field-value bytes that cannot break the framing: no CR, LF, NUL or other controls but HTAB.
/// This is the response-splitting guard: origin metadata is not trusted to be clean.
fn is_safe_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Serializes a response head into `out` and returns whether the client connection may
/// carry another request afterwards.
///
/// - Always writes `HTTP/1.1` (RFC 9110 §2.5: a server sends its highest conformant version,
///   also to 1.0 clients).
/// - Drops hop-by-hop fields (fixed names and those listed in the origin's `Connection`),
///   the origin's Content-Length / Transfer-Encoding, and any field whose name is not a token
///   or whose value contains control bytes; then writes framing for `framing`.
/// - For `BodyFraming::None` on HEAD / 304 the origin's valid Content-Length is kept (it
///   describes the representation, RFC 9110 §8.6).
/// - `Connection: close` when the connection will not persist; `Connection: keep-alive` for a
///   persisting HTTP/1.0 client. A 101 keeps the origin's `Upgrade` and says
///   `Connection: upgrade`; it returns `false` since the connection stops being HTTP.
pub fn write_response_head<H: HeaderLike>(
    head: &ResponseHead<H>,
    framing: BodyFraming,
    ctx: &ResponseContext,
    out: &mut BytesMut,
) -> Result<bool, ResponseError> {
    let status = head.status;
    if !(100..=999).contains(&status) {
        return Err(ResponseError::InvalidStatus(status));
    }
    let reason = match head.reason.as_deref() {
        Some(r) if is_safe_value(r.as_bytes()) => r,
        _ => reason_phrase(status),
    };
    let upgrade = status == 101;
    let interim = (100..200).contains(&status) && !upgrade;
    let persist = ctx.keep_alive && framing != BodyFraming::CloseDelimited && !upgrade;

    // Roughly the final size, so the common case writes without regrowing.
    let estimate: usize = 64
        + head
            .headers
            .iter()
            .map(|h| h.header_name().len() + h.header_value().len() + 4)
            .sum::<usize>();
    out.reserve(estimate);
    // Writing into a BytesMut cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");

    // Names listed in Connection are hop-by-hop too. Bounded by the header count.
    let listed: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|h| h.header_name().eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.header_value().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|t| !t.is_empty())
        .collect();
    // One pass over the origin's fields; bounded by their number.
    for h in &head.headers {
        let name = h.header_name();
        let value = h.header_value();
        let keep_upgrade = upgrade && name.eq_ignore_ascii_case("upgrade");
        if !keep_upgrade
            && (is_hop_by_hop(name)
                || name.eq_ignore_ascii_case("content-length")
                || listed
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
        {
            continue;
        }
        if !is_token(name.as_bytes()) || !is_safe_value(value) {
            tracing::debug!(name, "dropping an origin header that is not valid HTTP/1.1");
            continue;
        }
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }

    match framing {
        BodyFraming::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        BodyFraming::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None if !no_body_status(status) || status == 304 => {
            if let Some(n) = origin_content_length(&head.headers) {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
        }
        BodyFraming::None | BodyFraming::CloseDelimited => {}
    }

    if upgrade {
        out.put_slice(b"Connection: upgrade\r\n");
    } else if !interim {
        if !persist {
            out.put_slice(b"Connection: close\r\n");
        } else if ctx.version == Version::Http10 {
            out.put_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.put_slice(b"\r\n");
    Ok(if interim { ctx.keep_alive } else { persist })
}

/// The edge's own answers when it cannot serve the request: each names its cause in the
/// status, and none leaks the detail (addresses, OS errors) to the public client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeError {
    /// 400: malformed or smuggling-shaped request.
    BadRequest,
    /// 404: no DNS record for the host.
    NotFound,
    /// 431: head over the size or field-count limit.
    HeadTooLarge,
    /// 501: a transfer coding the edge does not implement.
    NotImplemented,
    /// 505: not HTTP/1.0 or 1.1.
    VersionNotSupported,
    /// 502: the origin or the tunnel failed. The body says which side, never the detail
    /// (addresses, OS errors): that goes to the edge's log.
    BadGateway(GatewayFailure),
    /// 530: the record's tunnel has no live connection (Cloudflare error 1033).
    TunnelUnavailable,
    /// 408: the request head (or the next one on a keep-alive connection) did not arrive
    /// within the public listener's head timeout.
    RequestTimeout,
    /// 503 with `Retry-After` (seconds): the edge is at a cap (client connections per worker,
    /// concurrent streams per tunnel) and sheds this request instead of queueing it.
    Overloaded { retry_after_secs: u32 },
    /// 504: the request's total time (`--http-request-timeout`) ran out before the origin's
    /// answer began.
    GatewayTimeout,
}

/// Which side of a 502 failed, as a public client may learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayFailure {
    /// The connector reported that the origin could not be reached or failed to answer.
    Origin,
    /// The tunnel itself failed: the stream to the connector broke, or its answer was
    /// malformed.
    Tunnel,
}

impl EdgeError {
    pub fn status(&self) -> u16 {
        match self {
            EdgeError::BadRequest => 400,
            EdgeError::NotFound => 404,
            EdgeError::HeadTooLarge => 431,
            EdgeError::NotImplemented => 501,
            EdgeError::VersionNotSupported => 505,
            EdgeError::BadGateway(_) => 502,
            EdgeError::TunnelUnavailable => 530,
            EdgeError::RequestTimeout => 408,
            EdgeError::Overloaded { .. } => 503,
            EdgeError::GatewayTimeout => 504,
        }
    }

    /// Errors about the request's framing: after them the byte stream cannot be trusted, so
    /// the connection always closes.
    fn forces_close(&self) -> bool {
        matches!(
            self,
            EdgeError::BadRequest
                | EdgeError::HeadTooLarge
                | EdgeError::NotImplemented
                | EdgeError::VersionNotSupported
                | EdgeError::RequestTimeout
                // Shedding load: the connection goes too, so an overloaded edge sheds sockets.
                | EdgeError::Overloaded { .. }
                // The tunnel stream was abandoned mid-request; its body may be unread.
                | EdgeError::GatewayTimeout
        )
    }
}

impl From<&RequestHeadError> for EdgeError {
    fn from(e: &RequestHeadError) -> Self {
        match e.status() {
            431 => EdgeError::HeadTooLarge,
            501 => EdgeError::NotImplemented,
            505 => EdgeError::VersionNotSupported,
            _ => EdgeError::BadRequest,
        }
    }
}

/// A complete canned response (head and body) with Content-Length, as one `Bytes`.
///
/// The connection closes after framing errors (400/431/501/505) and whenever the client did
/// not ask to keep it; 404/502/530 answer a well-formed request, so a keep-alive client keeps
/// its connection (its body, if any, must have been drained or the connection closed by the
/// caller).
pub fn error_response(err: EdgeError, ctx: &ResponseContext) -> Bytes {
    let status = err.status();
    let mut body = String::new();
    match err {
        EdgeError::BadGateway(GatewayFailure::Origin) => {
            body.push_str("Bad Gateway: the origin is unreachable or failed to answer\n");
        }
        EdgeError::BadGateway(GatewayFailure::Tunnel) => {
            body.push_str("Bad Gateway: the tunnel connection failed\n");
        }
        // Cloudflare's plain-text error body for this case is exactly this.
        EdgeError::TunnelUnavailable => body.push_str("error code: 1033\n"),
        EdgeError::NotFound => body.push_str("Not Found: no route for this host\n"),
        _ => {
            let _ = writeln!(body, "{status} {}", reason_phrase(status));
        }
    }
    let persist = ctx.keep_alive && !err.forces_close();
    let mut out = BytesMut::with_capacity(160 + body.len());
    let reason = match status {
        530 => "Tunnel Unavailable",
        s => reason_phrase(s),
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let EdgeError::Overloaded { retry_after_secs } = err {
        let _ = write!(out, "Retry-After: {retry_after_secs}\r\n");
    }
    if !persist {
        out.put_slice(b"Connection: close\r\n");
    } else if ctx.version == Version::Http10 {
        out.put_slice(b"Connection: keep-alive\r\n");
    }
    out.put_slice(b"\r\n");
    if !ctx.head_request {
        out.put_slice(body.as_bytes());
    }
    out.freeze()
}

/// The answer to `OPTIONS *`. That request asks about the server itself, not a resource
/// (RFC 9110 §9.3.7), and the server the client reached is the edge, so the edge answers it:
/// `200` with an empty body. Forwarding it would have to invent a path for the origin, and
/// `OPTIONS /` is a different request.
pub fn options_asterisk_response(ctx: &ResponseContext) -> Bytes {
    let mut out = BytesMut::with_capacity(96);
    out.put_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
    if !ctx.keep_alive {
        out.put_slice(b"Connection: close\r\n");
    } else if ctx.version == Version::Http10 {
        out.put_slice(b"Connection: keep-alive\r\n");
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// The answer to a head that failed to parse (always closes).
pub fn head_error_response(e: &RequestHeadError) -> Bytes {
    error_response(EdgeError::from(e), &ResponseContext::unparsed())
}

/// `100 Continue` as `Bytes` (static, no allocation).
pub fn continue_100() -> Bytes {
    Bytes::from_static(CONTINUE_100)
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
