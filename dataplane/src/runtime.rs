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

use std::{
    fmt,
    fs::File,
    future::Future,
    io::{self, Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering, fence},
    },
    thread::JoinHandle,
};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use tracing::{debug, info, warn};

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
        reason: String,
    },
    /// A worker thread panicked.
    #[error("worker {index} panicked")]
    WorkerPanicked {
        /// Index of the worker.
        index: usize,
    },
}

/// Why a message could not be handed to a worker; the message comes back.
pub enum SendError<M> {
    /// The target's inbox is full (it is not keeping up); the caller decides whether to drop.
    Full(M),
    /// The target worker has exited.
    Disconnected(M),
    /// There is no worker with that index.
    NoSuchWorker(M),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Disconnected(m) | SendError::NoSuchWorker(m) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "Full(..)",
            SendError::Disconnected(_) => "Disconnected(..)",
            SendError::NoSuchWorker(_) => "NoSuchWorker(..)",
        })
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "worker inbox is full",
            SendError::Disconnected(_) => "worker has exited",
            SendError::NoSuchWorker(_) => "no worker with that index",
        })
    }
}

impl<M> std::error::Error for SendError<M> {}

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

/// One worker's mailbox, shared by every [`WorkerHandle`].
struct Mailbox<M> {
    tx: Sender<M>,
    wake: EventFd,
    /// Set by the owner just before it sleeps on `wake`; cleared by the sender that wakes it.
    sleeping: AtomicBool,
}

/// Sends messages to any worker. Cheap to clone; usable from any thread.
pub struct WorkerHandle<M> {
    mailboxes: Arc<[Mailbox<M>]>,
}

impl<M> Clone for WorkerHandle<M> {
    fn clone(&self) -> Self {
        Self {
            mailboxes: Arc::clone(&self.mailboxes),
        }
    }
}

impl<M> fmt::Debug for WorkerHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("workers", &self.mailboxes.len())
            .finish()
    }
}

impl<M: Send> WorkerHandle<M> {
    /// Number of workers.
    pub fn count(&self) -> usize {
        self.mailboxes.len()
    }

    /// Hands `msg` to worker `to` and wakes it if it sleeps. Never blocks.
    pub fn send(&self, to: usize, msg: M) -> Result<(), SendError<M>> {
        let Some(mailbox) = self.mailboxes.get(to) else {
            return Err(SendError::NoSuchWorker(msg));
        };
        mailbox.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(m) => SendError::Full(m),
            TrySendError::Disconnected(m) => SendError::Disconnected(m),
        })?;
        // Dekker-style handshake with `Inbox::recv`: the message is published before we read
        // `sleeping`, and the receiver publishes `sleeping` before it re-checks the channel. The
        // two SeqCst fences guarantee at least one side sees the other's write, so a message is
        // never left behind a sleeping worker.
        fence(Ordering::SeqCst);
        if mailbox.sleeping.load(Ordering::Relaxed)
            && mailbox.sleeping.swap(false, Ordering::AcqRel)
        {
            mailbox.wake.notify();
        }
        Ok(())
    }
}

/// An extra set of per-worker mailboxes, beside the one [`Workers`] builds for its own message
/// type. A worker pool that needs two kinds of traffic (e.g. QUIC datagrams forwarded between
/// workers, and accepted TCP connections handed to the worker that owns a tunnel connection)
/// gets one typed channel per kind instead of one enum that every consumer must match.
pub struct Mailboxes<M> {
    handle: WorkerHandle<M>,
    receivers: Vec<Option<Receiver<M>>>,
}

impl<M> fmt::Debug for Mailboxes<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailboxes")
            .field("workers", &self.receivers.len())
            .finish()
    }
}

