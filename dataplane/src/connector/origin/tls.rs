//! rustls client configurations for `https://` and `unix+tls:` origins.
//!
//! Trust: the Mozilla roots bundled by `webpki-roots` (the machine's store is not read, so
//! the connector behaves the same everywhere) plus the PEM certificates of `caPool`, which
//! is how a private origin CA is trusted. `noTLSVerify` swaps in a verifier that accepts any
//! certificate chain and name but still checks the handshake signature against the
//! presented key, like Go's `InsecureSkipVerify` that cloudflared uses.
//!
//! A configuration is built from [`OriginOptions`] by [`OriginOptions::load_tls`] (the
//! control crate calls it when it reads the ingress rules, so a bad `caPool` is a
//! configuration error) and cached per worker by the client, keyed by [`TlsKey`].

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::OriginOptions;
use crate::quic::tls::{crypto_provider, default_kx_groups};

/// Why an origin's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OriginConfigError {
    #[error("origin service {service:?}: {reason}")]
    InvalidService { service: String, reason: String },
    #[error("origin caPool {path}: {source}")]
    CaPoolRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("origin caPool {path}: invalid PEM: {source}")]
    CaPoolPem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("origin caPool {path}: no certificate in the file")]
    CaPoolEmpty { path: PathBuf },
    #[error("origin caPool {path}: certificate rejected: {source}")]
    CaPoolCert {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("origin TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What makes two TLS configurations differ (the server name is per connection, not here).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TlsKey {
    pub(crate) ca_pool: Option<PathBuf>,
    pub(crate) no_verify: bool,
}

impl TlsKey {
    pub(crate) fn of(opts: &OriginOptions) -> Self {
        Self {
            ca_pool: opts.ca_pool.clone(),
            no_verify: opts.no_tls_verify,
        }
    }
}

impl OriginOptions {
    /// Builds the rustls client configuration these options describe: reads and parses
    /// `ca_pool`, so call it when loading the configuration to surface a bad file early.
    /// Cheap enough to call once per worker; the client caches the result.
    pub fn load_tls(&self) -> Result<Arc<rustls::ClientConfig>, OriginConfigError> {
        let provider = crypto_provider(default_kx_groups());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let mut config = if self.no_tls_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { provider }))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = &self.ca_pool {
                for cert in read_pem_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|source| OriginConfigError::CaPoolCert {
                            path: path.clone(),
                            source,
                        })?;
                }
            }
            builder
                .with_root_certificates(Arc::new(roots))
                .with_no_client_auth()
        };
        // We speak HTTP/1.1 only; an origin that would pick h2 must not.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read_pem_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, OriginConfigError> {
    let pem = std::fs::read(path).map_err(|source| OriginConfigError::CaPoolRead {
        path: path.clone(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| OriginConfigError::CaPoolPem {
            path: path.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(OriginConfigError::CaPoolEmpty { path: path.clone() });
    }
    Ok(certs)
}

/// The name to verify and send as SNI: a DNS name or an IP address. Ports and IPv6
/// brackets are removed (a Host header may carry both).
pub(crate) fn server_name(host: &str) -> Option<ServerName<'static>> {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    ServerName::try_from(bare.to_owned()).ok()
}

/// `noTLSVerify`: any chain, any name; the handshake signature is still checked so the
/// session keys belong to whoever holds the presented key. (Also loadgen's `--insecure`.)
#[derive(Debug)]
pub struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyCert {
    /// Checks handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
