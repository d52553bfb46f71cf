//! End-to-end test harness: starts the real `ringway` binary on free loopback ports in temp
//! directories and cleans up after itself.
//!
//! # Layout
//!
//! - `lib.rs` (this file): locating/building the binary, free ports, child processes that are
//!   killed on drop, and a CLI runner with an isolated `$HOME`.
//! - `tests/control_plane.rs`: the control plane and every `ringway tunnel` verb.
