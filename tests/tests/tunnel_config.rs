//! The connector's ways in and out: config.yml ingress rules, a token instead of a credentials
//! file, a wrong secret refused by the edge, the metrics server, and `ringway quickstart`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ringway_tests::cli::{assert_no_secrets, shell_words};
use ringway_tests::connector::Connector;
use ringway_tests::origins::HashOrigin;
use ringway_tests::prelude::*;
use ringway_tests::process::{LoggedProc, closed_port_url, ringway_bin};
use ringway_tests::raw_client::http_get;
use serde_json::Value;

const ZONE: &str = "cfg.test";

#[test]
fn ingress_rules_route_by_hostname_and_path() {
    let t = TunnelSetup::new(ZONE);
    let (oa, ob, oc) = (
        HashOrigin::start("A"),
        HashOrigin::start("B"),
        HashOrigin::start("API"),
    );
    let (ha, hb, hc) = (
        format!("a.{ZONE}"),
        format!("b.{ZONE}"),
        format!("c.{ZONE}"),
    );
    // c is routed to the tunnel in DNS but matches no hostname rule: the catch-all answers.
    let id = t.tunnel("ing", &[&ha, &hb, &hc]);
    let creds = t.credentials_path(&id);
    let config = t.s.tmp.path().join("ingress.yml");
    std::fs::write(
        &config,
        format!(
            "tunnel: {id}\ncredentials-file: {creds}\ningress:\n  - path: ^/api/\n    service: {c}\n  - hostname: {ha}\n    service: {a}\n  - hostname: {hb}\n    service: {b}\n  - service: http_status:404\n",
            creds = creds.display(),
            a = oa.url(),
            b = ob.url(),
            c = oc.url(),
        ),
    )
    .unwrap();
    let _conn = t.run_config(&config);
    t.wait_served(&ha);

    let cases: [(&str, &str, u16, Option<&str>); 8] = [
        (&ha, "/", 200, Some("A")),
        (&ha, "/page?q=/api/", 200, Some("A")),
        (&ha, "/api/v1/x", 200, Some("API")),
        (&hb, "/", 200, Some("B")),
        (&hb, "/api/", 200, Some("API")),
        (&hb, "/not/api/", 200, Some("B")),
        (&hc, "/", 404, None),
        (&hc, "/api/x", 200, Some("API")),
    ];
    for (host, path, status, tag) in cases {
        let r = t.edge.get(host, path);
        assert_eq!(r.status, status, "{host}{path}: {}", r.summary());
        assert_eq!(
            r.header("X-Origin-Tag"),
            tag,
            "{host}{path}: {}",
            r.summary()
        );
        if let Some(tag) = tag {
            assert_eq!(r.text(), format!("tag={tag} path={path}"), "{host}{path}");
        }
    }
}

#[test]
fn run_with_a_token() {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("tok");
    let host = format!("tok.{ZONE}");
    t.tunnel("tok", &[&host]);
    let token = t.cli().run(&["tunnel", "token", "tok"]).ok().stdout;
    let token = token.trim().to_string();
    let url = origin.url();
    let mut args = vec![
        "tunnel".to_string(),
        "run".into(),
        "--token".into(),
        token,
        "--url".into(),
        url,
    ];
    args.extend(t.edge.connector_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _conn = Connector::start(t.cli(), &args);
    let r = t.wait_served(&host);
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("X-Origin-Tag"), Some("tok"));
}

/// Whether `ringway tunnel run` has a flag (it may not have every cloudflared flag).
fn run_has_flag(cli: &Cli, flag: &str) -> bool {
    let help = cli.run(&["tunnel", "run", "--help"]);
    help.stdout.contains(flag) || help.stderr.contains(flag)
}

