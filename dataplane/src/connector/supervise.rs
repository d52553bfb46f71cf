//! Keeps one HA connection up: dial on the transport its [`Selector`] says, register, serve,
//! and on any failure wait and redial; in `auto`, fall back to HTTP/2 and probe QUIC while on
//! it ([`probe_quic`]), moving back make-before-break.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::debug;

use super::h2_link::H2Link;
use super::protocol::{
    ProbeBackoff, Protocol, ProtocolChoice, QUIC_HANDSHAKE_LIMIT, Selector, Switch,
};
use super::quic_link::QuicLink;
use super::session::{Served, Session, register, serve};
use super::{Common, ConnectionError, ConnectorShared, FIRST_PENDING};

enum Outcome {
    /// Registered and served until this end.
    Served(Served),
    /// Never registered; the error says whether to retry.
    Failed(ConnectionError),
}

/// Keeps connection `index` up until shutdown, or until it gives up.
pub(crate) async fn supervise(
    common: Arc<Common>,
    shared: Rc<ConnectorShared>,
    worker: usize,
    index: u8,
) {
    let setup = &common.setup;
    if index != 0 {
        // Startup only: poll the first connection's outcome (a few checks at most).
        while common.first.load(Ordering::Acquire) == FIRST_PENDING {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut selector = Selector::new(setup.protocol, setup.fallback_after);
    let mut attempt: u32 = 0;
    let mut refusals: u32 = 0;
    // A QUIC connection the probe registered in place of an HTTP/2 one.
    let mut moved: Option<Session<QuicLink>> = None;
    let mut on_fallback_since: Option<Instant> = None;
    // Runs until shutdown; every turn waits on the network or on a backoff.
    loop {
        // A moved connection is served even now: it is registered, so shutdown drains it.
        if moved.is_none() && shared.is_stopping() {
            return;
        }
        let edge = setup.edges[(index as usize + attempt as usize) % setup.edges.len()];
        let started = Instant::now();
        let outcome = match moved.take() {
            Some(session) => Outcome::Served(
                serve(session, &shared, setup.grace_period, std::future::pending()).await,
            ),
            None => run_connection(&common, &shared, &selector, worker, index, edge, attempt).await,
        };
        if index == 0 {
            common.first.store(super::FIRST_DONE, Ordering::Release);
        }
        match outcome {
            Outcome::Served(Served::Switched(session)) => {
                // The HTTP/2 connection is withdrawn (it drains on its own task); the QUIC
                // one counted itself up when it registered.
                setup.metrics.ha_connection_down();
                let switch = Switch {
                    to: Protocol::Quic,
                    reason: format!(
                        "a QUIC connection to {} registered; the http2 connection drains",
                        session.link_edge()
                    ),
                    after: on_fallback_since.map_or(Duration::ZERO, |t| t.elapsed()),
                    attempts: 0,
                };
                setup.hooks.protocol_changed(index, &switch);
                on_fallback_since = None;
                selector.moved_to_quic();
                moved = Some(session);
                attempt = 0;
                refusals = 0;
            }
            Outcome::Served(Served::Stopped) => {
                setup.metrics.ha_connection_down();
                setup.metrics.set_connection_protocol(index, None);
                return;
            }
            Outcome::Served(Served::Lost(reason)) => {
                setup.metrics.ha_connection_down();
                setup.metrics.set_connection_protocol(index, None);
                if shared.is_stopping() {
                    return;
                }
                setup.hooks.disconnected(index, edge, &reason);
                selector.registered();
                attempt = 0;
                refusals = 0;
            }
            Outcome::Failed(error) => {
                if !error.retryable() {
                    refusals += 1;
                    if refusals >= setup.retries.max(1) {
                        setup.hooks.gave_up(index, &error);
                        return;
                    }
                } else {
                    refusals = 0;
                    if attempt + 1 == setup.retries.max(1) {
                        // Reported once; the attempts go on at the backoff cap.
                        setup.hooks.failing(index, &error, setup.retries.max(1));
                    }
                }
                if let Some(switch) = selector.failed(&error, started, Instant::now()) {
                    // Straight to the other transport: the time was spent failing already.
                    setup
                        .hooks
                        .attempt_failed(index, edge, &error, Duration::ZERO);
                    setup.hooks.protocol_changed(index, &switch);
                    on_fallback_since = (switch.to == Protocol::Http2).then(Instant::now);
                    attempt = attempt.saturating_add(1);
                    continue;
                }
                let wait = setup.backoff.delay(attempt);
                setup.hooks.attempt_failed(index, edge, &error, wait);
                let mut sleep = std::pin::pin!(monoio::time::sleep(wait).fuse());
                let mut stop = std::pin::pin!(shared.stopped().fuse());
                futures::select! {
                    () = sleep => {}
                    () = stop => return,
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// One attempt on the selector's transport: dial, register, serve.
async fn run_connection(
    common: &Common,
    shared: &Rc<ConnectorShared>,
    selector: &Selector,
    worker: usize,
    index: u8,
    edge: std::net::SocketAddr,
    attempt: u32,
) -> Outcome {
    let setup = &common.setup;
    let grace = setup.grace_period;
    match selector.current() {
        Protocol::Quic => {
            let limit = (setup.protocol == ProtocolChoice::Auto).then_some(QUIC_HANDSHAKE_LIMIT);
            let link = match QuicLink::dial(common, worker, edge, limit).await {
                Ok(l) => l,
                Err(e) => return Outcome::Failed(e),
            };
            match register(common, link, index, attempt, false).await {
                Ok(s) => Outcome::Served(serve(s, shared, grace, std::future::pending()).await),
                Err(e) => Outcome::Failed(e),
            }
        }
        Protocol::Http2 => {
            debug!(index, %edge, "connecting via http2");
            let link = match H2Link::dial(common, shared, edge).await {
                Ok(l) => l,
                Err(e) => return Outcome::Failed(e),
            };
            let session = match register(common, link, index, attempt, false).await {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(e),
            };
            let served = if selector.probes_quic() {
                serve(
                    session,
                    shared,
                    grace,
                    probe_quic(common, worker, index, edge),
                )
                .await
            } else {
                serve(session, shared, grace, std::future::pending()).await
            };
            Outcome::Served(served)
        }
    }
}

/// While a connection is on HTTP/2 in `auto`: tries QUIC to the same edge address with
/// [`ProbeBackoff`] waits, and returns once a QUIC connection has handshaken and registered
/// with `replace_existing` (the edge then routes to it and withdraws the HTTP/2 one, which
/// keeps serving what it has in flight).
async fn probe_quic(
    common: &Common,
    worker: usize,
    index: u8,
    edge: std::net::SocketAddr,
) -> Session<QuicLink> {
    let mut backoff = ProbeBackoff::new();
    let mut tries: u32 = 0;
    // Runs while the HTTP/2 connection is served; each turn waits at least a second.
    loop {
        monoio::time::sleep(backoff.next_wait()).await;
        tries = tries.saturating_add(1);
        let link = match QuicLink::dial(common, worker, edge, Some(QUIC_HANDSHAKE_LIMIT)).await {
            Ok(l) => l,
            Err(e) => {
                debug!(index, tries, error = %e, "QUIC probe: no connection yet");
                continue;
            }
        };
        match register(common, link, index, tries, true).await {
            Ok(session) => return session,
            Err(e) => debug!(index, tries, error = %e, "QUIC probe: registration failed"),
        }
    }
}
