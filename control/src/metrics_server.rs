//! The connector's metrics HTTP server: `/metrics` (Prometheus), `/ready` and `/healthcheck`,
//! with cloudflared's addresses and answers.
//!
//! It runs on its own std thread with blocking `std::net` sockets. It is off the data path (a
//! scrape every few seconds), so it needs no async runtime: tokio would be a second runtime in
//! the connector for one socket, and the monoio workers must not spend time on it. The
//! counters it serves are the lock-free [`TunnelMetrics`] the workers update; reading them
//! takes no lock either.
//!
//! Each client is served on a short-lived thread, at most [`MAX_CONNECTIONS`] at a time (a
//! connection beyond that is closed unanswered), with a deadline for the request head and a
//! write timeout, so a slow or silent client holds one slot for a few seconds and never blocks
//! the others. The head is
//! read up to its blank line, at most 8 KiB, and parsed by [`dataplane::http`], the one HTTP/1.1
//! codec; only the method and the origin-form path are used.
//!
//! Answers:
//! - `GET /metrics`: 200, `text/plain; version=0.0.4; charset=utf-8`,
//!   [`TunnelMetrics::render_prometheus`] with `connector_id` on `ringway_build_info`;
//! - `GET /ready`: `{"status":200,"readyConnections":N,"connectorId":"<uuid>"}` with HTTP 200
//!   when at least one edge connection is registered, else the same with 503 (cloudflared's
//!   body, byte for byte);
//! - `GET /healthcheck`: 200 `OK\n`;
//! - `HEAD` of these: the same head, no body; another method on them: 405;
//! - any other path: 404; a head over 8 KiB, or with too many fields: 431; any other head the
//!   codec rejects (an HTTP/1.1 request without Host among them, as Go's server answers), an
//!   empty request line, or a target that is not a path: 400.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::http::response::reason_phrase;
use dataplane::http::{RequestHeadError, parse_request_head};
use dataplane::metrics::TunnelMetrics;
use uuid::Uuid;

/// cloudflared's default metrics host.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// cloudflared's default metrics ports, tried in order; the first free one is used.
pub const DEFAULT_PORTS: std::ops::RangeInclusive<u16> = 20241..=20245;
/// Clients served at once; a connection beyond this is closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one write of the answer may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and for how many bytes, a connection is drained after its answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_MAX_BYTES: usize = 64 * 1024;
/// How long `shutdown` waits to connect to its own listener to wake the accept loop.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
const CONTENT_TYPE_JSON: &str = "application/json";

/// Binding the metrics listener failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address asked for (`--metrics`) could not be bound (or parsed).
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    /// None of the default addresses was free.
    #[error("cannot listen for metrics: tried {tried}; last error: {source}")]
    NoFreePort { tried: String, source: io::Error },
}

/// The metrics listener, as cloudflared picks it: `None` tries `127.0.0.1:20241`, then ports
/// 20242 to 20245, and takes the first free one; `Some(addr)` binds exactly `addr` (a
/// `host:port`, names resolved; port 0 picks a free port).
pub fn bind(requested: Option<&str>) -> Result<TcpListener, MetricsError> {
    match requested {
        Some(addr) => TcpListener::bind(addr).map_err(|source| MetricsError::Bind {
            addr: addr.to_string(),
            source,
        }),
        None => bind_first(DEFAULT_HOST, DEFAULT_PORTS),
    }
}

/// The first of `ports` on `host` that binds.
fn bind_first(
    host: IpAddr,
    ports: impl IntoIterator<Item = u16>,
) -> Result<TcpListener, MetricsError> {
    let mut tried = Vec::new();
    let mut last_error = None;
    for port in ports {
        let addr = SocketAddr::new(host, port);
        match TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "metrics address not available");
                tried.push(addr.to_string());
                last_error = Some(e);
            }
        }
    }
    Err(MetricsError::NoFreePort {
        tried: if tried.is_empty() {
            "no address".to_string()
        } else {
            tried.join(", ")
        },
        source: last_error.unwrap_or_else(|| io::Error::other("no port to try")),
    })
}

