//! The edge's side of the control plane: following the config snapshot and reporting
//! connections.
//!
//! The edge keeps serving the tunnels it knows while the control plane is down or unreachable,
//! and an edge restarted in that state serves them too, so:
//! - [`SnapshotCache`] keeps the last snapshot on disk, written atomically (temp file, fsync,
//!   rename, fsync of the directory), and is read at start before any network call;
//! - [`SnapshotFollower`] long-polls `/edge/v1/snapshot?since=V`, persists each newer version,
//!   then hands it to the caller; when the control plane is unreachable it backs off and keeps
//!   the version it has;
//! - [`EdgeClient`] registers, renews and deregisters connection records.
//!
//! All of it is blocking (ureq) and runs on the edge's control thread, never on a worker.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::edge::RegisterConnection;
use crate::client::{ApiClient, ClientError};
use crate::secret::ApiToken;
use crate::store::{SNAPSHOT_FORMAT, Snapshot};

/// How long one long-poll may wait on the server; the HTTP timeout is this plus slack.
const POLL_WAIT_SECS: u64 = 25;
/// Backoff after a failed poll: doubles from the first value up to the cap, so a control plane
/// that comes back is noticed within half a minute without hammering one that is down.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("snapshot cache {path}: {error}")]
    Cache { path: PathBuf, error: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("control plane sent a malformed snapshot: {0}")]
    Malformed(String),
}

/// The last snapshot, on disk.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    path: PathBuf,
}

