//! Origins behind the connector: a real nginx ([`Nginx`]), [`HashOrigin`], a small HTTP/1.1
//! server written for the tests that hashes request bodies and echoes request heads (over TCP,
//! TLS with a CA of its own, or a unix socket: [`UnixHashOrigin`]), and [`BlackholeOrigin`],
//! an address whose connects hang. It reads requests with the harness's own reader
//! ([`crate::http1`]), not the product's codec.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// For [`Nginx::start_https`]: the PEM of the CA that issued its certificate.
    ca_file: Option<PathBuf>,
    /// For [`Nginx::start_https`]: the certificate, key and CA files.
    _tls_dir: Option<tempfile::TempDir>,
    _dir: tempfile::TempDir,
}

/// nginx's TLS listener: certificate and key files.
struct NginxTls {
    cert: PathBuf,
    key: PathBuf,
}

const NGINX_BIN: &str = "/usr/sbin/nginx";

impl Nginx {
    /// Starts nginx in a fresh temp dir; write the files to serve under [`Nginx::root`].
    pub fn start() -> Self {
        Self::start_with(None, false)
    }

    /// Like [`Nginx::start`], speaking only cleartext HTTP/2 with prior knowledge (h2c): nginx's
    /// `listen ... http2` without `ssl` (an HTTP/1.1 client gets nothing it can read).
    pub fn start_h2c() -> Self {
        Self::start_with(None, true)
    }

    /// Like [`Nginx::start`], over TLS with HTTP/2 on the listener (nginx then speaks HTTP/2 to
    /// clients that offer `h2` by ALPN and HTTP/1.1 to the others), with a certificate for
    /// `names` from a CA of its own ([`Nginx::ca_file`]). `GET /proto` answers
    /// `proto=<the protocol nginx saw> host=<Host>\n`.
    pub fn start_https(names: &[&str]) -> Self {
        use dataplane::quic::tls::TlsMaterial;
        let ca = TlsMaterial::generate_ca().expect("nginx CA");
        let leaf = TlsMaterial::issue_server_cert(&ca, names).expect("nginx certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = NginxTls {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&tls.cert, &leaf.cert_chain_pem).expect("write cert");
        std::fs::write(&tls.key, &leaf.key_pem).expect("write key");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
        let mut nginx = Self::start_with(Some(tls), false);
        nginx.ca_file = Some(ca_file);
        nginx._tls_dir = Some(dir);
        nginx
    }

    /// The CA of [`Nginx::start_https`]'s certificate.
    pub fn ca_file(&self) -> &Path {
        self.ca_file.as_deref().expect("an https nginx")
    }

    fn start_with(tls: Option<NginxTls>, h2c: bool) -> Self {
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
            let conf = Self::write_conf(dir.path(), &root, port, tls.as_ref(), h2c);
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
                        ca_file: None,
                        _tls_dir: None,
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

    fn write_conf(
        dir: &Path,
        root: &Path,
        port: u16,
        tls: Option<&NginxTls>,
        h2c: bool,
    ) -> PathBuf {
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
        listen 127.0.0.1:{port}{listen_tls};
        {tls_files}
        server_name _;
        root {root};
        location / {{
        }}
        location = /proto {{
            default_type text/plain;
            return 200 "proto=$server_protocol host=$host\n";
        }}
    }}
}}
"#,
            root = root.display(),
            listen_tls = match (tls.is_some(), h2c) {
                (true, _) => " ssl http2",
                (false, true) => " http2",
                (false, false) => "",
            },
            tls_files = tls.map_or(String::new(), |t| format!(
                "ssl_certificate {};\n        ssl_certificate_key {};",
                t.cert.display(),
                t.key.display()
            )),
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
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }
}

/// A small HTTP/1.1 origin written for the tests, on a loopback port (plain or TLS, see
/// [`HashOrigin::start_tls`]) or a unix socket ([`UnixHashOrigin`]):
/// - any request with a body (or any `POST`/`PUT`): `200`, body = hex SHA-256 of the request
///   body (Content-Length or chunked), header `X-Body-Length`;
/// - `GET /headers`: `200` JSON `{"method","path","tag","headers":[[name,value],…]}`;
/// - `GET /status/NNN`: status NNN;
/// - `GET /together/K`: answers once K such requests are in the origin at the same time
///   (`200 together`; `504` if they never gather within 30 s), so K connections are open at
///   once;
/// - anything else: `200` text `tag=TAG path=PATH`.
///
/// Every answer carries `X-Origin-Tag: TAG` and has a Content-Length; connections are kept
/// alive. It records what it saw: requests, connections, the last body and the head it came
/// with, and on TLS the server name (SNI) each connection asked for. Closed on drop.
#[derive(Debug)]
pub struct HashOrigin {
    pub addr: SocketAddr,
    pub tag: String,
    tls: Option<OriginTls>,
    server: Server,
}