/// Limits of one server; the defaults are the constants above, tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    head_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            head_timeout: HEAD_TIMEOUT,
        }
    }
}

/// What the connection threads share.
#[derive(Debug)]
struct Shared {
    metrics: Arc<TunnelMetrics>,
    connector_id: String,
    /// `/quicktunnel`'s hostname; empty when not a quick tunnel (cloudflared answers `""`).
    quick_hostname: String,
    limits: Limits,
    active: AtomicUsize,
}

/// The running metrics server. Dropping it (or [`shutdown`](Self::shutdown)) stops the accept
/// thread and closes the listener; clients being served finish on their own threads.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `metrics` on `listener` (from [`bind`]) on a new thread named `ringway-metrics`.
    /// Fails only if the listener has no local address or the thread cannot be spawned.
    pub fn start(
        listener: TcpListener,
        metrics: Arc<TunnelMetrics>,
        connector_id: Uuid,
        quick_hostname: Option<String>,
    ) -> io::Result<Self> {
        Self::start_with(
            listener,
            metrics,
            connector_id,
            quick_hostname,
            Limits::default(),
        )
    }

    fn start_with(
        listener: TcpListener,
        metrics: Arc<TunnelMetrics>,
        connector_id: Uuid,
        quick_hostname: Option<String>,
        limits: Limits,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(false)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            metrics,
            connector_id: connector_id.to_string(),
            quick_hostname: quick_hostname.unwrap_or_default(),
            limits,
            active: AtomicUsize::new(0),
        });
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("ringway-metrics".into())
                .spawn(move || accept_loop(listener, shared, stop))?
        };
        tracing::debug!(%addr, "metrics server listening");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on (the port picked when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the accept thread and closes the listener; same as dropping the server.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        // The accept thread is blocked in accept(); one connection to ourselves wakes it, it
        // sees the flag and returns, dropping the listener.
        let wake = SocketAddr::new(
            match self.addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            },
            self.addr.port(),
        );
        match TcpStream::connect_timeout(&wake, WAKE_TIMEOUT) {
            Ok(stream) => {
                drop(stream);
                if thread.join().is_err() {
                    tracing::debug!("metrics accept thread panicked");
                }
            }
            // Not joined: the thread exits at its next accept.
            Err(e) => {
                tracing::debug!(addr = %wake, error = %e, "could not wake the metrics thread")
            }
        }
        tracing::debug!(addr = %self.addr, "metrics server stopped");
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Releases a connection slot when the connection's thread ends (or is never started).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                let max = shared.limits.max_connections;
                if shared.active.fetch_add(1, Ordering::AcqRel) >= max {
                    shared.active.fetch_sub(1, Ordering::AcqRel);
                    tracing::debug!(%peer, max, "metrics server busy; closing connection");
                    continue;
                }
                let slot = Slot(Arc::clone(&shared));
                let spawned = std::thread::Builder::new()
                    .name("ringway-metrics-conn".into())
                    .spawn(move || {
                        serve(stream, peer, &slot.0);
                        drop(slot);
                    });
                if let Err(e) = spawned {
                    // The closure, the slot with it, is dropped.
                    tracing::debug!(%peer, error = %e, "cannot spawn a metrics connection thread");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                // Out of descriptors and the like: do not spin.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Why no request was read.
enum ReadError {
    /// The head was rejected: answered with this status.
    Rejected(u16),
    /// Nothing to answer: the client went away, or its time ran out.
    Io(io::Error),
}

/// What a request asks for: the method and the path, query and fragment removed.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

/// Reads the request head, at most [`MAX_HEAD`] bytes, within `timeout` in all, and parses it
/// with the codec.
fn read_request(stream: &mut TcpStream, timeout: Duration) -> Result<Request, ReadError> {
    let deadline = Instant::now() + timeout;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Io(io::ErrorKind::TimedOut.into()));
        }
        stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        head.extend_from_slice(&chunk[..n]);
        if let Some(request) = parse_request(&head)? {
            return Ok(request);
        }
    }
}

