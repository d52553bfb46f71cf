//! Tests against real local origins: a scripted HTTP/1.1 server on std threads (TCP, unix,
//! or TLS via rustls), in-memory request bodies and a recording sink.
//!
//! - `mod.rs`: the harness ([`Origin`], [`VecBody`], [`Recorder`], [`run`]).
//! - `http.rs`: framing, keep-alive, retries, errors, over TCP.
//! - `other.rs`: unix sockets, TLS, the built-in services, parsing helpers.
//! - `http2.rs`: `http2Origin` against an HTTP/2 origin (the `h2` crate's server over
//!   tokio-rustls) and against origins that decline it.
//!
//! Pass/fail never depends on timing: servers answer when asked, and where a race is
//! possible (an idle connection closed by the origin) every branch leads to the same result.

mod http;
mod http2;
mod other;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;

/// A request as the origin saw it.
#[derive(Debug, Clone, Default)]
pub(super) struct SeenRequest {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) headers: Vec<(String, String)>,
    /// Decoded body.
    pub(super) body: Vec<u8>,
    /// Body bytes exactly as they came on the wire (chunked framing included).
    pub(super) raw_body: Vec<u8>,
    /// Which accepted connection (0-based) and which request on it.
    pub(super) conn: usize,
    pub(super) nth: usize,
}

impl SeenRequest {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.0.eq_ignore_ascii_case(name))
            .map(|h| h.1.as_str())
    }
}

/// What the origin does with a request.
pub(super) enum Action {
    /// Write these bytes and keep reading requests.
    Reply(Vec<u8>),
    /// Write these bytes, then close.
    ReplyClose(Vec<u8>),
    /// Close without answering.
    Close,
}

type Respond = dyn Fn(&SeenRequest) -> Action + Send + Sync;

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A scripted origin: accepts in a loop on its own thread, one thread per connection.
pub(super) struct Origin {
    pub(super) addr: Option<SocketAddr>,
    pub(super) accepts: Arc<AtomicUsize>,
    pub(super) seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl Origin {
    pub(super) fn tcp(respond: impl Fn(&SeenRequest) -> Action + Send + Sync + 'static) -> Self {
        Self::tcp_tls(None, respond)
    }

    pub(super) fn tcp_tls(
        tls: Option<Arc<rustls::ServerConfig>>,
        respond: impl Fn(&SeenRequest) -> Action + Send + Sync + 'static,
    ) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut o = Self::start(Listener::Tcp(l), tls, Arc::new(respond));
        o.addr = Some(addr);
        o
    }

    pub(super) fn unix(
        path: &Path,
        respond: impl Fn(&SeenRequest) -> Action + Send + Sync + 'static,
    ) -> Self {
        let l = UnixListener::bind(path).expect("bind unix");
        Self::start(Listener::Unix(l), None, Arc::new(respond))
    }

    fn start(
        listener: Listener,
        tls: Option<Arc<rustls::ServerConfig>>,
        respond: Arc<Respond>,
    ) -> Self {
        let accepts = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (accepts.clone(), seen.clone());
        // The accept thread lives until the test process ends (it blocks in accept).
        std::thread::spawn(move || {
            // Bound: a test makes a handful of connections.
            loop {
                let stream: Box<dyn Stream> = match &listener {
                    Listener::Tcp(l) => match l.accept() {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => return,
                    },
                    Listener::Unix(l) => match l.accept() {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => return,
                    },
                };
                let conn = a.fetch_add(1, Ordering::SeqCst);
                let stream: Box<dyn Stream> = match &tls {
                    Some(cfg) => {
                        let Ok(c) = rustls::ServerConnection::new(cfg.clone()) else {
                            continue;
                        };
                        Box::new(rustls::StreamOwned::new(c, stream))
                    }
                    None => stream,
                };
                let (respond, seen) = (respond.clone(), s.clone());
                std::thread::spawn(move || serve(stream, conn, &*respond, &seen));
            }
        });
        Self {
            addr: None,
            accepts,
            seen,
        }
    }

    pub(super) fn port(&self) -> u16 {
        self.addr.expect("tcp origin").port()
    }

    pub(super) fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub(super) fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen").clone()
    }

    /// A plain-HTTP target for this origin.
    pub(super) fn target(&self) -> OriginTarget {
        OriginTarget {
            service: OriginService::Http {
                https: false,
                host: "127.0.0.1".to_owned(),
                port: self.port(),
            },
            options: OriginOptions::default(),
        }
    }
}

fn serve(stream: Box<dyn Stream>, conn: usize, respond: &Respond, seen: &Mutex<Vec<SeenRequest>>) {
    let mut r = BufReader::new(stream);
    // Bound: the client's requests on this connection; ends at EOF or error.
    for nth in 0.. {
        let Ok(Some(mut req)) = read_request(&mut r) else {
            return;
        };
        req.conn = conn;
        req.nth = nth;
        seen.lock().expect("seen").push(req.clone());
        let (bytes, close) = match respond(&req) {
            Action::Reply(b) => (b, false),
            Action::ReplyClose(b) => (b, true),
            Action::Close => return,
        };
        let w = r.get_mut();
        if w.write_all(&bytes).and_then(|()| w.flush()).is_err() || close {
            return;
        }
    }
}

