//! The tunnel transports side by side: `--protocol auto` (the default) with UDP to the edge
//! blocked registers over HTTP/2, and once UDP passes again moves the connection back to QUIC
//! without a single failed request; replicas of one tunnel on QUIC and on HTTP/2 both serve it.
//!
//! The UDP test runs the connector in a network namespace ([`NetNs`]) joined to the host by a
//! veth pair: the edge listens on the host side, nftables in the namespace drops UDP to the
//! edge's port while TCP to the same port passes. The origin is a unix socket, which a process
//! in another network namespace still reaches through the filesystem. Needs root, iproute2 and
//! nftables (CI installs them). Deadlines are failure limits; measured times are printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringway_tests::connector::{Connector, REGISTERED, Transport, line_protocol};
use ringway_tests::load::{Load, failures, report};
use ringway_tests::netns::NetNs;
use ringway_tests::origins::{HashOrigin, UnixHashOrigin};
use ringway_tests::payload::{pseudo_random_bytes, sha256_hex};
use ringway_tests::prelude::*;

const ZONE: &str = "transports.test";

#[test]
fn udp_blocked_auto_falls_back_to_http2_and_moves_back_to_quic_without_a_failed_request() {
    let test = "udp_blocked";
    // Declared first so it goes last: the connector inside it is killed before it is deleted.
    let ns = NetNs::new();
    let t = TunnelSetup::with_tunnel_listen(ZONE, &[SocketAddr::from((ns.host_ip(), 0))]);
    let edge_addr = t.edge.tunnel_addrs()[0];
    ns.block_udp_to(edge_addr);

    let sock = t.s.tmp.path().join("origin.sock");
    let origin = UnixHashOrigin::start("ns", &sock);
    let host = format!("ns.{ZONE}");
    let id = t.tunnel("ns", &[&host]);
    let creds = t.credentials_path(&id).display().to_string();
    let metrics = format!("{}:0", ns.ns_ip());
    let mut args: Vec<String> = [
        "tunnel",
        "run",
        "--credentials-file",
        &creds,
        "--unix-socket",
        &sock.display().to_string(),
        "--ha-connections",
        "1",
        // Reachable from the host through the veth pair (127.0.0.1 would be the namespace's).
        "--metrics",
        &metrics,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(t.edge.connector_args());
    args.push(id.clone());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();

    // No --protocol: auto, QUIC first.
    let started = Instant::now();
    let mut conn = Connector::start_command(ns.wrap(&t.cli().command(&argv)), 1);
    let fell_back = started.elapsed();
    let switch_lines: Vec<String> = conn
        .proc
        .log
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("http2") && !l.contains(REGISTERED))
        .collect();
    eprintln!("[{test}] registered over HTTP/2 {fell_back:?} after start; {switch_lines:#?}");
    conn.assert_registered_over(Transport::Http2);
    conn.wait_connection_protocol(0, Transport::Http2, Duration::from_secs(30));

    // Served over HTTP/2 while UDP is still dropped.
    t.wait_served(&host);
    for i in 0..5 {
        let r = t.edge.get(&host, &format!("/h2/{i}"));
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
        assert_eq!(r.text(), format!("tag=ns path=/h2/{i}"), "{}", r.summary());
    }
    assert!(origin.requests() >= 5);
    assert!(
        ns.ruleset().contains("udp dport"),
        "the UDP rule is still in place: {}",
        ns.ruleset()
    );

    // UDP passes again: under a request loop throughout, the connection moves back to QUIC.
    let (load, _) = Load::start_served(t.edge.http_addr(), &host);
    let before = conn.registered();
    ns.unblock_udp();
    let unblocked = Instant::now();
    conn.proc.wait_output(
        "a registration over QUIC once UDP passes",
        Duration::from_secs(60),
        |log| {
            log.stderr_lines()
                .iter()
                .chain(log.stdout_lines().iter())
                .filter(|l| l.contains(REGISTERED))
                .skip(before)
                .any(|l| line_protocol(l) == Some("quic"))
                .then_some(())
        },
    );
    conn.wait_connection_protocol(0, Transport::Quic, Duration::from_secs(60));
    let moved = unblocked.elapsed();
    let on_quic = Instant::now();
    // Keep loading on QUIC for 50 more requests (counted, not timed): the HTTP/2 connection
    // drains meanwhile.
    wait_for(
        "50 requests sent after the move to QUIC",
        Duration::from_secs(60),
        || (load.samples().iter().filter(|s| s.at >= on_quic).count() >= 50).then_some(()),
    );
    let samples = load.stop();
    let (sent, _, failed) = report(test, &samples);
    eprintln!("[{test}] back on QUIC {moved:?} after UDP was unblocked");
    eprintln!("[{test}] registrations: {:?}", conn.registered_protocols());
    let before_switch = samples.iter().filter(|s| s.at < unblocked).count();
    assert!(
        before_switch >= 20,
        "{before_switch} of {sent} requests before the switch"
    );
    assert_eq!(
        failed,
        0,
        "failed requests across the switch: {:?}\n{}",
        failures(&samples),
        conn.logs()
    );
    assert!(conn.proc.exited().is_none(), "the connector kept running");
    let r = t.edge.get(&host, "/on-quic");
    assert_eq!(r.text(), "tag=ns path=/on-quic", "{}", r.summary());
}

