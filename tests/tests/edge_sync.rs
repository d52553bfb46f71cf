//! The edge's snapshot follower against the real control plane: DNS changes arrive by
//! long-poll, each version is on disk before it is used, and a restart with the control plane
//! dead starts from the cached snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use control::edge_sync::{EdgeClient, SnapshotCache, SnapshotFollower};
use control::secret::ApiToken;
use ringway_tests::cli::{Setup, created_id};

#[test]
fn follower_gets_dns_changes_and_survives_a_dead_control_plane() {
    let mut s = Setup::new(&["sync.test"]);
    let state = s.tmp.path().join("edge-state");
    let cache = SnapshotCache::new(&state);
    let client = EdgeClient::new(&s.cp.url, ApiToken::new(s.cp.edge_token()));
    let mut follower = SnapshotFollower::new(client, cache.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let st = stop.clone();
    let worker = std::thread::spawn(move || {
        follower.run(
            || !st.load(Ordering::Relaxed),
            |snap| {
                let names = snap.dns_records.iter().map(|r| r.name.clone()).collect();
                let _ = tx.send(names);
            },
        );
    });

    let out = s.cli.run(&["tunnel", "create", "web"]).ok();
    let id = created_id(&out.stdout, "web");
    s.cli
        .run(&["tunnel", "route", "dns", "web", "app.sync.test"])
        .ok();
    // Failure limit only: the change normally arrives within milliseconds of the write.
    let mut seen = false;
    while let Ok(names) = rx.recv_timeout(Duration::from_secs(30)) {
        if names.iter().any(|n| n == "app.sync.test") {
            seen = true;
            break;
        }
    }
    assert!(seen, "the DNS route never reached the follower");
    let on_disk = cache.load().unwrap().expect("snapshot persisted");
    assert!(
        on_disk
            .dns_records
            .iter()
            .any(|r| r.name == "app.sync.test" && r.content == format!("{id}.cfargotunnel.com"))
    );
    assert!(on_disk.tunnels.iter().any(|t| t.id.to_string() == id));

    // The control plane dies; a restarted edge starts from the cache, with no network.
    s.cp.proc.kill9();
    stop.store(true, Ordering::Relaxed);
    let client = EdgeClient::new(&s.cp.url, ApiToken::new(s.cp.edge_token()));
    let restarted = SnapshotFollower::new(client, cache.clone()).unwrap();
    assert_eq!(restarted.version(), on_disk.version);
    assert!(
        restarted
            .current()
            .unwrap()
            .dns_records
            .iter()
            .any(|r| r.name == "app.sync.test")
    );
    // The old follower notices nothing more; its poll fails and it stops on the flag.
    worker.join().unwrap();
}
