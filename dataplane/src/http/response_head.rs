//! HTTP/1.x response heads as an HTTP client receives them: parsing with httparse, interim
//! (1xx) responses, keep-alive and the body-framing decision (RFC 9112 §6.3).
//!
//! Two ways in, one set of rules:
//! - [`ResponseHeadReader::read_summary`] keeps only what frames the body and decides reuse
//!   ([`ResponseSummary`]): no allocation, for a client that counts responses (loadgen).
//! - [`ResponseHeadReader::read_head`] also keeps the reason and the fields
//!   ([`ParsedResponseHead`]), as slices of one copy of the head's bytes (the connector,
//!   which forwards them).
//!
//! Lenient where only the syntax of one field is affected (obs-fold is unfolded, whitespace
//! before a colon is accepted, values may be obs-text), strict wherever the answer decides
//! where the message ends: a Content-Length that is not `1*DIGIT`, two different lengths, a
//! status outside 100–999 and an oversized head are errors, because guessing there could
//! deliver bytes of the next response as this one's body.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::fields::{
    HARD_MAX_HEADERS, HeaderField, HeaderLike, Limits, Version, keep_alive, parse_content_length,
    slice_of_copy, trim_ows,
};
use super::response::{BodyFraming, no_body_status};

/// Interim (1xx) responses skipped before the final one: real origins send one or two
/// (100 Continue, 103 Early Hints); more is an origin looping.
pub const DEFAULT_MAX_INTERIM_RESPONSES: usize = 16;

/// Why a response head was refused. After any of them the connection cannot be trusted
/// to be at a message boundary, so it must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ResponseHeadError {
    #[error("response head over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("response head has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("invalid response head ({0})")]
    Malformed(httparse::Error),
    #[error("invalid status {0}")]
    InvalidStatus(u16),
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    #[error("more than {limit} interim responses")]
    TooManyInterim { limit: usize },
}

/// What a response head says about the message and the connection, without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseSummary {
    pub status: u16,
    pub version: Version,
    /// How the body is delimited; [`BodyFraming::None`] for HEAD requests, 1xx, 204, 304.
    pub framing: BodyFraming,
    /// The connection may carry another request once this response's body is read: the
    /// server allowed it (RFC 9112 §9.3), the body does not run to the close, and the answer
    /// is not a 101 (which hands the connection to another protocol).
    pub keep_alive: bool,
    /// Bytes the head occupied, blank line included.
    pub head_len: usize,
}

impl ResponseSummary {
    /// A 1xx other than 101: the final response follows on the same connection.
    pub fn is_interim(&self) -> bool {
        is_interim(self.status)
    }
}

/// A final response head with its reason and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponseHead {
    pub status: u16,
    pub version: Version,
    pub framing: BodyFraming,
    /// As in [`ResponseSummary::keep_alive`].
    pub keep_alive: bool,
    /// The reason phrase as sent (may be empty or obs-text).
    pub reason: Bytes,
    /// Every field line in order, values as sent (obs-text kept, obs-fold unfolded).
    pub headers: Vec<HeaderField>,
}

fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// Reads the response heads of one request: skips interim responses (at most
/// `max_interim`), returns the final head and leaves the body in the buffer.
///
/// Sans-IO: append received bytes to the buffer and call again while it answers
/// `Ok(None)`. Only the first `limits.max_head_bytes` of the buffer are ever parsed, so a
/// head that never ends costs at most that much per call, and a head over the limit is
/// refused even when it arrives whole in one read.
#[derive(Debug, Clone)]
pub struct ResponseHeadReader {
    head_request: bool,
    limits: Limits,
    max_interim: usize,
    interim_seen: usize,
}

impl ResponseHeadReader {
    /// `head_request`: the request was HEAD, so the final response has no body whatever
    /// its fields say.
    pub fn new(head_request: bool, limits: Limits) -> Self {
        Self {
            head_request,
            limits,
            max_interim: DEFAULT_MAX_INTERIM_RESPONSES,
            interim_seen: 0,
        }
    }

    /// Sets how many interim responses may precede the final one.
    pub fn with_max_interim(mut self, max_interim: usize) -> Self {
        self.max_interim = max_interim;
        self
    }