#[test]
fn replicas_of_one_tunnel_on_quic_and_http2_both_serve() {
    let t = TunnelSetup::new(ZONE);
    let (oq, oh) = (HashOrigin::start("Q"), HashOrigin::start("H"));
    let host = format!("mix.{ZONE}");
    let id = t.tunnel("mix", &[&host]);
    let ha = ["--ha-connections", "2"];
    let mut q = t.run_over(Transport::Quic, "mix", &id, &oq.url(), &ha, 2);
    let mut h = t.run_over(Transport::Http2, "mix", &id, &oh.url(), &ha, 2);
    for i in 0..2 {
        q.wait_connection_protocol(i, Transport::Quic, Duration::from_secs(30));
        h.wait_connection_protocol(i, Transport::Http2, Duration::from_secs(30));
    }
    t.wait_served(&host);

    // Fresh connections; each answer is tagged by the origin (and so the transport) behind it.
    let mut tags: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..80 {
        let path = format!("/mix/{i}");
        let r = t.edge.get(&host, &path);
        assert_eq!(r.status, 200, "request {i}: {}", r.summary());
        let tag = r.header("X-Origin-Tag").unwrap_or("none").to_string();
        assert_eq!(
            r.text(),
            format!("tag={tag} path={path}"),
            "{}",
            r.summary()
        );
        *tags.entry(tag).or_default() += 1;
    }
    eprintln!("[mixed] answers by origin: {tags:?}");
    assert!(
        tags.get("Q").is_some_and(|n| *n > 0) && tags.get("H").is_some_and(|n| *n > 0),
        "both replicas (QUIC: Q, HTTP/2: H) should take traffic, got {tags:?}"
    );

    // A 1 MiB upload arrives intact through each, until both have taken one.
    let body = pseudo_random_bytes(1 << 20, 7);
    let want = sha256_hex(&body);
    let mut uploaded: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..40 {
        let r = RawClient::connect(t.edge.http_addr())
            .request(
                &request_bytes("POST", &host, "/upload", &[], Some(&body), true),
                false,
            )
            .unwrap_or_else(|e| panic!("upload {i}: {e}"));
        assert_eq!(r.status, 200, "upload {i}: {}", r.summary());
        assert_eq!(
            r.text(),
            want,
            "upload {i} arrived changed: {}",
            r.summary()
        );
        *uploaded
            .entry(r.header("X-Origin-Tag").unwrap_or("none").to_string())
            .or_default() += 1;
        if uploaded.len() == 2 {
            break;
        }
    }
    assert!(
        uploaded.contains_key("Q") && uploaded.contains_key("H"),
        "uploads went only to {uploaded:?}"
    );
    assert!(oq.requests() > 0 && oh.requests() > 0);
}
