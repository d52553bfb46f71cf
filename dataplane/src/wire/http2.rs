//! cloudflared's HTTP/2 tunnel transport (`--protocol http2`), sans-IO: the names, values and
//! encodings both ends must agree on. The I/O lives in [`crate::h2stream`], the edge and the
//! connector.
//!
//! # Protocol facts (cloudflared 2026.8: `connection/http2.go`, `connection/header.go`,
//! `connection/protocol.go`)
//!
//! - The connector dials TCP to the same address as QUIC, TLS with SNI [`SNI`] and no ALPN.
//!   On that socket the **connector is the HTTP/2 server** and the edge the client: the edge
//!   sends the preface (and SETTINGS within 2 s, or Go's server closes) and opens every stream.
//! - The request kind is [`classify`]d from two request headers: [`UPGRADE`]
//!   (`control-stream`, `update-configuration`, `websocket`) and [`PROXY_SRC`] (TCP, any
//!   non-empty value). Everything else is a plain HTTP request: `:authority` is the Host
//!   (ingress matches it), `:path` the path and query.
//! - The control stream is a long-lived request from the edge. Its request body carries
//!   edge → connector bytes and its response body connector → edge bytes: the same Cap'n
//!   Proto RPC as the QUIC control stream, with nothing before it. The connector is the RPC
//!   client; the edge serves `RegistrationServer`. The connector answers `:status 200` before
//!   its first RPC bytes, with no meta header.
//! - Responses to HTTP requests: the status is the origin's (101 travels as 200); the origin's
//!   header fields travel in one field, [`RESPONSE_HEADERS`]
//!   ([`encode_response_headers`]); [`RESPONSE_META`] says who answered ([`ResponseSource`]).
//!   The h2-level `content-type` and `date` are Go's own and not the origin's: an edge reads
//!   the origin's fields only from [`RESPONSE_HEADERS`]. A proxy error is `502` with
//!   `{"src":"cloudflared"}` and no body.
//! - Go's HTTP/2 server refuses some request fields ([`refused_request_field`]); the edge drops
//!   them before sending.
//! - Go's server (the stock connector) advertises 250 concurrent streams and 1 MiB stream and
//!   connection windows, sends no PINGs and has no idle timeout: liveness is the edge's job.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use bytes::Bytes;

/// TLS server name of the HTTP/2 transport (QUIC's is `quic.cftunnel.com`).
pub const SNI: &str = "h2.cftunnel.com";

/// Request field naming the kind of an edge request.
pub const UPGRADE: &str = "cf-cloudflared-proxy-connection-upgrade";
/// [`UPGRADE`] value of the control stream.
pub const UPGRADE_CONTROL_STREAM: &str = "control-stream";
/// [`UPGRADE`] value of a remote configuration push (JSON body).
pub const UPGRADE_CONFIGURATION: &str = "update-configuration";
/// [`UPGRADE`] value of a WebSocket request.
pub const UPGRADE_WEBSOCKET: &str = "websocket";
/// Request field marking a TCP (private network) stream; `:authority` is `ip:port`.
pub const PROXY_SRC: &str = "cf-cloudflared-proxy-src";

/// Response field carrying the origin's header fields, serialised.
pub const RESPONSE_HEADERS: &str = "cf-cloudflared-response-headers";
/// Response field saying who produced the response.
pub const RESPONSE_META: &str = "cf-cloudflared-response-meta";

/// [`RESPONSE_META`] of an origin's answer, byte for byte as cloudflared writes it.
pub const META_ORIGIN: &str = r#"{"src":"origin"}"#;
/// [`RESPONSE_META`] of an answer the connector made itself (an error).
pub const META_CLOUDFLARED: &str = r#"{"src":"cloudflared"}"#;
/// [`RESPONSE_META`] of a refusal at the TCP flow limit.
pub const META_FLOW_LIMITED: &str = r#"{"src":"cloudflared","flow_rate_limited":true}"#;

/// What an edge request on the HTTP/2 transport is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Http,
    Websocket,
    Tcp,
    ControlStream,
    Configuration,
}

/// The kind, from the request's fields (cloudflared's order: configuration, websocket, TCP,
/// control stream, else HTTP; the first value of a field counts, compared exactly).
pub fn classify<'a>(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> RequestKind {
    let mut upgrade: Option<&[u8]> = None;
    let mut proxy_src = false;
    for (name, value) in fields {
        if upgrade.is_none() && name.eq_ignore_ascii_case(UPGRADE) {
            upgrade = Some(value);
        } else if name.eq_ignore_ascii_case(PROXY_SRC) && !value.is_empty() {
            proxy_src = true;
        }
    }
    match upgrade {
        Some(v) if v == UPGRADE_CONFIGURATION.as_bytes() => RequestKind::Configuration,
        Some(v) if v == UPGRADE_WEBSOCKET.as_bytes() => RequestKind::Websocket,
        _ if proxy_src => RequestKind::Tcp,
        Some(v) if v == UPGRADE_CONTROL_STREAM.as_bytes() => RequestKind::ControlStream,
        _ => RequestKind::Http,
    }
}

