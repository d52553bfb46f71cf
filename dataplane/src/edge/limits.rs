//! Timeouts and caps of the public HTTP listener, and the flow-control sizing that keeps one
//! stalled stream from starving the others on a tunnel connection.
//!
//! Every limit here has a `ringway edge run` flag (see `docs/`); the defaults suit an edge that
//! faces the internet.
//!
//! # Why the connection window is sized from the stream cap
//!
//! quinn-proto buffers a stream's unread bytes up to the stream window, and those bytes also
//! hold connection-level credit until the application reads them. With a 30 MiB connection
//! window and 6 MiB stream windows, five public clients that do not read their downloads
//! used the whole connection window and every other request on that tunnel connection waited.
//! The edge stops reading a stream whose client does not read (that is what bounds memory), so
//! the connection window must be large enough that it is never the binding limit: the stream
//! window times the most streams that can be open on the connection at once. Memory stays
//! bounded by the same product, which the stream caps below control.

use std::time::{Duration, Instant};

use crate::quic::QuicConfig;

/// Streams a connector may open towards the edge. It opens only the control stream; the rest
/// is slack for peers that open a few more. Every edge-side stream is opened by the edge.
pub const CONNECTOR_OPENED_STREAMS: u64 = 16;

/// Descriptors kept free for everything that is not a public client (sockets, files, pipes).
const RESERVED_FDS: u64 = 1024;

/// Timeouts and caps of the public HTTP listener. `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicLimits {
    /// A request head must be complete this long after its first byte (or after accept, for
    /// the first request): slowloris defence. Expiry answers 408 and closes.
    pub head_timeout: Duration,
    /// An idle keep-alive connection (no byte of a next request) is closed after this.
    pub keep_alive_timeout: Duration,
    /// No progress reading the request body from the client, or writing the response to the
    /// client, for this long: the client is closed and the tunnel stream reset (the connector
    /// then drops its origin connection).
    pub body_idle_timeout: Duration,
    /// Total time for one non-upgraded request, head to last byte; `None`: unlimited.
    pub request_timeout: Option<Duration>,
    /// Public client connections one worker serves at once; past it, new connections get a
    /// 503 with `Retry-After` and are closed. Lowered at start so that every worker's cap fits
    /// the descriptor limit.
    pub max_connections_per_worker: usize,
    /// Requests in flight per tunnel (across its connections and replicas); past it the edge
    /// answers 503 with `Retry-After` instead of queueing.
    pub max_tunnel_streams: usize,
    /// The `Retry-After` of those 503s.
    pub retry_after: Duration,
}

impl Default for PublicLimits {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(30),
            request_timeout: None,
            max_connections_per_worker: 16_384,
            max_tunnel_streams: 1024,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// A limit that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl PublicLimits {
    pub fn validate(&self) -> Result<(), LimitsError> {
        let zero = [
            ("the head timeout", self.head_timeout.is_zero()),
            ("the keep-alive timeout", self.keep_alive_timeout.is_zero()),
            ("the body idle timeout", self.body_idle_timeout.is_zero()),
            (
                "the request timeout",
                self.request_timeout.is_some_and(|d| d.is_zero()),
            ),
            (
                "the client connection cap",
                self.max_connections_per_worker == 0,
            ),
            ("the per-tunnel stream cap", self.max_tunnel_streams == 0),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((what, _)) => Err(LimitsError::Zero(what)),
            None => Ok(()),
        }
    }

