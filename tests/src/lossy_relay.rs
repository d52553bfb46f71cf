//! Packet loss: [`LossyRelay`], a userspace UDP relay that drops a reproducible share of the
//! datagrams between a connector and the edge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Datagrams a [`LossyRelay`] forwarded and dropped, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client → upstream.
    pub up_forwarded: u64,
    pub up_dropped: u64,
    /// Upstream → client.
    pub down_forwarded: u64,
    pub down_dropped: u64,
}

#[derive(Debug, Default)]
struct RelayCounters {
    up_forwarded: std::sync::atomic::AtomicU64,
    up_dropped: std::sync::atomic::AtomicU64,
    down_forwarded: std::sync::atomic::AtomicU64,
    down_dropped: std::sync::atomic::AtomicU64,
}

/// A deterministic xorshift64 stream deciding which datagrams to drop.
#[derive(Debug)]
struct DropDecider {
    x: u64,
    loss_percent: u32,
}

impl DropDecider {
    fn new(seed: u64, loss_percent: u32) -> Self {
        // Mix the seed so that nearby seeds give unrelated streams; never zero.
        let x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        Self {
            x: if x == 0 { 1 } else { x },
            loss_percent: loss_percent.min(100),
        }
    }

    fn drop_next(&mut self) -> bool {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x % 100) < u64::from(self.loss_percent)
    }
}

/// A UDP relay on a loopback port that forwards datagrams to `upstream` and the replies back,
/// dropping `loss_percent`% of them independently in each direction. For each client source
/// address it opens one upstream socket (so the upstream sees one peer per client) and a thread
/// that relays that socket's replies. Drop decisions come from xorshift streams seeded from
/// `seed` (one for the client → upstream direction, one per client for the replies), so a run
/// is reproducible. Stops (threads joined) on drop.
#[derive(Debug)]
pub struct LossyRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<RelayCounters>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl LossyRelay {
    pub fn start(upstream: SocketAddr, loss_percent: u32, seed: u64) -> Self {
        let listen = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        let addr = listen.local_addr().expect("relay addr");
        // The threads poll `stop` between reads.
        let tick = Some(Duration::from_millis(50));
        listen.set_read_timeout(tick).expect("relay read timeout");
        let listen = Arc::new(listen);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(RelayCounters::default());
        let threads = Arc::new(Mutex::new(Vec::new()));
        let main = {
            let (stop, counters, threads) = (stop.clone(), counters.clone(), threads.clone());
            std::thread::spawn(move || {
                let mut up_drops = DropDecider::new(seed, loss_percent);
                let mut clients: HashMap<SocketAddr, Arc<std::net::UdpSocket>> = HashMap::new();
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let (n, from) = match listen.recv_from(&mut buf) {
                        Ok(v) => v,
                        Err(_) => continue, // timeout, or an ICMP error from an earlier send
                    };
                    let up = match clients.get(&from) {
                        Some(s) => s.clone(),
                        None => {
                            let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else {
                                continue;
                            };
                            if s.connect(upstream).is_err() || s.set_read_timeout(tick).is_err() {
                                continue;
                            }
                            let s = Arc::new(s);
                            clients.insert(from, s.clone());
                            let k = clients.len() as u64;
                            let mut down_drops = DropDecider::new(
                                seed ^ k.wrapping_mul(0xA24B_AED4_963E_E407),
                                loss_percent,
                            );
                            let (stop, counters, listen, reply) =
                                (stop.clone(), counters.clone(), listen.clone(), s.clone());
                            let h = std::thread::spawn(move || {
                                let mut buf = vec![0u8; 65536];
                                while !stop.load(Ordering::SeqCst) {
                                    let Ok(n) = reply.recv(&mut buf) else {
                                        continue;
                                    };
                                    if down_drops.drop_next() {
                                        counters.down_dropped.fetch_add(1, Ordering::Relaxed);
                                    } else {
                                        counters.down_forwarded.fetch_add(1, Ordering::Relaxed);
                                        let _ = listen.send_to(&buf[..n], from);
                                    }
                                }
                            });
                            threads.lock().expect("relay threads").push(h);
                            s
                        }
                    };
                    if up_drops.drop_next() {
                        counters.up_dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.up_forwarded.fetch_add(1, Ordering::Relaxed);
                        let _ = up.send(&buf[..n]);
                    }
                }
            })
        };
        threads.lock().expect("relay threads").push(main);
        Self {
            addr,
            stop,
            counters,
            threads,
        }
    }

    /// Where clients send (e.g. a connector's `--edge`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> RelayStats {
        let c = &self.counters;
        RelayStats {
            up_forwarded: c.up_forwarded.load(Ordering::Relaxed),
            up_dropped: c.up_dropped.load(Ordering::Relaxed),
            down_forwarded: c.down_forwarded.load(Ordering::Relaxed),
            down_dropped: c.down_dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The main thread may still add a reply thread until it has seen `stop`, so join it
        // (it is first in the list) before taking the rest.
        let first = {
            let mut t = self.threads.lock().expect("relay threads");
            if t.is_empty() {
                None
            } else {
                Some(t.remove(0))
            }
        };
        if let Some(h) = first {
            let _ = h.join();
        }
        let rest: Vec<_> = self
            .threads
            .lock()
            .expect("relay threads")
            .drain(..)
            .collect();
        for h in rest {
            let _ = h.join();
        }
    }
}
