//! The `service` of an ingress rule: where matching traffic goes.

use std::fmt;
use std::path::PathBuf;

use url::{Position, Url};

/// An origin, as written in a rule's `service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// `http://`, `https://`, `ws://` or `wss://` with a host and optional
    /// port. The eyeball's path is appended, which is why the URL itself may
    /// carry none.
    Http(Url),
    /// `unix:PATH` (plain HTTP) or `unix+tls:PATH` (HTTPS) over a Unix socket.
    Unix { path: PathBuf, tls: bool },
    /// `http_status:NNN`: answer every request with this status.
    HttpStatus(u16),
    /// `hello_world` (or `hello-world`): the built-in test server.
    HelloWorld,
    /// A stream service: any other scheme with a host, e.g. `tcp://`,
    /// `ssh://`, `rdp://`, `smb://`. The edge carries the bytes over a
    /// WebSocket and the connector dials the URL's host and port. cloudflared
    /// fills in the well-known port for ssh (22), rdp (3389), smb (445) and
    /// tcp (7864) when none is given; so do we, so the URL always has a port
    /// for those schemes.
    Tcp(Url),
    /// `bastion` (or any rule with `bastionMode: true`): a jump host whose
    /// destination the client chooses per connection.
    Bastion,
    /// `socks-proxy`: a SOCKS5 proxy filtered by `originRequest.ipRules`.
    SocksProxy,
}

/// Why a `service` string was rejected. Each message names the string, and
/// the URL messages keep cloudflared's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("the rule has no service (e.g. `service: http://localhost:8000`)")]
    Missing,
    #[error("invalid HTTP status code: {service:?} is not a number")]
    StatusNotANumber { service: String },
    #[error("invalid HTTP status code: {code} (in {service:?}; must be 100-999)")]
    StatusOutOfRange { service: String, code: i64 },
    #[error("{0} is an invalid address, the socket path is empty")]
    EmptySocketPath(String),
    #[error("{0} is an invalid address, please make sure it has a scheme and a hostname")]
    MissingSchemeOrHost(String),
    #[error(
        "{0} is an invalid address, ingress rules don't support proxying to a different path on the origin service. The path will be the same as the eyeball request's path"
    )]
    HasPath(String),
    #[error("{service} is an invalid address: {reason}")]
    InvalidUrl { service: String, reason: String },
}

const UNIX_PREFIX: &str = "unix:";
const UNIX_TLS_PREFIX: &str = "unix+tls:";
const HTTP_STATUS_PREFIX: &str = "http_status:";

impl Service {
    /// Parses a `service` string.
    pub fn parse(s: &str) -> Result<Service, ServiceError> {
        Self::parse_for_rule(s, false)
    }

    /// Parses a rule's service given its merged `bastionMode`. The order of
    /// the checks is cloudflared's: the keyword forms win over bastion mode,
    /// and bastion mode wins over a URL, which is then never validated (a
    /// bastion rule may omit `service` altogether).
    pub(super) fn parse_for_rule(s: &str, bastion_mode: bool) -> Result<Service, ServiceError> {
        if let Some(path) = s.strip_prefix(UNIX_PREFIX) {
            return unix(s, path, false);
        }
        if let Some(path) = s.strip_prefix(UNIX_TLS_PREFIX) {
            return unix(s, path, true);
        }
        if let Some(code) = s.strip_prefix(HTTP_STATUS_PREFIX) {
            return http_status(s, code);
        }
        match s {
            "hello_world" | "hello-world" => return Ok(Service::HelloWorld),
            "socks-proxy" => return Ok(Service::SocksProxy),
            "bastion" => return Ok(Service::Bastion),
            _ if bastion_mode => return Ok(Service::Bastion),
            "" => return Err(ServiceError::Missing),
            _ => {}
        }
        url_service(s)
    }
}

fn unix(service: &str, path: &str, tls: bool) -> Result<Service, ServiceError> {
    // cloudflared takes any path, but an empty one can only fail when the
    // first request arrives; refusing it here reports the mistake up front.
    if path.is_empty() {
        return Err(ServiceError::EmptySocketPath(service.to_owned()));
    }
    Ok(Service::Unix {
        path: PathBuf::from(path),
        tls,
    })
}

fn http_status(service: &str, code: &str) -> Result<Service, ServiceError> {
    let n: i64 = code.parse().map_err(|_| ServiceError::StatusNotANumber {
        service: service.to_owned(),
    })?;
    // cloudflared's bound: any three-digit code, not only the registered ones.
    match u16::try_from(n) {
        Ok(c @ 100..=999) => Ok(Service::HttpStatus(c)),
        _ => Err(ServiceError::StatusOutOfRange {
            service: service.to_owned(),
            code: n,
        }),
    }
}

