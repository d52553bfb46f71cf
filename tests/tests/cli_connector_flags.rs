//! `tunnel run`'s connector options against a real edge and origin: each flag changes what
//! the connector does, seen from outside (files it writes, what it dials, what it serves).

use std::time::Duration;

use ringway_tests::case::{OriginCase, stop};
use ringway_tests::connector::Connector;
use ringway_tests::prelude::*;

const ZONE: &str = "flags.test";

#[test]
fn pidfile_holds_the_connector_pid_once_registered() {
    let c = OriginCase::new(ZONE, "pid");
    let pidfile = c.t.s.tmp.path().join("ringway.pid");
    let p = pidfile.display().to_string();
    let conn = c.run_with(&["--pidfile", &p]);
    let text = wait_for("the pidfile", Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).ok()
    });
    assert_eq!(text, format!("{}\n", conn.proc.proc.pid()));
    c.assert_served(&conn);
}

#[test]
fn post_quantum_negotiates_with_the_edge_and_says_so() {
    let c = OriginCase::new(ZONE, "pq");
    let conn = c.run_with(&["--post-quantum"]);
    c.assert_served(&conn);
    assert!(
        conn.logs()
            .contains("Using post-quantum key agreement X25519MLKEM768"),
        "{}",
        conn.logs()
    );
}

#[test]
fn credentials_contents_serves_without_a_file() {
    let c = OriginCase::new(ZONE, "contents");
    let json = std::fs::read_to_string(c.t.credentials_path(&c.id)).unwrap();
    let mut args: Vec<String> = [
        "tunnel",
        "run",
        "--credentials-contents",
        &json,
        "--url",
        &c.origin.url(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(c.t.edge.connector_args());
    args.push(c.id.clone());
    let conn = Connector::start(c.t.cli(), &args);
    c.assert_served(&conn);

    // Broken contents: one error line that does not echo the JSON (it holds the secret).
    let secret = c.t.cli().credentials(&c.id)["TunnelSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let broken = json.replace("\"AccountTag\"", "\"Nope\"");
    let mut bad: Vec<String> = ["tunnel", "run", "--credentials-contents", &broken]
        .iter()
        .map(|s| s.to_string())
        .collect();
    bad.extend(c.t.edge.connector_args());
    bad.push(c.id.clone());
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let run = c.t.cli().run(&bad);
    let line = run.one_line_error();
    assert!(line.contains("--credentials-contents"), "{line}");
    assert!(!line.contains(&secret), "the secret leaked: {line}");
}

#[test]
fn edge_ip_version_keeps_only_that_family() {
    let c = OriginCase::new(ZONE, "family");
    let v4 = c.t.edge.tunnel_addrs()[0];
    // An IPv6 edge where nothing listens: with version 4 it is never dialed.
    let mut edge_args = vec!["--edge".to_string(), format!("[::1]:{}", v4.port())];
    edge_args.extend(c.t.edge.connector_args());
    let conn = c.run(&edge_args, &["--edge-ip-version", "4"]);
    c.assert_served(&conn);
    assert!(
        !conn.logs().contains("ip=::1"),
        "dialed the IPv6 edge: {}",
        conn.logs()
    );
    drop(conn);

    // Only IPv4 edges and version 6: one clear error naming the edges and the family.
    let args = c.run_args(&c.t.edge.connector_args(), &["--edge-ip-version", "6"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = c.t.cli().run(&args).one_line_error();
    assert!(
        line.contains("no IPv6 address") && line.contains(&v4.to_string()),
        "{line}"
    );
}

#[test]
fn edge_bind_address_of_the_other_family_is_refused() {
    let c = OriginCase::new(ZONE, "bind");
    let conn = c.run_with(&["--edge-bind-address", "127.0.0.1"]);
    c.assert_served(&conn);
    drop(conn);
    let args = c.run_args(&c.t.edge.connector_args(), &["--edge-bind-address", "::1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = c.t.cli().run(&args).one_line_error();
    assert!(line.contains("--edge-bind-address ::1 is IPv6"), "{line}");
}

#[test]
fn unix_socket_with_url_is_cloudflareds_error() {
    let c = OriginCase::new(ZONE, "unixurl");
    let args = c.run_args(
        &c.t.edge.connector_args(),
        &["--unix-socket", "/tmp/nowhere.sock"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = c.t.cli().run(&args).one_line_error();
    assert!(
        line.contains("--unix-socket must be used exclusivly."),
        "{line}"
    );
}

#[test]
fn label_and_tags_reach_tunnel_info() {
    let c = OriginCase::new(ZONE, "labels");
    let conn = c.run_with(&[
        "--label", "rack-7", "--tag", "env=prod", "--tag", "team=web",
    ]);
    c.assert_served(&conn);
    let info = wait_for("the connection record", Duration::from_secs(20), || {
        let out = c.t.cli().run(&["tunnel", "info", "-o", "json", &c.id]).ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let conns = v["conns"].as_array()?.clone();
        (!conns.is_empty()).then_some(conns)
    });
    assert_eq!(info[0]["label"], "rack-7", "{info:?}");
    assert_eq!(info[0]["tags"]["env"], "prod", "{info:?}");
    assert_eq!(info[0]["tags"]["team"], "web", "{info:?}");
}

/// The Host header the origin received for `GET /headers` through the edge.
fn origin_host(c: &OriginCase, conn: &Connector) -> String {
    c.t.wait_served(&c.host);
    let r = c.t.edge.get(&c.host, "/headers");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h[0].as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("host"))
        })
        .and_then(|h| h[1].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn ad_hoc_origin_flags_override_config_origin_request() {
    let c = OriginCase::new(ZONE, "hosthdr");
    let config = c.t.s.tmp.path().join("config.yml");
    std::fs::write(
        &config,
        "originRequest:\n  httpHostHeader: from-config.example\n",
    )
    .unwrap();
    let cfg = config.display().to_string();
    let conn = c.run_with(&["--config", &cfg]);
    assert_eq!(origin_host(&c, &conn), "from-config.example");
    stop(conn);
    let conn = c.run_with(&["--config", &cfg, "--http-host-header", "from-flag.example"]);
    assert_eq!(origin_host(&c, &conn), "from-flag.example");
}
