//! cloudflared's hidden flags for the connector's link to the edge, on `tunnel run`:
//! - `--write-stream-timeout`: a response the edge stops taking (its client never reads) is
//!   reset by the connector once one write has waited that long, on either transport, and the
//!   origin connection is released;
//! - `--max-edge-addr-retries N`: with `--protocol auto` and QUIC unanswered, a connection
//!   falls back to HTTP/2 after N + 1 failed attempts;
//! - a bad value for either is one error line.

use std::time::Duration;

use ringway_tests::case::OriginCase;
use ringway_tests::connector::{Connector, Transport};
use ringway_tests::per_transport;
use ringway_tests::prelude::*;
use ringway_tests::slow_clients::{BulkOrigin, StalledDownload, wait_until};
use ringway_tests::tcp_only::TcpOnlyEdge;

const ZONE: &str = "edgelink.test";

const MIB: u64 = 1 << 20;

per_transport!(a_response_the_edge_stops_taking_is_reset_after_the_write_stream_timeout);

fn a_response_the_edge_stops_taking_is_reset_after_the_write_stream_timeout(transport: Transport) {
    let t = TunnelSetup::new(ZONE);
    let origin = BulkOrigin::start();
    let host = format!("stall.{ZONE}");
    let id = t.tunnel("stall", &[&host]);
    let conn = t.run_over(
        transport,
        "stall",
        &id,
        &origin.url(),
        &["--ha-connections", "1", "--write-stream-timeout", "1s"],
        1,
    );
    t.wait_served(&host);
    // Far more than every buffer between the origin and the client holds.
    let mut stalled = StalledDownload::start(t.edge.http_addr(), &host, 256 * MIB);
    wait_until(
        "the bulk response to start",
        Duration::from_secs(20),
        || origin.bulk_started() >= 1,
    );
    // The edge's own limit on a client that stops reading is 30 s: the connector's 1 s write
    // limit acts first, and its log line says so.
    wait_until(
        "the origin to see its connection dropped mid-response",
        Duration::from_secs(25),
        || origin.abandoned() >= 1,
    );
    let logs = conn.logs();
    assert!(
        logs.contains("writing towards the edge timed out")
            && logs.contains("the edge took no response bytes for 1s"),
        "no write-timeout line in the connector's log:\n{logs}"
    );
    assert!(
        stalled.closed_by_edge(Duration::from_secs(20)),
        "the edge kept the stalled client after the connector reset its stream"
    );
    assert!(
        origin.bulk_bytes_written() < 256 * MIB,
        "the whole body was written"
    );
    // The tunnel still serves.
    let r = t.edge.get(&host, "/after");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
}

/// `tunnel run` through a [`TcpOnlyEdge`] with `--max-edge-addr-retries retries`; returns the
/// fallback line once the connection serves over HTTP/2.
fn fallback_line(name: &str, retries: &str) -> String {
    let c = OriginCase::new(ZONE, name);
    let tcp_only = TcpOnlyEdge::start(c.t.edge.tunnel_addrs()[0]);
    let args = c.run_args(
        &c.t.edge.connector_args_via(&[tcp_only.addr()]),
        &["--ha-connections", "1", "--max-edge-addr-retries", retries],
    );
    let conn = Connector::start(c.t.cli(), &args);
    conn.assert_registered_over(Transport::Http2);
    c.assert_served(&conn);
    assert!(
        tcp_only.relayed() >= 1,
        "nothing went through the TCP relay"
    );
    conn.logs()
        .lines()
        .find(|l| l.contains("Switching to fallback protocol http2"))
        .unwrap_or_else(|| panic!("no fallback line:\n{}", conn.logs()))
        .to_owned()
}

#[test]
fn max_edge_addr_retries_zero_falls_back_after_the_first_failed_attempt() {
    let line = fallback_line("zero", "0");
    assert!(line.contains("attempts=1"), "{line}");
}

#[test]
fn max_edge_addr_retries_two_falls_back_after_three_failed_attempts() {
    let line = fallback_line("two", "2");
    assert!(line.contains("attempts=3"), "{line}");
}

#[test]
fn bad_values_are_one_error_line() {
    let c = OriginCase::new(ZONE, "bad");
    for (flag, value, says) in [
        ("--max-edge-addr-retries", "300", "\"300\" is out of range"),
        ("--max-edge-addr-retries", "-1", "\"-1\" is out of range"),
        (
            "--max-edge-addr-retries",
            "many",
            "\"many\" is not a valid number",
        ),
        ("--write-stream-timeout", "soon", "write-stream-timeout"),
    ] {
        let args = c.run_args(&c.t.edge.connector_args(), &[flag, value]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = c.t.cli().run(&args);
        assert_ne!(run.code, 0, "{flag} {value}: {run:?}");
        let line = run.one_line_error();
        assert!(
            line.contains(&flag[2..]) && line.contains(says),
            "{flag} {value}: {run:?}"
        );
    }
}
