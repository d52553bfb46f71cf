//! `ringway tunnel run`, `tunnel ready`, and the bare `tunnel` command: flags →
//! [`crate::connector::RunOptions`].

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};

use super::args::{RunArgs, TunnelCmd};
use super::flags::Flags;
use crate::config::OriginRequestConfig;
use crate::connector::{self, EdgeIpVersion, QuicTuning, RunOptions};
use dataplane::connector::ProtocolChoice;

/// cloudflared's defaults.
const DEFAULT_HA_CONNECTIONS: u8 = 4;
const DEFAULT_RETRIES: u32 = 5;
const DEFAULT_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

/// `tunnel run [TUNNEL]`.
pub fn run(t: &TunnelCmd, a: &RunArgs, flags: &Flags) -> anyhow::Result<()> {
    let opts = options(t, a.tunnel.clone(), flags)?;
    connector::run(opts)?;
    Ok(())
}

/// The bare `tunnel` command (and the root with no command), as cloudflared's
/// `TunnelCommand`: `--url`/`--hello-world` with no named tunnel starts a quick tunnel; a
/// config.yml naming a tunnel runs it; with nothing at all (the root, no flags) it runs the
/// default config.yml like cloudflared's service mode.
pub fn bare_tunnel(t: &TunnelCmd, flags: &Flags) -> anyhow::Result<()> {
    if let Some(name) = flags.str("name")? {
        return ad_hoc_named(t, &name, flags);
    }
    let has_origin = flags.is_set("url") || flags.is_set("hello-world");
    let named_in_config = flags.config().and_then(|c| c.tunnel.clone());
    match (has_origin, named_in_config) {
        (true, None) => {
            let service = flags.str("quick-service")?.ok_or_else(|| {
                anyhow!(
                    "a quick tunnel needs --quick-service URL: the address of a control plane that serves quick tunnels (`ringway control serve --quick-zone ZONE`)"
                )
            })?;
            let mut opts = options(t, None, flags)?;
            opts.ha_connections = 1;
            quick(&service, opts)
        }
        // cloudflared asks for `tunnel run` here; the intent is plain, so run it.
        (_, Some(_)) => {
            connector::run(options(t, None, flags)?)?;
            Ok(())
        }
        (false, None) => bail!(
            "nothing to run: give --url URL (a quick tunnel), name a tunnel with `ringway tunnel run NAME`, or put `tunnel:` in config.yml"
        ),
    }
}

/// cloudflared's `tunnel --name NAME [--hostname HOST | --lb-pool POOL] --url URL`: creates
/// NAME if it does not exist (credentials written next to cert.pem), routes HOST (a CNAME, or
/// with `--lb-pool` a load balancer HOST with that pool) to it, and runs it.
fn ad_hoc_named(t: &TunnelCmd, name: &str, flags: &Flags) -> anyhow::Result<()> {
    use super::args::{RouteVerb, TunnelVerb};
    let verb_cmd = |verb| TunnelCmd {
        origincert: t.origincert.clone(),
        config: t.config.clone(),
        api_url: t.api_url.clone(),
        verb: Some(verb),
    };
    let ctx = crate::context::Ctx::from_flags(t.origincert.as_deref(), t.api_url.as_deref())?;
    let id = match ctx.find_id(name) {
        Ok(id) => id,
        Err(_) => {
            super::tunnel::run(
                verb_cmd(TunnelVerb::Create {
                    name: name.to_owned(),
                    output: None,
                    credentials_file: None,
                    secret: None,
                }),
                flags,
            )?;
            ctx.find_id(name)?
        }
    };
    if let Some(hostname) = flags.str("hostname")? {
        let route = match flags.str("lb-pool")? {
            Some(pool) => RouteVerb::Lb {
                tunnel: id.to_string(),
                lb: hostname,
                pool,
            },
            None => RouteVerb::Dns {
                tunnel: id.to_string(),
                hostname,
                overwrite_dns: flags.bool("overwrite-dns")?,
            },
        };
        super::tunnel::run(verb_cmd(TunnelVerb::Route(route)), flags)?;
    } else if flags.is_set("lb-pool") {
        bail!("--lb-pool needs --hostname: the load balancer's hostname");
    }
    connector::run(options(t, Some(id.to_string()), flags)?)?;
    Ok(())
}

fn quick(service: &str, opts: RunOptions) -> anyhow::Result<()> {
    connector::quick::run(service, opts)?;
    Ok(())
}

/// `tunnel ready`: exit 0 when `GET http://METRICS/ready` answers 200.
pub fn ready(flags: &Flags) -> anyhow::Result<()> {
    let addr = flags
        .str("metrics")?
        .ok_or_else(|| anyhow!("--metrics has to be provided"))?;
    let url = format!("http://{addr}/ready");
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot reach the metrics server at {url}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        bail!("http://{addr}/ready endpoint returned status code {status}");
    }
    Ok(())
}

