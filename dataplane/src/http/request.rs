//! HTTP/1.x request heads: parsing with httparse, the body-framing decision and the
//! request-smuggling rules.
//!
//! The edge never forwards the client's raw head: it turns it into `ConnectRequest` metadata
//! and the connector writes a fresh request to the origin. The dangerous part is therefore
//! not the head's syntax but the *body framing*: if the edge and some later hop disagree on
//! where a body ends, a second request hides inside the first. So every framing signal that
//! two parsers could read differently is rejected here instead of being "repaired".

use std::mem::MaybeUninit;

use bytes::Bytes;
use thiserror::Error;

/// Default cap on the size of a request head (request line + header fields + blank line).
/// 64 KiB is above every mainstream client's cookie/header budget ("large headers up to a
/// limit") and small enough that a slow client cannot make a worker buffer much.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;

/// Default cap on the number of header fields.
pub const DEFAULT_MAX_HEADERS: usize = 128;

/// The most header slots `parse_request_head` will ever offer httparse; `Limits::max_headers`
/// is clamped to it. The slots live on the stack uninitialised, so a large ceiling costs
/// nothing per call; it only bounds the stack frame (512 × 32 bytes).
pub const HARD_MAX_HEADERS: usize = 512;

/// Content-Length is a u64; more than 20 decimal digits cannot fit (u64::MAX has 20), so a
/// longer value is rejected before any arithmetic. Leading zeros count towards it on
/// purpose: nobody legitimately sends 21-digit lengths.
const MAX_CONTENT_LENGTH_DIGITS: usize = 20;

/// Limits applied to one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes from the first byte of the request line to the end of the blank line.
    pub max_head_bytes: usize,
    /// Header fields (each field line counts once). Clamped to [`HARD_MAX_HEADERS`].
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// The two HTTP/1 versions httparse accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// The version as written on the wire ("HTTP/1.0" / "HTTP/1.1").
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No Content-Length and no Transfer-Encoding: the request has no body (RFC 9112 §6.3:
    /// requests are never close-delimited).
    None,
    /// A Content-Length body. `Length(0)` is kept distinct from `None` because the header was
    /// present and is forwarded; use [`BodyKind::has_body`] to ask whether bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl BodyKind {
    /// Whether body bytes follow the head. cloudflared forwards a request body only for a
    /// non-zero Content-Length or chunked, so this is the same question.
    pub fn has_body(self) -> bool {
        match self {
            BodyKind::None | BodyKind::Length(0) => false,
            BodyKind::Length(_) | BodyKind::Chunked => true,
        }
    }
}

/// One header field line, in arrival order. Name and value are slices of a single copy of
/// the head, so a parsed head costs one allocation for the bytes plus the `Vec`, not one per
/// field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    name: Bytes,
    value: Bytes,
}

impl HeaderField {
    /// A field from owned bytes (tests, synthesized headers).
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The name as sent (case preserved). httparse admits only token characters, which are
    /// ASCII; a field built by hand from non-UTF-8 bytes reads as "".
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.name).unwrap_or("")
    }

    /// The value with surrounding whitespace removed by httparse. May hold obs-text
    /// (bytes >= 0x80), which RFC 9110 says to treat as opaque, hence bytes.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The value as a shareable `Bytes` (no copy).
    pub fn value_bytes(&self) -> &Bytes {
        &self.value
    }

    /// The value as text, if it is UTF-8 (metadata values travel as Cap'n Proto `Text`).
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// Anything that looks like a header field, so the hop-by-hop helpers work on parsed request
/// fields and on the origin's response metadata alike.
pub trait HeaderLike {
    fn header_name(&self) -> &str;
    fn header_value(&self) -> &[u8];
}

impl HeaderLike for HeaderField {
    fn header_name(&self) -> &str {
        self.name()
    }
    fn header_value(&self) -> &[u8] {
        self.value()
    }
}

impl HeaderLike for (String, String) {
    fn header_name(&self) -> &str {
        &self.0
    }
    fn header_value(&self) -> &[u8] {
        self.1.as_bytes()
    }
}

