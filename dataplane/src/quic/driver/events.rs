//! What a [`Driver`](super::Driver) hands out: connection ids, events, statistics and errors.

use std::fmt;

use bytes::Bytes;
use quinn_proto::{ConnectionError, Dir, StreamId, VarInt};

/// A connection owned by a [`Driver`]. Stays unique for the driver's lifetime, even after
/// quinn reuses the underlying slot for a new connection, so a stale id never reaches
/// another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(super) index: usize,
    pub(super) serial: u64,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.serial)
    }
}

/// What happened on a [`Driver`]'s connections; read them with [`Driver::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    /// The handshake completed.
    Connected(ConnId),
    /// The connection failed before its handshake completed (bad certificate, ALPN
    /// mismatch, refused, timed out, ...). `ConnectionDrained` follows.
    HandshakeFailed(ConnId, ConnectionError),
    /// An established connection ended (closed by either side, timed out, reset).
    /// `ConnectionDrained` follows.
    ConnectionLost(ConnId, ConnectionError),
    /// The peer opened a stream. The driver has already accepted it: read and write it.
    IncomingStream(ConnId, StreamId),
    /// More streams of this direction may be opened (after `open_bi` returned `None`).
    StreamsAvailable(ConnId, Dir),
    /// A stream has data, a FIN, or a reset to read.
    StreamReadable(ConnId, StreamId),
    /// A stream that was blocked on flow control may accept writes again.
    StreamWritable(ConnId, StreamId),
    /// The peer acknowledged everything we sent on the stream, FIN included.
    StreamFinished(ConnId, StreamId),
    /// The peer sent STOP_SENDING with this code; writes now fail.
    StreamStopped(ConnId, StreamId, VarInt),
    /// An unreliable datagram arrived.
    DatagramReceived(ConnId, Bytes),
    /// Datagrams blocked on buffer space may be sent again.
    DatagramsUnblocked(ConnId),
    /// The connection's state is freed; its id is dead. Always the last event of a
    /// connection.
    ConnectionDrained(ConnId),
}

/// The TLS facts of an established connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The SNI the client sent (server side only), e.g. `probe.cftunnel.com` for
    /// cloudflared's pre-flight probes.
    pub server_name: Option<String>,
}

/// How every incoming connection attempt ended. `incoming` always equals the sum of the
/// others: quinn's `Incoming` must be accepted, refused, retried or ignored, never
/// dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Incoming connection attempts seen.
    pub incoming: u64,
    /// Accepted and handshaking.
    pub accepted: u64,
    /// Accepted, but quinn failed them at once (stale, undecryptable, ...).
    pub accept_failed: u64,
    /// Refused with CONNECTION_REFUSED (over `max_connections` or `max_handshakes`, or not
    /// accepting).
    pub refused: u64,
    /// Of `refused`: those refused because `max_handshakes` connections were half-open.
    pub refused_handshakes: u64,
    /// Answered with a Retry.
    pub retried: u64,
    /// Ignored without an answer (the endpoint send queue was full).
    pub ignored: u64,
    /// Endpoint-level datagrams dropped because their queue was full.
    pub endpoint_transmits_dropped: u64,
    /// Incoming connections closed because they were still handshaking after
    /// `handshake_timeout`.
    pub handshake_timeouts: u64,
}

/// Errors from [`Driver::connect`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The driver was built without a client configuration.
    #[error("this driver has no client configuration")]
    NoClientConfig,
    /// The driver holds `max_connections` already.
    #[error("connection limit reached")]
    TooManyConnections,
    /// quinn-proto refused (bad address, bad server name, ...).
    #[error(transparent)]
    Quinn(#[from] quinn_proto::ConnectError),
}

/// Errors writing to a stream.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// No such connection (drained, or never existed).
    #[error("unknown connection")]
    UnknownConnection,
    /// Flow control or the send window is full; retry on `StreamWritable`.
    #[error("stream blocked by flow control")]
    Blocked,
    /// The peer sent STOP_SENDING with this code.
    #[error("stopped by peer: code {0}")]
    Stopped(VarInt),
    /// The stream was finished or reset, or does not exist.
    #[error("closed stream")]
    ClosedStream,
    /// A receive-only stream (a peer's unidirectional stream).
    #[error("stream cannot be written by this side")]
    NotWritable,
}

/// Errors reading from a stream.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// No such connection (drained, or never existed).
    #[error("unknown connection")]
    UnknownConnection,
    /// No data right now; retry on `StreamReadable`.
    #[error("no data available yet")]
    Blocked,
    /// The peer reset the stream with this code (reported once; the stream is then gone).
    #[error("reset by peer: code {0}")]
    Reset(VarInt),
    /// The stream was finished, reset or stopped already, or does not exist.
    #[error("closed stream")]
    ClosedStream,
    /// A send-only stream (our unidirectional stream).
    #[error("stream cannot be read by this side")]
    NotReadable,
}

/// Errors from `finish`, `reset` and `stop`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// No such connection (drained, or never existed).
    #[error("unknown connection")]
    UnknownConnection,
    /// The stream was finished, reset or stopped already, or does not exist.
    #[error("closed stream")]
    ClosedStream,
    /// The peer sent STOP_SENDING with this code (from `finish`).
    #[error("stopped by peer: code {0}")]
    Stopped(VarInt),
    /// The operation needs the other direction (e.g. `stop` on our unidirectional stream).
    #[error("wrong stream direction for this operation")]
    WrongDirection,
}

/// Errors sending a datagram.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DatagramError {
    /// No such connection (drained, or never existed).
    #[error("unknown connection")]
    UnknownConnection,
    /// Datagrams are disabled in our [`QuicConfig`].
    #[error("datagrams are disabled locally")]
    Disabled,
    /// The peer did not enable datagrams.
    #[error("peer does not accept datagrams")]
    UnsupportedByPeer,
    /// Larger than `max_datagram_size`.
    #[error("datagram too large")]
    TooLarge,
}
