//! Extractors for the checks every scoped v4 call starts with: who the bearer token is, which
//! account or zone the path names, and whether that token may act there (or is the operator's,
//! or an edge's, for the calls only those may make). A handler that takes
//! one of these runs only once its checks have passed, so no handler can forget one.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::envelope::ApiError;
use crate::store::{TokenScope, Tunnel, Zone};

/// A call only the operator token may make (creating accounts and zones, minting certs).
#[derive(Debug)]
pub struct Operator;

/// A call only an edge's token may make (`/edge/v1`).
#[derive(Debug)]
pub struct EdgeCaller;

/// `/accounts/{acct}/...`: an existing account the caller may act on.
#[derive(Debug)]
pub struct AccountScope(pub String);

/// `/zones/{zone}/...`: an existing zone the caller may act on.
#[derive(Debug)]
pub struct ZoneScope(pub Zone);

/// The `{id}` path segment: the object a call is about, as the client wrote it.
#[derive(Debug)]
pub struct ObjectId(pub String);

/// `/accounts/{acct}/cfd_tunnel/{id}`: a well-formed tunnel id inside an account the caller may
/// act on. Whether the tunnel exists is the handler's question ([`TunnelRef::load`]).
#[derive(Debug)]
pub struct TunnelRef {
    pub acct: String,
    pub id: Uuid,
}

impl TunnelRef {
    /// The tunnel record, deleted ones included.
    pub fn load(&self, st: &AppState) -> Result<Tunnel, ApiError> {
        st.store
            .tunnel(&self.acct, self.id)?
            .ok_or_else(|| ApiError::not_found(format!("tunnel {} not found", self.id)))
    }
}

/// A tunnel id from a path or query, with the error the API gives for a malformed one.
pub fn parse_tunnel_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::bad_request(format!("{id} is not a valid tunnel id")))
}

#[derive(Deserialize)]
struct AcctParam {
    acct: String,
}

#[derive(Deserialize)]
struct ZoneParam {
    zone: String,
}

#[derive(Deserialize)]
struct IdParam {
    id: String,
}

/// One named path parameter set; routes carry more parameters than any one extractor reads.
async fn path_param<T: DeserializeOwned + Send>(
    parts: &mut Parts,
    state: &AppState,
) -> Result<T, ApiError> {
    let Path(p) = Path::<T>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(p)
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        Caller::from_request_parts(parts, st)
            .await?
            .require_operator()?;
        Ok(Self)
    }
}

impl FromRequestParts<AppState> for EdgeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        Caller::from_request_parts(parts, st)
            .await?
            .require_edge()?;
        Ok(Self)
    }
}

impl FromRequestParts<AppState> for AccountScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, st).await?;
        let AcctParam { acct } = path_param(parts, st).await?;
        account_for(st, &caller, &acct)?;
        Ok(Self(acct))
    }
}

impl FromRequestParts<AppState> for ZoneScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, st).await?;
        let ZoneParam { zone } = path_param(parts, st).await?;
        Ok(Self(zone_for(st, &caller, &zone)?))
    }
}

impl FromRequestParts<AppState> for ObjectId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let IdParam { id } = path_param(parts, st).await?;
        Ok(Self(id))
    }
}

impl FromRequestParts<AppState> for TunnelRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let AccountScope(acct) = AccountScope::from_request_parts(parts, st).await?;
        let ObjectId(id) = ObjectId::from_request_parts(parts, st).await?;
        Ok(Self {
            acct,
            id: parse_tunnel_id(&id)?,
        })
    }
}

/// Loads a zone the caller may act in: a zone token naming another zone gets 403 before the
/// existence check, so it cannot probe other accounts' zone ids.
fn zone_for(st: &AppState, caller: &Caller, zone_id: &str) -> Result<Zone, ApiError> {
    if let TokenScope::Zone { zone_id: z, .. } = &caller.0
        && z != zone_id
    {
        return Err(ApiError::forbidden(
            "this API token may not act on that zone",
        ));
    }
    if caller.0 == TokenScope::Edge {
        return Err(ApiError::forbidden("edges may not use the client API"));
    }
    let zone = st
        .store
        .zone(zone_id)?
        .ok_or_else(|| ApiError::not_found(format!("zone {zone_id} not found")))?;
    caller.require_zone(&zone.id, &zone.account_id)?;
    Ok(zone)
}

/// Checks the caller may act in `account_id` and that it exists.
fn account_for(st: &AppState, caller: &Caller, account_id: &str) -> Result<(), ApiError> {
    caller.require_account(account_id)?;
    if st.store.account(account_id)?.is_none() {
        return Err(ApiError::not_found(format!(
            "account {account_id} not found"
        )));
    }
    Ok(())
}
