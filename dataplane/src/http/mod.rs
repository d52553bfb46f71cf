//! The HTTP/1.1 codec, sans-IO, for both directions: the edge reads request heads and writes
//! response heads; the connector's origin client and loadgen write requests and read
//! response heads; all of them frame bodies with the same decoders.
//!
//! # Layout
//!
//! - [`fields`]: what both directions share: head [`Limits`], [`Version`], [`HeaderField`]
//!   (slices of one copy of the head), [`strip_hop_by_hop`] for fields that must not cross a
//!   hop.
//! - [`request`]: [`parse_request_head`] (httparse) → [`RequestHead`], with the body-framing
//!   decision ([`BodyKind`]), keep-alive, `Expect: 100-continue`, the routing host, and the
//!   request-smuggling rules; [`RequestHeadError`] says which 4xx/5xx answers a bad head.
//! - [`response_head`]: [`ResponseHeadReader`] reads a response: skips interim 1xx heads,
//!   decides keep-alive and the body framing ([`BodyFraming`]: none for HEAD/1xx/204/304,
//!   chunked, Content-Length or close-delimited), either as an allocation-free
//!   [`ResponseSummary`] or with reason and fields ([`ParsedResponseHead`]);
//!   [`ResponseHeadError`] for a head that cannot be trusted.
//! - [`body`]: [`BodyDecoder`] over [`ChunkedDecoder`] / [`LengthDecoder`] / close-delimited
//!   (payload split out of the receive buffer without copying, or skipped in place) and
//!   [`ChunkedEncoder`] (chunk headers as separate `Bytes` for vectored writes, payload
//!   untouched).
//! - [`response`]: [`body_framing`] and [`write_response_head`] for the edge's answer to its
//!   client, [`reason_phrase`], [`CONTINUE_100`], and the edge's canned errors
//!   ([`error_response`]: 400/404/431/501/505, 502 naming the failed side, 530 naming error
//!   1033).
//! - [`authority`]: the one `host[:port]` helper.
//!
//! # Rules
//!
//! - No I/O and no runtime imports: the codec is driven by whoever owns the socket (monoio
//!   workers, tokio in tests). Callers own the buffers; these functions take bytes and
//!   return bytes or events, so every case, including a head split at each byte, is tested
//!   without sockets.
//! - Strict where two parsers could disagree on where a message ends (that is request
//!   smuggling or response splitting). Requests: Content-Length with Transfer-Encoding, any
//!   duplicate Content-Length, a non-`1*DIGIT` length, a transfer coding other than a single
//!   final `chunked`, whitespace before a colon, obs-fold, bare CR/LF in chunked framing: all
//!   rejected, never repaired. The edge never forwards the raw head anyway (it becomes
//!   `ConnectRequest` metadata), so what matters is that *our* framing decision is
//!   unambiguous. Responses: a non-`1*DIGIT` or conflicting Content-Length, a status outside
//!   100–999, an oversized head and endless interim responses are errors; syntax that only
//!   affects one field (obs-fold, whitespace before a colon) is accepted and normalised.
//!
//! # Limits and why
//!
//! | limit | default | on excess | why |
//! |---|---|---|---|
//! | request head bytes | 64 KiB | 431 | big cookies work; a slow client buffers at most this |
//! | header fields | 128 (max 512) | 431 | bounds the parse; httparse slots live on the stack |
//! | response head bytes / fields | 64 KiB / 128 | error (502 at the edge) | as for requests |
//! | interim responses before the final one | 16 | error (502 at the edge) | real servers send one or two |
//! | chunk-size / trailer line | 4 KiB | error, close | real lines are a few bytes |
//! | chunk extensions per body | 16 KiB | error, close | stops tiny-chunk/huge-extension CPU burn |
//! | trailers per body | 16 KiB | error, close | trailers are dropped (argotunnel has none) |
//! | 502 cause text | 512 B | cut | a body that names the cause, not a log |
//!
//! An oversized request head is answered 431 (RFC 6585 §5) rather than a bare 400: a 4xx
//! rejection carrying the precise reason. [`RequestHeadError::status`] is the single place
//! that maps errors to statuses.

pub mod authority;
pub mod body;
pub mod fields;
pub mod request;
pub mod response;
pub mod response_head;

pub use authority::{Authority, host_without_port};
pub use body::{
    BodyDecoder, BodyError, ChunkedDecoder, ChunkedEncoder, ChunkedLimits, DecodeEvent,
    LengthDecoder,
};
pub use fields::{
    HeaderField, HeaderLike, Limits, Version, is_hop_by_hop, is_token, strip_hop_by_hop,
};
pub use request::{BodyKind, RequestHead, RequestHeadError, parse_request_head};
pub use response::{
    BodyFraming, CONTINUE_100, EdgeError, GatewayFailure, ResponseContext, ResponseError,
    ResponseHead, body_framing, continue_100, error_response, head_error_response,
    options_asterisk_response, reason_phrase, write_response_head,
};
pub use response_head::{
    ParsedResponseHead, ResponseHeadError, ResponseHeadReader, ResponseSummary,
};

#[cfg(test)]
pub(crate) mod test_util {
    /// xorshift64*: deterministic, dependency-free randomness for the fuzz-style tests, so a
    /// failure reproduces from its seed.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}
