//! Versioned schema migrations for the SQLite store.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each migration runs in its own
//! transaction together with the version bump, so a crash mid-migration leaves the old schema.
//! Never edit a migration that has shipped: append a new one.

use rusqlite::Connection;

/// Migration `i` moves the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_on TEXT NOT NULL
    );
    CREATE TABLE zones (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL UNIQUE,
        created_on TEXT NOT NULL
    );
    CREATE TABLE api_tokens (
        token_sha256 TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('operator', 'edge', 'zone')),
        account_id TEXT REFERENCES accounts(id),
        zone_id TEXT REFERENCES zones(id),
        created_on TEXT NOT NULL
    );
    CREATE TABLE tunnels (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        secret BLOB NOT NULL,
        secret_sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE UNIQUE INDEX tunnels_live_name ON tunnels(account_id, name) WHERE deleted_at IS NULL;
    CREATE TABLE dns_records (
        id TEXT PRIMARY KEY,
        zone_id TEXT NOT NULL REFERENCES zones(id),
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        content TEXT NOT NULL,
        proxied INTEGER NOT NULL,
        ttl INTEGER NOT NULL,
        created_on TEXT NOT NULL,
        modified_on TEXT NOT NULL
    );
    CREATE INDEX dns_records_name ON dns_records(zone_id, name);
    CREATE TABLE pools (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        origins TEXT NOT NULL,
        created_on TEXT NOT NULL,
        modified_on TEXT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE load_balancers (
        id TEXT PRIMARY KEY,
        zone_id TEXT NOT NULL REFERENCES zones(id),
        name TEXT NOT NULL,
        default_pools TEXT NOT NULL,
        fallback_pool TEXT NOT NULL,
        proxied INTEGER NOT NULL,
        enabled INTEGER NOT NULL,
        created_on TEXT NOT NULL,
        modified_on TEXT NOT NULL,
        UNIQUE (zone_id, name)
    );
    CREATE TABLE connections (
        id TEXT PRIMARY KEY,
        tunnel_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        client_version TEXT NOT NULL,
        arch TEXT NOT NULL,
        features TEXT NOT NULL,
        conn_index INTEGER NOT NULL,
        colo_name TEXT NOT NULL,
        origin_ip TEXT NOT NULL,
        edge_id TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        lease_expires_ms INTEGER NOT NULL
    );
    CREATE INDEX connections_tunnel ON connections(tunnel_id);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('snapshot_version', 1);
    "#,
    // 2: snapshot format 2 carries accounts and the tunnel suffix, and the edge routes a
    // record only into a tunnel of the record's own account. Records created before that
    // rule may break it; they stop routing (the control plane names each one in a warning at
    // start, see `api::isolation::audit`). The version bump makes every edge fetch the new
    // format instead of keeping a cached one it can no longer route with.
    r#"
    UPDATE meta SET value = value + 1 WHERE key = 'snapshot_version';
    "#,
];

/// Applies every migration newer than the database's `user_version`.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<u32> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() as u32);
        // A second run applies nothing and keeps the data.
        conn.execute("INSERT INTO accounts VALUES ('a', 'n', 't')", [])
            .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() as u32);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn migration_2_bumps_the_snapshot_version_so_edges_refetch() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A store as the first release left it.
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch("PRAGMA user_version = 1; UPDATE meta SET value = 41")
            .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() as u32);
        let v: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'snapshot_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, 42);
    }
}
