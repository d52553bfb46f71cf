//! clap definitions. Flag names, short forms and environment variables follow cloudflared.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::secret::Secret;

/// The root command. cloudflared's global flags (the same table as `tunnel`'s) are added to
/// it, to `tunnel` and to `tunnel run` by [`super::flags::augment`]; they are read through
/// [`super::flags::Flags`], not through these structs.
#[derive(Debug, Parser)]
#[command(
    name = "ringway",
    about = "Self-hostable named tunnels, cloudflared-compatible",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version and exit.
    #[arg(short = 'v', long = "version", short_alias = 'V')]
    pub version: bool,
    /// With no command: cloudflared's `tunnel` command (a quick tunnel with `--url`), or, with
    /// no flags either, `tunnel run` from the default config.yml.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage and run named tunnels (cloudflared's `tunnel` verbs).
    Tunnel(TunnelCmd),
    /// Run the control plane.
    Control(ControlCmd),
    /// Bring everything up locally and print how to use it.
    Quickstart(QuickstartArgs),
    /// Run the edge.
    Edge(EdgeCmd),
    /// Print the version.
    Version {
        /// Print only the version number.
        #[arg(short = 's', long)]
        short: bool,
    },
    /// Self-update (a self-hosted build never updates itself; says so and exits 0).
    Update {
        #[arg(long)]
        beta: bool,
        #[arg(long, hide = true)]
        force: bool,
        #[arg(long, hide = true)]
        staging: bool,
        #[arg(long = "version")]
        target_version: Option<String>,
    },
    /// Install or remove the systemd unit that runs the tunnel.
    #[command(subcommand)]
    Service(ServiceVerb),
    /// cloudflared's remote log stream from Cloudflare's management service. A self-hosted
    /// edge has none: this says where the logs are instead and exits 1.
    Tail(TailArgs),
}

