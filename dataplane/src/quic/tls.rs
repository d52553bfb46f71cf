//! TLS for QUIC: rustls configurations on the shared provider ([`crate::tls`], whose key
//! exchange groups prefer X25519MLKEM768), TLS 1.3 only as QUIC requires, plus certificate
//! generation.
//!
//! Certificates: the edge needs a certificate covering `quic.cftunnel.com` (the SNI the
//! connector sends), `probe.cftunnel.com` (cloudflared's pre-flight probes) and
//! `h2.cftunnel.com` (the HTTP/2 fallback), signed by a CA that the stock cloudflared is
//! given with `--cacert FILE`. [`TlsMaterial::generate_ca`] and
//! [`TlsMaterial::issue_server_cert`] make both with rcgen; the results carry PEM for
//! files and DER for rustls.

use std::fmt;
use std::sync::Arc;

use quinn_proto::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::SupportedKxGroup;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::tls::{CertsError, crypto_provider, default_kx_groups};

/// Names the edge certificate covers by default.
pub const EDGE_SERVER_NAMES: &[&str] =
    &["quic.cftunnel.com", "h2.cftunnel.com", "probe.cftunnel.com"];

/// Common name of CAs made by [`TlsMaterial::generate_ca`].
pub const CA_COMMON_NAME: &str = "ringway edge CA";

/// Errors building certificates or TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed to generate a key or certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration (e.g. a key that does not match the certificate).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The rustls configuration lacks TLS_AES_128_GCM_SHA256, which QUIC Initial packets
    /// need.
    #[error("TLS configuration unusable for QUIC: {0}")]
    NoInitialCipherSuite(#[from] NoInitialCipherSuite),
    /// The root store could not build a verifier (e.g. no roots).
    #[error("server certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// PEM input could not be parsed.
    #[error("PEM {what}: {source}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parser's reason.
        source: rustls::pki_types::pem::Error,
    },
    /// An input held no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(&'static str),
}

impl TlsError {
    /// `what`'s certificates could not be parsed.
    fn certs(what: &'static str, e: CertsError) -> Self {
        match e {
            CertsError::Pem(source) => TlsError::Pem { what, source },
            CertsError::Empty => TlsError::NoCertificate(what),
        }
    }
}

/// A certificate authority held in memory, able to issue server certificates.
pub struct CertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl CertificateAuthority {
    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA certificate, PEM (what cloudflared's `--cacert` reads).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_der_len", &self.issuer.der().len())
            .finish_non_exhaustive()
    }
}

/// A certificate chain and its private key, in DER (for rustls) and PEM (for files).
pub struct TlsMaterial {
    /// Leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// The chain, PEM.
    pub cert_chain_pem: String,
    /// The key, PEM.
    pub key_pem: String,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            cert_chain_pem: self.cert_chain_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("certs", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// A new P-256 CA named [`CA_COMMON_NAME`].
    pub fn generate_ca() -> Result<CertificateAuthority, TlsError> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(CertificateAuthority { issuer, key_pem })
    }

    /// A new P-256 server certificate for `names` (DNS names or IP addresses) signed by
    /// `ca`. The chain holds the leaf only: clients are given the CA itself.
    pub fn issue_server_cert(ca: &CertificateAuthority, names: &[&str]) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("ringway edge"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &ca.issuer)?;
        Ok(Self {
            cert_chain_pem: cert.pem(),
            cert_chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            key_pem: key.serialize_pem(),
        })
    }

    /// Material read from PEM files: a chain (leaf first) and a PKCS#8, PKCS#1 or SEC1 key.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let cert_chain = crate::tls::parse_pem_certs(cert_chain_pem.as_bytes())
            .map_err(|e| TlsError::certs("certificate chain", e))?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| TlsError::Pem {
                what: "private key",
                source,
            })?;
        Ok(Self {
            cert_chain,
            key,
            cert_chain_pem: cert_chain_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// Shorthand for [`server_crypto`] with this material.
    pub fn server_crypto(&self, alpn: &[Vec<u8>]) -> Result<Arc<QuicServerConfig>, TlsError> {
        server_crypto(self.cert_chain.clone(), self.key.clone_key(), alpn)
    }
}

/// The server side's TLS configuration with the default groups.
pub fn server_crypto(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[Vec<u8>],
) -> Result<Arc<QuicServerConfig>, TlsError> {
    server_crypto_with_groups(cert_chain, key, alpn, default_kx_groups())
}

/// [`server_crypto`] with explicit key exchange groups.
pub(crate) fn server_crypto_with_groups(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[Vec<u8>],
    groups: Vec<&'static dyn SupportedKxGroup>,
) -> Result<Arc<QuicServerConfig>, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider(groups))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    tls.alpn_protocols = alpn.to_vec();
    // No 0-RTT: argotunnel gains nothing from it (connections are long-lived) and 0-RTT
    // data is replayable. rustls-on-QUIC wants 0 or u32::MAX here; 0 disables it.
    tls.max_early_data_size = 0;
    Ok(Arc::new(QuicServerConfig::try_from(tls)?))
}

