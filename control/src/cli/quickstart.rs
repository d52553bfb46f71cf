//! `ringway quickstart`: one command that brings the system up locally and shows how to use it.
//!
//! Today it runs the control plane in this process on a free loopback port, logs in, creates a
//! tunnel with its credentials, routes a hostname to it, and prints the commands to explore it
//! (stock cloudflared works against it too). The edge and the connector join this command with
//! the edge/connector work (issue 4); until then it says so rather than printing a curl that
//! cannot reach an origin.

use std::path::PathBuf;

use anyhow::Context;

use super::args::{OutputFormat, QuickstartArgs, RouteVerb, TunnelCmd, TunnelVerb};
use super::control::{bind, bootstrap, runtime, serve_on, shutdown_signal};
use crate::api::{AppState, login::mint_cert};
use crate::files::OriginCert;
use crate::secret::ApiToken;

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
        verb,
    };
    let api_url = format!("{url}/client/v4");
    let have = super::context::Ctx::from_flags(Some(&cert_path), Some(&api_url))?
        .find_id(TUNNEL)
        .is_ok();
    if !have {
        super::tunnel::run(tunnel_cmd(TunnelVerb::Create {
            name: TUNNEL.into(),
            output: None::<OutputFormat>,
            credentials_file: None,
            secret: None,
        }))?;
    }
    super::tunnel::run(tunnel_cmd(TunnelVerb::Route(RouteVerb::Dns {
        tunnel: TUNNEL.into(),
        hostname: format!("hello.{ZONE}"),
        overwrite_dns: true,
    })))?;

    let home = cert_path
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    println!();
    println!("ringway quickstart is up:");
    println!("  control plane  {url}  (data in {})", data_dir.display());
    println!("  zone           {ZONE}");
    println!("  tunnel         {TUNNEL}, routed from hello.{ZONE}");
    println!("  cert.pem       {}", cert_path.display());
    println!();
    println!("Try the CLI (cloudflared's verbs):");
    println!("  HOME={} ringway tunnel list", home.display());
    println!("  HOME={} ringway tunnel info {TUNNEL}", home.display());
    println!("Or the v4 API with curl:");
    println!(
        "  curl -s -H \"Authorization: Bearer $(cat {})\" {url}/client/v4/zones",
        data_dir.join("admin-token").display()
    );
    println!();
    println!(
        "The edge and the connector (a curl through the tunnel) arrive with issue 4. Ctrl-C stops."
    );
    rt.block_on(server).context("control plane task failed")??;
    Ok(())
}