/// cloudflared's `tail` flags, so its command lines parse.
#[derive(Debug, Args)]
pub struct TailArgs {
    pub tunnel: Option<String>,
    #[arg(long = "connector-id", env = "TUNNEL_MANAGEMENT_CONNECTOR")]
    pub connector_id: Option<String>,
    #[arg(long, env = "TUNNEL_MANAGEMENT_FILTER_EVENTS", value_delimiter = ',')]
    pub event: Vec<String>,
    #[arg(long, env = "TUNNEL_MANAGEMENT_FILTER_LEVEL")]
    pub level: Option<String>,
    #[arg(long, env = "TUNNEL_MANAGEMENT_FILTER_SAMPLE")]
    pub sample: Option<f64>,
    #[arg(long, env = "TUNNEL_MANAGEMENT_TOKEN", hide_env_values = true)]
    pub token: Option<Secret<String>>,
    #[arg(long = "management-hostname", hide = true)]
    pub management_hostname: Option<String>,
    #[arg(long, hide = true)]
    pub trace: Option<String>,
    #[arg(long, env = "TUNNEL_ORIGIN_CERT")]
    pub origincert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceVerb {
    /// Write the unit (and the token file with TOKEN) and enable it where systemd runs.
    Install {
        /// A tunnel token; without one the unit runs from /etc/cloudflared/config.yml.
        token: Option<Secret<String>>,
        /// Do not install an update timer (ringway never installs one; accepted for scripts).
        #[arg(long = "no-update-service")]
        no_update_service: bool,
        /// Write under this root instead of `/` (for images and tests).
        #[arg(long, env = "RINGWAY_SERVICE_ROOT", default_value = "/")]
        root: PathBuf,
    },
    /// Stop, disable and remove the unit.
    Uninstall {
        #[arg(long, env = "RINGWAY_SERVICE_ROOT", default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct EdgeCmd {
    #[command(subcommand)]
    pub verb: EdgeVerb,
}

#[derive(Debug, Subcommand)]
pub enum EdgeVerb {
    /// Accept connectors over QUIC and serve public HTTP through them.
    Run(EdgeRunArgs),
}

#[derive(Debug, Args)]
pub struct EdgeRunArgs {
    /// Control-plane URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "RINGWAY_CONTROL_URL")]
    pub control: String,
    /// File holding the control plane's edge token (its `edge-token` file; a trailing
    /// newline is ignored). Recommended: unlike --edge-token it does not show in
    /// /proc/PID/cmdline. Or set RINGWAY_EDGE_TOKEN. Exactly one of the three is required.
    #[arg(long = "edge-token-file", value_name = "PATH")]
    pub edge_token_file: Option<PathBuf>,
    /// The edge token itself. Visible to every local user in the process list: prefer
    /// --edge-token-file or RINGWAY_EDGE_TOKEN.
    #[arg(long = "edge-token")]
    pub edge_token: Option<Secret<String>>,
    /// Directory for the CA, the edge certificate and the cached snapshot.
    #[arg(long = "state-dir")]
    pub state_dir: PathBuf,
    /// Address for connectors, UDP (QUIC) and TCP (HTTP/2) on the same port (repeatable:
    /// cloudflared opens one connection per address).
    #[arg(long = "tunnel-listen", default_value = "0.0.0.0:7844")]
    pub tunnel_listen: Vec<std::net::SocketAddr>,
    /// Public HTTP/1.1 address.
    #[arg(long = "http-listen", default_value = "0.0.0.0:8080")]
    pub http_listen: std::net::SocketAddr,
    /// This edge's location name, shown in `tunnel info`.
    #[arg(long, default_value = "local")]
    pub location: String,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// A request head must be complete this long after the connection opens (or after its
    /// first byte, on a keep-alive connection); otherwise 408 and close (Go duration).
    #[arg(long = "http-head-timeout", default_value = "10s", value_parser = crate::config::parse_go_duration)]
    pub http_head_timeout: std::time::Duration,
    /// Idle keep-alive connections (no next request) are closed after this (Go duration).
    #[arg(long = "http-keepalive-timeout", default_value = "60s", value_parser = crate::config::parse_go_duration)]
    pub http_keepalive_timeout: std::time::Duration,
    /// No progress reading a request body from the client or writing a response to it for
    /// this long: the client is closed and the tunnel stream reset (Go duration).
    #[arg(long = "http-body-timeout", default_value = "30s", value_parser = crate::config::parse_go_duration)]
    pub http_body_timeout: std::time::Duration,
    /// Total time for one request (not for upgraded connections); 0 = unlimited (Go duration).
    #[arg(long = "http-request-timeout", default_value = "0", value_parser = crate::config::parse_go_duration)]
    pub http_request_timeout: std::time::Duration,
    /// Public client connections per worker; past it new clients get 503 with Retry-After
    /// (lowered at start to fit the descriptor limit).
    #[arg(long = "http-max-connections", default_value_t = 16_384)]
    pub http_max_connections: usize,
    /// Requests in flight per tunnel; past it the edge answers 503 with Retry-After.
    #[arg(long = "tunnel-max-streams", default_value_t = 1024)]
    pub tunnel_max_streams: usize,
    /// Answer new QUIC connection attempts with a stateless Retry (address validation, one
    /// round trip): auto (while a worker has --quic-retry-threshold handshakes in flight),
    /// always, or never.
    #[arg(
        long = "quic-retry",
        default_value = "auto",
        value_name = "auto|always|never"
    )]
    pub quic_retry: dataplane::quic::RetryMode,
    /// Handshakes in flight on one worker from which --quic-retry auto sends Retries.
    #[arg(long = "quic-retry-threshold", default_value_t = 32)]
    pub quic_retry_threshold: usize,
    /// Half-open (still handshaking) QUIC connections per worker; past it, new attempts are
    /// refused (CONNECTION_REFUSED). Established connections are never affected.
    #[arg(long = "max-handshakes", default_value_t = 1024)]
    pub max_handshakes: usize,
    /// A QUIC connection still handshaking this long after it was accepted is closed (Go
    /// duration).
    #[arg(long = "handshake-timeout", default_value = "3s", value_parser = crate::config::parse_go_duration)]
    pub handshake_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Where to keep the quickstart's state (default: a new temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Control-plane listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The edge's public HTTP address.
    #[arg(long = "http-listen", default_value = "127.0.0.1:0")]
    pub http_listen: std::net::SocketAddr,
    /// Origin for the tunnel (default: the built-in hello_world page).
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Debug, Default, Args)]
pub struct TunnelCmd {
    /// `--origincert`, resolved from every level, env and config.yml.
    #[arg(skip)]
    pub origincert: Option<PathBuf>,
    /// `--config`, as given on the command line (None: the search directories).
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// `--api-url`, resolved.
    #[arg(skip)]
    pub api_url: Option<String>,
    /// None: cloudflared's bare `tunnel` (a quick tunnel with `--url`).
    #[command(subcommand)]
    pub verb: Option<TunnelVerb>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum TunnelVerb {
    /// Get a cert.pem for one zone from the control plane.
    Login(LoginArgs),
    /// Create a named tunnel and write its credentials file.
    Create {
        name: String,
        #[arg(short = 'o', long = "output")]
        output: Option<OutputFormat>,
        /// Where to write the credentials (default: next to cert.pem).
        #[arg(
            long = "credentials-file",
            visible_alias = "cred-file",
            env = "TUNNEL_CRED_FILE"
        )]
        credentials_file: Option<PathBuf>,
        /// Base64 tunnel secret of at least 32 bytes (default: 32 random bytes).
        #[arg(
            short = 's',
            long,
            env = "TUNNEL_CREATE_SECRET",
            hide_env_values = true
        )]
        secret: Option<Secret<String>>,
    },
    /// List tunnels.
    List {
        #[arg(short = 'o', long = "output")]
        output: Option<OutputFormat>,
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(long = "name-prefix", visible_alias = "np")]
        name_prefix: Option<String>,
        #[arg(long = "exclude-name-prefix", visible_alias = "enp")]
        exclude_name_prefix: Option<String>,
        #[arg(short = 'i', long)]
        id: Option<String>,
        /// Include deleted tunnels.
        #[arg(short = 'd', long = "show-deleted")]
        show_deleted: bool,
        /// Only tunnels that existed at this RFC 3339 time.
        #[arg(short = 'w', long)]
        when: Option<String>,
    },
    /// Show a tunnel and its connectors.
    Info {
        tunnel: String,
        #[arg(short = 'o', long = "output")]
        output: Option<OutputFormat>,
    },
    /// Delete tunnels (refused while connected unless -f).
    Delete {
        #[arg(required = true)]
        tunnels: Vec<String>,
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(long = "credentials-file", visible_alias = "cred-file")]
        credentials_file: Option<PathBuf>,
    },
    /// Remove stale connection records.
    Cleanup {
        #[arg(required = true)]
        tunnels: Vec<String>,
        #[arg(short = 'c', long = "connector-id", env = "TUNNEL_CLEANUP_CONNECTOR")]
        connector_id: Option<String>,
    },
    /// Print the tunnel's token, or write it as a credentials file.
    Token {
        tunnel: String,
        #[arg(long = "cred-file", visible_alias = "credentials-file")]
        cred_file: Option<PathBuf>,
    },
    /// Route traffic to a tunnel.
    #[command(subcommand)]
    Route(RouteVerb),
    /// Check and explore config.yml ingress rules.
    #[command(subcommand)]
    Ingress(IngressVerb),
    /// Run a tunnel: connect to the edge and proxy its requests to the origins.
    Run(RunArgs),
    /// Exit 0 when the running connector's metrics server (`--metrics`) says it is ready.
    Ready,
}

