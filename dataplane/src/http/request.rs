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

use super::fields::{
    HARD_MAX_HEADERS, HeaderField, Limits, Version, keep_alive, parse_content_length,
    slice_of_copy, strip_hop_by_hop, trim_ows,
};

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

    /// The protocol an HTTP/1.1 client asks to switch to (`Upgrade` listed in `Connection`),
    /// for a request without a body: the value of its `Upgrade` field, e.g. `websocket`. An
    /// upgrade on HTTP/1.0 or with a body is an ordinary request (RFC 9110 §7.8).
    pub fn upgrade(&self) -> Option<&[u8]> {
        if self.version != Version::Http11 || self.body.has_body() {
            return None;
        }
        let listed = super::fields::connection_tokens(&self.headers)
            .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        let value = self.header("upgrade")?.value();
        (listed && !value.trim_ascii().is_empty()).then_some(value.trim_ascii())
    }

    /// Whether the method is HEAD (its response never has a body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The host to route on: no port, no `[v6]` brackets, no final dot
    /// ([`super::authority`]).
    pub fn host_name(&self) -> Option<&str> {
        self.host
            .as_deref()
            .map(super::authority::host_without_port)
    }

    /// Removes hop-by-hop fields before the head is forwarded (see [`strip_hop_by_hop`]),
    /// with one exception: a chunked request keeps a single normalized
    /// `Transfer-Encoding: chunked` field at the end. cloudflared forwards a request body only
    /// when the metadata has a non-zero Content-Length or a Transfer-Encoding containing
    /// `chunked`, so dropping it would silently drop the body.
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
/// [`RequestHeadError::status`] and closed, because after a framing error the rest of the stream
/// cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestHeadError {
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

impl RequestHeadError {
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
            RequestHeadError::TooLarge { .. } | RequestHeadError::TooManyHeaders { .. } => 431,
            RequestHeadError::UnsupportedVersion => 505,
            RequestHeadError::UnsupportedTransferEncoding => 501,
            RequestHeadError::Malformed(_)
            | RequestHeadError::InvalidTarget
            | RequestHeadError::MissingHost
            | RequestHeadError::DuplicateHost
            | RequestHeadError::InvalidHost
            | RequestHeadError::LengthAndTransferEncoding
            | RequestHeadError::DuplicateContentLength
            | RequestHeadError::InvalidContentLength
            | RequestHeadError::TransferEncodingInHttp10
            | RequestHeadError::ChunkedNotFinal
            | RequestHeadError::InvalidTransferEncoding => 400,
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
) -> Result<Option<(RequestHead, usize)>, RequestHeadError> {
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
                return Err(RequestHeadError::TooLarge {
                    limit: limits.max_head_bytes,
                });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestHeadError::TooManyHeaders { limit: max_headers });
        }
        Err(httparse::Error::Version) => return Err(RequestHeadError::UnsupportedVersion),
        Err(e) => return Err(RequestHeadError::Malformed(e)),
    };

    // A complete parse always carries these; a missing one would be an httparse bug, which we
    // turn into a 400 rather than a panic.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestHeadError::Malformed(httparse::Error::Token));
    };
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(RequestHeadError::UnsupportedVersion),
    };

    // One copy of the head; every field is a slice of it.
    let head_bytes = Bytes::copy_from_slice(&buf[..consumed]);
    let headers: Vec<HeaderField> = req
        .headers
        .iter()
        .map(|h| {
            HeaderField::new(
                slice_of_copy(buf, &head_bytes, h.name.as_bytes()),
                slice_of_copy(buf, &head_bytes, h.value),
            )
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
fn validate_target<'a>(method: &str, target: &'a str) -> Result<Option<&'a str>, RequestHeadError> {
    if target.starts_with('/') {
        return Ok(None);
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(None)
        } else {
            Err(RequestHeadError::InvalidTarget)
        };
    }
    if method == "CONNECT" {
        // authority-form: host:port, validated like a Host value.
        return if is_valid_authority(target.as_bytes()) {
            Ok(Some(target))
        } else {
            Err(RequestHeadError::InvalidTarget)
        };
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(RequestHeadError::InvalidTarget)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if !is_valid_authority(authority.as_bytes()) {
        return Err(RequestHeadError::InvalidTarget);
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
) -> Result<Option<String>, RequestHeadError> {
    let mut hosts = headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("host"));
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestHeadError::DuplicateHost);
    }
    let Some(field) = first else {
        return match (version, target_host) {
            (Version::Http11, _) => Err(RequestHeadError::MissingHost),
            (Version::Http10, t) => Ok(t.map(str::to_owned)),
        };
    };
    let value = trim_ows(field.value());
    // An empty Host is legal only for targets without an authority, and the edge routes on
    // the host, so it cannot serve such a request anyway: reject it as invalid.
    if !is_valid_authority(value) {
        return Err(RequestHeadError::InvalidHost);
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

/// RFC 9112 §6.1–6.3, strictest reading.
fn body_kind(version: Version, headers: &[HeaderField]) -> Result<BodyKind, RequestHeadError> {
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
            return Err(RequestHeadError::TransferEncodingInHttp10);
        }
        if cl_fields.peek().is_some() {
            // §6.1 allows "TE wins, then close"; rejecting is what keeps a CL-trusting hop
            // from ever seeing this request.
            return Err(RequestHeadError::LengthAndTransferEncoding);
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
                return Err(RequestHeadError::InvalidTransferEncoding);
            }
            saw_chunked |= is_chunked;
            // Anything but exactly "chunked" (parameters included) is a coding we do not
            // decode; "identity" was removed from the registry by RFC 7230.
            saw_unknown |= !is_chunked;
            last_is_chunked = is_chunked;
        }
        if !any {
            return Err(RequestHeadError::InvalidTransferEncoding);
        }
        if !last_is_chunked {
            return Err(RequestHeadError::ChunkedNotFinal);
        }
        if saw_unknown {
            return Err(RequestHeadError::UnsupportedTransferEncoding);
        }
        return Ok(BodyKind::Chunked);
    }

    let Some(first) = cl_fields.next() else {
        return Ok(BodyKind::None);
    };
    if cl_fields.next().is_some() {
        // RFC 9110 §8.6 lets a recipient accept identical duplicates; the edge rejects
        // every duplicate (also "5, 5" below), so no later hop can pick a different one.
        return Err(RequestHeadError::DuplicateContentLength);
    }
    let value = trim_ows(first.value());
    if value.contains(&b',') {
        return Err(RequestHeadError::DuplicateContentLength);
    }
    parse_content_length(value)
        .map(BodyKind::Length)
        .ok_or(RequestHeadError::InvalidContentLength)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
