//! The TLS pieces every side shares: one rustls crypto provider, certificate parsing, the
//! client trust store and the verifier behind `noTLSVerify`.
//!
//! - Provider: aws-lc-rs restricted to ringway's key exchange groups, in preference order
//!   X25519MLKEM768 (the hybrid post-quantum group the stock cloudflared offers first), X25519,
//!   then secp256r1 (P-256, the classical group cloudflared also offers). The edge's QUIC TLS,
//!   the connector's origin client and loadgen all build on [`default_provider`], so a client
//!   and a server of this workspace always have a group in common.
//! - Certificates: [`parse_pem_certs`] for PEM text, [`parse_certs`] for PEM or one DER
//!   certificate, [`read_cert_file`] for a file named on the command line or in a
//!   configuration.
//! - Client trust ([`client_config`]): the Mozilla roots bundled by `webpki-roots` (the
//!   machine's store is not read, so every host behaves the same) plus an optional CA file, or
//!   [`AcceptAnyCert`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::crypto::{
    CryptoProvider, SupportedKxGroup, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The default key exchange groups: X25519MLKEM768, X25519, P-256.
pub(crate) fn default_kx_groups() -> Vec<&'static dyn SupportedKxGroup> {
    vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
    ]
}

/// The aws-lc-rs provider restricted to `groups` (in preference order).
pub(crate) fn crypto_provider(groups: Vec<&'static dyn SupportedKxGroup>) -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = groups;
    Arc::new(provider)
}

/// The aws-lc-rs provider with [`default_kx_groups`].
pub fn default_provider() -> Arc<CryptoProvider> {
    crypto_provider(default_kx_groups())
}

/// Why certificate input could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The PEM text is malformed.
    #[error("invalid PEM: {0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// The input parsed but held no CERTIFICATE block.
    #[error("no certificate in it")]
    Empty,
}

/// Every CERTIFICATE block of PEM text, in order; at least one.
pub(crate) fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CertsError::Pem)?;
    if certs.is_empty() {
        return Err(CertsError::Empty);
    }
    Ok(certs)
}

/// PEM (any number of CERTIFICATE blocks) or a single DER certificate.
pub(crate) fn parse_certs(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertsError> {
    // A DER certificate starts with a SEQUENCE tag (0x30); PEM is text.
    if input.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(input.to_vec())]);
    }
    parse_pem_certs(input)
}

/// Why a certificate file could not be used. Its display starts with the path, so a caller
/// prefixes only what the file is for (`--cacert`, `caPool`).
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file's contents are not certificates.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with the contents.
        source: CertsError,
    },
    /// rustls refused a certificate as a trust anchor.
    #[error("{path}: certificate rejected: {source}")]
    Rejected {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// The certificates of the PEM or DER file at `path`; at least one.
pub(crate) fn read_cert_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertFileError> {
    let input = std::fs::read(path).map_err(|source| CertFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_certs(&input).map_err(|source| CertFileError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Whom a TLS client trusts.
#[derive(Debug, Clone, Copy)]
pub enum ClientTrust<'a> {
    /// The bundled web PKI roots, plus every certificate of `extra_ca` (how a private CA is
    /// trusted).
    WebPki {
        /// A PEM or DER file of extra trust anchors.
        extra_ca: Option<&'a Path>,
    },
    /// Any chain and any name ([`AcceptAnyCert`]).
    AcceptAny,
}

/// Why a client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// The extra CA file is unusable.
    #[error(transparent)]
    CaFile(#[from] CertFileError),
    /// rustls rejected the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS 1.3 and 1.2 client configuration on [`default_provider`] with `trust`, no client
/// certificate and no ALPN (callers set `alpn_protocols`). Reads the CA file, so build it
/// when loading configuration, not per connection.
pub fn client_config(trust: ClientTrust<'_>) -> Result<rustls::ClientConfig, ClientConfigError> {
    let provider = default_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    Ok(match trust {
        ClientTrust::AcceptAny => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert::new(provider)))
            .with_no_client_auth(),
        ClientTrust::WebPki { extra_ca } => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = extra_ca {
                for cert in read_cert_file(path)? {
                    roots.add(cert).map_err(|source| CertFileError::Rejected {
                        path: path.to_owned(),
                        source,
                    })?;
                }
            }
            builder
                .with_root_certificates(Arc::new(roots))
                .with_no_client_auth()
        }
    })
}

/// Accepts any chain for any name, like Go's `InsecureSkipVerify` that cloudflared's
/// `noTLSVerify` uses, but still checks the handshake signature against the presented key, so
/// the session keys belong to whoever holds that key.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        crate::quic::tls::TlsMaterial::generate_ca()
            .unwrap()
            .cert_pem()
    }

    #[test]
    fn certs_parse_from_pem_and_der_and_empty_input_is_an_error() {
        let pem = ca_pem();
        let from_pem = parse_certs(pem.as_bytes()).unwrap();
        assert_eq!(from_pem.len(), 1);
        assert_eq!(parse_certs(from_pem[0].as_ref()).unwrap(), from_pem);
        assert!(matches!(parse_certs(b""), Err(CertsError::Empty)));
        assert!(matches!(
            parse_pem_certs(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"),
            Err(CertsError::Pem(_))
        ));
    }

    #[test]
    fn client_config_reads_the_ca_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca_pem()).unwrap();
        client_config(ClientTrust::WebPki {
            extra_ca: Some(&good),
        })
        .unwrap();
        client_config(ClientTrust::AcceptAny).unwrap();

        let missing = dir.path().join("missing.pem");
        let err = client_config(ClientTrust::WebPki {
            extra_ca: Some(&missing),
        })
        .unwrap_err();
        assert!(matches!(
            err,
            ClientConfigError::CaFile(CertFileError::Read { .. })
        ));
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(ClientTrust::WebPki {
            extra_ca: Some(&empty),
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                ClientConfigError::CaFile(CertFileError::Parse {
                    source: CertsError::Empty,
                    ..
                })
            ),
            "{err}"
        );
    }
}
