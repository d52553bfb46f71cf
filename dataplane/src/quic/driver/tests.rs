//! Tests of [`Driver`](super::Driver) on the virtual-clock harness: streams, datagrams,
//! loss, migration, CID routing and close.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::time::Duration;

use quinn_proto::{ConnectionError, TransportErrorCode};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use siphasher::sip::SipHasher13;

use super::*;
use crate::quic::cid::CidKey;
use crate::quic::harness::{CLIENT_ADDR, Faults, Pair, PairConfig, SERVER_ADDR};

fn hash(data: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(1, 2);
    h.write(data);
    h.finish()
}

fn connected_pair(config: PairConfig) -> (Pair, ConnId) {
    let mut pair = Pair::with_config(config);
    let conn = pair.connect();
    assert!(
        pair.drive_until_connected(conn),
        "{:?}",
        pair.client_events()
    );
    // The server grants its full stream credit once the handshake is done, one flight
    // later (MAX_STREAMS); the tests open many streams at once.
    assert!(pair.drive_until(Duration::from_secs(10), |p| {
        p.client_events()
            .iter()
            .any(|e| matches!(e, DriverEvent::StreamsAvailable(c, Dir::Bi) if *c == conn))
    }));
    (pair, conn)
}

/// Reads everything a stream has now. Returns `true` at its end (FIN).
fn read_all(driver: &mut Driver, conn: ConnId, stream: StreamId, into: &mut Vec<u8>) -> bool {
    // Bound: a stream holds at most its receive window (6 MiB) of data, and each read
    // returns at least one byte or ends the loop.
    for _ in 0..(7 << 20) {
        match driver.read(conn, stream, usize::MAX) {
            Ok(Some(chunk)) => into.extend_from_slice(&chunk),
            Ok(None) => return true,
            Err(ReadError::Blocked | ReadError::ClosedStream) => return false,
            Err(e) => panic!("read {stream}: {e}"),
        }
    }
    unreachable!("read loop bound")
}

/// Data not yet accepted by a stream, plus whether FIN should follow it.
struct Pending {
    data: Bytes,
    fin: bool,
}

/// Writes what the stream takes; sends FIN once everything is in. `true` when done.
fn flush(driver: &mut Driver, conn: ConnId, stream: StreamId, p: &mut Pending) -> bool {
    if !p.data.is_empty() {
        match driver.write(conn, stream, &mut p.data) {
            Ok(_) | Err(WriteError::Blocked) => {}
            Err(e) => panic!("write {stream}: {e}"),
        }
    }
    if p.data.is_empty() && p.fin {
        driver.finish(conn, stream).unwrap();
        p.fin = false;
    }
    p.data.is_empty() && !p.fin
}

/// The client sends a random payload on each of `n` bidirectional streams; the server
/// answers each byte XOR 0xFF as it reads it and finishes after the client's FIN.
struct EchoTransfer {
    conn: ConnId,
    sent: BTreeMap<StreamId, Bytes>,
    client_out: BTreeMap<StreamId, Pending>,
    client_in: BTreeMap<StreamId, Vec<u8>>,
    client_done: usize,
    server_in: BTreeMap<StreamId, Vec<u8>>,
    server_out: BTreeMap<StreamId, Pending>,
    server_conn: Option<(usize, ConnId)>,
    client_cursor: usize,
    server_cursor: usize,
}

/// Echoes `n` random streams of up to `max_len` bytes over `conn`, drives the pair until every
/// response is back (failing after `limit` of virtual time) and checks every byte both ways.
fn echo_transfer(
    pair: &mut Pair,
    conn: ConnId,
    n: usize,
    max_len: usize,
    seed: u64,
    limit: Duration,
) {
    let mut t = EchoTransfer::start(pair, conn, n, max_len, seed);
    assert!(
        pair.drive_until(limit, |p| t.pump(p)),
        "transfer stalled at {:?}",
        pair.elapsed()
    );
    t.verify();
}

impl EchoTransfer {
    fn start(pair: &mut Pair, conn: ConnId, n: usize, max_len: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut t = Self {
            conn,
            sent: BTreeMap::new(),
            client_out: BTreeMap::new(),
            client_in: BTreeMap::new(),
            client_done: 0,
            server_in: BTreeMap::new(),
            server_out: BTreeMap::new(),
            server_conn: None,
            client_cursor: pair.client_events().len(),
            server_cursor: pair.server_events().len(),
        };
        for _ in 0..n {
            let stream = pair.client.open_bi(conn).expect("stream credit");
            let mut data = vec![0u8; rng.random_range(0..=max_len)];
            rng.fill_bytes(&mut data);
            let data = Bytes::from(data);
            t.sent.insert(stream, data.clone());
            t.client_out.insert(stream, Pending { data, fin: true });
        }
        t
    }

