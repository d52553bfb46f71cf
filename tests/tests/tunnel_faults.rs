//! Faults under load: a background client sends GETs through the edge at a fixed
//! pace while connectors, the control plane or the edge are killed, restarted or stopped.
//! Each test prints sent/ok/failed and its recovery time; deadlines are failure limits only,
//! the assertions are on counts. The connector kill -9 and rolling restart tests run once
//! per tunnel transport (`quic::NAME`, `http2::NAME`).

use std::time::{Duration, Instant};

use ringway_tests::connector::{Connector, REGISTERED, Transport};
use ringway_tests::control_plane::{assert_tunnel_cname, dns_records, find, get_result};
use ringway_tests::edge::Edge;
use ringway_tests::load::{Load, Sample, failures, report};
use ringway_tests::origins::HashOrigin;
use ringway_tests::per_transport;
use ringway_tests::prelude::*;
use ringway_tests::process::closed_port_url;
use serde_json::Value;

const ZONE: &str = "faults.test";

per_transport!(
    kill9_connector_restart_same_uuid_dns_unchanged,
    rolling_restart_of_two_replicas_loses_nothing,
);

/// [`Connector::start_n`] with `--protocol` `tr` (already in `args`), checking every
/// registration says that transport.
fn start_over(tr: Transport, t: &TunnelSetup, args: &[String], n: usize) -> Connector {
    let c = Connector::start_n(t.cli(), args, n);
    c.assert_registered_over(tr);
    c
}
/// The arguments of `tunnel run` with the credentials file and `--url`, dialing `edge`.
fn run_args(t: &TunnelSetup, edge: &Edge, id: &str, url: &str, extra: &[&str]) -> Vec<String> {
    t.run_args(id, id, url, &edge.connector_args(), extra)
}

/// The connection UUIDs a connector logged (`connection=UUID`).
fn connection_ids(c: &Connector) -> Vec<String> {
    c.registered_lines()
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("connection=")? + "connection=".len()..];
            Some(rest.split_whitespace().next()?.to_string())
        })
        .collect()
}

