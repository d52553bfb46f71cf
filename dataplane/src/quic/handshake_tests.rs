//! Handshake-flood defences of [`Driver`], on the virtual-clock harness: adaptive Retry,
//! the half-open cap, the handshake deadline, and Retry tokens valid on every worker.
//!
//! Silent clients (a flood) are a second client driver whose first flights are handed to
//! the server by hand from their own addresses; the server's answers to those addresses
//! go nowhere, as a flooder that never answers (or spoofs its source) would have it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{ConnectionError, TransportErrorCode};

use super::cid::{CidKey, WorkerCidGenerator};
use super::config::{DEFAULT_SERVER_NAME, QuicConfig, RetryMode};
use super::driver::{ConnId, Driver, DriverEvent, DriverStats};
use super::harness::{CLIENT_ADDR, Pair, PairConfig, SERVER_ADDR};
use super::tls;

/// The address of silent client `i`.
fn silent_addr(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)), 50_000)
}

/// A client driver trusting the harness's CA, for connections nobody answers for.
fn silent_client(pair: &Pair) -> Driver {
    let cfg = QuicConfig::default();
    let ca = pair.ca_pem.clone().expect("the harness generated a CA");
    let crypto = tls::client_crypto(ca.as_bytes(), &cfg.alpn).expect("client TLS");
    Driver::new(
        &cfg,
        None,
        Some(cfg.client_config(crypto).expect("client config")),
        WorkerCidGenerator::new(CidKey::random(), 0).expect("cid"),
    )
    .expect("client driver")
}

/// Everything `from` has to send now, as datagrams.
fn drain(from: &mut Driver, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    // Bound: a handful of packets per connection; 1000 only guards against a livelock.
    for _ in 0..1000 {
        let Some(t) = from.poll_transmit(now, 1, &mut buf) else {
            break;
        };
        out.push((t.destination, buf[..t.size].to_vec()));
    }
    out
}

/// Hands datagrams to a driver as coming from `remote`.
fn deliver(to: &mut Driver, now: Instant, remote: SocketAddr, datagrams: &[Vec<u8>]) {
    for d in datagrams {
        to.handle_datagram(
            now,
            remote,
            Some(SERVER_ADDR.ip()),
            None,
            BytesMut::from(&d[..]),
        );
    }
}

/// Whether `d` is a Retry packet (long header, type 3).
fn is_retry(d: &[u8]) -> bool {
    d.first()
        .is_some_and(|b| b & 0x80 != 0 && (b >> 4) & 0x3 == 3)
}

/// A silent client's first flight from `remote` to worker `worker`; returns the server's
/// answers to `remote` (the server's other pending answers are dropped with them).
fn first_flight(
    pair: &mut Pair,
    silent: &mut Driver,
    worker: usize,
    remote: SocketAddr,
) -> (ConnId, Vec<Vec<u8>>) {
    let now = pair.now;
    let conn = silent
        .connect(now, SERVER_ADDR, DEFAULT_SERVER_NAME)
        .expect("connect");
    let flight: Vec<Vec<u8>> = drain(silent, now).into_iter().map(|(_, d)| d).collect();
    deliver(&mut pair.servers[worker], now, remote, &flight);
    let answers = drain(&mut pair.servers[worker], now)
        .into_iter()
        .filter(|(to, _)| *to == remote)
        .map(|(_, d)| d)
        .collect();
    (conn, answers)
}

fn assert_balanced(s: &DriverStats) {
    assert_eq!(
        s.incoming,
        s.accepted + s.accept_failed + s.refused + s.retried + s.ignored,
        "every incoming attempt is disposed of: {s:?}"
    );
}

fn refused(pair: &Pair, conn: ConnId) -> bool {
    pair.client_events().iter().any(|e| {
        matches!(e, DriverEvent::HandshakeFailed(c, ConnectionError::ConnectionClosed(close))
            if *c == conn && close.error_code == TransportErrorCode::CONNECTION_REFUSED)
    })
}

