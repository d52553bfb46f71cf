//! The edge's certificate authority and server certificate, kept in its state directory.
//!
//! The first start creates a CA (`ca.pem`, key `ca-key.pem`) and a certificate for
//! `quic.cftunnel.com`, `h2.cftunnel.com` and `probe.cftunnel.com` signed by it
//! (`edge-cert.pem`, `edge-key.pem`). Later starts load them, so connectors configured with
//! `--cacert DIR/ca.pem` keep trusting the edge across restarts. Keys are written 0600.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use dataplane::quic::TlsMaterial;

/// The server names a stock cloudflared uses: QUIC setup, its pre-flight probes, and HTTP/2. The
/// edge's certificate covers all three so an unmodified connector verifies it.
pub const EDGE_NAMES: [&str; 3] = ["quic.cftunnel.com", "h2.cftunnel.com", "probe.cftunnel.com"];

pub struct EdgeTls {
    pub material: TlsMaterial,
    pub ca_path: PathBuf,
}

impl std::fmt::Debug for EdgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeTls")
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

/// Loads the edge's TLS files from `dir`, creating them on first start.
pub fn load_or_create(dir: &Path) -> anyhow::Result<EdgeTls> {
    let ca_path = dir.join("ca.pem");
    let cert_path = dir.join("edge-cert.pem");
    let key_path = dir.join("edge-key.pem");
    if cert_path.exists() && key_path.exists() && ca_path.exists() {
        let cert = fs::read_to_string(&cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?;
        let key = fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let material = TlsMaterial::from_pem(&cert, &key)
            .with_context(|| format!("invalid edge certificate in {}", dir.display()))?;
        return Ok(EdgeTls { material, ca_path });
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = TlsMaterial::generate_ca().context("cannot generate the edge CA")?;
    let material = TlsMaterial::issue_server_cert(&ca, &EDGE_NAMES)
        .context("cannot issue the edge certificate")?;
    write_file(&dir.join("ca-key.pem"), ca.key_pem().as_bytes(), 0o600)?;
    write_file(&key_path, material.key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, material.cert_chain_pem.as_bytes(), 0o644)?;
    // The CA certificate last: its presence marks a complete set.
    write_file(&ca_path, ca.cert_pem().as_bytes(), 0o644)?;
    Ok(EdgeTls { material, ca_path })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    crate::files::replace_atomically(path, data, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_tls_files_are_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let ca1 = fs::read(&first.ca_path).unwrap();
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(
            ca1,
            fs::read(&second.ca_path).unwrap(),
            "the CA survives restarts"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("edge-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
