//! Per-request timeouts for HTTP/1.1 lanes without a timer per request.
//!
//! Wrapping every exchange in a runtime timeout costs a timer-wheel insert and removal and a
//! move of the exchange future per request — measurable against wrk, which is what loadgen
//! is compared with. Instead each lane publishes its deadline in a [`Watch`] (two `Cell`
//! stores per request) and one watchdog task per thread scans the lanes a few times per
//! timeout. An expired lane's socket is shut down, which completes its pending read or write
//! at once; the lane sees [`Watch::disarm`] return `true` and counts a timeout.
//!
//! Precision: a timeout fires between `--timeout` and `--timeout` plus one scan interval
//! (a quarter of the timeout, at most 50 ms).

use std::{
    cell::{Cell, RefCell},
    os::fd::RawFd,
    rc::Rc,
    time::Duration,
};

use crate::clock::now_ns;

/// One lane's in-flight request, as the watchdog sees it.
#[derive(Debug, Default)]
pub struct Watch {
    /// 0 when no request is in flight.
    deadline_ns: Cell<u64>,
    /// The connection's socket while a request is in flight on it; -1 otherwise.
    fd: Cell<RawFd>,
    fired: Cell<bool>,
}

impl Watch {
    /// A request starts; it must complete by `deadline_ns`.
    pub fn arm(&self, deadline_ns: u64) {
        self.fired.set(false);
        self.fd.set(-1);
        self.deadline_ns.set(deadline_ns);
    }

    /// The request's connection (once connected). Only a socket that stays open until
    /// [`Watch::disarm`] may be given: the watchdog may shut it down until then.
    pub fn set_fd(&self, fd: RawFd) {
        self.fd.set(fd);
    }

    /// Whether the deadline has passed (checked after a connect, which the watchdog cannot
    /// interrupt).
    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    /// The request is over; returns whether its deadline passed while it was in flight.
    pub fn disarm(&self) -> bool {
        self.deadline_ns.set(0);
        self.fd.set(-1);
        self.fired.get()
    }
}

/// The lanes of one worker thread.
#[derive(Debug, Default)]
pub struct Watchdog {
    watches: RefCell<Vec<Rc<Watch>>>,
    done: Cell<bool>,
}

impl Watchdog {
    pub fn register(&self) -> Rc<Watch> {
        let w = Rc::new(Watch {
            fd: Cell::new(-1),
            ..Watch::default()
        });
        self.watches.borrow_mut().push(w.clone());
        w
    }

    /// Ends [`Watchdog::run`] at its next scan.
    pub fn finish(&self) {
        self.done.set(true);
    }

    /// Scans until [`Watchdog::finish`].
    pub async fn run(&self, timeout: Duration) {
        let interval = (timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(50));
        // Bounded by `finish`, which the worker calls once every lane is done.
        while !self.done.get() {
            monoio::time::sleep(interval).await;
            let now = now_ns();
            for w in self.watches.borrow().iter() {
                let deadline = w.deadline_ns.get();
                if deadline == 0 || now < deadline || w.fired.get() {
                    continue;
                }
                w.fired.set(true);
                let fd = w.fd.get();
                if fd >= 0 {
                    // SAFETY: the lane keeps this socket open while its watch is armed
                    // (`set_fd`'s contract); shutdown only changes the socket's state.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                }
            }
        }
    }
}
