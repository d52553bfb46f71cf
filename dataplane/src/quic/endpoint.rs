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

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionError, EcnCodepoint, StreamId, VarInt};

use super::cid::CidKey;
use super::driver::{
    ConnId, ConnectError, DatagramError, Driver, DriverEvent, HandshakeInfo, ReadError,
    StreamError, WriteError,
};
use crate::runtime::{Inbox, WorkerHandle};
use crate::udp::{MAX_UDP_PAYLOAD, Transmit as UdpTransmit, UdpIo};

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
    datagrams: VecDeque<Bytes>,
    datagram_waker: Option<Waker>,
    streams: HashMap<StreamId, StreamState>,
    /// Opened by our `connect` (client side) rather than accepted.
    outgoing: bool,
    /// Live `Connection`, `SendStream` and `RecvStream` handles. The entry is removed once
    /// the connection is drained and this reaches zero, so churn never grows the map.
    handles: usize,
}

impl ConnState {
    fn wake_all(&mut self) {
        for w in [
            self.state_waker.take(),
            self.incoming_waker.take(),
            self.datagram_waker.take(),
        ]
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
                DriverEvent::DatagramReceived(c, d) => {
                    let st = self.conn(c);
                    // A reader that never reads must not grow memory without bound; the
                    // oldest datagram goes first, as an unreliable datagram may.
                    if st.datagrams.len() >= 1024 {
                        st.datagrams.pop_front();
                    }
                    st.datagrams.push_back(d);
                    if let Some(w) = st.datagram_waker.take() {
                        w.wake();
                    }
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

    /// Runs `f` on the driver (for stats and tests), then flushes.
    pub fn with_driver<T>(&self, f: impl FnOnce(&mut Driver) -> T) -> T {
        let mut st = self.state.borrow_mut();
        let out = f(&mut st.driver);
        st.kick();
        out
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

/// One QUIC connection, owned by this worker's endpoint.
#[derive(Debug)]
pub struct Connection {
    state: Rc<RefCell<State>>,
    id: ConnId,
}

impl Connection {
    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.state.borrow_mut().driver.remote_address(self.id)
    }

    pub fn handshake_info(&self) -> Option<HandshakeInfo> {
        self.state.borrow_mut().driver.handshake_info(self.id)
    }

    /// When the last datagram from the peer arrived.
    pub fn last_received(&self) -> Option<Instant> {
        self.state.borrow_mut().driver.last_received(self.id)
    }

    pub fn stats(&self) -> Option<quinn_proto::ConnectionStats> {
        self.state.borrow_mut().driver.stats(self.id)
    }

    fn streams(&self, sid: StreamId) -> (SendStream, RecvStream) {
        {
            let mut st = self.state.borrow_mut();
            let c = st.conn(self.id);
            c.streams.entry(sid).or_default();
            c.handles += 2;
        }
        (
            SendStream {
                state: self.state.clone(),
                conn: self.id,
                id: sid,
                done: false,
            },
            RecvStream {
                state: self.state.clone(),
                conn: self.id,
                id: sid,
                done: false,
            },
        )
    }

    /// Opens a bidirectional stream, waiting while the peer's stream limit is reached.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionFailed> {
        let sid = poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if let Some(e) = st.conn(self.id).failure() {
                return Poll::Ready(Err(e));
            }
            if let Some(s) = st.driver.open_bi(self.id) {
                return Poll::Ready(Ok(s));
            }
            st.conn(self.id).wait_to_open(cx.waker());
            Poll::Pending
        })
        .await?;
        Ok(self.streams(sid))
    }

