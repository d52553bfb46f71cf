//! The CLI runner ([`Cli`]: `ringway` with an isolated `$HOME` and no `TUNNEL_*` variables),
//! [`Setup`] (a control plane plus a logged-in home), and readers of what the CLI writes and
//! prints: cert.pem, tunnel tokens, `tunnel list`'s table, file modes, shell lines.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::control_plane::ControlPlane;
use crate::process::ringway_bin;

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

    /// Asserts that stderr (where cloudflared's commands report what they did) contains `text`.
    pub fn stderr_says(self, text: &str) -> Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}: {}",
            self.stderr
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

/// Writes `text` to `dir/name` (e.g. a config.yml to pass with `--config`) and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.display().to_string()
}
