//! The edge's data path: connector connections (QUIC, or cloudflared's HTTP/2 transport over
//! TCP/TLS on the same port), their registration, and public HTTP/1.1 requests forwarded to
//! them as tunnel streams.
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`Edge`] (the worker pool), [`EdgeSetup`], [`EdgeHooks`] (how the
//!   control thread hears about connections), the messages workers exchange, and each worker's
//!   state.
//! - [`routes`]: [`RouteTable`], the snapshot as the edge uses it: host → tunnel, and the
//!   credential check (tunnel id + account + SHA-256 of the secret).
//! - [`registry`]: live connections per tunnel, one copy per worker, kept in step by messages.
//! - `registration`: what both transports share on a connector connection: the
//!   `RegistrationServer` handler, withdrawal, the silence and drain watches.
//! - `tunnel`: one task per QUIC connection: the control stream, closing.
//! - `tunnel_h2`: the HTTP/2 transport's TCP accept, TLS, h2 (the edge is the client), the
//!   control stream, PING liveness, closing.
//! - `transport`: [`TunnelConn`] (either transport) and the stream operations `proxy` is
//!   generic over; QUIC's streams and the forwarding fields.
//! - `stream_h2`: one request as an HTTP/2 stream (request head, serialised response fields).
//! - `proxy`: one task per public TCP connection: read a request head, route it, open a
//!   tunnel stream, stream the body up and the response down.
//! - `splice`: an upgraded request (WebSocket) after the 101: both directions at once until
//!   either side ends.
//! - `sockets`: SO_REUSEPORT binding of the listening sockets, one per worker per address.
//! - `listener`: a client connection's head reading under the timeouts, refusals at the
//!   connection cap, lingering close.
//! - [`limits`]: the public listener's timeouts and caps ([`PublicLimits`]) and the QUIC
//!   flow-control sizing that keeps a stalled stream from starving the others.
//!
//! # Ownership across workers
//!
//! Each worker has its own SO_REUSEPORT UDP socket and TCP listener per tunnel address and
//! its own public TCP listener. A QUIC connection belongs to the worker that accepted it (its
//! connection IDs say so, and stray datagrams are forwarded there); an HTTP/2 one to the
//! worker whose listener accepted its TCP connection. A public request that lands on a worker which does
//! not own the chosen connection is handed over whole: the TCP socket's file descriptor and
//! the bytes already read travel in a message to the owner, which serves the request (and the
//! rest of that keep-alive connection). Nothing is locked between workers; the only shared
//! state is each connection's open-stream counter (an atomic).

pub mod limits;
pub mod registry;
pub mod routes;

mod error;
mod listener;
mod proxy;
mod registration;
mod sockets;
mod splice;
mod stream_h2;
mod transport;
mod tunnel;
mod tunnel_h2;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::http::Limits;
use crate::quic::endpoint::{Endpoint, ForwardedDatagram, Router};
use crate::quic::{CidKey, Driver, QuicConfig, VarInt, WorkerCidGenerator};
use crate::runtime::{Mailboxes, WorkerCtx, WorkerHandle, Workers, WorkersConfig};
use crate::udp::{UdpBackend, UdpConfig, UdpIo};

pub use limits::{LimitsError, PublicLimits};
pub use registry::{LiveConn, Registry};
pub use routes::{AuthError, HostRoute, LoadBalancerRoute, RouteTable, TunnelCredentialCheck};
pub use sockets::{bind_reuseport_tcp, bind_reuseport_udp};
pub use tunnel_h2::tls_config as http2_tls_config;

use transport::TunnelConn;

/// A registered connector connection, as reported to [`EdgeHooks`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub id: Uuid,
    pub tunnel: Uuid,
    pub client_id: Uuid,
    pub conn_index: u8,
    pub version: String,
    pub arch: String,
    pub features: Vec<String>,
    /// `originLocalIp` as the connector reported it.
    pub origin_local_ip: Option<IpAddr>,
    /// The connector's address as the edge sees it.
    pub remote: SocketAddr,
}

/// How the rest of the program hears about the data path. Called on worker threads: keep them
/// quick (hand work to another thread). Every method has a no-op default.
pub trait EdgeHooks: Send + Sync + 'static {
    /// A connector connection registered successfully.
    fn connection_registered(&self, info: &ConnectionInfo) {
        let _ = info;
    }
    /// A registered connection unregistered, closed or was lost.
    fn connection_closed(&self, tunnel: Uuid, id: Uuid) {
        let _ = (tunnel, id);
    }
}