#[test]
fn wrong_secret_is_refused_and_nothing_registers() {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("bad");
    let host = format!("bad.{ZONE}");
    let id = t.tunnel("bad", &[&host]);
    let mut creds = t.cli().credentials(&id);
    let good = creds["TunnelSecret"].as_str().unwrap().to_string();
    let wrong = B64.encode([0x5au8; 32]);
    assert_ne!(good, wrong);
    creds["TunnelSecret"] = Value::String(wrong);
    let bad_path = t.s.tmp.path().join("wrong-secret.json");
    std::fs::write(&bad_path, creds.to_string()).unwrap();

    let bad = bad_path.display().to_string();
    let url = origin.url();
    let mut args: Vec<String> = ["tunnel", "run", "--credentials-file", &bad, "--url", &url]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Without --retries, cloudflared's default backoff may take a minute or more.
    let has_retries = run_has_flag(t.cli(), "--retries");
    if has_retries {
        args.extend(["--retries".to_string(), "1".to_string()]);
    }
    args.extend(t.edge.connector_args());
    args.push(id.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut conn = Connector::spawn(t.cli(), &args);
    let limit = if has_retries { 60 } else { 120 };
    let status = conn.proc.wait_exit(Duration::from_secs(limit));
    let logs = conn.logs();
    assert!(
        !status.success(),
        "a wrong secret must fail: {status}\n{logs}"
    );
    assert_eq!(conn.registered(), 0, "nothing may register:\n{logs}");
    // One line says why, naming the tunnel or its secret.
    assert!(
        logs.lines().any(|l| {
            let l = l.to_lowercase();
            ["secret", "unauthorized", "refused"]
                .iter()
                .any(|w| l.contains(w))
                && (l.contains(&id) || l.contains("secret"))
        }),
        "the log should say why:\n{logs}"
    );
    assert!(
        !logs.contains(&good),
        "the real secret must not be logged:\n{logs}"
    );
    assert_eq!(origin.requests(), 0);
    let r = t.edge.get(&host, "/");
    assert_eq!(r.status, 530, "{}", r.summary());
}

/// The sum of every sample of `name` in Prometheus text (`NAME[{labels}] VALUE [TIMESTAMP]`).
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            rest.split_once('}')?.1
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue; // another metric whose name starts with this one
        };
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

#[test]
fn metrics_ready_and_request_counter() {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("met");
    let host = format!("met.{ZONE}");
    let id = t.tunnel("met", &[&host]);
    let mut conn = t.run_url("met", &id, &origin.url(), &["--metrics", "127.0.0.1:0"], 1);
    let maddr = conn.metrics_addr();
    let mhost = maddr.to_string();
    t.wait_served(&host);

    let ready = http_get(maddr, &mhost, "/ready");
    assert_eq!(ready.status, 200, "{}", ready.summary());
    let j: Value = serde_json::from_slice(&ready.body)
        .unwrap_or_else(|e| panic!("/ready is not JSON ({e}): {}", ready.summary()));
    assert_eq!(j["status"], 200, "{j}");
    assert!(
        j["readyConnections"].as_u64().is_some_and(|n| n >= 1),
        "{j}"
    );
    assert!(
        j["connectorId"].as_str().is_some_and(|s| !s.is_empty()),
        "{j}"
    );

    let scrape = || {
        let r = http_get(maddr, &mhost, "/metrics");
        assert_eq!(r.status, 200, "{}", r.summary());
        let text = r.text();
        let n = metric_sum(&text, "cloudflared_tunnel_total_requests")
            .unwrap_or_else(|| panic!("no cloudflared_tunnel_total_requests in:\n{text}"));
        (n, text)
    };
    let (before, _) = scrape();
    for i in 0..5 {
        let r = t.edge.get(&host, &format!("/m/{i}"));
        assert_eq!(r.status, 200, "{}", r.summary());
    }
    wait_for(
        "the request counter to count 5 more requests",
        Duration::from_secs(30),
        || {
            let (now, _) = scrape();
            (now >= before + 5.0).then_some(())
        },
    );
}

