//! Cloudflare's v4 response envelope and the error type every handler returns.
//!
//! Every answer, success or failure, is `{"success","errors":[{"code","message"}],"messages",
//! "result"}` with a real HTTP status, because cloudflared reads both: the status picks the
//! error class (404 → not found, 409 → name conflict) and the message is shown to the user.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::store::StoreError;

/// A successful envelope around `result`.
pub fn ok<T: Serialize>(result: T) -> Response {
    ok_with(StatusCode::OK, result)
}

pub fn ok_with<T: Serialize>(status: StatusCode, result: T) -> Response {
    let body = json!({
        "success": true,
        "errors": [],
        "messages": [],
        "result": result,
    });
    (status, Json(body)).into_response()
}

/// A paginated list envelope; cloudflared and other v4 clients read `result_info`.
pub fn ok_list<T: Serialize>(items: Vec<T>) -> Response {
    let n = items.len();
    let body = json!({
        "success": true,
        "errors": [],
        "messages": [],
        "result": items,
        "result_info": {"page": 1, "per_page": n.max(1), "count": n, "total_count": n, "total_pages": 1},
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// An API error: which HTTP status, which Cloudflare-style error code, and a message that is
/// safe to show (it never contains a secret or a token).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 1001, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            10000,
            "Authentication error: missing or unknown API token",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, 10000, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, 1003, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, 1013, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, 1000, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Backend(m) => {
                tracing::error!(error = %m, "store failure");
                ApiError::internal("internal store error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body: Value = json!({
            "success": false,
            "errors": [{"code": self.code, "message": self.message}],
            "messages": [],
            "result": null,
        });
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult = Result<Response, ApiError>;
