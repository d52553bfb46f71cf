//! ringway's dataplane: everything that touches packets.
//!
//! # Layout
//!
//! This crate is filled by the QUIC and edge/connector issues. Its planned modules:
//!
//! - `runtime`: the thread-per-core worker pool (one pinned monoio runtime per core, io_uring
//!   with the legacy driver as fallback).
//! - `udp`: UDP send/receive with control messages (GSO, GRO, ECN, IP_PKTINFO).
//! - `quic`: the quinn-proto driver: endpoint per worker, connection-ID routing, streams that
//!   pass `bytes::Bytes` by ownership.
//! - `wire`: cloudflared's argotunnel protocol, sans-IO: preambles, `ConnectRequest` /
//!   `ConnectResponse`, the registration RPC.
//! - `http`: HTTP/1.1 (httparse) and HTTP/2 (h2) codecs, sans-IO.
//! - `edge` / `connector`: the request path on each side; they share `wire` and `quic` and never
//!   import each other.
//! - `buf`: owned buffers for in-flight io_uring operations.
//!
//! Rule: `control` depends on this crate, never the reverse. `wire` and `http` do no I/O.

pub mod quic;
pub mod runtime;
pub mod udp;
