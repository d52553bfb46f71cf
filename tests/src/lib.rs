//! End-to-end test harness: starts the real `ringway` binary on free loopback ports in temp
//! directories and cleans up after itself.
//!
//! # Layout
//!
//! - `lib.rs` (this file): locating (building once) the binary, child processes that are
//!   killed on drop, a control plane fixture, and a CLI runner with an isolated `$HOME`.
//! - `tests/control_plane.rs`: the lifecycle of every `ringway tunnel` verb, and deletes refused
//!   while connectors are connected.
//! - `tests/durability.rs`: acknowledged writes survive `kill -9`; restarts keep the tokens.
//! - `tests/isolation.rs`: a cert.pem token acts only in its own account and zone.
//! - `tests/cli_errors.rs`: every bad input is one stderr line that leaks no secret; secrets
//!   never reach the control-plane log.
//! - `tests/edge_api.rs`: the edge-facing snapshot, long-poll, connection leases and auth.
//! - `tests/login_and_files.rs`: browser login, cloudflared's search directories, config.yml
//!   ingress validation and rule matching.
//! - `tests/races.rs`: concurrent writers keep the store's invariants (unique names, one CNAME
//!   per host, no lost pool origins); list pagination.
//!
//! Waits use deadlines only as failure limits: a test polls until the condition holds and fails
//! if the deadline passes first, so a slow machine makes a test slower, never red.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

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
        Self::start_logging(data_dir, zones, listen, "info")
    }

    /// Like [`ControlPlane::start_on`] with `RUST_LOG=rust_log` (e.g. `trace` to check that
    /// not even the most verbose log leaks a secret).
    pub fn start_logging(data_dir: &Path, zones: &[&str], listen: &str, rust_log: &str) -> Self {
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
            .env("RUST_LOG", rust_log)
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
        Self::finish(self.command(args).output().expect("run ringway"))
    }

    /// Like [`Cli::run`] with extra environment variables (e.g. `TUNNEL_ORIGIN_CERT`).
    pub fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::finish(cmd.output().expect("run ringway"))
    }

    fn finish(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `~/.cloudflared/cert.pem`, where login writes.
    pub fn cert_path(&self) -> PathBuf {
        self.cloudflared_dir().join("cert.pem")
    }

    /// The JSON inside this home's cert.pem.
    pub fn cert(&self) -> Value {
        read_origin_cert(&self.cert_path())
    }

    /// `tunnel create NAME` (plus `extra` flags before the name); returns the new tunnel's id
    /// taken from cloudflared's "Created tunnel NAME with id UUID" line.
    pub fn create(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["tunnel", "create"];
        args.extend_from_slice(extra);
        args.push(name);
        let run = self.run(&args).ok();
        created_id(&run.stdout, name)
    }

    /// The `<UUID>.json` next to cert.pem, parsed.
    pub fn credentials(&self, id: &str) -> Value {
        let path = self.cloudflared_dir().join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).expect("credentials file is JSON")
    }

    /// `tunnel list -o json`, parsed (an empty list may be `null` as in cloudflared).
    pub fn list_json(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["tunnel", "list", "-o", "json"];
        args.extend_from_slice(extra);
        let run = self.run(&args).ok();
        match serde_json::from_str::<Value>(&run.stdout).expect("list -o json is JSON") {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            other => panic!("list -o json is not an array: {other}"),
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
    http_with(&agent(), method, url, token, body)
}

/// [`http`] on a given agent, e.g. one whose connection is already open (see [`agent`]).
pub fn http_with(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
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

/// The id in cloudflared's `Created tunnel NAME with id UUID` line of `tunnel create`.
pub fn created_id(stdout: &str, name: &str) -> String {
    let prefix = format!("Created tunnel {name} with id ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout:?}"));
    let id = line.trim().to_string();
    uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{id:?} is not a UUID: {e}"));
    id
}

/// A control plane in a temp dir plus a CLI whose home is logged in to `zones[0]`.
#[derive(Debug)]
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub cp: ControlPlane,
    pub cli: Cli,
}

impl Setup {
    pub fn new(zones: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cp = ControlPlane::start(&tmp.path().join("data"), zones);
        let cli = Cli::new(&tmp.path().join("home"));
        cli.login(&cp, zones[0]).ok();
        Self { tmp, cp, cli }
    }

    /// A second, not yet logged-in home in the same temp dir.
    pub fn other_home(&self, name: &str) -> Cli {
        Cli::new(&self.tmp.path().join(name))
    }

    pub fn account_id(&self) -> String {
        self.cli.cert()["accountID"]
            .as_str()
            .expect("accountID")
            .to_string()
    }

    pub fn zone_id(&self) -> String {
        self.cli.cert()["zoneID"]
            .as_str()
            .expect("zoneID")
            .to_string()
    }

    pub fn api_token(&self) -> String {
        self.cli.cert()["apiToken"]
            .as_str()
            .expect("apiToken")
            .to_string()
    }
}

/// Parses a cert.pem: exactly one `ARGO TUNNEL TOKEN` PEM block whose bytes are JSON.
pub fn read_origin_cert(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let begin = "-----BEGIN ARGO TUNNEL TOKEN-----";
    let end = "-----END ARGO TUNNEL TOKEN-----";
    let body = text
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(b, _)| b)
        .unwrap_or_else(|| panic!("no ARGO TUNNEL TOKEN block in {text:?}"));
    let b64: String = body.split_whitespace().collect();
    let json = B64.decode(b64).expect("PEM body is base64");
    serde_json::from_slice(&json).expect("PEM body is JSON")
}

