//! QUIC settings and the quinn-proto configuration objects built from them.
//!
//! The defaults are the ones a stock cloudflared connector dials the Cloudflare edge with, so
//! it finds nothing unfamiliar here: ALPN `argotunnel`, SNI `quic.cftunnel.com`, datagrams
//! on, idle timeout 5 s, keep-alive 1 s, a 6 MiB receive window per stream. The connection window is not
//! cloudflared's 30 MiB: it is sized never to bind before the stream windows do (see
//! `receive_window`), so one stalled stream cannot take the others' credit.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, EndpointConfig, IdleTimeout, MtuDiscoveryConfig, ServerConfig, TransportConfig,
    VarInt,
};

use super::cid::WorkerCidGenerator;

/// The ALPN token of cloudflared's QUIC transport.
pub const ALPN_ARGOTUNNEL: &[u8] = b"argotunnel";
/// The SNI the connector sends.
pub const DEFAULT_SERVER_NAME: &str = "quic.cftunnel.com";

const MIB: u64 = 1024 * 1024;

/// A peer silent for this long is treated as gone by the edge and the connector, which close
/// the connection themselves rather than wait for the 5 s idle timeout. Both ends send a
/// keep-alive every second (cloudflared's setting) and ACK each other's, so a live peer is never
/// this quiet; a killed one is noticed in 2.5 s instead of 5.
pub const SILENT_PEER: Duration = Duration::from_millis(2500);

/// Errors turning a [`QuicConfig`] into quinn-proto configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A value does not fit a QUIC variable-length integer (62 bits) or the millisecond
    /// idle-timeout encoding.
    #[error("{field} = {value} is out of range for QUIC")]
    OutOfRange {
        /// The offending field.
        field: &'static str,
        /// Its value, printed.
        value: String,
    },
    /// quinn-proto refused a value.
    #[error("quinn-proto rejected {field}: {source}")]
    Quinn {
        /// The offending field.
        field: &'static str,
        /// quinn-proto's reason.
        source: quinn_proto::ConfigError,
    },
    /// A value that must be at least 1 was 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

