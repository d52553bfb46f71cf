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
}

impl Case {
    fn new(name: &str) -> Self {
        let t = TunnelSetup::new(ZONE);
        let host = format!("{name}.{ZONE}");
        let id = t.tunnel(name, &[&host]);
        let nginx = Nginx::start_https(&["127.0.0.1"]);
        Self { t, nginx, host, id }
    }

    fn run(&self, extra: &[&str]) -> Connector {
        let ca = self.nginx.ca_file().display().to_string();
        let mut flags = vec!["--origin-ca-pool", ca.as_str()];
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
}

#[test]
fn http2_origin_speaks_http2_to_an_origin_that_offers_it() {
    let c = Case::new("h2");
    let body = vec![7u8; 1 << 20];
    std::fs::write(c.nginx.root().join("big.bin"), &body).unwrap();
    let conn = c.run(&["--http2-origin"]);
    c.t.wait_served(&c.host);
    let r = c.t.edge.get(&c.host, "/proto");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    assert_eq!(r.text(), format!("proto=HTTP/2.0 host={}\n", c.host));

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
    let r = c.t.edge.get(&c.host, "/proto");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    assert_eq!(r.text(), format!("proto=HTTP/1.1 host={}\n", c.host));
}

#[test]
fn a_cleartext_origin_without_h2c_still_gets_http1_with_the_flag() {
    // cloudflared speaks HTTP/1.1 to `http://` origins whatever `--http2-origin` says; ringway
    // tries h2c first, so an HTTP/1.1-only origin must still be served (and keep being).
    let t = TunnelSetup::new(ZONE);
    let host = format!("plain.{ZONE}");
    let id = t.tunnel("plain", &[&host]);
    let nginx = Nginx::start();
    let args = t.run_args(
        &id,
        &id,
        &nginx.url(),
        &t.edge.connector_args(),
        &["--http2-origin"],
    );
    let conn = Connector::start(t.cli(), &args);
    t.wait_served(&host);
    for _ in 0..3 {
        let r = t.edge.get(&host, "/proto");
        assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
        assert_eq!(r.text(), format!("proto=HTTP/1.1 host={host}\n"));
    }
    assert!(
        conn.logs().contains("does not speak h2c"),
        "no fallback line:\n{}",
        conn.logs()
    );
}

#[test]
fn http2_origin_speaks_h2c_to_a_cleartext_http2_origin() {
    let t = TunnelSetup::new(ZONE);
    let host = format!("h2c.{ZONE}");
    let id = t.tunnel("h2c", &[&host]);
    let nginx = Nginx::start_h2c();
    let args = t.run_args(
        &id,
        &id,
        &nginx.url(),
        &t.edge.connector_args(),
        &["--http2-origin"],
    );
    let conn = Connector::start(t.cli(), &args);
    t.wait_served(&host);
    let r = t.edge.get(&host, "/proto");
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), conn.logs());
    assert_eq!(r.text(), format!("proto=HTTP/2.0 host={host}\n"));
}