/// Decodes a tunnel token (`tunnel token`, `token` of `create -o json`): base64 of JSON.
pub fn decode_token(token: &str) -> Value {
    let raw = B64.decode(token.trim()).expect("token is standard base64");
    serde_json::from_slice(&raw).expect("token is base64 of JSON")
}

/// Sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Permission bits of a file.
pub fn file_mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Fails if `text` contains any of `secrets` (empty ones are skipped).
pub fn assert_no_secrets(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!text.contains(s), "{what} leaks a secret: {text:?}");
    }
}

/// A URL on loopback where nothing listens (a port that was free a moment ago).
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// An HTTP agent that reports every status as a response (no error for 4xx/5xx), with a 60 s
/// failure limit per request. It keeps connections open between requests.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Like [`http`] but with an optional token and the raw body text, for checks on exact bytes.
pub fn http_raw(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    macro_rules! with_auth {
        ($req:expr) => {{
            let r = $req;
            match &auth {
                Some(a) => r.header("Authorization", a),
                None => r,
            }
        }};
    }
    let resp = match method {
        "GET" => with_auth!(agent.get(url)).call(),
        "DELETE" => with_auth!(agent.delete(url)).call(),
        "POST" => with_auth!(agent.post(url)).send_json(body.cloned().unwrap_or(Value::Null)),
        "PUT" => with_auth!(agent.put(url)).send_json(body.cloned().unwrap_or(Value::Null)),
        m => panic!("unsupported method {m}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

/// POSTs an HTML form; returns status and page text.
pub fn post_form(url: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let mut resp = agent()
        .post(url)
        .send_form(fields.iter().copied())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// What the edge sends to register a connection; `lease_secs` is the lease asked for.
pub fn register_connection(
    cp: &ControlPlane,
    tunnel_id: &str,
    client_id: &str,
    conn_index: u8,
    colo: &str,
    edge_id: &str,
    lease_secs: u64,
) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "id": id,
        "tunnel_id": tunnel_id,
        "client_id": client_id,
        "client_version": "2024.1.0",
        "arch": "linux_amd64",
        "features": ["ha-origin"],
        "conn_index": conn_index,
        "colo_name": colo,
        "origin_ip": "10.1.2.3",
        "edge_id": edge_id,
        "lease_secs": lease_secs,
    });
    let (status, ans) = http(
        "POST",
        &format!("{}/edge/v1/connections", cp.url),
        &cp.edge_token(),
        Some(&body),
    );
    assert_eq!(status, 200, "register connection: {ans}");
    assert_eq!(ans["result"]["id"], id, "{ans}");
    id
}

/// Reads lines from `r` on a thread, so a test can wait for one with a failure limit.
pub fn line_reader(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

// ---- Queries shared by the control-plane tests ----

/// The zone object `GET /zones?name=NAME` returns to the operator.
pub fn zone_by_name(cp: &ControlPlane, name: &str) -> Value {
    let (status, ans) = http(
        "GET",
        &format!("{}/zones?name={name}", cp.api()),
        &cp.admin_token(),
        None,
    );
    assert_eq!(status, 200, "{ans}");
    let zones = ans["result"].as_array().expect("zones").clone();
    assert_eq!(zones.len(), 1, "zone {name}: {ans}");
    zones[0].clone()
}

/// `GET /zones/{zone}/dns_records?name=HOST` with `token`.
pub fn dns_records(cp: &ControlPlane, zone: &str, host: &str, token: &str) -> Vec<Value> {
    let (status, ans) = http(
        "GET",
        &format!("{}/zones/{zone}/dns_records?name={host}", cp.api()),
        token,
        None,
    );
    assert_eq!(status, 200, "{ans}");
    ans["result"].as_array().expect("records").clone()
}

pub fn get_result(cp: &ControlPlane, path: &str, token: &str) -> Value {
    let (status, ans) = http("GET", &format!("{}{path}", cp.api()), token, None);
    assert_eq!(status, 200, "GET {path}: {ans}");
    ans["result"].clone()
}

/// The only CNAME named `host`, asserting it is a proxied CNAME to tunnel `id`.
pub fn assert_tunnel_cname(records: &[Value], host: &str, id: &str) {
    assert_eq!(records.len(), 1, "one record for {host}: {records:?}");
    let r = &records[0];
    assert_eq!(r["type"], "CNAME", "{r}");
    assert_eq!(r["name"], host, "{r}");
    assert_eq!(r["content"], format!("{id}.cfargotunnel.com"), "{r}");
    assert_eq!(r["proxied"], true, "{r}");
}

pub fn find<'a>(list: &'a [Value], key: &str, val: &str) -> Option<&'a Value> {
    list.iter().find(|v| v[key] == val)
}

/// `tunnel list`'s table: its header line and its rows (after cloudflared's intro line).
pub fn list_table(cli: &Cli) -> (String, Vec<String>) {
    let out = cli.run(&["tunnel", "list"]).ok().stdout;
    let mut lines = out.lines();
    let intro = lines.next().expect("intro line");
    assert!(
        intro.contains("tunnel info <name/uuid>"),
        "first line of list: {intro:?}"
    );
    let header = lines.next().expect("header").to_string();
    (header, lines.map(str::to_string).collect())
}

/// The cell of `row` under `col` of `header` (columns are space-padded, tabwriter style).
pub fn cell(header: &str, row: &str, col: &str) -> String {
    let cols = ["ID", "NAME", "CREATED", "CONNECTIONS"];
    let i = cols.iter().position(|c| *c == col).expect("known column");
    let start = header.find(&format!("{col} ")).expect("column in header");
    let end = cols
        .get(i + 1)
        .map(|next| header.find(&format!("{next} ")).expect("next column"))
        .unwrap_or(row.len());
    row.get(start..end.min(row.len()))
        .unwrap_or("")
        .trim()
        .to_string()
}
