//! Real-socket tests on loopback, run against both backends.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd,
    time::Duration,
};

use super::*;

/// The candidates: both receive modes of the uring backend, and the readiness backend.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Multishot,
    Slots,
    Ready,
}

const BACKENDS: [Kind; 3] = [Kind::Multishot, Kind::Slots, Kind::Ready];
const WAIT: Duration = Duration::from_secs(5);
const SEG: usize = 1200;

fn run<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("io_uring runtime")
        .block_on(f)
}

fn run_legacy<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime")
        .block_on(f)
}

fn localhost() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn cfg(gso: bool, gro: bool) -> UdpConfig {
    UdpConfig {
        gso,
        gro,
        ..UdpConfig::default()
    }
}

fn try_bind(kind: Kind, addr: SocketAddr, config: &UdpConfig) -> std::io::Result<UdpIo> {
    let mode = match kind {
        Kind::Ready => return UdpIo::bind(addr, config, UdpBackend::Ready),
        Kind::Multishot => uring::UringRecv::Multishot,
        Kind::Slots => uring::UringRecv::Slots,
    };
    let s = UringUdp::bind_with(addr, config, mode)?;
    assert_eq!(
        s.mode(),
        mode,
        "this kernel must support multishot receives"
    );
    Ok(UdpIo::Uring(Box::new(s)))
}

fn bind(kind: Kind, addr: SocketAddr, config: &UdpConfig) -> UdpIo {
    try_bind(kind, addr, config).expect("bind")
}

/// Runs `test` on every backend with two fresh sockets on 127.0.0.1, configured by `first`
/// and `second`, bound inside the runtime that drives them.
fn on_every_backend<Fut: Future<Output = ()>>(
    first: UdpConfig,
    second: UdpConfig,
    test: impl Fn(Kind, UdpIo, UdpIo) -> Fut,
) {
    for backend in BACKENDS {
        run(async {
            let a = bind(backend, localhost(), &first);
            let b = bind(backend, localhost(), &second);
            test(backend, a, b).await;
        });
    }
}

/// Receives until `want` buffers arrived (each may hold several datagrams with GRO).
async fn recv_buffers(s: &mut UdpIo, want: usize) -> Vec<(RecvMeta, Vec<u8>)> {
    let mut out = Vec::new();
    // Bound: `want` buffers; each turn adds at least one or times out.
    while out.len() < want {
        let batch = monoio::time::timeout(WAIT, s.recv())
            .await
            .expect("timed out waiting for datagrams")
            .expect("recv");
        out.extend(batch.iter().map(|(m, d)| (*m, d.to_vec())));
    }
    out
}

/// Receives until `want` datagrams arrived, splitting GRO buffers.
async fn recv_datagrams(s: &mut UdpIo, want: usize) -> (Vec<RecvMeta>, Vec<Vec<u8>>) {
    let mut metas = Vec::new();
    let mut grams = Vec::new();
    // Bound: `want` datagrams; each turn adds at least one or times out.
    while grams.len() < want {
        for (m, d) in recv_buffers(s, 1).await {
            grams.extend(m.datagrams(&d).map(<[u8]>::to_vec));
            metas.push(m);
        }
    }
    (metas, grams)
}

/// 10 segments of SEG bytes, each filled with its index, the last one 700 bytes.
fn batch10() -> (Vec<u8>, Vec<Vec<u8>>) {
    let grams: Vec<Vec<u8>> = (0..10u8)
        .map(|i| vec![i; if i == 9 { 700 } else { SEG }])
        .collect();
    (grams.concat(), grams)
}

/// One plain datagram: no ECN, no segmentation, the kernel picks the source address.
fn datagram(dest: SocketAddr, contents: &[u8]) -> Transmit<'_> {
    Transmit {
        destination: dest,
        ecn: None,
        contents,
        segment_size: None,
        src_ip: None,
    }
}

/// The payload of each received buffer, in arrival order.
fn payloads(got: &[(RecvMeta, Vec<u8>)]) -> Vec<Vec<u8>> {
    got.iter().map(|(_, d)| d.clone()).collect()
}

/// Sends [`batch10`] to `dest` as one GSO transmit; returns the datagrams it holds.
async fn send_batch10(tx: &mut UdpIo, dest: SocketAddr) -> Vec<Vec<u8>> {
    let (contents, grams) = batch10();
    tx.send(&gso_transmit(dest, &contents)).await.unwrap();
    grams
}

