//! ringway's benchmarks.
//!
//! # Layout
//!
//! - `src/bin/quic_bulk.rs`: bulk QUIC throughput, ours (monoio + io_uring endpoint over
//!   quinn-proto) against `quinn` on tokio, in one process run; prints the ratios.
//! - `benches/` (issue 6): criterion micro-benchmarks of the hot pieces.
//! - `src/bin/e2e.rs`: the end-to-end bench on loopback: nginx direct vs. through ringway
//!   vs. through rathole, driven by `loadgen`; `src/bin/loadgen_vs_wrk.rs`: loadgen against
//!   wrk on the same nginx.
//! - `src/e2e/`: their machinery (processes, origin, tunnels, `/proc` sampling, reports).
//! - `results/`: committed results, one folder per run date.

pub mod e2e;
