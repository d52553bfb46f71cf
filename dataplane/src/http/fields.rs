//! What request and response heads share: head limits, the HTTP/1 version, header fields
//! (name and value as slices of one copy of the head), list and number syntax, and the
//! hop-by-hop rules.

use bytes::Bytes;

/// Default cap on the size of a head (start line + header fields + blank line).
/// 64 KiB is above every mainstream client's cookie/header budget ("large headers up to a
/// limit") and small enough that a slow client cannot make a worker buffer much.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;

/// Default cap on the number of header fields.
pub const DEFAULT_MAX_HEADERS: usize = 128;

/// The most header slots a head parser will ever offer httparse; `Limits::max_headers`
/// is clamped to it. The slots live on the stack uninitialised, so a large ceiling costs
/// nothing per call; it only bounds the stack frame (512 × 32 bytes).
pub const HARD_MAX_HEADERS: usize = 512;

/// Content-Length is a u64; more than 20 decimal digits cannot fit (u64::MAX has 20), so a
/// longer value is rejected before any arithmetic. Leading zeros count towards it on
/// purpose: nobody legitimately sends 21-digit lengths.
const MAX_CONTENT_LENGTH_DIGITS: usize = 20;

/// Limits applied to one request or response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes from the first byte of the start line to the end of the blank line.
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

impl HeaderLike for httparse::Header<'_> {
    fn header_name(&self) -> &str {
        self.name
    }
    fn header_value(&self) -> &[u8] {
        self.value
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

/// An RFC 9110 §5.6.2 token (a field name, a method): one or more `tchar`s.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Slices of a head that was parsed in `parsed` and copied to `copy`: `part` (a subslice of
/// `parsed`) becomes the same range of `copy`, so every field shares the one copy.
pub(crate) fn slice_of_copy(parsed: &[u8], copy: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(parsed.as_ptr() as usize);
    match start.checked_add(part.len()) {
        // httparse hands out subslices of what it parsed; the fallback copy only guards
        // against an empty slice whose pointer is not inside it.
        Some(end) if !part.is_empty() && end <= copy.len() => copy.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
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

/// The comma-separated tokens of every Connection field, trimmed, empty ones skipped.
pub(crate) fn connection_tokens<H: HeaderLike>(headers: &[H]) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|h| h.header_name().eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.header_value().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Connection tokens decide persistence (RFC 9112 §9.3): `close` always wins; 1.1 persists by
/// default; 1.0 only with `keep-alive`. The same rule for requests and responses.
// Inlined: it is on every head, and callers sit in other modules (codegen units).
#[inline]
pub(crate) fn keep_alive<H: HeaderLike>(version: Version, headers: &[H]) -> bool {
    let mut close = false;
    let mut keep = false;
    for token in connection_tokens(headers) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (version == Version::Http11 || keep)
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
