//! The data path end to end: a public client → `ringway edge run` → QUIC or HTTP/2 →
//! `ringway tunnel run` → an origin (a real nginx, or the harness's [`HashOrigin`]). Answers
//! through the edge are compared with the same request sent straight to the origin. Every test
//! runs once per tunnel transport (`quic::NAME`, `http2::NAME`, the connector run with
//! `--protocol`), and checks the connector registered over the transport it was asked for.

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ringway_tests::connector::Transport;
use ringway_tests::origins::{HashOrigin, Nginx};
use ringway_tests::payload::{describe_difference, pseudo_random_bytes, sha256_hex};
use ringway_tests::per_transport;
use ringway_tests::prelude::*;
use ringway_tests::process::closed_port_url;
use ringway_tests::raw_client::{HttpResponse, chunked_body, http_get};
use serde_json::Value;

const ZONE: &str = "e2e.test";

per_transport!(
    static_files_through_the_edge_match_nginx,
    uploads_reach_the_origin_intact,
    two_hundred_concurrent_clients,
    origin_sees_forwarding_headers,
    edge_error_answers,
);

/// Headers whose bytes must be the same through the edge as straight from nginx.
const SAME_HEADERS: [&str; 4] = ["Content-Type", "Content-Length", "ETag", "Last-Modified"];

fn assert_same_answer(what: &str, via_edge: &HttpResponse, direct: &HttpResponse) {
    assert_eq!(
        via_edge.status,
        direct.status,
        "{what}: status\nedge:   {}\ndirect: {}",
        via_edge.summary(),
        direct.summary()
    );
    for h in SAME_HEADERS {
        assert_eq!(
            via_edge.header(h),
            direct.header(h),
            "{what}: header {h}\nedge:   {}\ndirect: {}",
            via_edge.summary(),
            direct.summary()
        );
    }
    assert!(
        via_edge.body == direct.body,
        "{what}: body differs\nedge:   {}\ndirect: {}",
        via_edge.summary(),
        direct.summary()
    );
}

