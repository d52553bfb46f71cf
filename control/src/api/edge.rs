//! The edge-facing endpoints: ringway's own design, not Cloudflare's.
//!
//! - `GET /edge/v1/snapshot?since=V[&wait=SECS]`: the full config snapshot when its version is
//!   newer than `V`; otherwise the request waits (long-poll) until a write bumps the version or
//!   `wait` (capped) passes, then answers `304 Not Modified`.
//! - `POST /edge/v1/connections`: register a connector connection with a lease.
//! - `POST /edge/v1/leases`: renew the leases of the listed connections; the answer names the
//!   ids the control plane no longer knows, so the edge registers them again.
//! - `DELETE /edge/v1/connections/{id}`: deregister at once.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ApiError, ApiResult, ok};
use super::scope::EdgeCaller;
use crate::store::ConnectionRecord;

/// Leases shorter than this would need renewals faster than an edge's renew loop can promise.
const MIN_LEASE_SECS: u64 = 2;
const MAX_LEASE_SECS: u64 = 600;

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[derive(Debug, Deserialize)]
pub struct SnapshotQuery {
    since: Option<u64>,
    wait: Option<u64>,
}

pub async fn snapshot(
    State(st): State<AppState>,
    _: EdgeCaller,
    Query(q): Query<SnapshotQuery>,
) -> ApiResult {
    let since = q.since.unwrap_or(0);
    let wait = Duration::from_secs(q.wait.unwrap_or(st.max_poll.as_secs())).min(st.max_poll);
    let mut rx = st.version.subscribe();
    if *rx.borrow_and_update() <= since {
        // Either a newer version arrives or the poll times out; both are normal.
        let _ = tokio::time::timeout(wait, rx.wait_for(|v| *v > since)).await;
    }
    let snap = super::isolation::snapshot_for_edges(&st)?;
    if snap.version <= since {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(ok(snap))
}

/// What an edge sends when a connector registers a connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterConnection {
    pub id: Uuid,
    pub tunnel_id: Uuid,
    pub client_id: Uuid,
    #[serde(default)]
    pub client_version: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub features: Vec<String>,
    pub conn_index: u8,
    #[serde(default)]
    pub colo_name: String,
    #[serde(default)]
    pub origin_ip: String,
    pub edge_id: String,
    /// When the connection opened; a reconciling edge sends the original time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub opened_at: Option<OffsetDateTime>,
    pub lease_secs: u64,
}

fn lease_expiry(secs: u64) -> i64 {
    let secs = secs.clamp(MIN_LEASE_SECS, MAX_LEASE_SECS);
    now_ms() + (secs as i64) * 1000
}

pub async fn register(
    State(st): State<AppState>,
    _: EdgeCaller,
    Json(r): Json<RegisterConnection>,
) -> ApiResult {
    if r.edge_id.is_empty() {
        return Err(ApiError::bad_request("edge_id is required"));
    }
    // Only live tunnels may hold connections; the account comes from the snapshot data.
    let snap_has = st
        .store
        .snapshot()?
        .tunnels
        .iter()
        .any(|t| t.id == r.tunnel_id);
    if !snap_has {
        return Err(ApiError::not_found(format!(
            "tunnel {} not found",
            r.tunnel_id
        )));
    }
    let rec = ConnectionRecord {
        id: r.id,
        tunnel_id: r.tunnel_id,
        client_id: r.client_id,
        client_version: r.client_version,
        arch: r.arch,
        features: r.features,
        conn_index: r.conn_index,
        colo_name: r.colo_name,
        origin_ip: r.origin_ip,
        edge_id: r.edge_id,
        opened_at: r
            .opened_at
            .unwrap_or_else(OffsetDateTime::now_utc)
            .replace_nanosecond(0)
            .unwrap_or_else(|_| OffsetDateTime::now_utc()),
        lease_expires_ms: lease_expiry(r.lease_secs),
    };
    st.store.register_connection(&rec)?;
    tracing::info!(conn = %rec.id, tunnel = %rec.tunnel_id, index = rec.conn_index, edge = %rec.edge_id, "connection registered");
    Ok(ok(
        json!({"id": rec.id, "lease_expires_ms": rec.lease_expires_ms}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct RenewLeases {
    pub edge_id: String,
    pub ids: Vec<Uuid>,
    pub lease_secs: u64,
}

pub async fn renew(
    State(st): State<AppState>,
    _: EdgeCaller,
    Json(r): Json<RenewLeases>,
) -> ApiResult {
    let expires = lease_expiry(r.lease_secs);
    let unknown = st.store.renew_leases(&r.edge_id, &r.ids, expires)?;
    Ok(ok(json!({"unknown": unknown, "lease_expires_ms": expires})))
}

pub async fn unregister(
    State(st): State<AppState>,
    _: EdgeCaller,
    Path(id): Path<Uuid>,
) -> ApiResult {
    let removed = st.store.unregister_connection(id)?;
    tracing::info!(conn = %id, removed, "connection unregistered");
    Ok(ok(json!({"id": id, "removed": removed})))
}
