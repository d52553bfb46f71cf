//! The connector's data path: QUIC connections to the edge, their registration, one task per
//! data stream, and the origin side.
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`Connector`] (pinned workers), [`ConnectorSetup`], the
//!   [`IngressRouter`] and [`ConnectorHooks`] extension points, and the per-connection
//!   supervisor: dial, register, serve streams, reconnect with backoff.
//! - `stream`: one task per stream the edge opens: `ConnectRequest` → ingress → origin →
//!   `ConnectResponse` and body; RPC streams answer `updateConfiguration`.
//! - [`origin`]: what a request is proxied to ([`origin::OriginTarget`]) and the per-worker
//!   HTTP/1.1 client with keep-alive pools that does it.
//!
//! # Connections
//!
//! HA connection `i` belongs to worker `i % workers` and uses its own UDP socket, so each
//! connection's packets stay on the worker that owns it. Attempt `k` of connection `i`
//! dials `edges[(i + k) % edges.len()]`, so connections spread over the edge addresses and a
//! failed address is skipped on the next try. Connection 0 registers first; the others wait
//! for its first outcome, as cloudflared does, so a bad credential shows up once.

mod error;
pub mod origin;
mod stream;

pub use error::{ConnectionError, FailedSide};
pub use stream::RouteKey;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use tracing::debug;
use uuid::Uuid;

use crate::metrics::TunnelMetrics;
use crate::quic::endpoint::Endpoint;
use crate::quic::stream_io::{StreamReader, StreamWriter};
use crate::quic::{CidKey, Driver, QuicConfig, VarInt, WorkerCidGenerator};
use crate::runtime::{WorkerCtx, Workers, WorkersConfig};
use crate::udp::{UdpBackend, UdpConfig, UdpIo};
use crate::wire::rpc::{
    ConnectionDetails, ConnectionOptions, RegisterError, TunnelAuth, registration_client,
};

use origin::{OriginClient, OriginTarget};

/// Chooses the origin for a request (the ingress rules). Shared by every worker.
pub trait IngressRouter: Send + Sync + 'static {
    /// The target for `host` (without port) and `path` (without query).
    fn route(&self, host: &str, path: &str) -> Arc<OriginTarget>;
}

/// Every request goes to one target (`--url`, or a single catch-all rule).
#[derive(Debug)]
pub struct SingleOrigin(pub Arc<OriginTarget>);

impl IngressRouter for SingleOrigin {
    fn route(&self, _: &str, _: &str) -> Arc<OriginTarget> {
        self.0.clone()
    }
}

/// What the control thread hears about connections (called on worker threads; keep quick).
pub trait ConnectorHooks: Send + Sync + 'static {
    fn registered(&self, index: u8, edge: SocketAddr, details: &ConnectionDetails) {
        let _ = (index, edge, details);
    }
    fn disconnected(&self, index: u8, edge: SocketAddr, reason: &ConnectionError) {
        let _ = (index, edge, reason);
    }
    /// An attempt failed; the next one starts after `retry_in`.
    fn attempt_failed(
        &self,
        index: u8,
        edge: SocketAddr,
        error: &ConnectionError,
        retry_in: Duration,
    ) {
        let _ = (index, edge, error, retry_in);
    }
    /// `attempts` attempts in a row failed (e.g. the edge is unreachable); the connection keeps
    /// trying at the backoff cap.
    fn failing(&self, index: u8, error: &ConnectionError, attempts: u32) {
        let _ = (index, error, attempts);
    }
    /// The edge refused this connection `retries` times in a row with a refusal it says
    /// retrying will not fix (e.g. a wrong secret): the connection stops trying.
    fn gave_up(&self, index: u8, error: &ConnectionError) {
        let _ = (index, error);
    }
}

/// Reconnect backoff: exponential with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(32),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0-based): uniform in `[0, min(cap, base·2^attempt)]`,
    /// never below 50 ms so a refused connection cannot spin.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        let ms = ceiling.as_millis().max(50) as u64;
        Duration::from_millis(rand::random_range(50..=ms))
    }
}