fn static_files_through_the_edge_match_nginx(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let nginx = Nginx::start();
    let root = nginx.root();
    std::fs::write(
        root.join("index.html"),
        "<!doctype html>\n<title>ringway</title>\n<p>hello through the tunnel</p>\n",
    )
    .unwrap();
    std::fs::write(root.join("notes.txt"), "plain text\r\nwith CRLF\r\n").unwrap();
    std::fs::write(root.join("data.json"), r#"{"k":[1,2,3],"s":"é"}"#).unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    std::fs::write(root.join("medium.bin"), pseudo_random_bytes(1 << 20, 0xabc)).unwrap();
    let big = pseudo_random_bytes(10 << 20, 0x5eed);
    std::fs::write(root.join("big.bin"), &big).unwrap();

    let host = format!("www.{ZONE}");
    let id = t.tunnel("web", &[&host]);
    let _conn = t.run_over(tr, "web", &id, &nginx.url(), &[], 1);
    t.wait_served(&host);
    let edge = t.edge.http_addr();

    // GET: status, the selected headers and the body byte for byte, per file.
    for path in [
        "/index.html",
        "/notes.txt",
        "/data.json",
        "/empty.txt",
        "/medium.bin",
        "/missing.html",
    ] {
        let via = t.edge.get(&host, path);
        let direct = http_get(nginx.addr, &host, path);
        assert_same_answer(&format!("GET {path}"), &via, &direct);
    }

    // HEAD: the same status and headers, and no body.
    for path in ["/index.html", "/big.bin", "/missing.html"] {
        let req = request_bytes("HEAD", &host, path, &[], None, true);
        let via = RawClient::connect(edge)
            .request(&req, true)
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
        let direct = RawClient::connect(nginx.addr).request(&req, true).unwrap();
        assert_same_answer(&format!("HEAD {path}"), &via, &direct);
    }

    // 10 MiB download: same bytes (by SHA-256) and length.
    let via = t.edge.get(&host, "/big.bin");
    assert_eq!(via.status, 200, "{}", via.summary());
    assert_eq!(via.body.len(), big.len(), "{}", via.summary());
    assert_eq!(sha256_hex(&via.body), sha256_hex(&big));
    assert_eq!(via.header("Content-Length"), Some("10485760"));

    // Keep-alive: three requests on one client socket.
    let mut c = RawClient::connect(edge);
    for (i, path) in ["/index.html", "/data.json", "/index.html"]
        .iter()
        .enumerate()
    {
        let via = c
            .request(&request_bytes("GET", &host, path, &[], None, false), false)
            .unwrap_or_else(|e| panic!("request {i} ({path}) on the kept-alive socket: {e}"));
        let direct = http_get(nginx.addr, &host, path);
        assert_same_answer(&format!("keep-alive request {i} {path}"), &via, &direct);
    }
}

fn uploads_reach_the_origin_intact(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("up");
    let host = format!("up.{ZONE}");
    let id = t.tunnel("up", &[&host]);
    let _conn = t.run_over(tr, "up", &id, &origin.url(), &[], 1);
    t.wait_served(&host);
    let edge = t.edge.http_addr();
    let body = pseudo_random_bytes(10 << 20, 42);
    let want = sha256_hex(&body);

    // 1 MiB first (a smaller failure tells more), then 10 MiB, chunked in 64 KiB chunks.
    let medium = pseudo_random_bytes(1 << 20, 43);
    let r = RawClient::connect(edge)
        .request(
            &[
                request_bytes(
                    "POST",
                    &host,
                    "/upload",
                    &[("Transfer-Encoding", "chunked")],
                    None,
                    true,
                ),
                chunked_body(&medium, 64 << 10),
            ]
            .concat(),
            false,
        )
        .unwrap_or_else(|e| panic!("1 MiB chunked upload: {e}"));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(
        r.text() == sha256_hex(&medium),
        "1 MiB chunked upload arrived changed: {}",
        describe_difference(&origin.last_body(), &medium)
    );

    // 10 MiB chunked, written chunk by chunk as they would stream.
    let mut c = RawClient::connect(edge);
    c.send(&request_bytes(
        "POST",
        &host,
        "/upload",
        &[
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "application/octet-stream"),
        ],
        None,
        false,
    ))
    .unwrap();
    for piece in body.chunks(64 << 10) {
        let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
        framed.extend_from_slice(piece);
        framed.extend_from_slice(b"\r\n");
        c.stream().write_all(&framed).unwrap();
    }
    c.stream().write_all(b"0\r\n\r\n").unwrap();
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("10 MiB chunked upload: {e}"));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(
        r.text() == want,
        "10 MiB chunked upload arrived changed: {}",
        describe_difference(&origin.last_body(), &body)
    );
    assert_eq!(r.header("X-Body-Length"), Some("10485760"));

    // The same socket, a 10 MiB Content-Length upload.
    let r = c
        .request(
            &request_bytes("POST", &host, "/upload", &[], Some(&body), false),
            false,
        )
        .unwrap_or_else(|e| panic!("10 MiB Content-Length upload: {e}"));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(
        r.text() == want,
        "10 MiB Content-Length upload arrived changed: {}",
        describe_difference(&origin.last_body(), &body)
    );

    // A small body and an empty POST on the same socket, then a GET.
    let r = c
        .request(
            &request_bytes("POST", &host, "/small", &[], Some(b"hello"), false),
            false,
        )
        .unwrap();
    assert_eq!(r.text(), sha256_hex(b"hello"), "{}", r.summary());
    let r = c
        .request(
            &request_bytes("POST", &host, "/empty", &[], Some(b""), false),
            false,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.text(), sha256_hex(b""), "{}", r.summary());
    let r = c
        .request(
            &request_bytes("GET", &host, "/after", &[], None, true),
            false,
        )
        .unwrap();
    assert_eq!(r.text(), "tag=up path=/after", "{}", r.summary());
}

fn two_hundred_concurrent_clients(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("many");
    let host = format!("many.{ZONE}");
    let id = t.tunnel("many", &[&host]);
    let _conn = t.run_over(tr, "many", &id, &origin.url(), &[], 1);
    t.wait_served(&host);
    let edge = t.edge.http_addr();

    const CLIENTS: usize = 200;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (barrier, host) = (barrier.clone(), host.clone());
            std::thread::spawn(move || -> Result<(), String> {
                barrier.wait();
                let path = format!("/client/{i}");
                let mut c = RawClient::connect_timeout(edge, Duration::from_secs(60))
                    .map_err(|e| format!("client {i}: connect: {e}"))?;
                let r = c
                    .request(&request_bytes("GET", &host, &path, &[], None, true), false)
                    .map_err(|e| format!("client {i}: {e}"))?;
                let want = format!("tag=many path={path}");
                if r.status == 200 && r.text() == want {
                    Ok(())
                } else {
                    Err(format!("client {i}: {}", r.summary()))
                }
            })
        })
        .collect();
    let failures: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().expect("client thread").err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)],
    );
    assert!(
        origin.requests() >= CLIENTS,
        "origin saw {}",
        origin.requests()
    );
}

