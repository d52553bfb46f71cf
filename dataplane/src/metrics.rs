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
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

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
    pub fn request_error(&self) {
        self.request_errors.0.fetch_add(1, Relaxed);
    }

    /// `n` bytes of request body (or upgraded-stream data) written to the origin.
    #[inline]
    pub fn bytes_to_origin(&self, n: u64) {
        self.bytes_to_origin.0.fetch_add(n, Relaxed);
    }

    /// `n` bytes of response body (or upgraded-stream data) read from the origin.
    #[inline]
    pub fn bytes_from_origin(&self, n: u64) {
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
    pub fn total_requests(&self) -> u64 {
        self.total_requests.0.load(Relaxed)
    }

    /// Requests started and not yet finished.
    pub fn concurrent_requests(&self) -> u64 {
        clamp_gauge(self.concurrent_requests.0.load(Relaxed))
    }

    /// Requests finished, whatever their status.
    pub fn responses_total(&self) -> u64 {
        self.responses.0.load(Relaxed)
    }

    /// Requests finished with `status`; 0 for a status outside `100..=599`.
    pub fn responses_with_status(&self, status: u16) -> u64 {
        status_slot(status).map_or(0, |slot| self.by_status[slot].load(Relaxed))
    }

    /// Proxy failures counted by [`request_error`](Self::request_error).
    pub fn request_errors(&self) -> u64 {
        self.request_errors.0.load(Relaxed)
    }

    /// Bytes written to origins.
    pub fn bytes_to_origin_total(&self) -> u64 {
        self.bytes_to_origin.0.load(Relaxed)
    }

    /// Bytes read from origins.
    pub fn bytes_from_origin_total(&self) -> u64 {
        self.bytes_from_origin.0.load(Relaxed)
    }

    /// Failed connects to origins.
    pub fn origin_connect_errors(&self) -> u64 {
        self.origin_connect_errors.load(Relaxed)
    }

    /// Registration failures of one kind.
    pub fn registration_failures(&self, kind: RegistrationFailure) -> u64 {
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
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// Parses a sample line `name{labels} value` or `name value` into (name, labels, value),
    /// labels as written between the braces (quotes and escapes kept).
    fn parse_sample(line: &str) -> (String, String, u64) {
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: u64 = value.parse().expect("value is an integer");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest.strip_suffix('}').expect("labels close with }");
                (name, labels)
            }
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        (name.to_string(), labels.to_string(), value)
    }

    /// Every sample of a rendering, keyed by `name{labels}`; checks that every sample belongs
    /// to the family announced by the `# HELP` / `# TYPE` lines just before it.
    fn parse(text: &str) -> BTreeMap<String, u64> {
        let mut samples = BTreeMap::new();
        let mut current_family: Option<String> = None;
        let mut typed = false;
        assert!(text.ends_with('\n'), "exposition ends with a newline");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("help text");
                assert!(!help.is_empty());
                current_family = Some(name.to_string());
                typed = false;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert_eq!(
                    Some(name),
                    current_family.as_deref(),
                    "TYPE follows its HELP"
                );
                assert!(matches!(kind, "counter" | "gauge"), "type {kind}");
                typed = true;
            } else {
                assert!(!line.starts_with('#'), "unexpected comment {line:?}");
                let (name, labels, value) = parse_sample(line);
                assert_eq!(Some(name.as_str()), current_family.as_deref(), "{line:?}");
                assert!(typed, "sample before TYPE: {line:?}");
                let key = if labels.is_empty() {
                    name
                } else {
                    format!("{name}{{{labels}}}")
                };
                assert!(samples.insert(key, value).is_none(), "duplicate {line:?}");
            }
        }
        samples
    }

    #[test]
    fn counters_count() {
        let m = TunnelMetrics::new();
        assert_eq!(m.ready_connections(), 0);

        m.request_started();
        m.request_started();
        m.request_started();
        assert_eq!(m.total_requests(), 3);
        assert_eq!(m.concurrent_requests(), 3);
        m.request_finished(200);
        m.request_finished(404);
        assert_eq!(m.concurrent_requests(), 1);
        m.request_error();
        m.request_finished(502);
        assert_eq!(m.concurrent_requests(), 0);
        assert_eq!(m.total_requests(), 3);
        assert_eq!(m.responses_total(), 3);
        assert_eq!(m.request_errors(), 1);
        assert_eq!(m.responses_with_status(200), 1);
        assert_eq!(m.responses_with_status(404), 1);
        assert_eq!(m.responses_with_status(502), 1);
        assert_eq!(m.responses_with_status(500), 0);

        // Out-of-range statuses count in the total only.
        m.request_started();
        m.request_finished(99);
        m.request_started();
        m.request_finished(600);
        assert_eq!(m.responses_total(), 5);
        assert_eq!(m.responses_with_status(99), 0);
        assert_eq!(m.responses_with_status(600), 0);
        // The edges of the range are counted.
        m.request_started();
        m.request_finished(100);
        m.request_started();
        m.request_finished(599);
        assert_eq!(m.responses_with_status(100), 1);
        assert_eq!(m.responses_with_status(599), 1);

        m.bytes_to_origin(10);
        m.bytes_to_origin(5);
        m.bytes_from_origin(7);
        assert_eq!(m.bytes_to_origin_total(), 15);
        assert_eq!(m.bytes_from_origin_total(), 7);

        m.origin_connect_error();
        assert_eq!(m.origin_connect_errors(), 1);

        m.registration_failure(RegistrationFailure::ServerError);
        m.registration_failure(RegistrationFailure::ServerError);
        assert_eq!(m.registration_failures(RegistrationFailure::ServerError), 2);
        assert_eq!(
            m.registration_failures(RegistrationFailure::DuplicateConnection),
            0
        );

        m.ha_connection_up();
        m.ha_connection_up();
        assert_eq!(m.ready_connections(), 2);
        m.ha_connection_down();
        assert_eq!(m.ready_connections(), 1);
        m.ha_connection_down();
        assert_eq!(m.ready_connections(), 0);

        // Debug stays short.
        assert!(format!("{m:?}").len() < 400);
    }

    #[test]
    fn gauges_never_render_negative() {
        let m = TunnelMetrics::new();
        m.ha_connection_down();
        m.request_finished(200);
        assert_eq!(m.ready_connections(), 0);
        assert_eq!(m.concurrent_requests(), 0);
        let samples = parse(&m.render_prometheus(&[]));
        assert_eq!(samples["cloudflared_tunnel_ha_connections"], 0);
        assert_eq!(
            samples["cloudflared_tunnel_concurrent_requests_per_tunnel"],
            0
        );
    }

    #[test]
    fn renders_fresh_metrics() {
        let m = TunnelMetrics::new();
        let text = m.render_prometheus(&[]);
        let samples = parse(&text);
        for name in [
            "cloudflared_tunnel_total_requests",
            "cloudflared_tunnel_request_errors",
            "cloudflared_tunnel_concurrent_requests_per_tunnel",
            "cloudflared_tunnel_ha_connections",
            "ringway_origin_bytes_sent_total",
            "ringway_origin_bytes_received_total",
            "ringway_origin_connect_errors_total",
        ] {
            assert_eq!(samples[name], 0, "{name}");
        }
        // Families without samples still announce themselves.
        assert!(text.contains("# TYPE cloudflared_tunnel_response_by_code counter\n"));
        assert!(!text.contains("cloudflared_tunnel_response_by_code{"));
        let build = format!(
            "ringway_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(samples[&build], 1);
    }

    #[test]
    fn renders_counters_and_labels() {
        let m = TunnelMetrics::new();
        for status in [200, 200, 200, 404, 502] {
            m.request_started();
            m.request_finished(status);
        }
        m.request_started(); // in flight
        m.request_error();
        m.ha_connection_up();
        m.ha_connection_up();
        m.bytes_to_origin(1234);
        m.bytes_from_origin(u64::from(u32::MAX) + 1);
        m.origin_connect_error();
        m.registration_failure(RegistrationFailure::DuplicateConnection);

        let text = m.render_prometheus(&[
            ("connector_id", "6f1c2a4e-0000-4000-8000-000000000001"),
            ("weird", "a\"b\\c\nd"),
            ("version", "spoofed"),
            ("bad-name", "x"),
            ("__reserved", "x"),
        ]);
        let samples = parse(&text);

        assert_eq!(samples["cloudflared_tunnel_total_requests"], 6);
        assert_eq!(samples["cloudflared_tunnel_request_errors"], 1);
        assert_eq!(
            samples["cloudflared_tunnel_concurrent_requests_per_tunnel"],
            1
        );
        assert_eq!(samples["cloudflared_tunnel_ha_connections"], 2);
        assert_eq!(
            samples["cloudflared_tunnel_response_by_code{status_code=\"200\"}"],
            3
        );
        assert_eq!(
            samples["cloudflared_tunnel_response_by_code{status_code=\"404\"}"],
            1
        );
        assert_eq!(
            samples["cloudflared_tunnel_response_by_code{status_code=\"502\"}"],
            1
        );
        assert_eq!(
            samples
                .keys()
                .filter(|k| k.starts_with("cloudflared_tunnel_response_by_code"))
                .count(),
            3,
            "only codes seen"
        );
        assert_eq!(
            samples["cloudflared_tunnel_tunnel_register_fail{error=\"dup_edge_conn\",rpcName=\"registerConnection\"}"],
            1
        );
        assert_eq!(samples["ringway_origin_bytes_sent_total"], 1234);
        assert_eq!(
            samples["ringway_origin_bytes_received_total"],
            u64::from(u32::MAX) + 1
        );
        assert_eq!(samples["ringway_origin_connect_errors_total"], 1);

        let build = format!(
            "ringway_build_info{{version=\"{}\",connector_id=\"6f1c2a4e-0000-4000-8000-000000000001\",weird=\"a\\\"b\\\\c\\nd\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(samples[&build], 1, "{text}");
    }

    #[test]
    fn concurrent_increments_sum() {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 50_000;
        let m = Arc::new(TunnelMetrics::new());
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    m.ha_connection_up();
                    for i in 0..PER_THREAD {
                        m.request_started();
                        m.bytes_to_origin(2);
                        m.bytes_from_origin(3);
                        if i % 10 == 0 {
                            m.request_error();
                        }
                        m.request_finished(if t % 2 == 0 { 200 } else { 503 });
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let n = THREADS * PER_THREAD;
        assert_eq!(m.total_requests(), n);
        assert_eq!(m.responses_total(), n);
        assert_eq!(m.concurrent_requests(), 0);
        assert_eq!(m.request_errors(), THREADS * PER_THREAD / 10);
        assert_eq!(m.responses_with_status(200), n / 2);
        assert_eq!(m.responses_with_status(503), n / 2);
        assert_eq!(m.bytes_to_origin_total(), 2 * n);
        assert_eq!(m.bytes_from_origin_total(), 3 * n);
        assert_eq!(m.ready_connections(), THREADS);

        let samples = parse(&m.render_prometheus(&[]));
        assert_eq!(samples["cloudflared_tunnel_total_requests"], n);
    }

    #[test]
    fn label_names() {
        assert!(is_label_name("connector_id"));
        assert!(is_label_name("_x1"));
        assert!(!is_label_name(""));
        assert!(!is_label_name("1x"));
        assert!(!is_label_name("a-b"));
        assert!(!is_label_name("__name__"));
    }
}
