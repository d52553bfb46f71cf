//! [`Driver`]: one worker's quinn-proto endpoint and all the connections it owns.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, ConnectionStats, DatagramEvent,
    Dir, EcnCodepoint, Endpoint, Event, Incoming, ServerConfig, Side, StreamEvent, StreamId,
    Transmit, VarInt, Written,
};

use super::cid::WorkerCidGenerator;
use super::config::{ConfigError, QuicConfig, RetryMode};

/// Most endpoint-level datagrams (stateless resets, version negotiation, refusals, retries)
/// queued for sending. They are best-effort: a peer that misses one retransmits its
/// Initial or times out. 256 × at most 1.2 KB caps the queue near 300 KB and absorbs a
/// burst of refusals between two `poll_transmit` rounds.
const MAX_ENDPOINT_TRANSMITS: usize = 256;

/// Endpoint events forwarded per input to a connection. One input makes a connection
/// queue a handful at most (a request for new CIDs, a reset token, one retirement per
/// retired CID with at most 8 CIDs issued, `Drained`), and the endpoint's answers (new
/// CIDs) queue none, so 1024 is never reached; it only guarantees the loop ends.
const MAX_ENDPOINT_EVENTS: usize = 1024;

/// Bidirectional streams a peer may open while its connection is still handshaking; the
/// configured `max_concurrent_bidi_streams` is granted (MAX_STREAMS) once it is established.
/// quinn allocates a map entry per stream of credit when it creates a connection, and
/// 10,000 of them (the default, which tunnels need) were ~560 KB of every half-open
/// connection, most of what a flood of Initials cost.
const HANDSHAKE_BIDI_STREAMS: u64 = 16;

/// A connection owned by a [`Driver`]. Stays unique for the driver's lifetime, even after
/// quinn reuses the underlying slot for a new connection, so a stale id never reaches
/// another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: usize,
    serial: u64,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.serial)
    }
}

/// What happened on a [`Driver`]'s connections; read them with [`Driver::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverEvent {
    /// The handshake completed.
    Connected(ConnId),
    /// The connection failed before its handshake completed (bad certificate, ALPN
    /// mismatch, refused, timed out, ...). `ConnectionDrained` follows.
    HandshakeFailed(ConnId, ConnectionError),
    /// An established connection ended (closed by either side, timed out, reset).
    /// `ConnectionDrained` follows.
    ConnectionLost(ConnId, ConnectionError),
    /// The peer opened a stream. The driver has already accepted it: read and write it.
    IncomingStream(ConnId, StreamId),
    /// More streams of this direction may be opened (after `open_bi` returned `None`).
    StreamsAvailable(ConnId, Dir),
    /// A stream has data, a FIN, or a reset to read.
    StreamReadable(ConnId, StreamId),
    /// A stream that was blocked on flow control may accept writes again.
    StreamWritable(ConnId, StreamId),
    /// The peer acknowledged everything we sent on the stream, FIN included.
    StreamFinished(ConnId, StreamId),
    /// The peer sent STOP_SENDING with this code; writes now fail.
    StreamStopped(ConnId, StreamId, VarInt),
    /// An unreliable datagram arrived.
    DatagramReceived(ConnId, Bytes),
    /// Datagrams blocked on buffer space may be sent again.
    DatagramsUnblocked(ConnId),
    /// The connection's state is freed; its id is dead. Always the last event of a
    /// connection.
    ConnectionDrained(ConnId),
}

/// The TLS facts of an established connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The SNI the client sent (server side only), e.g. `probe.cftunnel.com` for
    /// cloudflared's pre-flight probes.
    pub server_name: Option<String>,
}

/// How every incoming connection attempt ended. `incoming` always equals the sum of the
/// others: quinn's `Incoming` must be accepted, refused, retried or ignored, never
/// dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Incoming connection attempts seen.
    pub incoming: u64,
    /// Accepted and handshaking.
    pub accepted: u64,
    /// Accepted, but quinn failed them at once (stale, undecryptable, ...).
    pub accept_failed: u64,
    /// Refused with CONNECTION_REFUSED (over `max_connections` or `max_handshakes`, or not
    /// accepting).
    pub refused: u64,
    /// Of `refused`: those refused because `max_handshakes` connections were half-open.
    pub refused_handshakes: u64,
    /// Answered with a Retry.
    pub retried: u64,
    /// Ignored without an answer (the endpoint send queue was full).
    pub ignored: u64,
    /// Endpoint-level datagrams dropped because their queue was full.
    pub endpoint_transmits_dropped: u64,
    /// Incoming connections closed because they were still handshaking after
    /// `handshake_timeout`.
    pub handshake_timeouts: u64,
}

/// Errors from [`Driver::connect`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The driver was built without a client configuration.
    #[error("this driver has no client configuration")]
    NoClientConfig,
    /// The driver holds `max_connections` already.
    #[error("connection limit reached")]
    TooManyConnections,
    /// quinn-proto refused (bad address, bad server name, ...).
    #[error(transparent)]
    Quinn(#[from] quinn_proto::ConnectError),
}

/// Errors writing to a stream.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// No such connection (drained, or never existed).
    #[error("unknown connection")]
    UnknownConnection,
    /// Flow control or the send window is full; retry on `StreamWritable`.
    #[error("stream blocked by flow control")]
    Blocked,
    /// The peer sent STOP_SENDING with this code.
    #[error("stopped by peer: code {0}")]
    Stopped(VarInt),
    /// The stream was finished or reset, or does not exist.
    #[error("closed stream")]
    ClosedStream,
    /// A receive-only stream (a peer's unidirectional stream).
    #[error("stream cannot be written by this side")]
    NotWritable,
}

/// Errors reading from a stream.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// No such connection (drained, or never existed).
    #[error("unknown connection")]
    UnknownConnection,
    /// No data right now; retry on `StreamReadable`.
    #[error("no data available yet")]
    Blocked,
    /// The peer reset the stream with this code (reported once; the stream is then gone).
    #[error("reset by peer: code {0}")]
    Reset(VarInt),
    /// The stream was finished, reset or stopped already, or does not exist.
    #[error("closed stream")]
    ClosedStream,
    /// A send-only stream (our unidirectional stream).
    #[error("stream cannot be read by this side")]
    NotReadable,
}

/// Errors from `finish`, `reset` and `stop`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// No such connection (drained, or never existed).
    #[error("unknown connection")]
    UnknownConnection,
    /// The stream was finished, reset or stopped already, or does not exist.
    #[error("closed stream")]
    ClosedStream,
    /// The peer sent STOP_SENDING with this code (from `finish`).
    #[error("stopped by peer: code {0}")]
    Stopped(VarInt),
    /// The operation needs the other direction (e.g. `stop` on our unidirectional stream).
    #[error("wrong stream direction for this operation")]
    WrongDirection,
}

/// Errors sending a datagram.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DatagramError {
    /// No such connection (drained, or never existed).
    #[error("unknown connection")]
    UnknownConnection,
    /// Datagrams are disabled in our [`QuicConfig`].
    #[error("datagrams are disabled locally")]
    Disabled,
    /// The peer did not enable datagrams.
    #[error("peer does not accept datagrams")]
    UnsupportedByPeer,
    /// Larger than `max_datagram_size`.
    #[error("datagram too large")]
    TooLarge,
}

struct Slot {
    conn: Connection,
    id: ConnId,
    connected: bool,
    /// Accepted from a peer (server side), so counted in `Driver::half_open` until
    /// established or drained.
    incoming: bool,
    /// The deadline registered in `Driver::timers`, if any.
    deadline: Option<Instant>,
    /// Whether the slot's index is in `Driver::dirty`.
    dirty: bool,
    /// Whether the slot's index is in `Driver::send_queue`.
    queued: bool,
    /// When the last datagram from the peer arrived (liveness: with keep-alives on, a live
    /// peer is never silent for long).
    last_rx: Option<Instant>,
}

struct EndpointTransmit {
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    src_ip: Option<IpAddr>,
    data: Vec<u8>,
}

