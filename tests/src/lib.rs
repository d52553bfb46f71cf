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
//! - `tests/tunnel_*.rs`: the data path end to end: control plane + `ringway edge run` +
//!   `ringway tunnel run` + origins (a real nginx and [`HashOrigin`]), driven by [`RawClient`].
//!
//! The data-path half of this file: [`Edge`], [`Connector`], [`Nginx`], [`HashOrigin`] and
//! [`RawClient`]; their output is collected ([`OutputLog`]) so a failure prints what each
//! process said.
//!
//! Waits use deadlines only as failure limits: a test polls until the condition holds and fails
//! if the deadline passes first, so a slow machine makes a test slower, never red.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

pub mod flood;
pub mod slow_clients;

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
        Self::start_with(data_dir, zones, listen, rust_log, &[])
    }

    /// Like [`ControlPlane::start_logging`] with `extra` flags for `control serve` (limits).
    pub fn start_with(
        data_dir: &Path,
        zones: &[&str],
        listen: &str,
        rust_log: &str,
        extra: &[&str],
    ) -> Self {
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
        cmd.args(extra);
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

// ---- Data path: edge, connector, origins and a raw HTTP/1.1 client ----

/// The stdout and stderr lines of a child process, collected on reader threads so a test can
/// wait for a line with a failure limit and print everything the process said when it fails.
#[derive(Debug, Clone, Default)]
pub struct OutputLog {
    inner: Arc<Mutex<LogLines>>,
}

#[derive(Debug, Default)]
struct LogLines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Reader threads that reached EOF (two once both pipes closed).
    closed: u8,
}

impl OutputLog {
    /// Starts collecting the piped stdout and stderr of `child`.
    pub fn capture(child: &mut Child) -> Self {
        let log = Self::default();
        if let Some(out) = child.stdout.take() {
            log.collect(out, true);
        } else {
            log.inner.lock().expect("log lock").closed += 1;
        }
        if let Some(err) = child.stderr.take() {
            log.collect(err, false);
        } else {
            log.inner.lock().expect("log lock").closed += 1;
        }
        log
    }

    fn collect(&self, r: impl Read + Send + 'static, is_stdout: bool) {
        let inner = self.inner.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        let mut g = inner.lock().expect("log lock");
                        if is_stdout {
                            g.stdout.push(line);
                        } else {
                            g.stderr.push(line);
                        }
                    }
                }
            }
            inner.lock().expect("log lock").closed += 1;
        });
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.inner.lock().expect("log lock").stdout.clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.inner.lock().expect("log lock").stderr.clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout_lines().join("\n")
    }

    pub fn stderr(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// Whether both pipes reached EOF (everything the process wrote is here).
    pub fn closed(&self) -> bool {
        self.inner.lock().expect("log lock").closed >= 2
    }

    /// Everything so far, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.stdout(),
            self.stderr()
        )
    }
}

/// A child process with its output collected; killed (SIGKILL) and reaped on drop. When it is
/// dropped by a failing test, its output goes to the test's stderr (shown with the failure), so
/// every process of a failed test tells its side.
#[derive(Debug)]
pub struct LoggedProc {
    pub name: String,
    pub proc: Proc,
    pub log: OutputLog,
    /// Set once a failure message already carried the output.
    dumped: AtomicBool,
}

impl Drop for LoggedProc {
    fn drop(&mut self) {
        self.proc.kill9();
        if std::thread::panicking() && !self.dumped.load(Ordering::Relaxed) {
            let drained = Instant::now() + Duration::from_secs(2);
            while !self.log.closed() && Instant::now() < drained {
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!(
                "==== output of {} (pid {}) ====\n{}",
                self.name,
                self.proc.pid(),
                self.log.dump()
            );
        }
    }
}

impl LoggedProc {
    /// Spawns `cmd` with stdin closed and stdout/stderr collected.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let log = OutputLog::capture(&mut child);
        Self {
            name: name.to_string(),
            proc: Proc { child },
            log,
            dumped: AtomicBool::new(false),
        }
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.child.try_wait().expect("try_wait")
    }

    /// Panics with the process output.
    pub fn fail(&self, why: &str) -> ! {
        self.dumped.store(true, Ordering::Relaxed);
        panic!("{} {why}\n{}", self.name, self.log.dump())
    }

