//! Tests of the metrics registry and its Prometheus text.

use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Parses a sample line `name{labels} value` or `name value` into (name, labels, value),
/// labels as written between the braces (quotes and escapes kept).
fn parse_sample(line: &str) -> (String, String, u64) {
    let (series, value) = line.rsplit_once(' ').expect("sample has a value");
    let value: u64 = value.parse().expect("value is an integer");
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let labels = rest.strip_suffix('}').expect("labels close with }");
            (name, labels)
        }
        None => (series, ""),
    };
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    (name.to_string(), labels.to_string(), value)
}

/// Every sample of a rendering, keyed by `name{labels}`; checks that every sample belongs
/// to the family announced by the `# HELP` / `# TYPE` lines just before it.
fn parse(text: &str) -> BTreeMap<String, u64> {
    let mut samples = BTreeMap::new();
    let mut current_family: Option<String> = None;
    let mut typed = false;
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("help text");
            assert!(!help.is_empty());
            current_family = Some(name.to_string());
            typed = false;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("type");
            assert_eq!(
                Some(name),
                current_family.as_deref(),
                "TYPE follows its HELP"
            );
            assert!(matches!(kind, "counter" | "gauge"), "type {kind}");
            typed = true;
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (name, labels, value) = parse_sample(line);
            assert_eq!(Some(name.as_str()), current_family.as_deref(), "{line:?}");
            assert!(typed, "sample before TYPE: {line:?}");
            let key = if labels.is_empty() {
                name
            } else {
                format!("{name}{{{labels}}}")
            };
            assert!(samples.insert(key, value).is_none(), "duplicate {line:?}");
        }
    }
    samples
}

#[test]
fn counters_count() {
    let m = TunnelMetrics::new();
    assert_eq!(m.ready_connections(), 0);

    m.request_started();
    m.request_started();
    m.request_started();
    assert_eq!(m.total_requests(), 3);
    assert_eq!(m.concurrent_requests(), 3);
    m.request_finished(200);
    m.request_finished(404);
    assert_eq!(m.concurrent_requests(), 1);
    m.request_error();
    m.request_finished(502);
    assert_eq!(m.concurrent_requests(), 0);
    assert_eq!(m.total_requests(), 3);
    assert_eq!(m.responses_total(), 3);
    assert_eq!(m.request_errors(), 1);
    assert_eq!(m.responses_with_status(200), 1);
    assert_eq!(m.responses_with_status(404), 1);
    assert_eq!(m.responses_with_status(502), 1);
    assert_eq!(m.responses_with_status(500), 0);

    // Out-of-range statuses count in the total only.
    m.request_started();
    m.request_finished(99);
    m.request_started();
    m.request_finished(600);
    assert_eq!(m.responses_total(), 5);
    assert_eq!(m.responses_with_status(99), 0);
    assert_eq!(m.responses_with_status(600), 0);
    // The edges of the range are counted.
    m.request_started();
    m.request_finished(100);
    m.request_started();
    m.request_finished(599);
    assert_eq!(m.responses_with_status(100), 1);
    assert_eq!(m.responses_with_status(599), 1);

    m.bytes_to_origin(10);
    m.bytes_to_origin(5);
    m.bytes_from_origin(7);
    assert_eq!(m.bytes_to_origin_total(), 15);
    assert_eq!(m.bytes_from_origin_total(), 7);

    m.origin_connect_error();
    assert_eq!(m.origin_connect_errors(), 1);

    m.registration_failure(RegistrationFailure::ServerError);
    m.registration_failure(RegistrationFailure::ServerError);
    assert_eq!(m.registration_failures(RegistrationFailure::ServerError), 2);
    assert_eq!(
        m.registration_failures(RegistrationFailure::DuplicateConnection),
        0
    );

    m.ha_connection_up();
    m.ha_connection_up();
    assert_eq!(m.ready_connections(), 2);
    m.ha_connection_down();
    assert_eq!(m.ready_connections(), 1);
    m.ha_connection_down();
    assert_eq!(m.ready_connections(), 0);

    // Debug stays short.
    assert!(format!("{m:?}").len() < 400);
}

#[test]
fn gauges_never_render_negative() {
    let m = TunnelMetrics::new();
    m.ha_connection_down();
    m.request_finished(200);
    assert_eq!(m.ready_connections(), 0);
    assert_eq!(m.concurrent_requests(), 0);
    let samples = parse(&m.render_prometheus(&[]));
    assert_eq!(samples["cloudflared_tunnel_ha_connections"], 0);
    assert_eq!(
        samples["cloudflared_tunnel_concurrent_requests_per_tunnel"],
        0
    );
}

