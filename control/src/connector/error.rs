//! Why `ringway tunnel run` could not start or stopped: each error says which side failed
//! ([`Side`]) and whether running the same command again may succeed
//! ([`ConnectorError::retryable`]). The binary prints the message as one line.

use std::path::PathBuf;

use dataplane::connector::ConnectionError;
use uuid::Uuid;

use crate::config::{ConfigError, IngressErrors, ServiceError};
use crate::context::ContextError;
use crate::files::FilesError;
use crate::metrics_server::MetricsError;

/// Where a connector failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A flag (or its config.yml key) is missing or malformed.
    CommandLine,
    /// A local file: config.yml, the credentials file, cert.pem, the edge's CA.
    LocalFiles,
    /// The ingress rules or an origin's settings.
    OriginConfig,
    /// The control plane (resolving a tunnel name).
    ControlPlane,
    /// The edge (no connection could be registered).
    Edge,
    /// This process: the metrics listener, the QUIC client setup, the worker threads.
    Process,
}

/// A config.yml service ringway's data path does not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("TCP service {0}")]
    Tcp(String),
    #[error("bastion mode")]
    Bastion,
    #[error("socks-proxy")]
    SocksProxy,
}

/// Why the connector could not start, or why it stopped before a signal asked it to.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("--token: {0}")]
    Token(FilesError),
    #[error("{} has no TunnelID; run it as `tunnel run UUID`", .0.display())]
    CredentialsWithoutTunnelId(PathBuf),
    /// The JSON is never part of the message: it holds the tunnel secret.
    #[error("--credentials-contents: {0}")]
    CredentialsContents(FilesError),
    #[error("--credentials-contents has no TunnelID; run it as `tunnel run UUID`")]
    CredentialsContentsWithoutTunnelId,
    #[error("--unix-socket must be used exclusivly.")]
    UnixSocketWithUrl,
    #[error(
        "\"cloudflared tunnel run\" requires the ID or name of the tunnel to run as the last \
         command line argument or in the configuration file."
    )]
    NoTunnel,
    /// Resolving a tunnel name needs cert.pem and the control plane.
    #[error(transparent)]
    Lookup(#[from] ContextError),
    #[error("{}", crate::config::URL_INCOMPATIBLE_WITH_INGRESS)]
    UrlWithIngress,
    #[error("--url {url}: {cause}")]
    BadUrl { url: String, cause: ServiceError },
    #[error("Validation failed: {0}")]
    Ingress(#[from] IngressErrors),
    #[error("ingress rule #{rule}: {what} is not supported by ringway yet")]
    UnsupportedService { rule: usize, what: Unsupported },
    #[error("ingress rule #{rule}: {cause}")]
    Origin {
        rule: usize,
        cause: dataplane::connector::origin::OriginConfigError,
    },
    #[error("no edge address: pass --edge HOST:PORT (repeatable) or set `edge:` in config.yml")]
    NoEdge,
    #[error("--edge {edge}: not a HOST:PORT address: {cause}")]
    EdgeAddress { edge: String, cause: std::io::Error },
    #[error("--edge {0}: the name resolves to no address")]
    EdgeUnresolved(String),
    #[error("--edge {}: no {family} address (--edge-ip-version)", edges.join(", "))]
    EdgeNoAddressOfFamily {
        edges: Vec<String>,
        family: &'static str,
    },
    #[error(
        "--edge-bind-address {bind} is {family}, but --edge {} has no {family} address",
        edges.join(", ")
    )]
    EdgeBindFamily {
        bind: std::net::IpAddr,
        family: &'static str,
        edges: Vec<String>,
    },
    #[error("no CA for the edge: pass --cacert FILE (the edge's ca.pem)")]
    NoCa,
    #[error("cannot read --cacert {}: {cause}", path.display())]
    ReadCa {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot use --cacert as the edge's CA: {0}")]
    BadCa(dataplane::quic::TlsError),
    #[error(transparent)]
    MetricsListen(#[from] MetricsError),
    #[error("cannot start the metrics server: {0}")]
    MetricsStart(std::io::Error),
    #[error("cannot build the QUIC client configuration: {0}")]
    QuicClient(dataplane::quic::ConfigError),
    #[error("connector workers failed: {0}")]
    Workers(#[from] dataplane::runtime::RuntimeError),
    #[error("cannot start the signal handler: {0}")]
    Signals(std::io::Error),
    #[error("connector shutdown failed: {0}")]
    Shutdown(tokio::task::JoinError),
    /// Every connection was refused, `--retries` times in a row, with a refusal the edge says
    /// retrying will not fix.
    #[error("tunnel {tunnel}: no connection could be registered: {cause}")]
    GaveUp {
        tunnel: Uuid,
        cause: ConnectionError,
    },
    /// `--max-failures`: every connection failed that many attempts in a row.
    #[error(
        "tunnel {tunnel}: every connection failed {max} attempts in a row (--max-failures); last \
         error: {cause}"
    )]
    MaxFailures {
        tunnel: Uuid,
        max: u32,
        cause: ConnectionError,
    },
}

