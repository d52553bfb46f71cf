//! Per-worker mailboxes: a bounded crossbeam channel plus an eventfd each, the sending
//! [`WorkerHandle`] any thread may hold, and the receiving [`Inbox`] a worker awaits.

use std::{
    fmt, io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering, fence},
    },
};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::eventfd::{EventFd, EventFdWaiter};

/// Why a message could not be handed to a worker; the message comes back.
pub enum SendError<M> {
    /// The target's inbox is full (it is not keeping up); the caller decides whether to drop.
    Full(M),
    /// The target worker has exited.
    Disconnected(M),
    /// There is no worker with that index.
    NoSuchWorker(M),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Disconnected(m) | SendError::NoSuchWorker(m) => m,
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "Full(..)",
            SendError::Disconnected(_) => "Disconnected(..)",
            SendError::NoSuchWorker(_) => "NoSuchWorker(..)",
        })
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "worker inbox is full",
            SendError::Disconnected(_) => "worker has exited",
            SendError::NoSuchWorker(_) => "no worker with that index",
        })
    }
}

impl<M> std::error::Error for SendError<M> {}

/// One worker's mailbox, shared by every [`WorkerHandle`].
struct Mailbox<M> {
    tx: Sender<M>,
    wake: EventFd,
    /// Set by the owner just before it sleeps on `wake`; cleared by the sender that wakes it.
    sleeping: AtomicBool,
}

/// Sends messages to any worker. Cheap to clone; usable from any thread.
pub struct WorkerHandle<M> {
    mailboxes: Arc<[Mailbox<M>]>,
}

impl<M> Clone for WorkerHandle<M> {
    fn clone(&self) -> Self {
        Self {
            mailboxes: Arc::clone(&self.mailboxes),
        }
    }
}

impl<M> fmt::Debug for WorkerHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("workers", &self.mailboxes.len())
            .finish()
    }
}

impl<M> WorkerHandle<M> {
    /// Worker `index`'s inbox over its receiving channel `rx`. Must be called inside that
    /// worker's monoio runtime (the inbox waits on its eventfd through the runtime).
    pub(super) fn inbox(&self, index: usize, rx: Receiver<M>) -> io::Result<Inbox<M>> {
        let waiter = self.mailboxes[index].wake.waiter()?;
        Ok(Inbox {
            index,
            rx,
            mailboxes: Arc::clone(&self.mailboxes),
            waiter,
        })
    }
}

impl<M: Send> WorkerHandle<M> {
    /// Number of workers.
    pub fn count(&self) -> usize {
        self.mailboxes.len()
    }

    /// Hands `msg` to worker `to` and wakes it if it sleeps. Never blocks.
    pub fn send(&self, to: usize, msg: M) -> Result<(), SendError<M>> {
        let Some(mailbox) = self.mailboxes.get(to) else {
            return Err(SendError::NoSuchWorker(msg));
        };
        mailbox.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(m) => SendError::Full(m),
            TrySendError::Disconnected(m) => SendError::Disconnected(m),
        })?;
        // Dekker-style handshake with `Inbox::recv`: the message is published before we read
        // `sleeping`, and the receiver publishes `sleeping` before it re-checks the channel. The
        // two SeqCst fences guarantee at least one side sees the other's write, so a message is
        // never left behind a sleeping worker.
        fence(Ordering::SeqCst);
        if mailbox.sleeping.load(Ordering::Relaxed)
            && mailbox.sleeping.swap(false, Ordering::AcqRel)
        {
            mailbox.wake.notify();
        }
        Ok(())
    }
}

/// An extra set of per-worker mailboxes, beside the one [`Workers`] builds for its own message
/// type. A worker pool that needs two kinds of traffic (e.g. QUIC datagrams forwarded between
/// workers, and accepted TCP connections handed to the worker that owns a tunnel connection)
/// gets one typed channel per kind instead of one enum that every consumer must match.
pub struct Mailboxes<M> {
    handle: WorkerHandle<M>,
    receivers: Vec<Option<Receiver<M>>>,
}

impl<M> fmt::Debug for Mailboxes<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailboxes")
            .field("workers", &self.receivers.len())
            .finish()
    }
}

impl<M: Send> Mailboxes<M> {
    /// `count` mailboxes of `capacity` messages each.
    pub fn new(count: usize, capacity: usize) -> io::Result<Self> {
        let mut receivers = Vec::with_capacity(count);
        let mut mailboxes = Vec::with_capacity(count);
        // Bound: `count` workers.
        for _ in 0..count {
            let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
            receivers.push(Some(rx));
            mailboxes.push(Mailbox {
                tx,
                wake: EventFd::new()?,
                sleeping: AtomicBool::new(false),
            });
        }
        Ok(Self {
            handle: WorkerHandle {
                mailboxes: mailboxes.into(),
            },
            receivers,
        })
    }

    /// A sending handle (usable from any thread).
    pub fn handle(&self) -> WorkerHandle<M> {
        self.handle.clone()
    }

    /// Takes worker `index`'s receiving end. Call it once per index, inside that worker's monoio
    /// runtime (the inbox waits on an eventfd through the runtime). `None` if already taken.
    pub(crate) fn take_inbox(&mut self, index: usize) -> Option<io::Result<Inbox<M>>> {
        let rx = self.receivers.get_mut(index)?.take()?;
        Some(self.handle.inbox(index, rx))
    }

    /// The sending handle and every receiving channel, for a pool that moves each channel to
    /// its worker's thread and builds the [`Inbox`] there ([`WorkerHandle::inbox`]).
    pub(super) fn into_parts(self) -> (WorkerHandle<M>, Vec<Receiver<M>>) {
        // Nothing has taken an inbox yet: the pool calls this right after `new`.
        (self.handle, self.receivers.into_iter().flatten().collect())
    }
}

/// A worker's receiving end.
pub struct Inbox<M> {
    index: usize,
    rx: Receiver<M>,
    mailboxes: Arc<[Mailbox<M>]>,
    waiter: EventFdWaiter,
}

impl<M> fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("index", &self.index)
            .field("pending", &self.rx.len())
            .finish()
    }
}

impl<M: Send> Inbox<M> {
    /// Takes a message if one is waiting.
    pub fn try_recv(&self) -> Option<M> {
        self.rx.try_recv().ok()
    }

    /// Number of messages waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Waits for the next message, sleeping in the runtime (not spinning) while there is none.
    ///
    /// Cancel-safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> io::Result<M> {
        let mailbox = &self.mailboxes[self.index];
        // Unbounded in time by design (it waits for a message), but each turn does bounded
        // work: one channel check, one eventfd wait, one eventfd read. A turn that finds nothing
        // after a wake-up is a stale count from an earlier notify, which the read clears, so
        // spurious turns cannot repeat without a new notify.
        loop {
            match self.rx.try_recv() {
                Ok(m) => return Ok(m),
                // Our own handle keeps a sender alive, so this cannot happen while `self` lives.
                Err(TryRecvError::Disconnected) => {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "inbox closed"));
                }
                Err(TryRecvError::Empty) => {}
            }
            mailbox.sleeping.store(true, Ordering::Relaxed);
            // Pairs with the fence in `WorkerHandle::send`.
            fence(Ordering::SeqCst);
            if let Ok(m) = self.rx.try_recv() {
                mailbox.sleeping.store(false, Ordering::Relaxed);
                return Ok(m);
            }
            self.waiter.readable().await?;
            mailbox.wake.drain();
        }
    }
}
