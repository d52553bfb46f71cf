//! `cargo run --release -p bench --bin quic_bulk`: bulk QUIC throughput of ringway's transport
//! (quinn-proto driven by our monoio/io_uring endpoint) against the `quinn` crate (tokio +
//! quinn-udp), in one process run, on loopback, with the same TLS, the same transport
//! settings and the same socket buffers.
//!
//! Workloads: one stream of 1 GiB; 64 parallel streams of 16 MiB on one connection. The
//! client writes a shared 1 MiB `Bytes` block repeatedly (zero-copy on both stacks); the
//! server counts bytes and answers one byte per stream after the FIN; the client's clock
//! runs from the first write to the last answer. CPU time is the whole process's (client and
//! server together) over the same span.
//!
//! Prints a table and ends with `quic_bulk ratio_single=<ours/quinn> ratio_parallel=<ours/quinn>`.
//! Results go to `bench/results/<date>/quic_bulk.{json,md}`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bench::quic::loopback_endpoint;
use bytes::Bytes;
use dataplane::quic::{QuicConfig, TlsMaterial, VarInt, tls};
use dataplane::runtime::block_on;
use dataplane::udp::{UdpBackend, UdpConfig};

const BLOCK: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
struct Workload {
    name: &'static str,
    streams: usize,
    bytes_per_stream: usize,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "single 1 GiB",
        streams: 1,
        bytes_per_stream: 1 << 30,
    },
    Workload {
        name: "64 x 16 MiB",
        streams: 64,
        bytes_per_stream: 16 << 20,
    },
];

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    cpu_secs: f64,
    bytes: usize,
}

impl Sample {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    fn cpu_per_gb(&self) -> f64 {
        self.cpu_secs / (self.bytes as f64 / 1e9)
    }
}

/// The sample with the median throughput; its CPU figure travels with it.
fn median(mut v: Vec<Sample>) -> Sample {
    v.sort_by(|a, b| a.mb_per_s().total_cmp(&b.mb_per_s()));
    v[v.len() / 2]
}

fn process_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pin(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids()
        && let Some(id) = ids.get(core % ids.len().max(1))
    {
        core_affinity::set_for_current(*id);
    }
}

struct Tls {
    cfg: QuicConfig,
    server: Arc<quinn_proto::crypto::rustls::QuicServerConfig>,
    client: Arc<quinn_proto::crypto::rustls::QuicClientConfig>,
}

fn tls_setup() -> anyhow::Result<Tls> {
    let cfg = QuicConfig::default();
    let ca = TlsMaterial::generate_ca()?;
    let server_tls = TlsMaterial::issue_server_cert(&ca, &["quic.cftunnel.com"])?;
    Ok(Tls {
        server: server_tls.server_crypto(&cfg.alpn)?,
        client: tls::client_crypto(ca.cert_pem().as_bytes(), &cfg.alpn)?,
        cfg,
    })
}

// ---------- ours ----------

