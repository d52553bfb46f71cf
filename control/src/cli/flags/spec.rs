//! The table of cloudflared's global, `tunnel` and `tunnel run` flags: name, aliases,
//! environment variables, type, where each is accepted, whether config.yml may set it, and
//! what ringway does with it. The clap arguments, the value lookup, the "no effect" notices,
//! the docs table and the conformance test all read this one table.

/// The value type, as cloudflared's urfave/cli flag type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    Int,
    Float,
    /// A Go duration (`30s`, `1m30s`).
    Duration,
    /// Repeatable; an environment variable is split on commas; config.yml needs a YAML list.
    List,
}

/// Where cloudflared accepts a flag on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Levels {
    /// `cloudflared --f tunnel …` and `cloudflared tunnel --f …`.
    GlobalAndTunnel,
    /// Also after `tunnel run` (cloudflared's proxy flags and a few others).
    All,
    /// Only after `tunnel run`.
    RunOnly,
}

/// What ringway does with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// It does what cloudflared does; the text says how, for the docs table.
    Works(&'static str),
    /// It concerns a service of Cloudflare's that a self-hosted edge does not have. Accepted;
    /// one INFO line says so when it is set.
    NoEffect(&'static str),
}

/// One flag.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    pub name: &'static str,
    /// Other long names, and single-letter short names.
    pub aliases: &'static [&'static str],
    pub env: &'static [&'static str],
    pub kind: Kind,
    pub levels: Levels,
    /// config.yml may set it as a top-level key named like the flag.
    pub config_key: bool,
    /// Hidden in cloudflared's help.
    pub hidden: bool,
    pub effect: Effect,
}

const fn f(
    name: &'static str,
    aliases: &'static [&'static str],
    env: &'static [&'static str],
    kind: Kind,
    levels: Levels,
    effect: Effect,
) -> FlagSpec {
    FlagSpec {
        name,
        aliases,
        env,
        kind,
        levels,
        config_key: true,
        hidden: false,
        effect,
    }
}

const fn hidden(mut s: FlagSpec) -> FlagSpec {
    s.hidden = true;
    s
}

const fn no_config(mut s: FlagSpec) -> FlagSpec {
    s.config_key = false;
    s
}

use Effect::{NoEffect, Works};
use Kind::{Bool, Duration as Dur, Int, List, Str};
use Levels::{All, GlobalAndTunnel as Gt, RunOnly};

/// Flags cloudflared 2026.8 still defines but never reads.
const DEAD_IN_CLOUDFLARED: &str = "defined but never read by cloudflared 2026.8 either";
const UPDATE: &str = "ringway does not update itself; update it with your package manager";
const MANAGEMENT: &str = "Cloudflare's management service (remote logs, diagnostics)";
const EDGE_DISCOVERY: &str = "Cloudflare's edge discovery; ringway dials the --edge addresses";
const REMOVED: &str = "removed from cloudflared too; parsed and ignored";
const OLD_SSH: &str = "cloudflared's removed SSH server; parsed and ignored";
const API_ONLY: &str = "Cloudflare's hosted API";