#[test]
fn auto_retry_above_the_threshold_then_the_half_open_cap_then_the_deadline() {
    let mut config = PairConfig::new(31);
    config.server.retry = RetryMode::Auto;
    config.server.retry_threshold = 2;
    config.server.max_handshakes = 3;
    config.server.handshake_timeout = Duration::from_secs(3);
    let mut pair = Pair::with_config(config);
    let mut silent = silent_client(&pair);

    // Below the threshold: silent clients are accepted at once, no Retry.
    for i in 0..2 {
        let (_, answers) = first_flight(&mut pair, &mut silent, 0, silent_addr(i));
        assert!(!answers.is_empty() && !answers.iter().any(|d| is_retry(d)));
    }
    let s = pair.servers[0].driver_stats();
    assert_eq!((s.accepted, s.retried), (2, 0), "{s:?}");
    assert_eq!(pair.servers[0].half_open(), 2);

    // At the threshold: a Retry, and no new state.
    let (retried_conn, answers) = first_flight(&mut pair, &mut silent, 0, silent_addr(2));
    assert!(answers.iter().all(|d| is_retry(d)) && !answers.is_empty());
    let s = pair.servers[0].driver_stats();
    assert!(s.retried >= 1, "{s:?}");
    assert_eq!(s.accepted, 2, "{s:?}");
    assert_eq!(pair.servers[0].half_open(), 2);
    assert_eq!(pair.servers[0].connection_count(), 2);

    // An honest client answers its Retry and gets in.
    let honest = pair.connect();
    assert!(
        pair.drive_until_connected(honest),
        "{:?}",
        pair.client_events()
    );
    let s = pair.servers[0].driver_stats();
    assert_eq!(s.accepted, 3, "{s:?}");
    assert_eq!(pair.servers[0].half_open(), 2);

    // A silent client that does answer its Retry (a validated flood) fills the cap...
    let now = pair.now;
    deliver(&mut silent, now, SERVER_ADDR, &answers[..1]);
    let _ = retried_conn;
    let flight: Vec<Vec<u8>> = drain(&mut silent, now)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    deliver(&mut pair.servers[0], now, silent_addr(2), &flight);
    let s = pair.servers[0].driver_stats();
    assert_eq!(s.accepted, 4, "the retried Initial is accepted: {s:?}");
    assert_eq!(pair.servers[0].half_open(), 3);

    // ... and past it even a validated honest client is refused, not accepted.
    let late = pair.connect();
    assert!(!pair.drive_until_connected(late));
    assert!(refused(&pair, late), "{:?}", pair.client_events());
    let s = pair.servers[0].driver_stats();
    assert!(s.refused_handshakes >= 1, "{s:?}");
    assert_eq!(s.accepted, 4, "{s:?}");
    assert_balanced(&s);
    // The established connection is untouched.
    assert!(pair.client.is_connected(honest));

    // The silent handshakes are closed at their deadline, well before the 5 s idle
    // timeout, and free their slots once drained.
    pair.drive_until(Duration::from_secs(10), |p| p.servers[0].half_open() == 0);
    let s = pair.servers[0].driver_stats();
    assert_eq!(pair.servers[0].half_open(), 0, "{s:?}");
    assert_eq!(s.handshake_timeouts, 3, "{s:?}");
    assert!(pair.client.is_connected(honest));

    // Below the threshold again: no Retry for the next client.
    let retried_before = s.retried;
    let again = pair.connect();
    assert!(pair.drive_until_connected(again));
    let s = pair.servers[0].driver_stats();
    assert_eq!(s.retried, retried_before, "{s:?}");
    assert_balanced(&s);
}

#[test]
fn never_retries_and_the_cap_refuses() {
    let mut config = PairConfig::new(32);
    config.server.retry = RetryMode::Never;
    config.server.max_handshakes = 2;
    let mut pair = Pair::with_config(config);
    let mut silent = silent_client(&pair);
    for i in 0..3 {
        let (_, answers) = first_flight(&mut pair, &mut silent, 0, silent_addr(i));
        assert!(!answers.iter().any(|d| is_retry(d)));
    }
    let s = pair.servers[0].driver_stats();
    assert_eq!((s.accepted, s.retried), (2, 0), "{s:?}");
    assert!(s.refused_handshakes >= 1, "{s:?}");
    assert_eq!(pair.servers[0].half_open(), 2);
    assert_balanced(&s);
}

#[test]
fn always_retries_even_an_idle_server() {
    let mut config = PairConfig::new(33);
    config.server.retry = RetryMode::Always;
    let mut pair = Pair::with_config(config);
    let mut silent = silent_client(&pair);
    let (_, answers) = first_flight(&mut pair, &mut silent, 0, silent_addr(0));
    assert!(!answers.is_empty() && answers.iter().all(|d| is_retry(d)));
    assert_eq!(pair.servers[0].connection_count(), 0);
}

