//! The default store: one SQLite file in WAL mode with `synchronous=FULL`, so a write is on
//! disk before the API acknowledges it (WAL alone would survive `kill -9`; FULL also survives
//! power loss, and the control plane writes rarely enough not to care about the fsync).
//!
//! One connection behind a mutex: SQLite serialises writers anyway, and the control plane is
//! never on the request path.
//!
//! - `mod.rs` (this file): opening, pragmas, and the [`Store`] calls.
//! - `rows`: column lists, row mappers and the text encodings the tables use.
//! - `tx`: helpers that run inside a caller's transaction (address-record rules, upserts).
//! - `routing`: `route dns` / `route lb` in one transaction each.
//! - `connections`: edge connection records and their leases.
//! - `snapshot`: the edge snapshot, read in one transaction.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Params, Row, Transaction, params};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::*;

mod connections;
mod routing;
mod rows;
mod snapshot;
#[cfg(test)]
mod tests;
mod tx;

use rows::*;
use tx::*;

#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
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
        self.edge_visible_write(|tx| {
            let n = tx.execute(
                &format!("DELETE FROM {table} WHERE {scope_col} = ?1 AND id = ?2"),
                params![scope, id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("{what} {id} not found")));
            }
            Ok(())
        })
    }

    /// Runs `f` in one transaction that also bumps the snapshot version, so every edge picks
    /// the write up; nothing is committed when `f` fails.
    fn edge_visible_write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.with(|c| {
            let tx = c.transaction()?;
            let out = f(&tx)?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// Every row `sql` selects with `args`, mapped by `row`.
    fn select_all<T>(
        &self,
        sql: &str,
        args: impl Params,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        self.with(|c| {
            let mut st = c.prepare(sql)?;
            let rows = st.query_map(args, row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The row `sql` selects with `args`, if there is one.
    fn select_one<T>(
        &self,
        sql: &str,
        args: impl Params,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        self.with(|c| Ok(c.query_row(sql, args, row).optional()?))
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
                conflict_if_unique(e, || format!("an account named '{name}' already exists"))
            })?;
            Ok(acct)
        })
    }

    fn account_by_name(&self, name: &str) -> StoreResult<Option<Account>> {
        self.select_one(
            "SELECT id, name, created_on FROM accounts WHERE name = ?1",
            [name],
            account_row,
        )
    }

    fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        self.select_one(
            "SELECT id, name, created_on FROM accounts WHERE id = ?1",
            [id],
            account_row,
        )
    }

    fn list_accounts(&self) -> StoreResult<Vec<Account>> {
        self.select_all(
            "SELECT id, name, created_on FROM accounts ORDER BY created_on",
            [],
            account_row,
        )
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
                conflict_if_unique(e, || format!("zone '{}' already exists", zone.name))
            })?;
            Ok(zone)
        })
    }

    fn zone(&self, id: &str) -> StoreResult<Option<Zone>> {
        self.select_one(
            "SELECT id, account_id, name, created_on FROM zones WHERE id = ?1",
            [id],
            zone_row,
        )
    }

    fn zone_by_name(&self, name: &str) -> StoreResult<Option<Zone>> {
        self.select_one(
            "SELECT id, account_id, name, created_on FROM zones WHERE name = ?1",
            [name.to_ascii_lowercase()],
            zone_row,
        )
    }

    fn list_zones(&self, account_id: Option<&str>) -> StoreResult<Vec<Zone>> {
        self.select_all(
            "SELECT id, account_id, name, created_on FROM zones \
             WHERE ?1 IS NULL OR account_id = ?1 ORDER BY name",
            [account_id],
            zone_row,
        )
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
        self.edge_visible_write(|tx| {
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
                conflict_if_unique(e, || format!("tunnel with name already exists: {name}"))
            })?;
            Ok(t)
        })
    }

    fn tunnel(&self, account_id: &str, id: Uuid) -> StoreResult<Option<Tunnel>> {
        self.select_one(
            &format!("SELECT {TUNNEL_COLS} FROM tunnels WHERE account_id = ?1 AND id = ?2"),
            params![account_id, id.to_string()],
            tunnel_row,
        )
    }

    fn list_tunnels(&self, account_id: &str, f: &TunnelFilter) -> StoreResult<Vec<Tunnel>> {
        let existed = f.existed_at.map(fmt_time);
        self.select_all(
            &format!(
                "SELECT {TUNNEL_COLS} FROM tunnels WHERE account_id = ?1 \
                 AND (?2 IS NULL OR name = ?2) \
                 AND (?3 IS NULL OR id = ?3) \
                 AND (?4 IS NULL OR (?4 = 1) = (deleted_at IS NOT NULL)) \
                 AND (?5 IS NULL OR (created_at <= ?5 AND (deleted_at IS NULL OR deleted_at > ?5))) \
                 ORDER BY created_at, name"
            ),
            params![
                account_id,
                f.name,
                f.id.map(|u| u.to_string()),
                f.is_deleted,
                existed
            ],
            tunnel_row,
        )
    }

    fn delete_tunnel(&self, account_id: &str, id: Uuid) -> StoreResult<Tunnel> {
        self.edge_visible_write(|tx| {
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
        self.select_one(
            &format!("SELECT {TUNNEL_COLS} FROM tunnels WHERE id = ?1 AND deleted_at IS NULL"),
            [id.to_string()],
            tunnel_row,
        )
    }

    fn list_dns(&self, zone_id: &str, name: Option<&str>) -> StoreResult<Vec<DnsRecord>> {
        self.select_all(
            &format!(
                "SELECT {DNS_COLS} FROM dns_records d JOIN zones z ON z.id = d.zone_id \
                 WHERE d.zone_id = ?1 AND (?2 IS NULL OR d.name = ?2) ORDER BY d.name, d.id"
            ),
            params![zone_id, name.map(str::to_ascii_lowercase)],
            dns_row,
        )
    }

    fn create_dns(&self, zone_id: &str, rec: &NewDnsRecord) -> StoreResult<DnsRecord> {
        // Check and insert in one transaction under the connection lock, so two concurrent
        // creates cannot both pass the check.
        self.edge_visible_write(|tx| {
            check_address_clash(tx, zone_id, rec, None)?;
            let id = insert_dns_tx(tx, zone_id, rec)?;
            Ok(dns_by_id_tx(tx, &id)?)
        })
    }

    fn update_dns(&self, zone_id: &str, id: &str, rec: &NewDnsRecord) -> StoreResult<DnsRecord> {
        self.edge_visible_write(|tx| {
            check_address_clash(tx, zone_id, rec, Some(id))?;
            if update_dns_tx(tx, zone_id, id, rec)? == 0 {
                return Err(StoreError::NotFound(format!("DNS record {id} not found")));
            }
            Ok(dns_by_id_tx(tx, id)?)
        })
    }

    fn route_dns(
        &self,
        zone_id: &str,
        name: &str,
        target: &str,
        overwrite: bool,
    ) -> StoreResult<Change> {
        self.with(|c| routing::route_dns(c, zone_id, name, target, overwrite))
    }

    fn delete_dns(&self, zone_id: &str, id: &str) -> StoreResult<()> {
        self.delete_scoped("dns_records", "zone_id", zone_id, id, "DNS record")
    }

    fn list_pools(&self, account_id: &str) -> StoreResult<Vec<Pool>> {
        self.select_all(
            &format!("SELECT {POOL_COLS} FROM pools WHERE account_id = ?1 ORDER BY name"),
            [account_id],
            pool_row,
        )
    }

    fn upsert_pool(
        &self,
        account_id: &str,
        name: &str,
        origins: &[PoolOrigin],
    ) -> StoreResult<Pool> {
        self.edge_visible_write(|tx| {
            upsert_pool_tx(tx, account_id, name, origins)?;
            pool_by_name_tx(tx, account_id, name)?.ok_or_else(|| vanished("pool"))
        })
    }

    fn delete_pool(&self, account_id: &str, id: &str) -> StoreResult<()> {
        self.delete_scoped("pools", "account_id", account_id, id, "pool")
    }

    fn list_load_balancers(&self, zone_id: &str) -> StoreResult<Vec<LoadBalancer>> {
        self.select_all(
            &format!("SELECT {LB_COLS} FROM load_balancers WHERE zone_id = ?1 ORDER BY name"),
            [zone_id],
            lb_row,
        )
    }

    fn upsert_load_balancer(
        &self,
        zone_id: &str,
        name: &str,
        default_pools: &[String],
        fallback_pool: &str,
    ) -> StoreResult<LoadBalancer> {
        self.edge_visible_write(|tx| {
            upsert_lb_tx(tx, zone_id, name, default_pools, fallback_pool)?;
            lb_by_name_tx(tx, zone_id, name)?.ok_or_else(|| vanished("load balancer"))
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
        self.with(|c| routing::route_lb(c, account_id, zone_id, lb_name, pool_name, origin))
    }

    fn delete_load_balancer(&self, zone_id: &str, id: &str) -> StoreResult<()> {
        self.delete_scoped("load_balancers", "zone_id", zone_id, id, "load balancer")
    }

    fn register_connection(&self, rec: &ConnectionRecord) -> StoreResult<()> {
        self.with(|c| connections::register_connection(c, rec))
    }

    fn renew_leases(&self, edge_id: &str, ids: &[Uuid], expires_ms: i64) -> StoreResult<Vec<Uuid>> {
        self.with(|c| connections::renew_leases(c, edge_id, ids, expires_ms))
    }

    fn unregister_connection(&self, id: Uuid) -> StoreResult<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM connections WHERE id = ?1", [id.to_string()])? > 0))
    }

    fn list_connections(&self, tunnel_id: Uuid) -> StoreResult<Vec<ConnectionRecord>> {
        self.select_all(
            &format!(
                "SELECT {CONN_COLS} FROM connections WHERE tunnel_id = ?1 \
                 ORDER BY client_id, conn_index"
            ),
            [tunnel_id.to_string()],
            conn_row,
        )
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
        self.with(snapshot::read)
    }
}
