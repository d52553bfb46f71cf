//! rathole (crates.io) as the peer tunnel: a server with one public service port and a client
//! that forwards it to the origin, over rathole's default TCP transport (plaintext) or, with
//! `--rathole-transport noise`, its Noise transport (Noise_NK_25519_ChaChaPoly_BLAKE2s,
//! encrypted like ringway's QUIC tunnel).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::procs::{Procs, free_port, get_ok};

/// The running peer tunnel.
#[derive(Debug, Clone)]
pub struct Rathole {
    pub public: SocketAddr,
    pub server: usize,
    pub client: usize,
    pub version: String,
    /// `tcp` or `noise`.
    pub transport: String,
}

/// A Noise key pair from `rathole --genkey`.
fn genkey(bin: &Path) -> Result<(String, String)> {
    let out = Command::new(bin)
        .arg("--genkey")
        .output()
        .context("rathole --genkey")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut private = None;
    let mut public = None;
    while let Some(l) = lines.next() {
        match l {
            "Private Key:" => private = lines.next().map(str::to_owned),
            "Public Key:" => public = lines.next().map(str::to_owned),
            _ => {}
        }
    }
    match (private, public) {
        (Some(k), Some(p)) => Ok((k, p)),
        _ => anyhow::bail!("rathole --genkey printed no key pair:\n{text}"),
    }
}

/// `rathole` on PATH, else `~/.cargo/bin/rathole`.
pub fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("rathole"))
            .find(|f| f.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let f = Path::new(&home).join(".cargo/bin/rathole");
        f.is_file().then_some(f)
    })
}

/// Starts server and client; returns once a request through the public port answers 200.
pub fn start(
    procs: &mut Procs,
    bin: &Path,
    work: &Path,
    origin: SocketAddr,
    check_path: &str,
    noise: bool,
) -> Result<Rathole> {
    let dir = work.join("rathole");
    std::fs::create_dir_all(&dir)?;
    let control = free_port()?;
    let public: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let (server_transport, client_transport) = if noise {
        let (private, public_key) = genkey(bin)?;
        (
            format!(
                "[server.transport]\ntype = \"noise\"\n\
                 [server.transport.noise]\nlocal_private_key = \"{private}\"\n\n"
            ),
            format!(
                "[client.transport]\ntype = \"noise\"\n\
                 [client.transport.noise]\nremote_public_key = \"{public_key}\"\n\n"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let server_toml = dir.join("server.toml");
    std::fs::write(
        &server_toml,
        format!(
            "[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"{token}\"\n\n\
             {server_transport}[server.services.x]\nbind_addr = \"{public}\"\n"
        ),
    )?;
    let client_toml = dir.join("client.toml");
    std::fs::write(
        &client_toml,
        format!(
            "[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"{token}\"\n\n\
             {client_transport}[client.services.x]\nlocal_addr = \"{origin}\"\n"
        ),
    )?;
    // rathole logs every visitor connection at info; that would tax the churn scenario.
    let mut cmd = Command::new(bin);
    cmd.env("RUST_LOG", "warn")
        .arg("--server")
        .arg(&server_toml);
    let server = procs
        .spawn("rathole-server", cmd)
        .context("rathole server: start")?;
    let mut cmd = Command::new(bin);
    cmd.env("RUST_LOG", "warn")
        .arg("--client")
        .arg(&client_toml);
    let client = procs
        .spawn("rathole-client", cmd)
        .context("rathole client: start")?;
    procs
        .get(client)
        .wait_until("a request through rathole answered 200", || {
            get_ok(public, check_path, None)
        })
        .context("rathole")?;
    procs.check_alive().context("rathole")?;
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("Build Version:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    Ok(Rathole {
        public,
        server,
        client,
        version,
        transport: if noise { "noise" } else { "tcp" }.to_owned(),
    })
}
