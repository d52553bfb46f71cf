//! Bad input: each gets exactly one line on stderr and a nonzero exit, and no line (nor the
//! control plane's log) ever carries a secret: the admin token, the edge token, a cert.pem API
//! token, a tunnel secret or a tunnel token.

use std::fs;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ringway_tests::cli::{assert_no_secrets, file_mode, write_file};
use ringway_tests::control_plane::{http_raw, post_form, register_connection};
use ringway_tests::prelude::*;
use ringway_tests::process::closed_port_url;
use serde_json::json;

/// Runs `args`, expects one error line that contains every `needles` and none of `secrets`,
/// and no secret on stdout either. Returns the line.
fn fails(cli: &Cli, args: &[&str], needles: &[&str], secrets: &[&str]) -> String {
    let run = cli.run(args);
    let line = run.one_line_error();
    for n in needles {
        assert!(line.contains(n), "{args:?}: {n:?} not in {line:?}");
    }
    assert_no_secrets(&format!("{args:?} stderr"), &run.stderr, secrets);
    assert_no_secrets(&format!("{args:?} stdout"), &run.stdout, secrets);
    line
}

#[test]
fn bad_tunnel_verbs_get_one_line_errors() {
    let s = Setup::new(&["err.test"]);
    let (cp, cli) = (&s.cp, &s.cli);
    let secret = B64.encode((100u8..140).collect::<Vec<u8>>());
    let id = cli.create("t1", &["--secret", &secret]);
    let token_out = cli.run(&["tunnel", "token", "t1"]).ok().stdout;
    let tunnel_token = token_out.trim().to_string();
    let (admin, edge, api) = (cp.admin_token(), cp.edge_token(), s.api_token());
    let secrets = [
        secret.as_str(),
        admin.as_str(),
        edge.as_str(),
        api.as_str(),
        tunnel_token.as_str(),
    ];
    let sec = &secrets[..];

    // Duplicate name, even with a secret given: the secret is not echoed.
    fails(
        cli,
        &["tunnel", "create", "--secret", &secret, "t1"],
        &["t1", "already exists"],
        sec,
    );
    fails(
        cli,
        &["tunnel", "create", "t1"],
        &["t1", "already exists"],
        sec,
    );

    // Unknown tunnel, by name and by UUID, for every verb that resolves one.
    let ghost = uuid::Uuid::new_v4().to_string();
    for args in [
        vec!["tunnel", "info", "nope"],
        vec!["tunnel", "delete", "nope"],
        vec!["tunnel", "token", "nope"],
        vec!["tunnel", "cleanup", "nope"],
        vec!["tunnel", "route", "dns", "nope", "x.err.test"],
        vec!["tunnel", "route", "lb", "nope", "lb.err.test", "pool1"],
    ] {
        fails(
            cli,
            &args,
            &["nope is neither the ID nor the name of any of your tunnels"],
            sec,
        );
    }
    for args in [
        vec!["tunnel", "info", ghost.as_str()],
        vec!["tunnel", "delete", ghost.as_str()],
        vec!["tunnel", "token", ghost.as_str()],
        vec!["tunnel", "route", "dns", ghost.as_str(), "x.err.test"],
    ] {
        fails(cli, &args, &[ghost.as_str()], sec);
    }

    // Hostnames: outside the zone, invalid, bad LB pool.
    fails(
        cli,
        &["tunnel", "route", "dns", "t1", "www.other.test"],
        &["www.other.test", "err.test"],
        sec,
    );
    fails(
        cli,
        &["tunnel", "route", "dns", "t1", "bad host!"],
        &["bad host! is not a valid hostname"],
        sec,
    );
    fails(
        cli,
        &["tunnel", "route", "lb", "t1", "lb.err.test", "bad pool!"],
        &["bad pool!"],
        sec,
    );
    fails(
        cli,
        &["tunnel", "route", "lb", "t1", "bad lb!", "pool1"],
        &["bad lb!"],
        sec,
    );
    let records = http(
        "GET",
        &format!("{}/zones/{}/dns_records", cp.api(), s.zone_id()),
        &api,
        None,
    )
    .1;
    assert_eq!(
        records["result"],
        json!([]),
        "no failed route wrote a record"
    );

    // Secrets: too short, not base64; tunnel names that are UUIDs.
    let short = B64.encode([9u8; 16]);
    let line = fails(
        cli,
        &["tunnel", "create", "--secret", &short, "short"],
        &["32"],
        sec,
    );
    assert!(!line.contains(&short), "{line}");
    fails(
        cli,
        &["tunnel", "create", "--secret", "not base64!!", "nb"],
        &["base64"],
        sec,
    );
    fails(
        cli,
        &["tunnel", "create", &uuid::Uuid::new_v4().to_string()],
        &["you cannot use UUIDs as tunnel names"],
        sec,
    );
    fails(
        cli,
        &["tunnel", "list", "--id", "not-a-uuid"],
        &["not-a-uuid is not a valid tunnel ID"],
        sec,
    );
    let names: Vec<String> = cli
        .list_json(&[])
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["t1"], "no failed create left a tunnel behind");

    // Credentials that cannot be written: the tunnel is taken back.
    let missing_dir = s.tmp.path().join("no-such-dir").join("c.json");
    fails(
        cli,
        &[
            "tunnel",
            "create",
            "--credentials-file",
            missing_dir.to_str().unwrap(),
            "orphan",
        ],
        &["orphan"],
        sec,
    );
    assert!(cli.list_json(&["--name", "orphan"]).is_empty());

    // Control plane unreachable via --api-url: the line names the URL.
    let closed = format!("{}/client/v4", closed_port_url());
    fails(
        cli,
        &["tunnel", "--api-url", &closed, "list"],
        &[closed.as_str()],
        sec,
    );
    fails(
        cli,
        &["tunnel", "--api-url", &closed, "create", "x"],
        &[closed.as_str()],
        sec,
    );
    // Nothing was created on the real control plane by that attempt.
    assert_eq!(cli.list_json(&[]).len(), 1);
    let bad_url = "not a url";
    fails(
        cli,
        &["tunnel", "--api-url", bad_url, "list"],
        &[bad_url],
        sec,
    );

    // Login mistakes.
    let other = s.other_home("login-home");
    let login_fails = |home: &Cli, control: &str, token_flag: &str, zone: &str, says: &[&str]| {
        let args = [
            "tunnel",
            "login",
            "--control",
            control,
            token_flag,
            "--zone",
            zone,
        ];
        fails(home, &args, says, sec);
    };
    login_fails(&other, &cp.url, "--api-token=wrong-token", "err.test", &[]);
    assert!(
        !other.cert_path().exists(),
        "a failed login writes no cert.pem"
    );
    // The cert token is not the admin token: it cannot mint certs.
    login_fails(
        &other,
        &cp.url,
        &format!("--api-token={api}"),
        "err.test",
        &[],
    );
    login_fails(
        &other,
        &cp.url,
        &format!("--api-token={admin}"),
        "unknown.test",
        &["unknown.test"],
    );
    let closed_cp = closed_port_url();
    login_fails(
        &other,
        &closed_cp,
        &format!("--api-token={admin}"),
        "err.test",
        &[closed_cp.as_str()],
    );
    assert!(!other.cert_path().exists());
    // An existing cert.pem is never overwritten.
    let before = fs::read_to_string(cli.cert_path()).unwrap();
    login_fails(
        cli,
        &cp.url,
        &format!("--api-token={admin}"),
        "err.test",
        &["existing certificate"],
    );
    assert_eq!(fs::read_to_string(cli.cert_path()).unwrap(), before);
    // And a cert.pem that exists still works after all that.
    assert_eq!(cli.list_json(&[]).len(), 1);
    assert_eq!(cli.list_json(&[])[0]["id"], id.as_str());
}

