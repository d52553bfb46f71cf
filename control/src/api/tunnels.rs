//! `/accounts/{acct}/cfd_tunnel`: tunnels and their connection records, in the JSON shapes
//! cloudflared's cfapi client decodes (`Tunnel`, `TunnelWithToken`, `ActiveClient`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ApiError, ApiResult, ok};
use super::scope::{AccountScope, TunnelRef, parse_tunnel_id};
use crate::secret::TunnelSecret;
use crate::store::{ConnectionRecord, Tunnel, TunnelFilter};

/// The smallest secret a connector may hold: what cloudflared's own `create --secret` demands.
pub const MIN_SECRET_LEN: usize = 32;
/// Pagination bounds; cloudflared pages until a short page.
const DEFAULT_PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 1000;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn connection_json(c: &ConnectionRecord) -> Value {
    json!({
        "colo_name": c.colo_name,
        "id": c.id,
        "is_pending_reconnect": false,
        "origin_ip": c.origin_ip,
        "opened_at": rfc3339(c.opened_at),
        "client_id": c.client_id,
        "client_version": c.client_version,
    })
}

fn tunnel_json(t: &Tunnel, conns: &[ConnectionRecord]) -> Value {
    json!({
        "id": t.id,
        "account_tag": t.account_id,
        "name": t.name,
        "created_at": rfc3339(t.created_at),
        "deleted_at": t.deleted_at.map(rfc3339),
        "connections": conns.iter().map(connection_json).collect::<Vec<_>>(),
        "conns_active_at": conns.iter().map(|c| c.opened_at).min().map(rfc3339),
        "tun_type": "cfd_tunnel",
        "status": if t.deleted_at.is_some() { "deleted" } else if conns.is_empty() { "inactive" } else { "healthy" },
        "remote_config": false,
    })
}

/// The tunnel token cloudflared's `run --token` takes: base64 of `{"a","s","t"}`.
fn token_string(account_tag: &str, secret: &[u8], id: Uuid) -> String {
    let body = json!({"a": account_tag, "s": STANDARD.encode(secret), "t": id});
    STANDARD.encode(body.to_string())
}

/// The longest tunnel name, in characters.
pub const MAX_TUNNEL_NAME_CHARS: usize = 255;

/// Bidirectional-text controls (U+202A–U+202E embeddings and overrides, U+2066–U+2069
/// isolates, and the LRM/RLM/ALM marks) make a name display differently from what it is, so
/// `tunnel list` could show a lie.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Why a tunnel name is refused. The name appears only escaped (see [`escape_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelNameError {
    #[error("tunnel name required")]
    Empty,
    #[error("you cannot use UUIDs as tunnel names")]
    Uuid,
    #[error(
        "tunnel name {escaped} is not allowed: {why}; a tunnel name is 1-255 printable \
         characters without '/' or '\\', and does not start with '-'"
    )]
    NotAllowed { escaped: String, why: &'static str },
}

/// The tunnel-name rule, shared by the API and the CLI (which checks before sending).
/// cloudflared and Cloudflare's API accept almost any printable name (spaces and non-ASCII
/// letters included), so this refuses only what misleads or breaks: control and bidi
/// characters, `/` and `\` (a name is not a path; `../x` included), a leading `-` (read as
/// a flag by every CLI it is pasted into), `.` and `..`, a UUID (names and ids share one
/// argument), and more than 255 characters. The error says the rule; it shows the name
/// escaped, never raw.
pub fn check_tunnel_name(name: &str) -> Result<(), TunnelNameError> {
    let refuse = |why: &'static str| {
        Err(TunnelNameError::NotAllowed {
            escaped: escape_name(name),
            why,
        })
    };
    if name.is_empty() {
        return Err(TunnelNameError::Empty);
    }
    if Uuid::parse_str(name).is_ok() {
        return Err(TunnelNameError::Uuid);
    }
    if name.chars().count() > MAX_TUNNEL_NAME_CHARS {
        return refuse("it is too long");
    }
    if name.chars().any(|c| c.is_control()) {
        return refuse("it contains a control character");
    }
    if name.chars().any(is_bidi_control) {
        return refuse("it contains a bidirectional-text control character");
    }
    if name.contains('/') || name.contains('\\') {
        return refuse("it contains a path separator");
    }
    if name.starts_with('-') {
        return refuse("it starts with '-'");
    }
    if name == "." || name == ".." {
        return refuse("it is a path component");
    }
    Ok(())
}

