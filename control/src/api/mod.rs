//! The control-plane HTTP server.
//!
//! - `/client/v4/...`: the subset of Cloudflare's v4 API that cloudflared calls (tunnels, DNS
//!   records, routes, load balancers), plus account and zone management for the operator.
//! - `/edge/v1/...`: ringway's own edge-facing endpoints (config snapshot with long-poll,
//!   connection registration with leases).
//! - `/login...`: the browser login that hands a cert.pem to `ringway tunnel login`.
//!
//! Compatibility rules learned from cloudflared's client, which every handler keeps:
//! success is always HTTP 200 (cloudflared treats 201/204 as failures), `messages` is a list of
//! strings, and the Content-Type is exactly `application/json`.

mod accounts;
pub mod auth;
mod dns;
pub mod edge;
pub mod envelope;
pub mod isolation;
mod lb;
pub mod login;
pub mod quick;
mod scope;
pub mod server;
pub mod tunnels;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post, put};
use tokio::sync::watch;

use crate::store::{Store, StoreResult};

/// Default for `--max-body`: API bodies are a few hundred bytes; this leaves room for a large
/// pool or many records without letting a client make the server buffer megabytes.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Carries the latest snapshot version to long-polling edges.
    pub version: watch::Sender<u64>,
    /// DNS target suffix: a tunnel's hostname is a CNAME to `<uuid>.<suffix>`.
    pub tunnel_suffix: String,
    pub logins: login::LoginSessions,
    /// How long an edge may wait in one snapshot long-poll.
    pub max_poll: Duration,
    /// The largest request body a handler reads; more is refused with 413.
    pub max_body: usize,
    /// The quick-tunnel service (`--quick-zone`); `None` refuses `POST /tunnel`.
    pub quick: Option<Arc<quick::QuickTunnels>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tunnel_suffix", &self.tunnel_suffix)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, tunnel_suffix: String) -> StoreResult<Self> {
        let v = store.snapshot_version()?;
        Ok(Self {
            store,
            version: watch::channel(v).0,
            tunnel_suffix,
            logins: login::LoginSessions::default(),
            max_poll: Duration::from_secs(30),
            max_body: DEFAULT_MAX_BODY,
            quick: None,
        })
    }

    /// Wakes long-polling edges after a write that may have changed the snapshot.
    pub fn publish(&self) {
        match self.store.snapshot_version() {
            Ok(v) => {
                self.version.send_if_modified(|cur| {
                    let changed = *cur != v;
                    *cur = v;
                    changed
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot read snapshot version"),
        }
    }

    /// The CNAME target of a tunnel.
    pub fn tunnel_target(&self, id: uuid::Uuid) -> String {
        format!("{id}.{}", self.tunnel_suffix)
    }
}

pub fn router(state: AppState) -> Router {
    let v4 = Router::new()
        .route(
            "/accounts",
            get(accounts::list_accounts).post(accounts::create_account),
        )
        .route(
            "/zones",
            get(accounts::list_zones).post(accounts::create_zone),
        )
        .route(
            "/accounts/{acct}/cfd_tunnel",
            get(tunnels::list).post(tunnels::create),
        )
        .route(
            "/accounts/{acct}/cfd_tunnel/{id}",
            get(tunnels::get_one).delete(tunnels::delete_one),
        )
        .route(
            "/accounts/{acct}/cfd_tunnel/{id}/token",
            get(tunnels::token),
        )
        .route(
            "/accounts/{acct}/cfd_tunnel/{id}/connections",
            get(tunnels::connections).delete(tunnels::cleanup_connections),
        )
        .route(
            "/zones/{zone}/dns_records",
            get(dns::list).post(dns::create),
        )
        .route(
            "/zones/{zone}/dns_records/{id}",
            get(dns::get_one)
                .put(dns::update)
                .patch(dns::patch)
                .delete(dns::delete_one),
        )
        .route("/zones/{zone}/tunnels/{id}/routes", put(dns::route))
        .route(
            "/accounts/{acct}/load_balancers/pools",
            get(lb::list_pools).post(lb::create_pool),
        )
        .route(
            "/accounts/{acct}/load_balancers/pools/{id}",
            delete(lb::delete_pool),
        )
        .route(
            "/zones/{zone}/load_balancers",
            get(lb::list_lbs).post(lb::create_lb),
        )
        .route("/zones/{zone}/load_balancers/{id}", delete(lb::delete_lb));
    let edge = Router::new()
        .route("/snapshot", get(edge::snapshot))
        .route("/connections", post(edge::register))
        .route("/connections/{id}", delete(edge::unregister))
        .route("/leases", post(edge::renew));
    Router::new()
        .nest("/client/v4", v4)
        .nest("/edge/v1", edge)
        .route("/login", get(login::page).post(login::submit))
        .route("/login/poll", get(login::poll))
        .route("/login/cert", post(login::issue_cert))
        // cloudflared's `--quick-service URL` posts to `URL/tunnel`.
        .route("/tunnel", post(quick::create))
        .route("/tunnel/{id}", delete(quick::delete))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { envelope::ApiError::not_found("no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body))
        .layer(axum::middleware::map_response(
            envelope::plain_errors_as_envelope,
        ))
        .with_state(state)
}

/// Drops connection records whose lease ran out. Runs for the life of the server; a tick of one
/// second bounds how long a dead edge's connections stay listed past their lease.
pub async fn expire_leases(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match state.store.expire_connections(edge::now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "connection leases expired"),
            Err(e) => tracing::error!(error = %e, "lease expiry failed"),
        }
    }
}
