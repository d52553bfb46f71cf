//! `ringway tunnel run`: the connector's control thread.
//!
//! # Layout
//!
//! - `mod.rs` (this file): resolve what to run (credentials from a token, a credentials file,
//!   or NAME/UUID through cert.pem and the search directories; ingress from config.yml or
//!   `--url`), start the metrics server and the pinned workers of `dataplane::connector`, then
//!   wait for a signal or for every connection to give up.
//! - `ingress`: config.yml rules → origin targets for the data path.
//! - `hooks`: connection events → cloudflared-style log lines and the exit decision.
//! - `error`: why the connector could not start or stopped, by side and retryability.

mod error;
pub mod hooks;
pub mod ingress;
pub mod quick;

pub use error::{ConnectorError, Side};

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use dataplane::connector::{Backoff, Connector, ConnectorSetup, IngressRouter, ProtocolChoice};
use dataplane::metrics::TunnelMetrics;
use dataplane::quic::{QuicConfig, tls};
use dataplane::runtime::WorkersConfig;
use dataplane::udp::{UdpBackend, UdpConfig};
use dataplane::wire::rpc::{ConnectionOptions, TunnelAuth};
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{ConfigFile, Ingress, NO_INGRESS_RULES_CLI, Service};
use crate::files::{self, Credentials, TunnelToken};
use crate::metrics_server::{self, MetricsServer};
use ingress::CompiledIngress;

/// What `ringway tunnel run` was asked for, after clap.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub tunnel: Option<String>,
    pub config: Option<PathBuf>,
    /// Look for config.yml in cloudflared's search directories when `config` is `None`.
    pub search_config: bool,
    pub origincert: Option<PathBuf>,
    pub api_url: Option<String>,
    pub credentials_file: Option<PathBuf>,
    pub token: Option<String>,
    pub url: Option<String>,
    pub hello_world: bool,
    pub edges: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub ha_connections: u8,
    pub workers: usize,
    pub metrics: Option<String>,
    pub retries: u32,
    /// In-flight requests get this long after SIGTERM/SIGINT.
    pub grace_period: std::time::Duration,
    /// Exit nonzero once every connection failed this many attempts in a row.
    pub max_failures: Option<u32>,
    /// `--credentials-contents`: the credentials file's JSON itself (beats a credentials file,
    /// loses to a token).
    pub credentials_contents: Option<String>,
    /// `--edge-ip-version`: which address family of the edge names to dial.
    pub edge_ip_version: EdgeIpVersion,
    /// `--edge-bind-address`: local IP the edge connections are sent from.
    pub edge_bind_address: Option<std::net::IpAddr>,
    /// `--post-quantum`: offer only X25519MLKEM768 to the edge.
    pub post_quantum: bool,
    /// `--label`: this connector's label, reported to the edge and shown by `tunnel info`.
    pub label: Option<String>,
    /// `--tag KEY=VALUE` (repeatable), reported to the edge and shown by `tunnel info`.
    pub tags: Vec<(String, String)>,
    /// `--pidfile`: written with this process's PID once the first connection is registered.
    pub pidfile: Option<PathBuf>,
    /// `--unix-socket`: ad hoc mode's origin is this unix socket.
    pub unix_socket: Option<PathBuf>,
    /// Origin options from the command line (`--http-host-header`, `--no-tls-verify`, ...):
    /// in ad hoc mode (`--url`, `--hello-world`, `--unix-socket`) they override config.yml's
    /// top-level `originRequest` field by field.
    pub origin_defaults: crate::config::OriginRequestConfig,
    /// A quick tunnel's hostname, served by the metrics server at `/quicktunnel`.
    pub quick_hostname: Option<String>,
    /// `--protocol`: QUIC, HTTP/2, or `auto` (QUIC, else HTTP/2, per connection).
    pub protocol: ProtocolChoice,
    /// `--rpc-timeout`: how long the edge may take to answer `registerConnection`.
    pub rpc_timeout: std::time::Duration,
    /// `--write-stream-timeout`: how long one write of response bytes may wait for the edge to
    /// take them before the stream is reset; `None` (cloudflared's 0): no limit.
    pub write_stream_timeout: Option<std::time::Duration>,
    /// `--max-edge-addr-retries`: in `--protocol auto`, failed attempts retried on one transport
    /// before a connection falls back to the other; `None`: ringway's default (1 retry).
    pub max_edge_addr_retries: Option<u8>,
    /// cloudflared's hidden QUIC tuning flags.
    pub quic_tuning: QuicTuning,
}

