//! Live connector connections, as each worker sees them.
//!
//! A QUIC connection belongs to the worker that accepted it, but any worker may receive a
//! public request for its tunnel. So every worker keeps its own copy of this registry, updated
//! by messages broadcast from the owning worker (no shared lock). The one shared thing per
//! connection is its open-stream counter, an atomic, so "fewest open streams" is judged on the
//! same numbers everywhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// One registered connection, as broadcast to every worker.
#[derive(Debug)]
pub struct LiveConn {
    /// The connection's id (given to the connector in `ConnectionDetails.uuid`).
    pub id: Uuid,
    pub tunnel: Uuid,
    /// The connector process (`ClientInfo.clientId`).
    pub client_id: Uuid,
    pub conn_index: u8,
    /// The worker that owns the QUIC connection.
    pub worker: usize,
    /// The connector's address as the edge sees it.
    pub remote: SocketAddr,
    /// Data streams open on it right now.
    pub streams: AtomicUsize,
    /// Streams the connector admits at once on it: its HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`
    /// (250 on the stock cloudflared); `usize::MAX` on QUIC, whose stream credit the driver
    /// keeps ahead of demand.
    pub stream_limit: usize,
    /// When the owner last saw a datagram from the connector, in ms since [`epoch`]; updated
    /// by the owning worker several times a second.
    pub last_rx_ms: AtomicU64,
}

/// A connection that has sent nothing for this long is not routed to (see
/// [`crate::quic::SILENT_PEER`]).
pub const STALE_AFTER: Duration = crate::quic::SILENT_PEER;

/// The process-wide time origin for `last_rx_ms`.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn ms_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_millis() as u64
}

impl LiveConn {
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Whether a new stream would wait for one of the open ones to end.
    pub fn is_full(&self) -> bool {
        self.open_streams() >= self.stream_limit
    }

    /// Records that the connector was heard from at `t`.
    pub fn heard_at(&self, t: Instant) {
        self.last_rx_ms
            .fetch_max(ms_since_epoch(t), Ordering::Relaxed);
    }

    /// Whether the connector was heard from within [`STALE_AFTER`] of `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        ms_since_epoch(now).saturating_sub(self.last_rx_ms.load(Ordering::Relaxed))
            <= STALE_AFTER.as_millis() as u64
    }
}

/// Per-worker registry: tunnel → its live connections.
#[derive(Debug, Default)]
pub struct Registry {
    by_tunnel: HashMap<Uuid, Vec<Arc<LiveConn>>>,
    /// Rotates the starting point among equally loaded connections, so idle replicas share
    /// sequential traffic instead of the first one taking all of it.
    rotation: usize,
}

impl Registry {
    pub fn add(&mut self, conn: Arc<LiveConn>) {
        let list = self.by_tunnel.entry(conn.tunnel).or_default();
        if !list.iter().any(|c| c.id == conn.id) {
            list.push(conn);
        }
    }

    /// Removes a connection; returns it if it was there.
    pub fn remove(&mut self, tunnel: Uuid, id: Uuid) -> Option<Arc<LiveConn>> {
        let list = self.by_tunnel.get_mut(&tunnel)?;
        let pos = list.iter().position(|c| c.id == id)?;
        let conn = list.swap_remove(pos);
        if list.is_empty() {
            self.by_tunnel.remove(&tunnel);
        }
        Some(conn)
    }

    /// The connection registered at `index` by the connector `client_id`, if any.
    pub fn find_index(&self, tunnel: Uuid, client_id: Uuid, index: u8) -> Option<&Arc<LiveConn>> {
        self.by_tunnel
            .get(&tunnel)?
            .iter()
            .find(|c| c.client_id == client_id && c.conn_index == index)
    }

    /// Streams open on all of `tunnel`'s connections (every replica), for the per-tunnel cap.
    /// Each worker reads the same shared counters, so the cap holds across workers up to the
    /// few requests that pass the check at the same instant on different workers.
    pub fn tunnel_streams(&self, tunnel: Uuid) -> usize {
        self.by_tunnel
            .get(&tunnel)
            .map_or(0, |l| l.iter().map(|c| c.open_streams()).sum())
    }

    /// The connection of `tunnel` with the fewest open streams, across every replica; ties go
    /// round-robin. Stalled streams (a client that does not read) count like any other: a
    /// connection full of them is not preferred, though since the connection window is sized
    /// never to bind (`edge::limits`) they no longer slow its other streams.
    pub fn pick(&mut self, tunnel: Uuid) -> Option<Arc<LiveConn>> {
        self.pick_where(tunnel, |_| true)
    }

    /// Like [`Registry::pick`], among the connections `worker` owns.
    pub fn pick_on_worker(&mut self, tunnel: Uuid, worker: usize) -> Option<Arc<LiveConn>> {
        self.pick_where(tunnel, |c| c.worker == worker)
    }