impl<M: Send> Mailboxes<M> {
    /// `count` mailboxes of `capacity` messages each.
    pub fn new(count: usize, capacity: usize) -> io::Result<Self> {
        let mut receivers = Vec::with_capacity(count);
        let mut mailboxes = Vec::with_capacity(count);
        // Bound: `count` workers.
        for _ in 0..count {
            let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
            receivers.push(Some(rx));
            mailboxes.push(Mailbox {
                tx,
                wake: EventFd::new()?,
                sleeping: AtomicBool::new(false),
            });
        }
        Ok(Self {
            handle: WorkerHandle {
                mailboxes: mailboxes.into(),
            },
            receivers,
        })
    }

    /// A sending handle (usable from any thread).
    pub fn handle(&self) -> WorkerHandle<M> {
        self.handle.clone()
    }

    /// Takes worker `index`'s receiving end. Call it once per index, inside that worker's monoio
    /// runtime (the inbox waits on an eventfd through the runtime). `None` if already taken.
    pub fn take_inbox(&mut self, index: usize) -> Option<io::Result<Inbox<M>>> {
        let rx = self.receivers.get_mut(index)?.take()?;
        Some(
            self.handle.mailboxes[index]
                .wake
                .waiter()
                .map(|waiter| Inbox {
                    index,
                    rx,
                    mailboxes: Arc::clone(&self.handle.mailboxes),
                    waiter,
                }),
        )
    }
}

/// A worker's receiving end.
pub struct Inbox<M> {
    index: usize,
    rx: Receiver<M>,
    mailboxes: Arc<[Mailbox<M>]>,
    waiter: EventFdWaiter,
}

impl<M> fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("index", &self.index)
            .field("pending", &self.rx.len())
            .finish()
    }
}

impl<M: Send> Inbox<M> {
    /// Takes a message if one is waiting.
    pub fn try_recv(&self) -> Option<M> {
        self.rx.try_recv().ok()
    }

    /// Number of messages waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Waits for the next message, sleeping in the runtime (not spinning) while there is none.
    ///
    /// Cancel-safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> io::Result<M> {
        let mailbox = &self.mailboxes[self.index];
        // Unbounded in time by design (it waits for a message), but each turn does bounded
        // work: one channel check, one eventfd wait, one eventfd read. A turn that finds nothing
        // after a wake-up is a stale count from an earlier notify, which the read clears, so
        // spurious turns cannot repeat without a new notify.
        loop {
            match self.rx.try_recv() {
                Ok(m) => return Ok(m),
                // Our own handle keeps a sender alive, so this cannot happen while `self` lives.
                Err(TryRecvError::Disconnected) => {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "inbox closed"));
                }
                Err(TryRecvError::Empty) => {}
            }
            mailbox.sleeping.store(true, Ordering::Relaxed);
            // Pairs with the fence in `WorkerHandle::send`.
            fence(Ordering::SeqCst);
            if let Ok(m) = self.rx.try_recv() {
                mailbox.sleeping.store(false, Ordering::Relaxed);
                return Ok(m);
            }
            self.waiter.readable().await?;
            mailbox.wake.drain();
        }
    }
}

/// Everything a worker's future gets.
pub struct WorkerCtx<M> {
    /// This worker's index, `0..count`.
    pub index: usize,
    /// Number of workers in the pool.
    pub count: usize,
    /// The driver this worker's monoio runtime runs.
    pub driver: DriverKind,
    /// The core this worker is pinned to, if pinning succeeded.
    pub core: Option<usize>,
    /// Sends to any worker (including this one).
    pub handle: WorkerHandle<M>,
    /// This worker's inbox.
    pub inbox: Inbox<M>,
}

impl<M> fmt::Debug for WorkerCtx<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerCtx")
            .field("index", &self.index)
            .field("count", &self.count)
            .field("driver", &self.driver)
            .field("core", &self.core)
            .finish()
    }
}

/// What a worker reports once its runtime is up.
struct StartReport {
    index: usize,
    result: Result<(DriverKind, Option<usize>), String>,
}

/// The running pool.
pub struct Workers<M> {
    threads: Vec<JoinHandle<()>>,
    handle: WorkerHandle<M>,
    drivers: Vec<DriverKind>,
    cores: Vec<Option<usize>>,
}

