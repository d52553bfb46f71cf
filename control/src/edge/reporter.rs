//! Connection records for the control plane: what `tunnel list` / `info` show.
//!
//! Workers report registrations through [`EdgeHooks`]; this thread turns them into
//! `POST /edge/v1/connections`, renews every live connection's lease in one call per interval,
//! re-registers ids the control plane forgot (it was down, or a lease lapsed), and deletes the
//! record when a connection goes. The data path never waits for any of it: a control plane
//! that is down only delays the records.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use dataplane::edge::{ConnectionInfo, EdgeHooks};
use time::OffsetDateTime;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::api::edge::RegisterConnection;
use crate::edge_sync::EdgeClient;

/// Lease the control plane grants each record; renewed every third of it.
pub const LEASE_SECS: u64 = 30;

enum Event {
    Registered(Box<ConnectionInfo>, OffsetDateTime),
    Closed(Uuid),
}

/// The [`EdgeHooks`] half: forwards events to the reporter thread.
#[derive(Debug, Clone)]
pub struct ReportingHooks {
    tx: Sender<Event>,
}

impl EdgeHooks for ReportingHooks {
    fn connection_registered(&self, info: &ConnectionInfo) {
        let _ = self.tx.send(Event::Registered(
            Box::new(info.clone()),
            OffsetDateTime::now_utc(),
        ));
    }

    fn connection_closed(&self, _tunnel: Uuid, id: Uuid) {
        let _ = self.tx.send(Event::Closed(id));
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Registered(i, _) => write!(f, "Registered({})", i.id),
            Event::Closed(id) => write!(f, "Closed({id})"),
        }
    }
}

/// Starts the reporter thread; returns the hooks to give the edge.
pub fn start(client: EdgeClient, edge_id: String, location: String) -> Arc<ReportingHooks> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("edge-reporter".into())
        .spawn(move || run(client, edge_id, location, rx))
        .expect("spawn the edge reporter thread");
    Arc::new(ReportingHooks { tx })
}

fn record(
    info: &ConnectionInfo,
    opened: OffsetDateTime,
    edge_id: &str,
    location: &str,
) -> RegisterConnection {
    RegisterConnection {
        id: info.id,
        tunnel_id: info.tunnel,
        client_id: info.client_id,
        client_version: info.version.clone(),
        arch: info.arch.clone(),
        features: info.features.clone(),
        conn_index: info.conn_index,
        colo_name: location.to_owned(),
        origin_ip: info
            .origin_local_ip
            .map_or_else(|| info.remote.ip().to_string(), |ip| ip.to_string()),
        edge_id: edge_id.to_owned(),
        opened_at: Some(opened),
        lease_secs: LEASE_SECS,
    }
}

fn run(client: EdgeClient, edge_id: String, location: String, rx: Receiver<Event>) {
    let mut live: HashMap<Uuid, RegisterConnection> = HashMap::new();
    // Records the control plane has not acknowledged yet (it was unreachable).
    let mut pending: HashMap<Uuid, ()> = HashMap::new();
    let renew_every = Duration::from_secs(LEASE_SECS / 3);
    let mut next_renew = Instant::now() + renew_every;
    let retry_every = Duration::from_secs(1);
    // Runs for the life of the process; each turn handles one event or one timer.
    loop {
        let wait = if pending.is_empty() {
            next_renew.saturating_duration_since(Instant::now())
        } else {
            retry_every.min(next_renew.saturating_duration_since(Instant::now()))
        };
        select! {
            recv(rx) -> ev => match ev {
                Ok(Event::Registered(info, opened)) => {
                    let rec = record(&info, opened, &edge_id, &location);
                    match client.register(&rec) {
                        Ok(()) => {
                            pending.remove(&rec.id);
                        }
                        Err(e) => {
                            warn!(error = %e, connection = %rec.id, "could not record the connection; will retry");
                            pending.insert(rec.id, ());
                        }
                    }
                    live.insert(rec.id, rec);
                }
                Ok(Event::Closed(id)) => {
                    pending.remove(&id);
                    if live.remove(&id).is_some()
                        && let Err(e) = client.unregister(id)
                    {
                        // Its lease expires on its own.
                        debug!(error = %e, connection = %id, "could not delete the connection record");
                    }
                }
                Err(_) => return,
            },
            default(wait) => {}
        }
        if !pending.is_empty() {
            let ids: Vec<Uuid> = pending.keys().copied().collect();
            for id in ids {
                if let Some(rec) = live.get(&id)
                    && client.register(rec).is_ok()
                {
                    pending.remove(&id);
                }
            }
        }
        if Instant::now() >= next_renew {
            next_renew = Instant::now() + renew_every;
            if live.is_empty() {
                continue;
            }
            let ids: Vec<Uuid> = live.keys().copied().collect();
            match client.renew(&edge_id, &ids, LEASE_SECS) {
                Ok(unknown) => {
                    for id in unknown {
                        if let Some(rec) = live.get(&id)
                            && client.register(rec).is_err()
                        {
                            pending.insert(id, ());
                        }
                    }
                }
                Err(e) => debug!(error = %e, "lease renewal failed; retrying next interval"),
            }
        }
    }
}
