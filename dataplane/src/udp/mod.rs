//! UDP with the control messages QUIC needs: GSO (`UDP_SEGMENT`), GRO (`UDP_GRO` with the
//! stride), ECN (`IP_TOS` / `IPV6_TCLASS`) and the local address (`IP_PKTINFO` /
//! `IPV6_PKTINFO`), in both directions.
//!
//! Two backends sit behind one API ([`UdpIo`]):
//!
//! - [`uring::UringUdp`] (a): `RecvMsg`/`SendMsg` with cmsgs on an io_uring the socket owns.
//!   It receives either with one multishot `RecvMsgMulti` over a ring of provided buffers
//!   ([`uring::UringRecv::Multishot`], the default) or with [`uring::RECV_SLOTS`] single-shot
//!   receives, each with its own buffer ([`uring::UringRecv::Slots`]). The ring signals an
//!   eventfd that the worker awaits through monoio, so an idle worker sleeps in its runtime.
//! - [`ready::ReadyUdp`] (b): monoio readiness on the socket, then quinn-udp's `recvmmsg` /
//!   `sendmsg` on it.
//!
//! # Measurements, and the default
//!
//! ```text
//! cargo run --release -p dataplane --example udp_bench -- --secs 2 --rounds 7
//! ```
//!
//! Loopback on the 2-core development VM (Linux 6.18): one pinned worker sends 1200-byte
//! datagrams as fast as it can (GSO batches of 10 when offload is on), another receives; both
//! sockets use the same backend; median of 7 interleaved rounds of 2 s, one process, one run.
//! "CPU ns" is the thread's CPU time per datagram (the sender's includes the kernel's
//! loopback delivery, which runs in its context).
//!
//! | backend            | GSO+GRO | received/s | MB/s  | sender CPU ns | receiver CPU ns |
//! |--------------------|---------|-----------:|------:|--------------:|----------------:|
//! | (a) uring multishot| on      |  1 832 501 | 2 199 |           282 |             194 |
//! | (a) uring slots    | on      |  1 348 499 | 1 618 |           294 |             281 |
//! | (b) ready          | on      |  2 010 490 | 2 413 |           224 |             179 |
//! | (a) uring multishot| off     |    301 307 |   362 |         2 014 |           1 112 |
//! | (a) uring slots    | off     |    218 036 |   262 |         2 249 |           1 709 |
//! | (b) ready          | off     |    343 562 |   412 |         1 770 |           1 018 |
//!
//! With offload on the receiver is the bottleneck (15–25 % of the datagrams overflow its
//! socket buffer), so "received/s" is its capacity; with offload off the sender is, and
//! nothing is lost. The machine is shared and throughput varies ±15 % between runs; the CPU
//! columns are steadier. `--matrix` (every sender against every receiver, 3 rounds of 1 s)
//! gives the same order: a (b) sender costs 225–270 ns per datagram against 280–345 for (a),
//! (b) and multishot receivers cost about the same, and slots receivers the most, because
//! every arrival wakes all 32 parked requests.
//!
//! So [`UdpBackend::default()`] is [`UdpBackend::Ready`]: it is as fast or faster in every
//! case, needs no second ring and no 4 MiB of provided buffers per socket, and behaves the
//! same on monoio's io_uring and legacy drivers. (a) stays selectable with
//! [`UdpBackend::Uring`].
//!
//! # Receiving
//!
//! [`UdpIo::recv`] waits for at least one datagram and returns a [`RecvBatch`] that borrows the
//! backend's own buffers: no copy, and no io_uring receive is ever cancelled by dropping the
//! future. The uring backend keeps its receives in the ring across calls; a completed one is
//! handed out in a batch and re-armed on the next `recv` call. To feed quinn-proto, copy each
//! entry into a `BytesMut` (quinn-proto takes ownership) and split it by [`RecvMeta::stride`]
//! ([`RecvMeta::datagrams`]).
//!
//! # Buffer size with GRO
//!
//! Each receive buffer is [`RECV_BUF_LEN`] = 64 KiB. A GRO super-datagram never exceeds that:
//! the kernel stops coalescing UDP at `UDP_GRO_CNT_MAX` = 64 segments and at 64 KiB in total
//! (`skb_gro_receive` allows more only for TCP), and a loopback GSO batch is bounded by the
//! 16-bit IP length (65 507 bytes of payload). Sizing for 64 × 1472 = 94 208 bytes would
//! allocate memory the kernel can never fill.
//!
//! # Sending
//!
//! [`UdpIo::send`] takes a [`Transmit`] whose `contents` may hold several datagrams of
//! `segment_size` bytes (the last may be shorter). With GSO on, it goes out as one
//! `UDP_SEGMENT` send per at most [`MAX_GSO_SEGMENTS`] segments and [`MAX_UDP_PAYLOAD`] bytes;
//! with GSO off, as one send per datagram. If a GSO send fails with `EIO` or `EINVAL` (a device
//! or socket that cannot segment), GSO is turned off for that socket for good, logged once, and
//! the batch is re-sent as single datagrams.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, BorrowedFd},
    sync::atomic::{AtomicBool, Ordering},
};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

