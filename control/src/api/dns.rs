//! DNS records and tunnel routes (`PUT /zones/{zone}/tunnels/{id}/routes`).
//!
//! A tunnel hostname is a proxied CNAME to `<uuid>.<suffix>`. Names are unique per type the way
//! Cloudflare enforces it: a CNAME cannot share its name with any A, AAAA or CNAME record.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::accounts::zone_for;
use super::auth::Caller;
use super::envelope::{ApiError, ApiResult, ok, ok_list};
use super::lb;
use crate::hostname::hostname_in_zone;
use crate::store::{DnsRecord, NewDnsRecord, Zone};

const ADDRESS_TYPES: [&str; 3] = ["A", "AAAA", "CNAME"];
const RECORD_TYPES: [&str; 6] = ["A", "AAAA", "CNAME", "TXT", "MX", "NS"];

fn conflict_message(name: &str) -> String {
    format!("An A, AAAA, or CNAME record with that host already exists: {name}")
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    name: Option<String>,
    #[serde(rename = "type")]
    record_type: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Path(zone): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let zone = zone_for(&st, &caller, &zone)?;
    let mut recs = st.store.list_dns(&zone.id, q.name.as_deref())?;
    if let Some(t) = &q.record_type {
        recs.retain(|r| r.record_type.eq_ignore_ascii_case(t));
    }
    Ok(ok_list(recs))
}

pub async fn get_one(
    State(st): State<AppState>,
    caller: Caller,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = zone_for(&st, &caller, &zone)?;
    let rec = st
        .store
        .list_dns(&zone.id, None)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found(format!("DNS record {id} not found")))?;
    Ok(ok(rec))
}

/// Validates a record against its zone and returns it normalized.
fn check_record(zone: &Zone, mut rec: NewDnsRecord) -> Result<NewDnsRecord, ApiError> {
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
        _ => {}
    }
    Ok(rec)
}

/// Records that block `name` from holding an address-type record.
fn address_records(st: &AppState, zone: &Zone, name: &str) -> Result<Vec<DnsRecord>, ApiError> {
    Ok(st
        .store
        .list_dns(&zone.id, Some(name))?
        .into_iter()
        .filter(|r| ADDRESS_TYPES.contains(&r.record_type.as_str()))
        .collect())
}

pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Path(zone): Path<String>,
    Json(rec): Json<NewDnsRecord>,
) -> ApiResult {
    let zone = zone_for(&st, &caller, &zone)?;
    let rec = check_record(&zone, rec)?;
    if ADDRESS_TYPES.contains(&rec.record_type.as_str()) {
        let existing = address_records(&st, &zone, &rec.name)?;
        // A and AAAA may repeat; a CNAME must stand alone.
        if existing
            .iter()
            .any(|r| r.record_type == "CNAME" || rec.record_type == "CNAME")
        {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                81053,
                conflict_message(&rec.name),
            ));
        }
    }
    let out = st.store.create_dns(&zone.id, &rec)?;
    st.publish();
    Ok(ok(out))
}

pub async fn delete_one(
    State(st): State<AppState>,
    caller: Caller,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = zone_for(&st, &caller, &zone)?;
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
    caller: Caller,
    Path((zone, id)): Path<(String, String)>,
    Json(req): Json<RouteRequest>,
) -> ApiResult {
    let zone = zone_for(&st, &caller, &zone)?;
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad_request(format!("{id} is not a valid tunnel id")))?;
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
    let target = st.tunnel_target(id);
    let want = NewDnsRecord {
        record_type: "CNAME".into(),
        name: name.clone(),
        content: target.clone(),
        proxied: true,
        ttl: 1,
    };
    let existing = address_records(st, zone, &name)?;
    let change = match existing.as_slice() {
        [] => {
            st.store.create_dns(&zone.id, &want)?;
            "new"
        }
        [only] if only.record_type == "CNAME" && only.content == target && only.proxied => {
            "unchanged"
        }
        [first, rest @ ..] if overwrite => {
            for r in rest {
                st.store.delete_dns(&zone.id, &r.id)?;
            }
            st.store.update_dns(&zone.id, &first.id, &want)?;
            "updated"
        }
        _ => {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                1003,
                format!(
                    "Failed to create record {name} with err {}. Use --overwrite-dns to replace it",
                    conflict_message(&name)
                ),
            ));
        }
    };
    st.publish();
    tracing::info!(tunnel = %id, host = %name, change, "dns route");
    Ok(ok(json!({"cname": change, "name": name})))
}
