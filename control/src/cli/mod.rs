//! The `ringway` command line, shaped like cloudflared's so existing scripts keep working.
//!
//! - `args`: the clap definitions of the verbs.
//! - `flags`: cloudflared's global/`tunnel`/`tunnel run` flags, at cloudflared's places, with
//!   its environment variables and config.yml keys (one table).
//! - `tunnel`: the `ringway tunnel ...` verbs that talk to the control plane.
//! - `ingress`: `tunnel ingress validate|rule`, purely local.
//! - `login`: `tunnel login`, browser and non-interactive.
//! - `control`: `ringway control serve`.
//! - `edge`: `ringway edge run`.
//! - `run`: `ringway tunnel run`, `tunnel ready`, the bare `tunnel` (quick tunnels).
//! - `service`: `ringway service install|uninstall`.
//! - `version`: `version`, `--version` and `update`.
//! - `quickstart`: everything up locally in one command.
//! - `output`: cloudflared's table, JSON and YAML renderings.

pub mod args;
pub mod control;
pub mod edge;
pub mod flags;
pub mod ingress;
pub mod login;
pub mod output;
pub mod quickstart;
pub mod run;
pub mod service;
pub mod tunnel;
pub mod version;

pub use args::Cli;

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use flags::Flags;

/// One parsed invocation: the verbs and the layered flags.
#[derive(Debug)]
pub struct Invocation {
    pub cli: Cli,
    pub flags: Flags,
}

/// Parses `args` (the program name first). A usage error is clap's (it prints and exits 2);
/// a bad flag value or config.yml is an `Err`.
pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Invocation> {
    let args = flags::normalize_args(args);
    let matches = match flags::augment(Cli::command()).try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => usage_error(e),
    };
    from_matches(&matches)
}

/// Help and version go out as clap writes them; a usage error is one line (clap's first, with
/// its tip folded in) and exit status 2, like cloudflared's "Incorrect Usage" line.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid command line");
    let tip = lines
        .find(|l| l.starts_with("tip:"))
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    eprintln!("{first}{tip}; see --help");
    std::process::exit(2);
}

/// [`parse`] without exiting and without reading config.yml: usage errors come back as `Err`.
/// For tests of the command line itself.
pub fn try_parse_without_config(
    args: impl IntoIterator<Item = String>,
) -> anyhow::Result<Invocation> {
    let args = flags::normalize_args(args);
    let matches = flags::augment(Cli::command()).try_get_matches_from(args)?;
    from_matches_with(&matches, false)
}

fn from_matches(matches: &ArgMatches) -> anyhow::Result<Invocation> {
    from_matches_with(matches, true)
}

fn from_matches_with(matches: &ArgMatches, read_config: bool) -> anyhow::Result<Invocation> {
    let mut cli = Cli::from_arg_matches(matches)?;
    // The levels this invocation reached, most specific first.
    let mut levels = vec![matches.clone()];
    let mut at_tunnel = cli.command.is_none();
    let mut at_run = false;
    let mut path = Vec::new();
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name);
        levels.insert(0, sub.clone());
        m = sub;
    }
    if path.first() == Some(&"tunnel") {
        at_tunnel = true;
        at_run = path.get(1) == Some(&"run");
    }
    let mut flags = Flags::new(levels, at_run);
    // config.yml feeds the tunnel commands (cloudflared's `ConfiguredAction`), except the
    // local ingress checks, which read and report on it themselves.
    let skip_config = matches!(
        &cli.command,
        Some(args::Command::Tunnel(args::TunnelCmd {
            verb: Some(args::TunnelVerb::Ingress(_) | args::TunnelVerb::Login(_)),
            ..
        }))
    );
    let explicit_config = flags.str("config")?.map(std::path::PathBuf::from);
    if read_config && at_tunnel && !skip_config {
        let config = flags::load_config(explicit_config.as_deref())?;
        flags = flags.with_config(config);
    }
    flags.check_all()?;
    if let Some(args::Command::Tunnel(t)) = &mut cli.command {
        t.config = explicit_config;
        t.origincert = flags.str("origincert")?.map(Into::into);
        t.api_url = flags.str("api-url")?;
    }
    Ok(Invocation { cli, flags })
}

/// What the command line asks of logging.
pub fn log_options(inv: &Invocation) -> anyhow::Result<crate::logging::LogOptions> {
    let f = &inv.flags;
    let output = f.str("output")?;
    // `-o json` on create/list/info is their own flag; only the tunnel-level one is the log
    // format, and it takes `default` or `json`.
    let json = match output.as_deref() {
        None | Some("default") => false,
        Some("json") => true,
        Some(other) => anyhow::bail!("--output {other}: expected default or json"),
    };
    Ok(crate::logging::LogOptions {
        level: f.str("loglevel")?.unwrap_or_else(|| "info".into()),
        transport_level: f
            .str("transport-loglevel")?
            .unwrap_or_else(|| "info".into()),
        logfile: f.str("logfile")?.map(Into::into),
        log_directory: f.str("log-directory")?.map(Into::into),
        json,
    })
}

/// Runs the parsed command. Errors come back to `main`, which prints one line.
pub fn run(inv: Invocation) -> anyhow::Result<()> {
    for notice in inv.flags.no_effect_notices() {
        tracing::info!("{notice}");
    }
    let Invocation { cli, flags } = inv;
    if cli.version {
        println!("{}", version::long());
        return Ok(());
    }
    match cli.command {
        None => run::bare_tunnel(&args::TunnelCmd::default(), &flags),
        Some(args::Command::Tunnel(t)) => tunnel::run(t, &flags),
        Some(args::Command::Control(c)) => control::run(c),
        Some(args::Command::Quickstart(q)) => quickstart::run(q),
        Some(args::Command::Edge(e)) => match e.verb {
            args::EdgeVerb::Run(a) => edge::run(a),
        },
        Some(args::Command::Version { short }) => {
            if short {
                println!("{}", version::short());
            } else {
                println!("{}", version::long());
            }
            Ok(())
        }
        Some(args::Command::Update { .. }) => {
            println!("{}", version::UPDATE_MESSAGE);
            Ok(())
        }
        Some(args::Command::Service(v)) => service(v, &flags),
        Some(args::Command::Tail(_)) => anyhow::bail!(
            "tail streams logs from Cloudflare's management service, which a self-hosted edge does not have: read the connector's own logs (--logfile, --log-directory, or journalctl -u cloudflared)"
        ),
    }
}

fn service(v: args::ServiceVerb, flags: &Flags) -> anyhow::Result<()> {
    match v {
        args::ServiceVerb::Install {
            token,
            no_update_service,
            root,
        } => service::install(&service::ServiceInstall {
            root,
            token: token.map(|t| t.expose().clone()),
            no_update_service,
            binary: std::env::current_exe()
                .context("cannot tell which binary the unit should run")?,
            config: flags.str("config")?.map(Into::into),
        }),
        args::ServiceVerb::Uninstall { root } => {
            service::uninstall(&service::ServiceUninstall { root })
        }
    }
}