    /// Consumes interim heads and the final head from the front of `buf` and returns the
    /// final one's summary. Allocates nothing.
    pub fn read_summary(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<ResponseSummary>, ResponseHeadError> {
        // Bound: each round consumes one interim head (at most max_interim) or returns.
        loop {
            // Uninitialised slots cost nothing; they borrow `buf`, so they live per round.
            let mut slots = [const { MaybeUninit::uninit() }; HARD_MAX_HEADERS];
            let Some((summary, _, _)) =
                parse_response_head(buf, self.head_request, &self.limits, &mut slots)?
            else {
                return Ok(None);
            };
            buf.advance(summary.head_len);
            if self.interim(&summary)? {
                continue;
            }
            return Ok(Some(summary));
        }
    }

    /// As [`read_summary`](Self::read_summary), keeping the reason and the fields: the
    /// head is copied once and every field is a slice of that copy (a folded value is
    /// unfolded into its own bytes).
    pub fn read_head(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<ParsedResponseHead>, ResponseHeadError> {
        // Bound: as in read_summary.
        loop {
            let mut slots = [const { MaybeUninit::uninit() }; HARD_MAX_HEADERS];
            let Some((summary, reason, fields)) =
                parse_response_head(buf, self.head_request, &self.limits, &mut slots)?
            else {
                return Ok(None);
            };
            if self.interim(&summary)? {
                buf.advance(summary.head_len);
                continue;
            }
            let parsed: &[u8] = buf;
            let copy = Bytes::copy_from_slice(&parsed[..summary.head_len]);
            let headers = fields
                .iter()
                .map(|h| {
                    let value = if h.value.iter().any(|&b| b == b'\r' || b == b'\n') {
                        unfold(h.value)
                    } else {
                        slice_of_copy(parsed, &copy, h.value)
                    };
                    HeaderField::new(slice_of_copy(parsed, &copy, h.name.as_bytes()), value)
                })
                .collect();
            let reason = slice_of_copy(parsed, &copy, reason.as_bytes());
            buf.advance(summary.head_len);
            return Ok(Some(ParsedResponseHead {
                status: summary.status,
                version: summary.version,
                framing: summary.framing,
                keep_alive: summary.keep_alive,
                reason,
                headers,
            }));
        }
    }

    /// Counts an interim head; `Ok(false)` for a final one (which resets the count for the
    /// next request on the connection).
    fn interim(&mut self, summary: &ResponseSummary) -> Result<bool, ResponseHeadError> {
        if !summary.is_interim() {
            self.interim_seen = 0;
            return Ok(false);
        }
        self.interim_seen += 1;
        if self.interim_seen > self.max_interim {
            return Err(ResponseHeadError::TooManyInterim {
                limit: self.max_interim,
            });
        }
        Ok(true)
    }
}

/// One parsed head, borrowing the receive buffer (`'b`) and the header slots (`'s`):
/// summary, reason, fields.
type BorrowedHead<'b, 's> = (ResponseSummary, &'b str, &'s [httparse::Header<'b>]);

/// One head (interim or final) from the front of `buf`, not consumed. `Ok(None)` wants more
/// bytes.
fn parse_response_head<'b, 's>(
    buf: &'b [u8],
    head_request: bool,
    limits: &Limits,
    slots: &'s mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<BorrowedHead<'b, 's>>, ResponseHeadError> {
    let max_headers = limits.max_headers.min(HARD_MAX_HEADERS);
    // Only the first max_head_bytes are looked at: a head that arrives whole in one large
    // read must not slip past the limit just because it parsed as complete.
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .parse_response_with_uninit_headers(&mut res, window, &mut slots[..max_headers]);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.max_head_bytes {
                return Err(ResponseHeadError::TooLarge {
                    limit: limits.max_head_bytes,
                });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ResponseHeadError::TooManyHeaders { limit: max_headers });
        }
        Err(e) => return Err(ResponseHeadError::Malformed(e)),
    };
    // A complete parse always carries these; a missing one would be an httparse bug, which
    // is refused rather than guessed at.
    let (Some(status), Some(minor)) = (res.code, res.version) else {
        return Err(ResponseHeadError::Malformed(httparse::Error::Status));
    };
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(ResponseHeadError::Malformed(httparse::Error::Version)),
    };
    if !(100..=999).contains(&status) {
        return Err(ResponseHeadError::InvalidStatus(status));
    }
    let fields: &'s [httparse::Header<'b>] = res.headers;
    let framing = response_framing(status, head_request, fields)?;
    let keep_alive =
        keep_alive(version, fields) && framing != BodyFraming::CloseDelimited && status != 101;
    let summary = ResponseSummary {
        status,
        version,
        framing,
        keep_alive,
        head_len,
    };
    Ok(Some((summary, res.reason.unwrap_or(""), fields)))
}

/// RFC 9112 §6.3 for responses. Content-Length is checked even where it does not frame the
/// body (HEAD, 204, 304, or next to Transfer-Encoding): a server that sends a malformed or
/// self-contradicting length is not trusted with the connection's framing.
fn response_framing(
    status: u16,
    head_request: bool,
    fields: &[httparse::Header<'_>],
) -> Result<BodyFraming, ResponseHeadError> {
    let mut length: Option<u64> = None;
    // Bounded by the number of fields.
    for h in fields
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        // One `1*DIGIT` per field: a list ("5, 5"), an empty value or a sign is refused.
        let n = parse_content_length(trim_ows(h.value))
            .ok_or(ResponseHeadError::InvalidContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(ResponseHeadError::ConflictingContentLength);
        }
        length = Some(n);
    }
    if head_request || no_body_status(status) {
        return Ok(BodyFraming::None);
    }
    let mut transfer_encodings = fields
        .iter()
        .filter(|h| h.header_name().eq_ignore_ascii_case("transfer-encoding"))
        .peekable();
    if transfer_encodings.peek().is_some() {
        // Chunked only if it is the final coding (across all field lines); anything else
        // runs to the close. Transfer-Encoding overrides Content-Length (§6.3 item 3).
        let last = transfer_encodings
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(trim_ows)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
            _ => BodyFraming::CloseDelimited,
        });
    }
    Ok(length.map_or(BodyFraming::CloseDelimited, BodyFraming::Length))
}

/// An obs-fold value with each CR LF (or lone CR or LF) replaced by one space (RFC 9112
/// §5.2: a recipient may unfold before interpreting the value).
fn unfold(value: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(value.len());
    let mut prev_cr = false;
    for &b in value {
        match b {
            b'\n' if prev_cr => {}
            b'\r' | b'\n' => v.push(b' '),
            _ => v.push(b),
        }
        prev_cr = b == b'\r';
    }
    Bytes::from(v)
}

#[cfg(test)]
#[path = "response_head_tests.rs"]
mod tests;
