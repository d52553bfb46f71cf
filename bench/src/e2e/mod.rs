//! The end-to-end benches' machinery (used by `src/bin/e2e.rs` and `src/bin/loadgen_vs_wrk.rs`).
//!
//! - `procs`: child processes with logs in files, ready lines, a guard that stops them all
//!   (also on error and Ctrl-C), raw HTTP checks.
//! - `bins`: the release binaries (`ringway`, `loadgen`, `loadgen-origin`), built when missing.
//! - `nginx`: the origin (Debian nginx or loadgen's built-in one).
//! - `ringway`: control plane, tunnel + DNS route via the CLI, edge and connector (QUIC), and a
//!   second tunnel on the same edge whose connector runs the HTTP/2 transport.
//! - `rathole`: the peer tunnel, when installed.
//! - `scenarios`: the scenarios and one loadgen run with `/proc` sampling around it.
//! - `measure`: CPU seconds and peak RSS from `/proc`.
//! - `report`: ratios, `results.json`, `e2e.md`, the last line.
//! - `chart`: `latency.svg`.

pub mod bins;
pub mod chart;
pub mod measure;
pub mod nginx;
pub mod procs;
pub mod rathole;
pub mod report;
pub mod ringway;
pub mod scenarios;
