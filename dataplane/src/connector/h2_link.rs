//! The HTTP/2 transport of a connection (`--protocol http2`, cloudflared's `connection/http2.go`
//! from the connector's side): TCP to the edge's QUIC address, TLS with SNI
//! [`crate::wire::http2::SNI`] and no ALPN, and then the connector is the **HTTP/2 server**.
//! The edge opens every stream; [`classify`] says what each is: the control stream goes to the
//! shared registration ([`super::session`]), the others to [`super::h2_stream`].
//!
//! The `h2` connection future runs as a task on the connection's worker, over tokio-rustls on
//! the worker's TCP socket in poll-io mode ([`crate::pollio`]). It also sends a PING every
//! [`PING_EVERY`]: an edge that answers none for [`H2_SILENT_AFTER`] is left, as a silent QUIC
//! peer is (Go's server, the stock connector, never pings and relies on TCP keepalive).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::oneshot;
use h2::server::SendResponse;
use h2::{Ping, PingPong, RecvStream};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use tracing::debug;

use super::protocol::Protocol;
use super::session::EdgeLink;
use super::{Common, ConnectionError, ConnectorShared, h2_stream};
use crate::h2stream::{H2Reader, H2Writer};
use crate::latch::Latch;
use crate::quic::TlsError;
use crate::wire::http2::{RequestKind, SNI, classify};

/// cloudflared's dial timeout, covering the TCP connect and the TLS handshake.
pub const H2_DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// The edge's preface and SETTINGS, then its control stream, must arrive within this.
const CONTROL_STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Go's HTTP/2 server settings (cloudflared's): 250 streams (its MaxUint32 clamped), 1 MiB
/// stream and connection windows and frames, 1 MiB + 320 B of header list.
const MAX_CONCURRENT_STREAMS: u32 = 250;
const WINDOW: u32 = 1 << 20;
const MAX_FRAME_SIZE: u32 = 1 << 20;
const MAX_HEADER_LIST_SIZE: u32 = (1 << 20) + 320;
/// Liveness: a PING this often, and the connection is left when none is answered for
/// [`H2_SILENT_AFTER`]. Longer than QUIC's limit: a pong waits behind up to a window of data
/// in the edge's TCP send buffer.
const PING_EVERY: Duration = Duration::from_secs(2);
pub const H2_SILENT_AFTER: Duration = Duration::from_secs(10);
/// How long a closing connection may take to flush its last DATA and GOAWAY.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

type Tls = tokio_rustls::client::TlsStream<crate::pollio::TcpStreamPoll>;

/// The TLS client configuration for the HTTP/2 transport: trust only `root_ca` (the edge's
/// `--cacert`, PEM or DER), the shared provider's groups (X25519MLKEM768 first) or, with
/// `post_quantum`, X25519MLKEM768 alone, as for QUIC; TLS 1.3 and 1.2 (Go's client range);
/// no ALPN (cloudflared sends none on this transport).
pub fn edge_tls_config(
    root_ca: &[u8],
    post_quantum: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = crate::tls::parse_certs(root_ca).map_err(|e| match e {
        crate::tls::CertsError::Pem(source) => TlsError::Pem {
            what: "root CA",
            source,
        },
        crate::tls::CertsError::Empty => TlsError::NoCertificate("root CA"),
    })?;
    for cert in certs {
        roots.add(cert)?;
    }
    let groups = if post_quantum {
        vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768]
    } else {
        crate::tls::default_kx_groups()
    };
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider(groups))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// [`SNI`] as a TLS server name.
fn edge_server_name() -> ServerName<'static> {
    ServerName::try_from(SNI).expect("SNI is a valid DNS name")
}

type ControlStream = (RecvStream, SendResponse<Bytes>);

/// An HTTP/2 connection to one edge address, served by its own task.
pub(crate) struct H2Link {
    edge: SocketAddr,
    active: Rc<Cell<usize>>,
    control: RefCell<Option<oneshot::Receiver<ControlStream>>>,
    ended: Rc<Latch<ConnectionError>>,
    close: RefCell<Option<oneshot::Sender<()>>>,
    ping: RefCell<Option<PingPong>>,
}

impl Drop for H2Link {
    fn drop(&mut self) {
        self.close("connection dropped");
    }
}

