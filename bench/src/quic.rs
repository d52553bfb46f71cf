//! ringway QUIC endpoints for the transport benches.

use std::sync::Arc;

use dataplane::quic::endpoint::Endpoint;
use dataplane::quic::{CidKey, Driver, QuicConfig, WorkerCidGenerator};
use dataplane::udp::{UdpBackend, UdpConfig, UdpIo};

/// A one-worker endpoint (no router) on an ephemeral 127.0.0.1 port with the default socket
/// settings: it accepts with `server`, connects with `client`. Panics on failure: a bench
/// that cannot set up has nothing to measure.
pub fn loopback_endpoint(
    cfg: &QuicConfig,
    server: Option<Arc<quinn_proto::ServerConfig>>,
    client: Option<quinn_proto::ClientConfig>,
    backend: UdpBackend,
) -> Endpoint {
    let cid = WorkerCidGenerator::new(CidKey::random(), 0).expect("cid generator");
    let driver = Driver::new(cfg, server, client, cid).expect("driver");
    let udp = UdpIo::bind(
        "127.0.0.1:0".parse().expect("loopback address"),
        &UdpConfig::default(),
        backend,
    )
    .expect("bind 127.0.0.1");
    Endpoint::start(driver, udp, None).expect("endpoint")
}