fn gso_transmit(dest: SocketAddr, contents: &[u8]) -> Transmit<'_> {
    Transmit {
        destination: dest,
        ecn: None,
        contents,
        segment_size: Some(SEG),
        src_ip: None,
    }
}

#[test]
fn udp_round_trip_every_backend() {
    on_every_backend(
        cfg(true, true),
        cfg(true, true),
        |backend, mut a, mut b| async move {
            let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            a.send(&datagram(b_addr, b"ping")).await.unwrap();
            let got = recv_buffers(&mut b, 1).await;
            assert_eq!(got[0].1, b"ping", "{backend:?}");
            assert_eq!(got[0].0.addr, a_addr);
            assert_eq!(got[0].0.len, 4);
            assert_eq!(got[0].0.stride, 4);
            b.send(&datagram(a_addr, b"pong")).await.unwrap();
            let got = recv_buffers(&mut a, 1).await;
            assert_eq!(got[0].1, b"pong", "{backend:?}");
            assert_eq!(got[0].0.addr, b_addr);
        },
    );
}

#[test]
fn udp_round_trip_on_legacy_driver() {
    for backend in BACKENDS {
        run_legacy(async move {
            let mut a = bind(backend, localhost(), &UdpConfig::default());
            let mut b = bind(backend, localhost(), &UdpConfig::default());
            let b_addr = b.local_addr().unwrap();
            // Receive first so the receiver really sleeps (epoll) before the datagram lands.
            let recv = monoio::spawn(async move {
                let got = recv_buffers(&mut b, 1).await;
                got[0].1.clone()
            });
            monoio::time::sleep(Duration::from_millis(20)).await;
            a.send(&datagram(b_addr, b"legacy")).await.unwrap();
            assert_eq!(recv.await, b"legacy", "{backend:?}");
        });
    }
}

#[test]
fn udp_gso_on_arrives_as_10_datagrams_at_gro_off_receiver() {
    on_every_backend(
        cfg(true, false),
        cfg(false, false),
        |backend, mut tx, mut rx| async move {
            assert_eq!(tx.capabilities().max_gso_segments, MAX_GSO_SEGMENTS);
            assert_eq!(rx.capabilities().gro_segments, 1);
            let want = send_batch10(&mut tx, rx.local_addr().unwrap()).await;
            let got = recv_buffers(&mut rx, 10).await;
            assert_eq!(payloads(&got), want, "{backend:?}");
            for (m, d) in &got {
                assert_eq!((m.len, m.stride), (d.len(), d.len()));
            }
            // GSO really was used: the socket still reports it.
            assert_eq!(tx.capabilities().max_gso_segments, MAX_GSO_SEGMENTS);
        },
    );
}

#[test]
fn udp_gso_off_still_sends_a_batch_as_datagrams() {
    on_every_backend(
        cfg(false, false),
        cfg(false, true),
        |backend, mut tx, mut rx| async move {
            assert_eq!(tx.capabilities().max_gso_segments, 1);
            let want = send_batch10(&mut tx, rx.local_addr().unwrap()).await;
            // Even with GRO on at the receiver, separately sent datagrams on loopback are not
            // coalesced: 10 buffers of one datagram each.
            let got = recv_buffers(&mut rx, 10).await;
            assert_eq!(payloads(&got), want, "{backend:?}");
        },
    );
}

#[test]
fn udp_gro_on_reports_coalesced_batch_with_stride() {
    on_every_backend(
        cfg(true, false),
        cfg(false, true),
        |backend, mut tx, mut rx| async move {
            assert_eq!(rx.capabilities().gro_segments, MAX_GRO_SEGMENTS);
            let want = send_batch10(&mut tx, rx.local_addr().unwrap()).await;
            let got = recv_buffers(&mut rx, 1).await;
            let (meta, data) = &got[0];
            assert_eq!(
                meta.len,
                want.concat().len(),
                "{backend:?}: one coalesced buffer"
            );
            assert_eq!(meta.stride, SEG, "{backend:?}");
            let grams: Vec<Vec<u8>> = meta.datagrams(data).map(<[u8]>::to_vec).collect();
            assert_eq!(grams, want);
        },
    );
}

#[test]
fn udp_large_gso_batch_is_split_within_kernel_limits() {
    on_every_backend(
        cfg(true, false),
        cfg(false, true),
        |backend, mut tx, mut rx| async move {
            // 100 segments: more than UDP_MAX_SEGMENTS and more than 64 KiB.
            let grams: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; SEG]).collect();
            let contents = grams.concat();
            tx.send(&gso_transmit(rx.local_addr().unwrap(), &contents))
                .await
                .unwrap();
            let (_, got) = recv_datagrams(&mut rx, 100).await;
            assert_eq!(got, grams, "{backend:?}");
            assert_eq!(tx.capabilities().max_gso_segments, MAX_GSO_SEGMENTS);
        },
    );
}

