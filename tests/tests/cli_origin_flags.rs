//! `tunnel run`'s origin flags in ad hoc mode (`--url ORIGIN` or `--unix-socket PATH`) against
//! a real edge and origin: each flag changes what reaches the origin or what the public client
//! gets, seen from outside (the answer through the edge, what the origin received, what the
//! connector logged).

use std::time::Duration;

use ringway_tests::case::{OriginCase, stop};
use ringway_tests::connector::Connector;
use ringway_tests::origins::{BlackholeOrigin, HashOrigin, UnixHashOrigin};
use ringway_tests::payload::{pseudo_random_bytes, sha256_hex};
use ringway_tests::prelude::*;
use ringway_tests::raw_client::{HttpResponse, chunked_body, http_get};

const ZONE: &str = "origins.test";

/// A case whose origin is `https://127.0.0.1:PORT` with a certificate for `names` only, signed
/// by the origin's own CA (which the connector does not trust unless told).
fn tls_case(name: &str, names: &[&str]) -> OriginCase {
    OriginCase::with_origin(ZONE, name, HashOrigin::start_tls(name, names))
}

/// The first answer through the edge once the tunnel serves its host, `GET /x`.
fn first_answer(c: &OriginCase) -> HttpResponse {
    c.t.wait_served(&c.host);
    c.t.edge.get(&c.host, "/x")
}

/// Waits (failure limit only) until the connector has logged a line containing `needle`.
fn wait_logged(conn: &mut Connector, needle: &str) -> String {
    conn.proc.wait_output(
        &format!("a log line with {needle:?}"),
        Duration::from_secs(30),
        |log| {
            log.stderr_lines()
                .into_iter()
                .chain(log.stdout_lines())
                .find(|l| l.contains(needle))
        },
    )
}

#[test]
fn no_tls_verify_serves_an_origin_whose_certificate_nobody_trusts() {
    let c = tls_case("noverify", &["127.0.0.1"]);

    // Verified (the default): the origin's issuer is unknown, so the handshake fails and the
    // public client gets the connector's 502; the origin answers nothing.
    let mut conn = c.run_with(&[]);
    let r = first_answer(&c);
    assert_eq!(r.status, 502, "{}\n{}", r.summary(), conn.logs());
    let line = wait_logged(&mut conn, "origin request failed");
    assert!(
        line.contains("TLS failed") && line.contains("UnknownIssuer"),
        "{line}"
    );
    assert_eq!(c.origin.requests(), 0);
    stop(conn);

    let conn = c.run_with(&["--no-tls-verify"]);
    c.assert_served(&conn);
    assert!(c.origin.requests() >= 1);
}

#[test]
fn origin_ca_pool_trusts_exactly_the_cas_in_the_file() {
    let c = tls_case("capool", &["127.0.0.1"]);

    // A pool holding another CA (the edge's) does not make the origin trusted. Both CAs bear
    // the same name, so the verifier tries the edge's as the issuer and finds its signature
    // wrong rather than the issuer unknown: either way the certificate is refused.
    let other = c.t.edge.ca_path().display().to_string();
    let mut conn = c.run_with(&["--origin-ca-pool", &other]);
    let r = first_answer(&c);
    assert_eq!(r.status, 502, "{}\n{}", r.summary(), conn.logs());
    let line = wait_logged(&mut conn, "origin request failed");
    assert!(
        line.contains("TLS failed") && line.contains("invalid peer certificate"),
        "{line}"
    );
    assert_eq!(c.origin.requests(), 0);
    stop(conn);

    let pool = c.origin.ca_file().display().to_string();
    let conn = c.run_with(&["--origin-ca-pool", &pool]);
    c.assert_served(&conn);
}

#[test]
fn origin_server_name_is_verified_and_sent_as_sni() {
    const NAME: &str = "origin.internal";
    let c = tls_case("sni", &[NAME]);
    let pool = c.origin.ca_file().display().to_string();

    // Trusted CA, but the certificate does not name 127.0.0.1 (the --url host).
    let mut conn = c.run_with(&["--origin-ca-pool", &pool]);
    let r = first_answer(&c);
    assert_eq!(r.status, 502, "{}\n{}", r.summary(), conn.logs());
    let line = wait_logged(&mut conn, "origin request failed");
    assert!(
        line.contains("TLS failed") && line.contains("not valid for name"),
        "{line}"
    );
    assert_eq!(c.origin.requests(), 0);
    stop(conn);

    let conn = c.run_with(&["--origin-ca-pool", &pool, "--origin-server-name", NAME]);
    c.assert_served(&conn);
    let names = c.origin.server_names();
    assert!(!names.is_empty(), "no completed handshake recorded");
    assert!(
        names.iter().all(|n| n.as_deref() == Some(NAME)),
        "SNI seen by the origin: {names:?}"
    );
}

