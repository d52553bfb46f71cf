//! DNS records and tunnel routes (`PUT /zones/{zone}/tunnels/{id}/routes`).
//!
//! A tunnel hostname is a proxied CNAME to `<uuid>.<suffix>`. Names are unique per type the way
//! Cloudflare enforces it: a CNAME cannot share its name with any A, AAAA or CNAME record.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ApiError, ApiResult, ok, ok_list};
use super::isolation::check_tunnel_target;
use super::lb;
use super::scope::{ObjectId, ZoneScope, parse_tunnel_id};
use crate::hostname::hostname_in_zone;
use crate::store::{NewDnsRecord, StoreError, Zone};

const RECORD_TYPES: [&str; 6] = ["A", "AAAA", "CNAME", "TXT", "MX", "NS"];

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    name: Option<String>,
    #[serde(rename = "type")]
    record_type: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let mut recs = st.store.list_dns(&zone.id, q.name.as_deref())?;
    if let Some(t) = &q.record_type {
        recs.retain(|r| r.record_type.eq_ignore_ascii_case(t));
    }
    Ok(ok_list(recs))
}

pub async fn get_one(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    ObjectId(id): ObjectId,
) -> ApiResult {
    let rec = st
        .store
        .list_dns(&zone.id, None)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found(format!("DNS record {id} not found")))?;
    Ok(ok(rec))
}

/// Validates a record against its zone and returns it normalized. A CNAME that names a
/// tunnel must name a live tunnel of the zone's own account, as exactly `<uuid>.<suffix>`.
fn check_record(
    st: &AppState,
    zone: &Zone,
    mut rec: NewDnsRecord,
) -> Result<NewDnsRecord, ApiError> {
    rec.record_type = rec.record_type.to_ascii_uppercase();
    if !RECORD_TYPES.contains(&rec.record_type.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unsupported DNS record type {}",
            rec.record_type
        )));
    }
    rec.name = hostname_in_zone(&rec.name, &zone.name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if rec.content.trim().is_empty() {
        return Err(ApiError::bad_request("DNS record content is required"));
    }
    match rec.record_type.as_str() {
        "A" if rec.content.parse::<std::net::Ipv4Addr>().is_err() => {
            return Err(ApiError::bad_request(
                "A record content must be an IPv4 address",
            ));
        }
        "AAAA" if rec.content.parse::<std::net::Ipv6Addr>().is_err() => {
            return Err(ApiError::bad_request(
                "AAAA record content must be an IPv6 address",
            ));
        }
        "CNAME" => {
            if let Some(target) = check_tunnel_target(st, &zone.account_id, &rec.content)? {
                rec.content = target;
            }
        }
        _ => {}
    }
    Ok(rec)
}

pub async fn create(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    Json(rec): Json<NewDnsRecord>,
) -> ApiResult {
    let rec = check_record(&st, &zone, rec)?;
    let out = st.store.create_dns(&zone.id, &rec).map_err(name_clash)?;
    st.publish();
    Ok(ok(out))
}

/// Cloudflare's code and status for a name clash between address records.
fn name_clash(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::new(axum::http::StatusCode::BAD_REQUEST, 81053, m),
        other => other.into(),
    }
}

/// The fields `PATCH /zones/{zone}/dns_records/{id}` may change; absent ones keep their value.
#[derive(Debug, Deserialize)]
pub struct DnsPatch {
    #[serde(rename = "type")]
    record_type: Option<String>,
    name: Option<String>,
    content: Option<String>,
    proxied: Option<bool>,
    ttl: Option<u32>,
}

/// `PATCH /zones/{zone}/dns_records/{id}`: changes some fields of a record, then checks the
/// result exactly as create does.
pub async fn patch(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    ObjectId(id): ObjectId,
    Json(p): Json<DnsPatch>,
) -> ApiResult {
    let cur = st
        .store
        .list_dns(&zone.id, None)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found(format!("DNS record {id} not found")))?;
    let rec = NewDnsRecord {
        record_type: p.record_type.unwrap_or(cur.record_type),
        name: p.name.unwrap_or(cur.name),
        content: p.content.unwrap_or(cur.content),
        proxied: p.proxied.unwrap_or(cur.proxied),
        ttl: p.ttl.unwrap_or(cur.ttl),
    };
    replace_record(&st, &zone, &id, rec)
}

/// `PUT /zones/{zone}/dns_records/{id}`: replaces a record, with the same checks as create.
pub async fn update(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    ObjectId(id): ObjectId,
    Json(rec): Json<NewDnsRecord>,
) -> ApiResult {
    replace_record(&st, &zone, &id, rec)
}

/// Stores `rec` as record `id` after the checks create makes (PUT and PATCH end here).
fn replace_record(st: &AppState, zone: &Zone, id: &str, rec: NewDnsRecord) -> ApiResult {
    let rec = check_record(st, zone, rec)?;
    let out = st
        .store
        .update_dns(&zone.id, id, &rec)
        .map_err(name_clash)?;
    st.publish();
    Ok(ok(out))
}

pub async fn delete_one(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    ObjectId(id): ObjectId,
) -> ApiResult {
    st.store.delete_dns(&zone.id, &id)?;
    st.publish();
    Ok(ok(json!({"id": id})))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RouteRequest {
    Dns {
        user_hostname: String,
        #[serde(default)]
        overwrite_existing: bool,
    },
    Lb {
        lb_name: String,
        lb_pool: String,
    },
}

pub async fn route(
    State(st): State<AppState>,
    ZoneScope(zone): ZoneScope,
    ObjectId(id): ObjectId,
    Json(req): Json<RouteRequest>,
) -> ApiResult {
    let id = parse_tunnel_id(&id)?;
    let tunnel = st
        .store
        .tunnel(&zone.account_id, id)?
        .filter(|t| t.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("tunnel {id} not found")))?;
    match req {
        RouteRequest::Dns {
            user_hostname,
            overwrite_existing,
        } => route_dns(&st, &zone, tunnel.id, &user_hostname, overwrite_existing),
        RouteRequest::Lb { lb_name, lb_pool } => {
            lb::route_lb(&st, &zone, tunnel.id, &lb_name, &lb_pool)
        }
    }
}

fn route_dns(st: &AppState, zone: &Zone, id: Uuid, host: &str, overwrite: bool) -> ApiResult {
    let name =
        hostname_in_zone(host, &zone.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let change = st
        .store
        .route_dns(&zone.id, &name, &st.tunnel_target(id), overwrite)
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                1003,
                format!(
                    "Failed to create record {name} with err {m}. Use --overwrite-dns to replace it"
                ),
            ),
            other => other.into(),
        })?;
    st.publish();
    tracing::info!(tunnel = %id, host = %name, change = change.as_str(), "dns route");
    Ok(ok(json!({"cname": change.as_str(), "name": name})))
}
