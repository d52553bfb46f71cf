//! One connection to an origin: TCP or unix socket, optionally wrapped in TLS, with the few
//! I/O operations the HTTP/1.1 exchange needs, all ownership-passing (monoio `BufResult`).
//!
//! TLS is a small adapter over `rustls::ClientConnection` rather than a crate: rustls is
//! sans-IO, so the adapter only moves ciphertext between rustls and an owned buffer that is
//! handed to the socket op. That keeps "one owned buffer per in-flight op" obvious and
//! never cancels a read on purpose (only the handshake timeout can drop one, and then the
//! connection is discarded).
//!
//! `http2Origin` connections are the exception: HTTP/2 (the `h2` crate) needs tokio's
//! poll-based I/O traits, so those TLS connections go through tokio-rustls over the socket in
//! monoio's poll-io mode (tokio-rustls, see [`crate::pollio`]). Which protocol they speak is
//! known only after the handshake (ALPN), so [`connect_negotiating`] returns either an HTTP/2
//! stream or a [`Conn::Poll`] that the HTTP/1.1 exchange uses like any other.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::buf::{BytesVec, write_all_vectored};
use crate::pollio::PollStream;
use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpStream, UnixStream};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::ProxyError;

/// Ciphertext read size: one maximal TLS record (16 KiB plaintext plus overhead) fits.
const TLS_READ_BUF: usize = 17 * 1024;
/// Plaintext read size for TLS connections (what `read` asks rustls for at most).
const TLS_PLAINTEXT_CHUNK: usize = 16 * 1024;
/// Handshake I/O rounds: a TLS 1.2/1.3 handshake is 2–3 flights, each possibly split over
/// a few reads (big certificate chains); 64 rounds is far beyond any real server and stops
/// a peer that dribbles bytes forever (the tls_timeout stops a silent one).
const MAX_HANDSHAKE_ROUNDS: usize = 64;
/// Addresses tried per connect: a name rarely resolves to more, and each try can take the
/// whole connect timeout's remainder.
const MAX_CONNECT_ADDRS: usize = 8;

