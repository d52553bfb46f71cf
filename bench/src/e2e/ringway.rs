//! ringway's side of the bench: control plane, tunnel and DNS route through the CLI, then the
//! edge and the connector, exactly as an operator would run them (and as `bench/e2e_http.sh`
//! does).
//!
//! # Layout
//!
//! - [`start`]: control plane, edge, and the tunnel `bench` (`app.bench.test`) served by a
//!   connector on `--protocol quic`.
//! - [`Ringway::add_tunnel`]: one more tunnel on the same edge with its own route and a
//!   connector on another `--protocol` (the bench's `ringway-http2` path). A tunnel of its
//!   own, not a second replica of `bench`: the edge would spread requests over both replicas
//!   and mix the transports within one run.
//! - [`protocols`]: which transport each registered HA connection uses, from the connector's
//!   `ringway_tunnel_connection_protocol` gauge, so a path is known to run on the transport
//!   it is named after.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::procs::{Procs, free_port, get_ok, http_request};

pub const HOST: &str = "app.bench.test";
/// The route of the tunnel served over the HTTP/2 transport.
pub const HOST_HTTP2: &str = "app-h2.bench.test";
const ZONE: &str = "bench.test";
/// Each connector's HA connections, given explicitly (it is the connector's default) so the
/// bench can wait for all of them before it measures.
const HA_CONNECTIONS: usize = 4;

/// The running edge and its first tunnel (QUIC): where to send public traffic and which
/// processes to measure.
#[derive(Debug, Clone)]
pub struct Ringway {
    pub http: SocketAddr,
    pub tunnel_id: String,
    pub edge: usize,
    pub connector: usize,
    /// The edge's `--tunnel-listen` address: UDP for QUIC, TCP for HTTP/2.
    pub tunnel_addr: SocketAddr,
    bin: PathBuf,
    home: PathBuf,
    ca: PathBuf,
    origin: SocketAddr,
    workers: usize,
}

/// A tunnel added by [`Ringway::add_tunnel`] and its connector.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub tunnel_id: String,
    pub connector: usize,
    pub host: &'static str,
}

