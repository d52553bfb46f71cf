//! The SQLite store's own rules: uniqueness among live tunnels, scoping, address-record
//! conflicts, version bumps.

use super::*;

fn store_with_zone() -> (SqliteStore, Account, Zone) {
    let s = SqliteStore::open_in_memory().unwrap();
    let a = s.create_account("acme").unwrap();
    let z = s.create_zone(&a.id, "Example.COM").unwrap();
    (s, a, z)
}

#[test]
fn tunnel_names_are_unique_among_live_tunnels_only() {
    let (s, a, _) = store_with_zone();
    let t = s.create_tunnel(&a.id, "web", &[7; 32]).unwrap();
    assert!(matches!(
        s.create_tunnel(&a.id, "web", &[8; 32]),
        Err(StoreError::Conflict(_))
    ));
    s.delete_tunnel(&a.id, t.id).unwrap();
    let t2 = s.create_tunnel(&a.id, "web", &[9; 32]).unwrap();
    assert_ne!(t.id, t2.id);
    let deleted = s
        .list_tunnels(
            &a.id,
            &TunnelFilter {
                is_deleted: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].id, t.id);
    let live = s
        .list_tunnels(
            &a.id,
            &TunnelFilter {
                is_deleted: Some(false),
                name: Some("web".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, t2.id);
}

#[test]
fn tunnels_are_scoped_to_their_account() {
    let (s, a, _) = store_with_zone();
    let b = s.create_account("other").unwrap();
    let t = s.create_tunnel(&a.id, "web", &[7; 32]).unwrap();
    assert!(s.tunnel(&b.id, t.id).unwrap().is_none());
    assert!(matches!(
        s.delete_tunnel(&b.id, t.id),
        Err(StoreError::NotFound(_))
    ));
    assert!(
        s.list_tunnels(&b.id, &TunnelFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn writes_bump_the_snapshot_version_and_snapshot_has_hashes_not_secrets() {
    let (s, a, z) = store_with_zone();
    let v0 = s.snapshot_version().unwrap();
    let t = s
        .create_tunnel(&a.id, "web", b"0123456789abcdef0123456789abcdef")
        .unwrap();
    let v1 = s.snapshot_version().unwrap();
    assert!(v1 > v0);
    s.create_dns(
        &z.id,
        &NewDnsRecord {
            record_type: "CNAME".into(),
            name: "App.example.com".into(),
            content: format!("{}.cfargotunnel.com", t.id),
            proxied: true,
            ttl: 1,
        },
    )
    .unwrap();
    let snap = s.snapshot().unwrap();
    assert!(snap.version > v1);
    assert_eq!(snap.dns_records[0].name, "app.example.com");
    assert_eq!(snap.dns_records[0].zone_name, "example.com");
    assert_eq!(
        snap.tunnels[0].secret_sha256,
        hex::encode(Sha256::digest(b"0123456789abcdef0123456789abcdef"))
    );
    let json = serde_json::to_string(&snap).unwrap();
    assert!(!json.contains("0123456789abcdef0123456789abcdef"));
}

#[test]
fn leases_renew_and_expire() {
    let (s, a, _) = store_with_zone();
    let t = s.create_tunnel(&a.id, "web", &[1; 32]).unwrap();
    let rec = ConnectionRecord {
        id: Uuid::new_v4(),
        tunnel_id: t.id,
        client_id: Uuid::new_v4(),
        client_version: "test".into(),
        arch: "linux_amd64".into(),
        features: vec![],
        conn_index: 0,
        colo_name: "lab".into(),
        origin_ip: "127.0.0.1".into(),
        edge_id: "edge-1".into(),
        opened_at: now(),
        lease_expires_ms: 1_000,
    };
    s.register_connection(&rec).unwrap();
    let ghost = Uuid::new_v4();
    assert_eq!(
        s.renew_leases("edge-1", &[rec.id, ghost], 5_000).unwrap(),
        vec![ghost]
    );
    // Another edge cannot renew a lease it does not hold.
    assert_eq!(
        s.renew_leases("edge-2", &[rec.id], 9_000).unwrap(),
        vec![rec.id]
    );
    assert_eq!(s.expire_connections(4_999).unwrap(), 0);
    assert_eq!(s.list_connections(t.id).unwrap().len(), 1);
    assert_eq!(s.expire_connections(5_001).unwrap(), 1);
    assert!(s.list_connections(t.id).unwrap().is_empty());
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringway.db");
    let id = {
        let s = SqliteStore::open(&path).unwrap();
        let a = s.create_account("acme").unwrap();
        s.create_tunnel(&a.id, "web", &[3; 32]).unwrap();
        a.id
    };
    let s = SqliteStore::open(&path).unwrap();
    let ts = s.list_tunnels(&id, &TunnelFilter::default()).unwrap();
    assert_eq!(ts.len(), 1);
    assert_eq!(s.tunnel_secret(&id, ts[0].id).unwrap(), vec![3; 32]);
}
