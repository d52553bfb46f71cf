//! The real `loadgen` binary against the built-in test server: fixed-rate accuracy,
//! coordinated-omission correction, error counting, HTTP/2, and the output files.
//!
//! Pass/fail never depends on how fast this machine is: counts are exact by construction
//! (the open-loop schedule is absolute), and latency checks compare an injected stall of
//! hundreds of milliseconds against what each load model must report about it.

use std::{
    net::SocketAddr,
    process::{Command, Output},
    sync::atomic::Ordering,
    time::Duration,
};

use loadgen::testserver::{ServerConfig, TestServer};
use serde_json::Value;

fn server(config: ServerConfig) -> TestServer {
    TestServer::start("127.0.0.1:0".parse().unwrap(), config).expect("test server starts")
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

struct Run {
    output: Output,
    json: Option<Value>,
    hgrm: String,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn json(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "no --json output; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&self.output.stdout),
                self.stderr()
            )
        })
    }

    /// Fails the test, showing loadgen's stderr, unless it exited 0.
    fn succeeded(self) -> Self {
        assert!(self.output.status.success(), "{}", self.stderr());
        self
    }

    fn num(&self, pointer: &str) -> f64 {
        self.json()
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{pointer} missing in {}", self.json()))
    }
}

fn loadgen(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let hgrm = dir.path().join("out.hgrm");
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .output()
        .expect("loadgen runs");
    Run {
        output,
        json: std::fs::read_to_string(&json)
            .ok()
            .map(|t| serde_json::from_str(&t).expect("--json is valid JSON")),
        hgrm: std::fs::read_to_string(&hgrm).unwrap_or_default(),
    }
}

#[test]
fn fixed_rate_holds_its_rate_within_one_percent() {
    let srv = server(ServerConfig::default());
    let run = loadgen(&[
        "--rate",
        "2000",
        "-c",
        "8",
        "-t",
        "2",
        "-d",
        "2s",
        "--warmup",
        "500ms",
        &url(srv.addr(), "/"),
    ])
    .succeeded();
    let rps = run.num("/requests_per_s");
    assert!((rps - 2000.0).abs() / 2000.0 < 0.01, "reported {rps} req/s");
    assert_eq!(run.num("/errors/total"), 0.0);
    assert_eq!(run.num("/status/200"), run.num("/requests"));
    // What the server saw: the schedule over warm-up and window, 2.5 s at 2000/s, no more
    // and no less (each lane rounds its last slot).
    let seen = srv.stats().requests.load(Ordering::Relaxed) as f64;
    assert!((seen - 5000.0).abs() <= 50.0, "server saw {seen} requests");
    assert_eq!(run.json()["schema"], "loadgen.v1");
    assert_eq!(run.json()["config"]["mode"], "open");
}

/// A 300 ms stall in the middle of the window: every open-loop request due during it is
/// late, so the corrected tail shows it; a closed loop sends nothing while waiting, so only
/// one request per connection sees it and its p99 stays clean.
#[test]
fn injected_stall_shows_in_corrected_percentiles_and_not_in_closed_loop() {
    let stall = Some((Duration::from_millis(1500), Duration::from_millis(300)));
    // Each run gets its own stalled server: the stall is at a fixed time after it starts.
    let stalled_run = |model: &[&str]| {
        let srv = server(ServerConfig {
            stall,
            ..ServerConfig::default()
        });
        let u = url(srv.addr(), "/");
        let mut args = model.to_vec();
        args.extend(["-c", "8", "-t", "2", "-d", "3s", "--warmup", "500ms", &u]);
        loadgen(&args).succeeded()
    };
    let open = stalled_run(&["--rate", "1000"]);
    let open_p99 = open.num("/latency_us/p99");
    assert!(
        open_p99 >= 150_000.0,
        "open-loop p99 {open_p99} µs misses a 300 ms stall that delayed ~10% of requests"
    );

    let closed = stalled_run(&[]);
    let (closed_p99, closed_max) = (closed.num("/latency_us/p99"), closed.num("/latency_us/max"));
    assert!(
        closed_max >= 250_000.0,
        "the stall happened: max {closed_max} µs"
    );
    assert!(
        closed.num("/requests") >= 1000.0,
        "enough requests for a p99: {}",
        closed.num("/requests")
    );
    assert!(
        closed_p99 < 100_000.0,
        "closed-loop p99 {closed_p99} µs: only 8 requests can have waited for the stall"
    );
}

