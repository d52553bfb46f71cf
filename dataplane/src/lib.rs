//! ringway's dataplane: everything that touches packets, for the edge and the connector.
//!
//! # Layout
//!
//! - `runtime`: the thread-per-core worker pool: one monoio runtime per pinned worker thread, on
//!   io_uring with the legacy (epoll) driver as a detected, logged fallback; bounded mailboxes
//!   with an eventfd wake-up between workers, no shared lock.
//! - `udp`: UDP with control messages (GSO, GRO with stride, ECN, IP_PKTINFO, don't-fragment,
//!   forced socket buffers), with two measured backends: readiness + quinn-udp (default) and an
//!   own io_uring ring (`RecvMsg`/`SendMsg`, multishot receive). Numbers in its docs.
//! - `quic`: quinn-proto, sans-IO (`Driver`, one per worker), CIDs that encode and authenticate
//!   the owning worker, QUIC TLS and certificates, and `endpoint`: the async I/O task and
//!   `Connection`/`SendStream`/`RecvStream` handles passing `Bytes` by ownership. Its
//!   virtual-clock test harness is compiled for tests only.
//! - `tls`: the one rustls crypto provider (aws-lc-rs, X25519MLKEM768 first), certificate
//!   parsing and client trust, shared by the edge, the connector's origin client and loadgen.
//! - `wire`: cloudflared's argotunnel protocol: data-stream preambles, `ConnectRequest` /
//!   `ConnectResponse` (Cap'n Proto, generated code committed, `scripts/regen-capnp.sh`
//!   regenerates it from `schema/`), metadata keys, and the `RegistrationServer` /
//!   `updateConfiguration` RPC on capnp-rpc; and the HTTP/2 transport's fields and encodings.
//! - `h2stream`: HTTP/2 streams (the `h2` crate) under flow control, and `AsyncRead` /
//!   `AsyncWrite` over them, for the `http2Origin` client and the HTTP/2 tunnel transport.
//! - `pollio`: tokio's I/O traits over monoio sockets (poll-io mode), which `h2` and
//!   tokio-rustls run on.
//! - `http`: the one HTTP/1.1 codec, both directions: request and response heads, body framing
//!   (Content-Length, chunked, close-delimited, none), reason phrases, and the authority helper.
//! - `edge`: the edge's request path: registration, the route table, the public listener and
//!   proxying over tunnel streams.
//! - `connector`: the connector's side: HA connections, data streams and the origin client.
//! - `metrics`: per-worker counters; `buf`: owned buffers; `latch`: a value one task sets and
//!   others await on the same thread.
//!
//! Rules: `control` depends on this crate, never the reverse. `wire` and `http` do no I/O.
//! `edge` and `connector` share `wire`, `quic`, `http` and `tls` and never import each other.
//! No tokio and no lock shared between workers on the data path.

pub mod buf;
pub mod connector;
pub mod edge;
pub mod h2stream;
pub mod http;
mod latch;
pub mod metrics;
pub mod pollio;
pub mod quic;
pub mod runtime;
pub mod tls;
pub mod udp;
pub mod wire;
