//! HTTP/2 streams (the `h2` crate) as the dataplane uses them: sending `Bytes` under the
//! peer's flow control ([`send_all`]), and `futures` [`AsyncRead`] / [`AsyncWrite`] over one
//! stream's halves ([`H2Reader`], [`H2Writer`]) for capnp-rpc on the HTTP/2 transport's
//! control stream.
//!
//! Shared by the connector's `http2Origin` client and both ends of the HTTP/2 tunnel
//! transport. `h2` runs on the worker's own thread (its connection future is a local monoio
//! task), over tokio's I/O traits on the socket in monoio's poll-io mode ([`crate::pollio`]).
//!
//! Flow control: a receiver releases credit only for bytes it has handed on, and a sender
//! sends only what the peer's window admits, so a slow side holds back the other instead of
//! filling memory.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::io::{AsyncRead, AsyncWrite};
use h2::{Reason, RecvStream, SendStream};

/// Sends `data` as the peer's window admits it (not the end of the stream).
pub async fn send_all(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    // Bound: every round sends at least one byte, or waits for capacity, which arrives or
    // ends in an error (the stream reset, the connection gone).
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match stream.capacity() {
            0 => match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(r) => r?,
                None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
            },
            n => n,
        };
        if granted == 0 {
            continue;
        }
        let piece = data.split_to(granted.min(data.len()));
        stream.send_data(piece, false)?;
    }
    Ok(())
}

/// An `h2` error as `io::Error`: the I/O error itself when it is one, else the `h2::Error`
/// kept whole (its reason stays readable through `get_ref`).
pub fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 connection I/O failed"))
    } else {
        io::Error::other(e)
    }
}

/// The `h2::Error` inside an `io::Error` made by [`io_error`], if it holds one.
pub fn h2_error(e: &io::Error) -> Option<&h2::Error> {
    e.get_ref()?.downcast_ref::<h2::Error>()
}

/// Reads an HTTP/2 stream's DATA as an [`AsyncRead`]; credit is released as bytes are read.
#[derive(Debug)]
pub struct H2Reader {
    recv: RecvStream,
    /// The unread rest of the last DATA frame.
    pending: Bytes,
}

impl H2Reader {
    pub fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for H2Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        // Bound: an empty DATA frame is skipped; each round either returns or takes a frame.
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let n = data.len();
                    // The frame is ours now; the peer may send more while it is read.
                    let _ = self.recv.flow_control().release_capacity(n);
                    self.pending = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Ok(0)),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(n))
    }
}

/// Writes an HTTP/2 stream's DATA as an [`AsyncWrite`], within the peer's window. `close`
/// ends the stream (END_STREAM).
#[derive(Debug)]
pub struct H2Writer {
    send: SendStream<Bytes>,
    ended: bool,
}

impl H2Writer {
    pub fn new(send: SendStream<Bytes>) -> Self {
        Self { send, ended: false }
    }
}

impl AsyncWrite for H2Writer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "HTTP/2 stream already ended",
            )));
        }
        self.send.reserve_capacity(buf.len());
        // Bound: each round returns, or waits for the capacity to change.
        loop {
            let cap = self.send.capacity();
            if cap > 0 {
                let n = cap.min(buf.len());
                self.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(io_error)?;
                return Poll::Ready(Ok(n));
            }
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "HTTP/2 stream closed",
                    )));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // DATA handed to h2 is written by its connection task; nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            self.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
