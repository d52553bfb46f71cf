//! Why a tunnel connection could not be made, or ended: which side failed and whether the
//! supervisor may retry. The supervisor's reconnect loop decides from [`ConnectionError::retryable`],
//! and [`super::ConnectorHooks`] receive the typed error, never a rendered message.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::quic::endpoint::ConnectionFailed;
use crate::quic::{CidError, ConfigError};
use crate::wire::rpc::RegistrationError;

/// Where a connection failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedSide {
    /// This host: its UDP socket or QUIC setup.
    Local,
    /// The edge: unreachable, refused, or the connection to it broke.
    Edge,
}

/// Why one connection to the edge failed or ended. Cheap to clone (hooks keep copies).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot open a UDP socket: {0}")]
    Socket(Arc<io::Error>),
    #[error("cannot set up QUIC: {0}")]
    Cid(#[from] CidError),
    #[error("cannot set up QUIC: {0}")]
    Quic(#[from] ConfigError),
    #[error("cannot start the QUIC endpoint: {0}")]
    Endpoint(Arc<io::Error>),
    #[error("edge {edge} unreachable: {cause}")]
    Unreachable {
        edge: SocketAddr,
        cause: ConnectionFailed,
    },
    #[error("cannot open the control stream: {0}")]
    ControlStream(ConnectionFailed),
    /// The edge answered `registerConnection` with a refusal; it says whether to retry.
    #[error("the edge refused the registration: {}", .0.cause)]
    Refused(RegistrationError),
    #[error("registration RPC failed: {0}")]
    RegistrationRpc(capnp::Error),
    /// The edge did not answer `registerConnection` within `--rpc-timeout`.
    #[error("edge {edge} did not answer the registration within {:.1}s", .after.as_secs_f64())]
    RegistrationTimeout { edge: SocketAddr, after: Duration },
    /// A registered connection ended (the edge closed it, or the path broke).
    #[error("{0}")]
    Lost(ConnectionFailed),
    #[error("{0}")]
    Closed(crate::quic::ConnectionError),
    #[error("edge {edge} silent for {:.1}s", .silent_for.as_secs_f64())]
    Silent {
        edge: SocketAddr,
        silent_for: Duration,
    },
    /// `auto` gives a QUIC dial [`super::protocol::QUIC_HANDSHAKE_LIMIT`]: blocked UDP is silence.
    #[error("edge {edge}: no QUIC handshake within {:.1}s", .after.as_secs_f64())]
    QuicTimeout { edge: SocketAddr, after: Duration },
    // The HTTP/2 transport.
    #[error("edge {edge} unreachable over TCP: {source}")]
    TcpConnect {
        edge: SocketAddr,
        source: Arc<io::Error>,
    },
    #[error("TLS handshake with edge {edge} failed: {source}")]
    Tls {
        edge: SocketAddr,
        source: Arc<io::Error>,
    },
    #[error("edge {edge}: no TCP connection and TLS handshake within {:.0}s", .after.as_secs_f64())]
    DialTimeout { edge: SocketAddr, after: Duration },
    #[error("HTTP/2 with edge {edge} failed: {source}")]
    Http2 {
        edge: SocketAddr,
        source: Arc<h2::Error>,
    },
    #[error("edge {edge} opened no control stream within {:.0}s", .after.as_secs_f64())]
    NoControlStream { edge: SocketAddr, after: Duration },
    /// The edge ended the HTTP/2 connection (TCP closed or GOAWAY).
    #[error("connection with edge {edge} closed")]
    EdgeClosed { edge: SocketAddr },
}

impl ConnectionError {
    /// The side that failed.
    pub fn side(&self) -> FailedSide {
        match self {
            ConnectionError::Socket(_)
            | ConnectionError::Cid(_)
            | ConnectionError::Quic(_)
            | ConnectionError::Endpoint(_) => FailedSide::Local,
            _ => FailedSide::Edge,
        }
    }

    /// Whether another attempt may succeed. Only the edge's explicit "do not retry" refusal (a
    /// wrong secret, an unknown tunnel) is permanent; everything else is worth redialling.
    pub fn retryable(&self) -> bool {
        match self {
            ConnectionError::Refused(r) => r.should_retry,
            _ => true,
        }
    }

    /// Whether the transport itself failed (no connection, or it broke before registering):
    /// what makes `--protocol auto` try the other transport. A refusal or an RPC error is the
    /// edge's answer, not the transport's fault.
    pub fn transport_failure(&self) -> bool {
        !matches!(
            self,
            ConnectionError::Refused(_)
                | ConnectionError::RegistrationRpc(_)
                | ConnectionError::Cid(_)
                | ConnectionError::Quic(_)
        )
    }
}
