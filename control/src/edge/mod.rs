//! `ringway edge run`: the edge's control thread.
//!
//! # Layout
//!
//! - `mod.rs` (this file): start-up: TLS files, sockets bound before any worker starts (so the
//!   printed ports are real and errors come early), the worker pool from `dataplane::edge`, and
//!   the snapshot follower that feeds it.
//! - `tls_files`: the CA and server certificate in the state directory.
//! - `reporter`: connection records and leases towards the control plane.
//!
//! The data path never waits for the control plane: the follower starts from the on-disk
//! snapshot when there is one, and registrations are checked against the snapshot in memory.

pub mod reporter;
pub mod tls_files;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use dataplane::edge::{
    Edge, EdgeSetup, LoadBalancerRoute, RouteTable, TunnelCredentialCheck, bind_reuseport_tcp,
    bind_reuseport_udp,
};
use dataplane::http::Limits;
use dataplane::quic::{CidKey, QuicConfig};
use dataplane::runtime::WorkersConfig;
use dataplane::udp::{UdpBackend, UdpConfig};
use tracing::info;

use crate::edge_sync::{EdgeClient, SnapshotCache, SnapshotFollower};
use crate::secret::ApiToken;
use crate::store::{SNAPSHOT_FORMAT, Snapshot};
use dataplane::edge::routes::RouteRefusal;
use std::collections::HashMap;

/// What `ringway edge run` was asked for.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub control: String,
    pub edge_token: ApiToken,
    pub state_dir: PathBuf,
    pub tunnel_listen: Vec<SocketAddr>,
    pub http_listen: SocketAddr,
    pub location: String,
    /// 0: one per core.
    pub workers: usize,
    /// Timeouts and caps of the public listener.
    pub public: dataplane::edge::PublicLimits,
    /// Defences of the QUIC listener against handshake floods.
    pub handshakes: HandshakeLimits,
}

/// `--quic-retry`, `--quic-retry-threshold`, `--max-handshakes`, `--handshake-timeout`: how
/// each worker's QUIC endpoint treats new connection attempts (see [`QuicConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    pub retry: dataplane::quic::RetryMode,
    pub retry_threshold: usize,
    pub max_handshakes: usize,
    pub handshake_timeout: std::time::Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        let q = QuicConfig::default();
        Self {
            retry: q.retry,
            retry_threshold: q.retry_threshold,
            max_handshakes: q.max_handshakes,
            handshake_timeout: q.handshake_timeout,
        }
    }
}

/// What kind of snapshot row a [`RouteViolation`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    DnsRecord,
    PoolOrigin,
    LoadBalancer,
}

impl ViolationKind {
    /// How logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsRecord => "DNS record",
            Self::PoolOrigin => "pool origin",
            Self::LoadBalancer => "load balancer",
        }
    }
}

/// A record or pool origin in a snapshot that breaks tenant isolation, so it does not route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteViolation {
    pub kind: ViolationKind,
    /// The record's id, the pool's, or the load balancer's.
    pub id: String,
    /// The record's hostname, `pool/origin`, or the load balancer's hostname.
    pub name: String,
    /// The CNAME target, the origin address, or the pool id.
    pub target: String,
    pub reason: String,
}

impl std::fmt::Display for RouteViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({}): {}",
            self.kind.as_str(),
            self.id,
            self.name,
            self.reason
        )
    }
}

