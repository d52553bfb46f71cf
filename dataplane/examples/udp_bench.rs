//! Loopback throughput of the two UDP backends, same process, same run.
//!
//! ```text
//! cargo run --release -p dataplane --example udp_bench -- [--secs 2] [--rounds 3] [--segments 10] [--matrix]
//! ```
//!
//! For each round and each case (backend × offload on/off) it starts two pinned workers
//! (`dataplane::runtime`): worker 1 sends 1200-byte datagrams as fast as it can for `--secs`
//! seconds (with GSO: `--segments` datagrams per send), worker 0 receives (with GRO on or off)
//! and counts. It prints the median over the rounds of what the receiver got (datagrams/s,
//! MB/s of payload) and what the sender pushed. The cases alternate inside each round so slow
//! drift on a shared machine hits all of them alike.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use dataplane::{
    runtime::{Workers, WorkersConfig},
    udp::{Transmit, UdpBackend, UdpConfig, UdpIo, UringUdp, uring::UringRecv},
};

const PAYLOAD: usize = 1200;

/// The candidates: the uring backend in both receive modes, and the readiness backend.
#[derive(Debug, Clone, Copy)]
enum Kind {
    UringMultishot,
    UringSlots,
    Ready,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    /// Backend of the sending socket.
    tx: Kind,
    /// Backend of the receiving socket.
    rx: Kind,
    offload: bool,
}

fn bind(kind: Kind, addr: SocketAddr, config: &UdpConfig) -> UdpIo {
    let mode = match kind {
        Kind::Ready => return UdpIo::bind(addr, config, UdpBackend::Ready).expect("bind"),
        Kind::UringMultishot => UringRecv::Multishot,
        Kind::UringSlots => UringRecv::Slots,
    };
    let s = UringUdp::bind_with(addr, config, mode).expect("bind");
    assert_eq!(s.mode(), mode);
    UdpIo::Uring(Box::new(s))
}

#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    rx_pkts: u64,
    rx_secs: f64,
    /// CPU time of the receiving thread, ns.
    rx_cpu: u64,
    tx_pkts: u64,
    tx_secs: f64,
    /// CPU time of the sending thread, ns (on loopback it includes the kernel's delivery
    /// to the receiving socket, which runs in the sender's context).
    tx_cpu: u64,
}

impl Outcome {
    fn rx_pps(&self) -> f64 {
        self.rx_pkts as f64 / self.rx_secs.max(1e-9)
    }
    fn tx_pps(&self) -> f64 {
        self.tx_pkts as f64 / self.tx_secs.max(1e-9)
    }
    fn rx_ns_per_pkt(&self) -> f64 {
        self.rx_cpu as f64 / self.rx_pkts.max(1) as f64
    }
    fn tx_ns_per_pkt(&self) -> f64 {
        self.tx_cpu as f64 / self.tx_pkts.max(1) as f64
    }
}

#[derive(Debug)]
enum Msg {
    /// The receiver's address, for the sender.
    Addr(SocketAddr),
}

/// CPU time this thread has run, in ns (first field of /proc/thread-self/schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_case(case: Case, secs: u64, segments: usize) -> Outcome {
    let result = Arc::new(Mutex::new(Outcome::default()));
    let done = Arc::new(AtomicBool::new(false));
    let (result2, done2) = (Arc::clone(&result), Arc::clone(&done));
    let workers = Workers::<Msg>::start(
        WorkersConfig {
            threads: 2,
            name: "udp-bench".into(),
            ..WorkersConfig::default()
        },
        move |mut ctx| {
            let result = Arc::clone(&result2);
            let done = Arc::clone(&done2);
            async move {
                let config = UdpConfig {
                    gso: case.offload,
                    gro: case.offload,
                    ..UdpConfig::default()
                };
                let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                let kind = if ctx.index == 0 { case.rx } else { case.tx };
                let mut sock = bind(kind, any, &config);
                if ctx.index == 0 {
                    ctx.handle
                        .send(1, Msg::Addr(sock.local_addr().unwrap()))
                        .unwrap();
                    let cpu = thread_cpu_ns();
                    let (pkts, secs) = receive(&mut sock, &done).await;
                    let mut r = result.lock().unwrap();
                    r.rx_pkts = pkts;
                    r.rx_secs = secs;
                    r.rx_cpu = thread_cpu_ns() - cpu;
                } else {
                    let Msg::Addr(dest) = ctx.inbox.recv().await.unwrap();
                    let cpu = thread_cpu_ns();
                    let (pkts, secs) =
                        transmit(&mut sock, dest, case.offload, segments, secs).await;
                    let cpu = thread_cpu_ns() - cpu;
                    done.store(true, Ordering::Release);
                    let mut r = result.lock().unwrap();
                    r.tx_pkts = pkts;
                    r.tx_secs = secs;
                    r.tx_cpu = cpu;
                }
            }
        },
    )
    .expect("workers");
    workers.join().expect("join");
    result.lock().map(|g| *g).expect("result lock")
}

