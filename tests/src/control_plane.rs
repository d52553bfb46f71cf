//! The control plane fixture ([`ControlPlane`]: `ringway control serve` on a free loopback
//! port) and the helpers that call its API directly: JSON requests ([`http`], [`http_raw`],
//! [`post_form`]), the edge's connection registration, and the queries several tests share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{Proc, ringway_bin};

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
        ("PATCH", Some(b)) => agent.patch(url).header("Authorization", &auth).send_json(b),
        (m, _) => panic!("unsupported method {m}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json)
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

/// The origin addresses of a load-balancer pool object, sorted.
pub fn pool_origins(pool: &Value) -> Vec<String> {
    let mut addrs: Vec<String> = pool["origins"]
        .as_array()
        .unwrap_or_else(|| panic!("pool without origins: {pool}"))
        .iter()
        .map(|o| o["address"].as_str().expect("origin address").to_string())
        .collect();
    addrs.sort();
    addrs
}
