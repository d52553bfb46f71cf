//! Helpers of the QUIC handshake-flood tests (`tests/edge_flood.rs`): a flooder that sends
//! *valid* QUIC Initials from many UDP sockets at a bounded rate and never answers, a request
//! loop through the edge, and a process's RSS and CPU time from `/proc`.
//!
//! The Initials are real first flights of quinn-proto client connections (TLS 1.3
//! ClientHello with the edge's ALPN, SNI and key shares, protected with the Initial keys of
//! a fresh destination CID), built before the flood starts so that building them does not
//! compete with the edge for CPU while it runs. Each connection is dropped right after its
//! first flight is taken, so nothing ever answers the edge: to the edge every attempt is a
//! client that went silent after its ClientHello, from an address that may be spoofed.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::quic::{DEFAULT_SERVER_NAME, QuicConfig, tls};

use crate::raw_client::{RawClient, request_bytes};

/// Long-header packet types of QUIC v1 (RFC 9000 §17.2), bits 4-5 of the first byte.
const LONG_HEADER: u8 = 0x80;
const TYPE_INITIAL: u8 = 0;
const TYPE_RETRY: u8 = 3;

/// One connection attempt's first flight: the datagrams to send, and the source CID the
/// server's answers carry as their destination CID.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub datagrams: Vec<Vec<u8>>,
    pub scid: Vec<u8>,
}

/// Builds `count` first flights towards `target`, as a client trusting `ca_pem`. With the
/// default key shares (X25519MLKEM768 first) each ClientHello spans two Initial datagrams.
pub fn prepare_attempts(target: SocketAddr, ca_pem: &[u8], count: usize) -> Vec<Attempt> {
    // The flooder never accepts streams; with no stream credit quinn allocates no stream
    // state for the connections it builds (thousands of them).
    let cfg = QuicConfig {
        max_concurrent_bidi_streams: 0,
        ..QuicConfig::default()
    };
    let crypto = tls::client_crypto(ca_pem, &cfg.alpn).expect("flooder TLS config");
    let client = cfg.client_config(crypto).expect("flooder QUIC config");
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let now = Instant::now();
    let mut out = Vec::with_capacity(count);
    let mut buf = Vec::new();
    for _ in 0..count {
        let (_, mut conn) = endpoint
            .connect(now, client.clone(), target, DEFAULT_SERVER_NAME)
            .expect("flooder connect");
        let mut datagrams = Vec::new();
        // Bound: a first flight is one ClientHello, at most a few datagrams.
        for _ in 0..8 {
            buf.clear();
            let Some(t) = conn.poll_transmit(now, 1, &mut buf) else {
                break;
            };
            datagrams.push(buf[..t.size].to_vec());
        }
        let scid = datagrams
            .first()
            .and_then(|d| long_header_scid(d))
            .unwrap_or_default();
        out.push(Attempt { datagrams, scid });
        // Dropping the connection is the point: nothing will ever answer the edge.
    }
    out
}

/// The source CID of a long-header packet.
fn long_header_scid(p: &[u8]) -> Option<Vec<u8>> {
    let dcid_len = usize::from(*p.get(5)?);
    let scid_len_at = 6 + dcid_len;
    let scid_len = usize::from(*p.get(scid_len_at)?);
    Some(p.get(scid_len_at + 1..scid_len_at + 1 + scid_len)?.to_vec())
}

/// The destination CID of a long-header packet.
fn long_header_dcid(p: &[u8]) -> Option<&[u8]> {
    let dcid_len = usize::from(*p.get(5)?);
    p.get(6..6 + dcid_len)
}

/// What a flood sent and what came back.
#[derive(Debug, Clone, Default)]
pub struct FloodReport {
    /// Connection attempts sent (each one first flight).
    pub attempts: u64,
    pub datagrams_sent: u64,
    /// Sends the kernel refused (a full socket buffer); the attempt still counts.
    pub send_errors: u64,
    /// Retry packets received: the edge validated addresses instead of handshaking.
    pub retries: u64,
    /// Initial packets received (the edge's handshake answers, or refusals).
    pub initials: u64,
    /// Any other datagram received.
    pub other: u64,
    /// Attempts that got at least one non-Retry answer (handshakes the edge started, or
    /// refused).
    pub answered_attempts: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    /// Attempts per second actually sent.
    pub fn rate(&self) -> f64 {
        self.attempts as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A flood in progress on its own thread: `rate` attempts per second round-robin over
/// `sockets` UDP sockets (so the edge sees many source ports, spread over its workers),
/// until [`Flood::stop`] or the attempts run out.
#[derive(Debug)]
pub struct Flood {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<FloodReport>>,
}

impl Flood {
    pub fn start(target: SocketAddr, attempts: Vec<Attempt>, rate: u32, sockets: usize) -> Self {
        let total = attempts.len();
        Self::start_repeating(target, attempts, rate, sockets, total)
    }

    /// Like [`Flood::start`], but sends `total` attempts, replaying `attempts` in turn (from
    /// other source ports, so each replay is a new attempt to the edge): rates beyond what
    /// building fresh first flights allows.
    pub fn start_repeating(
        target: SocketAddr,
        attempts: Vec<Attempt>,
        rate: u32,
        sockets: usize,
        total: usize,
    ) -> Self {
        assert!(!attempts.is_empty(), "nothing to send");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || flood(target, &attempts, total, rate, sockets, &stop))
        };
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Whether it is still sending.
    pub fn running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops sending (at once) and returns the counts.
    pub fn stop(mut self) -> FloodReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("flood thread")
    }

