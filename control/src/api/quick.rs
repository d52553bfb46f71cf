//! Quick tunnels: cloudflared's `--quick-service` endpoint (`POST /tunnel`), served when the
//! control plane runs with `--quick-zone ZONE`.
//!
//! - `POST /tunnel` (no authentication, as trycloudflare.com): a tunnel with a random 32-byte
//!   secret and a random name, and a proxied CNAME `<random>.<ZONE>` → `<uuid>.<suffix>`,
//!   answered as cloudflared's `QuickTunnelResponse`. At most `max_live` quick tunnels exist
//!   at once; past that, `429`.
//! - `DELETE /tunnel/{id}` with `Authorization: Bearer <base64 secret>`: only the holder of the
//!   tunnel's secret (the connector that asked for it) may delete it; the compare is
//!   constant-time.
//! - [`expire`]: a quick tunnel nobody connects to is deleted with its DNS record once it has
//!   had no registered connection for `lease` (counted from its creation, its last seen
//!   connection, or this server's start, whichever is latest), so a connector that died
//!   without its `DELETE` (SIGKILL, power loss) does not leave a hostname behind.
//!
//! Quick tunnels live in their own account ([`QUICK_ACCOUNT`]) with their own zone, so they
//! never appear in a user's account, and the isolation rule (a record routes only to a tunnel
//! of its own account) holds for them as for any other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use rand::TryRngCore as _;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ApiError, ApiResult, ok};
use crate::secret::TunnelSecret;
use crate::store::{Store, StoreError, StoreResult, Tunnel, TunnelFilter, Zone};

/// The account that owns every quick tunnel and the quick zone.
pub const QUICK_ACCOUNT: &str = "quick-tunnels";
/// Default for `--quick-max-tunnels`.
pub const DEFAULT_MAX_LIVE: usize = 100;
/// How often the lease is checked: bounds how long past its lease an idle tunnel lives.
const EXPIRY_TICK: Duration = Duration::from_secs(1);
/// Tries at a fresh random hostname when one is taken (by chance, or by a record an operator
/// made in the quick zone).
const HOSTNAME_TRIES: usize = 4;

/// The quick-tunnel service's settings and state; `None` in [`AppState`] when off.
#[derive(Debug)]
pub struct QuickTunnels {
    pub account_id: String,
    pub zone: Zone,
    /// A quick tunnel with no registered connection for this long is deleted.
    pub lease: Duration,
    /// Live quick tunnels allowed at once.
    pub max_live: usize,
    /// When each quick tunnel was last seen with a registered connection.
    last_connected: Mutex<HashMap<Uuid, OffsetDateTime>>,
    /// This server's start: a tunnel is never idle for longer than the server has watched it,
    /// so a restart gives connectors a whole lease to reconnect.
    started: OffsetDateTime,
    /// Serializes the count-then-create of `POST /tunnel`, so the cap holds under concurrency.
    create_lock: tokio::sync::Mutex<()>,
}

impl QuickTunnels {
    /// Finds or creates the quick account and `zone_name` in it. Refuses a zone that already
    /// belongs to another account: its records would mix quick and user hostnames.
    pub fn open(
        store: &dyn Store,
        zone_name: &str,
        lease: Duration,
        max_live: usize,
    ) -> Result<Self, QuickSetupError> {
        let account = match store.account_by_name(QUICK_ACCOUNT)? {
            Some(a) => a,
            None => store.create_account(QUICK_ACCOUNT)?,
        };
        let zone = match store.zone_by_name(zone_name)? {
            Some(z) if z.account_id != account.id => {
                return Err(QuickSetupError::ZoneTaken(zone_name.to_string()));
            }
            Some(z) => z,
            None => {
                let z = store.create_zone(&account.id, zone_name)?;
                tracing::info!(zone = %z.name, "quick tunnel zone created");
                z
            }
        };
        Ok(Self {
            account_id: account.id,
            zone,
            lease,
            max_live,
            last_connected: Mutex::new(HashMap::new()),
            started: OffsetDateTime::now_utc(),
            create_lock: tokio::sync::Mutex::new(()),
        })
    }
}

/// Why quick tunnels could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuickSetupError {
    #[error(
        "zone {0} belongs to a user account; quick tunnels need a zone of their own (pick another --quick-zone)"
    )]
    ZoneTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn not_enabled() -> ApiError {
    ApiError::not_found(
        "quick tunnels are not enabled on this control plane (start it with --quick-zone ZONE)",
    )
}

