//! The thread-per-core runtime: one pinned worker thread per core, each running its own monoio
//! runtime, plus lock-free cross-worker messaging.
//!
//! # Drivers
//!
//! Each worker runs monoio on its io_uring driver. [`Workers::start`] probes io_uring once
//! before any thread starts (`io_uring_setup` plus monoio's opcode probe, which also catches
//! `kernel.io_uring_disabled`, seccomp filters and old kernels). When io_uring is unusable, or
//! when [`WorkersConfig::force_legacy`] is set, the workers run monoio's legacy (epoll) driver
//! instead. One `info` line names the driver the pool runs; a fallback is a `warn`. Each worker
//! reports its driver in [`WorkerCtx::driver`], and [`Workers::drivers`] lists them all.
//!
//! # Messaging
//!
//! Every worker owns an inbox: a bounded crossbeam channel (lock-free) plus an eventfd. A sender
//! pushes the message, then writes the eventfd only if the receiver announced that it is about
//! to sleep, so a busy worker is never woken by syscalls and an idle one is woken at once. The
//! receiving worker awaits the eventfd through monoio (an io_uring `PollAdd`, or epoll on the
//! legacy driver), so it sleeps in its runtime instead of polling. Nothing in this path takes a
//! lock.
//!
//! ```no_run
//! use dataplane::runtime::{Workers, WorkersConfig};
//!
//! let workers = Workers::start(WorkersConfig::default(), |mut ctx| async move {
//!     let next = (ctx.index + 1) % ctx.count;
//!     ctx.handle.send(next, ctx.index).unwrap();
//!     let from: usize = ctx.inbox.recv().await.unwrap();
//!     println!("worker {} got a message from {from}", ctx.index);
//! })
//! .unwrap();
//! workers.join().unwrap();
//! ```
//!
//! # Layout
//!
//! - `pool`: [`Workers`], the pinned threads and their runtimes, and [`WorkerCtx`].
//! - `mailbox`: [`WorkerHandle`], [`Inbox`] and [`Mailboxes`], the lock-free hand-off.
//! - `eventfd`: the wake-up counter under every inbox (also used by the io_uring UDP
//!   backend).
//! - `probe`: [`probe_io_uring`], which picks the driver.

use std::{fmt, io};

use tracing::warn;

mod eventfd;
mod mailbox;
mod pool;
mod probe;
#[cfg(test)]
mod tests;

pub(crate) use eventfd::{EventFd, EventFdWaiter};
pub use mailbox::{Inbox, Mailboxes, SendError, WorkerHandle};
pub use pool::{WorkerCtx, Workers};
pub use probe::{UringUnavailable, probe_io_uring};

/// Which monoio driver a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// monoio's io_uring driver.
    IoUring,
    /// monoio's legacy driver (epoll).
    Legacy,
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Legacy => "legacy (epoll)",
        })
    }
}

/// How to start the worker pool.
#[derive(Debug, Clone)]
pub struct WorkersConfig {
    /// Number of worker threads; 0 means one per core this process may run on.
    pub threads: usize,
    /// Run monoio's legacy (epoll) driver even where io_uring works.
    pub force_legacy: bool,
    /// Thread name prefix; worker `i` is named `{name}-{i}`.
    pub name: String,
    /// Pin worker `i` to the `i`-th allowed core (wrapping when there are more workers than
    /// cores).
    pub pin: bool,
    /// Messages each inbox holds before [`WorkerHandle::send`] reports [`SendError::Full`].
    pub inbox_capacity: usize,
    /// Submission-queue entries of each worker's monoio io_uring.
    pub uring_entries: u32,
    /// Set up each worker's ring with `IORING_SETUP_COOP_TASKRUN`: completions are run when
    /// the worker next enters the kernel instead of by an interrupt of whatever it is
    /// running. On a 2-vCPU VM those interrupts cost more than the work.
    pub uring_coop_taskrun: bool,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            force_legacy: false,
            name: "ringway-worker".to_owned(),
            pin: true,
            // 4096 hand-offs absorb a burst of GRO batches (64 datagrams each) from several
            // workers at once while bounding the memory a stalled worker can pin.
            inbox_capacity: 4096,
            // monoio's own default.
            uring_entries: 1024,
            uring_coop_taskrun: false,
        }
    }
}

/// Errors from starting or joining the pool.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An OS resource (eventfd, thread) could not be created.
    #[error("cannot start worker pool: {0}")]
    Io(#[from] io::Error),
    /// A worker could not build any monoio runtime.
    #[error("worker {index} failed to start: {reason}")]
    WorkerStart {
        /// Index of the worker.
        index: usize,
        /// What went wrong.
        #[source]
        reason: WorkerStartError,
    },
    /// A worker thread ended before it reported whether its runtime started.
    #[error("a worker thread exited before its runtime started")]
    WorkerVanished,
    /// A worker thread panicked.
    #[error("worker {index} panicked")]
    WorkerPanicked {
        /// Index of the worker.
        index: usize,
    },
}

/// Why one worker's runtime did not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerStartError {
    /// Neither io_uring nor the legacy driver could be built.
    #[error("cannot build a legacy runtime either: {0}")]
    LegacyRuntime(#[source] io::Error),
    /// The runtime could not watch the worker's inbox eventfd.
    #[error("cannot watch the inbox eventfd: {0}")]
    InboxWatch(#[source] io::Error),
}

/// Runs `fut` to completion on a fresh single-thread monoio runtime on this thread: io_uring
/// when it works, else the legacy driver (logged, as for workers). For tests, tools and
/// benchmarks that need one runtime without a worker pool.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(fut),
        Err(e) => {
            warn!("cannot build an io_uring runtime ({e}); using the legacy driver");
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .expect("monoio legacy runtime")
                .block_on(fut)
        }
    }
}
