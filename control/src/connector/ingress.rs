//! config.yml ingress rules as the data path's [`IngressRouter`]: each rule becomes one
//! [`OriginTarget`] (service + merged `originRequest` options), built and checked once when the
//! configuration loads, and matching stays in `config::Ingress` (one implementation of
//! cloudflared's rule semantics for `ingress rule`, validation and live traffic).

use std::sync::Arc;

use dataplane::connector::IngressRouter;
use dataplane::connector::origin::{OriginOptions, OriginService, OriginTarget};

use super::ConnectorError;
use super::error::Unsupported;
use crate::config::{Ingress, OriginRequestConfig, Service};

/// Compiled rules: `targets[i]` serves `ingress.rules[i]`.
#[derive(Debug)]
pub struct CompiledIngress {
    ingress: Ingress,
    targets: Vec<Arc<OriginTarget>>,
}

impl CompiledIngress {
    pub fn new(ingress: Ingress) -> Result<Self, ConnectorError> {
        let mut targets = Vec::with_capacity(ingress.rules.len());
        for (i, rule) in ingress.rules.iter().enumerate() {
            let target = OriginTarget {
                service: service(&rule.service)
                    .map_err(|what| ConnectorError::UnsupportedService { rule: i + 1, what })?,
                options: options(&rule.origin_request),
            };
            target
                .validate()
                .map_err(|cause| ConnectorError::Origin { rule: i + 1, cause })?;
            targets.push(Arc::new(target));
        }
        Ok(Self { ingress, targets })
    }

    pub fn rules(&self) -> usize {
        self.targets.len()
    }
}

impl IngressRouter for CompiledIngress {
    fn route(&self, host: &str, path: &str) -> Arc<OriginTarget> {
        let (i, _) = self.ingress.find(host, path);
        self.targets[i].clone()
    }
}

/// The rules in force, replaceable while requests are running (SIGHUP). Reads are lock-free
/// (`arc-swap`), so workers never contend on it.
#[derive(Debug)]
pub struct SwappableIngress(arc_swap::ArcSwap<CompiledIngress>);

impl SwappableIngress {
    pub fn new(c: CompiledIngress) -> Self {
        Self(arc_swap::ArcSwap::from_pointee(c))
    }

    /// New requests use `c` from now on; requests in flight keep their target.
    pub fn store(&self, c: CompiledIngress) {
        self.0.store(Arc::new(c));
    }
}

impl IngressRouter for SwappableIngress {
    fn route(&self, host: &str, path: &str) -> Arc<OriginTarget> {
        self.0.load().route(host, path)
    }
}

/// The data path's service for a rule; `Err` names what ringway does not serve.
fn service(s: &Service) -> Result<OriginService, Unsupported> {
    Ok(match s {
        Service::Http(url) => {
            let https = matches!(url.scheme(), "https" | "wss");
            let host = url
                .host_str()
                .map(|h| dataplane::http::host_without_port(h).to_owned())
                .unwrap_or_default();
            let port = url
                .port_or_known_default()
                .unwrap_or(if https { 443 } else { 80 });
            OriginService::Http { https, host, port }
        }
        Service::Unix { path, tls } => OriginService::Unix {
            path: path.clone(),
            tls: *tls,
        },
        Service::HttpStatus(code) => OriginService::HttpStatus(*code),
        Service::HelloWorld => OriginService::HelloWorld,
        Service::Tcp(url) => return Err(Unsupported::Tcp(url.to_string())),
        Service::Bastion => return Err(Unsupported::Bastion),
        Service::SocksProxy => return Err(Unsupported::SocksProxy),
    })
}

fn options(o: &OriginRequestConfig) -> OriginOptions {
    OriginOptions {
        connect_timeout: o.effective_connect_timeout(),
        tls_timeout: o.effective_tls_timeout(),
        keep_alive_connections: o.effective_keep_alive_connections(),
        keep_alive_timeout: o.effective_keep_alive_timeout(),
        http_host_header: o.http_host_header.clone(),
        origin_server_name: o.origin_server_name.clone(),
        ca_pool: o.ca_pool.clone(),
        no_tls_verify: o.no_tls_verify.unwrap_or(false),
        disable_chunked_encoding: o.disable_chunked_encoding.unwrap_or(false),
        match_sni_to_host: o.match_sni_to_host.unwrap_or(false),
        http2_origin: o.http2_origin.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;

    #[test]
    fn connector_ingress_routes_by_host_and_path() {
        let cfg = ConfigFile::parse(
            "ingress:\n  - hostname: a.example.com\n    service: http://127.0.0.1:8001\n  - hostname: b.example.com\n    path: ^/api/\n    service: https://127.0.0.1:8443\n    originRequest:\n      noTLSVerify: true\n      httpHostHeader: internal\n  - service: http_status:404\n",
            std::path::Path::new("config.yml"),
        )
        .unwrap();
        let c = CompiledIngress::new(Ingress::from_config(&cfg).unwrap()).unwrap();
        assert_eq!(c.rules(), 3);
        let a = c.route("a.example.com", "/");
        assert_eq!(
            a.service,
            OriginService::Http {
                https: false,
                host: "127.0.0.1".into(),
                port: 8001
            }
        );
        let b = c.route("b.example.com", "/api/x");
        assert!(b.options.no_tls_verify);
        assert_eq!(b.options.http_host_header.as_deref(), Some("internal"));
        assert_eq!(
            c.route("b.example.com", "/other").service,
            OriginService::HttpStatus(404)
        );
        assert_eq!(c.route("zzz", "/").service, OriginService::HttpStatus(404));
    }
}
