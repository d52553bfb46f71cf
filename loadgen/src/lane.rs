//! Lanes: one sequence of requests, each sent after the previous one finished. An HTTP/1.1
//! connection is one lane; an HTTP/2 connection with `--streams N` is N lanes.
//!
//! A lane decides *when* its next request starts ([`Lane::next`]):
//!
//! - closed loop: now (after the previous response);
//! - open loop: lane `i` of `L` sends request `k` at `T0 + (i + k·L)/R`. The schedule is
//!   absolute, so a lane that fell behind (a slow response) sends its overdue requests at once
//!   and latency is taken from the *due* time: a stall is charged to every request that should
//!   have gone out during it (coordinated-omission correction).
//!
//! and whether the request is counted (it starts inside the measured window and, with `-n`,
//! got one of the `-n` tickets).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{
    clock::{PreciseTimer, now_ns},
    stats::Window,
    target::Target,
    transport::Dialer,
};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Each lane sends as soon as its previous response is complete.
    Closed,
    /// `rate` requests per second in total, on a fixed schedule.
    Open { rate: f64 },
}

/// Everything the lanes of every thread share. Read-only but for the ticket counter and the
/// stop flag.
#[derive(Debug)]
pub struct RunShared {
    pub target: Target,
    pub dialer: Dialer,
    pub load: Load,
    /// Lanes in the whole run (threads × their lanes).
    pub lanes: u64,
    /// Start of warm-up: nothing is sent before it.
    pub t0_ns: u64,
    /// The measured window; `end_ns` is `u64::MAX` with `-n`.
    pub window: Window,
    /// `-n`: measured requests still to start.
    pub tickets: Option<AtomicU64>,
    /// Set on `-n` exhaustion or Ctrl-C: no lane starts another request.
    pub stop: AtomicBool,
    /// Per request, connect included.
    pub timeout: Duration,
    pub conn_per_request: bool,
}

/// When a request starts and whether it counts.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// Latency is measured from here: the send time (closed loop) or the due time (open).
    pub from_ns: u64,
    /// When the lane actually went ahead (the timeout runs from here).
    pub now_ns: u64,
    pub counted: bool,
}

/// One lane's position in the schedule.
#[derive(Debug)]
pub struct Lane {
    index: u64,
    sent: u64,
    /// Made on first use: a closed-loop lane that never waits costs no file descriptors.
    timer: Option<PreciseTimer>,
}

impl Lane {
    pub fn new(index: u64) -> Self {
        Self {
            index,
            sent: 0,
            timer: None,
        }
    }

    /// Waits until the next request is due; `None` when the lane is finished.
    pub async fn next(&mut self, shared: &RunShared) -> Option<Start> {
        if shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        // One clock read per request on the closed-loop path (the other is at completion).
        let now = now_ns();
        let due = match shared.load {
            Load::Closed => now.max(shared.t0_ns),
            Load::Open { rate } => {
                let slot = self.index + self.sent * shared.lanes;
                shared.t0_ns + (slot as f64 * 1e9 / rate) as u64
            }
        };
        if due >= shared.window.end_ns {
            return None;
        }
        self.sent += 1;
        let now = if due > now {
            self.sleep_until(due).await;
            now_ns()
        } else {
            now
        };
        let counted = if due >= shared.window.start_ns {
            match &shared.tickets {
                None => true,
                Some(t) => {
                    let had = t
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok();
                    if !had {
                        shared.stop.store(true, Ordering::Relaxed);
                        return None;
                    }
                    true
                }
            }
        } else {
            false
        };
        let from_ns = match shared.load {
            Load::Closed => now,
            Load::Open { .. } => due,
        };
        Some(Start {
            from_ns,
            now_ns: now,
            counted,
        })
    }

    /// Which of the target's URLs the current request uses (round-robin per lane).
    pub fn url_index(&self, urls: usize) -> usize {
        ((self.sent.saturating_sub(1) + self.index) % urls as u64) as usize
    }

    /// Sleeps before redialling after a failed connect: 10 ms doubling to 640 ms, so a dead
    /// server costs a few attempts per second per lane instead of a busy loop.
    pub async fn backoff(&mut self, failures: u32) {
        let ms = 10u64 << failures.min(6);
        self.sleep_until(now_ns() + ms * 1_000_000).await;
    }

    /// The precise timer, or, if no timerfd can be made (descriptors exhausted), the runtime's
    /// millisecond timer: late by up to a tick, never lost.
    async fn sleep_until(&mut self, deadline_ns: u64) {
        if self.timer.is_none() {
            self.timer = PreciseTimer::new().ok();
        }
        let precise = match &self.timer {
            Some(t) => t.sleep_until(deadline_ns).await.is_ok(),
            None => false,
        };
        if !precise {
            let wait = deadline_ns.saturating_sub(now_ns());
            monoio::time::sleep(std::time::Duration::from_nanos(wait)).await;
        }
    }
}