/// `Ok(None)` while the head is incomplete.
fn parse_request(head: &[u8]) -> Result<Option<Request>, ReadError> {
    // The codec skips empty lines before a request (RFC 9112 §2.2 allows it); cloudflared's
    // Go server answers them with 400, and so does this one.
    if head.starts_with(b"\n") || head.starts_with(b"\r\n") {
        return Err(ReadError::Rejected(400));
    }
    let limits = dataplane::http::Limits {
        max_head_bytes: MAX_HEAD,
        ..Default::default()
    };
    let parsed = match parse_request_head(head, &limits) {
        Ok(None) => return Ok(None),
        Ok(Some((parsed, _))) => parsed,
        Err(e @ (RequestHeadError::TooLarge { .. } | RequestHeadError::TooManyHeaders { .. })) => {
            return Err(ReadError::Rejected(e.status()));
        }
        // Every other rejection (a version other than 1.x included) is a bad request here.
        Err(_) => return Err(ReadError::Rejected(400)),
    };
    if !parsed.target.starts_with('/') {
        return Err(ReadError::Rejected(400));
    }
    let path = parsed.target.split(['?', '#']).next().unwrap_or("/");
    Ok(Some(Request {
        path: path.to_owned(),
        method: parsed.method,
    }))
}

/// An answer to write.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: bool,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
            allow: false,
        }
    }

    fn text(status: u16, body: &str) -> Self {
        Self::new(status, CONTENT_TYPE_TEXT, body)
    }

    /// The bytes on the wire; `head_only` for a HEAD request.
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The answer to `method path`.
fn route(method: &str, path: &str, shared: &Shared) -> Response {
    let known = matches!(
        path,
        "/metrics" | "/ready" | "/healthcheck" | "/quicktunnel"
    );
    if !known {
        return Response::text(404, "404 page not found\n");
    }
    if method != "GET" && method != "HEAD" {
        let mut response = Response::text(405, "405 method not allowed\n");
        response.allow = true;
        return response;
    }
    match path {
        "/metrics" => Response::new(
            200,
            CONTENT_TYPE_METRICS,
            shared
                .metrics
                .render_prometheus(&[("connector_id", &shared.connector_id)]),
        ),
        "/ready" => {
            let ready = shared.metrics.ready_connections();
            let status = if ready >= 1 { 200 } else { 503 };
            let body = format!(
                r#"{{"status":{status},"readyConnections":{ready},"connectorId":"{}"}}"#,
                shared.connector_id
            );
            Response::new(status, CONTENT_TYPE_JSON, body)
        }
        "/quicktunnel" => Response::new(
            200,
            CONTENT_TYPE_JSON,
            format!(
                "{}\n",
                serde_json::json!({ "hostname": shared.quick_hostname })
            ),
        ),
        _ => Response::text(200, "OK\n"),
    }
}

/// Serves one client: reads its head, answers, closes.
fn serve(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let (response, head_only) = match read_request(&mut stream, shared.limits.head_timeout) {
        Ok(request) => {
            let response = route(&request.method, &request.path, shared);
            tracing::debug!(
                %peer,
                method = request.method,
                path = request.path,
                status = response.status,
                "metrics request"
            );
            (response, request.method == "HEAD")
        }
        Err(ReadError::Rejected(status)) => {
            tracing::debug!(%peer, status, "metrics server: request head rejected");
            let body = format!("{status} {}\n", reason_phrase(status));
            (Response::text(status, &body), false)
        }
        Err(ReadError::Io(e)) => {
            tracing::debug!(%peer, error = %e, "metrics server: no request read");
            return;
        }
    };
    let written = stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .and_then(|()| stream.write_all(&response.encode(head_only)))
        .and_then(|()| stream.flush());
    if let Err(e) = written {
        tracing::debug!(%peer, error = %e, "metrics server: answer not written");
    }
    linger_close(stream);
}

/// Closes after the answer without resetting it: sends FIN, then reads and drops what the
/// client still sends (a body, the rest of an oversized head) until it closes too, briefly.
/// Closing with unread input would send a reset, which can destroy the answer in flight.
fn linger_close(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_MAX_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
#[path = "metrics_server_tests.rs"]
mod tests;
