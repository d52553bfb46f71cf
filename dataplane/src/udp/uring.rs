//! Backend (a): `RecvMsg` / `SendMsg` on an io_uring owned by the socket.
//!
//! # Two ways to receive ([`UringRecv`])
//!
//! - **Multishot**: one `RecvMsgMulti` request stays armed and the kernel picks a buffer for
//!   each datagram from a ring of [`PBUF_COUNT`] provided buffers. A burst of arrivals costs one
//!   task-work run and no re-submission; buffers go back to the kernel by a plain store.
//! - **Slots**: [`RECV_SLOTS`] single-shot `RecvMsg` requests, each with its own buffer,
//!   re-submitted after each completion. Works on kernels before 5.19 (no provided-buffer
//!   rings); every arrival wakes every parked request, so it costs more per datagram.
//!
//! # Memory rules
//!
//! Every operation the kernel may still touch points into `Mem`, raw heap allocations that
//! are never moved, reused while in flight, or freed before the kernel is done with them:
//!
//! - Slots: each slot's buffer, `msghdr`, `iovec`, address and control buffer. A slot goes
//!   `Idle → InFlight` (SQE pushed) `→ Done` (CQE reaped) `→ Returned` (handed out in a
//!   [`RecvBatch`]) `→ Idle` (at the next `recv`). Nothing touches a slot between `InFlight`
//!   and `Done`.
//! - Multishot: the provided buffers and their ring. A buffer belongs to the kernel from the
//!   moment its ring entry is published until a completion names it; then to us until the
//!   next `recv`, which republishes it.
//! - One send slot (`msghdr`, `iovec`, destination, control buffer). The payload itself is the
//!   caller's slice, borrowed by the `send` future. If that future is dropped while the send is
//!   in flight, a guard cancels the operation and blocks until its completion arrives, so the
//!   kernel never reads the slice after the borrow ends.
//! - Dropping [`UringUdp`] cancels every in-flight operation and waits (at most
//!   [`DROP_WAIT`]) for all completions before freeing. If they do not all arrive, the memory
//!   is leaked rather than freed.
//!
//! Receives are never cancelled by dropping a future: they live in the ring across `recv`
//! calls, and a `recv` future only collects completions.
//!
//! # Waking
//!
//! The ring signals an eventfd on every completion; the socket awaits the eventfd through
//! monoio (io_uring `PollAdd` or epoll), so the worker sleeps in its runtime when idle.
//!
//! # Blocking socket
//!
//! The socket is put back in blocking mode: io_uring honours `O_NONBLOCK` by failing a receive
//! with `EAGAIN` instead of parking it until data arrives. The ring itself never blocks the
//! thread; only `io_uring_enter` without `GETEVENTS` is called on the data path.

use std::{
    alloc::Layout,
    collections::VecDeque,
    fmt, io,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use io_uring::{
    IoUring, cqueue, opcode,
    types::{Fd, RecvMsgOut, SubmitArgs, Timespec},
};
use socket2::{SockAddr, Socket};
use tracing::{error, warn};

use super::{
    Datagram, RECV_BUF_LEN, RecvBatch, RecvMeta, SendOne, Transmit, UdpCapabilities, UdpConfig,
    send_transmit,
    sys::{self, CMSG_BUF_LEN, CmsgBuf, NameBuf},
};
use crate::runtime::{EventFd, EventFdWaiter};

/// Single-shot receives kept in flight per socket ([`UringRecv::Slots`]).
///
/// 32 matches quinn-udp's `BATCH_SIZE` (one `recvmmsg`), so both backends can take in the same
/// burst per wake-up; at 64 KiB each that is 2 MiB of buffers per socket.
pub const RECV_SLOTS: usize = 32;

/// Provided buffers per socket ([`UringRecv::Multishot`]); a power of two, as the kernel
/// requires. 64 lets the kernel keep filling while a full batch of 32 is being processed;
/// at about 64 KiB each that is 4 MiB per socket.
pub const PBUF_COUNT: u16 = 64;

/// Room for the source address in a provided buffer (`sockaddr_in6` is 28 bytes).
const PBUF_NAME_LEN: usize = 32;

/// `struct io_uring_recvmsg_out`, which heads each multishot buffer.
const RECVMSG_OUT_LEN: usize = 16;

/// One provided buffer: header, address, control messages, then the payload.
const PBUF_LEN: usize = RECVMSG_OUT_LEN + PBUF_NAME_LEN + CMSG_BUF_LEN + RECV_BUF_LEN;

/// Buffer-group id of the provided buffers (one group per ring).
const BGID: u16 = 0;

/// Submission-queue entries. The most ever queued at once is one SQE per receive slot, one
/// send, and one cancel per in-flight operation at drop: 2 × 33 = 66 < 64 + 64 (the
/// completion queue is twice as large), and SQEs are submitted after each batch, so 64 never
/// fills.
const RING_ENTRIES: u32 = 64;

/// `user_data` of the send operation; receive slots use their index.
const SEND_TAG: u64 = u64::MAX;
/// `user_data` of cancel requests, whose completions carry nothing we need.
const CANCEL_TAG: u64 = u64::MAX - 1;
/// `user_data` of the multishot receive.
const MULTI_TAG: u64 = u64::MAX - 2;

/// Longest a drop (of the socket, or of a `send` future) blocks for cancelled operations.
/// Cancelling a parked socket operation completes at once; this bounds a kernel that
/// misbehaves.
pub const DROP_WAIT: Duration = Duration::from_secs(1);

/// How [`UringUdp`] receives. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UringRecv {
    /// One multishot `RecvMsgMulti` with a provided-buffer ring (Linux 6.0+); falls back to
    /// `Slots` where the kernel lacks it.
    #[default]
    Multishot,
    /// [`RECV_SLOTS`] single-shot `RecvMsg` requests.
    Slots,
}

