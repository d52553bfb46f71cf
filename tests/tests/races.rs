//! Concurrent writers: the control plane's invariants (one live tunnel per name, one CNAME per
//! hostname, no lost pool origins) must hold however requests interleave. Each test fires its
//! requests together from threads behind a barrier, many rounds over; a failure here is a real
//! duplicate or lost update, never a timing artefact (a server that serializes its
//! read-check-write steps passes every round).

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ringway_tests::control_plane::{agent, http_with, pool_origins};
use ringway_tests::prelude::*;
use serde_json::{Value, json};

/// Rounds per race: one interleaving rarely hits a check-then-write window, hundreds nearly
/// always do when the server lacks the guard.
const ROUNDS: usize = 300;
/// Rounds of the load-balancer race: each round writes a pool and a load balancer per writer
/// (durable writes, so slower), and the lost update shows up within a few rounds.
const LB_ROUNDS: usize = 40;
/// Writers per round.
const WRITERS: usize = 12;

/// Runs `f(writer, round, agent)` on `n` threads for `rounds` rounds; every round starts on all
/// threads at once (a barrier). Each thread's agent opens its keep-alive connection to `base`
/// first, so requests are not spread out by TCP setup. Returns `[round][writer]`.
fn rounds<T: Send + 'static>(
    n: usize,
    rounds: usize,
    base: &str,
    f: impl Fn(usize, usize, &ureq::Agent) -> T + Send + Sync + 'static,
) -> Vec<Vec<T>> {
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let health = format!("{base}/healthz");
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, f, health) = (barrier.clone(), f.clone(), health.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let (status, _) = http_with(&agent, "GET", &health, "", None);
                assert_eq!(status, 200, "warm-up GET /healthz");
                (0..rounds)
                    .map(|r| {
                        barrier.wait();
                        f(i, r, &agent)
                    })
                    .collect::<Vec<T>>()
            })
        })
        .collect();
    let per_writer: Vec<Vec<T>> = handles
        .into_iter()
        .map(|h| h.join().expect("writer thread"))
        .collect();
    let mut per_round: Vec<Vec<T>> = (0..rounds).map(|_| Vec::new()).collect();
    for writer in per_writer {
        for (r, v) in writer.into_iter().enumerate() {
            per_round[r].push(v);
        }
    }
    per_round
}

fn create_via_api(
    agent: &ureq::Agent,
    cp_api: &str,
    acct: &str,
    token: &str,
    name: &str,
) -> (u16, Value) {
    http_with(
        agent,
        "POST",
        &format!("{cp_api}/accounts/{acct}/cfd_tunnel"),
        token,
        Some(&json!({"name": name, "tunnel_secret": B64.encode((0u8..32).collect::<Vec<u8>>())})),
    )
}

