//! One task per connector QUIC connection: serve `RegistrationServer` on the first stream the
//! connector opens, decide registrations against the snapshot, and withdraw the connection
//! from routing the moment it unregisters or goes away.
//!
//! Connections that never open a stream are normal: the stock cloudflared's pre-flight probe
//! (SNI `probe.cftunnel.com`) connects and closes with code 0.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::routes::AuthError;
use super::{ConnectionInfo, EdgeWorker, LiveConn};
use crate::quic::VarInt;
use crate::quic::endpoint::Connection;
use crate::quic::stream_io::{StreamReader, StreamWriter};
use crate::wire::rpc::{
    ConnectionDetails, LocalConfigError, RegisterRequest, RegistrationError, RegistrationHandler,
    serve_registration,
};

/// How long a connector waits before retrying a tunnel this edge does not know yet: the
/// snapshot that creates it is normally at most one long-poll behind.
const UNKNOWN_TUNNEL_RETRY: Duration = Duration::from_secs(2);

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
    let live: Rc<RefCell<Option<Arc<LiveConn>>>> = Rc::new(RefCell::new(None));
    let unregistered: Rc<RefCell<Option<Arc<LiveConn>>>> = Rc::new(RefCell::new(None));
    let handler = Registration {
        worker: worker.clone(),
        conn: conn.clone(),
        live: live.clone(),
        unregistered: unregistered.clone(),
    };
    let rpc = serve_registration(handler, StreamReader::new(recv), StreamWriter::new(send));
    let mut rpc = std::pin::pin!(rpc.fuse());
    let mut closed = std::pin::pin!(conn.closed().fuse());
    let mut liveness = std::pin::pin!(track_liveness(&conn, &live).fuse());
    let mut drained = std::pin::pin!(close_once_drained(&conn, &unregistered).fuse());
    futures::select! {
        () = liveness => {}
        () = drained => debug!(?remote, "unregistered connection drained; closed"),
        r = rpc => match r {
            Ok(()) => debug!(?remote, "control stream ended"),
            Err(e) => warn!(?remote, error = %e, "control stream failed"),
        },
        e = closed => debug!(?remote, reason = %e, "connector connection closed"),
    }
    let gone = live.borrow_mut().take();
    if let Some(l) = gone {
        info!(connection = %l.id, tunnel = %l.tunnel, index = l.conn_index, "connection withdrawn");
        worker.conn_down(&l);
    }
    // Without its control stream the connection is useless to both sides.
    conn.close(VarInt::from_u32(0), b"control stream ended");
}

/// Copies when the connector was last heard from into its registry entry, which every worker
/// reads when routing. Runs until the surrounding `select!` ends.
async fn track_liveness(conn: &Connection, live: &RefCell<Option<Arc<LiveConn>>>) {
    // Four checks per second: well inside `STALE_AFTER`, negligible work per connection.
    loop {
        monoio::time::sleep(Duration::from_millis(250)).await;
        let entry = live.borrow().clone();
        let Some(l) = entry else { continue };
        if let Some(t) = conn.last_received() {
            l.heard_at(t);
        }
        if !l.is_fresh(Instant::now()) {
            // A killed connector never says goodbye: close now, so its in-flight requests fail
            // at once and the connection leaves routing, instead of waiting for the idle timeout.
            warn!(connection = %l.id, tunnel = %l.tunnel, "connector silent; closing its connection");
            conn.close(VarInt::from_u32(0), b"connector silent");
            return;
        }
    }
}

/// After `unregisterConnection`, closes the connection as soon as the data streams the edge
/// had already opened on it are done (at once when there are none), as Cloudflare's edge
/// does: the stock connector otherwise waits out its whole grace period before exiting. No new
/// stream is opened meanwhile, since the connection has left routing. Runs until the
/// surrounding `select!` ends.
async fn close_once_drained(conn: &Connection, unregistered: &RefCell<Option<Arc<LiveConn>>>) {
    // Fifty wake-ups per second for the connection's whole life, each a flag test until the
    // connector unregisters; the wait also lets the answer to `unregisterConnection` leave
    // before the close.
    loop {
        monoio::time::sleep(DRAIN_CHECK).await;
        let entry = unregistered.borrow().clone();
        if entry.is_some_and(|l| l.open_streams() == 0) {
            conn.close(VarInt::from_u32(0), b"unregistered");
            return;
        }
    }
}

