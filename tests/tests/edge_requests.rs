//! Requests whose exact meaning must survive the tunnel, and answers that must not leak: each
//! test is the regression test of one defect found by probing the edge as an attacker would.
//!
//! The origin here is [`ScriptedOrigin`]: it records every request's raw bytes (head and body)
//! and answers with scripted raw bytes, so obs-text and oversized heads can be checked byte
//! for byte (the shared helpers read heads as UTF-8 lines).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringway_tests::connector::Connector;
use ringway_tests::prelude::*;
use ringway_tests::process::closed_port_url;

const ZONE: &str = "req.test";

/// A loopback origin that records raw requests and answers each with `answer(request)`.
struct ScriptedOrigin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ScriptedOrigin {
    fn start(answer: fn(&[u8]) -> Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        // Ends with the test process; each connection thread ends at EOF.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = record.clone();
                std::thread::spawn(move || serve(stream, &record, answer));
            }
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Vec<u8>> {
        self.seen.lock().expect("seen").clone()
    }
}

/// Reads requests (head, then a Content-Length or chunked body) and answers each.
fn serve(mut s: TcpStream, record: &Mutex<Vec<Vec<u8>>>, answer: fn(&[u8]) -> Vec<u8>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    // One request per turn, until EOF or an error.
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head_len = end + 4;
        let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
        let want = if let Some(v) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
            head_len + v.trim().parse::<usize>().unwrap_or(0)
        } else if head.contains("transfer-encoding: chunked") {
            // Good enough for these tests: the body ends with the zero chunk.
            match find(&buf[head_len..], b"0\r\n\r\n") {
                Some(i) => head_len + i + 5,
                None => usize::MAX,
            }
        } else {
            head_len
        };
        if buf.len() < want {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        }
        let request: Vec<u8> = buf.drain(..want).collect();
        let reply = answer(&request);
        record.lock().expect("seen").push(request);
        if s.write_all(&reply).is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn ok_answer(_: &[u8]) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
}

/// Sends raw bytes to the edge and reads until it closes (requests here say `Connection:
/// close` or are answered with a close).
fn exchange(edge: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(edge).expect("connect edge");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A tunnel to `origin_url` routed from `host`, served by one connector.
fn tunnel_to(t: &TunnelSetup, host: &str, origin_url: &str) -> Connector {
    let id = t.tunnel("req", &[host]);
    let conn = t.run_url("req", &id, origin_url, &[], 1);
    t.wait_served(host);
    conn
}

#[test]
fn connection_header_cannot_strip_the_body_length() {
    let t = TunnelSetup::new(ZONE);
    let origin = ScriptedOrigin::start(ok_answer);
    let host = format!("app.{ZONE}");
    let _c = tunnel_to(&t, &host, &origin.url());
    let before = origin.requests().len();

    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nConnection: Content-Length, close\r\nContent-Length: 11\r\n\r\nhello world"
    );
    let answer = exchange(t.edge.http_addr(), req.as_bytes());
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let seen = origin.requests();
    assert_eq!(seen.len(), before + 1, "the origin saw the request once");
    let got = &seen[before];
    assert!(
        got.ends_with(b"\r\n\r\nhello world"),
        "the origin got the whole body: {}",
        String::from_utf8_lossy(got)
    );
}