/// One worker's QUIC state: a quinn-proto [`Endpoint`] and the [`Connection`]s it owns.
///
/// Sans-IO: it never touches a socket and never reads the clock. Every method that can
/// move protocol state takes `now`, and `now` must never go backwards between calls.
///
/// # Call order
///
/// quinn-proto requires that, after any input, the caller drains the outputs. With the
/// driver that is:
///
/// 1. Inputs, in any order and any number:
///    [`handle_datagram`](Self::handle_datagram) for each received UDP datagram,
///    [`handle_timeout`](Self::handle_timeout) when the timer armed from `poll_timeout`
///    fires, and application operations ([`connect`](Self::connect),
///    [`write`](Self::write), [`read`](Self::read), [`finish`](Self::finish),
///    [`close`](Self::close), ...).
/// 2. [`poll_transmit`](Self::poll_transmit) until it returns `None`, sending each
///    [`Transmit`] (`buf[..size]`, split by `segment_size` if it is a GSO batch).
/// 3. [`poll_timeout`](Self::poll_timeout), and re-arm the timer if the value changed.
///    Call it after step 2: sending arms quinn's loss-detection and pacing timers.
/// 4. [`poll_event`](Self::poll_event) until `None`, acting on each [`DriverEvent`].
///    Acting (reading, writing) is an input again, so loop back to step 2.
///
/// Internally, after every input the driver already forwards each connection's
/// endpoint events (`Connection::poll_endpoint_events` → `Endpoint::handle_event` →
/// `Connection::handle_event`) and moves its application events (`Connection::poll`)
/// into the event queue, so the caller never sees quinn's internal plumbing.
///
/// Incoming connection attempts are decided at once inside `handle_datagram`: refused
/// when the driver is not accepting or holds `max_connections`; answered with a Retry when
/// the address is unvalidated and [`QuicConfig::retry`] says so (always, or in `auto` mode
/// while `retry_threshold` handshakes are in flight); refused when `max_handshakes`
/// connections are half-open; ignored when no answer could be queued; otherwise accepted.
/// [`stats`](Self::driver_stats) counts each outcome. An accepted connection still
/// handshaking after `handshake_timeout` is closed.
pub struct Driver {
    endpoint: Endpoint,
    client_config: Option<ClientConfig>,
    worker: usize,
    /// Indexed by quinn's `ConnectionHandle.0` (a dense slab index).
    conns: Vec<Option<Slot>>,
    live: usize,
    next_serial: u64,
    /// Connections that may have something to send, in round-robin order.
    send_queue: VecDeque<usize>,
    /// Connections whose quinn timer may have moved since it was last read.
    dirty: Vec<usize>,
    /// Every connection's next deadline, earliest first.
    timers: BTreeSet<(Instant, usize)>,
    expired: Vec<usize>,
    events: VecDeque<DriverEvent>,
    endpoint_transmits: VecDeque<EndpointTransmit>,
    scratch: Vec<u8>,
    gso_segments: usize,
    max_connections: usize,
    retry: RetryMode,
    retry_threshold: usize,
    max_handshakes: usize,
    handshake_timeout: Duration,
    /// Incoming connections accepted and neither established nor drained yet.
    half_open: usize,
    /// When each incoming connection's handshake must be done, in acceptance order (one
    /// timeout for all, so the deadlines are sorted). Entries of connections that finished
    /// or went away are skipped when they come due.
    handshake_deadlines: VecDeque<(Instant, ConnId)>,
    /// The server configuration incoming connections are accepted with: the endpoint's,
    /// with only `HANDSHAKE_BIDI_STREAMS` of stream credit until established.
    handshake_server_config: Option<Arc<ServerConfig>>,
    /// The stream credit an established incoming connection gets.
    max_bidi_streams: VarInt,
    accepting: bool,
    stats: DriverStats,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("worker", &self.worker)
            .field("connections", &self.live)
            .field("pending_events", &self.events.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for worker `cid.worker()`. `server` enables incoming connections,
    /// `client` enables [`connect`](Self::connect); an edge worker has a server config,
    /// a connector worker a client config.
    pub fn new(
        cfg: &QuicConfig,
        server: Option<Arc<ServerConfig>>,
        client: Option<ClientConfig>,
        cid: WorkerCidGenerator,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let endpoint_config = cfg.endpoint_config(&cid)?;
        // The same configuration (certificate, and the Retry token key every worker shares),
        // less stream credit during the handshake. The transport parameters come from `cfg`.
        let handshake_server_config = match &server {
            Some(s) => {
                let mut transport = cfg.transport_config()?;
                transport.max_concurrent_bidi_streams(VarInt::from_u32(
                    cfg.max_concurrent_bidi_streams.min(HANDSHAKE_BIDI_STREAMS) as u32,
                ));
                let mut s = ServerConfig::clone(s);
                s.transport_config(Arc::new(transport));
                Some(Arc::new(s))
            }
            None => None,
        };
        let endpoint = Endpoint::new(Arc::new(endpoint_config), server, cfg.mtu_discovery, None);
        Ok(Self {
            endpoint,
            client_config: client,
            worker: cid.worker(),
            conns: Vec::new(),
            live: 0,
            next_serial: 0,
            send_queue: VecDeque::new(),
            dirty: Vec::new(),
            timers: BTreeSet::new(),
            expired: Vec::new(),
            events: VecDeque::new(),
            endpoint_transmits: VecDeque::new(),
            scratch: Vec::new(),
            gso_segments: cfg.gso_segments,
            max_connections: cfg.max_connections,
            retry: cfg.retry,
            retry_threshold: cfg.retry_threshold,
            max_handshakes: cfg.max_handshakes,
            handshake_timeout: cfg.handshake_timeout,
            half_open: 0,
            handshake_deadlines: VecDeque::new(),
            handshake_server_config,
            // `validate` checked that it fits.
            max_bidi_streams: VarInt::from_u64(cfg.max_concurrent_bidi_streams)
                .unwrap_or(VarInt::MAX),
            accepting: true,
            stats: DriverStats::default(),
        })
    }

    /// The worker index this driver's CIDs name.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Connections held (handshaking, established or draining).
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// Incoming-connection and queue counters.
    pub fn driver_stats(&self) -> DriverStats {
        self.stats
    }

    /// Incoming connections still handshaking (accepted, neither established nor drained).
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// Whether this driver accepts incoming connections at all (it has a server
    /// configuration).
    pub fn is_server(&self) -> bool {
        self.handshake_server_config.is_some()
    }

    /// Stop (or resume) accepting connections; while stopped, attempts are refused.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// Opens a connection to `remote`, presenting `server_name` as SNI. The handshake
    /// starts on the next `poll_transmit`; `Connected` or `HandshakeFailed` follows.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnId, ConnectError> {
        let config = self
            .client_config
            .clone()
            .ok_or(ConnectError::NoClientConfig)?;
        if self.live >= self.max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        let (handle, conn) = self.endpoint.connect(now, config, remote, server_name)?;
        let id = self.insert(handle, conn, false);
        self.after_input(id.index);
        Ok(id)
    }

