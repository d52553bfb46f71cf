//! Why the edge could not get an answer for a request it forwarded: which side failed, and
//! whether the request may be sent again. The public client sees only the side (the 502 body
//! names the tunnel or the origin); the log gets the whole error. Failures of the client
//! itself (a malformed body, a client that went away) are answered or closed where they
//! happen and never become a 502.

use crate::http::{GatewayFailure, ResponseError};
use crate::quic::endpoint::{ConnectionFailed, StreamReadError, StreamWriteError};
use crate::wire::http2::ResponseHeadersError;
use crate::wire::stream::WireError;

/// A failed exchange with the connector over one tunnel stream, before any of the answer was
/// sent to the client (after that, the edge can only close the client connection).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot open a tunnel stream: {0}")]
    OpenStream(ConnectionFailed),
    #[error("tunnel stream failed while the request was sent: {0}")]
    SendRequest(StreamWriteError),
    #[error("connector answered with an RPC stream")]
    RpcStream,
    #[error("connector sent a bad response header: {0}")]
    BadResponseHeader(WireError),
    #[error("connector closed the stream without answering")]
    NoAnswer,
    #[error("tunnel stream failed: {0}")]
    ReadAnswer(StreamReadError),
    #[error("connector sent a bad response: {0}")]
    BadResponseMetadata(WireError),
    #[error("connector sent a response the edge cannot forward: {0}")]
    UnforwardableResponse(ResponseError),
    /// The connector's `ConnectResponse.error`: it names the origin's address and the OS
    /// error, so it is logged, never shown. On HTTP/2, a `502` with
    /// `cf-cloudflared-response-meta: {"src":"cloudflared"}` (which carries no detail).
    #[error("the connector could not get an answer from the origin: {0}")]
    Origin(String),
    /// HTTP/2 transport: the connection would not take a new stream (it is closing, or the
    /// connector refused it); the request never reached the connector.
    #[error("cannot open an HTTP/2 tunnel stream: {0}")]
    OpenHttp2Stream(#[source] h2::Error),
    /// HTTP/2 transport: the request cannot be expressed as an HTTP/2 request head.
    #[error("request cannot travel as HTTP/2: {0}")]
    Http2Request(String),
    /// HTTP/2 transport: the stream or the connection failed before the answer's head.
    #[error("HTTP/2 tunnel stream failed: {0}")]
    Http2Stream(#[source] h2::Error),
    /// HTTP/2 transport: the serialised origin fields are malformed.
    #[error("connector sent bad serialised response fields: {0}")]
    BadResponseFields(ResponseHeadersError),
    /// HTTP/2 transport: neither `cf-cloudflared-response-meta` nor the serialised fields say
    /// who answered.
    #[error("connector's HTTP/2 answer (status {0}) does not say who produced it")]
    UnknownResponseSource(u16),
    /// The origin answered 101 to a request that asked for no upgrade.
    #[error("origin switched protocols (101) on a request that did not ask to")]
    UnrequestedUpgrade,
}

impl ForwardError {
    /// The side that failed: the origin (as the connector reported it), or the tunnel (the
    /// QUIC or HTTP/2 connection, the stream, or the connector's answer). This is also what the 502
    /// tells the public client.
    pub fn side(&self) -> GatewayFailure {
        match self {
            Self::Origin(_) | Self::UnrequestedUpgrade => GatewayFailure::Origin,
            _ => GatewayFailure::Tunnel,
        }
    }

    /// Whether the request may be sent again as it is, on this or another connection:
    /// only when it never reached the connector, so no origin can have seen it. Once the
    /// request was delivered, a retry is the client's decision (it knows whether the method
    /// is idempotent), not the edge's.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::OpenStream(_) | Self::OpenHttp2Stream(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_forward_error_sides_and_retry() {
        let origin = ForwardError::Origin("dial tcp 127.0.0.1:1: connection refused".into());
        assert_eq!(origin.side(), GatewayFailure::Origin);
        assert!(!origin.retryable());
        for e in [
            ForwardError::SendRequest(StreamWriteError::ClosedStream),
            ForwardError::RpcStream,
            ForwardError::NoAnswer,
        ] {
            assert_eq!(e.side(), GatewayFailure::Tunnel, "{e}");
            assert!(!e.retryable(), "{e}");
        }
        assert_eq!(
            ForwardError::NoAnswer.to_string(),
            "connector closed the stream without answering"
        );
    }
}