#[test]
fn a_retry_issued_by_one_worker_is_accepted_by_another() {
    // Workers share one server configuration, hence one Retry token key. Routing would
    // normally bring the retried Initial back to the issuing worker (its destination CID
    // is the Retry's source CID, which names that worker), but a client whose address
    // changed in between lands elsewhere; the token must still validate there.
    let mut config = PairConfig::new(34);
    config.server_workers = 2;
    config.server.retry = RetryMode::Always;
    let mut pair = Pair::with_config(config);
    let conn = pair.connect();
    let now = pair.now;
    let flight: Vec<Vec<u8>> = drain(&mut pair.client, now)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    deliver(&mut pair.servers[0], now, CLIENT_ADDR, &flight);
    let retries: Vec<Vec<u8>> = drain(&mut pair.servers[0], now)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert!(!retries.is_empty() && retries.iter().all(|d| is_retry(d)));
    assert_eq!(pair.servers[0].connection_count(), 0);
    for r in &retries {
        pair.client.handle_datagram(
            now,
            SERVER_ADDR,
            Some(CLIENT_ADDR.ip()),
            None,
            BytesMut::from(&r[..]),
        );
    }
    let retried: Vec<Vec<u8>> = drain(&mut pair.client, now)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert!(!retried.is_empty());
    // The retried Initial names worker 0, and worker 1 gets it.
    let mut key = [4u8; 32];
    key[..8].copy_from_slice(&34u64.to_le_bytes());
    assert_eq!(CidKey::from_bytes(key).owner(&retried[0]), Some(0));
    deliver(&mut pair.servers[1], now, CLIENT_ADDR, &retried);
    let s = pair.servers[1].driver_stats();
    assert_eq!((s.accepted, s.retried), (1, 0), "{s:?}");
    assert!(
        pair.drive_until_connected(conn),
        "{:?}",
        pair.client_events()
    );
    assert_eq!(pair.server_conn().map(|(w, _)| w), Some(1));
}

#[test]
fn established_connections_get_their_full_stream_credit() {
    // During the handshake a peer has only a little stream credit (so a half-open
    // connection costs little memory); once established it gets the configured limit.
    let mut config = PairConfig::new(35);
    config.server.max_concurrent_bidi_streams = 100;
    let mut pair = Pair::with_config(config);
    let conn = pair.connect();
    assert!(pair.drive_until_connected(conn));
    pair.drive();
    let mut opened = 0;
    while pair.client.open_bi(conn).is_some() {
        opened += 1;
        assert!(opened <= 1000, "no stream limit at all");
    }
    assert_eq!(opened, 100);
}

/// CPU cost of answering a first flight with a Retry and with a full handshake (accept,
/// TLS, the server's first flight), in-process on one thread: no sockets, no scheduler.
/// Prints; asserts nothing about time.
///
/// `cargo test -p dataplane --release --lib quic::handshake_tests::measure -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_retry_and_handshake_cpu() {
    const N: usize = 2000;
    for mode in [RetryMode::Always, RetryMode::Never] {
        let mut config = PairConfig::new(36);
        config.server.retry = mode;
        config.server.max_handshakes = N + 1;
        config.server.max_connections = N + 1;
        let mut pair = Pair::with_config(config);
        let mut silent = silent_client(&pair);
        let now = pair.now;
        let flights: Vec<Vec<Vec<u8>>> = (0..N)
            .map(|_| {
                silent
                    .connect(now, SERVER_ADDR, DEFAULT_SERVER_NAME)
                    .expect("connect");
                drain(&mut silent, now)
                    .into_iter()
                    .map(|(_, d)| d)
                    .collect()
            })
            .collect();
        let datagrams: usize = flights.iter().map(Vec::len).sum();
        let server = &mut pair.servers[0];
        let started = Instant::now();
        for (i, flight) in flights.iter().enumerate() {
            let remote =
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A01_0000 + i as u32)), 50_000);
            deliver(server, now, remote, flight);
            let _ = drain(server, now);
        }
        let took = started.elapsed();
        let s = server.driver_stats();
        eprintln!(
            "[measure] {mode:>6}: {N} first flights ({datagrams} datagrams) in {took:?}: \
             {:.1} µs per attempt; accepted {}, retried {}",
            took.as_secs_f64() * 1e6 / N as f64,
            s.accepted,
            s.retried
        );
    }
}