/// Everything tunable about one side's QUIC stack. `Default` is cloudflared-compatible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    /// ALPN protocols, most preferred first.
    pub alpn: Vec<Vec<u8>>,
    /// SNI a client sends (the edge's certificate must cover it).
    pub server_name: String,
    /// Whether QUIC DATAGRAM frames (RFC 9221) are accepted and may be sent.
    pub datagrams: bool,
    /// Bytes of received datagrams buffered until the application takes them; older ones
    /// are dropped beyond it.
    pub datagram_receive_buffer: usize,
    /// Bytes of outgoing datagrams buffered before older ones are dropped.
    pub datagram_send_buffer: usize,
    /// Idle timeout offered to the peer (the effective one is the smaller of both sides').
    pub idle_timeout: Duration,
    /// Interval of keep-alive PINGs, `None` to send none.
    pub keep_alive: Option<Duration>,
    /// Flow-control window per stream.
    pub stream_receive_window: u64,
    /// Flow-control window for the whole connection.
    pub receive_window: u64,
    /// Bytes of unacknowledged stream data buffered per connection before writes block.
    pub send_window: u64,
    /// Bidirectional streams the peer may have open at once.
    pub max_concurrent_bidi_streams: u64,
    /// Unidirectional streams the peer may have open at once. argotunnel uses only
    /// bidirectional streams, so 0: a peer opening one gets a STREAM_LIMIT_ERROR instead of
    /// buffering data that nobody reads.
    pub max_concurrent_uni_streams: u64,
    /// Largest UDP payload accepted from peers (quinn's `max_udp_payload_size`); sizes the
    /// receive buffers.
    pub max_udp_payload: u16,
    /// UDP payload size used before path MTU discovery (at least 1200).
    pub initial_mtu: u16,
    /// UDP payload size the path is known to carry (at least 1200, at most `initial_mtu`).
    pub min_mtu: u16,
    /// Probe for a larger path MTU (DPLPMTUD). Needs don't-fragment on the socket.
    pub mtu_discovery: bool,
    /// Upper bound for MTU discovery probes.
    pub mtu_discovery_upper_bound: u16,
    /// Most datagrams in one GSO batch (`Transmit::segment_size`). Linux accepts up to 64
    /// segments and 64 KiB per `sendmsg`; 10 keeps a batch near 15 KB, which amortises
    /// the syscall and still lets the driver rotate between connections often.
    pub gso_segments: usize,
    /// Most connections (handshaking or established) one driver holds; further incoming
    /// connection attempts are refused with CONNECTION_REFUSED.
    pub max_connections: usize,
    /// When incoming Initials without an address-validation token get a stateless Retry
    /// instead of a handshake. A Retry costs an honest client one round trip and the server
    /// no state, so a flood of Initials (spoofed or not) costs a few microseconds each
    /// instead of a handshake's CPU and memory. `Auto` (the default) sends them only while
    /// a worker has `retry_threshold` handshakes or more in flight.
    pub retry: RetryMode,
    /// Handshakes in flight on one driver from which `RetryMode::Auto` answers with Retry.
    pub retry_threshold: usize,
    /// Most incoming connections one driver holds in their handshake (half-open). Past it,
    /// validated Initials are refused with CONNECTION_REFUSED (unvalidated ones still get a
    /// Retry, which costs nothing); established connections are never touched.
    pub max_handshakes: usize,
    /// An incoming connection still handshaking this long after it was accepted is closed,
    /// so clients that stall after their first flight free their slot (and memory) before
    /// the idle timeout would.
    pub handshake_timeout: Duration,
    /// Seed for quinn's endpoint RNG (packet-number skipping, stateless-reset padding).
    /// `None` (the default) seeds from the OS; tests set it for reproducible runs.
    pub rng_seed: Option<[u8; 32]>,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            alpn: vec![ALPN_ARGOTUNNEL.to_vec()],
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            datagrams: true,
            // 1 MiB holds ~800 full-size datagrams: a few RTTs of UDP proxying.
            datagram_receive_buffer: 1 << 20,
            datagram_send_buffer: 1 << 20,
            idle_timeout: Duration::from_secs(5),
            keep_alive: Some(Duration::from_secs(1)),
            stream_receive_window: 6 * MIB,
            // Never the binding limit: a stream whose reader stalls keeps its own window's
            // worth of credit, and the others keep theirs (30 MiB let five stalled downloads
            // starve every other stream). Memory is bounded by the stream window times the
            // streams open at once (`max_concurrent_bidi_streams`, and the edge's per-tunnel
            // cap: `edge::limits`).
            receive_window: 6 * MIB * 10_000,
            send_window: 30 * MIB,
            max_concurrent_bidi_streams: 10_000,
            max_concurrent_uni_streams: 0,
            max_udp_payload: 1472,
            initial_mtu: 1200,
            min_mtu: 1200,
            mtu_discovery: true,
            mtu_discovery_upper_bound: 1452,
            // 44 × 1472 B = 64 768 B: the most whole datagrams one UDP send may carry
            // (65 507 B payload limit). Fewer, larger sends are the cheapest lever on CPU/GB.
            gso_segments: 44,
            max_connections: 10_000,
            retry: RetryMode::Auto,
            // A healthy edge has a handful of handshakes in flight (connectors reconnecting);
            // more than this on one worker is a burst or a flood, and one round trip of
            // address validation is cheap insurance.
            retry_threshold: 32,
            // A validated flood pins at most this many half-open connections per worker
            // (~1024 × 30 KB; measured in docs/reliability.md).
            max_handshakes: 1024,
            handshake_timeout: Duration::from_secs(3),
            rng_seed: None,
        }
    }
}

/// When a server answers Initials with a stateless Retry (address validation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetryMode {
    /// While the driver has `retry_threshold` handshakes or more in flight.
    #[default]
    Auto,
    /// Every unvalidated Initial.
    Always,
    /// Never.
    Never,
}

impl std::str::FromStr for RetryMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!("{other:?} is not one of auto, always, never")),
        }
    }
}

impl fmt::Display for RetryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        })
    }
}

fn varint(field: &'static str, value: u64) -> Result<VarInt, ConfigError> {
    VarInt::from_u64(value).map_err(|_| ConfigError::OutOfRange {
        field,
        value: value.to_string(),
    })
}

