//! cloudflared's documented command lines, verbatim, against a real edge: each runs until it
//! serves a request. Where the edge is and whom to trust come from `TUNNEL_EDGE` and
//! `TUNNEL_CACERT`, so the command lines themselves stay exactly as users write them.

use std::time::Duration;

use ringway_tests::case::OriginCase;
use ringway_tests::connector::Connector;
use ringway_tests::origins::HashOrigin;
use ringway_tests::prelude::*;
use ringway_tests::process::{LoggedProc, closed_port_url};

const ZONE: &str = "invoke.test";

/// `tunnel token ID` for the case's tunnel.
fn token(c: &OriginCase) -> String {
    let out = c.t.cli().run(&["tunnel", "token", &c.id]).ok().stdout;
    out.trim().to_owned()
}

/// A config.yml naming the tunnel, its credentials and one ingress rule to the origin, with
/// `extra` top-level lines.
fn write_config(c: &OriginCase, extra: &str) -> String {
    let path = c.t.s.tmp.path().join("config.yml");
    std::fs::write(
        &path,
        format!(
            "tunnel: {id}\ncredentials-file: {creds}\n{extra}ingress:\n  - hostname: {host}\n    service: {url}\n  - service: http_status:404\n",
            id = c.id,
            creds = c.t.credentials_path(&c.id).display(),
            host = c.host,
            url = c.origin.url(),
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Runs `ringway ARGS` with `envs` plus the edge's address and CA in the environment, and
/// waits for a registered connection.
fn spawn(c: &OriginCase, args: &[&str], envs: &[(&str, String)]) -> Connector {
    let mut cmd = c.t.cli().command(args);
    let edges: Vec<String> =
        c.t.edge
            .tunnel_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
    cmd.env("TUNNEL_EDGE", edges.join(","))
        .env("TUNNEL_CACERT", c.t.edge.ca_path())
        .env("TUNNEL_METRICS", "127.0.0.1:0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut conn = Connector {
        proc: LoggedProc::spawn("connector", cmd),
    };
    conn.wait_registered(1);
    conn
}

/// A token carries no ingress rules (Cloudflare's dashboard would push them): the origin
/// comes from `TUNNEL_URL`, leaving the command line as written.
fn origin_env(c: &OriginCase) -> Vec<(&'static str, String)> {
    vec![("TUNNEL_URL", c.origin.url())]
}

#[test]
fn systemd_unit_with_a_token_file() {
    let c = OriginCase::new(ZONE, "unit");
    let token_file = c.t.s.tmp.path().join("token");
    std::fs::write(&token_file, format!("{}\n", token(&c))).unwrap();
    let tf = token_file.display().to_string();
    let conn = spawn(
        &c,
        &["--no-autoupdate", "tunnel", "run", "--token-file", &tf],
        &origin_env(&c),
    );
    c.assert_served(&conn);
    assert!(
        conn.logs()
            .contains("--no-autoupdate has no effect on a self-hosted edge"),
        "{}",
        conn.logs()
    );
}

#[test]
fn systemd_unit_with_the_token_on_the_command_line() {
    let c = OriginCase::new(ZONE, "unittoken");
    let token = token(&c);
    let conn = spawn(
        &c,
        &["--no-autoupdate", "tunnel", "run", "--token", &token],
        &origin_env(&c),
    );
    c.assert_served(&conn);
    assert!(!conn.logs().contains(&token), "the token is never logged");
}

#[test]
fn docker_entrypoint() {
    let c = OriginCase::new(ZONE, "docker");
    let token = token(&c);
    let conn = spawn(
        &c,
        &["tunnel", "--no-autoupdate", "run", "--token", &token],
        &origin_env(&c),
    );
    c.assert_served(&conn);
}

#[test]
fn tunnel_token_from_the_environment() {
    let c = OriginCase::new(ZONE, "envtoken");
    let mut env = origin_env(&c);
    env.push(("TUNNEL_TOKEN", token(&c)));
    let conn = spawn(&c, &["tunnel", "run"], &env);
    c.assert_served(&conn);
}

#[test]
fn config_file_named_before_run() {
    let c = OriginCase::new(ZONE, "config");
    let config = write_config(&c, "");
    let conn = spawn(&c, &["tunnel", "--config", &config, "run"], &[]);
    c.assert_served(&conn);
}

#[test]
fn sysv_init_script_line_with_pidfile_and_config_keys() {
    let c = OriginCase::new(ZONE, "sysv");
    // config.yml's top-level keys set flags: here the log level and the HA connection count.
    let config = write_config(&c, "loglevel: debug\nha-connections: 2\n");
    let pidfile = c.t.s.tmp.path().join("run").join("ringway.pid");
    std::fs::create_dir_all(pidfile.parent().unwrap()).unwrap();
    let pf = pidfile.display().to_string();
    let mut conn = spawn(
        &c,
        &[
            "--pidfile",
            &pf,
            "--autoupdate-freq",
            "24h0m0s",
            "--config",
            &config,
            "tunnel",
            "run",
        ],
        &[],
    );
    conn.wait_registered(2);
    c.assert_served(&conn);
    assert!(
        conn.logs().contains("DEBUG"),
        "config.yml's loglevel applies: {}",
        conn.logs()
    );
    let pid = wait_for("the pidfile", Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(pid.trim(), conn.proc.proc.pid().to_string());
}

#[test]
fn no_arguments_runs_the_default_config_file() {
    let c = OriginCase::new(ZONE, "bare");
    let config = write_config(&c, "");
    let default = c.t.cli().cloudflared_dir().join("config.yml");
    std::fs::copy(&config, &default).unwrap();
    let conn = spawn(&c, &[], &[]);
    c.assert_served(&conn);
}

#[test]
fn tunnel_ready_follows_the_metrics_server() {
    let c = OriginCase::new(ZONE, "ready");
    let mut conn = spawn(&c, &["tunnel", "run", &c.id], &[]);
    let addr = conn.metrics_addr().to_string();
    c.t.cli().run(&["tunnel", "--metrics", &addr, "ready"]).ok();
    let closed = closed_port_url();
    let closed = closed.trim_start_matches("http://");
    let err =
        c.t.cli()
            .run(&["tunnel", "--metrics", closed, "ready"])
            .one_line_error();
    assert!(err.contains("cannot reach the metrics server"), "{err}");
    let err = c.t.cli().run(&["tunnel", "ready"]).one_line_error();
    assert!(err.contains("--metrics has to be provided"), "{err}");
}

#[test]
fn version_and_update() {
    let c = TunnelSetup::new(ZONE);
    let cli = c.cli();
    let v = env!("CARGO_PKG_VERSION");
    for flag in ["--version", "-v", "-V"] {
        let out = cli.run(&[flag]).ok().stdout;
        assert!(
            out.starts_with(&format!("ringway version {v} (built ")),
            "{out}"
        );
    }
    assert_eq!(cli.run(&["version", "--short"]).ok().stdout.trim(), v);
    let out = cli.run(&["update"]).ok().stdout;
    assert!(out.contains("does not update itself"), "{out}");
}

#[test]
fn ad_hoc_named_tunnel_is_created_routed_and_run() {
    let t = TunnelSetup::new(ZONE);
    let origin = HashOrigin::start("adhoc");
    let host = format!("adhoc.{ZONE}");
    let c = OriginCase {
        t,
        origin,
        host,
        id: String::new(),
    };
    let url = c.origin.url();
    let conn = spawn(
        &c,
        &[
            "tunnel",
            "--name",
            "adhoc",
            "--hostname",
            &c.host,
            "--url",
            &url,
        ],
        &[],
    );
    c.assert_served(&conn);
    let listed = c.t.cli().list_json(&["--name", "adhoc"]);
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[test]
fn an_unknown_flag_or_a_flag_out_of_place_is_one_error_line() {
    let s = Setup::new(&[ZONE]);
    for args in [
        &["tunnel", "run", "--bogus", "x"][..],
        // Run-only, given before `run`: cloudflared refuses it too.
        &["tunnel", "--token", "abc", "run"][..],
        &["tunnel", "--no-autoupdate=maybe", "run"][..],
    ] {
        let run = s.cli.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(lines[0].starts_with("error: "), "{args:?}: {}", run.stderr);
    }
}