    /// Feeds one received UDP datagram (one GRO segment, not a whole GRO batch) to the
    /// endpoint and then to the connection it belongs to.
    ///
    /// The payload is not copied: stream data read later with [`read`](Self::read) is a
    /// slice of `data`, decrypted in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        // quinn writes endpoint responses from the start of the buffer it is given.
        self.scratch.clear();
        let event = self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut self.scratch);
        match event {
            None => {}
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                match self.conns.get_mut(handle.0).and_then(Option::as_mut) {
                    Some(slot) => {
                        slot.last_rx = Some(now);
                        slot.conn.handle_event(event);
                        self.after_input(handle.0);
                    }
                    // The endpoint routes only to connections we inserted and removes them
                    // when we forward their `Drained`, so this cannot happen.
                    None => debug_assert!(false, "endpoint routed to unknown connection"),
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(now, incoming),
            Some(DatagramEvent::Response(transmit)) => self.queue_endpoint_transmit(&transmit),
        }
    }

    fn on_incoming(&mut self, now: Instant, incoming: Incoming) {
        self.stats.incoming += 1;
        if !self.accepting || self.live >= self.max_connections {
            self.refuse(incoming);
            return;
        }
        // Retry first: it is stateless and costs microseconds, so even past the handshake
        // cap an unvalidated client gets one and may find room when it comes back.
        let wants_retry = match self.retry {
            RetryMode::Always => true,
            RetryMode::Auto => self.half_open >= self.retry_threshold,
            RetryMode::Never => false,
        };
        let incoming = if wants_retry && !incoming.remote_address_validated() {
            // Refusing or retrying needs room for the answer; without it, ignore rather than
            // build a packet that would be dropped. The peer retransmits its Initial.
            if self.endpoint_transmits.len() >= MAX_ENDPOINT_TRANSMITS {
                self.endpoint.ignore(incoming);
                self.stats.ignored += 1;
                return;
            }
            self.scratch.clear();
            match self.endpoint.retry(incoming, &mut self.scratch) {
                Ok(transmit) => {
                    self.queue_endpoint_transmit(&transmit);
                    self.stats.retried += 1;
                    return;
                }
                // quinn allows a Retry for every unvalidated Incoming, so this does not
                // happen; if it ever did, the Incoming must still be disposed of.
                Err(e) => e.into_incoming(),
            }
        } else {
            incoming
        };
        if self.half_open >= self.max_handshakes {
            self.stats.refused_handshakes += 1;
            self.refuse(incoming);
            return;
        }
        self.scratch.clear();
        let config = self.handshake_server_config.clone();
        match self
            .endpoint
            .accept(incoming, now, &mut self.scratch, config)
        {
            Ok((handle, conn)) => {
                self.stats.accepted += 1;
                let id = self.insert(handle, conn, true);
                self.half_open += 1;
                self.handshake_deadlines
                    .push_back((now + self.handshake_timeout, id));
                self.after_input(id.index);
            }
            Err(e) => {
                tracing::debug!(worker = self.worker, cause = %e.cause, "incoming connection failed");
                self.stats.accept_failed += 1;
                if let Some(transmit) = e.response {
                    self.queue_endpoint_transmit(&transmit);
                }
            }
        }
    }

    /// Answers an incoming attempt with CONNECTION_REFUSED, or ignores it when the answer
    /// could not be queued (the peer retransmits its Initial).
    fn refuse(&mut self, incoming: Incoming) {
        if self.endpoint_transmits.len() >= MAX_ENDPOINT_TRANSMITS {
            self.endpoint.ignore(incoming);
            self.stats.ignored += 1;
        } else {
            self.scratch.clear();
            let transmit = self.endpoint.refuse(incoming, &mut self.scratch);
            self.queue_endpoint_transmit(&transmit);
            self.stats.refused += 1;
        }
    }

    /// Copies an endpoint response out of `scratch` into the endpoint send queue.
    fn queue_endpoint_transmit(&mut self, transmit: &Transmit) {
        if self.endpoint_transmits.len() >= MAX_ENDPOINT_TRANSMITS {
            self.stats.endpoint_transmits_dropped += 1;
            return;
        }
        self.endpoint_transmits.push_back(EndpointTransmit {
            destination: transmit.destination,
            ecn: transmit.ecn,
            src_ip: transmit.src_ip,
            data: self.scratch[..transmit.size].to_vec(),
        });
    }

    fn insert(&mut self, handle: ConnectionHandle, conn: Connection, incoming: bool) -> ConnId {
        let id = ConnId {
            index: handle.0,
            serial: self.next_serial,
        };
        self.next_serial += 1;
        if self.conns.len() <= handle.0 {
            self.conns.resize_with(handle.0 + 1, || None);
        }
        debug_assert!(self.conns[handle.0].is_none(), "quinn reused a live handle");
        self.conns[handle.0] = Some(Slot {
            conn,
            id,
            connected: false,
            incoming,
            deadline: None,
            dirty: false,
            queued: false,
            last_rx: None,
        });
        self.live += 1;
        id
    }

    fn slot(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.conns
            .get_mut(id.index)
            .and_then(Option::as_mut)
            .filter(|s| s.id == id)
    }

    /// After any input to a connection: its timer may move, it may have something to
    /// send, and it may have events for the endpoint and the application.
    fn after_input(&mut self, index: usize) {
        let Some(slot) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(index);
        }
        if !slot.queued {
            slot.queued = true;
            self.send_queue.push_back(index);
        }
        self.pump(index);
    }

    /// Forwards a connection's endpoint events, collects its application events, and
    /// frees it once drained.
    fn pump(&mut self, index: usize) {
        let Some(slot) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let handle = ConnectionHandle(index);
        let mut drained = false;
        // Bound: see MAX_ENDPOINT_EVENTS.
        for _ in 0..MAX_ENDPOINT_EVENTS {
            let Some(event) = slot.conn.poll_endpoint_events() else {
                break;
            };
            drained |= event.is_drained();
            if let Some(reply) = self.endpoint.handle_event(handle, event) {
                slot.conn.handle_event(reply);
            }
        }
        let id = slot.id;
        let mut granted_streams = false;
        // Bound: `poll` drains a finite queue that only inputs refill, and none happen here.
        while let Some(event) = slot.conn.poll() {
            match event {
                Event::HandshakeDataReady => {}
                Event::Connected => {
                    slot.connected = true;
                    if slot.incoming {
                        self.half_open -= 1;
                        slot.conn
                            .set_max_concurrent_streams(Dir::Bi, self.max_bidi_streams);
                        granted_streams = true;
                    }
                    self.events.push_back(DriverEvent::Connected(id));
                }
                Event::ConnectionLost { reason } => {
                    self.events.push_back(if slot.connected {
                        DriverEvent::ConnectionLost(id, reason)
                    } else {
                        DriverEvent::HandshakeFailed(id, reason)
                    });
                }
                Event::Stream(StreamEvent::Opened { dir }) => {
                    // Bound: at most the peer's stream credit, which we cap with
                    // `max_concurrent_{bidi,uni}_streams`.
                    while let Some(stream) = slot.conn.streams().accept(dir) {
                        self.events
                            .push_back(DriverEvent::IncomingStream(id, stream));
                    }
                }
                Event::Stream(StreamEvent::Readable { id: s }) => {
                    self.events.push_back(DriverEvent::StreamReadable(id, s));
                }
                Event::Stream(StreamEvent::Writable { id: s }) => {
                    self.events.push_back(DriverEvent::StreamWritable(id, s));
                }
                Event::Stream(StreamEvent::Finished { id: s }) => {
                    self.events.push_back(DriverEvent::StreamFinished(id, s));
                }
                Event::Stream(StreamEvent::Stopped { id: s, error_code }) => {
                    self.events
                        .push_back(DriverEvent::StreamStopped(id, s, error_code));
                }
                Event::Stream(StreamEvent::Available { dir }) => {
                    self.events
                        .push_back(DriverEvent::StreamsAvailable(id, dir));
                }
                Event::DatagramReceived => {
                    // Bound: the receive buffer (`datagram_receive_buffer` bytes).
                    while let Some(data) = slot.conn.datagrams().recv() {
                        self.events
                            .push_back(DriverEvent::DatagramReceived(id, data));
                    }
                }
                Event::DatagramsUnblocked => {
                    self.events.push_back(DriverEvent::DatagramsUnblocked(id));
                }
            }
        }
        if granted_streams && !slot.queued {
            // The MAX_STREAMS frame needs sending.
            slot.queued = true;
            self.send_queue.push_back(index);
        }
        if drained {
            if slot.incoming && !slot.connected {
                self.half_open -= 1;
            }
            if let Some(deadline) = slot.deadline {
                self.timers.remove(&(deadline, index));
            }
            self.conns[index] = None;
            self.live -= 1;
            self.events.push_back(DriverEvent::ConnectionDrained(id));
        }
    }

    /// The next datagram (or GSO batch of datagrams) to send, written to `buf` (cleared
    /// first): send `buf[..transmit.size]`, split every `segment_size` bytes when set.
    ///
    /// Endpoint-level answers go first (they are small and time-critical for the
    /// handshake), then connections in round-robin order: each call takes one batch of at
    /// most `max_segments` datagrams (capped by [`QuicConfig::gso_segments`]) from one
    /// connection and moves it to the back of the queue, so a bulk sender cannot starve
    /// the others.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        max_segments: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        buf.clear();
        if let Some(t) = self.endpoint_transmits.pop_front() {
            buf.extend_from_slice(&t.data);
            return Some(Transmit {
                destination: t.destination,
                ecn: t.ecn,
                size: t.data.len(),
                segment_size: None,
                src_ip: t.src_ip,
            });
        }
        let max_segments = max_segments.clamp(1, self.gso_segments);
        // Bound: one pass over the queue; each queued connection is asked at most once.
        for _ in 0..self.send_queue.len() {
            let index = self.send_queue.pop_front()?;
            let Some(slot) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue; // drained since it was queued
            };
            // quinn builds the batch from the start of `buf`.
            buf.clear();
            let transmit = slot.conn.poll_transmit(now, max_segments, buf);
            // Sending arms loss-detection/pacing timers; not sending may arm pacing.
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(index);
            }
            if transmit.is_some() {
                // It may have more: back of the line, behind everyone else.
                self.send_queue.push_back(index);
            } else {
                slot.queued = false;
            }
            self.pump(index);
            if transmit.is_some() {
                return transmit;
            }
        }
        None
    }

    /// Re-reads the timers of connections touched since the last call.
    fn sync_timers(&mut self) {
        // Bound: each index is pushed at most once while its `dirty` flag is set.
        for index in self.dirty.drain(..) {
            let Some(slot) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if !slot.dirty {
                continue; // a recycled index pushed for a previous connection
            }
            slot.dirty = false;
            let next = slot.conn.poll_timeout();
            if next != slot.deadline {
                if let Some(old) = slot.deadline {
                    self.timers.remove(&(old, index));
                }
                if let Some(new) = next {
                    self.timers.insert((new, index));
                }
                slot.deadline = next;
            }
        }
    }

    /// The earliest deadline of any connection: call [`handle_timeout`](Self::handle_timeout)
    /// then. Cheap: only connections touched since the last call are re-read, so the
    /// caller can call it after every round and re-arm its timer only when the value
    /// changes.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.sync_timers();
        let connections = self.timers.first().map(|&(deadline, _)| deadline);
        let handshakes = self
            .handshake_deadlines
            .front()
            .map(|&(deadline, _)| deadline);
        connections.into_iter().chain(handshakes).min()
    }

    /// Runs the timers of the connections whose deadline is at or before `now` (and only
    /// those).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sync_timers();
        self.expire_handshakes(now);
        self.expired.clear();
        // Bound: one entry per connection in `timers`.
        while let Some(&(deadline, index)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            if let Some(slot) = self.conns.get_mut(index).and_then(Option::as_mut) {
                slot.deadline = None;
            }
            self.expired.push(index);
        }
        // Bound: the expired entries collected above.
        for i in 0..self.expired.len() {
            let index = self.expired[i];
            if let Some(slot) = self.conns.get_mut(index).and_then(Option::as_mut) {
                slot.conn.handle_timeout(now);
                self.after_input(index);
            }
        }
    }

    /// Closes the incoming connections still handshaking past their deadline. Closing (not
    /// just forgetting) is what quinn allows; the connection drains and frees its state a
    /// few PTOs later, and stops counting as half-open then.
    fn expire_handshakes(&mut self, now: Instant) {
        // Bound: one entry per connection accepted in the last `handshake_timeout`.
        while let Some(&(deadline, id)) = self.handshake_deadlines.front() {
            if deadline > now {
                break;
            }
            self.handshake_deadlines.pop_front();
            let Some(slot) = self.slot(id) else {
                continue; // drained already
            };
            if slot.connected || slot.conn.is_closed() {
                continue;
            }
            slot.conn.close(
                now,
                VarInt::from_u32(0),
                Bytes::from_static(b"handshake timeout"),
            );
            self.stats.handshake_timeouts += 1;
            self.after_input(id.index);
        }
    }

    /// The next event, if any. Drain after every round of inputs.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<DriverEvent> {
        self.events.pop_front()
    }

    /// Opens a bidirectional stream. `None` when the peer's stream limit is reached
    /// (wait for `StreamsAvailable`) or the connection is gone or closing. Nothing is sent
    /// until the first write or finish.
    pub fn open_bi(&mut self, id: ConnId) -> Option<StreamId> {
        let slot = self.slot(id)?;
        let stream = slot.conn.streams().open(Dir::Bi)?;
        Some(stream)
    }

    /// Queues `data` on a stream without copying it (quinn keeps slices of the same
    /// buffer) and advances `data` past what was taken; what is left did not fit (flow
    /// control or the send window), so retry it on `StreamWritable`. Returns the bytes
    /// taken.
    pub fn write(
        &mut self,
        id: ConnId,
        stream: StreamId,
        data: &mut Bytes,
    ) -> Result<usize, WriteError> {
        self.write_chunks(id, stream, std::slice::from_mut(data))
            .map(|w| w.bytes)
    }

    /// [`write`](Self::write) for several buffers at once (one call, one flow-control
    /// check). Fully taken chunks are left empty, a partly taken one is advanced.
    pub fn write_chunks(
        &mut self,
        id: ConnId,
        stream: StreamId,
        data: &mut [Bytes],
    ) -> Result<Written, WriteError> {
        let slot = self.slot(id).ok_or(WriteError::UnknownConnection)?;
        if !can_send(slot.conn.side(), stream) {
            return Err(WriteError::NotWritable);
        }
        let result = slot.conn.send_stream(stream).write_chunks(data);
        self.after_input(id.index);
        result.map_err(|e| match e {
            quinn_proto::WriteError::Blocked => WriteError::Blocked,
            quinn_proto::WriteError::Stopped(code) => WriteError::Stopped(code),
            quinn_proto::WriteError::ClosedStream => WriteError::ClosedStream,
        })
    }

    /// Reads the next in-order chunk of a stream, at most `max` bytes. `Ok(None)` is the
    /// end (FIN), after which the stream's receive side is gone.
    ///
    /// Zero-copy: the `Bytes` is the decrypted payload of the packet that carried it,
    /// a slice of the buffer given to [`handle_datagram`](Self::handle_datagram). quinn
    /// copies only when it defragments a stream's buffer, which it does when many tiny
    /// or overlapping frames pin much more memory than they carry (over-allocation above
    /// max(32 KiB, 1.5 × buffered) or too many chunks): a peer sending pathological
    /// frames, not the normal path.
    pub fn read(
        &mut self,
        id: ConnId,
        stream: StreamId,
        max: usize,
    ) -> Result<Option<Bytes>, ReadError> {
        let slot = self.slot(id).ok_or(ReadError::UnknownConnection)?;
        if !can_recv(slot.conn.side(), stream) {
            return Err(ReadError::NotReadable);
        }
        let mut recv = slot.conn.recv_stream(stream);
        let result = match recv.read(true) {
            Ok(mut chunks) => {
                let result = chunks.next(max);
                // Whether it asks to transmit (new flow-control credit) or not, the
                // connection is queued for sending below, so the flag is not needed.
                let _ = chunks.finalize();
                match result {
                    Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
                    Err(quinn_proto::ReadError::Blocked) => Err(ReadError::Blocked),
                    Err(quinn_proto::ReadError::Reset(code)) => Err(ReadError::Reset(code)),
                }
            }
            // We only ever read in order, so `IllegalOrderedRead` cannot happen.
            Err(_) => Err(ReadError::ClosedStream),
        };
        self.after_input(id.index);
        result
    }

    /// Sends FIN after the data written so far. `StreamFinished` follows once the peer
    /// has acknowledged everything.
    pub fn finish(&mut self, id: ConnId, stream: StreamId) -> Result<(), StreamError> {
        let slot = self.slot(id).ok_or(StreamError::UnknownConnection)?;
        if !can_send(slot.conn.side(), stream) {
            return Err(StreamError::WrongDirection);
        }
        let result = slot.conn.send_stream(stream).finish();
        self.after_input(id.index);
        result.map_err(|e| match e {
            quinn_proto::FinishError::Stopped(code) => StreamError::Stopped(code),
            quinn_proto::FinishError::ClosedStream => StreamError::ClosedStream,
        })
    }

    /// Abandons sending on a stream (RESET_STREAM with `code`); unsent data is dropped.
    pub fn reset(&mut self, id: ConnId, stream: StreamId, code: VarInt) -> Result<(), StreamError> {
        let slot = self.slot(id).ok_or(StreamError::UnknownConnection)?;
        if !can_send(slot.conn.side(), stream) {
            return Err(StreamError::WrongDirection);
        }
        let result = slot.conn.send_stream(stream).reset(code);
        self.after_input(id.index);
        result.map_err(|_| StreamError::ClosedStream)
    }

    /// Stops receiving on a stream (STOP_SENDING with `code`); buffered data is dropped.
    pub fn stop(&mut self, id: ConnId, stream: StreamId, code: VarInt) -> Result<(), StreamError> {
        let slot = self.slot(id).ok_or(StreamError::UnknownConnection)?;
        if !can_recv(slot.conn.side(), stream) {
            return Err(StreamError::WrongDirection);
        }
        let result = slot.conn.recv_stream(stream).stop(code);
        self.after_input(id.index);
        result.map_err(|_| StreamError::ClosedStream)
    }

    /// Queues an unreliable datagram. When the send buffer is full the oldest queued
    /// datagrams are dropped to make room: fresh data is worth more than stale.
    pub fn send_datagram(&mut self, id: ConnId, data: Bytes) -> Result<(), DatagramError> {
        let slot = self.slot(id).ok_or(DatagramError::UnknownConnection)?;
        let result = slot.conn.datagrams().send(data, true);
        self.after_input(id.index);
        result.map_err(|e| match e {
            quinn_proto::SendDatagramError::Disabled => DatagramError::Disabled,
            quinn_proto::SendDatagramError::UnsupportedByPeer => DatagramError::UnsupportedByPeer,
            // `Blocked` only happens with `drop = false`.
            quinn_proto::SendDatagramError::TooLarge
            | quinn_proto::SendDatagramError::Blocked(_) => DatagramError::TooLarge,
        })
    }

    /// The largest datagram [`send_datagram`](Self::send_datagram) accepts now (it varies
    /// with the path MTU); `None` when datagrams are off on either side.
    pub fn max_datagram_size(&mut self, id: ConnId) -> Option<usize> {
        self.slot(id)?.conn.datagrams().max_size()
    }

    /// Closes a connection with an application error `code` and `reason`. Unsent stream
    /// data is abandoned; `ConnectionDrained` follows after the draining period.
    pub fn close(&mut self, now: Instant, id: ConnId, code: VarInt, reason: Bytes) {
        if let Some(slot) = self.slot(id) {
            slot.conn.close(now, code, reason);
            self.after_input(id.index);
        }
    }

    /// Closes every connection (shutdown) and stops accepting new ones.
    pub fn close_all(&mut self, now: Instant, code: VarInt, reason: Bytes) {
        self.accepting = false;
        // Bound: the connection table's length.
        for index in 0..self.conns.len() {
            if let Some(slot) = self.conns[index].as_mut() {
                slot.conn.close(now, code, reason.clone());
                self.after_input(index);
            }
        }
    }

    /// quinn's statistics for a connection (RTT, congestion window, bytes, frames, ...).
    pub fn stats(&mut self, id: ConnId) -> Option<ConnectionStats> {
        Some(self.slot(id)?.conn.stats())
    }

    /// When the last datagram from the peer arrived (`None` before the first).
    pub fn last_received(&mut self, id: ConnId) -> Option<Instant> {
        self.slot(id)?.last_rx
    }

    /// The peer's address.
    pub fn remote_address(&mut self, id: ConnId) -> Option<SocketAddr> {
        Some(self.slot(id)?.conn.remote_address())
    }

    /// ALPN and SNI, once the handshake has got that far.
    pub fn handshake_info(&mut self, id: ConnId) -> Option<HandshakeInfo> {
        let data = self.slot(id)?.conn.crypto_session().handshake_data()?;
        let data = data
            .downcast::<quinn_proto::crypto::rustls::HandshakeData>()
            .ok()?;
        Some(HandshakeInfo {
            alpn: data.protocol,
            server_name: data.server_name,
        })
    }

    /// Whether the connection exists and completed its handshake.
    pub fn is_connected(&mut self, id: ConnId) -> bool {
        self.slot(id)
            .is_some_and(|s| s.connected && !s.conn.is_closed())
    }
}