/// Ids of the tunnel's connections in `tunnel list -o json`.
fn listed_connections(cli: &Cli, id: &str) -> Vec<String> {
    let list = cli.list_json(&[]);
    find(&list, "id", id)
        .and_then(|e| e["connections"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect()
}

fn info_json(cli: &Cli, id: &str) -> Value {
    let out = cli.run(&["tunnel", "info", "-o", "json", id]).ok();
    serde_json::from_str(&out.stdout).expect("info -o json")
}

/// The persistent part of a DNS record.
fn record_identity(r: &Value) -> (Value, Value, Value, Value, Value) {
    (
        r["id"].clone(),
        r["type"].clone(),
        r["name"].clone(),
        r["content"].clone(),
        r["proxied"].clone(),
    )
}

fn kill9_connector_restart_same_uuid_dns_unchanged(tr: Transport) {
    let test = "kill9_connector";
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("k9");
    let host = format!("k9.{ZONE}");
    let id = t.tunnel("k9", &[&host]);
    let [p, name] = tr.args();
    let args = run_args(
        &t,
        &t.edge,
        &id,
        &origin.url(),
        &["--ha-connections", "2", p, name],
    );
    let mut conn = start_over(tr, &t, &args, 2);
    t.wait_served(&host);

    let zone = t.s.zone_id();
    let token = t.s.api_token();
    let records_before = dns_records(&t.s.cp, &zone, &host, &token);
    assert_tunnel_cname(&records_before, &host, &id);
    let info_before = info_json(t.cli(), &id);

    let (load, _) = Load::start_served(t.edge.http_addr(), &host);

    let killed = Instant::now();
    conn.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let restarted = Instant::now();
    let conn2 = start_over(tr, &t, &args, 2);
    let registered = restarted.elapsed();
    let back = load.wait_streak(
        "20 good answers in a row after the restart",
        restarted,
        20,
        Duration::from_secs(30),
    );
    let recovery = back.saturating_duration_since(restarted);
    // Keep loading for 2 s once recovered: nothing fails any more.
    std::thread::sleep(Duration::from_secs(2));
    let samples = load.stop();
    let (_, ok, failed) = report(test, &samples);
    eprintln!(
        "[{test}] down {:?} before restart; restart registered in {registered:?}; \
         recovery after restart {recovery:?} (after kill {:?})",
        restarted - killed,
        back.saturating_duration_since(killed)
    );
    assert!(ok > 0);
    let after: Vec<Sample> = samples.into_iter().filter(|s| s.at >= back).collect();
    assert!(
        after.iter().all(|s| s.ok),
        "{failed} failures, some after recovery: {:?}",
        failures(&after)
    );

    // The same tunnel, the same DNS record.
    let records_after = dns_records(&t.s.cp, &zone, &host, &token);
    assert_tunnel_cname(&records_after, &host, &id);
    assert_eq!(
        record_identity(&records_after[0]),
        record_identity(&records_before[0]),
        "the CNAME changed"
    );
    let info_after = info_json(t.cli(), &id);
    for k in ["id", "name", "createdAt"] {
        assert_eq!(info_after[k], info_before[k], "{k}: {info_after}");
    }
    // The restarted connector's connections are listed.
    let ids = connection_ids(&conn2);
    assert_eq!(ids.len(), 2, "{:?}", conn2.registered_lines());
    wait_for(
        "the restarted connector's connections in `tunnel list`",
        Duration::from_secs(30),
        || {
            let listed = listed_connections(t.cli(), &id);
            ids.iter().all(|i| listed.contains(i)).then_some(())
        },
    );
}

fn rolling_restart_of_two_replicas_loses_nothing(tr: Transport) {
    let test = "rolling_restart";
    let t = TunnelSetup::new(ZONE);
    let (oa, ob) = (HashOrigin::start("A"), HashOrigin::start("B"));
    let host = format!("roll.{ZONE}");
    let id = t.tunnel("roll", &[&host]);
    let [p, name] = tr.args();
    let extra = ["--ha-connections", "2", "--grace-period", "10s", p, name];
    let args_a = run_args(&t, &t.edge, &id, &oa.url(), &extra);
    let args_b = run_args(&t, &t.edge, &id, &ob.url(), &extra);
    let mut a = start_over(tr, &t, &args_a, 2);
    let mut b = start_over(tr, &t, &args_b, 2);
    t.wait_served(&host);

    let (load, _) = Load::start_served(t.edge.http_addr(), &host);

    for (name, c, args) in [("A", &mut a, &args_a), ("B", &mut b, &args_b)] {
        let exited = c.terminate(Duration::from_secs(30));
        let restarted = Instant::now();
        *c = start_over(tr, &t, args, 2);
        eprintln!(
            "[{test}] replica {name}: exited {exited:?} after SIGTERM, re-registered in {:?}",
            restarted.elapsed()
        );
        // Let the edge route to the new connections for a moment.
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(1));
    let samples = load.stop();
    let (sent, _, failed) = report(test, &samples);
    assert!(sent > 100, "only {sent} requests sent");
    assert_eq!(failed, 0, "failures: {:?}", failures(&samples));
}

#[test]
fn control_plane_kill9_serves_without_failures() {
    let test = "control_plane_kill9";
    let mut t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("cp");
    let host = format!("cp.{ZONE}");
    let id = t.tunnel("cp", &[&host]);
    let args = run_args(&t, &t.edge, &id, &origin.url(), &["--ha-connections", "2"]);
    let conn = Connector::start_n(t.cli(), &args, 2);
    t.wait_served(&host);
    let ids = connection_ids(&conn);

    let (load, _) = Load::start_served(t.edge.http_addr(), &host);

    let killed = Instant::now();
    t.s.cp.proc.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let outage: Vec<Sample> = load
        .samples()
        .into_iter()
        .filter(|s| s.at >= killed)
        .collect();
    let (sent_outage, _, failed_outage) = report(&format!("{test} outage"), &outage);
    assert!(
        sent_outage > 50,
        "only {sent_outage} requests in the outage"
    );
    assert_eq!(
        failed_outage,
        0,
        "failures with the control plane down: {:?}",
        failures(&outage)
    );

    let restarted = Instant::now();
    let (data, addr) = (t.s.cp.data_dir.clone(), t.s.cp.addr());
    t.s.cp = ControlPlane::start_on(&data, &[ZONE], &addr);
    wait_for(
        "the connector's connections in `tunnel list` after the restart",
        Duration::from_secs(60),
        || {
            let listed = listed_connections(t.cli(), &id);
            ids.iter().all(|i| listed.contains(i)).then_some(())
        },
    );
    let info = info_json(t.cli(), &id);
    assert!(
        info["conns"].as_array().is_some_and(|c| !c.is_empty()),
        "tunnel info shows no connector: {info}"
    );
    let reconciled = restarted.elapsed();
    let samples = load.stop();
    let (_, _, failed) = report(test, &samples);
    eprintln!("[{test}] listed again {reconciled:?} after the control plane restart");
    assert_eq!(failed, 0, "failures: {:?}", failures(&samples));
    assert!(conn.registered() >= 2);
}

#[test]
fn edge_restart_while_control_plane_down() {
    let test = "edge_restart_cp_down";
    let mut t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("er");
    let host = format!("er.{ZONE}");
    let id = t.tunnel("er", &[&host]);
    let args = run_args(&t, &t.edge, &id, &origin.url(), &["--ha-connections", "2"]);
    let mut conn = Connector::start_n(t.cli(), &args, 2);
    t.wait_served(&host);

    let (load, _) = Load::start_served(t.edge.http_addr(), &host);

    t.s.cp.proc.kill9();
    let (tunnel_addrs, http_addr) = (t.edge.tunnel_addrs().to_vec(), t.edge.http_addr());
    let killed = Instant::now();
    t.edge.proc.proc.kill9();
    let state_dir = t.edge.state_dir.clone();
    t.edge = Edge::start_at(&t.s.cp, &state_dir, &tunnel_addrs, http_addr);
    let restarted = Instant::now();
    eprintln!(
        "[{test}] edge back up (from its cached snapshot) {:?} after kill -9",
        restarted - killed
    );

    let before = conn.registered();
    conn.proc.wait_output(
        "the connector to register again by itself",
        Duration::from_secs(90),
        |log| {
            let n = log
                .stderr_lines()
                .iter()
                .chain(log.stdout_lines().iter())
                .filter(|l| l.contains(REGISTERED))
                .count();
            (n >= before + 2).then_some(())
        },
    );
    let reregistered = restarted.elapsed();
    let back = load.wait_streak(
        "20 good answers in a row after the edge restart",
        restarted,
        20,
        Duration::from_secs(90),
    );
    std::thread::sleep(Duration::from_secs(2));
    let samples = load.stop();
    let (_, ok, failed) = report(test, &samples);
    eprintln!(
        "[{test}] re-registered {reregistered:?} and served {:?} after the edge restart \
         ({:?} after kill -9)",
        back.saturating_duration_since(restarted),
        back.saturating_duration_since(killed)
    );
    assert!(ok > 0);
    let after: Vec<Sample> = samples.into_iter().filter(|s| s.at >= back).collect();
    assert!(
        after.iter().all(|s| s.ok),
        "{failed} failures, some after recovery: {:?}",
        failures(&after)
    );
}

#[test]
fn lb_fails_over_to_pool_2() {
    let test = "lb_failover";
    let t = TunnelSetup::new(ZONE);
    let (o1, o2) = (HashOrigin::start("t1"), HashOrigin::start("t2"));
    let lb = format!("lb.{ZONE}");
    let id1 = t.tunnel("t1", &[]);
    let id2 = t.tunnel("t2", &[]);
    let r1 = t
        .cli()
        .run(&["tunnel", "route", "lb", "t1", &lb, "pool1"])
        .ok();
    let r2 = t
        .cli()
        .run(&["tunnel", "route", "lb", "t2", &lb, "pool2"])
        .ok();
    eprintln!("[{test}] route lb t1: {}", r1.stderr.trim());
    eprintln!("[{test}] route lb t2: {}", r2.stderr.trim());
    // The second route adds pool2 to the same load balancer, after pool1.
    let zone = t.s.zone_id();
    let lbs = get_result(
        &t.s.cp,
        &format!("/zones/{zone}/load_balancers"),
        &t.s.api_token(),
    );
    let lbs = lbs.as_array().expect("load balancers");
    assert_eq!(lbs.len(), 1, "one load balancer: {lbs:?}");
    let pools = lbs[0]["default_pools"].as_array().expect("default_pools");
    assert_eq!(pools.len(), 2, "two pools in failover order: {}", lbs[0]);

    let extra = ["--ha-connections", "2", "--grace-period", "5s"];
    let mut c1 = Connector::start_n(t.cli(), &run_args(&t, &t.edge, &id1, &o1.url(), &extra), 2);
    let _c2 = Connector::start_n(t.cli(), &run_args(&t, &t.edge, &id2, &o2.url(), &extra), 2);
    t.edge.wait_get(
        "the load balancer to be served by pool1",
        &lb,
        "/",
        Duration::from_secs(30),
        |r| r.status == 200 && r.header("X-Origin-Tag") == Some("t1"),
    );

    let (load, first) = Load::start_served(t.edge.http_addr(), &lb);

    let stopped = Instant::now();
    c1.terminate(Duration::from_secs(30));
    let exited = stopped.elapsed();
    let back = load.wait_streak(
        "20 answers in a row after t1 stopped",
        stopped,
        20,
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(3));
    let samples = load.stop();
    report(test, &samples);
    eprintln!(
        "[{test}] t1 exited {exited:?} after SIGTERM; served again {:?} after SIGTERM",
        back.saturating_duration_since(stopped)
    );

    let before: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= first && s.at < stopped)
        .collect();
    assert!(
        before
            .iter()
            .all(|s| s.ok && s.tag.as_deref() == Some("t1")),
        "before the stop everything goes to pool1: {:?}",
        before
            .iter()
            .find(|s| !s.ok || s.tag.as_deref() != Some("t1"))
    );
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= stopped + Duration::from_secs(1))
        .collect();
    assert!(
        after.len() > 50,
        "only {} requests after the stop",
        after.len()
    );
    let bad: Vec<&&Sample> = after
        .iter()
        .filter(|s| !s.ok || s.tag.as_deref() != Some("t2"))
        .take(5)
        .collect();
    assert!(
        bad.is_empty(),
        "after the first second every request is served by t2: {bad:?}"
    );
}

#[test]
fn max_failures_exits_nonzero() {
    let test = "max_failures";
    let t = TunnelSetup::new(ZONE);
    let id = t.tunnel("mf", &[]);
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        s.local_addr().expect("addr")
    };
    let args = t.run_args(
        &id,
        &id,
        &closed_port_url(),
        &t.edge.connector_args_via(&[closed]),
        &["--ha-connections", "1", "--max-failures", "2"],
    );
    let started = Instant::now();
    let mut c = Connector::spawn(t.cli(), &args);
    let status = c.proc.wait_exit(Duration::from_secs(120));
    let took = started.elapsed();
    let stderr = c.proc.log.stderr();
    eprintln!("[{test}] exited {status} after {took:?}");
    assert!(!status.success(), "exit status {status}: {}", c.logs());
    assert!(
        stderr.contains("--max-failures") && stderr.contains("2 attempts"),
        "stderr should say why: {stderr}"
    );
    assert_eq!(c.registered(), 0);
}
