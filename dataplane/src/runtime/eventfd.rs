//! An eventfd other threads bump to wake a worker, and the monoio-side wait on it.

use std::{
    fs::File,
    io::{self, Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

/// An eventfd: a counter other threads bump to wake a worker.
///
/// The notify side is `Send + Sync`; the waiting side ([`EventFdWaiter`]) lives on one monoio
/// runtime.
#[derive(Debug)]
pub(crate) struct EventFd {
    file: File,
}

impl EventFd {
    /// A non-blocking, close-on-exec eventfd with a zero count.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd(2) takes no pointers; the flags are valid constants.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd(2), is open, and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            file: File::from(owned),
        })
    }

    /// Adds one to the count, waking whoever polls it.
    pub(crate) fn notify(&self) {
        // The write fails only when the count would overflow u64::MAX - 1, which means the
        // waiter is already woken many times over; ignoring it loses nothing.
        let _ = (&self.file).write(&1u64.to_ne_bytes());
    }

    /// Resets the count to zero; returns the count that was read (0 when it was already 0).
    pub(crate) fn drain(&self) -> u64 {
        let mut buf = [0u8; 8];
        match (&self.file).read(&mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            // EAGAIN: nothing was pending.
            _ => 0,
        }
    }

    /// A monoio-side waiter on this eventfd. Must be called inside a monoio runtime.
    pub(crate) fn waiter(&self) -> io::Result<EventFdWaiter> {
        // monoio can only await readiness of fds wrapped in one of its socket types. Its
        // `UdpSocket::readable` is a pure readiness wait (io_uring `PollAdd`, or epoll on the
        // legacy driver), which works on any pollable fd, so a duplicate of the eventfd is
        // wrapped in one. Nothing ever calls a socket operation on it.
        let dup = self.file.try_clone()?;
        let poll =
            monoio::net::udp::UdpSocket::from_std(std::net::UdpSocket::from(OwnedFd::from(dup)))?;
        Ok(EventFdWaiter { poll })
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Awaits an [`EventFd`] from inside a monoio runtime.
#[derive(Debug)]
pub(crate) struct EventFdWaiter {
    poll: monoio::net::udp::UdpSocket,
}

impl EventFdWaiter {
    /// Resolves once the eventfd's count is non-zero. Does not reset the count.
    ///
    /// Dropping the future is harmless: a readiness poll holds no buffer.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        // `relaxed = false`: we read the eventfd ourselves, outside monoio, so monoio's cached
        // readiness must be re-checked with a real poll each time (see monoio's docs).
        self.poll.readable(false).await
    }
}
