//! `futures` `AsyncRead` / `AsyncWrite` over a QUIC stream, for code written against those
//! traits: capnp-rpc's two-party transport on the control stream and on edge → connector RPC
//! streams. The request path does not go through here; it moves `Bytes` directly.
//!
//! `AsyncRead` fills a caller's slice, so this is the one place a stream's bytes are copied;
//! it only carries RPC messages (a few hundred bytes each).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::io::{AsyncRead, AsyncWrite};

use super::endpoint::{RecvStream, SendStream, StreamReadError, StreamWriteError};

/// Largest chunk taken from quinn-proto per read; RPC messages are small, and the leftover of a
/// larger chunk waits in `pending` anyway.
const READ_CHUNK: usize = 64 * 1024;

/// Reads a [`RecvStream`] as an `AsyncRead`.
#[derive(Debug)]
pub struct StreamReader {
    stream: RecvStream,
    /// The unread rest of the last chunk.
    pending: Bytes,
}

impl StreamReader {
    pub fn new(stream: RecvStream) -> Self {
        Self::with_prefix(stream, Bytes::new())
    }

    /// A reader that yields `prefix` first: bytes already taken off the stream (e.g. the part
    /// of the first chunk after a stream signature).
    pub(crate) fn with_prefix(stream: RecvStream, prefix: Bytes) -> Self {
        Self {
            stream,
            pending: prefix,
        }
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match this.stream.poll_read_chunk(cx, READ_CHUNK) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(Some(chunk))) => this.pending = chunk,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(read_error(e))),
            }
        }
        let n = buf.len().min(this.pending.len());
        buf[..n].copy_from_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(n))
    }
}

/// Writes a [`SendStream`] as an `AsyncWrite`. `poll_close` sends FIN.
#[derive(Debug)]
pub struct StreamWriter {
    stream: SendStream,
}

impl StreamWriter {
    pub fn new(stream: SendStream) -> Self {
        Self { stream }
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // quinn-proto keeps the `Bytes` it is given, so the slice must be copied once here.
        let mut data = Bytes::copy_from_slice(buf);
        match self.stream.poll_write_some(cx, &mut data) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(write_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes already belong to quinn-proto, which sends them as soon as it can.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream.finish() {
            Ok(()) | Err(StreamWriteError::ClosedStream) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }
}

fn read_error(e: StreamReadError) -> io::Error {
    let kind = match e {
        StreamReadError::Reset(_) => io::ErrorKind::ConnectionReset,
        StreamReadError::ClosedStream => io::ErrorKind::NotConnected,
        StreamReadError::Connection(_) => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, e)
}

fn write_error(e: StreamWriteError) -> io::Error {
    let kind = match e {
        StreamWriteError::Stopped(_) => io::ErrorKind::BrokenPipe,
        StreamWriteError::ClosedStream => io::ErrorKind::NotConnected,
        StreamWriteError::Connection(_) => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, e)
}