impl QuicConfig {
    /// The per-connection transport parameters.
    pub fn transport_config(&self) -> Result<TransportConfig, ConfigError> {
        let mut t = TransportConfig::default();
        let idle =
            IdleTimeout::try_from(self.idle_timeout).map_err(|_| ConfigError::OutOfRange {
                field: "idle_timeout",
                value: format!("{:?}", self.idle_timeout),
            })?;
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .stream_receive_window(varint("stream_receive_window", self.stream_receive_window)?)
            .receive_window(varint("receive_window", self.receive_window)?)
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(varint(
                "max_concurrent_bidi_streams",
                self.max_concurrent_bidi_streams,
            )?)
            .max_concurrent_uni_streams(varint(
                "max_concurrent_uni_streams",
                self.max_concurrent_uni_streams,
            )?)
            .initial_mtu(self.initial_mtu)
            .min_mtu(self.min_mtu)
            // GSO batches are what `Driver::poll_transmit` hands out; the UDP layer splits
            // them itself when the kernel lacks UDP_SEGMENT.
            .enable_segmentation_offload(self.gso_segments > 1)
            .datagram_receive_buffer_size(self.datagrams.then_some(self.datagram_receive_buffer))
            .datagram_send_buffer_size(self.datagram_send_buffer);
        if self.mtu_discovery {
            let mut mtud = MtuDiscoveryConfig::default();
            mtud.upper_bound(self.mtu_discovery_upper_bound);
            t.mtu_discovery_config(Some(mtud));
        } else {
            t.mtu_discovery_config(None);
        }
        Ok(t)
    }

    /// The endpoint configuration for one worker: its CID generator, the largest UDP
    /// payload it accepts, and the RNG seed.
    ///
    /// The stateless-reset key is random per endpoint (quinn's default). Sharing it across
    /// workers would buy nothing: a worker only ever resets CIDs of its own (see
    /// [`WorkerCidGenerator`]'s `validate`), and all workers restart together.
    pub(crate) fn endpoint_config(
        &self,
        cid: &WorkerCidGenerator,
    ) -> Result<EndpointConfig, ConfigError> {
        let mut e = EndpointConfig::default();
        e.cid_generator(cid.factory())
            .max_udp_payload_size(self.max_udp_payload)
            .map_err(|source| ConfigError::Quinn {
                field: "max_udp_payload",
                source,
            })?;
        e.rng_seed(self.rng_seed);
        Ok(e)
    }

    /// The server configuration for incoming connections.
    pub fn server_config(
        &self,
        crypto: Arc<QuicServerConfig>,
    ) -> Result<ServerConfig, ConfigError> {
        let mut s = ServerConfig::with_crypto(crypto);
        s.transport_config(Arc::new(self.transport_config()?));
        Ok(s)
    }

    /// The client configuration for outgoing connections.
    pub fn client_config(
        &self,
        crypto: Arc<QuicClientConfig>,
    ) -> Result<ClientConfig, ConfigError> {
        let mut c = ClientConfig::new(crypto);
        c.transport_config(Arc::new(self.transport_config()?));
        Ok(c)
    }

    /// Checks the values no quinn builder checks for us.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.gso_segments == 0 {
            return Err(ConfigError::Zero("gso_segments"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("max_connections"));
        }
        if self.max_handshakes == 0 {
            return Err(ConfigError::Zero("max_handshakes"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Zero("handshake_timeout"));
        }
        self.transport_config().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_cloudflared() {
        let c = QuicConfig::default();
        assert_eq!(c.alpn, vec![b"argotunnel".to_vec()]);
        assert_eq!(c.server_name, "quic.cftunnel.com");
        assert!(c.datagrams);
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.keep_alive, Some(Duration::from_secs(1)));
        assert_eq!(c.stream_receive_window, 6 * 1024 * 1024);
        assert_eq!(
            c.receive_window,
            c.stream_receive_window * c.max_concurrent_bidi_streams
        );
        c.validate().unwrap();
    }

    #[test]
    fn out_of_range_values_are_reported() {
        let c = QuicConfig {
            receive_window: u64::MAX,
            ..QuicConfig::default()
        };
        let err = c.transport_config().unwrap_err();
        assert!(err.to_string().contains("receive_window"), "{err}");
        let c = QuicConfig {
            max_udp_payload: 100,
            ..QuicConfig::default()
        };
        let cid = WorkerCidGenerator::new(super::super::cid::CidKey::random(), 0).unwrap();
        assert!(c.endpoint_config(&cid).is_err());
        let c = QuicConfig {
            gso_segments: 0,
            ..QuicConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("gso_segments")));
    }
}