/// Whether the running kernel is at least `major.minor` (from `/proc/sys/kernel/osrelease`,
/// e.g. "6.18.44-fc"); `false` if it cannot be read.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (Some(ma), Some(mi)) = (parts.next(), parts.next()) else {
        return false;
    };
    (ma, mi) >= (major, minor)
}

/// Creates the ring for one socket.
pub(crate) fn new_ring() -> io::Result<IoUring> {
    IoUring::builder().build(RING_ENTRIES)
}

/// Where a receive slot's kernel-visible state lives.
#[repr(C)]
struct RecvHdr {
    msg: libc::msghdr,
    iov: libc::iovec,
    name: NameBuf,
    ctrl: CmsgBuf,
}

/// Where the send slot's kernel-visible state lives.
#[repr(C)]
struct SendHdr {
    msg: libc::msghdr,
    iov: libc::iovec,
    name: SockAddr,
    ctrl: CmsgBuf,
}

/// `struct io_uring_buf`, one entry of a provided-buffer ring. Entry 0's `resv` doubles as the
/// ring's tail, which is why entries are only ever written field by field through raw
/// pointers.
#[repr(C)]
struct PbufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// Start of one received payload, handed out in a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct BufStart(*const u8);

impl BufStart {
    /// The `len` bytes at this start.
    ///
    /// # Safety
    /// They must lie in one completed receive buffer that is neither re-armed nor given back
    /// to the kernel while the slice lives.
    pub(crate) unsafe fn slice(&self, len: usize) -> &[u8] {
        // SAFETY: per the contract the range is inside a buffer the kernel finished writing
        // (allocated zeroed, so initialized) and nobody writes while it is borrowed.
        unsafe { std::slice::from_raw_parts(self.0, len) }
    }
}

/// Layout of the provided-buffer ring: the kernel wants it page aligned.
fn pring_layout() -> Layout {
    Layout::from_size_align(usize::from(PBUF_COUNT) * size_of::<PbufEntry>(), 4096)
        .expect("constant layout")
}

/// The memory in-flight operations point into: raw, so that no Rust reference (and no
/// `Box` uniqueness) covers bytes the kernel may be writing.
pub(crate) struct Mem {
    /// Slots mode: RECV_SLOTS headers and RECV_SLOTS × RECV_BUF_LEN buffer bytes.
    slots: Option<(NonNull<RecvHdr>, NonNull<u8>)>,
    /// Multishot mode: the page-aligned entry ring, PBUF_COUNT × PBUF_LEN buffer bytes, and
    /// the template header the request was built from.
    pbufs: Option<(NonNull<PbufEntry>, NonNull<u8>, NonNull<libc::msghdr>)>,
    send: NonNull<SendHdr>,
}

impl fmt::Debug for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mem")
            .field("slots", &self.slots.is_some())
            .field("pbufs", &self.pbufs.is_some())
            .finish()
    }
}

fn leak<T: ?Sized>(b: Box<T>) -> NonNull<T> {
    NonNull::from(Box::leak(b))
}

impl Mem {
    fn new(mode: UringRecv) -> Self {
        let send = leak(Box::new(SendHdr {
            msg: sys::zeroed_msghdr(),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            name: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
            ctrl: CmsgBuf::new(),
        }));
        match mode {
            UringRecv::Slots => {
                let hdrs: Box<[RecvHdr]> = (0..RECV_SLOTS)
                    .map(|_| RecvHdr {
                        msg: sys::zeroed_msghdr(),
                        iov: libc::iovec {
                            iov_base: std::ptr::null_mut(),
                            iov_len: 0,
                        },
                        name: NameBuf::new(),
                        ctrl: CmsgBuf::new(),
                    })
                    .collect();
                let bufs = vec![0u8; RECV_SLOTS * RECV_BUF_LEN].into_boxed_slice();
                Self {
                    slots: Some((leak(hdrs).cast(), leak(bufs).cast())),
                    pbufs: None,
                    send,
                }
            }
            UringRecv::Multishot => {
                // SAFETY: the layout has a non-zero size.
                let ring = unsafe { std::alloc::alloc_zeroed(pring_layout()) };
                let ring = NonNull::new(ring.cast::<PbufEntry>())
                    .unwrap_or_else(|| std::alloc::handle_alloc_error(pring_layout()));
                let bufs = vec![0u8; usize::from(PBUF_COUNT) * PBUF_LEN].into_boxed_slice();
                let mut template = Box::new(sys::zeroed_msghdr());
                template.msg_namelen = PBUF_NAME_LEN as libc::socklen_t;
                template.msg_controllen = CMSG_BUF_LEN as _;
                Self {
                    slots: None,
                    pbufs: Some((ring, leak(bufs).cast(), leak(template))),
                    send,
                }
            }
        }
    }

