//! Durability: everything the control plane acknowledged survives `kill -9`, and a restart
//! keeps its tokens and adds new `--zone`s.

use std::fs;

use ringway_tests::control_plane::{
    assert_tunnel_cname, dns_records, find, get_result, zone_by_name,
};
use ringway_tests::prelude::*;
use serde_json::{Value, json};
#[test]
fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cp = ControlPlane::start(&data, &["dur.test"]);
    let cli = Cli::new(&tmp.path().join("home"));
    cli.login(&cp, "dur.test").ok();
    let admin = fs::read_to_string(data.join("admin-token")).unwrap();
    let edge = fs::read_to_string(data.join("edge-token")).unwrap();
    let cert_before = fs::read_to_string(cli.cert_path()).unwrap();

    let id1 = cli.create("keep1", &[]);
    let id2 = cli.create("keep2", &[]);
    let gone = cli.create("gone", &[]);
    cli.run(&["tunnel", "delete", "gone"]).ok();
    cli.run(&["tunnel", "route", "dns", "keep1", "www.dur.test"])
        .ok();
    cli.run(&["tunnel", "route", "lb", "keep2", "lb.dur.test", "p1"])
        .ok();
    let token_before = cli.run(&["tunnel", "token", "keep1"]).ok().stdout;
    let list_before = cli.list_json(&["-d"]);
    cp.proc.kill9();

    let mut cp = ControlPlane::start_on(&data, &["dur.test"], &cp.addr());
    assert_eq!(fs::read_to_string(data.join("admin-token")).unwrap(), admin);
    assert_eq!(fs::read_to_string(data.join("edge-token")).unwrap(), edge);
    assert_eq!(fs::read_to_string(cli.cert_path()).unwrap(), cert_before);

    // The old cert.pem still works and everything acknowledged is there.
    let list_after = cli.list_json(&["-d"]);
    let strip = |l: &[Value]| -> Vec<(Value, Value, Value, Value)> {
        l.iter()
            .map(|t| {
                (
                    t["id"].clone(),
                    t["name"].clone(),
                    t["created_at"].clone(),
                    t["deleted_at"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&list_after), strip(&list_before));
    assert!(find(&list_after, "id", &gone).unwrap()["deleted_at"].is_string());
    let live: Vec<String> = cli
        .list_json(&[])
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(live.len(), 2);
    assert!(live.contains(&id1) && live.contains(&id2));
    let out = cli.run(&["tunnel", "info", "keep1"]).ok();
    assert_eq!(
        out.stdout,
        format!("Your tunnel {id1} does not have any active connection.\n")
    );
    assert_eq!(
        cli.run(&["tunnel", "token", "keep1"]).ok().stdout,
        token_before
    );
    let cert = cli.cert();
    let token = cert["apiToken"].as_str().unwrap();
    let zone = cert["zoneID"].as_str().unwrap();
    let acct = cert["accountID"].as_str().unwrap();
    assert_tunnel_cname(
        &dns_records(&cp, zone, "www.dur.test", token),
        "www.dur.test",
        &id1,
    );
    let pools = get_result(
        &cp,
        &format!("/accounts/{acct}/load_balancers/pools"),
        token,
    );
    let pool = find(pools.as_array().unwrap(), "name", "p1").expect("pool p1");
    assert_eq!(
        pool["origins"][0]["address"],
        format!("{id2}.cfargotunnel.com")
    );
    let lbs = get_result(&cp, &format!("/zones/{zone}/load_balancers"), token);
    let lb = find(lbs.as_array().unwrap(), "name", "lb.dur.test").expect("lb");
    assert_eq!(lb["default_pools"], json!([pool["id"]]));
    // Still writable, and the name of the deleted tunnel is still free.
    cli.create("gone", &[]);
    cp.proc.kill9();

    // A restart with an extra --zone adds it; logins to it work, the old cert still works.
    let cp = ControlPlane::start_on(&data, &["dur.test", "extra.test"], &cp.addr());
    assert_eq!(fs::read_to_string(data.join("admin-token")).unwrap(), admin);
    let other = Cli::new(&tmp.path().join("home2"));
    other.login(&cp, "extra.test").ok();
    let extra = zone_by_name(&cp, "extra.test");
    assert_eq!(other.cert()["zoneID"], extra["id"]);
    assert_eq!(
        other.cert()["accountID"],
        acct,
        "--zone adds to the default account"
    );
    other
        .run(&["tunnel", "route", "dns", "keep1", "www.extra.test"])
        .ok();
    assert_eq!(cli.list_json(&[]).len(), 3);
}