    /// Reacts to new events and retries blocked writes. `true` when every response
    /// has been read to its end.
    fn pump(&mut self, pair: &mut Pair) -> bool {
        let conn = self.conn;
        // Bound: the events logged since the last pump.
        for i in self.server_cursor..pair.server_events().len() {
            let (worker, event) = pair.server_events()[i].clone();
            let (c, stream) = match event {
                DriverEvent::IncomingStream(c, s) | DriverEvent::StreamReadable(c, s) => (c, s),
                _ => continue,
            };
            self.server_conn = Some((worker, c));
            let server = &mut pair.servers[worker];
            let buf = self.server_in.entry(stream).or_default();
            let before = buf.len();
            let fin = read_all(server, c, stream, buf);
            let echo: Vec<u8> = buf[before..].iter().map(|b| b ^ 0xFF).collect();
            let out = self.server_out.entry(stream).or_insert(Pending {
                data: Bytes::new(),
                fin: false,
            });
            // Bound: concatenating what was queued and not yet taken with the new echo.
            let mut joined = out.data.to_vec();
            joined.extend_from_slice(&echo);
            out.data = Bytes::from(joined);
            out.fin |= fin;
        }
        self.server_cursor = pair.server_events().len();
        for i in self.client_cursor..pair.client_events().len() {
            if let DriverEvent::StreamReadable(c, stream) = pair.client_events()[i].clone() {
                assert_eq!(c, conn);
                let buf = self.client_in.entry(stream).or_default();
                if read_all(&mut pair.client, conn, stream, buf) {
                    self.client_done += 1;
                }
            }
        }
        self.client_cursor = pair.client_events().len();
        self.client_out
            .retain(|stream, p| !flush(&mut pair.client, conn, *stream, p));
        if let Some((worker, c)) = self.server_conn {
            let server = &mut pair.servers[worker];
            self.server_out
                .retain(|stream, p| !flush(server, c, *stream, p));
        }
        self.client_done == self.sent.len()
    }

    fn verify(&self) {
        assert_eq!(self.client_done, self.sent.len());
        for (stream, data) in &self.sent {
            let got = self
                .server_in
                .get(stream)
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert_eq!(
                (got.len(), hash(got)),
                (data.len(), hash(data)),
                "server side of {stream}"
            );
            let expected: Vec<u8> = data.iter().map(|b| b ^ 0xFF).collect();
            let back = self
                .client_in
                .get(stream)
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert_eq!(
                (back.len(), hash(back)),
                (expected.len(), hash(&expected)),
                "client side of {stream}"
            );
        }
    }
}

#[test]
fn handshake_negotiates_argotunnel() {
    let (mut pair, conn) = connected_pair(PairConfig::new(1));
    let info = pair.client.handshake_info(conn).unwrap();
    assert_eq!(info.alpn.as_deref(), Some(&b"argotunnel"[..]));
    let server_info = pair.server_handshake_info().unwrap();
    assert_eq!(server_info.alpn.as_deref(), Some(&b"argotunnel"[..]));
    assert_eq!(
        server_info.server_name.as_deref(),
        Some("quic.cftunnel.com")
    );
    assert!(pair.client.is_connected(conn));
    assert_eq!(pair.client.remote_address(conn), Some(SERVER_ADDR));
    let (worker, server_conn) = pair.server_conn().unwrap();
    assert_eq!(
        pair.servers[worker].remote_address(server_conn),
        Some(CLIENT_ADDR)
    );
}

