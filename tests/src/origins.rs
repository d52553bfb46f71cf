//! Origins behind the connector: a real nginx ([`Nginx`]) and [`HashOrigin`], a small HTTP/1.1
//! server written for the tests that hashes request bodies and echoes request heads. It reads
//! requests with the harness's own reader ([`crate::http1`]), not the product's codec.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::http1::{content_length, header_in, is_chunked, read_chunked, read_head_lines, reason};
use crate::payload::sha256_hex;
use crate::process::{LoggedProc, free_port};

/// A real nginx (`/usr/sbin/nginx`, Debian's nginx-light) serving `root()` on a free loopback
/// port, as the invoking user (no `user` directive; `master_process off` keeps one process).
#[derive(Debug)]
pub struct Nginx {
    pub proc: LoggedProc,
    pub addr: SocketAddr,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

const NGINX_BIN: &str = "/usr/sbin/nginx";

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
struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
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
