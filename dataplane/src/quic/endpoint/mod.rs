//! The async face of a worker's QUIC [`Driver`]: one monoio task per endpoint moves
//! datagrams between the driver and a [`UdpIo`] socket, fires timers, and wakes the tasks
//! that wait on connections and streams.
//!
//! Everything here lives on one worker thread (`Rc`, `RefCell`): a connection belongs to
//! exactly one worker, so there is no lock anywhere on this path.
//!
//! # The I/O task
//!
//! Each turn it (1) fires the driver's timer if it is due, (2) sends what the driver has to
//! send, in bounded GSO batches, (3) hands driver events to the waiting tasks, then
//! (4) waits for whichever comes first: a datagram, the timer, a datagram forwarded by
//! another worker, or a command from a local task (a write, a read that freed window, a
//! new stream). Datagrams whose connection ID names another worker are forwarded to it
//! (see [`Router`]); the initial packet of a new connection has no routable ID and is
//! handled where it lands, which then owns the connection.
//!
//! Receiving never cancels a kernel operation: [`UdpIo::recv`] is cancel-safe by
//! construction, so racing it against the timer loses nothing.
//!
//! # Data path
//!
//! Writes take `Bytes` and give them to quinn-proto as they are; reads return the `Bytes`
//! quinn-proto hands out, which point into the received datagram. The one copy on the
//! receive side is from the socket's receive buffer (owned by the I/O backend and re-armed
//! at once) into the `BytesMut` that quinn-proto decrypts in place.
//!
//! # Layout
//!
//! This file holds the shared per-worker state, [`Endpoint`] and the I/O task; `handles`
//! holds what application tasks hold: [`Connection`], [`SendStream`] and [`RecvStream`].

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionError, EcnCodepoint, StreamId, VarInt};

use super::cid::CidKey;
use super::driver::{ConnId, ConnectError, Driver, DriverEvent};
use crate::runtime::{Inbox, WorkerHandle};
use crate::udp::{MAX_UDP_PAYLOAD, Transmit as UdpTransmit, UdpIo};

mod handles;

pub use handles::{Connection, RecvStream, SendStream};

/// GSO batches sent per I/O turn before the task looks at the socket again: enough to keep
/// a bulk sender at line rate (up to 44 segments × 1472 B × 32 ≈ 2 MB per turn), few enough
/// that incoming ACKs are never starved for long.
const MAX_BATCHES_PER_TURN: usize = 32;

/// First-flight Initials (no connection ID of ours: a new connection attempt) handed to the
/// driver per I/O turn. Each may cost a Retry (microseconds) or a handshake (hundreds of
/// microseconds of TLS); bounding them per turn keeps established connections' datagrams,
/// received in the same turns, from waiting behind a flood.
const MAX_INITIALS_PER_TURN: usize = 16;

/// First-flight Initials queued for the driver. Past it they are dropped, as a full socket
/// buffer would drop them; an honest client retransmits. 512 × ~1.3 KB ≈ 650 KB per worker.
const MAX_PENDING_INITIALS: usize = 512;

/// How often the I/O task logs its handshake counters (at debug level, when they moved).
const COUNTERS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A datagram that reached the wrong worker, on its way to the owner.
#[derive(Debug)]
pub struct ForwardedDatagram {
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub ecn: Option<EcnCodepoint>,
    pub data: BytesMut,
}

/// Connects the endpoints of a worker pool that share one port via SO_REUSEPORT: the CID
/// key to read owners with, a handle to send to other workers, and this worker's inbox.
#[derive(Debug)]
pub struct Router {
    pub key: CidKey,
    pub worker: usize,
    pub handle: WorkerHandle<ForwardedDatagram>,
    pub inbox: Inbox<ForwardedDatagram>,
}

/// Counters an endpoint keeps about its own I/O.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointIoStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub forwarded_out: u64,
    pub forwarded_in: u64,
    pub send_errors: u64,
    /// First-flight Initials queued behind established connections' datagrams.
    pub initials_deferred: u64,
    /// First-flight Initials dropped because `MAX_PENDING_INITIALS` were queued.
    pub initials_dropped: u64,
    /// QUIC DATAGRAM frames received and dropped: nothing in ringway reads them (cloudflared
    /// carries UDP sessions in them, which ringway does not serve), so none is kept.
    pub quic_datagrams_dropped: u64,
}

/// Why a connection could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConnectionFailed {
    #[error("connect failed: {0}")]
    Connect(#[from] ConnectError),
    #[error("connection lost: {0}")]
    Lost(ConnectionError),
    #[error("the endpoint is shut down")]
    EndpointClosed,
}

