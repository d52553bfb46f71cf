//! The edge's host → tunnel lookup, once per request: a `HashMap` probe (load balancers
//! first, then DNS routes), lower-casing only when the host has upper-case letters.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use dataplane::edge::{HostRoute, LoadBalancerRoute, RouteTable, TunnelCredentialCheck};
use uuid::Uuid;

fn tunnel(i: usize) -> Uuid {
    Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | i as u128)
}

/// `n` DNS routes `host{i}.example.com` → tunnel `i`, and one load balancer
/// `lb.example.com` over two pools of three tunnels.
pub fn table(n: usize) -> RouteTable {
    let mut t = RouteTable::new(1, "cfargotunnel.com");
    for i in 0..n.max(6) {
        t.add_tunnel(
            tunnel(i),
            TunnelCredentialCheck {
                account_tag: "acct".into(),
                secret_sha256: [0; 32],
            },
        );
    }
    for i in 0..n {
        let routed = t.add_dns_record(
            "CNAME",
            &format!("host{i}.example.com"),
            &format!("{}.cfargotunnel.com", tunnel(i)),
            "acct",
        );
        assert!(routed.is_ok());
    }
    t.add_load_balancer(
        "lb.example.com",
        LoadBalancerRoute {
            pools: vec![
                (0..3).map(|i| (tunnel(i), 1.0)).collect(),
                (3..6).map(|i| (tunnel(i), 1.0)).collect(),
            ],
        },
    );
    t
}

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("edge_routes");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 10_000] {
        let t = table(n);
        assert_eq!(t.host_count(), n);
        let hit = format!("host{}.example.com", n / 2);
        let hit_upper = hit.to_ascii_uppercase();
        let cases = [
            ("hit", hit.as_str(), true),
            ("hit_uppercase", hit_upper.as_str(), true),
            ("miss", "nobody.example.org", false),
        ];
        for (case, host, found) in cases {
            assert_eq!(
                t.route_for_host(host).is_some(),
                found,
                "{n} routes, {case}"
            );
            g.bench_function(format!("route_for_host/{n}_routes/{case}"), |b| {
                b.iter(|| t.route_for_host(black_box(host)))
            });
        }
        // What the proxy does for a load-balanced host: look it up, then steer (the first
        // pool is "down" here, so steering falls over to the second).
        let down = [tunnel(0), tunnel(1), tunnel(2)];
        let mut roll = 0.0f64;
        g.bench_function(
            format!("route_for_host/{n}_routes/load_balancer+choose"),
            |b| {
                b.iter(|| {
                    roll = (roll + 0.377) % 1.0;
                    match t.route_for_host(black_box("lb.example.com")) {
                        Some(HostRoute::LoadBalancer(lb)) => lb.choose(|u| !down.contains(u), roll),
                        other => panic!("not a load balancer: {other:?}"),
                    }
                })
            },
        );
    }
    g.finish();
}
