//! Several workers, one connection owner: a datagram that reaches a worker which does not own
//! its connection is handed to the owner (CID routing over the runtime's inboxes).
//!
//! A userspace relay sits between the client and two server workers. It sends the handshake
//! to worker 0 (which therefore owns the connection), then switches every later packet to
//! worker 1's socket. The connection keeps working only if worker 1 forwards each datagram to
//! worker 0.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use dataplane::quic::endpoint::{Endpoint, EndpointIoStats, ForwardedDatagram, Router};
use dataplane::quic::{CidKey, Driver, QuicConfig, TlsMaterial, VarInt, WorkerCidGenerator, tls};
use dataplane::runtime::{Workers, WorkersConfig, block_on};
use dataplane::udp::{UdpBackend, UdpConfig, UdpIo};

mod support;

type Stats = Arc<Mutex<Vec<EndpointIoStats>>>;

/// A UDP socket on an ephemeral 127.0.0.1 port with the default settings.
fn loopback_udp() -> UdpIo {
    UdpIo::bind(
        "127.0.0.1:0".parse().unwrap(),
        &UdpConfig::default(),
        UdpBackend::default(),
    )
    .unwrap()
}

fn start_relay(
    targets: Vec<SocketAddr>,
    target: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if targets.contains(&from) {
                if let Some(c) = client {
                    let _ = sock.send_to(&buf[..n], c);
                }
            } else {
                client = Some(from);
                let to = *target.lock().unwrap();
                let _ = sock.send_to(&buf[..n], to);
            }
        }
    });
    addr
}

async fn echo_once(conn: &dataplane::quic::endpoint::Connection, size: usize) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    send.write_all(Bytes::from(payload.clone())).await.unwrap();
    send.finish().unwrap();
    let got = recv.read_to_end(size + 1).await.unwrap();
    assert_eq!(got, payload);
}

#[test]
fn datagram_on_the_wrong_worker_reaches_its_owner() {
    let cfg = QuicConfig::default();
    let ca = TlsMaterial::generate_ca().unwrap();
    let server_tls = TlsMaterial::issue_server_cert(&ca, &["quic.cftunnel.com"]).unwrap();
    let server_cfg = Arc::new(
        cfg.server_config(server_tls.server_crypto(&cfg.alpn).unwrap())
            .unwrap(),
    );
    let key = CidKey::random();
    let stats: Stats = Arc::new(Mutex::new(vec![EndpointIoStats::default(); 2]));
    let (addr_tx, addr_rx) = mpsc::channel::<(usize, SocketAddr)>();

    let (scfg, skey, sstats, qcfg) = (server_cfg.clone(), key.clone(), stats.clone(), cfg.clone());
    let _workers = Workers::<ForwardedDatagram>::start(
        WorkersConfig {
            threads: 2,
            name: "quic-test".into(),
            ..WorkersConfig::default()
        },
        move |ctx| {
            let (scfg, skey, sstats, qcfg, addr_tx) = (
                scfg.clone(),
                skey.clone(),
                sstats.clone(),
                qcfg.clone(),
                addr_tx.clone(),
            );
            async move {
                let index = ctx.index;
                let driver = Driver::new(
                    &qcfg,
                    Some(scfg),
                    None,
                    WorkerCidGenerator::new(skey.clone(), index).unwrap(),
                )
                .unwrap();
                let udp = loopback_udp();
                let router = Router {
                    key: skey,
                    worker: index,
                    handle: ctx.handle,
                    inbox: ctx.inbox,
                };
                let ep = Endpoint::start(driver, udp, Some(router)).unwrap();
                addr_tx.send((index, ep.local_addr())).unwrap();
                let publisher = ep.clone();
                monoio::spawn(async move {
                    // Bounded by the test process: it exits when the test ends.
                    loop {
                        sstats.lock().unwrap()[index] = publisher.io_stats();
                        monoio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
                support::serve_echo(ep).await;
            }
        },
    )
    .unwrap();

    let mut addrs = [None, None];
    for _ in 0..2 {
        let (i, a) = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        addrs[i] = Some(a);
    }
    let (w0, w1) = (addrs[0].unwrap(), addrs[1].unwrap());
    let target = Arc::new(Mutex::new(w0));
    let stop = Arc::new(AtomicBool::new(false));
    let relay = start_relay(vec![w0, w1], target.clone(), stop.clone());

    let client_cfg = cfg
        .client_config(tls::client_crypto(ca.cert_pem().as_bytes(), &cfg.alpn).unwrap())
        .unwrap();
    block_on(async {
        let driver = Driver::new(
            &cfg,
            None,
            Some(client_cfg),
            WorkerCidGenerator::new(CidKey::random(), 0).unwrap(),
        )
        .unwrap();
        let udp = loopback_udp();
        let ep = Endpoint::start(driver, udp, None).unwrap();
        let limit = Duration::from_secs(30);
        let conn = monoio::time::timeout(limit, ep.connect(relay, "quic.cftunnel.com"))
            .await
            .expect("handshake within the failure limit")
            .unwrap();
        monoio::time::timeout(limit, echo_once(&conn, 100_000))
            .await
            .expect("echo via the owner");
        // From now on every client packet lands on worker 1's socket.
        *target.lock().unwrap() = w1;
        monoio::time::timeout(limit, echo_once(&conn, 300_000))
            .await
            .expect("echo after steering to the wrong worker");
        // Wait (bounded) for the stats publisher to show the forwarding.
        let mut seen = false;
        for _ in 0..500 {
            let s = stats.lock().unwrap().clone();
            if s[1].forwarded_out > 0 && s[0].forwarded_in > 0 {
                seen = true;
                break;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = stats.lock().unwrap().clone();
        assert!(seen, "no forwarding seen: {s:?}");
        assert!(
            s[0].forwarded_in >= s[1].forwarded_out.saturating_sub(s[1].forwarded_out / 10),
            "owner received far fewer than were forwarded: {s:?}"
        );
        conn.close(VarInt::from_u32(0), b"done");
    });
    stop.store(true, Ordering::Relaxed);
}
