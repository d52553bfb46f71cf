//! `originRequest`: how the connector talks to an origin.
//!
//! The same block appears at the top level of config.yml (defaults for every
//! rule) and inside each ingress rule (overrides). Every field is optional so
//! that "not written" stays distinguishable from "written as the default":
//! only then can a rule inherit the top-level value field by field, as
//! cloudflared does.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// cloudflared's defaults for fields that neither the rule nor the top level
/// set. They live here, not in the dataplane, so `ingress rule` output and the
/// proxy can never disagree about them.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_TLS_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_KEEP_ALIVE_CONNECTIONS: u32 = 100;
/// What Go's `http.Transport` keeps per host when `MaxIdleConnsPerHost` is 0.
const GO_DEFAULT_IDLE_PER_HOST: u32 = 2;

/// The `originRequest` block, with cloudflared's YAML key names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OriginRequestConfig {
    /// Timeout for establishing a new connection to the origin.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub connect_timeout: Option<Duration>,
    /// Timeout for completing a TLS handshake with the origin.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub tls_timeout: Option<Duration>,
    /// TCP keep-alive period for origin connections.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub tcp_keep_alive: Option<Duration>,
    /// Disables the IPv4/IPv6 "happy eyeballs" fallback.
    pub no_happy_eyeballs: Option<bool>,
    /// Maximum number of idle keep-alive connections kept per origin.
    pub keep_alive_connections: Option<u32>,
    /// How long an idle keep-alive connection is kept.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub keep_alive_timeout: Option<Duration>,
    /// Host header sent to the origin instead of the eyeball's.
    #[serde(rename = "httpHostHeader")]
    pub http_host_header: Option<String>,
    /// Name expected on the origin's certificate (and sent as SNI).
    pub origin_server_name: Option<String>,
    /// Use the request's Host as SNI and expected certificate name.
    #[serde(rename = "matchSNItoHost")]
    pub match_sni_to_host: Option<bool>,
    /// PEM file with the CA(s) that signed the origin's certificate.
    pub ca_pool: Option<PathBuf>,
    /// Accept any origin certificate.
    #[serde(rename = "noTLSVerify")]
    pub no_tls_verify: Option<bool>,
    /// Send request bodies to the origin without chunked framing.
    pub disable_chunked_encoding: Option<bool>,
    /// Run this rule as an SSH/RDP jump host.
    pub bastion_mode: Option<bool>,
    /// Listen address of a proxy the connector starts itself.
    pub proxy_address: Option<String>,
    /// Listen port of that proxy.
    pub proxy_port: Option<u16>,
    /// Kind of that proxy: `"socks"` or empty.
    pub proxy_type: Option<String>,
    /// Allow/deny list for the `socks-proxy` service.
    #[serde(rename = "ipRules")]
    pub ip_rules: Option<Vec<IpRule>>,
    /// Speak HTTP/2 to the origin.
    #[serde(rename = "http2Origin")]
    pub http2_origin: Option<bool>,
    /// Cloudflare Access JWT enforcement.
    pub access: Option<AccessConfig>,
}

/// One entry of `ipRules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRule {
    /// CIDR such as `"10.0.0.0/8"`.
    pub prefix: Option<String>,
    /// Ports the rule applies to; empty means every port.
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub allow: bool,
}

/// The `access` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessConfig {
    /// Reject every request without a valid Access JWT.
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub team_name: String,
    #[serde(default)]
    pub aud_tag: Vec<String>,
    #[serde(default)]
    pub environment: String,
}

/// A parsed `prefix` of an [`IpRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The network address, host bits cleared.
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(v: u32, len: u8) -> u32 {
    v & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(v: u128, len: u8) -> u128 {
    v & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Why an `ipRules` entry is invalid, in cloudflared's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRuleError {
    #[error("no prefix provided")]
    NoPrefix,
    #[error("unable to parse cidr: {0}")]
    BadCidr(String),
    #[error("invalid port 0, needs to be between 1 and 65535")]
    PortZero,
}

/// Why an `access` block is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("access.TeamName cannot be blank when access.audTags are present")]
    TagsWithoutTeam,
}