/// Builds the edge's route table from a snapshot and names every record and pool origin that
/// would route into another account's tunnel (or with the wrong suffix) and so does not.
/// Records whose tunnel is simply gone (deleted) are not violations: they stop routing.
///
/// A snapshot older than [`SNAPSHOT_FORMAT`] cannot say which account a record belongs to:
/// its tunnels still authenticate, but no host routes until a current snapshot arrives.
pub fn route_table_checked(snap: &Snapshot) -> (RouteTable, Vec<RouteViolation>) {
    let suffix = if snap.format >= SNAPSHOT_FORMAT {
        snap.tunnel_suffix.as_str()
    } else {
        ""
    };
    let mut t = RouteTable::new(snap.version, suffix);
    let mut violations = Vec::new();
    for tun in &snap.tunnels {
        let mut sha = [0u8; 32];
        if hex::decode_to_slice(&tun.secret_sha256, &mut sha).is_err() {
            tracing::warn!(tunnel = %tun.id, "snapshot has a malformed secret hash; tunnel skipped");
            continue;
        }
        t.add_tunnel(
            tun.id,
            TunnelCredentialCheck {
                account_tag: tun.account_tag.clone(),
                secret_sha256: sha,
            },
        );
    }
    let zone_account: HashMap<&str, &str> = snap
        .zones
        .iter()
        .map(|z| (z.id.as_str(), z.account_id.as_str()))
        .collect();
    let account_of_zone = |zone: &str| zone_account.get(zone).copied().unwrap_or("");
    for r in snap.dns_records.iter().filter(|r| r.proxied) {
        match t.add_dns_record(
            &r.record_type,
            &r.name,
            &r.content,
            account_of_zone(&r.zone_id),
        ) {
            Ok(_) | Err(RouteRefusal::NotTunnel | RouteRefusal::UnknownTunnel(_)) => {}
            Err(reason) => violations.push(RouteViolation {
                kind: ViolationKind::DnsRecord,
                id: r.id.clone(),
                name: r.name.clone(),
                target: r.content.clone(),
                reason: reason.to_string(),
            }),
        }
    }
    // Load balancers whose pools hold tunnels: pools in failover order, then the fallback. A
    // pool counts only when it belongs to the load balancer's account, and an origin only
    // when its tunnel does too.
    let pools: HashMap<&str, &crate::store::Pool> =
        snap.pools.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut checked_pools: HashMap<&str, Vec<(uuid::Uuid, f64)>> = HashMap::new();
    for p in &snap.pools {
        let mut origins = Vec::new();
        for o in p.origins.iter().filter(|o| o.enabled) {
            match t.tunnel_for(&o.address, &p.account_id) {
                Ok(id) => origins.push((id, o.weight)),
                Err(RouteRefusal::NotTunnel | RouteRefusal::UnknownTunnel(_)) => {}
                Err(reason) => violations.push(RouteViolation {
                    kind: ViolationKind::PoolOrigin,
                    id: p.id.clone(),
                    name: format!("{}/{}", p.name, o.name),
                    target: o.address.clone(),
                    reason: reason.to_string(),
                }),
            }
        }
        checked_pools.insert(p.id.as_str(), origins);
    }
    for lb in snap
        .load_balancers
        .iter()
        .filter(|lb| lb.enabled && lb.proxied)
    {
        let lb_account = account_of_zone(&lb.zone_id);
        let mut order: Vec<&str> = lb.default_pools.iter().map(String::as_str).collect();
        if !lb.fallback_pool.is_empty() && !order.contains(&lb.fallback_pool.as_str()) {
            order.push(&lb.fallback_pool);
        }
        let mut route = LoadBalancerRoute { pools: Vec::new() };
        for p in order.iter().filter_map(|id| pools.get(id)) {
            if lb_account.is_empty() || p.account_id != lb_account {
                violations.push(RouteViolation {
                    kind: ViolationKind::LoadBalancer,
                    id: lb.id.clone(),
                    name: lb.name.clone(),
                    target: p.id.clone(),
                    reason: format!("pool {} belongs to another account", p.id),
                });
                continue;
            }
            if p.enabled
                && let Some(origins) = checked_pools.get(p.id.as_str())
            {
                route.pools.push(origins.clone());
            }
        }
        t.add_load_balancer(&lb.name, route);
    }
    (t, violations)
}

/// [`route_table_checked`], logging each violation (ids and names only, never a secret).
fn route_table(snap: &Snapshot) -> RouteTable {
    if snap.format < SNAPSHOT_FORMAT {
        tracing::warn!(
            version = snap.version,
            format = snap.format,
            "snapshot predates account checks; no host routes until the control plane sends a current one"
        );
    }
    let (t, violations) = route_table_checked(snap);
    for v in &violations {
        tracing::warn!(kind = v.kind.as_str(), id = %v.id, name = %v.name, reason = %v.reason, "route refused: it would cross accounts");
    }
    t
}

