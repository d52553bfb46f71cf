//! cloudflared's hidden QUIC tuning flags on `tunnel run`: a connector with a small stream
//! window and no path MTU discovery still carries a 2 MiB upload and download intact (the
//! window is what the connector grants the edge per stream, so the upload crosses it many
//! times), and a window of 0 is one error line.

use ringway_tests::case::OriginCase;
use ringway_tests::payload::{pseudo_random_bytes, sha256_hex};
use ringway_tests::prelude::*;

const ZONE: &str = "tuning.test";

#[test]
fn small_windows_and_no_pmtu_discovery_still_carry_large_bodies() {
    let c = OriginCase::new(ZONE, "tuned");
    let conn = c.run_with(&[
        "--quic-stream-level-flow-control-limit",
        "65536",
        "--quic-connection-level-flow-control-limit",
        "262144",
        "--quic-disable-pmtu-discovery",
    ]);
    c.assert_served(&conn);
    let body = pseudo_random_bytes(2 << 20, 7);
    let r = RawClient::connect(c.t.edge.http_addr())
        .request(
            &request_bytes("POST", &c.host, "/upload", &[], Some(&body), true),
            false,
        )
        .unwrap_or_else(|e| panic!("POST through the edge: {e}\n{}", conn.logs()));
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    assert_eq!(r.text(), sha256_hex(&body), "the origin got the whole body");
}

#[test]
fn a_zero_window_is_one_error_line() {
    let c = OriginCase::new(ZONE, "zero");
    let args = c.run_args(
        &c.t.edge.connector_args(),
        &["--quic-stream-level-flow-control-limit", "0"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = c.t.cli().run(&args);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.one_line_error()
            .contains("--quic-stream-level-flow-control-limit must be at least 1 byte"),
        "{run:?}"
    );
}
