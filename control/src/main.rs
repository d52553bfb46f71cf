//! The `ringway` binary: parse the command line, set up logging, run, and turn any error into
//! one line on stderr with a nonzero exit.

use control::cli;

/// mimalloc instead of glibc malloc: the request path allocates small, short-lived buffers on
/// several threads, and glibc's malloc/free/consolidate took ~20 % of the edge's and the
/// connector's CPU in the e2e profile (README, "Edge and connector benchmark").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Before logging exists, a bad flag value or config.yml is printed here, as one line.
    let fail = |e: anyhow::Error| -> ! {
        // `{:#}` joins the context chain into one line: "what failed: why".
        eprintln!("error: {e:#}");
        std::process::exit(1);
    };
    let invocation = cli::parse(std::env::args()).unwrap_or_else(|e| fail(e));
    let log_options = cli::log_options(&invocation).unwrap_or_else(|e| fail(e));
    let _log = control::logging::init(&log_options).unwrap_or_else(|e| fail(e.into()));
    if let Err(e) = cli::run(invocation) {
        fail(e);
    }
}