pub mod ready;
pub(crate) mod sys;
pub mod uring;

pub use ready::ReadyUdp;
pub use uring::UringUdp;

/// Bytes per receive buffer: holds any datagram and any GRO super-datagram (see module docs).
pub const RECV_BUF_LEN: usize = 64 * 1024;

/// Largest payload of one UDP send (a whole GSO batch included): 65 535 − 20 (IPv4) − 8 (UDP).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Most segments one GSO send may carry (`UDP_MAX_SEGMENTS` in linux/udp.h).
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Most segments GRO coalesces into one receive (`UDP_GRO_CNT_MAX` in net/ipv4/udp_offload.c).
pub const MAX_GRO_SEGMENTS: usize = 64;

/// ECN codepoint ECT(1).
pub const ECN_ECT1: u8 = 0b01;
/// ECN codepoint ECT(0).
pub const ECN_ECT0: u8 = 0b10;
/// ECN codepoint CE.
pub const ECN_CE: u8 = 0b11;

/// What arrived in one receive buffer: one datagram, or several of `stride` bytes (GRO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// The sender.
    pub addr: SocketAddr,
    /// Bytes in the buffer.
    pub len: usize,
    /// Size of each datagram in the buffer; the last may be shorter. Equals `len` without GRO.
    pub stride: usize,
    /// ECN codepoint (1 = ECT(1), 2 = ECT(0), 3 = CE); `None` for Not-ECT.
    pub ecn: Option<u8>,
    /// The local address the datagram was sent to (from `IP_PKTINFO` / `IPV6_PKTINFO`).
    pub dst_ip: Option<IpAddr>,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            stride: 0,
            ecn: None,
            dst_ip: None,
        }
    }
}

impl RecvMeta {
    /// Splits the buffer this meta describes into its datagrams.
    pub fn datagrams<'d>(&self, data: &'d [u8]) -> std::slice::Chunks<'d, u8> {
        data[..self.len.min(data.len())].chunks(self.stride.max(1))
    }
}

/// One send: a datagram, or a GSO batch of `segment_size`-byte datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    /// Where to send.
    pub destination: SocketAddr,
    /// ECN codepoint to set (see [`ECN_ECT0`]); `None` sends Not-ECT.
    pub ecn: Option<u8>,
    /// The datagram(s).
    pub contents: &'a [u8],
    /// Size of each datagram when `contents` holds several; `None` for a single one.
    pub segment_size: Option<usize>,
    /// Local address to send from (for sockets bound to a wildcard address).
    pub src_ip: Option<IpAddr>,
}

/// How to set a socket up.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Use `UDP_SEGMENT` for batches (if the kernel supports it).
    pub gso: bool,
    /// Enable `UDP_GRO` (if the kernel supports it).
    pub gro: bool,
    /// `SO_RCVBUF` to ask for, in bytes; 0 keeps the kernel default.
    pub recv_buffer: usize,
    /// `SO_SNDBUF` to ask for, in bytes; 0 keeps the kernel default.
    pub send_buffer: usize,
    /// Set `SO_REUSEPORT` so each worker can bind its own socket on the same port.
    pub reuse_port: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            gso: true,
            gro: true,
            // 7 MiB is what quic-go (cloudflared's QUIC stack) asks for; enough for about 5 ms
            // of a 10 Gbit/s burst while the worker is busy elsewhere.
            recv_buffer: 7 << 20,
            send_buffer: 7 << 20,
            reuse_port: false,
        }
    }
}

