//! `ringway quickstart`: one command that brings the system up locally and shows how to use it.
//!
//! It runs all three roles in this process, on free loopback ports: the control plane (state
//! under `--dir`), an edge, and a connector for a tunnel named `quickstart` routed from
//! `hello.quickstart.test` to the built-in hello_world page (or `--url`). It waits until a
//! request goes through the tunnel, then prints commands to try (the CLI lines name this
//! binary by its real path, since after `cargo run` no `ringway` is on the PATH; every path is
//! quoted for the shell), the `curl` through the tunnel, and `serving`. Ctrl-C stops
//! everything. A rerun with the same `--dir` reuses the tunnel.

use std::path::PathBuf;

use anyhow::Context;

use super::args::{OutputFormat, QuickstartArgs, RouteVerb, TunnelCmd, TunnelVerb};
use super::control::{bind, bootstrap, runtime, serve_on};
use crate::api::{AppState, login::mint_cert};
use crate::files::OriginCert;
use crate::secret::ApiToken;
use crate::signal::shutdown_signal;

const ZONE: &str = "quickstart.test";
const TUNNEL: &str = "quickstart";

pub fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ringway-quickstart-{}", std::process::id()))
    });
    let data_dir = dir.join("control");
    let cert_path = dir.join("home/.cloudflared/cert.pem");
    let store = bootstrap(&data_dir, &[ZONE.to_string()])?;
    let state = AppState::new(store, "cfargotunnel.com".into())?;
    let rt = runtime()?;
    let listener = rt.block_on(bind(&args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = rt.spawn(serve_on(listener, state.clone(), shutdown_signal()));

    if !cert_path.exists() {
        let issued = mint_cert(&state, ZONE).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        if let Some(d) = cert_path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        OriginCert {
            zone_id: issued.zone_id.clone(),
            account_id: issued.account_id.clone(),
            api_token: ApiToken::new(issued.api_token.clone()),
            endpoint: None,
            control_url: Some(url.clone()),
        }
        .write(&cert_path)?;
    } else {
        // A rerun listens on a new port: point the existing cert.pem at it.
        let mut cert = OriginCert::load(&cert_path)?;
        cert.control_url = Some(url.clone());
        cert.write(&cert_path)?;
    }
    let tunnel_cmd = |verb| TunnelCmd {
        origincert: Some(cert_path.clone()),
        config: None,
        api_url: Some(format!("{url}/client/v4")),
        verb: Some(verb),
    };
    let api_url = format!("{url}/client/v4");
    let have = crate::context::Ctx::from_flags(Some(&cert_path), Some(&api_url))?
        .find_id(TUNNEL)
        .is_ok();
    if !have {
        super::tunnel::run(
            tunnel_cmd(TunnelVerb::Create {
                name: TUNNEL.into(),
                output: None::<OutputFormat>,
                credentials_file: None,
                secret: None,
            }),
            &Default::default(),
        )?;
    }
    super::tunnel::run(
        tunnel_cmd(TunnelVerb::Route(RouteVerb::Dns {
            tunnel: TUNNEL.into(),
            hostname: format!("hello.{ZONE}"),
            overwrite_dns: true,
        })),
        &Default::default(),
    )?;

    let ctx = crate::context::Ctx::from_flags(Some(&cert_path), Some(&api_url))?;
    let tunnel_id = ctx.find_id(TUNNEL)?;
    let edge_token = std::fs::read_to_string(data_dir.join("edge-token"))
        .context("cannot read the control plane's edge-token")?;
    let edge = crate::edge::start(crate::edge::EdgeOptions {
        control: url.clone(),
        edge_token: ApiToken::new(edge_token.trim().to_owned()),
        state_dir: dir.join("edge"),
        tunnel_listen: vec!["127.0.0.1:0".parse()?],
        http_listen: args.http_listen,
        location: "quickstart".into(),
        workers: 0,
        public: dataplane::edge::PublicLimits::default(),
        handshakes: crate::edge::HandshakeLimits::default(),
    })?;
    let connector = crate::connector::start(crate::connector::RunOptions {
        tunnel: Some(tunnel_id.to_string()),
        origincert: Some(cert_path.clone()),
        credentials_file: Some(crate::files::credentials_path_next_to(
            &cert_path, tunnel_id,
        )),
        url: args.url.clone(),
        hello_world: args.url.is_none(),
        edges: edge.tunnel_addrs.iter().map(ToString::to_string).collect(),
        cacert: Some(edge.ca_path.clone()),
        ha_connections: 2,
        workers: 0,
        metrics: Some("127.0.0.1:0".into()),
        retries: 5,
        grace_period: std::time::Duration::from_secs(5),
        rpc_timeout: crate::connector::DEFAULT_RPC_TIMEOUT,
        // The quickstart's tunnel is self-contained: the user's own config.yml is not read.
        search_config: false,
        ..Default::default()
    })?;
    let host = format!("hello.{ZONE}");
    wait_until_served(edge.http_addr, &host)?;
    let curl = format!("curl -H 'Host: {host}' http://{}/", edge.http_addr);

    let home = cert_path
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let home = shell_quote(&home.display().to_string());
    // After `cargo run` no `ringway` is on the PATH, so the lines below name this very binary.
    let ringway = std::env::current_exe()
        .map(|p| shell_quote(&p.display().to_string()))
        .unwrap_or_else(|_| "ringway".into());
    println!();
    println!("ringway quickstart is up:");
    println!("  control plane  {url}  (data in {})", data_dir.display());
    println!("  zone           {ZONE}");
    println!("  tunnel         {TUNNEL}, routed from hello.{ZONE}");
    println!("  cert.pem       {}", cert_path.display());
    println!(
        "  edge           http://{} (tunnels on udp://{})",
        edge.http_addr, edge.tunnel_addrs[0]
    );
    println!(
        "  connector      {} ({}), metrics http://{}/metrics",
        connector.connector_id,
        origin_name(&args.url),
        connector.metrics_addr
    );
    println!();
    println!("Try the CLI (cloudflared's verbs):");
    println!("  HOME={home} {ringway} tunnel list");
    println!("  HOME={home} {ringway} tunnel info {TUNNEL}");
    println!("Or the v4 API with curl:");
    println!(
        "  curl -s -H \"Authorization: Bearer $(cat {})\" {url}/client/v4/zones",
        shell_quote(&data_dir.join("admin-token").display().to_string())
    );
    println!();
    println!("Through the tunnel:");
    println!("  {curl}");
    println!();
    println!("serving");
    println!("(Ctrl-C stops everything.)");
    let outcome = connector.wait();
    server.abort();
    Ok(outcome?)
}

/// `word` as one shell word: as is when it holds only characters no shell treats specially,
/// else in single quotes (a `'` inside becomes `'\''`), so a printed line pastes as is.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn origin_name(url: &Option<String>) -> String {
    url.clone().unwrap_or_else(|| "hello_world".into())
}

/// Sends a request through the edge until the tunnel answers (the connector registers within
/// a second on loopback; the limit is only there to turn a broken setup into an error).
fn wait_until_served(edge: std::net::SocketAddr, host: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(edge) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut out = Vec::new();
            if s.write_all(req.as_bytes()).is_ok() && s.read_to_end(&mut out).is_ok() {
                let text = String::from_utf8_lossy(&out);
                let status = text.lines().next().unwrap_or("").to_owned();
                if !status.contains(" 530 ") && !status.contains(" 404 ") && !status.is_empty() {
                    return Ok(());
                }
                last = status;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("the tunnel did not start serving within 30 s (last answer: {last:?})")
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/tmp/ringway-qs/home"), "/tmp/ringway-qs/home");
        assert_eq!(shell_quote("/tmp/my dir/ringway"), "'/tmp/my dir/ringway'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_quote("/tmp/$HOME"), "'/tmp/$HOME'");
        assert_eq!(shell_quote(""), "''");
    }
}
