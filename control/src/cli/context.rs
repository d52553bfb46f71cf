//! What most `tunnel` verbs need before they act: cert.pem (found the cloudflared way), an API
//! client for the control plane it names, and NAME → UUID resolution.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use uuid::Uuid;

use super::args::TunnelCmd;
use crate::client::ApiClient;
use crate::files::{self, OriginCert};

#[derive(Debug)]
pub struct Ctx {
    pub cert: OriginCert,
    pub cert_path: PathBuf,
    pub client: ApiClient,
}

/// The `/client/v4` base: `--api-url` wins, else the control URL login stored in cert.pem.
fn api_base(api_url: Option<&str>, cert: &OriginCert) -> anyhow::Result<String> {
    if let Some(u) = api_url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    match &cert.control_url {
        Some(c) => Ok(format!("{}/client/v4", c.trim_end_matches('/'))),
        None => bail!(
            "no control-plane URL: pass --api-url http://HOST:PORT/client/v4, or log in again \
             with `ringway tunnel login` so cert.pem records it"
        ),
    }
}

impl Ctx {
    pub fn load(t: &TunnelCmd) -> anyhow::Result<Self> {
        Self::from_flags(t.origincert.as_deref(), t.api_url.as_deref())
    }

    /// [`Ctx::load`] from the two flags it reads: `--origincert` and `--api-url`.
    pub fn from_flags(origincert: Option<&Path>, api_url: Option<&str>) -> anyhow::Result<Self> {
        let dirs = files::default_search_dirs();
        let explicit = origincert.map(files::search::expand_home);
        let cert_path = files::find_origin_cert(explicit.as_deref(), &dirs)?;
        let cert = OriginCert::load(&cert_path)?;
        let base = api_base(api_url, &cert)?;
        url::Url::parse(&base).with_context(|| format!("--api-url {base} is not a valid URL"))?;
        let client = ApiClient::new(&base, cert.api_token.clone());
        Ok(Self {
            cert,
            cert_path,
            client,
        })
    }

    /// `/accounts/{acct}/cfd_tunnel` + `rest`.
    pub fn tunnels_path(&self, rest: &str) -> String {
        format!("/accounts/{}/cfd_tunnel{rest}", self.cert.account_id)
    }

    /// `/zones/{zone}/tunnels/{id}/routes`.
    pub fn routes_path(&self, id: Uuid) -> String {
        format!("/zones/{}/tunnels/{id}/routes", self.cert.zone_id)
    }

    /// A UUID is taken as is; a name must match exactly one live tunnel.
    pub fn find_id(&self, input: &str) -> anyhow::Result<Uuid> {
        if let Ok(id) = Uuid::parse_str(input) {
            return Ok(id);
        }
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("is_deleted", "false")
            .append_pair("name", input)
            .finish();
        let found = self
            .client
            .get(&self.tunnels_path(&format!("?{q}")))?
            .result;
        let ids: Vec<&Value> = found
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        match ids.as_slice() {
            [] => Err(anyhow!(
                "{input} is neither the ID nor the name of any of your tunnels"
            )),
            [one] => one["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| anyhow!("control plane returned a tunnel without an id")),
            _ => Err(anyhow!(
                "there should only be 1 non-deleted Tunnel named {input}"
            )),
        }
    }
}
