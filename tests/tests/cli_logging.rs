//! cloudflared's logging flags on the real binary: file lines are JSON, `--output json` puts JSON
//! on stderr, `--log-directory` writes `DIR/cloudflared.log`, `TUNNEL_LOGFILE` works, and the
//! level and incompatibility errors use cloudflared's words.

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