/// Errors writing a stream.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamWriteError {
    #[error("stream stopped by peer with code {0}")]
    Stopped(VarInt),
    #[error("stream already finished or reset")]
    ClosedStream,
    #[error(transparent)]
    Connection(#[from] ConnectionFailed),
}

/// Errors reading a stream.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamReadError {
    #[error("stream reset by peer with code {0}")]
    Reset(VarInt),
    #[error("stream already read to the end, stopped or reset")]
    ClosedStream,
    #[error(transparent)]
    Connection(#[from] ConnectionFailed),
}

#[derive(Debug, Default)]
struct StreamState {
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    stopped: Option<VarInt>,
}

#[derive(Debug, Default)]
struct ConnState {
    connected: bool,
    error: Option<ConnectionError>,
    drained: bool,
    /// Waiters for `connect`, `closed`.
    state_waker: Option<Waker>,
    incoming: VecDeque<StreamId>,
    incoming_waker: Option<Waker>,
    /// Every task waiting in `open_bi` for stream credit: many tasks may wait at once (one
    /// per request when the peer's stream limit is reached), and each must be woken when
    /// credit arrives, not only the last one to register.
    open_wakers: Vec<Waker>,
    streams: HashMap<StreamId, StreamState>,
    /// Opened by our `connect` (client side) rather than accepted.
    outgoing: bool,
    /// Live `Connection`, `SendStream` and `RecvStream` handles. The entry is removed once
    /// the connection is drained and this reaches zero, so churn never grows the map.
    handles: usize,
}

impl ConnState {
    fn wake_all(&mut self) {
        for w in [self.state_waker.take(), self.incoming_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
        self.wake_openers();
        for s in self.streams.values_mut() {
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
        }
    }

    /// Wakes every `open_bi` waiter; those that find no credit register again.
    fn wake_openers(&mut self) {
        for w in self.open_wakers.drain(..) {
            w.wake();
        }
    }

    /// Registers an `open_bi` waiter once (a task polled again replaces its own entry).
    fn wait_to_open(&mut self, waker: &Waker) {
        // Bound: the number of tasks waiting on this connection's stream credit.
        match self.open_wakers.iter_mut().find(|w| w.will_wake(waker)) {
            Some(w) => w.clone_from(waker),
            None => self.open_wakers.push(waker.clone()),
        }
    }

    fn failure(&self) -> Option<ConnectionFailed> {
        if let Some(e) = &self.error {
            return Some(ConnectionFailed::Lost(e.clone()));
        }
        self.drained
            .then_some(ConnectionFailed::Lost(ConnectionError::LocallyClosed))
    }
}

#[derive(Debug)]
struct State {
    driver: Driver,
    conns: HashMap<ConnId, ConnState>,
    accept_queue: VecDeque<ConnId>,
    accept_waker: Option<Waker>,
    /// Set by local tasks after a command; the I/O task flushes on its next turn.
    io_wanted: bool,
    io_waker: Option<Waker>,
    shutdown: bool,
    io_error: Option<String>,
    stats: EndpointIoStats,
    /// First-flight Initials waiting for the driver (see `MAX_INITIALS_PER_TURN`).
    initials: VecDeque<ForwardedDatagram>,
}

impl State {
    /// Drops one handle of connection `id`; forgets the connection when it was the last and
    /// the connection is gone.
    fn release(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.handles = c.handles.saturating_sub(1);
            if c.handles == 0 && c.drained {
                self.conns.remove(&id);
            }
        }
    }

    /// Why connection `id` is unusable, once the driver no longer knows it: the error it
    /// ended with, or a local close when it was only drained.
    fn lost(&mut self, id: ConnId) -> ConnectionFailed {
        self.conn(id)
            .failure()
            .unwrap_or(ConnectionFailed::Lost(ConnectionError::LocallyClosed))
    }

    fn kick(&mut self) {
        self.io_wanted = true;
        if let Some(w) = self.io_waker.take() {
            w.wake();
        }
    }

    fn conn(&mut self, id: ConnId) -> &mut ConnState {
        self.conns.entry(id).or_default()
    }

