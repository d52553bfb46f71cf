//! The connector's side of quick tunnels, as cloudflared's `RunQuickTunnel`: ask the quick
//! service (`POST {service}/tunnel`) for a tunnel, print the banner with its hostname, run it
//! with one HA connection, and delete it again when the connector stops (`DELETE
//! {service}/tunnel/{id}`, authenticated by the tunnel's secret).

use std::time::Duration;

use serde_json::Value;
use tracing::{info, warn};
use uuid::Uuid;

use super::{ConnectorError, RunOptions};
use crate::client::{ClientError, read_answer};
use crate::files::Credentials;
use crate::secret::TunnelSecret;

/// cloudflared's `httpTimeout` for the quick service.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// A quick tunnel as the service issued it. `Debug` shows the secret masked.
#[derive(Debug, Clone)]
pub struct QuickTunnel {
    pub credentials: Credentials,
    pub hostname: String,
}

#[derive(Debug, thiserror::Error)]
pub enum QuickError {
    #[error("cannot reach the quick tunnel service at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("the quick tunnel service at {url} refused: {message} (HTTP {status})")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("unexpected answer from the quick tunnel service at {url}: {cause}")]
    Protocol { url: String, cause: String },
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .user_agent(concat!("ringway/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The envelope's `result`, or why there is none: the control plane's one reader of API
/// answers, with its errors named for the quick tunnel service.
fn answer(
    url: &str,
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Value, QuickError> {
    read_answer(url, r).map(|a| a.result).map_err(|e| match e {
        ClientError::Unreachable { url, cause } => QuickError::Unreachable { url, cause },
        ClientError::Api {
            status, message, ..
        } => QuickError::Refused {
            url: url.to_string(),
            status,
            message,
        },
        ClientError::Protocol { url, cause } => QuickError::Protocol { url, cause },
    })
}

/// Asks `service_url` for a quick tunnel.
pub fn create(service_url: &str) -> Result<QuickTunnel, QuickError> {
    let url = format!("{}/tunnel", service_url.trim_end_matches('/'));
    let r = agent()
        .post(&url)
        .header("Content-Type", "application/json")
        .send_empty();
    let body = answer(&url, r)?;
    let bad = |cause: &str| QuickError::Protocol {
        url: url.clone(),
        cause: cause.to_string(),
    };
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("result.{name} is missing")))
    };
    let tunnel_id = Uuid::parse_str(field("id")?).map_err(|_| bad("result.id is not a UUID"))?;
    let tunnel_secret = TunnelSecret::from_base64(field("secret")?)
        .map_err(|e| bad(&format!("result.secret: {e}")))?;
    Ok(QuickTunnel {
        credentials: Credentials {
            account_tag: field("account_tag")?.to_string(),
            tunnel_secret,
            tunnel_id,
            endpoint: String::new(),
        },
        hostname: field("hostname")?.to_string(),
    })
}

/// Deletes `tunnel` at `service_url`, proving ownership with its secret.
pub fn delete(service_url: &str, tunnel: &QuickTunnel) -> Result<(), QuickError> {
    let url = format!(
        "{}/tunnel/{}",
        service_url.trim_end_matches('/'),
        tunnel.credentials.tunnel_id
    );
    let r = agent()
        .delete(&url)
        .header(
            "Authorization",
            format!("Bearer {}", tunnel.credentials.tunnel_secret.to_base64()),
        )
        .call();
    answer(&url, r).map(|_| ())
}

/// cloudflared's banner (`cliutil.LogTable`): the lines in a `+--+` box, two spaces of padding.
pub fn banner(hostname: &str) -> Vec<String> {
    let url = if hostname.starts_with("https://") {
        hostname.to_string()
    } else {
        format!("https://{hostname}")
    };
    let lines = [
        "Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):"
            .to_string(),
        url,
    ];
    let width = lines.iter().map(String::len).max().unwrap_or(0);
    let border = format!("+{}+", "-".repeat(width + 4));
    let mut out = vec![border.clone()];
    for l in &lines {
        out.push(format!("|  {l}{}  |", " ".repeat(width - l.len())));
    }
    out.push(border);
    out
}

/// The whole quick-tunnel run: create, banner, run with one HA connection until the connector
/// stops, then delete the tunnel (a failed delete is logged; the service's lease removes it).
pub fn run(service_url: &str, mut opts: RunOptions) -> Result<(), QuickError> {
    info!("Requesting new quick Tunnel on {service_url}...");
    let tunnel = create(service_url)?;
    for line in banner(&tunnel.hostname) {
        info!("{line}");
    }
    opts.credentials_contents = Some(tunnel.credentials.to_json());
    opts.ha_connections = 1;
    opts.quick_hostname = Some(tunnel.hostname.clone());
    let res = super::run(opts);
    match delete(service_url, &tunnel) {
        Ok(()) => info!(tunnel = %tunnel.credentials.tunnel_id, "quick tunnel deleted"),
        Err(e) => warn!(error = %e, "cannot delete the quick tunnel; the service expires it"),
    }
    res.map_err(QuickError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_is_cloudflareds_box() {
        let b = banner("abc.try.test");
        let text = "Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):";
        assert_eq!(b.len(), 4);
        assert_eq!(b[0], format!("+{}+", "-".repeat(text.len() + 4)));
        assert_eq!(b[1], format!("|  {text}  |"));
        assert!(b[2].starts_with("|  https://abc.try.test "));
        assert_eq!(b[2].len(), b[1].len());
        assert_eq!(b[3], b[0]);
    }

    #[test]
    fn debug_masks_the_secret() {
        let t = QuickTunnel {
            credentials: Credentials {
                account_tag: "a".into(),
                tunnel_secret: TunnelSecret::generate(),
                tunnel_id: Uuid::new_v4(),
                endpoint: String::new(),
            },
            hostname: "h".into(),
        };
        let b64 = t.credentials.tunnel_secret.to_base64();
        assert!(!format!("{t:?}").contains(&b64));
    }
}