#[test]
fn error_kinds_are_counted() {
    let srv = server(ServerConfig::default());
    let base = ["-c", "2", "-t", "1", "-d", "500ms", "--warmup", "0"];
    let with = |path: &str, extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        let u = url(srv.addr(), path);
        args.push(&u);
        loadgen(&args)
    };

    let garbage = with("/garbage", &[]);
    assert_eq!(garbage.output.status.code(), Some(1), "no response: exit 1");
    assert!(garbage.num("/errors/parse") > 0.0);
    assert_eq!(garbage.num("/errors/total"), garbage.num("/errors/parse"));
    assert!(
        garbage.stderr().contains("malformed response"),
        "{}",
        garbage.stderr()
    );

    let truncated = with("/truncate", &[]);
    assert!(truncated.num("/errors/reset") > 0.0);
    assert_eq!(
        truncated.num("/errors/total"),
        truncated.num("/errors/reset")
    );
    assert_eq!(truncated.num("/requests"), 0.0);

    let closed = with("/close", &[]);
    assert!(closed.num("/errors/reset") > 0.0);

    let slow = with("/sleep/2000", &["--timeout", "200ms"]);
    assert!(
        slow.num("/errors/timeout") >= 2.0,
        "one per connection at least"
    );
    assert_eq!(slow.num("/errors/total"), slow.num("/errors/timeout"));

    let statuses = with("/status/503", &[]);
    assert!(statuses.output.status.success());
    assert_eq!(statuses.num("/status/503"), statuses.num("/requests"));
    assert_eq!(statuses.num("/errors/total"), 0.0);

    // A server that stops accepting: two connections are served (the first accept is the
    // pre-flight check), then connects are refused and counted.
    let capped = server(ServerConfig {
        max_connections: Some(3),
        ..ServerConfig::default()
    });
    let refused = loadgen(&[
        "-c",
        "1",
        "-t",
        "1",
        "-d",
        "500ms",
        "--warmup",
        "0",
        "--conn-per-request",
        &url(capped.addr(), "/"),
    ]);
    assert!(refused.num("/requests") >= 1.0, "{}", refused.stderr());
    assert!(refused.num("/errors/connect") >= 1.0);
}

#[test]
fn unreachable_target_and_bad_input_get_one_clear_line() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = loadgen(&["-d", "1s", &format!("http://127.0.0.1:{port}/")]);
    assert_eq!(dead.output.status.code(), Some(1));
    let err = dead.stderr();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot connect to 127.0.0.1"), "{err}");

    for (args, needle) in [
        (vec!["ftp://x/"], "scheme"),
        (vec!["-c", "0", "http://127.0.0.1/"], "connections"),
        (vec!["-H", "nocolon", "http://127.0.0.1/"], "bad header"),
        (vec!["--rate", "0", "http://127.0.0.1/"], "--rate"),
    ] {
        let run = loadgen(&args);
        assert_eq!(run.output.status.code(), Some(2), "{args:?}");
        let err = run.stderr();
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn exact_request_count_http2_and_output_files() {
    let srv = server(ServerConfig::default());
    let counted = loadgen(&[
        "-n",
        "777",
        "-c",
        "4",
        "-t",
        "2",
        "--warmup",
        "0",
        &url(srv.addr(), "/bytes/100"),
        &url(srv.addr(), "/chunked"),
    ])
    .succeeded();
    assert_eq!(counted.num("/requests"), 777.0);
    assert_eq!(counted.num("/status/200"), 777.0);
    assert!(counted.hgrm.contains("Percentile"), "{}", counted.hgrm);
    assert!(
        counted.hgrm.contains("Total count    =          777"),
        "{}",
        counted.hgrm
    );

    let h2 = loadgen(&[
        "--h2",
        "--streams",
        "4",
        "-c",
        "2",
        "-t",
        "2",
        "-n",
        "400",
        "--warmup",
        "0",
        "-m",
        "POST",
        "--body-size",
        "100000",
        &url(srv.addr(), "/upload"),
    ])
    .succeeded();
    assert_eq!(h2.num("/requests"), 400.0);
    assert_eq!(h2.num("/status/200"), 400.0);
    assert_eq!(h2.num("/bytes_sent"), 400.0 * 100_000.0);
    assert_eq!(h2.json()["config"]["h2"], true);

    let upload = loadgen(&[
        "-n",
        "50",
        "-c",
        "2",
        "--warmup",
        "0",
        "-m",
        "PUT",
        "--body-size",
        "1048576",
        &url(srv.addr(), "/upload"),
    ]);
    assert_eq!(upload.num("/requests"), 50.0);
    assert!(upload.num("/bytes_sent") >= 50.0 * 1_048_576.0);
}

#[test]
fn https_with_alpn_for_http1_and_http2() {
    let srv = server(ServerConfig {
        tls: true,
        ..ServerConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, srv.ca_pem().unwrap()).unwrap();
    let ca = ca.to_str().unwrap();
    let https = format!("https://127.0.0.1:{}/bytes/2000", srv.addr().port());

    let h1 = loadgen(&[
        "-n", "300", "-c", "2", "--warmup", "0", "--cacert", ca, &https,
    ])
    .succeeded();
    assert_eq!(h1.num("/status/200"), 300.0);
    assert!(h1.num("/bytes_received") >= 300.0 * 2000.0);

    let h2 = loadgen(&[
        "--h2",
        "--streams",
        "3",
        "-n",
        "300",
        "-c",
        "2",
        "--warmup",
        "0",
        "--insecure",
        &https,
    ])
    .succeeded();
    assert_eq!(h2.num("/status/200"), 300.0);
    assert_eq!(h2.num("/bytes_received"), 300.0 * 2000.0);

    // Without the CA the handshake fails: counted as connect errors, one clear line, exit 1.
    let untrusted = loadgen(&["-d", "300ms", "-c", "1", "--warmup", "0", &https]);
    assert_eq!(untrusted.output.status.code(), Some(1));
    assert!(untrusted.num("/errors/connect") >= 1.0);
    assert!(
        untrusted.stderr().contains("certificate"),
        "{}",
        untrusted.stderr()
    );
}
