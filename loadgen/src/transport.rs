//! Connections: plain TCP through monoio's ownership-passing I/O (the fast path), or TLS
//! (rustls via tokio-rustls over the socket in monoio's poll-io mode, shared with HTTP/2,
//! which needs tokio's I/O traits anyway).

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    path::Path,
    sync::Arc,
};

use bytes::{Bytes, BytesMut};
use dataplane::pollio::{self, TcpStreamPoll};
use dataplane::tls::{ClientConfigError, ClientTrust};
use monoio::{
    buf::SliceMut,
    io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable},
    net::TcpStream,
};
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The TLS stream type HTTP/1.1 and HTTP/2 share.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStreamPoll>;

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub addr: SocketAddr,
    /// `Some` for https://.
    pub tls: Option<TlsDialer>,
}

#[derive(Clone)]
pub struct TlsDialer {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsDialer")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("--cacert {0}")]
    CaFile(#[from] dataplane::tls::CertFileError),
    #[error("TLS configuration rejected: {0}")]
    Rustls(rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// Client TLS settings: the public web roots plus `cacert`, or no verification at all.
pub fn tls_config(
    cacert: Option<&Path>,
    insecure: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let trust = if insecure {
        ClientTrust::AcceptAny
    } else {
        ClientTrust::WebPki { extra_ca: cacert }
    };
    let mut config = dataplane::tls::client_config(trust).map_err(|e| match e {
        ClientConfigError::CaFile(e) => TlsSetupError::CaFile(e),
        ClientConfigError::Rustls(e) => TlsSetupError::Rustls(e),
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsSetupError::ServerName(host.to_owned()))
}

async fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_addr(addr).await?;
    // Requests are single small writes; Nagle would hold the next one behind an ACK.
    s.set_nodelay(true)?;
    Ok(s)
}

/// Plain TCP or TLS, for HTTP/1.1.
pub enum Stream {
    /// Split so a response read can be in flight while the request is written: both
    /// operations go to the kernel in one submission, and the task wakes once per request.
    Plain(OwnedReadHalf<TcpStream>, OwnedWriteHalf<TcpStream>, RawFd),
    /// With the TCP socket's fd, which the TLS layers hide.
    Tls(Box<TlsStream>, RawFd),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(_, _, fd) => f.debug_tuple("Plain").field(fd).finish(),
            Stream::Tls(_, fd) => f.debug_tuple("Tls").field(fd).finish(),
        }
    }
}

impl Dialer {
    /// Connects (and handshakes, for TLS).
    pub async fn connect(&self) -> io::Result<Stream> {
        let tcp = connect_tcp(self.addr).await?;
        match &self.tls {
            None => {
                let fd = tcp.as_raw_fd();
                let (r, w) = tcp.into_split();
                Ok(Stream::Plain(r, w, fd))
            }
            Some(tls) => {
                let fd = tcp.as_raw_fd();
                Ok(Stream::Tls(Box::new(tls.handshake(tcp).await?), fd))
            }
        }
    }
}

impl TlsDialer {
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream> {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), pollio::tcp(tcp)?)
            .await
    }
}

impl Stream {
    /// The TCP socket under any TLS.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Plain(_, _, fd) => *fd,
            Stream::Tls(_, fd) => *fd,
        }
    }

    /// Writes `data` and appends the first bytes of the answer to `buf` (at most `want`);
    /// returns what that read returned (`Ok(0)`: end of stream).
    pub async fn send_then_read(
        &mut self,
        data: Bytes,
        buf: &mut BytesMut,
        want: usize,
    ) -> Result<usize, (&'static str, io::Error)> {
        match self {
            Stream::Plain(r, w, _) => {
                let (written, (read, slice)) =
                    futures::join!(w.write_all(data), r.read(spare_capacity(buf, want)));
                *buf = slice.into_inner();
                written.0.map_err(|e| ("sending the request", e))?;
                read.map_err(|e| ("reading the response", e))
            }
            Stream::Tls(t, _) => {
                async {
                    t.write_all(&data).await?;
                    t.flush().await
                }
                .await
                .map_err(|e| ("sending the request", e))?;
                self.read_append(buf, want)
                    .await
                    .map_err(|e| ("reading the response", e))
            }
        }
    }

    /// Appends what one read returns to `buf` (at most `want` bytes); `Ok(0)` is end of
    /// stream.
    pub async fn read_append(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        match self {
            Stream::Plain(r, _, _) => {
                let (res, slice) = r.read(spare_capacity(buf, want)).await;
                *buf = slice.into_inner();
                res
            }
            Stream::Tls(t, _) => {
                buf.reserve(want);
                t.read_buf(buf).await
            }
        }
    }
}

/// `buf` as an owned buffer for one monoio read into its spare capacity (at least `want`
/// bytes): a bare `BytesMut` would be filled from index 0, overwriting what it holds.
fn spare_capacity(buf: &mut BytesMut, want: usize) -> SliceMut<BytesMut> {
    buf.reserve(want);
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    SliceMut::new(owned, len, cap)
}
