//! Connection events from the workers: cloudflared's log lines, and the decision to exit when
//! no connection can ever be made (every one was refused with a permanent cause `--retries`
//! times in a row, e.g. a wrong secret).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use dataplane::connector::{ConnectionError, ConnectorHooks, Protocol, Switch};
use dataplane::wire::rpc::ConnectionDetails;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::{error, info, warn};
use uuid::Uuid;

use super::error::ConnectorError;

/// What the control thread waits for.
#[derive(Debug)]
pub enum Event {
    GaveUp {
        index: u8,
        error: ConnectionError,
    },
    /// `--max-failures`: every connection failed that many attempts in a row.
    MaxFailures {
        max: u32,
        error: ConnectionError,
    },
}

/// Logs connection events the way cloudflared does, and reports give-ups.
#[derive(Debug)]
pub struct LoggingHooks {
    tx: UnboundedSender<Event>,
    /// `--max-failures`: exit once every connection has failed this many attempts in a row.
    max_failures: Option<u32>,
    /// Consecutive failed attempts per connection index (reset by a registration).
    failures: Vec<AtomicU32>,
    exhausted: AtomicBool,
    /// `--pidfile`: written once, when the first connection registers.
    pidfile: Option<std::path::PathBuf>,
    pid_written: AtomicBool,
}

/// The receiving side, with how many connections must give up before the process exits.
#[derive(Debug)]
pub struct Events {
    rx: UnboundedReceiver<Event>,
    connections: u8,
    tunnel: Uuid,
}

impl LoggingHooks {
    pub fn new(connections: u8, tunnel: Uuid, max_failures: Option<u32>) -> (Self, Events) {
        let (tx, rx) = unbounded_channel();
        (
            Self {
                tx,
                max_failures,
                failures: (0..connections).map(|_| AtomicU32::new(0)).collect(),
                exhausted: AtomicBool::new(false),
                pidfile: None,
                pid_written: AtomicBool::new(false),
            },
            Events {
                rx,
                connections,
                tunnel,
            },
        )
    }
}

impl LoggingHooks {
    /// Writes this process's PID to `path` once the first connection registers: a
    /// supervisor reading the file then knows the tunnel is serving.
    pub fn with_pidfile(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.pidfile = path;
        self
    }

    fn write_pidfile(&self) {
        let Some(path) = &self.pidfile else { return };
        if self.pid_written.swap(true, Ordering::Relaxed) {
            return;
        }
        // Like cloudflared: no parent directory is created, and a failure is logged while the
        // tunnel keeps serving.
        let pid = format!("{}\n", std::process::id());
        if let Err(e) = std::fs::write(path, pid) {
            error!("Unable to write pid to {}: {e}", path.display());
        }
    }
}

impl ConnectorHooks for LoggingHooks {
    fn registered(
        &self,
        index: u8,
        edge: SocketAddr,
        protocol: Protocol,
        details: &ConnectionDetails,
    ) {
        if let Some(f) = self.failures.get(index as usize) {
            f.store(0, Ordering::Relaxed);
        }
        info!(
            "Registered tunnel connection connIndex={index} connection={} event=0 ip={} location={} protocol={protocol}",
            details.uuid,
            edge.ip(),
            details.location_name
        );
        self.write_pidfile();
    }

    fn protocol_changed(&self, index: u8, switch: &Switch) {
        // cloudflared's two messages: a fallback, and a return to the preferred protocol.
        let after = switch.after.as_secs_f64();
        match switch.to {
            Protocol::Http2 => warn!(
                "Switching to fallback protocol {} connIndex={index} reason=\"{}\" after={after:.1}s attempts={}",
                switch.to, switch.reason, switch.attempts
            ),
            Protocol::Quic => info!(
                "Changing protocol to {} connIndex={index} reason=\"{}\" after={after:.1}s",
                switch.to, switch.reason
            ),
        }
    }

    fn disconnected(&self, index: u8, edge: SocketAddr, reason: &ConnectionError) {
        warn!(
            "Connection terminated connIndex={index} ip={} error=\"{reason}\"; reconnecting",
            edge.ip()
        );
    }

    fn attempt_failed(
        &self,
        index: u8,
        edge: SocketAddr,
        error: &ConnectionError,
        retry_in: Duration,
    ) {
        if let (Some(max), Some(f)) = (self.max_failures, self.failures.get(index as usize)) {
            f.fetch_add(1, Ordering::Relaxed);
            let all = self
                .failures
                .iter()
                .all(|c| c.load(Ordering::Relaxed) >= max);
            if all && !self.exhausted.swap(true, Ordering::Relaxed) {
                let _ = self.tx.send(Event::MaxFailures {
                    max,
                    error: error.clone(),
                });
            }
        }
        warn!(
            "Serve tunnel error connIndex={index} ip={} error=\"{error}\"; retrying in {:.1}s",
            edge.ip(),
            retry_in.as_secs_f64()
        );
    }

    fn failing(&self, index: u8, error: &ConnectionError, attempts: u32) {
        error!(
            "Connection connIndex={index} failed {attempts} attempts in a row: {error}; retrying at the backoff cap"
        );
    }

    fn gave_up(&self, index: u8, error: &ConnectionError) {
        error!("Connection connIndex={index} gave up: {error}");
        let _ = self.tx.send(Event::GaveUp {
            index,
            error: error.clone(),
        });
    }
}

/// Blocks until SIGINT/SIGTERM (`Ok`) or until every connection gave up (`Err` naming why).
pub fn wait(mut events: Events, reload: impl Fn()) -> Result<(), ConnectorError> {
    let rt = signal_runtime()?;
    rt.block_on(async move {
        let signal = crate::signal::shutdown_signal();
        tokio::pin!(signal);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(ConnectorError::Signals)?;
        let mut gave_up = 0u8;
        loop {
            tokio::select! {
                () = &mut signal => return Ok(()),
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the configuration");
                    reload();
                }
                ev = events.rx.recv() => match ev {
                    Some(Event::GaveUp { index, error }) => {
                        gave_up += 1;
                        tracing::debug!(index, "connection gave up");
                        if gave_up >= events.connections {
                            return Err(ConnectorError::GaveUp { tunnel: events.tunnel, cause: error });
                        }
                    }
                    Some(Event::MaxFailures { max, error }) => {
                        return Err(ConnectorError::MaxFailures { tunnel: events.tunnel, max, cause: error });
                    }
                    None => return Ok(()),
                },
            }
        }
    })
}

/// Waits for the workers to finish their graceful shutdown; a second SIGINT/SIGTERM exits the
/// process at once.
pub fn join_or_second_signal(
    connector: dataplane::connector::Connector,
) -> Result<(), ConnectorError> {
    let rt = signal_runtime()?;
    rt.block_on(async move {
        let join = tokio::task::spawn_blocking(move || connector.join());
        tokio::select! {
            () = crate::signal::shutdown_signal() => {
                warn!("second signal: exiting now");
                std::process::exit(1);
            }
            r = join => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ConnectorError::Workers(e)),
                Err(e) => Err(ConnectorError::Shutdown(e)),
            },
        }
    })
}

/// The control thread's small runtime: it only waits on signals and events.
fn signal_runtime() -> Result<tokio::runtime::Runtime, ConnectorError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ConnectorError::Signals)
}
