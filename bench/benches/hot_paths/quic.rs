//! The QUIC driver's per-packet cost, with no sockets: a client `Driver` (the connector's
//! side) sends stream data to a server `Driver` (the edge's side) over an in-memory network
//! with a virtual clock, as the dataplane's workers drive them (inputs, `poll_transmit` until
//! `None`, timers, events). What is measured is quinn-proto (framing, AEAD, ACKs, loss and
//! congestion bookkeeping) plus the driver's plumbing; no syscalls.
//!
//! The network is lock-step: each tick the client takes the server's datagrams, writes,
//! and sends everything it may; half an RTT later the server takes those, reads, and
//! answers. The virtual RTT is 100 µs (a LAN), so pacing and timers behave as on a real
//! link. One connection and one stream serve every iteration, so the measurement is the
//! steady state (full congestion window, MTU discovery done), not slow start.
//!
//! Per GSO batch the network copies the batch once into a fresh `BytesMut` and splits it
//! into datagrams without further copies, as a GRO receive does; that copy is counted in
//! the sender's share.

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput};
use dataplane::quic::tls::{self, EDGE_SERVER_NAMES, TlsMaterial};
use dataplane::quic::{
    CidKey, ConnId, DEFAULT_SERVER_NAME, Driver, DriverEvent, QuicConfig, ReadError, StreamId,
    WorkerCidGenerator, WriteError,
};

const CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000);
const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 7844);
const HALF_RTT: Duration = Duration::from_micros(50);
/// Bytes per measured transfer.
pub const TRANSFER: usize = 1 << 20;
/// Bound on ticks of one handshake or transfer: a stall panics instead of hanging.
const MAX_TICKS: usize = 100_000;

/// Counters of the network since construction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Datagrams client → server (stream data, and the client's ACKs).
    pub to_server: u64,
    /// Bytes of those datagrams.
    pub to_server_bytes: u64,
    /// Datagrams server → client (mostly ACKs and flow-control credit).
    pub to_client: u64,
    /// Lock-step rounds.
    pub ticks: u64,
    /// Wall time spent in the client's calls (and the batch copies it sends).
    pub sender: Duration,
    /// Wall time spent in the server's calls.
    pub receiver: Duration,
}

