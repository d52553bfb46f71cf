use super::spec::{self, FLAGS, Kind};
use super::*;
use crate::cli::try_parse_without_config;

/// `docs/cloudflared-flags.txt`: (level, name, aliases).
fn listed() -> Vec<(String, String, Vec<String>)> {
    include_str!("../../../../docs/cloudflared-flags.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split_whitespace().map(str::to_owned);
            let level = words.next().unwrap();
            let name = words.next().unwrap();
            let aliases = words.filter(|w| w != "hidden").collect();
            (level, name, aliases)
        })
        .collect()
}

fn sample(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Bool => None,
        Kind::Int => Some("3"),
        Kind::Float => Some("0.5"),
        Kind::Duration => Some("5s"),
        Kind::Str | Kind::List => Some("x"),
    }
}

/// The command line with `flag` (and its value) placed at `level`.
fn argv(level: &str, flag: &[String]) -> Vec<String> {
    let mut v = vec!["ringway".to_owned()];
    let put = |v: &mut Vec<String>, here: &str| {
        if here == level {
            v.extend(flag.iter().cloned());
        }
    };
    put(&mut v, "global");
    v.push("tunnel".into());
    put(&mut v, "tunnel");
    v.push("run".into());
    put(&mut v, "run");
    v.push("mytunnel".into());
    v
}

fn flag_words(dashes: &str, name: &str, kind: Kind) -> Vec<String> {
    let mut w = vec![format!("{dashes}{name}")];
    w.extend(sample(kind).map(str::to_owned));
    w
}

