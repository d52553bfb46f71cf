//! The HTTP/2 tunnel transport (cloudflared's `--protocol http2`), connection side: every
//! tunnel address also accepts TCP, one SO_REUSEPORT listener per worker, and a connection
//! belongs to the worker that accepted it, as a QUIC one does.
//!
//! Per connection: TLS with the edge's certificate (SNI `h2.cftunnel.com`; the stock
//! connector sends no ALPN, `h2` is accepted too), then HTTP/2 with the roles reversed: the
//! connector is the server and the edge the client, which sends the preface and SETTINGS at
//! once (Go's server closes after 2 s without them) and opens every stream. The first stream
//! is the control stream: a `GET /` with `cf-cloudflared-proxy-connection-upgrade:
//! control-stream` whose request body (edge → connector) and response body (connector →
//! edge) carry the same Cap'n Proto RPC as QUIC's control stream; the edge serves the shared
//! `Registration` handler on it. Public requests then go on further streams (`stream_h2`).
//!
//! Liveness: the stock connector never pings and has no idle timeout, so the edge sends
//! HTTP/2 PINGs and treats a connector that stops answering like a silent QUIC peer.
//!
//! Closing: the socket is shut down (`shutdown(2)`), which completes the I/O in flight and
//! makes h2's connection task end on its own; nothing drops a pending io_uring operation.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use h2::client::SendRequest;
use h2::{Ping, PingPong};
use monoio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::EdgeWorker;
use super::registration::{RegState, Registration};
use super::transport::TunnelConn;
use crate::h2stream::{H2Reader, H2Writer};
use crate::quic::{QuicConfig, TlsError, TlsMaterial};
use crate::wire::http2::{SNI, UPGRADE, UPGRADE_CONTROL_STREAM};
use crate::wire::rpc::serve_registration;

/// TLS handshake limit (cloudflared's own dial timeout, covering TCP and TLS, is 15 s).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the connector has to answer the control stream's head: it does so with its
/// first RPC message, at once.
const CONTROL_STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Time between PINGs: several per `STALE_AFTER`, so one lost or late answer does not make
/// a live connector look silent.
const PING_INTERVAL: Duration = Duration::from_millis(500);

/// After a refused registration, how long the connector has to read the answer (it normally
/// ends the control stream itself as soon as it has) before the edge closes.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// Largest DATA frame the connector may send (Go's server sends what the peer allows).
const MAX_FRAME_SIZE: u32 = 1 << 20;

/// Largest HTTP/2 flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// The TLS configuration of the HTTP/2 transport: the edge's certificate on the shared
/// provider, TLS 1.2 and 1.3 (Go's client defaults), ALPN `h2` for clients that offer it.
pub fn tls_config(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::default_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(material.cert_chain.clone(), material.key.clone_key())?;
    // A client that sends no ALPN extension (the stock cloudflared) is served as well.
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(tls))
}

/// An HTTP/2 tunnel connection, as routing reaches it.
pub(crate) struct H2Conn {
    send: SendRequest<Bytes>,
    /// The socket, for [`H2Conn::close`]; valid while `ended` is false.
    fd: RawFd,
    /// Set by the connection task the moment h2's connection future (which owns the socket)
    /// has ended.
    ended: Rc<Cell<bool>>,
    remote: SocketAddr,
}

impl H2Conn {
    /// A handle to open a stream with.
    pub(crate) fn sender(&self) -> SendRequest<Bytes> {
        self.send.clone()
    }

    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Shuts the socket down: its pending I/O completes, every stream fails, and h2's
    /// connection task ends (closing the descriptor).
    pub(crate) fn close(&self) {
        // The connection future owns the descriptor until it ends, and `ended` is set before
        // any other task runs after that, so `fd` is still this socket here.
        if !self.ended.get() {
            shutdown(self.fd);
        }
    }
}

