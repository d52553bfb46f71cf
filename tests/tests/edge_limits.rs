//! The public listener's limits with real processes: clients that never read cost only their
//! own streams (others on the same tunnel connection keep flowing), slowloris heads, slow
//! bodies and idle keep-alive connections are closed by their timeouts, and the caps answer
//! 503 instead of letting clients hang.
//!
//! Flag values are short so that the tests are quick; every wait has a generous failure limit
//! and the assertions count outcomes, never time.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringway_tests::connector::Connector;
use ringway_tests::edge::EdgeOpts;
use ringway_tests::flood::vm_rss_kib;
use ringway_tests::prelude::*;
use ringway_tests::raw_client::HttpResponse;
use ringway_tests::slow_clients::{
    BulkOrigin, StalledDownload, StalledUpload, dribble, read_until_closed, status_of, wait_until,
};

const ZONE: &str = "limits.test";

const MIB: u64 = 1 << 20;

fn edge_flags(flags: &[&str]) -> EdgeOpts {
    EdgeOpts {
        extra: flags.iter().map(|s| s.to_string()).collect(),
        ..EdgeOpts::default()
    }
}

/// An edge with `flags`, a tunnel `name` routed from `name.ZONE` to a [`BulkOrigin`] over one
/// tunnel connection (so every stream shares one connection's flow-control budget).
struct Rig {
    t: TunnelSetup,
    origin: BulkOrigin,
    host: String,
    connector: Connector,
}

impl Rig {
    fn start(name: &str, flags: &[&str]) -> Self {
        let t = TunnelSetup::with_opts(ZONE, edge_flags(flags));
        let origin = BulkOrigin::start();
        let host = format!("{name}.{ZONE}");
        let id = t.tunnel(name, &[&host]);
        let connector = t.run_url(name, &id, &origin.url(), &["--ha-connections", "1"], 1);
        t.wait_served(&host);
        Self {
            t,
            origin,
            host,
            connector,
        }
    }

    fn edge(&self) -> SocketAddr {
        self.t.edge.http_addr()
    }

    fn get(&self, path: &str, limit: Duration) -> std::io::Result<HttpResponse> {
        let mut c = RawClient::connect_timeout(self.edge(), limit)?;
        c.request(
            &request_bytes("GET", &self.host, path, &[], None, true),
            false,
        )
    }
}

/// Waits until the origin's bulk writes stop growing (every stalled stream is full all the way
/// back to the origin). Setup only: the failure limit is what bounds it.
fn wait_for_stall(origin: &BulkOrigin, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = origin.bulk_bytes_written();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = origin.bulk_bytes_written();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled downloads never settled ({now} bytes written)"
        );
        last = now;
    }
}

/// What [`unrelated_requests`] saw.
struct Unrelated {
    completed: usize,
    failures: Vec<String>,
    p50: Duration,
    max: Duration,
}

