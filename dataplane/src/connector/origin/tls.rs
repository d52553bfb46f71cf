//! rustls client configurations for `https://` and `unix+tls:` origins.
//!
//! Trust is [`crate::tls::client_config`]'s: the bundled web PKI roots plus the PEM
//! certificates of `caPool` (how a private origin CA is trusted), or, with `noTLSVerify`,
//! [`crate::tls::AcceptAnyCert`], as cloudflared's Go `InsecureSkipVerify` does.
//!
//! A configuration is built from [`OriginOptions`] by [`OriginOptions::load_tls`] (the
//! control crate calls it when it reads the ingress rules, so a bad `caPool` is a
//! configuration error) and cached per worker by the client, keyed by [`TlsKey`].

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::OriginOptions;
use crate::tls::{CertFileError, ClientConfigError, ClientTrust};

/// Why an origin's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OriginConfigError {
    #[error("origin service {service:?}: {reason}")]
    InvalidService { service: String, reason: String },
    #[error("origin caPool {0}")]
    CaPool(#[from] CertFileError),
    #[error("origin TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What makes two TLS configurations differ (the server name is per connection, not here).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TlsKey {
    pub(crate) ca_pool: Option<PathBuf>,
    pub(crate) no_verify: bool,
    /// The ALPN offer differs.
    pub(crate) http2: bool,
}

impl TlsKey {
    pub(crate) fn of(opts: &OriginOptions) -> Self {
        Self {
            ca_pool: opts.ca_pool.clone(),
            no_verify: opts.no_tls_verify,
            http2: opts.http2_origin,
        }
    }
}

impl OriginOptions {
    /// Builds the rustls client configuration these options describe: reads and parses
    /// `ca_pool`, so call it when loading the configuration to surface a bad file early.
    /// Cheap enough to call once per worker; the client caches the result.
    pub fn load_tls(&self) -> Result<Arc<rustls::ClientConfig>, OriginConfigError> {
        let trust = if self.no_tls_verify {
            ClientTrust::AcceptAny
        } else {
            ClientTrust::WebPki {
                extra_ca: self.ca_pool.as_deref(),
            }
        };
        let mut config = crate::tls::client_config(trust).map_err(|e| match e {
            ClientConfigError::CaFile(e) => OriginConfigError::CaPool(e),
            ClientConfigError::Rustls(e) => OriginConfigError::Rustls(e),
        })?;
        // Offer exactly what the client will speak: an origin that picks h2 must be able to.
        config.alpn_protocols = if self.http2_origin {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Arc::new(config))
    }
}

/// The name to verify and send as SNI: a DNS name or an IP address. The port, IPv6
/// brackets and a final dot are removed (a Host header may carry them; SNI never does).
pub(crate) fn server_name(host: &str) -> Option<ServerName<'static>> {
    let bare = crate::http::host_without_port(host);
    ServerName::try_from(bare.to_owned()).ok()
}