/// The certificate side of a TLS [`HashOrigin`]: a CA of its own (trusted by nothing unless a
/// test hands its PEM file over) and the server configuration with the leaf it issued.
#[derive(Debug)]
struct OriginTls {
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl HashOrigin {
    pub fn start(tag: &str) -> Self {
        Self::bind(tag, None)
    }

    /// An `https://` origin whose certificate covers only `names` (DNS names or IP addresses)
    /// and is signed by a fresh CA of its own: a client that does not trust that CA
    /// ([`HashOrigin::ca_file`]) sees an unknown issuer, as with a self-signed certificate.
    pub fn start_tls(tag: &str, names: &[&str]) -> Self {
        use dataplane::quic::tls::TlsMaterial;
        let ca = TlsMaterial::generate_ca().expect("origin CA");
        let leaf = TlsMaterial::issue_server_cert(&ca, names).expect("origin certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("origin-ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write origin CA");
        let config =
            rustls::ServerConfig::builder_with_provider(dataplane::tls::default_provider())
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(leaf.cert_chain.clone(), leaf.key.clone_key())
                .expect("origin TLS config");
        let mut origin = Self::bind(tag, Some(Arc::new(config)));
        origin.tls = Some(OriginTls { ca_file, _dir: dir });
        origin
    }

    fn bind(tag: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        Self {
            addr,
            tag: tag.to_string(),
            tls: None,
            server: Server::start(Listener::Tcp(listener), tag, tls),
        }
    }

    /// `http://ADDR`, or `https://ADDR` for a TLS origin.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The PEM file of the CA that signed a TLS origin's certificate (`--origin-ca-pool`).
    pub fn ca_file(&self) -> &Path {
        &self.tls.as_ref().expect("a TLS origin").ca_file
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.server.seen.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (TLS ones counted whether or not the handshake succeeded).
    pub fn connections(&self) -> usize {
        self.server.seen.connections.load(Ordering::SeqCst)
    }

    /// The body of the last request that had one, as received.
    pub fn last_body(&self) -> Vec<u8> {
        self.server.seen.last_body.lock().expect("seen").clone()
    }

    /// The header fields of the request [`HashOrigin::last_body`] came with, as received.
    pub fn last_body_headers(&self) -> Vec<(String, String)> {
        self.server
            .seen
            .last_body_headers
            .lock()
            .expect("seen")
            .clone()
    }

    /// The SNI of every completed TLS handshake, in order (`None`: the client sent none).
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.server.seen.server_names.lock().expect("seen").clone()
    }

    /// Why each failed TLS handshake failed, in order (e.g. the client's alert).
    pub fn tls_errors(&self) -> Vec<String> {
        self.server.seen.tls_errors.lock().expect("seen").clone()
    }
}

/// [`HashOrigin`]'s behaviour on a unix socket (`unix:PATH` services, `--unix-socket`).
#[derive(Debug)]
pub struct UnixHashOrigin {
    pub path: PathBuf,
    pub tag: String,
    server: Server,
}

impl UnixHashOrigin {
    /// Listens on `path` (which must not exist yet).
    pub fn start(tag: &str, path: &Path) -> Self {
        let listener =
            UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        Self {
            path: path.to_path_buf(),
            tag: tag.to_string(),
            server: Server::start(Listener::Unix(listener), tag, None),
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.server.seen.requests.load(Ordering::SeqCst)
    }
}

/// What an origin saw, shared with its connection threads.
#[derive(Debug, Default)]
struct Seen {
    requests: AtomicUsize,
    connections: AtomicUsize,
    last_body: Mutex<Vec<u8>>,
    last_body_headers: Mutex<Vec<(String, String)>>,
    server_names: Mutex<Vec<Option<String>>>,
    tls_errors: Mutex<Vec<String>>,
    gate: Mutex<Gate>,
    gathered: Condvar,
}

/// `GET /together/K`'s meeting point: requests waiting, and how many groups have met.
#[derive(Debug, Default)]
struct Gate {
    waiting: usize,
    groups: u64,
}

impl Seen {
    /// Waits until `k` requests (this one included) are here together; `false` if they were
    /// not within the failure limit.
    fn gather(&self, k: usize) -> bool {
        let mut g = self.gate.lock().expect("gate");
        let group = g.groups;
        g.waiting += 1;
        if g.waiting >= k {
            g.waiting = 0;
            g.groups += 1;
            self.gathered.notify_all();
            return true;
        }
        let (mut g, r) = self
            .gathered
            .wait_timeout_while(g, Duration::from_secs(30), |g| g.groups == group)
            .expect("gate");
        if r.timed_out() {
            g.waiting -= 1;
            return false;
        }
        true
    }
}

#[derive(Debug)]
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted connection, or the clone of one kept so that drop can close it.
#[derive(Debug)]
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush(),
            Sock::Unix(s) => s.flush(),
        }
    }
}

