//! A small origin for loadgen's tests and the bench's `--origin builtin`: HTTP/1.1 keep-alive
//! and prior-knowledge h2c on one port (told apart by the HTTP/2 preface), on a tokio runtime
//! of its own.
//!
//! Paths (any method; POST/PUT bodies are read in full and answered `ok\n`):
//!
//! | path | answer |
//! |---|---|
//! | `/bytes/N` | N bytes |
//! | `/status/N` | status N |
//! | `/sleep/MS` | 200 after MS milliseconds |
//! | `/chunked` | a chunked 200 |
//! | `/garbage` | bytes that are not HTTP, then close |
//! | `/truncate` | a head promising 100 bytes, 10 of them, then close |
//! | `/close` | close without answering |
//! | anything else | 200 `hello world\n` |
//!
//! With [`ServerConfig::tls`] it serves TLS instead, HTTP/1.1 or HTTP/2 by ALPN.
//!
//! Faults for whole runs come from [`ServerConfig`]: a stall (every answer held back for a
//! while, starting a fixed time after the first request) and a cap on accepted connections
//! (after it the listener is closed, so new connects are refused).

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use dataplane::http::{
    BodyDecoder, BodyKind, ChunkedLimits, DecodeEvent, Limits, parse_request_head,
};
use dataplane::quic::tls::TlsMaterial;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::oneshot,
};

const HELLO: &[u8] = b"hello world\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Faults and sizing.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// `(after, length)`: from `after` past the first request for `length`, no answer leaves.
    pub stall: Option<(Duration, Duration)>,
    /// Close the listener after accepting this many connections.
    pub max_connections: Option<u64>,
    /// Runtime worker threads (0: one).
    pub threads: usize,
    /// Serve TLS (a fresh CA and a certificate for 127.0.0.1 and localhost) with ALPN `h2`
    /// and `http/1.1`, instead of plain HTTP/1.1 + h2c.
    pub tls: bool,
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub requests: AtomicU64,
    pub connections: AtomicU64,
    first_request: Mutex<Option<Instant>>,
}

/// A running server; dropped, it stops.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    ca_pem: Option<String>,
}

impl TestServer {
    /// Binds `listen` (port 0 for any) and serves in the background.
    pub fn start(listen: SocketAddr, config: ServerConfig) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let (acceptor, ca_pem) = if config.tls {
            let (acceptor, ca) = tls_acceptor()?;
            (Some(acceptor), Some(ca))
        } else {
            (None, None)
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("testserver".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        let Ok(listener) = TcpListener::from_std(std_listener) else {
                            return;
                        };
                        tokio::select! {
                            _ = accept_loop(listener, config, stats, acceptor) => {}
                            _ = stop_rx => {}
                        }
                    });
                    runtime.shutdown_background();
                })?
        };
        Ok(Self {
            addr,
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
            ca_pem,
        })
    }

    /// The CA that signed the server's certificate (PEM), when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tls_acceptor() -> io::Result<(tokio_rustls::TlsAcceptor, String)> {
    let ca = TlsMaterial::generate_ca().map_err(io::Error::other)?;
    let leaf = TlsMaterial::issue_server_cert(&ca, &["127.0.0.1", "localhost"])
        .map_err(io::Error::other)?;
    let provider = dataplane::tls::default_provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(leaf.cert_chain, leaf.key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca.cert_pem(),
    ))
}

async fn accept_loop(
    listener: TcpListener,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let config = Arc::new(config);
    // Bounded by the process (or the connection cap, which drops the listener).
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let n = stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let (config2, stats2, acceptor) = (config.clone(), stats.clone(), acceptor.clone());
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let _ = serve_connection(socket, &config2, &stats2).await;
                return;
            };
            let Ok(tls) = acceptor.accept(socket).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let io = Rewind {
                    buf: BytesMut::new(),
                    socket: tls,
                };
                let _ = serve_h2(io, &config2, &stats2).await;
            } else {
                let _ = serve_connection(tls, &config2, &stats2).await;
            }
        });
        if config.max_connections.is_some_and(|max| n >= max) {
            // Dropping the listener makes the kernel refuse further connects; the served
            // connections go on in their own tasks.
            drop(listener);
            return std::future::pending().await;
        }
    }
}

