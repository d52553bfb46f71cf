//! Connection records: registered by edges, kept alive by lease renewal.

use rusqlite::{Connection, params};
use uuid::Uuid;

use super::super::*;
use super::rows::*;

pub(super) fn register_connection(c: &mut Connection, rec: &ConnectionRecord) -> StoreResult<()> {
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
}

pub(super) fn renew_leases(
    c: &mut Connection,
    edge_id: &str,
    ids: &[Uuid],
    expires_ms: i64,
) -> StoreResult<Vec<Uuid>> {
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
}