/// A started edge: workers serving, the snapshot follower running on its own thread.
#[derive(Debug)]
pub struct RunningEdge {
    /// Each `--tunnel-listen` address as bound: UDP (QUIC) and TCP (HTTP/2) on the same port.
    pub tunnel_addrs: Vec<SocketAddr>,
    pub http_addr: SocketAddr,
    pub ca_path: PathBuf,
    follower: std::thread::JoinHandle<()>,
}

impl RunningEdge {
    /// Blocks for the life of the edge (the follower never stops on its own).
    pub fn wait(self) {
        let _ = self.follower.join();
    }
}

/// Starts the edge and returns once it has a snapshot to route with (from the control plane,
/// or from its on-disk cache when the control plane is down).
pub fn start(opts: EdgeOptions) -> anyhow::Result<RunningEdge> {
    if opts.tunnel_listen.is_empty() {
        bail!("no --tunnel-listen address");
    }
    url::Url::parse(&opts.control)
        .with_context(|| format!("--control {} is not a valid URL", opts.control))?;
    let tls = tls_files::load_or_create(&opts.state_dir)?;
    let quic = QuicConfig {
        retry: opts.handshakes.retry,
        retry_threshold: opts.handshakes.retry_threshold,
        max_handshakes: opts.handshakes.max_handshakes,
        handshake_timeout: opts.handshakes.handshake_timeout,
        ..QuicConfig::default()
    };
    quic.validate()
        .map_err(|e| anyhow::anyhow!("invalid QUIC settings: {e}"))?;
    // The connection window follows the per-tunnel stream cap (a stalled stream costs only
    // its own window).
    let quic = opts.public.edge_quic_config(quic);
    let crypto = tls
        .material
        .server_crypto(&quic.alpn)
        .context("cannot build the edge's TLS configuration")?;
    let server_config = Arc::new(
        quic.server_config(crypto)
            .context("cannot build the edge's QUIC configuration")?,
    );

    let threads = match opts.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let http2_tls = dataplane::edge::http2_tls_config(&tls.material)
        .context("cannot build the edge's TLS configuration for HTTP/2 tunnels")?;
    let mut tunnel_sockets = Vec::with_capacity(opts.tunnel_listen.len());
    let mut tunnel_tcp_listeners = Vec::with_capacity(opts.tunnel_listen.len());
    for addr in &opts.tunnel_listen {
        let (udp, tcp) = bind_tunnel_address(*addr, threads)?;
        tunnel_sockets.push(udp);
        tunnel_tcp_listeners.push(tcp);
    }
    let http_listeners = bind_reuseport_tcp(opts.http_listen, threads)
        .with_context(|| format!("cannot listen on http://{}", opts.http_listen))?;
    let tunnel_addrs: Vec<SocketAddr> = tunnel_sockets
        .iter()
        .map(|s| s[0].local_addr())
        .collect::<Result<_, _>>()?;
    let http_addr = http_listeners[0].local_addr()?;

    let mut follower = SnapshotFollower::new(
        EdgeClient::new(&opts.control, opts.edge_token.clone()),
        SnapshotCache::new(&opts.state_dir),
    )?;
    let initial = match follower.current() {
        Some(snap) => {
            info!(
                version = snap.version,
                "serving the cached snapshot until the control plane answers"
            );
            snap.clone()
        }
        None => {
            // First start, nothing cached: without one snapshot there is nothing to route and
            // no credential to check, so an unreachable control plane or a refused edge token
            // is an error the operator must see now (a supervisor restarts us), not a silent
            // wait. Checked before any worker starts.
            follower.step().map_err(|e| {
                anyhow::anyhow!(
                    "cannot get a config snapshot from the control plane at {} and none is cached in {}: {e}",
                    opts.control,
                    opts.state_dir.display()
                )
            })?;
            // Bounded: a reachable control plane answers at once when nothing is known yet
            // (version 0), or after one long-poll.
            while follower.current().is_none() {
                follower.step()?;
            }
            follower
                .current()
                .cloned()
                .expect("loop ends with a snapshot")
        }
    };
    let edge_id = format!("{}-{}", opts.location, uuid::Uuid::new_v4());
    let hooks = reporter::start(
        EdgeClient::new(&opts.control, opts.edge_token.clone()),
        edge_id,
        opts.location.clone(),
    );
    let edge = Edge::start(EdgeSetup {
        quic,
        server_config,
        cid_key: CidKey::random(),
        udp: UdpConfig {
            reuse_port: true,
            ..UdpConfig::default()
        },
        udp_backend: UdpBackend::default(),
        tunnel_sockets,
        tunnel_tcp_listeners,
        http2_tls: Some(http2_tls),
        http_listeners,
        location: opts.location.clone(),
        hooks,
        workers: WorkersConfig {
            threads,
            name: "edge-worker".into(),
            ..WorkersConfig::default()
        },
        limits: Limits::default(),
        public: opts.public,
    })?;

    edge.publish_routes(Arc::new(route_table(&initial)));
    info!(workers = threads, location = %opts.location, "edge serving");
    let follower = std::thread::Builder::new()
        .name("edge-snapshot".into())
        .spawn(move || {
            follower.run(
                || true,
                |snap| edge.publish_routes(Arc::new(route_table(snap))),
            );
        })?;
    Ok(RunningEdge {
        tunnel_addrs,
        http_addr,
        ca_path: tls.ca_path,
        follower,
    })
}