    fn pick_where(
        &mut self,
        tunnel: Uuid,
        ok: impl Fn(&LiveConn) -> bool,
    ) -> Option<Arc<LiveConn>> {
        let now = Instant::now();
        let ok = |c: &LiveConn| ok(c) && c.is_fresh(now);
        let list = self.by_tunnel.get(&tunnel)?;
        let n = list.len();
        self.rotation = self.rotation.wrapping_add(1);
        let start = self.rotation % n;
        // Bound: the tunnel's connections (a handful per replica).
        let mut best: Option<&Arc<LiveConn>> = None;
        for i in 0..n {
            let c = &list[(start + i) % n];
            if ok(c) && best.is_none_or(|b| c.open_streams() < b.open_streams()) {
                best = Some(c);
            }
        }
        best.cloned()
    }

    /// The connection `id` of `tunnel`, if it is still registered.
    pub fn connection(&self, tunnel: Uuid, id: Uuid) -> Option<Arc<LiveConn>> {
        self.by_tunnel
            .get(&tunnel)?
            .iter()
            .find(|c| c.id == id)
            .cloned()
    }

    /// Whether `tunnel` has a connection that can be routed to now (registered and fresh).
    pub fn is_healthy(&self, tunnel: Uuid) -> bool {
        let now = Instant::now();
        self.by_tunnel
            .get(&tunnel)
            .is_some_and(|l| l.iter().any(|c| c.is_fresh(now)))
    }

    pub fn total(&self) -> usize {
        self.by_tunnel.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(tunnel: Uuid, client: Uuid, index: u8, worker: usize) -> Arc<LiveConn> {
        Arc::new(LiveConn {
            id: Uuid::new_v4(),
            tunnel,
            client_id: client,
            conn_index: index,
            worker,
            remote: "127.0.0.1:1".parse().unwrap(),
            streams: AtomicUsize::new(0),
            stream_limit: usize::MAX,
            last_rx_ms: AtomicU64::new(ms_since_epoch(Instant::now())),
        })
    }

    #[test]
    fn edge_registry_picks_fewest_streams_and_rotates_ties() {
        let t = Uuid::new_v4();
        let mut r = Registry::default();
        let a = conn(t, Uuid::new_v4(), 0, 0);
        let b = conn(t, Uuid::new_v4(), 0, 1);
        r.add(a.clone());
        r.add(b.clone());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            seen.insert(r.pick(t).unwrap().id);
        }
        assert_eq!(seen.len(), 2, "idle replicas share traffic");
        a.streams.store(5, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(r.pick(t).unwrap().id, b.id);
        }
        assert!(r.remove(t, b.id).is_some());
        assert_eq!(r.pick(t).unwrap().id, a.id);
        assert!(r.remove(t, a.id).is_some());
        assert!(r.pick(t).is_none());
        assert_eq!(r.total(), 0);
    }

    #[test]
    fn edge_registry_skips_connections_not_heard_from() {
        let t = Uuid::new_v4();
        let mut r = Registry::default();
        let quiet = conn(t, Uuid::new_v4(), 0, 0);
        quiet.last_rx_ms.store(0, Ordering::Relaxed);
        let _ = epoch();
        std::thread::sleep(STALE_AFTER + Duration::from_millis(50));
        r.add(quiet.clone());
        assert!(r.pick(t).is_none(), "a silent connection is not routed to");
        assert!(!r.is_healthy(t));
        quiet.heard_at(Instant::now());
        assert_eq!(r.pick(t).unwrap().id, quiet.id);
        assert!(r.is_healthy(t));
    }

    #[test]
    fn edge_registry_counts_a_tunnels_streams_and_avoids_a_stalled_connection() {
        let t = Uuid::new_v4();
        let mut r = Registry::default();
        let stalled = conn(t, Uuid::new_v4(), 0, 0);
        let fresh = conn(t, Uuid::new_v4(), 1, 0);
        r.add(stalled.clone());
        r.add(fresh.clone());
        r.add(conn(Uuid::new_v4(), Uuid::new_v4(), 0, 0));
        // Sixteen clients that never read hold sixteen streams open on one connection.
        stalled.streams.store(16, Ordering::Relaxed);
        fresh.streams.store(2, Ordering::Relaxed);
        assert_eq!(r.tunnel_streams(t), 18);
        assert_eq!(r.tunnel_streams(Uuid::new_v4()), 0);
        for _ in 0..8 {
            assert_eq!(r.pick(t).unwrap().id, fresh.id);
        }
    }

    #[test]
    fn edge_registry_finds_an_index_per_connector() {
        let t = Uuid::new_v4();
        let client = Uuid::new_v4();
        let mut r = Registry::default();
        r.add(conn(t, client, 2, 0));
        assert!(r.find_index(t, client, 2).is_some());
        assert!(r.find_index(t, client, 1).is_none());
        assert!(r.find_index(t, Uuid::new_v4(), 2).is_none());
    }
}