/// The accept loop and connection threads behind [`HashOrigin`] and [`UnixHashOrigin`].
#[derive(Debug)]
struct Server {
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<usize, Sock>>>,
    /// Where to connect to wake the accept loop on drop.
    wake: WakeAddr,
    accept: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
enum WakeAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Server {
    fn start(listener: Listener, tag: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let wake = match &listener {
            Listener::Tcp(l) => WakeAddr::Tcp(l.local_addr().expect("addr")),
            Listener::Unix(l) => WakeAddr::Unix(
                l.local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                    .expect("unix socket path"),
            ),
        };
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(HashMap::new()));
        let accept = {
            let (tag, seen, stop, conns) =
                (tag.to_string(), seen.clone(), stop.clone(), conns.clone());
            std::thread::spawn(move || {
                for n in 0.. {
                    let accepted = match &listener {
                        Listener::Tcp(l) => l.accept().map(|(s, _)| Sock::Tcp(s)),
                        Listener::Unix(l) => l.accept().map(|(s, _)| Sock::Unix(s)),
                    };
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = accepted else { continue };
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    seen.connections.fetch_add(1, Ordering::SeqCst);
                    conns.lock().expect("conns").insert(n, clone);
                    let (tag, seen, conns, tls) =
                        (tag.clone(), seen.clone(), conns.clone(), tls.clone());
                    std::thread::spawn(move || {
                        let _ = match tls {
                            None => serve_origin_conn(stream, &tag, &seen),
                            Some(config) => serve_tls_conn(stream, config, &tag, &seen),
                        };
                        // Close for real: the clone kept for drop would hold the socket open.
                        if let Some(c) = conns.lock().expect("conns").remove(&n) {
                            c.shutdown();
                        }
                    });
                }
            })
        };
        Self {
            seen,
            stop,
            conns,
            wake,
            accept: Some(accept),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        match &self.wake {
            WakeAddr::Tcp(a) => drop(TcpStream::connect(a)),
            WakeAddr::Unix(p) => drop(UnixStream::connect(p)),
        }
        for (_, c) in self.conns.lock().expect("conns").drain() {
            c.shutdown();
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Completes the TLS handshake (recording the SNI, or why it failed), then serves HTTP/1.1
/// inside it.
fn serve_tls_conn(
    mut sock: Sock,
    config: Arc<rustls::ServerConfig>,
    tag: &str,
    seen: &Seen,
) -> std::io::Result<()> {
    let mut conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    // Bound: each round moves handshake bytes or fails; the handshake is a few flights.
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            seen.tls_errors.lock().expect("seen").push(e.to_string());
            return Err(e);
        }
    }
    seen.server_names
        .lock()
        .expect("seen")
        .push(conn.server_name().map(str::to_owned));
    serve_origin_conn(rustls::StreamOwned::new(conn, sock), tag, seen)
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

fn serve_origin_conn(stream: impl Read + Write, tag: &str, seen: &Seen) -> std::io::Result<()> {
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
            r.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            r.get_mut().flush()?;
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
                *seen.last_body.lock().expect("seen") = b;
                *seen.last_body_headers.lock().expect("seen") = head.headers.clone();
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
            } else if let Some(k) = path
                .strip_prefix("/together/")
                .and_then(|k| k.parse::<usize>().ok())
            {
                let (code, text) = if seen.gather(k) {
                    (200, "together")
                } else {
                    (504, "the others never came")
                };
                (code, "text/plain", String::new(), text.as_bytes().to_vec())
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
        seen.requests.fetch_add(1, Ordering::SeqCst);
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
        let w = r.get_mut();
        w.write_all(&bytes)?;
        w.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// An origin address that accepts no connection: a TCP listener that never accepts, whose
/// accept queue is filled with connections held here, so the kernel drops every further SYN
/// and a client's connect hangs until its own timeout (127.0.0.1 never blackholes by itself,
/// and an unroutable address may be answered by a sandbox's network).
#[derive(Debug)]
pub struct BlackholeOrigin {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _held: Vec<TcpStream>,
}

impl BlackholeOrigin {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut held = Vec::new();
        // Bound: the accept queue is the listen backlog plus one (std listens with 128); a
        // connect that is not answered within the probe limit proves the queue full. The
        // limit is not a pass/fail timing: a slow answer only means one more probe.
        loop {
            assert!(
                held.len() < 10_000,
                "the accept queue of {addr} never filled"
            );
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(s) => held.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                Err(e) => panic!("connect {addr}: {e}"),
            }
        }
        Self {
            addr,
            _listener: listener,
            _held: held,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// An origin answering `GET /slow` with `slow answer` after `delay` (other paths at once,
/// each connection closed after its answer); sends on the channel when a `/slow` request
/// arrives. Returns its URL and that channel.
pub fn slow_origin(delay: Duration) -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let url = format!("http://{}", listener.local_addr().expect("origin addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                if head.starts_with(b"GET /slow ") {
                    let _ = tx.send(());
                    std::thread::sleep(delay);
                }
                let body = b"slow answer";
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(body);
            });
        }
    });
    (url, rx)
}