    /// Hands every pending driver event to whoever waits for it.
    fn dispatch(&mut self) {
        while let Some(ev) = self.driver.poll_event() {
            match ev {
                DriverEvent::Connected(c) => {
                    let st = self.conn(c);
                    st.connected = true;
                    if let Some(w) = st.state_waker.take() {
                        w.wake();
                    }
                    if !st.outgoing {
                        self.accept_queue.push_back(c);
                        if let Some(w) = self.accept_waker.take() {
                            w.wake();
                        }
                    }
                }
                DriverEvent::HandshakeFailed(c, e) | DriverEvent::ConnectionLost(c, e) => {
                    let st = self.conn(c);
                    st.error = Some(e);
                    st.wake_all();
                }
                DriverEvent::IncomingStream(c, s) => {
                    let st = self.conn(c);
                    st.incoming.push_back(s);
                    if let Some(w) = st.incoming_waker.take() {
                        w.wake();
                    }
                }
                DriverEvent::StreamsAvailable(c, _) => self.conn(c).wake_openers(),
                DriverEvent::StreamReadable(c, s) => {
                    if let Some(w) = self
                        .conn(c)
                        .streams
                        .get_mut(&s)
                        .and_then(|s| s.read_waker.take())
                    {
                        w.wake();
                    }
                }
                DriverEvent::StreamWritable(c, s) | DriverEvent::StreamFinished(c, s) => {
                    if let Some(w) = self
                        .conn(c)
                        .streams
                        .get_mut(&s)
                        .and_then(|s| s.write_waker.take())
                    {
                        w.wake();
                    }
                }
                DriverEvent::StreamStopped(c, s, code) => {
                    let ss = self.conn(c).streams.entry(s).or_default();
                    ss.stopped = Some(code);
                    if let Some(w) = ss.write_waker.take() {
                        w.wake();
                    }
                }
                DriverEvent::DatagramReceived(..) => {
                    self.stats.quic_datagrams_dropped += 1;
                }
                DriverEvent::DatagramsUnblocked(_) => {}
                DriverEvent::ConnectionDrained(c) => {
                    let st = self.conn(c);
                    st.drained = true;
                    st.wake_all();
                    // Handles still held by tasks keep reporting the error via `failure`;
                    // the entry goes with the last of them (see `release`).
                    if st.handles == 0 {
                        self.conns.remove(&c);
                    }
                }
            }
        }
    }
}

/// A QUIC endpoint on this worker. Cheap to clone; all clones drive the same endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    state: Rc<RefCell<State>>,
    local_addr: SocketAddr,
}

