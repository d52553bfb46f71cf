//! One registered connection, whatever its transport: the control stream's registration, the
//! serve loop, and the graceful drain. QUIC ([`super::quic_link`]) and HTTP/2
//! ([`super::h2_link`]) implement [`EdgeLink`]; everything here is shared.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::Fuse;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use tracing::debug;

use super::protocol::Protocol;
use super::quic_link::QuicLink;
use super::{Common, ConnectionError, ConnectorShared, FIRST_DONE};
use crate::wire::rpc::{RegisterError, RegistrationClient, registration_client};

/// A transport connection to the edge, before and after registration.
pub(crate) trait EdgeLink: 'static {
    /// The control stream's edge → connector half.
    type Reader: AsyncRead + Unpin + 'static;
    /// The control stream's connector → edge half.
    type Writer: AsyncWrite + Unpin + 'static;
    const PROTOCOL: Protocol;

    fn edge(&self) -> SocketAddr;

    /// Data streams being served on this connection.
    fn active(&self) -> &Rc<Cell<usize>>;

    /// The control stream (QUIC: the connector opens it; HTTP/2: the edge's first request).
    fn control_stream(
        &self,
    ) -> impl Future<Output = Result<(Self::Reader, Self::Writer), ConnectionError>>;

    /// Serves the streams the edge opens, each on its own task counted in
    /// [`active`](Self::active), until the connection ends; says why. Dropping the future
    /// stops nothing a new call cannot resume.
    fn serve_streams(&self, shared: &Rc<ConnectorShared>) -> impl Future<Output = ConnectionError>;

    /// Closes the connection (no new streams; the edge sees a clean close).
    fn close(&self, reason: &'static str);
}

/// A registered connection.
pub(crate) struct Session<L> {
    link: L,
    client: RegistrationClient,
    index: u8,
}

impl<L: EdgeLink> Session<L> {
    pub(crate) fn link_edge(&self) -> SocketAddr {
        self.link.edge()
    }
}

/// How a registered connection's service ended.
pub(crate) enum Served {
    /// The connection ended on its own (the edge closed it, the path broke).
    Lost(ConnectionError),
    /// Shutdown: unregistered and drained.
    Stopped,
    /// `auto`'s background probe registered this QUIC connection in its place; the old one
    /// drains on its own task.
    Switched(Session<QuicLink>),
}

/// After `unregisterConnection`, how long the connector keeps accepting streams the edge had
/// already routed to this connection (the edge applies the unregistration at once on the
/// owning worker; a request already past routing is at most one round trip behind).
const DRAIN_SETTLE: Duration = Duration::from_millis(500);

/// How long `unregisterConnection` may take before the connector closes anyway.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

/// After the last stream is done, how long the connector waits for the edge to close the
/// unregistered connection before closing it itself (see `drain`).
const PEER_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Opens the control stream and registers `link` as connection `index`. `replace_existing`:
/// the edge withdraws this connector's other connection with the same index (the
/// make-before-break of a protocol switch). On failure the link is closed.
pub(crate) async fn register<L: EdgeLink>(
    common: &Common,
    link: L,
    index: u8,
    attempt: u32,
    replace_existing: bool,
) -> Result<Session<L>, ConnectionError> {
    let setup = &common.setup;
    let (reader, writer) = match link.control_stream().await {
        Ok(halves) => halves,
        Err(e) => {
            link.close("no control stream");
            return Err(e);
        }
    };
    let (client, rpc) = registration_client(reader, writer);
    // Ends when the control stream does (the connection closes, or the edge ends it).
    monoio::spawn(async move {
        if let Err(e) = rpc.await {
            debug!(error = %e, "control stream ended");
        }
    });
    let mut options = setup.options.clone();
    options.num_previous_attempts = attempt.min(255) as u8;
    options.replace_existing = replace_existing;
    let registered = monoio::time::timeout(
        setup.rpc_timeout,
        client.register_connection(&setup.auth, setup.tunnel_id, index, &options),
    )
    .await;
    let details = match registered {
        Err(_) => {
            link.close("registration timed out");
            return Err(ConnectionError::RegistrationTimeout {
                edge: link.edge(),
                after: setup.rpc_timeout,
            });
        }
        Ok(r) => r,
    };
    let details = match details {
        Ok(d) => d,
        Err(RegisterError::Refused(r)) => {
            link.close("registration refused");
            return Err(ConnectionError::Refused(r));
        }
        Err(RegisterError::Rpc(e)) => {
            link.close("registration failed");
            return Err(ConnectionError::RegistrationRpc(e));
        }
    };
    setup.metrics.ha_connection_up();
    setup
        .metrics
        .set_connection_protocol(index, Some(L::PROTOCOL));
    setup
        .hooks
        .registered(index, link.edge(), L::PROTOCOL, &details);
    if index == 0 {
        common.first.store(FIRST_DONE, Ordering::Release);
    }
    if index == 0
        && let Some(cfg) = &setup.local_config
        && let Err(e) = client.update_local_configuration(cfg).await
    {
        debug!(error = %e, "updateLocalConfiguration failed");
    }
    Ok(Session {
        link,
        client,
        index,
    })
}

