//! An upgraded request (the origin answered 101, usually a WebSocket): after the switch the
//! client's bytes and the tunnel stream's bytes move both ways at once, until either side ends,
//! and then both are closed (cloudflared's `stream.Pipe` rule: EOF on either side closes the
//! whole stream).
//!
//! Each direction is its own future, so a client that only sends (or a tunnel that only
//! answers) never waits on the other. The client socket is read through a duplicate of its
//! descriptor, which lets the read and the write be in flight together while the caller keeps
//! its `TcpStream`. Ending one direction ends the other without dropping an in-flight io_uring
//! op: socket ops are cancelled through monoio's `Canceller` (the op completes with
//! `ECANCELED` and returns its buffer), tunnel waits are raced against a [`Latch`].
//!
//! No idle timeout applies: WebSockets are long-lived by design, and their own pings keep
//! middleboxes open. A stopped tunnel connection (connector gone, edge closing) ends the
//! tunnel half, which ends the splice.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use monoio::buf::IoBufMut;
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller};
use monoio::net::TcpStream;
use tracing::debug;

use super::transport::{TunnelDown, TunnelStream, TunnelUp};
use crate::latch::Latch;

/// Client read size.
const READ_SIZE: usize = 32 * 1024;

/// How a splice ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed or failed.
    Client,
    /// The connector ended or reset its side.
    Tunnel,
}

/// Moves bytes both ways between `client` and `tunnel` until either ends. `pending` holds
/// client bytes already read past the request head; `first` the tunnel bytes that came with
/// the answer's head.
pub(crate) async fn splice<S: TunnelStream>(
    client: &mut TcpStream,
    pending: &mut BytesMut,
    first: Bytes,
    tunnel: S,
) {
    let reader = match duplicate(client) {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "cannot duplicate the client socket for an upgraded stream");
            let (mut up, _) = tunnel.split();
            up.abandon();
            return;
        }
    };
    let (mut up, mut down) = tunnel.split();
    let ended = Latch::<End>::new();
    let canceller = RefCell::new(Some(Canceller::new()));
    let handle = canceller
        .borrow()
        .as_ref()
        .map(Canceller::handle)
        .expect("set above");
    // The first direction to end records why and cancels the other's socket op.
    let end = |why: End| {
        ended.set(why);
        if let Some(c) = canceller.borrow_mut().take() {
            let _ = c.cancel();
        }
    };

    let upward = async {
        let mut reader = reader;
        let mut buf = std::mem::take(pending);
        // Bound: each turn forwards a read's bytes or ends on EOF, an error or a cancel.
        loop {
            if !buf.is_empty() {
                let data = buf.split().freeze();
                let sent = futures::select_biased! {
                    _ = ended.wait().fuse() => false,
                    ok = up.send(data).fuse() => ok,
                };
                if !sent {
                    end(End::Tunnel);
                    return;
                }
            }
            if ended.is_set() {
                return;
            }
            if buf.capacity() < READ_SIZE / 4 {
                buf.reserve(READ_SIZE);
            }
            let (len, cap) = (buf.len(), buf.capacity());
            let (r, slice) = reader
                .cancelable_read(buf.slice_mut(len..cap), handle.clone())
                .await;
            buf = slice.into_inner();
            match r {
                Ok(n) if n > 0 => {}
                _ => {
                    end(End::Client);
                    return;
                }
            }
        }
    };

    let downward = async {
        let mut next = Some(first).filter(|b| !b.is_empty());
        // Bound: each turn writes one tunnel chunk or ends.
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => {
                    let read = futures::select_biased! {
                        _ = ended.wait().fuse() => return,
                        r = down.read_chunk().fuse() => r,
                    };
                    match read {
                        Ok(Some(c)) => c,
                        Ok(None) => {
                            end(End::Tunnel);
                            return;
                        }
                        Err(e) => {
                            debug!(error = %e, "upgraded stream reset by the connector");
                            end(End::Tunnel);
                            return;
                        }
                    }
                }
            };
            if write_all(client, chunk, &handle).await.is_err() {
                end(End::Client);
                return;
            }
            down.delivered();
        }
    };

    futures::join!(upward, downward);
    let why = ended.wait().now_or_never().unwrap_or(End::Tunnel);
    debug!(?why, "upgraded stream ended");
    match why {
        // The client's FIN (or failure) ends the connector's side cleanly: it sees EOF and
        // closes its origin connection.
        End::Client => up.finish(),
        End::Tunnel => up.abandon(),
    }
    // Whatever is queued towards the client goes before the FIN.
    // SAFETY: `client` owns an open socket descriptor for the duration of the call.
    unsafe {
        libc::shutdown(client.as_raw_fd(), libc::SHUT_WR);
    }
}

/// A second `TcpStream` on the client's socket, for reads while the original writes.
fn duplicate(client: &TcpStream) -> io::Result<TcpStream> {
    // SAFETY: `client` owns a valid descriptor; `dup` returns a new one or -1.
    let fd = unsafe { libc::dup(client.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    TcpStream::from_std(std::net::TcpStream::from(owned))
}

/// Writes all of `data`; a cancel (the other direction ended) is an error.
async fn write_all(
    client: &mut TcpStream,
    mut data: Bytes,
    handle: &monoio::io::CancelHandle,
) -> io::Result<()> {
    // Bound: each turn writes at least one byte or fails.
    while !data.is_empty() {
        let (r, rest) = client.cancelable_write(data, handle.clone()).await;
        data = rest;
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let _ = data.split_to(n);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
