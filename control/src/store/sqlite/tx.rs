//! Helpers that run inside a caller's transaction: the DNS address-record rules, and the
//! pool and load-balancer upserts that routing shares with the CRUD calls.

use rusqlite::{Connection, OptionalExtension, params};

use super::super::*;
use super::rows::*;

pub(super) fn is_address_type(t: &str) -> bool {
    matches!(t, "A" | "AAAA" | "CNAME")
}

pub(super) fn address_conflict(name: &str) -> String {
    format!("An A, AAAA, or CNAME record with that host already exists: {name}")
}

/// The address-record rule for writing `rec`: a CNAME shares its name with no A, AAAA or
/// CNAME, and nothing shares a name with a CNAME. `except` is the record being replaced.
pub(super) fn check_address_clash(
    tx: &Connection,
    zone_id: &str,
    rec: &NewDnsRecord,
    except: Option<&str>,
) -> StoreResult<()> {
    if !is_address_type(&rec.record_type) {
        return Ok(());
    }
    let others: Vec<DnsRecord> = address_records_tx(tx, zone_id, &rec.name)?
        .into_iter()
        .filter(|r| Some(r.id.as_str()) != except)
        .collect();
    if !others.is_empty()
        && (rec.record_type == "CNAME" || others.iter().any(|r| r.record_type == "CNAME"))
    {
        return Err(StoreError::Conflict(address_conflict(&rec.name)));
    }
    Ok(())
}

pub(super) fn address_records_tx(
    tx: &Connection,
    zone_id: &str,
    name: &str,
) -> rusqlite::Result<Vec<DnsRecord>> {
    let mut st = tx.prepare(&format!(
        "SELECT {DNS_COLS} FROM dns_records d JOIN zones z ON z.id = d.zone_id \
         WHERE d.zone_id = ?1 AND d.name = ?2 AND d.type IN ('A', 'AAAA', 'CNAME') ORDER BY d.id"
    ))?;
    st.query_map(params![zone_id, name.to_ascii_lowercase()], dns_row)?
        .collect()
}

pub(super) fn dns_by_id_tx(tx: &Connection, id: &str) -> rusqlite::Result<DnsRecord> {
    tx.query_row(
        &format!(
            "SELECT {DNS_COLS} FROM dns_records d JOIN zones z ON z.id = d.zone_id WHERE d.id = ?1"
        ),
        [id],
        dns_row,
    )
}

pub(super) fn insert_dns_tx(
    tx: &Connection,
    zone_id: &str,
    rec: &NewDnsRecord,
) -> rusqlite::Result<String> {
    let id = new_object_id();
    write_dns_tx(
        tx,
        "INSERT INTO dns_records \
         (zone_id, id, type, name, content, proxied, ttl, created_on, modified_on) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        zone_id,
        &id,
        rec,
    )?;
    Ok(id)
}

pub(super) fn update_dns_tx(
    tx: &Connection,
    zone_id: &str,
    id: &str,
    rec: &NewDnsRecord,
) -> rusqlite::Result<usize> {
    write_dns_tx(
        tx,
        "UPDATE dns_records SET type = ?3, name = ?4, content = ?5, proxied = ?6, \
         ttl = ?7, modified_on = ?8 WHERE zone_id = ?1 AND id = ?2",
        zone_id,
        id,
        rec,
    )
}

/// Runs an insert or update of one DNS record; `sql` numbers its parameters as zone id, record
/// id, then the record's fields and the modification time, so both statements store a record
/// the same way (names lower-cased).
fn write_dns_tx(
    tx: &Connection,
    sql: &str,
    zone_id: &str,
    id: &str,
    rec: &NewDnsRecord,
) -> rusqlite::Result<usize> {
    tx.execute(
        sql,
        params![
            zone_id,
            id,
            rec.record_type,
            rec.name.to_ascii_lowercase(),
            rec.content,
            rec.proxied,
            rec.ttl,
            fmt_time(now())
        ],
    )
}

/// The error for a row that its own transaction just wrote and then could not read back.
pub(super) fn vanished(what: &str) -> StoreError {
    StoreError::Backend(format!("{what} vanished inside its transaction"))
}

pub(super) fn upsert_pool_tx(
    tx: &Connection,
    account_id: &str,
    name: &str,
    origins: &[PoolOrigin],
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO pools (id, account_id, name, enabled, origins, created_on, modified_on) \
         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5) \
         ON CONFLICT (account_id, name) DO UPDATE SET origins = excluded.origins, \
         modified_on = excluded.modified_on",
        params![
            new_object_id(),
            account_id,
            name,
            to_json(&origins),
            fmt_time(now())
        ],
    )?;
    Ok(())
}

pub(super) fn pool_by_name_tx(
    tx: &Connection,
    account_id: &str,
    name: &str,
) -> rusqlite::Result<Option<Pool>> {
    tx.query_row(
        &format!("SELECT {POOL_COLS} FROM pools WHERE account_id = ?1 AND name = ?2"),
        params![account_id, name],
        pool_row,
    )
    .optional()
}

pub(super) fn upsert_lb_tx(
    tx: &Connection,
    zone_id: &str,
    name: &str,
    default_pools: &[String],
    fallback_pool: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO load_balancers (id, zone_id, name, default_pools, fallback_pool, \
         proxied, enabled, created_on, modified_on) VALUES (?1, ?2, ?3, ?4, ?5, 1, 1, ?6, ?6) \
         ON CONFLICT (zone_id, name) DO UPDATE SET default_pools = excluded.default_pools, \
         fallback_pool = excluded.fallback_pool, modified_on = excluded.modified_on",
        params![
            new_object_id(),
            zone_id,
            name.to_ascii_lowercase(),
            to_json(&default_pools),
            fallback_pool,
            fmt_time(now())
        ],
    )?;
    Ok(())
}

pub(super) fn lb_by_name_tx(
    tx: &Connection,
    zone_id: &str,
    name: &str,
) -> rusqlite::Result<Option<LoadBalancer>> {
    tx.query_row(
        &format!("SELECT {LB_COLS} FROM load_balancers WHERE zone_id = ?1 AND name = ?2"),
        params![zone_id, name.to_ascii_lowercase()],
        lb_row,
    )
    .optional()
}
