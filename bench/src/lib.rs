//! ringway's benchmarks.
//!
//! # Layout
//!
//! - `src/bin/quic_bulk.rs`: bulk QUIC throughput, ours (monoio + io_uring endpoint over
//!   quinn-proto) against `quinn` on tokio, in one process run; prints the ratios.
//! - `benches/` (issue 6): criterion micro-benchmarks of the hot pieces.
//! - `src/bin/e2e.rs` (issue 6): the end-to-end bench on loopback.
//! - `results/`: committed results, one folder per run date.