/// Whether an origin response field travels in [`RESPONSE_HEADERS`]: every field but
/// pseudo-fields and the transport's own (`cf-int-`, `cf-cloudflared-`, `cf-proxy-`), which
/// cloudflared drops.
pub fn is_serialised_response_field(name: &str) -> bool {
    let lower = |p: &str| {
        name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    };
    !(name.starts_with(':') || lower("cf-int-") || lower("cf-cloudflared-") || lower("cf-proxy-"))
}

/// Serialises response fields for [`RESPONSE_HEADERS`]: `b64(name):b64(value)` per value,
/// joined by `;`, standard base64 alphabet without padding. Fields that are not
/// [`is_serialised_response_field`] are left out.
pub fn encode_response_headers<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        if !is_serialised_response_field(name) {
            continue;
        }
        if !out.is_empty() {
            out.push(';');
        }
        STANDARD_NO_PAD.encode_string(name, &mut out);
        out.push(':');
        STANDARD_NO_PAD.encode_string(value, &mut out);
    }
    out
}

/// Why a [`RESPONSE_HEADERS`] value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseHeadersError {
    #[error("serialised response header pair {index} is not NAME:VALUE")]
    NotAPair { index: usize },
    #[error("serialised response header pair {index} is not base64")]
    NotBase64 { index: usize },
    #[error("serialised response header pair {index} has a name that is not UTF-8")]
    NameNotUtf8 { index: usize },
}

/// Reads a [`RESPONSE_HEADERS`] value back into fields, in order. Empty pieces are skipped (an
/// empty value is no fields); padded base64 is accepted too.
pub fn decode_response_headers(value: &[u8]) -> Result<Vec<(String, Bytes)>, ResponseHeadersError> {
    let mut fields = Vec::new();
    // Bound: the value's length (the peer's header-list limit bounds it).
    for (index, pair) in value.split(|&b| b == b';').enumerate() {
        if pair.is_empty() {
            continue;
        }
        let mut parts = pair.split(|&b| b == b':');
        let (Some(name), Some(val), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ResponseHeadersError::NotAPair { index });
        };
        let decode = |b: &[u8]| {
            let trimmed = b
                .strip_suffix(b"==")
                .or_else(|| b.strip_suffix(b"="))
                .unwrap_or(b);
            STANDARD_NO_PAD
                .decode(trimmed)
                .map_err(|_| ResponseHeadersError::NotBase64 { index })
        };
        let name = String::from_utf8(decode(name)?)
            .map_err(|_| ResponseHeadersError::NameNotUtf8 { index })?;
        fields.push((name, Bytes::from(decode(val)?)));
    }
    Ok(fields)
}

/// Who produced a response, from [`RESPONSE_META`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseSource {
    Origin,
    /// The connector, with an error; `flow_limited` when it refused at the TCP flow limit.
    Connector {
        flow_limited: bool,
    },
}

impl ResponseSource {
    /// The [`RESPONSE_META`] value, as cloudflared writes it.
    pub fn meta(self) -> &'static str {
        match self {
            ResponseSource::Origin => META_ORIGIN,
            ResponseSource::Connector {
                flow_limited: false,
            } => META_CLOUDFLARED,
            ResponseSource::Connector { flow_limited: true } => META_FLOW_LIMITED,
        }
    }

    /// Reads a [`RESPONSE_META`] value: cloudflared's exact bytes, or any JSON object whose
    /// `"src"` is `"origin"` / `"cloudflared"` (whitespace tolerated). `None` otherwise.
    pub fn parse(value: &[u8]) -> Option<ResponseSource> {
        for known in [
            ResponseSource::Origin,
            ResponseSource::Connector {
                flow_limited: false,
            },
            ResponseSource::Connector { flow_limited: true },
        ] {
            if value == known.meta().as_bytes() {
                return Some(known);
            }
        }
        let text: String = std::str::from_utf8(value)
            .ok()?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let flow_limited = text.contains(r#""flow_rate_limited":true"#);
        if text.contains(r#""src":"origin""#) {
            Some(ResponseSource::Origin)
        } else if text.contains(r#""src":"cloudflared""#) {
            Some(ResponseSource::Connector { flow_limited })
        } else {
            None
        }
    }
}

/// Whether Go's HTTP/2 server (the stock connector) refuses a request with this field: the
/// connection-specific fields, and `te` other than `trailers`. The edge drops them.
pub fn refused_request_field(name: &str, value: &[u8]) -> bool {
    const CONNECTION_SPECIFIC: [&str; 5] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ];
    if name.eq_ignore_ascii_case("te") {
        return !value.trim_ascii().eq_ignore_ascii_case(b"trailers");
    }
    CONNECTION_SPECIFIC
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}