/// What a socket can do, as found at setup (GSO may later be switched off by a failed send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCapabilities {
    /// Most datagrams per [`Transmit`] worth building: [`MAX_GSO_SEGMENTS`] with GSO, else 1.
    pub max_gso_segments: usize,
    /// Most datagrams one receive may hold: [`MAX_GRO_SEGMENTS`] with GRO, else 1.
    pub gro_segments: usize,
    /// `SO_RCVBUF` obtained, in usable bytes (half what the kernel reports).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` obtained, in usable bytes.
    pub send_buffer: usize,
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdpBackend {
    /// [`UringUdp`]: our own io_uring (multishot receives where the kernel has them).
    Uring,
    /// [`ReadyUdp`]: monoio readiness + quinn-udp. The default (see the module docs).
    Ready,
}

impl Default for UdpBackend {
    /// The faster of the two in `examples/udp_bench.rs` (see the module docs).
    fn default() -> Self {
        DEFAULT_BACKEND
    }
}

const DEFAULT_BACKEND: UdpBackend = UdpBackend::Ready;

/// A UDP socket with one of the two backends.
///
/// Must be created and used inside a monoio runtime (either driver); it is not `Send`.
#[derive(Debug)]
pub enum UdpIo {
    /// Our own io_uring (boxed: the ring and slot table make it several times larger than
    /// the other variant).
    Uring(Box<UringUdp>),
    /// monoio readiness + quinn-udp.
    Ready(ReadyUdp),
}

impl UdpIo {
    /// Creates, configures and binds a socket.
    ///
    /// If the uring backend is asked for but io_uring cannot be set up here, falls back to the
    /// readiness backend (logged once).
    pub fn bind(addr: SocketAddr, config: &UdpConfig, backend: UdpBackend) -> io::Result<Self> {
        let (socket, caps) = bind_socket(addr, config)?;
        Self::from_configured(socket, caps, config, backend)
    }

    /// Takes over an already bound socket (for example one handed from another worker) and
    /// configures it like [`UdpIo::bind`] does, except `SO_REUSEPORT`.
    pub fn from_std(
        socket: std::net::UdpSocket,
        config: &UdpConfig,
        backend: UdpBackend,
    ) -> io::Result<Self> {
        let socket = Socket::from(socket);
        let v6 = socket.local_addr()?.is_ipv6();
        let caps = configure(&socket, v6, config)?;
        Self::from_configured(socket, caps, config, backend)
    }

    fn from_configured(
        socket: Socket,
        caps: UdpCapabilities,
        config: &UdpConfig,
        backend: UdpBackend,
    ) -> io::Result<Self> {
        match backend {
            UdpBackend::Ready => Ok(Self::Ready(ReadyUdp::from_configured(
                socket, caps, config,
            )?)),
            UdpBackend::Uring => match uring::new_ring() {
                Ok(ring) => Ok(Self::Uring(Box::new(UringUdp::from_configured(
                    socket,
                    caps,
                    ring,
                    uring::UringRecv::default(),
                )?))),
                Err(e) => {
                    static WARNED: AtomicBool = AtomicBool::new(false);
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        warn!("io_uring unavailable for UDP ({e}); using the readiness backend");
                    }
                    Ok(Self::Ready(ReadyUdp::from_configured(
                        socket, caps, config,
                    )?))
                }
            },
        }
    }

    /// Waits for at least one datagram; returns everything that arrived, up to one batch.
    ///
    /// Cancel-safe: dropping the future loses nothing and cancels no kernel operation.
    pub async fn recv(&mut self) -> io::Result<RecvBatch<'_>> {
        match self {
            Self::Uring(u) => u.recv().await,
            Self::Ready(r) => r.recv().await,
        }
    }

    /// Sends a datagram or a GSO batch, waiting for socket-buffer space if needed.
    ///
    /// Errors are the kernel's (`EMSGSIZE`, `ENETUNREACH`, ...); never `WouldBlock`.
    pub async fn send(&mut self, transmit: &Transmit<'_>) -> io::Result<()> {
        match self {
            Self::Uring(u) => u.send(transmit).await,
            Self::Ready(r) => r.send(transmit).await,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Uring(u) => u.local_addr(),
            Self::Ready(r) => r.local_addr(),
        }
    }

    /// What this socket can do now.
    pub fn capabilities(&self) -> UdpCapabilities {
        match self {
            Self::Uring(u) => u.capabilities(),
            Self::Ready(r) => r.capabilities(),
        }
    }

    /// Which backend runs this socket.
    pub fn backend(&self) -> UdpBackend {
        match self {
            Self::Uring(_) => UdpBackend::Uring,
            Self::Ready(_) => UdpBackend::Ready,
        }
    }
}