/// `tunnel run [TUNNEL]`; its flags are in the table ([`super::flags::spec`]).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Tunnel NAME or UUID (default: `tunnel:` in config.yml).
    pub tunnel: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Control-plane URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "RINGWAY_CONTROL_URL")]
    pub control: Option<String>,
    /// Non-interactive: the operator's admin token.
    #[arg(long = "api-token", env = "RINGWAY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret<String>>,
    /// Non-interactive: the zone the cert may manage.
    #[arg(long)]
    pub zone: Option<String>,
    /// Where to write cert.pem (default: ~/.cloudflared/cert.pem).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not try to open a browser.
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(Debug, Subcommand)]
pub enum RouteVerb {
    /// Point HOSTNAME (a proxied CNAME) at the tunnel.
    Dns {
        tunnel: String,
        hostname: String,
        #[arg(
            short = 'f',
            long = "overwrite-dns",
            env = "TUNNEL_FORCE_PROVISIONING_DNS"
        )]
        overwrite_dns: bool,
    },
    /// Add the tunnel to POOL behind load balancer LB.
    Lb {
        tunnel: String,
        lb: String,
        pool: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IngressVerb {
    /// Validate the ingress rules of config.yml.
    Validate,
    /// Show which ingress rule matches URL.
    Rule { url: String },
}

#[derive(Debug, Args)]
pub struct ControlCmd {
    #[command(subcommand)]
    pub verb: ControlVerb,
}

#[derive(Debug, Subcommand)]
pub enum ControlVerb {
    /// Serve the control-plane API.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for the database, admin-token and edge-token.
    #[arg(long = "data-dir")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Zones to create in the default account (repeatable; new ones may be added later).
    #[arg(long = "zone")]
    pub zones: Vec<String>,
    /// Suffix of tunnel CNAME targets: `<uuid>.<suffix>`.
    #[arg(long = "tunnel-suffix", default_value = "cfargotunnel.com")]
    pub tunnel_suffix: String,
    /// A request head must be complete this long after its first byte (or after accept);
    /// otherwise the connection is closed (Go duration).
    #[arg(long = "header-timeout", default_value = "10s", value_parser = crate::config::parse_go_duration)]
    pub header_timeout: std::time::Duration,
    /// A keep-alive connection with no request for this long is closed (Go duration).
    #[arg(long = "idle-timeout", default_value = "60s", value_parser = crate::config::parse_go_duration)]
    pub idle_timeout: std::time::Duration,
    /// An API request (body included) not answered within this gets 503 (Go duration). The
    /// snapshot long-poll gets --long-poll-max on top.
    #[arg(long = "request-timeout", default_value = "30s", value_parser = crate::config::parse_go_duration)]
    pub request_timeout: std::time::Duration,
    /// The longest an edge's snapshot long-poll may wait for a change (Go duration).
    #[arg(long = "long-poll-max", default_value = "30s", value_parser = crate::config::parse_go_duration)]
    pub long_poll_max: std::time::Duration,
    /// The largest request body, in bytes; a larger one gets 413.
    #[arg(long = "max-body", default_value_t = crate::api::DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Client connections served at once; past it a new one gets 503 and is closed.
    #[arg(long = "max-connections", default_value_t = 512)]
    pub max_connections: usize,
    /// Serve quick tunnels (`POST /tunnel`, cloudflared's `--quick-service`): each gets a random
    /// hostname in this zone, created if missing. Without it quick tunnels are refused.
    #[arg(long = "quick-zone")]
    pub quick_zone: Option<String>,
    /// A quick tunnel with no registered connection for this long is deleted with its DNS
    /// record (Go duration).
    #[arg(long = "quick-lease", default_value = "60s", value_parser = crate::config::parse_go_duration)]
    pub quick_lease: std::time::Duration,
    /// Quick tunnels alive at once; past it `POST /tunnel` gets 429.
    #[arg(long = "quick-max-tunnels", default_value_t = crate::api::quick::DEFAULT_MAX_LIVE)]
    pub quick_max_tunnels: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_parsed_args_masks_secrets() {
        let cli = Cli::parse_from([
            "ringway",
            "tunnel",
            "create",
            "--secret",
            "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==",
            "web",
        ]);
        let dbg = format!("{cli:?}");
        assert!(!dbg.contains("c2VjcmV0"), "{dbg}");
        assert!(dbg.contains("MASKED"), "{dbg}");
        let cli = Cli::parse_from([
            "ringway",
            "tunnel",
            "login",
            "--control",
            "http://127.0.0.1:1",
            "--api-token",
            "TOPSECRETTOKEN",
            "--zone",
            "example.com",
        ]);
        let dbg = format!("{cli:?}");
        assert!(!dbg.contains("TOPSECRETTOKEN"), "{dbg}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
