//! Per-worker keep-alive pools: idle origin connections keyed by where they go and how they
//! were secured, so a connection is only reused for an identical origin.
//!
//! Newest first (LIFO): the most recently used connection is the least likely to have been
//! closed by the origin's own idle timer. Expiry is checked on checkout and check-in, so no
//! timer task runs; an idle connection costs one fd until the next request to its origin.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::conn::{Conn, OriginAddr};
use super::tls::TlsKey;

/// Identity of a pool: a pooled connection may serve any request with the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) addr: OriginAddr,
    /// `None` for cleartext; else the verified server name and the trust settings.
    pub(crate) tls: Option<(String, TlsKey)>,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Pool {
    map: HashMap<PoolKey, VecDeque<Idle>>,
}

impl Pool {
    /// The newest idle connection for `key` that has not expired and still looks alive.
    /// Expired and dead connections met on the way are closed.
    pub(crate) fn checkout(
        &mut self,
        key: &PoolKey,
        now: Instant,
        max_idle: Duration,
    ) -> Option<Conn> {
        let queue = self.map.get_mut(key)?;
        let mut found = None;
        // Bound: the queue never holds more than keep_alive_connections entries, and each
        // round removes one.
        while let Some(idle) = queue.pop_back() {
            if now.saturating_duration_since(idle.since) >= max_idle {
                // Everything older is expired too.
                queue.clear();
                break;
            }
            if idle.conn.idle_alive() {
                found = Some(idle.conn);
                break;
            }
        }
        if queue.is_empty() {
            self.map.remove(key);
        }
        found
    }

    /// Returns a connection for reuse. Beyond `max` idle connections the oldest is closed;
    /// `max == 0` disables pooling.
    pub(crate) fn checkin(
        &mut self,
        key: PoolKey,
        conn: Conn,
        now: Instant,
        max: u32,
        max_idle: Duration,
    ) {
        if max == 0 {
            return;
        }
        let queue = self.map.entry(key).or_default();
        // Drop expired ones from the old end while we are here. Bound: queue length.
        while queue
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) >= max_idle)
        {
            queue.pop_front();
        }
        // Bound: the queue is at most `max` long before this push, so at most one pop
        // unless `max` shrank with a configuration reload.
        while queue.len() >= max as usize {
            queue.pop_front();
        }
        queue.push_back(Idle { conn, since: now });
    }

    pub(crate) fn idle_count(&self) -> usize {
        self.map.values().map(VecDeque::len).sum()
    }
}