/// Hooks that do nothing.
#[derive(Debug, Default)]
pub struct NoHooks;
impl EdgeHooks for NoHooks {}

/// Messages between the control thread and the workers, and between workers.
#[derive(Debug)]
pub enum EdgeMsg {
    /// A new snapshot.
    Routes(Arc<RouteTable>),
    /// A connection registered on some worker.
    ConnUp(Arc<LiveConn>),
    /// A connection went away (or unregistered): stop routing to it.
    ConnDown { tunnel: Uuid, id: Uuid },
    /// A public client connection handed to the worker that owns `conn`.
    Client(HandedClient),
    /// Stop accepting, close every connection, and end the worker.
    Shutdown,
}

/// A public TCP connection moving between workers, with what was already read from it.
#[derive(Debug)]
pub struct HandedClient {
    fd: OwnedFd,
    peer: SocketAddr,
    buffered: BytesMut,
    /// The connection chosen for the first request.
    conn: Uuid,
    /// Hand-offs so far; bounds ping-pong when the registry changes under a request.
    hops: u8,
}

/// Everything [`Edge::start`] needs. Sockets are bound beforehand (see
/// [`bind_reuseport_udp`] / [`bind_reuseport_tcp`]) so that the caller knows the ports and
/// errors surface before any thread starts.
pub struct EdgeSetup {
    pub quic: QuicConfig,
    pub server_config: Arc<quinn_proto::ServerConfig>,
    pub cid_key: CidKey,
    pub udp: UdpConfig,
    pub udp_backend: UdpBackend,
    /// `[tunnel address][worker]`: one SO_REUSEPORT socket per worker per address.
    pub tunnel_sockets: Vec<Vec<std::net::UdpSocket>>,
    /// `[tunnel address][worker]`: the same addresses over TCP (the HTTP/2 transport), one
    /// SO_REUSEPORT listener per worker per address. Empty: no HTTP/2 transport.
    pub tunnel_tcp_listeners: Vec<Vec<std::net::TcpListener>>,
    /// TLS of the HTTP/2 transport ([`http2_tls_config`]); required with
    /// `tunnel_tcp_listeners`.
    pub http2_tls: Option<Arc<rustls::ServerConfig>>,
    /// `[worker]`: one SO_REUSEPORT listener per worker for public HTTP.
    pub http_listeners: Vec<std::net::TcpListener>,
    /// Where this edge is (`locationName` in registrations, `colo_name` in records).
    pub location: String,
    pub hooks: Arc<dyn EdgeHooks>,
    /// `threads` must equal the number of sockets per address.
    pub workers: WorkersConfig,
    /// Request head limits for the public listener.
    pub limits: Limits,
    /// Timeouts and caps of the public listener.
    pub public: PublicLimits,
}

impl std::fmt::Debug for EdgeSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeSetup")
            .field("tunnel_addresses", &self.tunnel_sockets.len())
            .field("workers", &self.http_listeners.len())
            .field("location", &self.location)
            .finish()
    }
}

/// Errors starting the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeStartError {
    /// The caller's setup is inconsistent: one HTTP listener per worker is required.
    #[error("edge setup: {workers} workers but {listeners} HTTP listeners")]
    ListenersPerWorker { workers: usize, listeners: usize },
    /// The caller's setup is inconsistent: each tunnel address needs one UDP socket per worker.
    #[error("edge setup: every tunnel address needs one socket per worker")]
    SocketsPerWorker,
    /// The caller's setup is inconsistent: TCP tunnel listeners need one per worker per
    /// address, and a TLS configuration.
    #[error("edge setup: every TCP tunnel address needs one listener per worker and TLS")]
    TcpListenersPerWorker,
    #[error("edge limits: {0}")]
    Limits(#[from] LimitsError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("edge socket: {0}")]
    Io(#[from] io::Error),
}

/// The running edge.
pub struct Edge {
    workers: Workers<EdgeMsg>,
    handle: WorkerHandle<EdgeMsg>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("workers", &self.handle.count())
            .finish()
    }
}

