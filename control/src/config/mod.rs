//! cloudflared's `config.yml`: loading, validation and ingress matching.
//!
//! A config written for cloudflared must work unchanged, so the key names,
//! defaults, rule semantics and user-facing messages follow cloudflared's.
//! Where this module is stricter (unknown keys inside a rule are errors, not
//! warnings; all validation errors are reported at once), it is so that a
//! mistake is caught before a tunnel starts rather than on first request.
//!
//! Submodules:
//! - [`duration`]: Go-style duration strings (`"1m30s"`) and integer seconds.
//! - [`origin_request`]: the `originRequest` block, its defaults and how a
//!   rule's block is merged over the top-level one.
//! - [`service`]: the `service` of a rule (`http://…`, `unix:…`,
//!   `http_status:…`, `hello_world`, `tcp://…`/`ssh://…`, `bastion`, …).
//! - [`ingress`]: validation of the rule list into [`Ingress`], first-match
//!   routing of a host and path, and the text of `tunnel ingress validate`
//!   and `tunnel ingress rule`.
//!
//! This file holds the file-level pieces: [`ConfigFile`] and its errors.

pub mod duration;
pub mod ingress;
pub mod origin_request;
pub mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use self::duration::{DurationError, parse_go_duration};
pub use self::ingress::{
    Ingress, IngressError, IngressErrors, NO_INGRESS_RULES_CLI, Rule, RuleUrlError,
    URL_INCOMPATIBLE_WITH_INGRESS, ValidateReport, ValidationFailed, validate_report,
};
pub use self::origin_request::{
    AccessConfig, AccessError, IpNet, IpRule, IpRuleError, OriginRequestConfig,
};
pub use self::service::{Service, ServiceError};

/// A parsed config.yml, before ingress validation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConfigFile {
    /// Tunnel name or UUID.
    #[serde(default)]
    pub tunnel: Option<String>,
    #[serde(default, rename = "credentials-file")]
    pub credentials_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ingress: Vec<RawIngressRule>,
    /// Defaults for every rule's `originRequest`.
    #[serde(
        default,
        rename = "originRequest",
        deserialize_with = "null_as_default"
    )]
    pub origin_request: OriginRequestConfig,
    /// Settings for private-network (WARP) routing; cloudflared reads this
    /// key as a structure, not as a flag.
    #[serde(default, rename = "warp-routing", deserialize_with = "null_as_default")]
    pub warp_routing: WarpRouting,
    /// Every other top-level key. cloudflared reads each as the command-line
    /// flag of the same name (`loglevel`, `protocol`, `metrics`,
    /// `ha-connections`, `edge`, …), with the command line winning; the CLI
    /// layer interprets them, because only it knows each flag's type.
    #[serde(flatten)]
    pub flags: BTreeMap<String, serde_yaml::Value>,
    /// The file this was read from; cloudflared prints it in
    /// "Validating rules from …" and "Using rules from …".
    #[serde(skip)]
    pub source: PathBuf,
}

/// One entry of `ingress`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngressRule {
    pub hostname: Option<String>,
    /// A regular expression matched anywhere in the request path.
    pub path: Option<String>,
    /// Optional only because a `bastionMode: true` rule may leave it out.
    pub service: Option<String>,
    #[serde(
        default,
        rename = "originRequest",
        deserialize_with = "null_as_default"
    )]
    pub origin_request: OriginRequestConfig,
}

/// The `warp-routing` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WarpRouting {
    /// Accepted and ignored: cloudflared dropped this switch (routing is now
    /// enabled remotely), but older configs still carry it.
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub connect_timeout: Option<Duration>,
    /// 0 or absent means unlimited.
    pub max_active_flows: Option<u64>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub tcp_keep_alive: Option<Duration>,
}

/// Why config.yml could not be loaded. Each message is one line naming the
/// file, so it can be printed as is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not named `source`: thiserror would then chain the I/O error, and callers that print
    // the chain would show it twice.
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Bad YAML, a wrong type, or an unknown key; `line` and `column` are
    /// 1-based.
    #[error("{}", syntax_message(file, *location, message))]
    Syntax {
        file: PathBuf,
        location: Option<(usize, usize)>,
        message: String,
    },
}

fn syntax_message(file: &Path, location: Option<(usize, usize)>, message: &str) -> String {
    match location {
        Some((line, column)) => format!("{}:{line}:{column}: {message}", file.display()),
        None => format!("{}: {message}", file.display()),
    }
}