impl<M> fmt::Debug for Workers<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("drivers", &self.drivers)
            .field("cores", &self.cores)
            .finish()
    }
}

/// Whether io_uring can be used in this process, and if not, why.
///
/// Tries `io_uring_setup` (which fails with `EPERM` under `kernel.io_uring_disabled = 2`, or
/// under `= 1` for an unprivileged process outside the io_uring group, and with `ENOSYS` on
/// kernels without it or under seccomp), then monoio's probe of the opcodes it uses.
pub fn probe_io_uring() -> Result<(), String> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_owned());
    if let Err(e) = io_uring::IoUring::new(2) {
        return Err(match disabled {
            Some(v) if v != "0" => {
                format!("io_uring_setup failed ({e}); kernel.io_uring_disabled = {v}")
            }
            _ => format!("io_uring_setup failed ({e})"),
        });
    }
    if !monoio::utils::detect_uring() {
        return Err(
            "the kernel lacks io_uring opcodes monoio needs, or MONOIO_FORCE_LEGACY_DRIVER is set"
                .to_owned(),
        );
    }
    Ok(())
}

/// Online cores this process may run on (its affinity mask), in order.
fn allowed_cores() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => Vec::new(),
    }
}

impl<M: Send + 'static> Workers<M> {
    /// Starts the pool and returns once every worker's runtime is up.
    ///
    /// `f` runs once on each worker, inside that worker's monoio runtime; the worker thread
    /// exits when the returned future completes.
    pub fn start<F, Fut>(config: WorkersConfig, f: F) -> Result<Self, RuntimeError>
    where
        F: Fn(WorkerCtx<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let cores = allowed_cores();
        let count = match config.threads {
            0 if !cores.is_empty() => cores.len(),
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };

        let uring = if config.force_legacy {
            Err("force_legacy is set".to_owned())
        } else {
            probe_io_uring()
        };

        let mut receivers = Vec::with_capacity(count);
        let mut mailboxes = Vec::with_capacity(count);
        // Bound: `count` workers.
        for _ in 0..count {
            let (tx, rx) = crossbeam_channel::bounded(config.inbox_capacity.max(1));
            receivers.push(rx);
            mailboxes.push(Mailbox {
                tx,
                wake: EventFd::new()?,
                sleeping: AtomicBool::new(false),
            });
        }
        let handle = WorkerHandle {
            mailboxes: mailboxes.into(),
        };

        let f = Arc::new(f);
        let (report_tx, report_rx) = crossbeam_channel::bounded::<StartReport>(count);
        let mut threads = Vec::with_capacity(count);
        // Bound: `count` workers.
        for (index, rx) in receivers.into_iter().enumerate() {
            let core = if config.pin && !cores.is_empty() {
                Some(cores[index % cores.len()])
            } else {
                None
            };
            let want_uring = uring.is_ok();
            let entries = config.uring_entries;
            let coop_taskrun = config.uring_coop_taskrun;
            let handle = handle.clone();
            let f = Arc::clone(&f);
            let report = report_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{}-{index}", config.name))
                .spawn(move || {
                    worker_main(WorkerStart {
                        index,
                        count,
                        core,
                        want_uring,
                        entries,
                        coop_taskrun,
                        handle,
                        rx,
                        f,
                        report,
                    })
                })?;
            threads.push(thread);
        }
        drop(report_tx);

        let mut drivers = vec![DriverKind::Legacy; count];
        let mut pinned = vec![None; count];
        // Bound: one report per worker; a worker that dies before reporting drops its sender,
        // and once all are gone `recv` fails instead of blocking.
        for _ in 0..count {
            let report = report_rx.recv().map_err(|_| RuntimeError::WorkerStart {
                index: usize::MAX,
                reason: "a worker thread exited before its runtime started".to_owned(),
            })?;
            match report.result {
                Ok((driver, core)) => {
                    drivers[report.index] = driver;
                    pinned[report.index] = core;
                }
                Err(reason) => {
                    return Err(RuntimeError::WorkerStart {
                        index: report.index,
                        reason,
                    });
                }
            }
        }

        let on_uring = drivers
            .iter()
            .filter(|d| **d == DriverKind::IoUring)
            .count();
        match &uring {
            Ok(()) if on_uring == count => {
                info!(workers = count, cores = ?pinned, "workers running monoio's io_uring driver");
            }
            Ok(()) => warn!(
                workers = count,
                on_io_uring = on_uring,
                "some workers could not build an io_uring runtime and run the legacy (epoll) driver"
            ),
            Err(reason) if config.force_legacy => {
                info!(workers = count, cores = ?pinned, "workers running monoio's legacy (epoll) driver: {reason}");
            }
            Err(reason) => warn!(
                workers = count,
                "io_uring unavailable ({reason}); workers fall back to monoio's legacy (epoll) driver"
            ),
        }

        Ok(Self {
            threads,
            handle,
            drivers,
            cores: pinned,
        })
    }

    /// A handle for sending to the workers from outside the pool.
    pub fn handle(&self) -> WorkerHandle<M> {
        self.handle.clone()
    }

    /// The driver each worker runs, by index.
    pub fn drivers(&self) -> &[DriverKind] {
        &self.drivers
    }

    /// The core each worker is pinned to, by index.
    pub fn cores(&self) -> &[Option<usize>] {
        &self.cores
    }

    /// Waits for every worker's future to complete.
    pub fn join(self) -> Result<(), RuntimeError> {
        let mut first_panic = None;
        // Bound: one join per worker.
        for (index, t) in self.threads.into_iter().enumerate() {
            if t.join().is_err() && first_panic.is_none() {
                first_panic = Some(index);
            }
        }
        match first_panic {
            Some(index) => Err(RuntimeError::WorkerPanicked { index }),
            None => Ok(()),
        }
    }
}

