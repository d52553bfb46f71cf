//! ringway's dataplane: everything that touches packets.
//!
//! # Layout
//!
//! Built (issue 3, the QUIC transport):
//!
//! - `runtime`: the thread-per-core worker pool: one monoio runtime per worker thread, pinned
//!   with core_affinity, on io_uring with the legacy (epoll) driver as a detected, logged
//!   fallback; bounded crossbeam inboxes with an eventfd wake-up between workers, no shared
//!   lock.
//! - `udp`: UDP with control messages (GSO, GRO with stride, ECN, IP_PKTINFO, don't-fragment,
//!   forced socket buffers), with two measured backends: readiness + quinn-udp (default) and
//!   our own io_uring ring (`RecvMsg`/`SendMsg`, multishot receive). Numbers in its docs.
//! - `quic`: quinn-proto, sans-IO (`Driver`, one per worker), CIDs that encode and
//!   authenticate the owning worker, TLS (rustls on aws-lc-rs, X25519MLKEM768 first), a
//!   virtual-clock test harness, and `endpoint`: the async I/O task and
//!   `Connection`/`SendStream`/`RecvStream` handles passing `Bytes` by ownership.
//!
//! Built for issue 4 so far (sans-IO, no runtime imports):
//!
//! - `wire`: cloudflared's argotunnel protocol: data-stream preambles and `ConnectRequest` /
//!   `ConnectResponse` (Cap'n Proto, generated code committed, `scripts/regen-capnp.sh`
//!   regenerates it from `schema/`), metadata keys, and the `RegistrationServer` /
//!   `updateConfiguration` RPC on capnp-rpc.
//! - `http`: the edge's HTTP/1.1 codec: request heads with the anti-smuggling rules, chunked
//!   and length bodies without copies, response heads and the edge's error answers.
//!
//! Planned (issue 4):
//!
//! - HTTP/2 for the public listener (h2).
//! - `edge` / `connector`: the request path on each side; they share `wire` and `quic` and never
//!   import each other.
//!
//! Rules: `control` depends on this crate, never the reverse. `wire` and `http` do no I/O. No
//! tokio and no lock shared between workers on the data path.

pub mod buf;
pub mod connector;
pub mod edge;
pub mod http;
pub mod metrics;
pub mod quic;
pub mod runtime;
pub mod tls;
pub mod udp;
pub mod wire;
