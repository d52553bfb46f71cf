//! cloudflared's logging flags on the real binary: file lines are JSON, `--output json` puts JSON
//! on stderr, `--log-directory` writes `DIR/cloudflared.log` and rotates it at 1 MB keeping five
//! backups, `TUNNEL_LOGFILE` works, `--loglevel warn` keeps a running connector's INFO lines
//! out, and the level and incompatibility errors use cloudflared's words.

use std::fs;
use std::path::Path;
use std::process::Command;

use ringway_tests::process::{closed_port_url, ringway_bin};

/// Runs `ringway tunnel <log flags> --config C ingress validate` with a valid config and
/// returns stderr.
fn validate(dir: &Path, log_flags: &[&str], env: &[(&str, &str)]) -> String {
    let config = dir.join("config.yml");
    fs::write(&config, "ingress:\n  - service: http_status:404\n").unwrap();
    let mut cmd = Command::new(ringway_bin());
    cmd.arg("tunnel")
        .args(log_flags)
        .arg("--config")
        .arg(&config)
        .args(["ingress", "validate"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("RUST_LOG");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log_flags:?}: {stderr}");
    stderr
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn has_message(lines: &[serde_json::Value], level: &str, needle: &str) -> bool {
    lines.iter().any(|l| {
        l["level"] == level
            && l["message"].as_str().is_some_and(|m| m.contains(needle))
            && l["time"].as_str().is_some()
    })
}

#[test]
fn logfile_gets_json_lines_and_a_bad_level_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logs/sub/ringway.log");
    let f = file.to_str().unwrap();
    validate(dir.path(), &["--loglevel", "loud", "--logfile", f], &[]);
    let lines = json_lines(&fs::read_to_string(&file).unwrap());
    assert!(
        has_message(
            &lines,
            "error",
            r#"Failed to parse log level "loud", using info"#
        ),
        "{lines:?}"
    );
}

#[test]
fn tunnel_logfile_env_works() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.log");
    validate(
        dir.path(),
        &["--loglevel", "loud"],
        &[("TUNNEL_LOGFILE", file.to_str().unwrap())],
    );
    let lines = json_lines(&fs::read_to_string(&file).unwrap());
    assert!(
        has_message(&lines, "error", "Failed to parse log level"),
        "{lines:?}"
    );
}

#[test]
fn log_directory_writes_cloudflared_log_and_logfile_wins_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    validate(
        dir.path(),
        &[
            "--loglevel",
            "loud",
            "--log-directory",
            logs.to_str().unwrap(),
        ],
        &[],
    );
    let lines = json_lines(&fs::read_to_string(logs.join("cloudflared.log")).unwrap());
    assert!(
        has_message(&lines, "error", "Failed to parse log level"),
        "{lines:?}"
    );

    let file = dir.path().join("wins.log");
    let other = dir.path().join("unused");
    validate(
        dir.path(),
        &[
            "--logfile",
            file.to_str().unwrap(),
            "--log-directory",
            other.to_str().unwrap(),
        ],
        &[],
    );
    let lines = json_lines(&fs::read_to_string(&file).unwrap());
    assert!(
        has_message(
            &lines,
            "error",
            "but they are incompatible. logfile takes precedence."
        ),
        "{lines:?}"
    );
    assert!(!other.join("cloudflared.log").exists());
}

#[test]
fn output_json_puts_json_on_stderr_and_disabled_logs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = validate(dir.path(), &["--output", "json", "--loglevel", "loud"], &[]);
    let lines = json_lines(&stderr);
    assert!(
        has_message(&lines, "error", "Failed to parse log level"),
        "{stderr}"
    );

    let file = dir.path().join("quiet.log");
    validate(
        dir.path(),
        &[
            "--loglevel",
            "disabled",
            "--logfile",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "");
}

