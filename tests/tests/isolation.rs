//! Isolation: a cert.pem token acts only in its own account and zone; other accounts' objects
//! are invisible and untouchable, by CLI and by direct API calls.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ringway_tests::cli::assert_no_secrets;
use ringway_tests::connector::Connector;
use ringway_tests::control_plane::{
    assert_tunnel_cname, dns_records, get_result, register_connection, zone_by_name,
};
use ringway_tests::edge::{Edge, EdgeOpts};
use ringway_tests::origins::HashOrigin;
use ringway_tests::prelude::*;
use ringway_tests::raw_client::HttpResponse;
use serde_json::json;
use std::time::Duration;

#[test]
fn accounts_and_zones_are_isolated() {
    let s = Setup::new(&["a.test", "a2.test"]);
    let (cp, cli_a) = (&s.cp, &s.cli);
    let admin = cp.admin_token();
    let acct_a = s.account_id();
    let zone_a = s.zone_id();
    let token_a = s.api_token();
    let id_a = cli_a.create("secret-a", &[]);
    cli_a
        .run(&["tunnel", "route", "dns", "secret-a", "www.a.test"])
        .ok();

    // The operator creates account b and its zone.
    let b = account_b(&s);
    assert_ne!(b.id, acct_a);
    let (acct_b, token_b, cli_b) = (b.id, b.token, b.cli);
    let id_b = cli_b.create("mine-b", &[]);
    let conn_a = register_connection(
        cp,
        &id_a,
        &uuid::Uuid::new_v4().to_string(),
        0,
        "LAB",
        "e",
        60,
    );

    // B sees only its own tunnels and cannot touch A's by UUID.
    let listed = cli_b.list_json(&[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id_b.as_str());
    let out = cli_b.run(&["tunnel", "list"]).ok();
    assert!(!out.stdout.contains(&id_a) && !out.stdout.contains("secret-a"));
    for args in [
        vec!["tunnel", "info", id_a.as_str()],
        vec!["tunnel", "delete", id_a.as_str()],
        vec!["tunnel", "delete", "-f", id_a.as_str()],
        vec!["tunnel", "token", id_a.as_str()],
        vec!["tunnel", "info", "secret-a"],
        vec!["tunnel", "route", "dns", id_a.as_str(), "x.b.test"],
        vec!["tunnel", "route", "dns", "mine-b", "www.a.test"],
        vec!["tunnel", "route", "dns", "mine-b", "evil.a.test"],
    ] {
        let run = cli_b.run(&args);
        let line = run.one_line_error();
        assert_no_secrets(&format!("{args:?}"), &line, &[&token_a, &token_b, &admin]);
        assert!(
            !run.stdout.contains("eyJ"),
            "{args:?} printed a token: {}",
            run.stdout
        );
    }
    // cloudflared's cleanup only logs failures; whatever it prints, A keeps its connection.
    let run = cli_b.run(&["tunnel", "cleanup", &id_a]);
    assert_no_secrets("cleanup", &run.stderr, &[&token_a, &token_b, &admin]);
    // A's tunnel, connection and record are untouched.
    let listed_a = cli_a.list_json(&[]);
    assert_eq!(listed_a.len(), 1);
    assert_eq!(listed_a[0]["connections"][0]["id"], conn_a.as_str());
    assert_tunnel_cname(
        &dns_records(cp, &zone_a, "www.a.test", &token_a),
        "www.a.test",
        &id_a,
    );

    // Direct API calls with B's token into A's account and zone: 403.
    let api = cp.api();
    let forbidden = [
        ("GET", format!("{api}/accounts/{acct_a}/cfd_tunnel"), None),
        (
            "POST",
            format!("{api}/accounts/{acct_a}/cfd_tunnel"),
            Some(json!({"name": "intruder", "tunnel_secret": B64.encode([1u8; 32])})),
        ),
        (
            "GET",
            format!("{api}/accounts/{acct_a}/cfd_tunnel/{id_a}"),
            None,
        ),
        (
            "GET",
            format!("{api}/accounts/{acct_a}/cfd_tunnel/{id_a}/token"),
            None,
        ),
        (
            "DELETE",
            format!("{api}/accounts/{acct_a}/cfd_tunnel/{id_a}"),
            None,
        ),
        ("GET", format!("{api}/zones/{zone_a}/dns_records"), None),
        (
            "POST",
            format!("{api}/zones/{zone_a}/dns_records"),
            Some(json!({"type": "A", "name": "x.a.test", "content": "192.0.2.1"})),
        ),
        (
            "PUT",
            format!("{api}/zones/{zone_a}/tunnels/{id_b}/routes"),
            Some(json!({"type": "dns", "user_hostname": "x.a.test", "overwrite_existing": true})),
        ),
        (
            "GET",
            format!("{api}/accounts/{acct_a}/load_balancers/pools"),
            None,
        ),
        ("GET", format!("{api}/zones/{zone_a}/load_balancers"), None),
    ];
    for (method, url, body) in &forbidden {
        let (status, ans) = http(method, url, &token_b, body.as_ref());
        assert_eq!(status, 403, "{method} {url} with B's token: {ans}");
        assert_eq!(ans["success"], false, "{ans}");
    }
    // Listing accounts and zones shows B only its own.
    let accounts = get_result(cp, "/accounts", &token_b);
    let ids: Vec<&str> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acct_b.as_str()]);
    let zones = get_result(cp, "/zones", &token_b);
    let names: Vec<&str> = zones
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b.test"]);
    // B's own account works with the same calls.
    let (status, _) = http(
        "GET",
        &format!("{api}/accounts/{acct_b}/cfd_tunnel"),
        &token_b,
        None,
    );
    assert_eq!(status, 200);
    // An account that does not exist is also 403 for a zone token (no probing).
    let (status, _) = http(
        "GET",
        &format!("{api}/accounts/{}/cfd_tunnel", "0".repeat(32)),
        &token_b,
        None,
    );
    assert_eq!(status, 403);
    // A zone token cannot create accounts or zones.
    let (status, _) = http(
        "POST",
        &format!("{api}/accounts"),
        &token_b,
        Some(&json!({"name": "c"})),
    );
    assert_eq!(status, 403);
    let (status, _) = http(
        "POST",
        &format!("{api}/zones"),
        &token_b,
        Some(&json!({"name": "c.test", "account": {"id": acct_b}})),
    );
    assert_eq!(status, 403);

    // A's cert is scoped to a.test: a2.test of the same account is off limits.
    let zone_a2 = zone_by_name(cp, "a2.test");
    assert_eq!(zone_a2["account"]["id"], acct_a.as_str());
    let zone_a2 = zone_a2["id"].as_str().unwrap();
    let (status, ans) = http(
        "PUT",
        &format!("{api}/zones/{zone_a2}/tunnels/{id_a}/routes"),
        &token_a,
        Some(&json!({"type": "dns", "user_hostname": "www.a2.test", "overwrite_existing": false})),
    );
    assert_eq!(status, 403, "{ans}");
    let (status, ans) = http(
        "POST",
        &format!("{api}/zones/{zone_a2}/dns_records"),
        &token_a,
        Some(&json!({"type": "CNAME", "name": "www.a2.test", "content": "example.com"})),
    );
    assert_eq!(status, 403, "{ans}");
    let (status, _) = http(
        "GET",
        &format!("{api}/zones/{zone_a2}/dns_records"),
        &token_a,
        None,
    );
    assert_eq!(status, 403);
    let run = cli_a.run(&["tunnel", "route", "dns", "secret-a", "www.a2.test"]);
    assert_no_secrets("route outside zone", &run.one_line_error(), &[&token_a]);
    let (status, ans) = http(
        "GET",
        &format!("{api}/zones/{zone_a2}/dns_records?name=www.a2.test"),
        &admin,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(ans["result"], json!([]), "nothing was written to a2.test");
}