fn quick(st: &AppState) -> Result<&Arc<QuickTunnels>, ApiError> {
    st.quick.as_ref().ok_or_else(not_enabled)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .expect("the operating system's random number generator failed");
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The quick-tunnel account's tunnels that are not deleted.
fn live_tunnels(st: &AppState, q: &QuickTunnels) -> StoreResult<Vec<Tunnel>> {
    st.store.list_tunnels(
        &q.account_id,
        &TunnelFilter {
            is_deleted: Some(false),
            ..TunnelFilter::default()
        },
    )
}

/// `POST /tunnel`.
pub async fn create(State(st): State<AppState>) -> ApiResult {
    let q = quick(&st)?.clone();
    let _one_at_a_time = q.create_lock.lock().await;
    let live = live_tunnels(&st, &q)?;
    if live.len() >= q.max_live {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            1015,
            format!(
                "this control plane serves at most {} quick tunnels at once; retry later",
                q.max_live
            ),
        ));
    }
    let secret = TunnelSecret::generate();
    let name = format!("quick-{}", hex(&random_bytes::<8>()));
    let t = st
        .store
        .create_tunnel(&q.account_id, &name, secret.expose())?;
    let target = st.tunnel_target(t.id);
    let mut hostname = None;
    for _ in 0..HOSTNAME_TRIES {
        let host = format!("{}.{}", hex(&random_bytes::<6>()), q.zone.name);
        match st.store.route_dns(&q.zone.id, &host, &target, false) {
            Ok(_) => {
                hostname = Some(host);
                break;
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => {
                let _ = st.store.delete_tunnel(&q.account_id, t.id);
                return Err(e.into());
            }
        }
    }
    let Some(hostname) = hostname else {
        let _ = st.store.delete_tunnel(&q.account_id, t.id);
        return Err(ApiError::internal("no free quick tunnel hostname; retry"));
    };
    st.publish();
    tracing::info!(tunnel = %t.id, host = %hostname, "quick tunnel created");
    Ok(ok(json!({
        "id": t.id,
        "name": t.name,
        "hostname": hostname,
        "account_tag": q.account_id,
        "secret": secret.to_base64(),
    })))
}

/// `DELETE /tunnel/{id}`, authenticated by the tunnel's own secret.
pub async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let q = quick(&st)?.clone();
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad_request(format!("{id} is not a valid tunnel ID")))?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|b64| TunnelSecret::from_base64(b64.trim()).ok())
        .ok_or_else(ApiError::unauthorized)?;
    let gone = || ApiError::not_found(format!("no quick tunnel {id}"));
    match st.store.tunnel(&q.account_id, id)? {
        Some(t) if t.deleted_at.is_none() => {}
        _ => return Err(gone()),
    }
    let stored = TunnelSecret::new(st.store.tunnel_secret(&q.account_id, id)?)
        .map_err(|_| ApiError::unauthorized())?;
    if stored != presented {
        return Err(ApiError::unauthorized());
    }
    remove(&st, &q, id)?;
    tracing::info!(tunnel = %id, "quick tunnel deleted by its connector");
    Ok(ok(json!({"id": id})))
}

/// Deletes quick tunnel `id` and the DNS records that point at it.
fn remove(st: &AppState, q: &QuickTunnels, id: Uuid) -> StoreResult<()> {
    let target = st.tunnel_target(id);
    for rec in st.store.list_dns(&q.zone.id, None)? {
        if rec.content == target {
            st.store.delete_dns(&q.zone.id, &rec.id)?;
        }
    }
    st.store.delete_tunnel(&q.account_id, id)?;
    q.last_connected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    st.publish();
    Ok(())
}

/// One lease check: returns how many idle quick tunnels were deleted.
fn expire_once(st: &AppState, q: &QuickTunnels, now: OffsetDateTime) -> StoreResult<usize> {
    let live = live_tunnels(st, q)?;
    let mut idle = Vec::new();
    {
        let mut seen = q.last_connected.lock().unwrap_or_else(|p| p.into_inner());
        for t in &live {
            if !st.store.list_connections(t.id)?.is_empty() {
                seen.insert(t.id, now);
                continue;
            }
            let since = [
                t.created_at,
                q.started,
                *seen.get(&t.id).unwrap_or(&q.started),
            ]
            .into_iter()
            .max()
            .unwrap_or(now);
            if now - since >= q.lease {
                idle.push(t.id);
            }
        }
    }
    for id in &idle {
        remove(st, q, *id)?;
        tracing::info!(tunnel = %id, lease = ?q.lease, "quick tunnel deleted: no connection within its lease");
    }
    Ok(idle.len())
}

