//! ringway's lifecycle half: the control plane, the CLI, cloudflared's file formats and
//! config.yml, and the control threads of the edge and the connector. The `ringway` binary is
//! `main.rs`.
//!
//! # Layout
//!
//! - `store`: the persistent objects (accounts, zones, tokens, tunnels, DNS records, pools,
//!   load balancers) and the leased connection records, behind the `Store` trait; SQLite is the
//!   default backend.
//! - `api`: the control-plane HTTP server: Cloudflare's v4 subset under `/client/v4`, the
//!   edge-facing snapshot and connection endpoints under `/edge/v1`, and the login pages.
//! - `client`: the blocking HTTP client for that API.
//! - `context`: what a command needs before it talks to the control plane (cert.pem, an API
//!   client, NAME → UUID); `signal`: the stop signals. The CLI and the connector both use them.
//! - `cli`: clap definitions and one module per command family, and `quickstart`.
//! - `files`: cert.pem, credentials `<UUID>.json`, tunnel tokens, and cloudflared's search
//!   directories, byte for byte.
//! - `config`: config.yml parsing, ingress rules, validation and matching.
//! - `hostname`: hostname and zone checks shared by the API and the CLI.
//! - `secret`: types that hold secrets and print `MASKED`.
//! - `edge` and `edge_sync`: `ringway edge run`'s control thread (TLS files, sockets, connection
//!   records around `dataplane::edge`) and its snapshot follower with the atomic on-disk cache
//!   it serves from when the control plane is down.
//! - `connector`: `ringway tunnel run`'s control thread: credentials, config.yml ingress →
//!   origin targets, reload, supervision, logging hooks, around `dataplane::connector`.
//! - `metrics_server`: the connector's `/metrics`, `/ready` and `/healthcheck` on a std thread.
//!
//! `control` depends on `dataplane`, never the reverse; nothing below `cli` imports `cli`.

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
pub mod logging;
pub mod metrics_server;
pub mod secret;
pub mod signal;
pub mod store;
