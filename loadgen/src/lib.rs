//! `loadgen`: an HTTP/1.1 and HTTP/2 load generator that is never the bottleneck, with
//! latency corrected for coordinated omission. Usage and the `--json` schema: README.md.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap) and its validation into a [`run::Plan`].
//! - [`target`]: URLs, the resolved address, and each URL's request serialised once.
//! - [`transport`]: plain TCP (monoio, ownership-passing) and TLS (rustls, with the trust and
//!   provider of `dataplane::tls`) connections.
//! - [`clock`]: the one monotonic clock, and a timerfd timer precise to the microsecond
//!   (monoio's wheel ticks in milliseconds, which open-loop latency cannot afford).
//! - [`lane`]: one sequence of requests; when the next one is due (closed or open loop) and
//!   whether it counts (warm-up, window, `-n` tickets).
//! - [`h1`] / [`h2`]: the HTTP/1.1 and HTTP/2 lane drivers; HTTP/1.1 responses are read with
//!   `dataplane::http`, without allocating per response.
//! - [`watchdog`]: HTTP/1.1 request timeouts without a timer per request (one scan task
//!   per thread shuts down an expired lane's socket).
//! - [`stats`]: per-thread recorders (HdrHistogram in µs, status codes, error kinds), merged
//!   at the end.
//! - [`report`]: text summary, `--json` (`loadgen.v1`) and `--hgrm`.
//! - [`run`]: pinned worker threads (dataplane's monoio pool), the timeline, progress line.
//! - [`testserver`]: a small HTTP/1.1 + h2c origin with injectable stalls, garbage and
//!   early closes, for the tests and for the `loadgen-origin` binary the bench uses.
//!
//! It reuses `dataplane` (worker pool, HTTP/1.1 codec, TLS), never `control`.

pub mod cli;
pub mod clock;
pub mod h1;
pub mod h2;
pub mod lane;
pub mod report;
pub mod run;
pub mod stats;
pub mod target;
pub mod testserver;
pub mod transport;
pub mod watchdog;
