//! `--http2-origin` through a real edge to a real HTTP/2 origin (nginx with TLS and `http2`
//! on its listener, which also speaks HTTP/1.1 to clients that do not offer `h2`): the flag
//! decides which protocol the origin sees, and both carry small and large answers and an
//! upload. A cleartext origin is tried with h2c: nginx with cleartext `http2` sees HTTP/2.0,
//! plain nginx still gets HTTP/1.1.

use ringway_tests::connector::Connector;
use ringway_tests::origins::Nginx;
use ringway_tests::payload::sha256_hex;
use ringway_tests::prelude::*;

const ZONE: &str = "h2origin.test";

struct Case {
    t: TunnelSetup,
    nginx: Nginx,
    host: String,
    id: String,
    /// `--origin-ca-pool` for a TLS nginx.
    ca_pool: Option<String>,
}

impl Case {
    /// Tunnel `name` to an nginx over TLS with `http2` ([`Nginx::start_https`]).
    fn new(name: &str) -> Self {
        let nginx = Nginx::start_https(&["127.0.0.1"]);
        let ca = nginx.ca_file().display().to_string();
        Self::with_nginx(name, nginx, Some(ca))
    }

    /// Tunnel `name` to a cleartext `nginx`.
    fn cleartext(name: &str, nginx: Nginx) -> Self {
        Self::with_nginx(name, nginx, None)
    }

    fn with_nginx(name: &str, nginx: Nginx, ca_pool: Option<String>) -> Self {
        let t = TunnelSetup::new(ZONE);
        let host = format!("{name}.{ZONE}");
        let id = t.tunnel(name, &[&host]);
        Self {
            t,
            nginx,
            host,
            id,
            ca_pool,
        }
    }

    fn run(&self, extra: &[&str]) -> Connector {
        let mut flags = Vec::new();
        if let Some(ca) = &self.ca_pool {
            flags.extend(["--origin-ca-pool", ca.as_str()]);
        }
        flags.extend_from_slice(extra);
        let args = self.t.run_args(
            &self.id,
            &self.id,
            &self.nginx.url(),
            &self.t.edge.connector_args(),
            &flags,
        );
        Connector::start(self.t.cli(), &args)
    }

    /// `GET /proto` through the edge: nginx's `proto=<protocol> host=<Host>`.
    fn proto(&self, conn: &Connector) -> String {
        let r = self.t.edge.get(&self.host, "/proto");
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
        r.text()
    }
}

#[test]
fn http2_origin_speaks_http2_to_an_origin_that_offers_it() {
    let c = Case::new("h2");
    let body = vec![7u8; 1 << 20];
    std::fs::write(c.nginx.root().join("big.bin"), &body).unwrap();
    let conn = c.run(&["--http2-origin"]);
    c.t.wait_served(&c.host);
    assert_eq!(c.proto(&conn), format!("proto=HTTP/2.0 host={}\n", c.host));

    let r = c.t.edge.get(&c.host, "/big.bin");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        sha256_hex(&r.body),
        sha256_hex(&body),
        "1 MiB over HTTP/2 intact"
    );

    let upload = vec![b'u'; 300_000];
    let mut client = RawClient::connect(c.t.edge.http_addr());
    let r = client
        .request(
            &request_bytes("POST", &c.host, "/proto", &[], Some(&upload), true),
            false,
        )
        .expect("POST through the edge");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    assert_eq!(r.text(), format!("proto=HTTP/2.0 host={}\n", c.host));
}

#[test]
fn without_the_flag_the_same_origin_gets_http1() {
    let c = Case::new("h1");
    let conn = c.run(&[]);
    c.t.wait_served(&c.host);
    assert_eq!(c.proto(&conn), format!("proto=HTTP/1.1 host={}\n", c.host));
}

#[test]
fn a_cleartext_origin_without_h2c_still_gets_http1_with_the_flag() {
    // cloudflared speaks HTTP/1.1 to `http://` origins whatever `--http2-origin` says; ringway
    // tries h2c first, so an HTTP/1.1-only origin must still be served (and keep being).
    let c = Case::cleartext("plain", Nginx::start());
    let conn = c.run(&["--http2-origin"]);
    c.t.wait_served(&c.host);
    for _ in 0..3 {
        assert_eq!(c.proto(&conn), format!("proto=HTTP/1.1 host={}\n", c.host));
    }
    assert!(
        conn.logs().contains("does not speak h2c"),
        "no fallback line:\n{}",
        conn.logs()
    );
}

#[test]
fn http2_origin_speaks_h2c_to_a_cleartext_http2_origin() {
    let c = Case::cleartext("h2c", Nginx::start_h2c());
    let conn = c.run(&["--http2-origin"]);
    c.t.wait_served(&c.host);
    assert_eq!(c.proto(&conn), format!("proto=HTTP/2.0 host={}\n", c.host));
}
