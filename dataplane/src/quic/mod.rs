//! The sans-IO QUIC core: quinn-proto endpoints and connections driven by the worker
//! runtime, with no sockets and no clock inside.
//!
//! # Layout
//!
//! - [`config`]: [`QuicConfig`], cloudflared-compatible defaults (ALPN `argotunnel`,
//!   idle timeout 5 s, keep-alive 1 s, 6 MiB stream windows, datagrams on), and
//!   the builders of quinn-proto's `TransportConfig`, `EndpointConfig`, `ServerConfig` and
//!   `ClientConfig`.
//! - [`tls`]: rustls on aws-lc-rs with X25519MLKEM768, X25519 and P-256; CA and edge
//!   certificate generation with rcgen.
//! - [`cid`]: [`WorkerCidGenerator`], connection IDs that name (and authenticate) the
//!   owning worker, and `owner()` to route a datagram by its destination CID.
//! - [`driver`]: [`Driver`], one per worker: an endpoint and the connections it owns;
//!   stream, datagram and connection operations with `Bytes` in and out.
//! - [`endpoint`]: the async face of a [`Driver`] on a monoio worker: the I/O task
//!   (socket, timers, cross-worker forwarding) and `Connection` / `SendStream` /
//!   `RecvStream` handles that pass `Bytes` by ownership.
//! - [`stream_io`]: `futures` `AsyncRead`/`AsyncWrite` over a stream, for capnp-rpc.
//! - `harness` (tests only): an in-memory network with a virtual clock and fault
//!   injection, for deterministic tests of drivers.
//!
//! # The call order quinn-proto requires
//!
//! quinn-proto's `Connection` has four kinds of methods: getters, inputs (`handle_*`),
//! application commands (stream reads/writes, `close`, ...) and outputs (`poll_*`). After
//! any input or command the outputs must be drained, in this order: `poll_transmit`
//! (until `None`), `poll_timeout`, `poll_endpoint_events` (each fed to
//! `Endpoint::handle_event`, whose answer goes back to `Connection::handle_event`), then
//! `poll` (application events). `poll_timeout` is only meaningful after `poll_transmit`,
//! because sending arms the loss-detection and pacing timers. Every `Incoming` returned by
//! `Endpoint::handle` must be passed to `accept`, `refuse`, `retry` or `ignore`; dropping
//! it leaks endpoint state. A connection's `Drained` endpoint event must reach the
//! endpoint exactly once, after which the connection is gone. Time (`now`) must never go
//! backwards.
//!
//! [`Driver`] does the connection ↔ endpoint plumbing itself; its callers follow the
//! shorter order in [`Driver`]'s docs: inputs, then `poll_transmit` until `None`, then
//! `poll_timeout`, then `poll_event` until `None`.

pub mod cid;
pub mod config;
pub mod driver;
pub mod endpoint;
#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
pub(crate) mod harness;
pub mod stream_io;
pub mod tls;

pub use cid::{CID_LEN, CidError, CidKey, WorkerCidGenerator};
pub use config::{
    ALPN_ARGOTUNNEL, ConfigError, DEFAULT_SERVER_NAME, QuicConfig, RetryMode, SILENT_PEER,
};
pub use driver::{
    ConnId, ConnectError, DatagramError, Driver, DriverEvent, DriverStats, HandshakeInfo,
    ReadError, StreamError, WriteError,
};
pub use quinn_proto::{ConnectionError, Dir, EcnCodepoint, StreamId, Transmit, VarInt, Written};
pub use tls::{CertificateAuthority, TlsError, TlsMaterial};
