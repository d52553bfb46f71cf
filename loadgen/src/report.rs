//! The result in three forms: the text summary on stdout, `--json` (schema `loadgen.v1`,
//! documented in loadgen/README.md; fields are only ever added), and `--hgrm` (HdrHistogram's
//! percentile-distribution text).

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::stats::{ErrorKind, Totals};

pub const SCHEMA: &str = "loadgen.v1";

/// What the run was asked to do, echoed into the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigEcho {
    pub urls: Vec<String>,
    pub method: String,
    pub connections: usize,
    pub threads: usize,
    pub h2: bool,
    pub streams: usize,
    /// "closed" or "open".
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub body_bytes: usize,
    pub conn_per_request: bool,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyUs {
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub parse: u64,
    pub total: u64,
}

/// The `loadgen.v1` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub config: ConfigEcho,
    pub elapsed_s: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub rx_mb_per_s: f64,
    pub tx_mb_per_s: f64,
    pub latency_us: LatencyUs,
    pub status: BTreeMap<String, u64>,
    pub errors: Errors,
}

impl Report {
    pub fn new(config: ConfigEcho, totals: &Totals, elapsed_s: f64) -> Self {
        let h = &totals.latency_us;
        let empty = h.is_empty();
        let q = |p: f64| if empty { 0 } else { h.value_at_quantile(p) };
        let per_s = |n: f64| if elapsed_s > 0.0 { n / elapsed_s } else { 0.0 };
        Self {
            schema: SCHEMA,
            config,
            elapsed_s,
            requests: totals.responses(),
            requests_per_s: per_s(totals.responses() as f64),
            bytes_received: totals.bytes_rx,
            bytes_sent: totals.bytes_tx,
            rx_mb_per_s: per_s(totals.bytes_rx as f64) / 1e6,
            tx_mb_per_s: per_s(totals.bytes_tx as f64) / 1e6,
            latency_us: LatencyUs {
                min: if empty { 0 } else { h.min() },
                mean: if empty { 0.0 } else { h.mean() },
                stdev: if empty { 0.0 } else { h.stdev() },
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p99_9: q(0.999),
                p99_99: q(0.9999),
                max: if empty { 0 } else { h.max() },
            },
            status: totals
                .status
                .iter()
                .map(|(code, n)| (code.to_string(), *n))
                .collect(),
            errors: Errors {
                connect: totals.error_count(ErrorKind::Connect),
                timeout: totals.error_count(ErrorKind::Timeout),
                reset: totals.error_count(ErrorKind::Reset),
                parse: totals.error_count(ErrorKind::Parse),
                total: totals.errors_total(),
            },
        }
    }

    /// The human summary.
    pub fn text(&self, totals: &Totals, driver: &str) -> String {
        let c = &self.config;
        let mut out = String::new();
        let load = match c.rate {
            Some(r) => format!("open loop at {r} req/s (latency from the intended send time)"),
            None => "closed loop".to_owned(),
        };
        let proto = if c.h2 {
            format!("HTTP/2, {} streams per connection", c.streams)
        } else {
            "HTTP/1.1".to_owned()
        };
        let _ = writeln!(
            out,
            "{} {} — {} connections on {} threads ({driver}), {proto}, {load}",
            c.method,
            c.urls.join(" "),
            c.connections,
            c.threads
        );
        let _ = writeln!(
            out,
            "  {} responses in {:.2} s (after {:.1} s warm-up): {:.1} req/s, {:.2} MB/s in, {:.2} MB/s out",
            self.requests,
            self.elapsed_s,
            c.warmup_s,
            self.requests_per_s,
            self.rx_mb_per_s,
            self.tx_mb_per_s
        );
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "  latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  (mean {:.1}, stdev {:.1})",
            l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max, l.mean, l.stdev
        );
        let statuses: Vec<String> = self
            .status
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  status: {}",
            if statuses.is_empty() {
                "none".to_owned()
            } else {
                statuses.join(", ")
            }
        );
        let e = &self.errors;
        let _ = writeln!(
            out,
            "  errors: {} (connect {}, timeout {}, reset {}, parse {})",
            e.total, e.connect, e.timeout, e.reset, e.parse
        );
        for kind in ErrorKind::ALL {
            if let Some(why) = &totals.first_error[kind as usize] {
                let _ = writeln!(out, "    first {} error: {why}", kind.name());
            }
        }
        out
    }
}

/// The full percentile spectrum in HdrHistogram's `.hgrm` text form (values in µs).
pub fn hgrm(totals: &Totals) -> String {
    let h = &totals.latency_us;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for v in h.iter_quantiles(1) {
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 {
                format!("{:14.2}", 1.0 / (1.0 - q))
            } else {
                format!("{:>14}", "")
            };
            let _ = writeln!(
                out,
                "{:12.3} {:14.12} {:10} {inv}",
                h.highest_equivalent(v.value_iterated_to()) as f64,
                q,
                count_below(h, v.value_iterated_to()),
            );
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        if h.is_empty() { 0.0 } else { h.mean() },
        if h.is_empty() { 0.0 } else { h.stdev() }
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

fn count_below(h: &hdrhistogram::Histogram<u64>, value: u64) -> u64 {
    h.count_between(0, value)
}