    /// Polls `f` over the collected output until it returns `Some`. Fails with the output after
    /// `limit`, or as soon as the process has exited and its output is complete.
    pub fn wait_output<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&OutputLog) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f(&self.log) {
                return v;
            }
            if let Some(status) = self.exited() {
                // Let the readers drain what the process wrote before it died.
                let drained = Instant::now() + Duration::from_secs(5);
                while !self.log.closed() && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if let Some(v) = f(&self.log) {
                    return v;
                }
                self.fail(&format!("exited ({status}) while waiting for {what}"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {limit:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for a stdout line for which `f` returns `Some`.
    pub fn wait_stdout<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> T {
        self.wait_output(what, limit, |log| {
            log.stdout_lines().iter().find_map(|l| f(l))
        })
    }

    /// Waits for exit, failing with the output after `limit`; returns the status once the
    /// output is complete.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("did not exit within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let drained = Instant::now() + Duration::from_secs(5);
        while !self.log.closed() && Instant::now() < drained {
            std::thread::sleep(Duration::from_millis(10));
        }
        status
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, drop the socket).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Options of [`Edge::start`].
#[derive(Debug, Clone)]
pub struct EdgeOpts {
    /// How many `--tunnel-listen 127.0.0.1:0` addresses.
    pub tunnel_listeners: usize,
    pub location: Option<String>,
    pub workers: Option<usize>,
    /// Anything else, appended as given.
    pub extra: Vec<String>,
    /// The binary to run instead of [`ringway_bin`] (e.g. an older build, to compare).
    pub bin: Option<PathBuf>,
}

impl Default for EdgeOpts {
    fn default() -> Self {
        Self {
            tunnel_listeners: 1,
            location: None,
            workers: None,
            extra: Vec::new(),
            bin: None,
        }
    }
}

/// A running `ringway edge run` on free loopback ports.
#[derive(Debug)]
pub struct Edge {
    pub proc: LoggedProc,
    pub state_dir: PathBuf,
    http_addr: SocketAddr,
    tunnel_addrs: Vec<SocketAddr>,
    ca_path: PathBuf,
}

impl Edge {
    /// Starts an edge following `cp` with its state in `dir`, and waits for `edge ready`.
    pub fn start(cp: &ControlPlane, dir: &Path, opts: EdgeOpts) -> Self {
        std::fs::create_dir_all(dir).expect("edge state dir");
        let mut cmd = Command::new(opts.bin.clone().unwrap_or_else(ringway_bin));
        cmd.args(["edge", "run", "--control", &cp.url]);
        // The file form keeps the token out of the process list; an older build given as
        // `bin` may not know it.
        if opts.bin.is_some() {
            cmd.args(["--edge-token", &cp.edge_token()]);
        } else {
            cmd.arg("--edge-token-file")
                .arg(cp.data_dir.join("edge-token"));
        }
        cmd.arg("--state-dir").arg(dir);
        for _ in 0..opts.tunnel_listeners {
            cmd.args(["--tunnel-listen", "127.0.0.1:0"]);
        }
        cmd.args(["--http-listen", "127.0.0.1:0"]);
        if let Some(loc) = &opts.location {
            cmd.args(["--location", loc]);
        }
        if let Some(w) = opts.workers {
            cmd.args(["--workers", &w.to_string()]);
        }
        cmd.args(&opts.extra);
        let mut proc = LoggedProc::spawn("edge", cmd);
        // Failure limit only: the edge is normally ready in well under a second.
        proc.wait_stdout("`edge ready`", Duration::from_secs(60), |l| {
            (l.trim() == "edge ready").then_some(())
        });
        let lines = proc.log.stdout_lines();
        let mut tunnel_addrs = Vec::new();
        let mut http_addr = None;
        let mut ca_path = None;
        for l in &lines {
            let l = l.trim();
            if let Some(a) = l.strip_prefix("tunnel listening on udp://") {
                tunnel_addrs.push(
                    a.parse()
                        .unwrap_or_else(|e| proc.fail(&format!("bad tunnel address {a:?}: {e}"))),
                );
            } else if let Some(a) = l.strip_prefix("http listening on http://") {
                http_addr = Some(
                    a.trim_end_matches('/')
                        .parse()
                        .unwrap_or_else(|e| proc.fail(&format!("bad http address {a:?}: {e}"))),
                );
            } else if let Some(p) = l.strip_prefix("ca certificate at ") {
                ca_path = Some(PathBuf::from(p));
            }
        }
        if tunnel_addrs.len() != opts.tunnel_listeners {
            proc.fail(&format!(
                "printed {} tunnel addresses, expected {}",
                tunnel_addrs.len(),
                opts.tunnel_listeners
            ));
        }
        let http_addr = http_addr.unwrap_or_else(|| proc.fail("printed no http address"));
        let ca_path = ca_path.unwrap_or_else(|| proc.fail("printed no ca certificate path"));
        if !ca_path.exists() {
            proc.fail(&format!(
                "ca certificate {} does not exist",
                ca_path.display()
            ));
        }
        Self {
            proc,
            state_dir: dir.to_path_buf(),
            http_addr,
            tunnel_addrs,
            ca_path,
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn tunnel_addrs(&self) -> &[SocketAddr] {
        &self.tunnel_addrs
    }

    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// `--edge ADDR` for every tunnel address, then `--cacert PATH`: what a connector needs.
    pub fn connector_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for a in &self.tunnel_addrs {
            v.push("--edge".to_string());
            v.push(a.to_string());
        }
        v.push("--cacert".to_string());
        v.push(self.ca_path.display().to_string());
        v
    }

    /// Everything the edge printed, for failure messages.
    pub fn logs(&self) -> String {
        self.proc.log.dump()
    }

    /// A `GET path` with `Host: host` on a fresh connection (closed after the answer); an I/O
    /// error fails with the edge's output.
    pub fn get(&self, host: &str, path: &str) -> HttpResponse {
        let mut c = RawClient::connect(self.http_addr);
        c.request(&request_bytes("GET", host, path, &[], None, true), false)
            .unwrap_or_else(|e| {
                panic!(
                    "GET http://{}{path} (Host: {host}) through the edge: {e}",
                    self.http_addr,
                )
            })
    }

    /// Polls `GET host/path` until `ok` accepts the answer; fails after `limit` with the last
    /// answer and the edge's output.
    pub fn wait_get(
        &self,
        what: &str,
        host: &str,
        path: &str,
        limit: Duration,
        ok: impl Fn(&HttpResponse) -> bool,
    ) -> HttpResponse {
        let deadline = Instant::now() + limit;
        loop {
            let last = RawClient::connect_timeout(self.http_addr, Duration::from_secs(10))
                .and_then(|mut c| {
                    c.request(&request_bytes("GET", host, path, &[], None, true), false)
                });
            match &last {
                Ok(r) if ok(r) => return last.expect("checked"),
                _ => {}
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what} (GET {host}{path}); last answer: {}",
                    match &last {
                        Ok(r) => r.summary(),
                        Err(e) => format!("error {e}"),
                    },
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running `ringway tunnel … run` (a connector); its output is collected.
#[derive(Debug)]
pub struct Connector {
    pub proc: LoggedProc,
}

/// The marker the connector logs once per registered connection.
pub const REGISTERED: &str = "Registered tunnel connection";

impl Connector {
    /// Runs `ringway ARGS` (e.g. `tunnel run --url … --edge … --cacert … NAME`) in `cli`'s
    /// home and waits until one connection is registered.
    pub fn start(cli: &Cli, args: &[&str]) -> Self {
        Self::start_n(cli, args, 1)
    }

    /// Like [`Connector::start`], waiting for `n` registered connections.
    pub fn start_n(cli: &Cli, args: &[&str], n: usize) -> Self {
        let mut c = Self::spawn(cli, args);
        c.wait_registered(n);
        c
    }

    /// Starts without waiting for anything. Unless `args` has `--metrics`, the metrics
    /// server gets `127.0.0.1:0`: the default port range (20241-20245) would run out when tests
    /// run connectors in parallel.
    pub fn spawn(cli: &Cli, args: &[&str]) -> Self {
        let mut cmd = cli.command(args);
        if args.contains(&"run") && !args.iter().any(|a| a.starts_with("--metrics")) {
            cmd.args(["--metrics", "127.0.0.1:0"]);
        }
        Self {
            proc: LoggedProc::spawn("connector", cmd),
        }
    }

    /// How many `Registered tunnel connection` lines it has logged.
    pub fn registered(&self) -> usize {
        self.registered_lines().len()
    }

    pub fn registered_lines(&self) -> Vec<String> {
        self.proc
            .log
            .stderr_lines()
            .into_iter()
            .chain(self.proc.log.stdout_lines())
            .filter(|l| l.contains(REGISTERED))
            .collect()
    }

    /// Waits (30 s failure limit) until `n` connections are registered.
    pub fn wait_registered(&mut self, n: usize) {
        self.proc.wait_output(
            &format!("{n} × {REGISTERED:?}"),
            Duration::from_secs(30),
            |log| {
                let count = log
                    .stderr_lines()
                    .iter()
                    .chain(log.stdout_lines().iter())
                    .filter(|l| l.contains(REGISTERED))
                    .count();
                (count >= n).then_some(())
            },
        );
    }

    /// The address of `Starting metrics server on IP:PORT/metrics`.
    pub fn metrics_addr(&mut self) -> SocketAddr {
        let marker = "Starting metrics server on ";
        self.proc
            .wait_output("the metrics server line", Duration::from_secs(30), |log| {
                log.stderr_lines()
                    .iter()
                    .chain(log.stdout_lines().iter())
                    .find_map(|l| {
                        let rest = &l[l.find(marker)? + marker.len()..];
                        let addr = rest.split("/metrics").next()?.trim();
                        let addr = addr.trim_start_matches("http://");
                        addr.parse::<SocketAddr>().ok()
                    })
            })
    }

    /// Everything the connector printed.
    pub fn logs(&self) -> String {
        self.proc.log.dump()
    }

    pub fn kill9(&mut self) {
        self.proc.proc.kill9();
    }
}

/// A real nginx (`/usr/sbin/nginx`, Debian's nginx-light) serving `root()` on a free loopback
/// port, as the invoking user (no `user` directive; `master_process off` keeps one process).
#[derive(Debug)]
pub struct Nginx {
    pub proc: LoggedProc,
    pub addr: SocketAddr,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

pub const NGINX_BIN: &str = "/usr/sbin/nginx";

impl Nginx {
    /// Starts nginx in a fresh temp dir; write the files to serve under [`Nginx::root`].
    pub fn start() -> Self {
        assert!(
            Path::new(NGINX_BIN).exists(),
            "{NGINX_BIN} missing: install Debian's nginx-light (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).expect("www");
        // The port was free a moment ago; another process may take it before nginx binds, so
        // a failed bind is retried on a new port.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let conf = Self::write_conf(dir.path(), &root, port);
            let mut cmd = Command::new(NGINX_BIN);
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .args(["-e", "stderr"]);
            let mut proc = LoggedProc::spawn("nginx", cmd);
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Self {
                        proc,
                        addr,
                        root,
                        _dir: dir,
                    };
                }
                if proc.exited().is_some() || Instant::now() >= deadline {
                    proc.proc.kill9();
                    last = proc.log.dump();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx did not start:\n{last}");
    }

    fn write_conf(dir: &Path, root: &Path, port: u16) -> PathBuf {
        let d = dir.display();
        // Temp paths of the modules compiled in, all inside the temp dir so that nginx writes
        // nothing under /var (and runs unprivileged).
        let v = Command::new(NGINX_BIN)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        let mut temps = format!("client_body_temp_path {d}/client_body;\n");
        for m in ["proxy", "fastcgi", "uwsgi", "scgi"] {
            if !v.contains(&format!("--without-http_{m}_module")) {
                temps.push_str(&format!("    {m}_temp_path {d}/{m}_temp;\n"));
            }
        }
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid {d}/nginx.pid;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    {temps}
    types {{
        text/html html;
        text/plain txt;
        application/json json;
        application/octet-stream bin;
    }}
    default_type application/octet-stream;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port};
        server_name _;
        root {root};
        location / {{
        }}
    }}
}}
"#,
            root = root.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        path
    }

    /// The document root: `root()/x.html` is served as `/x.html`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A small HTTP/1.1 origin on a loopback port, written for the tests:
/// - any request with a body (or any `POST`/`PUT`): `200`, body = hex SHA-256 of the request
///   body (Content-Length or chunked), header `X-Body-Length`;
/// - `GET /headers`: `200` JSON `{"method","path","tag","headers":[[name,value],…]}`;
/// - `GET /status/NNN`: status NNN;
/// - anything else: `200` text `tag=TAG path=PATH`.
///
/// Every answer carries `X-Origin-Tag: TAG` and has a Content-Length; connections are kept
/// alive. Closed on drop.
#[derive(Debug)]
pub struct HashOrigin {
    pub addr: SocketAddr,
    pub tag: String,
    requests: Arc<AtomicUsize>,
    last_body: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<usize, TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl HashOrigin {
    pub fn start(tag: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let last_body = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(HashMap::new()));
        let accept = {
            let (tag, requests, last_body, stop, conns) = (
                tag.to_string(),
                requests.clone(),
                last_body.clone(),
                stop.clone(),
                conns.clone(),
            );
            std::thread::spawn(move || {
                for (n, stream) in listener.incoming().enumerate() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    conns.lock().expect("conns").insert(n, clone);
                    let (tag, requests, last_body, conns) = (
                        tag.clone(),
                        requests.clone(),
                        last_body.clone(),
                        conns.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = serve_origin_conn(stream, &tag, &requests, &last_body);
                        // Close for real: the clone kept for drop would hold the socket open.
                        if let Some(c) = conns.lock().expect("conns").remove(&n) {
                            let _ = c.shutdown(std::net::Shutdown::Both);
                        }
                    });
                }
            })
        };
        Self {
            addr,
            tag: tag.to_string(),
            requests,
            last_body,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The body of the last request that had one, as received.
    pub fn last_body(&self) -> Vec<u8> {
        self.last_body.lock().expect("last body").clone()
    }
}

impl Drop for HashOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for (_, c) in self.conns.lock().expect("conns").drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// One parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A start line and its header fields.
type Head = (String, Vec<(String, String)>);

/// Reads header lines up to the blank line. `None` on a clean EOF before the first byte.
fn read_head_lines(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    // Tolerate stray blank lines between messages (RFC 9112 §2.2).
    loop {
        first.clear();
        if r.read_line(&mut first)? == 0 {
            return Ok(None);
        }
        if !first.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF inside a message head",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad header line {line:?}"),
            )
        })?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some((
        first.trim_end_matches(['\r', '\n']).to_string(),
        headers,
    )))
}

/// Reads a chunked body (trailers are read and dropped).
fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match read_chunks_into(r, &mut body) {
        Ok(()) => Ok(body),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{e} after {} decoded body bytes", body.len()),
        )),
    }
}