#[test]
fn control_plane_down_names_its_url() {
    let mut s = Setup::new(&["down.test"]);
    s.cli.create("t1", &[]);
    let api = s.api_token();
    s.cp.proc.kill9();
    for args in [
        vec!["tunnel", "list"],
        vec!["tunnel", "create", "t2"],
        vec!["tunnel", "info", "t1"],
        vec!["tunnel", "route", "dns", "t1", "www.down.test"],
    ] {
        let line = fails(&s.cli, &args, &[s.cp.url.as_str()], &[&api]);
        assert!(line.contains("cannot reach"), "{line}");
    }
}

#[test]
fn bad_cert_pem_gets_one_line() {
    let s = Setup::new(&["cert.test"]);
    let api = s.api_token();
    let sec = [api.as_str()];

    // No cert.pem anywhere (an empty HOME).
    let empty = s.other_home("empty");
    fails(&empty, &["tunnel", "list"], &["cert.pem"], &sec);
    fails(&empty, &["tunnel", "create", "x"], &["cert.pem"], &sec);
    // --origincert to a file that does not exist names it.
    let nowhere = s.tmp.path().join("nowhere.pem");
    fails(
        &empty,
        &["tunnel", "--origincert", nowhere.to_str().unwrap(), "list"],
        &[nowhere.to_str().unwrap()],
        &sec,
    );

    let bad = s.other_home("bad");
    fs::create_dir_all(bad.cloudflared_dir()).unwrap();
    let path = bad.cert_path();
    let p = path.to_str().unwrap();
    let good_pem = fs::read_to_string(s.cli.cert_path()).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "this is not a certificate\n".to_string()),
        ("empty", String::new()),
        (
            "wrong PEM type",
            "-----BEGIN CERTIFICATE REQUEST-----\nYWJj\n-----END CERTIFICATE REQUEST-----\n"
                .to_string(),
        ),
        (
            "token block that is not JSON",
            "-----BEGIN ARGO TUNNEL TOKEN-----\nYWJj\n-----END ARGO TUNNEL TOKEN-----\n"
                .to_string(),
        ),
        (
            "token without apiToken",
            format!(
                "-----BEGIN ARGO TUNNEL TOKEN-----\n{}\n-----END ARGO TUNNEL TOKEN-----\n",
                B64.encode(r#"{"zoneID":"z","accountID":"a"}"#)
            ),
        ),
        ("two token blocks", format!("{good_pem}{good_pem}")),
    ];
    for (what, text) in &cases {
        fs::write(&path, text).unwrap();
        let run = bad.run(&["tunnel", "list"]);
        let line = run.one_line_error();
        assert!(line.contains(p), "{what}: path not named in {line:?}");
        assert_no_secrets(what, &run.stderr, &sec);
    }
    // The wrong PEM type is named.
    fs::write(&path, &cases[2].1).unwrap();
    fails(&bad, &["tunnel", "list"], &["CERTIFICATE REQUEST"], &sec);
}