/// `WRITERS` tunnels, created one by one.
fn tunnels(s: &Setup) -> Vec<String> {
    let (api, acct, token) = (s.cp.api(), s.account_id(), s.api_token());
    (0..WRITERS)
        .map(|i| {
            let (status, ans) = create_via_api(&agent(), &api, &acct, &token, &format!("t{i}"));
            assert_eq!(status, 200, "{ans}");
            ans["result"]["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// How many times each value of `key` occurs in the `result` list at `url`.
fn counts(url: &str, token: &str, key: &str) -> (BTreeMap<String, usize>, Vec<Value>) {
    let (status, ans) = http("GET", url, token, None);
    assert_eq!(status, 200, "{ans}");
    let items = ans["result"].as_array().expect("list").clone();
    let mut out = BTreeMap::new();
    for it in &items {
        *out.entry(it[key].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    (out, items)
}

#[test]
fn one_live_tunnel_per_name() {
    let s = Setup::new(&["race.test"]);
    let (api, acct, token) = (s.cp.api(), s.account_id(), s.api_token());
    let results = rounds(WRITERS, ROUNDS, &s.cp.url, move |_, r, a| {
        create_via_api(a, &api, &acct, &token, &format!("same-{r}")).0
    });
    for (r, statuses) in results.iter().enumerate() {
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "exactly one create of same-{r} wins: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "{statuses:?}"
        );
    }
    let listed = s.cli.list_json(&[]);
    assert_eq!(listed.len(), ROUNDS, "one live tunnel per name");

    // Through the CLI too: the losers get cloudflared's one-line conflict.
    let home = s.cli.home.clone();
    let runs = rounds(6, 1, &s.cp.url, move |_, _, _| {
        Cli::new(&home).run(&["tunnel", "create", "cli-same"])
    })
    .remove(0);
    assert_eq!(runs.iter().filter(|r| r.code == 0).count(), 1, "{runs:?}");
    for r in runs.iter().filter(|r| r.code != 0) {
        assert!(
            r.one_line_error().contains("already exists"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn one_cname_per_hostname_under_concurrent_routes() {
    let s = Setup::new(&["cname.test"]);
    let ids = tunnels(&s);
    let (api, token, zone) = (s.cp.api(), s.api_token(), s.zone_id());
    let (api2, token2, zone2, ids2) = (api.clone(), token.clone(), zone.clone(), ids.clone());
    let results = rounds(WRITERS, ROUNDS, &s.cp.url, move |i, r, a| {
        http_with(
            a,
            "PUT",
            &format!("{api2}/zones/{zone2}/tunnels/{}/routes", ids2[i]),
            &token2,
            Some(&json!({
                "type": "dns", "user_hostname": format!("h{r}.cname.test"), "overwrite_existing": false
            })),
        )
        .0
    });
    let (by_name, _) = counts(&format!("{api}/zones/{zone}/dns_records"), &token, "name");
    for (r, statuses) in results.iter().enumerate() {
        let host = format!("h{r}.cname.test");
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "exactly one route to {host} wins: {statuses:?}"
        );
        assert_eq!(by_name.get(&host), Some(&1), "one CNAME named {host}");
    }
}

#[test]
fn concurrent_lb_routes_keep_every_origin() {
    let s = Setup::new(&["pool.test"]);
    let ids = tunnels(&s);
    let (api, token, zone, acct) = (s.cp.api(), s.api_token(), s.zone_id(), s.account_id());
    let (api2, token2, zone2, ids2) = (api.clone(), token.clone(), zone.clone(), ids.clone());
    let results = rounds(WRITERS, LB_ROUNDS, &s.cp.url, move |i, r, a| {
        http_with(
            a,
            "PUT",
            &format!("{api2}/zones/{zone2}/tunnels/{}/routes", ids2[i]),
            &token2,
            Some(
                &json!({"type": "lb", "lb_name": format!("lb{r}.pool.test"), "lb_pool": format!("pool{r}")}),
            ),
        )
    });
    let mut want: Vec<String> = ids
        .iter()
        .map(|id| format!("{id}.cfargotunnel.com"))
        .collect();
    want.sort();
    let (_, pools) = counts(
        &format!("{api}/accounts/{acct}/load_balancers/pools"),
        &token,
        "name",
    );
    let (lb_names, lbs) = counts(
        &format!("{api}/zones/{zone}/load_balancers"),
        &token,
        "name",
    );
    for (r, answers) in results.iter().enumerate() {
        let (pool, lb) = (format!("pool{r}"), format!("lb{r}.pool.test"));
        for (status, ans) in answers {
            assert_eq!(*status, 200, "{ans}");
        }
        let created = answers
            .iter()
            .filter(|(_, a)| a["result"]["pool"] == "new")
            .count();
        assert_eq!(created, 1, "only one route can create {pool}: {answers:?}");
        let p = pools
            .iter()
            .find(|p| p["name"] == pool.as_str())
            .unwrap_or_else(|| panic!("{pool} exists"));
        assert_eq!(
            pool_origins(p),
            want,
            "every tunnel routed to {pool} is one of its origins"
        );
        assert_eq!(lb_names.get(&lb), Some(&1), "one load balancer {lb}");
        let l = lbs.iter().find(|l| l["name"] == lb.as_str()).unwrap();
        assert_eq!(l["default_pools"], json!([p["id"]]), "{l}");
    }
}

#[test]
fn list_pages_through_many_tunnels() {
    let s = Setup::new(&["many.test"]);
    let (api, acct, token) = (s.cp.api(), s.account_id(), s.api_token());
    let n = 130;
    let a = agent();
    for i in 0..n {
        let (status, ans) = create_via_api(&a, &api, &acct, &token, &format!("bulk-{i:03}"));
        assert_eq!(status, 200, "{ans}");
    }
    let listed = s.cli.list_json(&[]);
    assert_eq!(listed.len(), n, "list fetches every page");
    let out = s.cli.run(&["tunnel", "list"]).ok().stdout;
    assert_eq!(
        out.lines().count(),
        n + 2,
        "intro, header and one row per tunnel"
    );
    // cloudflared's filters.
    assert_eq!(s.cli.list_json(&["--name-prefix", "bulk-12"]).len(), 10);
    assert_eq!(
        s.cli.list_json(&["--exclude-name-prefix", "bulk-1"]).len(),
        100
    );
    assert_eq!(s.cli.list_json(&["--name", "bulk-042"]).len(), 1);
}