/// Ports tried for a `--tunnel-listen` with port 0 before giving up: the port UDP picks may
/// already be taken over TCP, which is rare, so a few tries always suffice in practice.
const TUNNEL_PORT_ATTEMPTS: usize = 16;

/// Binds one `--tunnel-listen` address: UDP (QUIC) and TCP (the HTTP/2 transport) on the
/// same port, one socket of each per worker, since cloudflared dials one port for both. UDP
/// goes first so that port 0 picks a port and TCP takes the same one; when that port is busy
/// over TCP, another is picked.
fn bind_tunnel_address(
    addr: SocketAddr,
    threads: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, Vec<std::net::TcpListener>)> {
    // Bound: TUNNEL_PORT_ATTEMPTS tries, and only for port 0.
    for _ in 0..TUNNEL_PORT_ATTEMPTS {
        let udp = bind_reuseport_udp(addr, threads)
            .with_context(|| format!("cannot listen on udp://{addr}"))?;
        let bound = udp[0].local_addr()?;
        match bind_reuseport_tcp(bound, threads) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen on tcp://{bound}"));
            }
        }
    }
    bail!(
        "cannot listen on {addr}: no port free over both UDP and TCP after {TUNNEL_PORT_ATTEMPTS} tries"
    )
}

/// `ringway edge run`: starts, prints where it listens (one line each, for scripts), serves.
pub fn run(opts: EdgeOptions) -> anyhow::Result<()> {
    let edge = start(opts)?;
    for a in &edge.tunnel_addrs {
        println!("tunnel listening on udp://{a}");
        println!("tunnel listening on tcp://{a}");
    }
    println!("http listening on http://{}", edge.http_addr);
    println!("ca certificate at {}", edge.ca_path.display());
    println!("edge ready");
    edge.wait();
    Ok(())
}