impl AsFd for UdpIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Uring(u) => u.as_fd(),
            Self::Ready(r) => r.as_fd(),
        }
    }
}

/// Datagrams from one [`UdpIo::recv`], borrowed from the backend's buffers.
#[derive(Debug)]
pub struct RecvBatch<'a> {
    metas: &'a [RecvMeta],
    data: BatchData<'a>,
}

#[derive(Debug)]
enum BatchData<'a> {
    /// Entry `i` starts at `i * RECV_BUF_LEN`.
    Contiguous(&'a [u8]),
    /// Entry `i` starts at `starts[i]`, inside a uring buffer that is not re-armed or
    /// returned to the kernel while this batch lives.
    Uring(&'a [uring::BufStart]),
}

impl<'a> RecvBatch<'a> {
    pub(crate) fn contiguous(metas: &'a [RecvMeta], bufs: &'a [u8]) -> Self {
        Self {
            metas,
            data: BatchData::Contiguous(bufs),
        }
    }

    pub(crate) fn uring(metas: &'a [RecvMeta], starts: &'a [uring::BufStart]) -> Self {
        Self {
            metas,
            data: BatchData::Uring(starts),
        }
    }

    /// Number of buffers (each one datagram, or several with GRO).
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether the batch is empty (never, from `recv`).
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Buffer `i` and what it holds.
    pub fn get(&self, i: usize) -> Option<(&'a RecvMeta, &'a [u8])> {
        let meta = self.metas.get(i)?;
        let data = match self.data {
            BatchData::Contiguous(bufs) => &bufs[i * RECV_BUF_LEN..i * RECV_BUF_LEN + meta.len],
            // SAFETY: a `Uring` batch is built only by `UringUdp::recv`, from buffers whose
            // completions were reaped; they are neither re-armed nor given back to the kernel
            // until the next `recv`, which needs the `&mut UringUdp` this batch borrows.
            // `meta.len` bytes from `starts[i]` lie inside that buffer.
            BatchData::Uring(starts) => unsafe { starts[i].slice(meta.len) },
        };
        Some((meta, data))
    }

    /// All buffers in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a RecvMeta, &'a [u8])> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

// ===== socket setup shared by both backends =====

/// The bound address of a backend's socket.
pub(crate) fn socket_local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

static RCVBUF_WARNED: AtomicBool = AtomicBool::new(false);
static SNDBUF_WARNED: AtomicBool = AtomicBool::new(false);

/// Creates, configures and binds a socket.
pub(crate) fn bind_socket(
    addr: SocketAddr,
    config: &UdpConfig,
) -> io::Result<(Socket, UdpCapabilities)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if config.reuse_port {
        socket.set_reuse_port(true)?;
    }
    let caps = configure(&socket, addr.is_ipv6(), config)?;
    socket.bind(&addr.into())?;
    Ok((socket, caps))
}

/// Applies every option both backends rely on.
pub(crate) fn configure(
    socket: &Socket,
    v6: bool,
    config: &UdpConfig,
) -> io::Result<UdpCapabilities> {
    let fd = socket.as_fd();
    socket.set_nonblocking(true)?;

    let recv_buffer = set_buffer(
        fd,
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        config.recv_buffer,
        "receive",
        &RCVBUF_WARNED,
    );
    let send_buffer = set_buffer(
        fd,
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
        config.send_buffer,
        "send",
        &SNDBUF_WARNED,
    );

    // The local address of each datagram, and its ECN bits. On an IPv6 socket the IPv4 options
    // cover IPv4-mapped traffic; they fail harmlessly on a v6-only socket.
    if v6 {
        sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)?;
        let _ = sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
    } else {
        sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)?;
    }

    // Never fragment: QUIC discovers the path MTU itself. PROBE sets DF but ignores the
    // kernel's cached path MTU, so MTU probes larger than a stale guess still go out.
    // On an IPv6 socket this covers IPv4-mapped traffic and may fail on a v6-only socket.
    if let Err(e) = sys::setsockopt_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    ) && !v6
    {
        debug!("IP_MTU_DISCOVER unsupported: {e}");
    }
    if v6 {
        if let Err(e) = sys::setsockopt_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        ) {
            debug!("IPV6_MTU_DISCOVER unsupported: {e}");
        }
        // PROBE alone still lets IPv6 fragment locally; DONTFRAG forbids it.
        if let Err(e) = sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1) {
            debug!("IPV6_DONTFRAG unsupported: {e}");
        }
    }

    let gro_segments = apply_gro(fd, config.gro);

    // Probe GSO on this socket: setting UDP_SEGMENT fails on kernels without it. The option
    // would set a default segment size for every send, so it is reset right away; the size
    // goes in a per-send cmsg instead.
    let max_gso_segments =
        if config.gso && sys::setsockopt_int(fd, libc::SOL_UDP, sys::UDP_SEGMENT, 1500).is_ok() {
            sys::setsockopt_int(fd, libc::SOL_UDP, sys::UDP_SEGMENT, 0)?;
            MAX_GSO_SEGMENTS
        } else {
            1
        };

    Ok(UdpCapabilities {
        max_gso_segments,
        gro_segments,
        recv_buffer,
        send_buffer,
    })
}

