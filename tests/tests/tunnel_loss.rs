//! The tunnel under UDP packet loss: the connector reaches the edge through a [`LossyRelay`]
//! that drops a fixed share of the QUIC datagrams in each direction (the edge, the control
//! plane and the origin are normal). Every request through the edge must still succeed with the
//! right body. Each test prints its counts and the throughput it saw; deadlines are failure
//! limits only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringway_tests::connector::Connector;
use ringway_tests::lossy_relay::LossyRelay;
use ringway_tests::origins::Nginx;
use ringway_tests::payload::{pseudo_random_bytes, sha256_hex};
use ringway_tests::prelude::*;

const ZONE: &str = "loss.test";
/// Small GETs, each on a fresh connection to the edge.
const SMALL: usize = 200;
const SMALL_THREADS: usize = 4;
/// 1 MiB downloads.
const BULK: usize = 8;
const BULK_THREADS: usize = 2;
const BULK_SIZE: usize = 1 << 20;
/// Failure limit for the whole workload of one test.
const LIMIT: Duration = Duration::from_secs(120);

/// One request: its path and, if it failed, why.
#[derive(Debug, Clone)]
struct Outcome {
    path: String,
    error: Option<String>,
}

/// `GET path` through the edge on a fresh connection; checks the status and the body.
fn get_checked(edge: SocketAddr, host: &str, path: &str, check: &dyn Fn(&[u8]) -> bool) -> Outcome {
    let error = match RawClient::connect_timeout(edge, Duration::from_secs(30))
        .and_then(|mut c| c.request(&request_bytes("GET", host, path, &[], None, true), false))
    {
        Err(e) => Some(format!("I/O: {e}")),
        Ok(r) if r.status != 200 => Some(format!("status: {}", r.summary())),
        Ok(r) if !check(&r.body) => Some(format!(
            "wrong body ({} bytes, sha256 {})",
            r.body.len(),
            sha256_hex(&r.body)
        )),
        Ok(_) => None,
    };
    Outcome {
        path: path.to_string(),
        error,
    }
}

