//! The connector's data path: connections to the edge over QUIC or HTTP/2, their
//! registration, one task per request the edge sends, and the origin side.
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`Connector`] (pinned workers), [`ConnectorSetup`], the
//!   [`IngressRouter`] and [`ConnectorHooks`] extension points.
//! - `supervise`: one task per HA connection: dial on the selected transport, register,
//!   serve, reconnect with backoff; `auto`'s fallback to HTTP/2 and background QUIC probe.
//! - [`protocol`]: `--protocol quic|http2|auto` and when `auto` switches.
//! - `session`: what both transports share once dialled: the control stream's registration,
//!   the serve loop, the graceful drain (unregister, finish in-flight requests, close).
//! - `quic_link`: the QUIC transport (UDP socket, endpoint, handshake, control stream).
//! - `stream`: one task per QUIC stream the edge opens: `ConnectRequest` → ingress → origin →
//!   `ConnectResponse` and body; RPC streams answer `updateConfiguration`.
//! - `h2_link`: the HTTP/2 transport (TCP, TLS with SNI `h2.cftunnel.com`, the connector as
//!   HTTP/2 server, PING liveness); `h2_stream`: one task per HTTP/2 request the edge sends.
//! - [`origin`]: what a request is proxied to ([`origin::OriginTarget`]) and the per-worker
//!   HTTP/1.1 client with keep-alive pools that does it.
//!
//! # Connections
//!
//! HA connection `i` belongs to worker `i % workers` and uses its own UDP socket (or TCP
//! connection), so each connection's packets stay on the worker that owns it. Attempt `k` of connection `i`
//! dials `edges[(i + k) % edges.len()]`, so connections spread over the edge addresses and a
//! failed address is skipped on the next try. Connection 0 registers first; the others wait
//! for its first outcome, as cloudflared does, so a bad credential shows up once.

mod error;
mod h2_link;
mod h2_stream;
#[cfg(test)]
mod h2_tests;
pub mod origin;
pub mod protocol;
mod quic_link;
mod session;
mod stream;
mod supervise;

pub use error::{ConnectionError, FailedSide};
pub use h2_link::edge_tls_config;
pub use protocol::{Protocol, ProtocolChoice, Switch};
pub use stream::RouteKey;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::task::{Poll, Waker};
use std::time::Duration;

use uuid::Uuid;

use crate::metrics::TunnelMetrics;
use crate::quic::{CidKey, QuicConfig};
use crate::runtime::{WorkerCtx, Workers, WorkersConfig};
use crate::udp::{UdpBackend, UdpConfig};
use crate::wire::rpc::{ConnectionDetails, ConnectionOptions, TunnelAuth};

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
    fn registered(
        &self,
        index: u8,
        edge: SocketAddr,
        protocol: Protocol,
        details: &ConnectionDetails,
    ) {
        let _ = (index, edge, protocol, details);
    }
    /// `--protocol auto` moved connection `index` to another transport.
    fn protocol_changed(&self, index: u8, switch: &Switch) {
        let _ = (index, switch);
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
    /// TLS server name (SNI) for the edge over QUIC: `quic.cftunnel.com`.
    pub server_name: String,
    /// `--protocol`.
    pub protocol: ProtocolChoice,
    /// In `auto`, failed attempts in a row on one transport before a connection tries the
    /// other ([`protocol::FALLBACK_AFTER`] by default; `--max-edge-addr-retries` N gives N + 1).
    pub fallback_after: u32,
    /// TLS towards the edge over HTTP/2 ([`edge_tls_config`]: the same CA and groups as QUIC).
    pub h2_tls: Arc<rustls::ClientConfig>,
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
    /// How long `registerConnection` may take before the attempt fails (`--rpc-timeout`).
    pub rpc_timeout: Duration,
    /// How long one write of response bytes towards the edge may wait for the edge to take them
    /// (`--write-stream-timeout`); when it passes, the stream is reset. `None`: no limit.
    pub write_stream_timeout: Option<Duration>,
    pub backoff: Backoff,
    pub workers: WorkersConfig,
}

impl std::fmt::Debug for ConnectorSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorSetup")
            .field("edges", &self.edges)
            .field("tunnel_id", &self.tunnel_id)
            .field("ha_connections", &self.ha_connections)
            .field("protocol", &self.protocol)
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

pub(crate) struct Common {
    setup: ConnectorSetup,
    cid_key: CidKey,
    first: AtomicU8,
}

/// Per-worker state shared by that worker's tasks.
pub(crate) struct ConnectorShared {
    pub(crate) origins: OriginClient,
    pub(crate) ingress: Arc<dyn IngressRouter>,
    pub(crate) metrics: Arc<TunnelMetrics>,
    /// [`ConnectorSetup::write_stream_timeout`].
    pub(crate) write_stream_timeout: Option<Duration>,
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

    /// One write towards the edge, failed with `TimedOut` when the edge has not taken the bytes
    /// within [`ConnectorSetup::write_stream_timeout`]. Dropping a write future on timeout is
    /// safe: what it handed to the transport stays queued, and the caller resets the stream.
    pub(crate) async fn write_to_edge<F>(&self, write: F) -> io::Result<()>
    where
        F: std::future::Future<Output = io::Result<()>>,
    {
        let Some(limit) = self.write_stream_timeout else {
            return write.await;
        };
        monoio::time::timeout(limit, write)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the edge took no response bytes for {}s (--write-stream-timeout)",
                        limit.as_secs_f64()
                    ),
                ))
            })
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
        write_stream_timeout: common.setup.write_stream_timeout,
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
        tasks.push(monoio::spawn(supervise::supervise(
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
