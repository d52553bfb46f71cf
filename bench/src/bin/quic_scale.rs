//! `cargo run --release -p bench --bin quic_scale -- [N...]`: thread-per-core scaling of the
//! QUIC transport, against `quinn` on a multi-thread tokio runtime, in one process run.
//!
//! For each N: a server pool of N workers shares one UDP port (SO_REUSEPORT, one socket per
//! worker, CID routing between them) and a client pool of N workers each dials 4 connections
//! (one socket each) and pushes bulk data on 4 streams per connection for a fixed time. Server
//! and client pools are pinned to disjoint cores (server 0..N, client N..2N). The figure is the
//! aggregate bytes the servers received per second after a warm-up. quinn gets the same TLS,
//! transport settings, core counts and connection counts: an N-thread tokio runtime for its
//! server endpoint and another for its clients.
//!
//! Prints a table (MB/s per N for both, and each one's speed-up over its own N=1) and ends
//! with `quic_scale n=<max N> ours_speedup=<ours N / ours 1> vs_quinn=<ours/quinn at max N>`.
//! Results go to `bench/results/<date>/quic_scale.{json,md}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::quic::loopback_endpoint;
use bytes::Bytes;
use dataplane::quic::endpoint::{Endpoint, ForwardedDatagram, Router};
use dataplane::quic::{CidKey, Driver, QuicConfig, TlsMaterial, WorkerCidGenerator, tls};
use dataplane::runtime::{Workers, WorkersConfig};
use dataplane::udp::{UdpBackend, UdpConfig, UdpIo};

const CONNS_PER_CLIENT_WORKER: usize = 4;
const STREAMS_PER_CONN: usize = 4;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(3);
const BLOCK: usize = 256 * 1024;

struct Tls {
    cfg: QuicConfig,
    server: Arc<quinn_proto::crypto::rustls::QuicServerConfig>,
    client: Arc<quinn_proto::crypto::rustls::QuicClientConfig>,
}