    fn slot_parts(&self, slot: usize) -> (*mut RecvHdr, *mut u8) {
        debug_assert!(slot < RECV_SLOTS);
        let (hdrs, bufs) = self.slots.expect("slots mode");
        (
            hdrs.as_ptr().wrapping_add(slot),
            bufs.as_ptr().wrapping_add(slot * RECV_BUF_LEN),
        )
    }

    /// Resets a slot's header for a new receive; returns the `msghdr` to submit.
    ///
    /// # Safety
    /// No operation may be in flight on the slot.
    unsafe fn prepare_recv(&self, slot: usize) -> *mut libc::msghdr {
        let (hdr, buf) = self.slot_parts(slot);
        // SAFETY: `hdr` lies inside the headers allocation (slot < RECV_SLOTS) and, per the
        // contract, the kernel does not reference it, so this is the only access.
        let h = unsafe { &mut *hdr };
        h.iov = libc::iovec {
            iov_base: buf.cast(),
            iov_len: RECV_BUF_LEN,
        };
        h.msg = sys::zeroed_msghdr();
        h.msg.msg_name = (&raw mut h.name).cast();
        h.msg.msg_namelen = size_of::<NameBuf>() as libc::socklen_t;
        h.msg.msg_iov = &raw mut h.iov;
        h.msg.msg_iovlen = 1;
        h.msg.msg_control = (&raw mut h.ctrl).cast();
        h.msg.msg_controllen = CMSG_BUF_LEN as _;
        &raw mut h.msg
    }

    /// The header of a completed single-shot receive, and where its payload starts.
    ///
    /// # Safety
    /// The slot's completion must have been reaped, and the slot not re-armed while the
    /// returned reference lives.
    unsafe fn completed_slot(&self, slot: usize) -> (&RecvHdr, BufStart) {
        let (hdr, buf) = self.slot_parts(slot);
        // SAFETY: in bounds; the kernel finished writing before posting the completion we
        // reaped (the CQ tail is read with acquire ordering), and per the contract nobody
        // writes it now.
        (unsafe { &*hdr }, BufStart(buf))
    }