/// Every global, `tunnel` and `tunnel run` flag of cloudflared 2026.8, in its help order.
pub const FLAGS: &[FlagSpec] = &[
    no_config(f(
        "config",
        &[],
        &[],
        Str,
        Gt,
        Works(
            "config.yml to read (default: the first config.yml/config.yaml in ~/.cloudflared, ~/.cloudflare-warp, ~/cloudflare-warp, /etc/cloudflared, /usr/local/etc/cloudflared)",
        ),
    )),
    f(
        "origincert",
        &[],
        &["TUNNEL_ORIGIN_CERT"],
        Str,
        Gt,
        Works("cert.pem from `tunnel login`: the control plane's address and a zone token"),
    ),
    f("autoupdate-freq", &[], &[], Dur, Gt, NoEffect(UPDATE)),
    f(
        "no-autoupdate",
        &[],
        &["NO_AUTOUPDATE"],
        Bool,
        Gt,
        NoEffect(UPDATE),
    ),
    f(
        "no-prechecks",
        &[],
        &["TUNNEL_NO_PRECHECKS"],
        Bool,
        Gt,
        NoEffect("Cloudflare's edge connectivity pre-checks"),
    ),
    f(
        "metrics",
        &[],
        &["TUNNEL_METRICS"],
        Str,
        Gt,
        Works(
            "metrics server address (/metrics, /ready, /healthcheck, /quicktunnel); default 127.0.0.1:20241-20245",
        ),
    ),
    f(
        "pidfile",
        &[],
        &["TUNNEL_PIDFILE"],
        Str,
        Gt,
        Works("PID written here once the first connection is registered"),
    ),
    f(
        "url",
        &[],
        &["TUNNEL_URL"],
        Str,
        All,
        Works(
            "ad hoc mode: every request goes to this origin; with no tunnel named, a quick tunnel",
        ),
    ),
    f(
        "hello-world",
        &[],
        &["TUNNEL_HELLO_WORLD"],
        Bool,
        All,
        Works("serve the built-in hello_world origin"),
    ),
    f(
        "socks5",
        &[],
        &["TUNNEL_SOCKS"],
        Bool,
        All,
        Works("origin is a SOCKS5 proxy (refused at start: ringway has no socks-proxy service)"),
    ),
    f(
        "proxy-connect-timeout",
        &[],
        &[],
        Dur,
        All,
        Works("ad hoc mode: originRequest.connectTimeout"),
    ),
    f(
        "proxy-tls-timeout",
        &[],
        &[],
        Dur,
        All,
        Works("ad hoc mode: originRequest.tlsTimeout"),
    ),
    f(
        "proxy-tcp-keepalive",
        &[],
        &[],
        Dur,
        All,
        Works("ad hoc mode: originRequest.tcpKeepAlive"),
    ),
    f(
        "proxy-no-happy-eyeballs",
        &[],
        &[],
        Bool,
        All,
        Works("ad hoc mode: originRequest.noHappyEyeballs"),
    ),
    f(
        "proxy-keepalive-connections",
        &[],
        &[],
        Int,
        All,
        Works("ad hoc mode: originRequest.keepAliveConnections"),
    ),
    f(
        "proxy-keepalive-timeout",
        &[],
        &[],
        Dur,
        All,
        Works("ad hoc mode: originRequest.keepAliveTimeout"),
    ),
    f(
        "proxy-connection-timeout",
        &[],
        &[],
        Dur,
        All,
        NoEffect("deprecated in cloudflared; a no-op there too"),
    ),
    f(
        "proxy-expect-continue-timeout",
        &[],
        &[],
        Dur,
        All,
        NoEffect("deprecated in cloudflared; a no-op there too"),
    ),
    f(
        "http-host-header",
        &[],
        &["TUNNEL_HTTP_HOST_HEADER"],
        Str,
        All,
        Works("ad hoc mode: originRequest.httpHostHeader"),
    ),
    f(
        "origin-server-name",
        &[],
        &["TUNNEL_ORIGIN_SERVER_NAME"],
        Str,
        All,
        Works("ad hoc mode: originRequest.originServerName"),
    ),
    f(
        "unix-socket",
        &[],
        &["TUNNEL_UNIX_SOCKET"],
        Str,
        All,
        Works("ad hoc mode: the origin is this unix socket"),
    ),
    f(
        "origin-ca-pool",
        &[],
        &["TUNNEL_ORIGIN_CA_POOL"],
        Str,
        All,
        Works("ad hoc mode: originRequest.caPool"),
    ),
    f(
        "no-tls-verify",
        &[],
        &["NO_TLS_VERIFY"],
        Bool,
        All,
        Works("ad hoc mode: originRequest.noTLSVerify"),
    ),
    f(
        "no-chunked-encoding",
        &[],
        &["TUNNEL_NO_CHUNKED_ENCODING"],
        Bool,
        All,
        Works("ad hoc mode: originRequest.disableChunkedEncoding"),
    ),
    f(
        "http2-origin",
        &[],
        &["TUNNEL_ORIGIN_ENABLE_HTTP2"],
        Bool,
        All,
        Works("ad hoc mode: originRequest.http2Origin"),
    ),
    hidden(f(
        "management-hostname",
        &[],
        &["TUNNEL_MANAGEMENT_HOSTNAME"],
        Str,
        All,
        NoEffect(MANAGEMENT),
    )),
    hidden(f(
        "service-op-ip",
        &[],
        &["TUNNEL_SERVICE_OP_IP"],
        Str,
        All,
        NoEffect(MANAGEMENT),
    )),
    hidden(f(
        "local-ssh-port",
        &[],
        &["LOCAL_SSH_PORT"],
        Str,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "ssh-idle-timeout",
        &[],
        &["SSH_IDLE_TIMEOUT"],
        Dur,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "ssh-max-timeout",
        &[],
        &["SSH_MAX_TIMEOUT"],
        Dur,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "bucket-name",
        &[],
        &["BUCKET_ID"],
        Str,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "region-name",
        &[],
        &["REGION_ID"],
        Str,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "secret-id",
        &[],
        &["SECRET_ID"],
        Str,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "access-key-id",
        &[],
        &["ACCESS_CLIENT_ID"],
        Str,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "session-token",
        &[],
        &["SESSION_TOKEN_ID"],
        Str,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "s3-url-host",
        &[],
        &["S3_URL"],
        Str,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "host-key-path",
        &[],
        &["HOST_KEY_PATH"],
        Str,
        All,
        NoEffect(OLD_SSH),
    )),
    hidden(f(
        "ssh-server",
        &[],
        &["TUNNEL_SSH_SERVER"],
        Bool,
        All,
        NoEffect(OLD_SSH),
    )),
    f(
        "bastion",
        &[],
        &["TUNNEL_BASTION"],
        Bool,
        All,
        Works(
            "ad hoc mode: the origin is a bastion (refused at start: ringway has no bastion service)",
        ),
    ),
    f(
        "proxy-address",
        &[],
        &["TUNNEL_PROXY_ADDRESS"],
        Str,
        All,
        NoEffect(
            "the listen address of cloudflared's socks5/bastion proxy, origins ringway refuses",
        ),
    ),
    f(
        "proxy-port",
        &[],
        &["TUNNEL_PROXY_PORT"],
        Int,
        All,
        NoEffect("the listen port of cloudflared's socks5/bastion proxy, origins ringway refuses"),
    ),
    f(
        "loglevel",
        &[],
        &["TUNNEL_LOGLEVEL"],
        Str,
        Gt,
        Works("log level: trace, debug, info, warn, error, fatal, panic, disabled"),
    ),
    f(
        "transport-loglevel",
        &["proto-loglevel"],
        &["TUNNEL_PROTO_LOGLEVEL", "TUNNEL_TRANSPORT_LOGLEVEL"],
        Str,
        Gt,
        Works("log level of the QUIC transport"),
    ),
    f(
        "logfile",
        &[],
        &["TUNNEL_LOGFILE"],
        Str,
        Gt,
        Works("append JSON log lines to this file (never rotated)"),
    ),
    f(
        "log-directory",
        &[],
        &["TUNNEL_LOGDIRECTORY"],
        Str,
        Gt,
        Works("JSON log lines in DIR/cloudflared.log, rotated at 1 MB, 5 backups"),
    ),
    f(
        "trace-output",
        &[],
        &["TUNNEL_TRACE_OUTPUT"],
        Str,
        Gt,
        NoEffect("a Go runtime trace; ringway is not a Go program (use perf)"),
    ),
    no_config(f(
        "output",
        &[],
        &["TUNNEL_MANAGEMENT_OUTPUT", "TUNNEL_LOG_OUTPUT"],
        Str,
        Gt,
        Works("console log format: default or json"),
    )),
    f("proxy-dns", &[], &[], Bool, Gt, NoEffect(REMOVED)),
    f("proxy-dns-port", &[], &[], Int, Gt, NoEffect(REMOVED)),
    f("proxy-dns-address", &[], &[], Str, Gt, NoEffect(REMOVED)),
    f("proxy-dns-upstream", &[], &[], List, Gt, NoEffect(REMOVED)),
    f(
        "proxy-dns-max-upstream-conns",
        &[],
        &[],
        Int,
        Gt,
        NoEffect(REMOVED),
    ),
    f("proxy-dns-bootstrap", &[], &[], List, Gt, NoEffect(REMOVED)),
    f(
        "credentials-file",
        &["cred-file"],
        &["TUNNEL_CRED_FILE"],
        Str,
        All,
        Works("the tunnel's credentials JSON"),
    ),
    hidden(f("is-autoupdated", &[], &[], Bool, Gt, NoEffect(UPDATE))),
    hidden(f(
        "edge",
        &[],
        &["TUNNEL_EDGE"],
        List,
        Gt,
        Works("edge addresses HOST:PORT (required: ringway has no edge discovery)"),
    )),
    f(
        "region",
        &[],
        &["TUNNEL_REGION"],
        Str,
        Gt,
        NoEffect(EDGE_DISCOVERY),
    ),
    f(
        "edge-ip-version",
        &[],
        &["TUNNEL_EDGE_IP_VERSION"],
        Str,
        Gt,
        Works("4, 6 or auto: which addresses of the edge names to dial"),
    ),
    f(
        "edge-bind-address",
        &[],
        &["TUNNEL_EDGE_BIND_ADDRESS"],
        Str,
        Gt,
        Works("local IP the edge connections are sent from"),
    ),
    hidden(f(
        "cacert",
        &[],
        &["TUNNEL_CACERT"],
        Str,
        Gt,
        Works("CA that signs the edge's certificate (required)"),
    )),
    f(
        "hostname",
        &[],
        &["TUNNEL_HOSTNAME"],
        Str,
        Gt,
        Works("with --name: the hostname to route to the ad hoc named tunnel"),
    ),
    hidden(f(
        "id",
        &[],
        &["TUNNEL_ID"],
        Str,
        Gt,
        NoEffect("cloudflared's legacy instance id"),
    )),
    f(
        "lb-pool",
        &[],
        &["TUNNEL_LB_POOL"],
        Str,
        Gt,
        Works("with --name: the load-balancer pool to add the ad hoc named tunnel to"),
    ),
    hidden(f(
        "api-key",
        &[],
        &["TUNNEL_API_KEY"],
        Str,
        Gt,
        NoEffect(REMOVED),
    )),
    hidden(f(
        "api-email",
        &[],
        &["TUNNEL_API_EMAIL"],
        Str,
        Gt,
        NoEffect(REMOVED),
    )),
    hidden(f(
        "api-ca-key",
        &[],
        &["TUNNEL_API_CA_KEY"],
        Str,
        Gt,
        NoEffect(REMOVED),
    )),
    hidden(f(
        "api-url",
        &[],
        &["TUNNEL_API_URL"],
        Str,
        Gt,
        Works("control-plane API base, e.g. http://HOST:PORT/client/v4 (default: from cert.pem)"),
    )),
    f(
        "metrics-update-freq",
        &[],
        &["TUNNEL_METRICS_UPDATE_FREQ"],
        Dur,
        Gt,
        NoEffect("ringway's metrics are live counters, never refreshed on a timer"),
    ),
    hidden(f(
        "tag",
        &[],
        &["TUNNEL_TAG"],
        List,
        Gt,
        Works("KEY=VALUE tags reported to the edge and shown by `tunnel info`"),
    )),
    hidden(f(
        "heartbeat-interval",
        &[],
        &[],
        Dur,
        Gt,
        NoEffect(DEAD_IN_CLOUDFLARED),
    )),
    hidden(f(
        "heartbeat-count",
        &[],
        &[],
        Int,
        Gt,
        NoEffect(DEAD_IN_CLOUDFLARED),
    )),
    hidden(f(
        "max-edge-addr-retries",
        &[],
        &[],
        Int,
        Gt,
        Works(
            "with `--protocol auto`, failed attempts retried on one transport before a connection falls back to the other (0-255; default 1, cloudflared's 8)",
        ),
    )),
    f(
        "retries",
        &[],
        &["TUNNEL_RETRIES"],
        Int,
        Gt,
        Works("failed attempts in a row before a connection is reported failed"),
    ),
    hidden(f(
        "ha-connections",
        &[],
        &[],
        Int,
        Gt,
        Works("connections kept to the edge"),
    )),
    hidden(f(
        "rpc-timeout",
        &[],
        &[],
        Dur,
        Gt,
        Works("how long the edge may take to answer registerConnection (default 5s)"),
    )),
    hidden(f(
        "write-stream-timeout",
        &[],
        &["TUNNEL_STREAM_WRITE_TIMEOUT"],
        Dur,
        Gt,
        Works(
            "how long one write of response bytes may wait for the edge to take them before the stream is reset (default 0: no limit)",
        ),
    )),
    hidden(f(
        "quic-disable-pmtu-discovery",
        &[],
        &["TUNNEL_DISABLE_QUIC_PMTU"],
        Bool,
        Gt,
        Works("the connector's QUIC keeps 1200-byte packets (no path MTU discovery)"),
    )),
    hidden(f(
        "quic-connection-level-flow-control-limit",
        &[],
        &["TUNNEL_QUIC_CONN_LEVEL_FLOW_CONTROL_LIMIT"],
        Int,
        Gt,
        Works("the connector's QUIC connection receive window, bytes"),
    )),
    hidden(f(
        "quic-stream-level-flow-control-limit",
        &[],
        &["TUNNEL_QUIC_STREAM_LEVEL_FLOW_CONTROL_LIMIT"],
        Int,
        Gt,
        Works("the connector's QUIC stream receive window, bytes (default 6 MiB)"),
    )),
    f(
        "label",
        &[],
        &[],
        Str,
        Gt,
        Works("connector label, reported to the edge and shown by `tunnel info`"),
    ),
    f(
        "grace-period",
        &[],
        &["TUNNEL_GRACE_PERIOD"],
        Dur,
        Gt,
        Works("in-flight requests get this long after SIGTERM/SIGINT"),
    ),
    f(
        "compression-quality",
        &[],
        &["TUNNEL_COMPRESSION_LEVEL"],
        Int,
        Gt,
        NoEffect("Cloudflare's cross-stream compression"),
    ),
    hidden(f(
        "use-reconnect-token",
        &[],
        &["TUNNEL_USE_RECONNECT_TOKEN"],
        Bool,
        Gt,
        NoEffect(DEAD_IN_CLOUDFLARED),
    )),
    hidden(f(
        "dial-edge-timeout",
        &[],
        &["DIAL_EDGE_TIMEOUT"],
        Dur,
        Gt,
        NoEffect(DEAD_IN_CLOUDFLARED),
    )),
    hidden(f(
        "stdin-control",
        &[],
        &["STDIN_CONTROL"],
        Bool,
        Gt,
        NoEffect("cloudflared's test hook"),
    )),
    f(
        "name",
        &["n"],
        &["TUNNEL_NAME"],
        Str,
        Gt,
        Works(
            "ad hoc named tunnel: create NAME if missing, route --hostname/--lb-pool to it, run it",
        ),
    ),
    hidden(f("ui", &[], &[], Bool, Gt, NoEffect(REMOVED))),
    hidden(f(
        "quick-service",
        &[],
        &[],
        Str,
        Gt,
        Works("control-plane URL that issues quick tunnels (ringway control serve --quick-zone)"),
    )),
    hidden(f(
        "max-fetch-size",
        &[],
        &["TUNNEL_MAX_FETCH_SIZE"],
        Int,
        Gt,
        NoEffect(API_ONLY),
    )),
    f(
        "post-quantum",
        &["pq"],
        &["TUNNEL_POST_QUANTUM"],
        Bool,
        All,
        Works("offer only X25519MLKEM768 to the edge"),
    ),
    f(
        "management-diagnostics",
        &[],
        &["TUNNEL_MANAGEMENT_DIAGNOSTICS"],
        Bool,
        Gt,
        NoEffect(MANAGEMENT),
    ),
    hidden(f(
        "protocol",
        &["p"],
        &["TUNNEL_TRANSPORT_PROTOCOL"],
        Str,
        All,
        Works(
            "quic, http2, or auto (the default): QUIC, else HTTP/2 per connection; no TXT lookup",
        ),
    )),
    no_config(f(
        "overwrite-dns",
        &["f"],
        &["TUNNEL_FORCE_PROVISIONING_DNS"],
        Bool,
        Gt,
        Works("with --name/--hostname: replace an existing DNS record"),
    )),
    // `tunnel run` only.
    f(
        "credentials-contents",
        &[],
        &["TUNNEL_CRED_CONTENTS"],
        Str,
        RunOnly,
        Works("the credentials JSON itself"),
    ),
    f(
        "features",
        &["F"],
        &[],
        List,
        RunOnly,
        NoEffect("Cloudflare's opt-in edge features"),
    ),
    f(
        "token",
        &[],
        &["TUNNEL_TOKEN"],
        Str,
        RunOnly,
        Works("tunnel token from `tunnel token`; beats --token-file and credentials"),
    ),
    f(
        "token-file",
        &[],
        &["TUNNEL_TOKEN_FILE"],
        Str,
        RunOnly,
        Works("file holding the token (surrounding whitespace trimmed)"),
    ),
    no_config(f(
        "icmpv4-src",
        &[],
        &["TUNNEL_ICMPV4_SRC"],
        Str,
        RunOnly,
        NoEffect("Cloudflare's private-network ICMP proxy"),
    )),
    no_config(f(
        "icmpv6-src",
        &[],
        &["TUNNEL_ICMPV6_SRC"],
        Str,
        RunOnly,
        NoEffect("Cloudflare's private-network ICMP proxy"),
    )),
    no_config(f(
        "max-active-flows",
        &[],
        &["TUNNEL_MAX_ACTIVE_FLOWS"],
        Int,
        RunOnly,
        NoEffect("Cloudflare's private-network routing (WARP)"),
    )),
    no_config(f(
        "dns-resolver-addrs",
        &[],
        &["TUNNEL_DNS_RESOLVER_ADDRS"],
        List,
        RunOnly,
        NoEffect("Cloudflare's private-network virtual DNS"),
    )),
];