fn options(t: &TunnelCmd, tunnel: Option<String>, f: &Flags) -> anyhow::Result<RunOptions> {
    let protocol: ProtocolChoice = match f.str("protocol")? {
        None => ProtocolChoice::Auto,
        Some(p) => p.parse().map_err(|e: String| anyhow!("--protocol: {e}"))?,
    };
    let token = match f.str("token")? {
        Some(t) => Some(t),
        None => match f.str("token-file")? {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read token file {path}"))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        },
    };
    if f.bool("bastion")? {
        bail!("--bastion: ringway has no bastion (jump host) origin");
    }
    if f.bool("socks5")? {
        bail!("--socks5: ringway has no socks5 proxy origin");
    }
    let grace_period = f.duration("grace-period")?.unwrap_or(DEFAULT_GRACE_PERIOD);
    let edge_ip_version = match f.str("edge-ip-version")? {
        None => EdgeIpVersion::Auto,
        Some(v) => v
            .parse()
            .map_err(|e: String| anyhow!("--edge-ip-version: {e}"))?,
    };
    let edge_bind_address = f
        .str("edge-bind-address")?
        .map(|a| {
            a.parse()
                .map_err(|_| anyhow!("--edge-bind-address {a}: not an IP address"))
        })
        .transpose()?;
    let mut tags = Vec::new();
    for tag in f.list("tag")? {
        let (k, v) = tag
            .split_once('=')
            .ok_or_else(|| anyhow!("--tag {tag}: expected KEY=VALUE"))?;
        tags.push((k.to_owned(), v.to_owned()));
    }
    let ha_connections = match f.int::<u8>("ha-connections")? {
        Some(0) => bail!("--ha-connections must be at least 1"),
        Some(n) => n,
        None => DEFAULT_HA_CONNECTIONS,
    };
    Ok(RunOptions {
        tunnel,
        config: t.config.clone(),
        search_config: true,
        origincert: t.origincert.clone(),
        api_url: t.api_url.clone(),
        credentials_file: f.str("credentials-file")?.map(PathBuf::from),
        credentials_contents: f.str("credentials-contents")?,
        token,
        url: f.str("url")?,
        hello_world: f.bool("hello-world")?,
        edges: f.list("edge")?,
        cacert: f.str("cacert")?.map(PathBuf::from),
        ha_connections,
        workers: f.int("workers")?.unwrap_or(0),
        metrics: f.str("metrics")?,
        retries: f.int("retries")?.unwrap_or(DEFAULT_RETRIES),
        grace_period,
        max_failures: f.int("max-failures")?,
        edge_ip_version,
        edge_bind_address,
        post_quantum: f.bool("post-quantum")?,
        label: f.str("label")?,
        tags,
        pidfile: f.str("pidfile")?.map(PathBuf::from),
        unix_socket: f.str("unix-socket")?.map(PathBuf::from),
        origin_defaults: origin_defaults(f)?,
        quick_hostname: None,
        protocol,
        quic_tuning: quic_tuning(f)?,
        rpc_timeout: f
            .duration("rpc-timeout")?
            .unwrap_or(connector::DEFAULT_RPC_TIMEOUT),
        // cloudflared's 0 means no limit.
        write_stream_timeout: f.duration("write-stream-timeout")?.filter(|d| !d.is_zero()),
        max_edge_addr_retries: f.int("max-edge-addr-retries")?,
    })
}

/// A QUIC window of at least one byte and at most QUIC's largest variable-length integer.
fn quic_window(f: &Flags, name: &str) -> anyhow::Result<Option<u64>> {
    const MAX: u64 = (1 << 62) - 1;
    match f.int::<u64>(name)? {
        Some(0) => bail!("--{name} must be at least 1 byte"),
        Some(n) if n > MAX => bail!("--{name} must be at most {MAX} bytes"),
        w => Ok(w),
    }
}

fn quic_tuning(f: &Flags) -> anyhow::Result<QuicTuning> {
    Ok(QuicTuning {
        connection_window: quic_window(f, "quic-connection-level-flow-control-limit")?,
        stream_window: quic_window(f, "quic-stream-level-flow-control-limit")?,
        disable_pmtu_discovery: f.bool("quic-disable-pmtu-discovery")?,
    })
}

/// The origin flags of ad hoc mode, as config.yml's `originRequest` fields.
fn origin_defaults(f: &Flags) -> anyhow::Result<OriginRequestConfig> {
    Ok(OriginRequestConfig {
        connect_timeout: f.duration("proxy-connect-timeout")?,
        tls_timeout: f.duration("proxy-tls-timeout")?,
        tcp_keep_alive: f.duration("proxy-tcp-keepalive")?,
        no_happy_eyeballs: f.opt_bool("proxy-no-happy-eyeballs")?,
        keep_alive_connections: f.int("proxy-keepalive-connections")?,
        keep_alive_timeout: f.duration("proxy-keepalive-timeout")?,
        http_host_header: f.str("http-host-header")?,
        origin_server_name: f.str("origin-server-name")?,
        ca_pool: f.str("origin-ca-pool")?.map(PathBuf::from),
        no_tls_verify: f.opt_bool("no-tls-verify")?,
        disable_chunked_encoding: f.opt_bool("no-chunked-encoding")?,
        http2_origin: f.opt_bool("http2-origin")?,
        ..OriginRequestConfig::default()
    })
}
