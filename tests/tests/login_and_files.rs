//! The browser login, cloudflared's search directories for cert.pem and config.yml, and the
//! local `tunnel ingress validate|rule` commands.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use ringway_tests::cli::{created_id, file_mode, write_file};
use ringway_tests::control_plane::{http_raw, post_form};
use ringway_tests::prelude::*;
use ringway_tests::process::{Proc, line_reader};

/// Starts `tunnel login --no-browser` and returns the process, its stderr lines and the
/// session id from the URL it printed.
fn start_browser_login(
    cli: &Cli,
    cp: &ControlPlane,
) -> (Proc, std::sync::mpsc::Receiver<String>, String) {
    let mut child = cli
        .command(&["tunnel", "login", "--control", &cp.url, "--no-browser"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn login");
    let lines = line_reader(child.stderr.take().expect("stderr"));
    let proc = Proc { child };
    let prefix = format!("{}/login?session=", cp.url);
    let url = wait_for("the login URL on stderr", Duration::from_secs(60), || {
        lines
            .recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|l| l.trim().starts_with(&prefix))
    });
    let session = url.trim()[prefix.len()..].to_string();
    assert!(!session.is_empty(), "{url}");
    (proc, lines, session)
}

#[test]
fn browser_login_writes_cert_pem() {
    let s = Setup::new(&["web.test", "other.test"]);
    let cp = &s.cp;
    let cli = s.other_home("browser");
    let (mut proc, _lines, session) = start_browser_login(&cli, cp);
    let login = format!("{}/login", cp.url);

    // The login page offers a form for this session.
    let (status, page) = http_raw("GET", &format!("{login}?session={session}"), None, None);
    assert_eq!(status, 200);
    assert!(page.contains(&session), "{page}");

    // A wrong token is refused with 401 and the CLI keeps waiting.
    let (status, page) = post_form(&login, &[("session", &session), ("token", "wrong")]);
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("not the admin token"), "{page}");
    let (status, page) = post_form(
        &login,
        &[
            ("session", &session),
            ("token", "wrong"),
            ("zone", "web.test"),
        ],
    );
    assert_eq!(
        status, 401,
        "a wrong token cannot pick a zone either: {page}"
    );
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "login gave up early"
    );
    assert!(!cli.cert_path().exists());

    // The admin token: a page listing the zones, then picking one finishes the CLI.
    let admin = cp.admin_token();
    let (status, page) = post_form(&login, &[("session", &session), ("token", &admin)]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("value=\"web.test\""), "{page}");
    assert!(page.contains("value=\"other.test\""), "{page}");
    let (status, page) = post_form(
        &login,
        &[
            ("session", &session),
            ("token", &admin),
            ("zone", "web.test"),
        ],
    );
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("web.test"), "{page}");
    let exit = proc.wait_exit(Duration::from_secs(60));
    assert!(exit.success(), "login exited with {exit}");

    assert_eq!(file_mode(&cli.cert_path()), 0o600);
    let cert = cli.cert();
    assert_eq!(cert["zoneID"].as_str(), Some(s.zone_id().as_str()));
    assert_eq!(cert["accountID"].as_str(), Some(s.account_id().as_str()));
    assert_eq!(cert["ringwayControlURL"], cp.url.as_str());
    assert_ne!(
        cert["apiToken"],
        s.api_token().as_str(),
        "each login mints its own token"
    );
    // The cert works, and the session cannot be collected twice.
    let id = cli.create("from-browser", &[]);
    assert_eq!(s.cli.list_json(&[])[0]["id"], id.as_str());
    let (status, _) = http_raw(
        "GET",
        &format!("{}/login/poll?session={session}", cp.url),
        None,
        None,
    );
    assert_eq!(status, 202, "a collected session is gone");
}

