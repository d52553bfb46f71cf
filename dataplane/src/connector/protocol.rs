//! Which transport a connection uses (`--protocol quic|http2|auto`), and when `auto` switches.
//!
//! `auto` is "QUIC, else HTTP/2", decided per connection from what this connection saw: there
//! is no TXT lookup (a self-hosted edge has no DNS to ask). A connection starts on QUIC; after
//! `fallback_after` ([`FALLBACK_AFTER`] unless set) QUIC attempts in a row that could not reach
//! the edge (no handshake within
//! [`QUIC_HANDSHAKE_LIMIT`], a socket or stream failure), it falls back to HTTP/2. While on
//! HTTP/2 the connection probes QUIC in the background ([`ProbeBackoff`]) and moves back once a
//! QUIC connection handshakes and registers. If HTTP/2 cannot connect either, as many times in a
//! row, it tries QUIC again. `quic` and `http2` never switch.

use std::time::{Duration, Instant};

use super::ConnectionError;

/// A transport to the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Quic,
    Http2,
}

impl Protocol {
    /// cloudflared's name (`protocol=` in its log lines).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Quic => "quic",
            Protocol::Http2 => "http2",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolChoice {
    /// QUIC, else HTTP/2 (per connection), and back to QUIC when it works again.
    #[default]
    Auto,
    /// Only this transport.
    Only(Protocol),
}

impl std::str::FromStr for ProtocolChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "quic" => Ok(Self::Only(Protocol::Quic)),
            "http2" => Ok(Self::Only(Protocol::Http2)),
            other => Err(format!(
                "invalid protocol {other:?}: expected auto, quic or http2"
            )),
        }
    }
}

/// Failed attempts in a row on one transport before `auto` tries the other, by default. Lower
/// than cloudflared's 9 (`--max-edge-addr-retries 8`): a blocked UDP path costs two handshake
/// limits, not nine, before requests flow over HTTP/2.
pub const FALLBACK_AFTER: u32 = 2;

/// In `auto`, a QUIC dial that has not completed its handshake by then counts as failed (UDP
/// blocked looks like silence, not like a refusal). Generous for a real path: a handshake takes
/// a round trip or two.
pub const QUIC_HANDSHAKE_LIMIT: Duration = Duration::from_secs(2);

/// Why a connection changes transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub to: Protocol,
    /// The last failure, rendered.
    pub reason: String,
    /// From the start of the first failed attempt in the row to the decision.
    pub after: Duration,
    /// Failed attempts in the row.
    pub attempts: u32,
}

/// One connection's transport choice.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    choice: ProtocolChoice,
    current: Protocol,
    /// Failed attempts in a row that switch (at least 1).
    fallback_after: u32,
    failures: u32,
    failing_since: Option<Instant>,
}

impl Selector {
    /// `fallback_after`: failed attempts in a row on one transport before `auto` switches (0 is
    /// taken as 1).
    pub(crate) fn new(choice: ProtocolChoice, fallback_after: u32) -> Self {
        let current = match choice {
            ProtocolChoice::Auto => Protocol::Quic,
            ProtocolChoice::Only(p) => p,
        };
        Self {
            choice,
            current,
            fallback_after: fallback_after.max(1),
            failures: 0,
            failing_since: None,
        }
    }

    pub(crate) fn current(&self) -> Protocol {
        self.current
    }

    /// Whether an HTTP/2 connection should probe QUIC in the background.
    pub(crate) fn probes_quic(&self) -> bool {
        self.choice == ProtocolChoice::Auto && self.current == Protocol::Http2
    }

    /// A connection registered on the current transport.
    pub(crate) fn registered(&mut self) {
        self.failures = 0;
        self.failing_since = None;
    }

    /// The background probe registered a QUIC connection: the connection is on QUIC again.
    pub(crate) fn moved_to_quic(&mut self) {
        self.current = Protocol::Quic;
        self.registered();
    }

    /// An attempt that began at `started` failed with `error`; `Some` when `auto` switches
    /// transport now.
    pub(crate) fn failed(
        &mut self,
        error: &ConnectionError,
        started: Instant,
        now: Instant,
    ) -> Option<Switch> {
        if self.choice != ProtocolChoice::Auto || !error.transport_failure() {
            // A refusal or an RPC failure says nothing about the transport.
            self.failures = 0;
            self.failing_since = None;
            return None;
        }
        self.failures += 1;
        let since = *self.failing_since.get_or_insert(started);
        if self.failures < self.fallback_after {
            return None;
        }
        let to = match self.current {
            Protocol::Quic => Protocol::Http2,
            Protocol::Http2 => Protocol::Quic,
        };
        let switch = Switch {
            to,
            reason: error.to_string(),
            after: now.saturating_duration_since(since),
            attempts: self.failures,
        };
        self.current = to;
        self.failures = 0;
        self.failing_since = None;
        Some(switch)
    }
}

/// The background QUIC probe's waits while on HTTP/2: 1 s, doubling, at most 30 s.
#[derive(Debug, Clone)]
pub(crate) struct ProbeBackoff {
    next: Duration,
}

