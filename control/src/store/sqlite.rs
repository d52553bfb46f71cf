//! The default store: one SQLite file in WAL mode with `synchronous=FULL`, so a write is on
//! disk before the API acknowledges it (WAL alone would survive `kill -9`; FULL also survives
//! power loss, and the control plane writes rarely enough not to care about the fsync).
//!
//! One connection behind a mutex: SQLite serialises writers anyway, and the control plane is
//! never on the request path.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::*;

#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn now() -> OffsetDateTime {
    // Cloudflare's API reports times at second resolution; sub-seconds only add noise.
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc())
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse_time(s: &str) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_uuid(s: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Bumps the snapshot version inside the caller's transaction.
fn bump_version(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'snapshot_version'",
        [],
    )?;
    Ok(())
}

const TUNNEL_COLS: &str = "id, account_id, name, created_at, deleted_at, secret_sha256";

fn tunnel_row(r: &Row<'_>) -> rusqlite::Result<Tunnel> {
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

const DNS_COLS: &str = "d.id, d.zone_id, z.name, d.type, d.name, d.content, d.proxied, d.ttl, \
                        d.created_on, d.modified_on";

fn dns_row(r: &Row<'_>) -> rusqlite::Result<DnsRecord> {
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

const POOL_COLS: &str = "id, account_id, name, enabled, origins, created_on, modified_on";

fn pool_row(r: &Row<'_>) -> rusqlite::Result<Pool> {
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

const LB_COLS: &str =
    "id, zone_id, name, default_pools, fallback_pool, proxied, enabled, created_on, modified_on";

fn lb_row(r: &Row<'_>) -> rusqlite::Result<LoadBalancer> {
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

const CONN_COLS: &str = "id, tunnel_id, client_id, client_version, arch, features, conn_index, \
                         colo_name, origin_ip, edge_id, opened_at, lease_expires_ms";

fn conn_row(r: &Row<'_>) -> rusqlite::Result<ConnectionRecord> {
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

impl SqliteStore {
    /// Opens (creating if needed) `path` and applies pending migrations.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut conn = Connection::open(path)?;
        Self::configure(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// An in-memory store for unit tests.
    pub fn open_in_memory() -> StoreResult<Self> {
        let mut conn = Connection::open_in_memory()?;
        Self::configure(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn configure(conn: &mut Connection) -> StoreResult<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        super::migrations::migrate(conn)?;
        Ok(())
    }

    /// Deletes one edge-visible object (`table` row `id` inside `scope_col = scope`) and bumps
    /// the snapshot version, in one transaction. Table and column names are our constants.
    fn delete_scoped(
        &self,
        table: &'static str,
        scope_col: &'static str,
        scope: &str,
        id: &str,
        what: &str,
    ) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                &format!("DELETE FROM {table} WHERE {scope_col} = ?1 AND id = ?2"),
                params![scope, id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("{what} {id} not found")));
            }
            bump_version(&tx)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        // A poisoned lock only means another request panicked mid-call; SQLite's transaction
        // rolled back, so the connection itself is still consistent.
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl Store for SqliteStore {
    fn create_account(&self, name: &str) -> StoreResult<Account> {
        let acct = Account {
            id: new_object_id(),
            name: name.to_string(),
            created_on: now(),
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO accounts (id, name, created_on) VALUES (?1, ?2, ?3)",
                params![acct.id, acct.name, fmt_time(acct.created_on)],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("an account named '{name}' already exists"))
                } else {
                    e.into()
                }
            })?;
            Ok(acct)
        })
    }

    fn account_by_name(&self, name: &str) -> StoreResult<Option<Account>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id, name, created_on FROM accounts WHERE name = ?1",
                [name],
                |r| {
                    Ok(Account {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_on: parse_time(&r.get::<_, String>(2)?)?,
                    })
                },
            )
            .optional()?)
        })
    }

    fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id, name, created_on FROM accounts WHERE id = ?1",
                [id],
                |r| {
                    Ok(Account {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_on: parse_time(&r.get::<_, String>(2)?)?,
                    })
                },
            )
            .optional()?)
        })
    }

    fn list_accounts(&self) -> StoreResult<Vec<Account>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT id, name, created_on FROM accounts ORDER BY created_on")?;
            let rows = st.query_map([], |r| {
                Ok(Account {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    created_on: parse_time(&r.get::<_, String>(2)?)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn create_zone(&self, account_id: &str, name: &str) -> StoreResult<Zone> {
        let zone = Zone {
            id: new_object_id(),
            account_id: account_id.to_string(),
            name: name.to_ascii_lowercase(),
            created_on: now(),
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO zones (id, account_id, name, created_on) VALUES (?1, ?2, ?3, ?4)",
                params![
                    zone.id,
                    zone.account_id,
                    zone.name,
                    fmt_time(zone.created_on)
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("zone '{}' already exists", zone.name))
                } else {
                    e.into()
                }
            })?;
            Ok(zone)
        })
    }

    fn zone(&self, id: &str) -> StoreResult<Option<Zone>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id, account_id, name, created_on FROM zones WHERE id = ?1",
                [id],
                zone_row,
            )
            .optional()?)
        })
    }

    fn zone_by_name(&self, name: &str) -> StoreResult<Option<Zone>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id, account_id, name, created_on FROM zones WHERE name = ?1",
                [name.to_ascii_lowercase()],
                zone_row,
            )
            .optional()?)
        })
    }

    fn list_zones(&self, account_id: Option<&str>) -> StoreResult<Vec<Zone>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, account_id, name, created_on FROM zones \
                 WHERE ?1 IS NULL OR account_id = ?1 ORDER BY name",
            )?;
            let rows = st.query_map([account_id], zone_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn insert_token(&self, token_sha256: &str, scope: &TokenScope) -> StoreResult<()> {
        let (kind, acct, zone) = match scope {
            TokenScope::Operator => ("operator", None, None),
            TokenScope::Edge => ("edge", None, None),
            TokenScope::Zone {
                account_id,
                zone_id,
            } => ("zone", Some(account_id.as_str()), Some(zone_id.as_str())),
        };
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO api_tokens (token_sha256, kind, account_id, zone_id, created_on) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token_sha256, kind, acct, zone, fmt_time(now())],
            )?;
            Ok(())
        })
    }

    fn token_scope(&self, token_sha256: &str) -> StoreResult<Option<TokenScope>> {
        self.with(|c| {
            let row: Option<(String, Option<String>, Option<String>)> = c
                .query_row(
                    "SELECT kind, account_id, zone_id FROM api_tokens WHERE token_sha256 = ?1",
                    [token_sha256],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            Ok(row.and_then(|(kind, acct, zone)| match kind.as_str() {
                "operator" => Some(TokenScope::Operator),
                "edge" => Some(TokenScope::Edge),
                "zone" => Some(TokenScope::Zone {
                    account_id: acct?,
                    zone_id: zone?,
                }),
                _ => None,
            }))
        })
    }

    fn create_tunnel(&self, account_id: &str, name: &str, secret: &[u8]) -> StoreResult<Tunnel> {
        let t = Tunnel {
            id: Uuid::new_v4(),
            account_id: account_id.to_string(),
            name: name.to_string(),
            created_at: now(),
            deleted_at: None,
            secret_sha256: hex::encode(Sha256::digest(secret)),
        };
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO tunnels (id, account_id, name, secret, secret_sha256, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    t.id.to_string(),
                    t.account_id,
                    t.name,
                    secret,
                    t.secret_sha256,
                    fmt_time(t.created_at)
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("tunnel with name already exists: {name}"))
                } else {
                    e.into()
                }
            })?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(t)
        })
    }

    fn tunnel(&self, account_id: &str, id: Uuid) -> StoreResult<Option<Tunnel>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {TUNNEL_COLS} FROM tunnels WHERE account_id = ?1 AND id = ?2"),
                params![account_id, id.to_string()],
                tunnel_row,
            )
            .optional()?)
        })
    }

    fn list_tunnels(&self, account_id: &str, f: &TunnelFilter) -> StoreResult<Vec<Tunnel>> {
        let existed = f.existed_at.map(fmt_time);
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {TUNNEL_COLS} FROM tunnels WHERE account_id = ?1 \
                 AND (?2 IS NULL OR name = ?2) \
                 AND (?3 IS NULL OR id = ?3) \
                 AND (?4 IS NULL OR (?4 = 1) = (deleted_at IS NOT NULL)) \
                 AND (?5 IS NULL OR (created_at <= ?5 AND (deleted_at IS NULL OR deleted_at > ?5))) \
                 ORDER BY created_at, name"
            ))?;
            let rows = st.query_map(
                params![
                    account_id,
                    f.name,
                    f.id.map(|u| u.to_string()),
                    f.is_deleted,
                    existed
                ],
                tunnel_row,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn delete_tunnel(&self, account_id: &str, id: Uuid) -> StoreResult<Tunnel> {
        self.with(|c| {
            let tx = c.transaction()?;
            let t = tx
                .query_row(
                    &format!(
                        "SELECT {TUNNEL_COLS} FROM tunnels \
                         WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL"
                    ),
                    params![account_id, id.to_string()],
                    tunnel_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("tunnel {id} not found")))?;
            let when = now();
            tx.execute(
                "UPDATE tunnels SET deleted_at = ?1 WHERE id = ?2",
                params![fmt_time(when), id.to_string()],
            )?;
            tx.execute(
                "DELETE FROM connections WHERE tunnel_id = ?1",
                [id.to_string()],
            )?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(Tunnel {
                deleted_at: Some(when),
                ..t
            })
        })
    }

    fn tunnel_secret(&self, account_id: &str, id: Uuid) -> StoreResult<Vec<u8>> {
        self.with(|c| {
            c.query_row(
                "SELECT secret FROM tunnels WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL",
                params![account_id, id.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("tunnel {id} not found")))
        })
    }

    fn live_tunnel(&self, id: Uuid) -> StoreResult<Option<Tunnel>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {TUNNEL_COLS} FROM tunnels WHERE id = ?1 AND deleted_at IS NULL"),
                [id.to_string()],
                tunnel_row,
            )
            .optional()?)
        })
    }

    fn list_dns(&self, zone_id: &str, name: Option<&str>) -> StoreResult<Vec<DnsRecord>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {DNS_COLS} FROM dns_records d JOIN zones z ON z.id = d.zone_id \
                 WHERE d.zone_id = ?1 AND (?2 IS NULL OR d.name = ?2) ORDER BY d.name, d.id"
            ))?;
            let rows =
                st.query_map(params![zone_id, name.map(str::to_ascii_lowercase)], dns_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn create_dns(&self, zone_id: &str, rec: &NewDnsRecord) -> StoreResult<DnsRecord> {
        self.with(|c| {
            // Check and insert in one transaction under the connection lock, so two
            // concurrent creates cannot both pass the check.
            let tx = c.transaction()?;
            if is_address_type(&rec.record_type) {
                let existing = address_records_tx(&tx, zone_id, &rec.name)?;
                if !existing.is_empty()
                    && (rec.record_type == "CNAME"
                        || existing.iter().any(|r| r.record_type == "CNAME"))
                {
                    return Err(StoreError::Conflict(address_conflict(&rec.name)));
                }
            }
            let id = insert_dns_tx(&tx, zone_id, rec)?;
            bump_version(&tx)?;
            let out = dns_by_id_tx(&tx, &id)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn update_dns(&self, zone_id: &str, id: &str, rec: &NewDnsRecord) -> StoreResult<DnsRecord> {
        self.with(|c| {
            let tx = c.transaction()?;
            if is_address_type(&rec.record_type) {
                let others: Vec<DnsRecord> = address_records_tx(&tx, zone_id, &rec.name)?
                    .into_iter()
                    .filter(|r| r.id != id)
                    .collect();
                if !others.is_empty()
                    && (rec.record_type == "CNAME"
                        || others.iter().any(|r| r.record_type == "CNAME"))
                {
                    return Err(StoreError::Conflict(address_conflict(&rec.name)));
                }
            }
            if update_dns_tx(&tx, zone_id, id, rec)? == 0 {
                return Err(StoreError::NotFound(format!("DNS record {id} not found")));
            }
            bump_version(&tx)?;
            let out = dns_by_id_tx(&tx, id)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn route_dns(
        &self,
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
        self.with(|c| {
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
        })
    }

    fn delete_dns(&self, zone_id: &str, id: &str) -> StoreResult<()> {
        self.delete_scoped("dns_records", "zone_id", zone_id, id, "DNS record")
    }

    fn list_pools(&self, account_id: &str) -> StoreResult<Vec<Pool>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {POOL_COLS} FROM pools WHERE account_id = ?1 ORDER BY name"
            ))?;
            let rows = st.query_map([account_id], pool_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn upsert_pool(
        &self,
        account_id: &str,
        name: &str,
        origins: &[PoolOrigin],
    ) -> StoreResult<Pool> {
        self.with(|c| {
            let tx = c.transaction()?;
            upsert_pool_tx(&tx, account_id, name, origins)?;
            bump_version(&tx)?;
            let out = pool_by_name_tx(&tx, account_id, name)?.ok_or_else(|| {
                StoreError::Backend("pool vanished inside its transaction".into())
            })?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn delete_pool(&self, account_id: &str, id: &str) -> StoreResult<()> {
        self.delete_scoped("pools", "account_id", account_id, id, "pool")
    }

    fn list_load_balancers(&self, zone_id: &str) -> StoreResult<Vec<LoadBalancer>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {LB_COLS} FROM load_balancers WHERE zone_id = ?1 ORDER BY name"
            ))?;
            let rows = st.query_map([zone_id], lb_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn upsert_load_balancer(
        &self,
        zone_id: &str,
        name: &str,
        default_pools: &[String],
        fallback_pool: &str,
    ) -> StoreResult<LoadBalancer> {
        self.with(|c| {
            let tx = c.transaction()?;
            upsert_lb_tx(&tx, zone_id, name, default_pools, fallback_pool)?;
            bump_version(&tx)?;
            let out = lb_by_name_tx(&tx, zone_id, name)?.ok_or_else(|| {
                StoreError::Backend("load balancer vanished inside its transaction".into())
            })?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn route_lb(
        &self,
        account_id: &str,
        zone_id: &str,
        lb_name: &str,
        pool_name: &str,
        origin: &PoolOrigin,
    ) -> StoreResult<(Change, Change)> {
        self.with(|c| {
            // Read-modify-write of the pool's origin list and the LB's pool list: one
            // transaction, or concurrent routes lose origins.
            let tx = c.transaction()?;
            let pool_change = match pool_by_name_tx(&tx, account_id, pool_name)? {
                None => {
                    upsert_pool_tx(&tx, account_id, pool_name, std::slice::from_ref(origin))?;
                    Change::New
                }
                Some(p) if p.origins.iter().any(|o| o.address == origin.address) => {
                    Change::Unchanged
                }
                Some(p) => {
                    let mut origins = p.origins;
                    origins.push(origin.clone());
                    upsert_pool_tx(&tx, account_id, pool_name, &origins)?;
                    Change::Updated
                }
            };
            let pool = pool_by_name_tx(&tx, account_id, pool_name)?.ok_or_else(|| {
                StoreError::Backend("pool vanished inside its transaction".into())
            })?;
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
        })
    }

    fn delete_load_balancer(&self, zone_id: &str, id: &str) -> StoreResult<()> {
        self.delete_scoped("load_balancers", "zone_id", zone_id, id, "load balancer")
    }

    fn register_connection(&self, rec: &ConnectionRecord) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT OR REPLACE INTO connections ({CONN_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    rec.id.to_string(),
                    rec.tunnel_id.to_string(),
                    rec.client_id.to_string(),
                    rec.client_version,
                    rec.arch,
                    to_json(&rec.features),
                    rec.conn_index,
                    rec.colo_name,
                    rec.origin_ip,
                    rec.edge_id,
                    fmt_time(rec.opened_at),
                    rec.lease_expires_ms
                ],
            )?;
            Ok(())
        })
    }

    fn renew_leases(&self, edge_id: &str, ids: &[Uuid], expires_ms: i64) -> StoreResult<Vec<Uuid>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut unknown = Vec::new();
            {
                let mut st = tx.prepare(
                    "UPDATE connections SET lease_expires_ms = ?1 WHERE id = ?2 AND edge_id = ?3",
                )?;
                for id in ids {
                    if st.execute(params![expires_ms, id.to_string(), edge_id])? == 0 {
                        unknown.push(*id);
                    }
                }
            }
            tx.commit()?;
            Ok(unknown)
        })
    }

    fn unregister_connection(&self, id: Uuid) -> StoreResult<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM connections WHERE id = ?1", [id.to_string()])? > 0))
    }

    fn list_connections(&self, tunnel_id: Uuid) -> StoreResult<Vec<ConnectionRecord>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {CONN_COLS} FROM connections WHERE tunnel_id = ?1 \
                 ORDER BY client_id, conn_index"
            ))?;
            let rows = st.query_map([tunnel_id.to_string()], conn_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn delete_connections(&self, tunnel_id: Uuid, client_id: Option<Uuid>) -> StoreResult<usize> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM connections WHERE tunnel_id = ?1 AND (?2 IS NULL OR client_id = ?2)",
                params![tunnel_id.to_string(), client_id.map(|u| u.to_string())],
            )?)
        })
    }

    fn expire_connections(&self, now_ms: i64) -> StoreResult<usize> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM connections WHERE lease_expires_ms < ?1",
                [now_ms],
            )?)
        })
    }

    fn snapshot_version(&self) -> StoreResult<u64> {
        self.with(|c| {
            let v: i64 = c.query_row(
                "SELECT value FROM meta WHERE key = 'snapshot_version'",
                [],
                |r| r.get(0),
            )?;
            Ok(v as u64)
        })
    }

    fn snapshot(&self) -> StoreResult<Snapshot> {
        self.with(|c| {
            // One read transaction so the version and the data match.
            let tx = c.transaction()?;
            let version: i64 = tx.query_row(
                "SELECT value FROM meta WHERE key = 'snapshot_version'",
                [],
                |r| r.get(0),
            )?;
            let tunnels = {
                let mut st = tx.prepare(
                    "SELECT id, account_id, secret_sha256 FROM tunnels \
                     WHERE deleted_at IS NULL ORDER BY id",
                )?;
                st.query_map([], |r| {
                    Ok(SnapshotTunnel {
                        id: parse_uuid(&r.get::<_, String>(0)?)?,
                        account_tag: r.get(1)?,
                        secret_sha256: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?
            };
            let zones = {
                let mut st = tx.prepare("SELECT id, account_id FROM zones ORDER BY id")?;
                st.query_map([], |r| {
                    Ok(SnapshotZone {
                        id: r.get(0)?,
                        account_id: r.get(1)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?
            };
            let dns_records = {
                let mut st = tx.prepare(&format!(
                    "SELECT {DNS_COLS} FROM dns_records d JOIN zones z ON z.id = d.zone_id \
                     ORDER BY d.name, d.id"
                ))?;
                st.query_map([], dns_row)?.collect::<Result<Vec<_>, _>>()?
            };
            let pools = {
                let mut st = tx.prepare(&format!("SELECT {POOL_COLS} FROM pools ORDER BY id"))?;
                st.query_map([], pool_row)?.collect::<Result<Vec<_>, _>>()?
            };
            let load_balancers = {
                let mut st = tx.prepare(&format!(
                    "SELECT {LB_COLS} FROM load_balancers ORDER BY name"
                ))?;
                st.query_map([], lb_row)?.collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            Ok(Snapshot {
                version: version as u64,
                format: SNAPSHOT_FORMAT,
                // The store does not know the suffix; the API fills it in.
                tunnel_suffix: String::new(),
                tunnels,
                zones,
                dns_records,
                pools,
                load_balancers,
            })
        })
    }
}

fn is_address_type(t: &str) -> bool {
    matches!(t, "A" | "AAAA" | "CNAME")
}

fn address_conflict(name: &str) -> String {
    format!("An A, AAAA, or CNAME record with that host already exists: {name}")
}

fn address_records_tx(
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

fn dns_by_id_tx(tx: &Connection, id: &str) -> rusqlite::Result<DnsRecord> {
    tx.query_row(
        &format!(
            "SELECT {DNS_COLS} FROM dns_records d JOIN zones z ON z.id = d.zone_id WHERE d.id = ?1"
        ),
        [id],
        dns_row,
    )
}

fn insert_dns_tx(tx: &Connection, zone_id: &str, rec: &NewDnsRecord) -> rusqlite::Result<String> {
    let id = new_object_id();
    tx.execute(
        "INSERT INTO dns_records \
         (id, zone_id, type, name, content, proxied, ttl, created_on, modified_on) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            id,
            zone_id,
            rec.record_type,
            rec.name.to_ascii_lowercase(),
            rec.content,
            rec.proxied,
            rec.ttl,
            fmt_time(now())
        ],
    )?;
    Ok(id)
}

fn update_dns_tx(
    tx: &Connection,
    zone_id: &str,
    id: &str,
    rec: &NewDnsRecord,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE dns_records SET type = ?3, name = ?4, content = ?5, proxied = ?6, \
         ttl = ?7, modified_on = ?8 WHERE zone_id = ?1 AND id = ?2",
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

fn upsert_pool_tx(
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

fn pool_by_name_tx(
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

fn upsert_lb_tx(
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

fn lb_by_name_tx(
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

fn zone_row(r: &Row<'_>) -> rusqlite::Result<Zone> {
    Ok(Zone {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        created_on: parse_time(&r.get::<_, String>(3)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_zone() -> (SqliteStore, Account, Zone) {
        let s = SqliteStore::open_in_memory().unwrap();
        let a = s.create_account("acme").unwrap();
        let z = s.create_zone(&a.id, "Example.COM").unwrap();
        (s, a, z)
    }

    #[test]
    fn tunnel_names_are_unique_among_live_tunnels_only() {
        let (s, a, _) = store_with_zone();
        let t = s.create_tunnel(&a.id, "web", &[7; 32]).unwrap();
        assert!(matches!(
            s.create_tunnel(&a.id, "web", &[8; 32]),
            Err(StoreError::Conflict(_))
        ));
        s.delete_tunnel(&a.id, t.id).unwrap();
        let t2 = s.create_tunnel(&a.id, "web", &[9; 32]).unwrap();
        assert_ne!(t.id, t2.id);
        let deleted = s
            .list_tunnels(
                &a.id,
                &TunnelFilter {
                    is_deleted: Some(true),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].id, t.id);
        let live = s
            .list_tunnels(
                &a.id,
                &TunnelFilter {
                    is_deleted: Some(false),
                    name: Some("web".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id, t2.id);
    }

    #[test]
    fn tunnels_are_scoped_to_their_account() {
        let (s, a, _) = store_with_zone();
        let b = s.create_account("other").unwrap();
        let t = s.create_tunnel(&a.id, "web", &[7; 32]).unwrap();
        assert!(s.tunnel(&b.id, t.id).unwrap().is_none());
        assert!(matches!(
            s.delete_tunnel(&b.id, t.id),
            Err(StoreError::NotFound(_))
        ));
        assert!(
            s.list_tunnels(&b.id, &TunnelFilter::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn writes_bump_the_snapshot_version_and_snapshot_has_hashes_not_secrets() {
        let (s, a, z) = store_with_zone();
        let v0 = s.snapshot_version().unwrap();
        let t = s
            .create_tunnel(&a.id, "web", b"0123456789abcdef0123456789abcdef")
            .unwrap();
        let v1 = s.snapshot_version().unwrap();
        assert!(v1 > v0);
        s.create_dns(
            &z.id,
            &NewDnsRecord {
                record_type: "CNAME".into(),
                name: "App.example.com".into(),
                content: format!("{}.cfargotunnel.com", t.id),
                proxied: true,
                ttl: 1,
            },
        )
        .unwrap();
        let snap = s.snapshot().unwrap();
        assert!(snap.version > v1);
        assert_eq!(snap.dns_records[0].name, "app.example.com");
        assert_eq!(snap.dns_records[0].zone_name, "example.com");
        assert_eq!(
            snap.tunnels[0].secret_sha256,
            hex::encode(Sha256::digest(b"0123456789abcdef0123456789abcdef"))
        );
        let json = serde_json::to_string(&snap).unwrap();
        assert!(!json.contains("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn leases_renew_and_expire() {
        let (s, a, _) = store_with_zone();
        let t = s.create_tunnel(&a.id, "web", &[1; 32]).unwrap();
        let rec = ConnectionRecord {
            id: Uuid::new_v4(),
            tunnel_id: t.id,
            client_id: Uuid::new_v4(),
            client_version: "test".into(),
            arch: "linux_amd64".into(),
            features: vec![],
            conn_index: 0,
            colo_name: "lab".into(),
            origin_ip: "127.0.0.1".into(),
            edge_id: "edge-1".into(),
            opened_at: now(),
            lease_expires_ms: 1_000,
        };
        s.register_connection(&rec).unwrap();
        let ghost = Uuid::new_v4();
        assert_eq!(
            s.renew_leases("edge-1", &[rec.id, ghost], 5_000).unwrap(),
            vec![ghost]
        );
        // Another edge cannot renew a lease it does not hold.
        assert_eq!(
            s.renew_leases("edge-2", &[rec.id], 9_000).unwrap(),
            vec![rec.id]
        );
        assert_eq!(s.expire_connections(4_999).unwrap(), 0);
        assert_eq!(s.list_connections(t.id).unwrap().len(), 1);
        assert_eq!(s.expire_connections(5_001).unwrap(), 1);
        assert!(s.list_connections(t.id).unwrap().is_empty());
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringway.db");
        let id = {
            let s = SqliteStore::open(&path).unwrap();
            let a = s.create_account("acme").unwrap();
            s.create_tunnel(&a.id, "web", &[3; 32]).unwrap();
            a.id
        };
        let s = SqliteStore::open(&path).unwrap();
        let ts = s.list_tunnels(&id, &TunnelFilter::default()).unwrap();
        assert_eq!(ts.len(), 1);
        assert_eq!(s.tunnel_secret(&id, ts[0].id).unwrap(), vec![3; 32]);
    }
}