/// YAML lets a key be present with no value (`ingress:`); yaml.v3, which
/// cloudflared uses, reads that as "unset", so do we.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `source_name` is only used in messages and kept
    /// in [`ConfigFile::source`]. An empty file is an empty config, as in
    /// cloudflared (which then reports that there are no ingress rules).
    pub fn parse(text: &str, source_name: &Path) -> Result<ConfigFile, ConfigError> {
        let parsed: Option<ConfigFile> =
            serde_yaml::from_str(text).map_err(|e| syntax_error(&e, source_name))?;
        let mut cfg = parsed.unwrap_or_default();
        cfg.source = source_name.to_owned();
        Ok(cfg)
    }

    /// The value of a top-level key that is read as a CLI flag.
    pub fn flag(&self, name: &str) -> Option<&serde_yaml::Value> {
        self.flags.get(name)
    }
}

fn syntax_error(e: &serde_yaml::Error, file: &Path) -> ConfigError {
    let location = e.location().map(|l| (l.line(), l.column()));
    let mut message = e.to_string();
    // serde_yaml appends the position in prose; it is moved to the front
    // in the compiler-style "file:line:column:" form instead.
    if let Some((line, column)) = location {
        message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
    }
    // Keep the promise of one line per error.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    ConfigError::Syntax {
        file: file.to_owned(),
        location,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(text, Path::new("config.yml"))
    }

    const FULL: &str = r#"
tunnel: 6ff42ae2-765d-4adf-8112-31c55c1551ef
credentials-file: /root/.cloudflared/6ff42ae2-765d-4adf-8112-31c55c1551ef.json
loglevel: debug
protocol: quic
ha-connections: 2
metrics: 127.0.0.1:2000
edge: [127.0.0.1:7844, 127.0.0.2:7844]
no-autoupdate: true
originRequest:
  connectTimeout: 30s
warp-routing:
  enabled: true
  connectTimeout: 2s
  maxActiveFlows: 10
ingress:
  - hostname: gitlab.widgetcorp.tech
    service: http://localhost:80
  - hostname: ssh.widgetcorp.tech
    service: ssh://localhost:22
    originRequest:
      noTLSVerify: true
  - service: http_status:404
