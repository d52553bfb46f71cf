//! Counters for one connector process, and their Prometheus text rendering.
//!
//! One [`TunnelMetrics`] is shared as `Arc<TunnelMetrics>` by every worker thread; the data
//! path bumps it once or twice per request. Every field is an atomic updated with `Relaxed`
//! ordering: the counters are independent of each other and of any other memory, a scrape only
//! needs each value to be a recent one, and a lock here would be the one lock shared between
//! workers on the request path (the crate's rules forbid that). The counters touched per
//! request sit on their own cache lines so that workers bumping different counters do not
//! false-share.
//!
//! The metrics server (`control::metrics_server`) reads the counters with
//! [`TunnelMetrics::render_prometheus`] (text exposition format 0.0.4) and
//! [`TunnelMetrics::ready_connections`] (for `/ready`). Names follow cloudflared where a
//! cloudflared metric means the same thing (`cloudflared_tunnel_*`); ringway's own are under
//! `ringway_`.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};

use crate::connector::Protocol;

/// Lowest HTTP status counted per code.
const MIN_STATUS: u16 = 100;
/// Highest HTTP status counted per code.
const MAX_STATUS: u16 = 599;
const STATUS_SLOTS: usize = (MAX_STATUS - MIN_STATUS + 1) as usize;

/// The `rpcName` label of `cloudflared_tunnel_tunnel_register_fail`, as cloudflared writes it.
const REGISTER_RPC_NAME: &str = "registerConnection";

/// Why registering a connection with the edge failed; the `error` label of
/// `cloudflared_tunnel_tunnel_register_fail`, with cloudflared's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegistrationFailure {
    /// The edge already holds a connection with this index for this connector
    /// (`dup_edge_conn`).
    DuplicateConnection,
    /// Any other error the edge answered, or the RPC failing (`server_error`).
    ServerError,
}

impl RegistrationFailure {
    /// Every kind, in rendering order.
    pub const ALL: [RegistrationFailure; 2] = [Self::DuplicateConnection, Self::ServerError];

    /// The label value cloudflared uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateConnection => "dup_edge_conn",
            Self::ServerError => "server_error",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::DuplicateConnection => 0,
            Self::ServerError => 1,
        }
    }
}

impl fmt::Display for RegistrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value on its own cache line (128 bytes covers adjacent-line prefetching on x86 and the
/// 128-byte lines of some ARM cores).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// The counters of one connector process. Cheap to update from any thread; see the module
/// docs.
///
/// Every [`request_started`](Self::request_started) must be followed by exactly one
/// [`request_finished`](Self::request_finished), which is what keeps the concurrent-requests
/// gauge right; [`request_error`](Self::request_error) only counts.
pub struct TunnelMetrics {
    total_requests: Padded<AtomicU64>,
    concurrent_requests: Padded<AtomicI64>,
    responses: Padded<AtomicU64>,
    bytes_to_origin: Padded<AtomicU64>,
    bytes_from_origin: Padded<AtomicU64>,
    request_errors: Padded<AtomicU64>,
    /// Rare events, sharing a line.
    ha_connections: AtomicI64,
    origin_connect_errors: AtomicU64,
    registration_failures: [AtomicU64; RegistrationFailure::ALL.len()],
    /// Responses by status code; index `status - 100`.
    by_status: Box<[AtomicU64; STATUS_SLOTS]>,
    /// Each HA connection's transport, by index: 0 none registered, 1 QUIC, 2 HTTP/2.
    connection_protocols: Box<[AtomicU8; 256]>,
}

impl Default for TunnelMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TunnelMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The per-status array is 500 entries; show the totals only.
        f.debug_struct("TunnelMetrics")
            .field("total_requests", &self.total_requests())
            .field("concurrent_requests", &self.concurrent_requests())
            .field("responses", &self.responses_total())
            .field("request_errors", &self.request_errors())
            .field("ha_connections", &self.ha_connections())
            .field("bytes_to_origin", &self.bytes_to_origin_total())
            .field("bytes_from_origin", &self.bytes_from_origin_total())
            .field("origin_connect_errors", &self.origin_connect_errors())
            .finish_non_exhaustive()
    }
}

impl TunnelMetrics {
    /// All counters at zero, no connection up.
    pub fn new() -> Self {
        TunnelMetrics {
            total_requests: Padded::default(),
            concurrent_requests: Padded::default(),
            responses: Padded::default(),
            bytes_to_origin: Padded::default(),
            bytes_from_origin: Padded::default(),
            request_errors: Padded::default(),
            ha_connections: AtomicI64::new(0),
            origin_connect_errors: AtomicU64::new(0),
            registration_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            by_status: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            connection_protocols: Box::new(std::array::from_fn(|_| AtomicU8::new(0))),
        }
    }

    // ---- data path -------------------------------------------------------------------------

    /// A request arrived from the edge: counts it and raises the concurrent-requests gauge.
    #[inline]
    pub fn request_started(&self) {
        self.total_requests.0.fetch_add(1, Relaxed);
        self.concurrent_requests.0.fetch_add(1, Relaxed);
    }

