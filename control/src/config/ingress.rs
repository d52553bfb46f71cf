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
    /// `hostname` read as an authority once (no port, brackets or final dot),
    /// so matching a request does not re-read it per rule.
    match_name: Option<String>,
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
        let match_name = hostname.as_deref().map(|h| host_without_port(h).to_owned());
        Rule {
            hostname,
            path,
            service,
            origin_request,
            punycode,
            match_name,
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
        // `match_name` is set exactly when `hostname` is.
        let host_ok = match self.hostname.as_deref().zip(self.match_name.as_deref()) {
            None | Some(("*", _)) => true,
            Some((_, rule_host)) => {
                match_host(rule_host, host)
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
#[path = "ingress_tests.rs"]
mod tests;
