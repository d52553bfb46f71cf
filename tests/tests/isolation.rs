//! Isolation: a cert.pem token acts only in its own account and zone; other accounts' objects
//! are invisible and untouchable, by CLI and by direct API calls.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ringway_tests::*;
use serde_json::json;
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
    let (status, ans) = http(
        "POST",
        &format!("{}/accounts", cp.api()),
        &admin,
        Some(&json!({"name": "b"})),
    );
    assert_eq!(status, 200, "{ans}");
    let acct_b = ans["result"]["id"]
        .as_str()
        .expect("account id")
        .to_string();
    assert_ne!(acct_b, acct_a);
    let (status, ans) = http(
        "POST",
        &format!("{}/zones", cp.api()),
        &admin,
        Some(&json!({"name": "b.test", "account": {"id": acct_b}})),
    );
    assert_eq!(status, 200, "{ans}");
    assert_eq!(ans["result"]["account"]["id"], acct_b.as_str());

    let cli_b = s.other_home("home-b");
    cli_b.login(cp, "b.test").ok();
    let cert_b = cli_b.cert();
    assert_eq!(cert_b["accountID"], acct_b.as_str());
    let token_b = cert_b["apiToken"].as_str().unwrap().to_string();
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
