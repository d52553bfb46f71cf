//! Criterion micro-benchmarks of the per-request and per-packet hot paths.
//!
//! Groups:
//!
//! - `wire`: argotunnel `ConnectRequest` / `ConnectResponse` encode and decode
//!   (`dataplane::wire::stream`), plus the edge's and connector's metadata steps around them.
//! - `http1`: request-head parsing and response-head serialisation (`dataplane::http`).
//! - `ingress`: the connector's ingress matching (`control::config::Ingress::find` and the
//!   `SwappableIngress` router the data path calls), 1 and 1,000 hostname rules.
//! - `edge_routes`: the edge's host → tunnel lookup (`dataplane::edge::RouteTable`), 1 and
//!   10,000 DNS routes, and a load-balancer host with steering.
//! - `quic_driver`: 1 MiB of stream data from a client `Driver` to a server `Driver` over an
//!   in-memory network with a virtual clock: the whole per-packet cost (quinn-proto framing,
//!   AEAD, ACKs, the driver's plumbing), and the sender's and receiver's shares of it.
//!
//! Run: `cargo bench -p bench --bench hot_paths` (a few minutes on 2 cores). Under
//! `cargo test --benches` every benchmark runs once as a smoke test.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "hot_paths/http.rs"]
mod http;
#[path = "hot_paths/ingress.rs"]
mod ingress;
#[path = "hot_paths/quic.rs"]
mod quic;
#[path = "hot_paths/routes.rs"]
mod routes;
#[path = "hot_paths/wire.rs"]
mod wire;

/// Short runs: these are nanosecond-to-millisecond routines, 30 samples over 2 s is plenty
/// for a stable median on a shared VM.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = wire::bench, http::bench, ingress::bench, routes::bench, quic::bench
}
criterion_main!(hot_paths);