/// A character a terminal would act on rather than show: a control or bidi character.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// `name` safe to print on a terminal: control and bidi characters become `\u{..}` escapes
/// (a name stored before the rule may hold them), everything else stays as it is.
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if is_unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Deserialize)]
pub struct NewTunnel {
    name: Option<String>,
    tunnel_secret: Option<String>,
}

impl std::fmt::Debug for NewTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTunnel")
            .field("name", &self.name)
            .field("tunnel_secret", &"MASKED")
            .finish()
    }
}

pub async fn create(
    State(st): State<AppState>,
    AccountScope(acct): AccountScope,
    Json(body): Json<NewTunnel>,
) -> ApiResult {
    let name = body.name.as_deref().unwrap_or("").trim().to_string();
    check_tunnel_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let secret = match body.tunnel_secret.as_deref() {
        // Cloudflare generates a secret when none is sent (remotely managed tunnels).
        None | Some("") => TunnelSecret::generate().expose().to_vec(),
        Some(b64) => STANDARD
            .decode(b64)
            .map_err(|_| ApiError::bad_request("tunnel_secret must be standard base64"))?,
    };
    if secret.len() < MIN_SECRET_LEN {
        return Err(ApiError::bad_request(format!(
            "tunnel_secret must decode to at least {MIN_SECRET_LEN} bytes, got {}",
            secret.len()
        )));
    }
    TunnelSecret::check_unpredictable(&secret).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let t = st.store.create_tunnel(&acct, &name, &secret)?;
    st.publish();
    tracing::info!(tunnel = %t.id, name = %escape_name(&t.name), "tunnel created");
    let mut out = tunnel_json(&t, &[]);
    out["token"] = Value::String(token_string(&acct, &secret, t.id));
    Ok(ok(out))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    name: Option<String>,
    name_prefix: Option<String>,
    exclude_prefix: Option<String>,
    uuid: Option<String>,
    is_deleted: Option<bool>,
    existed_at: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

pub async fn list(
    State(st): State<AppState>,
    AccountScope(acct): AccountScope,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let existed_at = q
        .existed_at
        .as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|_| ApiError::bad_request(format!("existed_at {s} is not RFC 3339")))
        })
        .transpose()?;
    let filter = TunnelFilter {
        name: q.name.clone(),
        id: q.uuid.as_deref().map(parse_tunnel_id).transpose()?,
        is_deleted: q.is_deleted,
        existed_at,
    };
    let mut tunnels = st.store.list_tunnels(&acct, &filter)?;
    if let Some(p) = &q.name_prefix {
        tunnels.retain(|t| t.name.starts_with(p.as_str()));
    }
    if let Some(p) = &q.exclude_prefix {
        tunnels.retain(|t| !t.name.starts_with(p.as_str()));
    }
    let per_page = q
        .per_page
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page = q.page.unwrap_or(1).max(1);
    let total = tunnels.len();
    let mut items = Vec::new();
    for t in tunnels.iter().skip((page - 1) * per_page).take(per_page) {
        let conns = if t.deleted_at.is_none() {
            st.store.list_connections(t.id)?
        } else {
            Vec::new()
        };
        items.push(tunnel_json(t, &conns));
    }
    let body = json!({
        "success": true,
        "errors": [],
        "messages": [],
        "result_info": {
            "page": page,
            "per_page": per_page,
            "count": items.len(),
            "total_count": total,
            "total_pages": total.div_ceil(per_page),
        },
        "result": items,
    });
    Ok(axum::response::IntoResponse::into_response(Json(body)))
}