#[cfg(test)]
mod route_table_tests {
    use super::*;
    use crate::store::{DnsRecord, LoadBalancer, Pool, PoolOrigin, SnapshotTunnel, SnapshotZone};
    use dataplane::edge::HostRoute;
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn record(id: &str, zone: &str, name: &str, content: &str) -> DnsRecord {
        DnsRecord {
            id: id.into(),
            zone_id: zone.into(),
            zone_name: String::new(),
            record_type: "CNAME".into(),
            name: name.into(),
            content: content.into(),
            proxied: true,
            ttl: 1,
            created_on: OffsetDateTime::UNIX_EPOCH,
            modified_on: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn pool(id: &str, account: &str, address: &str) -> Pool {
        Pool {
            id: id.into(),
            account_id: account.into(),
            name: id.into(),
            enabled: true,
            origins: vec![PoolOrigin {
                name: "o".into(),
                address: address.into(),
                enabled: true,
                weight: 1.0,
            }],
            created_on: OffsetDateTime::UNIX_EPOCH,
            modified_on: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn lb(id: &str, zone: &str, name: &str, pool: &str) -> LoadBalancer {
        LoadBalancer {
            id: id.into(),
            zone_id: zone.into(),
            name: name.into(),
            default_pools: vec![pool.into()],
            fallback_pool: pool.into(),
            proxied: true,
            enabled: true,
            created_on: OffsetDateTime::UNIX_EPOCH,
            modified_on: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// Account A owns zone za and tunnel `a`; account B owns zone zb. B's rows try every way
    /// into A's tunnel.
    fn snapshot(a: Uuid) -> Snapshot {
        let target = format!("{a}.cfargotunnel.com");
        Snapshot {
            version: 5,
            format: SNAPSHOT_FORMAT,
            tunnel_suffix: "cfargotunnel.com".into(),
            tunnels: vec![SnapshotTunnel {
                id: a,
                account_tag: "A".into(),
                secret_sha256: "00".repeat(32),
            }],
            zones: vec![
                SnapshotZone {
                    id: "za".into(),
                    account_id: "A".into(),
                },
                SnapshotZone {
                    id: "zb".into(),
                    account_id: "B".into(),
                },
            ],
            dns_records: vec![
                record("r1", "za", "www.a.test", &target),
                record("r2", "zb", "hijack.b.test", &target),
                record(
                    "r3",
                    "zb",
                    "suffix.b.test",
                    &format!("{a}.anything.invalid"),
                ),
                record(
                    "r4",
                    "za",
                    "gone.a.test",
                    &format!("{}.cfargotunnel.com", Uuid::nil()),
                ),
            ],
            pools: vec![pool("pa", "A", &target), pool("pb", "B", &target)],
            load_balancers: vec![
                lb("la", "za", "lb.a.test", "pa"),
                lb("lb", "zb", "lb.b.test", "pb"),
                lb("lx", "zb", "lbx.b.test", "pa"),
            ],
        }
    }

    #[test]
    fn route_table_routes_only_within_the_tunnels_account() {
        let a = Uuid::new_v4();
        let (t, violations) = route_table_checked(&snapshot(a));
        assert_eq!(t.route_for_host("www.a.test"), Some(HostRoute::Tunnel(a)));
        for host in ["hijack.b.test", "suffix.b.test", "gone.a.test"] {
            assert_eq!(t.route_for_host(host), None, "{host}");
        }
        let healthy = |_: &Uuid| true;
        let steer = |host: &str| match t.route_for_host(host) {
            Some(HostRoute::LoadBalancer(lb)) => lb.choose(healthy, 0.5),
            other => panic!("{host}: {other:?}"),
        };
        assert_eq!(steer("lb.a.test"), Some(a));
        assert_eq!(steer("lb.b.test"), None, "B's pool holding A's tunnel");
        assert_eq!(
            steer("lbx.b.test"),
            None,
            "B's load balancer using A's pool"
        );
        let mut named: Vec<(&str, &str)> = violations
            .iter()
            .map(|v| (v.kind.as_str(), v.id.as_str()))
            .collect();
        named.sort();
        // A record whose tunnel is gone just stops routing; it is no violation.
        assert_eq!(
            named,
            [
                ("DNS record", "r2"),
                ("DNS record", "r3"),
                ("load balancer", "lx"),
                ("pool origin", "pb")
            ]
        );
    }

    #[test]
    fn route_table_of_an_old_format_snapshot_routes_nothing_but_authenticates() {
        let a = Uuid::new_v4();
        let mut snap = snapshot(a);
        snap.format = 0;
        let (t, _) = route_table_checked(&snap);
        assert_eq!(t.route_for_host("www.a.test"), None);
        assert!(t.has_tunnel(&a));
    }
}

#[cfg(test)]
mod bind_tests {
    use super::*;

    #[test]
    fn a_tunnel_address_listens_on_one_port_over_udp_and_tcp() {
        let (udp, tcp) = bind_tunnel_address(([127, 0, 0, 1], 0).into(), 2).unwrap();
        let port = udp[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(udp.len(), 2);
        assert_eq!(tcp.len(), 2);
        for l in &tcp {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        // A fixed port that is busy over TCP is an error naming it, not another port.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = busy.local_addr().unwrap();
        let err = bind_tunnel_address(at, 1).unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("tcp://{at}")),
            "{err:#}"
        );
    }
}
