//! The stock cloudflared against a ringway edge: interop checks that need a cloudflared
//! binary, which the project does not ship or build. They run when `RINGWAY_STOCK_CLOUDFLARED`
//! names one:
//!
//! ```text
//! RINGWAY_STOCK_CLOUDFLARED=/path/to/cloudflared \
//!     cargo test -p ringway-tests --test stock_cloudflared -- --ignored
//! ```
//!
//! Deadlines are failure limits; measured times are printed, not asserted.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ringway_tests::connector::Connector;
use ringway_tests::edge::TunnelSetup;
use ringway_tests::origins::HashOrigin;

const ZONE: &str = "stock.test";
/// cloudflared's component test of graceful shutdown runs with this grace period and expects
/// the exit within it.
const GRACE: &str = "5s";
const EXIT_LIMIT: Duration = Duration::from_secs(5);

fn stock_binary() -> PathBuf {
    let path = std::env::var_os("RINGWAY_STOCK_CLOUDFLARED")
        .expect("RINGWAY_STOCK_CLOUDFLARED must name a cloudflared binary");
    PathBuf::from(path)
}

/// `cloudflared tunnel --no-autoupdate --edge … --cacert … --metrics 127.0.0.1:0 [tunnel_flags]
/// run --credentials-file … --url URL NAME` (each flag where cloudflared accepts it), in the
/// test's home, waiting for `n` registered connections.
fn run_stock(
    t: &TunnelSetup,
    name: &str,
    id: &str,
    url: &str,
    tunnel_flags: &[&str],
    n: usize,
) -> Connector {
    let creds = t.credentials_path(id);
    let mut cmd = Command::new(stock_binary());
    cmd.args(["tunnel", "--no-autoupdate"])
        .args(t.edge.connector_args())
        .args(["--metrics", "127.0.0.1:0"])
        .args(tunnel_flags)
        .arg("run")
        .arg("--credentials-file")
        .arg(&creds)
        .args(["--url", url, name])
        .env("HOME", t.s.tmp.path())
        .current_dir(t.s.tmp.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("TUNNEL_") {
            cmd.env_remove(k);
        }
    }
    Connector::start_command(cmd, n)
}

#[test]
#[ignore = "needs a stock cloudflared: RINGWAY_STOCK_CLOUDFLARED=PATH"]
fn quic_serves_and_sigterm_exits_within_the_grace_period() {
    let mut s = StockOn::start("quic", "quic");
    let answer = s.t.wait_served(&s.host);
    assert_eq!(answer.status, 200, "{answer:?}\n{}", s.c.logs());
    assert_eq!(answer.body, b"tag=stock path=/", "the origin's answer");
    s.terminate();
}

/// A stock cloudflared on `protocol` with one HA connection and the test's grace period, for
/// a tunnel `name` routed at `name.ZONE` to a [`HashOrigin`] tagged `stock`.
struct StockOn {
    // Dropped first: cloudflared is stopped before its origin and edge go.
    c: Connector,
    _origin: HashOrigin,
    t: TunnelSetup,
    host: String,
    protocol: &'static str,
}

impl StockOn {
    fn start(name: &str, protocol: &'static str) -> Self {
        let t = TunnelSetup::new(ZONE);
        let host = format!("{name}.{ZONE}");
        let id = t.tunnel(name, &[&host]);
        let origin = HashOrigin::start("stock");
        let started = Instant::now();
        let flags = [
            "--protocol",
            protocol,
            "--ha-connections",
            "1",
            "--grace-period",
            GRACE,
        ];
        let c = run_stock(&t, name, &id, &origin.url(), &flags, 1);
        eprintln!(
            "[stock {protocol}] registered after {:?}",
            started.elapsed()
        );
        Self {
            c,
            _origin: origin,
            t,
            host,
            protocol,
        }
    }

    /// SIGTERM; a clean exit within [`EXIT_LIMIT`] (the time taken is printed).
    fn terminate(&mut self) {
        let took = self.c.terminate(EXIT_LIMIT);
        eprintln!(
            "[stock {}] cloudflared exited {took:?} after SIGTERM",
            self.protocol
        );
    }
}