/// Everything [`Connector::start`] needs.
pub struct ConnectorSetup {
    pub quic: QuicConfig,
    pub client_config: quinn_proto::ClientConfig,
    pub udp: UdpConfig,
    pub udp_backend: UdpBackend,
    /// Local IP the edge connections' UDP sockets bind to (port 0); `None` binds the
    /// unspecified address of each edge's family. Its family must match every edge's.
    pub bind_address: Option<std::net::IpAddr>,
    /// Edge addresses (`--edge`); connections spread over them.
    pub edges: Vec<SocketAddr>,
    /// TLS server name (SNI) for the edge: `quic.cftunnel.com`.
    pub server_name: String,
    pub ha_connections: u8,
    pub tunnel_id: Uuid,
    pub auth: TunnelAuth,
    /// `ClientInfo` and the rest of `ConnectionOptions` (the connector id is `client_id`).
    pub options: ConnectionOptions,
    /// Sent by connection 0 with `updateLocalConfiguration` (locally managed tunnels).
    pub local_config: Option<Vec<u8>>,
    pub ingress: Arc<dyn IngressRouter>,
    pub metrics: Arc<TunnelMetrics>,
    pub hooks: Arc<dyn ConnectorHooks>,
    /// Failed attempts in a row before a connection is reported failed (it keeps retrying at
    /// the backoff cap), and permanent refusals in a row before it gives up.
    pub retries: u32,
    /// How long in-flight requests may run after shutdown begins.
    pub grace_period: Duration,
    pub backoff: Backoff,
    pub workers: WorkersConfig,
}

impl std::fmt::Debug for ConnectorSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorSetup")
            .field("edges", &self.edges)
            .field("tunnel_id", &self.tunnel_id)
            .field("ha_connections", &self.ha_connections)
            .finish_non_exhaustive()
    }
}

