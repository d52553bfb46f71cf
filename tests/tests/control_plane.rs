//! The control plane through the real CLI: every `ringway tunnel` verb in one lifecycle, and
//! deletes refused while connectors are connected.

use std::fs;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ringway_tests::cli::{cell, created_id, decode_token, file_mode, list_table};
use ringway_tests::control_plane::{
    assert_tunnel_cname, dns_records, find, get_result, keys, pool_origins, register_connection,
    zone_by_name,
};
use ringway_tests::prelude::*;
use serde_json::{Value, json};
#[test]
fn lifecycle_through_the_cli() {
    let s = Setup::new(&["a.test"]);
    let (cp, cli) = (&s.cp, &s.cli);

    // login: cert.pem, 0600, one ARGO TUNNEL TOKEN block with the zone-scoped token.
    let cert_path = cli.cert_path();
    assert_eq!(file_mode(&cert_path), 0o600);
    let pem = fs::read_to_string(&cert_path).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ARGO TUNNEL TOKEN-----\n"),
        "{pem}"
    );
    assert!(pem.ends_with("-----END ARGO TUNNEL TOKEN-----\n"), "{pem}");
    assert_eq!(pem.matches("-----BEGIN").count(), 1, "{pem}");
    let cert = cli.cert();
    let zone = zone_by_name(cp, "a.test");
    assert_eq!(cert["zoneID"], zone["id"], "{cert}");
    assert_eq!(cert["accountID"], zone["account"]["id"], "{cert}");
    assert_eq!(cert["ringwayControlURL"], cp.url.as_str(), "{cert}");
    let api_token = s.api_token();
    assert!(!api_token.is_empty());
    assert_ne!(
        api_token,
        cp.admin_token(),
        "cert must not carry the admin token"
    );
    let acct = s.account_id();
    let zone_id = s.zone_id();

    // create: credentials next to cert.pem, 0400, exactly cloudflared's four keys and bytes.
    let out = cli.run(&["tunnel", "create", "t1"]).ok();
    let id1 = created_id(&out.stdout, "t1");
    let cred1 = cli.cloudflared_dir().join(format!("{id1}.json"));
    assert!(
        out.stdout.contains(&format!(
            "Tunnel credentials written to {}.",
            cred1.display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Keep this file secret."),
        "{}",
        out.stdout
    );
    assert_eq!(file_mode(&cred1), 0o400);
    let creds1 = cli.credentials(&id1);
    assert_eq!(
        keys(&creds1),
        ["AccountTag", "Endpoint", "TunnelID", "TunnelSecret"]
    );
    let secret1 = creds1["TunnelSecret"].as_str().unwrap().to_string();
    assert_eq!(B64.decode(&secret1).expect("base64 secret").len(), 32);
    assert_eq!(
        fs::read_to_string(&cred1).unwrap(),
        format!(
            r#"{{"AccountTag":"{acct}","TunnelSecret":"{secret1}","TunnelID":"{id1}","Endpoint":""}}"#
        ),
        "credentials file bytes as cloudflared writes them"
    );

    // create --secret: the file holds the secret given.
    let given: Vec<u8> = (0u8..40).collect();
    let given_b64 = B64.encode(&given);
    let id2 = cli.create("t2", &["--secret", &given_b64]);
    assert_eq!(cli.credentials(&id2)["TunnelSecret"], given_b64.as_str());

    // create --credentials-file PATH: written there, not next to cert.pem.
    let elsewhere = s.tmp.path().join("t3-creds.json");
    let out = cli
        .run(&[
            "tunnel",
            "create",
            "--credentials-file",
            elsewhere.to_str().unwrap(),
            "t3",
        ])
        .ok();
    let id3 = created_id(&out.stdout, "t3");
    assert!(
        out.stdout.contains(&format!(
            "Tunnel credentials written to {}. Keep this file secret.",
            elsewhere.display()
        )),
        "{}",
        out.stdout
    );
    assert_eq!(file_mode(&elsewhere), 0o400);
    let creds3: Value = serde_json::from_str(&fs::read_to_string(&elsewhere).unwrap()).unwrap();
    assert_eq!(creds3["TunnelID"], id3.as_str());
    assert!(!cli.cloudflared_dir().join(format!("{id3}.json")).exists());

    // create -o json: the TunnelWithToken object; its token carries the file's secret.
    let out = cli.run(&["tunnel", "create", "-o", "json", "t4"]).ok();
    let created: Value = serde_json::from_str(&out.stdout).expect("create -o json");
    let id4 = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["name"], "t4");
    assert!(
        created["created_at"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let tok4 = decode_token(created["token"].as_str().expect("token"));
    assert_eq!(keys(&tok4), ["a", "s", "t"]);
    assert_eq!(tok4["t"], id4.as_str());
    assert_eq!(tok4["a"], acct.as_str());
    assert_eq!(tok4["s"], cli.credentials(&id4)["TunnelSecret"]);

    // create -o yaml: cloudflared's nested `tunnel:` mapping plus `token:`.
    let out = cli.run(&["tunnel", "create", "-o", "yaml", "t5"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.contains(&"tunnel:"), "{}", out.stdout);
    assert!(lines.contains(&"  name: t5"), "{}", out.stdout);
    assert!(
        lines.iter().any(|l| l.starts_with("token: ")),
        "{}",
        out.stdout
    );
    let id5 = lines
        .iter()
        .find_map(|l| l.strip_prefix("  id: "))
        .expect("id line")
        .to_string();
    assert!(cli.cloudflared_dir().join(format!("{id5}.json")).exists());

    // list: cloudflared's padded table.
    let (header, rows) = list_table(cli);
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "CREATED", "CONNECTIONS"]
    );
    assert_eq!(
        header.find("NAME"),
        Some(37),
        "ID column is a UUID wide: {header:?}"
    );
    assert!(header.ends_with(' '), "every cell is padded: {header:?}");
    let listed = cli.list_json(&[]);
    for (id, name) in [
        (&id1, "t1"),
        (&id2, "t2"),
        (&id3, "t3"),
        (&id4, "t4"),
        (&id5, "t5"),
    ] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"));
        assert_eq!(cell(&header, row, "NAME"), name);
        let json = find(&listed, "id", id).expect("in list -o json");
        assert_eq!(
            cell(&header, row, "CREATED"),
            json["created_at"].as_str().unwrap()
        );
        assert_eq!(cell(&header, row, "CONNECTIONS"), "");
    }

    // list -o json: every tunnel, cloudflared's field names, sorted by name.
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["t1", "t2", "t3", "t4", "t5"]);
    let t1 = find(&listed, "name", "t1").unwrap();
    assert_eq!(t1["id"], id1.as_str());
    assert!(t1["deleted_at"].is_null(), "{t1}");
    assert_eq!(t1["connections"], json!([]), "{t1}");

    // list --name / --id filter.
    let only: Vec<Value> = cli.list_json(&["--name", "t2"]);
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["id"], id2.as_str());
    let only = cli.list_json(&["--id", &id3]);
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["name"], "t3");

    // info: no connections yet.
    let out = cli.run(&["tunnel", "info", "t1"]).ok();
    assert_eq!(
        out.stdout,
        format!("Your tunnel {id1} does not have any active connection.\n")
    );
    let out = cli.run(&["tunnel", "info", "-o", "json", "t1"]).ok();
    let info: Value = serde_json::from_str(&out.stdout).expect("info -o json");
    assert_eq!(info["id"], id1.as_str());
    assert_eq!(info["name"], "t1");
    assert_eq!(info["createdAt"], t1["created_at"]);
    assert_eq!(info["conns"], json!([]));

    // token: base64 of {"a","s","t"} matching the credentials file.
    let out = cli.run(&["tunnel", "token", "t1"]).ok();
    let tok = decode_token(out.stdout.trim());
    assert_eq!(keys(&tok), ["a", "s", "t"]);
    assert_eq!(tok["a"], acct.as_str());
    assert_eq!(tok["s"], secret1.as_str());
    assert_eq!(tok["t"], id1.as_str());

    // token --cred-file: a 0400 credentials file with the same fields; nothing on stdout.
    let tok_file = s.tmp.path().join("from-token.json");
    let out = cli
        .run(&[
            "tunnel",
            "token",
            "--cred-file",
            tok_file.to_str().unwrap(),
            "t1",
        ])
        .ok();
    assert_eq!(out.stdout, "");
    assert_eq!(file_mode(&tok_file), 0o400);
    let from_token: Value = serde_json::from_str(&fs::read_to_string(&tok_file).unwrap()).unwrap();
    assert_eq!(from_token["AccountTag"], acct.as_str());
    assert_eq!(from_token["TunnelSecret"], secret1.as_str());
    assert_eq!(from_token["TunnelID"], id1.as_str());
    let again = cli.run(&[
        "tunnel",
        "token",
        "--cred-file",
        tok_file.to_str().unwrap(),
        "t1",
    ]);
    assert!(
        again.one_line_error().contains("already exists"),
        "{}",
        again.stderr
    );

    // route dns: a proxied CNAME to <uuid>.cfargotunnel.com, visible with the cert's token.
    let host = "app.a.test";
    let out = cli.run(&["tunnel", "route", "dns", "t1", host]).ok();
    assert!(
        out.stderr.contains(&format!(
            "Added CNAME {host} which will route to this tunnel"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("tunnelID={id1}")),
        "{}",
        out.stderr
    );
    assert_tunnel_cname(&dns_records(cp, &zone_id, host, &api_token), host, &id1);

    let out = cli.run(&["tunnel", "route", "dns", "t1", host]).ok();
    assert!(
        out.stderr.contains(&format!(
            "{host} is already configured to route to your tunnel"
        )),
        "{}",
        out.stderr
    );
    assert_tunnel_cname(&dns_records(cp, &zone_id, host, &api_token), host, &id1);

    // Another tunnel on the same host: refused without --overwrite-dns, taken over with it.
    let refused = cli.run(&["tunnel", "route", "dns", "t2", host]);
    let line = refused.one_line_error();
    assert!(line.contains(host), "{line}");
    assert_tunnel_cname(&dns_records(cp, &zone_id, host, &api_token), host, &id1);
    let out = cli
        .run(&["tunnel", "route", "dns", "--overwrite-dns", "t2", host])
        .ok();
    assert!(
        out.stderr
            .contains(&format!("{host} updated to route to your tunnel")),
        "{}",
        out.stderr
    );
    assert_tunnel_cname(&dns_records(cp, &zone_id, host, &api_token), host, &id2);

    let pools_path = format!("/accounts/{acct}/load_balancers/pools");
    // route lb: a pool with the tunnel as origin and a load balancer using that pool.
    cli.run(&["tunnel", "route", "lb", "t1", "lb.a.test", "pool1"])
        .ok()
        .stderr_says("Created load balancer lb.a.test and added a new pool pool1 with this tunnel as an origin");
    let pools = get_result(cp, &pools_path, &api_token);
    let pool = find(pools.as_array().unwrap(), "name", "pool1").expect("pool1");
    assert_eq!(
        pool_origins(pool),
        [format!("{id1}.cfargotunnel.com")],
        "{pool}"
    );
    let lbs = get_result(cp, &format!("/zones/{zone_id}/load_balancers"), &api_token);
    let lb = find(lbs.as_array().unwrap(), "name", "lb.a.test").expect("lb.a.test");
    assert_eq!(lb["default_pools"], json!([pool["id"]]), "{lb}");
    assert_eq!(lb["fallback_pool"], pool["id"], "{lb}");

    // A second tunnel in the same pool: the pool gains an origin, the LB is unchanged.
    cli.run(&["tunnel", "route", "lb", "t2", "lb.a.test", "pool1"])
        .ok()
        .stderr_says("Added this tunnel as an origin in pool pool1 which is already used by load balancer lb.a.test");
    let pools = get_result(cp, &pools_path, &api_token);
    let pool = find(pools.as_array().unwrap(), "name", "pool1").unwrap();
    let addrs = pool_origins(pool);
    let mut want = vec![
        format!("{id1}.cfargotunnel.com"),
        format!("{id2}.cfargotunnel.com"),
    ];
    want.sort();
    assert_eq!(addrs, want);

    // cleanup: nothing to clean is fine.
    let out = cli.run(&["tunnel", "cleanup", "t1"]).ok();
    assert!(
        out.stderr
            .contains(&format!("Cleanup connection for tunnel {id1}")),
        "{}",
        out.stderr
    );

    // delete: gone from list, its credentials file removed, visible with -d only.
    let cred4 = cli.cloudflared_dir().join(format!("{id4}.json"));
    assert!(cred4.exists());
    let out = cli.run(&["tunnel", "delete", "t4"]).ok();
    assert_eq!(out.stdout, "");
    assert!(!cred4.exists(), "delete removes the credentials file");
    assert!(find(&cli.list_json(&[]), "id", &id4).is_none());
    let (_, rows) = list_table(cli);
    assert!(!rows.iter().any(|r| r.starts_with(&id4)), "{rows:?}");
    let with_deleted = cli.list_json(&["-d"]);
    let t4 = find(&with_deleted, "id", &id4).expect("deleted tunnel listed with -d");
    assert!(
        t4["deleted_at"].as_str().is_some_and(|d| !d.is_empty()),
        "{t4}"
    );
    assert!(find(&with_deleted, "id", &id1).unwrap()["deleted_at"].is_null());
    let (_, rows) = {
        let out = cli.run(&["tunnel", "list", "-d"]).ok().stdout;
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        (lines[1].clone(), lines[2..].to_vec())
    };
    assert!(rows.iter().any(|r| r.starts_with(&id4)), "{rows:?}");

    // A deleted tunnel cannot be deleted twice, and its name is free again.
    let twice = cli.run(&["tunnel", "delete", &id4]);
    assert!(
        twice.one_line_error().contains("already been deleted"),
        "{}",
        twice.stderr
    );
    let id4b = cli.create("t4", &[]);
    assert_ne!(id4b, id4);

    // delete by UUID works too, and removes the file found in the search directories.
    cli.run(&["tunnel", "delete", &id5]).ok();
    assert!(!cli.cloudflared_dir().join(format!("{id5}.json")).exists());
    let names: Vec<String> = cli
        .list_json(&[])
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["t1", "t2", "t3", "t4"]);
}