#[test]
fn udp_gso_einval_disables_gso_and_still_delivers() {
    on_every_backend(
        cfg(true, false),
        cfg(false, false),
        |backend, mut tx, mut rx| async move {
            // With SO_NO_CHECK (no UDP checksum) the kernel rejects every GSO send with EINVAL
            // (udp_send_skb), as a device that cannot segment would; plain sends still work.
            sys::setsockopt_int(tx.as_fd(), libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
            let (contents, want) = batch10();
            let dest = rx.local_addr().unwrap();
            tx.send(&gso_transmit(dest, &contents)).await.unwrap();
            assert_eq!(tx.capabilities().max_gso_segments, 1, "{backend:?}");
            let got = recv_buffers(&mut rx, 10).await;
            assert_eq!(payloads(&got), want, "{backend:?}");
            // Later batches go out as single datagrams without trying GSO again.
            tx.send(&gso_transmit(dest, &contents)).await.unwrap();
            let got = recv_buffers(&mut rx, 10).await;
            assert_eq!(got.len(), 10);
            // And ECN still works after the fallback.
            tx.send(&Transmit {
                ecn: Some(ECN_ECT0),
                ..datagram(dest, b"ecn")
            })
            .await
            .unwrap();
            let got = recv_buffers(&mut rx, 1).await;
            assert_eq!(got[0].0.ecn, Some(ECN_ECT0), "{backend:?}");
        },
    );
}

#[test]
fn udp_ecn_codepoints_are_reported() {
    on_every_backend(
        cfg(true, true),
        cfg(true, true),
        |backend, mut tx, mut rx| async move {
            let dest = rx.local_addr().unwrap();
            for ecn in [Some(ECN_ECT0), Some(ECN_ECT1), Some(ECN_CE), None] {
                tx.send(&Transmit {
                    ecn,
                    ..datagram(dest, b"ecn")
                })
                .await
                .unwrap();
                let got = recv_buffers(&mut rx, 1).await;
                assert_eq!(got[0].0.ecn, ecn, "{backend:?}");
            }
            // ECN on a GSO batch applies to every segment.
            let (contents, _) = batch10();
            let mut t = gso_transmit(dest, &contents);
            t.ecn = Some(ECN_ECT0);
            tx.send(&t).await.unwrap();
            let got = recv_buffers(&mut rx, 1).await;
            assert_eq!(got[0].0.ecn, Some(ECN_ECT0));
        },
    );
}

#[test]
fn udp_pktinfo_reports_dst_ip_and_src_ip_selects_source() {
    for backend in BACKENDS {
        run(async move {
            let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
            let mut rx = bind(backend, any, &UdpConfig::default());
            let mut tx = bind(backend, any, &UdpConfig::default());
            let port = rx.local_addr().unwrap().port();
            tx.send(&datagram(
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                b"to 127.0.0.1",
            ))
            .await
            .unwrap();
            let got = recv_buffers(&mut rx, 1).await;
            assert_eq!(
                got[0].0.dst_ip,
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                "{backend:?}"
            );

            // Every 127/8 address is local: send from 127.0.0.2 to 127.0.0.3 on wildcard
            // sockets, and both ends see exactly those addresses.
            let src = Ipv4Addr::new(127, 0, 0, 2);
            let dst = Ipv4Addr::new(127, 0, 0, 3);
            tx.send(&Transmit {
                src_ip: Some(src.into()),
                ..datagram(SocketAddr::from((dst, port)), b"from .2")
            })
            .await
            .unwrap();
            let got = recv_buffers(&mut rx, 1).await;
            assert_eq!(got[0].0.addr.ip(), IpAddr::V4(src), "{backend:?}");
            assert_eq!(got[0].0.dst_ip, Some(IpAddr::V4(dst)), "{backend:?}");
        });
    }
}

#[test]
fn udp_ipv6_round_trip_with_ecn_and_pktinfo() {
    for backend in BACKENDS {
        run(async move {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
            let Ok(mut rx) = try_bind(backend, v6, &UdpConfig::default()) else {
                eprintln!("no IPv6 loopback; skipped");
                return;
            };
            let mut tx = bind(backend, v6, &UdpConfig::default());
            let (contents, want) = batch10();
            tx.send(&Transmit {
                destination: rx.local_addr().unwrap(),
                ecn: Some(ECN_ECT0),
                contents: &contents,
                segment_size: Some(SEG),
                src_ip: Some(Ipv6Addr::LOCALHOST.into()),
            })
            .await
            .unwrap();
            let (metas, grams) = recv_datagrams(&mut rx, 10).await;
            assert_eq!(grams, want, "{backend:?}");
            assert_eq!(metas[0].ecn, Some(ECN_ECT0), "{backend:?}");
            assert_eq!(metas[0].dst_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
            assert_eq!(metas[0].addr, tx.local_addr().unwrap());
        });
    }
}

#[test]
fn udp_reuse_port_lets_two_sockets_share_a_port() {
    for backend in BACKENDS {
        run(async move {
            let shared = UdpConfig {
                reuse_port: true,
                ..UdpConfig::default()
            };
            let a = bind(backend, localhost(), &shared);
            let port = a.local_addr().unwrap().port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let b = bind(backend, addr, &shared);
            assert_eq!(b.local_addr().unwrap(), addr);
            // Without SO_REUSEPORT the port is taken.
            let err = try_bind(backend, addr, &UdpConfig::default()).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
            // Traffic to the port reaches one of the two.
            let mut a = a;
            let mut b = b;
            let mut tx = bind(backend, localhost(), &UdpConfig::default());
            tx.send(&datagram(addr, b"either")).await.unwrap();
            let got = monoio::select! {
                g = recv_buffers(&mut a, 1) => g,
                g = recv_buffers(&mut b, 1) => g,
            };
            assert_eq!(got[0].1, b"either");
        });
    }
}

#[test]
fn udp_dropped_recv_future_loses_nothing() {
    on_every_backend(
        cfg(true, true),
        cfg(true, true),
        |backend, mut tx, mut rx| async move {
            // Time out (drop) a pending receive a few times.
            for _ in 0..3 {
                let r = monoio::time::timeout(Duration::from_millis(10), rx.recv()).await;
                assert!(r.is_err());
            }
            let dest = rx.local_addr().unwrap();
            for i in 0..5u8 {
                tx.send(&datagram(dest, &[i; 3])).await.unwrap();
            }
            let got = recv_buffers(&mut rx, 5).await;
            let firsts: Vec<u8> = got.iter().map(|(_, d)| d[0]).collect();
            assert_eq!(firsts, [0, 1, 2, 3, 4], "{backend:?}");
        },
    );
}

#[test]
fn udp_uring_drop_with_receives_in_flight() {
    for kind in [Kind::Multishot, Kind::Slots] {
        run(async move {
            // Sockets dropped with receives in flight (and, for the second half, with
            // datagrams received but not collected): must neither hang nor free memory the
            // kernel still owns.
            let mut tx = bind(Kind::Ready, localhost(), &UdpConfig::default());
            for i in 0..8 {
                let mut s = bind(kind, localhost(), &UdpConfig::default());
                let _ = monoio::time::timeout(Duration::from_millis(1), s.recv()).await;
                if i >= 4 {
                    let dest = s.local_addr().unwrap();
                    let t = datagram(dest, b"late");
                    tx.send(&t).await.unwrap();
                    tx.send(&t).await.unwrap();
                    // One is taken in a batch that is never released; the other may sit in
                    // the completion queue.
                    let _ = recv_buffers(&mut s, 1).await;
                }
                drop(s);
            }
        });
    }
}

#[test]
fn udp_multishot_recycles_buffers_under_load() {
    run(async {
        // Far more datagrams than provided buffers: buffers must come back to the kernel, and
        // a multishot request that ran out of them must be re-armed.
        const N: usize = 20 * uring::PBUF_COUNT as usize;
        let mut tx = bind(Kind::Ready, localhost(), &cfg(false, false));
        let mut rx = bind(Kind::Multishot, localhost(), &cfg(false, false));
        let dest = rx.local_addr().unwrap();
        let mut got = 0usize;
        // Bound: N datagrams in rounds of 100, each round received before the next is sent
        // so nothing overflows the socket buffer.
        for round in 0..N / 100 {
            for i in 0..100usize {
                let n = (round * 100 + i) as u32;
                tx.send(&datagram(dest, &n.to_be_bytes())).await.unwrap();
            }
            let bufs = recv_buffers(&mut rx, 100).await;
            for (j, (_, d)) in bufs.iter().enumerate() {
                assert_eq!(d, &((round * 100 + j) as u32).to_be_bytes());
            }
            got += bufs.len();
        }
        assert_eq!(got, N / 100 * 100);
    });
}
