//! tokio's I/O traits over monoio sockets, for the crates that need them (`h2`,
//! `tokio-rustls`): monoio's poll-io mode. The socket is switched to readiness (io_uring's
//! poll, or epoll on the legacy driver), and each read or write is a direct syscall on the
//! caller's buffer: no copy into an owned buffer, no boxed future per operation, and a
//! vectored write goes out whole.
//!
//! That matters for TLS. rustls caps the ciphertext it holds (64 KiB) and encrypts only what
//! fits under the cap, so the records it makes are as large as the space the socket writes
//! free. An adapter that takes 8 KiB per write, one write in flight, frees space in small and
//! uneven pieces; the records shrink with it, and a stream of 1 MiB uploads over HTTP/2
//! degrades to a few MB/s with the CPU busy framing tiny records. A writev of every record
//! held empties the buffer in one call, and records stay full size.
//!
//! Dropping a read or write future here is always safe: nothing is in flight in the kernel
//! between polls (unlike monoio's own ownership-passing operations).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use monoio::io::IntoPollIo;
pub use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::net::unix::stream_poll::UnixStreamPoll;
use monoio::net::{TcpStream, UnixStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `stream` in poll-io mode. Set socket options (`TCP_NODELAY`, keepalive) before: the
/// poll-io type has no setters.
pub fn tcp(stream: TcpStream) -> io::Result<TcpStreamPoll> {
    stream.into_poll_io()
}

/// A TCP or unix-socket stream in poll-io mode (an origin may be either).
#[derive(Debug)]
pub enum PollStream {
    Tcp(TcpStreamPoll),
    Unix(UnixStreamPoll),
}

impl PollStream {
    pub fn from_tcp(stream: TcpStream) -> io::Result<Self> {
        Ok(Self::Tcp(stream.into_poll_io()?))
    }

    pub fn from_unix(stream: UnixStream) -> io::Result<Self> {
        Ok(Self::Unix(stream.into_poll_io()?))
    }
}

impl AsyncRead for PollStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PollStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