/// Account B and its zone `b.test`, created by the operator; B's CLI is logged in to it.
struct AccountB {
    id: String,
    zone: String,
    token: String,
    cli: Cli,
}

fn account_b(s: &Setup) -> AccountB {
    let (cp, admin) = (&s.cp, s.cp.admin_token());
    let (status, ans) = http(
        "POST",
        &format!("{}/accounts", cp.api()),
        &admin,
        Some(&json!({"name": "b"})),
    );
    assert_eq!(status, 200, "{ans}");
    let id = ans["result"]["id"]
        .as_str()
        .expect("account id")
        .to_string();
    let (status, ans) = http(
        "POST",
        &format!("{}/zones", cp.api()),
        &admin,
        Some(&json!({"name": "b.test", "account": {"id": id}})),
    );
    assert_eq!(status, 200, "{ans}");
    assert_eq!(ans["result"]["account"]["id"], id.as_str());
    let zone = ans["result"]["id"].as_str().expect("zone id").to_string();
    let cli = s.other_home("home-b");
    cli.login(cp, "b.test").ok();
    let cert = cli.cert();
    assert_eq!(cert["accountID"], id.as_str());
    let token = cert["apiToken"].as_str().unwrap().to_string();
    AccountB {
        id,
        zone,
        token,
        cli,
    }
}