    /// The request begun by [`request_started`](Self::request_started) is done and was
    /// answered with `status` (the one sent to the edge, 502 included when the proxy failed).
    /// Lowers the concurrent-requests gauge and counts the status; a status outside
    /// `100..=599` counts in the total of responses only.
    #[inline]
    pub fn request_finished(&self, status: u16) {
        self.concurrent_requests.0.fetch_sub(1, Relaxed);
        self.responses.0.fetch_add(1, Relaxed);
        if let Some(slot) = status_slot(status) {
            self.by_status[slot].fetch_add(1, Relaxed);
        }
    }

    /// Proxying a request to the origin failed (cloudflared's `request_errors`). Counts only:
    /// the request still ends with [`request_finished`](Self::request_finished).
    #[inline]
    pub(crate) fn request_error(&self) {
        self.request_errors.0.fetch_add(1, Relaxed);
    }

    /// `n` bytes of request body (or upgraded-stream data) written to the origin.
    #[inline]
    pub(crate) fn bytes_to_origin(&self, n: u64) {
        self.bytes_to_origin.0.fetch_add(n, Relaxed);
    }

    /// `n` bytes of response body (or upgraded-stream data) read from the origin.
    #[inline]
    pub(crate) fn bytes_from_origin(&self, n: u64) {
        self.bytes_from_origin.0.fetch_add(n, Relaxed);
    }

    /// Connecting to the origin failed (refused, unreachable, timed out, TLS).
    #[inline]
    pub fn origin_connect_error(&self) {
        self.origin_connect_errors.fetch_add(1, Relaxed);
    }

    // ---- connection lifecycle --------------------------------------------------------------

    /// A connection to the edge is registered and serving.
    pub fn ha_connection_up(&self) {
        self.ha_connections.fetch_add(1, Relaxed);
    }

    /// A registered connection to the edge went away. Must follow its
    /// [`ha_connection_up`](Self::ha_connection_up).
    pub fn ha_connection_down(&self) {
        self.ha_connections.fetch_sub(1, Relaxed);
    }

    /// HA connection `index` is registered over `protocol` (`None`: not registered).
    pub fn set_connection_protocol(&self, index: u8, protocol: Option<Protocol>) {
        let v = match protocol {
            None => 0,
            Some(Protocol::Quic) => 1,
            Some(Protocol::Http2) => 2,
        };
        self.connection_protocols[usize::from(index)].store(v, Relaxed);
    }

    /// HA connection `index`'s transport, if it is registered.
    pub fn connection_protocol(&self, index: u8) -> Option<Protocol> {
        match self.connection_protocols[usize::from(index)].load(Relaxed) {
            1 => Some(Protocol::Quic),
            2 => Some(Protocol::Http2),
            _ => None,
        }
    }

    /// Registering a connection with the edge failed.
    pub fn registration_failure(&self, kind: RegistrationFailure) {
        self.registration_failures[kind.index()].fetch_add(1, Relaxed);
    }

    // ---- readers ---------------------------------------------------------------------------

    /// Connections to the edge registered and serving now; `/ready` answers 200 when this is
    /// at least 1.
    pub fn ready_connections(&self) -> u64 {
        self.ha_connections()
    }

    /// Same as [`ready_connections`](Self::ready_connections) (the `ha_connections` gauge).
    pub fn ha_connections(&self) -> u64 {
        clamp_gauge(self.ha_connections.load(Relaxed))
    }

    /// Requests started since the process began.
    pub(crate) fn total_requests(&self) -> u64 {
        self.total_requests.0.load(Relaxed)
    }

    /// Requests started and not yet finished.
    pub(crate) fn concurrent_requests(&self) -> u64 {
        clamp_gauge(self.concurrent_requests.0.load(Relaxed))
    }

    /// Requests finished, whatever their status.
    pub(crate) fn responses_total(&self) -> u64 {
        self.responses.0.load(Relaxed)
    }

    /// Requests finished with `status`; 0 for a status outside `100..=599`.
    pub fn responses_with_status(&self, status: u16) -> u64 {
        status_slot(status).map_or(0, |slot| self.by_status[slot].load(Relaxed))
    }

    /// Proxy failures counted by [`request_error`](Self::request_error).
    pub(crate) fn request_errors(&self) -> u64 {
        self.request_errors.0.load(Relaxed)
    }

    /// Bytes written to origins.
    pub(crate) fn bytes_to_origin_total(&self) -> u64 {
        self.bytes_to_origin.0.load(Relaxed)
    }

    /// Bytes read from origins.
    pub(crate) fn bytes_from_origin_total(&self) -> u64 {
        self.bytes_from_origin.0.load(Relaxed)
    }

    /// Failed connects to origins.
    pub(crate) fn origin_connect_errors(&self) -> u64 {
        self.origin_connect_errors.load(Relaxed)
    }

