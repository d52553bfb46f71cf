//! A deterministic in-memory network for [`Driver`] tests: one client driver, one or more
//! server worker drivers, a virtual clock, and fault injection. No sockets, no sleeps, no
//! real time: the clock starts at one `Instant` captured at construction and only moves
//! when [`Pair`] advances it to the next packet delivery or timer.
//!
//! Runs are reproducible for a given seed: faults draw from a seeded RNG in packet order,
//! and quinn's endpoint RNGs are seeded too. (TLS randomness is not, but it changes only
//! key material, never packet sizes or timing.)
//!
//! Server workers share one address, as `SO_REUSEPORT` sockets do. A datagram for the
//! server goes to the worker its destination CID names ([`CidKey::owner`]); one with no
//! routable CID (a client's first Initial) goes to [`Pair::initial_worker`], standing in
//! for the kernel's 4-tuple hash. Every decision is logged in [`Pair::routes`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::EcnCodepoint;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cid::{CidKey, WorkerCidGenerator};
use super::config::QuicConfig;
use super::driver::{ConnId, Driver, DriverEvent, HandshakeInfo};
use super::tls::{self, EDGE_SERVER_NAMES, TlsMaterial};

/// The client's address.
pub const CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000);
/// The server's address (all workers).
pub const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 7844);

/// Upper bound on steps of one `drive*` call. A step moves every pending packet and fires
/// every due timer, so even a multi-megabyte transfer under loss takes a few thousand;
/// the bound only stops a livelock from hanging a test.
const MAX_STEPS: usize = 1_000_000;

/// Virtual time [`Pair::drive_until_connected`] allows a handshake (two idle timeouts).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Impairments applied to each datagram (after GSO batches are split).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Probability of dropping each datagram.
    pub drop_probability: f64,
    /// Datagram indexes (0-based, counted per direction) to drop towards the server.
    pub drop_to_server: BTreeSet<u64>,
    /// Datagram indexes (0-based, counted per direction) to drop towards the client.
    pub drop_to_client: BTreeSet<u64>,
    /// Probability of delivering a datagram twice.
    pub duplicate_probability: f64,
    /// Extra uniformly random delay in `[0, reorder_jitter]` per datagram, which reorders
    /// datagrams sent close together.
    pub reorder_jitter: Duration,
    /// Fixed one-way latency.
    pub one_way_delay: Duration,
    /// Drop everything towards the server.
    pub blackhole_to_server: bool,
    /// Drop everything towards the client.
    pub blackhole_to_client: bool,
}

/// How to build a [`Pair`].
#[derive(Clone)]
pub struct PairConfig {
    /// Seeds the fault RNG and quinn's endpoint RNGs.
    pub seed: u64,
    /// The client's settings.
    pub client: QuicConfig,
    /// Every server worker's settings.
    pub server: QuicConfig,
    /// Number of server workers (sharing one CID key and one address).
    pub server_workers: usize,
    /// Server TLS; generated (CA + edge certificate) when `None`.
    pub server_crypto: Option<Arc<QuicServerConfig>>,
    /// Client TLS; trusts the generated CA when `None`.
    pub client_crypto: Option<Arc<QuicClientConfig>>,
    /// Network impairments (changeable later through [`Pair::faults`]).
    pub faults: Faults,
}

impl std::fmt::Debug for PairConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The rustls-backed crypto configs have no `Debug`.
        f.debug_struct("PairConfig")
            .field("seed", &self.seed)
            .field("client", &self.client)
            .field("server", &self.server)
            .field("server_workers", &self.server_workers)
            .field("custom_server_crypto", &self.server_crypto.is_some())
            .field("custom_client_crypto", &self.client_crypto.is_some())
            .field("faults", &self.faults)
            .finish()
    }
}

impl PairConfig {
    /// Defaults: cloudflared-compatible settings, one server worker, 10 ms one-way delay.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            client: QuicConfig::default(),
            server: QuicConfig::default(),
            server_workers: 1,
            server_crypto: None,
            client_crypto: None,
            faults: Faults {
                one_way_delay: Duration::from_millis(10),
                ..Faults::default()
            },
        }
    }
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent towards the server.
    pub to_server: u64,
    /// Datagrams sent towards the client.
    pub to_client: u64,
    /// Datagrams dropped (faults).
    pub dropped: u64,
    /// Extra copies delivered (faults).
    pub duplicated: u64,
    /// Datagrams handed to a driver.
    pub delivered: u64,
    /// Transmits that carried more than one datagram (GSO batches).
    pub gso_batches: u64,
    /// Transmits addressed to nobody on this network.
    pub misaddressed: u64,
}

