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
    let _log = match control::logging::init(&cli::log_options(&cli)) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = cli::run(cli) {
        // `{:#}` joins the context chain into one line: "what failed: why".
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
