//! `ringway tunnel ingress rule URL` names the rule that a live request for the same URL
//! reaches through the edge and the connector: ports, case, a final dot, percent-encoded and
//! dot-segment paths. IPv6 literal hosts have no DNS route at the edge, so for them the CLI
//! is checked alone here (the control crate's unit test runs the connector's path on them).

use std::path::Path;

use ringway_tests::origins::HashOrigin;
use ringway_tests::prelude::*;

const ZONE: &str = "match.test";

/// The rule `ingress rule URL` prints, from its "Matched rule #N" line.
fn cli_rule(cli: &Cli, config: &Path, url: &str) -> usize {
    let c = config.display().to_string();
    let out = cli
        .run(&["tunnel", "--config", &c, "ingress", "rule", url])
        .ok();
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Matched rule #"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{url}: no rule in {:?}", out.stdout))
}

#[test]
fn ingress_rule_matches_live_traffic() {
    let t = TunnelSetup::new(ZONE);
    let tags = ["API", "A", "W", "V6"];
    let origins: Vec<HashOrigin> = tags.iter().map(|t| HashOrigin::start(t)).collect();
    let (a, b, deep) = (
        format!("a.{ZONE}"),
        format!("b.{ZONE}"),
        format!("x.y.w.{ZONE}"),
    );
    let id = t.tunnel("match", &[&a, &b, &deep]);
    let config = t.s.tmp.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "tunnel: {id}\ncredentials-file: {creds}\ningress:\n  - hostname: {a}\n    path: ^/api/x$\n    service: {o0}\n  - hostname: {a}\n    service: {o1}\n  - hostname: '*.w.{ZONE}'\n    service: {o2}\n  - hostname: '::1'\n    service: {o3}\n  - service: http_status:404\n",
            creds = t.credentials_path(&id).display(),
            o0 = origins[0].url(),
            o1 = origins[1].url(),
            o2 = origins[2].url(),
            o3 = origins[3].url(),
        ),
    )
    .unwrap();
    let _conn = t.run_config(&config);
    t.wait_served(&a);

    let upper_dot = format!("{}.", a.to_ascii_uppercase());
    let a_port = format!("{a}:8080");
    let a_empty_port = format!("{a}:");
    let deep_port = format!("{deep}:1");
    // (Host, target, the rule both must name)
    let cases: [(&str, &str, usize); 8] = [
        (&a, "/api/x", 0),
        (&a_port, "/api/x?q=1", 0),
        (&upper_dot, "/api/%78", 0),
        (&a, "/a/../api/x", 1),
        (&a_empty_port, "/", 1),
        (&a, "/api/xy", 1),
        (&deep_port, "/", 2),
        (&b, "/", 4),
    ];
    for (host, target, want) in cases {
        let url = format!("http://{host}{target}");
        let cli = cli_rule(t.cli(), &config, &url);
        let r = t.edge.get(host, target);
        let live = match r.header("X-Origin-Tag") {
            Some(tag) => tags.iter().position(|t| *t == tag).unwrap(),
            // The catch-all answers 404 itself.
            None => {
                assert_eq!(r.status, 404, "{url}: {}", r.summary());
                4
            }
        };
        assert_eq!((cli, live), (want, want), "{url}: CLI vs live");
    }

    for url in [
        "http://[::1]:8080/x",
        "http://[::1]/x",
        "https://[::1]:443/",
    ] {
        assert_eq!(cli_rule(t.cli(), &config, url), 3, "{url}");
    }
}