/// The transport under the (optional) TLS layer.
#[derive(Debug)]
pub(crate) enum Plain {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Plain {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Plain::Tcp(s) => s.read(buf).await,
            Plain::Unix(s) => s.read(buf).await,
        }
    }

    async fn write_all<T: monoio::buf::IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Plain::Tcp(s) => s.write_all(buf).await,
            Plain::Unix(s) => s.write_all(buf).await,
        }
    }

    async fn write_vectored_all(&mut self, buf: BytesVec) -> io::Result<()> {
        match self {
            Plain::Tcp(s) => write_all_vectored(s, buf).await.0,
            Plain::Unix(s) => write_all_vectored(s, buf).await.0,
        }
    }

    /// This connection in poll-io mode, for tokio-rustls and `h2`.
    fn into_poll_io(self) -> io::Result<PollStream> {
        match self {
            Plain::Tcp(s) => PollStream::from_tcp(s),
            Plain::Unix(s) => PollStream::from_unix(s),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Plain::Tcp(s) => s.as_raw_fd(),
            Plain::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// rustls state plus the owned buffers its ciphertext travels in.
pub(crate) struct TlsConn {
    io: Plain,
    tls: ClientConnection,
    /// Ciphertext read from the socket and not yet given to rustls (`pos..`).
    cipher: Vec<u8>,
    pos: usize,
    /// Reused buffer for ciphertext going out.
    out: Vec<u8>,
    /// The socket returned end-of-file and rustls was told.
    eof: bool,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("io", &self.io)
            .field("pending", &(self.cipher.len() - self.pos))
            .finish_non_exhaustive()
    }
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsConn {
    /// Writes everything rustls has queued (handshake flights, alerts, records).
    async fn flush(&mut self) -> io::Result<()> {
        // Bound: each round drains up to one buffer of queued records; rustls queues a
        // finite amount (its send buffer limit plus handshake messages).
        while self.tls.wants_write() {
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            self.tls.write_tls(&mut out)?;
            let (res, out) = self.io.write_all(out).await;
            self.out = out;
            res?;
        }
        Ok(())
    }

    /// Gives rustls the next pending ciphertext, or reads more from the socket. Returns
    /// `false` when nothing could be fed because the socket is at end-of-file.
    async fn feed(&mut self) -> io::Result<bool> {
        if self.pos < self.cipher.len() {
            let mut rd = &self.cipher[self.pos..];
            let n = self.tls.read_tls(&mut rd)?;
            self.pos += n;
        } else if self.eof {
            return Ok(false);
        } else {
            let mut buf = std::mem::take(&mut self.cipher);
            buf.clear();
            buf.reserve(TLS_READ_BUF);
            let (res, buf) = self.io.read(buf).await;
            self.cipher = buf;
            self.pos = 0;
            if res? == 0 {
                self.eof = true;
                // Tell rustls about the end so a missing close_notify is reported.
                self.tls.read_tls(&mut &[][..])?;
            } else {
                let mut rd = &self.cipher[..];
                let n = self.tls.read_tls(&mut rd)?;
                self.pos = n;
            }
        }
        if let Err(e) = self.tls.process_new_packets() {
            // rustls queued an alert for the peer; sending it is a courtesy.
            let _ = self.flush().await;
            return Err(tls_err(e));
        }
        // Post-handshake messages (KeyUpdate) may need an answer.
        self.flush().await?;
        Ok(true)
    }

    async fn handshake(&mut self) -> io::Result<()> {
        for _ in 0..MAX_HANDSHAKE_ROUNDS {
            self.flush().await?;
            if !self.tls.is_handshaking() {
                return Ok(());
            }
            if !self.feed().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the handshake",
                ));
            }
        }
        Err(io::Error::other("handshake took too many round trips"))
    }

    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        // Bound: every round either returns or feeds rustls (consuming pending ciphertext
        // or reading the socket, which ends in data or end-of-file); a record is at most
        // ~16 KiB, so a buffer's worth of ciphertext yields plaintext within a few rounds.
        loop {
            let start = buf.len();
            buf.resize(start + TLS_PLAINTEXT_CHUNK, 0);
            let res = self.tls.reader().read(&mut buf[start..]);
            let got = *res.as_ref().unwrap_or(&0);
            buf.truncate(start + got);
            match res {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // End of stream without close_notify: many servers do that. Message
                // framing (Content-Length, chunked) still catches a truncated body.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if !self.feed().await? {
                return Ok(0);
            }
        }
    }

    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut off = 0;
        // Bound: each round moves at least one byte into rustls (its buffer is drained by
        // the flush before the next round), so at most `data.len()` rounds.
        while off < data.len() {
            let n = self.tls.writer().write(&data[off..])?;
            self.flush().await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "TLS writer full"));
            }
            off += n;
        }
        Ok(())
    }
}

/// An established origin connection.
pub(crate) enum Conn {
    Plain(Plain),
    Tls(Box<TlsConn>),
    /// A poll-io stream (see [`crate::pollio`]): an `http2Origin` TLS connection on which the
    /// origin chose HTTP/1.1, or an upgrade's connection, whose two directions run at once
    /// after the 101. With the socket's descriptor, which the adapter layers hide, and whether
    /// it is TLS.
    Poll(Box<dyn PollIo>, RawFd, bool),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Plain(p) => f.debug_tuple("Plain").field(p).finish(),
            Conn::Tls(t) => f.debug_tuple("Tls").field(t).finish(),
            Conn::Poll(_, fd, tls) => f.debug_tuple("Poll").field(fd).field(tls).finish(),
        }
    }
}

impl Conn {
    /// Appends what one read returns to `buf`; `Ok(0)` is end-of-stream.
    pub(crate) async fn read(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        match self {
            Conn::Plain(p) => {
                if buf.capacity() - buf.len() < want {
                    buf.reserve(want);
                }
                let owned = std::mem::take(buf);
                let len = owned.len();
                let cap = owned.capacity();
                // Read into the spare capacity only: a plain BytesMut would be filled from 0.
                let (res, slice) = p.read(monoio::buf::SliceMut::new(owned, len, cap)).await;
                *buf = slice.into_inner();
                res
            }
            Conn::Tls(t) => t.read(buf).await,
            Conn::Poll(t, ..) => {
                buf.reserve(want);
                match t.read_buf(buf).await {
                    // As on `Tls`: an end without close_notify is an end.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    r => r,
                }
            }
        }
    }

