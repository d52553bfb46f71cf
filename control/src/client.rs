//! The blocking HTTP client the CLI uses against the control plane's `/client/v4` API.
//!
//! Errors say which side failed: `Unreachable` (network, names the URL, a retry may help),
//! `Api` (the server refused: its status, code and message), `Protocol` (the answer was not the
//! v4 envelope). The bearer token is held in an `ApiToken` and never enters an error.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::secret::ApiToken;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the control plane at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("{message} (HTTP {status}, code {code})")]
    Api {
        status: u16,
        code: i64,
        message: String,
    },
    #[error("unexpected answer from the control plane at {url}: {cause}")]
    Protocol { url: String, cause: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A v4 API client bound to one base URL (`.../client/v4`) and one token.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    token: ApiToken,
    agent: ureq::Agent,
}

/// The whole answer: `result` plus `result_info` for paged lists.
#[derive(Debug)]
pub struct Answer {
    pub result: Value,
    pub result_info: Option<Value>,
}

impl ApiClient {
    pub fn new(base: &str, token: ApiToken) -> Self {
        // cloudflared's own limit; long enough for a loaded control plane, short enough that
        // a black-holed address fails a command in reasonable time.
        Self::with_timeout(base, token, Duration::from_secs(15))
    }

    /// A client whose requests may take up to `timeout` (long-polls).
    pub fn with_timeout(base: &str, token: ApiToken, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .user_agent(concat!("ringway/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let url = self.url(path);
        let r = self
            .authorized(self.agent.get(&url))
            .header("Accept", "application/json")
            .call();
        read_answer(&url, r)
    }

    /// GET that treats `304 Not Modified` as `None` (long-polls that saw no change).
    pub fn get_maybe_unchanged(&self, path: &str) -> Result<Option<Answer>, ClientError> {
        let url = self.url(path);
        let r = self.authorized(self.agent.get(&url)).call();
        if let Ok(resp) = &r
            && resp.status().as_u16() == 304
        {
            return Ok(None);
        }
        read_answer(&url, r).map(Some)
    }

    pub fn delete(&self, path: &str) -> Result<Answer, ClientError> {
        let url = self.url(path);
        read_answer(&url, self.authorized(self.agent.delete(&url)).call())
    }

    pub fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Answer, ClientError> {
        let url = self.url(path);
        read_answer(&url, self.authorized(self.agent.post(&url)).send_json(body))
    }

    pub fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<Answer, ClientError> {
        let url = self.url(path);
        read_answer(&url, self.authorized(self.agent.put(&url)).send_json(body))
    }

    /// `req` with this client's bearer token on it.
    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        req.header("Authorization", format!("Bearer {}", self.token.expose()))
    }
}

/// The control plane's answer to one call: the envelope's `result` when the status is 200 and
/// `success` is true, else `Api` with the first error's code and message.
pub(crate) fn read_answer(
    url: &str,
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Answer, ClientError> {
    let mut resp = r.map_err(|e| ClientError::Unreachable {
        url: url.to_string(),
        cause: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let body: Value = resp
        .body_mut()
        .read_json()
        .map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            cause: format!("HTTP {status}, body is not JSON: {e}"),
        })?;
    let success = body
        .get("success")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if status == 200 && success {
        return Ok(Answer {
            result: body.get("result").cloned().unwrap_or(Value::Null),
            result_info: body.get("result_info").cloned(),
        });
    }
    let first = body
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first());
    let code = first
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let message = first
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("request to {url} failed"));
    Err(ClientError::Api {
        status,
        code,
        message,
    })
}