impl HeaderLike for (&str, &str) {
    fn header_name(&self) -> &str {
        self.0
    }
    fn header_value(&self) -> &[u8] {
        self.1.as_bytes()
    }
}

impl HeaderLike for (String, Bytes) {
    fn header_name(&self) -> &str {
        &self.0
    }
    fn header_value(&self) -> &[u8] {
        &self.1
    }
}

/// A parsed, validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent: origin-form (`/path?q`), absolute-form
    /// (`http://host/path`), authority-form (CONNECT) or `*` (OPTIONS).
    pub target: String,
    pub version: Version,
    /// Every field line in order, hop-by-hop ones included (the edge needs `Upgrade` and
    /// `Connection` before it strips them with [`RequestHead::strip_hop_by_hop`]).
    pub headers: Vec<HeaderField>,
    /// Whether the client allows another request on this connection after this one.
    pub keep_alive: bool,
    pub body: BodyKind,
    /// `Expect: 100-continue` on an HTTP/1.1 request (ignored on 1.0, RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// The authority to route on, as sent (case and port kept): the absolute-form target's
    /// authority if there is one, else the Host field. `None` only for HTTP/1.0 without Host.
    pub host: Option<String>,
}

impl RequestHead {
    /// The first field with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&HeaderField> {
        self.headers
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
    }

    /// Whether the method is HEAD (its response never has a body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The host without its port (`[v6]` brackets kept), for routing.
    pub fn host_name(&self) -> Option<&str> {
        self.host.as_deref().map(strip_port)
    }

    /// Removes hop-by-hop fields before the head is forwarded (see [`strip_hop_by_hop`]),
    /// with one exception: a chunked request keeps a single normalized
    /// `Transfer-Encoding: chunked` field at the end. cloudflared forwards a request body only
    /// when the metadata has a non-zero Content-Length or a Transfer-Encoding containing
    /// `chunked` (DESIGN, Data streams), so dropping it would silently drop the body.
    pub fn strip_hop_by_hop(&mut self) {
        strip_hop_by_hop(&mut self.headers);
        if self.body == BodyKind::Chunked {
            self.headers.push(HeaderField::new(
                Bytes::from_static(b"Transfer-Encoding"),
                Bytes::from_static(b"chunked"),
            ));
        }
    }
}

/// Why a head was rejected. Every variant is final: the connection is answered with
/// [`HeadError::status`] and closed, because after a framing error the rest of the stream
/// cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeadError {
    #[error("request head exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request head has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    #[error("invalid request target")]
    InvalidTarget,
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    #[error("more than one Host field")]
    DuplicateHost,
    #[error("invalid Host value")]
    InvalidHost,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("invalid Content-Length value")]
    InvalidContentLength,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    #[error("chunked is not the final transfer coding")]
    ChunkedNotFinal,
    #[error("invalid Transfer-Encoding (empty, or chunked applied twice)")]
    InvalidTransferEncoding,
    #[error("unsupported transfer coding")]
    UnsupportedTransferEncoding,
}

impl HeadError {
    /// The status the edge answers with.
    ///
    /// - 431 for size/count limits (RFC 6585 §5).
    /// - 505 for a version httparse does not speak.
    /// - 501 for a transfer coding we do not implement in front of `chunked`
    ///   (RFC 9112 §6.1 "SHOULD respond with 501").
    /// - 400 for everything else, including `chunked` not being last (RFC 9112 §6.3 item 4:
    ///   "MUST respond with 400"), CL+TE, duplicate CL and missing Host.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge { .. } | HeadError::TooManyHeaders { .. } => 431,
            HeadError::UnsupportedVersion => 505,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::Malformed(_)
            | HeadError::InvalidTarget
            | HeadError::MissingHost
            | HeadError::DuplicateHost
            | HeadError::InvalidHost
            | HeadError::LengthAndTransferEncoding
            | HeadError::DuplicateContentLength
            | HeadError::InvalidContentLength
            | HeadError::TransferEncodingInHttp10
            | HeadError::ChunkedNotFinal
            | HeadError::InvalidTransferEncoding => 400,
        }
    }
}

