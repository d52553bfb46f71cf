//! Bearer-token authentication and scoping.
//!
//! Tokens are looked up by SHA-256, so the database never holds a usable credential. A zone
//! token (from cert.pem) may only name its own account and zone in a path; anything else is
//! 403, not 404, so a caller learns nothing about other accounts' objects.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::envelope::ApiError;
use crate::store::TokenScope;

/// The caller's scope, extracted from `Authorization: Bearer ...`.
#[derive(Debug, Clone)]
pub struct Caller(pub TokenScope);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthorized)?
            .trim();
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        let scope = state
            .store
            .token_scope(&hash)?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller(scope))
    }
}

impl Caller {
    /// May this caller act inside `account_id`? Edges may not use the client API at all.
    pub fn require_account(&self, account_id: &str) -> Result<(), ApiError> {
        match &self.0 {
            TokenScope::Operator => Ok(()),
            TokenScope::Zone { account_id: a, .. } if a == account_id => Ok(()),
            _ => Err(ApiError::forbidden(
                "this API token may not act on that account",
            )),
        }
    }

    /// May this caller act inside `zone_id` (which belongs to `zone_account`)?
    pub fn require_zone(&self, zone_id: &str, zone_account: &str) -> Result<(), ApiError> {
        match &self.0 {
            TokenScope::Operator => Ok(()),
            TokenScope::Zone {
                account_id,
                zone_id: z,
            } if z == zone_id && account_id == zone_account => Ok(()),
            _ => Err(ApiError::forbidden(
                "this API token may not act on that zone",
            )),
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self.0 {
            TokenScope::Operator => Ok(()),
            _ => Err(ApiError::forbidden(
                "this endpoint needs the operator (admin) token",
            )),
        }
    }

    pub fn require_edge(&self) -> Result<(), ApiError> {
        match self.0 {
            TokenScope::Edge | TokenScope::Operator => Ok(()),
            _ => Err(ApiError::forbidden("this endpoint needs the edge token")),
        }
    }
}