/// A connected client/server pair with one open stream.
pub struct Link {
    now: Instant,
    client: Driver,
    server: Driver,
    client_conn: ConnId,
    server_conn: Option<ConnId>,
    client_stream: Option<StreamId>,
    server_stream: Option<StreamId>,
    client_up: bool,
    payload: Bytes,
    pending: Bytes,
    received: usize,
    buf: Vec<u8>,
    to_server: VecDeque<Vec<BytesMut>>,
    to_client: VecDeque<Vec<BytesMut>>,
    pub counters: Counters,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Moves every transmit `driver` has into `out`, one batch (`Vec` of datagrams) per
/// transmit, as GRO would hand a GSO batch to the peer; returns the datagrams and bytes sent.
fn flush(
    driver: &mut Driver,
    now: Instant,
    buf: &mut Vec<u8>,
    out: &mut VecDeque<Vec<BytesMut>>,
) -> (u64, u64) {
    let (mut datagrams, mut bytes) = (0, 0);
    // Bound: congestion and flow control cap what a driver may send at one instant.
    for _ in 0..MAX_TICKS {
        let Some(t) = driver.poll_transmit(now, usize::MAX, buf) else {
            return (datagrams, bytes);
        };
        let mut batch = BytesMut::from(&buf[..t.size]);
        let segment = t.segment_size.unwrap_or(t.size).max(1);
        bytes += t.size as u64;
        let mut split = Vec::with_capacity(t.size.div_ceil(segment));
        while !batch.is_empty() {
            let take = segment.min(batch.len());
            split.push(batch.split_to(take));
        }
        datagrams += split.len() as u64;
        out.push_back(split);
    }
    panic!("a driver never stopped transmitting");
}

fn fire_timers(driver: &mut Driver, now: Instant) {
    if driver.poll_timeout().is_some_and(|t| t <= now) {
        driver.handle_timeout(now);
    }
}

impl Link {
    /// Builds both drivers (fresh CA and edge certificate), handshakes, opens a stream and
    /// moves `warm_up` transfers so the congestion window and path MTU settle.
    pub fn new(warm_up: usize) -> Self {
        let client_cfg = QuicConfig {
            rng_seed: Some([1; 32]),
            ..QuicConfig::default()
        };
        let server_cfg = QuicConfig {
            rng_seed: Some([2; 32]),
            ..QuicConfig::default()
        };
        let ca = TlsMaterial::generate_ca().expect("CA");
        let material = TlsMaterial::issue_server_cert(&ca, EDGE_SERVER_NAMES).expect("edge cert");
        let server_crypto = material
            .server_crypto(&server_cfg.alpn)
            .expect("server TLS");
        let client_crypto =
            tls::client_crypto(ca.cert_pem().as_bytes(), &client_cfg.alpn).expect("client TLS");

        let mut client = Driver::new(
            &client_cfg,
            None,
            Some(
                client_cfg
                    .client_config(client_crypto)
                    .expect("client config"),
            ),
            WorkerCidGenerator::new(CidKey::from_bytes([3; 32]), 0).expect("cid"),
        )
        .expect("client driver");
        let server = Driver::new(
            &server_cfg,
            Some(Arc::new(
                server_cfg
                    .server_config(server_crypto)
                    .expect("server config"),
            )),
            None,
            WorkerCidGenerator::new(CidKey::from_bytes([4; 32]), 0).expect("cid"),
        )
        .expect("server driver");

        let now = Instant::now();
        let client_conn = client
            .connect(now, SERVER_ADDR, DEFAULT_SERVER_NAME)
            .expect("connect");
        let mut link = Self {
            now,
            client,
            server,
            client_conn,
            server_conn: None,
            client_stream: None,
            server_stream: None,
            client_up: false,
            payload: Bytes::from(vec![0x5a; TRANSFER]),
            pending: Bytes::new(),
            received: 0,
            buf: Vec::with_capacity(64 * 1024),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            counters: Counters::default(),
        };
        for _ in 0..MAX_TICKS {
            if link.client_up && link.server_conn.is_some() {
                break;
            }
            link.tick();
        }
        assert!(link.client_up && link.server_conn.is_some(), "handshake");
        link.client_stream = Some(link.client.open_bi(link.client_conn).expect("open stream"));
        for _ in 0..warm_up {
            link.transfer();
        }
        link
    }

    /// One lock-step round: the client's half, then (half an RTT later) the server's. Each
    /// side takes the other's batches one at a time and answers after each, as a worker does
    /// after each GRO receive.
    fn tick(&mut self) {
        self.counters.ticks += 1;

        let started = Instant::now();
        self.now += HALF_RTT;
        fire_timers(&mut self.client, self.now);
        // Bound: the batches the server sent last tick; the client's answers go the other way.
        for _ in 0..self.to_client.len().max(1) {
            self.client_round();
        }
        self.counters.sender += started.elapsed();

        let started = Instant::now();
        self.now += HALF_RTT;
        fire_timers(&mut self.server, self.now);
        // Bound: the batches the client sent this tick.
        for _ in 0..self.to_server.len().max(1) {
            self.server_round();
        }
        self.counters.receiver += started.elapsed();
    }

