//! End-to-end test harness: starts the real `ringway` binary on free loopback ports in temp
//! directories and cleans up after itself. Every process a test starts has its output
//! collected, so a failure prints what each process said.
//!
//! Test files import [`prelude`] (the few names nearly every test uses) and the rest by path,
//! e.g. `use ringway_tests::origins::Nginx;`.
//!
//! # Layout
//!
//! Harness modules (`src/`):
//! - `process.rs`: the binary (built once), child processes killed on drop, output logs, free
//!   ports, `wait_for`.
//! - `control_plane.rs`: the `ControlPlane` fixture and direct API calls and queries.
//! - `cli.rs`: the `Cli` runner with an isolated `$HOME`, `Setup`, readers of what the CLI
//!   writes and prints.
//! - `edge.rs`: the `Edge` fixture and `TunnelSetup`, the base of every data-path test.
//! - `connector.rs`: the `Connector` fixture and waits on what it logs.
//! - `origins.rs`: a real nginx, `HashOrigin` (an origin written for the tests, over TCP, TLS
//!   or a unix socket) and `BlackholeOrigin` (connects to it hang).
//! - `case.rs`: `OriginCase`, a tunnel routed at a host plus the `HashOrigin` it serves: the
//!   base of the connector-flag tests.
//! - `raw_client.rs`: `RawClient`, an HTTP/1.1 client that sends exact bytes.
//! - `http1.rs`: the harness's own HTTP/1.1 reader, independent of `dataplane::http` on
//!   purpose (it is the oracle the product's codec is tested against).
//! - `payload.rs`: deterministic bodies, their hashes, where two bodies differ.
//! - `lossy_relay.rs`: a UDP relay that drops a reproducible share of datagrams.
//! - `tcp_only.rs`: `TcpOnlyEdge`, an edge address whose UDP is silent and whose TCP passes.
//! - `flood.rs`: QUIC Initial floods, and a process's RSS and CPU time.
//! - `slow_clients.rs`: a bulk origin, clients that never read, a slowloris client.
//! - `load.rs`: `Load`, a paced background GET loop through the edge that records every answer.
//! - `netns.rs`: `NetNs`, a network namespace with a veth pair to the host and nftables rules.
//!
//! Test files (`tests/`):
//! - `control_plane.rs`: the lifecycle of every `ringway tunnel` verb, and deletes refused
//!   while connectors are connected.
//! - `control_defects.rs`: tunnel names, secrets, JSON errors, snapshot file mode, edge token.
//! - `control_limits.rs`: the control plane's HTTP server limits (slow heads and bodies, idle
//!   connections, caps).
//! - `durability.rs`: acknowledged writes survive `kill -9`; restarts keep the tokens.
//! - `isolation.rs`: a cert.pem token acts only in its own account and zone.
//! - `cli_errors.rs`: every bad input is one stderr line that leaks no secret; secrets never
//!   reach the control-plane log.
//! - `edge_api.rs`: the edge-facing snapshot, long-poll, connection leases and auth.
//! - `edge_sync.rs`: the edge's snapshot follower against the real control plane.
//! - `login_and_files.rs`: browser login, cloudflared's search directories, config.yml ingress
//!   validation and rule matching.
//! - `ingress_match.rs`: `ingress rule URL` names the rule a live request for that URL reaches
//!   (ports, case, final dot, encoded paths, IPv6).
//! - `races.rs`: concurrent writers keep the store's invariants (unique names, one CNAME per
//!   host, no lost pool origins); list pagination.
//! - `edge_requests.rs`: requests whose meaning must survive the tunnel, answers that must
//!   not leak.
//! - `edge_limits.rs`: the public listener's limits (clients that never read, slowloris).
//! - `edge_flood.rs`: QUIC handshake floods against a serving edge.
//! - `tunnel_e2e.rs`: the data path end to end: control plane + `ringway edge run` +
//!   `ringway tunnel run` + origins, driven by `RawClient`.
//! - `tunnel_config.rs`: config.yml ingress, tokens, wrong secrets, metrics, quickstart.
//! - `tunnel_faults.rs`: kills, restarts and stops under a steady request load.
//! - `tunnel_loss.rs`: the tunnel under UDP packet loss.
//! - `tunnel_replicas.rs`: replicas, HA connections, connections that come and go.
//! - `tunnel_transports.rs`: `--protocol auto` falls back to HTTP/2 with UDP blocked and moves
//!   back to QUIC without a failed request; replicas of one tunnel on different transports.
//! - `cli_origin_flags.rs`: `tunnel run`'s origin flags (TLS trust and name, chunked bodies,
//!   connect timeout, unix socket, keep-alive) seen from outside.
//! - `tunnel_streaming.rs`: server-sent events arrive one by one, as the origin writes them.
//! - `cli_edge_link_flags.rs`: `--write-stream-timeout` resets a response the edge stops taking;
//!   `--max-edge-addr-retries` sets the attempts before the HTTP/2 fallback.
//!
//! Waits use deadlines only as failure limits: a test polls until the condition holds and fails
//! if the deadline passes first, so a slow machine makes a test slower, never red.

pub mod case;
pub mod cli;
pub mod connector;
pub mod control_plane;
pub mod edge;
pub mod flood;
pub mod http1;
pub mod load;
pub mod lossy_relay;
pub mod netns;
pub mod origins;
pub mod payload;
pub mod process;
pub mod raw_client;
pub mod slow_clients;
pub mod tcp_only;

/// The names nearly every test uses: `use ringway_tests::prelude::*;`.
pub mod prelude {
    pub use crate::cli::{Cli, Setup};
    pub use crate::control_plane::{ControlPlane, http};
    pub use crate::edge::TunnelSetup;
    pub use crate::process::wait_for;
    pub use crate::raw_client::{RawClient, request_bytes};
}