/// Whether `side` may write `stream`: any bidirectional stream, or our own unidirectional.
fn can_send(side: Side, stream: StreamId) -> bool {
    stream.dir() == Dir::Bi || stream.initiator() == side
}

/// Whether `side` may read `stream`: any bidirectional stream, or the peer's
/// unidirectional. (quinn panics on the other cases; the driver returns errors instead.)
fn can_recv(side: Side, stream: StreamId) -> bool {
    stream.dir() == Dir::Bi || stream.initiator() != side
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::hash::Hasher;
    use std::time::Duration;

    use quinn_proto::TransportErrorCode;
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};
    use siphasher::sip::SipHasher13;

    use super::*;
    use crate::quic::cid::CidKey;
    use crate::quic::harness::{CLIENT_ADDR, Faults, Pair, PairConfig, SERVER_ADDR};

    fn hash(data: &[u8]) -> u64 {
        let mut h = SipHasher13::new_with_keys(1, 2);
        h.write(data);
        h.finish()
    }

    fn connected_pair(config: PairConfig) -> (Pair, ConnId) {
        let mut pair = Pair::with_config(config);
        let conn = pair.connect();
        assert!(
            pair.drive_until_connected(conn),
            "{:?}",
            pair.client_events()
        );
        // The server grants its full stream credit once the handshake is done, one flight
        // later (MAX_STREAMS); the tests open many streams at once.
        assert!(pair.drive_until(Duration::from_secs(10), |p| {
            p.client_events()
                .iter()
                .any(|e| matches!(e, DriverEvent::StreamsAvailable(c, Dir::Bi) if *c == conn))
        }));
        (pair, conn)
    }

    /// Reads everything a stream has now. Returns `true` at its end (FIN).
    fn read_all(driver: &mut Driver, conn: ConnId, stream: StreamId, into: &mut Vec<u8>) -> bool {
        // Bound: a stream holds at most its receive window (6 MiB) of data, and each read
        // returns at least one byte or ends the loop.
        for _ in 0..(7 << 20) {
            match driver.read(conn, stream, usize::MAX) {
                Ok(Some(chunk)) => into.extend_from_slice(&chunk),
                Ok(None) => return true,
                Err(ReadError::Blocked | ReadError::ClosedStream) => return false,
                Err(e) => panic!("read {stream}: {e}"),
            }
        }
        unreachable!("read loop bound")
    }

    /// Data not yet accepted by a stream, plus whether FIN should follow it.
    struct Pending {
        data: Bytes,
        fin: bool,
    }

    /// Writes what the stream takes; sends FIN once everything is in. `true` when done.
    fn flush(driver: &mut Driver, conn: ConnId, stream: StreamId, p: &mut Pending) -> bool {
        if !p.data.is_empty() {
            match driver.write(conn, stream, &mut p.data) {
                Ok(_) | Err(WriteError::Blocked) => {}
                Err(e) => panic!("write {stream}: {e}"),
            }
        }
        if p.data.is_empty() && p.fin {
            driver.finish(conn, stream).unwrap();
            p.fin = false;
        }
        p.data.is_empty() && !p.fin
    }

    /// The client sends a random payload on each of `n` bidirectional streams; the server
    /// answers each byte XOR 0xFF as it reads it and finishes after the client's FIN.
    struct EchoTransfer {
        conn: ConnId,
        sent: BTreeMap<StreamId, Bytes>,
        client_out: BTreeMap<StreamId, Pending>,
        client_in: BTreeMap<StreamId, Vec<u8>>,
        client_done: usize,
        server_in: BTreeMap<StreamId, Vec<u8>>,
        server_out: BTreeMap<StreamId, Pending>,
        server_conn: Option<(usize, ConnId)>,
        client_cursor: usize,
        server_cursor: usize,
    }

    impl EchoTransfer {
        fn start(pair: &mut Pair, conn: ConnId, n: usize, max_len: usize, seed: u64) -> Self {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut t = Self {
                conn,
                sent: BTreeMap::new(),
                client_out: BTreeMap::new(),
                client_in: BTreeMap::new(),
                client_done: 0,
                server_in: BTreeMap::new(),
                server_out: BTreeMap::new(),
                server_conn: None,
                client_cursor: pair.client_events().len(),
                server_cursor: pair.server_events().len(),
            };
            for _ in 0..n {
                let stream = pair.client.open_bi(conn).expect("stream credit");
                let mut data = vec![0u8; rng.random_range(0..=max_len)];
                rng.fill_bytes(&mut data);
                let data = Bytes::from(data);
                t.sent.insert(stream, data.clone());
                t.client_out.insert(stream, Pending { data, fin: true });
            }
            t
        }

        /// Reacts to new events and retries blocked writes. `true` when every response
        /// has been read to its end.
        fn pump(&mut self, pair: &mut Pair) -> bool {
            let conn = self.conn;
            // Bound: the events logged since the last pump.
            for i in self.server_cursor..pair.server_events().len() {
                let (worker, event) = pair.server_events()[i].clone();
                let (c, stream) = match event {
                    DriverEvent::IncomingStream(c, s) | DriverEvent::StreamReadable(c, s) => (c, s),
                    _ => continue,
                };
                self.server_conn = Some((worker, c));
                let server = &mut pair.servers[worker];
                let buf = self.server_in.entry(stream).or_default();
                let before = buf.len();
                let fin = read_all(server, c, stream, buf);
                let echo: Vec<u8> = buf[before..].iter().map(|b| b ^ 0xFF).collect();
                let out = self.server_out.entry(stream).or_insert(Pending {
                    data: Bytes::new(),
                    fin: false,
                });
                // Bound: concatenating what was queued and not yet taken with the new echo.
                let mut joined = out.data.to_vec();
                joined.extend_from_slice(&echo);
                out.data = Bytes::from(joined);
                out.fin |= fin;
            }
            self.server_cursor = pair.server_events().len();
            for i in self.client_cursor..pair.client_events().len() {
                if let DriverEvent::StreamReadable(c, stream) = pair.client_events()[i].clone() {
                    assert_eq!(c, conn);
                    let buf = self.client_in.entry(stream).or_default();
                    if read_all(&mut pair.client, conn, stream, buf) {
                        self.client_done += 1;
                    }
                }
            }
            self.client_cursor = pair.client_events().len();
            self.client_out
                .retain(|stream, p| !flush(&mut pair.client, conn, *stream, p));
            if let Some((worker, c)) = self.server_conn {
                let server = &mut pair.servers[worker];
                self.server_out
                    .retain(|stream, p| !flush(server, c, *stream, p));
            }
            self.client_done == self.sent.len()
        }

        fn verify(&self) {
            assert_eq!(self.client_done, self.sent.len());
            for (stream, data) in &self.sent {
                let got = self
                    .server_in
                    .get(stream)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                assert_eq!(
                    (got.len(), hash(got)),
                    (data.len(), hash(data)),
                    "server side of {stream}"
                );
                let expected: Vec<u8> = data.iter().map(|b| b ^ 0xFF).collect();
                let back = self
                    .client_in
                    .get(stream)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                assert_eq!(
                    (back.len(), hash(back)),
                    (expected.len(), hash(&expected)),
                    "client side of {stream}"
                );
            }
        }
    }

    #[test]
    fn handshake_negotiates_argotunnel() {
        let (mut pair, conn) = connected_pair(PairConfig::new(1));
        let info = pair.client.handshake_info(conn).unwrap();
        assert_eq!(info.alpn.as_deref(), Some(&b"argotunnel"[..]));
        let server_info = pair.server_handshake_info().unwrap();
        assert_eq!(server_info.alpn.as_deref(), Some(&b"argotunnel"[..]));
        assert_eq!(
            server_info.server_name.as_deref(),
            Some("quic.cftunnel.com")
        );
        assert!(pair.client.is_connected(conn));
        assert_eq!(pair.client.remote_address(conn), Some(SERVER_ADDR));
        let (worker, server_conn) = pair.server_conn().unwrap();
        assert_eq!(
            pair.servers[worker].remote_address(server_conn),
            Some(CLIENT_ADDR)
        );
    }

    #[test]
    fn wrong_alpn_fails_with_no_application_protocol() {
        let mut config = PairConfig::new(2);
        config.client.alpn = vec![b"h3".to_vec()];
        let mut pair = Pair::with_config(config);
        let conn = pair.connect();
        assert!(!pair.drive_until_connected(conn));
        let reason = pair
            .client_events()
            .iter()
            .find_map(|e| match e {
                DriverEvent::HandshakeFailed(c, reason) if *c == conn => Some(reason.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no HandshakeFailed: {:?}", pair.client_events()));
        // TLS alert 120 (no_application_protocol) travels as QUIC CRYPTO_ERROR 0x100 + 120.
        match &reason {
            ConnectionError::ConnectionClosed(close) => {
                assert_eq!(
                    close.error_code,
                    TransportErrorCode::crypto(120),
                    "{reason}"
                );
            }
            other => panic!("unexpected reason: {other}"),
        }
        let text = reason.to_string();
        assert!(
            text.contains("120") || text.contains("protocol"),
            "unclear error: {text}"
        );
        // The server saw the failure too and freed everything once its draining period
        // (3 PTOs, with no RTT sample yet: about 3 s) ended.
        pair.drive_for(Duration::from_secs(10));
        assert!(
            pair.client_events()
                .contains(&DriverEvent::ConnectionDrained(conn))
        );
        assert_eq!(pair.servers[0].connection_count(), 0);
        assert_eq!(pair.client.connection_count(), 0);
    }

    #[test]
    fn two_hundred_streams_both_ways_intact() {
        let (mut pair, conn) = connected_pair(PairConfig::new(3));
        let mut t = EchoTransfer::start(&mut pair, conn, 200, 20_000, 3);
        assert!(
            pair.drive_until(Duration::from_secs(60), |p| t.pump(p)),
            "transfer stalled at {:?}",
            pair.elapsed()
        );
        t.verify();
        // GSO batching happened on the bulk path.
        assert!(pair.stats.gso_batches > 0, "{:?}", pair.stats);
    }

    #[test]
    fn loss_reordering_and_duplication_still_deliver_everything() {
        let mut config = PairConfig::new(4);
        config.faults = Faults {
            drop_probability: 0.05,
            duplicate_probability: 0.01,
            reorder_jitter: Duration::from_millis(8),
            one_way_delay: Duration::from_millis(10),
            ..Faults::default()
        };
        let (mut pair, conn) = connected_pair(config);
        let mut t = EchoTransfer::start(&mut pair, conn, 200, 10_000, 4);
        assert!(
            pair.drive_until(Duration::from_secs(120), |p| t.pump(p)),
            "transfer stalled at {:?}",
            pair.elapsed()
        );
        t.verify();
        assert!(pair.stats.dropped > 50, "{:?}", pair.stats);
        assert!(pair.stats.duplicated > 0, "{:?}", pair.stats);
        let stats = pair.client.stats(conn).unwrap();
        assert!(stats.path.lost_packets > 0, "{stats:?}");
    }

    #[test]
    fn lost_first_flight_datagrams_are_recovered() {
        // Lose the first datagram each way: half of the ClientHello, then the start of the
        // server's first flight. Loss recovery repairs both within the handshake budget.
        let mut config = PairConfig::new(5);
        config.faults.drop_to_server = [1].into();
        config.faults.drop_to_client = [0].into();
        let (pair, _) = connected_pair(config);
        assert_eq!(pair.stats.dropped, 2);
    }

    #[test]
    fn harness_runs_are_reproducible() {
        // Same seed, same faults: the same packets are dropped and the transfer ends at
        // the same virtual instant.
        let run = || {
            let mut config = PairConfig::new(21);
            config.faults.drop_probability = 0.05;
            config.faults.reorder_jitter = Duration::from_millis(5);
            let (mut pair, conn) = connected_pair(config);
            let mut t = EchoTransfer::start(&mut pair, conn, 20, 10_000, 21);
            assert!(pair.drive_until(Duration::from_secs(60), |p| t.pump(p)));
            t.verify();
            (pair.stats, pair.elapsed())
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn specific_dropped_datagrams_are_recovered() {
        let (mut pair, conn) = connected_pair(PairConfig::new(5));
        pair.drive();
        // Drop chosen datagrams of the data phase, counted from now, both ways.
        let (s, c) = (pair.stats.to_server, pair.stats.to_client);
        pair.faults.drop_to_server = [s, s + 1, s + 5, s + 20].into();
        pair.faults.drop_to_client = [c + 1, c + 2, c + 8].into();
        let mut t = EchoTransfer::start(&mut pair, conn, 10, 30_000, 5);
        assert!(pair.drive_until(Duration::from_secs(30), |p| t.pump(p)));
        t.verify();
        assert_eq!(pair.stats.dropped, 7);
    }

    /// The virtual time at which `side`'s connection was lost with TimedOut.
    fn timed_out_at(pair: &mut Pair, limit: Duration, client: bool) -> Option<Duration> {
        let found = pair.drive_until(limit, |p| {
            if client {
                p.client_events()
                    .iter()
                    .any(|e| matches!(e, DriverEvent::ConnectionLost(_, ConnectionError::TimedOut)))
            } else {
                p.server_events().iter().any(|(_, e)| {
                    matches!(e, DriverEvent::ConnectionLost(_, ConnectionError::TimedOut))
                })
            }
        });
        found.then(|| pair.elapsed())
    }

    #[test]
    fn idle_timeout_fires_at_five_seconds_when_peer_is_blackholed() {
        let mut config = PairConfig::new(6);
        // Without keep-alives the idle timer restarts only on receipt, so the deadline is
        // exactly 5 s after the last datagram arrived.
        config.client.keep_alive = None;
        config.server.keep_alive = None;
        let (mut pair, _) = connected_pair(config);
        pair.drive(); // let the last handshake packets land
        let blackholed_at = pair.elapsed();
        pair.faults.blackhole_to_client = true;
        pair.faults.blackhole_to_server = true;
        let at = timed_out_at(&mut pair, Duration::from_secs(30), true).expect("client timed out");
        let idle = at - blackholed_at;
        assert!(
            idle >= Duration::from_millis(4_950) && idle <= Duration::from_millis(5_050),
            "client idle timeout after {idle:?}"
        );
        let at = timed_out_at(&mut pair, Duration::from_secs(30), false).expect("server timed out");
        assert!(
            at - blackholed_at <= Duration::from_millis(5_050),
            "server idle timeout after {:?}",
            at - blackholed_at
        );
        // Both sides free the connection afterwards.
        pair.drive_for(Duration::from_secs(1));
        assert_eq!(pair.client.connection_count(), 0);
        assert_eq!(pair.servers[0].connection_count(), 0);
    }

    #[test]
    fn idle_timeout_with_keep_alive_fires_within_one_interval_of_five_seconds() {
        // With keep-alives, an unanswered PING sent after the last receipt restarts the
        // idle timer once (RFC 9000 §10.1), so the timeout lands in [5 s, 6 s].
        let (mut pair, _) = connected_pair(PairConfig::new(7));
        pair.drive();
        let blackholed_at = pair.elapsed();
        pair.faults.blackhole_to_client = true;
        pair.faults.blackhole_to_server = true;
        let at = timed_out_at(&mut pair, Duration::from_secs(30), true).expect("client timed out");
        let idle = at - blackholed_at;
        assert!(
            idle >= Duration::from_millis(4_950) && idle <= Duration::from_millis(6_050),
            "client idle timeout after {idle:?}"
        );
    }

    #[test]
    fn keep_alive_holds_an_idle_connection_for_a_minute() {
        let (mut pair, conn) = connected_pair(PairConfig::new(8));
        let start = pair.elapsed();
        pair.drive_for(Duration::from_secs(60));
        assert!(pair.elapsed() - start >= Duration::from_secs(60));
        let lost = |e: &DriverEvent| {
            matches!(
                e,
                DriverEvent::ConnectionLost(..) | DriverEvent::ConnectionDrained(_)
            )
        };
        assert!(
            !pair.client_events().iter().any(lost),
            "{:?}",
            pair.client_events()
        );
        assert!(!pair.server_events().iter().any(|(_, e)| lost(e)));
        assert!(pair.client.is_connected(conn));
        // About one PING per second of idleness.
        let pings = pair.client.stats(conn).unwrap().frame_tx.ping;
        assert!(pings >= 50, "only {pings} keep-alive PINGs in 60 s");
    }

    #[test]
    fn reset_and_stop_sending_reach_the_peer() {
        let (mut pair, conn) = connected_pair(PairConfig::new(9));
        let (worker, sconn) = pair.server_conn().unwrap();

        // RESET_STREAM: the server's read reports the code.
        let s1 = pair.client.open_bi(conn).unwrap();
        pair.client
            .write(conn, s1, &mut Bytes::from_static(b"hello"))
            .unwrap();
        pair.drive();
        assert!(
            pair.server_events()
                .contains(&(worker, DriverEvent::IncomingStream(sconn, s1)))
        );
        let mut got = Vec::new();
        assert!(!read_all(&mut pair.servers[worker], sconn, s1, &mut got));
        assert_eq!(got, b"hello");
        pair.client.reset(conn, s1, VarInt::from_u32(7)).unwrap();
        let cursor = pair.server_events().len();
        pair.drive();
        assert!(
            pair.server_events()[cursor..]
                .contains(&(worker, DriverEvent::StreamReadable(sconn, s1)))
        );
        assert_eq!(
            pair.servers[worker].read(sconn, s1, usize::MAX),
            Err(ReadError::Reset(VarInt::from_u32(7)))
        );
        // Reported once; then the stream is gone.
        assert_eq!(
            pair.servers[worker].read(sconn, s1, usize::MAX),
            Err(ReadError::ClosedStream)
        );
        // Resetting twice is an error, not a panic.
        assert_eq!(
            pair.client.reset(conn, s1, VarInt::from_u32(7)),
            Err(StreamError::ClosedStream)
        );

        // STOP_SENDING: the client gets an event and its writes fail with the code.
        let s2 = pair.client.open_bi(conn).unwrap();
        pair.client
            .write(conn, s2, &mut Bytes::from_static(b"x"))
            .unwrap();
        pair.drive();
        pair.servers[worker]
            .stop(sconn, s2, VarInt::from_u32(9))
            .unwrap();
        let cursor = pair.client_events().len();
        pair.drive();
        assert!(
            pair.client_events()[cursor..].contains(&DriverEvent::StreamStopped(
                conn,
                s2,
                VarInt::from_u32(9)
            )),
            "{:?}",
            &pair.client_events()[cursor..]
        );
        assert_eq!(
            pair.client
                .write(conn, s2, &mut Bytes::from_static(b"more")),
            Err(WriteError::Stopped(VarInt::from_u32(9)))
        );

        // Server-to-client reset on a client-opened bidirectional stream.
        let s3 = pair.client.open_bi(conn).unwrap();
        pair.client
            .write(conn, s3, &mut Bytes::from_static(b"ping"))
            .unwrap();
        pair.drive();
        pair.servers[worker]
            .reset(sconn, s3, VarInt::from_u32(3))
            .unwrap();
        pair.drive();
        assert_eq!(
            pair.client.read(conn, s3, usize::MAX),
            Err(ReadError::Reset(VarInt::from_u32(3)))
        );
    }

    #[test]
    fn finish_is_acknowledged_with_stream_finished() {
        let (mut pair, conn) = connected_pair(PairConfig::new(10));
        let s = pair.client.open_bi(conn).unwrap();
        pair.client
            .write(conn, s, &mut Bytes::from_static(b"done"))
            .unwrap();
        pair.client.finish(conn, s).unwrap();
        pair.drive();
        let (worker, sconn) = pair.server_conn().unwrap();
        let mut got = Vec::new();
        assert!(read_all(&mut pair.servers[worker], sconn, s, &mut got));
        assert_eq!(got, b"done");
        pair.drive();
        assert!(
            pair.client_events()
                .contains(&DriverEvent::StreamFinished(conn, s))
        );
        assert_eq!(pair.client.finish(conn, s), Err(StreamError::ClosedStream));
    }

    #[test]
    fn datagrams_flow_both_ways() {
        let (mut pair, conn) = connected_pair(PairConfig::new(11));
        let (worker, sconn) = pair.server_conn().unwrap();
        let max = pair.client.max_datagram_size(conn).unwrap();
        assert!(max >= 1000, "max datagram {max}");
        // Bound: a handful of datagrams each way.
        for i in 0..10u8 {
            pair.client
                .send_datagram(conn, Bytes::from(vec![i; 100]))
                .unwrap();
            pair.servers[worker]
                .send_datagram(sconn, Bytes::from(vec![i + 100; 200]))
                .unwrap();
        }
        assert_eq!(
            pair.client
                .send_datagram(conn, Bytes::from(vec![0; max + 1])),
            Err(DatagramError::TooLarge)
        );
        pair.drive();
        let at_server: Vec<Bytes> = pair
            .server_events()
            .iter()
            .filter_map(|(_, e)| match e {
                DriverEvent::DatagramReceived(c, d) if *c == sconn => Some(d.clone()),
                _ => None,
            })
            .collect();
        let at_client: Vec<Bytes> = pair
            .client_events()
            .iter()
            .filter_map(|e| match e {
                DriverEvent::DatagramReceived(c, d) if *c == conn => Some(d.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            at_server,
            (0..10u8)
                .map(|i| Bytes::from(vec![i; 100]))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            at_client,
            (0..10u8)
                .map(|i| Bytes::from(vec![i + 100; 200]))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn datagrams_disabled_locally_are_refused() {
        let mut config = PairConfig::new(12);
        config.client.datagrams = false;
        let (mut pair, conn) = connected_pair(config);
        assert_eq!(
            pair.client.send_datagram(conn, Bytes::from_static(b"x")),
            Err(DatagramError::Disabled)
        );
        let (worker, sconn) = pair.server_conn().unwrap();
        assert_eq!(
            pair.servers[worker].send_datagram(sconn, Bytes::from_static(b"x")),
            Err(DatagramError::UnsupportedByPeer)
        );
    }

    #[test]
    fn two_workers_route_by_connection_id() {
        let mut config = PairConfig::new(13);
        config.server_workers = 2;
        let mut pair = Pair::with_config(config);

        // The kernel would put the first connection's Initial on worker 1.
        pair.initial_worker = 1;
        let a = pair.connect();
        assert!(pair.drive_until_connected(a));
        assert_eq!(pair.server_conn().unwrap().0, 1);
        let routes_a = pair.routes.len();

        // ... and the second's on worker 0.
        pair.initial_worker = 0;
        let b = pair.connect();
        assert!(pair.drive_until_connected(b));
        assert_eq!(pair.server_conn().unwrap().0, 0);
        assert_eq!(pair.servers[0].connection_count(), 1);
        assert_eq!(pair.servers[1].connection_count(), 1);

        // Only Initials lacked a routable CID; everything else was routed by its CID.
        assert!(
            pair.routes.iter().all(|r| r.by_cid || r.long_header),
            "{:?}",
            pair.routes
        );
        assert!(
            pair.routes[..routes_a]
                .iter()
                .filter(|r| r.by_cid)
                .all(|r| r.worker == 1)
        );
        assert!(
            pair.routes[..routes_a]
                .iter()
                .any(|r| r.by_cid && r.long_header)
        );
        assert!(
            pair.routes[..routes_a]
                .iter()
                .any(|r| r.by_cid && !r.long_header)
        );
        assert!(
            pair.routes[routes_a..]
                .iter()
                .any(|r| r.by_cid && r.worker == 0)
        );

        // Data on both connections lands on the right worker.
        let sa = pair.client.open_bi(a).unwrap();
        pair.client
            .write(a, sa, &mut Bytes::from_static(b"to worker 1"))
            .unwrap();
        let sb = pair.client.open_bi(b).unwrap();
        pair.client
            .write(b, sb, &mut Bytes::from_static(b"to worker 0"))
            .unwrap();
        let cursor = pair.routes.len();
        pair.drive();
        let incoming: Vec<usize> = pair
            .server_events()
            .iter()
            .filter(|(_, e)| matches!(e, DriverEvent::IncomingStream(..)))
            .map(|(w, _)| *w)
            .collect();
        assert_eq!(incoming.len(), 2);
        assert!(incoming.contains(&0) && incoming.contains(&1));
        assert!(pair.routes[cursor..].iter().all(|r| r.by_cid));

        // A datagram of worker 1's connection that reaches worker 0 anyway is dropped
        // silently: worker 0 must not answer with a stateless reset that would kill it.
        let sa2 = pair.client.open_bi(a).unwrap();
        pair.client
            .write(a, sa2, &mut Bytes::from(vec![1u8; 200]))
            .unwrap();
        let mut buf = Vec::new();
        let t = pair
            .client
            .poll_transmit(pair.now, 1, &mut buf)
            .expect("a packet for conn a");
        let key = CidKey::from_bytes(seed_key(13));
        assert_eq!(key.owner(&buf[..t.size]), Some(1));
        pair.servers[0].handle_datagram(
            pair.now,
            CLIENT_ADDR,
            None,
            None,
            BytesMut::from(&buf[..t.size]),
        );
        assert!(
            pair.servers[0]
                .poll_transmit(pair.now, 1, &mut buf)
                .is_none()
        );
    }

    /// The server CID key the harness derives from a seed (see `harness::seed32`).
    fn seed_key(seed: u64) -> [u8; 32] {
        let mut out = [4u8; 32];
        out[..8].copy_from_slice(&seed.to_le_bytes());
        out
    }

    #[test]
    fn stateless_reset_only_for_own_unknown_cids() {
        let cfg = QuicConfig::default();
        let key = CidKey::random();
        let ca = crate::quic::tls::TlsMaterial::generate_ca().unwrap();
        let material =
            crate::quic::tls::TlsMaterial::issue_server_cert(&ca, &["quic.cftunnel.com"]).unwrap();
        let server = Arc::new(
            cfg.server_config(material.server_crypto(&cfg.alpn).unwrap())
                .unwrap(),
        );
        let mut worker0 = Driver::new(
            &cfg,
            Some(server),
            None,
            WorkerCidGenerator::new(key.clone(), 0).unwrap(),
        )
        .unwrap();
        let now = Instant::now();
        let packet = |worker: usize| {
            use quinn_proto::ConnectionIdGenerator;
            let cid = WorkerCidGenerator::new(key.clone(), worker)
                .unwrap()
                .generate_cid();
            let mut p = vec![0x40];
            p.extend_from_slice(&cid);
            p.resize(100, 0xAB);
            BytesMut::from(&p[..])
        };
        let mut buf = Vec::new();
        // Another worker's CID: dropped, no answer.
        worker0.handle_datagram(now, CLIENT_ADDR, None, None, packet(1));
        assert!(worker0.poll_transmit(now, 1, &mut buf).is_none());
        // Its own CID for a connection it does not have: a stateless reset, smaller than
        // the packet that caused it.
        worker0.handle_datagram(now, CLIENT_ADDR, None, None, packet(0));
        let t = worker0
            .poll_transmit(now, 1, &mut buf)
            .expect("stateless reset");
        assert_eq!(t.destination, CLIENT_ADDR);
        assert!(t.size < 100);
        // Garbage: nothing.
        worker0.handle_datagram(
            now,
            CLIENT_ADDR,
            None,
            None,
            BytesMut::from(&[0x40u8; 50][..]),
        );
        assert!(worker0.poll_transmit(now, 1, &mut buf).is_none());
    }

    #[test]
    fn every_incoming_is_accepted_or_refused_at_the_connection_limit() {
        let mut config = PairConfig::new(14);
        config.server.max_connections = 1;
        let mut pair = Pair::with_config(config);
        let first = pair.connect();
        assert!(pair.drive_until_connected(first));
        let second = pair.connect();
        let third = pair.connect();
        pair.drive_until(Duration::from_secs(5), |p| {
            let failed = |c: ConnId| {
                p.client_events()
                    .iter()
                    .any(|e| matches!(e, DriverEvent::HandshakeFailed(x, _) if *x == c))
            };
            failed(second) && failed(third)
        });
        for conn in [second, third] {
            let reason = pair
                .client_events()
                .iter()
                .find_map(|e| match e {
                    DriverEvent::HandshakeFailed(c, r) if *c == conn => Some(r.clone()),
                    _ => None,
                })
                .expect("refused connection fails");
            match reason {
                ConnectionError::ConnectionClosed(close) => {
                    assert_eq!(close.error_code, TransportErrorCode::CONNECTION_REFUSED);
                }
                other => panic!("unexpected {other}"),
            }
        }
        let s = pair.servers[0].driver_stats();
        assert_eq!(s.accepted, 1, "{s:?}");
        assert!(s.refused >= 2, "{s:?}");
        assert_eq!(
            s.incoming,
            s.accepted + s.accept_failed + s.refused + s.retried + s.ignored,
            "{s:?}"
        );

        // Closing the first frees the slot: a new connection is accepted.
        pair.client.close(
            pair.now,
            first,
            VarInt::from_u32(0),
            Bytes::from_static(b"bye"),
        );
        pair.drive_until(Duration::from_secs(5), |p| {
            p.servers[0].connection_count() == 0
        });
        assert_eq!(pair.servers[0].connection_count(), 0);
        let fourth = pair.connect();
        assert!(pair.drive_until_connected(fourth));
        let s = pair.servers[0].driver_stats();
        assert_eq!(s.accepted, 2, "{s:?}");
        assert_eq!(
            s.incoming,
            s.accepted + s.accept_failed + s.refused + s.retried + s.ignored,
            "{s:?}"
        );
        // The server reports the peer's close, then frees the connection.
        assert!(pair.server_events().iter().any(|(_, e)| matches!(
            e,
            DriverEvent::ConnectionLost(_, ConnectionError::ApplicationClosed(c)) if c.reason == Bytes::from_static(b"bye")
        )));
    }

    #[test]
    fn retry_validates_the_address_first_when_configured() {
        let mut config = PairConfig::new(15);
        config.server.retry = RetryMode::Always;
        let (pair, _) = connected_pair(config);
        let s = pair.servers[0].driver_stats();
        // The X25519MLKEM768 key share makes the ClientHello span two Initial datagrams,
        // and each one that arrives before the Retry is answered with a Retry.
        assert!(s.retried >= 1, "{s:?}");
        assert_eq!(s.accepted, 1, "{s:?}");
        assert_eq!(
            s.incoming,
            s.accepted + s.accept_failed + s.refused + s.retried + s.ignored,
            "{s:?}"
        );
    }

    #[test]
    fn read_returns_slices_of_the_received_datagram() {
        let (mut pair, conn) = connected_pair(PairConfig::new(16));
        pair.drive();
        let (worker, sconn) = pair.server_conn().unwrap();
        let s = pair.client.open_bi(conn).unwrap();
        let payload = Bytes::from(vec![0x5Au8; 300]);
        pair.client.write(conn, s, &mut payload.clone()).unwrap();
        pair.client.finish(conn, s).unwrap();

        // Hand the client's datagrams to the server by hand, remembering each buffer.
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        let now = pair.now;
        // Bound: the write above fits in one or two packets; 8 is generous.
        for _ in 0..8 {
            let Some(t) = pair.client.poll_transmit(now, 1, &mut buf) else {
                break;
            };
            let datagram = BytesMut::from(&buf[..t.size]);
            let start = datagram.as_ptr() as usize;
            ranges.push(start..start + datagram.len());
            pair.servers[worker].handle_datagram(now, CLIENT_ADDR, None, None, datagram);
        }
        assert!(!ranges.is_empty());
        let chunk = pair.servers[worker]
            .read(sconn, s, usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(chunk, payload);
        let ptr = chunk.as_ptr() as usize;
        assert!(
            ranges
                .iter()
                .any(|r| r.contains(&ptr) && r.contains(&(ptr + chunk.len() - 1))),
            "read() copied: {ptr:#x} not in {ranges:x?}"
        );
    }

    #[test]
    fn poll_transmit_round_robins_and_caps_gso_batches() {
        let mut config = PairConfig::new(17);
        config.client.gso_segments = 3;
        let mut pair = Pair::with_config(config);
        let a = pair.connect();
        assert!(pair.drive_until_connected(a));
        let b = pair.connect();
        assert!(pair.drive_until_connected(b));
        pair.drive();
        for conn in [a, b] {
            let s = pair.client.open_bi(conn).unwrap();
            pair.client
                .write(conn, s, &mut Bytes::from(vec![7u8; 100_000]))
                .unwrap();
        }
        let mut buf = Vec::new();
        let mut dcids = Vec::new();
        // Bound: the initial congestion windows allow a few dozen datagrams in total.
        for _ in 0..64 {
            let Some(t) = pair.client.poll_transmit(pair.now, usize::MAX, &mut buf) else {
                break;
            };
            let segment = t.segment_size.unwrap_or(t.size);
            assert!(
                t.size.div_ceil(segment) <= 3,
                "batch of {} segments",
                t.size.div_ceil(segment)
            );
            dcids.push(buf[1..1 + crate::quic::CID_LEN].to_vec());
        }
        assert!(dcids.len() >= 4, "{}", dcids.len());
        // While both have data and window, they alternate.
        assert_ne!(dcids[0], dcids[1]);
        assert_eq!(dcids[0], dcids[2]);
        assert_eq!(dcids[1], dcids[3]);
    }

    #[test]
    fn dead_connection_ids_are_rejected() {
        let (mut pair, conn) = connected_pair(PairConfig::new(18));
        let s = pair.client.open_bi(conn).unwrap();
        pair.client
            .close(pair.now, conn, VarInt::from_u32(0), Bytes::new());
        pair.drive_until(Duration::from_secs(5), |p| {
            p.client_events()
                .contains(&DriverEvent::ConnectionDrained(conn))
        });
        assert!(
            pair.client_events()
                .contains(&DriverEvent::ConnectionDrained(conn))
        );
        assert_eq!(
            pair.client.write(conn, s, &mut Bytes::from_static(b"x")),
            Err(WriteError::UnknownConnection)
        );
        assert_eq!(
            pair.client.read(conn, s, 10),
            Err(ReadError::UnknownConnection)
        );
        assert!(pair.client.open_bi(conn).is_none());
        assert!(pair.client.stats(conn).is_none());
        // A new connection may reuse quinn's slot; the old id still does not reach it.
        let again = pair.connect();
        assert!(pair.drive_until_connected(again));
        assert_ne!(again, conn);
        assert!(pair.client.open_bi(conn).is_none());
        assert!(pair.client.open_bi(again).is_some());
    }

    #[test]
    fn timers_are_tracked_per_connection() {
        let (mut pair, conn) = connected_pair(PairConfig::new(19));
        pair.drive();
        let deadline = pair.client.poll_timeout().expect("keep-alive/idle timer");
        // Asking again without input returns the same deadline.
        assert_eq!(pair.client.poll_timeout(), Some(deadline));
        // A timeout call before the deadline runs nothing and changes nothing.
        pair.client.handle_timeout(pair.now);
        let mut buf = Vec::new();
        assert!(pair.client.poll_transmit(pair.now, 1, &mut buf).is_none());
        assert_eq!(pair.client.poll_timeout(), Some(deadline));
        assert!(pair.client.is_connected(conn));
        // At the deadline the keep-alive PING goes out.
        pair.now = deadline;
        pair.client.handle_timeout(deadline);
        assert!(pair.client.poll_transmit(deadline, 1, &mut buf).is_some());
    }

    #[test]
    fn driver_moves_between_threads() {
        // Workers build their drivers at startup and move them onto their own threads.
        fn assert_send<T: Send>() {}
        assert_send::<Driver>();
        assert_send::<Pair>();
    }

    #[test]
    fn connect_errors_are_reported() {
        let cfg = QuicConfig::default();
        let mut d = Driver::new(
            &cfg,
            None,
            None,
            WorkerCidGenerator::new(CidKey::random(), 0).unwrap(),
        )
        .unwrap();
        assert_eq!(
            d.connect(Instant::now(), SERVER_ADDR, "x"),
            Err(ConnectError::NoClientConfig)
        );
        let (mut pair, _) = connected_pair(PairConfig::new(20));
        let bad = pair
            .client
            .connect(pair.now, "0.0.0.0:0".parse().unwrap(), "quic.cftunnel.com");
        assert!(matches!(bad, Err(ConnectError::Quinn(_))), "{bad:?}");
    }
}