#[test]
fn bad_config_yml_names_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::new(&tmp.path().join("home"));
    let write = |name: &str, text: &str| write_file(tmp.path(), name, text);
    let unknown_key = write(
        "unknown.yml",
        "tunnel: abc\ningress:\n  - hostname: a.example.com\n    servce: http://localhost:8000\n  - service: http_status:404\n",
    );
    let line = fails(
        &cli,
        &["tunnel", "--config", &unknown_key, "ingress", "validate"],
        &[&format!("{unknown_key}:4:5"), "servce"],
        &[],
    );
    assert!(line.contains("servce"), "{line}");
    let bad_yaml = write(
        "syntax.yml",
        "ingress:\n  - hostname: a.example.com\n     service: http://x\n  - service: http_status:404\n",
    );
    fails(
        &cli,
        &["tunnel", "--config", &bad_yaml, "ingress", "validate"],
        &[&format!("{bad_yaml}:3:")],
        &[],
    );
    let bad_value = write(
        "value.yml",
        "ingress:\n  - service: http_status:404\n    originRequest:\n      connectTimeout: banana\n",
    );
    fails(
        &cli,
        &["tunnel", "--config", &bad_value, "ingress", "validate"],
        &[&format!("{bad_value}:4:"), "banana"],
        &[],
    );
    // A config file that does not exist: named once, its cause said once.
    let missing = tmp.path().join("missing.yml");
    let missing = missing.to_str().unwrap();
    let line = fails(
        &cli,
        &["tunnel", "--config", missing, "ingress", "validate"],
        &[missing],
        &[],
    );
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "the cause is repeated: {line:?}"
    );
    // No config anywhere.
    fails(
        &cli,
        &["tunnel", "ingress", "validate"],
        &["No configuration file was found"],
        &[],
    );
}