/// The sockets one worker takes at start.
struct WorkerSockets {
    udp: Vec<std::net::UdpSocket>,
    /// One per tunnel address (the HTTP/2 transport).
    tunnel_tcp: Vec<std::net::TcpListener>,
    http: std::net::TcpListener,
}

impl Edge {
    /// Starts the workers; returns once each is serving.
    pub fn start(setup: EdgeSetup) -> Result<Self, EdgeStartError> {
        let n = setup.http_listeners.len();
        if n == 0 || setup.workers.threads != n {
            return Err(EdgeStartError::ListenersPerWorker {
                workers: setup.workers.threads,
                listeners: n,
            });
        }
        if setup.tunnel_sockets.is_empty() || setup.tunnel_sockets.iter().any(|s| s.len() != n) {
            return Err(EdgeStartError::SocketsPerWorker);
        }
        if setup.tunnel_tcp_listeners.iter().any(|s| s.len() != n)
            || (!setup.tunnel_tcp_listeners.is_empty() && setup.http2_tls.is_none())
        {
            return Err(EdgeStartError::TcpListenersPerWorker);
        }
        // Startup only: each worker takes its own sockets and inboxes exactly once.
        let mut per_worker: Vec<Option<WorkerSockets>> = Vec::with_capacity(n);
        let mut by_addr: Vec<std::vec::IntoIter<std::net::UdpSocket>> = setup
            .tunnel_sockets
            .into_iter()
            .map(Vec::into_iter)
            .collect();
        let mut tcp_by_addr: Vec<std::vec::IntoIter<std::net::TcpListener>> = setup
            .tunnel_tcp_listeners
            .into_iter()
            .map(Vec::into_iter)
            .collect();
        for http in setup.http_listeners {
            let udp = by_addr.iter_mut().filter_map(Iterator::next).collect();
            let tunnel_tcp = tcp_by_addr.iter_mut().filter_map(Iterator::next).collect();
            per_worker.push(Some(WorkerSockets {
                udp,
                tunnel_tcp,
                http,
            }));
        }
        let addresses = by_addr.len();
        let mut forwarders = Vec::with_capacity(addresses);
        for _ in 0..addresses {
            forwarders.push(Mailboxes::<ForwardedDatagram>::new(
                n,
                setup.workers.inbox_capacity,
            )?);
        }
        setup.public.validate()?;
        let mut public = setup.public;
        let (cap, lowered_by) = public.fit_connections_to_fd_limit(n);
        if let Some(nofile) = lowered_by {
            warn!(
                requested = public.max_connections_per_worker,
                cap,
                nofile,
                workers = n,
                "client connection cap lowered to fit the descriptor limit"
            );
        }
        public.max_connections_per_worker = cap;
        let start = Arc::new(Mutex::new((per_worker, forwarders)));
        let common = Arc::new(Common {
            quic: setup.quic,
            server_config: setup.server_config,
            cid_key: setup.cid_key,
            udp: setup.udp,
            udp_backend: setup.udp_backend,
            location: setup.location,
            hooks: setup.hooks,
            limits: setup.limits,
            public,
            http2_tls: setup.http2_tls,
        });
        let workers = Workers::start(setup.workers, move |ctx: WorkerCtx<EdgeMsg>| {
            let taken = {
                let mut guard = start.lock().unwrap_or_else(|e| e.into_inner());
                let (sockets, forwarders) = &mut *guard;
                let sockets = sockets[ctx.index].take();
                let routers: Vec<_> = forwarders
                    .iter_mut()
                    .map(|m| (m.handle(), m.take_inbox(ctx.index)))
                    .collect();
                (sockets, routers)
            };
            let common = common.clone();
            async move {
                let (Some(sockets), routers) = taken else {
                    warn!(worker = ctx.index, "edge worker started twice");
                    return;
                };
                if let Err(e) = run_worker(ctx, common, sockets, routers).await {
                    warn!(error = %e, "edge worker stopped");
                }
            }
        })?;
        let handle = workers.handle();
        Ok(Self { workers, handle })
    }

    /// Sends a new route table to every worker.
    pub fn publish_routes(&self, table: Arc<RouteTable>) {
        for i in 0..self.handle.count() {
            if let Err(e) = self.handle.send(i, EdgeMsg::Routes(table.clone())) {
                warn!(worker = i, error = %e, "could not deliver a snapshot to a worker");
            }
        }
    }

