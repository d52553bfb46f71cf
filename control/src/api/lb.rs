//! Load-balancer pools (per account) and load balancers (per zone hostname), enough for
//! `tunnel route lb` and for listing. An origin whose address is `<uuid>.<suffix>` is a tunnel.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ApiError, ApiResult, ok, ok_list};
use super::isolation::check_tunnel_target;
use super::scope::{AccountScope, ObjectId, ZoneScope};
use crate::hostname::hostname_in_zone;
use crate::store::{PoolOrigin, Zone};

/// Pool names follow cloudflared's check for `route lb`.
fn valid_pool_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphanumeric())
        && chars.all(|c| c == '_' || c == '-' || c == '.' || c.is_ascii_alphanumeric())
}

pub async fn list_pools(State(st): State<AppState>, AccountScope(acct): AccountScope) -> ApiResult {
    Ok(ok_list(st.store.list_pools(&acct)?))
}

#[derive(Debug, Deserialize)]
pub struct NewPool {
    name: String,
    origins: Vec<PoolOrigin>,
}

pub async fn create_pool(
    State(st): State<AppState>,
    AccountScope(acct): AccountScope,
    Json(mut body): Json<NewPool>,
) -> ApiResult {
    // An origin naming a tunnel must name one of this account's, like a DNS record.
    for o in &mut body.origins {
        if let Some(target) = check_tunnel_target(&st, &acct, &o.address)? {
            o.address = target;
        }
    }
    if !valid_pool_name(&body.name) {
        return Err(ApiError::bad_request(format!(
            "{} is not a valid pool name",
            body.name
        )));
    }
    if body
        .origins
        .iter()
        .any(|o| o.weight < 0.0 || o.weight > 1.0)
    {
        return Err(ApiError::bad_request(
            "origin weight must be between 0 and 1",
        ));
    }
    let pool = st.store.upsert_pool(&acct, &body.name, &body.origins)?;
    st.publish();
    Ok(ok(pool))
}

pub async fn delete_pool(
    State(st): State<AppState>,
    AccountScope(acct): AccountScope,
    ObjectId(id): ObjectId,
) -> ApiResult {
    // A pool still referenced by a load balancer would leave it pointing nowhere.
    for zone in st.store.list_zones(Some(&acct))? {
        if let Some(lb) = st
            .store
            .list_load_balancers(&zone.id)?
            .into_iter()
            .find(|lb| lb.default_pools.contains(&id) || lb.fallback_pool == id)
        {
            return Err(ApiError::bad_request(format!(
                "pool {id} is used by load balancer {}",
                lb.name
            )));
        }
    }
    st.store.delete_pool(&acct, &id)?;
    st.publish();
    Ok(ok(json!({"id": id})))
}

pub async fn list_lbs(State(st): State<AppState>, ZoneScope(zone): ZoneScope) -> ApiResult {
    Ok(ok_list(st.store.list_load_balancers(&zone.id)?))
}

#[derive(Debug, Deserialize)]
pub struct NewLb {
    name: String,
    default_pools: Vec<String>,
    fallback_pool: Option<String>,
}

pub async fn create_lb(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    Json(body): Json<NewLb>,
) -> ApiResult {
    let name = hostname_in_zone(&body.name, &zone.name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let pools = st.store.list_pools(&zone.account_id)?;
    let fallback = body
        .fallback_pool
        .clone()
        .or_else(|| body.default_pools.first().cloned())
        .ok_or_else(|| ApiError::bad_request("a load balancer needs at least one pool"))?;
    for p in body.default_pools.iter().chain(std::iter::once(&fallback)) {
        if !pools.iter().any(|x| &x.id == p) {
            return Err(ApiError::bad_request(format!("pool {p} does not exist")));
        }
    }
    let lb = st
        .store
        .upsert_load_balancer(&zone.id, &name, &body.default_pools, &fallback)?;
    st.publish();
    Ok(ok(lb))
}

pub async fn delete_lb(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    ObjectId(id): ObjectId,
) -> ApiResult {
    st.store.delete_load_balancer(&zone.id, &id)?;
    st.publish();
    Ok(ok(json!({"id": id})))
}

/// `route lb`: make `pool_name` hold this tunnel as an origin and `lb_name` use that pool.
/// Reports `new` / `updated` / `unchanged` for each, the words cloudflared turns into its
/// summary line.
pub fn route_lb(st: &AppState, zone: &Zone, id: Uuid, lb_name: &str, pool_name: &str) -> ApiResult {
    let lb_host = hostname_in_zone(lb_name, &zone.name).map_err(|_| {
        ApiError::bad_request(format!(
            "{lb_name} is not a valid load balancer name in zone {}",
            zone.name
        ))
    })?;
    if !valid_pool_name(pool_name) {
        return Err(ApiError::bad_request(format!(
            "{pool_name} is not a valid pool name"
        )));
    }
    let origin = PoolOrigin {
        name: id.to_string(),
        address: st.tunnel_target(id),
        enabled: true,
        weight: 1.0,
    };
    let (lb_change, pool_change) =
        st.store
            .route_lb(&zone.account_id, &zone.id, &lb_host, pool_name, &origin)?;
    st.publish();
    tracing::info!(tunnel = %id, lb = %lb_host, pool = %pool_name, lb_change = lb_change.as_str(), pool_change = pool_change.as_str(), "lb route");
    Ok(ok(
        json!({"load_balancer": lb_change.as_str(), "pool": pool_change.as_str()}),
    ))
}
