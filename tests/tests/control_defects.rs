//! The control plane's smaller guarantees: tunnel names that cannot mislead, unpredictable
//! secrets, JSON errors for bad bodies, an edge snapshot only its owner can read, and an edge
//! token that need not be on the command line.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ringway_tests::cli::file_mode;
use ringway_tests::edge::{Edge, EdgeOpts};
use ringway_tests::prelude::*;
use ringway_tests::process::{LoggedProc, ringway_bin};
use serde_json::{Value, json};

fn envelope_error(what: &str, status: u16, body: &str) -> Value {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: HTTP {status}, not JSON ({e}): {body:?}"));
    assert_eq!(v["success"], false, "{what}: {v}");
    assert!(
        v["errors"][0]["code"].as_u64().unwrap_or(0) > 0,
        "{what}: {v}"
    );
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert!(
        v["messages"].is_array() && v.get("result").is_some(),
        "{what}: {v}"
    );
    v
}

fn no_raw_controls(what: &str, text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t')
                || ('\u{202A}'..='\u{202E}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)),
        "{what} printed a raw control character: {text:?}"
    );
}

#[test]
fn misleading_tunnel_names_and_predictable_secrets_are_refused() {
    let s = Setup::new(&["names.test"]);
    let url = format!("{}/accounts/{}/cfd_tunnel", s.cp.api(), s.account_id());
    let token = s.api_token();
    for name in [
        "evil\u{202E}gpj.exe",
        "iso\u{2066}x",
        "bell\u{7}",
        "esc\u{1b}[31mred",
        "../../etc",
        "a/b",
        "--force",
        "-x",
        "",
        &"n".repeat(256),
    ] {
        let (status, ans) = http("POST", &url, &token, Some(&json!({"name": name})));
        assert_eq!(status, 400, "{name:?}: {ans}");
        let msg = ans["errors"][0]["message"].as_str().unwrap_or("");
        assert!(msg.contains("tunnel name"), "{name:?}: {ans}");
        no_raw_controls("the API error", msg);
    }
    // What cloudflared users do name tunnels still works.
    for name in ["my tunnel", "café-prod", "web.v2_x"] {
        let (status, ans) = http("POST", &url, &token, Some(&json!({"name": name})));
        assert_eq!(status, 200, "{name:?}: {ans}");
    }
    // The CLI refuses the same names before sending anything, in one line.
    for name in ["../x", "a\u{202E}b", "-- -"] {
        let run = s.cli.run(&["tunnel", "create", "--", name]);
        let line = run.one_line_error();
        assert!(line.contains("tunnel name"), "{name:?}: {line}");
        no_raw_controls("the CLI error", &line);
    }

    // All-zero, one-byte and short-pattern secrets: refused by the API and by the CLI.
    for weak in [
        vec![0u8; 32],
        vec![7u8; 32],
        b"abababababababababababababababab".to_vec(),
    ] {
        let (status, ans) = http(
            "POST",
            &url,
            &token,
            Some(&json!({"name": "weak", "tunnel_secret": B64.encode(&weak)})),
        );
        assert_eq!(status, 400, "{ans}");
        assert!(
            ans["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("predictable"),
            "{ans}"
        );
        let run = s
            .cli
            .run(&["tunnel", "create", "--secret", &B64.encode(&weak), "weak"]);
        assert!(
            run.one_line_error().contains("predictable"),
            "{}",
            run.stderr
        );
    }
    assert!(s.cli.list_json(&["--name", "weak"]).is_empty());

    // A name stored before the rule (written behind the API) is printed escaped.
    let db = rusqlite::Connection::open(s.cp.data_dir.join("ringway.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute(
        "INSERT INTO tunnels (id, account_id, name, secret, secret_sha256, created_at) \
         VALUES (?1, ?2, ?3, x'00', '00', '2026-01-01T00:00:00Z')",
        rusqlite::params![
            uuid::Uuid::new_v4().to_string(),
            s.account_id(),
            "old\u{1b}[2J\u{202E}name"
        ],
    )
    .unwrap();
    drop(db);
    let run = s.cli.run(&["tunnel", "list"]).ok();
    no_raw_controls("tunnel list", &run.stdout);
    assert!(
        run.stdout.contains("old\\u{1b}[2J\\u{202e}name"),
        "{}",
        run.stdout
    );
    for format in ["json", "yaml"] {
        let run = s.cli.run(&["tunnel", "list", "-o", format]).ok();
        no_raw_controls(&format!("tunnel list -o {format}"), &run.stdout);
    }
    // JSON still carries the real name, escaped.
    let listed = s.cli.list_json(&[]);
    assert!(
        listed
            .iter()
            .any(|t| t["name"] == "old\u{1b}[2J\u{202E}name"),
        "{listed:?}"
    );
}

#[test]
fn bad_request_bodies_get_the_v4_envelope() {
    let s = Setup::new(&["bodies.test"]);
    let admin = s.cp.admin_token();
    let a: std::net::SocketAddr = s.cp.addr().parse().unwrap();
    let auth = format!("Bearer {admin}");
    let path = format!("/client/v4/accounts/{}/cfd_tunnel", s.account_id());
    // (what, headers, body, expected status)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [u8], u16);
    let cases: [Case; 5] = [
        (
            "malformed JSON",
            &[("Content-Type", "application/json")],
            b"{\"name\": ",
            400,
        ),
        (
            "not an object",
            &[("Content-Type", "application/json")],
            b"[1, 2]",
            400,
        ),
        (
            "wrong field type",
            &[("Content-Type", "application/json")],
            b"{\"name\": 5}",
            400,
        ),
        (
            "text/plain",
            &[("Content-Type", "text/plain")],
            b"{\"name\": \"x\"}",
            400,
        ),
        ("no Content-Type", &[], b"{\"name\": \"x\"}", 400),
    ];
    for (what, headers, body, want) in cases {
        let mut h: Vec<(&str, &str)> = vec![("Authorization", &auth)];
        h.extend_from_slice(headers);
        let mut c = RawClient::connect(a);
        let r = c
            .request(
                &request_bytes("POST", "x", &path, &h, Some(body), true),
                false,
            )
            .unwrap();
        assert_eq!(r.status, want, "{what}: {}", r.summary());
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        envelope_error(what, r.status, &r.text());
    }
    // Oversized (the default --max-body is 64 KiB).
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(100 * 1024));
    let mut c = RawClient::connect(a);
    let r = c.authorized("POST", &path, &auth, Some(big.as_bytes()), true);
    assert_eq!(r.status, 413, "{}", r.summary());
    envelope_error("oversized", r.status, &r.text());
    // A bad path parameter, a bad query and a method the route lacks: the envelope too.
    for (method, p) in [
        ("DELETE", "/edge/v1/connections/not-a-uuid".to_string()),
        ("GET", format!("{path}?is_deleted=maybe")),
        ("PATCH", "/client/v4/zones".to_string()),
    ] {
        let tok = if p.starts_with("/edge") {
            s.cp.edge_token()
        } else {
            admin.clone()
        };
        let bearer = format!("Bearer {tok}");
        let mut c = RawClient::connect(a);
        let r = c
            .request(
                &request_bytes(method, "x", &p, &[("Authorization", &bearer)], None, true),
                false,
            )
            .unwrap();
        assert!(
            (400..500).contains(&r.status),
            "{method} {p}: {}",
            r.summary()
        );
        envelope_error(&format!("{method} {p}"), r.status, &r.text());
    }
}

#[test]
fn edge_snapshot_is_private_and_the_edge_token_stays_off_the_command_line() {
    let mut t = TunnelSetup::new("snap.test");
    // Edge::start passes --edge-token-file (the control plane's file, newline and all).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", t.edge.proc.proc.pid())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&t.s.cp.edge_token()),
        "the edge token is on the command line"
    );
    let snap = t.edge.state_dir.join("snapshot.json");
    assert_eq!(file_mode(&snap) & 0o777, 0o600);
    assert_eq!(
        file_mode(&t.edge.state_dir) & 0o077,
        0,
        "state dir is open to others"
    );

    // A snapshot an older build left world-readable is tightened at the next start.
    t.edge.proc.proc.kill9();
    let (cp, state) = (&t.s.cp, t.edge.state_dir.clone());
    std::fs::set_permissions(&snap, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let edge = Edge::start(cp, &state, EdgeOpts::default());
    assert_eq!(file_mode(&snap) & 0o777, 0o600);
    drop(edge);

    // The token by environment works; none, two, or an empty file is one clear error line.
    let token_file = cp.data_dir.join("edge-token");
    let empty = t.s.tmp.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(ringway_bin());
        cmd.args(["edge", "run", "--control", &cp.url, "--state-dir"])
            .arg(t.s.tmp.path().join("edge-x"))
            .args([
                "--tunnel-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env_remove("RINGWAY_EDGE_TOKEN");
        if let Some(v) = env {
            cmd.env("RINGWAY_EDGE_TOKEN", v);
        }
        cmd
    };
    let file = token_file.display().to_string();
    let empty_s = empty.display().to_string();
    for (args, env, want) in [
        (vec![], None, "--edge-token-file"),
        (
            vec!["--edge-token-file", file.as_str()],
            Some("x"),
            "more than once",
        ),
        (
            vec!["--edge-token-file", file.as_str(), "--edge-token", "x"],
            None,
            "more than once",
        ),
        (
            vec!["--edge-token-file", empty_s.as_str()],
            None,
            "is empty",
        ),
        (
            vec!["--edge-token-file", "/nonexistent/token"],
            None,
            "/nonexistent/token",
        ),
    ] {
        let out = run(&args, env).output().unwrap();
        assert!(!out.status.success(), "{args:?} {env:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].contains(want), "{args:?}: {err}");
        assert!(
            !err.contains(&cp.edge_token()),
            "{args:?} printed the token"
        );
    }
    let mut by_env = LoggedProc::spawn("edge-env", run(&[], Some(&cp.edge_token())));
    by_env.wait_stdout("`edge ready`", std::time::Duration::from_secs(60), |l| {
        (l.trim() == "edge ready").then_some(())
    });
    // --help recommends the file first.
    let help = Command::new(ringway_bin())
        .args(["edge", "run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let (f, e) = (help.find("--edge-token-file"), help.find("--edge-token <"));
    assert!(f.is_some() && e.is_some() && f < e, "{help}");
}
