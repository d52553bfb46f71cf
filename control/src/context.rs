//! What a command needs before it talks to the control plane: cert.pem (found the cloudflared
//! way), an API client for the control plane it names, and NAME → UUID resolution. The CLI's
//! tunnel verbs and `tunnel run` (which resolves a tunnel name the same way) both use it.

use std::path::{Path, PathBuf};

use serde_json::Value;
use uuid::Uuid;

use crate::client::{ApiClient, ClientError};
use crate::files::{self, FilesError, OriginCert};

/// cert.pem and a client for the control plane it names.
#[derive(Debug)]
pub struct Ctx {
    pub cert: OriginCert,
    pub cert_path: PathBuf,
    pub client: ApiClient,
}

/// Why a command could not reach its control plane or resolve a tunnel. Each variant says
/// which side failed: the local files, the flags, or the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// cert.pem is missing or unreadable.
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(
        "no control-plane URL: pass --api-url http://HOST:PORT/client/v4, or log in again with \
         `ringway tunnel login` so cert.pem records it"
    )]
    NoControlUrl,
    #[error("--api-url {url} is not a valid URL: {cause}")]
    BadApiUrl { url: String, cause: url::ParseError },
    /// The control plane could not be asked, or refused.
    #[error(transparent)]
    ControlPlane(#[from] ClientError),
    #[error("{0} is neither the ID nor the name of any of your tunnels")]
    NoSuchTunnel(String),
    #[error("there should only be 1 non-deleted Tunnel named {0}")]
    AmbiguousName(String),
    #[error("control plane returned a tunnel without an id")]
    TunnelWithoutId,
}

impl ContextError {
    /// Whether the same command may succeed later unchanged: only when the control plane could
    /// not be reached or failed on its side (5xx).
    pub fn retryable(&self) -> bool {
        match self {
            ContextError::ControlPlane(ClientError::Unreachable { .. }) => true,
            ContextError::ControlPlane(e) => e.status().is_some_and(|s| s >= 500),
            _ => false,
        }
    }

    /// Whether the failure is in local files (cert.pem) or flags rather than the control plane.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            ContextError::Files(_) | ContextError::NoControlUrl | ContextError::BadApiUrl { .. }
        )
    }
}

/// The `/client/v4` base: `--api-url` wins, else the control URL login stored in cert.pem.
fn api_base(api_url: Option<&str>, cert: &OriginCert) -> Result<String, ContextError> {
    if let Some(u) = api_url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    match &cert.control_url {
        Some(c) => Ok(format!("{}/client/v4", c.trim_end_matches('/'))),
        None => Err(ContextError::NoControlUrl),
    }
}

impl Ctx {
    /// Finds and reads cert.pem (`--origincert`, else the search directories) and builds the
    /// client for `--api-url`, else the control URL cert.pem records.
    pub fn from_flags(
        origincert: Option<&Path>,
        api_url: Option<&str>,
    ) -> Result<Self, ContextError> {
        let dirs = files::default_search_dirs();
        let explicit = origincert.map(files::search::expand_home);
        let cert_path = files::find_origin_cert(explicit.as_deref(), &dirs)?;
        let cert = OriginCert::load(&cert_path)?;
        let base = api_base(api_url, &cert)?;
        url::Url::parse(&base).map_err(|cause| ContextError::BadApiUrl {
            url: base.clone(),
            cause,
        })?;
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
    pub fn find_id(&self, input: &str) -> Result<Uuid, ContextError> {
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
            [] => Err(ContextError::NoSuchTunnel(input.to_owned())),
            [one] => one["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or(ContextError::TunnelWithoutId),
            _ => Err(ContextError::AmbiguousName(input.to_owned())),
        }
    }
}