impl H2Link {
    /// TCP (from `--edge-bind-address` when set) and TLS within [`H2_DIAL_TIMEOUT`], then the
    /// HTTP/2 server handshake; the connection task starts serving the edge's requests.
    pub(crate) async fn dial(
        common: &Common,
        shared: &Rc<ConnectorShared>,
        edge: SocketAddr,
    ) -> Result<Self, ConnectionError> {
        let setup = &common.setup;
        let connect = async {
            let tcp = connect_tcp(edge, setup.bind_address).await.map_err(|e| {
                ConnectionError::TcpConnect {
                    edge,
                    source: Arc::new(e),
                }
            })?;
            // Small writes (capnp messages, response heads) should not wait for an ACK; the
            // keepalive finds a vanished edge, as Go's dialer default does.
            let _ = tcp.set_nodelay(true);
            let _ = tcp.set_tcp_keepalive(
                Some(Duration::from_secs(15)),
                Some(Duration::from_secs(15)),
                None,
            );
            let tcp = crate::pollio::tcp(tcp).map_err(|e| ConnectionError::TcpConnect {
                edge,
                source: Arc::new(e),
            })?;
            let connector = tokio_rustls::TlsConnector::from(setup.h2_tls.clone());
            connector
                .connect(edge_server_name(), tcp)
                .await
                .map_err(|e| ConnectionError::Tls {
                    edge,
                    source: Arc::new(e),
                })
        };
        let tls: Tls = match monoio::time::timeout(H2_DIAL_TIMEOUT, connect).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ConnectionError::DialTimeout {
                    edge,
                    after: H2_DIAL_TIMEOUT,
                });
            }
        };
        let handshake = h2::server::Builder::new()
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .handshake::<_, Bytes>(tls);
        let mut conn = match monoio::time::timeout(CONTROL_STREAM_TIMEOUT, handshake).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(ConnectionError::Http2 {
                    edge,
                    source: Arc::new(e),
                });
            }
            Err(_) => {
                return Err(ConnectionError::NoControlStream {
                    edge,
                    after: CONTROL_STREAM_TIMEOUT,
                });
            }
        };
        let ping = conn.ping_pong();
        let (control_tx, control_rx) = oneshot::channel();
        let (close_tx, close_rx) = oneshot::channel();
        let link = Self {
            edge,
            active: Rc::new(Cell::new(0)),
            control: RefCell::new(Some(control_rx)),
            ended: Latch::new(),
            close: RefCell::new(Some(close_tx)),
            ping: RefCell::new(ping),
        };
        monoio::spawn(drive(
            conn,
            Driven {
                shared: shared.clone(),
                active: link.active.clone(),
                ended: link.ended.clone(),
                edge,
            },
            control_tx,
            close_rx,
        ));
        Ok(link)
    }
}

/// What the connection task needs besides the connection.
struct Driven {
    shared: Rc<ConnectorShared>,
    active: Rc<Cell<usize>>,
    ended: Rc<Latch<ConnectionError>>,
    edge: SocketAddr,
}

/// Polls the connection: accepts the edge's requests and dispatches them, until the edge ends
/// the connection or the link asks to close.
async fn drive(
    mut conn: h2::server::Connection<Tls, Bytes>,
    d: Driven,
    control_tx: oneshot::Sender<ControlStream>,
    close_rx: oneshot::Receiver<()>,
) {
    let mut control_tx = Some(control_tx);
    let mut close_rx = close_rx.fuse();
    // Bounded by the connection's life; each turn takes one request.
    let reason = loop {
        let next = futures::select! {
            r = conn.accept().fuse() => Some(r),
            _ = close_rx => None,
        };
        let Some(next) = next else {
            // Drained (or dropped): the in-flight streams' tasks are done, but their last
            // DATA may still sit in h2's send buffer, which an abrupt shutdown would discard
            // (the edge then sees the stream cut before its answer). A graceful GOAWAY lets
            // h2 flush them; the control stream keeps the connection open until the edge
            // closes it (ours does once its streams are answered) or CLOSE_FLUSH passes.
            conn.graceful_shutdown();
            let flush = std::future::poll_fn(|cx| conn.poll_closed(cx));
            let _ = monoio::time::timeout(CLOSE_FLUSH, flush).await;
            break ConnectionError::EdgeClosed { edge: d.edge };
        };
        match next {
            Some(Ok((request, respond))) => {
                let (parts, body) = request.into_parts();
                let kind = classify(
                    parts
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_bytes())),
                );
                match (kind, control_tx.take()) {
                    (RequestKind::ControlStream, Some(tx)) => {
                        let _ = tx.send((body, respond));
                    }
                    (kind, tx) => {
                        control_tx = tx;
                        spawn_request(&d, kind, parts, body, respond);
                    }
                }
            }
            Some(Err(e)) => {
                break ConnectionError::Http2 {
                    edge: d.edge,
                    source: Arc::new(e),
                };
            }
            None => break ConnectionError::EdgeClosed { edge: d.edge },
        }
    };
    debug!(edge = %d.edge, reason = %reason, "HTTP/2 connection with the edge ended");
    d.ended.set(reason);
}