/// Parses one request head from the front of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete (read more and call again with the whole
/// buffer), or the head and the number of bytes it occupied; body bytes and pipelined
/// requests start at `consumed`. Leading empty lines are skipped (RFC 9112 §2.2) and count
/// towards `consumed`.
///
/// Only the first `max_head_bytes` of `buf` are ever looked at, so a client that never sends
/// the blank line costs at most that much parsing per call.
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let max_headers = limits.max_headers.min(HARD_MAX_HEADERS);
    let window = &buf[..buf.len().min(limits.max_head_bytes)];

    let mut slots: [MaybeUninit<httparse::Header<'_>>; HARD_MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; HARD_MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    // Default ParserConfig is the strict one for requests: it rejects whitespace between a
    // field name and the colon, obs-fold continuation lines, and multiple spaces in the
    // request line; all three are classic smuggling/desync vectors.
    let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        window,
        &mut slots[..max_headers],
    );
    let consumed = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.max_head_bytes {
                return Err(HeadError::TooLarge {
                    limit: limits.max_head_bytes,
                });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders { limit: max_headers });
        }
        Err(httparse::Error::Version) => return Err(HeadError::UnsupportedVersion),
        Err(e) => return Err(HeadError::Malformed(e)),
    };

    // A complete parse always carries these; a missing one would be an httparse bug, which we
    // turn into a 400 rather than a panic.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed(httparse::Error::Token));
    };
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HeadError::UnsupportedVersion),
    };

    // One copy of the head; every field is a slice of it.
    let head_bytes = Bytes::copy_from_slice(&buf[..consumed]);
    let base = buf.as_ptr() as usize;
    let slice_of = |part: &[u8]| -> Bytes {
        let start = (part.as_ptr() as usize).wrapping_sub(base);
        match start.checked_add(part.len()) {
            // httparse hands out subslices of `buf`; the fallback copy only guards against an
            // empty slice whose pointer is not inside `buf`.
            Some(end) if !part.is_empty() && end <= consumed => head_bytes.slice(start..end),
            _ => Bytes::copy_from_slice(part),
        }
    };
    let headers: Vec<HeaderField> = req
        .headers
        .iter()
        .map(|h| HeaderField {
            name: slice_of(h.name.as_bytes()),
            value: slice_of(h.value),
        })
        .collect();

    let target_host = validate_target(method, target)?;
    let body = body_kind(version, &headers)?;
    let host = host_of(version, &headers, target_host)?;
    let keep_alive = keep_alive(version, &headers);
    let expect_continue = version == Version::Http11
        && headers.iter().any(|h| {
            h.name().eq_ignore_ascii_case("expect")
                && trim_ows(h.value()).eq_ignore_ascii_case(b"100-continue")
        });

    Ok(Some((
        RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            version,
            headers,
            keep_alive,
            body,
            expect_continue,
            host,
        },
        consumed,
    )))
}

/// Checks the target's form against the method and returns the absolute-form authority, if
/// any. The edge builds `dest` (a full URL) from host + target, so a target that is none of
/// the four RFC 9112 §3.2 forms would produce a URL the connector cannot parse.
fn validate_target<'a>(method: &str, target: &'a str) -> Result<Option<&'a str>, HeadError> {
    if target.starts_with('/') {
        return Ok(None);
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(None)
        } else {
            Err(HeadError::InvalidTarget)
        };
    }
    if method == "CONNECT" {
        // authority-form: host:port, validated like a Host value.
        return if is_valid_authority(target.as_bytes()) {
            Ok(Some(target))
        } else {
            Err(HeadError::InvalidTarget)
        };
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(HeadError::InvalidTarget)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if !is_valid_authority(authority.as_bytes()) {
        return Err(HeadError::InvalidTarget);
    }
    Ok(Some(authority))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// RFC 9112 §3.2: exactly one Host on 1.1, at most one on 1.0; absolute-form authority wins.
fn host_of(
    version: Version,
    headers: &[HeaderField],
    target_host: Option<&str>,
) -> Result<Option<String>, HeadError> {
    let mut hosts = headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("host"));
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadError::DuplicateHost);
    }
    let Some(field) = first else {
        return match (version, target_host) {
            (Version::Http11, _) => Err(HeadError::MissingHost),
            (Version::Http10, t) => Ok(t.map(str::to_owned)),
        };
    };
    let value = trim_ows(field.value());
    // An empty Host is legal only for targets without an authority, and the edge routes on
    // the host, so it cannot serve such a request anyway: reject it as invalid.
    if !is_valid_authority(value) {
        return Err(HeadError::InvalidHost);
    }
    if let Some(t) = target_host {
        return Ok(Some(t.to_owned()));
    }
    // is_valid_authority admits only ASCII, so this conversion cannot fail.
    Ok(std::str::from_utf8(value).ok().map(str::to_owned))
}