struct WorkerStart<M, F> {
    index: usize,
    count: usize,
    core: Option<usize>,
    want_uring: bool,
    entries: u32,
    coop_taskrun: bool,
    handle: WorkerHandle<M>,
    rx: Receiver<M>,
    f: Arc<F>,
    report: Sender<StartReport>,
}

fn worker_main<M, F, Fut>(start: WorkerStart<M, F>)
where
    M: Send + 'static,
    F: Fn(WorkerCtx<M>) -> Fut,
    Fut: Future<Output = ()>,
{
    let index = start.index;
    let core = start.core.filter(|&id| {
        let ok = core_affinity::set_for_current(core_affinity::CoreId { id });
        if !ok {
            warn!(
                worker = index,
                core = id,
                "could not pin worker to its core"
            );
        }
        ok
    });

    if start.want_uring {
        let mut urb = io_uring_monoio::IoUring::builder();
        if start.coop_taskrun {
            urb.setup_coop_taskrun();
        }
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(start.entries)
            .uring_builder(urb)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => {
                debug!(worker = index, ?core, "worker runtime: io_uring");
                rt.block_on(run_worker(start, DriverKind::IoUring, core));
                return;
            }
            Err(e) => {
                warn!(
                    worker = index,
                    "cannot build an io_uring runtime ({e}); using the legacy driver"
                );
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => {
            debug!(worker = index, ?core, "worker runtime: legacy");
            rt.block_on(run_worker(start, DriverKind::Legacy, core));
        }
        Err(e) => {
            let _ = start.report.send(StartReport {
                index,
                result: Err(format!("cannot build a legacy runtime either: {e}")),
            });
        }
    }
}

async fn run_worker<M, F, Fut>(start: WorkerStart<M, F>, driver: DriverKind, core: Option<usize>)
where
    M: Send + 'static,
    F: Fn(WorkerCtx<M>) -> Fut,
    Fut: Future<Output = ()>,
{
    let waiter = match start.handle.mailboxes[start.index].wake.waiter() {
        Ok(w) => w,
        Err(e) => {
            let _ = start.report.send(StartReport {
                index: start.index,
                result: Err(format!("cannot watch the inbox eventfd: {e}")),
            });
            return;
        }
    };
    let ctx = WorkerCtx {
        index: start.index,
        count: start.count,
        driver,
        core,
        inbox: Inbox {
            index: start.index,
            rx: start.rx,
            mailboxes: Arc::clone(&start.handle.mailboxes),
            waiter,
        },
        handle: start.handle,
    };
    let _ = start.report.send(StartReport {
        index: start.index,
        result: Ok((driver, core)),
    });
    drop(start.report);
    (start.f)(ctx).await;
}

/// How long the tests allow one cross-worker hand-off to take before calling it lost.
#[cfg(test)]
const HANDOFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn two_or_more_cores() -> usize {
        allowed_cores().len().max(1)
    }

    /// Every worker sends its index to every other worker and waits for all the others.
    fn ring_exchange(force_legacy: bool) -> (Vec<DriverKind>, Vec<Option<usize>>, Vec<Vec<usize>>) {
        let threads = two_or_more_cores().clamp(2, 4);
        let seen: Arc<Mutex<Vec<Vec<usize>>>> = Arc::new(Mutex::new(vec![Vec::new(); threads]));
        let seen2 = Arc::clone(&seen);
        let workers = Workers::<usize>::start(
            WorkersConfig {
                threads,
                force_legacy,
                name: "rt-test".into(),
                ..WorkersConfig::default()
            },
            move |mut ctx| {
                let seen = Arc::clone(&seen2);
                async move {
                    // Let every worker reach its first `recv` before the first send lands, so
                    // the eventfd wake-up path (not just the fast path) is exercised.
                    monoio::time::sleep(std::time::Duration::from_millis(50)).await;
                    for to in 0..ctx.count {
                        if to != ctx.index {
                            ctx.handle.send(to, ctx.index).unwrap();
                        }
                    }
                    let mut got = Vec::new();
                    for _ in 1..ctx.count {
                        let m = monoio::time::timeout(HANDOFF_TIMEOUT, ctx.inbox.recv())
                            .await
                            .expect("hand-off timed out")
                            .unwrap();
                        got.push(m);
                    }
                    got.sort_unstable();
                    seen.lock().unwrap()[ctx.index] = got;
                }
            },
        )
        .unwrap();
        let drivers = workers.drivers().to_vec();
        let cores = workers.cores().to_vec();
        workers.join().unwrap();
        let seen = seen.lock().unwrap().clone();
        (drivers, cores, seen)
    }

    #[test]
    fn runtime_workers_exchange_messages_on_io_uring() {
        let (drivers, cores, seen) = ring_exchange(false);
        let n = drivers.len();
        if probe_io_uring().is_ok() {
            assert!(
                drivers.iter().all(|d| *d == DriverKind::IoUring),
                "{drivers:?}"
            );
        }
        for (i, got) in seen.iter().enumerate() {
            let want: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            assert_eq!(got, &want, "worker {i}");
        }
        // Pinned to distinct cores whenever there are enough cores.
        if allowed_cores().len() >= n {
            let mut pinned: Vec<usize> = cores.iter().map(|c| c.expect("pinned")).collect();
            pinned.sort_unstable();
            pinned.dedup();
            assert_eq!(pinned.len(), n, "cores {cores:?}");
        }
    }

    #[test]
    fn runtime_forced_legacy_reports_legacy_and_still_messages() {
        let (drivers, _, seen) = ring_exchange(true);
        assert!(
            drivers.iter().all(|d| *d == DriverKind::Legacy),
            "{drivers:?}"
        );
        let n = drivers.len();
        for (i, got) in seen.iter().enumerate() {
            let want: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            assert_eq!(got, &want, "worker {i}");
        }
    }

    #[test]
    fn runtime_worker_ctx_reports_index_count_and_driver() {
        let seen: Arc<Mutex<Vec<(usize, usize, DriverKind)>>> = Arc::default();
        let seen2 = Arc::clone(&seen);
        let workers = Workers::<()>::start(
            WorkersConfig {
                threads: 3,
                pin: false,
                ..WorkersConfig::default()
            },
            move |ctx| {
                let seen = Arc::clone(&seen2);
                async move {
                    seen.lock()
                        .unwrap()
                        .push((ctx.index, ctx.count, ctx.driver));
                }
            },
        )
        .unwrap();
        let drivers = workers.drivers().to_vec();
        workers.join().unwrap();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable_by_key(|s| s.0);
        assert_eq!(seen.len(), 3);
        for (i, (index, count, driver)) in seen.into_iter().enumerate() {
            assert_eq!((index, count, driver), (i, 3, drivers[i]));
        }
    }

    /// CPU time this thread has run, in ns.
    fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn runtime_idle_worker_sleeps_until_woken() {
        for force_legacy in [false, true] {
            // (CPU ns spent waiting, wall time waited), reported by worker 0.
            let waited: Arc<Mutex<Option<(u64, std::time::Duration)>>> = Arc::default();
            let waited2 = Arc::clone(&waited);
            let workers = Workers::<std::time::Instant>::start(
                WorkersConfig {
                    threads: 2,
                    force_legacy,
                    ..WorkersConfig::default()
                },
                move |mut ctx| {
                    let waited = Arc::clone(&waited2);
                    async move {
                        if ctx.index == 1 {
                            monoio::time::sleep(std::time::Duration::from_millis(300)).await;
                            ctx.handle.send(0, std::time::Instant::now()).unwrap();
                            return;
                        }
                        let cpu = thread_cpu_ns();
                        let sent = monoio::time::timeout(HANDOFF_TIMEOUT, ctx.inbox.recv())
                            .await
                            .expect("hand-off timed out")
                            .unwrap();
                        *waited.lock().unwrap() = Some((thread_cpu_ns() - cpu, sent.elapsed()));
                    }
                },
            )
            .unwrap();
            workers.join().unwrap();
            let (cpu, latency) = waited.lock().unwrap().expect("worker 0 reported");
            // Busy-polling for 300 ms would burn ~300 ms of CPU; sleeping costs well under 50.
            assert!(
                cpu < 50_000_000,
                "legacy={force_legacy}: {cpu} ns of CPU while idle"
            );
            // Woken by the eventfd, not by some later timer: generous for a shared machine.
            assert!(
                latency < std::time::Duration::from_millis(250),
                "legacy={force_legacy}: woke {latency:?} after the send"
            );
        }
    }

    #[test]
    fn runtime_many_messages_from_outside_and_full_inbox() {
        const N: usize = 10_000;
        let total = Arc::new(Mutex::new(0usize));
        let total2 = Arc::clone(&total);
        let workers = Workers::<u32>::start(
            WorkersConfig {
                threads: 1,
                inbox_capacity: 64,
                ..WorkersConfig::default()
            },
            move |mut ctx| {
                let total = Arc::clone(&total2);
                async move {
                    let mut sum = 0usize;
                    // Bound: stops at the u32::MAX sentinel, sent last.
                    loop {
                        let m = monoio::time::timeout(HANDOFF_TIMEOUT, ctx.inbox.recv())
                            .await
                            .expect("hand-off timed out")
                            .unwrap();
                        if m == u32::MAX {
                            break;
                        }
                        sum += m as usize;
                    }
                    *total.lock().unwrap() = sum;
                }
            },
        )
        .unwrap();
        let h = workers.handle();
        assert!(matches!(h.send(7, 1), Err(SendError::NoSuchWorker(1))));
        let mut sent = 0usize;
        // Bound: N messages plus the sentinel, each retried (yielding) until the worker drains
        // its 64-slot inbox, which it does while it runs.
        for m in (0..N as u32).chain([u32::MAX]) {
            let mut m = m;
            loop {
                match h.send(0, m) {
                    Ok(()) => break,
                    Err(SendError::Full(back)) => {
                        m = back;
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            if m != u32::MAX {
                sent += m as usize;
            }
        }
        workers.join().unwrap();
        assert_eq!(*total.lock().unwrap(), sent);
    }
}