    fn pbuf_ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid < PBUF_COUNT);
        let (_, bufs, _) = self.pbufs.expect("multishot mode");
        bufs.as_ptr().wrapping_add(usize::from(bid) * PBUF_LEN)
    }

    /// The first `len` bytes of a provided buffer the kernel handed back.
    ///
    /// # Safety
    /// A completion naming `bid` must have been reaped, and the buffer not given back to the
    /// kernel while the slice lives.
    unsafe fn completed_pbuf(&self, bid: u16, len: usize) -> &[u8] {
        // SAFETY: `bid < PBUF_COUNT` and `len <= PBUF_LEN` (the kernel never writes more than
        // the entry's length), so the range is inside the buffer; per the contract the kernel
        // is done with it and nobody writes it now.
        unsafe { std::slice::from_raw_parts(self.pbuf_ptr(bid), len.min(PBUF_LEN)) }
    }

    fn template(&self) -> *const libc::msghdr {
        self.pbufs.expect("multishot mode").2.as_ptr()
    }

    /// Writes ring entry `index` (mod PBUF_COUNT) to offer buffer `bid`. Not visible to the
    /// kernel until [`Mem::publish_pbufs`].
    ///
    /// # Safety
    /// `index` must be at or past the published tail and less than PBUF_COUNT entries past
    /// the kernel's head (true when `bid` is a buffer the kernel handed back: every other
    /// buffer occupies one of the other entries).
    unsafe fn offer_pbuf(&self, index: u16, bid: u16) {
        let (ring, _, _) = self.pbufs.expect("multishot mode");
        let entry = ring
            .as_ptr()
            .wrapping_add(usize::from(index & (PBUF_COUNT - 1)));
        // SAFETY: `entry` is inside the ring allocation; per the contract the kernel does not
        // read it until the tail moves past it. Only `addr`, `len` and `bid` are written, so
        // entry 0's `resv` (the tail) is left alone.
        unsafe {
            (&raw mut (*entry).addr).write(self.pbuf_ptr(bid) as u64);
            (&raw mut (*entry).len).write(PBUF_LEN as u32);
            (&raw mut (*entry).bid).write(bid);
        }
    }

    /// Makes entries up to `tail` visible to the kernel.
    fn publish_pbufs(&self, tail: u16) {
        let (ring, _, _) = self.pbufs.expect("multishot mode");
        // SAFETY: entry 0's `resv` is the ring tail (a u16 the kernel reads atomically); it is
        // inside the ring allocation, aligned to 2, and only ever accessed atomically here.
        let tail_ref = unsafe { AtomicU16::from_ptr(&raw mut (*ring.as_ptr()).resv) };
        // Release: the entries written before must be visible before the new tail.
        tail_ref.store(tail, Ordering::Release);
    }

    fn pring_addr(&self) -> u64 {
        self.pbufs.expect("multishot mode").0.as_ptr() as u64
    }

    /// Fills the send slot for one datagram; returns the `msghdr` to submit.
    ///
    /// # Safety
    /// No send may be in flight. The returned header points at `d.contents`, which must stay
    /// alive until the send's completion is reaped.
    unsafe fn prepare_send(&self, d: &Datagram<'_>) -> *const libc::msghdr {
        // SAFETY: the send slot is a live allocation and, per the contract, unreferenced by
        // the kernel.
        let h = unsafe { &mut *self.send.as_ptr() };
        h.name = SockAddr::from(d.destination);
        h.iov = libc::iovec {
            iov_base: d.contents.as_ptr().cast_mut().cast(),
            iov_len: d.contents.len(),
        };
        let ctrl_len = sys::encode_send_cmsgs(&mut h.ctrl, &d.cmsgs());
        h.msg = sys::zeroed_msghdr();
        h.msg.msg_name = h.name.as_ptr().cast_mut().cast();
        h.msg.msg_namelen = h.name.len();
        h.msg.msg_iov = &raw mut h.iov;
        h.msg.msg_iovlen = 1;
        if ctrl_len > 0 {
            h.msg.msg_control = (&raw mut h.ctrl).cast();
            h.msg.msg_controllen = ctrl_len as _;
        }
        &raw const h.msg
    }

    /// Frees the memory.
    ///
    /// # Safety
    /// No operation may be in flight, and `self` must not be used afterwards.
    unsafe fn free(&mut self) {
        // SAFETY: every pointer came from `Box::leak` (or `alloc_zeroed` with `pring_layout`)
        // of exactly these types and lengths in `new`, and per the contract nothing references
        // them any more.
        unsafe {
            if let Some((hdrs, bufs)) = self.slots.take() {
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    hdrs.as_ptr(),
                    RECV_SLOTS,
                )));
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    bufs.as_ptr(),
                    RECV_SLOTS * RECV_BUF_LEN,
                )));
            }
            if let Some((ring, bufs, template)) = self.pbufs.take() {
                std::alloc::dealloc(ring.as_ptr().cast(), pring_layout());
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    bufs.as_ptr(),
                    usize::from(PBUF_COUNT) * PBUF_LEN,
                )));
                drop(Box::from_raw(template.as_ptr()));
            }
            drop(Box::from_raw(self.send.as_ptr()));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpState {
    Idle,
    InFlight,
    /// Completed with this result (bytes, or a negated errno).
    Done(i32),
    /// Handed out in the current batch.
    Returned,
}

/// Receive bookkeeping per mode.
#[derive(Debug)]
enum Recv {
    Slots {
        states: Box<[OpState; RECV_SLOTS]>,
        /// Completed slots in completion order.
        done: VecDeque<u16>,
        /// Slots in the current batch.
        batch: Vec<u16>,
    },
    Multishot {
        armed: bool,
        /// (buffer id, completion result) in completion order.
        done: VecDeque<(u16, i32)>,
        /// Buffers in the current batch.
        batch: Vec<u16>,
        /// Our copy of the provided-buffer ring tail.
        tail: u16,
        /// A receive error to report once the queued datagrams are handed out.
        error: Option<i32>,
    },
}

/// A UDP socket driven by its own io_uring. See the module docs.
pub struct UringUdp {
    ring: IoUring,
    socket: Socket,
    wake: EventFd,
    waiter: EventFdWaiter,
    mem: Mem,
    recv: Recv,
    batch_metas: Vec<RecvMeta>,
    batch_starts: Vec<BufStart>,
    send_state: OpState,
    caps: UdpCapabilities,
    gso: bool,
    v6: bool,
    truncated: u64,
    /// Set when some operation could not be confirmed finished; the memory is then leaked.
    poisoned: bool,
}

impl fmt::Debug for UringUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringUdp")
            .field("local", &self.local_addr().ok())
            .field("mode", &self.mode())
            .field("caps", &self.caps)
            .field("gso", &self.gso)
            .finish()
    }
}

impl UringUdp {
    /// Creates, configures and binds a socket receiving the default way. Must be called
    /// inside a monoio runtime.
    pub fn bind(addr: SocketAddr, config: &UdpConfig) -> io::Result<Self> {
        Self::bind_with(addr, config, UringRecv::default())
    }