#[test]
fn wrong_alpn_fails_with_no_application_protocol() {
    let mut config = PairConfig::new(2);
    config.client.alpn = vec![b"h3".to_vec()];
    let mut pair = Pair::with_config(config);
    let conn = pair.connect();
    assert!(!pair.drive_until_connected(conn));
    let reason = pair
        .client_events()
        .iter()
        .find_map(|e| match e {
            DriverEvent::HandshakeFailed(c, reason) if *c == conn => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no HandshakeFailed: {:?}", pair.client_events()));
    // TLS alert 120 (no_application_protocol) travels as QUIC CRYPTO_ERROR 0x100 + 120.
    match &reason {
        ConnectionError::ConnectionClosed(close) => {
            assert_eq!(
                close.error_code,
                TransportErrorCode::crypto(120),
                "{reason}"
            );
        }
        other => panic!("unexpected reason: {other}"),
    }
    let text = reason.to_string();
    assert!(
        text.contains("120") || text.contains("protocol"),
        "unclear error: {text}"
    );
    // The server saw the failure too and freed everything once its draining period
    // (3 PTOs, with no RTT sample yet: about 3 s) ended.
    pair.drive_for(Duration::from_secs(10));
    assert!(
        pair.client_events()
            .contains(&DriverEvent::ConnectionDrained(conn))
    );
    assert_eq!(pair.servers[0].connection_count(), 0);
    assert_eq!(pair.client.connection_count(), 0);
}

#[test]
fn two_hundred_streams_both_ways_intact() {
    let (mut pair, conn) = connected_pair(PairConfig::new(3));
    echo_transfer(&mut pair, conn, 200, 20_000, 3, Duration::from_secs(60));
    // GSO batching happened on the bulk path.
    assert!(pair.stats.gso_batches > 0, "{:?}", pair.stats);
}

#[test]
fn loss_reordering_and_duplication_still_deliver_everything() {
    let mut config = PairConfig::new(4);
    config.faults = Faults {
        drop_probability: 0.05,
        duplicate_probability: 0.01,
        reorder_jitter: Duration::from_millis(8),
        one_way_delay: Duration::from_millis(10),
        ..Faults::default()
    };
    let (mut pair, conn) = connected_pair(config);
    echo_transfer(&mut pair, conn, 200, 10_000, 4, Duration::from_secs(120));
    assert!(pair.stats.dropped > 50, "{:?}", pair.stats);
    assert!(pair.stats.duplicated > 0, "{:?}", pair.stats);
    let stats = pair.client.stats(conn).unwrap();
    assert!(stats.path.lost_packets > 0, "{stats:?}");
}

#[test]
fn lost_first_flight_datagrams_are_recovered() {
    // Lose the first datagram each way: half of the ClientHello, then the start of the
    // server's first flight. Loss recovery repairs both within the handshake budget.
    let mut config = PairConfig::new(5);
    config.faults.drop_to_server = [1].into();
    config.faults.drop_to_client = [0].into();
    let (pair, _) = connected_pair(config);
    assert_eq!(pair.stats.dropped, 2);
}

#[test]
fn harness_runs_are_reproducible() {
    // Same seed, same faults: the same packets are dropped and the transfer ends at
    // the same virtual instant.
    let run = || {
        let mut config = PairConfig::new(21);
        config.faults.drop_probability = 0.05;
        config.faults.reorder_jitter = Duration::from_millis(5);
        let (mut pair, conn) = connected_pair(config);
        echo_transfer(&mut pair, conn, 20, 10_000, 21, Duration::from_secs(60));
        (pair.stats, pair.elapsed())
    };
    assert_eq!(run(), run());
}

#[test]
fn specific_dropped_datagrams_are_recovered() {
    let (mut pair, conn) = connected_pair(PairConfig::new(5));
    pair.drive();
    // Drop chosen datagrams of the data phase, counted from now, both ways.
    let (s, c) = (pair.stats.to_server, pair.stats.to_client);
    pair.faults.drop_to_server = [s, s + 1, s + 5, s + 20].into();
    pair.faults.drop_to_client = [c + 1, c + 2, c + 8].into();
    echo_transfer(&mut pair, conn, 10, 30_000, 5, Duration::from_secs(30));
    assert_eq!(pair.stats.dropped, 7);
}

/// Lets the packets in flight land, then cuts the link both ways; returns the virtual time
/// of the cut.
fn blackhole_both_ways(pair: &mut Pair) -> Duration {
    pair.drive();
    let at = pair.elapsed();
    pair.faults.blackhole_to_client = true;
    pair.faults.blackhole_to_server = true;
    at
}

/// The virtual time at which `side`'s connection was lost with TimedOut.
fn timed_out_at(pair: &mut Pair, limit: Duration, client: bool) -> Option<Duration> {
    let found = pair.drive_until(limit, |p| {
        if client {
            p.client_events()
                .iter()
                .any(|e| matches!(e, DriverEvent::ConnectionLost(_, ConnectionError::TimedOut)))
        } else {
            p.server_events().iter().any(|(_, e)| {
                matches!(e, DriverEvent::ConnectionLost(_, ConnectionError::TimedOut))
            })
        }
    });
    found.then(|| pair.elapsed())
}

#[test]
fn idle_timeout_fires_at_five_seconds_when_peer_is_blackholed() {
    let mut config = PairConfig::new(6);
    // Without keep-alives the idle timer restarts only on receipt, so the deadline is
    // exactly 5 s after the last datagram arrived.
    config.client.keep_alive = None;
    config.server.keep_alive = None;
    let (mut pair, _) = connected_pair(config);
    let blackholed_at = blackhole_both_ways(&mut pair);
    let at = timed_out_at(&mut pair, Duration::from_secs(30), true).expect("client timed out");
    let idle = at - blackholed_at;
    assert!(
        idle >= Duration::from_millis(4_950) && idle <= Duration::from_millis(5_050),
        "client idle timeout after {idle:?}"
    );
    let at = timed_out_at(&mut pair, Duration::from_secs(30), false).expect("server timed out");
    assert!(
        at - blackholed_at <= Duration::from_millis(5_050),
        "server idle timeout after {:?}",
        at - blackholed_at
    );
    // Both sides free the connection afterwards.
    pair.drive_for(Duration::from_secs(1));
    assert_eq!(pair.client.connection_count(), 0);
    assert_eq!(pair.servers[0].connection_count(), 0);
}

#[test]
fn idle_timeout_with_keep_alive_fires_within_one_interval_of_five_seconds() {
    // With keep-alives, an unanswered PING sent after the last receipt restarts the
    // idle timer once (RFC 9000 §10.1), so the timeout lands in [5 s, 6 s].
    let (mut pair, _) = connected_pair(PairConfig::new(7));
    let blackholed_at = blackhole_both_ways(&mut pair);
    let at = timed_out_at(&mut pair, Duration::from_secs(30), true).expect("client timed out");
    let idle = at - blackholed_at;
    assert!(
        idle >= Duration::from_millis(4_950) && idle <= Duration::from_millis(6_050),
        "client idle timeout after {idle:?}"
    );
}

#[test]
fn keep_alive_holds_an_idle_connection_for_a_minute() {
    let (mut pair, conn) = connected_pair(PairConfig::new(8));
    let start = pair.elapsed();
    pair.drive_for(Duration::from_secs(60));
    assert!(pair.elapsed() - start >= Duration::from_secs(60));
    let lost = |e: &DriverEvent| {
        matches!(
            e,
            DriverEvent::ConnectionLost(..) | DriverEvent::ConnectionDrained(_)
        )
    };
    assert!(
        !pair.client_events().iter().any(lost),
        "{:?}",
        pair.client_events()
    );
    assert!(!pair.server_events().iter().any(|(_, e)| lost(e)));
    assert!(pair.client.is_connected(conn));
    // About one PING per second of idleness.
    let pings = pair.client.stats(conn).unwrap().frame_tx.ping;
    assert!(pings >= 50, "only {pings} keep-alive PINGs in 60 s");
}

#[test]
fn reset_and_stop_sending_reach_the_peer() {
    let (mut pair, conn) = connected_pair(PairConfig::new(9));
    let (worker, sconn) = pair.server_conn().unwrap();

    // RESET_STREAM: the server's read reports the code.
    let s1 = pair.client.open_bi(conn).unwrap();
    pair.client
        .write(conn, s1, &mut Bytes::from_static(b"hello"))
        .unwrap();
    pair.drive();
    assert!(
        pair.server_events()
            .contains(&(worker, DriverEvent::IncomingStream(sconn, s1)))
    );
    let mut got = Vec::new();
    assert!(!read_all(&mut pair.servers[worker], sconn, s1, &mut got));
    assert_eq!(got, b"hello");
    pair.client.reset(conn, s1, VarInt::from_u32(7)).unwrap();
    let cursor = pair.server_events().len();
    pair.drive();
    assert!(
        pair.server_events()[cursor..].contains(&(worker, DriverEvent::StreamReadable(sconn, s1)))
    );
    assert_eq!(
        pair.servers[worker].read(sconn, s1, usize::MAX),
        Err(ReadError::Reset(VarInt::from_u32(7)))
    );
    // Reported once; then the stream is gone.
    assert_eq!(
        pair.servers[worker].read(sconn, s1, usize::MAX),
        Err(ReadError::ClosedStream)
    );
    // Resetting twice is an error, not a panic.
    assert_eq!(
        pair.client.reset(conn, s1, VarInt::from_u32(7)),
        Err(StreamError::ClosedStream)
    );

    // STOP_SENDING: the client gets an event and its writes fail with the code.
    let s2 = pair.client.open_bi(conn).unwrap();
    pair.client
        .write(conn, s2, &mut Bytes::from_static(b"x"))
        .unwrap();
    pair.drive();
    pair.servers[worker]
        .stop(sconn, s2, VarInt::from_u32(9))
        .unwrap();
    let cursor = pair.client_events().len();
    pair.drive();
    assert!(
        pair.client_events()[cursor..].contains(&DriverEvent::StreamStopped(
            conn,
            s2,
            VarInt::from_u32(9)
        )),
        "{:?}",
        &pair.client_events()[cursor..]
    );
    assert_eq!(
        pair.client
            .write(conn, s2, &mut Bytes::from_static(b"more")),
        Err(WriteError::Stopped(VarInt::from_u32(9)))
    );

    // Server-to-client reset on a client-opened bidirectional stream.
    let s3 = pair.client.open_bi(conn).unwrap();
    pair.client
        .write(conn, s3, &mut Bytes::from_static(b"ping"))
        .unwrap();
    pair.drive();
    pair.servers[worker]
        .reset(sconn, s3, VarInt::from_u32(3))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client.read(conn, s3, usize::MAX),
        Err(ReadError::Reset(VarInt::from_u32(3)))
    );
}

#[test]
fn finish_is_acknowledged_with_stream_finished() {
    let (mut pair, conn) = connected_pair(PairConfig::new(10));
    let s = pair.client.open_bi(conn).unwrap();
    pair.client
        .write(conn, s, &mut Bytes::from_static(b"done"))
        .unwrap();
    pair.client.finish(conn, s).unwrap();
    pair.drive();
    let (worker, sconn) = pair.server_conn().unwrap();
    let mut got = Vec::new();
    assert!(read_all(&mut pair.servers[worker], sconn, s, &mut got));
    assert_eq!(got, b"done");
    pair.drive();
    assert!(
        pair.client_events()
            .contains(&DriverEvent::StreamFinished(conn, s))
    );
    assert_eq!(pair.client.finish(conn, s), Err(StreamError::ClosedStream));
}

#[test]
fn datagrams_flow_both_ways() {
    let (mut pair, conn) = connected_pair(PairConfig::new(11));
    let (worker, sconn) = pair.server_conn().unwrap();
    let max = pair.client.max_datagram_size(conn).unwrap();
    assert!(max >= 1000, "max datagram {max}");
    // Bound: a handful of datagrams each way.
    for i in 0..10u8 {
        pair.client
            .send_datagram(conn, Bytes::from(vec![i; 100]))
            .unwrap();
        pair.servers[worker]
            .send_datagram(sconn, Bytes::from(vec![i + 100; 200]))
            .unwrap();
    }
    assert_eq!(
        pair.client
            .send_datagram(conn, Bytes::from(vec![0; max + 1])),
        Err(DatagramError::TooLarge)
    );
    pair.drive();
    let at_server: Vec<Bytes> = pair
        .server_events()
        .iter()
        .filter_map(|(_, e)| match e {
            DriverEvent::DatagramReceived(c, d) if *c == sconn => Some(d.clone()),
            _ => None,
        })
        .collect();
    let at_client: Vec<Bytes> = pair
        .client_events()
        .iter()
        .filter_map(|e| match e {
            DriverEvent::DatagramReceived(c, d) if *c == conn => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        at_server,
        (0..10u8)
            .map(|i| Bytes::from(vec![i; 100]))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        at_client,
        (0..10u8)
            .map(|i| Bytes::from(vec![i + 100; 200]))
            .collect::<Vec<_>>()
    );
}

#[test]
fn datagrams_disabled_locally_are_refused() {
    let mut config = PairConfig::new(12);
    config.client.datagrams = false;
    let (mut pair, conn) = connected_pair(config);
    assert_eq!(
        pair.client.send_datagram(conn, Bytes::from_static(b"x")),
        Err(DatagramError::Disabled)
    );
    let (worker, sconn) = pair.server_conn().unwrap();
    assert_eq!(
        pair.servers[worker].send_datagram(sconn, Bytes::from_static(b"x")),
        Err(DatagramError::UnsupportedByPeer)
    );
}

#[test]
fn two_workers_route_by_connection_id() {
    let mut config = PairConfig::new(13);
    config.server_workers = 2;
    let mut pair = Pair::with_config(config);

    // The kernel would put the first connection's Initial on worker 1.
    pair.initial_worker = 1;
    let a = pair.connect();
    assert!(pair.drive_until_connected(a));
    assert_eq!(pair.server_conn().unwrap().0, 1);
    let routes_a = pair.routes.len();

    // ... and the second's on worker 0.
    pair.initial_worker = 0;
    let b = pair.connect();
    assert!(pair.drive_until_connected(b));
    assert_eq!(pair.server_conn().unwrap().0, 0);
    assert_eq!(pair.servers[0].connection_count(), 1);
    assert_eq!(pair.servers[1].connection_count(), 1);

    // Only Initials lacked a routable CID; everything else was routed by its CID.
    assert!(
        pair.routes.iter().all(|r| r.by_cid || r.long_header),
        "{:?}",
        pair.routes
    );
    assert!(
        pair.routes[..routes_a]
            .iter()
            .filter(|r| r.by_cid)
            .all(|r| r.worker == 1)
    );
    assert!(
        pair.routes[..routes_a]
            .iter()
            .any(|r| r.by_cid && r.long_header)
    );
    assert!(
        pair.routes[..routes_a]
            .iter()
            .any(|r| r.by_cid && !r.long_header)
    );
    assert!(
        pair.routes[routes_a..]
            .iter()
            .any(|r| r.by_cid && r.worker == 0)
    );

    // Data on both connections lands on the right worker.
    let sa = pair.client.open_bi(a).unwrap();
    pair.client
        .write(a, sa, &mut Bytes::from_static(b"to worker 1"))
        .unwrap();
    let sb = pair.client.open_bi(b).unwrap();
    pair.client
        .write(b, sb, &mut Bytes::from_static(b"to worker 0"))
        .unwrap();
    let cursor = pair.routes.len();
    pair.drive();
    let incoming: Vec<usize> = pair
        .server_events()
        .iter()
        .filter(|(_, e)| matches!(e, DriverEvent::IncomingStream(..)))
        .map(|(w, _)| *w)
        .collect();
    assert_eq!(incoming.len(), 2);
    assert!(incoming.contains(&0) && incoming.contains(&1));
    assert!(pair.routes[cursor..].iter().all(|r| r.by_cid));

    // A datagram of worker 1's connection that reaches worker 0 anyway is dropped
    // silently: worker 0 must not answer with a stateless reset that would kill it.
    let sa2 = pair.client.open_bi(a).unwrap();
    pair.client
        .write(a, sa2, &mut Bytes::from(vec![1u8; 200]))
        .unwrap();
    let mut buf = Vec::new();
    let t = pair
        .client
        .poll_transmit(pair.now, 1, &mut buf)
        .expect("a packet for conn a");
    let key = CidKey::from_bytes(seed_key(13));
    assert_eq!(key.owner(&buf[..t.size]), Some(1));
    pair.servers[0].handle_datagram(
        pair.now,
        CLIENT_ADDR,
        None,
        None,
        BytesMut::from(&buf[..t.size]),
    );
    assert!(
        pair.servers[0]
            .poll_transmit(pair.now, 1, &mut buf)
            .is_none()
    );
}

/// The server CID key the harness derives from a seed (see `harness::seed32`).
fn seed_key(seed: u64) -> [u8; 32] {
    let mut out = [4u8; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out
}

#[test]
fn stateless_reset_only_for_own_unknown_cids() {
    let cfg = QuicConfig::default();
    let key = CidKey::random();
    let ca = crate::quic::tls::TlsMaterial::generate_ca().unwrap();
    let material =
        crate::quic::tls::TlsMaterial::issue_server_cert(&ca, &["quic.cftunnel.com"]).unwrap();
    let server = Arc::new(
        cfg.server_config(material.server_crypto(&cfg.alpn).unwrap())
            .unwrap(),
    );
    let mut worker0 = Driver::new(
        &cfg,
        Some(server),
        None,
        WorkerCidGenerator::new(key.clone(), 0).unwrap(),
    )
    .unwrap();
    let now = Instant::now();
    let packet = |worker: usize| {
        use quinn_proto::ConnectionIdGenerator;
        let cid = WorkerCidGenerator::new(key.clone(), worker)
            .unwrap()
            .generate_cid();
        let mut p = vec![0x40];
        p.extend_from_slice(&cid);
        p.resize(100, 0xAB);
        BytesMut::from(&p[..])
    };
    let mut buf = Vec::new();
    // Another worker's CID: dropped, no answer.
    worker0.handle_datagram(now, CLIENT_ADDR, None, None, packet(1));
    assert!(worker0.poll_transmit(now, 1, &mut buf).is_none());
    // Its own CID for a connection it does not have: a stateless reset, smaller than
    // the packet that caused it.
    worker0.handle_datagram(now, CLIENT_ADDR, None, None, packet(0));
    let t = worker0
        .poll_transmit(now, 1, &mut buf)
        .expect("stateless reset");
    assert_eq!(t.destination, CLIENT_ADDR);
    assert!(t.size < 100);
    // Garbage: nothing.
    worker0.handle_datagram(
        now,
        CLIENT_ADDR,
        None,
        None,
        BytesMut::from(&[0x40u8; 50][..]),
    );
    assert!(worker0.poll_transmit(now, 1, &mut buf).is_none());
}

#[test]
fn every_incoming_is_accepted_or_refused_at_the_connection_limit() {
    let mut config = PairConfig::new(14);
    config.server.max_connections = 1;
    let mut pair = Pair::with_config(config);
    let first = pair.connect();
    assert!(pair.drive_until_connected(first));
    let second = pair.connect();
    let third = pair.connect();
    pair.drive_until(Duration::from_secs(5), |p| {
        let failed = |c: ConnId| {
            p.client_events()
                .iter()
                .any(|e| matches!(e, DriverEvent::HandshakeFailed(x, _) if *x == c))
        };
        failed(second) && failed(third)
    });
    for conn in [second, third] {
        let reason = pair
            .client_events()
            .iter()
            .find_map(|e| match e {
                DriverEvent::HandshakeFailed(c, r) if *c == conn => Some(r.clone()),
                _ => None,
            })
            .expect("refused connection fails");
        match reason {
            ConnectionError::ConnectionClosed(close) => {
                assert_eq!(close.error_code, TransportErrorCode::CONNECTION_REFUSED);
            }
            other => panic!("unexpected {other}"),
        }
    }
    let s = pair.servers[0].driver_stats();
    assert_eq!(s.accepted, 1, "{s:?}");
    assert!(s.refused >= 2, "{s:?}");
    assert_eq!(
        s.incoming,
        s.accepted + s.accept_failed + s.refused + s.retried + s.ignored,
        "{s:?}"
    );

    // Closing the first frees the slot: a new connection is accepted.
    pair.client.close(
        pair.now,
        first,
        VarInt::from_u32(0),
        Bytes::from_static(b"bye"),
    );
    pair.drive_until(Duration::from_secs(5), |p| {
        p.servers[0].connection_count() == 0
    });
    assert_eq!(pair.servers[0].connection_count(), 0);
    let fourth = pair.connect();
    assert!(pair.drive_until_connected(fourth));
    let s = pair.servers[0].driver_stats();
    assert_eq!(s.accepted, 2, "{s:?}");
    assert_eq!(
        s.incoming,
        s.accepted + s.accept_failed + s.refused + s.retried + s.ignored,
        "{s:?}"
    );
    // The server reports the peer's close, then frees the connection.
    assert!(pair.server_events().iter().any(|(_, e)| matches!(
        e,
        DriverEvent::ConnectionLost(_, ConnectionError::ApplicationClosed(c)) if c.reason == Bytes::from_static(b"bye")
    )));
}

#[test]
fn retry_validates_the_address_first_when_configured() {
    let mut config = PairConfig::new(15);
    config.server.retry = RetryMode::Always;
    let (pair, _) = connected_pair(config);
    let s = pair.servers[0].driver_stats();
    // The X25519MLKEM768 key share makes the ClientHello span two Initial datagrams,
    // and each one that arrives before the Retry is answered with a Retry.
    assert!(s.retried >= 1, "{s:?}");
    assert_eq!(s.accepted, 1, "{s:?}");
    assert_eq!(
        s.incoming,
        s.accepted + s.accept_failed + s.refused + s.retried + s.ignored,
        "{s:?}"
    );
}

#[test]
fn read_returns_slices_of_the_received_datagram() {
    let (mut pair, conn) = connected_pair(PairConfig::new(16));
    pair.drive();
    let (worker, sconn) = pair.server_conn().unwrap();
    let s = pair.client.open_bi(conn).unwrap();
    let payload = Bytes::from(vec![0x5Au8; 300]);
    pair.client.write(conn, s, &mut payload.clone()).unwrap();
    pair.client.finish(conn, s).unwrap();

    // Hand the client's datagrams to the server by hand, remembering each buffer.
    let mut buf = Vec::new();
    let mut ranges = Vec::new();
    let now = pair.now;
    // Bound: the write above fits in one or two packets; 8 is generous.
    for _ in 0..8 {
        let Some(t) = pair.client.poll_transmit(now, 1, &mut buf) else {
            break;
        };
        let datagram = BytesMut::from(&buf[..t.size]);
        let start = datagram.as_ptr() as usize;
        ranges.push(start..start + datagram.len());
        pair.servers[worker].handle_datagram(now, CLIENT_ADDR, None, None, datagram);
    }
    assert!(!ranges.is_empty());
    let chunk = pair.servers[worker]
        .read(sconn, s, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(chunk, payload);
    let ptr = chunk.as_ptr() as usize;
    assert!(
        ranges
            .iter()
            .any(|r| r.contains(&ptr) && r.contains(&(ptr + chunk.len() - 1))),
        "read() copied: {ptr:#x} not in {ranges:x?}"
    );
}

#[test]
fn poll_transmit_round_robins_and_caps_gso_batches() {
    let mut config = PairConfig::new(17);
    config.client.gso_segments = 3;
    let mut pair = Pair::with_config(config);
    let a = pair.connect();
    assert!(pair.drive_until_connected(a));
    let b = pair.connect();
    assert!(pair.drive_until_connected(b));
    pair.drive();
    for conn in [a, b] {
        let s = pair.client.open_bi(conn).unwrap();
        pair.client
            .write(conn, s, &mut Bytes::from(vec![7u8; 100_000]))
            .unwrap();
    }
    let mut buf = Vec::new();
    let mut dcids = Vec::new();
    // Bound: the initial congestion windows allow a few dozen datagrams in total.
    for _ in 0..64 {
        let Some(t) = pair.client.poll_transmit(pair.now, usize::MAX, &mut buf) else {
            break;
        };
        let segment = t.segment_size.unwrap_or(t.size);
        assert!(
            t.size.div_ceil(segment) <= 3,
            "batch of {} segments",
            t.size.div_ceil(segment)
        );
        dcids.push(buf[1..1 + crate::quic::CID_LEN].to_vec());
    }
    assert!(dcids.len() >= 4, "{}", dcids.len());
    // While both have data and window, they alternate.
    assert_ne!(dcids[0], dcids[1]);
    assert_eq!(dcids[0], dcids[2]);
    assert_eq!(dcids[1], dcids[3]);
}

#[test]
fn dead_connection_ids_are_rejected() {
    let (mut pair, conn) = connected_pair(PairConfig::new(18));
    let s = pair.client.open_bi(conn).unwrap();
    pair.client
        .close(pair.now, conn, VarInt::from_u32(0), Bytes::new());
    pair.drive_until(Duration::from_secs(5), |p| {
        p.client_events()
            .contains(&DriverEvent::ConnectionDrained(conn))
    });
    assert!(
        pair.client_events()
            .contains(&DriverEvent::ConnectionDrained(conn))
    );
    assert_eq!(
        pair.client.write(conn, s, &mut Bytes::from_static(b"x")),
        Err(WriteError::UnknownConnection)
    );
    assert_eq!(
        pair.client.read(conn, s, 10),
        Err(ReadError::UnknownConnection)
    );
    assert!(pair.client.open_bi(conn).is_none());
    assert!(pair.client.stats(conn).is_none());
    // A new connection may reuse quinn's slot; the old id still does not reach it.
    let again = pair.connect();
    assert!(pair.drive_until_connected(again));
    assert_ne!(again, conn);
    assert!(pair.client.open_bi(conn).is_none());
    assert!(pair.client.open_bi(again).is_some());
}

#[test]
fn timers_are_tracked_per_connection() {
    let (mut pair, conn) = connected_pair(PairConfig::new(19));
    pair.drive();
    let deadline = pair.client.poll_timeout().expect("keep-alive/idle timer");
    // Asking again without input returns the same deadline.
    assert_eq!(pair.client.poll_timeout(), Some(deadline));
    // A timeout call before the deadline runs nothing and changes nothing.
    pair.client.handle_timeout(pair.now);
    let mut buf = Vec::new();
    assert!(pair.client.poll_transmit(pair.now, 1, &mut buf).is_none());
    assert_eq!(pair.client.poll_timeout(), Some(deadline));
    assert!(pair.client.is_connected(conn));
    // At the deadline the keep-alive PING goes out.
    pair.now = deadline;
    pair.client.handle_timeout(deadline);
    assert!(pair.client.poll_transmit(deadline, 1, &mut buf).is_some());
}

#[test]
fn driver_moves_between_threads() {
    // Workers build their drivers at startup and move them onto their own threads.
    fn assert_send<T: Send>() {}
    assert_send::<Driver>();
    assert_send::<Pair>();
}

#[test]
fn connect_errors_are_reported() {
    let cfg = QuicConfig::default();
    let mut d = Driver::new(
        &cfg,
        None,
        None,
        WorkerCidGenerator::new(CidKey::random(), 0).unwrap(),
    )
    .unwrap();
    assert_eq!(
        d.connect(Instant::now(), SERVER_ADDR, "x"),
        Err(ConnectError::NoClientConfig)
    );
    let (mut pair, _) = connected_pair(PairConfig::new(20));
    let bad = pair
        .client
        .connect(pair.now, "0.0.0.0:0".parse().unwrap(), "quic.cftunnel.com");
    assert!(matches!(bad, Err(ConnectError::Quinn(_))), "{bad:?}");
}