fn read_chunks_into(r: &mut impl BufRead, body: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF inside a chunked body",
            ));
        }
        let size_text = line.trim().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "chunk not followed by CRLF",
            ));
        }
    }
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    })
}

fn content_length(headers: &[(String, String)]) -> std::io::Result<Option<usize>> {
    match header_in(headers, "content-length") {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad Content-Length {v:?}"),
            )
        }),
    }
}

fn serve_origin_conn(
    stream: TcpStream,
    tag: &str,
    requests: &AtomicUsize,
    last_body: &Mutex<Vec<u8>>,
) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let Some((line, headers)) = read_head_lines(&mut r)? else {
            return Ok(());
        };
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let head = RequestHead {
            method,
            target,
            headers,
        };
        if head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = if is_chunked(&head.headers) {
            Some(read_chunked(&mut r)?)
        } else if let Some(n) = content_length(&head.headers)? {
            let mut b = vec![0u8; n];
            r.read_exact(&mut b)?;
            Some(b)
        } else {
            None
        };
        let close = head
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let path = head.target.split('?').next().unwrap_or("").to_string();
        let (status, ctype, extra, resp_body): (u16, &str, String, Vec<u8>) =
            if body.is_some() || head.method == "POST" || head.method == "PUT" {
                let b = body.unwrap_or_default();
                let hash = sha256_hex(&b);
                let len = b.len();
                *last_body.lock().expect("last body") = b;
                (
                    200,
                    "text/plain",
                    format!("X-Body-Length: {len}\r\n"),
                    hash.into_bytes(),
                )
            } else if path == "/headers" {
                let j = json!({
                    "method": head.method,
                    "path": head.target,
                    "tag": tag,
                    "headers": head.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                });
                (
                    200,
                    "application/json",
                    String::new(),
                    j.to_string().into_bytes(),
                )
            } else if let Some(code) = path
                .strip_prefix("/status/")
                .and_then(|c| c.parse::<u16>().ok())
            {
                (
                    code,
                    "text/plain",
                    String::new(),
                    format!("status {code}").into_bytes(),
                )
            } else {
                (
                    200,
                    "text/plain",
                    String::new(),
                    format!("tag={tag} path={}", head.target).into_bytes(),
                )
            };
        requests.fetch_add(1, Ordering::SeqCst);
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Origin-Tag: {tag}\r\n{extra}",
            reason(status),
            if head.method == "HEAD" {
                0
            } else {
                resp_body.len()
            },
        );
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if head.method != "HEAD" {
            bytes.extend_from_slice(&resp_body);
        }
        w.write_all(&bytes)?;
        w.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Where two byte strings first differ, for failure messages: lengths, the first differing