"#;

    #[test]
    fn parses_known_keys() {
        let c = parse(FULL).unwrap();
        assert_eq!(
            c.tunnel.as_deref(),
            Some("6ff42ae2-765d-4adf-8112-31c55c1551ef")
        );
        assert_eq!(
            c.credentials_file,
            Some(PathBuf::from(
                "/root/.cloudflared/6ff42ae2-765d-4adf-8112-31c55c1551ef.json"
            ))
        );
        assert_eq!(c.ingress.len(), 3);
        assert_eq!(
            c.ingress[1].hostname.as_deref(),
            Some("ssh.widgetcorp.tech")
        );
        assert_eq!(c.ingress[1].service.as_deref(), Some("ssh://localhost:22"));
        assert_eq!(c.ingress[1].origin_request.no_tls_verify, Some(true));
        assert_eq!(c.ingress[2].hostname, None);
        assert_eq!(
            c.origin_request.connect_timeout,
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.warp_routing.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.warp_routing.max_active_flows, Some(10));
        assert_eq!(c.source, PathBuf::from("config.yml"));
    }

    #[test]
    fn other_top_level_keys_become_flags() {
        let c = parse(FULL).unwrap();
        let keys: Vec<&str> = c.flags.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "edge",
                "ha-connections",
                "loglevel",
                "metrics",
                "no-autoupdate",
                "protocol"
            ]
        );
        assert_eq!(c.flag("loglevel").and_then(|v| v.as_str()), Some("debug"));
        assert_eq!(c.flag("ha-connections").and_then(|v| v.as_u64()), Some(2));
        assert_eq!(
            c.flag("no-autoupdate").and_then(|v| v.as_bool()),
            Some(true)
        );
        assert_eq!(
            c.flag("edge").and_then(|v| v.as_sequence()).map(Vec::len),
            Some(2)
        );
        // Typed keys do not leak into the flag map.
        for typed in [
            "tunnel",
            "credentials-file",
            "ingress",
            "originRequest",
            "warp-routing",
        ] {
            assert!(c.flag(typed).is_none(), "{typed}");
        }
        assert_eq!(c.flag("absent"), None);
    }

    #[test]
    fn unknown_rule_key_names_file_line_and_column() {
        let text = "tunnel: t\ningress:\n  - hostname: a.com\n    service: http://a\n  - hostname: b.com\n    servce: http://b\n";
        let e = parse(text).unwrap_err();
        let ConfigError::Syntax { location, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*location, Some((6, 5)));
        let msg = e.to_string();
        assert!(
            msg.starts_with("config.yml:6:5: ingress[1]: unknown field `servce`, expected one of `hostname`, `path`, `service`, `originRequest`"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        assert!(!msg.contains("at line"), "{msg}");
    }

    #[test]
    fn unknown_origin_request_key_is_an_error() {
        let text = "originRequest:\n  noTLSVerify: true\n  conectTimeout: 1s\ningress:\n  - service: http://a\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(
            msg.starts_with("config.yml:3:3: originRequest: unknown field `conectTimeout`"),
            "{msg}"
        );
        let text = "ingress:\n  - service: http://a\n    originRequest:\n      bogus: 1\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(
            msg.starts_with("config.yml:4:7: ingress[0].originRequest: unknown field `bogus`"),
            "{msg}"
        );
    }

    #[test]
    fn type_errors_name_the_position() {
        let text =
            "ingress:\n  - service: http://a\n    originRequest:\n      connectTimeout: 1d\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.starts_with("config.yml:4:"), "{msg}");
        assert!(
            msg.contains("unknown unit \"d\" in duration \"1d\""),
            "{msg}"
        );

        let text = "originRequest:\n  noTLSVerify: maybe\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.starts_with("config.yml:2:"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");

        let text = "ingress: {service: http://a}\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.starts_with("config.yml:1:"), "{msg}");
        assert!(msg.contains("expected a sequence"), "{msg}");
    }

    #[test]
    fn yaml_syntax_errors_are_one_line() {
        let msg = parse("tunnel: x\ningress:\n  - service: [\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("config.yml:"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
        let msg = parse("tunnel: a\ntunnel: b\n").unwrap_err().to_string();
        assert!(msg.starts_with("config.yml:"), "{msg}");
        assert!(msg.contains("duplicate"), "{msg}");
    }

    #[test]
    fn empty_and_null_sections_are_unset() {
        assert_eq!(
            parse("").unwrap(),
            ConfigFile {
                source: "config.yml".into(),
                ..Default::default()
            }
        );
        assert!(parse("# only a comment\n").unwrap().ingress.is_empty());
        let c = parse("ingress:\noriginRequest:\nwarp-routing:\n").unwrap();
        assert!(c.ingress.is_empty());
        assert_eq!(c.origin_request, OriginRequestConfig::default());
        let c = parse("ingress:\n  - service: http://a\n    originRequest:\n").unwrap();
        assert_eq!(c.ingress[0].origin_request, OriginRequestConfig::default());
    }

    #[test]
    fn scalars_are_read_as_strings_like_yaml_v3() {
        // A tunnel named "2024" must not be a type error.
        let c = parse("tunnel: 2024\ningress:\n  - hostname: 1234\n    service: hello_world\n")
            .unwrap();
        assert_eq!(c.tunnel.as_deref(), Some("2024"));
        assert_eq!(c.ingress[0].hostname.as_deref(), Some("1234"));
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        let msg = parse("- a\n- b\n").unwrap_err().to_string();
        assert!(
            msg.starts_with("config.yml:1:1: invalid type: sequence"),
            "{msg}"
        );
    }

    #[test]
    fn load_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(FULL.as_bytes()).unwrap();
        drop(f);
        let c = ConfigFile::load(&path).unwrap();
        assert_eq!(c.source, path);
        assert_eq!(c.ingress.len(), 3);
        Ingress::from_config(&c).unwrap();

        let missing = dir.path().join("nope.yml");
        let e = ConfigFile::load(&missing).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Read { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: ", missing.display())),
            "{msg}"
        );
        assert!(msg.contains("os error 2"), "{msg}");

        std::fs::write(&path, "ingress:\n  - hostnme: x\n").unwrap();
        let msg = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "{}:2:5: ingress[0]: unknown field `hostnme`",
                path.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn warp_routing_rejects_unknown_keys() {
        let msg = parse("warp-routing:\n  enable: true\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("config.yml:2:3: warp-routing: unknown field `enable`"),
            "{msg}"
        );
    }
}