/// Runs `jobs` on `threads` threads (job i on thread i % threads); a job not started before
/// `deadline` counts as failed.
fn run_jobs(
    jobs: Vec<Box<dyn Fn() -> Outcome + Send + Sync>>,
    threads: usize,
    deadline: Instant,
) -> Vec<Outcome> {
    let jobs = Arc::new(jobs);
    let out = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (jobs, out) = (jobs.clone(), out.clone());
            std::thread::spawn(move || {
                for (i, job) in jobs.iter().enumerate().skip(t).step_by(threads) {
                    let o = if Instant::now() < deadline {
                        job()
                    } else {
                        Outcome {
                            path: format!("job {i}"),
                            error: Some(format!("not sent: the {LIMIT:?} limit passed")),
                        }
                    };
                    out.lock().expect("outcomes").push(o);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("request thread");
    }
    out.lock().expect("outcomes").clone()
}

/// Starts the whole path with `loss_percent`% loss between connector and edge, runs the small
/// GETs and the 1 MiB downloads, reports, and asserts that every request succeeded.
fn every_request_succeeds(loss_percent: u32, seed: u64, ha: usize) {
    let test = format!("loss {loss_percent}%");
    let t = TunnelSetup::new(ZONE);
    let nginx = Nginx::start();
    let small_dir = nginx.root().join("s");
    let bulk_dir = nginx.root().join("b");
    std::fs::create_dir_all(&small_dir).expect("small dir");
    std::fs::create_dir_all(&bulk_dir).expect("bulk dir");
    let small_bodies: Vec<Vec<u8>> = (0..SMALL)
        .map(|i| format!("small {i} under {loss_percent}% loss\n").into_bytes())
        .collect();
    for (i, b) in small_bodies.iter().enumerate() {
        std::fs::write(small_dir.join(format!("{i}.txt")), b).expect("write small file");
    }
    let bulk_hashes: Vec<String> = (0..BULK)
        .map(|i| {
            let b = pseudo_random_bytes(BULK_SIZE, seed ^ (i as u64 + 1));
            std::fs::write(bulk_dir.join(format!("{i}.bin")), &b).expect("write bulk file");
            sha256_hex(&b)
        })
        .collect();

    let host = format!("l{loss_percent}.{ZONE}");
    let name = format!("loss{loss_percent}");
    let id = t.tunnel(&name, &[&host]);
    let relay = LossyRelay::start(t.edge.tunnel_addrs()[0], loss_percent, seed);
    let args = t.run_args(
        &id,
        &id,
        &nginx.url(),
        &t.edge.connector_args_via(&[relay.addr()]),
        &["--ha-connections", &ha.to_string()],
    );
    let started = Instant::now();
    let conn = Connector::start_n(t.cli(), &args, ha);
    t.wait_served(&host);
    let ready = started.elapsed();

    let edge = t.edge.http_addr();
    let deadline = Instant::now() + LIMIT;
    let small_jobs: Vec<Box<dyn Fn() -> Outcome + Send + Sync>> = small_bodies
        .into_iter()
        .enumerate()
        .map(|(i, want)| {
            let host = host.clone();
            Box::new(move || get_checked(edge, &host, &format!("/s/{i}.txt"), &|b| b == want))
                as Box<dyn Fn() -> Outcome + Send + Sync>
        })
        .collect();
    let t0 = Instant::now();
    let small = run_jobs(small_jobs, SMALL_THREADS, deadline);
    let small_secs = t0.elapsed().as_secs_f64();

    let bulk_jobs: Vec<Box<dyn Fn() -> Outcome + Send + Sync>> = bulk_hashes
        .into_iter()
        .enumerate()
        .map(|(i, want)| {
            let host = host.clone();
            Box::new(move || {
                get_checked(edge, &host, &format!("/b/{i}.bin"), &|b| {
                    b.len() == BULK_SIZE && sha256_hex(b) == want
                })
            }) as Box<dyn Fn() -> Outcome + Send + Sync>
        })
        .collect();
    let t1 = Instant::now();
    let bulk = run_jobs(bulk_jobs, BULK_THREADS, deadline);
    let bulk_secs = t1.elapsed().as_secs_f64();
    let stats = relay.stats();

    let all: Vec<&Outcome> = small.iter().chain(bulk.iter()).collect();
    let failed: Vec<&&Outcome> = all.iter().filter(|o| o.error.is_some()).collect();
    let ok = all.len() - failed.len();
    let bulk_ok = bulk.iter().filter(|o| o.error.is_none()).count();
    let small_ok = small.iter().filter(|o| o.error.is_none()).count();
    eprintln!(
        "[{test}] requests={} ok={ok} failed={} small_rps={:.1} bulk_MBps={:.2}",
        all.len(),
        failed.len(),
        small_ok as f64 / small_secs.max(1e-9),
        (bulk_ok * BULK_SIZE) as f64 / 1e6 / bulk_secs.max(1e-9),
    );
    let pct = |d: u64, f: u64| 100.0 * d as f64 / (d + f).max(1) as f64;
    eprintln!(
        "[{test}] notes: ha={ha} seed={seed} ready_in={ready:.2?} small={SMALL}x{SMALL_THREADS}thr \
         in {small_secs:.2}s bulk={BULK}x1MiB/{BULK_THREADS}thr in {bulk_secs:.2}s \
         dropped up={}/{} ({:.1}%) down={}/{} ({:.1}%)",
        stats.up_dropped,
        stats.up_dropped + stats.up_forwarded,
        pct(stats.up_dropped, stats.up_forwarded),
        stats.down_dropped,
        stats.down_dropped + stats.down_forwarded,
        pct(stats.down_dropped, stats.down_forwarded),
    );
    for o in failed.iter().take(5) {
        eprintln!(
            "[{test}]   failed {}: {}",
            o.path,
            o.error.as_deref().unwrap_or("")
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed under {loss_percent}% loss; first: {:?}\n{}\n{}",
        failed.len(),
        all.len(),
        failed.iter().take(5).collect::<Vec<_>>(),
        conn.logs(),
        t.edge.logs()
    );
    // The relay really dropped traffic both ways (so the test tested something).
    if loss_percent > 0 {
        assert!(
            stats.up_dropped > 0 && stats.down_dropped > 0,
            "the relay dropped nothing: {stats:?}"
        );
    }
}

#[test]
fn one_percent_loss_every_request_succeeds() {
    every_request_succeeds(1, 0x5EED_0001, 2);
}

#[test]
fn five_percent_loss_every_request_succeeds() {
    every_request_succeeds(5, 0x5EED_0005, 2);
}