/// Serves a registered connection until it ends, shutdown begins (then it unregisters and
/// drains within `grace`), or `probe` yields a QUIC connection registered in its place.
pub(crate) async fn serve<L: EdgeLink>(
    session: Session<L>,
    shared: &Rc<ConnectorShared>,
    grace: Duration,
    probe: impl Future<Output = Session<QuicLink>>,
) -> Served {
    let switched = {
        let mut streams = pin!(session.link.serve_streams(shared).fuse());
        let mut stop = pin!(shared.stopped().fuse());
        let mut probe = pin!(probe.fuse());
        // The probe first: a QUIC connection it registered must not be dropped because the
        // old one ended or shutdown began in the same turn (the caller serves or drains it).
        futures::select_biased! {
            q = probe => q,
            e = streams => return Served::Lost(e),
            () = stop => {
                drain(&session, streams.as_mut(), grace).await;
                return Served::Stopped;
            }
        }
    };
    // Make-before-break: the edge already routes new requests to the QUIC connection; this
    // one finishes what it has in flight, then closes.
    let shared = shared.clone();
    monoio::spawn(async move {
        let streams = pin!(session.link.serve_streams(&shared).fuse());
        drain(&session, streams, grace).await;
        debug!(
            index = session.index,
            protocol = %L::PROTOCOL,
            "drained after the switch"
        );
    });
    Served::Switched(switched)
}

/// Graceful end of one connection: unregister (the edge stops sending new requests here), let
/// in-flight streams finish within `grace` while still serving any the edge had already sent,
/// then close.
async fn drain<L: EdgeLink, F: Future<Output = ConnectionError>>(
    session: &Session<L>,
    mut streams: Pin<&mut Fuse<F>>,
    grace: Duration,
) {
    let index = session.index;
    let deadline = Instant::now() + grace;
    match monoio::time::timeout(UNREGISTER_TIMEOUT, session.client.unregister_connection()).await {
        Ok(Ok(())) => debug!(index, "unregistered"),
        Ok(Err(e)) => debug!(index, error = %e, "unregisterConnection failed"),
        Err(_) => debug!(index, "unregisterConnection timed out"),
    }
    // Requests routed here just before the edge processed the unregistration still arrive for
    // a moment: keep serving through a short settle period, then until the in-flight ones are
    // done, within the grace period. A few checks per second.
    let settled = Instant::now() + DRAIN_SETTLE;
    let active = session.link.active();
    let mut ended = false;
    let mut drained = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= settled && active.get() == 0 {
            drained = true;
            break;
        }
        let mut tick = pin!(monoio::time::sleep(Duration::from_millis(20)).fuse());
        futures::select! {
            _ = streams => {
                ended = true;
                break;
            }
            () = tick => {}
        }
    }
    if drained && !ended {
        // The streams' tasks are done, but their last bytes may still be in the transport's
        // send buffer (QUIC: not yet acknowledged; HTTP/2: queued in h2), and closing now
        // would discard them: the edge would answer the client 502 for a request the origin
        // answered. The edge closes the connection itself once it has every answer (it was
        // told by unregisterConnection); wait for that, bounded.
        let _ = monoio::time::timeout(PEER_CLOSE_WAIT, &mut streams).await;
    }
    session.link.close("connector shutting down");
}