/// One routing decision for a datagram towards the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The worker that got it.
    pub worker: usize,
    /// Whether its destination CID named the worker (else: the Initial fallback).
    pub by_cid: bool,
    /// Whether it had a long header.
    pub long_header: bool,
}

struct Packet {
    to_server: bool,
    ecn: Option<EcnCodepoint>,
    data: Vec<u8>,
}

/// A client driver and server worker drivers joined by a virtual network.
pub struct Pair {
    /// The virtual clock.
    pub now: Instant,
    start: Instant,
    /// The client.
    pub client: Driver,
    /// The server workers, indexed by worker number.
    pub servers: Vec<Driver>,
    /// Impairments, changeable at any time.
    pub faults: Faults,
    /// Network counters.
    pub stats: NetStats,
    /// Every routing decision for datagrams towards the server, in order.
    pub routes: Vec<Route>,
    /// The worker that gets datagrams without a routable CID.
    pub initial_worker: usize,
    /// The CA the generated server certificate chains to.
    pub ca_pem: Option<String>,
    cid_key: CidKey,
    rng: StdRng,
    /// Keyed by (delivery time, sequence number): ties deliver in send order.
    in_flight: BTreeMap<(Instant, u64), Packet>,
    seq: u64,
    client_events: Vec<DriverEvent>,
    server_events: Vec<(usize, DriverEvent)>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("elapsed", &self.elapsed())
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn seed32(seed: u64, salt: u8) -> [u8; 32] {
    let mut out = [salt; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out
}

impl Pair {
    /// A pair as `config` says.
    ///
    /// # Panics
    /// On invalid configuration: this is test scaffolding.
    pub fn with_config(config: PairConfig) -> Self {
        let PairConfig {
            seed,
            mut client,
            mut server,
            server_workers,
            server_crypto,
            client_crypto,
            faults,
        } = config;
        assert!(server_workers >= 1, "need a server worker");
        let mut ca_pem = None;
        let (server_crypto, client_crypto) = match (server_crypto, client_crypto) {
            (Some(s), Some(c)) => (s, c),
            (s, c) => {
                let ca = TlsMaterial::generate_ca().expect("generate CA");
                let material =
                    TlsMaterial::issue_server_cert(&ca, EDGE_SERVER_NAMES).expect("issue cert");
                let s =
                    s.unwrap_or_else(|| material.server_crypto(&server.alpn).expect("server TLS"));
                let c = c.unwrap_or_else(|| {
                    tls::client_crypto(ca.cert_pem().as_bytes(), &client.alpn).expect("client TLS")
                });
                ca_pem = Some(ca.cert_pem());
                (s, c)
            }
        };
        client.rng_seed = client.rng_seed.or(Some(seed32(seed, 1)));
        server.rng_seed = server.rng_seed.or(Some(seed32(seed, 2)));

        let client_cid =
            WorkerCidGenerator::new(CidKey::from_bytes(seed32(seed, 3)), 0).expect("cid");
        let client_driver = Driver::new(
            &client,
            None,
            Some(client.client_config(client_crypto).expect("client config")),
            client_cid,
        )
        .expect("client driver");

        let cid_key = CidKey::from_bytes(seed32(seed, 4));
        let server_config = Arc::new(server.server_config(server_crypto).expect("server config"));
        let servers = (0..server_workers)
            .map(|worker| {
                let cid = WorkerCidGenerator::new(cid_key.clone(), worker).expect("cid");
                Driver::new(&server, Some(server_config.clone()), None, cid).expect("server driver")
            })
            .collect();

        // Any fixed instant works as the epoch; everything after it is virtual.
        let start = Instant::now();
        Self {
            now: start,
            start,
            client: client_driver,
            servers,
            faults,
            stats: NetStats::default(),
            routes: Vec::new(),
            initial_worker: 0,
            ca_pem,
            cid_key,
            rng: StdRng::seed_from_u64(seed),
            in_flight: BTreeMap::new(),
            seq: 0,
            client_events: Vec::new(),
            server_events: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Virtual time since construction.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Client connects to the server as `quic.cftunnel.com`.
    pub fn connect(&mut self) -> ConnId {
        self.connect_with_name(super::config::DEFAULT_SERVER_NAME)
    }

    /// Client connects to the server presenting `server_name`.
    pub fn connect_with_name(&mut self, server_name: &str) -> ConnId {
        self.client
            .connect(self.now, SERVER_ADDR, server_name)
            .expect("connect")
    }

    /// Every client event so far.
    pub fn client_events(&self) -> &[DriverEvent] {
        &self.client_events
    }

    /// Every server event so far, with the worker it came from.
    pub fn server_events(&self) -> &[(usize, DriverEvent)] {
        &self.server_events
    }

    /// The server side of the most recently established connection.
    pub fn server_conn(&self) -> Option<(usize, ConnId)> {
        self.server_events.iter().rev().find_map(|(w, e)| match e {
            DriverEvent::Connected(c) => Some((*w, *c)),
            _ => None,
        })
    }

    /// TLS facts of the most recently established server connection.
    pub fn server_handshake_info(&mut self) -> Option<HandshakeInfo> {
        let (worker, conn) = self.server_conn()?;
        self.servers[worker].handshake_info(conn)
    }

    /// Drives until `conn` is established on the client and the server has as many
    /// established connections as the client. `false` on handshake failure or when
    /// 10 s of virtual time (two idle timeouts) pass.
    pub fn drive_until_connected(&mut self, conn: ConnId) -> bool {
        self.drive_until(HANDSHAKE_LIMIT, |p| {
            let failed = p.client_events.iter().any(|e| {
                matches!(e, DriverEvent::HandshakeFailed(c, _) | DriverEvent::ConnectionLost(c, _) if *c == conn)
            });
            let client_up = p.client_events.iter().filter(|e| matches!(e, DriverEvent::Connected(_))).count();
            let server_up = p
                .server_events
                .iter()
                .filter(|(_, e)| matches!(e, DriverEvent::Connected(_)))
                .count();
            failed || (p.client_events.contains(&DriverEvent::Connected(conn)) && server_up >= client_up)
        });
        self.client_events.contains(&DriverEvent::Connected(conn))
            && !self
                .client_events
                .iter()
                .any(|e| matches!(e, DriverEvent::HandshakeFailed(c, _) if *c == conn))
    }

    /// Moves packets until none is in flight and nobody has anything to send. While
    /// packets are in flight, timers due before their delivery fire on time; once the
    /// network is empty the clock stops, so later timers (keep-alive, idle) do not fire.
    pub fn drive(&mut self) {
        // Bound: MAX_STEPS (see there).
        for _ in 0..MAX_STEPS {
            let next_delivery = self.in_flight.keys().next().map(|&(at, _)| at);
            if !self.step(next_delivery) {
                return;
            }
        }
    }

    /// Runs the network for `duration` of virtual time, firing timers as they fall due.
    pub fn drive_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        self.drive_until(duration, |_| false);
        self.now = self.now.max(deadline);
    }

    /// Runs the network until `done(self)` holds (checked after every step) or `limit`
    /// of virtual time passes. Returns whether `done` held. When nothing is in flight and
    /// nobody sends, the clock jumps to the next packet delivery or timer.
    pub fn drive_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        // Bound: MAX_STEPS (see there).
        for _ in 0..MAX_STEPS {
            if done(self) {
                return true;
            }
            if !self.step(Some(deadline)) {
                return done(self);
            }
        }
        done(self)
    }

    /// One round: send what every driver has, fire due timers, deliver due packets, and
    /// collect events. When that did nothing, advance the clock to the next packet or
    /// timer, but not past `deadline` (`None`: do not advance). Returns `false` when
    /// nothing can happen any more before the deadline.
    fn step(&mut self, deadline: Option<Instant>) -> bool {
        let mut progressed = self.flush_transmits();
        progressed |= self.fire_timers();
        progressed |= self.deliver_due();
        self.collect_events();
        if progressed {
            return true;
        }
        let Some(deadline) = deadline else {
            return false;
        };
        let next_packet = self.in_flight.keys().next().map(|&(at, _)| at);
        let next_timer = std::iter::once(&mut self.client)
            .chain(self.servers.iter_mut())
            .filter_map(|d| d.poll_timeout())
            .min();
        match [next_packet, next_timer].into_iter().flatten().min() {
            Some(at) if at <= deadline => {
                self.now = self.now.max(at);
                true
            }
            _ => false,
        }
    }

    fn fire_timers(&mut self) -> bool {
        let now = self.now;
        let mut fired = false;
        for driver in std::iter::once(&mut self.client).chain(self.servers.iter_mut()) {
            if driver.poll_timeout().is_some_and(|t| t <= now) {
                driver.handle_timeout(now);
                fired = true;
            }
        }
        fired
    }

    /// Moves every pending transmit of every driver into the network.
    fn flush_transmits(&mut self) -> bool {
        let mut any = false;
        let mut buf = std::mem::take(&mut self.buf);
        // Bound: each driver has finitely many packets to send (congestion control and
        // flow control cap them); MAX_STEPS guards against a driver that never stops.
        for driver in 0..=self.servers.len() {
            for _ in 0..MAX_STEPS {
                let now = self.now;
                let d = if driver == 0 {
                    &mut self.client
                } else {
                    &mut self.servers[driver - 1]
                };
                let Some(t) = d.poll_transmit(now, usize::MAX, &mut buf) else {
                    break;
                };
                any = true;
                let to_server = driver == 0;
                let expected = if to_server { SERVER_ADDR } else { CLIENT_ADDR };
                if t.destination != expected {
                    self.stats.misaddressed += 1;
                    continue;
                }
                let segment = t.segment_size.unwrap_or(t.size).max(1);
                if t.size > segment {
                    self.stats.gso_batches += 1;
                }
                for datagram in buf[..t.size].chunks(segment) {
                    self.send(to_server, t.ecn, datagram);
                }
            }
        }
        self.buf = buf;
        any
    }

    /// Applies faults to one datagram and schedules what survives.
    fn send(&mut self, to_server: bool, ecn: Option<EcnCodepoint>, datagram: &[u8]) {
        let index = if to_server {
            self.stats.to_server += 1;
            self.stats.to_server - 1
        } else {
            self.stats.to_client += 1;
            self.stats.to_client - 1
        };
        let f = &self.faults;
        let blackholed = if to_server {
            f.blackhole_to_server
        } else {
            f.blackhole_to_client
        };
        let listed = if to_server {
            &f.drop_to_server
        } else {
            &f.drop_to_client
        }
        .contains(&index);
        // Draw even when already dropped, so one fault knob does not shift the others'
        // random sequence.
        let random_drop = self.rng.random::<f64>() < f.drop_probability;
        let duplicate = self.rng.random::<f64>() < f.duplicate_probability;
        tracing::trace!(
            at = ?(self.now - self.start),
            to_server,
            index,
            len = datagram.len(),
            dropped = blackholed || listed || random_drop,
            "harness datagram"
        );
        if blackholed || listed || random_drop {
            self.stats.dropped += 1;
            return;
        }
        let copies = if duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.faults.reorder_jitter;
            let extra = if jitter.is_zero() {
                Duration::ZERO
            } else {
                jitter.mul_f64(self.rng.random::<f64>())
            };
            let at = self.now + self.faults.one_way_delay + extra;
            self.seq += 1;
            self.in_flight.insert(
                (at, self.seq),
                Packet {
                    to_server,
                    ecn,
                    data: datagram.to_vec(),
                },
            );
        }
    }

    fn deliver_due(&mut self) -> bool {
        let mut any = false;
        // Bound: the packets in flight now; deliveries only queue transmits, which reach
        // the network in the next step.
        for _ in 0..self.in_flight.len() {
            let Some(entry) = self.in_flight.first_entry() else {
                break;
            };
            if entry.key().0 > self.now {
                break;
            }
            let packet = entry.remove();
            any = true;
            self.stats.delivered += 1;
            let now = self.now;
            if packet.to_server {
                let owner = self
                    .cid_key
                    .owner(&packet.data)
                    .filter(|w| *w < self.servers.len());
                let worker = owner.unwrap_or(self.initial_worker);
                self.routes.push(Route {
                    worker,
                    by_cid: owner.is_some(),
                    long_header: packet.data.first().is_some_and(|b| b & 0x80 != 0),
                });
                self.servers[worker].handle_datagram(
                    now,
                    CLIENT_ADDR,
                    Some(SERVER_ADDR.ip()),
                    packet.ecn,
                    BytesMut::from(&packet.data[..]),
                );
            } else {
                self.client.handle_datagram(
                    now,
                    SERVER_ADDR,
                    Some(CLIENT_ADDR.ip()),
                    packet.ecn,
                    BytesMut::from(&packet.data[..]),
                );
            }
        }
        any
    }

    fn collect_events(&mut self) {
        // Bound: each driver's queue is finite and nothing refills it here.
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
        for (worker, server) in self.servers.iter_mut().enumerate() {
            while let Some(e) = server.poll_event() {
                self.server_events.push((worker, e));
            }
        }
    }
}