    /// Like [`UringUdp::bind`], choosing how to receive.
    pub fn bind_with(addr: SocketAddr, config: &UdpConfig, mode: UringRecv) -> io::Result<Self> {
        let (socket, caps) = super::bind_socket(addr, config)?;
        Self::from_configured(socket, caps, new_ring()?, mode)
    }

    pub(crate) fn from_configured(
        socket: Socket,
        caps: UdpCapabilities,
        ring: IoUring,
        mode: UringRecv,
    ) -> io::Result<Self> {
        // Provided-buffer rings arrived in 5.19 but multishot `recvmsg` only in 6.0; on 5.19 the
        // ring would register and every receive then fail with EINVAL.
        let mode = match mode {
            UringRecv::Multishot if !kernel_at_least(6, 0) => UringRecv::Slots,
            m => m,
        };
        socket.set_nonblocking(false)?;
        let v6 = socket.local_addr()?.is_ipv6();
        let wake = EventFd::new()?;
        ring.submitter().register_eventfd(wake.as_raw_fd())?;
        let waiter = wake.waiter()?;

        let mut mem = Mem::new(mode);
        let recv = match mode {
            UringRecv::Multishot => {
                // SAFETY: the ring memory is page aligned, PBUF_COUNT entries long, and stays
                // allocated until `Drop` has seen the multishot request finish (then it is
                // unregistered before being freed).
                let registered = unsafe {
                    ring.submitter().register_buf_ring_with_flags(
                        mem.pring_addr(),
                        PBUF_COUNT,
                        BGID,
                        0,
                    )
                };
                match registered {
                    Ok(()) => {
                        // Bound: PBUF_COUNT buffers.
                        for bid in 0..PBUF_COUNT {
                            // SAFETY: nothing is published yet; entry `bid` is free.
                            unsafe { mem.offer_pbuf(bid, bid) };
                        }
                        mem.publish_pbufs(PBUF_COUNT);
                        Recv::Multishot {
                            armed: false,
                            done: VecDeque::with_capacity(usize::from(PBUF_COUNT)),
                            batch: Vec::with_capacity(usize::from(PBUF_COUNT)),
                            tail: PBUF_COUNT,
                            error: None,
                        }
                    }
                    Err(e) => {
                        warn!(
                            "no provided-buffer rings ({e}); UDP receives fall back to single-shot"
                        );
                        // SAFETY: nothing was ever submitted.
                        unsafe { mem.free() };
                        mem = Mem::new(UringRecv::Slots);
                        Self::slots_state()
                    }
                }
            }
            UringRecv::Slots => Self::slots_state(),
        };
        Ok(Self {
            ring,
            socket,
            wake,
            waiter,
            mem,
            recv,
            batch_metas: Vec::with_capacity(usize::from(PBUF_COUNT)),
            batch_starts: Vec::with_capacity(usize::from(PBUF_COUNT)),
            send_state: OpState::Idle,
            gso: caps.max_gso_segments > 1,
            caps,
            v6,
            truncated: 0,
            poisoned: false,
        })
    }

    fn slots_state() -> Recv {
        Recv::Slots {
            states: Box::new([OpState::Idle; RECV_SLOTS]),
            done: VecDeque::with_capacity(RECV_SLOTS),
            batch: Vec::with_capacity(RECV_SLOTS),
        }
    }

    /// How this socket receives (multishot falls back to slots on older kernels).
    pub fn mode(&self) -> UringRecv {
        match self.recv {
            Recv::Slots { .. } => UringRecv::Slots,
            Recv::Multishot { .. } => UringRecv::Multishot,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        super::socket_local_addr(&self.socket)
    }

    /// What this socket can do now.
    pub fn capabilities(&self) -> UdpCapabilities {
        self.caps
    }

    /// Waits for at least one datagram and returns everything received so far (up to
    /// [`PBUF_COUNT`] or [`RECV_SLOTS`] buffers). The previous batch's buffers go back to the
    /// kernel first.
    ///
    /// Cancel-safe: the receives stay in the ring; dropping this future only stops collecting.
    pub async fn recv(&mut self) -> io::Result<RecvBatch<'_>> {
        // The previous batch is no longer borrowed (this call holds `&mut self`).
        self.release_batch();
        // Unbounded in time (it waits for traffic), bounded per turn: one re-arm (at most
        // RECV_SLOTS SQEs), one pass over the completion queue, at most one eventfd wait.
        loop {
            self.arm()?;
            self.reap();
            if self.collect()? > 0 {
                break;
            }
            self.wait().await?;
        }
        Ok(RecvBatch::uring(&self.batch_metas, &self.batch_starts))
    }

    /// Sends a datagram or a GSO batch. See [`super::UdpIo::send`].
    pub async fn send(&mut self, transmit: &Transmit<'_>) -> io::Result<()> {
        send_transmit(self, transmit).await
    }

