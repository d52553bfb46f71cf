//! Real-socket QUIC tests on loopback: the `Endpoint` I/O task over `UdpIo`, on monoio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dataplane::quic::endpoint::Endpoint;
use dataplane::quic::{CidKey, Driver, QuicConfig, TlsMaterial, VarInt, WorkerCidGenerator, tls};
use dataplane::runtime::block_on;
use dataplane::udp::{UdpBackend, UdpConfig, UdpIo};
use sha2::{Digest, Sha256};

mod support;

struct Setup {
    server_cfg: Arc<quinn_proto::ServerConfig>,
    client_cfg: quinn_proto::ClientConfig,
    cfg: QuicConfig,
}

fn setup() -> Setup {
    let cfg = QuicConfig::default();
    let ca = TlsMaterial::generate_ca().unwrap();
    let server_tls = TlsMaterial::issue_server_cert(&ca, &["quic.cftunnel.com"]).unwrap();
    let server_crypto = server_tls.server_crypto(&cfg.alpn).unwrap();
    let client_crypto = tls::client_crypto(ca.cert_pem().as_bytes(), &cfg.alpn).unwrap();
    Setup {
        server_cfg: Arc::new(cfg.server_config(server_crypto).unwrap()),
        client_cfg: cfg.client_config(client_crypto).unwrap(),
        cfg,
    }
}

fn udp(backend: UdpBackend, gso: bool, gro: bool) -> UdpIo {
    let cfg = UdpConfig {
        gso,
        gro,
        ..UdpConfig::default()
    };
    UdpIo::bind("127.0.0.1:0".parse().unwrap(), &cfg, backend).unwrap()
}

fn endpoints(s: &Setup, backend: UdpBackend, gso: bool, gro: bool) -> (Endpoint, Endpoint) {
    let key = CidKey::random();
    let server = Driver::new(
        &s.cfg,
        Some(s.server_cfg.clone()),
        None,
        WorkerCidGenerator::new(key.clone(), 0).unwrap(),
    )
    .unwrap();
    let client = Driver::new(
        &s.cfg,
        None,
        Some(s.client_cfg.clone()),
        WorkerCidGenerator::new(CidKey::random(), 0).unwrap(),
    )
    .unwrap();
    let server = Endpoint::start(server, udp(backend, gso, gro), None).unwrap();
    let client = Endpoint::start(client, udp(backend, gso, gro), None).unwrap();
    (server, client)
}

/// Echo server: every accepted stream is read to the end and written back.
fn spawn_echo(server: &Endpoint) {
    monoio::spawn(support::serve_echo(server.clone()));
}

async fn with_timeout<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    monoio::time::timeout(limit, f)
        .await
        .expect("operation did not finish within its failure limit")
}

fn addr(e: &Endpoint) -> SocketAddr {
    e.local_addr()
}

#[test]
fn handshake_negotiates_argotunnel_on_both_backends() {
    let s = setup();
    for backend in [UdpBackend::Uring, UdpBackend::Ready] {
        block_on(async {
            let (server, client) = endpoints(&s, backend, true, true);
            let srv = server.clone();
            let accepted = monoio::spawn(async move { srv.accept().await.unwrap() });
            let conn = with_timeout(
                Duration::from_secs(10),
                client.connect(addr(&server), "quic.cftunnel.com"),
            )
            .await
            .unwrap();
            let sconn = with_timeout(Duration::from_secs(10), accepted).await;
            assert_eq!(
                conn.handshake_info().unwrap().alpn.as_deref(),
                Some(&b"argotunnel"[..])
            );
            assert_eq!(
                sconn.handshake_info().unwrap().server_name.as_deref(),
                Some("quic.cftunnel.com")
            );
            conn.close(VarInt::from_u32(0), b"done");
            client.shutdown(VarInt::from_u32(0), b"");
            server.shutdown(VarInt::from_u32(0), b"");
        });
    }
}

#[test]
fn wrong_certificate_name_fails_the_handshake() {
    let s = setup();
    block_on(async {
        let (server, client) = endpoints(&s, UdpBackend::default(), true, true);
        let r = with_timeout(
            Duration::from_secs(10),
            client.connect(addr(&server), "wrong.example"),
        )
        .await;
        assert!(r.is_err(), "a name outside the certificate must fail");
    });
}