fn ours(t: &Tls, w: Workload, backend: UdpBackend) -> anyhow::Result<Sample> {
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let server_cfg = Arc::new(t.cfg.server_config(t.server.clone())?);
    let client_cfg = t.cfg.client_config(t.client.clone())?;
    let cfg = t.cfg.clone();
    let server = std::thread::spawn(move || {
        pin(0);
        block_on(async move {
            let ep = loopback_endpoint(&cfg, Some(server_cfg), None, backend);
            addr_tx.send(ep.local_addr()).unwrap();
            let conn = ep.accept().await.expect("accept");
            let mut tasks = Vec::new();
            for _ in 0..w.streams {
                let (mut send, mut recv) = conn.accept_bi().await.expect("accept_bi");
                tasks.push(monoio::spawn(async move {
                    let mut n = 0usize;
                    while let Some(c) = recv.read_chunk(usize::MAX).await.expect("read") {
                        n += c.len();
                    }
                    assert_eq!(n, w.bytes_per_stream);
                    send.write_all(Bytes::from_static(b"k")).await.expect("ack");
                    send.finish().expect("finish");
                }));
            }
            for t in tasks {
                t.await;
            }
            conn.closed().await;
        });
    });
    let addr = addr_rx.recv()?;
    let cfg = t.cfg.clone();
    let client = std::thread::spawn(move || {
        pin(1);
        block_on(async move {
            let ep = loopback_endpoint(&cfg, None, Some(client_cfg), backend);
            let conn = std::rc::Rc::new(
                ep.connect(addr, "quic.cftunnel.com")
                    .await
                    .expect("connect"),
            );
            let block = Bytes::from(vec![0x5a; BLOCK]);
            let cpu0 = process_cpu();
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..w.streams {
                let conn = conn.clone();
                let block = block.clone();
                tasks.push(monoio::spawn(async move {
                    let (mut send, mut recv) = conn.open_bi().await.expect("open");
                    let mut left = w.bytes_per_stream;
                    while left > 0 {
                        let n = left.min(BLOCK);
                        send.write_all(block.slice(..n)).await.expect("write");
                        left -= n;
                    }
                    send.finish().expect("finish");
                    recv.read_to_end(16).await.expect("ack");
                }));
            }
            for t in tasks {
                t.await;
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu = process_cpu() - cpu0;
            conn.close(VarInt::from_u32(0), b"done");
            // Let the close go out before the runtime ends.
            monoio::time::sleep(Duration::from_millis(50)).await;
            Sample {
                secs,
                cpu_secs: cpu,
                bytes: w.streams * w.bytes_per_stream,
            }
        })
    });
    let sample = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
    Ok(sample)
}

// ---------- quinn (tokio) ----------

fn quinn_socket(buf: usize) -> anyhow::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // Same buffers as ours (UdpConfig::default), so neither side wins on kernel drops.
    let _ = s.set_recv_buffer_size(buf);
    let _ = s.set_send_buffer_size(buf);
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>()?.into())?;
    Ok(s.into())
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn quinn_run(t: &Tls, w: Workload) -> anyhow::Result<Sample> {
    let bufsize = UdpConfig::default().recv_buffer;
    let transport = Arc::new(t.cfg.transport_config()?);
    let mut server_cfg = quinn::ServerConfig::with_crypto(t.server.clone());
    server_cfg.transport_config(transport.clone());
    let mut client_cfg = quinn::ClientConfig::new(t.client.clone());
    client_cfg.transport_config(transport);
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let ssock = quinn_socket(bufsize)?;
    let server = std::thread::spawn(move || {
        pin(0);
        tokio_rt().block_on(async move {
            let ep = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server_cfg),
                ssock,
                Arc::new(quinn::TokioRuntime),
            )
            .expect("endpoint");
            addr_tx.send(ep.local_addr().unwrap()).unwrap();
            let conn = ep.accept().await.expect("accept").await.expect("handshake");
            let mut tasks = Vec::new();
            for _ in 0..w.streams {
                let (mut send, mut recv) = conn.accept_bi().await.expect("accept_bi");
                tasks.push(tokio::spawn(async move {
                    let mut n = 0usize;
                    while let Some(c) = recv.read_chunk(usize::MAX, true).await.expect("read") {
                        n += c.bytes.len();
                    }
                    assert_eq!(n, w.bytes_per_stream);
                    send.write_all(b"k").await.expect("ack");
                    send.finish().expect("finish");
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            conn.closed().await;
        });
    });
    let addr = addr_rx.recv()?;
    let csock = quinn_socket(bufsize)?;
    let client = std::thread::spawn(move || {
        pin(1);
        tokio_rt().block_on(async move {
            let mut ep = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                None,
                csock,
                Arc::new(quinn::TokioRuntime),
            )
            .expect("endpoint");
            ep.set_default_client_config(client_cfg);
            let conn = ep
                .connect(addr, "quic.cftunnel.com")
                .expect("connect")
                .await
                .expect("handshake");
            let block = Bytes::from(vec![0x5a; BLOCK]);
            let cpu0 = process_cpu();
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..w.streams {
                let conn = conn.clone();
                let block = block.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut send, mut recv) = conn.open_bi().await.expect("open");
                    let mut left = w.bytes_per_stream;
                    while left > 0 {
                        let n = left.min(BLOCK);
                        send.write_chunk(block.slice(..n)).await.expect("write");
                        left -= n;
                    }
                    send.finish().expect("finish");
                    recv.read_to_end(16).await.expect("ack");
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu = process_cpu() - cpu0;
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
            Sample {
                secs,
                cpu_secs: cpu,
                bytes: w.streams * w.bytes_per_stream,
            }
        })
    });
    let sample = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
    Ok(sample)
}

fn main() -> anyhow::Result<()> {
    let t = tls_setup().context("TLS setup")?;
    let backend = UdpBackend::default();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    // For profiling one side: QUIC_BULK_ONLY=ours|quinn runs just that stack (no results).
    if let Ok(only) = std::env::var("QUIC_BULK_ONLY") {
        for w in WORKLOADS {
            let s = if only == "quinn" {
                quinn_run(&t, w)?
            } else {
                ours(&t, w, backend)?
            };
            println!(
                "{only} {}: {:.0} MB/s, {:.2} CPU-s/GB",
                w.name,
                s.mb_per_s(),
                s.cpu_per_gb()
            );
        }
        return Ok(());
    }
    // Loopback on a shared 2-core VM moves ±20 % run to run, so each workload runs
    // ROUNDS times, the stacks alternating, and the medians are compared.
    let rounds: usize = std::env::var("QUIC_BULK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    for w in WORKLOADS {
        let (mut os, mut qs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            qs.push(quinn_run(&t, w)?);
            os.push(ours(&t, w, backend)?);
        }
        let (o, q) = (median(os), median(qs));
        ratios.push(o.mb_per_s() / q.mb_per_s());
        rows.push((w, o, q));
    }
    let mut md = String::from(
        "| workload | ringway MB/s | quinn MB/s | ratio | ringway CPU-s/GB | quinn CPU-s/GB |\n|---|---|---|---|---|---|\n",
    );
    for (w, o, q) in &rows {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |\n",
            w.name,
            o.mb_per_s(),
            q.mb_per_s(),
            o.mb_per_s() / q.mb_per_s(),
            o.cpu_per_gb(),
            q.cpu_per_gb()
        ));
    }
    print!("{md}");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let json = serde_json::json!({
        "bench": "quic_bulk",
        "backend": format!("{backend:?}"),
        "rounds": rounds,
        "cores": cores,
        "results": rows.iter().map(|(w, o, q)| serde_json::json!({
            "workload": w.name,
            "streams": w.streams,
            "bytes_per_stream": w.bytes_per_stream,
            "ringway": {"secs": o.secs, "mb_per_s": o.mb_per_s(), "cpu_secs": o.cpu_secs, "cpu_s_per_gb": o.cpu_per_gb()},
            "quinn": {"secs": q.secs, "mb_per_s": q.mb_per_s(), "cpu_secs": q.cpu_secs, "cpu_s_per_gb": q.cpu_per_gb()},
            "ratio": o.mb_per_s() / q.mb_per_s(),
        })).collect::<Vec<_>>(),
    });
    let dir = bench::results::todays_dir_here();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("quic_bulk.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(
        dir.join("quic_bulk.md"),
        format!(
            "# quic_bulk ({cores} cores, backend {backend:?}, median of {rounds} alternating rounds)\n\n{md}"
        ),
    )?;
    println!(
        "quic_bulk ratio_single={:.2} ratio_parallel={:.2}",
        ratios[0], ratios[1]
    );
    Ok(())
}
