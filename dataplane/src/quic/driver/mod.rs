//! [`Driver`]: one worker's quinn-proto endpoint and all the connections it owns.
//!
//! This file holds the driver's state, its inputs (`handle_datagram`, `handle_timeout`,
//! `connect`) and its outputs (`poll_transmit`, `poll_timeout`, `poll_event`); `ops` holds
//! the commands and getters on one connection and its streams; `events` the ids, events,
//! statistics and errors the driver hands out.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, ConnectionStats, DatagramEvent, Dir, EcnCodepoint,
    Endpoint, Event, Incoming, ServerConfig, Side, StreamEvent, StreamId, Transmit, VarInt,
    Written,
};

use super::cid::WorkerCidGenerator;
use super::config::{ConfigError, QuicConfig, RetryMode};

mod events;
mod ops;
#[cfg(test)]
mod tests;

pub use events::{
    ConnId, ConnectError, DatagramError, DriverEvent, DriverStats, HandshakeInfo, ReadError,
    StreamError, WriteError,
};

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
    pub(crate) fn connection_count(&self) -> usize {
        self.live
    }

    /// Incoming-connection and queue counters.
    pub(crate) fn driver_stats(&self) -> DriverStats {
        self.stats
    }

    /// Incoming connections still handshaking (accepted, neither established nor drained).
    pub(crate) fn half_open(&self) -> usize {
        self.half_open
    }

    /// Whether this driver accepts incoming connections at all (it has a server
    /// configuration).
    pub(crate) fn is_server(&self) -> bool {
        self.handshake_server_config.is_some()
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
}