/// offset and a few bytes of each from there.
pub fn describe_difference(got: &[u8], want: &[u8]) -> String {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let at = first.unwrap_or(got.len().min(want.len()));
    let show = |b: &[u8]| hex::encode(&b[at.min(b.len())..(at + 16).min(b.len())]);
    format!(
        "got {} bytes, want {}; first difference at offset {at}: got {}…, want {}…",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift), so big bodies are not trivially compressible.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub reason: String,
    /// In wire order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
    /// Whether the body was chunked on the wire.
    pub chunked: bool,
}

impl HttpResponse {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Every value of this header, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Status, headers and (a prefix of) the body, for failure messages.
    pub fn summary(&self) -> String {
        let body = self.text();
        let body: String = body.chars().take(500).collect();
        format!(
            "{} {} {:?} body({} bytes): {body:?}",
            self.status,
            self.reason,
            self.headers,
            self.body.len()
        )
    }
}

/// An HTTP/1.1 client on one TCP connection that sends exact bytes and reads whole responses
/// (Content-Length, chunked, or delimited by close). Several requests may share the socket.
#[derive(Debug)]
pub struct RawClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawClient {
    /// Connects with a 60 s read/write failure limit.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_timeout(addr, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Connects with `timeout` as the connect and per-read/write limit.
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Self {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// The socket, e.g. to write a body in pieces.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.writer
    }

