//! ringway's benchmarks.
//!
//! # Layout
//!
//! Filled by the loadgen/bench issue:
//!
//! - `benches/`: criterion micro-benchmarks of the hot pieces (wire encode/decode, HTTP head
//!   parse, ingress matching, routing lookup, QUIC per-packet cost).
//! - `src/bin/e2e.rs`: one command that starts origin, control plane, edge, connector and peer
//!   tunnels on loopback and measures every path against a baseline from the same run.
//! - `results/`: committed results, one folder per run date.