/// 8 threads × 16 `GET /small/T/I` on fresh connections through `rig`'s tunnel; each answer
/// must be the origin's. 20 s per request is a failure limit, far above any healthy answer.
fn unrelated_requests(rig: &Rig) -> Unrelated {
    const THREADS: usize = 8;
    const EACH: usize = 16;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (edge, host) = (rig.edge(), rig.host.clone());
            let (failures, latencies) = (failures.clone(), latencies.clone());
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let path = format!("/small/{t}/{i}");
                    let started = Instant::now();
                    let r = RawClient::connect_timeout(edge, Duration::from_secs(20)).and_then(
                        |mut c| {
                            c.request(&request_bytes("GET", &host, &path, &[], None, true), false)
                        },
                    );
                    let took = started.elapsed();
                    match r {
                        Ok(r) if r.status == 200 && r.text() == format!("ok {path}") => {
                            latencies.lock().unwrap().push(took);
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {}", r.summary())),
                        Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("request thread");
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    Unrelated {
        completed: latencies.len(),
        failures: failures.lock().unwrap().clone(),
        p50: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

#[test]
fn uploads_an_origin_never_reads_do_not_stall_other_requests() {
    let rig = Rig::start("sink", &["--http-body-timeout", "600s"]);
    let connector_pid = rig.connector.proc.proc.pid();
    let rss_before = vm_rss_kib(connector_pid);
    const STALLED: usize = 16;
    let uploads: Vec<StalledUpload> = (0..STALLED)
        .map(|i| StalledUpload::start(rig.edge(), &rig.host, i, 256 * MIB))
        .collect();
    wait_until(
        "16 uploads parked at the origin",
        Duration::from_secs(30),
        || rig.origin.stats.sinks_parked.load(Ordering::SeqCst) >= STALLED,
    );
    // Setup only: wait until the uploads stop moving (every buffer on the way is full).
    let total = || -> u64 { uploads.iter().map(|u| u.sent.load(Ordering::SeqCst)).sum() };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = total();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = total();
        if now == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "uploads never settled ({now} bytes)"
        );
        last = now;
    }
    let u = unrelated_requests(&rig);
    let rss_after = vm_rss_kib(connector_pid);
    eprintln!(
        "upload stall test: {STALLED} stalled uploads ({} MiB sent per upload), 128 unrelated \
         requests, {} completed, p50 {:?}, max {:?}; connector VmRSS KiB {rss_before:?} -> \
         {rss_after:?}",
        last / STALLED as u64 / MIB,
        u.completed,
        u.p50,
        u.max,
    );
    assert!(
        u.failures.is_empty(),
        "{} unrelated requests failed while {STALLED} uploads stalled: {:#?}\nconnector:\n{}",
        u.failures.len(),
        u.failures,
        rig.connector.logs()
    );
    assert_eq!(u.completed, 128);
    // As at the edge for downloads: at most a 6 MiB stream window per stalled upload, and
    // quinn-proto's 2.5× before compaction.
    let connector_rss = rss_after.expect("connector VmRSS");
    assert!(
        connector_rss < 512 * 1024,
        "connector VmRSS {connector_rss} KiB with {STALLED} stalled uploads"
    );
    drop(uploads);
}

#[test]
fn the_request_timeout_ends_a_long_download() {
    let rig = Rig::start(
        "total",
        &[
            "--http-request-timeout",
            "2s",
            "--http-body-timeout",
            "600s",
        ],
    );
    let mut d = StalledDownload::start(rig.edge(), &rig.host, 256 * MIB);
    wait_until(
        "the origin to see its connection dropped",
        Duration::from_secs(30),
        || rig.origin.abandoned() >= 1,
    );
    assert!(
        d.closed_by_edge(Duration::from_secs(20)),
        "the edge kept a request past its total time"
    );
    // Quick requests are unaffected.
    let r = rig
        .get("/quick", Duration::from_secs(20))
        .expect("quick GET");
    assert_eq!(r.status, 200, "{}", r.summary());
}

#[test]
fn the_request_timeout_answers_504_when_the_origin_has_not_answered() {
    let rig = Rig::start("late", &["--http-request-timeout", "1s"]);
    // `/sink` parks at the origin without answering.
    let mut c = RawClient::connect(rig.edge());
    let r = c
        .request(
            &request_bytes("POST", &rig.host, "/sink/late", &[], Some(b"x"), false),
            false,
        )
        .expect("an answer from the edge");
    assert_eq!(r.status, 504, "{}", r.summary());
    assert!(
        c.peer_closed(Duration::from_secs(20)),
        "the connection stayed open"
    );
}

#[test]
fn sixteen_clients_that_never_read_do_not_stall_other_requests() {
    // Stalled clients stay stalled for the whole test.
    let rig = Rig::start("stall", &["--http-body-timeout", "600s"]);
    let edge_pid = rig.t.edge.proc.proc.pid();
    let connector_pid = rig.connector.proc.proc.pid();
    let rss_before = (vm_rss_kib(edge_pid), vm_rss_kib(connector_pid));

    const STALLED: usize = 16;
    let stalled: Vec<StalledDownload> = (0..STALLED)
        .map(|_| StalledDownload::start(rig.edge(), &rig.host, 64 * MIB))
        .collect();
    wait_until(
        "16 bulk responses started at the origin",
        Duration::from_secs(30),
        || rig.origin.bulk_started() >= STALLED,
    );
    let written = wait_for_stall(&rig.origin, Duration::from_secs(60));

    // 128 requests on fresh connections, through the same tunnel connection.
    let u = unrelated_requests(&rig);
    let rss_after = (vm_rss_kib(edge_pid), vm_rss_kib(connector_pid));
    eprintln!(
        "stall test: {STALLED} stalled downloads ({written} bytes taken from the origin, {} MiB \
         per stream), 128 unrelated requests, {} completed, p50 {:?}, max {:?}; \
         VmRSS KiB edge {:?} -> {:?}, connector {:?} -> {:?}",
        written / STALLED as u64 / MIB,
        u.completed,
        u.p50,
        u.max,
        rss_before.0,
        rss_after.0,
        rss_before.1,
        rss_after.1,
    );
    assert!(
        u.failures.is_empty(),
        "{} of 128 unrelated requests failed while {STALLED} clients stalled: {:#?}\nedge:\n{}",
        u.failures.len(),
        u.failures,
        rig.t.edge.logs()
    );
    assert_eq!(u.completed, 128);
    // Each stalled stream holds at most its 6 MiB stream window of payload at the edge;
    // quinn-proto lets a stream's buffers grow to 2.5× what they hold before it compacts
    // them, so ~15 MiB of RSS per stream: 16 streams ≈ 240 MiB over the baseline. The
    // connector holds only what sits in its origin socket's buffers.
    let edge_rss = rss_after.0.expect("edge VmRSS");
    let connector_rss = rss_after.1.expect("connector VmRSS");
    assert!(
        edge_rss < 512 * 1024,
        "edge VmRSS {edge_rss} KiB with {STALLED} stalled streams"
    );
    assert!(
        connector_rss < 256 * 1024,
        "connector VmRSS {connector_rss} KiB with {STALLED} stalled streams"
    );
    drop(stalled);
}

#[test]
fn a_dribbled_head_gets_408_and_a_silent_client_is_closed() {
    let t = TunnelSetup::with_opts(ZONE, edge_flags(&["--http-head-timeout", "1s"]));
    let edge = t.edge.http_addr();

    // 1 byte per 200 ms: the ~90-byte head would take 18 s; the head timeout is 1 s.
    let mut s = TcpStream::connect(edge).expect("connect");
    let head = format!(
        "GET / HTTP/1.1\r\nHost: slow.{ZONE}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40)
    )
    .into_bytes();
    let len = head.len();
    let dribbler = dribble(
        s.try_clone().expect("clone"),
        head,
        Duration::from_millis(200),
    );
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(closed, "the edge did not close a dribbling client");
    assert_eq!(
        status_of(&got),
        Some(408),
        "answer: {:?}",
        String::from_utf8_lossy(&got)
    );
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.contains("connection: close"), "{text}");
    drop(s);
    let sent = dribbler.join().expect("dribbler");
    assert!(
        sent < len,
        "the whole head went out ({sent} bytes) before the close"
    );

    // A client that connects and says nothing is closed too (no answer owed).
    let mut silent = TcpStream::connect(edge).expect("connect");
    let (got, closed) = read_until_closed(&mut silent, Duration::from_secs(20));
    assert!(closed, "the edge kept a silent client");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));

    // The edge still serves.
    let r = t.edge.get(&format!("none.{ZONE}"), "/");
    assert_eq!(r.status, 404, "{}", r.summary());
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let rig = Rig::start("idle", &["--http-keepalive-timeout", "1s"]);
    let mut c = RawClient::connect(rig.edge());
    for i in 0..2 {
        let r = c
            .request(
                &request_bytes("GET", &rig.host, &format!("/k{i}"), &[], None, false),
                false,
            )
            .expect("keep-alive request");
        assert_eq!(r.status, 200, "{}", r.summary());
    }
    assert!(
        c.peer_closed(Duration::from_secs(20)),
        "the edge kept an idle keep-alive connection"
    );
}