    /// Reads one response (1xx interim answers other than 101 are skipped). `head` says the
    /// request was HEAD, so no body follows whatever the headers say.
    pub fn read_response(&mut self, head: bool) -> std::io::Result<HttpResponse> {
        loop {
            let Some((line, headers)) = read_head_lines(&mut self.reader)? else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            };
            let mut parts = line.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            if !version.starts_with("HTTP/1.") {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                ));
            }
            let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
            let reason = parts.next().unwrap_or("").to_string();
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let chunked = is_chunked(&headers);
            let body = if head || status == 204 || status == 304 || (100..200).contains(&status) {
                Vec::new()
            } else if chunked {
                read_chunked(&mut self.reader)?
            } else if let Some(n) = content_length(&headers)? {
                let mut b = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    match self.reader.read(&mut b[got..]) {
                        Ok(0) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!("{status} response: EOF after {got} of {n} body bytes"),
                            ));
                        }
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Err(std::io::Error::new(
                                e.kind(),
                                format!("{status} response: {e} after {got} of {n} body bytes"),
                            ));
                        }
                    }
                }
                b
            } else {
                let mut b = Vec::new();
                self.reader.read_to_end(&mut b)?;
                b
            };
            return Ok(HttpResponse {
                status,
                reason,
                headers,
                body,
                chunked,
            });
        }
    }

    /// Sends `bytes` and reads the response.
    pub fn request(&mut self, bytes: &[u8], head: bool) -> std::io::Result<HttpResponse> {
        self.send(bytes)?;
        self.read_response(head)
    }

    /// Whether the peer has closed the connection (reads EOF within `wait`).
    pub fn peer_closed(&mut self, wait: Duration) -> bool {
        let _ = self.writer.set_read_timeout(Some(wait));
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// The bytes of a simple HTTP/1.1 request: request line, `Host`, `extra` headers, then
/// `Content-Length` if there is a body (and no framing header in `extra`), `Connection: close`
/// if `close`.
pub fn request_bytes(
    method: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let framed = extra.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if let Some(b) = body
        && !framed
    {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// `GET path` with `Host: host` on a fresh connection to `addr`, `Connection: close`.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> HttpResponse {
    let mut c = RawClient::connect(addr);
    c.request(&request_bytes("GET", host, path, &[], None, true), false)
        .unwrap_or_else(|e| panic!("GET http://{addr}{path} (Host: {host}): {e}"))
}

/// The encoding of `body` in chunks of `chunk` bytes, with the final zero chunk.
pub fn chunked_body(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk.max(1) * 10 + 8);
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Splits a shell command line into words (single quotes, double quotes with `\` escapes,
/// backslash escapes outside quotes), e.g. the curl line the quickstart prints.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        _ => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// A control plane, a logged-in CLI and an edge following the control plane, all in one temp
/// dir: the base of every data-path test.
#[derive(Debug)]
pub struct TunnelSetup {
    pub edge: Edge,
    pub s: Setup,
}

impl TunnelSetup {
    pub fn new(zone: &str) -> Self {
        Self::with_opts(zone, EdgeOpts::default())
    }

    pub fn with_opts(zone: &str, opts: EdgeOpts) -> Self {
        let s = Setup::new(&[zone]);
        let edge = Edge::start(&s.cp, &s.tmp.path().join("edge-state"), opts);
        Self { edge, s }
    }

    pub fn cli(&self) -> &Cli {
        &self.s.cli
    }

    /// `tunnel create NAME`, then `tunnel route dns NAME HOST` for each host; returns the id.
    pub fn tunnel(&self, name: &str, hosts: &[&str]) -> String {
        let id = self.s.cli.create(name, &[]);
        for h in hosts {
            self.route(name, h);
        }
        id
    }

    pub fn route(&self, name: &str, host: &str) {
        self.s.cli.run(&["tunnel", "route", "dns", name, host]).ok();
    }

    /// The credentials file `tunnel create` wrote for `id`.
    pub fn credentials_path(&self, id: &str) -> PathBuf {
        self.s.cli.cloudflared_dir().join(format!("{id}.json"))
    }

    /// `tunnel run --credentials-file … --url URL --edge … --cacert … [extra] NAME`, waiting for
    /// `n` registered connections.
    pub fn run_url(&self, name: &str, id: &str, url: &str, extra: &[&str], n: usize) -> Connector {
        let creds = self.credentials_path(id).display().to_string();
        let mut args: Vec<String> = ["tunnel", "run", "--credentials-file", &creds, "--url", url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(self.edge.connector_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(name.to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Connector::start_n(&self.s.cli, &refs, n)
    }

    /// Waits until `host` is served (any answer other than the edge's 404 and 530), i.e. the
    /// edge has both the DNS record and a live connection.
    pub fn wait_served(&self, host: &str) -> HttpResponse {
        self.edge.wait_get(
            &format!("{host} to be served"),
            host,
            "/",
            Duration::from_secs(30),
            |r| r.status != 404 && r.status != 530,
        )
    }
}

/// Like [`Edge::start`], but listening on the given addresses (e.g. those of an edge that was
/// just killed, so connectors find the restarted one where they left it).
pub fn edge_start_at(
    cp: &ControlPlane,
    dir: &Path,
    tunnel_addrs: &[SocketAddr],
    http_addr: SocketAddr,
) -> Edge {
    std::fs::create_dir_all(dir).expect("edge state dir");
    let mut cmd = Command::new(ringway_bin());
    cmd.args(["edge", "run", "--control", &cp.url])
        .args(["--edge-token", &cp.edge_token()])
        .arg("--state-dir")
        .arg(dir);
    for a in tunnel_addrs {
        cmd.args(["--tunnel-listen", &a.to_string()]);
    }
    cmd.args(["--http-listen", &http_addr.to_string()]);
    let mut proc = LoggedProc::spawn("edge", cmd);
    proc.wait_stdout("`edge ready`", Duration::from_secs(60), |l| {
        (l.trim() == "edge ready").then_some(())
    });
    let lines = proc.log.stdout_lines();
    let ca_path = lines
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("ca certificate at ")
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| proc.fail("printed no ca certificate path"));
    let printed_http = lines.iter().any(|l| {
        l.trim()
            .strip_prefix("http listening on http://")
            .is_some_and(|a| a.trim_end_matches('/') == http_addr.to_string())
    });
    if !printed_http {
        proc.fail(&format!("did not listen on http://{http_addr}"));
    }
    Edge {
        proc,
        state_dir: dir.to_path_buf(),
        http_addr,
        tunnel_addrs: tunnel_addrs.to_vec(),
        ca_path,
    }
}

// ---- Packet loss: a userspace lossy UDP relay ----

/// Datagrams a [`LossyRelay`] forwarded and dropped, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client → upstream.
    pub up_forwarded: u64,
    pub up_dropped: u64,
    /// Upstream → client.
    pub down_forwarded: u64,
    pub down_dropped: u64,
}

#[derive(Debug, Default)]
struct RelayCounters {
    up_forwarded: std::sync::atomic::AtomicU64,
    up_dropped: std::sync::atomic::AtomicU64,
    down_forwarded: std::sync::atomic::AtomicU64,
    down_dropped: std::sync::atomic::AtomicU64,
}

/// A deterministic xorshift64 stream deciding which datagrams to drop.
#[derive(Debug)]
struct DropDecider {
    x: u64,
    loss_percent: u32,
}

impl DropDecider {
    fn new(seed: u64, loss_percent: u32) -> Self {
        // Mix the seed so that nearby seeds give unrelated streams; never zero.
        let x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        Self {
            x: if x == 0 { 1 } else { x },
            loss_percent: loss_percent.min(100),
        }
    }

    fn drop_next(&mut self) -> bool {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x % 100) < u64::from(self.loss_percent)
    }
}

/// A UDP relay on a loopback port that forwards datagrams to `upstream` and the replies back,
/// dropping `loss_percent`% of them independently in each direction. For each client source
/// address it opens one upstream socket (so the upstream sees one peer per client) and a thread
/// that relays that socket's replies. Drop decisions come from xorshift streams seeded from
/// `seed` (one for the client → upstream direction, one per client for the replies), so a run
/// is reproducible. Stops (threads joined) on drop.
#[derive(Debug)]
pub struct LossyRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<RelayCounters>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl LossyRelay {
    pub fn start(upstream: SocketAddr, loss_percent: u32, seed: u64) -> Self {
        let listen = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        let addr = listen.local_addr().expect("relay addr");
        // The threads poll `stop` between reads.
        let tick = Some(Duration::from_millis(50));
        listen.set_read_timeout(tick).expect("relay read timeout");
        let listen = Arc::new(listen);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(RelayCounters::default());
        let threads = Arc::new(Mutex::new(Vec::new()));
        let main = {
            let (stop, counters, threads) = (stop.clone(), counters.clone(), threads.clone());
            std::thread::spawn(move || {
                let mut up_drops = DropDecider::new(seed, loss_percent);
                let mut clients: HashMap<SocketAddr, Arc<std::net::UdpSocket>> = HashMap::new();
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let (n, from) = match listen.recv_from(&mut buf) {
                        Ok(v) => v,
                        Err(_) => continue, // timeout, or an ICMP error from an earlier send
                    };
                    let up = match clients.get(&from) {
                        Some(s) => s.clone(),
                        None => {
                            let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else {
                                continue;
                            };
                            if s.connect(upstream).is_err() || s.set_read_timeout(tick).is_err() {
                                continue;
                            }
                            let s = Arc::new(s);
                            clients.insert(from, s.clone());
                            let k = clients.len() as u64;
                            let mut down_drops = DropDecider::new(
                                seed ^ k.wrapping_mul(0xA24B_AED4_963E_E407),
                                loss_percent,
                            );
                            let (stop, counters, listen, reply) =
                                (stop.clone(), counters.clone(), listen.clone(), s.clone());
                            let h = std::thread::spawn(move || {
                                let mut buf = vec![0u8; 65536];
                                while !stop.load(Ordering::SeqCst) {
                                    let Ok(n) = reply.recv(&mut buf) else {
                                        continue;
                                    };
                                    if down_drops.drop_next() {
                                        counters.down_dropped.fetch_add(1, Ordering::Relaxed);
                                    } else {
                                        counters.down_forwarded.fetch_add(1, Ordering::Relaxed);
                                        let _ = listen.send_to(&buf[..n], from);
                                    }
                                }
                            });
                            threads.lock().expect("relay threads").push(h);
                            s
                        }
                    };
                    if up_drops.drop_next() {
                        counters.up_dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.up_forwarded.fetch_add(1, Ordering::Relaxed);
                        let _ = up.send(&buf[..n]);
                    }
                }
            })
        };
        threads.lock().expect("relay threads").push(main);
        Self {
            addr,
            stop,
            counters,
            threads,
        }
    }

    /// Where clients send (e.g. a connector's `--edge`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> RelayStats {
        let c = &self.counters;
        RelayStats {
            up_forwarded: c.up_forwarded.load(Ordering::Relaxed),
            up_dropped: c.up_dropped.load(Ordering::Relaxed),
            down_forwarded: c.down_forwarded.load(Ordering::Relaxed),
            down_dropped: c.down_dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The main thread may still add a reply thread until it has seen `stop`, so join it
        // (it is first in the list) before taking the rest.
        let first = {
            let mut t = self.threads.lock().expect("relay threads");
            if t.is_empty() {
                None
            } else {
                Some(t.remove(0))
            }
        };
        if let Some(h) = first {
            let _ = h.join();
        }
        let rest: Vec<_> = self
            .threads
            .lock()
            .expect("relay threads")
            .drain(..)
            .collect();
        for h in rest {
            let _ = h.join();
        }
    }
}
