//! [`Load`]: a background client sending `GET /load/N` through the edge at a fixed pace, on
//! fresh connections, recording every answer ([`Sample`]); a request counts as good only with
//! a 2xx and the body a `HashOrigin` gives for that path. The fault and transport tests run it
//! across kills, restarts and switches, then assert on the counts ([`report`], [`failures`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::wait_for;
use crate::raw_client::{RawClient, request_bytes};

/// One request every `PACE` (never faster; a slow answer delays the next one).
pub const PACE: Duration = Duration::from_millis(10);

/// One request of the load: when it was sent, whether it was a 2xx with the right body, the
/// origin tag that answered and, for failures, what went wrong.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub ok: bool,
    pub tag: Option<String>,
    pub detail: String,
}

/// A background thread doing `GET /load/N` on fresh connections through the edge.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, host: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, samples, host) = (stop.clone(), samples.clone(), host.to_string());
            std::thread::spawn(move || {
                let mut next = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    let at = Instant::now();
                    next = at + PACE;
                    let path = format!("/load/{n}");
                    n += 1;
                    let s = one_get(addr, &host, &path, at);
                    samples.lock().expect("samples").push(s);
                }
            })
        };
        Self {
            stop,
            samples,
            handle: Some(handle),
        }
    }

    /// Starts the load and waits until it is served (20 good answers in a row); returns the
    /// load and when the streak ended.
    pub fn start_served(addr: SocketAddr, host: &str) -> (Self, Instant) {
        let load = Self::start(addr, host);
        let served = load.wait_streak(
            "load to be served",
            Instant::now(),
            20,
            Duration::from_secs(30),
        );
        (load, served)
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples").clone()
    }

    /// Waits (failure limit `limit`) for `n` good answers in a row among requests sent after
    /// `since`; returns when the first of them was sent.
    pub fn wait_streak(&self, what: &str, since: Instant, n: usize, limit: Duration) -> Instant {
        wait_for(what, limit, || {
            let samples = self.samples();
            let mut run_start = None;
            let mut run = 0;
            for s in samples.iter().filter(|s| s.at >= since) {
                if s.ok {
                    if run == 0 {
                        run_start = Some(s.at);
                    }
                    run += 1;
                    if run >= n {
                        return run_start;
                    }
                } else {
                    run = 0;
                }
            }
            None
        })
    }

    /// Stops the thread (after its request in flight) and returns every sample.
    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("load thread");
        }
        self.samples()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn one_get(addr: SocketAddr, host: &str, path: &str, at: Instant) -> Sample {
    let fail = |detail: String| Sample {
        at,
        ok: false,
        tag: None,
        detail,
    };
    let mut c = match RawClient::connect_timeout(addr, Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => return fail(format!("connect: {e}")),
    };
    let r = match c.request(&request_bytes("GET", host, path, &[], None, true), false) {
        Ok(r) => r,
        Err(e) => return fail(format!("I/O: {e}")),
    };
    let tag = r.header("X-Origin-Tag").map(str::to_string);
    let want = format!("tag={} path={path}", tag.as_deref().unwrap_or("?"));
    if (200..300).contains(&r.status) && tag.is_some() && r.body == want.as_bytes() {
        Sample {
            at,
            ok: true,
            tag,
            detail: String::new(),
        }
    } else {
        Sample {
            at,
            ok: false,
            tag,
            detail: r.summary(),
        }
    }
}

/// Prints sent/ok/failed (with the first failures and the tags that answered); returns
/// (sent, ok, failed).
pub fn report(test: &str, samples: &[Sample]) -> (usize, usize, usize) {
    let ok = samples.iter().filter(|s| s.ok).count();
    let failed = samples.len() - ok;
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.ok) {
        *tags.entry(s.tag.as_deref().unwrap_or("none")).or_default() += 1;
    }
    eprintln!(
        "[{test}] sent={} ok={ok} failed={failed} tags={tags:?}",
        samples.len()
    );
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.ok) {
        let kind = s.detail.split(" [").next().unwrap_or_default();
        *kinds.entry(kind.chars().take(40).collect()).or_default() += 1;
    }
    if !kinds.is_empty() {
        eprintln!("[{test}] failures by kind: {kinds:?}");
    }
    let t0 = samples.first().map(|s| s.at);
    for s in samples.iter().filter(|s| !s.ok).take(5) {
        eprintln!(
            "[{test}]   failure at +{:?}: {}",
            t0.map(|t| s.at - t).unwrap_or_default(),
            s.detail
        );
    }
    (samples.len(), ok, failed)
}

pub fn failures(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| !s.ok)
        .take(5)
        .map(|s| s.detail.clone())
        .collect()
}