#[test]
fn renders_fresh_metrics() {
    let m = TunnelMetrics::new();
    let text = m.render_prometheus(&[]);
    let samples = parse(&text);
    for name in [
        "cloudflared_tunnel_total_requests",
        "cloudflared_tunnel_request_errors",
        "cloudflared_tunnel_concurrent_requests_per_tunnel",
        "cloudflared_tunnel_ha_connections",
        "ringway_origin_bytes_sent_total",
        "ringway_origin_bytes_received_total",
        "ringway_origin_connect_errors_total",
    ] {
        assert_eq!(samples[name], 0, "{name}");
    }
    // Families without samples still announce themselves.
    assert!(text.contains("# TYPE cloudflared_tunnel_response_by_code counter\n"));
    assert!(!text.contains("cloudflared_tunnel_response_by_code{"));
    let build = format!(
        "ringway_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(samples[&build], 1);
}

#[test]
fn renders_counters_and_labels() {
    let m = TunnelMetrics::new();
    for status in [200, 200, 200, 404, 502] {
        m.request_started();
        m.request_finished(status);
    }
    m.request_started(); // in flight
    m.request_error();
    m.ha_connection_up();
    m.ha_connection_up();
    m.bytes_to_origin(1234);
    m.bytes_from_origin(u64::from(u32::MAX) + 1);
    m.origin_connect_error();
    m.registration_failure(RegistrationFailure::DuplicateConnection);

    let text = m.render_prometheus(&[
        ("connector_id", "6f1c2a4e-0000-4000-8000-000000000001"),
        ("weird", "a\"b\\c\nd"),
        ("version", "spoofed"),
        ("bad-name", "x"),
        ("__reserved", "x"),
    ]);
    let samples = parse(&text);

    assert_eq!(samples["cloudflared_tunnel_total_requests"], 6);
    assert_eq!(samples["cloudflared_tunnel_request_errors"], 1);
    assert_eq!(
        samples["cloudflared_tunnel_concurrent_requests_per_tunnel"],
        1
    );
    assert_eq!(samples["cloudflared_tunnel_ha_connections"], 2);
    assert_eq!(
        samples["cloudflared_tunnel_response_by_code{status_code=\"200\"}"],
        3
    );
    assert_eq!(
        samples["cloudflared_tunnel_response_by_code{status_code=\"404\"}"],
        1
    );
    assert_eq!(
        samples["cloudflared_tunnel_response_by_code{status_code=\"502\"}"],
        1
    );
    assert_eq!(
        samples
            .keys()
            .filter(|k| k.starts_with("cloudflared_tunnel_response_by_code"))
            .count(),
        3,
        "only codes seen"
    );
    assert_eq!(
        samples["cloudflared_tunnel_tunnel_register_fail{error=\"dup_edge_conn\",rpcName=\"registerConnection\"}"],
        1
    );
    assert_eq!(samples["ringway_origin_bytes_sent_total"], 1234);
    assert_eq!(
        samples["ringway_origin_bytes_received_total"],
        u64::from(u32::MAX) + 1
    );
    assert_eq!(samples["ringway_origin_connect_errors_total"], 1);

    let build = format!(
        "ringway_build_info{{version=\"{}\",connector_id=\"6f1c2a4e-0000-4000-8000-000000000001\",weird=\"a\\\"b\\\\c\\nd\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(samples[&build], 1, "{text}");
}

#[test]
fn concurrent_increments_sum() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 50_000;
    let m = Arc::new(TunnelMetrics::new());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                m.ha_connection_up();
                for i in 0..PER_THREAD {
                    m.request_started();
                    m.bytes_to_origin(2);
                    m.bytes_from_origin(3);
                    if i % 10 == 0 {
                        m.request_error();
                    }
                    m.request_finished(if t % 2 == 0 { 200 } else { 503 });
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let n = THREADS * PER_THREAD;
    assert_eq!(m.total_requests(), n);
    assert_eq!(m.responses_total(), n);
    assert_eq!(m.concurrent_requests(), 0);
    assert_eq!(m.request_errors(), THREADS * PER_THREAD / 10);
    assert_eq!(m.responses_with_status(200), n / 2);
    assert_eq!(m.responses_with_status(503), n / 2);
    assert_eq!(m.bytes_to_origin_total(), 2 * n);
    assert_eq!(m.bytes_from_origin_total(), 3 * n);
    assert_eq!(m.ready_connections(), THREADS);

    let samples = parse(&m.render_prometheus(&[]));
    assert_eq!(samples["cloudflared_tunnel_total_requests"], n);
}

#[test]
fn label_names() {
    assert!(is_label_name("connector_id"));
    assert!(is_label_name("_x1"));
    assert!(!is_label_name(""));
    assert!(!is_label_name("1x"));
    assert!(!is_label_name("a-b"));
    assert!(!is_label_name("__name__"));
}