    /// Gives the previous batch's buffers back (slots: idle for re-arming; multishot:
    /// republished to the kernel).
    fn release_batch(&mut self) {
        self.batch_metas.clear();
        self.batch_starts.clear();
        match &mut self.recv {
            Recv::Slots { states, batch, .. } => {
                // Bound: at most RECV_SLOTS entries.
                for slot in batch.drain(..) {
                    states[usize::from(slot)] = OpState::Idle;
                }
            }
            Recv::Multishot { batch, tail, .. } => {
                if batch.is_empty() {
                    return;
                }
                // Bound: at most PBUF_COUNT entries.
                for bid in batch.drain(..) {
                    // SAFETY: the kernel handed `bid` back and nothing borrows it any more.
                    unsafe { self.mem.offer_pbuf(*tail, bid) };
                    *tail = tail.wrapping_add(1);
                }
                self.mem.publish_pbufs(*tail);
            }
        }
    }

    /// Puts receives in flight: every idle slot, or the multishot request if it ended.
    fn arm(&mut self) -> io::Result<()> {
        let fd = Fd(self.socket.as_raw_fd());
        let mut pushed = 0;
        {
            let mut sq = self.ring.submission();
            match &mut self.recv {
                Recv::Slots { states, .. } => {
                    // Bound: RECV_SLOTS slots.
                    for (slot, state) in states.iter_mut().enumerate() {
                        if *state != OpState::Idle {
                            continue;
                        }
                        // SAFETY: the slot is Idle, so no operation references it.
                        let msg = unsafe { self.mem.prepare_recv(slot) };
                        let sqe = opcode::RecvMsg::new(fd, msg).build().user_data(slot as u64);
                        // SAFETY: the SQE points at this slot's header, iovec, buffer, address
                        // and control buffer in `mem`, which stays allocated until every
                        // completion has been reaped (see `Drop`); the slot is marked InFlight
                        // so nothing touches it until its completion is reaped.
                        if unsafe { sq.push(&sqe) }.is_err() {
                            break;
                        }
                        *state = OpState::InFlight;
                        pushed += 1;
                    }
                }
                Recv::Multishot { armed, .. } => {
                    if !*armed {
                        let sqe = opcode::RecvMsgMulti::new(fd, self.mem.template(), BGID)
                            .build()
                            .user_data(MULTI_TAG);
                        // SAFETY: the SQE points at the template header (read at submission)
                        // and selects buffers from the registered ring; both stay allocated
                        // until `Drop` has seen the request end.
                        if unsafe { sq.push(&sqe) }.is_ok() {
                            *armed = true;
                            pushed += 1;
                        }
                    }
                }
            }
        }
        if pushed > 0 {
            self.submit()?;
        }
        Ok(())
    }