#[test]
fn connect_and_options_asterisk_are_answered_by_the_edge_not_rewritten() {
    let t = TunnelSetup::new(ZONE);
    let origin = ScriptedOrigin::start(ok_answer);
    let host = format!("app.{ZONE}");
    let _c = tunnel_to(&t, &host, &origin.url());
    let before = origin.requests().len();

    let connect = exchange(
        t.edge.http_addr(),
        format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes(),
    );
    assert!(
        connect.starts_with(b"HTTP/1.1 501"),
        "{}",
        String::from_utf8_lossy(&connect)
    );
    let options = exchange(
        t.edge.http_addr(),
        format!("OPTIONS * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        options.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&options)
    );
    // Neither reached the origin as something else (`CONNECT /`, `OPTIONS /`).
    let get = exchange(
        t.edge.http_addr(),
        format!("GET /after HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(get.starts_with(b"HTTP/1.1 200"));
    let seen = origin.requests();
    assert_eq!(seen.len(), before + 1, "only the GET reached the origin");
    assert!(seen[before].starts_with(b"GET /after HTTP/1.1\r\n"));
}

fn raw_header_answer(req: &[u8]) -> Vec<u8> {
    if req.starts_with(b"GET / ") {
        // The readiness probe of `wait_served`, whose reader wants UTF-8.
        return ok_answer(req);
    }
    b"HTTP/1.1 200 OK\r\nX-Resp: \xe9t\xe9 \xff\r\nContent-Length: 2\r\n\r\nok".to_vec()
}

#[test]
fn header_bytes_cross_the_tunnel_unchanged_both_ways() {
    let t = TunnelSetup::new(ZONE);
    let origin = ScriptedOrigin::start(raw_header_answer);
    let host = format!("app.{ZONE}");
    let _c = tunnel_to(&t, &host, &origin.url());
    let before = origin.requests().len();

    let mut req =
        format!("GET /raw HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n").into_bytes();
    req.extend_from_slice(b"X-Raw: caf\xe9 \xff\x80\r\n\r\n");
    let answer = exchange(t.edge.http_addr(), &req);
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(
        find(&answer, b"X-Resp: \xe9t\xe9 \xff\r\n").is_some(),
        "response header bytes kept: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let seen = origin.requests();
    let got = &seen[before];
    assert!(
        find(got, b"X-Raw: caf\xe9 \xff\x80\r\n").is_some(),
        "request header bytes kept: {:?}",
        String::from_utf8_lossy(got)
    );
    assert!(find(got, "\u{FFFD}".as_bytes()).is_none());
}

fn huge_head_answer(req: &[u8]) -> Vec<u8> {
    if req.starts_with(b"GET / ") {
        // The readiness probe of `wait_served`.
        return ok_answer(req);
    }
    let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
    // 100 KB of fields, well past the connector's 64 KiB head limit, in one write.
    for i in 0..100 {
        out.extend_from_slice(format!("X-Big-{i}: {}\r\n", "v".repeat(1000)).as_bytes());
    }
    out.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    out
}

#[test]
fn an_oversized_origin_response_head_is_refused() {
    let t = TunnelSetup::new(ZONE);
    let origin = ScriptedOrigin::start(huge_head_answer);
    let host = format!("app.{ZONE}");
    let _c = tunnel_to(&t, &host, &origin.url());
    let answer = exchange(
        t.edge.http_addr(),
        format!("GET /big HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        answer.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(300)])
    );
    assert!(find(&answer, b"X-Big-").is_none(), "no field was forwarded");
}

#[test]
fn bad_gateway_bodies_name_the_side_not_the_details() {
    let t = TunnelSetup::new(ZONE);
    let host = format!("down.{ZONE}");
    let id = t.tunnel("down", &[&host]);
    let closed = closed_port_url();
    let port = closed.rsplit(':').next().unwrap().to_string();
    let _c = t.run_url("down", &id, &closed, &[], 1);
    let resp = t.edge.wait_get(
        "a 502 from the closed origin",
        &host,
        "/",
        Duration::from_secs(30),
        |r| r.status == 502,
    );
    let body = resp.text();
    assert!(body.contains("origin"), "says which side failed: {body}");
    for leak in ["127.0.0.1", port.as_str(), "os error", "refused", "connect"] {
        assert!(!body.contains(leak), "502 body leaks {leak:?}: {body}");
    }
    // The operator still gets the cause, in the edge's log.
    wait_for("the cause in the edge log", Duration::from_secs(10), || {
        t.edge.logs().contains("refused").then_some(())
    });
}
