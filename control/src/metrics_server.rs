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
    ) -> io::Result<Self> {
        Self::start_with(listener, metrics, connector_id, Limits::default())
    }

    fn start_with(
        listener: TcpListener,
        metrics: Arc<TunnelMetrics>,
        connector_id: Uuid,
        limits: Limits,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(false)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            metrics,
            connector_id: connector_id.to_string(),
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
    let known = matches!(path, "/metrics" | "/ready" | "/healthcheck");
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
mod tests {
    use super::*;

    /// A server on an ephemeral loopback port.
    fn start_server(limits: Limits) -> (MetricsServer, Arc<TunnelMetrics>, Uuid) {
        let metrics = Arc::new(TunnelMetrics::new());
        let id = Uuid::new_v4();
        let listener = bind(Some("127.0.0.1:0")).unwrap();
        let server = MetricsServer::start_with(listener, Arc::clone(&metrics), id, limits).unwrap();
        (server, metrics, id)
    }

    struct Answer {
        status: u16,
        head: String,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().skip(1).find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }
    }

    /// Sends `raw`, reads to the end, splits the answer.
    fn exchange(addr: SocketAddr, raw: &[u8]) -> Answer {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(raw).unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .expect("status line");
        let answer = Answer {
            status,
            head: head.to_string(),
            body: body.to_string(),
        };
        let length: usize = answer.header("content-length").unwrap().parse().unwrap();
        if !raw.starts_with(b"HEAD ") {
            assert_eq!(length, answer.body.len());
        }
        answer
    }

    fn get(addr: SocketAddr, target: &str) -> Answer {
        exchange(
            addr,
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n")
                .as_bytes(),
        )
    }

    #[test]
    fn ready_is_503_until_a_connection_is_up() {
        let (server, metrics, id) = start_server(Limits::default());
        let addr = server.local_addr();

        let answer = get(addr, "/ready");
        assert_eq!(answer.status, 503);
        assert_eq!(
            answer.body,
            format!(r#"{{"status":503,"readyConnections":0,"connectorId":"{id}"}}"#)
        );
        assert_eq!(answer.header("content-type"), Some("application/json"));

        metrics.ha_connection_up();
        let answer = get(addr, "/ready");
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.body,
            format!(r#"{{"status":200,"readyConnections":1,"connectorId":"{id}"}}"#)
        );

        metrics.ha_connection_up();
        metrics.ha_connection_up();
        metrics.ha_connection_up();
        let answer = get(addr, "/ready");
        assert_eq!(answer.status, 200);
        assert!(answer.body.contains(r#""readyConnections":4,"#));

        for _ in 0..4 {
            metrics.ha_connection_down();
        }
        assert_eq!(get(addr, "/ready").status, 503);
    }

    #[test]
    fn metrics_serves_the_counters() {
        let (server, metrics, id) = start_server(Limits::default());
        metrics.request_started();
        metrics.request_finished(200);
        metrics.request_started();
        metrics.request_finished(404);
        metrics.ha_connection_up();

        let answer = get(server.local_addr(), "/metrics");
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let lines: Vec<&str> = answer.body.lines().collect();
        for expected in [
            "# TYPE cloudflared_tunnel_total_requests counter",
            "cloudflared_tunnel_total_requests 2",
            "cloudflared_tunnel_ha_connections 1",
            "cloudflared_tunnel_response_by_code{status_code=\"200\"} 1",
            "cloudflared_tunnel_response_by_code{status_code=\"404\"} 1",
        ] {
            assert!(lines.contains(&expected), "{expected:?} in {}", answer.body);
        }
        let build = format!(
            "ringway_build_info{{version=\"{}\",connector_id=\"{id}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(lines.contains(&build.as_str()), "{}", answer.body);

        // A query string does not change the path.
        assert_eq!(get(server.local_addr(), "/metrics?x=1").status, 200);
    }

    #[test]
    fn healthcheck_not_found_and_methods() {
        let (server, _metrics, _id) = start_server(Limits::default());
        let addr = server.local_addr();

        let answer = get(addr, "/healthcheck");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "OK\n");

        for path in ["/", "/nope", "/metricsx", "/metrics/", "/READY"] {
            assert_eq!(get(addr, path).status, 404, "{path}");
        }

        let answer = exchange(addr, b"HEAD /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-length"), Some("3"));
        assert_eq!(answer.body, "");

        let answer = exchange(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(answer.status, 405);
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
        assert_eq!(
            exchange(addr, b"DELETE /nope HTTP/1.1\r\nHost: x\r\n\r\n").status,
            404
        );

        // HTTP/1.0 and bare newlines are fine.
        assert_eq!(exchange(addr, b"GET /ready HTTP/1.0\n\n").status, 503);
    }

    #[test]
    fn bad_requests() {
        let (server, _metrics, _id) = start_server(Limits::default());
        let addr = server.local_addr();
        for raw in [
            &b"garbage\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"G\xffT /metrics HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            b"\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            // HTTP/1.1 requires Host (Go's server, and so cloudflared's, answers 400 too).
            b"GET /metrics HTTP/1.1\r\n\r\n",
            b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(
                exchange(addr, raw).status,
                400,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }

        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(exchange(addr, &big).status, 431);
    }

    #[test]
    fn slow_clients_do_not_block_others() {
        let (server, _metrics, _id) = start_server(Limits {
            max_connections: 4,
            head_timeout: Duration::from_millis(300),
        });
        let addr = server.local_addr();

        // A client that sends half a request and then nothing.
        let mut silent = TcpStream::connect(addr).unwrap();
        silent.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let started = Instant::now();
        assert_eq!(get(addr, "/healthcheck").status, 200);

        // The server gives up on it after the head timeout, without an answer.
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = silent.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(started.elapsed() < Duration::from_secs(9));
    }

    #[test]
    fn connections_over_the_cap_are_closed() {
        let (server, _metrics, _id) = start_server(Limits {
            max_connections: 1,
            head_timeout: Duration::from_secs(30),
        });
        let addr = server.local_addr();

        // Takes the only slot; accepted before the next one (one accept loop, in order).
        let holder = TcpStream::connect(addr).unwrap();
        let mut over = TcpStream::connect(addr).unwrap();
        over.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut bytes = Vec::new();
        // Closed without an answer (EOF, or a reset if our request was already there).
        let _ = over.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = over.read_to_end(&mut bytes);
        assert!(bytes.is_empty());

        // The slot comes back when the holder goes away.
        drop(holder);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = stream.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            if bytes.starts_with(b"HTTP/1.1 200 OK\r\n") {
                break;
            }
            assert!(Instant::now() < deadline, "slot never released");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn shutdown_closes_the_listener() {
        let (server, _metrics, _id) = start_server(Limits::default());
        let addr = server.local_addr();
        assert_eq!(get(addr, "/healthcheck").status, 200);
        server.shutdown();
        assert!(TcpStream::connect(addr).is_err());

        // Drop does the same.
        let (server, _metrics, _id) = start_server(Limits::default());
        let addr = server.local_addr();
        drop(server);
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn bind_takes_the_first_free_port() {
        let taken_a = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_b = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = taken_a.local_addr().unwrap().port();
        let b = taken_b.local_addr().unwrap().port();
        let host = IpAddr::V4(Ipv4Addr::LOCALHOST);

        let err = bind_first(host, [a, b]).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("127.0.0.1:{a}"))
                && message.contains(&format!("127.0.0.1:{b}")),
            "{message}"
        );
        assert!(matches!(err, MetricsError::NoFreePort { .. }));

        // Port 0 stands for "a free one" after the taken ones.
        let listener = bind_first(host, [a, b, 0]).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port != a && port != b && port != 0);

        assert!(bind_first(host, []).is_err());
    }

    #[test]
    fn bind_an_explicit_address() {
        let listener = bind(Some("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);

        // Taken: the error names the address.
        let err = bind(Some(&addr.to_string())).unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");

        let err = bind(Some("not an address")).unwrap_err();
        assert!(err.to_string().contains("not an address"), "{err}");
    }

    #[test]
    fn default_bind_lands_in_cloudflareds_range() {
        // Only when some default port is free on this machine; otherwise the error is checked.
        match bind(None) {
            Ok(listener) => {
                let addr = listener.local_addr().unwrap();
                assert_eq!(addr.ip(), DEFAULT_HOST);
                assert!(DEFAULT_PORTS.contains(&addr.port()));
            }
            Err(e) => assert!(e.to_string().contains("127.0.0.1:20241"), "{e}"),
        }
    }

    #[test]
    fn request_heads() {
        let ok = |raw: &[u8]| match parse_request(raw) {
            Ok(Some(r)) => (r.method, r.path),
            Ok(None) => panic!("incomplete: {}", String::from_utf8_lossy(raw)),
            Err(_) => panic!("rejected: {}", String::from_utf8_lossy(raw)),
        };
        let rejected = |raw: &[u8]| match parse_request(raw) {
            Err(ReadError::Rejected(status)) => status,
            _ => panic!("not rejected: {}", String::from_utf8_lossy(raw)),
        };
        assert_eq!(
            ok(b"GET /metrics?a=b HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("GET".into(), "/metrics".into())
        );
        assert_eq!(
            ok(b"HEAD /ready#x HTTP/1.0\n\n"),
            ("HEAD".into(), "/ready".into())
        );
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nA: b\r\n"),
            Ok(None)
        ));
        assert_eq!(
            rejected(b"GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            400
        );
        assert_eq!(rejected(b"GET /metrics\r\n\r\n"), 400);
        assert_eq!(rejected(b"GET /a b HTTP/1.1\r\n\r\n"), 400);
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(rejected(&big), 431);
    }
}