    /// `Retry-After` in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u32 {
        self.retry_after.as_secs().clamp(1, u32::MAX as u64) as u32
    }

    /// The QUIC configuration for the edge's tunnel connections: `base` with the connection
    /// receive window sized so that it never binds before the stream windows do (see the
    /// module docs), and connector-opened streams limited to [`CONNECTOR_OPENED_STREAMS`].
    ///
    /// Memory a tunnel connection can hold in unread bytes is then at most
    /// `stream_receive_window × (max_tunnel_streams + CONNECTOR_OPENED_STREAMS)`.
    pub fn edge_quic_config(&self, base: QuicConfig) -> QuicConfig {
        let streams = self.max_tunnel_streams as u64 + CONNECTOR_OPENED_STREAMS;
        QuicConfig {
            receive_window: base.stream_receive_window.saturating_mul(streams),
            max_concurrent_bidi_streams: CONNECTOR_OPENED_STREAMS,
            ..base
        }
    }

    /// Fits the per-worker client cap into the descriptor limit (after raising the soft limit
    /// to the hard one). Returns the cap to use and, when it had to be lowered, the limit that
    /// forced it.
    pub fn fit_connections_to_fd_limit(&self, workers: usize) -> (usize, Option<u64>) {
        let nofile = raise_nofile_limit();
        let usable = nofile.saturating_sub(RESERVED_FDS).max(workers as u64);
        let per_worker = (usable / workers.max(1) as u64) as usize;
        if per_worker < self.max_connections_per_worker {
            (per_worker.max(1), Some(nofile))
        } else {
            (self.max_connections_per_worker, None)
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// The deadlines of one request: each client-facing step gets the body idle timeout, and no
/// step runs past the request's total deadline (when one is set).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestClock {
    idle: Duration,
    deadline: Option<Instant>,
}

/// A step did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

impl RequestClock {
    pub(crate) fn start(limits: &PublicLimits) -> Self {
        Self {
            idle: limits.body_idle_timeout,
            deadline: limits.request_timeout.map(|t| Instant::now() + t),
        }
    }

    /// The body idle timeout.
    pub(crate) fn idle(&self) -> Duration {
        self.idle
    }

    /// Runs a step that waits on the client (reading its body, writing to it): bounded by the
    /// idle timeout and the total deadline.
    pub(crate) async fn client<F: Future>(&self, f: F) -> Result<F::Output, TimedOut> {
        let limit = match self.deadline {
            Some(d) => self.idle.min(d.saturating_duration_since(Instant::now())),
            None => self.idle,
        };
        monoio::time::timeout(limit, f).await.map_err(|_| TimedOut)
    }

    /// Runs a step that waits on the tunnel or the origin: bounded by the total deadline only
    /// (a slow origin is not the client's fault).
    pub(crate) async fn tunnel<F: Future>(&self, f: F) -> Result<F::Output, TimedOut> {
        match self.deadline {
            Some(d) => monoio::time::timeout_at(d.into(), f)
                .await
                .map_err(|_| TimedOut),
            None => Ok(f.await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_limits_defaults_are_valid_and_zero_is_refused() {
        let l = PublicLimits::default();
        l.validate().unwrap();
        assert_eq!(l.retry_after_secs(), 1);
        let bad = PublicLimits {
            head_timeout: Duration::ZERO,
            ..l
        };
        assert_eq!(bad.validate(), Err(LimitsError::Zero("the head timeout")));
        let bad = PublicLimits {
            max_tunnel_streams: 0,
            ..l
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("stream cap")
        );
    }

    #[test]
    fn edge_limits_connection_window_never_binds_before_stream_windows() {
        let l = PublicLimits::default();
        let q = l.edge_quic_config(QuicConfig::default());
        let most_streams = l.max_tunnel_streams as u64 + q.max_concurrent_bidi_streams;
        assert!(q.receive_window >= q.stream_receive_window * most_streams);
        q.validate().unwrap();
    }

    #[test]
    fn edge_limits_client_cap_fits_the_descriptor_limit() {
        let l = PublicLimits {
            max_connections_per_worker: usize::MAX / 2,
            ..PublicLimits::default()
        };
        let (cap, lowered) = l.fit_connections_to_fd_limit(4);
        let nofile = raise_nofile_limit();
        assert!(lowered.is_some());
        assert!((cap as u64) * 4 + RESERVED_FDS <= nofile.max(RESERVED_FDS + 4));
    }
}