#[test]
fn secrets_never_reach_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_logging(
        &tmp.path().join("data"),
        &["log.test"],
        "127.0.0.1:0",
        "trace",
    );
    let cli = Cli::new(&tmp.path().join("home"));
    let admin = cp.admin_token();
    let edge = cp.edge_token();

    // A failed then a successful login of each kind.
    cli.run(&[
        "tunnel",
        "login",
        "--control",
        &cp.url,
        "--api-token=definitely-wrong-admin-token",
        "--zone",
        "log.test",
    ]);
    cli.login(&cp, "log.test").ok();
    let session = "0123456789abcdef0123456789abcdef";
    let (status, _) = post_form(
        &format!("{}/login", cp.url),
        &[("session", session), ("token", admin.as_str())],
    );
    assert_eq!(status, 200);
    let (status, _) = post_form(
        &format!("{}/login", cp.url),
        &[
            ("session", session),
            ("token", admin.as_str()),
            ("zone", "log.test"),
        ],
    );
    assert_eq!(status, 200);
    let (_, polled) = http_raw(
        "GET",
        &format!("{}/login/poll?session={session}", cp.url),
        None,
        None,
    );
    let polled: serde_json::Value = serde_json::from_str(&polled).unwrap();
    let browser_token = polled["result"]["apiToken"].as_str().unwrap().to_string();
    let cert = cli.cert();
    let api = cert["apiToken"].as_str().unwrap().to_string();

    // Tunnels with given and generated secrets, tokens, routes, connections, a delete.
    let given = B64.encode((50u8..90).collect::<Vec<u8>>());
    let id1 = cli.create("t1", &["--secret", &given]);
    let out = cli
        .run(&["tunnel", "create", "-o", "json", "t2"])
        .ok()
        .stdout;
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let create_token = created["token"].as_str().unwrap().to_string();
    let id2 = created["id"].as_str().unwrap().to_string();
    let secret2 = cli.credentials(&id2)["TunnelSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let token1 = cli
        .run(&["tunnel", "token", "t1"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let short = B64.encode([3u8; 16]);
    cli.run(&["tunnel", "create", "--secret", &short, "short"]);
    cli.run(&["tunnel", "create", "--secret", &given, "t1"]);
    cli.run(&["tunnel", "route", "dns", "t1", "www.log.test"])
        .ok();
    cli.run(&["tunnel", "route", "lb", "t2", "lb.log.test", "p"])
        .ok();
    let conn = register_connection(
        &cp,
        &id1,
        &uuid::Uuid::new_v4().to_string(),
        0,
        "LAB",
        "e1",
        60,
    );
    http(
        "POST",
        &format!("{}/edge/v1/leases", cp.url),
        &edge,
        Some(&json!({"edge_id": "e1", "ids": [conn], "lease_secs": 60})),
    );
    http("GET", &format!("{}/edge/v1/snapshot", cp.url), &edge, None);
    http("GET", &format!("{}/edge/v1/snapshot", cp.url), &api, None);
    http(
        "GET",
        &format!(
            "{}/accounts/{}/cfd_tunnel",
            cp.api(),
            cert["accountID"].as_str().unwrap()
        ),
        "bogus-bearer-token-value",
        None,
    );
    cli.run(&["tunnel", "delete", "-f", "t1"]).ok();

    let log = cp.log_text();
    assert!(
        log.contains("tunnel created"),
        "the log is being written: {log}"
    );
    for (what, secret) in [
        ("admin token", admin.as_str()),
        ("edge token", edge.as_str()),
        ("cert apiToken", api.as_str()),
        ("browser-login apiToken", browser_token.as_str()),
        ("given tunnel secret", given.as_str()),
        ("generated tunnel secret", secret2.as_str()),
        ("short secret", short.as_str()),
        ("tunnel token", token1.as_str()),
        ("create token", create_token.as_str()),
        ("wrong admin token", "definitely-wrong-admin-token"),
        ("bogus bearer", "bogus-bearer-token-value"),
    ] {
        assert!(
            !log.contains(secret),
            "the control-plane log contains the {what}"
        );
    }
    // The database directory's token files are private.
    assert_eq!(file_mode(&cp.data_dir.join("admin-token")), 0o600);
    assert_eq!(file_mode(&cp.data_dir.join("edge-token")), 0o600);
}