/// Asserts a refusal in the v4 envelope: a 4xx status, `success: false`, a nonzero code and a
/// message; returns the message.
fn refused(what: &str, status: u16, ans: &serde_json::Value) -> String {
    assert!((400..500).contains(&status), "{what}: HTTP {status}: {ans}");
    assert_eq!(ans["success"], false, "{what}: {ans}");
    let err = &ans["errors"][0];
    assert!(err["code"].as_u64().unwrap_or(0) > 0, "{what}: {ans}");
    let msg = err["message"].as_str().unwrap_or("").to_string();
    assert!(!msg.is_empty(), "{what}: {ans}");
    msg
}

/// Whether an answer came from A's origin (the HashOrigin tags every answer).
fn from_origin(r: &HttpResponse, tag: &str) -> bool {
    r.header("X-Origin-Tag") == Some(tag) || r.text().contains(&format!("tag={tag}"))
}

#[test]
fn another_account_cannot_route_to_a_tunnel_by_record_pool_or_suffix_games() {
    let t = TunnelSetup::new("a.test");
    let cp = &t.s.cp;
    let api = cp.api();
    let origin = HashOrigin::start("A");
    let id_a = t.tunnel("web-a", &["www.a.test"]);
    let _conn = t.run_url("web-a", &id_a, &origin.url(), &["--ha-connections", "1"], 1);
    assert!(from_origin(&t.wait_served("www.a.test"), "A"));

    let b = account_b(&t.s);
    let id_b = b.cli.create("mine-b", &[]);
    let records = format!("{api}/zones/{}/dns_records", b.zone);
    let cname = |name: &str, content: &str| json!({"type": "CNAME", "name": name, "content": content, "proxied": true});
    // DNS records naming A's tunnel, straight and with every suffix game: all refused.
    let upper = id_a.to_ascii_uppercase();
    let simple = id_a.replace('-', "");
    let mut messages = Vec::new();
    for target in [
        format!("{id_a}.cfargotunnel.com"),
        format!("{upper}.CFARGOTUNNEL.COM"),
        format!("{id_a}.cfargotunnel.com."),
        format!("{id_a}.anything.invalid"),
        format!("{id_a}.cfargotunnel.com.evil.test"),
        format!("x.{id_a}.cfargotunnel.com"),
        format!("{simple}.cfargotunnel.com"),
    ] {
        let (status, ans) = http(
            "POST",
            &records,
            &b.token,
            Some(&cname("hijack.b.test", &target)),
        );
        messages.push(refused(&format!("CNAME → {target}"), status, &ans));
    }
    // A UUID that is no tunnel at all is refused with the same words as A's (no probing).
    let ghost = uuid::Uuid::new_v4().to_string();
    let (status, ans) = http(
        "POST",
        &records,
        &b.token,
        Some(&cname("ghost.b.test", &format!("{ghost}.cfargotunnel.com"))),
    );
    let ghost_msg = refused("CNAME → nonexistent tunnel", status, &ans);
    assert_eq!(
        ghost_msg.replace(&ghost, "ID"),
        messages[0].replace(&id_a, "ID"),
        "another account's tunnel and no tunnel must look the same"
    );
    // B's own tunnel with the wrong suffix is refused too; with the right one (any case, a
    // trailing dot) it is accepted and stored normalized.
    let (status, ans) = http(
        "POST",
        &records,
        &b.token,
        Some(&cname("own.b.test", &format!("{id_b}.anything.invalid"))),
    );
    refused("own tunnel, wrong suffix", status, &ans);
    let (status, ans) = http(
        "POST",
        &records,
        &b.token,
        Some(&cname(
            "own.b.test",
            &format!("{}.CFARGOTUNNEL.com.", id_b.to_ascii_uppercase()),
        )),
    );
    assert_eq!(status, 200, "{ans}");
    assert_eq!(ans["result"]["content"], format!("{id_b}.cfargotunnel.com"));
    let own_record = ans["result"]["id"].as_str().unwrap().to_string();
    // Updating B's record to point at A's tunnel: refused, and the record is unchanged.
    let (status, ans) = http(
        "PUT",
        &format!("{records}/{own_record}"),
        &b.token,
        Some(&cname("own.b.test", &format!("{id_a}.cfargotunnel.com"))),
    );
    refused("PUT record → A's tunnel", status, &ans);
    // PATCH of just the content.
    let (status, ans) = http(
        "PATCH",
        &format!("{records}/{own_record}"),
        &b.token,
        Some(&json!({"content": format!("{id_a}.cfargotunnel.com")})),
    );
    refused("PATCH record → A's tunnel", status, &ans);
    // A PATCH that keeps the record inside B's account is fine.
    let (status, ans) = http(
        "PATCH",
        &format!("{records}/{own_record}"),
        &b.token,
        Some(&json!({"ttl": 120})),
    );
    assert_eq!(status, 200, "{ans}");
    let listed = dns_records(cp, &b.zone, "own.b.test", &b.token);
    assert_eq!(listed[0]["content"], format!("{id_b}.cfargotunnel.com"));
    // Ordinary CNAMEs elsewhere still work.
    let (status, ans) = http(
        "POST",
        &records,
        &b.token,
        Some(&cname("docs.b.test", "example.net")),
    );
    assert_eq!(status, 200, "{ans}");

    // The routes PUT (DNS and LB) with A's tunnel id in B's zone.
    let routes = format!("{api}/zones/{}/tunnels/{id_a}/routes", b.zone);
    for body in [
        json!({"type": "dns", "user_hostname": "hijack.b.test", "overwrite_existing": true}),
        json!({"type": "lb", "lb_name": "lb.b.test", "lb_pool": "pool-b"}),
    ] {
        let (status, ans) = http("PUT", &routes, &b.token, Some(&body));
        refused(&format!("routes PUT {body}"), status, &ans);
    }
    // The CLI the same way.
    let run = b
        .cli
        .run(&["tunnel", "route", "dns", &id_a, "hijack.b.test"]);
    assert!(run.code != 0, "route dns with A's id: {}", run.stdout);
    // A pool of B's with A's tunnel as an origin, directly and by suffix games.
    let pools = format!("{api}/accounts/{}/load_balancers/pools", b.id);
    for address in [
        format!("{id_a}.cfargotunnel.com"),
        format!("{upper}.cfargotunnel.com."),
        format!("{id_a}.anything.invalid"),
    ] {
        let body = json!({"name": "pool-b", "origins": [{"name": "x", "address": address}]});
        let (status, ans) = http("POST", &pools, &b.token, Some(&body));
        refused(&format!("pool origin {address}"), status, &ans);
    }
    let (status, ans) = get_pools(cp, &b.id, &b.token);
    assert_eq!(status, 200);
    assert_eq!(ans["result"], json!([]), "no pool was written");
    for host in ["hijack.b.test", "ghost.b.test"] {
        assert!(
            dns_records(cp, &b.zone, host, &b.token).is_empty(),
            "{host} was written"
        );
    }

    // Rows written straight into SQLite, behind the API's back: a record and a load balancer
    // of B's zone whose pool holds A's tunnel.
    let db = rusqlite::Connection::open(cp.data_dir.join("ringway.db")).expect("open store");
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let now = "2026-01-01T00:00:00Z";
    let rogue_record = "f".repeat(32);
    db.execute(
        "INSERT INTO dns_records (id, zone_id, type, name, content, proxied, ttl, created_on, \
         modified_on) VALUES (?1, ?2, 'CNAME', 'hijack.b.test', ?3, 1, 1, ?4, ?4)",
        rusqlite::params![
            rogue_record,
            b.zone,
            format!("{id_a}.cfargotunnel.com"),
            now
        ],
    )
    .unwrap();
    let rogue_pool = "e".repeat(32);
    let origins = json!([{"name": "a", "address": format!("{id_a}.cfargotunnel.com"), "enabled": true, "weight": 1.0}]);
    db.execute(
        "INSERT INTO pools (id, account_id, name, enabled, origins, created_on, modified_on) \
         VALUES (?1, ?2, 'rogue', 1, ?3, ?4, ?4)",
        rusqlite::params![rogue_pool, b.id, origins.to_string(), now],
    )
    .unwrap();
    db.execute(
        "INSERT INTO load_balancers (id, zone_id, name, default_pools, fallback_pool, proxied, \
         enabled, created_on, modified_on) VALUES (?1, ?2, 'lbhijack.b.test', ?3, ?4, 1, 1, ?5, ?5)",
        rusqlite::params!["d".repeat(32), b.zone, json!([rogue_pool]).to_string(), rogue_pool, now],
    )
    .unwrap();
    db.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'snapshot_version'",
        [],
    )
    .unwrap();
    drop(db);
    // An ordinary API write publishes the new version; once A's new host serves, the edge
    // has the snapshot with the rogue rows in it (or a later one).
    t.route("web-a", "www2.a.test");
    assert!(from_origin(&t.wait_served("www2.a.test"), "A"));
    for host in ["hijack.b.test", "lbhijack.b.test"] {
        let r = t.edge.get(host, "/");
        assert!(
            (r.status == 404 || r.status == 530) && !from_origin(&r, "A"),
            "{host} reached A's origin: {}",
            r.summary()
        );
    }
    assert!(from_origin(&t.edge.get("www.a.test", "/"), "A"));

    // A restart names each broken row in a warning (ids and names, never a secret).
    let mut t = t;
    let (data, addr) = (t.s.cp.data_dir.clone(), t.s.cp.addr());
    t.s.cp.proc.kill9();
    t.s.cp = ControlPlane::start_on(&data, &["a.test"], &addr);
    let log = t.s.cp.log_text();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("tenant isolation"))
        .collect();
    assert!(
        warned
            .iter()
            .any(|l| l.contains(&rogue_record) && l.contains("hijack.b.test")),
        "no warning names the rogue record: {warned:#?}"
    );
    assert!(
        warned.iter().any(|l| l.contains(&rogue_pool)),
        "no warning names the rogue pool: {warned:#?}"
    );
    let secret = t.s.cli.credentials(&id_a)["TunnelSecret"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_no_secrets(
        "control-plane log",
        &log,
        &[&secret, &b.token, &t.s.api_token()],
    );

    // The edge checks again on its own: a cached snapshot that carries a rogue record (as an
    // older control plane would have served it) routes A's host but not B's hijack.
    let cache_path = t.edge.state_dir.join("snapshot.json");
    let mut snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache_path).expect("edge snapshot")).unwrap();
    let template = snap["dns_records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "www.a.test")
        .expect("A's record in the snapshot")
        .clone();
    let mut rogue = template.clone();
    rogue["id"] = json!(rogue_record);
    rogue["zone_id"] = json!(b.zone);
    rogue["zone_name"] = json!("b.test");
    rogue["name"] = json!("hijack.b.test");
    snap["dns_records"].as_array_mut().unwrap().push(rogue);
    let state2 = t.s.tmp.path().join("edge2-state");
    std::fs::create_dir_all(&state2).unwrap();
    std::fs::write(state2.join("snapshot.json"), snap.to_string()).unwrap();
    // With the control plane down, the second edge serves only from that cache.
    t.s.cp.proc.kill9();
    let edge2 = Edge::start(&t.s.cp, &state2, EdgeOpts::default());
    let args = t.run_args(
        &id_a,
        &id_a,
        &origin.url(),
        &edge2.connector_args(),
        &["--ha-connections", "1"],
    );
    let _conn2 = Connector::start(t.cli(), &args);
    let served = edge2.wait_get(
        "A's host through the cached snapshot",
        "www.a.test",
        "/",
        Duration::from_secs(30),
        |r| r.status == 200,
    );
    assert!(from_origin(&served, "A"));
    let r = edge2.get("hijack.b.test", "/");
    assert!(
        r.status == 404 && !from_origin(&r, "A"),
        "the edge routed a cross-account record from its cache: {}\n{}",
        r.summary(),
        edge2.logs()
    );
    assert!(
        edge2.logs().contains(&rogue_record),
        "the edge did not name the refused record: {}",
        edge2.logs()
    );
}

fn get_pools(cp: &ControlPlane, acct: &str, token: &str) -> (u16, serde_json::Value) {
    http(
        "GET",
        &format!("{}/accounts/{acct}/load_balancers/pools", cp.api()),
        token,
        None,
    )
}
