//! Ingress rules: validation of the raw rules and matching of requests.

use std::fmt;
use std::path::Path;

use dataplane::connector::RouteKey;
use dataplane::http::{Authority, host_without_port};
use regex::Regex;

use super::origin_request::{AccessError, IpRuleError, OriginRequestConfig};
use super::service::{Service, ServiceError};
use super::{ConfigFile, RawIngressRule};

/// What `tunnel ingress validate` reports when `--url` is also given;
/// cloudflared's text, for the CLI to print.
pub const URL_INCOMPATIBLE_WITH_INGRESS: &str =
    "You can't set the --url flag (or $TUNNEL_URL) when using multiple-origin ingress rules";

/// Logged when neither config.yml nor the command line names an origin;
/// the connector then answers 503 to everything (see [`Ingress::single`]).
pub const NO_INGRESS_RULES_CLI: &str = "No ingress rules were defined in provided config (if any) nor from the cli, cloudflared will return 503 for all incoming HTTP requests";

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None` matches every host; so does `Some("*")`. `Some("*.example.com")`
    /// matches any name ending in `.example.com`, however many labels deep.
    pub hostname: Option<String>,
    /// Unanchored: it matches if it matches anywhere in the request path.
    pub path: Option<Regex>,
    pub service: Service,
    /// The rule's `originRequest` already laid over the top-level one.
    pub origin_request: OriginRequestConfig,
    /// The ASCII (punycode) form of a non-ASCII hostname: the edge may send
    /// either form, and cloudflared accepts both.
    punycode: Option<String>,
}

/// The validated ingress rules, in config order. The last one always matches.
#[derive(Debug, Clone)]
pub struct Ingress {
    pub rules: Vec<Rule>,
    /// The top-level `originRequest`, unmerged.
    pub defaults: OriginRequestConfig,
}

/// One problem with the ingress rules. `rule` is 1-based, as users count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    #[error("The config file doesn't contain any ingress rules")]
    NoRules,
    #[error(
        "Rule #{rule}: The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)"
    )]
    LastRuleNotCatchAll { rule: usize },
    #[error(
        "Rule #{rule} is matching the hostname '{hostname}', but this will match every hostname, meaning the rules which follow it will never be triggered."
    )]
    CatchAllNotLast { rule: usize, hostname: String },
    #[error(
        "Rule #{rule}: Hostname patterns can have at most one wildcard character (\"*\") and it can only be used for subdomains, e.g. \"*.example.com\" (got '{hostname}')"
    )]
    BadWildcard { rule: usize, hostname: String },
    #[error("Rule #{rule}: Hostname cannot contain a port (got '{hostname}')")]
    HostnameContainsPort { rule: usize, hostname: String },
    #[error("Rule #{rule} has an invalid regex: {reason}")]
    InvalidPath {
        rule: usize,
        path: String,
        reason: String,
    },
    #[error("Rule #{rule}: {source}")]
    InvalidService { rule: usize, source: ServiceError },
    #[error("Rule #{rule}: unable to create ip rule for socks-proxy: {reason}")]
    InvalidIpRule { rule: usize, reason: IpRuleError },
    #[error("Rule #{rule}: {reason}")]
    InvalidAccess { rule: usize, reason: AccessError },
    /// The top-level `originRequest.access` is reported once, not per rule.
    #[error("originRequest: {reason}")]
    InvalidDefaultAccess { reason: AccessError },
}

/// Every problem found in the rules, in rule order, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join_lines(.errors))]
pub struct IngressErrors {
    errors: Vec<IngressError>,
}

fn join_lines(errors: &[IngressError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl IngressErrors {
    pub fn errors(&self) -> &[IngressError] {
        &self.errors
    }

    /// True when the config simply has no rules: cloudflared then falls back
    /// to `--url`/`--hello-world`/`--bastion`/`--unix-socket`, or to 503.
    pub fn is_no_rules(&self) -> bool {
        self.errors == [IngressError::NoRules]
    }
}

/// `tunnel ingress validate` failed; cloudflared prints this and exits 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Validation failed: {0}")]
pub struct ValidationFailed(pub IngressErrors);

/// What `tunnel ingress validate` produces for a loaded config file.
#[derive(Debug)]
pub struct ValidateReport {
    /// Standard output, newline-terminated lines.
    pub stdout: String,
    /// `Err` means: print it to stderr and exit with status 1.
    pub result: Result<(), ValidationFailed>,
}

/// Runs `tunnel ingress validate` on a loaded config: cloudflared prints the
/// source line first, then either "OK" or the failure.
pub fn validate_report(cfg: &ConfigFile, source: &Path) -> ValidateReport {
    let mut stdout = format!("Validating rules from {}\n", source.display());
    let result = match Ingress::from_config(cfg) {
        Ok(_) => {
            stdout.push_str("OK\n");
            Ok(())
        }
        Err(e) => Err(ValidationFailed(e)),
    };
    ValidateReport { stdout, result }
}

/// Why `tunnel ingress rule URL` could not test a URL; cloudflared's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleUrlError {
    #[error("tunnel ingress rule expects a single argument, the URL to test")]
    Missing,
    #[error("{0} is not a valid URL")]
    Invalid(String),
    #[error("{0} doesn't have a hostname, consider adding a scheme")]
    NoHostname(String),
}

impl Rule {
    fn new(
        hostname: Option<String>,
        path: Option<Regex>,
        service: Service,
        origin_request: OriginRequestConfig,
    ) -> Rule {
        let hostname = hostname.filter(|h| !h.is_empty());
        let punycode = hostname
            .as_deref()
            .filter(|h| !h.is_ascii())
            .map(url::quirks::domain_to_ascii)
            // The conversion returns "" for names IDNA refuses; cloudflared
            // then matches the name only as written.
            .filter(|p| !p.is_empty());
        Rule {
            hostname,
            path,
            service,
            origin_request,
            punycode,
        }
    }

    /// Matches no filter, so it catches every request.
    pub fn is_catch_all(&self) -> bool {
        matches!(self.hostname.as_deref(), None | Some("*")) && self.path.is_none()
    }

    /// Whether a request for `host` (a [`RouteKey`] host: no port, brackets
    /// or final dot) and `path` (the decoded URL path, without the query) is
    /// routed by this rule. The rule's hostname goes through the same
    /// authority reading, so `[::1]` or `a.example.com.` in config.yml name
    /// the hosts a request for them carries.
    pub fn matches(&self, host: &str, path: &str) -> bool {
        let host_ok = match self.hostname.as_deref() {
            None | Some("*") => true,
            Some(rule_host) => {
                match_host(host_without_port(rule_host), host)
                    || self
                        .punycode
                        .as_deref()
                        .is_some_and(|p| match_host(p, host))
            }
        };
        host_ok && self.path.as_ref().is_none_or(|re| re.is_match(path))
    }
}

/// cloudflared's rule text for `ingress rule`: tab-indented lines, the
/// hostname and path only when set.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.hostname {
            writeln!(f, "\thostname: {h}")?;
        }
        if let Some(p) = &self.path {
            writeln!(f, "\tpath: {}", p.as_str())?;
        }
        write!(f, "\tservice: {}", self.service)
    }
}

/// Host names compare without regard to ASCII case, as DNS does. A
/// `*.suffix` pattern matches any host that ends in `.suffix`, at any depth,
/// but not `suffix` itself.
fn match_host(rule_host: &str, host: &str) -> bool {
    if rule_host.eq_ignore_ascii_case(host) {
        return true;
    }
    match rule_host.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            let (h, s) = (host.as_bytes(), suffix.as_bytes());
            h.len() >= s.len() && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
        }
        _ => false,
    }
}

fn valid_wildcard(hostname: &str) -> bool {
    if hostname == "*" {
        return true;
    }
    match hostname.strip_prefix("*.") {
        Some(rest) => !rest.is_empty() && !rest.contains('*'),
        None => !hostname.contains('*'),
    }
}

/// The regex crate explains syntax errors over several lines with a caret;
/// an error list needs one line per error, so keep the "error:" line.
fn one_line_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        )
}

impl Ingress {
    /// Validates config.yml's rules. An empty list is an error
    /// ([`IngressErrors::is_no_rules`]), as in cloudflared; the caller decides
    /// whether to fall back to the command line.
    pub fn from_config(cfg: &ConfigFile) -> Result<Ingress, IngressErrors> {
        Self::from_raw(&cfg.ingress, &cfg.origin_request)
    }

    /// Validates rules given with their top-level `originRequest`; also the
    /// entry point for remotely managed configuration, which has the same
    /// shape. Every error is collected, so one run shows them all.
    pub fn from_raw(
        raw: &[RawIngressRule],
        defaults: &OriginRequestConfig,
    ) -> Result<Ingress, IngressErrors> {
        if raw.is_empty() {
            return Err(IngressErrors {
                errors: vec![IngressError::NoRules],
            });
        }
        let mut errors = Vec::new();
        if let Some(Err(reason)) = defaults.access.as_ref().map(|a| a.validate()) {
            errors.push(IngressError::InvalidDefaultAccess { reason });
        }
        let mut rules = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let before = errors.len();
            if let Some(rule) = validate_rule(r, i + 1, i + 1 == raw.len(), defaults, &mut errors) {
                debug_assert_eq!(before, errors.len());
                rules.push(rule);
            }
        }
        if errors.is_empty() {
            Ok(Ingress {
                rules,
                defaults: defaults.clone(),
            })
        } else {
            Err(IngressErrors { errors })
        }
    }

    /// One catch-all rule, for `--url`, `--hello-world`, `--bastion`,
    /// `--unix-socket`, or the 503 fallback (`Service::HttpStatus(503)`).
    pub fn single(service: Service, defaults: OriginRequestConfig) -> Ingress {
        let mut origin_request = defaults.clone();
        if service == Service::Bastion {
            origin_request.bastion_mode = Some(true);
        }
        Ingress {
            rules: vec![Rule::new(None, None, service, origin_request)],
            defaults,
        }
    }

    /// The first rule that matches, with its 0-based index. `host` and `path`
    /// are a [`RouteKey`]'s: the port is already gone and the path decoded,
    /// by the one function the connector routes live requests with. Falls
    /// back to the last rule, which validation guarantees is a catch-all.
    ///
    /// # Panics
    /// If `rules` was emptied by hand; the constructors never leave it empty.
    pub fn find(&self, host: &str, path: &str) -> (usize, &Rule) {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(host, path))
            .unwrap_or_else(|| {
                let last = self.rules.len() - 1;
                (last, &self.rules[last])
            })
    }

    /// What `tunnel ingress rule URL` prints after its "Using rules from
    /// PATH" line. As in cloudflared, the rule number printed is the 0-based
    /// index that [`Ingress::find`] returns (its validation errors, in
    /// contrast, count from 1).
    pub fn describe_match(&self, url: &str) -> Result<String, RuleUrlError> {
        if url.is_empty() {
            return Err(RuleUrlError::Missing);
        }
        match url::Url::parse(url) {
            Ok(_) => {}
            Err(url::ParseError::RelativeUrlWithoutBase) => {
                return Err(RuleUrlError::NoHostname(url.to_owned()));
            }
            Err(_) => return Err(RuleUrlError::Invalid(url.to_owned())),
        }
        // The URL is checked above but matched as written, the way the connector reads a
        // request's `dest` (no host lowercasing, IPv6 compression or dot-segment removal),
        // so the rule printed is the rule live traffic reaches.
        let key = RouteKey::of_url(url);
        let (i, rule) = self.find(key.host, &key.path);
        Ok(format!("Matched rule #{i}\n{rule}\n"))
    }
}

fn validate_rule(
    r: &RawIngressRule,
    n: usize,
    is_last: bool,
    defaults: &OriginRequestConfig,
    errors: &mut Vec<IngressError>,
) -> Option<Rule> {
    let start = errors.len();
    let mut origin_request = r.origin_request.merged(defaults);
    let bastion_mode = origin_request.bastion_mode == Some(true);

    let service = Service::parse_for_rule(r.service.as_deref().unwrap_or(""), bastion_mode)
        .map_err(|source| errors.push(IngressError::InvalidService { rule: n, source }))
        .ok();
    if service == Some(Service::Bastion) {
        origin_request.bastion_mode = Some(true);
    }

    if let Some(Err(reason)) = r.origin_request.access.as_ref().map(|a| a.validate()) {
        errors.push(IngressError::InvalidAccess { rule: n, reason });
    }
    if service == Some(Service::SocksProxy) {
        for ip_rule in origin_request.ip_rules.iter().flatten() {
            if let Err(reason) = ip_rule.validate() {
                errors.push(IngressError::InvalidIpRule { rule: n, reason });
            }
        }
    }

    let hostname = r.hostname.as_deref().filter(|h| !h.is_empty());
    let path = r.path.as_deref().filter(|p| !p.is_empty());
    // Like cloudflared, a malformed hostname is reported alone: saying it is
    // also not a catch-all would add nothing.
    // A bare IPv6 address is a hostname, while `[::1]:80` and `a.com:` carry
    // a port (`dataplane::http::authority`).
    if let Some(h) = hostname.filter(|h| Authority::parse(h).port.is_some()) {
        errors.push(IngressError::HostnameContainsPort {
            rule: n,
            hostname: h.to_owned(),
        });
    } else if let Some(h) = hostname.filter(|h| !valid_wildcard(h)) {
        errors.push(IngressError::BadWildcard {
            rule: n,
            hostname: h.to_owned(),
        });
    } else {
        let catch_all = matches!(hostname, None | Some("*")) && path.is_none();
        if is_last && !catch_all {
            errors.push(IngressError::LastRuleNotCatchAll { rule: n });
        } else if !is_last && catch_all {
            errors.push(IngressError::CatchAllNotLast {
                rule: n,
                hostname: hostname.unwrap_or("").to_owned(),
            });
        }
    }

    let regex = path.and_then(|p| {
        Regex::new(p)
            .map_err(|e| {
                errors.push(IngressError::InvalidPath {
                    rule: n,
                    path: p.to_owned(),
                    reason: one_line_regex_error(&e),
                })
            })
            .ok()
    });

    if errors.len() > start {
        return None;
    }
    Some(Rule::new(
        hostname.map(str::to_owned),
        regex,
        service?,
        origin_request,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(yaml: &str) -> ConfigFile {
        ConfigFile::parse(yaml, Path::new("config.yml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ingress(yaml: &str) -> Ingress {
        Ingress::from_config(&cfg(yaml)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The rule the connector routes a live request to: the Host the edge forwards and the
    /// `dest` it builds for an origin-form target, through the connector's [`RouteKey`].
    fn live(ing: &Ingress, host: &str, target: &str) -> usize {
        let dest = format!("http://{host}{target}");
        let key = RouteKey::of_request(host, &dest);
        ing.find(key.host, &key.path).0
    }

    fn errors(yaml: &str) -> Vec<IngressError> {
        Ingress::from_config(&cfg(yaml))
            .expect_err("expected validation to fail")
            .errors()
            .to_vec()
    }

    const THREE_RULES: &str = r#"
ingress:
  - hostname: tunnel-a.example.com
    service: https://localhost:8000
  - hostname: tunnel-b.example.com
    path: /health
    service: http://localhost:8001
  - hostname: "*.wild.example.com"
    service: ssh://localhost
  - service: http_status:404
"#;

    #[test]
    fn valid_rules_are_built_in_order() {
        let ing = ingress(THREE_RULES);
        assert_eq!(ing.rules.len(), 4);
        assert_eq!(
            ing.rules[0].hostname.as_deref(),
            Some("tunnel-a.example.com")
        );
        assert_eq!(
            ing.rules[1].path.as_ref().map(Regex::as_str),
            Some("/health")
        );
        assert_eq!(ing.rules[2].service.to_string(), "ssh://localhost:22");
        assert_eq!(ing.rules[3].service, Service::HttpStatus(404));
        assert!(ing.rules[3].is_catch_all());
        assert!(!ing.rules[0].is_catch_all());
    }

    #[test]
    fn empty_rule_list_is_an_error() {
        let e = Ingress::from_config(&cfg("tunnel: x\n")).unwrap_err();
        assert!(e.is_no_rules());
        assert_eq!(
            e.to_string(),
            "The config file doesn't contain any ingress rules"
        );
        let e = Ingress::from_config(&cfg("ingress: []\n")).unwrap_err();
        assert!(e.is_no_rules());
        let e = Ingress::from_config(&cfg(
            "ingress:\n  - hostname: a.com\n    service: hello_world\n",
        ))
        .unwrap_err();
        assert!(!e.is_no_rules());
    }

    #[test]
    fn single_rule_without_hostname_is_fine() {
        let ing = ingress("ingress:\n  - service: hello_world\n");
        assert_eq!(ing.rules[0].service, Service::HelloWorld);
        let ing = ingress("ingress:\n  - hostname: '*'\n    service: http://localhost:1\n");
        assert!(ing.rules[0].is_catch_all());
    }

    #[test]
    fn last_rule_must_be_catch_all() {
        assert_eq!(
            errors("ingress:\n  - hostname: example.com\n    service: http://localhost\n"),
            [IngressError::LastRuleNotCatchAll { rule: 1 }]
        );
        let e = errors(
            "ingress:\n  - hostname: a.com\n    service: http://x\n  - path: /x\n    service: http://y\n",
        );
        assert_eq!(e, [IngressError::LastRuleNotCatchAll { rule: 2 }]);
        assert_eq!(
            e[0].to_string(),
            "Rule #2: The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)"
        );
        // "*" with a path is not a catch-all either.
        assert_eq!(
            errors("ingress:\n  - hostname: '*'\n    path: ^/a\n    service: http://x\n"),
            [IngressError::LastRuleNotCatchAll { rule: 1 }]
        );
    }

    #[test]
    fn early_catch_all_is_an_error() {
        let e = errors(
            "ingress:\n  - service: http://a\n  - hostname: '*'\n    service: http://b\n  - hostname: x.com\n    service: http://c\n  - service: http://d\n",
        );
        assert_eq!(
            e,
            [
                IngressError::CatchAllNotLast {
                    rule: 1,
                    hostname: String::new()
                },
                IngressError::CatchAllNotLast {
                    rule: 2,
                    hostname: "*".into()
                },
            ]
        );
        assert_eq!(
            e[1].to_string(),
            "Rule #2 is matching the hostname '*', but this will match every hostname, meaning the rules which follow it will never be triggered."
        );
    }

    #[test]
    fn wildcards_only_as_leading_label() {
        for bad in [
            "test.*.example.com",
            "*example.com",
            "**.example.com",
            "*.ex*.com",
            "example.*",
            "*.",
        ] {
            let e = errors(&format!(
                "ingress:\n  - hostname: '{bad}'\n    service: http://a\n  - service: http://b\n"
            ));
            assert_eq!(
                e,
                [IngressError::BadWildcard {
                    rule: 1,
                    hostname: bad.into()
                }],
                "{bad}"
            );
        }
        let e = errors(
            "ingress:\n  - hostname: 'a.*.com'\n    service: http://a\n  - service: http://b\n",
        );
        assert!(e[0].to_string().starts_with(
            "Rule #1: Hostname patterns can have at most one wildcard character (\"*\") and it can only be used for subdomains"
        ));
        ingress(
            "ingress:\n  - hostname: '*.example.com'\n    service: http://a\n  - service: http://b\n",
        );
    }

    #[test]
    fn hostname_must_not_have_a_port() {
        let e = errors(
            "ingress:\n  - hostname: test.example.com:443\n    service: http://a\n  - hostname: '*'\n    service: http://b\n",
        );
        assert_eq!(
            e,
            [IngressError::HostnameContainsPort {
                rule: 1,
                hostname: "test.example.com:443".into()
            }]
        );
        assert_eq!(
            e[0].to_string(),
            "Rule #1: Hostname cannot contain a port (got 'test.example.com:443')"
        );
        for bad in ["[::1]:80", "a.com:"] {
            let e = errors(&format!(
                "ingress:\n  - hostname: '{bad}'\n    service: http://a\n  - service: http://b\n"
            ));
            assert!(
                matches!(&e[..], [IngressError::HostnameContainsPort { rule: 1, .. }]),
                "{bad}"
            );
        }
        // A bare IPv6 address has colons but no port.
        let ing = ingress(
            "ingress:\n  - hostname: '::1'\n    service: http://a\n  - service: http://b\n",
        );
        assert_eq!(live(&ing, "[::1]:443", "/"), 0);
    }

    #[test]
    fn path_must_be_a_regex() {
        let e = errors(
            "ingress:\n  - hostname: example.com\n    path: '*/subpath2'\n    service: http://a\n  - service: http://b\n",
        );
        assert_eq!(
            e,
            [IngressError::InvalidPath {
                rule: 1,
                path: "*/subpath2".into(),
                reason: "repetition operator missing expression".into()
            }]
        );
        assert_eq!(
            e[0].to_string(),
            "Rule #1 has an invalid regex: repetition operator missing expression"
        );
    }

    #[test]
    fn bad_services_are_reported_with_rule_number() {
        let e = errors(
            "ingress:\n  - hostname: a.com\n    service: localhost:8000\n  - hostname: b.com\n    service: https://localhost:8000/static/\n  - hostname: c.com\n  - service: http_status:8080\n",
        );
        assert_eq!(
            e,
            [
                IngressError::InvalidService {
                    rule: 1,
                    source: ServiceError::MissingSchemeOrHost("localhost:8000".into())
                },
                IngressError::InvalidService {
                    rule: 2,
                    source: ServiceError::HasPath("https://localhost:8000/static/".into())
                },
                IngressError::InvalidService {
                    rule: 3,
                    source: ServiceError::Missing
                },
                IngressError::InvalidService {
                    rule: 4,
                    source: ServiceError::StatusOutOfRange {
                        service: "http_status:8080".into(),
                        code: 8080
                    }
                },
            ]
        );
        assert_eq!(
            e[0].to_string(),
            "Rule #1: localhost:8000 is an invalid address, please make sure it has a scheme and a hostname"
        );
    }

    #[test]
    fn all_errors_are_reported_together() {
        let err = Ingress::from_config(&cfg(r#"
ingress:
  - service: http://a
  - hostname: x.com:80
    path: "("
    service: nope
  - hostname: a.*.com
    service: http://c
  - hostname: last.com
    service: http://d
"#))
        .unwrap_err();
        let rules: Vec<String> = err.errors().iter().map(ToString::to_string).collect();
        assert_eq!(rules.len(), 6, "{rules:#?}");
        assert!(rules[0].starts_with("Rule #1 is matching the hostname ''"));
        assert!(rules[1].starts_with("Rule #2: nope is an invalid address"));
        assert!(rules[2].starts_with("Rule #2: Hostname cannot contain a port"));
        assert!(rules[3].starts_with("Rule #2 has an invalid regex: "));
        assert!(rules[4].starts_with("Rule #3: Hostname patterns"));
        assert!(rules[5].starts_with("Rule #4: The last ingress rule"));
        // Display is one line per error.
        assert_eq!(err.to_string().lines().count(), 6);
        assert_eq!(err.to_string(), rules.join("\n"));
    }

    #[test]
    fn bastion_rules() {
        let ing = ingress(
            "ingress:\n  - hostname: bastion.foo.com\n    originRequest:\n      bastionMode: true\n  - hostname: b2.foo.com\n    service: bastion\n  - service: http_status:404\n",
        );
        assert_eq!(ing.rules[0].service, Service::Bastion);
        assert_eq!(ing.rules[1].service, Service::Bastion);
        assert_eq!(ing.rules[1].origin_request.bastion_mode, Some(true));
        assert_eq!(ing.rules[2].origin_request.bastion_mode, None);
        // Top-level bastionMode turns every URL rule into a bastion, as in
        // cloudflared, but leaves keyword services alone.
        let ing = ingress(
            "originRequest:\n  bastionMode: true\ningress:\n  - hostname: a.com\n    service: http://x\n  - service: http_status:404\n",
        );
        assert_eq!(ing.rules[0].service, Service::Bastion);
        assert_eq!(ing.rules[1].service, Service::HttpStatus(404));
    }

    #[test]
    fn socks_proxy_ip_rules_are_checked() {
        let ing = ingress(
            "ingress:\n  - hostname: socks.foo.com\n    service: socks-proxy\n    originRequest:\n      ipRules:\n        - prefix: 1.1.1.0/24\n          ports: [80, 443]\n          allow: true\n        - prefix: 0.0.0.0/0\n          allow: false\n  - service: http_status:404\n",
        );
        assert_eq!(ing.rules[0].service, Service::SocksProxy);
        assert_eq!(
            ing.rules[0].origin_request.ip_rules.as_ref().map(Vec::len),
            Some(2)
        );
        let e = errors(
            "ingress:\n  - hostname: socks.foo.com\n    service: socks-proxy\n    originRequest:\n      ipRules:\n        - prefix: 1.1.1.0\n        - ports: [0]\n  - service: http_status:404\n",
        );
        assert_eq!(
            e,
            [
                IngressError::InvalidIpRule {
                    rule: 1,
                    reason: IpRuleError::BadCidr("1.1.1.0".into())
                },
                IngressError::InvalidIpRule {
                    rule: 1,
                    reason: IpRuleError::NoPrefix
                },
            ]
        );
        assert_eq!(
            e[0].to_string(),
            "Rule #1: unable to create ip rule for socks-proxy: unable to parse cidr: 1.1.1.0"
        );
    }

    #[test]
    fn access_config_is_checked() {
        let e = errors(
            "originRequest:\n  access: {required: true, audTag: [a]}\ningress:\n  - hostname: a.com\n    service: http://a\n    originRequest:\n      access: {required: true, audTag: [b]}\n  - service: http://b\n",
        );
        assert_eq!(
            e,
            [
                IngressError::InvalidDefaultAccess {
                    reason: AccessError::TagsWithoutTeam
                },
                IngressError::InvalidAccess {
                    rule: 1,
                    reason: AccessError::TagsWithoutTeam
                },
            ]
        );
        assert_eq!(
            e[0].to_string(),
            "originRequest: access.TeamName cannot be blank when access.audTags are present"
        );
    }

    #[test]
    fn rules_carry_merged_origin_request() {
        let ing = ingress(
            r#"
originRequest:
  connectTimeout: 5s
  noTLSVerify: true
ingress:
  - hostname: a.com
    service: https://localhost:1
    originRequest:
      connectTimeout: 1m
      httpHostHeader: internal
  - service: http://localhost:2
"#,
        );
        let a = &ing.rules[0].origin_request;
        assert_eq!(a.connect_timeout, Some(Duration::from_secs(60)));
        assert_eq!(a.no_tls_verify, Some(true));
        assert_eq!(a.http_host_header.as_deref(), Some("internal"));
        let b = &ing.rules[1].origin_request;
        assert_eq!(b.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(b.http_host_header, None);
        assert_eq!(ing.defaults.connect_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn find_first_match_wins() {
        let ing = ingress(THREE_RULES);
        let idx = |h: &str, p: &str| ing.find(h, p).0;
        assert_eq!(idx("tunnel-a.example.com", "/"), 0);
        assert_eq!(idx("tunnel-a.example.com", "/pages/about"), 0);
        assert_eq!(idx("tunnel-b.example.com", "/health"), 1);
        assert_eq!(idx("tunnel-b.example.com", "/index.html"), 3);
        assert_eq!(idx("tunnel-c.example.com", "/"), 3);
        assert_eq!(idx("", "/"), 3);
        let (i, rule) = ing.find("tunnel-b.example.com", "/health");
        assert_eq!(
            (i, rule.service.to_string().as_str()),
            (1, "http://localhost:8001")
        );
    }

    #[test]
    fn find_ignores_port_and_case() {
        let ing = ingress(THREE_RULES);
        assert_eq!(live(&ing, "tunnel-a.example.com:443", "/"), 0);
        assert_eq!(ing.find("TUNNEL-A.Example.COM", "/").0, 0);
        assert_eq!(live(&ing, "TUNNEL-A.Example.COM:8443", "/"), 0);
        assert_eq!(live(&ing, "[::1]:443", "/"), 3);
        assert_eq!(live(&ing, "tunnel-a.example.com.", "/"), 0);
        assert_eq!(live(&ing, "tunnel-a.example.com.:443", "/"), 0);
    }

    #[test]
    fn wildcard_matches_any_depth_but_not_apex() {
        let ing = ingress(THREE_RULES);
        assert_eq!(ing.find("a.wild.example.com", "/").0, 2);
        assert_eq!(ing.find("a.b.wild.example.com", "/").0, 2);
        assert_eq!(live(&ing, "A.WILD.example.com:22", "/"), 2);
        assert_eq!(ing.find("wild.example.com", "/").0, 3);
        assert_eq!(ing.find("notwild.example.com", "/").0, 3);
        assert_eq!(ing.find("a.wild.example.com.evil", "/").0, 3);
    }

    #[test]
    fn path_regex_is_unanchored() {
        let ing = ingress(
            "ingress:\n  - path: \\.html$\n    service: http://a\n  - hostname: x.com\n    path: ^/api/\n    service: http://b\n  - service: http://c\n",
        );
        assert_eq!(ing.find("any.com", "/deep/page.html").0, 0);
        assert_eq!(ing.find("any.com", "/page.html.bak").0, 2);
        assert_eq!(ing.find("x.com", "/api/v1").0, 1);
        assert_eq!(ing.find("x.com", "/v1/api/").0, 2);
        assert_eq!(ing.find("y.com", "/api/v1").0, 2);
        // A path-only rule (no hostname) with a path is not a catch-all.
        assert!(!ing.rules[0].is_catch_all());
    }

    #[test]
    fn unicode_hostnames_match_their_punycode() {
        let ing = ingress(
            "ingress:\n  - hostname: môô.cloudflare.com\n    service: http://a\n  - hostname: '*.bücher.example'\n    service: http://b\n  - service: http://c\n",
        );
        assert_eq!(ing.find("môô.cloudflare.com", "/").0, 0);
        assert_eq!(ing.find("xn--m-xgaa.cloudflare.com", "/").0, 0);
        assert_eq!(live(&ing, "XN--M-XGAA.cloudflare.com:443", "/"), 0);
        assert_eq!(ing.find("shop.xn--bcher-kva.example", "/").0, 1);
    }

    #[test]
    fn single_rule_ingress() {
        let defaults = OriginRequestConfig {
            no_tls_verify: Some(true),
            ..Default::default()
        };
        let ing = Ingress::single(
            Service::parse("http://localhost:8080").unwrap(),
            defaults.clone(),
        );
        assert_eq!(ing.rules.len(), 1);
        assert!(ing.rules[0].is_catch_all());
        assert_eq!(ing.rules[0].origin_request, defaults);
        assert_eq!(live(&ing, "whatever.com:1", "/x"), 0);
        let ing = Ingress::single(Service::Bastion, OriginRequestConfig::default());
        assert_eq!(ing.rules[0].origin_request.bastion_mode, Some(true));
        let ing = Ingress::single(Service::HttpStatus(503), OriginRequestConfig::default());
        assert_eq!(
            ing.describe_match("https://a.com/").unwrap(),
            "Matched rule #0\n\tservice: http_status:503\n"
        );
    }

    #[test]
    fn describe_match_prints_like_cloudflared() {
        let ing = ingress(THREE_RULES);
        assert_eq!(
            ing.describe_match("https://tunnel-a.example.com/index.html")
                .unwrap(),
            "Matched rule #0\n\thostname: tunnel-a.example.com\n\tservice: https://localhost:8000\n"
        );
        assert_eq!(
            ing.describe_match("http://tunnel-b.example.com:8080/health?x=1")
                .unwrap(),
            "Matched rule #1\n\thostname: tunnel-b.example.com\n\tpath: /health\n\tservice: http://localhost:8001\n"
        );
        assert_eq!(
            ing.describe_match("https://x.wild.example.com").unwrap(),
            "Matched rule #2\n\thostname: *.wild.example.com\n\tservice: ssh://localhost:22\n"
        );
        assert_eq!(
            ing.describe_match("https://api.example.com").unwrap(),
            "Matched rule #3\n\tservice: http_status:404\n"
        );
        assert_eq!(
            ing.describe_match("example.com/path"),
            Err(RuleUrlError::NoHostname("example.com/path".into()))
        );
        assert_eq!(
            ing.describe_match("example.com").unwrap_err().to_string(),
            "example.com doesn't have a hostname, consider adding a scheme"
        );
        assert_eq!(
            ing.describe_match("http://a b.com/")
                .unwrap_err()
                .to_string(),
            "http://a b.com/ is not a valid URL"
        );
        assert_eq!(ing.describe_match(""), Err(RuleUrlError::Missing));
    }

    #[test]
    fn describe_match_decodes_the_path() {
        let ing = ingress(
            "ingress:\n  - hostname: a.com\n    path: ^/a b$\n    service: http://x\n  - service: http://y\n",
        );
        assert!(
            ing.describe_match("http://a.com/a%20b")
                .unwrap()
                .starts_with("Matched rule #0\n")
        );
        assert_eq!(live(&ing, "a.com", "/a%20b"), 0);
    }

    #[test]
    fn validate_report_output() {
        let good = cfg(THREE_RULES);
        let report = validate_report(&good, Path::new("/etc/cloudflared/config.yml"));
        assert_eq!(
            report.stdout,
            "Validating rules from /etc/cloudflared/config.yml\nOK\n"
        );
        assert!(report.result.is_ok());

        let bad = cfg("ingress:\n  - hostname: a.com\n    service: http://x\n");
        let report = validate_report(&bad, Path::new("c.yml"));
        assert_eq!(report.stdout, "Validating rules from c.yml\n");
        assert_eq!(
            report.result.unwrap_err().to_string(),
            "Validation failed: Rule #1: The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)"
        );

        let report = validate_report(&ConfigFile::default(), Path::new("c.yml"));
        assert_eq!(
            report.result.unwrap_err().to_string(),
            "Validation failed: The config file doesn't contain any ingress rules"
        );
    }

    /// `ingress rule URL` against live routing on the same inputs: the request a client sends
    /// for the URL is parsed by the edge's codec, the edge routes on its host, and the
    /// connector matches the Host and `dest` the edge forwards.
    #[test]
    fn ingress_rule_picks_the_rule_live_traffic_reaches() {
        use dataplane::http::{Limits, parse_request_head};
        let ing = ingress(
            "ingress:\n  - hostname: '::1'\n    path: ^/v6\n    service: http://a\n  - hostname: '[::1]'\n    service: http://b\n  - hostname: a.example.com\n    path: ^/api/x$\n    service: http://c\n  - hostname: a.example.com\n    service: http://d\n  - hostname: '*.wild.example.com'\n    service: http://e\n  - service: http_status:404\n",
        );
        let cases = [
            ("http://[::1]:8080/x", 1),
            ("http://[::1]/v6/y", 0),
            ("http://[::1]:80/v6", 0),
            ("http://[0:0::1]:8080/x", 5),
            ("http://a.example.com:8443/api/x", 2),
            ("http://a.example.com/api/x?q=1", 2),
            ("http://A.Example.COM./api/%78", 2),
            ("http://a.example.com/a/../api/x", 3),
            ("http://a.example.com:/", 3),
            ("http://x.y.wild.example.com:1/", 4),
            ("http://wild.example.com/", 5),
        ];
        for (url, want) in cases {
            let cli = ing.describe_match(url).unwrap();
            let cli: usize = cli
                .strip_prefix("Matched rule #")
                .and_then(|r| r.split('\n').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{url}: {cli}"));

            let rest = url.strip_prefix("http://").unwrap();
            let (authority, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let raw = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            let (head, _) = parse_request_head(raw.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap();
            let host = head.host.clone().unwrap();
            // As the edge builds `dest` for an origin-form target.
            let dest = format!("http://{host}{}", head.target);
            let key = RouteKey::of_request(&host, &dest);
            assert_eq!(
                head.host_name(),
                Some(key.host),
                "{url}: edge and connector host"
            );
            let connector = ing.find(key.host, &key.path).0;

            assert_eq!((cli, connector), (want, want), "{url}");
        }
    }
}