/// The running connector.
pub struct Connector {
    workers: Workers<()>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

/// Connection 0's first outcome, which the other connections wait for.
const FIRST_PENDING: u8 = 0;
const FIRST_DONE: u8 = 1;

struct Common {
    setup: ConnectorSetup,
    cid_key: CidKey,
    first: AtomicU8,
}

/// Per-worker state shared by that worker's tasks.
pub(crate) struct ConnectorShared {
    pub(crate) origins: OriginClient,
    pub(crate) ingress: Arc<dyn IngressRouter>,
    pub(crate) metrics: Arc<TunnelMetrics>,
    /// Set once by [`Connector::shutdown`]; wakes every task waiting in `stopped()`.
    stopping: Cell<bool>,
    stop_wakers: RefCell<Vec<Waker>>,
}

impl ConnectorShared {
    fn stop(&self) {
        self.stopping.set(true);
        for w in self.stop_wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Resolves once shutdown has begun.
    async fn stopped(&self) {
        poll_fn(|cx| {
            if self.stopping.get() {
                return Poll::Ready(());
            }
            self.stop_wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Connector {
    /// Starts the workers and their connections.
    pub fn start(setup: ConnectorSetup) -> Result<Self, crate::runtime::RuntimeError> {
        let workers_cfg = setup.workers.clone();
        let common = Arc::new(Common {
            setup,
            cid_key: CidKey::random(),
            first: AtomicU8::new(FIRST_PENDING),
        });
        let workers = Workers::start(workers_cfg, move |ctx: WorkerCtx<()>| {
            let common = common.clone();
            async move { run_worker(ctx, common).await }
        })?;
        Ok(Self { workers })
    }

    /// Starts a graceful shutdown: every connection calls `unregisterConnection` (the edge stops
    /// sending new requests), in-flight requests get up to the grace period, then connections
    /// close and the workers end. Follow with [`Connector::join`].
    pub fn shutdown(&self) {
        let h = self.workers.handle();
        for i in 0..h.count() {
            let _ = h.send(i, ());
        }
    }

    /// Waits for the workers (they run until shutdown or until every connection gave up).
    pub fn join(self) -> Result<(), crate::runtime::RuntimeError> {
        self.workers.join()
    }
}

async fn run_worker(mut ctx: WorkerCtx<()>, common: Arc<Common>) {
    let shared = Rc::new(ConnectorShared {
        origins: OriginClient::new(),
        ingress: common.setup.ingress.clone(),
        metrics: common.setup.metrics.clone(),
        stopping: Cell::new(false),
        stop_wakers: RefCell::new(Vec::new()),
    });
    let stopper = shared.clone();
    monoio::spawn(async move {
        // One message means "shut down"; an error means the pool is going away anyway.
        let _ = ctx.inbox.recv().await;
        stopper.stop();
    });
    let n = common.setup.ha_connections.max(1) as usize;
    let mut tasks = Vec::new();
    for index in (ctx.index..n).step_by(ctx.count) {
        let (common, shared) = (common.clone(), shared.clone());
        tasks.push(monoio::spawn(supervise(
            common,
            shared,
            ctx.index,
            index as u8,
        )));
    }
    for t in tasks {
        t.await;
    }
}

/// Keeps connection `index` up: dial, register, serve, and on any failure wait and redial.
async fn supervise(common: Arc<Common>, shared: Rc<ConnectorShared>, worker: usize, index: u8) {
    let setup = &common.setup;
    if index != 0 {
        // Startup only: poll the first connection's outcome (a few checks at most).
        while common.first.load(Ordering::Acquire) == FIRST_PENDING {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut attempt: u32 = 0;
    let mut refusals: u32 = 0;
    // Runs until shutdown; every turn waits on the network or on a backoff.
    loop {
        if shared.is_stopping() {
            return;
        }
        let edge = setup.edges[(index as usize + attempt as usize) % setup.edges.len()];
        let outcome = run_connection(&common, &shared, worker, index, edge, attempt).await;
        if index == 0 {
            common.first.store(FIRST_DONE, Ordering::Release);
        }
        match outcome {
            Outcome::Served(None) => {
                setup.metrics.ha_connection_down();
                return;
            }
            Outcome::Served(Some(reason)) => {
                setup.metrics.ha_connection_down();
                if shared.is_stopping() {
                    return;
                }
                setup.hooks.disconnected(index, edge, &reason);
                attempt = 0;
                refusals = 0;
            }
            Outcome::Failed(error) => {
                if !error.retryable() {
                    refusals += 1;
                    if refusals >= setup.retries.max(1) {
                        setup.hooks.gave_up(index, &error);
                        return;
                    }
                } else {
                    refusals = 0;
                    if attempt + 1 == setup.retries.max(1) {
                        // Reported once; the attempts go on at the backoff cap.
                        setup.hooks.failing(index, &error, setup.retries.max(1));
                    }
                }
                let wait = setup.backoff.delay(attempt);
                setup.hooks.attempt_failed(index, edge, &error, wait);
                let mut sleep = std::pin::pin!(monoio::time::sleep(wait).fuse());
                let mut stop = std::pin::pin!(shared.stopped().fuse());
                futures::select! {
                    () = sleep => {}
                    () = stop => return,
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Graceful end of one connection: unregister (the edge stops sending new requests here), let
/// in-flight streams finish within `grace`, then close.
async fn drain(
    shared: &Rc<ConnectorShared>,
    client: &crate::wire::rpc::RegistrationClient,
    conn: &crate::quic::endpoint::Connection,
    active: &Rc<Cell<usize>>,
    grace: Duration,
    index: u8,
) {
    let deadline = std::time::Instant::now() + grace;
    match monoio::time::timeout(UNREGISTER_TIMEOUT, client.unregister_connection()).await {
        Ok(Ok(())) => debug!(index, "unregistered"),
        Ok(Err(e)) => debug!(index, error = %e, "unregisterConnection failed"),
        Err(_) => debug!(index, "unregisterConnection timed out"),
    }
    // Requests the edge routed here just before it processed the unregistration still arrive
    // for a moment: keep serving new streams through a short settle period, then until the
    // in-flight ones are done, within the grace period. A few checks per second.
    let settled = std::time::Instant::now() + DRAIN_SETTLE;
    loop {
        let now = std::time::Instant::now();
        if now >= deadline || (now >= settled && active.get() == 0) {
            break;
        }
        let mut next = std::pin::pin!(conn.accept_bi().fuse());
        let mut tick = std::pin::pin!(monoio::time::sleep(Duration::from_millis(20)).fuse());
        futures::select! {
            s = next => match s {
                Ok((send, recv)) => spawn_stream(shared, active, send, recv),
                Err(_) => break,
            },
            () = tick => {}
        }
    }
    conn.close(VarInt::from_u32(0), b"connector shutting down");
}

/// After `unregisterConnection`, how long the connector keeps accepting streams the edge had
/// already routed to this connection (the edge applies the unregistration at once on the
/// owning worker; a request already past routing is at most one round trip behind).
const DRAIN_SETTLE: Duration = Duration::from_millis(500);

/// Serves one edge-opened stream on its own task, counted in `active`.
fn spawn_stream(
    shared: &Rc<ConnectorShared>,
    active: &Rc<Cell<usize>>,
    send: crate::quic::endpoint::SendStream,
    recv: crate::quic::endpoint::RecvStream,
) {
    let (shared, active) = (shared.clone(), active.clone());
    active.set(active.get() + 1);
    monoio::spawn(async move {
        stream::serve_stream(shared, send, recv).await;
        active.set(active.get() - 1);
    });
}

/// Resolves once the edge has sent nothing for [`crate::quic::SILENT_PEER`]: a dead edge is
/// left (and redialled) in 2.5 s rather than after the 5 s idle timeout.
async fn edge_silent(conn: &crate::quic::endpoint::Connection) {
    // Four checks per second, well inside the silence limit.
    loop {
        monoio::time::sleep(Duration::from_millis(250)).await;
        if let Some(t) = conn.last_received()
            && t.elapsed() > crate::quic::SILENT_PEER
        {
            return;
        }
    }
}

/// How long `unregisterConnection` may take before the connector closes anyway.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

enum Outcome {
    /// Registered and served until the connection ended, for this reason (`None`: the
    /// connector is shutting down).
    Served(Option<ConnectionError>),
    /// Never registered; the error says whether to retry.
    Failed(ConnectionError),
}

async fn run_connection(
    common: &Common,
    shared: &Rc<ConnectorShared>,
    worker: usize,
    index: u8,
    edge: SocketAddr,
    attempt: u32,
) -> Outcome {
    let setup = &common.setup;
    let failed = Outcome::Failed;
    let bind: SocketAddr = match setup.bind_address {
        Some(ip) => (ip, 0).into(),
        None if edge.is_ipv4() => ([0, 0, 0, 0], 0).into(),
        None => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let udp = match UdpIo::bind(bind, &setup.udp, setup.udp_backend) {
        Ok(u) => u,
        Err(e) => return failed(ConnectionError::Socket(Arc::new(e))),
    };
    let cid = match WorkerCidGenerator::new(common.cid_key.clone(), worker) {
        Ok(c) => c,
        Err(e) => return failed(e.into()),
    };
    let driver = match Driver::new(&setup.quic, None, Some(setup.client_config.clone()), cid) {
        Ok(d) => d,
        Err(e) => return failed(e.into()),
    };
    let ep = match Endpoint::start(driver, udp, None) {
        Ok(ep) => ep,
        Err(e) => return failed(ConnectionError::Endpoint(Arc::new(e))),
    };
    let outcome = connect_and_serve(common, shared, &ep, index, edge, attempt).await;
    ep.shutdown(VarInt::from_u32(0), b"");
    outcome
}

async fn connect_and_serve(
    common: &Common,
    shared: &Rc<ConnectorShared>,
    ep: &Endpoint,
    index: u8,
    edge: SocketAddr,
    attempt: u32,
) -> Outcome {
    let setup = &common.setup;
    let failed = Outcome::Failed;
    let conn = match ep.connect(edge, &setup.server_name).await {
        Ok(c) => c,
        Err(cause) => return failed(ConnectionError::Unreachable { edge, cause }),
    };
    let (send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return failed(ConnectionError::ControlStream(e)),
    };
    let (client, rpc) = registration_client(StreamReader::new(recv), StreamWriter::new(send));
    let rpc_task = monoio::spawn(async move {
        if let Err(e) = rpc.await {
            debug!(error = %e, "control stream ended");
        }
    });
    let mut options = setup.options.clone();
    options.num_previous_attempts = attempt.min(255) as u8;
    let registered = client
        .register_connection(&setup.auth, setup.tunnel_id, index, &options)
        .await;
    let details = match registered {
        Ok(d) => d,
        Err(RegisterError::Refused(r)) => {
            conn.close(VarInt::from_u32(0), b"registration refused");
            drop(rpc_task);
            return failed(ConnectionError::Refused(r));
        }
        Err(RegisterError::Rpc(e)) => {
            conn.close(VarInt::from_u32(0), b"registration failed");
            drop(rpc_task);
            return failed(ConnectionError::RegistrationRpc(e));
        }
    };
    setup.metrics.ha_connection_up();
    setup.hooks.registered(index, edge, &details);
    if index == 0 {
        common.first.store(FIRST_DONE, Ordering::Release);
    }
    if index == 0
        && let Some(cfg) = &setup.local_config
        && let Err(e) = client.update_local_configuration(cfg).await
    {
        debug!(error = %e, "updateLocalConfiguration failed");
    }
    // Serve streams until the connection ends or shutdown begins.
    let active = Rc::new(Cell::new(0usize));
    let mut closed = std::pin::pin!(conn.closed().fuse());
    let mut stop = std::pin::pin!(shared.stopped().fuse());
    let mut silent = std::pin::pin!(edge_silent(&conn).fuse());
    // Bounded by the connection's life; each turn accepts one stream.
    let reason = loop {
        let mut next = std::pin::pin!(conn.accept_bi().fuse());
        futures::select! {
            s = next => match s {
                Ok((send, recv)) => spawn_stream(shared, &active, send, recv),
                Err(e) => break Some(ConnectionError::Lost(e)),
            },
            e = closed => break Some(ConnectionError::Closed(e)),
            () = silent => {
                conn.close(VarInt::from_u32(0), b"edge silent");
                break Some(ConnectionError::Silent { edge, silent_for: crate::quic::SILENT_PEER });
            }
            () = stop => {
                drain(shared, &client, &conn, &active, setup.grace_period, index).await;
                break None;
            }
        }
    };
    drop(client);
    drop(rpc_task);
    Outcome::Served(reason)
}