impl ProbeBackoff {
    pub(crate) const FIRST: Duration = Duration::from_secs(1);
    pub(crate) const CAP: Duration = Duration::from_secs(30);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait before the next probe.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        wait
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::wire::rpc::RegistrationError;

    fn unreachable() -> ConnectionError {
        ConnectionError::QuicTimeout {
            edge: SocketAddr::from(([127, 0, 0, 1], 7844)),
            after: QUIC_HANDSHAKE_LIMIT,
        }
    }

    fn h2_unreachable() -> ConnectionError {
        ConnectionError::TcpConnect {
            edge: SocketAddr::from(([127, 0, 0, 1], 7844)),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        }
    }

    #[test]
    fn choice_parses_cloudflareds_values() {
        assert_eq!("auto".parse(), Ok(ProtocolChoice::Auto));
        assert_eq!("quic".parse(), Ok(ProtocolChoice::Only(Protocol::Quic)));
        assert_eq!("http2".parse(), Ok(ProtocolChoice::Only(Protocol::Http2)));
        assert!("h2mux".parse::<ProtocolChoice>().is_err());
        assert_eq!(Protocol::Http2.to_string(), "http2");
    }

    #[test]
    fn auto_falls_back_after_two_transport_failures_and_reports_the_time() {
        let mut s = Selector::new(ProtocolChoice::Auto, FALLBACK_AFTER);
        assert_eq!(s.current(), Protocol::Quic);
        assert!(!s.probes_quic());
        let t0 = Instant::now();
        assert_eq!(
            s.failed(&unreachable(), t0, t0 + Duration::from_secs(2)),
            None
        );
        let switch = s
            .failed(
                &unreachable(),
                t0 + Duration::from_secs(3),
                t0 + Duration::from_secs(5),
            )
            .expect("second failure switches");
        assert_eq!(switch.to, Protocol::Http2);
        assert_eq!(switch.after, Duration::from_secs(5));
        assert_eq!(switch.attempts, 2);
        assert!(
            switch.reason.contains("no QUIC handshake"),
            "{}",
            switch.reason
        );
        assert_eq!(s.current(), Protocol::Http2);
        assert!(s.probes_quic());
        s.moved_to_quic();
        assert_eq!(s.current(), Protocol::Quic);
        assert!(!s.probes_quic());
    }

    #[test]
    fn a_refusal_is_no_reason_to_switch_and_breaks_the_row() {
        let mut s = Selector::new(ProtocolChoice::Auto, FALLBACK_AFTER);
        let t = Instant::now();
        let refused = ConnectionError::Refused(RegistrationError::permanent("wrong secret"));
        assert_eq!(s.failed(&unreachable(), t, t), None);
        assert_eq!(s.failed(&refused, t, t), None);
        assert_eq!(s.failed(&unreachable(), t, t), None);
        assert_eq!(s.current(), Protocol::Quic);
        // A registration in between also starts the count again.
        s.registered();
        assert_eq!(s.failed(&unreachable(), t, t), None);
        assert!(s.failed(&unreachable(), t, t).is_some());
    }

    #[test]
    fn auto_tries_quic_again_when_http2_cannot_connect_either() {
        let mut s = Selector::new(ProtocolChoice::Auto, FALLBACK_AFTER);
        let t = Instant::now();
        s.failed(&unreachable(), t, t);
        s.failed(&unreachable(), t, t);
        assert_eq!(s.current(), Protocol::Http2);
        assert_eq!(s.failed(&h2_unreachable(), t, t), None);
        let back = s.failed(&h2_unreachable(), t, t).unwrap();
        assert_eq!(back.to, Protocol::Quic);
    }

    #[test]
    fn a_configured_count_switches_after_that_many_failures_both_ways() {
        let t = Instant::now();
        for n in [1u32, 3, 9] {
            let mut s = Selector::new(ProtocolChoice::Auto, n);
            for _ in 1..n {
                assert_eq!(s.failed(&unreachable(), t, t), None);
            }
            let switch = s.failed(&unreachable(), t, t).expect("switches at n");
            assert_eq!((switch.to, switch.attempts), (Protocol::Http2, n));
            for _ in 1..n {
                assert_eq!(s.failed(&h2_unreachable(), t, t), None);
            }
            let back = s.failed(&h2_unreachable(), t, t).expect("back at n");
            assert_eq!((back.to, back.attempts), (Protocol::Quic, n));
        }
        // Zero cannot mean "never try": it is one.
        let mut s = Selector::new(ProtocolChoice::Auto, 0);
        assert!(s.failed(&unreachable(), t, t).is_some());
    }

    #[test]
    fn fixed_protocols_never_switch() {
        for p in [Protocol::Quic, Protocol::Http2] {
            let mut s = Selector::new(ProtocolChoice::Only(p), FALLBACK_AFTER);
            let t = Instant::now();
            for _ in 0..10 {
                assert_eq!(s.failed(&unreachable(), t, t), None);
            }
            assert_eq!(s.current(), p);
            assert!(!s.probes_quic());
        }
    }

    #[test]
    fn probe_backoff_doubles_to_thirty_seconds() {
        let mut b = ProbeBackoff::new();
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }
}
