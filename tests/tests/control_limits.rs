//! The control plane's HTTP server limits (`ringway control serve`): a head dribbled byte by
//! byte is cut off, an idle keep-alive connection is closed, a slow body gets 503, an
//! oversized body 413, the long-poll keeps its own limit, and a client over the connection cap
//! is answered 503 at once instead of hanging. Small flag values keep every test short; the
//! waits below are failure limits only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringway_tests::prelude::*;
use ringway_tests::process::ringway_bin;
use ringway_tests::raw_client::HttpResponse;
use serde_json::Value;

fn start(extra: &[&str]) -> (tempfile::TempDir, ControlPlane) {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_with(
        &tmp.path().join("data"),
        &["limits.test"],
        "127.0.0.1:0",
        "info",
        extra,
    );
    (tmp, cp)
}

fn addr(cp: &ControlPlane) -> SocketAddr {
    cp.addr().parse().unwrap()
}

/// Reads until the server closes or `limit` passes; true when it closed (EOF or reset).
fn closed_by_server(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn envelope(r: &HttpResponse) -> Value {
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.summary()
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(v["success"], false, "{}", r.summary());
    assert!(v["errors"][0]["code"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

#[test]
fn control_plane_closes_a_dribbled_head_and_an_idle_keep_alive_connection() {
    let (_tmp, cp) = start(&["--header-timeout", "1s", "--idle-timeout", "2s"]);
    let a = addr(&cp);

    // Slowloris: a head that never ends, one byte every 200 ms. The server must close it.
    let mut s = TcpStream::connect(a).unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if s.write_all(&head[sent % head.len()..sent % head.len() + 1])
            .is_err()
        {
            closed = true;
            break;
        }
        sent += 1;
        if closed_by_server(&mut s, Duration::from_millis(200)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a head dribbled for 20 s ({sent} bytes) was never closed"
    );
    eprintln!("[slowloris] closed after {sent} bytes");

    // A keep-alive connection that answered one request, then sits idle: closed.
    let mut c = answered_once(a);
    assert!(
        c.peer_closed(Duration::from_secs(20)),
        "an idle keep-alive connection was not closed"
    );

    // A connection that keeps asking, more often than the idle timeout, is kept: every
    // request on it is answered on the same socket.
    let mut c = RawClient::connect(a);
    let mut answered = 0;
    for _ in 0..6 {
        let r = c
            .request(
                &request_bytes("GET", "x", "/healthz", &[], None, false),
                false,
            )
            .expect("a busy keep-alive connection was closed");
        assert_eq!(r.status, 200);
        answered += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(answered, 6);
}

#[test]
fn control_plane_times_out_a_slow_body_refuses_a_large_one_and_keeps_the_long_poll() {
    let (_tmp, cp) = start(&[
        "--request-timeout",
        "1s",
        "--long-poll-max",
        "3s",
        "--max-body",
        "1024",
    ]);
    let a = addr(&cp);
    let admin = cp.admin_token();
    let auth = format!("Bearer {admin}");

    // A body that stops after 10 of its 100 bytes: 503 in the envelope, not a hang.
    let mut c = RawClient::connect(a);
    let mut req = request_bytes(
        "POST",
        "x",
        "/client/v4/accounts",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Content-Length", "100"),
        ],
        None,
        false,
    );
    req.extend_from_slice(b"{\"name\": \"");
    let r = c.request(&req, false).expect("an answer to the slow body");
    assert_eq!(r.status, 503, "{}", r.summary());
    envelope(&r);

    // A body over --max-body: 413 in the envelope.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(4096));
    let mut c = RawClient::connect(a);
    let r = c.authorized(
        "POST",
        "/client/v4/accounts",
        &auth,
        Some(big.as_bytes()),
        true,
    );
    assert_eq!(r.status, 413, "{}", r.summary());
    envelope(&r);

    // The long-poll waits its full 3 s although API requests get 1 s: 304, not 503.
    let edge = format!("Bearer {}", cp.edge_token());
    let mut c = RawClient::connect(a);
    let r = c.authorized("GET", "/edge/v1/snapshot?since=0", &edge, None, false);
    assert_eq!(r.status, 200, "{}", r.summary());
    let version = serde_json::from_slice::<Value>(&r.body).unwrap()["result"]["version"]
        .as_u64()
        .unwrap();
    let r = c.authorized(
        "GET",
        &format!("/edge/v1/snapshot?since={version}&wait=3"),
        &edge,
        None,
        false,
    );
    assert_eq!(r.status, 304, "{}", r.summary());
}

#[test]
fn control_plane_answers_503_past_its_connection_cap_instead_of_hanging() {
    let (_tmp, cp) = start(&[
        "--max-connections",
        "4",
        "--header-timeout",
        "60s",
        "--idle-timeout",
        "60s",
    ]);
    let a = addr(&cp);
    // Four connections hold every slot (each answered once, then idle).
    let mut held: Vec<RawClient> = (0..4).map(|_| answered_once(a)).collect();
    // Over the cap: each new client gets a 503 envelope and a close, within the failure
    // limit of the client's read timeout.
    let mut refused = 0;
    for _ in 0..5 {
        let mut c = RawClient::connect_timeout(a, Duration::from_secs(10)).unwrap();
        let r = c
            .request(
                &request_bytes("GET", "x", "/healthz", &[], None, false),
                false,
            )
            .expect("an over-cap client must get an answer, not a hang");
        assert_eq!(r.status, 503, "{}", r.summary());
        assert_eq!(r.header("retry-after"), Some("1"));
        let v = envelope(&r);
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains('4'),
            "{v}"
        );
        refused += 1;
    }
    assert_eq!(refused, 5);
    // One slot freed: a new client is served again.
    drop(held.pop());
    let served = wait_for(
        "a freed slot to serve a new client",
        Duration::from_secs(10),
        || {
            let mut c = RawClient::connect_timeout(a, Duration::from_secs(10)).ok()?;
            let r = c
                .request(
                    &request_bytes("GET", "x", "/healthz", &[], None, true),
                    false,
                )
                .ok()?;
            (r.status == 200).then_some(r)
        },
    );
    assert_eq!(served.text(), "ok");
}

#[test]
fn control_plane_refuses_zero_limits_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--max-connections", "0"),
        ("--header-timeout", "0s"),
        ("--idle-timeout", "nonsense"),
    ] {
        let out = std::process::Command::new(ringway_bin())
            .args(["control", "serve", "--data-dir"])
            .arg(tmp.path().join("d"))
            .args(["--listen", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
}

/// A keep-alive connection to `a` that has had one `GET /healthz` answered.
fn answered_once(a: SocketAddr) -> RawClient {
    let mut c = RawClient::connect(a);
    let r = c
        .request(
            &request_bytes("GET", "x", "/healthz", &[], None, false),
            false,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.summary());
    c
}