/// cloudflared's `--rpc-timeout` default.
pub const DEFAULT_RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// cloudflared's QUIC tuning flags, applied to the connector's QUIC configuration; unset ones
/// keep ringway's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuicTuning {
    /// `--quic-connection-level-flow-control-limit`: the connection's receive window, bytes.
    pub connection_window: Option<u64>,
    /// `--quic-stream-level-flow-control-limit`: each stream's receive window, bytes.
    pub stream_window: Option<u64>,
    /// `--quic-disable-pmtu-discovery`: stay at the initial 1200-byte packets.
    pub disable_pmtu_discovery: bool,
}

impl QuicTuning {
    /// The connector's QUIC configuration with these settings applied.
    pub fn apply(self, mut quic: QuicConfig) -> QuicConfig {
        if let Some(w) = self.connection_window {
            quic.receive_window = w;
        }
        if let Some(w) = self.stream_window {
            quic.stream_receive_window = w;
        }
        if self.disable_pmtu_discovery {
            quic.mtu_discovery = false;
        }
        quic
    }
}

/// `--edge-ip-version`: `4`, `6` or `auto` (cloudflared's values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EdgeIpVersion {
    /// Every address the edge names resolve to, IPv4 first.
    #[default]
    Auto,
    V4,
    V6,
}

impl std::str::FromStr for EdgeIpVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "4" => Ok(Self::V4),
            "6" => Ok(Self::V6),
            _ => Err(format!(
                "invalid edge-ip-version {s:?}: expected 4, 6 or auto"
            )),
        }
    }
}

/// Everything resolved; ready to start.
pub struct Prepared {
    pub credentials: Credentials,
    pub ingress: Arc<ingress::SwappableIngress>,
    /// The config.yml in use (what SIGHUP reloads).
    pub config_path: Option<PathBuf>,
    pub local_config: Option<Vec<u8>>,
    pub edges: Vec<SocketAddr>,
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("tunnel", &self.credentials.tunnel_id)
            .field("edges", &self.edges)
            .finish_non_exhaustive()
    }
}

/// Resolves credentials, ingress and edges; every failure is one clear error.
pub fn prepare(opts: &RunOptions) -> Result<Prepared, ConnectorError> {
    let dirs = files::default_search_dirs();
    let config_path = match &opts.config {
        Some(p) => Some(files::search::expand_home(p)),
        None if opts.search_config => files::find_config_file(&dirs),
        None => None,
    };
    let cfg = match &config_path {
        Some(p) => Some(ConfigFile::load(p)?),
        None => None,
    };

    let credentials = resolve_credentials(opts, cfg.as_ref(), &dirs)?;

    let compiled = load_ingress(opts, cfg.as_ref())?;
    let local_config = cfg.as_ref().map(|c| {
        serde_json::json!({
            "ingress_rules": compiled.rules(),
            "source": c.source.display().to_string(),
        })
        .to_string()
        .into_bytes()
    });

    // config.yml's flag keys (`edge:`, `cacert:`, `url:`, ...) reach `opts` through the CLI's
    // one lookup (`cli::flags`), with the command line and the environment ahead of them.
    let edge_names = &opts.edges;
    if edge_names.is_empty() {
        return Err(ConnectorError::NoEdge);
    }
    let edges = resolve_edges(edge_names, opts.edge_ip_version, opts.edge_bind_address)?;
    let cacert = opts.cacert.clone().ok_or(ConnectorError::NoCa)?;
    let cacert = files::search::expand_home(&cacert);
    let ca_pem = std::fs::read(&cacert).map_err(|cause| ConnectorError::ReadCa {
        path: cacert.clone(),
        cause,
    })?;
    Ok(Prepared {
        credentials,
        ingress: Arc::new(ingress::SwappableIngress::new(compiled)),
        config_path,
        local_config,
        edges,
        ca_pem,
    })
}

