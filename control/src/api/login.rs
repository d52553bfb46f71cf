//! Login: how a person turns the operator's admin token into a zone-scoped cert.pem.
//!
//! `ringway tunnel login` picks a random session id, opens `/login?session=ID`, and polls
//! `/login/poll?session=ID`. In the browser the person signs in with the admin token, then picks
//! a zone; the server mints a token scoped to that zone's account and zone and parks it under
//! the session until the CLI collects it (once). `POST /login/cert` is the non-interactive form
//! (`--api-token --zone`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::envelope::{ApiError, ApiResult, ok};
use super::scope::Operator;
use crate::secret::ApiToken;
use crate::store::TokenScope;

/// A login that nobody collects within this time is dropped, so abandoned sessions cannot pile
/// up tokens in memory.
const SESSION_TTL: Duration = Duration::from_secs(600);
/// Bounds memory: a flood of sign-ins cannot grow the table without limit.
const MAX_PENDING: usize = 1024;

/// The JSON inside cert.pem's `ARGO TUNNEL TOKEN` block, as minted here.
#[derive(Clone, Serialize, Deserialize)]
pub struct IssuedCert {
    #[serde(rename = "zoneID")]
    pub zone_id: String,
    #[serde(rename = "accountID")]
    pub account_id: String,
    #[serde(rename = "apiToken")]
    pub api_token: String,
    /// The zone's name, so the CLI can say what it logged in to.
    #[serde(rename = "zoneName")]
    pub zone_name: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("zone_id", &self.zone_id)
            .field("account_id", &self.account_id)
            .field("api_token", &"MASKED")
            .finish()
    }
}

/// Login state, in memory: sessions whose browser side proved the admin token (so the token
/// never has to travel back into the zone-picking page), and minted certs awaiting the CLI.
#[derive(Clone, Default)]
pub struct LoginSessions(Arc<Mutex<Sessions>>);

#[derive(Default)]
struct Sessions {
    authorized: HashMap<String, Instant>,
    issued: HashMap<String, (Instant, IssuedCert)>,
}

impl std::fmt::Debug for LoginSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginSessions(..)")
    }
}

impl LoginSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.issued.retain(|_, (at, _)| at.elapsed() < SESSION_TTL);
        s.authorized.retain(|_, at| at.elapsed() < SESSION_TTL);
        s
    }

    /// Records that this session's browser signed in with the admin token.
    fn authorize(&self, session: &str) -> Result<(), ApiError> {
        let mut s = self.lock();
        if s.authorized.len() >= MAX_PENDING {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                1000,
                "too many pending logins; try again later",
            ));
        }
        s.authorized.insert(session.to_string(), Instant::now());
        Ok(())
    }

    /// Consumes the session's authorization: one sign-in buys one cert.
    fn take_authorization(&self, session: &str) -> bool {
        self.lock().authorized.remove(session).is_some()
    }

    fn put(&self, session: &str, cert: IssuedCert) -> Result<(), ApiError> {
        let mut s = self.lock();
        let map = &mut s.issued;
        if map.len() >= MAX_PENDING {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                1000,
                "too many pending logins; try again later",
            ));
        }
        map.insert(session.to_string(), (Instant::now(), cert));
        Ok(())
    }

    fn take(&self, session: &str) -> Option<IssuedCert> {
        self.lock().issued.remove(session).map(|(_, c)| c)
    }
}

/// Mints a zone-scoped API token for `zone_name`.
pub fn mint_cert(st: &AppState, zone_name: &str) -> Result<IssuedCert, ApiError> {
    let zone = st
        .store
        .zone_by_name(zone_name)?
        .ok_or_else(|| ApiError::not_found(format!("zone {zone_name} not found")))?;
    let token = ApiToken::generate();
    st.store.insert_token(
        &token.sha256_hex(),
        &TokenScope::Zone {
            account_id: zone.account_id.clone(),
            zone_id: zone.id.clone(),
        },
    )?;
    tracing::info!(zone = %zone.name, account = %zone.account_id, "cert token issued");
    Ok(IssuedCert {
        zone_id: zone.id,
        account_id: zone.account_id,
        api_token: token.expose().to_string(),
        zone_name: zone.name,
    })
}