/// The status a response carries on the transport: 101 travels as 200 (HTTP/2 has no 101);
/// the edge restores it for a WebSocket request.
pub fn transport_status(status: u16) -> u16 {
    if status == 101 { 200 } else { status }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_cloudflareds_order() {
        let k = |f: &[(&str, &str)]| classify(f.iter().map(|(n, v)| (*n, v.as_bytes())));
        assert_eq!(k(&[]), RequestKind::Http);
        assert_eq!(
            k(&[(UPGRADE, "control-stream")]),
            RequestKind::ControlStream
        );
        assert_eq!(
            k(&[(
                "Cf-Cloudflared-Proxy-Connection-Upgrade",
                "update-configuration"
            )]),
            RequestKind::Configuration
        );
        assert_eq!(k(&[(UPGRADE, "websocket")]), RequestKind::Websocket);
        assert_eq!(k(&[(PROXY_SRC, "tcp")]), RequestKind::Tcp);
        // TCP wins over the control stream; an empty source is no source.
        assert_eq!(
            k(&[(UPGRADE, "control-stream"), (PROXY_SRC, "1")]),
            RequestKind::Tcp
        );
        assert_eq!(k(&[(PROXY_SRC, "")]), RequestKind::Http);
        // Exact, case-sensitive values; the first value counts.
        assert_eq!(k(&[(UPGRADE, "Websocket")]), RequestKind::Http);
        assert_eq!(
            k(&[(UPGRADE, "websocket"), (UPGRADE, "control-stream")]),
            RequestKind::Websocket
        );
    }

    #[test]
    fn response_headers_match_cloudflareds_bytes() {
        // The serialisation cloudflared produced for these fields (observed on the wire).
        let fields: [(&str, &[u8]); 4] = [
            ("Content-Type", b"text/html"),
            ("Set-Cookie", b"a=1"),
            ("Set-Cookie", b"b=2"),
            ("Content-Length", b"5"),
        ];
        let encoded = encode_response_headers(fields);
        assert_eq!(
            encoded,
            "Q29udGVudC1UeXBl:dGV4dC9odG1s;U2V0LUNvb2tpZQ:YT0x;U2V0LUNvb2tpZQ:Yj0y;Q29udGVudC1MZW5ndGg:NQ"
        );
        let back = decode_response_headers(encoded.as_bytes()).unwrap();
        let back: Vec<(&str, &[u8])> = back.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        assert_eq!(back, fields);
    }

    #[test]
    fn transport_fields_are_not_serialised_and_edge_cases_round_trip() {
        let fields: [(&str, &[u8]); 5] = [
            ("Cf-Int-Tracing", b"x"),
            ("cf-cloudflared-response-meta", b"y"),
            ("CF-Proxy-Thing", b"z"),
            ("X-Empty", b""),
            ("X-Bin", b"\xff\x00;:"),
        ];
        let encoded = encode_response_headers(fields);
        let back = decode_response_headers(encoded.as_bytes()).unwrap();
        assert_eq!(
            back,
            vec![
                ("X-Empty".to_owned(), Bytes::new()),
                ("X-Bin".to_owned(), Bytes::from_static(b"\xff\x00;:")),
            ]
        );
        assert_eq!(decode_response_headers(b"").unwrap(), vec![]);
        // Padded base64 from a lenient peer reads the same.
        assert_eq!(
            decode_response_headers(b"YQ==:Yg==").unwrap(),
            vec![("a".to_owned(), Bytes::from_static(b"b"))]
        );
    }

    #[test]
    fn malformed_response_headers_are_refused() {
        assert_eq!(
            decode_response_headers(b"YQ:Yg;YWJj"),
            Err(ResponseHeadersError::NotAPair { index: 1 })
        );
        assert_eq!(
            decode_response_headers(b"YQ:Yg:Yw"),
            Err(ResponseHeadersError::NotAPair { index: 0 })
        );
        assert_eq!(
            decode_response_headers(b"!!:Yg"),
            Err(ResponseHeadersError::NotBase64 { index: 0 })
        );
        assert_eq!(
            decode_response_headers(b"/w:Yg"),
            Err(ResponseHeadersError::NameNotUtf8 { index: 0 })
        );
    }

    #[test]
    fn meta_values() {
        for s in [
            ResponseSource::Origin,
            ResponseSource::Connector {
                flow_limited: false,
            },
            ResponseSource::Connector { flow_limited: true },
        ] {
            assert_eq!(ResponseSource::parse(s.meta().as_bytes()), Some(s));
        }
        assert_eq!(
            ResponseSource::parse(br#"{ "src" : "origin" }"#),
            Some(ResponseSource::Origin)
        );
        assert_eq!(ResponseSource::parse(b"origin"), None);
        assert_eq!(ResponseSource::parse(b"\xff"), None);
    }

    #[test]
    fn refused_fields() {
        for f in [
            "Connection",
            "keep-alive",
            "Proxy-Connection",
            "transfer-encoding",
            "Upgrade",
        ] {
            assert!(refused_request_field(f, b"x"), "{f}");
        }
        assert!(refused_request_field("te", b"gzip"));
        assert!(!refused_request_field("TE", b"trailers"));
        assert!(!refused_request_field("x-forwarded-for", b"1.2.3.4"));
        assert_eq!(transport_status(101), 200);
        assert_eq!(transport_status(204), 204);
    }
}