/// How often an unregistered connection's open data streams are counted.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

struct Registration {
    worker: Rc<EdgeWorker>,
    conn: Rc<Connection>,
    live: Rc<RefCell<Option<Arc<LiveConn>>>>,
    /// Set by `unregisterConnection`: the connection closes once its streams are done.
    unregistered: Rc<RefCell<Option<Arc<LiveConn>>>>,
}

impl RegistrationHandler for Registration {
    async fn register_connection(
        &self,
        req: RegisterRequest,
    ) -> Result<ConnectionDetails, RegistrationError> {
        if let Some(l) = self.live.borrow().as_ref() {
            // A repeated call on one control stream: same answer, no second registration.
            return Ok(self.details(l.id));
        }
        let routes = self.worker.routes();
        if let Err(e) = routes.authenticate(
            req.tunnel_id,
            &req.auth.account_tag,
            req.auth.tunnel_secret.expose(),
        ) {
            warn!(tunnel = %req.tunnel_id, index = req.conn_index, cause = %e, "registration refused");
            return Err(match e {
                AuthError::UnknownTunnel(_) => {
                    RegistrationError::retry_after(e.to_string(), UNKNOWN_TUNNEL_RETRY)
                }
                AuthError::WrongAccount(_) | AuthError::WrongSecret(_) => {
                    RegistrationError::permanent(e.to_string())
                }
            });
        }
        let existing = self
            .worker
            .registry
            .borrow()
            .find_index(req.tunnel_id, req.options.client_id, req.conn_index)
            .cloned();
        if let Some(old) = existing {
            if !req.options.replace_existing {
                warn!(tunnel = %req.tunnel_id, index = req.conn_index, "duplicate connection index");
                return Err(RegistrationError::duplicate_connection());
            }
            if old.worker == self.worker.index {
                self.worker.conn_down(&old);
            } else {
                // The owner withdraws it when that connection closes; stop routing here now.
                self.worker.registry.borrow_mut().remove(old.tunnel, old.id);
            }
        }
        let remote = self
            .conn
            .remote_address()
            .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        let live = Arc::new(LiveConn {
            id: Uuid::new_v4(),
            tunnel: req.tunnel_id,
            client_id: req.options.client_id,
            conn_index: req.conn_index,
            worker: self.worker.index,
            remote,
            streams: AtomicUsize::new(0),
            last_rx_ms: AtomicU64::new(0),
        });
        live.heard_at(std::time::Instant::now());
        *self.live.borrow_mut() = Some(live.clone());
        self.worker.conn_up(live.clone(), self.conn.clone());
        self.worker.hooks.connection_registered(&ConnectionInfo {
            id: live.id,
            tunnel: live.tunnel,
            client_id: live.client_id,
            conn_index: live.conn_index,
            version: req.options.version.clone(),
            arch: req.options.arch.clone(),
            features: req.options.features.clone(),
            origin_local_ip: req.options.origin_local_ip,
            remote,
        });
        info!(
            connection = %live.id,
            tunnel = %live.tunnel,
            index = live.conn_index,
            client = %live.client_id,
            %remote,
            version = %req.options.version,
            "connection registered"
        );
        Ok(self.details(live.id))
    }

    async fn unregister_connection(&self) {
        let gone = self.live.borrow_mut().take();
        if let Some(l) = gone {
            info!(connection = %l.id, tunnel = %l.tunnel, index = l.conn_index, "connection unregistered by the connector");
            self.worker.conn_down(&l);
            *self.unregistered.borrow_mut() = Some(l);
        }
    }

    async fn update_local_configuration(&self, config: Vec<u8>) -> Result<(), LocalConfigError> {
        debug!(
            bytes = config.len(),
            "connector sent its local configuration"
        );
        Ok(())
    }
}

impl Registration {
    fn details(&self, id: Uuid) -> ConnectionDetails {
        ConnectionDetails {
            uuid: id,
            location_name: self.worker.location.clone(),
            tunnel_is_remotely_managed: false,
        }
    }
}