    /// Closes every connection and stops the workers (then [`Edge::join`]).
    pub fn shutdown(&self) {
        for i in 0..self.handle.count() {
            let _ = self.handle.send(i, EdgeMsg::Shutdown);
        }
    }

    pub fn join(self) -> Result<(), crate::runtime::RuntimeError> {
        self.workers.join()
    }
}

/// Configuration every worker shares.
struct Common {
    quic: QuicConfig,
    server_config: Arc<quinn_proto::ServerConfig>,
    cid_key: CidKey,
    udp: UdpConfig,
    udp_backend: UdpBackend,
    location: String,
    hooks: Arc<dyn EdgeHooks>,
    limits: Limits,
    public: PublicLimits,
    http2_tls: Option<Arc<rustls::ServerConfig>>,
}

/// One worker's state, shared by its tasks (`Rc`: never leaves the thread).
pub(crate) struct EdgeWorker {
    index: usize,
    handle: WorkerHandle<EdgeMsg>,
    routes: RefCell<Arc<RouteTable>>,
    registry: RefCell<Registry>,
    /// Registered connector connections this worker owns (either transport), by
    /// registration id.
    owned: RefCell<HashMap<Uuid, TunnelConn>>,
    hooks: Arc<dyn EdgeHooks>,
    location: String,
    limits: Limits,
    public: PublicLimits,
    /// Public client connections this worker's tasks serve now (for the per-worker cap).
    clients: Cell<usize>,
}

/// One counted public client connection; uncounted on drop.
pub(crate) struct ClientSlot(Rc<EdgeWorker>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.set(self.0.clients.get().saturating_sub(1));
    }
}

impl EdgeWorker {
    fn routes(&self) -> Arc<RouteTable> {
        self.routes.borrow().clone()
    }

    /// Counts a client connection served on this worker until the slot drops.
    pub(crate) fn client_slot(self: &Rc<Self>) -> ClientSlot {
        self.clients.set(self.clients.get() + 1);
        ClientSlot(self.clone())
    }

    /// Applies `msg` here and sends it to every other worker.
    fn broadcast(&self, make: impl Fn() -> EdgeMsg) {
        for i in 0..self.handle.count() {
            if i == self.index {
                continue;
            }
            if let Err(e) = self.handle.send(i, make()) {
                warn!(worker = i, error = %e, "registry update not delivered");
            }
        }
    }

    /// A connection on this worker registered.
    fn conn_up(&self, live: Arc<LiveConn>, conn: TunnelConn) {
        self.owned.borrow_mut().insert(live.id, conn);
        self.registry.borrow_mut().add(live.clone());
        self.broadcast(|| EdgeMsg::ConnUp(live.clone()));
    }

    /// A connection on this worker unregistered or closed: no new requests go to it.
    fn conn_down(&self, live: &LiveConn) {
        self.owned.borrow_mut().remove(&live.id);
        if self
            .registry
            .borrow_mut()
            .remove(live.tunnel, live.id)
            .is_some()
        {
            let (tunnel, id) = (live.tunnel, live.id);
            self.broadcast(|| EdgeMsg::ConnDown { tunnel, id });
            self.hooks.connection_closed(tunnel, id);
        }
    }
}

type RouterParts = (
    WorkerHandle<ForwardedDatagram>,
    Option<io::Result<crate::runtime::Inbox<ForwardedDatagram>>>,
);