fn url_service(s: &str) -> Result<Service, ServiceError> {
    let mut url = match Url::parse(s) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase | url::ParseError::EmptyHost) => {
            return Err(ServiceError::MissingSchemeOrHost(s.to_owned()));
        }
        Err(e) => {
            return Err(ServiceError::InvalidUrl {
                service: s.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ServiceError::MissingSchemeOrHost(s.to_owned()));
    }
    // The url crate writes "/" for an empty http path, so "/" has to be
    // allowed; anything longer would silently change every request's path.
    if !matches!(url.path(), "" | "/") {
        return Err(ServiceError::HasPath(s.to_owned()));
    }
    match url.scheme() {
        "http" | "https" | "ws" | "wss" => Ok(Service::Http(url)),
        scheme => {
            let default_port = match scheme {
                "ssh" => Some(22),
                "rdp" => Some(3389),
                "smb" => Some(445),
                // cloudflared's arbitrary choice; kept so configs that relied
                // on it dial the same port.
                "tcp" => Some(7864),
                _ => None,
            };
            if let (None, Some(port)) = (url.port(), default_port) {
                // Cannot fail: the URL has a host and is not a file: URL.
                let _ = url.set_port(Some(port));
            }
            Ok(Service::Tcp(url))
        }
    }
}

