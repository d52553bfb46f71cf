//! The `ringway` command line, shaped like cloudflared's so existing scripts keep working.
//!
//! - `args`: the clap definitions (every verb and flag in one place).
//! - `tunnel`: the `ringway tunnel ...` verbs that talk to the control plane.
//! - `ingress`: `tunnel ingress validate|rule`, purely local.
//! - `login`: `tunnel login`, browser and non-interactive.
//! - `control`: `ringway control serve`.
//! - `edge`: `ringway edge run`.
//! - `run`: `ringway tunnel run`.
//! - `quickstart`: everything up locally in one command.
//! - `output`: cloudflared's table, JSON and YAML renderings.

pub mod args;
pub mod control;
pub mod edge;
pub mod ingress;
pub mod login;
pub mod output;
pub mod quickstart;
pub mod run;
pub mod tunnel;

pub use args::Cli;

/// What the command line asks of logging.
pub fn log_options(cli: &Cli) -> crate::logging::LogOptions {
    crate::logging::LogOptions {
        level: cli.loglevel.clone(),
        ..Default::default()
    }
}

/// Runs the parsed command. Errors come back to `main`, which prints one line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        args::Command::Tunnel(t) => tunnel::run(t),
        args::Command::Control(c) => control::run(c),
        args::Command::Quickstart(q) => quickstart::run(q),
        args::Command::Edge(e) => match e.verb {
            args::EdgeVerb::Run(a) => edge::run(a),
        },
    }
}