#[test]
fn a_running_connector_logs_json_to_the_file_and_the_console() {
    use ringway_tests::prelude::*;
    let t = TunnelSetup::new("logging.test");
    let id = t.tunnel("logs", &["www.logging.test"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connector.log");
    let f = file.to_str().unwrap();
    let conn = t.run_url(
        "logs",
        &id,
        &closed_port_url(),
        &["--loglevel", "debug", "--logfile", f, "--output", "json"],
        1,
    );
    let stderr = json_lines(&conn.proc.log.stderr_lines().join("\n"));
    assert!(
        has_message(&stderr, "info", "Registered tunnel connection"),
        "{stderr:?}"
    );
    let lines = json_lines(&fs::read_to_string(&file).unwrap());
    assert!(
        has_message(&lines, "info", "Registered tunnel connection"),
        "{lines:?}"
    );
}

#[test]
fn loglevel_warn_keeps_a_running_connectors_info_lines_out() {
    use ringway_tests::connector::{Connector, REGISTERED};
    use ringway_tests::prelude::*;
    let t = TunnelSetup::new("logging.test");
    let host = "warn.logging.test";
    let id = t.tunnel("warn", &[host]);
    // A dead origin: every request is a 502 and the connector's WARN "origin request failed".
    let args = t.run_args(
        &id,
        &id,
        &closed_port_url(),
        &t.edge.connector_args(),
        &["--loglevel", "warn"],
    );
    // Not `Connector::start`: it waits for "Registered tunnel connection", an INFO line. The
    // edge forwarding a request is the readiness signal instead.
    let mut conn = Connector::spawn(t.cli(), &args);
    let r = t.wait_served(host);
    assert_eq!(r.status, 502, "{}\n{}", r.summary(), conn.logs());
    let warn = conn.proc.wait_output(
        "the WARN line of the failed request",
        std::time::Duration::from_secs(30),
        |log| {
            log.stderr_lines()
                .into_iter()
                .find(|l| l.contains("WARN") && l.contains("origin request failed"))
        },
    );
    assert!(warn.contains("connect failed"), "{warn}");
    let all = conn.proc.log.stderr_lines();
    let info: Vec<&String> = all
        .iter()
        .filter(|l| l.contains(" INFO ") || l.contains(REGISTERED))
        .collect();
    assert!(info.is_empty(), "INFO lines at --loglevel warn: {info:?}");
}

#[test]
fn log_directory_rotates_a_full_file_and_keeps_five_backups() {
    use ringway_tests::connector::REGISTERED;
    use ringway_tests::prelude::*;
    let t = TunnelSetup::new("logging.test");
    let id = t.tunnel("rotate", &["rotate.logging.test"]);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    // A live file already at the 1 MB limit (as a long-running connector leaves it; the
    // binary reads its size when it opens it) and five older backups, lumberjack's names.
    // The connector's first line must move the full file aside and drop the oldest backup.
    let line = "{\"level\":\"info\",\"message\":\"filler\"}\n";
    let filler = line.repeat((1usize << 20).div_ceil(line.len()));
    fs::write(logs.join("cloudflared.log"), &filler).unwrap();
    let old: Vec<String> = (1..=5)
        .map(|d| format!("cloudflared-2000-01-0{d}T00-00-00.000.log"))
        .collect();
    for name in &old {
        fs::write(logs.join(name), format!("{name}\n")).unwrap();
    }
    let l = logs.to_str().unwrap();
    let conn = t.run_url(
        "rotate",
        &id,
        &closed_port_url(),
        &["--log-directory", l],
        1,
    );

    let live = logs.join("cloudflared.log");
    let text = wait_for(
        "the connector's lines in the new live file",
        std::time::Duration::from_secs(30),
        || {
            fs::read_to_string(&live)
                .ok()
                .filter(|t| t.contains(REGISTERED))
        },
    );
    assert!(
        !text.contains("filler"),
        "the full file was not rotated: {} bytes\n{}",
        text.len(),
        conn.logs()
    );
    json_lines(&text);
    let mut backups: Vec<String> = fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "cloudflared.log")
        .collect();
    backups.sort();
    assert_eq!(backups.len(), 5, "cloudflared keeps 5 backups: {backups:?}");
    assert!(
        !backups.contains(&old[0]),
        "the oldest survived: {backups:?}"
    );
    assert_eq!(&backups[..4], &old[1..], "{backups:?}");
    // The new backup is the full file, moved whole, under a name of this rotation's time.
    let rotated = &backups[4];
    assert!(
        rotated.starts_with("cloudflared-20") && rotated.ends_with(".log"),
        "{rotated}"
    );
    assert_eq!(fs::read_to_string(logs.join(rotated)).unwrap(), filler);
}

#[test]
fn log_directory_rotation_under_real_output_never_keeps_more_than_five_backups() {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use ringway_tests::origins::HashOrigin;
    use ringway_tests::payload::pseudo_random_bytes;
    use ringway_tests::prelude::*;
    let t = TunnelSetup::new("logging.test");
    let host = "volume.logging.test";
    let id = t.tunnel("volume", &[host]);
    let origin = HashOrigin::start("volume");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let l = logs.to_str().unwrap();
    // The QUIC transport at trace logs every packet: uploads through the tunnel write
    // megabytes of real log lines, enough for several 1 MB rotations.
    let _conn = t.run_url(
        "volume",
        &id,
        &origin.url(),
        &[
            "--log-directory",
            l,
            "--transport-loglevel",
            "trace",
            "--ha-connections",
            "1",
        ],
        1,
    );
    t.wait_served(host);
    let body = pseudo_random_bytes(1 << 20, 3);
    let backups = || -> BTreeSet<String> {
        fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "cloudflared.log")
            .collect()
    };
    // Until more than five backups have existed in all (so the oldest had to go); the limit
    // is a failure limit only.
    let mut ever = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while ever.len() <= 5 {
        assert!(
            Instant::now() < deadline,
            "only {} rotations: {ever:?}",
            ever.len()
        );
        let req = request_bytes("POST", host, "/up", &[], Some(&body), true);
        let r = RawClient::connect(t.edge.http_addr())
            .request(&req, false)
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.summary());
        let now = backups();
        assert!(now.len() <= 5, "more than five backups: {now:?}");
        ever.extend(now);
    }
    let now = backups();
    assert!(now.len() <= 5, "more than five backups: {now:?}");
    // The oldest ones went, the newest stayed.
    let newest: Vec<&String> = ever.iter().rev().take(now.len()).collect();
    let kept: Vec<&String> = now.iter().rev().collect();
    assert_eq!(kept, newest, "kept {now:?} of {ever:?}");
    for name in &now {
        let size = fs::metadata(logs.join(name)).unwrap().len();
        assert!(
            size <= 1 << 20,
            "{name}: {size} bytes, over the 1 MB rotation size"
        );
        json_lines(&fs::read_to_string(logs.join(name)).unwrap());
    }
}
