//! Routing a hostname to a tunnel or a load balancer: one transaction that checks the
//! address-record rules, writes the CNAME (and the pool) and bumps the snapshot version.

use rusqlite::Connection;

use super::super::*;
use super::rows::*;
use super::tx::*;

pub(super) fn route_dns(
    c: &mut Connection,
    zone_id: &str,
    name: &str,
    target: &str,
    overwrite: bool,
) -> StoreResult<Change> {
    let want = NewDnsRecord {
        record_type: "CNAME".into(),
        name: name.to_string(),
        content: target.to_string(),
        proxied: true,
        ttl: 1,
    };
    let tx = c.transaction()?;
    let existing = address_records_tx(&tx, zone_id, name)?;
    let change = match existing.as_slice() {
        [] => {
            insert_dns_tx(&tx, zone_id, &want)?;
            Change::New
        }
        [only] if only.record_type == "CNAME" && only.content == target && only.proxied => {
            return Ok(Change::Unchanged);
        }
        [first, rest @ ..] if overwrite => {
            for r in rest {
                tx.execute("DELETE FROM dns_records WHERE id = ?1", [&r.id])?;
            }
            update_dns_tx(&tx, zone_id, &first.id, &want)?;
            Change::Updated
        }
        _ => return Err(StoreError::Conflict(address_conflict(name))),
    };
    bump_version(&tx)?;
    tx.commit()?;
    Ok(change)
}

pub(super) fn route_lb(
    c: &mut Connection,
    account_id: &str,
    zone_id: &str,
    lb_name: &str,
    pool_name: &str,
    origin: &PoolOrigin,
) -> StoreResult<(Change, Change)> {
    // Read-modify-write of the pool's origin list and the LB's pool list: one
    // transaction, or concurrent routes lose origins.
    let tx = c.transaction()?;
    let pool_change = match pool_by_name_tx(&tx, account_id, pool_name)? {
        None => {
            upsert_pool_tx(&tx, account_id, pool_name, std::slice::from_ref(origin))?;
            Change::New
        }
        Some(p) if p.origins.iter().any(|o| o.address == origin.address) => Change::Unchanged,
        Some(p) => {
            let mut origins = p.origins;
            origins.push(origin.clone());
            upsert_pool_tx(&tx, account_id, pool_name, &origins)?;
            Change::Updated
        }
    };
    let pool = pool_by_name_tx(&tx, account_id, pool_name)?.ok_or_else(|| vanished("pool"))?;
    let lb_change = match lb_by_name_tx(&tx, zone_id, lb_name)? {
        None => {
            if !address_records_tx(&tx, zone_id, lb_name)?.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "a DNS record already exists for {lb_name}; delete it before \
                         routing a load balancer there"
                )));
            }
            upsert_lb_tx(
                &tx,
                zone_id,
                lb_name,
                std::slice::from_ref(&pool.id),
                &pool.id,
            )?;
            Change::New
        }
        Some(l) if l.default_pools.contains(&pool.id) => Change::Unchanged,
        Some(l) => {
            let mut pools = l.default_pools;
            pools.push(pool.id.clone());
            upsert_lb_tx(&tx, zone_id, lb_name, &pools, &l.fallback_pool)?;
            Change::Updated
        }
    };
    if (lb_change, pool_change) != (Change::Unchanged, Change::Unchanged) {
        bump_version(&tx)?;
    }
    tx.commit()?;
    Ok((lb_change, pool_change))
}