impl SnapshotCache {
    pub const FILE: &'static str = "snapshot.json";

    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(Self::FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> SyncError {
        SyncError::Cache {
            path: self.path.clone(),
            error: e.to_string(),
        }
    }

    /// The cached snapshot; `None` when there is none yet. A file an older build left
    /// readable by others is tightened to 0600 first: it lists every tenant's tunnels and
    /// secret hashes.
    pub fn load(&self) -> Result<Option<Snapshot>, SyncError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                let mode = fs::metadata(&self.path)
                    .map_err(|e| self.err(e))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    fs::set_permissions(&self.path, fs::Permissions::from_mode(0o600))
                        .map_err(|e| self.err(e))?;
                }
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| self.err(e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Replaces the cached snapshot atomically: a crash leaves the old file or the new one,
    /// never a torn one.
    pub fn store(&self, snap: &Snapshot) -> Result<(), SyncError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        // The state directory also holds the edge's private keys. Best effort: a directory
        // someone else owns keeps its mode, and the files in it are private anyway.
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let body = serde_json::to_vec(snap).map_err(|e| self.err(e))?;
        // 0600: the snapshot holds every tenant's tunnel ids and secret hashes.
        crate::files::replace_atomically(&self.path, &body, 0o600).map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Edge-facing API calls, with the edge token.
#[derive(Debug)]
pub struct EdgeClient {
    api: ApiClient,
    /// Long-polls need a longer HTTP timeout than ordinary calls.
    poll: ApiClient,
}

impl EdgeClient {
    /// `control` is the control plane's base URL (`http://host:port`).
    pub fn new(control: &str, token: ApiToken) -> Self {
        let base = format!("{}/edge/v1", control.trim_end_matches('/'));
        Self {
            api: ApiClient::new(&base, token.clone()),
            poll: ApiClient::with_timeout(&base, token, Duration::from_secs(POLL_WAIT_SECS + 10)),
        }
    }

    /// Waits (up to `POLL_WAIT_SECS`) for a snapshot newer than `since`; `None` when none came.
    fn poll_snapshot(&self, since: u64) -> Result<Option<Snapshot>, SyncError> {
        let ans = self
            .poll
            .get_maybe_unchanged(&format!("/snapshot?since={since}&wait={POLL_WAIT_SECS}"))?;
        match ans {
            None => Ok(None),
            Some(a) => serde_json::from_value(a.result)
                .map(Some)
                .map_err(|e| SyncError::Malformed(e.to_string())),
        }
    }

    pub fn register(&self, rec: &RegisterConnection) -> Result<(), SyncError> {
        self.api.post("/connections", rec)?;
        Ok(())
    }

    /// Renews leases; returns the ids the control plane no longer knows.
    pub fn renew(
        &self,
        edge_id: &str,
        ids: &[Uuid],
        lease_secs: u64,
    ) -> Result<Vec<Uuid>, SyncError> {
        let ans = self.api.post(
            "/leases",
            &json!({"edge_id": edge_id, "ids": ids, "lease_secs": lease_secs}),
        )?;
        let unknown = ans.result.get("unknown").cloned().unwrap_or(Value::Null);
        serde_json::from_value(unknown).map_err(|e| SyncError::Malformed(e.to_string()))
    }

    pub fn unregister(&self, id: Uuid) -> Result<(), SyncError> {
        self.api.delete(&format!("/connections/{id}"))?;
        Ok(())
    }
}

/// Follows the control plane's snapshot, persisting each version before using it.
#[derive(Debug)]
pub struct SnapshotFollower {
    client: EdgeClient,
    cache: SnapshotCache,
    current: Option<Snapshot>,
    backoff: Duration,
}

impl SnapshotFollower {
    /// Loads the cached snapshot first, so the edge can serve before the control plane
    /// answers (or while it never does).
    pub fn new(client: EdgeClient, cache: SnapshotCache) -> Result<Self, SyncError> {
        let current = cache.load()?;
        Ok(Self {
            client,
            cache,
            current,
            backoff: BACKOFF_FIRST,
        })
    }

    pub fn current(&self) -> Option<&Snapshot> {
        self.current.as_ref()
    }

    /// The version to poll from. A cached snapshot of an older format counts as none, so the
    /// next poll fetches the current one even when the control plane's version did not move.
    pub fn version(&self) -> u64 {
        self.current
            .as_ref()
            .filter(|s| s.format >= SNAPSHOT_FORMAT)
            .map_or(0, |s| s.version)
    }

    /// One long-poll round. Returns the new snapshot when one arrived (already on disk);
    /// `Ok(None)` when the poll timed out unchanged; on error the caller should `backoff()`.
    pub fn step(&mut self) -> Result<Option<&Snapshot>, SyncError> {
        let got = self.client.poll_snapshot(self.version())?;
        self.backoff = BACKOFF_FIRST;
        match got {
            Some(snap) if snap.version > self.version() => {
                self.cache.store(&snap)?;
                self.current = Some(snap);
                Ok(self.current.as_ref())
            }
            _ => Ok(None),
        }
    }

    /// Sleeps after a failure, doubling the wait up to the cap.
    pub fn backoff(&mut self) {
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
    }

    /// Follows forever (until `keep_going` says stop), calling `on_update` with every newer
    /// snapshot. Control-plane failures are logged and retried; serving never waits on them.
    pub fn run(
        &mut self,
        mut keep_going: impl FnMut() -> bool,
        mut on_update: impl FnMut(&Snapshot),
    ) {
        while keep_going() {
            match self.step() {
                Ok(Some(snap)) => {
                    tracing::info!(version = snap.version, "config snapshot updated");
                    on_update(snap);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, version = self.version(), "snapshot poll failed; serving the cached version");
                    self.backoff();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(version: u64) -> Snapshot {
        Snapshot {
            version,
            format: SNAPSHOT_FORMAT,
            tunnel_suffix: "cfargotunnel.com".into(),
            tunnels: vec![],
            zones: vec![],
            dns_records: vec![],
            pools: vec![],
            load_balancers: vec![],
        }
    }

    #[test]
    fn cache_is_private_and_a_loose_one_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path());
        cache.store(&snap(1)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(cache.path()), 0o600);
        fs::set_permissions(cache.path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(cache.load().unwrap().unwrap().version, 1);
        assert_eq!(mode(cache.path()), 0o600);
    }

    #[test]
    fn an_old_format_cache_is_read_but_polled_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path());
        // What a build before snapshot format 2 cached: no format, suffix, zones or accounts.
        fs::write(
            cache.path(),
            br#"{"version":7,"tunnels":[],"dns_records":[],"pools":[],"load_balancers":[]}"#,
        )
        .unwrap();
        let client = EdgeClient::new("http://127.0.0.1:9", ApiToken::new("x".into()));
        let f = SnapshotFollower::new(client, cache).unwrap();
        assert_eq!(f.current().unwrap().version, 7);
        assert_eq!(f.current().unwrap().format, 0);
        assert_eq!(
            f.version(),
            0,
            "the next poll must fetch a current snapshot"
        );
    }

    #[test]
    fn cache_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path());
        assert!(cache.load().unwrap().is_none());
        cache.store(&snap(3)).unwrap();
        cache.store(&snap(4)).unwrap();
        assert_eq!(cache.load().unwrap().unwrap().version, 4);
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SnapshotCache::FILE)]);
    }

    #[test]
    fn a_torn_cache_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path());
        fs::write(cache.path(), b"{\"version\": 1, \"tunn").unwrap();
        let e = cache.load().unwrap_err().to_string();
        assert!(e.contains("snapshot.json"), "{e}");
    }

    #[test]
    fn follower_starts_from_the_cache_without_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path());
        cache.store(&snap(9)).unwrap();
        // Port 9 on loopback: nothing listens; constructing must not touch the network.
        let client = EdgeClient::new("http://127.0.0.1:9", ApiToken::new("x".into()));
        let mut f = SnapshotFollower::new(client, cache).unwrap();
        assert_eq!(f.version(), 9);
        assert!(
            f.step().is_err(),
            "an unreachable control plane is an error"
        );
        assert_eq!(f.version(), 9, "and the cached version stays");
    }
}
