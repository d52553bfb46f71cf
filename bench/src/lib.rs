//! ringway's benchmarks. Every figure is a ratio against a baseline started by the same run.
//!
//! # Layout
//!
//! - `src/bin/e2e.rs`: the end-to-end bench on loopback: the origin direct vs. through ringway
//!   vs. through rathole, every scenario driven by `loadgen`, in one run.
//! - `src/bin/loadgen_vs_wrk.rs`: loadgen against wrk on the same nginx.
//! - `src/bin/quic_bulk.rs`, `src/bin/quic_scale.rs`: bulk QUIC throughput and thread-per-core
//!   scaling, ringway's endpoint (monoio + quinn-proto) against `quinn` on tokio.
//! - `benches/hot_paths`: criterion micro-benchmarks of the hot pieces (wire messages, HTTP
//!   heads, ingress matching, route lookup, the QUIC driver).
//! - `src/quic.rs`: the loopback endpoint the QUIC benches start; `src/results.rs`: the
//!   dated folder results go to.
//! - `src/e2e/`: the benches' machinery (processes, origin, tunnels, `/proc` sampling, reports,
//!   chart).
//! - `results/`: committed results, one folder per run date.

pub mod e2e;
pub mod quic;
pub mod results;