#[test]
fn a_stalled_request_body_is_closed_and_the_origin_connection_dropped() {
    let rig = Rig::start("slowbody", &["--http-body-timeout", "1s"]);
    let mut s = TcpStream::connect(rig.edge()).expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        rig.host,
        10 * MIB
    );
    use std::io::Write;
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&vec![b'u'; 64 * 1024])
        .expect("first part of the body");
    // Then nothing more: the edge must give up on the client and the stream.
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(closed, "the edge kept a client whose body stalled");
    wait_until(
        "the origin to see its connection dropped mid-body",
        Duration::from_secs(20),
        || rig.origin.abandoned() >= 1,
    );
    // The tunnel still serves.
    let r = rig
        .get("/after", Duration::from_secs(20))
        .expect("GET after");
    assert_eq!(r.status, 200, "{}", r.summary());
}

#[test]
fn a_client_that_stops_reading_is_closed_and_the_origin_connection_dropped() {
    let rig = Rig::start("noread", &["--http-body-timeout", "1s"]);
    let mut d = StalledDownload::start(rig.edge(), &rig.host, 256 * MIB);
    wait_until(
        "the bulk response to start",
        Duration::from_secs(20),
        || rig.origin.bulk_started() >= 1,
    );
    wait_until(
        "the origin to see its connection dropped mid-response",
        Duration::from_secs(30),
        || rig.origin.abandoned() >= 1,
    );
    assert!(
        d.closed_by_edge(Duration::from_secs(20)),
        "the edge kept a client that stopped reading"
    );
    assert!(
        rig.origin.bulk_bytes_written() < 256 * MIB,
        "the whole body was written"
    );
}

