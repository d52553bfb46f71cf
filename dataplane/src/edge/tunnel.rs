//! One task per connector QUIC connection: serve `RegistrationServer` (the shared
//! [`Registration`] handler) on the first stream the connector opens, and close the
//! connection when the control stream ends, the connector goes silent, or an unregistered
//! connection has drained.
//!
//! Connections that never open a stream are normal: the stock cloudflared's pre-flight probe
//! (SNI `probe.cftunnel.com`) connects and closes with code 0.

use std::rc::Rc;

use futures::FutureExt;
use tracing::{debug, warn};

use super::EdgeWorker;
use super::registration::{RegState, Registration};
use super::transport::TunnelConn;
use crate::quic::VarInt;
use crate::quic::endpoint::Connection;
use crate::quic::stream_io::{StreamReader, StreamWriter};
use crate::wire::rpc::serve_registration;

pub(crate) async fn serve_connection(worker: Rc<EdgeWorker>, conn: Connection) {
    let conn = Rc::new(conn);
    let remote = conn.remote_address();
    let (send, recv) = match conn.accept_bi().await {
        Ok(s) => s,
        Err(e) => {
            // A probe, or a connector that gave up before registering.
            debug!(?remote, error = %e, "connection closed without a control stream");
            return;
        }
    };
    let state = Rc::new(RegState::default());
    let handler = Registration {
        worker: worker.clone(),
        conn: TunnelConn::Quic(conn.clone()),
        state: state.clone(),
    };
    let rpc = serve_registration(handler, StreamReader::new(recv), StreamWriter::new(send));
    let mut rpc = std::pin::pin!(rpc.fuse());
    let mut closed = std::pin::pin!(conn.closed().fuse());
    let mut silent = std::pin::pin!(state.until_silent(|| conn.last_received()).fuse());
    let mut drained = std::pin::pin!(state.until_drained().fuse());
    let reason: &[u8] = futures::select! {
        () = silent => b"connector silent",
        () = drained => {
            debug!(?remote, "unregistered connection drained; closed");
            b"unregistered"
        }
        r = rpc => {
            match r {
                Ok(()) => debug!(?remote, "control stream ended"),
                Err(e) => warn!(?remote, error = %e, "control stream failed"),
            }
            b"control stream ended"
        }
        e = closed => {
            debug!(?remote, reason = %e, "connector connection closed");
            b"control stream ended"
        }
    };
    state.withdraw(&worker);
    // Without its control stream the connection is useless to both sides.
    conn.close(VarInt::from_u32(0), reason);
}