impl ConnectorError {
    /// The side that failed.
    pub fn side(&self) -> Side {
        use ConnectorError as E;
        match self {
            E::Token(_)
            | E::NoTunnel
            | E::UrlWithIngress
            | E::BadUrl { .. }
            | E::NoEdge
            | E::EdgeAddress { .. }
            | E::EdgeUnresolved(_)
            | E::EdgeNoAddressOfFamily { .. }
            | E::EdgeBindFamily { .. }
            | E::CredentialsContents(_)
            | E::CredentialsContentsWithoutTunnelId
            | E::UnixSocketWithUrl
            | E::NoCa => Side::CommandLine,
            E::Config(_)
            | E::Files(_)
            | E::CredentialsWithoutTunnelId(_)
            | E::ReadCa { .. }
            | E::BadCa(_) => Side::LocalFiles,
            E::Lookup(e) if e.is_local() => Side::LocalFiles,
            E::Lookup(_) => Side::ControlPlane,
            E::Ingress(_) | E::UnsupportedService { .. } | E::Origin { .. } => Side::OriginConfig,
            E::GaveUp { cause, .. } | E::MaxFailures { cause, .. } => match cause.side() {
                dataplane::connector::FailedSide::Edge => Side::Edge,
                dataplane::connector::FailedSide::Local => Side::Process,
            },
            E::MetricsListen(_)
            | E::MetricsStart(_)
            | E::QuicClient(_)
            | E::Workers(_)
            | E::Signals(_)
            | E::Shutdown(_) => Side::Process,
        }
    }

    /// Whether running the same command again, unchanged, may succeed: the control plane or
    /// the edge was unreachable or failing, or a resource (a port, a name lookup) was busy.
    /// Bad flags, files and rules, and the edge's permanent refusals, are not.
    pub fn retryable(&self) -> bool {
        use ConnectorError as E;
        match self {
            E::Lookup(e) => e.retryable(),
            // A name that failed to resolve may resolve later; a malformed address never will.
            E::EdgeAddress { cause, .. } => cause.kind() != std::io::ErrorKind::InvalidInput,
            E::EdgeUnresolved(_) => true,
            E::MetricsListen(_) | E::MetricsStart(_) => true,
            E::GaveUp { cause, .. } => cause.retryable(),
            E::MaxFailures { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dataplane::wire::rpc::RegistrationError;

    use super::*;

    fn refused(e: RegistrationError) -> ConnectionError {
        ConnectionError::Refused(e)
    }

    #[test]
    fn an_edge_refusal_says_edge_and_whether_a_retry_helps() {
        let tunnel = Uuid::nil();
        let wrong_secret = ConnectorError::GaveUp {
            tunnel,
            cause: refused(RegistrationError::permanent("Unauthorized")),
        };
        assert_eq!(wrong_secret.side(), Side::Edge);
        assert!(!wrong_secret.retryable());
        assert!(wrong_secret.to_string().contains("Unauthorized"));

        let busy = ConnectorError::MaxFailures {
            tunnel,
            max: 3,
            cause: refused(RegistrationError {
                cause: "busy".into(),
                retry_after: Duration::from_secs(1),
                should_retry: true,
            }),
        };
        assert_eq!(busy.side(), Side::Edge);
        assert!(busy.retryable());
    }

    #[test]
    fn flags_and_files_are_not_worth_retrying() {
        assert_eq!(ConnectorError::NoEdge.side(), Side::CommandLine);
        assert!(!ConnectorError::NoEdge.retryable());
        let ca = ConnectorError::ReadCa {
            path: "/nonexistent/ca.pem".into(),
            cause: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(ca.side(), Side::LocalFiles);
        assert!(!ca.retryable());
        let rule = ConnectorError::UnsupportedService {
            rule: 2,
            what: Unsupported::Bastion,
        };
        assert_eq!(rule.side(), Side::OriginConfig);
        assert_eq!(
            rule.to_string(),
            "ingress rule #2: bastion mode is not supported by ringway yet"
        );
    }

    #[test]
    fn an_unreachable_control_plane_is_retryable_a_missing_tunnel_is_not() {
        let down = ConnectorError::Lookup(ContextError::ControlPlane(
            crate::client::ClientError::Unreachable {
                url: "http://127.0.0.1:1".into(),
                cause: "connection refused".into(),
            },
        ));
        assert_eq!(down.side(), Side::ControlPlane);
        assert!(down.retryable());
        let missing = ConnectorError::Lookup(ContextError::NoSuchTunnel("web".into()));
        assert_eq!(missing.side(), Side::ControlPlane);
        assert!(!missing.retryable());
        let no_url = ConnectorError::Lookup(ContextError::NoControlUrl);
        assert_eq!(no_url.side(), Side::LocalFiles);
    }

    #[test]
    fn a_local_socket_failure_is_the_process_side() {
        let e = ConnectorError::GaveUp {
            tunnel: Uuid::nil(),
            cause: ConnectionError::Socket(std::sync::Arc::new(std::io::Error::from(
                std::io::ErrorKind::AddrInUse,
            ))),
        };
        assert_eq!(e.side(), Side::Process);
    }
}
