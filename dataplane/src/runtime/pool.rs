//! The worker pool: one thread per core, each pinned and running its own monoio runtime.

use std::{fmt, future::Future, sync::Arc, thread::JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use tracing::{debug, info, warn};

use super::mailbox::{Inbox, Mailboxes, WorkerHandle};
use super::probe::probe_io_uring;
use super::{DriverKind, RuntimeError, WorkerStartError, WorkersConfig};

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
    result: Result<(DriverKind, Option<usize>), WorkerStartError>,
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

/// Online cores this process may run on (its affinity mask), in order.
pub(super) fn allowed_cores() -> Vec<usize> {
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

        // `None`: not probed, because the configuration forces the legacy driver.
        let uring = (!config.force_legacy).then(probe_io_uring);
        let want_uring = matches!(uring, Some(Ok(())));

        let (handle, receivers) = Mailboxes::new(count, config.inbox_capacity)?.into_parts();

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
            let report = report_rx.recv().map_err(|_| RuntimeError::WorkerVanished)?;
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
            Some(Ok(())) if on_uring == count => {
                info!(workers = count, cores = ?pinned, "workers running monoio's io_uring driver");
            }
            Some(Ok(())) => warn!(
                workers = count,
                on_io_uring = on_uring,
                "some workers could not build an io_uring runtime and run the legacy (epoll) driver"
            ),
            None => {
                info!(workers = count, cores = ?pinned, "workers running monoio's legacy (epoll) driver: force_legacy is set");
            }
            Some(Err(reason)) => warn!(
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
                result: Err(WorkerStartError::LegacyRuntime(e)),
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
    let inbox = match start.handle.inbox(start.index, start.rx) {
        Ok(inbox) => inbox,
        Err(e) => {
            let _ = start.report.send(StartReport {
                index: start.index,
                result: Err(WorkerStartError::InboxWatch(e)),
            });
            return;
        }
    };
    let ctx = WorkerCtx {
        index: start.index,
        count: start.count,
        driver,
        core,
        inbox,
        handle: start.handle,
    };
    let _ = start.report.send(StartReport {
        index: start.index,
        result: Ok((driver, core)),
    });
    drop(start.report);
    (start.f)(ctx).await;
}