/// Turns UDP_GRO on or off; returns the resulting `gro_segments`.
pub(crate) fn apply_gro(fd: BorrowedFd<'_>, on: bool) -> usize {
    match sys::setsockopt_int(fd, libc::SOL_UDP, sys::UDP_GRO, libc::c_int::from(on)) {
        Ok(()) if on => MAX_GRO_SEGMENTS,
        Ok(()) => 1,
        Err(e) => {
            if on {
                debug!("UDP_GRO unsupported: {e}");
            }
            1
        }
    }
}

/// Raises a socket buffer: the privileged `*FORCE` option first (we usually run as root, and
/// it ignores `net.core.[rw]mem_max`), the plain one otherwise. Returns the usable size
/// obtained; warns once per process when it is below the request.
fn set_buffer(
    fd: BorrowedFd<'_>,
    force_opt: libc::c_int,
    opt: libc::c_int,
    want: usize,
    which: &str,
    warned: &AtomicBool,
) -> usize {
    // The kernel doubles the value (bookkeeping overhead) and reports the doubled size.
    let read = |fd| {
        sys::getsockopt_int(fd, libc::SOL_SOCKET, opt)
            .map(|v| v.max(0) as usize / 2)
            .unwrap_or(0)
    };
    if want == 0 {
        return read(fd);
    }
    let ask = want.min(i32::MAX as usize / 2) as libc::c_int;
    if sys::setsockopt_int(fd, libc::SOL_SOCKET, force_opt, ask).is_err() {
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, opt, ask);
    }
    let got = read(fd);
    if got < want && !warned.swap(true, Ordering::Relaxed) {
        warn!(
            wanted = want,
            obtained = got,
            "UDP {which} buffer is smaller than asked (raise net.core.{}mem_max or run with CAP_NET_ADMIN)",
            if opt == libc::SO_RCVBUF { "r" } else { "w" }
        );
    }
    got
}

// ===== the send path shared by both backends =====