/// One line, each byte read as the char of the same number (Latin-1), so header bytes that
/// are not UTF-8 are recorded exactly: `\xe9` reads as `é` (U+00E9).
fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    let text: String = line.iter().map(|&b| char::from(b)).collect();
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}

fn read_request(r: &mut impl BufRead) -> io::Result<Option<SeenRequest>> {
    let Some(line) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let mut req = SeenRequest {
        method: parts.next().unwrap_or("").to_owned(),
        target: parts.next().unwrap_or("").to_owned(),
        ..Default::default()
    };
    // Bound: header lines until the empty one.
    while let Some(line) = read_line(r)? {
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap_or((&line, ""));
        req.headers.push((n.to_owned(), v.trim().to_owned()));
    }
    if let Some(n) = req.header("content-length") {
        let mut body = vec![0; n.parse().expect("content-length")];
        r.read_exact(&mut body)?;
        req.raw_body = body.clone();
        req.body = body;
    } else if req.header("transfer-encoding") == Some("chunked") {
        // Bound: the chunks of one body, ended by the zero chunk.
        loop {
            let size_line = read_line(r)?.unwrap_or_default();
            req.raw_body.extend_from_slice(size_line.as_bytes());
            req.raw_body.extend_from_slice(b"\r\n");
            let size = usize::from_str_radix(&size_line, 16).expect("chunk size");
            let mut data = vec![0; size + 2];
            r.read_exact(&mut data)?;
            req.raw_body.extend_from_slice(&data);
            req.body.extend_from_slice(&data[..size]);
            if size == 0 {
                break;
            }
        }
    }
    Ok(Some(req))
}

/// `HTTP/1.1 200 OK` with a Content-Length body and extra header lines.
pub(super) fn ok(body: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A request body from memory; counts polls.
pub(super) struct VecBody {
    chunks: VecDeque<Bytes>,
    pub(super) polls: Rc<Cell<usize>>,
}

impl VecBody {
    pub(super) fn new(chunks: Vec<Bytes>) -> Self {
        Self {
            chunks: chunks.into(),
            polls: Rc::default(),
        }
    }

    pub(super) fn empty() -> Self {
        Self::new(Vec::new())
    }
}

impl RequestBody for VecBody {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.polls.set(self.polls.get() + 1);
        Ok(self.chunks.pop_front())
    }
}

/// What the sink received.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    pub(super) head: Option<OriginResponse>,
    pub(super) body: Vec<u8>,
    pub(super) heads: usize,
}

impl Recorded {
    pub(super) fn status(&self) -> u16 {
        self.head.as_ref().expect("head").status
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.head
            .as_ref()?
            .headers
            .iter()
            .find(|h| h.0.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(&h.1).ok())
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
pub(super) struct Recorder(Rc<RefCell<Recorded>>);

impl ResponseSink for Recorder {
    async fn send_head(&mut self, head: OriginResponse) -> io::Result<()> {
        let mut r = self.0.borrow_mut();
        assert!(r.body.is_empty(), "head after body");
        r.heads += 1;
        r.head = Some(head);
        Ok(())
    }

    async fn send_body(&mut self, chunk: Bytes) -> io::Result<()> {
        let mut r = self.0.borrow_mut();
        assert!(r.head.is_some(), "body before head");
        assert!(!chunk.is_empty(), "empty body chunk");
        r.body.extend_from_slice(&chunk);
        Ok(())
    }
}

pub(super) fn get(path: &str) -> OriginRequest {
    req("GET", path, Vec::new())
}

pub(super) fn req(method: &str, path: &str, headers: Vec<(&str, &str)>) -> OriginRequest {
    OriginRequest {
        method: method.to_owned(),
        dest: format!("https://app.example.com{path}"),
        host: "app.example.com".to_owned(),
        headers: headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
        upgrade: None,
    }
}

/// One proxied request: the result and what the sink got.
pub(super) async fn call(
    client: &OriginClient,
    target: &OriginTarget,
    req: OriginRequest,
    body: VecBody,
) -> (Result<(), ProxyError>, Recorded) {
    let rec = Recorder::default();
    let out = rec.0.clone();
    let res = client.proxy(target, req, body, rec).await;
    let recorded = std::mem::take(&mut *out.borrow_mut());
    (res, recorded)
}

/// A TLS server configuration whose certificate (for `names`) is signed by a fresh CA;
/// returns the CA and its PEM in a temp file too.
pub(super) fn tls_server(
    names: &[&str],
) -> (
    rustls::ServerConfig,
    crate::quic::CertificateAuthority,
    tempfile::NamedTempFile,
) {
    let ca = crate::quic::TlsMaterial::generate_ca().expect("ca");
    let leaf = crate::quic::TlsMaterial::issue_server_cert(&ca, names).expect("leaf");
    let provider = crate::tls::crypto_provider(crate::tls::default_kx_groups());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(leaf.cert_chain.clone(), leaf.key.clone_key())
        .expect("server config");
    let mut pem = tempfile::NamedTempFile::new().expect("pem file");
    pem.write_all(ca.cert_pem().as_bytes()).expect("write pem");
    (config, ca, pem)
}

pub(super) fn run<F: std::future::Future>(f: F) -> F::Output {
    crate::runtime::block_on(f)
}
