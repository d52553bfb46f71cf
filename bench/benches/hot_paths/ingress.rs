//! The connector's ingress matching: config.yml rules, first match wins, the last rule
//! catches everything. `Ingress::find` is a linear scan; `SwappableIngress::route` is what
//! the data path calls per request (arc-swap load, `find`, `Arc` clone of the target).

use std::hint::black_box;

use control::config::{Ingress, OriginRequestConfig, RawIngressRule};
use control::connector::ingress::{CompiledIngress, SwappableIngress};
use criterion::{Criterion, Throughput};
use dataplane::connector::IngressRouter;

/// Hostname of rule `i`: a mix of exact names, `*.` wildcards and exact names with a path
/// regex, in a fixed rotation.
fn rule(i: usize) -> RawIngressRule {
    let (hostname, path) = match i % 4 {
        0 => (format!("app{i}.example.com"), None),
        1 => (format!("*.tenant{i}.example.com"), None),
        2 => (
            format!("api{i}.example.com"),
            Some(r"^/v[0-9]+/".to_owned()),
        ),
        _ => (format!("svc{i}.example.com"), None),
    };
    RawIngressRule {
        hostname: Some(hostname),
        path,
        service: Some(format!("http://127.0.0.1:{}", 8000 + i % 1000)),
        origin_request: OriginRequestConfig::default(),
    }
}

/// A host (and path) that rule `i` matches.
fn host_for(i: usize) -> (String, &'static str) {
    match i % 4 {
        0 => (format!("app{i}.example.com"), "/"),
        1 => (format!("www.tenant{i}.example.com"), "/"),
        2 => (format!("api{i}.example.com"), "/v1/users"),
        _ => (format!("svc{i}.example.com"), "/"),
    }
}

/// `n` hostname rules and the catch-all.
pub fn ingress(n: usize) -> Ingress {
    let mut raw: Vec<RawIngressRule> = (0..n).map(rule).collect();
    raw.push(RawIngressRule {
        service: Some("http_status:404".to_owned()),
        ..RawIngressRule::default()
    });
    Ingress::from_raw(&raw, &OriginRequestConfig::default()).expect("valid rules")
}

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingress");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 1000] {
        let rules = ingress(n);
        let router = SwappableIngress::new(CompiledIngress::new(rules.clone()).expect("compile"));
        let (first_host, first_path) = host_for(0);
        let (last_host, last_path) = host_for(n - 1);
        let mut cases = vec![("first_rule", first_host, first_path, 0)];
        if n > 1 {
            cases.push(("last_rule", last_host, last_path, n - 1));
        }
        cases.push(("catch_all", "www.unrouted.example.org".to_owned(), "/", n));
        for (case, host, path, want) in cases {
            assert_eq!(rules.find(&host, path).0, want, "{n} rules, {case}");
            g.bench_function(format!("find/{n}_rules/{case}"), |b| {
                b.iter(|| rules.find(black_box(&host), black_box(path)).0)
            });
            g.bench_function(format!("route/{n}_rules/{case}"), |b| {
                b.iter(|| router.route(black_box(&host), black_box(path)))
            });
        }
    }
    g.finish();
}
