//! Tenant isolation of routes: a hostname may route to a tunnel only through a DNS record
//! (or load-balancer pool) of the tunnel's own account, and only with the target
//! `<uuid>.<tunnel suffix>`. Tunnel UUIDs are not secret, so the API checks every write here,
//! the snapshot served to edges leaves out whatever breaks the rule (a row written behind the
//! API's back, or one older than the rule), and the edge checks again when it builds its
//! route table ([`crate::edge::route_table_checked`], the one implementation of the rule).

use axum::http::StatusCode;

use super::AppState;
use super::envelope::ApiError;
use crate::edge::ViolationKind;
use crate::store::{Snapshot, StoreResult};
use dataplane::edge::RouteTable;
use dataplane::edge::routes::RouteRefusal;

/// Cloudflare-style code for a refused route target.
const CODE_BAD_TARGET: u32 = 1004;

/// Checks a CNAME target or pool origin address written by a caller acting in `account_id`.
/// `Ok(None)`: an ordinary name that is no tunnel target (stored as given). `Ok(Some(t))`: a
/// tunnel target of this account, normalized (lower case, no trailing dot) for storage.
/// Refused: a target that names a tunnel in any other way, or a tunnel that is not a live
/// tunnel of this account; the message is the same whether the tunnel exists elsewhere or not
/// at all, so nobody learns about other accounts' tunnels.
pub fn check_tunnel_target(
    st: &AppState,
    account_id: &str,
    target: &str,
) -> Result<Option<String>, ApiError> {
    let suffix = &st.tunnel_suffix;
    match RouteTable::tunnel_of_target(target.trim(), suffix) {
        Err(RouteRefusal::NotTunnel) => Ok(None),
        Ok(id) => {
            let live = st
                .store
                .tunnel(account_id, id)?
                .is_some_and(|t| t.deleted_at.is_none());
            if !live {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    CODE_BAD_TARGET,
                    format!(
                        "{target} does not name a tunnel of this account: a tunnel hostname \
                         can only point at <uuid>.{suffix} of a live tunnel in the same account"
                    ),
                ));
            }
            Ok(Some(st.tunnel_target(id)))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            CODE_BAD_TARGET,
            format!(
                "{target} is not a valid tunnel target: tunnel hostnames point at exactly \
                 <tunnel-uuid>.{suffix}"
            ),
        )),
    }
}

/// The snapshot as edges get it: the suffix filled in, and every record or pool origin that
/// would cross accounts taken out (an up-to-date edge would refuse it anyway; an older edge
/// must not route it either). What is taken out is logged at debug level.
pub fn snapshot_for_edges(st: &AppState) -> StoreResult<Snapshot> {
    let mut snap = stored_snapshot(st)?;
    let (_, violations) = crate::edge::route_table_checked(&snap);
    if violations.is_empty() {
        return Ok(snap);
    }
    for v in &violations {
        tracing::debug!(%v, "left out of the edge snapshot");
        match v.kind {
            ViolationKind::DnsRecord => snap.dns_records.retain(|r| r.id != v.id),
            ViolationKind::LoadBalancer => {
                if let Some(lb) = snap.load_balancers.iter_mut().find(|l| l.id == v.id) {
                    lb.default_pools.retain(|p| *p != v.target);
                    if lb.fallback_pool == v.target {
                        lb.fallback_pool.clear();
                    }
                }
            }
            ViolationKind::PoolOrigin => {
                if let Some(p) = snap.pools.iter_mut().find(|p| p.id == v.id) {
                    p.origins.retain(|o| o.address != v.target);
                }
            }
        }
    }
    Ok(snap)
}

/// The store's snapshot with the control plane's tunnel suffix filled in (the store does not
/// know it), as the isolation rule needs it.
fn stored_snapshot(st: &AppState) -> StoreResult<Snapshot> {
    let mut snap = st.store.snapshot()?;
    snap.tunnel_suffix = st.tunnel_suffix.clone();
    Ok(snap)
}

/// Logs (warn) every stored record and pool origin that breaks the rule, by id and name, so
/// an operator upgrading an old store sees which routes stopped. Run once at start.
pub fn audit(st: &AppState) -> StoreResult<usize> {
    let (_, violations) = crate::edge::route_table_checked(&stored_snapshot(st)?);
    for v in &violations {
        tracing::warn!(kind = v.kind.as_str(), id = %v.id, name = %v.name, reason = %v.reason,
            "route does not route: it breaks tenant isolation (delete or fix it)");
    }
    Ok(violations.len())
}
