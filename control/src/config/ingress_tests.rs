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
    let e =
        errors("ingress:\n  - hostname: 'a.*.com'\n    service: http://a\n  - service: http://b\n");
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
    let ing =
        ingress("ingress:\n  - hostname: '::1'\n    service: http://a\n  - service: http://b\n");
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