/// POSTs `body` chunked (`Transfer-Encoding: chunked`, 16 KiB chunks) through the edge and
/// checks the origin hashed exactly it.
fn post_chunked(c: &OriginCase, conn: &Connector, body: &[u8]) {
    c.t.wait_served(&c.host);
    let mut req = request_bytes(
        "POST",
        &c.host,
        "/upload",
        &[("Transfer-Encoding", "chunked")],
        None,
        true,
    );
    req.extend_from_slice(&chunked_body(body, 16 << 10));
    let r = RawClient::connect(c.t.edge.http_addr())
        .request(&req, false)
        .unwrap_or_else(|e| panic!("POST through the edge: {e}\n{}", conn.logs()));
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    assert_eq!(r.text(), sha256_hex(body), "the origin got another body");
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn no_chunked_encoding_sends_a_chunked_upload_with_a_content_length() {
    let c = OriginCase::new(ZONE, "chunks");
    let body = pseudo_random_bytes(200_000, 7);

    // Default: a body of unknown length goes to the origin chunked.
    let conn = c.run_with(&[]);
    post_chunked(&c, &conn, &body);
    let head = c.origin.last_body_headers();
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head:?}"
    );
    assert_eq!(header(&head, "content-length"), None, "{head:?}");
    stop(conn);

    let conn = c.run_with(&["--no-chunked-encoding"]);
    post_chunked(&c, &conn, &body);
    let head = c.origin.last_body_headers();
    assert_eq!(header(&head, "transfer-encoding"), None, "{head:?}");
    let len = body.len().to_string();
    assert_eq!(
        header(&head, "content-length"),
        Some(len.as_str()),
        "{head:?}"
    );
    assert_eq!(c.origin.last_body(), body);
}

#[test]
fn proxy_connect_timeout_bounds_the_connect_to_a_silent_origin() {
    let c = OriginCase::new(ZONE, "connto");
    let silent = BlackholeOrigin::start();
    let args = c.t.run_args(
        &c.id,
        &c.id,
        &silent.url(),
        &c.t.edge.connector_args(),
        &["--proxy-connect-timeout", "1s"],
    );
    let mut conn = Connector::start(c.t.cli(), &args);
    let r = first_answer(&c);
    assert_eq!(r.status, 502, "{}\n{}", r.summary(), conn.logs());
    // The default (30s) would name itself here: the flag is what set the limit.
    let line = wait_logged(&mut conn, "origin request failed");
    assert!(
        line.contains(&format!(
            "origin {} connect timed out after 1s",
            silent.addr
        )),
        "{line}"
    );
}

#[test]
fn unix_socket_is_the_origin_without_url() {
    let c = OriginCase::new(ZONE, "unixsock");
    let sock = c.t.s.tmp.path().join("origin.sock");
    let origin = UnixHashOrigin::start("unixsock", &sock);
    let creds = c.t.credentials_path(&c.id).display().to_string();
    let path = sock.display().to_string();
    let mut args = vec![
        "tunnel".to_string(),
        "run".into(),
        "--credentials-file".into(),
        creds,
        "--unix-socket".into(),
        path,
    ];
    args.extend(c.t.edge.connector_args());
    args.push(c.id.clone());
    let conn = Connector::start(c.t.cli(), &args);
    c.t.wait_served(&c.host);
    let r = c.t.edge.get(&c.host, "/x");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    assert_eq!(r.text(), "tag=unixsock path=/x");
    assert!(origin.requests() >= 1);
    // The TCP origin of the case was never involved.
    assert_eq!(c.origin.requests(), 0);
}

/// `k` concurrent `GET /together/k` through the edge: the origin answers once all `k` are in,
/// so the connector has `k` origin connections open at once.
fn together(c: &OriginCase, conn: &Connector, k: usize) {
    let handles: Vec<_> = (0..k)
        .map(|_| {
            let (addr, host) = (c.t.edge.http_addr(), c.host.clone());
            std::thread::spawn(move || http_get(addr, &host, &format!("/together/{k}")))
        })
        .collect();
    for h in handles {
        let r = h.join().expect("client thread");
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    }
}

#[test]
fn proxy_keepalive_connections_caps_the_idle_connections_kept() {
    const K: usize = 3;
    let c = OriginCase::new(ZONE, "keepalive");
    for kept in [1, K] {
        let n = kept.to_string();
        // One worker (and one tunnel connection): one pool, so the connections it kept are the
        // ones the next requests find.
        let conn = c.run_with(&[
            "--workers",
            "1",
            "--ha-connections",
            "1",
            "--proxy-keepalive-connections",
            &n,
        ]);
        c.t.wait_served(&c.host);
        together(&c, &conn, K);
        // K connections were open; at most `kept` went back to the pool. K requests at once
        // now reuse those and open the rest.
        let before = c.origin.connections();
        together(&c, &conn, K);
        let opened = c.origin.connections() - before;
        assert_eq!(
            opened,
            K - kept,
            "--proxy-keepalive-connections {n}: new origin connections for {K} requests\n{}",
            conn.logs()
        );
        stop(conn);
    }
}