    /// Registration failures of one kind.
    pub(crate) fn registration_failures(&self, kind: RegistrationFailure) -> u64 {
        self.registration_failures[kind.index()].load(Relaxed)
    }

    /// The counters in Prometheus text exposition format 0.0.4 (serve it as
    /// `text/plain; version=0.0.4`). `extra` are constant labels added to `ringway_build_info`
    /// after `version` (for example `("connector_id", "…")`); a pair whose name is not a valid
    /// label name, or is `version`, is skipped. Values are escaped.
    pub fn render_prometheus(&self, extra: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(2048);
        let o = &mut out;

        family(
            o,
            "cloudflared_tunnel_total_requests",
            "counter",
            "Amount of requests proxied through all the tunnels",
        );
        sample(
            o,
            "cloudflared_tunnel_total_requests",
            "",
            self.total_requests(),
        );

        family(
            o,
            "cloudflared_tunnel_request_errors",
            "counter",
            "Count of error proxying to origin",
        );
        sample(
            o,
            "cloudflared_tunnel_request_errors",
            "",
            self.request_errors(),
        );

        family(
            o,
            "cloudflared_tunnel_concurrent_requests_per_tunnel",
            "gauge",
            "Concurrent requests proxied through each tunnel",
        );
        sample(
            o,
            "cloudflared_tunnel_concurrent_requests_per_tunnel",
            "",
            self.concurrent_requests(),
        );

        family(
            o,
            "cloudflared_tunnel_ha_connections",
            "gauge",
            "Number of active ha connections",
        );
        sample(
            o,
            "cloudflared_tunnel_ha_connections",
            "",
            self.ha_connections(),
        );

        family(
            o,
            "cloudflared_tunnel_response_by_code",
            "counter",
            "Count of responses by HTTP status code",
        );
        for (slot, count) in self.by_status.iter().enumerate() {
            let count = count.load(Relaxed);
            if count != 0 {
                let code = MIN_STATUS as usize + slot;
                let labels = format!("status_code=\"{code}\"");
                sample(o, "cloudflared_tunnel_response_by_code", &labels, count);
            }
        }

        family(
            o,
            "cloudflared_tunnel_tunnel_register_fail",
            "counter",
            "Count of tunnel registration errors by type",
        );
        for kind in RegistrationFailure::ALL {
            let count = self.registration_failures(kind);
            if count != 0 {
                let labels = format!(
                    "error=\"{}\",rpcName=\"{REGISTER_RPC_NAME}\"",
                    kind.as_str()
                );
                sample(o, "cloudflared_tunnel_tunnel_register_fail", &labels, count);
            }
        }

        family(
            o,
            "ringway_origin_bytes_sent_total",
            "counter",
            "Bytes written to origins (request bodies and upgraded streams)",
        );
        sample(
            o,
            "ringway_origin_bytes_sent_total",
            "",
            self.bytes_to_origin_total(),
        );

        family(
            o,
            "ringway_origin_bytes_received_total",
            "counter",
            "Bytes read from origins (response bodies and upgraded streams)",
        );
        sample(
            o,
            "ringway_origin_bytes_received_total",
            "",
            self.bytes_from_origin_total(),
        );

        family(
            o,
            "ringway_origin_connect_errors_total",
            "counter",
            "Failed connection attempts to origins",
        );
        sample(
            o,
            "ringway_origin_connect_errors_total",
            "",
            self.origin_connect_errors(),
        );

        family(
            o,
            "ringway_tunnel_connection_protocol",
            "gauge",
            "Transport of each registered HA connection to the edge (1 for the one in use)",
        );
        for index in 0..=u8::MAX {
            if let Some(p) = self.connection_protocol(index) {
                let labels = format!("conn_index=\"{index}\",protocol=\"{}\"", p.as_str());
                sample(o, "ringway_tunnel_connection_protocol", &labels, 1);
            }
        }

        family(
            o,
            "ringway_build_info",
            "gauge",
            "Build information about the running ringway connector; the value is always 1",
        );
        let mut labels = String::from("version=\"");
        escape_label_value(&mut labels, env!("CARGO_PKG_VERSION"));
        labels.push('"');
        for (name, value) in extra {
            if *name == "version" || !is_label_name(name) {
                continue;
            }
            labels.push(',');
            labels.push_str(name);
            labels.push_str("=\"");
            escape_label_value(&mut labels, value);
            labels.push('"');
        }
        sample(o, "ringway_build_info", &labels, 1);

        out
    }
}

fn status_slot(status: u16) -> Option<usize> {
    (MIN_STATUS..=MAX_STATUS)
        .contains(&status)
        .then(|| usize::from(status - MIN_STATUS))
}

/// A gauge read while a decrement raced ahead of its increment can be briefly negative; never
/// show that.
fn clamp_gauge(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // Help texts are constants here, free of `\` and newlines, so need no escaping.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    !name.starts_with("__") && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Label values escape `\`, `"` and newline (format 0.0.4).
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
