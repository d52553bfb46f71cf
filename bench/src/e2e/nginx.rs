//! The origin: Debian's nginx (the default) or loadgen's built-in origin.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::procs::{Procs, free_port, get_ok, http_request};

pub const NGINX: &str = "/usr/sbin/nginx";
const ECHO_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";
const SMALL_BODY: &[u8] = b"hello world\n";
const BIG: usize = 1 << 20;

/// A running origin and the paths that the scenarios request from it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `nginx` or `builtin`, for the report.
    pub kind: String,
    /// Version and how `/upload` reads bodies, for the report.
    pub detail: String,
    pub addr: SocketAddr,
    /// Index in [`Procs`] (its CPU is measured too).
    pub proc: usize,
    pub small: String,
    pub big: String,
    pub upload: String,
}

/// Starts nginx with a 12-byte `/small`, a 1 MiB `/1m` and a `/upload` that reads the whole
/// body before it answers, then checks all three.
pub fn start_nginx(procs: &mut Procs, work: &Path) -> Result<Origin> {
    if !Path::new(NGINX).exists() {
        bail!("origin: {NGINX} is missing (apt-get install -y nginx-light)");
    }
    let dir = work.join("nginx");
    let www = work.join("www");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("small"), SMALL_BODY)?;
    std::fs::write(www.join("1m"), random_bytes(BIG)?)?;
    let port = free_port()?;
    // `sendfile on; tcp_nopush on`, as in Debian's stock nginx.conf: without tcp_nopush the
    // head and a small body leave as two segments, and through rathole that showed as
    // delayed-ACK-sized 40 ms stalls at p99, a cost of the origin's config, not of the tunnel.
    // `return 200` alone answers before the body arrives and then discards it, so an upload
    // would be timed against nothing; the echo module (or, without it, proxying with request
    // buffering) makes nginx read the full body first.
    let echo = Path::new(ECHO_MODULE).exists();
    let sink_port = if echo { 0 } else { free_port()? };
    let conf = nginx_conf(&dir, &www, port, echo, sink_port);
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new(NGINX);
    cmd.arg("-c").arg(&conf_path).arg("-p").arg(&dir);
    let i = procs.spawn("nginx", cmd).context("origin: start nginx")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    procs
        .get(i)
        .wait_until("nginx answering GET /small", || {
            get_ok(addr, "/small", None)
        })
        .context("origin: nginx")?;
    let how = if echo {
        "echo_read_request_body"
    } else {
        "proxy with request buffering"
    };
    let origin = Origin {
        kind: "nginx".into(),
        detail: format!(
            "{} worker_processes 1, sendfile + tcp_nopush, /upload via {how}",
            nginx_version()
        ),
        addr,
        proc: i,
        small: "/small".into(),
        big: "/1m".into(),
        upload: "/upload".into(),
    };
    check_origin(&origin)?;
    Ok(origin)
}

fn nginx_conf(dir: &Path, www: &Path, port: u16, echo: bool, sink_port: u16) -> String {
    let d = dir.display();
    let (load, upload, sink) = if echo {
        (
            format!("load_module {ECHO_MODULE};\n"),
            "echo_read_request_body; echo \"ok\";".to_string(),
            String::new(),
        )
    } else {
        (
            String::new(),
            "proxy_pass_request_body off; proxy_set_header Content-Length \"\"; \
             proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://sink;"
                .to_string(),
            format!(
                "  upstream sink {{ server 127.0.0.1:{sink_port}; keepalive 16; }}\n  \
                 server {{ listen 127.0.0.1:{sink_port}; location / {{ return 200 \"ok\\n\"; }} }}\n"
            ),
        )
    };
    format!(
        "{load}daemon off;
master_process off;
worker_processes 1;
error_log stderr error;
pid {d}/nginx.pid;
events {{ worker_connections 8192; }}
worker_rlimit_nofile 16384;
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  sendfile on;
  tcp_nopush on;
{sink}  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {www};
    location = /upload {{ client_max_body_size 4m; client_body_buffer_size 4m; {upload} }}
  }}
}}
",
        www = www.display()
    )
}

/// Starts `loadgen-origin` (GET any path: 12 bytes, `/bytes/N`: N bytes, POST: reads the body).
pub fn start_builtin(procs: &mut Procs, bin: &Path) -> Result<Origin> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0"]);
    let i = procs
        .spawn("origin", cmd)
        .context("origin: start loadgen-origin")?;
    let line = procs
        .get(i)
        .wait_line("listening ")
        .context("origin: loadgen-origin")?;
    let addr: SocketAddr = line
        .parse()
        .with_context(|| format!("origin: loadgen-origin printed 'listening {line}'"))?;
    let origin = Origin {
        kind: "builtin".into(),
        detail: format!("{}", bin.display()),
        addr,
        proc: i,
        small: "/small".into(),
        big: format!("/bytes/{BIG}"),
        upload: "/upload".into(),
    };
    check_origin(&origin)?;
    Ok(origin)
}

/// Checks what the scenarios rely on: sizes of both GETs, and that `/upload` answers 200
/// only after the whole body arrived.
fn check_origin(o: &Origin) -> Result<()> {
    let (st, body) = http_request(o.addr, "GET", &o.small, None, b"")?;
    if st != 200 || body != SMALL_BODY {
        bail!(
            "origin check: GET {} answered {st} with {} bytes, want 200 and 12",
            o.small,
            body.len()
        );
    }
    let (st, body) = http_request(o.addr, "GET", &o.big, None, b"")?;
    if st != 200 || body.len() != BIG {
        bail!(
            "origin check: GET {} answered {st} with {} bytes, want 200 and {BIG}",
            o.big,
            body.len()
        );
    }
    check_upload_reads_body(o.addr, &o.upload).context("origin check: POST /upload")
}

fn check_upload_reads_body(addr: SocketAddr, path: &str) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {BIG}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes())?;
    s.write_all(&[b'a'; 1000])?;
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(n) if n > 0 => bail!(
            "answered before the body was sent: {:?}",
            String::from_utf8_lossy(&b[..n])
        ),
        Ok(_) => bail!("closed the connection before the body was sent"),
        Err(_) => {} // no answer yet: it is waiting for the body, as it should
    }
    s.write_all(&vec![b'a'; BIG - 1000])?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    if !text.starts_with("HTTP/1.1 200") {
        bail!("answered {:?}", text.lines().next().unwrap_or(""));
    }
    Ok(())
}

fn nginx_version() -> String {
    Command::new(NGINX)
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .replace("nginx version: ", "")
        })
        .unwrap_or_else(|| "nginx".into())
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut v))
        .context("read /dev/urandom")?;
    Ok(v)
}