fn origin_sees_forwarding_headers(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("hdr");
    let host = format!("hdr.{ZONE}");
    let id = t.tunnel("hdr", &[&host]);
    let _conn = t.run_over(tr, "hdr", &id, &origin.url(), &[], 1);
    t.wait_served(&host);

    let mut c = RawClient::connect(t.edge.http_addr());
    let r = c
        .request(
            &request_bytes(
                "GET",
                &host,
                "/headers?x=1",
                &[("X-Test", "kept"), ("Accept", "*/*")],
                None,
                true,
            ),
            false,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("X-Origin-Tag"), Some("hdr"), "{}", r.summary());
    let seen: Value = serde_json::from_slice(&r.body).expect("origin's JSON");
    let headers: Vec<(String, String)> = seen["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let get = |name: &str| -> Option<String> {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(seen["method"], "GET", "{seen}");
    assert_eq!(seen["path"], "/headers?x=1", "{seen}");
    assert_eq!(
        get("X-Forwarded-For").as_deref(),
        Some("127.0.0.1"),
        "{seen}"
    );
    assert_eq!(
        get("Cf-Connecting-IP").as_deref(),
        Some("127.0.0.1"),
        "{seen}"
    );
    assert_eq!(get("X-Forwarded-Proto").as_deref(), Some("http"), "{seen}");
    assert_eq!(get("X-Test").as_deref(), Some("kept"), "{seen}");
    assert_eq!(get("Host").as_deref(), Some(host.as_str()), "{seen}");
}

fn edge_error_answers(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("ok");
    let edge = t.edge.http_addr();

    // A live tunnel, to tell the edge's refusals from a dead edge.
    let ok_host = format!("ok.{ZONE}");
    let ok_id = t.tunnel("ok", &[&ok_host]);
    let _ok = t.run_over(tr, "ok", &ok_id, &origin.url(), &[], 1);
    t.wait_served(&ok_host);

    // No DNS record for the host: 404.
    let r = t.edge.get(&format!("nobody.{ZONE}"), "/");
    assert_eq!(r.status, 404, "{}", r.summary());
    let r = t.edge.get("example.invalid", "/");
    assert_eq!(r.status, 404, "{}", r.summary());

    // Routed to a tunnel with no connector: 530 naming 1033 (once the route reached the edge).
    let idle_host = format!("idle.{ZONE}");
    t.tunnel("idle", &[&idle_host]);
    let r = t.edge.wait_get(
        "the idle route to reach the edge",
        &idle_host,
        "/",
        Duration::from_secs(30),
        |r| r.status != 404,
    );
    assert_eq!(r.status, 530, "{}", r.summary());
    assert!(r.text().contains("1033"), "{}", r.summary());

    // A connector whose origin refuses connections: 502.
    let broken_host = format!("broken.{ZONE}");
    let broken_id = t.tunnel("broken", &[&broken_host]);
    let _broken = t.run_over(tr, "broken", &broken_id, &closed_port_url(), &[], 1);
    let r = t.edge.wait_get(
        "the broken tunnel to be reachable",
        &broken_host,
        "/",
        Duration::from_secs(30),
        |r| r.status != 404 && r.status != 530,
    );
    assert_eq!(r.status, 502, "{}", r.summary());

    // Malformed requests: 400, never forwarded.
    let before = origin.requests();
    let bad: [(&str, Vec<u8>); 2] = [
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "POST /x HTTP/1.1\r\nHost: {ok_host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "duplicate Content-Length",
            format!(
                "POST /x HTTP/1.1\r\nHost: {ok_host}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            )
            .into_bytes(),
        ),
    ];
    for (what, bytes) in bad {
        let r = RawClient::connect(edge)
            .request(&bytes, false)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, 400, "{what}: {}", r.summary());
    }
    assert_eq!(
        origin.requests(),
        before,
        "a malformed request reached the origin"
    );

    // The tunnel still serves afterwards.
    let r = t.edge.get(&ok_host, "/still");
    assert_eq!(r.text(), "tag=ok path=/still", "{}", r.summary());
}