impl IpRule {
    /// Parses `prefix` the way Go's `net.ParseCIDR` does, with cloudflared's
    /// error wording.
    pub fn network(&self) -> Result<IpNet, IpRuleError> {
        let prefix = match self.prefix.as_deref() {
            None | Some("") => return Err(IpRuleError::NoPrefix),
            Some(p) => p,
        };
        let bad = || IpRuleError::BadCidr(prefix.to_owned());
        let (addr, len) = prefix.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        // Go rejects signs and leading '+' in the length; `u8::from_str`
        // would accept a '+', so check digits first.
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = len.parse().map_err(|_| bad())?;
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => IpAddr::V4(mask_v4(u32::from(a), len).into()),
            IpAddr::V6(a) if len <= 128 => IpAddr::V6(mask_v6(u128::from(a), len).into()),
            _ => return Err(bad()),
        };
        Ok(IpNet {
            addr,
            prefix_len: len,
        })
    }

    /// Checks the rule the way cloudflared's `ipaccess` package does.
    pub fn validate(&self) -> Result<IpNet, IpRuleError> {
        let net = self.network()?;
        if self.ports.contains(&0) {
            return Err(IpRuleError::PortZero);
        }
        Ok(net)
    }
}

impl AccessConfig {
    /// cloudflared lets `required: true` stand alone (a first setup step),
    /// but audience tags without a team cannot be checked, so that is refused.
    pub fn validate(&self) -> Result<(), AccessError> {
        if self.required && self.team_name.is_empty() && !self.aud_tag.is_empty() {
            return Err(AccessError::TagsWithoutTeam);
        }
        Ok(())
    }
}

impl OriginRequestConfig {
    /// `self` (a rule's block) laid over `parent` (the top-level block): each
    /// field set here wins, each field left out is inherited.
    ///
    /// `ipRules` and `access` are replaced whole, never combined, and an empty
    /// `ipRules` list counts as unset: cloudflared behaves the same way, so a
    /// rule cannot clear the inherited list by writing `ipRules: []`.
    pub fn merged(&self, parent: &OriginRequestConfig) -> OriginRequestConfig {
        fn pick<T: Clone>(child: &Option<T>, parent: &Option<T>) -> Option<T> {
            child.as_ref().or(parent.as_ref()).cloned()
        }
        OriginRequestConfig {
            connect_timeout: self.connect_timeout.or(parent.connect_timeout),
            tls_timeout: self.tls_timeout.or(parent.tls_timeout),
            tcp_keep_alive: self.tcp_keep_alive.or(parent.tcp_keep_alive),
            no_happy_eyeballs: self.no_happy_eyeballs.or(parent.no_happy_eyeballs),
            keep_alive_connections: self
                .keep_alive_connections
                .or(parent.keep_alive_connections),
            keep_alive_timeout: self.keep_alive_timeout.or(parent.keep_alive_timeout),
            http_host_header: pick(&self.http_host_header, &parent.http_host_header),
            origin_server_name: pick(&self.origin_server_name, &parent.origin_server_name),
            match_sni_to_host: self.match_sni_to_host.or(parent.match_sni_to_host),
            ca_pool: pick(&self.ca_pool, &parent.ca_pool),
            no_tls_verify: self.no_tls_verify.or(parent.no_tls_verify),
            disable_chunked_encoding: self
                .disable_chunked_encoding
                .or(parent.disable_chunked_encoding),
            bastion_mode: self.bastion_mode.or(parent.bastion_mode),
            proxy_address: pick(&self.proxy_address, &parent.proxy_address),
            proxy_port: self.proxy_port.or(parent.proxy_port),
            proxy_type: pick(&self.proxy_type, &parent.proxy_type),
            ip_rules: match &self.ip_rules {
                Some(rules) if !rules.is_empty() => Some(rules.clone()),
                _ => parent.ip_rules.clone(),
            },
            http2_origin: self.http2_origin.or(parent.http2_origin),
            access: pick(&self.access, &parent.access),
        }
    }

