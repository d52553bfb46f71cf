//! Rows ↔ types: the column lists each query selects, the row mappers, and the text encodings
//! (RFC 3339 times, UUIDs, JSON) the tables use.

use rusqlite::{Connection, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::super::*;

pub(super) fn now() -> OffsetDateTime {
    // Cloudflare's API reports times at second resolution; sub-seconds only add noise.
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc())
}

pub(super) fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub(super) fn parse_time(s: &str) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn parse_uuid(s: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A write's error as the store reports it: a uniqueness clash becomes `Conflict` with the
/// caller's message (made only then), anything else stays a backend error.
pub(super) fn conflict_if_unique(
    e: rusqlite::Error,
    message: impl FnOnce() -> String,
) -> StoreError {
    if matches!(&e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
    {
        StoreError::Conflict(message())
    } else {
        e.into()
    }
}

/// Bumps the snapshot version inside the caller's transaction.
pub(super) fn bump_version(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'snapshot_version'",
        [],
    )?;
    Ok(())
}

pub(super) const TUNNEL_COLS: &str = "id, account_id, name, created_at, deleted_at, secret_sha256";

pub(super) fn tunnel_row(r: &Row<'_>) -> rusqlite::Result<Tunnel> {
    let deleted: Option<String> = r.get(4)?;
    Ok(Tunnel {
        id: parse_uuid(&r.get::<_, String>(0)?)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        created_at: parse_time(&r.get::<_, String>(3)?)?,
        deleted_at: deleted.as_deref().map(parse_time).transpose()?,
        secret_sha256: r.get(5)?,
    })
}

pub(super) const DNS_COLS: &str = "d.id, d.zone_id, z.name, d.type, d.name, d.content, d.proxied, d.ttl, \
                        d.created_on, d.modified_on";

pub(super) fn dns_row(r: &Row<'_>) -> rusqlite::Result<DnsRecord> {
    Ok(DnsRecord {
        id: r.get(0)?,
        zone_id: r.get(1)?,
        zone_name: r.get(2)?,
        record_type: r.get(3)?,
        name: r.get(4)?,
        content: r.get(5)?,
        proxied: r.get(6)?,
        ttl: r.get(7)?,
        created_on: parse_time(&r.get::<_, String>(8)?)?,
        modified_on: parse_time(&r.get::<_, String>(9)?)?,
    })
}

pub(super) const POOL_COLS: &str =
    "id, account_id, name, enabled, origins, created_on, modified_on";

pub(super) fn pool_row(r: &Row<'_>) -> rusqlite::Result<Pool> {
    Ok(Pool {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        enabled: r.get(3)?,
        origins: parse_json(&r.get::<_, String>(4)?)?,
        created_on: parse_time(&r.get::<_, String>(5)?)?,
        modified_on: parse_time(&r.get::<_, String>(6)?)?,
    })
}

pub(super) const LB_COLS: &str =
    "id, zone_id, name, default_pools, fallback_pool, proxied, enabled, created_on, modified_on";

pub(super) fn lb_row(r: &Row<'_>) -> rusqlite::Result<LoadBalancer> {
    Ok(LoadBalancer {
        id: r.get(0)?,
        zone_id: r.get(1)?,
        name: r.get(2)?,
        default_pools: parse_json(&r.get::<_, String>(3)?)?,
        fallback_pool: r.get(4)?,
        proxied: r.get(5)?,
        enabled: r.get(6)?,
        created_on: parse_time(&r.get::<_, String>(7)?)?,
        modified_on: parse_time(&r.get::<_, String>(8)?)?,
    })
}

pub(super) const CONN_COLS: &str = "id, tunnel_id, client_id, client_version, arch, features, conn_index, \
                         colo_name, origin_ip, edge_id, opened_at, lease_expires_ms";

pub(super) fn conn_row(r: &Row<'_>) -> rusqlite::Result<ConnectionRecord> {
    Ok(ConnectionRecord {
        id: parse_uuid(&r.get::<_, String>(0)?)?,
        tunnel_id: parse_uuid(&r.get::<_, String>(1)?)?,
        client_id: parse_uuid(&r.get::<_, String>(2)?)?,
        client_version: r.get(3)?,
        arch: r.get(4)?,
        features: parse_json(&r.get::<_, String>(5)?)?,
        conn_index: r.get(6)?,
        colo_name: r.get(7)?,
        origin_ip: r.get(8)?,
        edge_id: r.get(9)?,
        opened_at: parse_time(&r.get::<_, String>(10)?)?,
        lease_expires_ms: r.get(11)?,
    })
}

pub(super) fn account_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        created_on: parse_time(&r.get::<_, String>(2)?)?,
    })
}

pub(super) fn zone_row(r: &Row<'_>) -> rusqlite::Result<Zone> {
    Ok(Zone {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        created_on: parse_time(&r.get::<_, String>(3)?)?,
    })
}