#[test]
fn quickstart_serves_hello_world() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::new(&tmp.path().join("home"));
    let dir = tmp.path().join("qs");
    let cmd = cli.command(&["quickstart", "--dir", dir.to_str().unwrap()]);
    let mut qs = LoggedProc::spawn("quickstart", cmd);
    // Failure limit only: it brings up a control plane, an edge and a connector.
    qs.wait_stdout("`serving`", Duration::from_secs(90), |l| {
        (l.trim() == "serving").then_some(())
    });
    // The curl through the tunnel is the one that sets a Host header (another may show the
    // control-plane API); failing that, the last one printed.
    let curls: Vec<String> = qs
        .log
        .stdout_lines()
        .into_iter()
        .filter(|l| l.starts_with("  curl "))
        .collect();
    let curl = curls
        .iter()
        .find(|l| {
            shell_words(l)
                .iter()
                .any(|w| w.to_ascii_lowercase().starts_with("host:"))
        })
        .or(curls.last())
        .cloned()
        .unwrap_or_else(|| qs.fail("printed no `  curl ` line"));
    let words = shell_words(&curl);
    let mut host = None;
    let mut url = None;
    let mut i = 1;
    while i < words.len() {
        match words[i].as_str() {
            "-H" | "--header" => {
                let h = words.get(i + 1).expect("-H value");
                if let Some((k, v)) = h.split_once(':')
                    && k.trim().eq_ignore_ascii_case("host")
                {
                    host = Some(v.trim().to_string());
                }
                i += 2;
            }
            w if w.starts_with("http://") => {
                url = Some(w.to_string());
                i += 1;
            }
            _ => i += 1,
        }
    }
    let url = url.unwrap_or_else(|| panic!("no URL in {curl:?}"));
    let rest = url.trim_start_matches("http://");
    let (authority, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, "/"),
    };
    let addr: std::net::SocketAddr = authority
        .parse()
        .unwrap_or_else(|e| panic!("{authority:?} in {curl:?}: {e}"));
    let host = host.unwrap_or_else(|| authority.to_string());
    let r = http_get(addr, &host, path);
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), qs.log.dump());
    assert!(r.text().contains("ringway hello world"), "{}", r.summary());
}

/// The edge's bad inputs at first start: an unreachable control plane, or a wrong edge token,
/// with no cached snapshot: one error line naming the cause, nonzero exit, token not echoed.
#[test]
fn edge_without_a_snapshot_source_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |control: &str, token: &str, state: &str| {
        std::process::Command::new(ringway_bin())
            .args([
                "edge",
                "run",
                "--control",
                control,
                "--edge-token",
                token,
                "--state-dir",
                dir.path().join(state).to_str().unwrap(),
                "--tunnel-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "error")
            .output()
            .expect("run ringway edge run")
    };
    let out = run(&closed_port_url(), "t0kenvalue1", "a");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("cannot get a config snapshot"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_no_secrets("edge error", &err, &["t0kenvalue1"]);

    let cp = ControlPlane::start(&dir.path().join("cp"), &[ZONE]);
    let out = run(&format!("http://{}", cp.addr()), "wrongtokenvalue2", "b");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("401") || err.contains("token"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_no_secrets("edge error", &err, &["wrongtokenvalue2"]);
}

/// SIGHUP re-reads config.yml: new rules apply to new requests with no reconnect; an invalid
/// file is rejected with its error and the rules in force stay.
#[test]
fn sighup_reloads_ingress_and_rejects_a_broken_config() {
    let t = TunnelSetup::new(ZONE);
    let (oa, ob) = (HashOrigin::start("A"), HashOrigin::start("B"));
    let host = format!("r.{ZONE}");
    let id = t.tunnel("reload", &[&host]);
    let creds = t.credentials_path(&id);
    let config = t.s.tmp.path().join("reload.yml");
    let write = |origin: &str| {
        std::fs::write(
            &config,
            format!(
                "tunnel: {id}\ncredentials-file: {}\ningress:\n  - hostname: {host}\n    service: {origin}\n  - service: http_status:404\n",
                creds.display()
            ),
        )
        .unwrap();
    };
    write(&oa.url());
    let conn = t.run_config(&config);
    t.wait_served(&host);
    assert_eq!(t.edge.get(&host, "/x").header("X-Origin-Tag"), Some("A"));

    write(&ob.url());
    conn.proc.proc.signal("HUP");
    wait_for(
        "the reloaded rule to route to B",
        Duration::from_secs(30),
        || (t.edge.get(&host, "/x").header("X-Origin-Tag") == Some("B")).then_some(()),
    );

    std::fs::write(&config, "ingress: [not, a, rule").unwrap();
    conn.proc.proc.signal("HUP");
    wait_for(
        "the rejection to be logged",
        Duration::from_secs(30),
        || {
            conn.proc
                .log
                .stderr()
                .contains("Configuration reload rejected")
                .then_some(())
        },
    );
    assert_eq!(
        t.edge.get(&host, "/y").header("X-Origin-Tag"),
        Some("B"),
        "the rules in force stay after a bad reload"
    );
    // A dropped connection would be logged before it reconnects.
    let log = conn.proc.log.stderr();
    assert!(
        !log.contains("Connection terminated") && !log.contains("Serve tunnel error"),
        "no connection was dropped by the reloads: {log}"
    );
}
