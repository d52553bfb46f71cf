//! What to send where: the URLs (one scheme, host and port), the resolved address, and each
//! URL's complete HTTP/1.1 request, serialised once at start so that sending a request costs
//! a reference-count increment, not a format.

use std::net::{SocketAddr, ToSocketAddrs};

use bytes::Bytes;
use dataplane::http::is_token;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Why the target could not be set up. Each names what the user wrote.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("URLs must share scheme, host and port: {first:?} and {other:?} differ")]
    Mixed { first: String, other: String },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("bad header {0:?}: expected 'Name: value' with a token name and no CR/LF")]
    BadHeader(String),
    #[error("bad method {0:?}: expected an HTTP token such as GET or POST")]
    BadMethod(String),
}

/// The request every lane sends, in the shapes the two protocols need.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    /// Host as written in the URL (used for SNI and the default `Host`).
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
    pub method: String,
    /// `Host` value (a user `-H Host:` wins).
    pub authority: String,
    /// Path and query of each URL, in round-robin order.
    pub paths: Vec<String>,
    /// User headers other than `Host`, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Whether each HTTP/1.1 request asks the server to close (a new connection per request).
    pub close: bool,
    /// Complete HTTP/1.1 request (head and body) per URL.
    pub h1_requests: Vec<Bytes>,
}

/// The parsed URL pieces shared by every URL.
struct Parsed {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(raw: &str) -> Result<Parsed, TargetError> {
    let bad = |reason: &str| TargetError::BadUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(bad(&format!("scheme {other:?} is not http or https"))),
    };
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    // `url` keeps the brackets of an IPv6 literal; the resolver and SNI want it bare. Only
    // the brackets go: `host_str` has no port, and a final dot the user wrote is sent as is.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "credentials in URLs are not supported; use -H Authorization",
        ));
    }
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(Parsed {
        scheme,
        host,
        port,
        path,
    })
}

/// Splits `Name: value`, rejecting what would corrupt the request on the wire.
pub fn parse_header(raw: &str) -> Result<(String, String), TargetError> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| TargetError::BadHeader(raw.to_owned()))?;
    let name = name.trim();
    let value = value.trim();
    if !is_token(name.as_bytes()) || value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(TargetError::BadHeader(raw.to_owned()));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// What the command line says about the request.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub urls: Vec<String>,
    pub method: String,
    pub headers: Vec<String>,
    pub body: Bytes,
    pub close: bool,
}

impl Target {
    /// Parses, resolves (once: a load test must not measure DNS) and serialises.
    pub fn new(spec: &RequestSpec) -> Result<Self, TargetError> {
        let first = spec.urls.first().ok_or_else(|| TargetError::BadUrl {
            url: String::new(),
            reason: "no URL given".to_owned(),
        })?;
        let head = parse_url(first)?;
        let mut paths = Vec::with_capacity(spec.urls.len());
        for raw in &spec.urls {
            let p = parse_url(raw)?;
            if p.scheme != head.scheme || p.host != head.host || p.port != head.port {
                return Err(TargetError::Mixed {
                    first: first.clone(),
                    other: raw.clone(),
                });
            }
            paths.push(p.path);
        }
        if !is_token(spec.method.as_bytes()) {
            return Err(TargetError::BadMethod(spec.method.clone()));
        }
        let addr = (head.host.as_str(), head.port)
            .to_socket_addrs()
            .map_err(|e| TargetError::Resolve {
                host: head.host.clone(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| TargetError::Resolve {
                host: head.host.clone(),
                reason: "no address".to_owned(),
            })?;

        let default_port = match head.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let host_literal = if head.host.contains(':') {
            format!("[{}]", head.host)
        } else {
            head.host.clone()
        };
        let mut authority = if head.port == default_port {
            host_literal
        } else {
            format!("{host_literal}:{}", head.port)
        };
        let mut headers = Vec::new();
        for raw in &spec.headers {
            let (name, value) = parse_header(raw)?;
            if name.eq_ignore_ascii_case("host") {
                authority = value;
            } else {
                headers.push((name, value));
            }
        }

        let mut target = Target {
            scheme: head.scheme,
            host: head.host,
            port: head.port,
            addr,
            method: spec.method.clone(),
            authority,
            paths,
            headers,
            body: spec.body.clone(),
            close: spec.close,
            h1_requests: Vec::new(),
        };
        target.h1_requests = target
            .paths
            .iter()
            .map(|p| target.serialise_h1(p))
            .collect();
        Ok(target)
    }

    fn serialise_h1(&self, path: &str) -> Bytes {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method, path, self.authority
        );
        let user_length = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if !user_length
            && (!self.body.is_empty() || !matches!(self.method.as_str(), "GET" | "HEAD"))
        {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = Vec::with_capacity(head.len() + self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }

    /// Whether responses to this method carry no body whatever their headers say.
    pub fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(urls: &[&str], headers: &[&str]) -> RequestSpec {
        RequestSpec {
            urls: urls.iter().map(|s| s.to_string()).collect(),
            method: "GET".into(),
            headers: headers.iter().map(|s| s.to_string()).collect(),
            body: Bytes::new(),
            close: false,
        }
    }

    #[test]
    fn builds_requests_with_host_override_and_round_robin_paths() {
        let t = Target::new(&spec(
            &["http://127.0.0.1:8080/a?x=1", "http://127.0.0.1:8080/b"],
            &["Host: app.example", "X-Test: 1"],
        ))
        .unwrap();
        assert_eq!(
            t.h1_requests[0],
            Bytes::from_static(b"GET /a?x=1 HTTP/1.1\r\nHost: app.example\r\nX-Test: 1\r\n\r\n")
        );
        assert!(t.h1_requests[1].starts_with(b"GET /b HTTP/1.1\r\n"));
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn post_gets_a_content_length_and_close_is_asked_for() {
        let mut s = spec(&["http://127.0.0.1/up"], &[]);
        s.method = "POST".into();
        s.body = Bytes::from_static(b"abc");
        s.close = true;
        let t = Target::new(&s).unwrap();
        assert_eq!(
            t.h1_requests[0],
            Bytes::from_static(
                b"POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            )
        );
    }

    #[test]
    fn rejects_bad_input_with_the_input_named() {
        let e = Target::new(&spec(&["ftp://x/"], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ftp://x/") && e.contains("scheme"), "{e}");
        let e = Target::new(&spec(&["not a url"], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a url"), "{e}");
        let e = Target::new(&spec(&["http://127.0.0.1:1/", "http://127.0.0.1:2/"], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("share"), "{e}");
        let e = Target::new(&spec(&["http://127.0.0.1/"], &["Bad Header"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Bad Header"), "{e}");
        let e = Target::new(&spec(&["http://127.0.0.1/"], &["X: a\r\nInjected: 1"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad header"), "{e}");
        let e = Target::new(&spec(&["http://no-such-host.invalid/"], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot resolve no-such-host.invalid"), "{e}");
    }
}