pub async fn get_one(State(st): State<AppState>, tunnel: TunnelRef) -> ApiResult {
    let t = tunnel.load(&st)?;
    let conns = st.store.list_connections(t.id)?;
    Ok(ok(tunnel_json(&t, &conns)))
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    cascade: Option<bool>,
}

pub async fn delete_one(
    State(st): State<AppState>,
    tunnel: TunnelRef,
    Query(q): Query<DeleteQuery>,
) -> ApiResult {
    let id = tunnel.id;
    let t = tunnel.load(&st)?;
    if t.deleted_at.is_some() {
        return Err(ApiError::bad_request(format!(
            "Tunnel {id} has already been deleted"
        )));
    }
    let conns = st.store.list_connections(id)?;
    if !conns.is_empty() && !q.cascade.unwrap_or(false) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            1022,
            format!(
                "Cannot delete tunnel {id} because it has {} active connection(s); \
                 stop its connectors or delete with --force (cascade)",
                conns.len()
            ),
        ));
    }
    let t = st.store.delete_tunnel(&tunnel.acct, id)?;
    st.publish();
    tracing::info!(tunnel = %id, "tunnel deleted");
    Ok(ok(tunnel_json(&t, &[])))
}

pub async fn token(State(st): State<AppState>, TunnelRef { acct, id }: TunnelRef) -> ApiResult {
    let secret = st.store.tunnel_secret(&acct, id)?;
    Ok(ok(token_string(&acct, &secret, id)))
}

pub async fn connections(State(st): State<AppState>, tunnel: TunnelRef) -> ApiResult {
    let t = tunnel.load(&st)?;
    let conns = st.store.list_connections(t.id)?;
    // One ActiveClient per connector process (client_id), as cloudflared groups them.
    let mut clients: BTreeMap<Uuid, Vec<&ConnectionRecord>> = BTreeMap::new();
    for c in &conns {
        clients.entry(c.client_id).or_default().push(c);
    }
    let result: Vec<Value> = clients
        .into_iter()
        .map(|(client_id, cs)| {
            let first = cs[0];
            json!({
                "id": client_id,
                "features": first.features,
                "version": first.client_version,
                "arch": first.arch,
                "run_at": rfc3339(cs.iter().map(|c| c.opened_at).min().unwrap_or(first.opened_at)),
                "conns": cs.iter().map(|c| connection_json(c)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(ok(result))
}

#[derive(Debug, Deserialize)]
pub struct CleanupQuery {
    client_id: Option<String>,
}

pub async fn cleanup_connections(
    State(st): State<AppState>,
    tunnel: TunnelRef,
    Query(q): Query<CleanupQuery>,
) -> ApiResult {
    let t = tunnel.load(&st)?;
    let client = match q.client_id.as_deref().filter(|s| !s.is_empty()) {
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
            ApiError::bad_request(format!("{c} is not a valid client ID (must be a UUID)"))
        })?),
        None => None,
    };
    let n = st.store.delete_connections(t.id, client)?;
    tracing::info!(tunnel = %t.id, removed = n, "connections cleaned up");
    Ok(ok(json!({"removed": n})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_names_that_mislead_are_refused_with_the_rule() {
        for ok in ["web", "my tunnel", "café-prod", "a.b_c", "x--y", "日本"] {
            assert_eq!(check_tunnel_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "--help",
            "-x",
            "../etc",
            "a/b",
            "a\\b",
            "..",
            "bell\u{7}",
            "new\nline",
            "esc\u{1b}[31m",
            "evil\u{202E}txt.exe",
            "iso\u{2066}late",
            &"x".repeat(256),
            "5e7a8c7e-8d4b-4b8e-9c9e-1a2b3c4d5e6f",
        ] {
            let e = check_tunnel_name(bad).unwrap_err().to_string();
            assert!(
                !e.chars().any(|c| c.is_control() || is_bidi_control(c)),
                "{e:?}"
            );
        }
        assert!(check_tunnel_name(&"é".repeat(255)).is_ok());
        assert_eq!(escape_name("a\u{1b}b\u{202E}c"), "a\\u{1b}b\\u{202e}c");
    }
}
