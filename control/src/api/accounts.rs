//! Accounts and zones. Only the operator creates them; a zone token sees its own.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::envelope::{ApiError, ApiResult, ok, ok_list};
use super::scope::Operator;
use crate::hostname::normalize_hostname;
use crate::store::{TokenScope, Zone};

#[derive(Debug, Deserialize)]
pub struct NewAccount {
    name: String,
}

pub async fn create_account(
    State(st): State<AppState>,
    _: Operator,
    Json(body): Json<NewAccount>,
) -> ApiResult {
    let name = body.name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request("account name required"));
    }
    Ok(ok(st.store.create_account(name)?))
}

pub async fn list_accounts(State(st): State<AppState>, caller: Caller) -> ApiResult {
    let all = st.store.list_accounts()?;
    let visible = match &caller.0 {
        TokenScope::Operator => all,
        TokenScope::Zone { account_id, .. } => {
            all.into_iter().filter(|a| &a.id == account_id).collect()
        }
        TokenScope::Edge => return Err(ApiError::forbidden("edges may not list accounts")),
    };
    Ok(ok_list(visible))
}

#[derive(Debug, Deserialize)]
pub struct AccountRef {
    id: String,
}

#[derive(Debug, Deserialize)]
pub struct NewZone {
    name: String,
    account: AccountRef,
}

pub async fn create_zone(
    State(st): State<AppState>,
    _: Operator,
    Json(body): Json<NewZone>,
) -> ApiResult {
    let name = normalize_hostname(&body.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if name.starts_with('*') {
        return Err(ApiError::bad_request(format!(
            "{name} is not a valid zone name"
        )));
    }
    if st.store.account(&body.account.id)?.is_none() {
        return Err(ApiError::not_found(format!(
            "account {} not found",
            body.account.id
        )));
    }
    Ok(ok(zone_json(
        &st.store.create_zone(&body.account.id, &name)?,
    )))
}

#[derive(Debug, Deserialize)]
pub struct ZoneQuery {
    name: Option<String>,
}

pub async fn list_zones(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<ZoneQuery>,
) -> ApiResult {
    let zones = match &caller.0 {
        TokenScope::Operator => st.store.list_zones(None)?,
        TokenScope::Zone { zone_id, .. } => st.store.zone(zone_id)?.into_iter().collect(),
        TokenScope::Edge => return Err(ApiError::forbidden("edges may not list zones")),
    };
    let zones = zones
        .iter()
        .filter(|z| {
            q.name
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(&z.name))
        })
        .map(zone_json)
        .collect();
    Ok(ok_list::<serde_json::Value>(zones))
}

/// Cloudflare's zone object nests the account.
fn zone_json(z: &Zone) -> serde_json::Value {
    json!({
        "id": z.id,
        "name": z.name,
        "status": "active",
        "account": {"id": z.account_id},
        "created_on": z.created_on.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    })
}
