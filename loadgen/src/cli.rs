//! The command line (clap derive) and its validation into a [`Plan`].

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use clap::Parser;

use crate::{
    lane::Load,
    report::ConfigEcho,
    run::{Plan, Stop},
    target::{RequestSpec, Scheme, Target},
    transport::{Dialer, TlsDialer, server_name, tls_config},
};

/// HTTP load generator: thread-per-core on io_uring, closed or open loop, latency corrected
/// for coordinated omission.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version, about)]
pub struct Args {
    /// Target URLs (http:// or https://), used round-robin; they must share scheme, host and
    /// port.
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// Connections in total.
    #[arg(short = 'c', long, default_value_t = 32)]
    pub connections: usize,
    /// Worker threads, each pinned to a core (default: every core this process may use).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Measured time, e.g. 10s, 500ms, 1m.
    #[arg(short = 'd', long, value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests instead of a duration.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Time before the measured window (not counted).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Open loop: this many requests per second in total, on a fixed schedule; latency is
    /// measured from each request's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Extra request header 'Name: value' (repeatable; a Host header replaces the URL's).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request body from this file.
    #[arg(long, conflicts_with = "body_size")]
    pub body: Option<PathBuf>,
    /// Request body of this many bytes.
    #[arg(long)]
    pub body_size: Option<usize>,
    /// Per request, connect included.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// A new connection for every request (sends Connection: close).
    #[arg(long)]
    pub conn_per_request: bool,
    /// HTTP/2: prior-knowledge h2c for http://, ALPN h2 for https://.
    #[arg(long)]
    pub h2: bool,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = 1, requires = "h2")]
    pub streams: usize,
    /// Leave worker threads unpinned (the default pins thread i to core i). On a machine the
    /// server shares, a pinned thread cannot move off a core the server is busy on.
    #[arg(long)]
    pub no_pin: bool,
    /// Use monoio's epoll driver instead of io_uring.
    #[arg(long)]
    pub epoll: bool,
    /// Do not verify the server's TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Trust this CA certificate (PEM) for https://.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Write the result as JSON (schema loadgen.v1, see loadgen/README.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the full latency percentile spectrum (HdrHistogram .hgrm text).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
}

/// A duration on the command line that does not parse (clap prints it after the flag name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration (examples: 10s, 500ms, 1m)")]
    NotANumber(String),
    #[error("{text:?}: unknown unit {unit:?} (use us, ms, s, m or h)")]
    UnknownUnit { text: String, unit: String },
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// `10s`, `500ms`, `250us`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_owned()))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: s.to_owned(),
                unit: unit.to_owned(),
            });
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(DurationError::OutOfRange(s.to_owned()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A command line that parsed but makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
    #[error(transparent)]
    Tls(#[from] crate::transport::TlsSetupError),
    #[error("cannot read --body {path}: {reason}")]
    Body { path: String, reason: String },
}

impl Args {
    /// Checks the values together and resolves the target.
    pub fn plan(&self) -> Result<(Plan, ConfigEcho), ArgsError> {
        let invalid = |m: &str| Err(ArgsError::Invalid(m.to_owned()));
        if self.connections == 0 {
            return invalid("-c/--connections must be at least 1");
        }
        if self.threads == Some(0) {
            return invalid("-t/--threads must be at least 1");
        }
        if self.streams == 0 {
            return invalid("--streams must be at least 1");
        }
        if self.requests == Some(0) {
            return invalid("-n/--requests must be at least 1");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return invalid("--rate must be a positive number of requests per second");
        }
        if self.timeout.is_zero() {
            return invalid("--timeout must be more than 0");
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return invalid("-d/--duration must be more than 0");
        }
        if self.h2 && self.conn_per_request {
            return invalid("--conn-per-request is for HTTP/1.1; drop --h2");
        }
        let body = match (&self.body, self.body_size) {
            (Some(path), _) => Bytes::from(std::fs::read(path).map_err(|e| ArgsError::Body {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?),
            (None, Some(n)) => Bytes::from(vec![b'x'; n]),
            (None, None) => Bytes::new(),
        };
        let target = Target::new(&RequestSpec {
            urls: self.urls.clone(),
            method: self.method.clone(),
            headers: self.headers.clone(),
            body: body.clone(),
            close: self.conn_per_request,
        })?;
        let tls = match target.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let alpn: &[&[u8]] = if self.h2 { &[b"h2"] } else { &[b"http/1.1"] };
                Some(TlsDialer {
                    config: tls_config(self.cacert.as_deref(), self.insecure, alpn)?,
                    server_name: server_name(&target.host)?,
                })
            }
        };
        let threads = self.threads.unwrap_or_else(|| {
            core_affinity::get_core_ids()
                .map(|c| c.len())
                .filter(|n| *n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        });
        let threads = threads.min(self.connections);
        let stop = match (self.requests, self.duration) {
            (Some(n), _) => Stop::Requests(n),
            (None, Some(d)) => Stop::After(d),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        let load = match self.rate {
            Some(rate) => Load::Open { rate },
            None => Load::Closed,
        };
        let echo = ConfigEcho {
            urls: self.urls.clone(),
            method: self.method.clone(),
            connections: self.connections,
            threads,
            h2: self.h2,
            streams: if self.h2 { self.streams } else { 1 },
            mode: if self.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: self.rate,
            duration_s: match stop {
                Stop::After(d) => Some(d.as_secs_f64()),
                Stop::Requests(_) => None,
            },
            requests: self.requests,
            warmup_s: self.warmup.as_secs_f64(),
            body_bytes: body.len(),
            conn_per_request: self.conn_per_request,
            timeout_ms: self.timeout.as_millis() as u64,
        };
        let plan = Plan {
            dialer: Dialer {
                addr: target.addr,
                tls,
            },
            target,
            connections: self.connections,
            threads,
            load,
            stop,
            warmup: self.warmup,
            timeout: self.timeout,
            conn_per_request: self.conn_per_request,
            h2_streams: self.h2.then_some(self.streams),
            pin: !self.no_pin,
            epoll: self.epoll,
            progress: true,
        };
        Ok((plan, echo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(
            parse_duration("ten")
                .unwrap_err()
                .to_string()
                .contains("not a duration")
        );
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn nonsense_combinations_are_refused() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["loadgen", "http://127.0.0.1:9/"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap().plan().map(drop)
        };
        assert!(parse(&["-c", "0"]).is_err());
        assert!(parse(&["--rate=-5"]).is_err());
        assert!(parse(&["--h2", "--conn-per-request"]).is_err());
        assert!(
            parse(&["--body", "/no/such/file"])
                .unwrap_err()
                .to_string()
                .contains("/no/such/file")
        );
        assert!(parse(&["-c", "4"]).is_ok());
        assert!(Args::try_parse_from(["loadgen", "-d", "1s", "-n", "5", "http://x/"]).is_err());
    }
}
