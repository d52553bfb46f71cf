//! Time: one monotonic nanosecond clock for every timestamp, and a timer precise to the
//! microsecond.
//!
//! monoio's own timer wheel ticks in milliseconds: an open-loop request due at 10.3 ms would
//! leave at 11 ms or later, and since open-loop latency is measured from the *intended* send
//! time, that lateness would be added to every latency. [`PreciseTimer`] arms a `timerfd`
//! with an absolute `CLOCK_MONOTONIC` deadline instead and waits for it through the runtime
//! (a readiness poll, so the thread sleeps in io_uring, not in a spin).

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
};

/// Nanoseconds on `CLOCK_MONOTONIC` (the clock `std::time::Instant` uses on Linux).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A one-shot timer at an absolute [`now_ns`] deadline, for use inside a monoio runtime.
#[derive(Debug)]
pub struct PreciseTimer {
    /// The timerfd itself, which we arm and read.
    fd: OwnedFd,
    /// A duplicate registered with monoio, only to wait for readability.
    poll: monoio::net::udp::UdpSocket,
}

impl PreciseTimer {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let dup = fd.try_clone()?;
        // monoio has no timerfd type; any fd wrapper that offers `readable()` will do, and its
        // datagram methods are never called.
        let poll = monoio::net::udp::UdpSocket::from_std(std::net::UdpSocket::from(dup))?;
        Ok(Self { fd, poll })
    }

    /// Returns at `deadline_ns` (on [`now_ns`]'s clock) or, if that has passed, at once.
    pub async fn sleep_until(&self, deadline_ns: u64) -> io::Result<()> {
        if now_ns() >= deadline_ns {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
            },
        };
        use std::os::fd::AsRawFd;
        // SAFETY: valid fd and itimerspec; the old value is not requested.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Bounded: each turn either returns or waits for the fd to become readable again; the
        // timer is armed, so it does within the deadline.
        loop {
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64 on a valid non-blocking fd.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut expirations as *mut u64).cast(),
                    8,
                )
            };
            if n == 8 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            // `relaxed = false`: we read the fd outside monoio, so its cached readiness is
            // stale and must be polled again.
            self.poll.readable(false).await?;
        }
    }
}
