//! The runtime's tests: real worker pools on this machine's cores, on both drivers.

use std::sync::{Arc, Mutex};

use super::pool::allowed_cores;
use super::*;

/// How long the tests allow one cross-worker hand-off to take before calling it lost.
const HANDOFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