fn family_name(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

/// Every address each edge name resolves to, of the family `--edge-ip-version` asks for (auto:
/// IPv4 first, then IPv6, as cloudflared orders them), and of `--edge-bind-address`'s family
/// when one is given (a socket bound to an IPv4 address cannot reach an IPv6 edge).
fn resolve_edges(
    names: &[String],
    version: EdgeIpVersion,
    bind: Option<std::net::IpAddr>,
) -> Result<Vec<SocketAddr>, ConnectorError> {
    let mut all = Vec::new();
    for e in names {
        let resolved: Vec<SocketAddr> = e
            .to_socket_addrs()
            .map_err(|cause| ConnectorError::EdgeAddress {
                edge: e.clone(),
                cause,
            })?
            .collect();
        if resolved.is_empty() {
            return Err(ConnectorError::EdgeUnresolved(e.clone()));
        }
        for a in resolved {
            if !all.contains(&a) {
                all.push(a);
            }
        }
    }
    let wanted = match version {
        EdgeIpVersion::Auto => None,
        EdgeIpVersion::V4 => Some(false),
        EdgeIpVersion::V6 => Some(true),
    };
    if let Some(v6) = wanted {
        all.retain(|a| a.is_ipv6() == v6);
        if all.is_empty() {
            return Err(ConnectorError::EdgeNoAddressOfFamily {
                edges: names.to_vec(),
                family: family_name(v6),
            });
        }
    }
    if let Some(ip) = bind {
        all.retain(|a| a.is_ipv6() == ip.is_ipv6());
        if all.is_empty() {
            return Err(ConnectorError::EdgeBindFamily {
                bind: ip,
                family: family_name(ip.is_ipv6()),
                edges: names.to_vec(),
            });
        }
    }
    // Stable: each family keeps the order the names and the resolver gave.
    all.sort_by_key(|a| a.is_ipv6());
    Ok(all)
}

/// Ingress from config.yml rules, or `--url` / `--hello-world`, never both; with none, cloudflared's
/// 503 catch-all and its warning.
fn load_ingress(
    opts: &RunOptions,
    cfg: Option<&ConfigFile>,
) -> Result<CompiledIngress, ConnectorError> {
    let has_rules = cfg.is_some_and(|c| !c.ingress.is_empty());
    let url = opts.url.clone();
    let unix_socket = opts.unix_socket.clone();
    // Ad hoc mode's single rule: the command line's origin options over config.yml's
    // top-level originRequest, field by field.
    let defaults = opts
        .origin_defaults
        .merged(&cfg.map(|c| c.origin_request.clone()).unwrap_or_default());
    let ingress = if has_rules {
        if url.is_some() || opts.hello_world || unix_socket.is_some() {
            return Err(ConnectorError::UrlWithIngress);
        }
        let cfg = cfg.expect("has_rules implies a config");
        Ingress::from_config(cfg)?
    } else if let Some(path) = unix_socket {
        if url.is_some() {
            return Err(ConnectorError::UnixSocketWithUrl);
        }
        Ingress::single(Service::Unix { path, tls: false }, defaults)
    } else if let Some(u) = &url {
        let service = Service::parse(u).map_err(|cause| ConnectorError::BadUrl {
            url: u.clone(),
            cause,
        })?;
        Ingress::single(service, defaults)
    } else if opts.hello_world {
        Ingress::single(Service::HelloWorld, defaults)
    } else {
        warn!("{NO_INGRESS_RULES_CLI}");
        Ingress::single(Service::HttpStatus(503), defaults)
    };
    CompiledIngress::new(ingress)
}

/// SIGHUP: reads config.yml again and swaps in its ingress rules and origin options for new
/// requests. An invalid file is rejected with its error and the rules in force stay.
pub fn reload(
    opts: &RunOptions,
    path: Option<&std::path::Path>,
    target: &ingress::SwappableIngress,
) -> Result<usize, ConnectorError> {
    let cfg = match path {
        Some(p) => Some(ConfigFile::load(p)?),
        None => None,
    };
    let compiled = load_ingress(opts, cfg.as_ref())?;
    let rules = compiled.rules();
    target.store(compiled);
    Ok(rules)
}

fn resolve_credentials(
    opts: &RunOptions,
    cfg: Option<&ConfigFile>,
    dirs: &[PathBuf],
) -> Result<Credentials, ConnectorError> {
    if let Some(t) = &opts.token {
        let token = TunnelToken::decode(t.trim()).map_err(ConnectorError::Token)?;
        return Ok(token.to_credentials());
    }
    let named = opts
        .tunnel
        .clone()
        .or_else(|| cfg.and_then(|c| c.tunnel.clone()));
    let cred_path = opts
        .credentials_file
        .clone()
        .or_else(|| cfg.and_then(|c| c.credentials_file.clone()));
    if let Some(json) = &opts.credentials_contents {
        let creds = Credentials::from_json(json).map_err(ConnectorError::CredentialsContents)?;
        if creds.has_tunnel_id() {
            return Ok(creds);
        }
        let id = named
            .as_deref()
            .and_then(|n| Uuid::parse_str(n).ok())
            .ok_or(ConnectorError::CredentialsContentsWithoutTunnelId)?;
        return Ok(creds.with_tunnel_id(id));
    }
    if let Some(p) = cred_path {
        let p = files::search::expand_home(&p);
        let creds = Credentials::load(&p)?;
        if creds.has_tunnel_id() {
            return Ok(creds);
        }
        // An old file without TunnelID: the id comes from the command line.
        let id = named
            .as_deref()
            .and_then(|n| Uuid::parse_str(n).ok())
            .ok_or(ConnectorError::CredentialsWithoutTunnelId(p))?;
        return Ok(creds.with_tunnel_id(id));
    }
    let Some(named) = named else {
        return Err(ConnectorError::NoTunnel);
    };
    let id = match Uuid::parse_str(&named) {
        Ok(id) => id,
        Err(_) => {
            // A name needs cert.pem to be resolved through the control plane.
            let ctx = crate::context::Ctx::from_flags(
                opts.origincert.as_deref(),
                opts.api_url.as_deref(),
            )?;
            ctx.find_id(&named)?
        }
    };
    let search = files::credentials_search_dirs(opts.origincert.as_deref(), dirs);
    let path = files::find_credentials(id, &search)?;
    Ok(Credentials::load(&path)?.with_tunnel_id(id))
}

/// A started connector.
#[derive(Debug)]
pub struct RunningConnector {
    pub tunnel_id: Uuid,
    pub connector_id: Uuid,
    pub metrics_addr: SocketAddr,
    connector: Connector,
    server: MetricsServer,
    events: hooks::Events,
    opts: RunOptions,
    config_path: Option<PathBuf>,
    ingress: Arc<ingress::SwappableIngress>,
}

impl RunningConnector {
    /// Blocks until SIGINT/SIGTERM, then shuts down gracefully (`Ok`; a second signal exits at
    /// once), or until every connection gave up (`Err`).
    pub fn wait(self) -> Result<(), ConnectorError> {
        let reload = {
            let (opts, path, ingress) = (
                self.opts.clone(),
                self.config_path.clone(),
                self.ingress.clone(),
            );
            move || match reload(&opts, path.as_deref(), &ingress) {
                Ok(n) => {
                    info!("Reloaded configuration: {n} ingress rules in force for new requests")
                }
                Err(e) => tracing::error!(
                    "Configuration reload rejected, previous rules stay in force: {e}"
                ),
            }
        };
        let outcome = hooks::wait(self.events, reload);
        if outcome.is_ok() {
            info!(
                "Initiating graceful shutdown: unregistering connections, waiting for in-flight requests"
            );
            self.connector.shutdown();
            hooks::join_or_second_signal(self.connector)?;
        }
        self.server.shutdown();
        outcome
    }
}

/// `ConnectionOptions.features`: the capabilities, plus `--label` and each `--tag` as
/// `ringway-label=…` / `ringway-tag=K=V` (an edge ignores features it does not know, so
/// cloudflared's edge accepts them too), which `tunnel info` shows.
fn connection_features(opts: &RunOptions) -> Vec<String> {
    let mut features = vec!["ha-origin".to_owned()];
    if let Some(label) = &opts.label {
        features.push(format!("{LABEL_FEATURE}{label}"));
    }
    for (k, v) in &opts.tags {
        features.push(format!("{TAG_FEATURE}{k}={v}"));
    }
    features
}

/// Feature prefix carrying `--label`.
pub const LABEL_FEATURE: &str = "ringway-label=";
/// Feature prefix carrying one `--tag KEY=VALUE`.
pub const TAG_FEATURE: &str = "ringway-tag=";

/// What the first attempt of every connection uses (cloudflared's `Initial protocol` line).
fn initial_protocol(choice: ProtocolChoice) -> &'static str {
    match choice {
        ProtocolChoice::Auto => "quic (auto: http2 if QUIC cannot connect)",
        ProtocolChoice::Only(p) => p.as_str(),
    }
}

