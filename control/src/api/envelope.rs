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

fn ok_with<T: Serialize>(status: StatusCode, result: T) -> Response {
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

/// The error code the envelope carries for a bare HTTP status.
fn code_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 1001,
        401 | 403 => 10000,
        404 => 1003,
        405 => 1005,
        409 => 1013,
        413 => 1011,
        _ => 1000,
    }
}

/// Puts every error answer that is not already an envelope into one: axum's own rejections
/// (malformed JSON, a missing or wrong Content-Type, a body over the limit, a bad path or
/// query, a method the route lacks) answer in plain text, which v4 clients cannot read.
/// Installed once for the whole router, so no handler needs its own extractor. A wrong
/// Content-Type (axum: 415) and a body that is JSON but the wrong shape (axum: 422) become
/// 400, as Cloudflare answers them.
pub async fn plain_errors_as_envelope(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // axum's rejection texts are one short line; anything longer is cut, not buffered.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let status = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
            StatusCode::BAD_REQUEST
        }
        s => s,
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code_for(status), message).into_response();
    // Keep what else the rejection said (`Allow` on a 405), not its body's framing.
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (k, v) in parts.headers.iter() {
        out.headers_mut().insert(k.clone(), v.clone());
    }
    out
}