#[test]
fn cert_pem_is_found_where_cloudflared_looks() {
    let s = Setup::new(&["dirs.test"]);
    let pem = fs::read_to_string(s.cli.cert_path()).unwrap();
    let id = s.cli.create("t1", &[]);

    // ~/.cloudflare-warp/cert.pem, with nothing in ~/.cloudflared.
    let warp = s.other_home("warp");
    let warp_dir = warp.home.join(".cloudflare-warp");
    fs::create_dir_all(&warp_dir).unwrap();
    fs::write(warp_dir.join("cert.pem"), &pem).unwrap();
    let listed = warp.list_json(&[]);
    assert_eq!(listed[0]["id"], id.as_str());
    // New credentials go next to the cert that was found.
    let id2 = warp.create("t2", &[]);
    assert!(warp_dir.join(format!("{id2}.json")).exists());
    assert!(!warp.cloudflared_dir().exists());
    // ... and delete finds them there.
    warp.run(&["tunnel", "delete", "t2"]).ok();
    assert!(!warp_dir.join(format!("{id2}.json")).exists());

    // ~/cloudflare-warp (no dot) as well.
    let plain = s.other_home("plain");
    fs::create_dir_all(plain.home.join("cloudflare-warp")).unwrap();
    fs::write(plain.home.join("cloudflare-warp/cert.pem"), &pem).unwrap();
    assert_eq!(plain.list_json(&[]).len(), 1);

    // --origincert PATH and TUNNEL_ORIGIN_CERT, from a home with no cert at all.
    let elsewhere = s.tmp.path().join("somewhere").join("my-cert.pem");
    fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    fs::write(&elsewhere, &pem).unwrap();
    let bare = s.other_home("bare");
    let p = elsewhere.to_str().unwrap();
    let out = bare
        .run(&["tunnel", "--origincert", p, "list", "-o", "json"])
        .ok();
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    let out = bare
        .run(&["tunnel", "list", "--origincert", p, "-o", "json"])
        .ok();
    assert!(
        out.stdout.contains(&id),
        "the flag works after the verb too: {}",
        out.stdout
    );
    let out = bare
        .run_env(
            &["tunnel", "list", "-o", "json"],
            &[("TUNNEL_ORIGIN_CERT", p)],
        )
        .ok();
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    let id3 = bare
        .run_env(&["tunnel", "create", "t3"], &[("TUNNEL_ORIGIN_CERT", p)])
        .ok();
    let id3 = created_id(&id3.stdout, "t3");
    let cred3 = elsewhere.with_file_name(format!("{id3}.json"));
    assert!(cred3.exists());
    // delete looks next to the --origincert first, as cloudflared does.
    bare.run_env(&["tunnel", "delete", "t3"], &[("TUNNEL_ORIGIN_CERT", p)])
        .ok();
    assert!(
        !cred3.exists(),
        "delete removes credentials next to the origin cert"
    );

    // The first directory wins: a broken ~/.cloudflared/cert.pem shadows a good one later.
    let shadow = s.other_home("shadow");
    fs::create_dir_all(shadow.cloudflared_dir()).unwrap();
    fs::write(shadow.cert_path(), "garbage").unwrap();
    fs::create_dir_all(shadow.home.join(".cloudflare-warp")).unwrap();
    fs::write(shadow.home.join(".cloudflare-warp/cert.pem"), &pem).unwrap();
    let line = shadow.run(&["tunnel", "list"]).one_line_error();
    assert!(
        line.contains(shadow.cert_path().to_str().unwrap()),
        "{line}"
    );
}

const THREE_RULES: &str = "\
tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef
ingress:
  - hostname: x.example.com
    path: ^/api
    service: http://localhost:8000
  - hostname: \"*.example.com\"
    service: https://localhost:8443
  - service: http_status:404
";

#[test]
fn ingress_validate_and_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::new(&tmp.path().join("home"));
    let cfg = tmp.path().join("config.yml");
    fs::write(&cfg, THREE_RULES).unwrap();
    let c = cfg.to_str().unwrap();
    let rule = |url: &str| {
        cli.run(&["tunnel", "--config", c, "ingress", "rule", url])
            .ok()
    };

    let out = cli
        .run(&["tunnel", "--config", c, "ingress", "validate"])
        .ok();
    assert_eq!(out.stdout, format!("Validating rules from {c}\nOK\n"));

    let out = rule("https://x.example.com/api");
    assert_eq!(
        out.stdout,
        format!(
            "Using rules from {c}\nMatched rule #0\n\thostname: x.example.com\n\tpath: ^/api\n\tservice: http://localhost:8000\n"
        )
    );
    // The path regex is unanchored at the end; a port in the URL is ignored.
    let out = rule("http://x.example.com:8080/api/v1?q=1");
    assert!(out.stdout.contains("Matched rule #0\n"), "{}", out.stdout);
    // Same host, other path: the wildcard catches it (also deeper subdomains).
    for url in ["https://x.example.com/web", "https://a.b.example.com/"] {
        let out = rule(url);
        assert!(
            out.stdout.ends_with(
                "Matched rule #1\n\thostname: *.example.com\n\tservice: https://localhost:8443\n"
            ),
            "{url}: {}",
            out.stdout
        );
    }
    // The apex is not matched by *.example.com: the catch-all.
    let out = rule("https://example.com/");
    assert!(
        out.stdout
            .ends_with("Matched rule #2\n\tservice: http_status:404\n"),
        "{}",
        out.stdout
    );
    let run = cli.run(&["tunnel", "--config", c, "ingress", "rule", "example.com"]);
    assert!(
        run.one_line_error()
            .contains("example.com doesn't have a hostname, consider adding a scheme"),
        "{}",
        run.stderr
    );

    // Found in ~/.cloudflared without --config.
    fs::create_dir_all(cli.cloudflared_dir()).unwrap();
    let home_cfg = cli.cloudflared_dir().join("config.yml");
    fs::write(&home_cfg, THREE_RULES).unwrap();
    let out = cli.run(&["tunnel", "ingress", "validate"]).ok();
    assert_eq!(
        out.stdout,
        format!("Validating rules from {}\nOK\n", home_cfg.display())
    );
    let out = cli
        .run(&["tunnel", "ingress", "rule", "https://q.example.com/"])
        .ok();
    assert!(
        out.stdout.starts_with(&format!(
            "Using rules from {}\nMatched rule #1\n",
            home_cfg.display()
        )),
        "{}",
        out.stdout
    );
    // config.yaml is found too when there is no config.yml.
    fs::remove_file(&home_cfg).unwrap();
    let yaml = cli.cloudflared_dir().join("config.yaml");
    fs::write(&yaml, THREE_RULES).unwrap();
    let out = cli.run(&["tunnel", "ingress", "validate"]).ok();
    assert!(
        out.stdout
            .starts_with(&format!("Validating rules from {}\n", yaml.display()))
    );
}

