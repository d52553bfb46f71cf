//! A whole run: pinned worker threads (dataplane's monoio pool), lanes spread over them, the
//! live progress line, and the merged result.
//!
//! Timeline: workers start and dial → `T0` (warm-up starts; nothing is sent before) →
//! `T0 + warmup` (the measured window opens) → window end (no request starts after it;
//! those in flight are waited for, up to `--timeout`).

use std::{
    cell::RefCell,
    io::{IsTerminal, Write},
    rc::Rc,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dataplane::runtime::{Workers, WorkersConfig};

use crate::{
    clock::now_ns,
    lane::{Lane, Load, RunShared},
    stats::{Live, Recorder, Totals, Window},
    target::Target,
    transport::Dialer,
    watchdog::Watchdog,
};

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    pub dialer: Dialer,
    pub connections: usize,
    pub threads: usize,
    pub load: Load,
    pub stop: Stop,
    pub warmup: Duration,
    pub timeout: Duration,
    pub conn_per_request: bool,
    /// `Some(streams)` for HTTP/2.
    pub h2_streams: Option<usize>,
    /// Pin worker thread i to core i.
    pub pin: bool,
    /// monoio's epoll driver instead of io_uring.
    pub epoll: bool,
    /// Print the progress line (stderr is a terminal).
    pub progress: bool,
}

/// Why a run could not happen at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error(transparent)]
    Workers(#[from] dataplane::runtime::RuntimeError),
}

/// The merged result and how long the measured window was.
#[derive(Debug)]
pub struct Outcome {
    pub totals: Totals,
    pub elapsed: Duration,
    pub threads: usize,
    pub driver: String,
}

/// Checks once, before any thread starts, that the target accepts connections at all: a
/// dead target is one clear error, not a run full of connect errors.
fn preflight(plan: &Plan) -> Result<(), RunError> {
    std::net::TcpStream::connect_timeout(&plan.dialer.addr, plan.timeout)
        .map(drop)
        .map_err(|e| RunError::Unreachable {
            addr: plan.dialer.addr.to_string(),
            reason: e.to_string(),
        })
}

/// Set by the Ctrl-C handler; every lane stops starting requests and the report covers what
/// was measured until then.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::Relaxed) {
        // A second Ctrl-C: the user does not want to wait for in-flight requests.
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Raises the soft descriptor limit to the hard one: each connection is a socket (and, in open
/// loop, a timerfd and its duplicate), and the usual soft limit of 1,024 would cap `-c` far
/// below what the hard limit allows.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub fn run(plan: Plan) -> Result<Outcome, RunError> {
    preflight(&plan)?;
    raise_fd_limit();
    let threads = plan.threads.clamp(1, plan.connections.max(1));
    let streams = plan.h2_streams.unwrap_or(1);
    let lanes = (plan.connections * streams) as u64;

    // Dialing happens between worker start and T0; give each thread's connections time to
    // establish (loopback dials take tens of microseconds each).
    let lead = Duration::from_millis(50) + Duration::from_micros(100) * (plan.connections as u32);
    let t0_ns = now_ns() + lead.as_nanos() as u64;
    let start_ns = t0_ns + plan.warmup.as_nanos() as u64;
    let (end_ns, tickets) = match plan.stop {
        Stop::After(d) => (start_ns + d.as_nanos() as u64, None),
        Stop::Requests(n) => (u64::MAX, Some(AtomicU64::new(n))),
    };
    let shared = Arc::new(RunShared {
        target: plan.target.clone(),
        dialer: plan.dialer.clone(),
        load: plan.load,
        lanes,
        t0_ns,
        window: Window { start_ns, end_ns },
        tickets,
        stop: AtomicBool::new(false),
        timeout: plan.timeout,
        conn_per_request: plan.conn_per_request,
    });

    let lives: Arc<Vec<Arc<Live>>> = Arc::new((0..threads).map(|_| Arc::default()).collect());
    let results: Arc<Mutex<Vec<Recorder>>> = Arc::default();
    let finished = Arc::new(AtomicUsize::new(0));
    let connections = plan.connections;
    let h2 = plan.h2_streams.is_some();

    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    let workers = {
        let (shared, lives, results, finished) = (
            shared.clone(),
            lives.clone(),
            results.clone(),
            finished.clone(),
        );
        Workers::<()>::start(
            WorkersConfig {
                threads,
                name: "loadgen".to_owned(),
                pin: plan.pin,
                // 12 % less CPU per request and 8 % more requests/s against nginx on the 2-core
                // VM (bench/results/2026-11-26/loadgen_vs_wrk.md).
                uring_coop_taskrun: true,
                force_legacy: plan.epoll,
                // 1,000 connections on one thread keep ~1,000 operations in flight.
                uring_entries: 4096,
                ..WorkersConfig::default()
            },
            move |ctx| {
                let (shared, results, finished) =
                    (shared.clone(), results.clone(), finished.clone());
                let live = lives[ctx.index].clone();
                async move {
                    let recorder = Rc::new(RefCell::new(Recorder::new(live)));
                    worker(
                        &shared,
                        ctx.index,
                        ctx.count,
                        connections,
                        streams,
                        h2,
                        &recorder,
                    )
                    .await;
                    let recorder = Rc::try_unwrap(recorder)
                        .map(RefCell::into_inner)
                        .unwrap_or_else(|rc| {
                            // Every lane future has finished, so this cannot happen; keep the
                            // data anyway rather than panic.
                            let mut r = Recorder::new(Arc::default());
                            std::mem::swap(&mut r, &mut rc.borrow_mut());
                            r
                        });
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(recorder);
                    finished.fetch_add(1, Ordering::Release);
                }
            },
        )?
    };
    let driver = workers
        .drivers()
        .first()
        .map(|d| d.to_string())
        .unwrap_or_default();

    progress_loop(&plan, &shared, &lives, &finished, threads);
    workers.join()?;

    let recorders = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    let totals = Totals::merge(recorders);
    let window_end = match plan.stop {
        Stop::After(_) if !INTERRUPTED.load(Ordering::Relaxed) => end_ns,
        _ => totals.last_done_ns.max(start_ns),
    };
    Ok(Outcome {
        totals,
        elapsed: Duration::from_nanos(window_end.saturating_sub(start_ns)),
        threads,
        driver,
    })
}