#[derive(Debug, Deserialize)]
pub struct CertRequest {
    zone: String,
}

/// Non-interactive login: the operator token buys a cert for one zone.
pub async fn issue_cert(
    State(st): State<AppState>,
    _: Operator,
    Json(req): Json<CertRequest>,
) -> ApiResult {
    Ok(ok(mint_cert(&st, &req.zone)?))
}

#[derive(Debug, Deserialize)]
pub struct SessionQuery {
    session: Option<String>,
}

fn valid_session(s: &str) -> bool {
    (16..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

pub async fn poll(State(st): State<AppState>, Query(q): Query<SessionQuery>) -> Response {
    let Some(session) = q.session.filter(|s| valid_session(s)) else {
        return ApiError::bad_request("missing or malformed session").into_response();
    };
    match st.logins.take(&session) {
        Some(cert) => ok(cert),
        None => ApiError::new(StatusCode::ACCEPTED, 1000, "waiting for login").into_response(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page_html(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ringway login</title>\
         <style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}\
         label,input,button{{display:block;margin:.5em 0}}</style></head>\
         <body><h1>ringway login</h1>{body}</body></html>"
    ))
}

pub async fn page(Query(q): Query<SessionQuery>) -> Response {
    let Some(session) = q.session.filter(|s| valid_session(s)) else {
        return (
            StatusCode::BAD_REQUEST,
            page_html("<p>This link is incomplete: start again with <code>ringway tunnel login</code>.</p>"),
        )
            .into_response();
    };
    page_html(&format!(
        "<form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"session\" value=\"{}\">\
         <label>Admin API token <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label>\
         <button type=\"submit\">Sign in</button></form>",
        escape(&session)
    ))
    .into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    session: String,
    /// Step 1 only.
    token: Option<String>,
    /// Step 2 only.
    zone: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("session", &self.session)
            .field("token", &"MASKED")
            .field("zone", &self.zone)
            .finish()
    }
}

/// Step 1 (`token`): check the admin token, mark the session signed in, offer the zones.
/// Step 2 (`zone`): for a signed-in session, mint the cert and park it for the CLI.
pub async fn submit(State(st): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    if !valid_session(&f.session) {
        return (
            StatusCode::BAD_REQUEST,
            page_html("<p>Malformed session.</p>"),
        )
            .into_response();
    }
    let retry = || {
        (
            StatusCode::UNAUTHORIZED,
            page_html(&format!(
                "<p>That token is not the admin token, or this sign-in expired.</p>\
                 <p><a href=\"/login?session={}\">Try again</a></p>",
                escape(&f.session)
            )),
        )
            .into_response()
    };
    if let Some(zone) = f.zone.as_deref().filter(|z| !z.is_empty()) {
        if !st.logins.take_authorization(&f.session) {
            return retry();
        }
        let cert = match mint_cert(&st, zone) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        let name = cert.zone_name.clone();
        if let Err(e) = st.logins.put(&f.session, cert) {
            return e.into_response();
        }
        return page_html(&format!(
            "<p>Authorized for <b>{}</b>. The CLI is downloading cert.pem; you may close this window.</p>",
            escape(&name)
        ))
        .into_response();
    }
    let token = f.token.as_deref().unwrap_or("").trim();
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    if !matches!(st.store.token_scope(&hash), Ok(Some(TokenScope::Operator))) {
        return retry();
    }
    if let Err(e) = st.logins.authorize(&f.session) {
        return e.into_response();
    }
    let zones = match st.store.list_zones(None) {
        Ok(z) => z,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let options: String = zones
        .iter()
        .map(|z| {
            format!(
                "<label><input type=\"radio\" name=\"zone\" value=\"{0}\" required> {0}</label>",
                escape(&z.name)
            )
        })
        .collect();
    page_html(&format!(
        "<form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"session\" value=\"{}\">\
         <p>Pick the zone this cert.pem may manage:</p>{options}\
         <button type=\"submit\">Authorize</button></form>",
        escape(&f.session)
    ))
    .into_response()
}
