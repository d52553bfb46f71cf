//! Connections come and go while the persistent objects stay: replicas of one tunnel share
//! traffic and survive `kill -9` of one of them, HA connections register one per edge address,
//! DNS changes apply without restarting anything, and SIGTERM unregisters. The kill -9 and
//! SIGTERM tests run once per tunnel transport (`quic::NAME`, `http2::NAME`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringway_tests::connector::Transport;
use ringway_tests::control_plane::{assert_tunnel_cname, dns_records, find};
use ringway_tests::edge::{Edge, EdgeOpts};
use ringway_tests::origins::HashOrigin;
use ringway_tests::per_transport;
use ringway_tests::prelude::*;
use ringway_tests::raw_client::HttpResponse;

const ZONE: &str = "rep.test";

per_transport!(
    two_replicas_share_traffic_and_one_survives_kill_9,
    sigterm_stops_the_connector_and_the_host_answers_530,
);

/// One GET on a fresh connection with a short failure limit; `None` on any I/O error (a
/// request in flight on a connection that just died may fail).
fn try_get(edge: &Edge, host: &str, path: &str) -> Option<HttpResponse> {
    let mut c = RawClient::connect_timeout(edge.http_addr(), Duration::from_secs(10)).ok()?;
    c.request(&request_bytes("GET", host, path, &[], None, true), false)
        .ok()
}

fn two_replicas_share_traffic_and_one_survives_kill_9(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let (oa, ob) = (HashOrigin::start("A"), HashOrigin::start("B"));
    let host = format!("app.{ZONE}");
    let id = t.tunnel("app", &[&host]);
    let mut a = t.run_over(tr, "app", &id, &oa.url(), &[], 1);
    let _b = t.run_over(tr, "app", &id, &ob.url(), &[], 1);
    t.wait_served(&host);

    // Both replicas take traffic: fresh connections, each answer tagged by its origin.
    let mut tags: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..60 {
        let r = t.edge.get(&host, &format!("/r/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.summary());
        let tag = r.header("X-Origin-Tag").unwrap_or("none").to_string();
        *tags.entry(tag).or_default() += 1;
    }
    assert!(
        tags.get("A").is_some_and(|n| *n > 0) && tags.get("B").is_some_and(|n| *n > 0),
        "both replicas should take traffic, got {tags:?}"
    );

    // kill -9 one replica: once the edge notices, every request is served by the other.
    a.kill9();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut streak = 0;
    let mut last = String::new();
    while streak < 10 {
        assert!(
            Instant::now() < deadline,
            "no run of 10 good answers within 60 s of killing replica A; last: {last}"
        );
        match try_get(&t.edge, &host, "/after-kill") {
            Some(r) if r.status == 200 && r.header("X-Origin-Tag") == Some("B") => streak += 1,
            Some(r) => {
                streak = 0;
                last = r.summary();
                std::thread::sleep(Duration::from_millis(50));
            }
            None => {
                streak = 0;
                last = "I/O error".into();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    for i in 0..20 {
        let r = t.edge.get(&host, &format!("/survivor/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.summary());
        assert_eq!(r.header("X-Origin-Tag"), Some("B"), "{}", r.summary());
    }
}

#[test]
fn ha_connections_register_one_per_edge_address() {
    let t = TunnelSetup::with_opts(
        ZONE,
        EdgeOpts {
            tunnel_listeners: 2,
            location: Some("test-colo".into()),
            ..EdgeOpts::default()
        },
    );
    let origin = HashOrigin::start("ha");
    let host = format!("ha.{ZONE}");
    let id = t.tunnel("ha", &[&host]);
    let conn = t.run_url("ha", &id, &origin.url(), &["--ha-connections", "2"], 2);
    let lines = conn.registered_lines();
    for i in 0..2 {
        assert!(
            lines.iter().any(|l| l.contains(&format!("connIndex={i}"))),
            "no connIndex={i}: {lines:#?}"
        );
    }
    assert!(
        lines.iter().all(|l| l.contains("test-colo")),
        "each registration names the edge's location: {lines:#?}"
    );
    let r = t.wait_served(&host);
    assert_eq!(r.header("X-Origin-Tag"), Some("ha"), "{}", r.summary());

    // The control plane lists both connections.
    wait_for(
        "two connections in `tunnel list`",
        Duration::from_secs(30),
        || {
            let list = t.cli().list_json(&[]);
            let entry = find(&list, "id", &id)?;
            (entry["connections"].as_array().map(Vec::len) == Some(2)).then_some(())
        },
    );
}

#[test]
fn dns_delete_and_recreate_apply_without_restart() {
    let mut t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("dns");
    let host = format!("dns.{ZONE}");
    let id = t.tunnel("dns", &[&host]);
    let mut conn = t.run_url("dns", &id, &origin.url(), &["--ha-connections", "1"], 1);
    t.wait_served(&host);

    // Delete the record through the API, with the cert.pem token: the host goes 404.
    let zone = t.s.zone_id();
    let token = t.s.api_token();
    let records = dns_records(&t.s.cp, &zone, &host, &token);
    assert_tunnel_cname(&records, &host, &id);
    let rec_id = records[0]["id"].as_str().expect("record id").to_string();
    let (status, ans) = http(
        "DELETE",
        &format!("{}/zones/{zone}/dns_records/{rec_id}", t.s.cp.api()),
        &token,
        None,
    );
    assert_eq!(status, 200, "{ans}");
    t.edge.wait_get(
        "the deleted record to reach the edge",
        &host,
        "/",
        Duration::from_secs(30),
        |r| r.status == 404,
    );

    // Recreated with `tunnel route dns`: served again by the same processes.
    t.route("dns", &host);
    let r = t.wait_served(&host);
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("X-Origin-Tag"), Some("dns"), "{}", r.summary());
    assert!(t.edge.proc.exited().is_none(), "the edge kept running");
    assert!(conn.proc.exited().is_none(), "the connector kept running");
    assert_eq!(conn.registered(), 1, "no reconnect was needed");

    // A second hostname routed later is served too.
    let other = format!("other.{ZONE}");
    t.route("dns", &other);
    let r = t.wait_served(&other);
    assert_eq!(r.header("X-Origin-Tag"), Some("dns"), "{}", r.summary());
}

fn sigterm_stops_the_connector_and_the_host_answers_530(tr: Transport) {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("term");
    let host = format!("term.{ZONE}");
    let id = t.tunnel("term", &[&host]);
    let mut conn = t.run_over(tr, "term", &id, &origin.url(), &[], 1);
    t.wait_served(&host);

    // cloudflared waits up to its grace period (30 s) for requests in flight; none are.
    conn.terminate(Duration::from_secs(45));
    let r = t.edge.wait_get(
        "the host to answer 530 once its only connector left",
        &host,
        "/",
        Duration::from_secs(30),
        |r| r.status == 530,
    );
    assert!(r.text().contains("1033"), "{}", r.summary());
}