/// One worker thread: its share of the connections, each as its own task.
async fn worker(
    shared: &Arc<RunShared>,
    index: usize,
    count: usize,
    connections: usize,
    streams: usize,
    h2: bool,
    recorder: &Rc<RefCell<Recorder>>,
) {
    let watchdog = Rc::new(Watchdog::default());
    if !h2 {
        let (watchdog, timeout) = (watchdog.clone(), shared.timeout);
        monoio::spawn(async move { watchdog.run(timeout).await });
    }
    let mut tasks = Vec::new();
    // Connection `c` lives on thread `c % count`; its lanes are `s·C + c`, so neighbouring
    // slots of the open-loop schedule fall on different connections and threads.
    for c in (index..connections).step_by(count) {
        let lanes: Vec<Lane> = (0..streams)
            .map(|s| Lane::new((s * connections + c) as u64))
            .collect();
        let (shared, recorder, watchdog) = (shared.clone(), recorder.clone(), watchdog.clone());
        tasks.push(monoio::spawn(async move {
            if h2 {
                crate::h2::run_connection(&shared, lanes, recorder).await;
            } else {
                for lane in lanes {
                    let watch = watchdog.register();
                    crate::h1::run_lane(&shared, lane, recorder.clone(), watch).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    watchdog.finish();
}

/// Prints a progress line once a second on a terminal, and relays Ctrl-C to the lanes,
/// until every worker is done.
fn progress_loop(
    plan: &Plan,
    shared: &RunShared,
    lives: &[Arc<Live>],
    finished: &AtomicUsize,
    threads: usize,
) {
    let tty = plan.progress && std::io::stderr().is_terminal();
    let mut last = (now_ns(), 0u64);
    let mut printed = false;
    // Bounded by the run: workers finish at the window's end plus at most one timeout.
    while finished.load(Ordering::Acquire) < threads {
        std::thread::sleep(Duration::from_millis(100));
        if INTERRUPTED.load(Ordering::Relaxed) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        let now = now_ns();
        if !tty || now - last.0 < 1_000_000_000 {
            continue;
        }
        let responses: u64 = lives
            .iter()
            .map(|l| l.responses.load(Ordering::Relaxed))
            .sum();
        let errors: u64 = lives.iter().map(|l| l.errors.load(Ordering::Relaxed)).sum();
        let rate = (responses - last.1) as f64 / ((now - last.0) as f64 / 1e9);
        let phase = if now < shared.window.start_ns {
            "warm-up"
        } else {
            "measuring"
        };
        let secs = now.saturating_sub(shared.t0_ns) as f64 / 1e9;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{secs:6.1}s {phase:9} {rate:>12.0} req/s {responses:>12} responses {errors:>8} errors"
        );
        let _ = err.flush();
        printed = true;
        last = (now, responses);
    }
    if printed {
        let _ = writeln!(std::io::stderr());
    }
}
