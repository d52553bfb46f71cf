//! The edge-facing API: the versioned snapshot (hashes, never secrets) with long-poll, and
//! connection records that live only as long as their lease.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ringway_tests::control_plane::{http_raw, register_connection};
use ringway_tests::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn snapshot(cp: &ControlPlane) -> (Value, String) {
    let (status, text) = http_raw(
        "GET",
        &format!("{}/edge/v1/snapshot", cp.url),
        Some(&cp.edge_token()),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("snapshot is JSON");
    assert_eq!(v["success"], true, "{v}");
    (v["result"].clone(), text)
}

fn version(snap: &Value) -> u64 {
    snap["version"].as_u64().expect("version is a number")
}

fn connection_ids(cli: &Cli, name: &str) -> Vec<String> {
    let listed = cli.list_json(&["--name", name]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    listed[0]["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn snapshot_carries_hashes_not_secrets() {
    let s = Setup::new(&["edge.test"]);
    let (cp, cli) = (&s.cp, &s.cli);
    let raw: Vec<u8> = (7u8..47).collect();
    let given = B64.encode(&raw);
    let id1 = cli.create("t1", &["--secret", &given]);
    let id2 = cli.create("t2", &[]);
    let secret2 = cli.credentials(&id2)["TunnelSecret"]
        .as_str()
        .unwrap()
        .to_string();
    cli.run(&["tunnel", "route", "dns", "t1", "www.edge.test"])
        .ok();

    let (snap, text) = snapshot(cp);
    assert!(version(&snap) > 0);
    let tunnels = snap["tunnels"].as_array().expect("tunnels");
    for (id, secret_b64) in [(&id1, &given), (&id2, &secret2)] {
        let t = tunnels
            .iter()
            .find(|t| t["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} in snapshot: {snap}"));
        let bytes = B64.decode(secret_b64).unwrap();
        assert_eq!(
            t["secret_sha256"],
            hex::encode(Sha256::digest(&bytes)),
            "{t}"
        );
        assert_eq!(t["account_tag"], s.account_id().as_str(), "{t}");
        assert!(
            !text.contains(secret_b64.as_str()),
            "snapshot leaks a secret"
        );
        assert!(
            !text.contains(&hex::encode(&bytes)),
            "snapshot leaks a secret (hex)"
        );
    }
    let rec = snap["dns_records"]
        .as_array()
        .expect("dns_records")
        .iter()
        .find(|r| r["name"] == "www.edge.test")
        .unwrap_or_else(|| panic!("record in snapshot: {snap}"));
    assert_eq!(rec["type"], "CNAME");
    assert_eq!(rec["content"], format!("{id1}.cfargotunnel.com"));
    assert_eq!(rec["proxied"], true);

    // A deleted tunnel can no longer authenticate at the edge: it leaves the snapshot.
    let before = version(&snap);
    cli.run(&["tunnel", "delete", "t2"]).ok();
    let (snap, _) = snapshot(cp);
    assert!(version(&snap) > before);
    let ids: Vec<&str> = snap["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id1.as_str()]);
}

#[test]
fn snapshot_long_poll_wakes_on_change() {
    let s = Setup::new(&["poll.test"]);
    let (cp, cli) = (&s.cp, &s.cli);
    let id = cli.create("t1", &[]);
    let current = version(&snapshot(cp).0);

    // Nothing changes: the poll ends with 304 after its wait.
    let (status, _) = http_raw(
        "GET",
        &format!("{}/edge/v1/snapshot?since={current}&wait=1", cp.url),
        Some(&cp.edge_token()),
        None,
    );
    assert_eq!(status, 304);
    // An older version is answered at once with the full snapshot.
    let (status, text) = http_raw(
        "GET",
        &format!("{}/edge/v1/snapshot?since={}&wait=30", cp.url, current - 1),
        Some(&cp.edge_token()),
        None,
    );
    assert_eq!(status, 200, "{text}");

    // A poll waiting on the current version returns as soon as a route is added.
    let url = format!("{}/edge/v1/snapshot?since={current}&wait=30", cp.url);
    let edge = cp.edge_token();
    let poll = std::thread::spawn(move || {
        let start = Instant::now();
        let (status, text) = http_raw("GET", &url, Some(&edge), None);
        (status, text, start.elapsed())
    });
    cli.run(&["tunnel", "route", "dns", "t1", "www.poll.test"])
        .ok();
    let (status, text, took) = poll.join().expect("poll thread");
    assert_eq!(status, 200, "{text}");
    let snap: Value = serde_json::from_str::<Value>(&text).unwrap()["result"].clone();
    assert!(version(&snap) > current, "{snap}");
    assert!(
        snap["dns_records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "www.poll.test"
                && r["content"] == format!("{id}.cfargotunnel.com")),
        "{snap}"
    );
    // The poll was woken by the change, not by its 30 s wait running out (a failure limit).
    assert!(
        took < Duration::from_secs(25),
        "long-poll did not wake: {took:?}"
    );
}

#[test]
fn edge_endpoints_need_the_edge_token() {
    let s = Setup::new(&["auth.test"]);
    let (cp, cli) = (&s.cp, &s.cli);
    let id = cli.create("t1", &[]);
    let api = s.api_token();
    let conn = uuid::Uuid::new_v4();
    let reg = json!({
        "id": conn, "tunnel_id": id, "client_id": uuid::Uuid::new_v4(), "client_version": "x",
        "arch": "linux_amd64", "features": [], "conn_index": 0, "colo_name": "LAB",
        "origin_ip": "10.0.0.1", "edge_id": "e1", "lease_secs": 60
    });
    let renew = json!({"edge_id": "e1", "ids": [conn], "lease_secs": 60});
    let calls: Vec<(&str, String, Option<&Value>)> = vec![
        ("GET", format!("{}/edge/v1/snapshot", cp.url), None),
        (
            "GET",
            format!("{}/edge/v1/snapshot?since=0&wait=1", cp.url),
            None,
        ),
        (
            "POST",
            format!("{}/edge/v1/connections", cp.url),
            Some(&reg),
        ),
        ("POST", format!("{}/edge/v1/leases", cp.url), Some(&renew)),
        (
            "DELETE",
            format!("{}/edge/v1/connections/{conn}", cp.url),
            None,
        ),
    ];
    for (method, url, body) in &calls {
        let (status, text) = http_raw(method, url, Some(&api), *body);
        assert_eq!(status, 403, "{method} {url} with a cert token: {text}");
        let (status, text) = http_raw(method, url, None, *body);
        assert_eq!(status, 401, "{method} {url} without a token: {text}");
        let (status, text) = http_raw(method, url, Some("not-a-token"), *body);
        assert_eq!(status, 401, "{method} {url} with an unknown token: {text}");
    }
    assert!(
        connection_ids(cli, "t1").is_empty(),
        "no refused call registered anything"
    );

    // The edge token, in turn, cannot use the client API.
    let acct = s.account_id();
    let zone = s.zone_id();
    for url in [
        format!("{}/accounts/{acct}/cfd_tunnel", cp.api()),
        format!("{}/accounts/{acct}/cfd_tunnel/{id}/token", cp.api()),
        format!("{}/zones/{zone}/dns_records", cp.api()),
        format!("{}/zones", cp.api()),
        format!("{}/accounts", cp.api()),
    ] {
        let (status, ans) = http("GET", &url, &cp.edge_token(), None);
        assert_eq!(status, 403, "GET {url} with the edge token: {ans}");
    }
    let (status, ans) = http(
        "POST",
        &format!("{}/accounts/{acct}/cfd_tunnel", cp.api()),
        &cp.edge_token(),
        Some(&json!({"name": "edge-made", "tunnel_secret": B64.encode([5u8; 32])})),
    );
    assert_eq!(status, 403, "{ans}");
    let (status, ans) = http(
        "POST",
        &format!("{}/login/cert", cp.url),
        &cp.edge_token(),
        Some(&json!({"zone": "auth.test"})),
    );
    assert_eq!(status, 403, "the edge token cannot mint certs: {ans}");
}

#[test]
fn connections_live_only_while_leased() {
    let s = Setup::new(&["lease.test"]);
    let (cp, cli) = (&s.cp, &s.cli);
    let id = cli.create("t1", &[]);
    let client = uuid::Uuid::new_v4().to_string();

    // A 2 s lease that nobody renews expires; a 60 s one next to it stays.
    let long = register_connection(cp, &id, &client, 0, "LAB", "edge-a", 60);
    let short = register_connection(cp, &id, &client, 1, "LAB", "edge-a", 2);
    let left = wait_for("the 2 s lease to expire", Duration::from_secs(30), || {
        let ids = connection_ids(cli, "t1");
        (!ids.contains(&short)).then_some(ids)
    });
    assert_eq!(left, std::slice::from_ref(&long));

    // Renew: ids never registered (or owned by another edge) come back as unknown.
    let never = uuid::Uuid::new_v4().to_string();
    let (status, ans) = http(
        "POST",
        &format!("{}/edge/v1/leases", cp.url),
        &cp.edge_token(),
        Some(&json!({"edge_id": "edge-a", "ids": [long, never, short], "lease_secs": 60})),
    );
    assert_eq!(status, 200, "{ans}");
    let mut unknown: Vec<&str> = ans["result"]["unknown"]
        .as_array()
        .expect("unknown")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    unknown.sort();
    let mut want = vec![never.as_str(), short.as_str()];
    want.sort();
    assert_eq!(unknown, want, "{ans}");
    let (status, ans) = http(
        "POST",
        &format!("{}/edge/v1/leases", cp.url),
        &cp.edge_token(),
        Some(&json!({"edge_id": "edge-b", "ids": [long], "lease_secs": 60})),
    );
    assert_eq!(status, 200, "{ans}");
    assert_eq!(
        ans["result"]["unknown"],
        json!([long]),
        "another edge's connection: {ans}"
    );

    // A connection for a tunnel that does not exist, or was deleted, is refused.
    let (status, ans) = http(
        "POST",
        &format!("{}/edge/v1/connections", cp.url),
        &cp.edge_token(),
        Some(&json!({
            "id": uuid::Uuid::new_v4(), "tunnel_id": uuid::Uuid::new_v4(), "client_id": client,
            "conn_index": 0, "edge_id": "edge-a", "lease_secs": 60
        })),
    );
    assert_eq!(status, 404, "{ans}");

    // DELETE removes at once.
    let (status, ans) = http(
        "DELETE",
        &format!("{}/edge/v1/connections/{long}", cp.url),
        &cp.edge_token(),
        None,
    );
    assert_eq!(status, 200, "{ans}");
    assert!(connection_ids(cli, "t1").is_empty());
    let out = cli.run(&["tunnel", "info", "t1"]).ok();
    assert_eq!(
        out.stdout,
        format!("Your tunnel {id} does not have any active connection.\n")
    );

    cli.run(&["tunnel", "delete", "t1"]).ok();
    let (status, ans) = http(
        "POST",
        &format!("{}/edge/v1/connections", cp.url),
        &cp.edge_token(),
        Some(&json!({
            "id": uuid::Uuid::new_v4(), "tunnel_id": id, "client_id": client,
            "conn_index": 0, "edge_id": "edge-a", "lease_secs": 60
        })),
    );
    assert_eq!(status, 404, "a deleted tunnel takes no connections: {ans}");
}