fn shutdown(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor this task's connection owns; it changes no memory.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// The receive windows the edge advertises: the QUIC connection's, so both transports
/// buffer the same (each capped at HTTP/2's largest window).
#[derive(Debug, Clone, Copy)]
pub(crate) struct H2Windows {
    stream: u32,
    connection: u32,
}

impl H2Windows {
    pub(crate) fn from_quic(q: &QuicConfig) -> Self {
        let cap = |w: u64| w.min(MAX_WINDOW) as u32;
        Self {
            stream: cap(q.stream_receive_window),
            connection: cap(q.receive_window),
        }
    }
}

/// Accepts connector TCP connections on this worker's listener for one tunnel address.
pub(crate) fn spawn_accept(
    w: Rc<EdgeWorker>,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    windows: H2Windows,
) -> io::Result<monoio::task::JoinHandle<()>> {
    let listener = monoio::net::TcpListener::from_std(listener)?;
    let acceptor = TlsAcceptor::from(tls);
    Ok(monoio::spawn(async move {
        // One accept per turn; each connection gets its own task.
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(serve_connection(
                        w.clone(),
                        stream,
                        peer,
                        acceptor.clone(),
                        windows,
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    warn!(error = %e, "tunnel TCP accept failed");
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }))
}

/// The control stream's request head.
fn control_request() -> http::Request<()> {
    let mut r = http::Request::new(());
    *r.uri_mut() = http::Uri::from_static(CONTROL_URI);
    r.headers_mut().insert(
        UPGRADE,
        http::HeaderValue::from_static(UPGRADE_CONTROL_STREAM),
    );
    r
}

/// The control stream's `:scheme`, `:authority` and `:path`: any valid ones do (the
/// connector ignores them).
const CONTROL_URI: &str = "http://h2.cftunnel.com/";

async fn serve_connection(
    w: Rc<EdgeWorker>,
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    windows: H2Windows,
) {
    let fd = stream.as_raw_fd();
    let stream = match crate::pollio::tcp(stream) {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, error = %e, "tunnel connection could not switch to poll-io");
            return;
        }
    };
    // Dropping the handshake on timeout is safe: poll-io has nothing in flight between polls.
    let tls = match monoio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "tunnel TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "tunnel TLS handshake timed out");
            return;
        }
    };
    if let Some(name) = tls.get_ref().1.server_name()
        && name != SNI
    {
        debug!(%peer, sni = name, "HTTP/2 tunnel connection with an unexpected server name");
    }
    // Writes the preface and SETTINGS into h2's buffer; the connection task sends them.
    let handshake = h2::client::Builder::new()
        .initial_window_size(windows.stream)
        .initial_connection_window_size(windows.connection)
        .max_frame_size(MAX_FRAME_SIZE)
        .enable_push(false)
        .handshake::<_, Bytes>(tls);
    let (send, mut connection) = match handshake.await {
        Ok(x) => x,
        Err(e) => {
            debug!(%peer, error = %e, "HTTP/2 handshake with a connector failed");
            return;
        }
    };
    let ping = connection.ping_pong();
    let ended = Rc::new(Cell::new(false));
    let driver = monoio::spawn({
        let ended = ended.clone();
        async move {
            let r = connection.await;
            ended.set(true);
            r
        }
    });
    let h2 = Rc::new(H2Conn {
        send,
        fd,
        ended,
        remote: peer,
    });
    let mut driver = std::pin::pin!(driver.fuse());

    // The control stream. The connector answers its head together with its first RPC
    // message (bootstrap).
    let control = async {
        let mut sender = h2.sender().ready().await?;
        let (response, body) = sender.send_request(control_request(), false)?;
        Ok::<_, h2::Error>((response.await?, body))
    };
    let (response, request_body) =
        match monoio::time::timeout(CONTROL_STREAM_TIMEOUT, control).await {
            Ok(Ok(x)) if x.0.status() == http::StatusCode::OK => x,
            Ok(Ok((r, _))) => {
                warn!(%peer, status = %r.status(), "connector refused the control stream");
                return finish(&h2, driver).await;
            }
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "HTTP/2 connection ended before its control stream");
                return finish(&h2, driver).await;
            }
            Err(_) => {
                warn!(%peer, "connector did not answer the control stream in time");
                return finish(&h2, driver).await;
            }
        };

    let state = Rc::new(RegState::default());
    let handler = Registration {
        worker: w.clone(),
        conn: TunnelConn::Http2(h2.clone()),
        state: state.clone(),
    };
    let rpc = serve_registration(
        handler,
        H2Reader::new(response.into_body()),
        H2Writer::new(request_body),
    );
    let heard: Cell<Option<Instant>> = Cell::new(Some(Instant::now()));
    let mut rpc = std::pin::pin!(rpc.fuse());
    let mut pings = std::pin::pin!(ping_loop(ping, &heard).fuse());
    let mut silent = std::pin::pin!(state.until_silent(|| heard.get()).fuse());
    let mut drained = std::pin::pin!(state.until_drained().fuse());
    let mut refused = std::pin::pin!(state.until_refused(REFUSAL_GRACE).fuse());
    let control_ended = futures::select! {
        () = silent => false,
        () = pings => false,
        () = drained => {
            debug!(%peer, "unregistered connection drained; closed");
            false
        }
        () = refused => {
            debug!(%peer, "registration refused; closed");
            false
        }
        r = rpc => {
            match r {
                Ok(()) => debug!(%peer, "control stream ended"),
                Err(e) => warn!(%peer, error = %e, "control stream failed"),
            }
            true
        }
        r = driver => {
            debug!(%peer, result = ?r.err(), "connector connection closed");
            false
        }
    };
    // The stock connector ends the control stream right after `unregisterConnection`; the
    // requests already on the connection still finish before it closes.
    if control_ended && state.unregistered.borrow().is_some() {
        futures::select! {
            () = drained => debug!(%peer, "unregistered connection drained; closed"),
            () = silent => {}
            () = pings => {}
            _ = driver => {}
        }
    }
    state.withdraw(&w);
    finish(&h2, driver).await;
}

