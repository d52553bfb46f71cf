//! The QUIC transport of a connection: its own UDP socket and endpoint, the handshake, the
//! control stream it opens, and one task per stream the edge opens ([`super::stream`]).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::protocol::Protocol;
use super::session::EdgeLink;
use super::{Common, ConnectionError, ConnectorShared, stream};
use crate::quic::endpoint::{Connection, Endpoint, RecvStream, SendStream};
use crate::quic::stream_io::{StreamReader, StreamWriter};
use crate::quic::{Driver, SILENT_PEER, VarInt, WorkerCidGenerator};
use crate::udp::UdpIo;

/// A QUIC connection to one edge address; its endpoint shuts down when this is dropped.
pub(crate) struct QuicLink {
    ep: Endpoint,
    conn: Connection,
    edge: SocketAddr,
    active: Rc<Cell<usize>>,
}

impl Drop for QuicLink {
    fn drop(&mut self) {
        self.ep.shutdown(VarInt::from_u32(0), b"");
    }
}

impl QuicLink {
    /// Binds a UDP socket, starts an endpoint and completes the handshake with `edge` (within
    /// `limit` when given).
    pub(crate) async fn dial(
        common: &Common,
        worker: usize,
        edge: SocketAddr,
        limit: Option<Duration>,
    ) -> Result<Self, ConnectionError> {
        let setup = &common.setup;
        let bind: SocketAddr = match setup.bind_address {
            Some(ip) => (ip, 0).into(),
            None if edge.is_ipv4() => ([0, 0, 0, 0], 0).into(),
            None => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let udp = UdpIo::bind(bind, &setup.udp, setup.udp_backend)
            .map_err(|e| ConnectionError::Socket(Arc::new(e)))?;
        let cid = WorkerCidGenerator::new(common.cid_key.clone(), worker)?;
        let driver = Driver::new(&setup.quic, None, Some(setup.client_config.clone()), cid)?;
        let ep = Endpoint::start(driver, udp, None)
            .map_err(|e| ConnectionError::Endpoint(Arc::new(e)))?;
        let connect = ep.connect(edge, &setup.server_name);
        let connected = match limit {
            None => connect.await,
            Some(limit) => match monoio::time::timeout(limit, connect).await {
                Ok(r) => r,
                Err(_) => {
                    ep.shutdown(VarInt::from_u32(0), b"");
                    return Err(ConnectionError::QuicTimeout { edge, after: limit });
                }
            },
        };
        match connected {
            Ok(conn) => Ok(Self {
                ep,
                conn,
                edge,
                active: Rc::new(Cell::new(0)),
            }),
            Err(cause) => {
                ep.shutdown(VarInt::from_u32(0), b"");
                Err(ConnectionError::Unreachable { edge, cause })
            }
        }
    }
}

impl EdgeLink for QuicLink {
    type Reader = StreamReader;
    type Writer = StreamWriter;
    const PROTOCOL: Protocol = Protocol::Quic;

    fn edge(&self) -> SocketAddr {
        self.edge
    }

    fn active(&self) -> &Rc<Cell<usize>> {
        &self.active
    }

    async fn control_stream(&self) -> Result<(StreamReader, StreamWriter), ConnectionError> {
        let (send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(ConnectionError::ControlStream)?;
        Ok((StreamReader::new(recv), StreamWriter::new(send)))
    }

    async fn serve_streams(&self, shared: &Rc<ConnectorShared>) -> ConnectionError {
        let mut closed = std::pin::pin!(self.conn.closed().fuse());
        let mut silent = std::pin::pin!(edge_silent(&self.conn).fuse());
        // Bounded by the connection's life; each turn accepts one stream.
        loop {
            let mut next = std::pin::pin!(self.conn.accept_bi().fuse());
            futures::select! {
                s = next => match s {
                    Ok((send, recv)) => spawn_stream(shared, &self.active, send, recv),
                    Err(e) => return ConnectionError::Lost(e),
                },
                e = closed => return ConnectionError::Closed(e),
                () = silent => {
                    self.conn.close(VarInt::from_u32(0), b"edge silent");
                    return ConnectionError::Silent { edge: self.edge, silent_for: SILENT_PEER };
                }
            }
        }
    }

    fn close(&self, reason: &'static str) {
        self.conn.close(VarInt::from_u32(0), reason.as_bytes());
    }
}

/// Serves one edge-opened stream on its own task, counted in `active`.
fn spawn_stream(
    shared: &Rc<ConnectorShared>,
    active: &Rc<Cell<usize>>,
    send: SendStream,
    recv: RecvStream,
) {
    let (shared, active) = (shared.clone(), active.clone());
    active.set(active.get() + 1);
    monoio::spawn(async move {
        stream::serve_stream(shared, send, recv).await;
        active.set(active.get() - 1);
    });
}

/// Resolves once the edge has sent nothing for [`SILENT_PEER`]: a dead edge is left (and
/// redialled) in 2.5 s rather than after the 5 s idle timeout.
async fn edge_silent(conn: &Connection) {
    // Four checks per second, well inside the silence limit.
    loop {
        monoio::time::sleep(Duration::from_millis(250)).await;
        if let Some(t) = conn.last_received()
            && t.elapsed() > SILENT_PEER
        {
            return;
        }
    }
}