/// uri-host [":" port] with reg-name / IPv4 / IP-literal characters only (RFC 3986 §3.2.2).
/// Userinfo (`@`) is rejected: it has no business in Host and is a routing-confusion trick.
fn is_valid_authority(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b'%'
                        | b':'
                        | b'['
                        | b']'
                )
        })
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IP-literal: the port, if any, follows the closing bracket.
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// RFC 9112 §6.1–6.3, strictest reading.
fn body_kind(version: Version, headers: &[HeaderField]) -> Result<BodyKind, HeadError> {
    let mut te_fields = headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("transfer-encoding"))
        .peekable();
    let mut cl_fields = headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("content-length"))
        .peekable();

    if te_fields.peek().is_some() {
        if version == Version::Http10 {
            // §6.1: a 1.0 message with Transfer-Encoding has faulty framing.
            return Err(HeadError::TransferEncodingInHttp10);
        }
        if cl_fields.peek().is_some() {
            // §6.1 allows "TE wins, then close"; DESIGN says reject, and rejecting is what
            // keeps a CL-trusting hop from ever seeing this request.
            return Err(HeadError::LengthAndTransferEncoding);
        }
        // Codings across all TE field lines, in order. Bounded by the number of commas in a
        // head that is itself bounded by max_head_bytes.
        let mut codings = te_fields
            .flat_map(|h| h.value().split(|&b| b == b','))
            .map(trim_ows)
            // RFC 9110 §5.6.1.2: empty list elements are ignored.
            .filter(|c| !c.is_empty());
        let mut saw_chunked = false;
        let mut saw_unknown = false;
        let mut last_is_chunked = false;
        let mut any = false;
        for coding in codings.by_ref() {
            any = true;
            let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if is_chunked && saw_chunked {
                // §7: chunked MUST NOT be applied more than once.
                return Err(HeadError::InvalidTransferEncoding);
            }
            saw_chunked |= is_chunked;
            // Anything but exactly "chunked" (parameters included) is a coding we do not
            // decode; "identity" was removed from the registry by RFC 7230.
            saw_unknown |= !is_chunked;
            last_is_chunked = is_chunked;
        }
        if !any {
            return Err(HeadError::InvalidTransferEncoding);
        }
        if !last_is_chunked {
            return Err(HeadError::ChunkedNotFinal);
        }
        if saw_unknown {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
        return Ok(BodyKind::Chunked);
    }

    let Some(first) = cl_fields.next() else {
        return Ok(BodyKind::None);
    };
    if cl_fields.next().is_some() {
        // RFC 9110 §8.6 lets a recipient accept identical duplicates; DESIGN rejects every
        // duplicate, which also covers "5, 5" below.
        return Err(HeadError::DuplicateContentLength);
    }
    let value = trim_ows(first.value());
    if value.contains(&b',') {
        return Err(HeadError::DuplicateContentLength);
    }
    parse_content_length(value)
        .map(BodyKind::Length)
        .ok_or(HeadError::InvalidContentLength)
}

/// `1*DIGIT` into a u64: no sign, no whitespace, no exponent, no overflow.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > MAX_CONTENT_LENGTH_DIGITS {
        return None;
    }
    // At most 20 iterations (length checked above).
    v.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Connection tokens decide persistence (RFC 9112 §9.3): `close` always wins; 1.1 persists by