    pub fn effective_connect_timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    pub fn effective_tls_timeout(&self) -> Duration {
        self.tls_timeout.unwrap_or(DEFAULT_TLS_TIMEOUT)
    }

    pub fn effective_keep_alive_timeout(&self) -> Duration {
        self.keep_alive_timeout
            .unwrap_or(DEFAULT_KEEP_ALIVE_TIMEOUT)
    }

    /// Idle origin connections kept per origin. `0` is what Go's transport makes of it in
    /// cloudflared (`MaxIdleConnsPerHost` 0 means its default, 2), not "no keep-alive".
    pub fn effective_keep_alive_connections(&self) -> u32 {
        match self.keep_alive_connections {
            None => DEFAULT_KEEP_ALIVE_CONNECTIONS,
            Some(0) => GO_DEFAULT_IDLE_PER_HOST,
            Some(n) => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> OriginRequestConfig {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_cloudflared_key_is_read() {
        let o = parse(
            r#"
connectTimeout: 10s
tlsTimeout: 5
tcpKeepAlive: 1m
noHappyEyeballs: true
keepAliveConnections: 7
keepAliveTimeout: 2m30s
httpHostHeader: internal.example
originServerName: origin.example
matchSNItoHost: true
caPool: /etc/ca.pem
noTLSVerify: true
disableChunkedEncoding: true
bastionMode: false
proxyAddress: 0.0.0.0
proxyPort: 1080
proxyType: socks
ipRules:
  - prefix: 10.0.0.0/8
    ports: [80, 443]
    allow: true
http2Origin: true
access:
  required: true
  teamName: team
  audTag: [aud1]
  environment: fed
"#,
        );
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(10)));
        assert_eq!(o.tls_timeout, Some(Duration::from_secs(5)));
        assert_eq!(o.tcp_keep_alive, Some(Duration::from_secs(60)));
        assert_eq!(o.no_happy_eyeballs, Some(true));
        assert_eq!(o.keep_alive_connections, Some(7));
        assert_eq!(o.keep_alive_timeout, Some(Duration::from_secs(150)));
        assert_eq!(o.http_host_header.as_deref(), Some("internal.example"));
        assert_eq!(o.origin_server_name.as_deref(), Some("origin.example"));
        assert_eq!(o.match_sni_to_host, Some(true));
        assert_eq!(o.ca_pool, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(o.no_tls_verify, Some(true));
        assert_eq!(o.disable_chunked_encoding, Some(true));
        assert_eq!(o.bastion_mode, Some(false));
        assert_eq!(o.proxy_address.as_deref(), Some("0.0.0.0"));
        assert_eq!(o.proxy_port, Some(1080));
        assert_eq!(o.proxy_type.as_deref(), Some("socks"));
        assert_eq!(
            o.ip_rules,
            Some(vec![IpRule {
                prefix: Some("10.0.0.0/8".into()),
                ports: vec![80, 443],
                allow: true
            }])
        );
        assert_eq!(o.http2_origin, Some(true));
        assert_eq!(
            o.access,
            Some(AccessConfig {
                required: true,
                team_name: "team".into(),
                aud_tag: vec!["aud1".into()],
                environment: "fed".into()
            })
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = serde_yaml::from_str::<OriginRequestConfig>("connectTimout: 3s")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("unknown field `connectTimout`"), "{e}");
        // Go's field names are case sensitive in YAML too.
        assert!(serde_yaml::from_str::<OriginRequestConfig>("noTlsVerify: true").is_err());
        assert!(serde_yaml::from_str::<OriginRequestConfig>("access: {teamname: x}").is_err());
        assert!(serde_yaml::from_str::<OriginRequestConfig>("ipRules: [{cidr: x}]").is_err());
    }

    #[test]
    fn merge_is_field_by_field() {
        let parent = parse(
            "connectTimeout: 5s\nnoTLSVerify: true\nhttpHostHeader: parent\nipRules: [{prefix: 10.0.0.0/8}]\naccess: {required: true, teamName: a}",
        );
        let child = parse("connectTimeout: 1s\nhttpHostHeader: child\nipRules: []");
        let m = child.merged(&parent);
        assert_eq!(m.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(m.no_tls_verify, Some(true));
        assert_eq!(m.http_host_header.as_deref(), Some("child"));
        // An empty list does not clear the inherited one.
        assert_eq!(m.ip_rules, parent.ip_rules);
        assert_eq!(m.access, parent.access);
        assert_eq!(m.tls_timeout, None);

        // A child's false beats a parent's true: only absence inherits.
        let child = parse("noTLSVerify: false\naccess: {required: false}");
        let m = child.merged(&parent);
        assert_eq!(m.no_tls_verify, Some(false));
        assert_eq!(m.access.map(|a| a.required), Some(false));

        assert_eq!(OriginRequestConfig::default().merged(&parent), parent);
        assert_eq!(parent.merged(&OriginRequestConfig::default()), parent);
    }

    #[test]
    fn defaults_apply_only_when_unset() {
        let o = OriginRequestConfig::default();
        assert_eq!(o.effective_connect_timeout(), Duration::from_secs(30));
        assert_eq!(o.effective_tls_timeout(), Duration::from_secs(10));
        assert_eq!(o.effective_keep_alive_timeout(), Duration::from_secs(90));
        assert_eq!(o.effective_keep_alive_connections(), 100);
        let o = parse("connectTimeout: 0s\nkeepAliveConnections: 0");
        assert_eq!(o.effective_connect_timeout(), Duration::ZERO);
        assert_eq!(
            o.effective_keep_alive_connections(),
            2,
            "Go's default for 0"
        );
    }

    #[test]
    fn ip_rules_parse_like_go() {
        let rule = |p: &str| IpRule {
            prefix: Some(p.into()),
            ports: vec![],
            allow: true,
        };
        let net = rule("1.1.1.7/24").validate().unwrap();
        assert_eq!(net.addr, "1.1.1.0".parse::<IpAddr>().unwrap());
        assert_eq!(net.prefix_len, 24);
        assert!(net.contains("1.1.1.200".parse().unwrap()));
        assert!(!net.contains("1.1.2.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all = rule("0.0.0.0/0").validate().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = rule("2001:db8::/32").validate().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));

        assert_eq!(
            rule("1.1.1.1").network().unwrap_err().to_string(),
            "unable to parse cidr: 1.1.1.1"
        );
        assert_eq!(
            rule("1.1.1.1/33").network().unwrap_err().to_string(),
            "unable to parse cidr: 1.1.1.1/33"
        );
        assert_eq!(
            rule("1.1.1.1/+8").network().unwrap_err().to_string(),
            "unable to parse cidr: 1.1.1.1/+8"
        );
        assert_eq!(
            rule("x/8").network().unwrap_err().to_string(),
            "unable to parse cidr: x/8"
        );
        assert_eq!(
            IpRule::default().network().unwrap_err().to_string(),
            "no prefix provided"
        );
        let with_zero_port = IpRule {
            ports: vec![0, 80],
            ..rule("10.0.0.0/8")
        };
        assert_eq!(
            with_zero_port.validate().unwrap_err().to_string(),
            "invalid port 0, needs to be between 1 and 65535"
        );
    }

    #[test]
    fn access_needs_team_when_tags_given() {
        let mut a = AccessConfig {
            required: true,
            ..Default::default()
        };
        assert!(a.validate().is_ok());
        a.aud_tag = vec!["x".into()];
        assert_eq!(
            a.validate().unwrap_err().to_string(),
            "access.TeamName cannot be blank when access.audTags are present"
        );
        a.team_name = "t".into();
        assert!(a.validate().is_ok());
        a.team_name.clear();
        a.required = false;
        assert!(a.validate().is_ok());
    }
}
