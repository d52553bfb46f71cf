//! `loadgen`: an HTTP/1.1 and HTTP/2 load generator.
//!
//! # Layout
//!
//! Filled by the loadgen issue. Planned modules:
//!
//! - `schedule`: closed-loop and fixed-rate (open-loop) request schedules; latency is taken from
//!   each request's intended send time (coordinated-omission correction).
//! - `h1` / `h2`: connection drivers on `dataplane`'s runtime and HTTP codec.
//! - `report`: HdrHistogram percentiles, throughput, error breakdown, `--json` and `--hgrm`.
//!
//! It may reuse `dataplane`, never `control`.

fn main() {
    eprintln!("loadgen: not built yet; see issue 6");
    std::process::exit(2);
}
