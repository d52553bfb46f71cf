//! Logging for every `ringway` command: console and file output with cloudflared's flags.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub mod json;
pub mod rotate;

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

/// Keeps the log writers alive until the process exits. The writers are unbuffered (every line
/// reaches the file when it is logged), so dropping it loses nothing.
#[derive(Debug)]
pub struct LogGuard {}

/// Targets whose level is `transport_level`: the QUIC stack (quinn's crates and ours).
pub const TRANSPORT_TARGETS: [&str; 3] = ["quinn_proto", "quinn_udp", "dataplane::quic"];

/// zerolog's level names: fatal and panic are errors here, `disabled` turns logging off.
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warn" | "warning" => LevelFilter::WARN,
        "error" | "fatal" | "panic" => LevelFilter::ERROR,
        "disabled" | "off" => LevelFilter::OFF,
        _ => return None,
    })
}

/// A parsed level, and the line cloudflared logs when the name is not a level.
fn level_or_info(name: &str) -> (LevelFilter, Option<String>) {
    match parse_level(name) {
        Some(level) => (level, None),
        None => (
            LevelFilter::INFO,
            Some(format!("Failed to parse log level {name:?}, using info")),
        ),
    }
}

/// The filter both console and file obey. `RUST_LOG`, when set, replaces the level directives.
pub fn filter_directives(
    level: LevelFilter,
    transport: LevelFilter,
    rust_log: Option<&str>,
) -> String {
    let mut directives = match rust_log {
        Some(custom) => custom.to_owned(),
        None => {
            let mut d = level.to_string();
            for target in TRANSPORT_TARGETS {
                d.push_str(&format!(",{target}={transport}"));
            }
            d
        }
    };
    // HTTP client internals stay at warn at most, whatever the level: at debug they would print
    // request headers, and those carry bearer tokens.
    let http = std::cmp::min(level, LevelFilter::WARN);
    directives.push_str(&format!(",ureq={http},ureq_proto={http}"));
    directives
}

/// Where file lines go: `--logfile` (one file) or `--log-directory` (rotated).
fn file_writer(opts: &LogOptions) -> Result<Option<Box<dyn std::io::Write + Send>>, LoggingError> {
    if let Some(path) = &opts.logfile {
        let file = rotate::open_append(path).map_err(|source| LoggingError::Open {
            path: path.clone(),
            source,
        })?;
        return Ok(Some(Box::new(file)));
    }
    if let Some(dir) = &opts.log_directory {
        let file = rotate::RotatingFile::open(dir).map_err(|source| LoggingError::Open {
            path: dir.join(rotate::FILE_NAME),
            source,
        })?;
        return Ok(Some(Box::new(file)));
    }
    Ok(None)
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(opts: &LogOptions) -> Result<LogGuard, LoggingError> {
    let (level, bad_level) = level_or_info(&opts.level);
    let (transport, bad_transport) = level_or_info(&opts.transport_level);
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::new(filter_directives(level, transport, rust_log.as_deref()));

    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let console_text = (!opts.json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(ansi)
    });
    let console_json = opts.json.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(json::JsonLines)
    });
    // One filter on the registry, in front of every layer: the file sees exactly what the
    // console sees, so the HTTP client's header lines reach neither.
    let file = file_writer(opts)?.map(|w| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(w))
            .with_ansi(false)
            .event_format(json::JsonLines)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(console_text)
        .with(console_json)
        .with(file)
        .init();

    for line in [bad_level, bad_transport].into_iter().flatten() {
        tracing::error!("{line}");
    }
    if let (Some(file), Some(dir)) = (&opts.logfile, &opts.log_directory) {
        tracing::error!(
            "Your config includes values for both logfile ({}) and log-directory ({}), but they are incompatible. logfile takes precedence.",
            file.display(),
            dir.display()
        );
    }
    Ok(LogGuard {})
}

#[cfg(test)]
#[path = "logging_tests.rs"]
mod tests;