/// Counts datagrams from the first arrival until the sender is done and 100 ms pass with no
/// traffic; returns (datagrams, seconds from first to last arrival).
async fn receive(sock: &mut UdpIo, done: &AtomicBool) -> (u64, f64) {
    let mut pkts = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    // Bound: ends 100 ms after the sender finished (it runs for --secs).
    loop {
        match monoio::time::timeout(Duration::from_millis(100), sock.recv()).await {
            Ok(Ok(batch)) => {
                for (meta, _) in batch.iter() {
                    pkts += meta.len.div_ceil(meta.stride.max(1)) as u64;
                }
                last = Instant::now();
                first.get_or_insert(last);
            }
            Ok(Err(e)) => panic!("recv: {e}"),
            Err(_) if done.load(Ordering::Acquire) => break,
            Err(_) => {}
        }
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    (pkts, secs)
}

/// Sends for `secs` seconds; returns (datagrams sent, seconds).
async fn transmit(
    sock: &mut UdpIo,
    dest: SocketAddr,
    gso: bool,
    segments: usize,
    secs: u64,
) -> (u64, f64) {
    let per_send = if gso { segments } else { 1 };
    let buf = vec![0xA5u8; PAYLOAD * per_send];
    let t = Transmit {
        destination: dest,
        ecn: None,
        contents: &buf,
        segment_size: gso.then_some(PAYLOAD),
        src_ip: None,
    };
    let start = Instant::now();
    let limit = Duration::from_secs(secs);
    let mut sends = 0u64;
    // Bound: runs for `secs` seconds; the clock is read every 64 sends.
    loop {
        for _ in 0..64 {
            sock.send(&t).await.expect("send");
        }
        sends += 64;
        if start.elapsed() >= limit {
            break;
        }
    }
    (sends * per_send as u64, start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<Outcome>, key: fn(&Outcome) -> f64) -> f64 {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    key(&v[v.len() / 2])
}

fn main() {
    let secs = arg("--secs", 2);
    let rounds = arg("--rounds", 3).max(1) as usize;
    let segments = arg("--segments", 10).clamp(1, 64) as usize;
    let kinds = [Kind::UringMultishot, Kind::UringSlots, Kind::Ready];
    let matrix = std::env::args().any(|a| a == "--matrix");
    let mut cases = Vec::new();
    // Bound: 2 × 3 cases, or 2 × 3 × 3 with --matrix.
    for offload in [true, false] {
        for tx in kinds {
            for rx in kinds {
                if matrix || tx as u8 == rx as u8 {
                    cases.push(Case { tx, rx, offload });
                }
            }
        }
    }
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); cases.len()];
    // Bound: `rounds` × 6 cases.
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let o = run_case(*case, secs, segments);
            eprintln!(
                "round {round} tx {:?} rx {:?} offload={}: rx {:.0} pkt/s, tx {:.0} pkt/s",
                case.tx,
                case.rx,
                case.offload,
                o.rx_pps(),
                o.tx_pps()
            );
            outcomes[i].push(o);
        }
    }
    println!(
        "1200-byte datagrams on 127.0.0.1, {secs} s per case, median of {rounds} rounds, GSO batch = {segments} datagrams"
    );
    println!(
        "| sender | receiver | GSO+GRO | rx datagrams/s | rx MB/s | tx datagrams/s | loss | tx CPU ns/datagram | rx CPU ns/datagram |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    for (case, o) in cases.iter().zip(outcomes) {
        let rx = median(o.clone(), Outcome::rx_pps);
        let tx = median(o.clone(), Outcome::tx_pps);
        let tx_ns = median(o.clone(), Outcome::tx_ns_per_pkt);
        let rx_ns = median(o.clone(), Outcome::rx_ns_per_pkt);
        let loss = median(o, |o| 1.0 - o.rx_pkts as f64 / (o.tx_pkts.max(1)) as f64);
        println!(
            "| {:?} | {:?} | {} | {:.0} | {:.0} | {:.0} | {:.1}% | {:.0} | {:.0} |",
            case.tx,
            case.rx,
            if case.offload { "on" } else { "off" },
            rx,
            rx * PAYLOAD as f64 / 1e6,
            tx,
            loss * 100.0,
            tx_ns,
            rx_ns
        );
    }
}