/// The service as cloudflared prints it (`ingress rule`, logs): the
/// canonical form of the string it was parsed from.
impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Http(url) if url.path() == "/" => {
                // Print "https://host:port", not the url crate's trailing
                // slash, to match what the user wrote and cloudflared prints.
                f.write_str(&url[..Position::BeforePath])?;
                f.write_str(&url[Position::AfterPath..])
            }
            Service::Http(url) => f.write_str(url.as_str()),
            Service::Unix { path, tls } => {
                let prefix = if *tls { UNIX_TLS_PREFIX } else { UNIX_PREFIX };
                write!(f, "{prefix}{}", path.display())
            }
            Service::HttpStatus(code) => write!(f, "{HTTP_STATUS_PREFIX}{code}"),
            Service::HelloWorld => f.write_str("hello_world"),
            Service::Tcp(url) => {
                // cloudflared prints only scheme and host:port for streams.
                write!(f, "{}://{}", url.scheme(), url.host_str().unwrap_or(""))?;
                match url.port() {
                    Some(p) => write!(f, ":{p}"),
                    None => Ok(()),
                }
            }
            Service::Bastion => f.write_str("bastion"),
            Service::SocksProxy => f.write_str("socks-proxy"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Service {
        Service::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn http_services() {
        let Service::Http(u) = ok("https://localhost:8000") else {
            panic!()
        };
        assert_eq!(
            (u.scheme(), u.host_str(), u.port()),
            ("https", Some("localhost"), Some(8000))
        );
        assert_eq!(
            ok("https://localhost:8000").to_string(),
            "https://localhost:8000"
        );
        assert_eq!(ok("http://127.0.0.1").to_string(), "http://127.0.0.1");
        assert_eq!(
            ok("http://localhost:8000/").to_string(),
            "http://localhost:8000"
        );
        assert_eq!(ok("http://[::1]:8080").to_string(), "http://[::1]:8080");
        assert_eq!(
            ok("wss://localhost:8000").to_string(),
            "wss://localhost:8000"
        );
        assert!(matches!(ok("ws://localhost"), Service::Http(_)));
        assert!(
            matches!(ok("HTTP://LOCALHOST:1"), Service::Http(u) if u.host_str() == Some("localhost"))
        );
    }

    #[test]
    fn unix_services() {
        assert_eq!(
            ok("unix:/run/app.sock"),
            Service::Unix {
                path: "/run/app.sock".into(),
                tls: false
            }
        );
        assert_eq!(
            ok("unix+tls:/run/app.sock"),
            Service::Unix {
                path: "/run/app.sock".into(),
                tls: true
            }
        );
        assert_eq!(ok("unix:/run/app.sock").to_string(), "unix:/run/app.sock");
        assert_eq!(ok("unix+tls:rel.sock").to_string(), "unix+tls:rel.sock");
        assert_eq!(
            Service::parse("unix:"),
            Err(ServiceError::EmptySocketPath("unix:".into()))
        );
        assert_eq!(
            Service::parse("unix+tls:").unwrap_err().to_string(),
            "unix+tls: is an invalid address, the socket path is empty"
        );
    }

    #[test]
    fn http_status_services() {
        assert_eq!(ok("http_status:404"), Service::HttpStatus(404));
        assert_eq!(ok("http_status:100"), Service::HttpStatus(100));
        assert_eq!(ok("http_status:999"), Service::HttpStatus(999));
        assert_eq!(ok("http_status:404").to_string(), "http_status:404");
        assert_eq!(
            Service::parse("http_status:asdf").unwrap_err().to_string(),
            "invalid HTTP status code: \"http_status:asdf\" is not a number"
        );
        assert_eq!(
            Service::parse("http_status:8080").unwrap_err().to_string(),
            "invalid HTTP status code: 8080 (in \"http_status:8080\"; must be 100-999)"
        );
        assert!(matches!(
            Service::parse("http_status:99"),
            Err(ServiceError::StatusOutOfRange { code: 99, .. })
        ));
        assert!(matches!(
            Service::parse("http_status:-404"),
            Err(ServiceError::StatusOutOfRange { code: -404, .. })
        ));
        assert!(matches!(
            Service::parse("http_status:"),
            Err(ServiceError::StatusNotANumber { .. })
        ));
    }

    #[test]
    fn keyword_services() {
        assert_eq!(ok("hello_world"), Service::HelloWorld);
        assert_eq!(ok("hello-world"), Service::HelloWorld);
        assert_eq!(ok("hello-world").to_string(), "hello_world");
        assert_eq!(ok("bastion"), Service::Bastion);
        assert_eq!(ok("bastion").to_string(), "bastion");
        assert_eq!(ok("socks-proxy"), Service::SocksProxy);
        assert_eq!(ok("socks-proxy").to_string(), "socks-proxy");
    }

    #[test]
    fn stream_services_get_default_ports() {
        assert_eq!(ok("ssh://127.0.0.1").to_string(), "ssh://127.0.0.1:22");
        assert_eq!(ok("rdp://127.0.0.1").to_string(), "rdp://127.0.0.1:3389");
        assert_eq!(ok("smb://127.0.0.1").to_string(), "smb://127.0.0.1:445");
        assert_eq!(ok("tcp://127.0.0.1").to_string(), "tcp://127.0.0.1:7864");
        assert_eq!(
            ok("tcp://localhost:8000").to_string(),
            "tcp://localhost:8000"
        );
        assert_eq!(ok("ssh://[::1]:2222").to_string(), "ssh://[::1]:2222");
        // Other schemes are streams too, with no default port.
        assert_eq!(ok("ftp://127.0.0.1").to_string(), "ftp://127.0.0.1");
        let Service::Tcp(u) = ok("ssh://host.internal") else {
            panic!()
        };
        assert_eq!((u.host_str(), u.port()), (Some("host.internal"), Some(22)));
    }

    #[test]
    fn bastion_mode_takes_over_urls_but_not_keywords() {
        assert_eq!(Service::parse_for_rule("", true), Ok(Service::Bastion));
        assert_eq!(
            Service::parse_for_rule("http://localhost", true),
            Ok(Service::Bastion)
        );
        assert_eq!(
            Service::parse_for_rule("not a url", true),
            Ok(Service::Bastion)
        );
        assert_eq!(
            Service::parse_for_rule("http_status:404", true),
            Ok(Service::HttpStatus(404))
        );
        assert!(Service::parse_for_rule("http_status:1", true).is_err());
        assert_eq!(
            Service::parse_for_rule("hello_world", true),
            Ok(Service::HelloWorld)
        );
    }

    #[test]
    fn bad_services_name_the_string() {
        assert_eq!(Service::parse(""), Err(ServiceError::Missing));
        for s in [
            "localhost:8000",
            "127.0.0.1:8080",
            "http://",
            "http://:8080",
            "/var/run/x",
            "mailto:a@b",
        ] {
            let err = Service::parse(s).unwrap_err();
            assert_eq!(err, ServiceError::MissingSchemeOrHost(s.into()), "{s}");
            assert_eq!(
                err.to_string(),
                format!(
                    "{s} is an invalid address, please make sure it has a scheme and a hostname"
                )
            );
        }
        for s in [
            "https://localhost:8000/static/",
            "http://localhost/api",
            "tcp://localhost:22/x",
        ] {
            let err = Service::parse(s).unwrap_err();
            assert_eq!(err, ServiceError::HasPath(s.into()));
            assert!(err.to_string().starts_with(&format!("{s} is an invalid address, ingress rules don't support proxying to a different path")));
        }
        let err = Service::parse("https://local host:8000").unwrap_err();
        assert!(
            matches!(&err, ServiceError::InvalidUrl { service, .. } if service == "https://local host:8000"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("https://local host:8000 is an invalid address: ")
        );
        assert!(Service::parse("http://localhost:99999").is_err());
    }
}