async fn echo_streams(client: &Endpoint, server: &Endpoint, streams: usize, size: usize) {
    spawn_echo(server);
    let conn = client
        .connect(addr(server), "quic.cftunnel.com")
        .await
        .unwrap();
    let conn = std::rc::Rc::new(conn);
    let mut tasks = Vec::new();
    for i in 0..streams {
        let conn = conn.clone();
        tasks.push(monoio::spawn(async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            let want = Sha256::digest(&payload);
            send.write_all(Bytes::from(payload)).await.unwrap();
            send.finish().unwrap();
            let got = recv.read_to_end(size + 1).await.unwrap();
            assert_eq!(got.len(), size);
            assert_eq!(Sha256::digest(&got), want, "stream {i} corrupted");
        }));
    }
    for t in tasks {
        t.await;
    }
}

#[test]
fn thousand_concurrent_bidi_streams_echo() {
    let s = setup();
    block_on(async {
        let (server, client) = endpoints(&s, UdpBackend::default(), true, true);
        with_timeout(
            Duration::from_secs(120),
            echo_streams(&client, &server, 1000, 4096),
        )
        .await;
    });
}

#[test]
fn echo_with_gso_and_gro_forced_on_and_off() {
    let s = setup();
    for backend in [UdpBackend::Uring, UdpBackend::Ready] {
        for (gso, gro) in [(false, false), (true, false), (false, true), (true, true)] {
            block_on(async {
                let (server, client) = endpoints(&s, backend, gso, gro);
                with_timeout(
                    Duration::from_secs(60),
                    echo_streams(&client, &server, 8, 256 * 1024),
                )
                .await;
                let caps_ok =
                    client.io_stats().datagrams_out > 0 && server.io_stats().datagrams_in > 0;
                assert!(
                    caps_ok,
                    "{backend:?} gso={gso} gro={gro}: no traffic counted"
                );
            });
        }
    }
}

#[test]
fn legacy_driver_fallback_serves_streams() {
    let s = setup();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let (server, client) = endpoints(&s, UdpBackend::Ready, true, true);
        with_timeout(
            Duration::from_secs(60),
            echo_streams(&client, &server, 16, 64 * 1024),
        )
        .await;
    });
}

/// 1 GiB on one stream, hashed at both ends.
#[test]
fn one_gib_single_stream_keeps_its_hash() {
    const TOTAL: usize = 1 << 30;
    const CHUNK: usize = 1 << 20;
    let s = setup();
    block_on(async {
        let (server, client) = endpoints(&s, UdpBackend::default(), true, true);
        let srv = server.clone();
        let sink = monoio::spawn(async move {
            let conn = srv.accept().await.unwrap();
            let (_send, mut recv) = conn.accept_bi().await.unwrap();
            let mut h = Sha256::new();
            let mut n = 0usize;
            while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
                n += chunk.len();
                h.update(&chunk);
            }
            (n, h.finalize())
        });
        let conn = client
            .connect(addr(&server), "quic.cftunnel.com")
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let mut h = Sha256::new();
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..TOTAL / CHUNK {
            let mut block = vec![0u8; CHUNK];
            for w in block.chunks_exact_mut(4) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                w.copy_from_slice(&seed.to_le_bytes());
            }
            h.update(&block);
            send.write_all(Bytes::from(block)).await.unwrap();
        }
        send.finish().unwrap();
        let (n, got) = with_timeout(Duration::from_secs(600), sink).await;
        assert_eq!(n, TOTAL);
        assert_eq!(got, h.finalize());
    });
}

/// Connection churn leaves no bookkeeping behind once connections drain and their handles
/// are gone.
#[test]
fn churned_connections_are_forgotten() {
    let s = setup();
    block_on(async {
        let (server, client) = endpoints(&s, UdpBackend::default(), true, true);
        spawn_echo(&server);
        for i in 0..30 {
            let conn = with_timeout(
                Duration::from_secs(10),
                client.connect(addr(&server), "quic.cftunnel.com"),
            )
            .await
            .unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(Bytes::from(vec![i as u8; 1000]))
                .await
                .unwrap();
            send.finish().unwrap();
            assert_eq!(recv.read_to_end(2000).await.unwrap().len(), 1000);
            conn.close(VarInt::from_u32(0), b"bye");
        }
        // Draining takes a few PTOs; poll (bounded) until both sides forgot everything.
        let mut left = (usize::MAX, usize::MAX);
        for _ in 0..1500 {
            left = (client.tracked_connections(), server.tracked_connections());
            if left == (0, 0) {
                break;
            }
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, (0, 0), "connections still tracked (client, server)");
    });
}