    /// Submits queued SQEs without waiting.
    fn submit(&mut self) -> io::Result<()> {
        // Bound: 3 tries; only EINTR (a signal during io_uring_enter) is retried.
        for _ in 0..3 {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The kernel is short of memory or the completion queue is overflowing: the
                // SQEs stay queued and `wait` submits them again before sleeping.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Records every completion now in the queue.
    fn reap(&mut self) -> usize {
        let mut n = 0;
        // Bound: the completions present now, at most the CQ size (2 × RING_ENTRIES).
        for cqe in self.ring.completion() {
            n += 1;
            let res = cqe.result();
            match (cqe.user_data(), &mut self.recv) {
                (SEND_TAG, _) => self.send_state = OpState::Done(res),
                (CANCEL_TAG, _) => {}
                (
                    MULTI_TAG,
                    Recv::Multishot {
                        armed, done, error, ..
                    },
                ) => {
                    if !cqueue::more(cqe.flags()) {
                        // Ended (cancelled, out of buffers, or an error): re-armed next turn.
                        *armed = false;
                    }
                    match cqueue::buffer_select(cqe.flags()) {
                        Some(bid) if res >= 0 => done.push_back((bid, res)),
                        // Every buffer is out; they come back with the next `recv`.
                        _ if res == -libc::ENOBUFS || res == -libc::ECANCELED => {}
                        _ if res < 0 => *error = Some(-res),
                        _ => {}
                    }
                }
                (slot, Recv::Slots { states, done, .. }) if (slot as usize) < RECV_SLOTS => {
                    states[slot as usize] = OpState::Done(res);
                    done.push_back(slot as u16);
                }
                _ => {}
            }
        }
        n
    }

    /// Moves completed receives into the batch; returns how many.
    fn collect(&mut self) -> io::Result<usize> {
        match &mut self.recv {
            Recv::Slots {
                states,
                done,
                batch,
            } => {
                // Bound: `done` holds at most RECV_SLOTS entries.
                while let Some(&slot) = done.front() {
                    let i = usize::from(slot);
                    let OpState::Done(res) = states[i] else {
                        done.pop_front();
                        continue;
                    };
                    if res < 0 {
                        if !batch.is_empty() {
                            // Hand out what we have; the error comes with the next call.
                            break;
                        }
                        done.pop_front();
                        states[i] = OpState::Idle;
                        match -res {
                            // Spurious: re-armed on the next turn.
                            libc::EAGAIN | libc::EINTR => continue,
                            errno => return Err(io::Error::from_raw_os_error(errno)),
                        }
                    }
                    done.pop_front();
                    // SAFETY: the slot's completion was reaped; it stays Returned (not
                    // re-armed) until the next `recv` call, and the batch borrows `self`
                    // until then.
                    let (hdr, start) = unsafe { self.mem.completed_slot(i) };
                    let len = res as usize;
                    let truncated = hdr.msg.msg_flags & libc::MSG_TRUNC != 0;
                    let addr = sys::decode_sockaddr(&hdr.name.0, hdr.msg.msg_namelen as usize);
                    // `msg_controllen` is `size_t` on glibc, `socklen_t` on musl.
                    let ctrl_len = CMSG_BUF_LEN.min(hdr.msg.msg_controllen as _);
                    let meta = addr
                        .filter(|_| !truncated)
                        .map(|addr| meta_from(addr, len, &hdr.ctrl.0[..ctrl_len]));
                    match meta {
                        Some(meta) => {
                            self.batch_metas.push(meta);
                            self.batch_starts.push(start);
                            batch.push(slot);
                            states[i] = OpState::Returned;
                        }
                        None => {
                            note_dropped(&mut self.truncated, truncated, len);
                            states[i] = OpState::Idle;
                        }
                    }
                }
                Ok(batch.len())
            }
            Recv::Multishot {
                done,
                batch,
                tail,
                error,
                ..
            } => {
                let mut gave_back = false;
                // Bound: `done` holds at most PBUF_COUNT entries (one per buffer).
                while let Some((bid, res)) = done.pop_front() {
                    // SAFETY: the kernel handed `bid` back with this completion; it is given
                    // back (republished) only at the next `recv`, or right below when dropped.
                    let buf = unsafe { self.mem.completed_pbuf(bid, res as usize) };
                    // SAFETY: the template is a live, initialized header we never write after
                    // creation.
                    let template = unsafe { &*self.mem.template() };
                    let meta = RecvMsgOut::parse(buf, template).ok().and_then(|out| {
                        let truncated = out.is_payload_truncated();
                        let payload = out.payload_data();
                        let addr = sys::decode_sockaddr(out.name_data(), out.name_data().len());
                        let meta = addr
                            .filter(|_| !truncated)
                            .map(|addr| meta_from(addr, payload.len(), out.control_data()));
                        if meta.is_none() {
                            note_dropped(&mut self.truncated, truncated, payload.len());
                        }
                        meta.map(|m| (m, BufStart(payload.as_ptr())))
                    });
                    match meta {
                        Some((meta, start)) => {
                            self.batch_metas.push(meta);
                            self.batch_starts.push(start);
                            batch.push(bid);
                        }
                        None => {
                            // SAFETY: the kernel handed `bid` back and nothing borrows it.
                            unsafe { self.mem.offer_pbuf(*tail, bid) };
                            *tail = tail.wrapping_add(1);
                            gave_back = true;
                        }
                    }
                }
                if gave_back {
                    self.mem.publish_pbufs(*tail);
                }
                if batch.is_empty()
                    && let Some(errno) = error.take()
                {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                Ok(batch.len())
            }
        }
    }

    /// Sleeps in monoio until the ring posts a completion.
    async fn wait(&mut self) -> io::Result<()> {
        if !self.ring.submission().is_empty() {
            self.submit()?;
        }
        // Clear the count left by completions already reaped, then look once more: a
        // completion posted after the drain signals the eventfd again, and one posted before
        // it is visible here, so no wake-up is lost and no stale count wakes us for nothing.
        self.wake.drain();
        if !self.ring.completion().is_empty() {
            return Ok(());
        }
        self.waiter.readable().await
    }

    fn in_flight(&self) -> usize {
        let recv = match &self.recv {
            Recv::Slots { states, .. } => {
                states.iter().filter(|s| **s == OpState::InFlight).count()
            }
            Recv::Multishot { armed, .. } => usize::from(*armed),
        };
        recv + usize::from(self.send_state == OpState::InFlight)
    }

    /// Cancels the given operations and blocks (at most [`DROP_WAIT`]) until `finished`
    /// holds. Returns whether it does.
    fn cancel_and_wait(&mut self, targets: &[u64], finished: fn(&Self) -> bool) -> bool {
        {
            let mut sq = self.ring.submission();
            // Bound: at most RECV_SLOTS + 1 targets.
            for &t in targets {
                let sqe = opcode::AsyncCancel::new(t).build().user_data(CANCEL_TAG);
                // SAFETY: a cancel request carries no pointers.
                if unsafe { sq.push(&sqe) }.is_err() {
                    break;
                }
            }
        }
        let deadline = Instant::now() + DROP_WAIT;
        let tick = Timespec::new().nsec(50_000_000);
        // Bound: stops once `finished` or after DROP_WAIT; each turn waits up to 50 ms for one
        // completion (about 20 turns, plus one per completion reaped).
        while !finished(self) && Instant::now() < deadline {
            let args = SubmitArgs::new().timespec(&tick);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => {
                    error!("io_uring wait failed while cancelling UDP operations: {e}");
                    break;
                }
            }
            self.reap();
        }
        finished(self)
    }
}

/// The [`RecvMeta`] of one received buffer.
fn meta_from(addr: SocketAddr, len: usize, ctrl: &[u8]) -> RecvMeta {
    let c = sys::decode_recv_cmsgs(ctrl);
    RecvMeta {
        addr,
        len,
        stride: c.stride.unwrap_or(len),
        ecn: c.ecn,
        dst_ip: c.dst_ip,
    }
}

/// Counts a datagram dropped as truncated (or with an unknown address family); warns once.
fn note_dropped(count: &mut u64, truncated: bool, len: usize) {
    if truncated {
        *count += 1;
        if *count == 1 {
            warn!(len, "UDP datagram larger than the receive buffer dropped");
        }
    }
}

impl SendOne for UringUdp {
    fn gso_enabled(&self) -> bool {
        self.gso
    }

    fn disable_gso(&mut self, err: &io::Error) {
        if self.gso {
            super::warn_gso_disabled(self.local_addr().ok(), err);
        }
        self.gso = false;
        self.caps.max_gso_segments = 1;
    }

    fn is_v6(&self) -> bool {
        self.v6
    }

    async fn send_one(&mut self, d: &Datagram<'_>) -> io::Result<()> {
        // A send whose future was leaked (mem::forget) may still hold the send slot; reuse it
        // only once that completes. Unbounded in time, one CQ pass and one wait per turn.
        while self.send_state == OpState::InFlight {
            self.reap();
            if self.send_state == OpState::InFlight {
                self.wait().await?;
            }
        }
        self.send_state = OpState::Idle;

        let fd = Fd(self.socket.as_raw_fd());
        let guard = SendGuard { udp: self };
        // SAFETY: the send slot is idle (checked above).
        let msg = unsafe { guard.udp.mem.prepare_send(d) };
        let sqe = opcode::SendMsg::new(fd, msg).build().user_data(SEND_TAG);
        // SAFETY: the SQE points at the send slot in `mem` (alive until every completion is
        // reaped, see `Drop`) and at `d.contents`, which this future borrows. If the future is
        // dropped before the completion is reaped, `SendGuard::drop` cancels the operation and
        // blocks until its completion, so the kernel never reads `contents` after the borrow.
        unsafe { guard.udp.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        guard.udp.send_state = OpState::InFlight;
        guard.udp.submit()?;
        // A UDP send usually completes inline during the submit; otherwise (socket buffer
        // full) the kernel parks it until there is room. One CQ pass and one wait per turn.
        loop {
            guard.udp.reap();
            if let OpState::Done(res) = guard.udp.send_state {
                guard.udp.send_state = OpState::Idle;
                return if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(())
                };
            }
            guard.udp.wait().await?;
        }
    }
}

/// Keeps a send's borrowed payload safe if the `send` future is dropped mid-flight.
struct SendGuard<'a> {
    udp: &'a mut UringUdp,
}

impl Drop for SendGuard<'_> {
    fn drop(&mut self) {
        if self.udp.send_state == OpState::InFlight
            && !self
                .udp
                .cancel_and_wait(&[SEND_TAG], |u| u.send_state != OpState::InFlight)
        {
            // Cannot happen with a working kernel: cancelling a parked send completes at once.
            error!("a cancelled UDP send did not complete; leaking the socket's buffers");
            self.udp.poisoned = true;
        }
    }
}

impl Drop for UringUdp {
    fn drop(&mut self) {
        let mut targets: Vec<u64> = match &self.recv {
            Recv::Slots { states, .. } => (0..RECV_SLOTS)
                .filter(|&i| states[i] == OpState::InFlight)
                .map(|i| i as u64)
                .collect(),
            Recv::Multishot { armed, .. } => {
                if *armed {
                    vec![MULTI_TAG]
                } else {
                    Vec::new()
                }
            }
        };
        if self.send_state == OpState::InFlight {
            targets.push(SEND_TAG);
        }
        let finished = targets.is_empty() || self.cancel_and_wait(&targets, |u| u.in_flight() == 0);
        if finished && !self.poisoned {
            if matches!(self.recv, Recv::Multishot { .. }) {
                // Nothing can select from the group any more; unregister before freeing.
                let _ = self.ring.submitter().unregister_buf_ring(BGID);
            }
            // SAFETY: every operation has completed and been reaped, and `mem` is not used
            // after this.
            unsafe { self.mem.free() };
        } else {
            error!(
                in_flight = self.in_flight(),
                "UDP io_uring operations still in flight at drop; leaking their buffers"
            );
        }
    }
}

impl AsFd for UringUdp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