fn pin(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids()
        && let Some(id) = ids.get(core % ids.len().max(1))
    {
        core_affinity::set_for_current(*id);
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Samples `counter` over the measurement window; returns bytes per second.
fn measure(counter: &AtomicU64) -> f64 {
    std::thread::sleep(WARMUP);
    let (b0, t0) = (counter.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(MEASURE);
    let (b1, t1) = (counter.load(Ordering::Relaxed), Instant::now());
    (b1 - b0) as f64 / (t1 - t0).as_secs_f64()
}

fn ours(t: &Tls, n: usize) -> f64 {
    let port = free_port();
    let server_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let key = CidKey::random();
    let server_cfg = Arc::new(t.cfg.server_config(t.server.clone()).unwrap());
    let (cfg, rx, stp) = (t.cfg.clone(), received.clone(), stop.clone());
    let servers = Workers::<ForwardedDatagram>::start(
        WorkersConfig {
            threads: n,
            pin: false,
            name: "scale-srv".into(),
            ..WorkersConfig::default()
        },
        move |ctx| {
            let (cfg, scfg, key, rx, stop) = (
                cfg.clone(),
                server_cfg.clone(),
                key.clone(),
                rx.clone(),
                stp.clone(),
            );
            async move {
                pin(ctx.index);
                let driver = Driver::new(
                    &cfg,
                    Some(scfg),
                    None,
                    WorkerCidGenerator::new(key.clone(), ctx.index).unwrap(),
                )
                .unwrap();
                let udp_cfg = UdpConfig {
                    reuse_port: true,
                    ..UdpConfig::default()
                };
                let udp = UdpIo::bind(server_addr, &udp_cfg, UdpBackend::default()).unwrap();
                let router = Router {
                    key,
                    worker: ctx.index,
                    handle: ctx.handle,
                    inbox: ctx.inbox,
                };
                let ep = Endpoint::start(driver, udp, Some(router)).unwrap();
                let acceptor = ep.clone();
                monoio::spawn(async move {
                    while let Some(conn) = acceptor.accept().await {
                        let rx = rx.clone();
                        monoio::spawn(async move {
                            while let Ok((_send, mut recv)) = conn.accept_bi().await {
                                let rx = rx.clone();
                                monoio::spawn(async move {
                                    while let Ok(Some(c)) = recv.read_chunk(usize::MAX).await {
                                        rx.fetch_add(c.len() as u64, Ordering::Relaxed);
                                    }
                                });
                            }
                        });
                    }
                });
                while !stop.load(Ordering::Relaxed) {
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
                ep.shutdown(0u32.into(), b"");
            }
        },
    )
    .expect("server workers");
    let client_cfg = t.cfg.client_config(t.client.clone()).unwrap();
    let (cfg, stp) = (t.cfg.clone(), stop.clone());
    let clients = Workers::<()>::start(
        WorkersConfig {
            threads: n,
            pin: false,
            name: "scale-cli".into(),
            ..WorkersConfig::default()
        },
        move |ctx| {
            let (cfg, ccfg, stop) = (cfg.clone(), client_cfg.clone(), stp.clone());
            async move {
                pin(n + ctx.index);
                let block = Bytes::from(vec![0xa5; BLOCK]);
                let mut eps = Vec::new();
                for _ in 0..CONNS_PER_CLIENT_WORKER {
                    let ep =
                        loopback_endpoint(&cfg, None, Some(ccfg.clone()), UdpBackend::default());
                    let conn = std::rc::Rc::new(
                        ep.connect(server_addr, "quic.cftunnel.com").await.unwrap(),
                    );
                    for _ in 0..STREAMS_PER_CONN {
                        let (conn, block, stop) = (conn.clone(), block.clone(), stop.clone());
                        monoio::spawn(async move {
                            let (mut send, _recv) = conn.open_bi().await.unwrap();
                            while !stop.load(Ordering::Relaxed) {
                                if send.write_all(block.clone()).await.is_err() {
                                    return;
                                }
                            }
                            let _ = send.finish();
                        });
                    }
                    eps.push(ep);
                }
                while !stop.load(Ordering::Relaxed) {
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
                for ep in eps {
                    ep.shutdown(0u32.into(), b"");
                }
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .expect("client workers");
    let rate = measure(&received);
    stop.store(true, Ordering::Relaxed);
    let _ = clients.join();
    let _ = servers.join();
    rate
}

fn quinn_scale(t: &Tls, n: usize) -> f64 {
    let transport = Arc::new(t.cfg.transport_config().unwrap());
    let mut server_cfg = quinn::ServerConfig::with_crypto(t.server.clone());
    server_cfg.transport_config(transport.clone());
    let mut client_cfg = quinn::ClientConfig::new(t.client.clone());
    client_cfg.transport_config(transport);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rt = |name: &'static str, first_core: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .thread_name(name)
            .on_thread_start(move || {
                // Spread the runtime's threads over its own core range.
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let k = NEXT.fetch_add(1, Ordering::Relaxed) as usize;
                pin(first_core + k % n);
            })
            .enable_all()
            .build()
            .unwrap()
    };
    let srt = rt("quinn-srv", 0);
    let crt = rt("quinn-cli", n);
    let bufsize = UdpConfig::default().recv_buffer;
    let sock = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        let _ = s.set_recv_buffer_size(bufsize);
        let _ = s.set_send_buffer_size(bufsize);
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        std::net::UdpSocket::from(s)
    };
    let server = {
        let _g = srt.enter();
        quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_cfg),
            sock,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap()
    };
    let addr = server.local_addr().unwrap();
    let rx = received.clone();
    let srv = server.clone();
    srt.spawn(async move {
        while let Some(inc) = srv.accept().await {
            let rx = rx.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((_s, mut r)) = conn.accept_bi().await {
                    let rx = rx.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(c)) = r.read_chunk(usize::MAX, true).await {
                            rx.fetch_add(c.bytes.len() as u64, Ordering::Relaxed);
                        }
                    });
                }
            });
        }
    });
    let block = Bytes::from(vec![0xa5; BLOCK]);
    for _ in 0..n * CONNS_PER_CLIENT_WORKER {
        let (ccfg, block, stop) = (client_cfg.clone(), block.clone(), stop.clone());
        crt.spawn(async move {
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(ccfg);
            let conn = ep
                .connect(addr, "quic.cftunnel.com")
                .unwrap()
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for _ in 0..STREAMS_PER_CONN {
                let (conn, block, stop) = (conn.clone(), block.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let (mut s, _r) = conn.open_bi().await.unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        if s.write_chunk(block.clone()).await.is_err() {
                            return;
                        }
                    }
                    let _ = s.finish();
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            conn.close(0u32.into(), b"");
            ep.wait_idle().await;
        });
    }
    let rate = measure(&received);
    stop.store(true, Ordering::Relaxed);
    crt.shutdown_timeout(Duration::from_secs(2));
    server.close(0u32.into(), b"");
    srt.shutdown_timeout(Duration::from_secs(2));
    rate
}

fn main() -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut ns: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if ns.is_empty() {
        ns = [1, 2, 4, 8]
            .into_iter()
            .filter(|n| 2 * n <= cores)
            .collect();
        if ns.is_empty() {
            ns.push(1);
        }
    }
    let cfg = QuicConfig::default();
    let ca = TlsMaterial::generate_ca()?;
    let st = TlsMaterial::issue_server_cert(&ca, &["quic.cftunnel.com"])?;
    let t = Tls {
        server: st.server_crypto(&cfg.alpn)?,
        client: tls::client_crypto(ca.cert_pem().as_bytes(), &cfg.alpn)?,
        cfg,
    };
    let mut rows = Vec::new();
    for &n in &ns {
        let q = quinn_scale(&t, n);
        let o = ours(&t, n);
        eprintln!("n={n}: ours {:.0} MB/s, quinn {:.0} MB/s", o / 1e6, q / 1e6);
        rows.push((n, o, q));
    }
    let (o1, q1) = (rows[0].1, rows[0].2);
    let mut md = String::from(
        "| workers N | ringway MB/s | speed-up vs N=1 | quinn (tokio, N threads) MB/s | speed-up vs N=1 | ringway/quinn |\n|---|---|---|---|---|---|\n",
    );
    for (n, o, q) in &rows {
        md.push_str(&format!(
            "| {n} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} |\n",
            o / 1e6,
            o / o1,
            q / 1e6,
            q / q1,
            o / q
        ));
    }
    print!("{md}");
    let json = serde_json::json!({
        "bench": "quic_scale",
        "cores": cores,
        "conns_per_client_worker": CONNS_PER_CLIENT_WORKER,
        "streams_per_conn": STREAMS_PER_CONN,
        "measure_secs": MEASURE.as_secs_f64(),
        "rows": rows.iter().map(|(n, o, q)| serde_json::json!({"n": n, "ringway_bytes_per_s": o, "quinn_bytes_per_s": q})).collect::<Vec<_>>(),
    });
    let dir = bench::results::todays_dir_here();
    std::fs::create_dir_all(&dir)?;
    let tag = std::env::var("QUIC_SCALE_TAG").unwrap_or_else(|_| format!("{cores}cores"));
    std::fs::write(
        dir.join(format!("quic_scale-{tag}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(
        dir.join(format!("quic_scale-{tag}.md")),
        format!("# quic_scale ({cores} cores)\n\n{md}"),
    )?;
    let (n, o, q) = rows[rows.len() - 1];
    println!(
        "quic_scale n={n} ours_speedup={:.2} vs_quinn={:.2}",
        o / o1,
        o / q
    );
    Ok(())
}