async fn run_worker(
    mut ctx: WorkerCtx<EdgeMsg>,
    common: Arc<Common>,
    sockets: WorkerSockets,
    routers: Vec<RouterParts>,
) -> io::Result<()> {
    let worker = Rc::new(EdgeWorker {
        index: ctx.index,
        handle: ctx.handle.clone(),
        routes: RefCell::new(Arc::new(RouteTable::default())),
        registry: RefCell::new(Registry::default()),
        owned: RefCell::new(HashMap::new()),
        hooks: common.hooks.clone(),
        location: common.location.clone(),
        limits: common.limits,
        public: common.public,
        clients: Cell::new(0),
    });

    let mut endpoints = Vec::with_capacity(sockets.udp.len());
    for (socket, (handle, inbox)) in sockets.udp.into_iter().zip(routers) {
        let inbox = inbox.ok_or_else(|| io::Error::other("router inbox taken twice"))??;
        let cid = WorkerCidGenerator::new(common.cid_key.clone(), ctx.index)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let driver = Driver::new(&common.quic, Some(common.server_config.clone()), None, cid)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let udp = UdpIo::from_std(socket, &common.udp, common.udp_backend)?;
        let router = Router {
            key: common.cid_key.clone(),
            worker: ctx.index,
            handle,
            inbox,
        };
        let ep = Endpoint::start(driver, udp, Some(router))?;
        debug!(worker = ctx.index, addr = %ep.local_addr(), "edge QUIC endpoint up");
        let w = worker.clone();
        let accepting = ep.clone();
        monoio::spawn(async move {
            // Ends at shutdown (accept returns None).
            while let Some(conn) = accepting.accept().await {
                monoio::spawn(tunnel::serve_connection(w.clone(), conn));
            }
        });
        endpoints.push(ep);
    }
    let mut tcp_accepts = Vec::with_capacity(sockets.tunnel_tcp.len());
    if let Some(tls) = &common.http2_tls {
        let windows = tunnel_h2::H2Windows::from_quic(&common.quic);
        for l in sockets.tunnel_tcp {
            debug!(worker = ctx.index, addr = ?l.local_addr(), "edge HTTP/2 tunnel listener up");
            tcp_accepts.push(tunnel_h2::spawn_accept(
                worker.clone(),
                l,
                tls.clone(),
                windows,
            )?);
        }
    }

    // Public requests are accepted only once the first route table has arrived: before it,
    // every host would get a wrong 404 (the kernel queues connections meanwhile).
    let mut http_listener = Some(sockets.http);
    let mut http_task = None;
    // The worker's own inbox: snapshots, registry updates, handed-over clients.
    loop {
        let msg = ctx.inbox.recv().await?;
        match msg {
            EdgeMsg::Routes(t) => {
                debug!(worker = ctx.index, version = t.version, "routes updated");
                *worker.routes.borrow_mut() = t;
                if let Some(l) = http_listener.take() {
                    http_task = Some(spawn_http_accept(worker.clone(), l)?);
                }
            }
            EdgeMsg::ConnUp(live) => worker.registry.borrow_mut().add(live),
            EdgeMsg::ConnDown { tunnel, id } => {
                worker.registry.borrow_mut().remove(tunnel, id);
            }
            EdgeMsg::Client(c) => {
                let std_stream = std::net::TcpStream::from(c.fd);
                match monoio::net::TcpStream::from_std(std_stream) {
                    Ok(stream) => {
                        monoio::spawn(proxy::serve_client(
                            worker.clone(),
                            stream,
                            c.peer,
                            c.buffered,
                            Some((c.conn, c.hops)),
                            worker.client_slot(),
                        ));
                    }
                    Err(e) => warn!(error = %e, "could not adopt a handed-over client"),
                }
            }
            EdgeMsg::Shutdown => {
                info!(worker = ctx.index, "edge worker shutting down");
                drop(http_task.take());
                drop(tcp_accepts);
                let owned: Vec<TunnelConn> = worker.owned.borrow().values().cloned().collect();
                for c in owned {
                    if let TunnelConn::Http2(_) = c {
                        c.close("edge shutting down");
                    }
                }
                for ep in &endpoints {
                    ep.shutdown(VarInt::from_u32(0), b"edge shutting down");
                }
                return Ok(());
            }
        }
    }
}

/// Accepts public clients on this worker's listener, one task per client.
fn spawn_http_accept(
    w: Rc<EdgeWorker>,
    listener: std::net::TcpListener,
) -> io::Result<monoio::task::JoinHandle<()>> {
    let listener = monoio::net::TcpListener::from_std(listener)?;
    Ok(monoio::spawn(async move {
        // One accept per turn; each client gets its own task.
        loop {
            match listener.accept().await {
                Ok((stream, _)) if w.clients.get() >= w.public.max_connections_per_worker => {
                    // Answer instead of letting the descriptor limit make new clients time out.
                    monoio::spawn(listener::refuse_client(w.clone(), stream));
                }
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    // Counted here, not when the task first runs, so that a burst of accepts
                    // cannot overshoot the cap.
                    let slot = w.client_slot();
                    monoio::spawn(proxy::serve_client(
                        w.clone(),
                        stream,
                        peer,
                        BytesMut::new(),
                        None,
                        slot,
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    warn!(error = %e, "public accept failed");
                    monoio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }))
}
