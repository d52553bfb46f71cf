//! Quick tunnels end to end: a control plane with `--quick-zone`, an edge, and `ringway tunnel
//! --url` with `--quick-service` (no tunnel named): the banner's hostname serves through the
//! edge, `/quicktunnel` names it, and the tunnel and its record go away on SIGTERM (the
//! connector's DELETE) and after SIGKILL (the lease).

use std::time::Duration;

use ringway_tests::cli::Cli;
use ringway_tests::connector::Connector;
use ringway_tests::control_plane::{get_result, http};
use ringway_tests::edge::{Edge, EdgeOpts};
use ringway_tests::origins::HashOrigin;
use ringway_tests::prelude::*;
use serde_json::Value;

const ZONE: &str = "trycloudflare.test";

struct Quick {
    _tmp: tempfile::TempDir,
    cp: ControlPlane,
    edge: Edge,
    cli: Cli,
    origin: HashOrigin,
}

impl Quick {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start_with(
            &tmp.path().join("control"),
            &[],
            "127.0.0.1:0",
            "info",
            &["--quick-zone", ZONE, "--quick-lease", "2s"],
        );
        let edge = Edge::start(&cp, &tmp.path().join("edge"), EdgeOpts::default());
        let cli = Cli::new(&tmp.path().join("home"));
        Self {
            _tmp: tmp,
            cp,
            edge,
            cli,
            origin: HashOrigin::start("quick"),
        }
    }

    fn connector(&self) -> Connector {
        let mut args = vec![
            "tunnel".to_string(),
            "--url".into(),
            self.origin.url(),
            "--quick-service".into(),
            format!("http://{}", self.cp.addr()),
            "--metrics".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(self.edge.connector_args());
        Connector::start(&self.cli, &args)
    }

    /// The live quick tunnels, as the operator's API lists them.
    fn live_tunnels(&self) -> Vec<Value> {
        let admin = self.cp.admin_token();
        let accounts = get_result(&self.cp, "/accounts", &admin);
        let acct = accounts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "quick-tunnels")
            .expect("the quick-tunnels account")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/accounts/{acct}/cfd_tunnel?is_deleted=false");
        get_result(&self.cp, &path, &admin)
            .as_array()
            .unwrap()
            .clone()
    }
}

/// The hostname in the banner's `|  https://HOST  |` line.
fn banner_hostname(c: &Connector) -> String {
    let logs = c.logs();
    assert!(
        logs.contains("Your quick Tunnel has been created! Visit it at"),
        "{logs}"
    );
    logs.lines()
        .find_map(|l| {
            let rest = &l[l.find("|  https://")? + "|  https://".len()..];
            Some(rest.split_whitespace().next()?.to_string())
        })
        .unwrap_or_else(|| panic!("no banner hostname in {logs}"))
}

#[test]
fn a_quick_tunnel_serves_its_banner_hostname_and_is_deleted_on_sigterm() {
    let q = Quick::new();
    let mut c = q.connector();
    let host = banner_hostname(&c);
    assert!(host.ends_with(&format!(".{ZONE}")), "{host}");
    let r = q.edge.wait_get(
        "the quick hostname",
        &host,
        "/",
        Duration::from_secs(20),
        |r| r.status == 200,
    );
    assert_eq!(r.status, 200);
    let metrics = c.metrics_addr();
    let (status, body) = http("GET", &format!("http://{metrics}/quicktunnel"), "", None);
    assert_eq!(status, 200);
    assert_eq!(body["hostname"], host.as_str());
    assert_eq!(q.live_tunnels().len(), 1);
    c.proc.proc.signal("TERM");
    c.proc.wait_exit(Duration::from_secs(40));
    assert!(q.live_tunnels().is_empty());
}

#[test]
fn a_killed_quick_tunnel_is_deleted_after_its_lease() {
    let q = Quick::new();
    let mut c = q.connector();
    banner_hostname(&c);
    assert_eq!(q.live_tunnels().len(), 1);
    c.kill9();
    wait_for(
        "the lease to delete the quick tunnel",
        Duration::from_secs(60),
        || q.live_tunnels().is_empty().then_some(()),
    );
}

#[test]
fn without_a_quick_zone_the_connector_says_quick_tunnels_are_off() {
    let s = Setup::new(&["plain.test"]);
    let origin = HashOrigin::start("off");
    let run = s.cli.run(&[
        "tunnel",
        "--url",
        &origin.url(),
        "--quick-service",
        &format!("http://{}", s.cp.addr()),
    ]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("quick tunnels are not enabled"),
        "{}",
        run.stderr
    );
}