/// The client side's TLS configuration with the default groups, trusting only
/// `root_ca` (one or more certificates, PEM, or one certificate, DER).
pub fn client_crypto(root_ca: &[u8], alpn: &[Vec<u8>]) -> Result<Arc<QuicClientConfig>, TlsError> {
    client_crypto_with_groups(root_ca, alpn, default_kx_groups())
}

/// [`client_crypto`] offering only the hybrid post-quantum group X25519MLKEM768: an edge
/// that cannot negotiate it fails the handshake rather than fall back to a classical group.
pub fn client_crypto_post_quantum(
    root_ca: &[u8],
    alpn: &[Vec<u8>],
) -> Result<Arc<QuicClientConfig>, TlsError> {
    client_crypto_with_groups(
        root_ca,
        alpn,
        vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768],
    )
}

/// [`client_crypto`] with explicit key exchange groups.
pub(crate) fn client_crypto_with_groups(
    root_ca: &[u8],
    alpn: &[Vec<u8>],
    groups: Vec<&'static dyn SupportedKxGroup>,
) -> Result<Arc<QuicClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = crate::tls::parse_certs(root_ca).map_err(|e| TlsError::certs("root CA", e))?;
    for cert in certs {
        roots.add(cert)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider(groups))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    tls.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(QuicClientConfig::try_from(tls)?))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rustls::NamedGroup;
    use rustls::crypto::aws_lc_rs::kx_group;
    use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange};

    use super::*;
    use crate::quic::driver::DriverEvent;
    use crate::quic::harness::{Pair, PairConfig};

    /// A key exchange group that logs which group the server completes, so a test can see
    /// what was negotiated (quinn-proto exposes the group only behind a private feature).
    #[derive(Debug)]
    struct Recording {
        inner: &'static dyn SupportedKxGroup,
        log: &'static Mutex<Vec<NamedGroup>>,
    }

    impl SupportedKxGroup for Recording {
        fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
            self.inner.start()
        }
        fn start_and_complete(&self, peer: &[u8]) -> Result<CompletedKeyExchange, rustls::Error> {
            self.log.lock().unwrap().push(self.inner.name());
            self.inner.start_and_complete(peer)
        }
        fn name(&self) -> NamedGroup {
            self.inner.name()
        }
        fn usable_for_version(&self, version: rustls::ProtocolVersion) -> bool {
            self.inner.usable_for_version(version)
        }
    }

    /// Server groups that record into a fresh log. Leaked: rustls wants `&'static` groups,
    /// and a test leaks a few bytes once.
    fn recording_groups() -> (
        Vec<&'static dyn SupportedKxGroup>,
        &'static Mutex<Vec<NamedGroup>>,
    ) {
        let log: &'static Mutex<Vec<NamedGroup>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let groups = default_kx_groups()
            .into_iter()
            .map(|inner| -> &'static dyn SupportedKxGroup {
                Box::leak(Box::new(Recording { inner, log }))
            })
            .collect();
        (groups, log)
    }

    fn handshake(client_groups: Vec<&'static dyn SupportedKxGroup>) -> Vec<NamedGroup> {
        let ca = TlsMaterial::generate_ca().unwrap();
        let material = TlsMaterial::issue_server_cert(&ca, EDGE_SERVER_NAMES).unwrap();
        let alpn = vec![b"argotunnel".to_vec()];
        let (server_groups, log) = recording_groups();
        let server = server_crypto_with_groups(
            material.cert_chain.clone(),
            material.key.clone_key(),
            &alpn,
            server_groups,
        )
        .unwrap();
        let client =
            client_crypto_with_groups(ca.cert_pem().as_bytes(), &alpn, client_groups).unwrap();
        let mut pair = Pair::with_config(PairConfig {
            server_crypto: Some(server),
            client_crypto: Some(client),
            ..PairConfig::new(7)
        });
        let conn = pair.connect();
        assert!(
            pair.drive_until_connected(conn),
            "handshake did not complete"
        );
        log.lock().unwrap().clone()
    }

    #[test]
    fn handshake_negotiates_x25519mlkem768() {
        assert_eq!(
            handshake(default_kx_groups()),
            vec![NamedGroup::X25519MLKEM768]
        );
    }

    #[test]
    fn post_quantum_client_negotiates_mlkem_and_fails_against_a_classical_edge() {
        let alpn = vec![b"argotunnel".to_vec()];
        let ca = TlsMaterial::generate_ca().unwrap();
        let material = TlsMaterial::issue_server_cert(&ca, EDGE_SERVER_NAMES).unwrap();
        let connects = |server_groups: Vec<&'static dyn SupportedKxGroup>| {
            let server = server_crypto_with_groups(
                material.cert_chain.clone(),
                material.key.clone_key(),
                &alpn,
                server_groups,
            )
            .unwrap();
            let client = client_crypto_post_quantum(ca.cert_pem().as_bytes(), &alpn).unwrap();
            let mut pair = Pair::with_config(PairConfig {
                server_crypto: Some(server),
                client_crypto: Some(client),
                ..PairConfig::new(11)
            });
            let conn = pair.connect();
            pair.drive_until_connected(conn)
        };
        assert!(connects(default_kx_groups()));
        assert!(!connects(vec![kx_group::X25519, kx_group::SECP256R1]));
    }

    #[test]
    fn p256_only_client_still_connects() {
        // The server answers with a HelloRetryRequest for P-256 and completes that group.
        assert_eq!(
            handshake(vec![kx_group::SECP256R1]),
            vec![NamedGroup::secp256r1]
        );
    }

    #[test]
    fn certificate_covers_edge_names_and_round_trips_through_pem() {
        let ca = TlsMaterial::generate_ca().unwrap();
        let material = TlsMaterial::issue_server_cert(&ca, EDGE_SERVER_NAMES).unwrap();
        let reloaded = TlsMaterial::from_pem(&material.cert_chain_pem, &material.key_pem).unwrap();
        assert_eq!(reloaded.cert_chain, material.cert_chain);
        assert_eq!(reloaded.key.secret_der(), material.key.secret_der());
        reloaded.server_crypto(&[b"argotunnel".to_vec()]).unwrap();
        // DER and PEM roots are both accepted.
        client_crypto(ca.cert_der().as_ref(), &[]).unwrap();
        client_crypto(ca.cert_pem().as_bytes(), &[]).unwrap();
        assert!(matches!(
            client_crypto(b"", &[]),
            Err(TlsError::NoCertificate(_))
        ));

        // Every edge name verifies against the CA: connect with each SNI.
        for name in EDGE_SERVER_NAMES {
            let mut pair = Pair::with_config(PairConfig {
                server_crypto: Some(material.server_crypto(&[b"argotunnel".to_vec()]).unwrap()),
                client_crypto: Some(
                    client_crypto(ca.cert_pem().as_bytes(), &[b"argotunnel".to_vec()]).unwrap(),
                ),
                ..PairConfig::new(3)
            });
            let conn = pair.connect_with_name(name);
            assert!(pair.drive_until_connected(conn), "{name}");
            let info = pair.server_handshake_info().unwrap();
            assert_eq!(info.server_name.as_deref(), Some(*name));
        }

        // A name outside the certificate fails verification on the client.
        let mut pair = Pair::with_config(PairConfig {
            server_crypto: Some(material.server_crypto(&[b"argotunnel".to_vec()]).unwrap()),
            client_crypto: Some(
                client_crypto(ca.cert_pem().as_bytes(), &[b"argotunnel".to_vec()]).unwrap(),
            ),
            ..PairConfig::new(4)
        });
        let conn = pair.connect_with_name("evil.example.com");
        assert!(!pair.drive_until_connected(conn));
        assert!(
            pair.client_events()
                .iter()
                .any(|e| matches!(e, DriverEvent::HandshakeFailed(c, _) if *c == conn)),
            "{:?}",
            pair.client_events()
        );
    }
}