/// default; 1.0 only with `keep-alive`.
fn keep_alive(version: Version, headers: &[HeaderField]) -> bool {
    let mut close = false;
    let mut keep = false;
    for token in connection_tokens(headers) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    if close {
        return false;
    }
    match version {
        Version::Http11 => true,
        Version::Http10 => keep,
    }
}

/// The comma-separated tokens of every Connection field, trimmed, empty ones skipped.
fn connection_tokens<H: HeaderLike>(headers: &[H]) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|h| h.header_name().eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.header_value().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Trims optional whitespace (SP / HTAB) from both ends.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// The fixed hop-by-hop names (RFC 9110 §7.6.1 plus the de-facto `Keep-Alive` and
/// `Proxy-Connection`). `Proxy-Authenticate`/`Proxy-Authorization` are deliberately not here:
/// the edge consumes no proxy credentials, and cloudflared forwards them to the origin.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// End-to-end fields that a `Connection` field may not name: the message's length and its
/// routing. `Transfer-Encoding` is hop-by-hop anyway and handled by the framing code.
const NEVER_HOP_BY_HOP: [&str; 2] = ["content-length", "host"];

/// Whether `name` is one of the fixed hop-by-hop fields. Names listed in a `Connection` field
/// are hop-by-hop too; [`strip_hop_by_hop`] handles those.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Removes the fixed hop-by-hop fields and every field named in a `Connection` field, keeping
/// the order of the rest. Used on the client's request before forwarding and on the origin's
/// response metadata (which cloudflared passes through unfiltered) before answering.
pub fn strip_hop_by_hop<H: HeaderLike>(headers: &mut Vec<H>) {
    // Owned copies because `retain` needs `headers` mutably; bounded by the Connection
    // fields' total length, itself bounded by the head limit. A `Connection` field cannot
    // make an end-to-end field that frames or routes the message hop-by-hop: honouring
    // `Connection: Content-Length` would forward a body without its length, and the origin
    // would read none of it while the client is told 200.
    let listed: Vec<Vec<u8>> = connection_tokens(headers)
        .filter(|t| {
            !NEVER_HOP_BY_HOP
                .iter()
                .any(|n| t.eq_ignore_ascii_case(n.as_bytes()))
        })
        .map(<[u8]>::to_vec)
        .collect();
    headers.retain(|h| {
        let name = h.header_name();
        !is_hop_by_hop(name)
            && !listed
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request_head(s.as_bytes(), &Limits::default())
    }

    fn parse_ok(s: &str) -> RequestHead {
        match parse(s) {
            Ok(Some((h, n))) => {
                assert_eq!(n, s.len(), "whole input should be the head");
                h
            }
            other => panic!("expected a head, got {other:?}"),
        }
    }

    fn parse_err(s: &str) -> HeadError {
        match parse(s) {
            Err(e) => e,
            other => panic!("expected an error for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let h = parse_ok("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n");
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/a?b=1");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.host.as_deref(), Some("example.com"));
        assert!(h.keep_alive);
        assert_eq!(h.body, BodyKind::None);
        assert!(!h.expect_continue);
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[1].name(), "X-A");
        assert_eq!(h.headers[1].value(), b"1");
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let buf = b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: b\r\n\r\nGET /three HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n";
        let limits = Limits::default();
        let (h1, n1) = parse_request_head(buf, &limits).unwrap().unwrap();
        assert_eq!(h1.target, "/one");
        assert_eq!(h1.body, BodyKind::Length(5));
        assert_eq!(&buf[n1..n1 + 5], b"hello");
        let rest = &buf[n1 + 5..];
        let (h2, n2) = parse_request_head(rest, &limits).unwrap().unwrap();
        assert_eq!(h2.target, "/two");
        assert_eq!(h2.host.as_deref(), Some("b"));
        let (h3, n3) = parse_request_head(&rest[n2..], &limits).unwrap().unwrap();
        assert_eq!(h3.target, "/three");
        assert!(!h3.keep_alive);
        assert_eq!(n2 + n3, rest.len());
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let req = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let limits = Limits::default();
        for cut in 0..req.len() {
            assert_eq!(
                parse_request_head(&req[..cut], &limits),
                Ok(None),
                "prefix of {cut} bytes"
            );
        }
        let (h, n) = parse_request_head(req, &limits).unwrap().unwrap();
        assert_eq!(n, req.len());
        assert_eq!(h.body, BodyKind::Chunked);
        assert!(h.expect_continue);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let (h, n) = parse("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.target, "/");
        assert_eq!(n, 4 + 27);
    }

    #[test]
    fn smuggling_cases_rejected_with_status() {
        let cases: &[(&str, HeadError, u16)] = &[
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::LengthAndTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                HeadError::LengthAndTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                HeadError::DuplicateContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HeadError::DuplicateContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
                HeadError::DuplicateContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HeadError::UnsupportedTransferEncoding,
                501,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                HeadError::ChunkedNotFinal,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                HeadError::ChunkedNotFinal,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::InvalidTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
                HeadError::InvalidTransferEncoding,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
                HeadError::ChunkedNotFinal,
                400,
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::TransferEncodingInHttp10,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                HeadError::InvalidContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
                HeadError::InvalidContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n",
                HeadError::InvalidContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
                HeadError::InvalidContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
                HeadError::InvalidContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                HeadError::InvalidContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
                HeadError::InvalidContentLength,
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
                HeadError::InvalidContentLength,
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                HeadError::Malformed(httparse::Error::HeaderName),
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
                HeadError::Malformed(httparse::Error::HeaderName),
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
                HeadError::Malformed(httparse::Error::HeaderName),
                400,
            ),
            ("GET / HTTP/1.1\r\n\r\n", HeadError::MissingHost, 400),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                HeadError::DuplicateHost,
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: \r\n\r\n",
                HeadError::InvalidHost,
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n",
                HeadError::InvalidHost,
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                HeadError::InvalidHost,
                400,
            ),
            (
                "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                HeadError::UnsupportedVersion,
                505,
            ),
            (
                "GET foo HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidTarget,
                400,
            ),
            (
                "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidTarget,
                400,
            ),
        ];
        for (req, want, status) in cases {
            let got = parse_err(req);
            assert_eq!(&got, want, "for {req:?}");
            assert_eq!(got.status(), *status, "for {req:?}");
        }
    }

    #[test]
    fn obs_fold_on_first_header_rejected() {
        // Folding right after the request line is the variant some parsers read as a
        // continuation of the request line.
        let e = parse_err("GET / HTTP/1.1\r\n Host: a\r\n\r\n");
        assert_eq!(e.status(), 400);
        let e = parse_err("GET / HTTP/1.1\r\nHost: a\r\n\tX: y\r\n\r\n");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn valid_lengths_and_codings_accepted() {
        let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n");
        assert_eq!(h.body, BodyKind::Length(7));
        let h =
            parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(h.body, BodyKind::Length(u64::MAX));
        let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.body, BodyKind::Length(0));
        assert!(!h.body.has_body());
        let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n");
        assert_eq!(h.body, BodyKind::Chunked);
        let h = parse_ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked ,\r\n\r\n");
        assert_eq!(h.body, BodyKind::Chunked);
    }

    #[test]
    fn oversize_head_is_too_large() {
        let limits = Limits {
            max_head_bytes: 1024,
            max_headers: 128,
        };
        let mut req = String::from("GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
        req.push_str(&"a".repeat(2000));
        req.push_str("\r\n\r\n");
        let e = parse_request_head(req.as_bytes(), &limits).unwrap_err();
        assert_eq!(e, HeadError::TooLarge { limit: 1024 });
        assert_eq!(e.status(), 431);
        // Incomplete but already at the limit: also too large, no waiting for more.
        let e = parse_request_head(&req.as_bytes()[..1024], &limits).unwrap_err();
        assert_eq!(e.status(), 431);
        // Just under the limit and incomplete: keep reading.
        assert_eq!(
            parse_request_head(&req.as_bytes()[..1023], &limits),
            Ok(None)
        );
        // Large headers up to the default limit are fine.
        let mut big = String::from("GET / HTTP/1.1\r\nHost: a\r\nCookie: ");
        big.push_str(&"c".repeat(60 * 1024));
        big.push_str("\r\n\r\n");
        let h = parse_ok(&big);
        assert_eq!(h.header("cookie").unwrap().value().len(), 60 * 1024);
    }

    #[test]
    fn header_count_limit() {
        let limits = Limits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: 10,
        };
        let mut req = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..9 {
            req.push_str(&format!("X-{i}: v\r\n"));
        }
        req.push_str("\r\n");
        let (h, _) = parse_request_head(req.as_bytes(), &limits)
            .unwrap()
            .unwrap();
        assert_eq!(h.headers.len(), 10);
        let req = req.replacen("\r\n\r\n", "\r\nX-extra: v\r\n\r\n", 1);
        let e = parse_request_head(req.as_bytes(), &limits).unwrap_err();
        assert_eq!(e, HeadError::TooManyHeaders { limit: 10 });
        assert_eq!(e.status(), 431);
    }

    #[test]
    fn keep_alive_matrix() {
        let cases = [
            ("HTTP/1.1", None, true),
            ("HTTP/1.1", Some("close"), false),
            ("HTTP/1.1", Some("keep-alive"), true),
            ("HTTP/1.1", Some("Keep-Alive, Close"), false),
            ("HTTP/1.1", Some("upgrade"), true),
            ("HTTP/1.0", None, false),
            ("HTTP/1.0", Some("keep-alive"), true),
            ("HTTP/1.0", Some("Keep-Alive"), true),
            ("HTTP/1.0", Some("close"), false),
            ("HTTP/1.0", Some("keep-alive, close"), false),
            ("HTTP/1.0", Some("x-foo, keep-alive"), true),
        ];
        for (version, conn, want) in cases {
            let mut req = format!("GET / {version}\r\nHost: a\r\n");
            if let Some(c) = conn {
                req.push_str(&format!("Connection: {c}\r\n"));
            }
            req.push_str("\r\n");
            let h = parse_ok(&req);
            assert_eq!(h.keep_alive, want, "{version} Connection: {conn:?}");
        }
        // Two Connection lines combine.
        let h =
            parse_ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
    }

    #[test]
    fn http10_without_host_is_fine() {
        let h = parse_ok("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.host, None);
        assert_eq!(h.version, Version::Http10);
        assert!(!h.keep_alive);
    }

    #[test]
    fn expect_continue_only_on_11() {
        let h = parse_ok(
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(h.expect_continue);
        let h = parse_ok("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn absolute_form_target_sets_host() {
        let h = parse_ok("GET http://Other.example:8080/p?q HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.host.as_deref(), Some("Other.example:8080"));
        assert_eq!(h.host_name(), Some("Other.example"));
        let h = parse_ok("GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n");
        assert_eq!(h.host_name(), Some("[::1]"));
        let h = parse_ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.target, "*");
    }

    #[test]
    fn hop_by_hop_stripping_includes_connection_listed_names() {
        for name in [
            "Connection",
            "keep-alive",
            "Proxy-Connection",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "UPGRADE",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(!is_hop_by_hop("Content-Length"));
        assert!(!is_hop_by_hop("Host"));

        let mut h = parse_ok(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, close\r\nConnection: x-other\r\nX-Secret: 1\r\nX-Other: 2\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: websocket\r\nX-Keep: 3\r\nAccept: */*\r\n\r\n",
        );
        h.strip_hop_by_hop();
        let names: Vec<&str> = h.headers.iter().map(HeaderField::name).collect();
        assert_eq!(names, ["Host", "X-Keep", "Accept"]);

        // A chunked request keeps exactly one normalized TE so cloudflared forwards the body.
        let mut h = parse_ok(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , Chunked\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
        );
        h.strip_hop_by_hop();
        let fields: Vec<(&str, &[u8])> = h.headers.iter().map(|f| (f.name(), f.value())).collect();
        assert_eq!(
            fields,
            [
                ("Host", &b"a"[..]),
                ("X-B", b"2"),
                ("Transfer-Encoding", b"chunked")
            ]
        );

        // The same helper works on response metadata.
        let mut resp: Vec<(String, String)> = vec![
            ("Content-Type".into(), "text/plain".into()),
            ("Connection".into(), "keep-alive, X-Hop".into()),
            ("x-hop".into(), "1".into()),
            ("Keep-Alive".into(), "timeout=5".into()),
            ("Transfer-Encoding".into(), "chunked".into()),
            ("Set-Cookie".into(), "a=b".into()),
        ];
        strip_hop_by_hop(&mut resp);
        let names: Vec<&str> = resp.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Content-Type", "Set-Cookie"]);
    }

    #[test]
    fn connection_cannot_make_length_or_host_hop_by_hop() {
        // `Connection: Content-Length` once made the edge forward a body without its length:
        // the client got 200 and the origin read nothing.
        let mut h = parse_ok(
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, host, X-Drop\r\nContent-Length: 5\r\nX-Drop: 1\r\n\r\n",
        );
        assert_eq!(h.body, BodyKind::Length(5));
        h.strip_hop_by_hop();
        let names: Vec<&str> = h.headers.iter().map(HeaderField::name).collect();
        assert_eq!(names, ["Host", "Content-Length"]);
        let mut resp: Vec<(String, String)> = vec![
            ("Connection".into(), "content-length".into()),
            ("Content-Length".into(), "2".into()),
        ];
        strip_hop_by_hop(&mut resp);
        assert_eq!(resp, [("Content-Length".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn header_values_share_one_allocation() {
        let h = parse_ok("GET / HTTP/1.1\r\nHost: a\r\nX-A: hello\r\nX-B: world\r\n\r\n");
        let a = h.headers[1].value_bytes().as_ptr() as usize;
        let b = h.headers[2].value_bytes().as_ptr() as usize;
        // Both point into the same copied head, 12 bytes apart ("hello\r\nX-B: ").
        assert_eq!(b - a, 12);
    }

    #[test]
    fn content_length_parser() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"123"), Some(123));
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"+1"), None);
        assert_eq!(parse_content_length(b" 1"), None);
        assert_eq!(
            parse_content_length(b"18446744073709551615"),
            Some(u64::MAX)
        );
        assert_eq!(parse_content_length(b"18446744073709551616"), None);
        assert_eq!(parse_content_length("１".as_bytes()), None);
    }

    #[test]
    fn fuzz_random_heads_never_panic() {
        use crate::http::test_util::Rng;
        const PIECES: &[&[u8]] = &[
            b"GET ",
            b"POST ",
            b"/",
            b"*",
            b"http://a/",
            b" HTTP/1.1",
            b" HTTP/1.0",
            b"\r\n",
            b"\n",
            b"\r",
            b": ",
            b":",
            b" ",
            b"\t",
            b"Host",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Connection",
            b"chunked",
            b"close",
            b"keep-alive",
            b",",
            b"5",
            b"99999999999999999999999",
            b"\0",
            b"\xff",
            b"[::1]",
        ];
        let small = Limits {
            max_head_bytes: 256,
            max_headers: 8,
        };
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut ok = 0;
        // 20 000 cases: enough to reach every branch many times, fast in debug builds.
        for i in 0..20_000 {
            let mut buf = Vec::new();
            let parts = rng.below(40);
            for _ in 0..parts {
                if rng.below(4) == 0 {
                    buf.push(rng.next() as u8);
                } else {
                    buf.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                }
            }
            if i % 3 == 0 {
                buf.extend_from_slice(b"\r\n\r\n");
            }
            let limits = if i % 2 == 0 { small } else { Limits::default() };
            if let Ok(Some((head, n))) = parse_request_head(&buf, &limits) {
                ok += 1;
                assert!(n <= buf.len());
                assert!(n <= limits.max_head_bytes);
                assert!(head.headers.len() <= limits.max_headers);
            }
        }
        // Sanity: the generator does produce some valid heads, so the success path is fuzzed.
        assert!(ok > 0);
    }
}
