//! Graceful shutdown of a connector against the edge: after `unregisterConnection` the edge
//! closes the connection once its in-flight streams are done, so a SIGTERMed connector exits
//! without waiting out its grace period. Deadlines are failure limits; the measured times are
//! printed, not asserted. Each test runs once per tunnel transport (`quic::NAME`,
//! `http2::NAME`).

use std::time::Duration;

use ringway_tests::connector::Transport;
use ringway_tests::edge::TunnelSetup;
use ringway_tests::origins::slow_origin;
use ringway_tests::per_transport;

const ZONE: &str = "shutdown.test";
/// The connector's grace period, as cloudflared's component test sets it.
const GRACE: &str = "5s";
/// The failure limit for the exit: the grace period itself.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

per_transport!(
    sigterm_without_requests_exits_within_the_grace_period,
    sigterm_with_a_slow_request_finishes_it_then_exits,
);

fn sigterm_without_requests_exits_within_the_grace_period(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let host = format!("idle.{ZONE}");
    let id = t.tunnel("idle", &[&host]);
    let mut c = t.run_over(
        tr,
        "idle",
        &id,
        "http_status:204",
        &["--ha-connections", "2", "--grace-period", GRACE],
        2,
    );
    t.wait_served(&host);
    let took = c.terminate(EXIT_LIMIT);
    eprintln!("[idle] connector exited {took:?} after SIGTERM");
}

fn sigterm_with_a_slow_request_finishes_it_then_exits(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let host = format!("slow.{ZONE}");
    let id = t.tunnel("slow", &[&host]);
    let (origin_url, got_request) = slow_origin(Duration::from_secs(2));
    let mut c = t.run_over(
        tr,
        "slow",
        &id,
        &origin_url,
        &["--ha-connections", "1", "--grace-period", GRACE],
        1,
    );
    t.wait_served(&host);
    let (answer, took) = c.terminate_during(&got_request, Duration::from_secs(30), || {
        t.edge.get(&host, "/slow")
    });
    eprintln!("[slow] connector exited {took:?} after SIGTERM");
    assert_eq!(
        answer.status, 200,
        "the in-flight request completes: {answer:?}"
    );
    assert_eq!(answer.body, b"slow answer");
}
