//! `loadgen-origin`: the built-in origin ([`loadgen::testserver`]) as a process, for the
//! bench's `--origin builtin` and for trying loadgen without nginx.
//!
//! Prints `listening ADDR` on stdout once it accepts connections.

use std::net::SocketAddr;

use clap::Parser;
use loadgen::testserver::{ServerConfig, TestServer};

/// A small HTTP/1.1 + h2c origin: GET any path → 12 bytes, GET /bytes/N → N bytes,
/// POST/PUT → reads the body, answers "ok".
#[derive(Debug, Parser)]
#[command(name = "loadgen-origin", version, about)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Server threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    let config = ServerConfig {
        threads: args.threads,
        ..ServerConfig::default()
    };
    match TestServer::start(args.listen, config) {
        Ok(server) => {
            println!("listening {}", server.addr());
            server.wait();
        }
        Err(e) => {
            eprintln!("loadgen-origin: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    }
}