/// A GET and a 1 MiB POST through the edge to `host`, byte for byte; and the registration
/// says `protocol=http2`.
fn assert_serves_over_http2(t: &TunnelSetup, host: &str, c: &Connector, what: &str) {
    let registered = c.registered_lines();
    assert!(
        registered.iter().any(|l| l.contains("protocol=http2")),
        "[{what}] registered over http2: {registered:?}\n{}",
        c.logs()
    );
    let answer = t.wait_served(host);
    assert_eq!(answer.status, 200, "{answer:?}\n{}", c.logs());
    assert_eq!(
        answer.body, b"tag=stock path=/",
        "[{what}] the origin's answer"
    );
    let answer = t.edge.get(host, "/some/path?q=1");
    assert_eq!(
        answer.body, b"tag=stock path=/some/path?q=1",
        "[{what}] path and query"
    );
    let body = ringway_tests::payload::pseudo_random_bytes(1 << 20, 14);
    let mut client = ringway_tests::raw_client::RawClient::connect(t.edge.http_addr());
    let answer = client
        .request(
            &ringway_tests::raw_client::request_bytes(
                "POST",
                host,
                "/upload",
                &[],
                Some(&body),
                true,
            ),
            false,
        )
        .unwrap_or_else(|e| panic!("[{what}] POST through the edge: {e}\n{}", c.logs()));
    assert_eq!(answer.status, 200, "{answer:?}\n{}", c.logs());
    assert_eq!(
        answer.text(),
        ringway_tests::payload::sha256_hex(&body),
        "[{what}] the origin got the 1 MiB body intact"
    );
    assert_eq!(answer.header("x-body-length"), Some("1048576"));
}

#[test]
#[ignore = "needs a stock cloudflared: RINGWAY_STOCK_CLOUDFLARED=PATH"]
fn http2_registers_and_serves_get_and_post() {
    let mut s = StockOn::start("h2", "http2");
    assert_serves_over_http2(&s.t, &s.host, &s.c, "stock http2");
    s.terminate();
}

#[test]
#[ignore = "needs a stock cloudflared: RINGWAY_STOCK_CLOUDFLARED=PATH"]
fn without_a_protocol_flag_it_starts_on_http2_and_serves() {
    // Offline, cloudflared's protocol lookup (a TXT record) fails and it starts on http2.
    let t = TunnelSetup::new(ZONE);
    let host = format!("auto.{ZONE}");
    let id = t.tunnel("auto", &[&host]);
    let origin = HashOrigin::start("stock");
    let c = run_stock(
        &t,
        "auto",
        &id,
        &origin.url(),
        &["--ha-connections", "1"],
        1,
    );
    assert!(
        c.logs().contains("Initial protocol http2"),
        "cloudflared chose http2 by itself\n{}",
        c.logs()
    );
    assert_serves_over_http2(&t, &host, &c, "stock, no --protocol");
}

#[test]
#[ignore = "needs a stock cloudflared: RINGWAY_STOCK_CLOUDFLARED=PATH"]
fn replicas_on_quic_and_http2_share_one_tunnel() {
    // Two replicas of one tunnel, one per transport, each in front of its own origin: the
    // edge routes to both (fewest open streams, ties rotating, hand-offs between workers).
    let t = TunnelSetup::new(ZONE);
    let host = format!("mixed.{ZONE}");
    let id = t.tunnel("mixed", &[&host]);
    let quic_origin = HashOrigin::start("quic");
    let h2_origin = HashOrigin::start("http2");
    let flags = |p: &'static str| ["--protocol", p, "--ha-connections", "1"];
    let q = run_stock(&t, "mixed", &id, &quic_origin.url(), &flags("quic"), 1);
    let h = run_stock(&t, "mixed", &id, &h2_origin.url(), &flags("http2"), 1);
    t.wait_served(&host);
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..40 {
        let answer = t.edge.get(&host, &format!("/{i}"));
        assert_eq!(answer.status, 200, "{answer:?}\n{}\n{}", q.logs(), h.logs());
        let text = answer.text();
        let tag = text
            .strip_prefix("tag=")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected answer {text:?}"))
            .to_owned();
        assert_eq!(text, format!("tag={tag} path=/{i}"));
        *seen.entry(tag).or_insert(0) += 1;
    }
    eprintln!("[stock mixed] answers per replica: {seen:?}");
    assert!(
        seen.contains_key("quic") && seen.contains_key("http2"),
        "both replicas served: {seen:?}"
    );
}

#[test]
#[ignore = "needs a stock cloudflared: RINGWAY_STOCK_CLOUDFLARED=PATH"]
fn http2_sigterm_lets_the_request_in_flight_finish() {
    let (url, got_request) = ringway_tests::origins::slow_origin(Duration::from_secs(2));
    let t = TunnelSetup::new(ZONE);
    let host = format!("slow.{ZONE}");
    let id = t.tunnel("slow", &[&host]);
    let flags = [
        "--protocol",
        "http2",
        "--ha-connections",
        "1",
        "--grace-period",
        GRACE,
    ];
    let mut c = run_stock(&t, "slow", &id, &url, &flags, 1);
    t.wait_served(&host);
    let (answer, _) = c.terminate_during(&got_request, Duration::from_secs(30), || {
        t.edge.get(&host, "/slow")
    });
    assert_eq!(
        answer.status,
        200,
        "{answer:?}\n{}\n{}",
        c.logs(),
        t.edge.logs()
    );
    assert_eq!(answer.body, b"slow answer");
}
