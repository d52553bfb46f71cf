//! What both tunnel transports share on a connector connection: the `RegistrationServer`
//! handler (authentication against the snapshot, duplicate indexes, replacing a connection,
//! entering and leaving the registry, the hooks), and the watches that end a connection:
//! a connector gone silent, and an unregistered connection whose streams have drained.
//!
//! The QUIC transport (`tunnel`) and the HTTP/2 transport (`tunnel_h2`) differ only in how
//! the control stream is carried and how the connection is closed.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use uuid::Uuid;

use super::routes::AuthError;
use super::transport::TunnelConn;
use super::{ConnectionInfo, EdgeWorker, LiveConn};
use crate::wire::rpc::{
    ConnectionDetails, LocalConfigError, RegisterRequest, RegistrationError, RegistrationHandler,
};

/// How long a connector waits before retrying a tunnel this edge does not know yet: the
/// snapshot that creates it is normally at most one long-poll behind.
const UNKNOWN_TUNNEL_RETRY: Duration = Duration::from_secs(2);

/// How often an unregistered connection's open data streams are counted.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// How often a registered connection's liveness is copied into the registry: four checks
/// per second, well inside `STALE_AFTER`, negligible work per connection.
const LIVENESS_CHECK: Duration = Duration::from_millis(250);

/// The registration state of one connector connection, shared between its handler and the
/// task that serves the connection.
#[derive(Default)]
pub(super) struct RegState {
    /// The registered connection, while it is routed to.
    pub(super) live: RefCell<Option<Arc<LiveConn>>>,
    /// Set by `unregisterConnection`: the connection closes once its streams are done.
    pub(super) unregistered: RefCell<Option<Arc<LiveConn>>>,
    /// A registration was refused: the connection closes once the answer has gone.
    pub(super) refused: Cell<bool>,
}

impl RegState {
    /// Takes the connection out of routing (once), after the connection ended.
    pub(super) fn withdraw(&self, worker: &EdgeWorker) {
        let gone = self.live.borrow_mut().take();
        if let Some(l) = gone {
            info!(connection = %l.id, tunnel = %l.tunnel, index = l.conn_index, "connection withdrawn");
            worker.conn_down(&l);
        }
    }

    /// Copies when the connector was last heard from (`last_heard`) into the registry entry,
    /// which every worker reads when routing. Returns once the connector has been silent
    /// past `STALE_AFTER`: a killed connector never says goodbye, and closing at once makes
    /// its in-flight requests fail now and the connection leave routing, instead of waiting
    /// for a transport timeout. Never returns before registration.
    pub(super) async fn until_silent(&self, last_heard: impl Fn() -> Option<Instant>) {
        // Bound: runs until the connector is silent or the caller's `select!` ends.
        loop {
            monoio::time::sleep(LIVENESS_CHECK).await;
            let entry = self.live.borrow().clone();
            let Some(l) = entry else { continue };
            if let Some(t) = last_heard() {
                l.heard_at(t);
            }
            if !l.is_fresh(Instant::now()) {
                warn!(connection = %l.id, tunnel = %l.tunnel, "connector silent; closing its connection");
                return;
            }
        }
    }

    /// Returns once the connector has unregistered and the data streams the edge had already
    /// opened on the connection are done (at once when there are none), as Cloudflare's edge
    /// does: the stock connector otherwise waits out its whole grace period before exiting. No
    /// new stream is opened meanwhile, since the connection has left routing.
    pub(super) async fn until_drained(&self) {
        // Fifty wake-ups per second for the connection's whole life, each a flag test until
        // the connector unregisters; the wait also lets the answer to `unregisterConnection`
        // leave before the close.
        loop {
            monoio::time::sleep(DRAIN_CHECK).await;
            let entry = self.unregistered.borrow().clone();
            if entry.is_some_and(|l| l.open_streams() == 0) {
                return;
            }
        }
    }

    /// Returns `grace` after a registration was refused: time for the answer to reach the
    /// connector (which normally ends the control stream itself once it has read it).
    pub(super) async fn until_refused(&self, grace: Duration) {
        // Bound: a flag test per `DRAIN_CHECK` until a refusal, then one sleep.
        while !self.refused.get() {
            monoio::time::sleep(DRAIN_CHECK).await;
        }
        monoio::time::sleep(grace).await;
    }
}

/// The `RegistrationServer` handler of one connector connection, on either transport.
pub(super) struct Registration {
    pub(super) worker: Rc<EdgeWorker>,
    /// The connection, as routing reaches it.
    pub(super) conn: TunnelConn,
    pub(super) state: Rc<RegState>,
}

impl Registration {
    fn refuse(&self, e: RegistrationError) -> Result<ConnectionDetails, RegistrationError> {
        self.state.refused.set(true);
        Err(e)
    }

    fn details(&self, id: Uuid) -> ConnectionDetails {
        ConnectionDetails {
            uuid: id,
            location_name: self.worker.location.clone(),
            tunnel_is_remotely_managed: false,
        }
    }
}

impl RegistrationHandler for Registration {
    async fn register_connection(
        &self,
        req: RegisterRequest,
    ) -> Result<ConnectionDetails, RegistrationError> {
        if let Some(l) = self.state.live.borrow().as_ref() {
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
            return self.refuse(match e {
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
                return self.refuse(RegistrationError::duplicate_connection());
            }
            if old.worker == self.worker.index {
                self.worker.conn_down(&old);
            } else {
                // The owner withdraws it when that connection closes; stop routing here now.
                self.worker.registry.borrow_mut().remove(old.tunnel, old.id);
            }
        }
        let remote: SocketAddr = self.conn.remote_address();
        let live = Arc::new(LiveConn {
            id: Uuid::new_v4(),
            tunnel: req.tunnel_id,
            client_id: req.options.client_id,
            conn_index: req.conn_index,
            worker: self.worker.index,
            remote,
            streams: AtomicUsize::new(0),
            stream_limit: self.conn.stream_limit(),
            last_rx_ms: AtomicU64::new(0),
        });
        live.heard_at(Instant::now());
        *self.state.live.borrow_mut() = Some(live.clone());
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
            protocol = self.conn.protocol(),
            version = %req.options.version,
            "connection registered"
        );
        Ok(self.details(live.id))
    }

    async fn unregister_connection(&self) {
        let gone = self.state.live.borrow_mut().take();
        if let Some(l) = gone {
            info!(connection = %l.id, tunnel = %l.tunnel, index = l.conn_index, "connection unregistered by the connector");
            self.worker.conn_down(&l);
            *self.state.unregistered.borrow_mut() = Some(l);
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