impl Endpoint {
    /// Starts the I/O task for `driver` on `udp` (spawned on the current monoio runtime).
    /// `router` connects the endpoint to its sibling workers; `None` for a lone endpoint.
    pub fn start(driver: Driver, udp: UdpIo, router: Option<Router>) -> io::Result<Self> {
        let local_addr = udp.local_addr()?;
        let state = Rc::new(RefCell::new(State {
            driver,
            conns: HashMap::new(),
            accept_queue: VecDeque::new(),
            accept_waker: None,
            io_wanted: false,
            io_waker: None,
            shutdown: false,
            io_error: None,
            stats: EndpointIoStats::default(),
            initials: VecDeque::new(),
        }));
        monoio::spawn(io_task(state.clone(), udp, router));
        Ok(Self { state, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn io_stats(&self) -> EndpointIoStats {
        self.state.borrow().stats
    }

    /// Connections this endpoint still keeps bookkeeping for (live, or drained but with a
    /// handle still held somewhere).
    pub fn tracked_connections(&self) -> usize {
        self.state.borrow().conns.len()
    }

    /// Dials `remote` and waits for the handshake.
    pub async fn connect(
        &self,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, ConnectionFailed> {
        let id = {
            let mut st = self.state.borrow_mut();
            if st.shutdown {
                return Err(ConnectionFailed::EndpointClosed);
            }
            let id = st.driver.connect(Instant::now(), remote, server_name)?;
            let c = st.conn(id);
            c.outgoing = true;
            c.handles += 1;
            st.kick();
            id
        };
        let conn = Connection {
            state: self.state.clone(),
            id,
        };
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let c = st.conn(id);
            if let Some(e) = c.failure() {
                return Poll::Ready(Err(e));
            }
            if c.connected {
                return Poll::Ready(Ok(()));
            }
            c.state_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(conn)
    }

    /// Waits for the next connection a peer opened (handshake complete). `None` after
    /// [`Endpoint::shutdown`].
    pub async fn accept(&self) -> Option<Connection> {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if let Some(id) = st.accept_queue.pop_front() {
                st.conn(id).handles += 1;
                return Poll::Ready(Some(Connection {
                    state: self.state.clone(),
                    id,
                }));
            }
            if st.shutdown {
                return Poll::Ready(None);
            }
            st.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Closes every connection and stops the I/O task once they are drained.
    pub fn shutdown(&self, code: VarInt, reason: &[u8]) {
        let mut st = self.state.borrow_mut();
        st.shutdown = true;
        st.driver
            .close_all(Instant::now(), code, Bytes::copy_from_slice(reason));
        if let Some(w) = st.accept_waker.take() {
            w.wake();
        }
        st.kick();
    }

    /// The I/O task's fatal error, if it stopped on one.
    pub fn io_error(&self) -> Option<String> {
        self.state.borrow().io_error.clone()
    }
}

/// Hands a received buffer's datagrams to the driver (or to their owning worker). One copy
/// per receive buffer (the backend re-arms its buffer at once); the datagrams of a GRO
/// buffer are then split off that one allocation without further copies.
fn feed(
    st: &mut State,
    router: Option<&Router>,
    now: Instant,
    meta: &crate::udp::RecvMeta,
    data: &[u8],
) {
    let ecn = meta.ecn.and_then(EcnCodepoint::from_bits);
    let stride = if meta.stride == 0 {
        data.len()
    } else {
        meta.stride
    };
    let mut all = BytesMut::from(data);
    // At most 64 segments per GRO buffer (the kernel's UDP_GRO_CNT_MAX); the length check
    // ends the loop in any case.
    while !all.is_empty() {
        let seg = all.split_to(stride.min(all.len()));
        st.stats.datagrams_in += 1;
        let owner = router.and_then(|r| r.key.owner(&seg));
        if let Some(r) = router
            && let Some(owner) = owner
            && owner != r.worker
        {
            let fwd = ForwardedDatagram {
                remote: meta.addr,
                local_ip: meta.dst_ip,
                ecn,
                data: seg,
            };
            // A full inbox means the owner is overloaded; dropping is what the network
            // would do, and QUIC recovers.
            if r.handle.send(owner, fwd).is_ok() {
                st.stats.forwarded_out += 1;
            }
            continue;
        }
        if owner.is_none() && is_initial(&seg) && st.driver.is_server() {
            // A new connection attempt (or the rest of its first flight): after the
            // datagrams of connections we have, see `process_initials`.
            if st.initials.len() >= MAX_PENDING_INITIALS {
                st.stats.initials_dropped += 1;
            } else {
                st.stats.initials_deferred += 1;
                st.initials.push_back(ForwardedDatagram {
                    remote: meta.addr,
                    local_ip: meta.dst_ip,
                    ecn,
                    data: seg,
                });
            }
            continue;
        }
        st.driver
            .handle_datagram(now, meta.addr, meta.dst_ip, ecn, seg);
    }
}

/// A QUIC v1 long-header Initial packet (RFC 9000 §17.2.2: header form 1, type 0).
fn is_initial(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & 0xB0 == 0x80)
}

/// Hands at most `MAX_INITIALS_PER_TURN` queued first-flight Initials to the driver.
fn process_initials(st: &mut State, now: Instant) {
    for _ in 0..MAX_INITIALS_PER_TURN {
        let Some(d) = st.initials.pop_front() else {
            break;
        };
        st.driver
            .handle_datagram(now, d.remote, d.local_ip, d.ecn, d.data);
    }
}

/// Logs the driver's handshake counters (debug level), for operators watching a flood.
fn log_counters(st: &State) {
    let d = st.driver.driver_stats();
    tracing::debug!(
        worker = st.driver.worker(),
        connections = st.driver.connection_count(),
        half_open = st.driver.half_open(),
        incoming = d.incoming,
        accepted = d.accepted,
        retried = d.retried,
        refused = d.refused,
        refused_handshakes = d.refused_handshakes,
        handshake_timeouts = d.handshake_timeouts,
        ignored = d.ignored,
        initials_dropped = st.stats.initials_dropped,
        "QUIC handshake counters"
    );
}

async fn io_task(state: Rc<RefCell<State>>, mut udp: UdpIo, mut router: Option<Router>) {
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_UDP_PAYLOAD);
    // The driver caps this further by `QuicConfig::gso_segments`.
    let gso_segments = udp.capabilities().max_gso_segments.max(1);
    // One timer for the task's life, re-armed only when the driver's deadline moves.
    let mut timer = Box::pin(monoio::time::sleep_until(monoio::time::Instant::from_std(
        Instant::now() + std::time::Duration::from_secs(3600),
    )));
    let mut armed: Option<Instant> = None;
    let mut next_counters = Instant::now() + COUNTERS_EVERY;
    // Nothing is logged until an attempt arrives, and never for a client endpoint.
    let mut logged_stats = Some(crate::quic::DriverStats::default());
    loop {
        let now = Instant::now();
        // Timers, a bounded share of new connection attempts, then everything there is to
        // send.
        {
            let mut st = state.borrow_mut();
            if st.driver.poll_timeout().is_some_and(|t| t <= now) {
                st.driver.handle_timeout(now);
            }
            process_initials(&mut st, now);
            st.io_wanted = false;
            if now >= next_counters && st.driver.is_server() {
                next_counters = now + COUNTERS_EVERY;
                let stats = Some(st.driver.driver_stats());
                if stats != logged_stats {
                    logged_stats = stats;
                    log_counters(&st);
                }
            }
        }
        let mut batches = 0;
        loop {
            let t = state
                .borrow_mut()
                .driver
                .poll_transmit(now, gso_segments, &mut buf);
            let Some(t) = t else { break };
            let segments = t.segment_size.map_or(1, |s| t.size.div_ceil(s.max(1)));
            let out = UdpTransmit {
                destination: t.destination,
                ecn: t.ecn.map(|e| e as u8),
                contents: &buf[..t.size],
                segment_size: t.segment_size,
                src_ip: t.src_ip,
            };
            match udp.send(&out).await {
                Ok(()) => state.borrow_mut().stats.datagrams_out += segments as u64,
                Err(e) => {
                    // Unreachable peers and the like: QUIC treats this as loss.
                    let mut st = state.borrow_mut();
                    st.stats.send_errors += 1;
                    tracing::debug!(error = %e, dest = %t.destination, "UDP send failed");
                }
            }
            buf.clear();
            batches += 1;
            if batches >= MAX_BATCHES_PER_TURN {
                state.borrow_mut().io_wanted = true;
                break;
            }
        }
        let (deadline, stop) = {
            let mut st = state.borrow_mut();
            st.dispatch();
            let stop = st.shutdown && st.driver.connection_count() == 0;
            (st.driver.poll_timeout(), stop)
        };
        if stop {
            return;
        }
        if state.borrow().io_wanted {
            // More to send (batch bound hit, or a command arrived while sending): yield
            // once so the tasks woken above run, then take another turn.
            yield_now().await;
            continue;
        }
        let wake_on_command = poll_fn(|cx| {
            let mut st = state.borrow_mut();
            if st.io_wanted {
                Poll::Ready(())
            } else {
                st.io_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        if deadline != armed
            && let Some(d) = deadline
        {
            timer.as_mut().reset(monoio::time::Instant::from_std(d));
        }
        armed = deadline;
        let sleep = async {
            if armed.is_some() {
                (&mut timer).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let forwarded = async {
            match router.as_mut() {
                Some(r) => r.inbox.recv().await.ok(),
                None => std::future::pending().await,
            }
        };
        // Queued Initials wait for the next turn, but the task must not sleep on them.
        let initials_pending = !state.borrow().initials.is_empty();
        let more_initials = async {
            if !initials_pending {
                std::future::pending::<()>().await;
            }
        };
        // Biased: datagrams of connections we have (forwarded, then the socket) before
        // anything else. Timers and queued Initials are handled at the top of every turn
        // anyway, so they are never starved by a busy socket.
        monoio::select! {
            biased;
            fwd = forwarded => {
                if let Some(f) = fwd {
                    let mut st = state.borrow_mut();
                    st.stats.forwarded_in += 1;
                    st.driver.handle_datagram(Instant::now(), f.remote, f.local_ip, f.ecn, f.data);
                }
            }
            res = udp.recv() => {
                match res {
                    Ok(batch) => {
                        let now = Instant::now();
                        let mut st = state.borrow_mut();
                        for (meta, data) in batch.iter() {
                            feed(&mut st, router.as_ref(), now, meta, data);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "UDP receive failed; endpoint stops");
                        let mut st = state.borrow_mut();
                        st.io_error = Some(e.to_string());
                        st.shutdown = true;
                        let ids: Vec<ConnId> = st.conns.keys().copied().collect();
                        for id in ids {
                            let c = st.conn(id);
                            c.error.get_or_insert(ConnectionError::LocallyClosed);
                            c.wake_all();
                        }
                        if let Some(w) = st.accept_waker.take() {
                            w.wake();
                        }
                        return;
                    }
                }
            }
            _ = sleep => {}
            _ = wake_on_command => {}
            _ = more_initials => {}
        }
        state.borrow_mut().io_waker = None;
        if initials_pending {
            // A flood keeps this task busy turn after turn (the socket and the queue are
            // always ready); let the worker's other tasks (proxied requests, streams) run
            // between turns.
            yield_now().await;
        }
    }
}

/// Lets every other ready task on this worker run once before continuing.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
