//! The edge snapshot: every edge-visible object and the version, read in one transaction.

use rusqlite::Connection;

use super::super::*;
use super::rows::*;

/// Reads the snapshot; the version and the data come from one read transaction, so they match.
pub(super) fn read(c: &mut Connection) -> StoreResult<Snapshot> {
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
}