#[test]
fn invalid_ingress_names_every_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::new(&tmp.path().join("home"));
    let write = |name: &str, text: &str| write_file(tmp.path(), name, text);

    // A catch-all that is not last, and a last rule that is not a catch-all.
    let c = write(
        "order.yml",
        "ingress:\n  - service: http://localhost:1\n  - hostname: b.example.com\n    service: http_status:404\n",
    );
    let run = cli.run(&["tunnel", "--config", &c, "ingress", "validate"]);
    assert_ne!(run.code, 0);
    assert_eq!(run.stdout, format!("Validating rules from {c}\n"), "no OK");
    assert!(!run.stdout.contains("OK"));
    assert!(run.stderr.contains("Validation failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("Rule #1 is matching the hostname"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "Rule #2: The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)"
        ),
        "{}",
        run.stderr
    );

    // A port in a hostname, a bad wildcard and a bad regex, each with its rule number.
    let c = write(
        "hosts.yml",
        "ingress:\n  - hostname: a.example.com:8080\n    service: http://localhost:1\n  - hostname: a.*.example.com\n    service: http://localhost:2\n  - hostname: c.example.com\n    path: \"(\"\n    service: http://localhost:3\n  - service: http_status:404\n",
    );
    let run = cli.run(&["tunnel", "--config", &c, "ingress", "validate"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("Rule #1: Hostname cannot contain a port"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("Rule #2: Hostname patterns can have at most one wildcard"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Rule #3 has an invalid regex"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Rule #4"), "{}", run.stderr);

    // A service with a path, and one with no scheme.
    let c = write(
        "services.yml",
        "ingress:\n  - hostname: a.example.com\n    service: http://localhost:8000/app\n  - hostname: b.example.com\n    service: localhost:8080\n  - service: http_status:404\n",
    );
    let run = cli.run(&["tunnel", "--config", &c, "ingress", "validate"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("Rule #1"), "{}", run.stderr);
    assert!(
        run.stderr.contains("http://localhost:8000/app"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Rule #2"), "{}", run.stderr);
    assert!(run.stderr.contains("localhost:8080"), "{}", run.stderr);

    // No rules at all.
    let c = write("empty.yml", "tunnel: x\n");
    let run = cli.run(&["tunnel", "--config", &c, "ingress", "validate"]);
    assert!(
        run.one_line_error()
            .contains("The config file doesn't contain any ingress rules"),
        "{}",
        run.stderr
    );
    // `rule` on an invalid config fails too, before matching anything.
    let c = write(
        "order2.yml",
        "ingress:\n  - service: http://localhost:1\n  - hostname: b.example.com\n    service: http_status:404\n",
    );
    let run = cli.run(&[
        "tunnel",
        "--config",
        &c,
        "ingress",
        "rule",
        "https://b.example.com/",
    ]);
    assert_ne!(run.code, 0);
    assert!(!run.stdout.contains("Matched rule"), "{}", run.stdout);
    assert!(run.stderr.contains("Rule #1"), "{}", run.stderr);
}