#[test]
fn every_listed_flag_parses_at_each_level_cloudflared_allows() {
    let listed = listed();
    assert!(listed.len() > 200, "{}", listed.len());
    for (level, name, aliases) in &listed {
        let s = spec::find(name).unwrap_or_else(|| panic!("{name} is not in the table"));
        for spelling in std::iter::once(name).chain(aliases) {
            // Go reads -name like --name; a one-letter alias is a short flag.
            let dash_forms: &[&str] = if spelling.len() == 1 {
                &["-"]
            } else {
                &["--", "-"]
            };
            for dashes in dash_forms {
                let args = argv(level, &flag_words(dashes, spelling, s.kind));
                let inv = try_parse_without_config(args.clone())
                    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert!(inv.flags.is_set(name), "{args:?}: {name} not set");
                if let Some(v) = sample(s.kind) {
                    assert_eq!(
                        inv.flags.list(name).unwrap(),
                        vec![v.to_owned()],
                        "{args:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn run_only_flags_are_refused_before_run_and_every_flag_is_taken_after_it() {
    for s in FLAGS {
        let words = flag_words("--", s.name, s.kind);
        for level in ["global", "tunnel", "run"] {
            let allowed = level == "run" || s.at_global();
            let result = try_parse_without_config(argv(level, &words));
            assert_eq!(result.is_ok(), allowed, "--{} at {level}", s.name);
        }
    }
}

#[test]
fn the_list_and_the_table_name_the_same_flags() {
    let listed = listed();
    for s in FLAGS {
        for level in ["global", "tunnel", "run"] {
            let expected = if level == "run" {
                s.at_run()
            } else {
                s.at_global()
            };
            let present = listed.iter().any(|(l, n, _)| l == level && n == s.name);
            assert_eq!(present, expected, "{} at {level}", s.name);
        }
    }
}

#[test]
fn bool_flags_take_go_syntax_and_never_eat_the_next_word() {
    let inv = try_parse_without_config(
        [
            "ringway",
            "tunnel",
            "--no-autoupdate",
            "run",
            "--no-tls-verify=false",
            "t",
        ]
        .map(String::from),
    )
    .unwrap();
    assert!(inv.flags.bool("no-autoupdate").unwrap());
    assert!(!inv.flags.bool("no-tls-verify").unwrap());
    assert_eq!(inv.flags.opt_bool("no-tls-verify").unwrap(), Some(false));
    assert_eq!(inv.flags.opt_bool("bastion").unwrap(), None);
}

#[test]
fn the_most_specific_command_line_level_wins_then_config() {
    let inv = try_parse_without_config(
        [
            "ringway",
            "--metrics",
            "a:1",
            "tunnel",
            "--metrics",
            "b:2",
            "--retries",
            "7",
            "run",
            "t",
        ]
        .map(String::from),
    )
    .unwrap();
    assert_eq!(inv.flags.str("metrics").unwrap().as_deref(), Some("b:2"));
    let config = ConfigFile::parse(
        "retries: 9\nha-connections: 2\nloglevel: debug\nedge:\n  - e:1\n  - e:2\ntag: x=y\n",
        Path::new("config.yml"),
    )
    .unwrap();
    let flags = inv.flags.with_config(Some(config));
    assert_eq!(flags.int::<u32>("retries").unwrap(), Some(7));
    assert_eq!(flags.int::<u8>("ha-connections").unwrap(), Some(2));
    assert_eq!(flags.str("loglevel").unwrap().as_deref(), Some("debug"));
    assert_eq!(flags.list("edge").unwrap(), ["e:1", "e:2"]);
    // cloudflared's strict typing: a list flag needs a YAML list.
    let err = flags.list("tag").unwrap_err().to_string();
    assert!(err.contains("config.yml key tag: expected a list"), "{err}");
}

#[test]
fn keys_that_are_not_config_keys_are_not_read_from_config() {
    let inv =
        try_parse_without_config(["ringway", "tunnel", "run", "t"].map(String::from)).unwrap();
    let config =
        ConfigFile::parse("output: json\nconfig: other.yml\n", Path::new("c.yml")).unwrap();
    let flags = inv.flags.with_config(Some(config));
    assert_eq!(flags.str("output").unwrap(), None);
    assert_eq!(flags.str("config").unwrap(), None);
}

#[test]
fn environment_variables_fill_what_the_command_line_leaves() {
    // TUNNEL_DNS_RESOLVER_ADDRS is read by no other test.
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("TUNNEL_DNS_RESOLVER_ADDRS", "1.1.1.1:53, 8.8.8.8:53") };
    let inv =
        try_parse_without_config(["ringway", "tunnel", "run", "t"].map(String::from)).unwrap();
    assert_eq!(
        inv.flags.list("dns-resolver-addrs").unwrap(),
        ["1.1.1.1:53", "8.8.8.8:53"]
    );
    let notices = inv.flags.no_effect_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("--dns-resolver-addrs has no effect on a self-hosted edge")),
        "{notices:?}"
    );
    unsafe { std::env::remove_var("TUNNEL_DNS_RESOLVER_ADDRS") };
}

#[test]
fn tunnel_verbs_take_config_origincert_and_api_url_after_the_verb() {
    let inv = try_parse_without_config(
        [
            "ringway",
            "tunnel",
            "list",
            "--origincert",
            "/c.pem",
            "--api-url",
            "http://a/client/v4",
        ]
        .map(String::from),
    )
    .unwrap();
    assert_eq!(
        inv.flags.str("origincert").unwrap().as_deref(),
        Some("/c.pem")
    );
    assert_eq!(
        inv.flags.str("api-url").unwrap().as_deref(),
        Some("http://a/client/v4")
    );
}

#[test]
fn ringway_commands_take_the_logging_flags_after_the_verb() {
    let inv = try_parse_without_config(
        [
            "ringway",
            "edge",
            "run",
            "--control",
            "http://c",
            "--state-dir",
            "/s",
            "--loglevel",
            "warn",
            "--output",
            "json",
        ]
        .map(String::from),
    )
    .unwrap();
    assert_eq!(inv.flags.str("loglevel").unwrap().as_deref(), Some("warn"));
    assert_eq!(inv.flags.str("output").unwrap().as_deref(), Some("json"));
}

#[test]
fn the_command_line_definition_is_consistent() {
    super::augment(<crate::cli::Cli as clap::CommandFactory>::command()).debug_assert();
}

#[test]
fn bad_values_are_one_clear_error() {
    let err = try_parse_without_config(
        ["ringway", "tunnel", "--retries", "many", "run", "t"].map(String::from),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "flag retries: \"many\" is not a valid number");
    let err = try_parse_without_config(["ringway", "tunnel", "--bogus", "run"].map(String::from))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected argument '--bogus'"), "{err}");
}

#[test]
fn single_dash_rewrite_leaves_values_and_unknown_words_alone() {
    let out = normalize_args(
        [
            "ringway",
            "-loglevel",
            "debug",
            "-x",
            "-config=a",
            "--",
            "-metrics",
        ]
        .map(String::from),
    );
    assert_eq!(
        out,
        [
            "ringway",
            "--loglevel",
            "debug",
            "-x",
            "--config=a",
            "--",
            "-metrics"
        ]
    );
}

#[test]
fn docs_cli_md_carries_the_flag_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (begin, end) = ("<!-- flags:begin -->\n", "<!-- flags:end -->");
    let start = doc.find(begin).expect("flags:begin marker") + begin.len();
    let stop = doc.find(end).expect("flags:end marker");
    let table = spec::docs_table();
    if std::env::var_os("RINGWAY_UPDATE_DOCS").is_some() {
        let updated = format!("{}{table}{}", &doc[..start], &doc[stop..]);
        std::fs::write(path, updated).unwrap();
        return;
    }
    assert_eq!(
        &doc[start..stop],
        table,
        "docs/cli.md is out of date: run with RINGWAY_UPDATE_DOCS=1"
    );
}