/// Starts control plane, edge and a connector on `--protocol quic`; returns once all its
/// HA connections are registered over QUIC and a request through the tunnel to `check_path`
/// on the origin answers 200.
pub fn start(
    procs: &mut Procs,
    bin: &Path,
    work: &Path,
    origin: SocketAddr,
    workers: usize,
    check_path: &str,
) -> Result<Ringway> {
    let home = work.join("home");
    std::fs::create_dir_all(&home)?;
    let cp_dir = work.join("cp");

    let mut cmd = Command::new(bin);
    cmd.args([
        "control",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--zone",
        ZONE,
        "--loglevel",
        "warn",
    ])
    .arg("--data-dir")
    .arg(&cp_dir);
    let cp = procs
        .spawn("control", cmd)
        .context("control plane: start")?;
    let cp_url = procs
        .get(cp)
        .wait_line("ringway control plane listening on ")
        .context("control plane")?;
    let token_file = cp_dir.join("edge-token");
    procs
        .get(cp)
        .wait_until("control plane wrote its tokens", || {
            std::fs::metadata(&token_file).is_ok_and(|m| m.len() > 0)
        })
        .context("control plane")?;
    let admin = read_token(&cp_dir.join("admin-token"))?;
    let edge_token = read_token(&token_file)?;

    cli(
        bin,
        &home,
        &[
            "tunnel",
            "login",
            "--control",
            &cp_url,
            "--api-token",
            &admin,
            "--zone",
            ZONE,
        ],
    )
    .context("tunnel login")?;

    let edge_dir = work.join("edge");
    let mut cmd = Command::new(bin);
    cmd.args([
        "edge",
        "run",
        "--control",
        &cp_url,
        "--edge-token",
        &edge_token,
    ])
    .arg("--state-dir")
    .arg(&edge_dir)
    .args([
        "--tunnel-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ])
    .args(["--workers", &workers.to_string(), "--loglevel", "warn"]);
    let edge = procs.spawn("edge", cmd).context("edge: start")?;
    procs.get(edge).wait_line("edge ready").context("edge")?;
    let out = std::fs::read_to_string(&procs.get(edge).stdout)?;
    let http: SocketAddr = parse_line(&out, "http listening on http://").context("edge")?;
    // The same address serves QUIC on UDP and the HTTP/2 transport on TCP.
    let tunnel_addr: SocketAddr = parse_line(&out, "tunnel listening on udp://").context("edge")?;

    let mut rw = Ringway {
        http,
        tunnel_id: String::new(),
        edge,
        connector: usize::MAX,
        tunnel_addr,
        bin: bin.to_path_buf(),
        home,
        ca: edge_dir.join("ca.pem"),
        origin,
        workers,
    };
    let t = rw.add_tunnel(procs, "bench", HOST, "quic", check_path)?;
    rw.tunnel_id = t.tunnel_id;
    rw.connector = t.connector;
    Ok(rw)
}

impl Ringway {
    /// Creates tunnel `name` with the DNS route `host` and runs its connector on the same
    /// edge with `--protocol protocol`; returns once all its HA connections are registered
    /// over that protocol and a request to `check_path` through `host` answers 200.
    pub fn add_tunnel(
        &self,
        procs: &mut Procs,
        name: &str,
        host: &'static str,
        protocol: &str,
        check_path: &str,
    ) -> Result<Tunnel> {
        let (bin, home) = (&self.bin, &self.home);
        let step = format!("tunnel {name} ({protocol})");
        let created = cli(bin, home, &["tunnel", "create", name])
            .with_context(|| format!("{step}: tunnel create"))?;
        let tunnel_id = created
            .split("with id ")
            .nth(1)
            .map(|s| s.trim().to_string())
            .filter(|s| uuid::Uuid::parse_str(s).is_ok())
            .with_context(|| format!("{step}: tunnel create: no id in its output: {created:?}"))?;
        cli(bin, home, &["tunnel", "route", "dns", name, host])
            .with_context(|| format!("{step}: tunnel route dns"))?;

        // --metrics needs a port known in advance: the connector logs the one it bound only
        // at info, and the bench runs it at warn.
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let cred: PathBuf = home.join(".cloudflared").join(format!("{tunnel_id}.json"));
        let mut cmd = Command::new(bin);
        cmd.env("HOME", home)
            .args([
                "tunnel",
                "--protocol",
                protocol,
                "run",
                "--credentials-file",
            ])
            .arg(&cred)
            .args([
                "--url",
                &format!("http://{}", self.origin),
                "--edge",
                &self.tunnel_addr.to_string(),
            ])
            .arg("--cacert")
            .arg(&self.ca)
            .args([
                "--metrics",
                &metrics.to_string(),
                "--ha-connections",
                &HA_CONNECTIONS.to_string(),
                "--workers",
                &self.workers.to_string(),
            ])
            .args(["--loglevel", "warn", &tunnel_id]);
        let label = if protocol == "quic" {
            "connector".to_string()
        } else {
            format!("connector-{protocol}")
        };
        let connector = procs
            .spawn(&label, cmd)
            .with_context(|| format!("{step}: start the connector"))?;
        let what = format!("{HA_CONNECTIONS} HA connections registered over {protocol}");
        let mut seen = Vec::new();
        procs
            .get(connector)
            .wait_until(&what, || {
                seen = protocols(metrics).unwrap_or_default();
                seen.len() == HA_CONNECTIONS && seen.iter().all(|p| p == protocol)
            })
            .with_context(|| format!("{step}: connector (last seen: {seen:?})"))?;
        procs
            .get(connector)
            .wait_until("a request through the tunnel answered 200", || {
                get_ok(self.http, check_path, Some(host))
            })
            .with_context(|| format!("{step}: connector"))?;
        Ok(Tunnel {
            tunnel_id,
            connector,
            host,
        })
    }
}

/// The transport of each registered HA connection, as the connector at `metrics` reports it
/// (`ringway_tunnel_connection_protocol{conn_index="N",protocol="P"} 1`).
pub fn protocols(metrics: SocketAddr) -> Result<Vec<String>> {
    let (status, body) = http_request(metrics, "GET", "/metrics", None, b"")?;
    if status != 200 {
        bail!("GET http://{metrics}/metrics: {status}");
    }
    Ok(parse_protocols(&String::from_utf8_lossy(&body)))
}

fn parse_protocols(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("ringway_tunnel_connection_protocol{"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("protocol=\"")?;
            let (p, rest) = rest.split_once('"')?;
            (rest.trim_start_matches('}').trim() == "1").then(|| p.to_string())
        })
        .collect()
}

/// Runs a `ringway` CLI verb with the bench's HOME; returns its stdout and stderr together
/// (cloudflared prints some results on stderr).
fn cli(bin: &Path, home: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin).env("HOME", home).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "ringway {} failed ({}): {}",
            args[..2].join(" "),
            out.status,
            text.trim()
        );
    }
    Ok(text)
}

fn read_token(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("control plane: read {}", path.display()))?
        .trim()
        .to_string())
}

fn parse_line(out: &str, prefix: &str) -> Result<SocketAddr> {
    let rest = out
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .with_context(|| format!("no '{prefix}' line"))?;
    rest.trim()
        .parse()
        .with_context(|| format!("bad address in '{prefix}{rest}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_from_the_gauge() {
        let text = "# HELP ringway_tunnel_connection_protocol Transport\n\
            # TYPE ringway_tunnel_connection_protocol gauge\n\
            ringway_tunnel_connection_protocol{conn_index=\"0\",protocol=\"http2\"} 1\n\
            ringway_tunnel_connection_protocol{conn_index=\"2\",protocol=\"quic\"} 1\n\
            ringway_tunnel_connection_protocol_other{protocol=\"quic\"} 1\n\
            ringway_build_info{version=\"0\"} 1\n";
        assert_eq!(parse_protocols(text), ["http2", "quic"]);
        assert!(parse_protocols("").is_empty());
    }
}