/// Runs the connector until a signal, or until every connection gave up.
pub fn run(opts: RunOptions) -> Result<(), ConnectorError> {
    start(opts)?.wait()
}

/// Resolves everything and starts the metrics server and the workers.
pub fn start(opts: RunOptions) -> Result<RunningConnector, ConnectorError> {
    let prepared = prepare(&opts)?;
    let creds = &prepared.credentials;
    let connector_id = Uuid::new_v4();
    let metrics = Arc::new(TunnelMetrics::new());
    let listener = metrics_server::bind(opts.metrics.as_deref())?;
    let server = MetricsServer::start(
        listener,
        metrics.clone(),
        connector_id,
        opts.quick_hostname.clone(),
    )
    .map_err(ConnectorError::MetricsStart)?;
    info!("Starting metrics server on {}/metrics", server.local_addr());

    let quic = opts.quic_tuning.apply(QuicConfig::default());
    let crypto = if opts.post_quantum {
        info!("Using post-quantum key agreement X25519MLKEM768");
        tls::client_crypto_post_quantum(&prepared.ca_pem, &quic.alpn)
    } else {
        tls::client_crypto(&prepared.ca_pem, &quic.alpn)
    }
    .map_err(ConnectorError::BadCa)?;
    let client_config = quic
        .client_config(crypto)
        .map_err(ConnectorError::QuicClient)?;
    // HTTP/2's TLS trusts the same CA and offers the same groups.
    let h2_tls = dataplane::connector::edge_tls_config(&prepared.ca_pem, opts.post_quantum)
        .map_err(ConnectorError::BadCa)?;
    let ha = opts.ha_connections.max(1);
    let (hooks, events) = hooks::LoggingHooks::new(ha, creds.tunnel_id, opts.max_failures);
    let hooks = hooks.with_pidfile(opts.pidfile.clone());
    info!(
        "Starting tunnel tunnelID={} connectorID={connector_id} edges={:?} ha_connections={ha}",
        creds.tunnel_id, prepared.edges
    );
    info!("Initial protocol {}", initial_protocol(opts.protocol));
    let connector = Connector::start(ConnectorSetup {
        quic,
        client_config,
        udp: UdpConfig::default(),
        udp_backend: UdpBackend::default(),
        bind_address: opts.edge_bind_address,
        edges: prepared.edges.clone(),
        server_name: dataplane::quic::DEFAULT_SERVER_NAME.to_owned(),
        protocol: opts.protocol,
        fallback_after: opts
            .max_edge_addr_retries
            .map_or(dataplane::connector::protocol::FALLBACK_AFTER, |n| {
                u32::from(n) + 1
            }),
        h2_tls,
        ha_connections: ha,
        tunnel_id: creds.tunnel_id,
        auth: TunnelAuth {
            account_tag: creds.account_tag.clone(),
            tunnel_secret: creds.tunnel_secret.to_wire(),
        },
        options: ConnectionOptions {
            client_id: connector_id,
            features: connection_features(&opts),
            version: format!("ringway {}", env!("CARGO_PKG_VERSION")),
            arch: format!("{}_{}", std::env::consts::OS, std::env::consts::ARCH),
            ..ConnectionOptions::default()
        },
        local_config: prepared.local_config.clone(),
        ingress: prepared.ingress.clone() as Arc<dyn IngressRouter>,
        metrics,
        hooks: Arc::new(hooks),
        retries: opts.retries,
        grace_period: opts.grace_period,
        rpc_timeout: opts.rpc_timeout,
        write_stream_timeout: opts.write_stream_timeout,
        backoff: Backoff::default(),
        workers: WorkersConfig {
            threads: opts.workers,
            name: "connector-worker".into(),
            ..WorkersConfig::default()
        },
    })?;
    Ok(RunningConnector {
        tunnel_id: creds.tunnel_id,
        connector_id,
        metrics_addr: server.local_addr(),
        connector,
        server,
        events,
        config_path: prepared.config_path.clone(),
        ingress: prepared.ingress.clone(),
        opts,
    })
}

#[cfg(test)]
mod quic_tuning_tests {
    use super::*;

    #[test]
    fn unset_flags_keep_the_defaults_and_set_ones_apply() {
        let default = QuicConfig::default();
        let same = QuicTuning::default().apply(QuicConfig::default());
        assert_eq!(same.receive_window, default.receive_window);
        assert_eq!(same.stream_receive_window, default.stream_receive_window);
        assert!(same.mtu_discovery);
        let tuned = QuicTuning {
            connection_window: Some(30 << 20),
            stream_window: Some(64 << 10),
            disable_pmtu_discovery: true,
        }
        .apply(QuicConfig::default());
        assert_eq!(tuned.receive_window, 30 << 20);
        assert_eq!(tuned.stream_receive_window, 64 << 10);
        assert!(!tuned.mtu_discovery);
    }
}