/// One `sendmsg`: a datagram, or a GSO batch when `segment` is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Datagram<'a> {
    pub(crate) destination: SocketAddr,
    pub(crate) ecn: Option<u8>,
    pub(crate) src_ip: Option<IpAddr>,
    pub(crate) contents: &'a [u8],
    pub(crate) segment: Option<u16>,
}

impl Datagram<'_> {
    pub(crate) fn cmsgs(&self) -> sys::SendCmsgs {
        let dest_v4 = match self.destination.ip() {
            IpAddr::V4(_) => true,
            IpAddr::V6(ip) => ip.to_ipv4_mapped().is_some(),
        };
        sys::SendCmsgs {
            dest_v4,
            ecn: self.ecn,
            segment: self.segment,
            src_ip: self.src_ip,
        }
    }
}

/// The per-backend half of sending.
pub(crate) trait SendOne {
    /// Whether GSO may be used on this socket now.
    fn gso_enabled(&self) -> bool;
    /// Turns GSO off for good after a send failed with `err`.
    fn disable_gso(&mut self, err: &io::Error);
    /// Whether the socket is IPv6 (IPv4 destinations must then be mapped).
    fn is_v6(&self) -> bool;
    /// One send, waiting for buffer space if needed.
    async fn send_one(&mut self, d: &Datagram<'_>) -> io::Result<()>;
}

/// The one warning a socket logs when a GSO send fails and it falls back to plain sends.
fn warn_gso_disabled(local: Option<SocketAddr>, err: &io::Error) {
    warn!(
        local = ?local,
        "GSO send failed ({err}); segmentation offload disabled for this socket"
    );
}

/// Bytes per GSO send for `seg`-byte segments: whole segments, at most [`MAX_GSO_SEGMENTS`]
/// of them and at most [`MAX_UDP_PAYLOAD`] bytes.
fn gso_chunk_len(seg: usize) -> usize {
    (MAX_UDP_PAYLOAD / seg).clamp(1, MAX_GSO_SEGMENTS) * seg
}

fn is_gso_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL))
}

/// Sends a [`Transmit`] through a backend: splits it into GSO sends the kernel accepts, and
/// falls back to single datagrams when GSO is off or fails.
pub(crate) async fn send_transmit<B: SendOne>(b: &mut B, t: &Transmit<'_>) -> io::Result<()> {
    let destination = match t.destination {
        SocketAddr::V4(v4) if b.is_v6() => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        other => other,
    };
    let one = |contents, segment| Datagram {
        destination,
        ecn: t.ecn,
        src_ip: t.src_ip,
        contents,
        segment,
    };
    let seg = t
        .segment_size
        .filter(|&s| s > 0 && s < t.contents.len() && s <= usize::from(u16::MAX));
    let Some(seg) = seg else {
        return b.send_one(&one(t.contents, None)).await;
    };
    // Bound: contents.len() / gso_chunk_len(seg) + 1 sends; contents is at most what the
    // caller built (quinn-proto: max_gso_segments × MTU).
    for chunk in t.contents.chunks(gso_chunk_len(seg)) {
        if b.gso_enabled() && chunk.len() > seg {
            match b.send_one(&one(chunk, Some(seg as u16))).await {
                Ok(()) => continue,
                Err(e) if is_gso_error(&e) => b.disable_gso(&e),
                Err(e) => return Err(e),
            }
        }
        // Bound: at most MAX_GSO_SEGMENTS datagrams per chunk.
        for d in chunk.chunks(seg) {
            b.send_one(&one(d, None)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn udp_gso_chunking_respects_kernel_limits() {
        assert_eq!(gso_chunk_len(1200), 54 * 1200);
        assert_eq!(gso_chunk_len(100), 64 * 100);
        assert_eq!(gso_chunk_len(65_507), 65_507);
        assert_eq!(gso_chunk_len(70_000), 70_000);
    }

    #[test]
    fn udp_recv_meta_datagrams_split_by_stride() {
        let data = [0u8; 25];
        let meta = RecvMeta {
            len: 25,
            stride: 10,
            ..RecvMeta::default()
        };
        let lens: Vec<usize> = meta.datagrams(&data).map(<[u8]>::len).collect();
        assert_eq!(lens, [10, 10, 5]);
    }
}

#[cfg(test)]
mod tests;
