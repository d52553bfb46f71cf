//! ringway's side of the bench: control plane, tunnel and DNS route through the CLI, then the
//! edge and the connector, exactly as an operator would run them (and as `bench/e2e_http.sh`
//! does).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::procs::{Procs, get_ok};

pub const HOST: &str = "app.bench.test";
const ZONE: &str = "bench.test";

/// The running tunnel: where to send public traffic and which processes to measure.
#[derive(Debug, Clone)]
pub struct Ringway {
    pub http: SocketAddr,
    pub tunnel_id: String,
    pub edge: usize,
    pub connector: usize,
}

/// Starts control plane, edge and connector; returns once a request through the tunnel to
/// `check_path` on the origin answers 200.
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
    let created = cli(bin, &home, &["tunnel", "create", "bench"]).context("tunnel create")?;
    let tunnel_id = created
        .split("with id ")
        .nth(1)
        .map(|s| s.trim().to_string())
        .filter(|s| uuid::Uuid::parse_str(s).is_ok())
        .with_context(|| format!("tunnel create: no id in its output: {created:?}"))?;
    cli(bin, &home, &["tunnel", "route", "dns", "bench", HOST]).context("tunnel route dns")?;

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
    let udp: SocketAddr = parse_line(&out, "tunnel listening on udp://").context("edge")?;

    let cred: PathBuf = home.join(".cloudflared").join(format!("{tunnel_id}.json"));
    let mut cmd = Command::new(bin);
    cmd.env("HOME", &home)
        .args(["tunnel", "run", "--credentials-file"])
        .arg(&cred)
        .args([
            "--url",
            &format!("http://{origin}"),
            "--edge",
            &udp.to_string(),
        ])
        .arg("--cacert")
        .arg(edge_dir.join("ca.pem"))
        .args([
            "--metrics",
            "127.0.0.1:0",
            "--workers",
            &workers.to_string(),
        ])
        .args(["--loglevel", "warn", &tunnel_id]);
    let connector = procs.spawn("connector", cmd).context("connector: start")?;
    procs
        .get(connector)
        .wait_until("a request through the tunnel answered 200", || {
            get_ok(http, check_path, Some(HOST))
        })
        .context("connector")?;
    Ok(Ringway {
        http,
        tunnel_id,
        edge,
        connector,
    })
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