    /// Waits until every attempt is sent (answers that arrive meanwhile are counted).
    pub fn finish(mut self) -> FloodReport {
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("flood thread")
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn flood(
    target: SocketAddr,
    attempts: &[Attempt],
    total: usize,
    rate: u32,
    sockets: usize,
    stop: &AtomicBool,
) -> FloodReport {
    let socks: Vec<UdpSocket> = (0..sockets.max(1))
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("flooder socket");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let mut report = FloodReport::default();
    let mut answered: HashSet<Vec<u8>> = HashSet::new();
    let mut recv_buf = vec![0u8; 2048];
    let start = Instant::now();
    let mut next = 0usize;
    let mut drain = |report: &mut FloodReport, answered: &mut HashSet<Vec<u8>>| {
        for s in &socks {
            // Bound: a socket's receive buffer holds finitely many datagrams.
            while let Ok((n, _)) = s.recv_from(&mut recv_buf) {
                let p = &recv_buf[..n];
                let first = p.first().copied().unwrap_or(0);
                if first & LONG_HEADER == 0 {
                    report.other += 1;
                    continue;
                }
                match (first >> 4) & 0x3 {
                    TYPE_RETRY => report.retries += 1,
                    kind => {
                        if kind == TYPE_INITIAL {
                            report.initials += 1;
                        } else {
                            report.other += 1;
                        }
                        if let Some(dcid) = long_header_dcid(p)
                            && answered.insert(dcid.to_vec())
                        {
                            report.answered_attempts += 1;
                        }
                    }
                }
            }
        }
    };
    while next < total && !stop.load(Ordering::SeqCst) {
        // Every attempt due by now goes out, then a short sleep: the rate holds on average
        // and never exceeds `rate` over any tick.
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as usize).min(total);
        while next < due {
            let sock = &socks[next % socks.len()];
            for d in &attempts[next % attempts.len()].datagrams {
                match sock.send_to(d, target) {
                    Ok(_) => report.datagrams_sent += 1,
                    Err(_) => report.send_errors += 1,
                }
            }
            next += 1;
            report.attempts += 1;
        }
        drain(&mut report, &mut answered);
        std::thread::sleep(Duration::from_millis(1));
    }
    report.elapsed = start.elapsed();
    // Answers still in flight (the edge answers within milliseconds on loopback).
    std::thread::sleep(Duration::from_millis(200));
    drain(&mut report, &mut answered);
    report
}

/// A process's resident set size in KiB (`VmRSS` in `/proc/PID/status`).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process's CPU time so far (user + system, from `/proc/PID/stat`).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Samples a process's RSS on its own thread and keeps the peak.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(Ordering::SeqCst) {
                    peak = peak.max(vm_rss_kib(pid).unwrap_or(0));
                    std::thread::sleep(every);
                }
                peak.max(vm_rss_kib(pid).unwrap_or(0))
            })
        };
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// The peak RSS in KiB.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("rss thread")
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The outcome of a request loop.
#[derive(Debug, Clone, Default)]
pub struct LoopReport {
    pub ok: usize,
    pub failed: usize,
    /// The first few failures, for the assertion message.
    pub failures: Vec<String>,
}

impl LoopReport {
    pub fn sent(&self) -> usize {
        self.ok + self.failed
    }

    /// The share of requests that succeeded, 0..=1.
    pub fn success(&self) -> f64 {
        self.ok as f64 / self.sent().max(1) as f64
    }
}

/// A thread doing `GET /loop/N` with `Host: host` through the edge at `addr`, one request
/// per `pace` at most, each on a fresh connection. A request succeeds when a
/// [`crate::origins::HashOrigin`] answered it: 2xx, an `X-Origin-Tag`, and the body naming the path.
#[derive(Debug)]
pub struct RequestLoop {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoopReport>>,
    handle: Option<JoinHandle<()>>,
}

impl RequestLoop {
    pub fn start(addr: SocketAddr, host: &str, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoopReport::default()));
        let handle = {
            let (stop, report, host) = (stop.clone(), report.clone(), host.to_string());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    let path = format!("/loop/{n}");
                    n += 1;
                    let outcome = one_get(addr, &host, &path);
                    {
                        let mut r = report.lock().expect("loop report");
                        match outcome {
                            Ok(()) => r.ok += 1,
                            Err(e) => {
                                r.failed += 1;
                                if r.failures.len() < 5 {
                                    r.failures.push(e);
                                }
                            }
                        }
                    }
                    if let Some(rest) = pace.checked_sub(at.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
        };
        Self {
            stop,
            report,
            handle: Some(handle),
        }
    }

    /// The counts so far.
    pub fn report(&self) -> LoopReport {
        self.report.lock().expect("loop report").clone()
    }

    /// Stops after the request in flight and returns the counts.
    pub fn stop(mut self) -> LoopReport {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("loop thread");
        }
        self.report()
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn one_get(addr: SocketAddr, host: &str, path: &str) -> Result<(), String> {
    let mut c = RawClient::connect_timeout(addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    let r = c
        .request(&request_bytes("GET", host, path, &[], None, true), false)
        .map_err(|e| format!("I/O: {e}"))?;
    let tag = r.header("X-Origin-Tag").unwrap_or("?");
    let want = format!("tag={tag} path={path}");
    if (200..300).contains(&r.status) && r.body == want.as_bytes() {
        Ok(())
    } else {
        Err(r.summary())
    }
}