/// Flags of ringway's own on `tunnel run` (not cloudflared's).
pub const RINGWAY_RUN_FLAGS: &[FlagSpec] = &[
    no_config(f(
        "workers",
        &[],
        &["RINGWAY_WORKERS"],
        Int,
        RunOnly,
        Works("worker threads (default: one per core)"),
    )),
    no_config(f(
        "max-failures",
        &[],
        &["TUNNEL_MAX_FAILURES"],
        Int,
        RunOnly,
        Works("exit nonzero once every connection failed this many attempts in a row"),
    )),
];

/// The spec of `name` (primary name or alias).
pub fn find(name: &str) -> Option<&'static FlagSpec> {
    FLAGS
        .iter()
        .chain(RINGWAY_RUN_FLAGS)
        .find(|s| s.name == name || s.aliases.contains(&name))
}

impl FlagSpec {
    pub fn at_global(&self) -> bool {
        self.levels != Levels::RunOnly
    }
    pub fn at_run(&self) -> bool {
        self.levels != Levels::GlobalAndTunnel
    }
}

/// The flag table of `docs/cli.md` (between its `flags:begin` and `flags:end` markers).
pub fn docs_table() -> String {
    let mut out =
        String::from("| flag | env | where | config.yml | in ringway |\n|---|---|---|---|---|\n");
    for s in FLAGS.iter().chain(RINGWAY_RUN_FLAGS) {
        let mut names = format!("`--{}`", s.name);
        for a in s.aliases {
            let dashes = if a.len() == 1 { "-" } else { "--" };
            names.push_str(&format!(", `{dashes}{a}`"));
        }
        let env = s
            .env
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let place = match s.levels {
            Levels::GlobalAndTunnel => "global, tunnel, run*",
            Levels::All => "global, tunnel, run",
            Levels::RunOnly => "run",
        };
        let key = if s.config_key { "yes" } else { "no" };
        let meaning = match s.effect {
            Effect::Works(m) => m.to_string(),
            Effect::NoEffect(why) => format!("accepted, no effect (INFO line): {why}"),
        };
        out.push_str(&format!(
            "| {names} | {env} | {place} | {key} | {} |\n",
            meaning.replace('|', "\\|")
        ));
    }
    out
}