/// Waits out an active stall; marks the first request.
async fn before_answer(config: &ServerConfig, stats: &ServerStats) {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let first = {
        let mut f = stats
            .first_request
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *f.get_or_insert_with(Instant::now)
    };
    if let Some((after, length)) = config.stall {
        let (from, until) = (first + after, first + after + length);
        let now = Instant::now();
        if now >= from && now < until {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

/// What a path asks for.
enum Answer {
    Body { status: u16, body: Bytes },
    Chunked,
    Garbage,
    Truncate,
    Close,
}

async fn route(path: &str, has_body: bool) -> Answer {
    let num = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    if has_body {
        return Answer::Body {
            status: 200,
            body: Bytes::from_static(b"ok\n"),
        };
    }
    if let Some(n) = num("/bytes/") {
        return Answer::Body {
            status: 200,
            body: Bytes::from(vec![b'x'; n.min(1 << 30) as usize]),
        };
    }
    if let Some(n) = num("/status/") {
        return Answer::Body {
            status: n.clamp(200, 999) as u16,
            body: Bytes::from_static(HELLO),
        };
    }
    if let Some(ms) = num("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match path {
        "/chunked" => Answer::Chunked,
        "/garbage" => Answer::Garbage,
        "/truncate" => Answer::Truncate,
        "/close" => Answer::Close,
        _ => Answer::Body {
            status: 200,
            body: Bytes::from_static(HELLO),
        },
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    config: &Arc<ServerConfig>,
    stats: &Arc<ServerStats>,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Tell h2c from HTTP/1.1 by the first bytes.
    while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
        if socket.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    if buf.starts_with(H2_PREFACE) {
        return serve_h2(Rewind { buf, socket }, config, stats).await;
    }
    let limits = Limits::default();
    // Bounded by the client: one request per turn, the connection ends on close or error.
    loop {
        // The dataplane's parser: the one the edge trusts with public traffic.
        let head = loop {
            match parse_request_head(&buf, &limits) {
                Ok(Some((head, len))) => {
                    let _ = buf.split_to(len);
                    break head;
                }
                Ok(None) => {
                    if socket.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
                Err(_) => {
                    socket
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await?;
                    return Ok(());
                }
            }
        };
        let path = head.target.clone();
        let keep_alive = head.keep_alive;
        let has_body = head.body.has_body();
        read_body(&mut socket, &mut buf, head.body).await?;
        let answer = route(&path, has_body).await;
        before_answer(config, stats).await;
        let close = if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        };
        match answer {
            Answer::Body { status, body } => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{close}\r\n",
                    body.len()
                );
                socket.write_all(head.as_bytes()).await?;
                socket.write_all(&body).await?;
            }
            Answer::Chunked => {
                let msg = format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{close}\r\n5\r\nhello\r\n7\r\n world\n\r\n0\r\n\r\n"
                );
                socket.write_all(msg.as_bytes()).await?;
            }
            Answer::Garbage => {
                socket.write_all(b"this is not http at all\r\n\r\n").await?;
                return Ok(());
            }
            Answer::Truncate => {
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                    .await?;
                return Ok(());
            }
            Answer::Close => return Ok(()),
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Reads (and drops) a request body framed as `kind`.
async fn read_body<S: AsyncRead + Unpin>(
    socket: &mut S,
    buf: &mut BytesMut,
    kind: BodyKind,
) -> io::Result<()> {
    let mut dec = BodyDecoder::new(kind, ChunkedLimits::default());
    // Bounded by the body: each turn consumes bytes or reads more.
    loop {
        match dec.decode(buf) {
            Ok(DecodeEvent::Data(_)) => {}
            Ok(DecodeEvent::End) => return Ok(()),
            Ok(DecodeEvent::NeedMore) => {
                if socket.read_buf(buf).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body cut short",
                    ));
                }
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

/// Replays bytes already read (the sniffed preface) before the socket's.
struct Rewind<S> {
    buf: BytesMut,
    socket: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let n = self.buf.len().min(out.remaining());
            let chunk = self.buf.split_to(n);
            out.put_slice(&chunk);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.socket).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.socket).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

async fn serve_h2<S: AsyncRead + AsyncWrite + Unpin>(
    io: Rewind<S>,
    config: &Arc<ServerConfig>,
    stats: &Arc<ServerStats>,
) -> io::Result<()> {
    let mut conn = h2::server::handshake(io)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    // The connection makes progress only while `accept` is polled, so each stream is answered
    // on a task of its own.
    while let Some(next) = conn.accept().await {
        let Ok((request, respond)) = next else {
            break;
        };
        tokio::spawn(answer_h2(request, respond, config.clone(), stats.clone()));
    }
    Ok(())
}

async fn answer_h2(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    config: Arc<ServerConfig>,
    stats: Arc<ServerStats>,
) {
    {
        let path = request.uri().path().to_owned();
        let mut body = request.into_body();
        let mut has_body = false;
        // Bounded by the request body.
        while let Some(chunk) = body.data().await {
            let Ok(chunk) = chunk else { break };
            has_body = true;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let answer = route(&path, has_body).await;
        before_answer(&config, &stats).await;
        let (status, payload) = match answer {
            Answer::Body { status, body } => (status, body),
            Answer::Chunked => (200, Bytes::from_static(HELLO)),
            Answer::Garbage | Answer::Truncate | Answer::Close => {
                respond.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
        };
        let Ok(response) = http::Response::builder().status(status).body(()) else {
            return;
        };
        let Ok(mut send) = respond.send_response(response, payload.is_empty()) else {
            return;
        };
        if !payload.is_empty() {
            let _ = send.send_data(payload, true);
        }
    }
}