    /// Writes the buffers in order: one vectored write on plain sockets, through rustls
    /// (which copies into records anyway) on TLS.
    pub(crate) async fn write_all(&mut self, bufs: Vec<Bytes>) -> io::Result<()> {
        match self {
            Conn::Plain(p) => {
                if bufs.len() == 1 {
                    let b = bufs.into_iter().next().unwrap_or_default();
                    return p.write_all(b).await.0.map(drop);
                }
                let mut v = BytesVec::with_capacity(bufs.len());
                for b in bufs {
                    v.push(b);
                }
                p.write_vectored_all(v).await
            }
            Conn::Tls(t) => {
                for b in bufs {
                    t.write(&b).await?;
                }
                Ok(())
            }
            Conn::Poll(t, ..) => {
                for b in bufs {
                    t.write_all(&b).await?;
                }
                t.flush().await
            }
        }
    }

    /// Whether an idle pooled connection still looks usable: the peer has not closed it and
    /// (for plain HTTP) sent nothing unsolicited. A non-blocking `MSG_PEEK`, no I/O op.
    pub(crate) fn idle_alive(&self) -> bool {
        let (fd, tls) = match self {
            Conn::Plain(p) => (p.raw_fd(), false),
            Conn::Tls(t) => {
                if t.eof {
                    return false;
                }
                (t.io.raw_fd(), true)
            }
            Conn::Poll(_, fd, tls) => (*fd, *tls),
        };
        let mut byte = 0u8;
        // SAFETY: `fd` is an open socket owned by this connection; the buffer is one valid
        // byte on the stack.
        let r = unsafe {
            libc::recv(
                fd,
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match r {
            // End-of-file: the origin closed the idle connection.
            0 => false,
            // Bytes while idle: garbage for plain HTTP, but legitimate TLS records
            // (session tickets, KeyUpdate) on TLS.
            n if n > 0 => tls,
            _ => io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock,
        }
    }
}

/// Where an origin listens: a TCP host and port, or a unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum OriginAddr {
    Tcp { host: String, port: u16 },
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for OriginAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            OriginAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            OriginAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// TLS parameters for one connect.
pub(crate) struct TlsParams {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    // Blocking resolution: IP literals and /etc/hosts names (the usual local origins) answer
    // at once; a real DNS name blocks this worker while it resolves, once per new connection
    // (pooled connections skip it).
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for addr in addrs.into_iter().take(MAX_CONNECT_ADDRS) {
        match TcpStream::connect_addr(addr).await {
            Ok(s) => {
                // The head and the body go in separate writes; Nagle would hold the second.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path).await
}

/// The transport within `connect_timeout`.
async fn connect_transport(
    addr: &OriginAddr,
    connect_timeout: Duration,
) -> Result<Plain, ProxyError> {
    let transport = async {
        match addr {
            OriginAddr::Tcp { host, port } => connect_tcp(host, *port).await.map(Plain::Tcp),
            OriginAddr::Unix(path) => connect_unix(path).await.map(Plain::Unix),
        }
    };
    match monoio::time::timeout(connect_timeout, transport).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(source)) => Err(ProxyError::Connect {
            addr: addr.to_string(),
            source,
        }),
        Err(_) => Err(ProxyError::ConnectTimeout {
            addr: addr.to_string(),
            timeout: connect_timeout,
        }),
    }
}

/// The handshake's failure: `cause`, or the timeout when there is none.
fn tls_error(addr: &OriginAddr, tls_timeout: Duration, cause: Option<io::Error>) -> ProxyError {
    ProxyError::Tls {
        addr: addr.to_string(),
        reason: match cause {
            Some(e) => e.to_string(),
            None => format!("handshake timed out after {}s", tls_timeout.as_secs_f64()),
        },
    }
}

/// Opens a new connection: transport within `connect_timeout`, then the TLS handshake within
/// `tls_timeout`.
pub(crate) async fn connect(
    addr: &OriginAddr,
    tls: Option<TlsParams>,
    connect_timeout: Duration,
    tls_timeout: Duration,
) -> Result<Conn, ProxyError> {
    let plain = connect_transport(addr, connect_timeout).await?;
    let Some(params) = tls else {
        return Ok(Conn::Plain(plain));
    };
    let tls =
        ClientConnection::new(params.config, params.server_name).map_err(|e| ProxyError::Tls {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let mut conn = Box::new(TlsConn {
        io: plain,
        tls,
        cipher: Vec::with_capacity(TLS_READ_BUF),
        pos: 0,
        out: Vec::new(),
        eof: false,
    });
    match monoio::time::timeout(tls_timeout, conn.handshake()).await {
        Ok(Ok(())) => Ok(Conn::Tls(conn)),
        Ok(Err(e)) => Err(tls_error(addr, tls_timeout, Some(e))),
        Err(_) => Err(tls_error(addr, tls_timeout, None)),
    }
}

/// A connection for an upgrade request: a poll-io stream ([`Conn::Poll`]), plain or TLS, so
/// that after the 101 its read and write halves can run at the same time. The TLS
/// configuration must offer `http/1.1` only (an upgrade is an HTTP/1.1 mechanism).
pub(crate) async fn connect_poll(
    addr: &OriginAddr,
    tls: Option<TlsParams>,
    connect_timeout: Duration,
    tls_timeout: Duration,
) -> Result<Conn, ProxyError> {
    if let Some(params) = tls {
        return match connect_negotiating(addr, params, connect_timeout, tls_timeout).await? {
            Negotiated::Http1(conn) => Ok(conn),
            Negotiated::Http2 { .. } => Err(ProxyError::Tls {
                addr: addr.to_string(),
                reason: "origin chose h2, which was not offered".to_owned(),
            }),
        };
    }
    let plain = connect_transport(addr, connect_timeout).await?;
    let fd = plain.raw_fd();
    let polled = plain.into_poll_io().map_err(|source| ProxyError::Connect {
        addr: addr.to_string(),
        source,
    })?;
    Ok(Conn::Poll(Box::new(polled), fd, false))
}

impl Conn {
    /// The poll-io stream of a [`Conn::Poll`] connection.
    pub(crate) fn into_poll_io(self) -> Option<Box<dyn PollIo>> {
        match self {
            Conn::Poll(io, ..) => Some(io),
            _ => None,
        }
    }
}

/// A poll-based byte stream: TLS (tokio-rustls over a [`PollStream`]) or cleartext ([`PollStream`]). HTTP/2 runs on
/// it, and so does an upgraded connection.
pub(crate) trait PollIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> PollIo for T {}

/// What a new `http2Origin` connection speaks: for TLS, what the origin chose by ALPN; for
/// cleartext, HTTP/2 with prior knowledge (h2c) unless the origin is known not to.
pub(crate) enum Negotiated {
    Http1(Conn),
    /// HTTP/2: over TLS, chosen by ALPN; or cleartext to try h2c on (`h2c`), not confirmed
    /// until the origin answers a PING.
    Http2 {
        io: Box<dyn PollIo>,
        h2c: bool,
    },
}

/// A cleartext connection for h2c: the transport within `connect_timeout`, in poll-io mode.
pub(crate) async fn connect_h2c(
    addr: &OriginAddr,
    connect_timeout: Duration,
) -> Result<Negotiated, ProxyError> {
    let plain = connect_transport(addr, connect_timeout).await?;
    let polled = plain.into_poll_io().map_err(|source| ProxyError::Connect {
        addr: addr.to_string(),
        source,
    })?;
    Ok(Negotiated::Http2 {
        io: Box::new(polled),
        h2c: true,
    })
}

/// Opens an `http2Origin` TLS connection (offering `h2` and `http/1.1`, as `params.config`
/// says): transport within `connect_timeout`, handshake within `tls_timeout`.
pub(crate) async fn connect_negotiating(
    addr: &OriginAddr,
    params: TlsParams,
    connect_timeout: Duration,
    tls_timeout: Duration,
) -> Result<Negotiated, ProxyError> {
    let plain = connect_transport(addr, connect_timeout).await?;
    let fd = plain.raw_fd();
    let connector = tokio_rustls::TlsConnector::from(params.config);
    let polled = plain
        .into_poll_io()
        .map_err(|e| tls_error(addr, tls_timeout, Some(e)))?;
    let handshake = connector.connect(params.server_name, polled);
    let stream = match monoio::time::timeout(tls_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(tls_error(addr, tls_timeout, Some(e))),
        Err(_) => return Err(tls_error(addr, tls_timeout, None)),
    };
    let stream = Box::new(stream);
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        Ok(Negotiated::Http2 {
            io: stream,
            h2c: false,
        })
    } else {
        Ok(Negotiated::Http1(Conn::Poll(stream, fd, true)))
    }
}
