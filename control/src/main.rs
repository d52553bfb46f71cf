//! The `ringway` binary: parse the command line, set up logging, run, and turn any error into
//! one line on stderr with a nonzero exit.

use clap::Parser;
use control::cli::{self, Cli};

/// mimalloc instead of glibc malloc: the request path allocates small, short-lived buffers on
/// several threads, and glibc's malloc/free/consolidate took ~20 % of the edge's and the
/// connector's CPU in the e2e profile (README, "Edge and connector benchmark").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    // HTTP client internals stay at warn whatever the level: at debug they would print request
    // headers, and those carry bearer tokens.
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.loglevel.clone());
    let filter =
        tracing_subscriber::EnvFilter::new(format!("{directives},ureq=warn,ureq_proto=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = cli::run(cli) {
        // `{:#}` joins the context chain into one line: "what failed: why".
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