/// Closes the connection and waits for h2's connection task to end (at once: the socket is
/// shut down).
async fn finish(
    h2: &H2Conn,
    driver: std::pin::Pin<
        &mut futures::future::Fuse<monoio::task::JoinHandle<Result<(), h2::Error>>>,
    >,
) {
    h2.close();
    if !futures::future::FusedFuture::is_terminated(&*driver) {
        let _ = driver.await;
    }
}

/// PINGs the connector every [`PING_INTERVAL`] and records each answer in `heard`. Returns
/// only when the connection failed (the silence watch decides about a late answer).
async fn ping_loop(ping: Option<PingPong>, heard: &Cell<Option<Instant>>) {
    let Some(mut ping) = ping else {
        // h2 hands out the ping handle once; it was taken for this connection above.
        return futures::future::pending().await;
    };
    // Bound: one PING per interval for the connection's life.
    loop {
        match ping.ping(Ping::opaque()).await {
            Ok(_pong) => heard.set(Some(Instant::now())),
            Err(e) => {
                debug!(error = %e, "HTTP/2 PING failed");
                return;
            }
        }
        monoio::time::sleep(PING_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::tls::EDGE_SERVER_NAMES;
    use rustls::pki_types::ServerName;

    /// Runs a TLS handshake in memory; returns the ALPN the server chose.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: rustls::ClientConfig,
    ) -> Result<Option<Vec<u8>>, rustls::Error> {
        let name = ServerName::try_from(SNI).unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        // Bound: a TLS 1.2/1.3 handshake is a few flights.
        for _ in 0..16 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(s.alpn_protocol().map(<[u8]>::to_vec));
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn edge_h2_tls_serves_clients_without_alpn_and_with_h2() {
        let ca = TlsMaterial::generate_ca().unwrap();
        let material = TlsMaterial::issue_server_cert(&ca, EDGE_SERVER_NAMES).unwrap();
        let server = tls_config(&material).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der()).unwrap();
        let client = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            rustls::ClientConfig::builder_with_provider(crate::tls::default_provider())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth()
        };
        // The stock cloudflared: no ALPN extension at all.
        let tls13 = client(&[&rustls::version::TLS13]);
        assert_eq!(handshake(server.clone(), tls13).unwrap(), None);
        // Go's client may settle on TLS 1.2.
        let tls12 = client(&[&rustls::version::TLS12]);
        assert_eq!(handshake(server.clone(), tls12).unwrap(), None);
        let mut h2 = client(&[&rustls::version::TLS13]);
        h2.alpn_protocols = vec![b"h2".to_vec()];
        assert_eq!(handshake(server, h2).unwrap(), Some(b"h2".to_vec()));
    }

    #[test]
    fn edge_h2_windows_follow_quic_and_fit_http2() {
        let q = QuicConfig::default();
        let w = H2Windows::from_quic(&q);
        assert_eq!(u64::from(w.stream), q.stream_receive_window.min(MAX_WINDOW));
        let huge = QuicConfig {
            receive_window: 1 << 40,
            ..QuicConfig::default()
        };
        assert_eq!(
            u64::from(H2Windows::from_quic(&huge).connection),
            MAX_WINDOW
        );
    }
}
