//! HTTP/1.1 codec for the edge's public side, sans-IO.
//!
//! # Layout
//!
//! - [`request`]: [`parse_request_head`] (httparse) → [`RequestHead`], with the body-framing
//!   decision ([`BodyKind`]), keep-alive, `Expect: 100-continue`, the routing host, and the
//!   request-smuggling rules; [`strip_hop_by_hop`] for fields that must not cross a hop.
//! - [`body`]: [`ChunkedDecoder`] / [`LengthDecoder`] (payload split out of the receive
//!   buffer without copying) and [`ChunkedEncoder`] (chunk headers as separate `Bytes` for
//!   vectored writes, payload untouched).
//! - [`response`]: [`body_framing`] and [`write_response_head`] for the origin's answer,
//!   [`CONTINUE_100`], and the edge's canned errors ([`error_response`]: 400/404/431/501/505,
//!   502 naming the cause, 530 naming error 1033).
//!
//! There is no response parser: reading the origin's HTTP is the connector's job.
//!
//! # Rules
//!
//! - No I/O and no runtime imports (DESIGN: the HTTP codecs are sans-IO). Callers own the
//!   buffers; these functions take bytes and return bytes or events, so every case, including
//!   a head split at each byte, is tested without sockets.
//! - Strict where two parsers could disagree on where a message ends (that is request
//!   smuggling): Content-Length with Transfer-Encoding, any duplicate Content-Length, a
//!   non-`1*DIGIT` length, a transfer coding other than a single final `chunked`, whitespace
//!   before a colon, obs-fold, bare CR/LF in chunked framing: all rejected, never repaired.
//!   The edge never forwards the raw head anyway (it becomes `ConnectRequest` metadata), so
//!   what matters is that *our* framing decision is unambiguous.
//!
//! # Limits and why
//!
//! | limit | default | on excess | why |
//! |---|---|---|---|
//! | request head bytes | 64 KiB | 431 | big cookies work; a slow client buffers at most this |
//! | header fields | 128 (max 512) | 431 | bounds the parse; httparse slots live on the stack |
//! | chunk-size / trailer line | 4 KiB | error, close | real lines are a few bytes |
//! | chunk extensions per body | 16 KiB | error, close | stops tiny-chunk/huge-extension CPU burn |
//! | trailers per body | 16 KiB | error, close | trailers are dropped (argotunnel has none) |
//! | 502 cause text | 512 B | cut | a body that names the cause, not a log |
//!
//! DESIGN lists oversized heads under "rejected with 400"; this module answers 431 (RFC 6585
//! §5), which is a 4xx rejection carrying the precise reason. [`HeadError::status`] is the
//! single place to change if a client test insists on 400.

pub mod authority;
pub mod body;
pub mod request;
pub mod response;

pub use authority::{Authority, host_without_port};
pub use body::{
    BodyDecoder, BodyError, ChunkedDecoder, ChunkedEncoder, ChunkedLimits, DecodeEvent,
    LengthDecoder,
};
pub use request::{
    BodyKind, HeadError, HeaderField, HeaderLike, Limits, RequestHead, Version, is_hop_by_hop,
    parse_request_head, strip_hop_by_hop,
};
pub use response::{
    BodyFraming, CONTINUE_100, EdgeError, GatewayFailure, ResponseContext, ResponseError,
    ResponseHead, body_framing, continue_100, error_response, head_error_response,
    options_asterisk_response, write_response_head,
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
