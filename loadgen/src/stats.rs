//! What a run measured: one [`Recorder`] per worker thread (no sharing, no atomics on the
//! per-request path but two relaxed counters for the progress line), merged into a
//! [`Totals`] at the end.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use hdrhistogram::Histogram;

/// Highest latency the histogram holds without resizing: one hour, in microseconds.
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// An empty latency histogram: 1 µs to an hour at 3 significant digits, so recorders from
/// different threads add.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("static histogram bounds are valid")
}

/// Why a request (or, for `Connect`, a connection attempt) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Refused, unreachable, or the TLS/HTTP/2 handshake failed.
    Connect,
    /// `--timeout` passed before the response was complete.
    Timeout,
    /// The server closed or reset the connection before the response was complete.
    Reset,
    /// The bytes were not an HTTP response.
    Parse,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Parse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Parse => "parse",
        }
    }
}

/// Counters the main thread reads for the live progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub responses: AtomicU64,
    pub errors: AtomicU64,
}

/// The measured window on [`crate::clock::now_ns`]'s clock: requests that start (or, in open
/// loop, are due) in `[start_ns, end_ns)` are counted.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    pub fn contains(&self, t_ns: u64) -> bool {
        t_ns >= self.start_ns && t_ns < self.end_ns
    }
}

/// One thread's measurements.
#[derive(Debug)]
pub struct Recorder {
    latency_us: Histogram<u64>,
    status: Vec<u64>,
    errors: [u64; 4],
    bytes_rx: u64,
    bytes_tx: u64,
    /// Last completion of a counted request (for `-n`, where the window ends there).
    last_done_ns: u64,
    /// First error message seen per kind, for the report (a run with errors says why).
    first_error: [Option<String>; 4],
    live: Arc<Live>,
}

impl Recorder {
    pub fn new(live: Arc<Live>) -> Self {
        Self {
            latency_us: latency_histogram(),
            status: vec![0; 1000],
            errors: [0; 4],
            bytes_rx: 0,
            bytes_tx: 0,
            last_done_ns: 0,
            first_error: Default::default(),
            live,
        }
    }

    /// A counted response: `from_ns` is the send time (closed loop) or the intended send
    /// time (open loop).
    pub fn response(&mut self, from_ns: u64, done_ns: u64, status: u16, rx: u64, tx: u64) {
        let us = done_ns.saturating_sub(from_ns) / 1_000;
        // Saturates at the top bucket instead of failing: a latency above an hour is still
        // "at least an hour".
        self.latency_us.saturating_record(us.max(1));
        if let Some(slot) = self.status.get_mut(status as usize) {
            *slot += 1;
        }
        self.bytes_rx += rx;
        self.bytes_tx += tx;
        self.last_done_ns = self.last_done_ns.max(done_ns);
        self.live.responses.fetch_add(1, Ordering::Relaxed);
    }

    /// A response outside the window (warm-up): only the progress line sees it.
    pub fn uncounted_response(&self) {
        self.live.responses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&mut self, kind: ErrorKind, why: impl FnOnce() -> String) {
        let i = kind as usize;
        self.errors[i] += 1;
        if self.first_error[i].is_none() {
            self.first_error[i] = Some(why());
        }
        self.live.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything merged.
#[derive(Debug)]
pub struct Totals {
    pub latency_us: Histogram<u64>,
    pub status: Vec<(u16, u64)>,
    pub errors: [u64; 4],
    pub first_error: [Option<String>; 4],
    pub bytes_rx: u64,
    pub bytes_tx: u64,
    pub last_done_ns: u64,
}

impl Totals {
    pub fn merge(recorders: Vec<Recorder>) -> Self {
        let mut latency_us = latency_histogram();
        let mut status = vec![0u64; 1000];
        let mut errors = [0; 4];
        let mut first_error: [Option<String>; 4] = Default::default();
        let (mut bytes_rx, mut bytes_tx, mut last_done_ns) = (0, 0, 0);
        for r in recorders {
            latency_us
                .add(&r.latency_us)
                .expect("histograms with the same bounds add");
            for (acc, n) in status.iter_mut().zip(&r.status) {
                *acc += n;
            }
            for i in 0..4 {
                errors[i] += r.errors[i];
                if first_error[i].is_none() {
                    first_error[i].clone_from(&r.first_error[i]);
                }
            }
            bytes_rx += r.bytes_rx;
            bytes_tx += r.bytes_tx;
            last_done_ns = last_done_ns.max(r.last_done_ns);
        }
        Self {
            latency_us,
            status: status
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(code, n)| (code as u16, *n))
                .collect(),
            errors,
            first_error,
            bytes_rx,
            bytes_tx,
            last_done_ns,
        }
    }

    pub fn responses(&self) -> u64 {
        self.latency_us.len()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn error_count(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize]
    }
}