#[test]
fn the_client_connection_cap_answers_503() {
    let t = TunnelSetup::with_opts(
        ZONE,
        edge_flags(&[
            "--workers",
            "1",
            "--http-max-connections",
            "3",
            "--http-head-timeout",
            "120s",
        ]),
    );
    let edge = t.edge.http_addr();
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(edge).expect("connect"))
        .collect();
    let mut over = TcpStream::connect(edge).expect("connect over the cap");
    let (got, closed) = read_until_closed(&mut over, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert_eq!(status_of(&got), Some(503), "{text}");
    assert!(text.contains("retry-after: 1\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(closed, "the refused connection stayed open");

    // A held connection still works, and freeing one lets a new client in.
    use std::io::Write;
    held[0]
        .write_all(&request_bytes(
            "GET",
            &format!("x.{ZONE}"),
            "/",
            &[],
            None,
            true,
        ))
        .expect("request on a held connection");
    let (got, _) = read_until_closed(&mut held[0], Duration::from_secs(20));
    assert_eq!(
        status_of(&got),
        Some(404),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    held.remove(0);
    t.edge.wait_get(
        "a slot to free up",
        &format!("x.{ZONE}"),
        "/",
        Duration::from_secs(20),
        |r| r.status == 404,
    );
    drop(held);
}

#[test]
fn the_per_tunnel_stream_cap_answers_503() {
    let rig = Rig::start(
        "capped",
        &["--tunnel-max-streams", "2", "--http-body-timeout", "600s"],
    );
    let stalled: Vec<_> = (0..2)
        .map(|_| StalledDownload::start(rig.edge(), &rig.host, 64 * MIB))
        .collect();
    wait_until("2 bulk responses started", Duration::from_secs(20), || {
        rig.origin.bulk_started() >= 2
    });
    let r = rig
        .get("/third", Duration::from_secs(20))
        .expect("third request");
    assert_eq!(r.status, 503, "{}", r.summary());
    assert_eq!(r.header("Retry-After"), Some("1"), "{}", r.summary());
    drop(stalled);
    // With the streams gone the tunnel serves again.
    rig.t.edge.wait_get(
        "the tunnel to serve again",
        &rig.host,
        "/again",
        Duration::from_secs(20),
        |r| r.status == 200,
    );
}

#[test]
fn a_zero_limit_is_one_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cli = Cli::new(tmp.path());
    let state = tmp.path().join("edge");
    let state = state.display().to_string();
    let base = [
        "edge",
        "run",
        "--control",
        "http://127.0.0.1:9",
        "--edge-token",
        "unused",
        "--state-dir",
        &state,
    ];
    for (flag, value) in [
        ("--tunnel-max-streams", "0"),
        ("--http-max-connections", "0"),
        ("--http-head-timeout", "0s"),
        ("--http-body-timeout", "0"),
        ("--http-keepalive-timeout", "0ms"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        let line = cli.run(&args).one_line_error();
        assert!(
            line.contains(flag) && line.contains("greater than 0"),
            "{flag} {value}: {line}"
        );
    }
    let mut args = base.to_vec();
    args.extend(["--http-head-timeout", "soon"]);
    let r = cli.run(&args);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--http-head-timeout"), "{}", r.stderr);
}