    /// The client takes one batch (if any), writes what it may and sends.
    fn client_round(&mut self) {
        let now = self.now;
        for d in self.to_client.pop_front().unwrap_or_default() {
            self.client
                .handle_datagram(now, SERVER_ADDR, Some(CLIENT_ADDR.ip()), None, d);
        }
        while let Some(e) = self.client.poll_event() {
            match e {
                DriverEvent::Connected(_) => self.client_up = true,
                DriverEvent::HandshakeFailed(_, e) | DriverEvent::ConnectionLost(_, e) => {
                    panic!("client connection failed: {e}")
                }
                _ => {}
            }
        }
        if let Some(stream) = self.client_stream
            && !self.pending.is_empty()
        {
            match self
                .client
                .write(self.client_conn, stream, &mut self.pending)
            {
                Ok(_) | Err(WriteError::Blocked) => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        let (n, bytes) = flush(&mut self.client, now, &mut self.buf, &mut self.to_server);
        self.counters.to_server += n;
        self.counters.to_server_bytes += bytes;
    }

    /// The server takes one batch (if any), reads everything readable and answers.
    fn server_round(&mut self) {
        let now = self.now;
        for d in self.to_server.pop_front().unwrap_or_default() {
            self.server
                .handle_datagram(now, CLIENT_ADDR, Some(SERVER_ADDR.ip()), None, d);
        }
        while let Some(e) = self.server.poll_event() {
            match e {
                DriverEvent::Connected(c) => self.server_conn = Some(c),
                DriverEvent::IncomingStream(c, s) => {
                    self.server_conn = Some(c);
                    self.server_stream = Some(s);
                }
                DriverEvent::HandshakeFailed(_, e) | DriverEvent::ConnectionLost(_, e) => {
                    panic!("server connection failed: {e}")
                }
                _ => {}
            }
        }
        if let (Some(conn), Some(stream)) = (self.server_conn, self.server_stream) {
            // Bound: each read takes one chunk of what has arrived.
            for _ in 0..MAX_TICKS {
                match self.server.read(conn, stream, usize::MAX) {
                    Ok(Some(chunk)) => self.received += black_box(chunk).len(),
                    Ok(None) => panic!("stream finished"),
                    Err(ReadError::Blocked) => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
        let (n, _) = flush(&mut self.server, now, &mut self.buf, &mut self.to_client);
        self.counters.to_client += n;
    }

    /// Writes [`TRANSFER`] bytes on the stream and runs the network until the server has
    /// read them all.
    pub fn transfer(&mut self) {
        self.pending = self.payload.clone();
        let target = self.received + TRANSFER;
        for _ in 0..MAX_TICKS {
            if self.received >= target {
                return;
            }
            self.tick();
        }
        panic!("transfer stalled: {self:?}");
    }
}

pub fn bench(c: &mut Criterion) {
    // Under `cargo test --benches` (no `--bench`), every benchmark runs once: keep set-up short.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut link = Link::new(if benchmarking { 8 } else { 1 });

    // What one iteration moves, measured over a few transfers in the steady state.
    let probe: u64 = if benchmarking { 16 } else { 2 };
    let before = link.counters;
    for _ in 0..probe {
        link.transfer();
    }
    let after = link.counters;
    let data = (after.to_server - before.to_server) as f64 / probe as f64;
    let acks = (after.to_client - before.to_client) as f64 / probe as f64;
    let avg = (after.to_server_bytes - before.to_server_bytes) as f64
        / (after.to_server - before.to_server) as f64;
    let ticks = (after.ticks - before.ticks) as f64 / probe as f64;
    eprintln!(
        "quic_driver: per {TRANSFER}-byte transfer: {data:.1} datagrams client->server \
         (avg {avg:.0} B), {acks:.1} server->client, {ticks:.1} ticks (virtual RTT 100 us)"
    );

    let mut g = c.benchmark_group("quic_driver");
    g.throughput(Throughput::Bytes(TRANSFER as u64));
    g.bench_function("transfer_1MiB/total", |b| b.iter(|| link.transfer()));
    // The same transfer, timing only one side's calls: the connector's (stream writes,
    // packetising, encryption, ACK processing) or the edge's (decryption, reassembly, reads,
    // ACKs and flow-control credit).
    g.bench_function("transfer_1MiB/sender_share", |b| {
        b.iter_custom(|iters| {
            let start = link.counters.sender;
            for _ in 0..iters {
                link.transfer();
            }
            link.counters.sender - start
        })
    });
    g.bench_function("transfer_1MiB/receiver_share", |b| {
        b.iter_custom(|iters| {
            let start = link.counters.receiver;
            for _ in 0..iters {
                link.transfer();
            }
            link.counters.receiver - start
        })
    });
    g.finish();
}