#[test]
fn delete_with_live_connections_needs_force() {
    let s = Setup::new(&["conn.test"]);
    let (cp, cli) = (&s.cp, &s.cli);
    let id = cli.create("busy", &[]);
    let client = uuid::Uuid::new_v4().to_string();
    let c0 = register_connection(cp, &id, &client, 0, "LAB", "edge-1", 60);
    register_connection(cp, &id, &client, 1, "LAB", "edge-1", 60);
    register_connection(cp, &id, &client, 2, "AMS", "edge-1", 60);

    // list: connections per colo, sorted, as cloudflared counts them.
    let (header, rows) = list_table(cli);
    let row = rows.iter().find(|r| r.starts_with(&id)).expect("row");
    assert_eq!(cell(&header, row, "CONNECTIONS"), "1xAMS, 2xLAB");
    let listed = cli.list_json(&[]);
    let conns = listed[0]["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 3, "{conns:?}");
    let first = find(conns, "id", &c0).expect("registered connection listed");
    assert_eq!(first["colo_name"], "LAB");
    assert_eq!(first["origin_ip"], "10.1.2.3");
    assert_eq!(first["is_pending_reconnect"], false);

    // info: the connector table.
    let out = cli.run(&["tunnel", "info", "busy"]).ok().stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "NAME:     busy");
    assert_eq!(lines[1], format!("ID:       {id}"));
    let created = lines[2].strip_prefix("CREATED:  ").expect("CREATED line");
    assert!(
        created.ends_with(" +0000 UTC"),
        "Go time.String(): {created:?}"
    );
    assert_eq!(lines[3], "");
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        [
            "CONNECTOR",
            "ID",
            "CREATED",
            "ARCHITECTURE",
            "VERSION",
            "ORIGIN",
            "IP",
            "EDGE"
        ]
    );
    let row = lines[5];
    assert!(row.starts_with(&format!("{client} ")), "{out}");
    for want in ["linux_amd64", "2024.1.0", "10.1.2.3", "1xAMS, 2xLAB"] {
        assert!(row.contains(want), "{want} in {row:?}");
    }
    assert_eq!(lines.len(), 6, "{out}");
    let out = cli
        .run(&["tunnel", "info", "-o", "json", "busy"])
        .ok()
        .stdout;
    let info: Value = serde_json::from_str(&out).unwrap();
    let connectors = info["conns"].as_array().unwrap();
    assert_eq!(connectors.len(), 1, "{info}");
    assert_eq!(connectors[0]["id"], client.as_str());
    assert_eq!(connectors[0]["arch"], "linux_amd64");
    assert_eq!(connectors[0]["version"], "2024.1.0");
    assert_eq!(connectors[0]["conns"].as_array().unwrap().len(), 3);

    // delete refuses while connected; -f cascades.
    let refused = cli.run(&["tunnel", "delete", "busy"]);
    let line = refused.one_line_error();
    assert!(line.contains(&id), "{line}");
    assert!(line.contains("connection"), "{line}");
    assert_eq!(cli.list_json(&[]).len(), 1, "still there");
    cli.run(&["tunnel", "delete", "-f", "busy"]).ok();
    assert!(cli.list_json(&[]).is_empty());
    assert!(!cli.cloudflared_dir().join(format!("{id}.json")).exists());

    // cleanup: one connector's records, then all of them.
    let id2 = cli.create("stale", &[]);
    let (a, b) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    register_connection(cp, &id2, &a, 0, "LAB", "edge-1", 60);
    let kept = register_connection(cp, &id2, &b, 0, "AMS", "edge-2", 60);
    cli.run(&["tunnel", "cleanup", "--connector-id", &a, "stale"])
        .ok();
    let conns = cli.list_json(&[])[0]["connections"].clone();
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0]["id"], kept.as_str());
    cli.run(&["tunnel", "cleanup", "stale"]).ok();
    assert_eq!(cli.list_json(&[])[0]["connections"], json!([]));
    // Now an ordinary delete is allowed.
    cli.run(&["tunnel", "delete", "stale"]).ok();
}