    /// Waits for the next stream the peer opens.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionFailed> {
        let sid = poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let c = st.conn(self.id);
            if let Some(s) = c.incoming.pop_front() {
                return Poll::Ready(Ok(s));
            }
            if let Some(e) = c.failure() {
                return Poll::Ready(Err(e));
            }
            c.incoming_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(self.streams(sid))
    }

    pub fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        let mut st = self.state.borrow_mut();
        let r = st.driver.send_datagram(self.id, data);
        st.kick();
        r
    }

    pub async fn read_datagram(&self) -> Result<Bytes, ConnectionFailed> {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let c = st.conn(self.id);
            if let Some(d) = c.datagrams.pop_front() {
                return Poll::Ready(Ok(d));
            }
            if let Some(e) = c.failure() {
                return Poll::Ready(Err(e));
            }
            c.datagram_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Closes the connection with an application error code.
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        let mut st = self.state.borrow_mut();
        st.driver.close(
            Instant::now(),
            self.id,
            code,
            Bytes::copy_from_slice(reason),
        );
        st.kick();
    }

    /// Waits until the connection is closed or lost and returns why.
    pub async fn closed(&self) -> ConnectionError {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let c = st.conn(self.id);
            if let Some(e) = &c.error {
                return Poll::Ready(e.clone());
            }
            if c.drained {
                return Poll::Ready(ConnectionError::LocallyClosed);
            }
            c.state_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// The sending half of a stream. Dropping it without `finish` or `reset` finishes it, as
/// quinn does, so a forgotten handle never leaves the peer waiting forever.
#[derive(Debug)]
pub struct SendStream {
    state: Rc<RefCell<State>>,
    conn: ConnId,
    id: StreamId,
    done: bool,
}

impl SendStream {
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Writes all of `data`, waiting on flow control. The bytes go to quinn-proto as they
    /// are (no copy).
    pub async fn write_all(&mut self, mut data: Bytes) -> Result<(), StreamWriteError> {
        while !data.is_empty() {
            self.write_some(&mut data).await?;
        }
        Ok(())
    }

    /// Writes as much of `data` as flow control allows right now (at least one byte),
    /// advancing `data` past what was taken.
    pub async fn write_some(&mut self, data: &mut Bytes) -> Result<usize, StreamWriteError> {
        poll_fn(|cx| self.poll_write_some(cx, data)).await
    }

    /// Poll form of [`SendStream::write_some`], for adapters that implement `AsyncWrite`.
    pub fn poll_write_some(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<Result<usize, StreamWriteError>> {
        let mut st = self.state.borrow_mut();
        match st.driver.write(self.conn, self.id, data) {
            Ok(n) => {
                st.kick();
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                let c = st.conn(self.conn);
                if let Some(e) = c.failure() {
                    return Poll::Ready(Err(e.into()));
                }
                c.streams.entry(self.id).or_default().write_waker = Some(cx.waker().clone());
                // No kick: a blocked write queued nothing new, and waking the I/O task
                // for each of many blocked streams would make it spin.
                Poll::Pending
            }
            Err(WriteError::Stopped(code)) => Poll::Ready(Err(StreamWriteError::Stopped(code))),
            Err(WriteError::UnknownConnection) => Poll::Ready(Err(st.lost(self.conn).into())),
            Err(WriteError::ClosedStream | WriteError::NotWritable) => {
                Poll::Ready(Err(StreamWriteError::ClosedStream))
            }
        }
    }

    /// Ends the stream (FIN) once everything written is sent.
    pub fn finish(&mut self) -> Result<(), StreamWriteError> {
        self.done = true;
        let mut st = self.state.borrow_mut();
        let r = st.driver.finish(self.conn, self.id);
        st.kick();
        match r {
            Ok(()) => Ok(()),
            Err(StreamError::Stopped(code)) => Err(StreamWriteError::Stopped(code)),
            Err(StreamError::UnknownConnection) => Err(st.lost(self.conn).into()),
            Err(_) => Err(StreamWriteError::ClosedStream),
        }
    }

    /// Abandons the stream with an error code.
    pub fn reset(&mut self, code: VarInt) {
        self.done = true;
        let mut st = self.state.borrow_mut();
        let _ = st.driver.reset(self.conn, self.id, code);
        st.kick();
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            if !self.done {
                let _ = st.driver.finish(self.conn, self.id);
                st.kick();
            }
            st.release(self.conn);
        }
    }
}

/// The receiving half of a stream. Dropping it before the end sends STOP_SENDING(0).
#[derive(Debug)]
pub struct RecvStream {
    state: Rc<RefCell<State>>,
    conn: ConnId,
    id: StreamId,
    done: bool,
}

impl RecvStream {
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The next chunk (at most `max` bytes), or `None` at the end of the stream. The
    /// `Bytes` is quinn-proto's own, pointing into the received datagram.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamReadError> {
        poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Poll form of [`RecvStream::read_chunk`], for adapters that implement `AsyncRead`.
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamReadError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let r = {
            let mut st = self.state.borrow_mut();
            match st.driver.read(self.conn, self.id, max) {
                Ok(chunk) => {
                    // Reading frees receive window; the I/O task sends the credit.
                    st.kick();
                    Ok(chunk)
                }
                Err(ReadError::Blocked) => {
                    let c = st.conn(self.conn);
                    if let Some(e) = c.failure() {
                        Err(e.into())
                    } else {
                        c.streams.entry(self.id).or_default().read_waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
                Err(ReadError::Reset(code)) => Err(StreamReadError::Reset(code)),
                Err(ReadError::UnknownConnection) => Err(st.lost(self.conn).into()),
                Err(ReadError::ClosedStream | ReadError::NotReadable) => {
                    Err(StreamReadError::ClosedStream)
                }
            }
        };
        if matches!(r, Ok(None) | Err(_)) {
            self.done = true;
        }
        Poll::Ready(r)
    }

    /// Reads to the end, at most `limit` bytes in total.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, StreamReadError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(usize::MAX).await? {
            if out.len() + chunk.len() > limit {
                self.stop(VarInt::from_u32(0));
                return Err(StreamReadError::ClosedStream);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Asks the peer to stop sending.
    pub fn stop(&mut self, code: VarInt) {
        self.done = true;
        let mut st = self.state.borrow_mut();
        let _ = st.driver.stop(self.conn, self.id, code);
        st.kick();
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            if !self.done {
                let _ = st.driver.stop(self.conn, self.id, VarInt::from_u32(0));
                st.kick();
            }
            st.release(self.conn);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.try_borrow_mut() {
            st.release(self.id);
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
