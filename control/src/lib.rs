//! ringway's lifecycle half: the control plane, the CLI, cloudflared's file formats and
//! config.yml.
//!
//! # Layout
//!
//! - `store`: the persistent objects (accounts, zones, tokens, tunnels, DNS records, pools,
//!   load balancers) and the leased connection records, behind the `Store` trait; SQLite is the
//!   default backend.
//! - `api`: the control-plane HTTP server: Cloudflare's v4 subset under `/client/v4`, the
//!   edge-facing snapshot and connection endpoints under `/edge/v1`, and the login pages.
//! - `client`: the blocking HTTP client the CLI uses against that API.
//! - `edge_sync`: the edge's control-plane side: the snapshot follower with its atomic on-disk
//!   cache (serve from it when the control plane is down) and connection registration.
//! - `cli`: clap definitions and one module per command family (`tunnel`, `control`).
//! - `files`: cert.pem, credentials `<UUID>.json`, tunnel tokens, and cloudflared's search
//!   directories, byte for byte.
//! - `config`: config.yml parsing, ingress rules, validation and matching.
//! - `secret`: types that hold secrets and print `MASKED`.
//! - `edge`: `ringway edge run`'s control thread: TLS files, sockets, the snapshot follower and
//!   connection records around `dataplane::edge`.
//! - `connector`: `ringway tunnel run`'s control thread: credentials, config.yml ingress →
//!   origin targets, logging hooks, metrics, around `dataplane::connector`.
//! - `metrics_server`: the connector's `/metrics`, `/ready` and `/healthcheck` on a std thread.
//!
//! `control` depends on `dataplane`, never the reverse.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod connector;
pub mod context;
pub mod edge;
pub mod edge_sync;
pub mod files;
pub mod hostname;
pub mod metrics_server;
pub mod secret;
pub mod signal;
pub mod store;