/// Serves one edge request on its own task, counted in `active`.
fn spawn_request(
    d: &Driven,
    kind: RequestKind,
    parts: http::request::Parts,
    body: RecvStream,
    respond: SendResponse<Bytes>,
) {
    let (shared, active) = (d.shared.clone(), d.active.clone());
    active.set(active.get() + 1);
    monoio::spawn(async move {
        h2_stream::serve_request(&shared, kind, parts, body, respond).await;
        active.set(active.get() - 1);
    });
}

impl EdgeLink for H2Link {
    type Reader = H2Reader;
    type Writer = H2Writer;
    const PROTOCOL: Protocol = Protocol::Http2;

    fn edge(&self) -> SocketAddr {
        self.edge
    }

    fn active(&self) -> &Rc<Cell<usize>> {
        &self.active
    }

    async fn control_stream(&self) -> Result<(H2Reader, H2Writer), ConnectionError> {
        let Some(rx) = self.control.borrow_mut().take() else {
            return Err(ConnectionError::EdgeClosed { edge: self.edge });
        };
        let no_stream = ConnectionError::NoControlStream {
            edge: self.edge,
            after: CONTROL_STREAM_TIMEOUT,
        };
        let (body, mut respond) = futures::select! {
            r = rx.fuse() => r.map_err(|_| no_stream.clone())?,
            e = self.ended.wait().fuse() => return Err(e),
            () = monoio::time::sleep(CONTROL_STREAM_TIMEOUT).fuse() => return Err(no_stream),
        };
        // `:status 200` at once, no END_STREAM: the response body carries the connector's RPC
        // bytes from here on (Go sends the same status with the first of them).
        let response = http::Response::builder()
            .status(200)
            .body(())
            .expect("a status-only response is valid");
        let send = respond
            .send_response(response, false)
            .map_err(|e| ConnectionError::Http2 {
                edge: self.edge,
                source: Arc::new(e),
            })?;
        Ok((H2Reader::new(body), H2Writer::new(send)))
    }

    async fn serve_streams(&self, _shared: &Rc<ConnectorShared>) -> ConnectionError {
        // Requests are dispatched by the connection task; this waits for its end, and checks
        // the edge answers PINGs.
        let ping = self.ping.borrow_mut().take();
        let mut ended = pin!(self.ended.wait().fuse());
        let mut alive = pin!(
            async {
                match ping {
                    Some(p) => edge_unanswered(p).await,
                    None => std::future::pending().await,
                }
            }
            .fuse()
        );
        futures::select! {
            e = ended => e,
            () = alive => {
                self.close("edge silent");
                ConnectionError::Silent { edge: self.edge, silent_for: H2_SILENT_AFTER }
            }
        }
    }

    fn close(&self, _reason: &'static str) {
        if let Some(tx) = self.close.borrow_mut().take() {
            let _ = tx.send(());
        }
    }
}

/// Resolves once a PING has gone unanswered for [`H2_SILENT_AFTER`].
async fn edge_unanswered(mut ping: PingPong) {
    // One PING in flight at a time (h2 allows one user PING outstanding); a turn every
    // PING_EVERY while the edge answers.
    loop {
        match monoio::time::timeout(H2_SILENT_AFTER, ping.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => monoio::time::sleep(PING_EVERY).await,
            // The connection failed: the connection task reports why.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// A TCP connection to `edge`, from `bind` (port 0) when given.
async fn connect_tcp(edge: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = bind else {
        return TcpStream::connect_addr(edge).await;
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(edge),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&edge.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // A second descriptor of the same socket to read SO_ERROR once it is writable.
    let probe = socket.try_clone()?;
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable(false).await?;
    if let Some(e) = probe.take_error()? {
        return Err(e);
    }
    Ok(stream)
}
