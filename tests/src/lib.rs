//! End-to-end test harness: starts the real `ringway` binary on free loopback ports in temp
//! directories and cleans up after itself.
//!
//! # Layout
//!
//! - `lib.rs` (this file): locating (building once) the binary, child processes that are
//!   killed on drop, a control plane fixture, and a CLI runner with an isolated `$HOME`.
//! - `tests/control_plane.rs`: the control plane and every `ringway tunnel` verb.
//!
//! Waits use deadlines only as failure limits: a test polls until the condition holds and fails
//! if the deadline passes first, so a slow machine makes a test slower, never red.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `ringway` binary of this workspace, built once per test process.
pub fn ringway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-exe> → target/<profile>/ringway
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps");
        let bin = profile_dir.join("ringway");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "control", "--bin", "ringway"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of ringway failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// A child process that is killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }
    /// Waits for exit, failing after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns `Some`, failing with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A running `ringway control serve` on a free loopback port.
#[derive(Debug)]
pub struct ControlPlane {
    pub proc: Proc,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane on `data_dir` (created if missing) with these zones.
    pub fn start(data_dir: &Path, zones: &[&str]) -> Self {
        Self::start_on(data_dir, zones, "127.0.0.1:0")
    }

    /// Starts on a given listen address (restarts reuse the old port so cert.pem stays valid).
    pub fn start_on(data_dir: &Path, zones: &[&str], listen: &str) -> Self {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = data_dir.with_extension("log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(ringway_bin());
        cmd.args(["control", "serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", listen]);
        for z in zones {
            cmd.args(["--zone", z]);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .expect("spawn control plane");
        // The server prints one line with its address once it is listening.
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listen line");
        let proc = Proc { child };
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| {
                panic!(
                    "control plane did not start: {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Self {
            proc,
            url,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .expect("admin-token")
            .trim()
            .to_string()
    }

    pub fn edge_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("edge-token"))
            .expect("edge-token")
            .trim()
            .to_string()
    }

    pub fn api(&self) -> String {
        format!("{}/client/v4", self.url)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs `ringway` CLI commands with an isolated `$HOME` (so cloudflared's search directories
/// are the test's own) and no `TUNNEL_*` variables from the outer environment.
#[derive(Debug)]
pub struct Cli {
    pub home: PathBuf,
    pub cwd: PathBuf,
}

/// One finished CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a failure that printed exactly one line on stderr, and returns that line.
    pub fn one_line_error(&self) -> String {
        assert_ne!(
            self.code, 0,
            "expected failure, got success: {}",
            self.stdout
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line, got: {:?}",
            self.stderr
        );
        lines[0].to_string()
    }
}

impl Cli {
    pub fn new(home: &Path) -> Self {
        std::fs::create_dir_all(home).expect("home");
        Self {
            home: home.to_path_buf(),
            cwd: home.to_path_buf(),
        }
    }

    pub fn cloudflared_dir(&self) -> PathBuf {
        self.home.join(".cloudflared")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ringway_bin());
        cmd.args(args)
            .current_dir(&self.cwd)
            .env("HOME", &self.home);
        for (k, _) in std::env::vars() {
            if k.starts_with("TUNNEL_") || k.starts_with("RINGWAY_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.command(args).output().expect("run ringway");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `tunnel login` non-interactively against `cp` for `zone`.
    pub fn login(&self, cp: &ControlPlane, zone: &str) -> Run {
        let token = cp.admin_token();
        self.run(&[
            "tunnel",
            "login",
            "--control",
            &cp.url,
            &format!("--api-token={token}"),
            "--zone",
            zone,
        ])
    }
}

/// A tiny JSON-over-HTTP helper for calling the API directly from tests.
pub fn http(
    method: &str,
    url: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let resp = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(url).header("Authorization", &auth).call(),
        ("POST", Some(b)) => agent.post(url).header("Authorization", &auth).send_json(b),
        ("PUT", Some(b)) => agent.put(url).header("Authorization", &auth).send_json(b),
        (m, _) => panic!("unsupported method {m}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json)
}
