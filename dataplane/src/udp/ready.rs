//! Backend (b): monoio readiness on the socket, then quinn-udp's `recvmmsg` / `sendmsg`.
//!
//! The socket is non-blocking. A receive first tries `recvmmsg` (up to [`BATCH`] datagrams);
//! only on `EAGAIN` does it wait for readability through monoio (an io_uring `PollAdd`, or
//! epoll on the legacy driver), so a busy socket costs one syscall per batch. Sends work the
//! same way with writability. Readiness is awaited on a duplicate of the socket's fd that
//! monoio owns; the syscalls run on the original through quinn-udp.

use std::{
    fmt,
    io::{self, IoSliceMut},
    net::SocketAddr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use quinn_udp::{EcnCodepoint, UdpSocketState};
use socket2::Socket;
use tracing::warn;

use super::{
    Datagram, RECV_BUF_LEN, RecvBatch, RecvMeta, SendOne, Transmit, UdpCapabilities, UdpConfig,
    send_transmit,
};

/// Datagrams (or GRO super-datagrams) per `recvmmsg`: quinn-udp's own batch size (32).
pub const BATCH: usize = quinn_udp::BATCH_SIZE;

/// A UDP socket driven by readiness + quinn-udp. See the module docs.
pub struct ReadyUdp {
    socket: Socket,
    /// Duplicate fd, used only to await readiness.
    poll: monoio::net::udp::UdpSocket,
    state: UdpSocketState,
    gro: bool,
    /// BATCH buffers of RECV_BUF_LEN bytes.
    bufs: Box<[u8]>,
    qmetas: Box<[quinn_udp::RecvMeta; BATCH]>,
    metas: Vec<RecvMeta>,
    caps: UdpCapabilities,
    gso: bool,
    v6: bool,
}

impl fmt::Debug for ReadyUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyUdp")
            .field("local", &self.local_addr().ok())
            .field("caps", &self.caps)
            .field("gso", &self.gso)
            .finish()
    }
}

impl ReadyUdp {
    /// Creates, configures and binds a socket. Must be called inside a monoio runtime.
    pub fn bind(addr: SocketAddr, config: &UdpConfig) -> io::Result<Self> {
        let (socket, caps) = super::bind_socket(addr, config)?;
        Self::from_configured(socket, caps, config)
    }

    pub(crate) fn from_configured(
        socket: Socket,
        caps: UdpCapabilities,
        config: &UdpConfig,
    ) -> io::Result<Self> {
        let state = new_state(&socket, config.gro)?;
        let dup: OwnedFd = socket.as_fd().try_clone_to_owned()?;
        let poll = monoio::net::udp::UdpSocket::from_std(std::net::UdpSocket::from(dup))?;
        let v6 = socket.local_addr()?.is_ipv6();
        Ok(Self {
            socket,
            poll,
            state,
            gro: config.gro,
            bufs: vec![0u8; BATCH * RECV_BUF_LEN].into_boxed_slice(),
            qmetas: Box::new([quinn_udp::RecvMeta::default(); BATCH]),
            metas: Vec::with_capacity(BATCH),
            gso: caps.max_gso_segments > 1,
            caps,
            v6,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        super::socket_local_addr(&self.socket)
    }

    /// What this socket can do now.
    pub fn capabilities(&self) -> UdpCapabilities {
        self.caps
    }

    /// Waits for at least one datagram; returns up to [`BATCH`] buffers.
    ///
    /// Cancel-safe: only a readiness wait can be pending.
    pub async fn recv(&mut self) -> io::Result<RecvBatch<'_>> {
        self.metas.clear();
        // Unbounded in time (it waits for traffic), bounded per turn: one recvmmsg of at most
        // BATCH datagrams, at most one readiness wait.
        let n = loop {
            let mut chunks = self.bufs.chunks_exact_mut(RECV_BUF_LEN);
            let mut iovs: [IoSliceMut<'_>; BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            match self
                .state
                .recv((&self.socket).into(), &mut iovs, &mut self.qmetas[..])
            {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.poll.readable(false).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        // Bound: n <= BATCH.
        for q in &self.qmetas[..n] {
            self.metas.push(RecvMeta {
                addr: q.addr,
                len: q.len,
                stride: q.stride,
                ecn: q.ecn.map(|e| e as u8),
                dst_ip: q.dst_ip,
            });
        }
        Ok(RecvBatch::contiguous(&self.metas, &self.bufs))
    }

    /// Sends a datagram or a GSO batch. See [`super::UdpIo::send`].
    pub async fn send(&mut self, transmit: &Transmit<'_>) -> io::Result<()> {
        send_transmit(self, transmit).await
    }
}

/// quinn-udp's per-socket state. It turns UDP_GRO on unconditionally, so our choice is
/// re-applied after it.
fn new_state(socket: &Socket, gro: bool) -> io::Result<UdpSocketState> {
    let state = UdpSocketState::new(socket.into())?;
    super::apply_gro(socket.as_fd(), gro);
    Ok(state)
}

impl SendOne for ReadyUdp {
    fn gso_enabled(&self) -> bool {
        self.gso
    }

    fn disable_gso(&mut self, err: &io::Error) {
        if self.gso {
            super::warn_gso_disabled(self.local_addr().ok(), err);
            // quinn-udp answers the EINVAL by also dropping the IP_TOS cmsg for good (its
            // fallback for pre-3.13 kernels), which would lose ECN on IPv4. A fresh state
            // forgets that; we no longer ask it for GSO anyway.
            match new_state(&self.socket, self.gro) {
                Ok(state) => self.state = state,
                Err(e) => warn!("could not reset quinn-udp state: {e}"),
            }
        }
        self.gso = false;
        self.caps.max_gso_segments = 1;
    }

    fn is_v6(&self) -> bool {
        self.v6
    }

    async fn send_one(&mut self, d: &Datagram<'_>) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: d.destination,
            ecn: d.ecn.and_then(EcnCodepoint::from_bits),
            contents: d.contents,
            segment_size: d.segment.map(usize::from),
            src_ip: d.src_ip,
        };
        // Unbounded in time (it waits for socket-buffer space), bounded per turn: one sendmsg,
        // at most one writability wait.
        loop {
            match self.state.try_send((&self.socket).into(), &transmit) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.poll.writable(false).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for ReadyUdp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