/// Deletes idle quick tunnels for the life of the server; returns at once when quick tunnels
/// are off.
pub async fn expire(st: AppState) {
    let Some(q) = st.quick.clone() else { return };
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    loop {
        tick.tick().await;
        if let Err(e) = expire_once(&st, &q, OffsetDateTime::now_utc()) {
            tracing::error!(error = %e, "quick tunnel lease check failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn state(lease: Duration, max_live: usize) -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let mut st = AppState::new(Arc::new(store), "cfargotunnel.test".into()).unwrap();
        let q = QuickTunnels::open(&*st.store, "try.test", lease, max_live).unwrap();
        st.quick = Some(Arc::new(q));
        (dir, st)
    }

    async fn body(r: axum::response::Response) -> serde_json::Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn create_answers_cloudflareds_shape_routes_the_hostname_and_caps_live_tunnels() {
        let (_d, st) = state(Duration::from_secs(60), 2);
        let r = body(create(State(st.clone())).await.unwrap()).await;
        assert_eq!(r["success"], true);
        let res = &r["result"];
        let id = Uuid::parse_str(res["id"].as_str().unwrap()).unwrap();
        let host = res["hostname"].as_str().unwrap();
        assert!(host.ends_with(".try.test"), "{host}");
        let secret = TunnelSecret::from_base64(res["secret"].as_str().unwrap()).unwrap();
        assert_eq!(secret.expose().len(), 32);
        let q = st.quick.clone().unwrap();
        assert_eq!(res["account_tag"], q.account_id);
        let recs = st.store.list_dns(&q.zone.id, Some(host)).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].content, st.tunnel_target(id));
        assert!(recs[0].proxied);
        create(State(st.clone())).await.unwrap();
        let third = create(State(st.clone())).await.unwrap_err();
        assert_eq!(
            axum::response::IntoResponse::into_response(third).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn delete_needs_the_tunnels_own_secret_and_removes_tunnel_and_record() {
        let (_d, st) = state(Duration::from_secs(60), 10);
        let r = body(create(State(st.clone())).await.unwrap()).await;
        let id = r["result"]["id"].as_str().unwrap().to_string();
        let secret = r["result"]["secret"].as_str().unwrap().to_string();
        let del = |auth: Option<String>| {
            let mut h = HeaderMap::new();
            if let Some(a) = auth {
                h.insert(header::AUTHORIZATION, a.parse().unwrap());
            }
            delete(State(st.clone()), Path(id.clone()), h)
        };
        let status = |e: ApiError| axum::response::IntoResponse::into_response(e).status();
        assert_eq!(
            status(del(None).await.unwrap_err()),
            StatusCode::UNAUTHORIZED
        );
        let wrong = TunnelSecret::generate().to_base64();
        assert_eq!(
            status(del(Some(format!("Bearer {wrong}"))).await.unwrap_err()),
            StatusCode::UNAUTHORIZED
        );
        del(Some(format!("Bearer {secret}"))).await.unwrap();
        let q = st.quick.clone().unwrap();
        assert!(st.store.list_dns(&q.zone.id, None).unwrap().is_empty());
        let live = st
            .store
            .list_tunnels(
                &q.account_id,
                &TunnelFilter {
                    is_deleted: Some(false),
                    ..TunnelFilter::default()
                },
            )
            .unwrap();
        assert!(live.is_empty());
        assert_eq!(
            status(del(Some(format!("Bearer {secret}"))).await.unwrap_err()),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn an_idle_quick_tunnel_outlives_its_lease_only_until_the_next_check() {
        let lease = Duration::from_secs(60);
        let (_d, st) = state(lease, 10);
        body(create(State(st.clone())).await.unwrap()).await;
        let q = st.quick.clone().unwrap();
        let now = OffsetDateTime::now_utc();
        assert_eq!(expire_once(&st, &q, now).unwrap(), 0);
        assert_eq!(expire_once(&st, &q, now + lease).unwrap(), 1);
        assert!(st.store.list_dns(&q.zone.id, None).unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_quick_zone_the_endpoint_says_it_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let st = AppState::new(Arc::new(store), "cfargotunnel.test".into()).unwrap();
        let e = create(State(st)).await.unwrap_err();
        let r = axum::response::IntoResponse::into_response(e);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let v = body(r).await;
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("--quick-zone")
        );
    }
}
