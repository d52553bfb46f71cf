//! cloudflared's flags at cloudflared's places, with its environment variables and config.yml
//! keys.
//!
//! # Layout
//!
//! - `spec`: the table of every flag ([`spec::FLAGS`]).
//! - `mod.rs` (this file): the clap arguments built from the table ([`augment`]), the
//!   single-dash spelling Go accepts ([`normalize_args`]), and [`Flags`], the lookup.
//!
//! # Where a value comes from
//!
//! cloudflared (urfave/cli) defines the tunnel flags on the root command and on `tunnel`, and
//! a smaller set on `tunnel run`. A value is looked up, first match wins: the command line at
//! the most specific level that has it (`run`, then `tunnel`, then the root), then the
//! environment variables, then config.yml's top-level key of the same name, then the default.
//! clap is given the arguments only (no env, no defaults), so "set on the command line" is
//! exactly "present in the matches".

pub mod spec;

use std::path::Path;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::ConfigFile;
pub use spec::{Effect, FlagSpec, Kind, Levels};

/// The clap id of a table flag: its name, prefixed so it never collides with a derive field.
fn id(spec: &FlagSpec) -> String {
    format!("cf-{}", spec.name)
}

fn arg(spec: &'static FlagSpec) -> Arg {
    let mut a = Arg::new(id(spec))
        .long(spec.name)
        .hide(spec.hidden)
        .help(match spec.effect {
            Effect::Works(h) => h.to_string(),
            Effect::NoEffect(why) => format!("no effect on a self-hosted edge ({why})"),
        });
    for alias in spec.aliases {
        let mut chars = alias.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => a = a.short(c),
            _ => a = a.visible_alias(*alias),
        }
    }
    a = match spec.kind {
        // Go's bool flags: `--f` or `--f=false`, never `--f false`.
        Kind::Bool => a
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_parser(clap::builder::BoolishValueParser::new())
            .value_name("true|false")
            .action(ArgAction::Set),
        Kind::List => a.action(ArgAction::Append).value_name("VALUE"),
        // Go takes `--retries -1` as a value (then refuses it by range), not as a flag.
        Kind::Int | Kind::Float | Kind::Duration => a
            .action(ArgAction::Set)
            .allow_negative_numbers(true)
            .value_name("VALUE"),
        Kind::Str => a.action(ArgAction::Set).value_name("VALUE"),
    };
    a
}

/// Flags every ringway command takes after its own verb too (`ringway edge run --loglevel
/// debug`), since users of ringway's own commands expect them there.
pub const LOGGING_FLAGS: &[&str] = &[
    "loglevel",
    "transport-loglevel",
    "logfile",
    "log-directory",
    "output",
];

/// Flags accepted after every `tunnel` verb as well (`tunnel list --origincert P`).
const TUNNEL_VERB_FLAGS: &[&str] = &["config", "origincert", "api-url"];

/// Adds the table's flags: to the root command and to `tunnel` (cloudflared's global and
/// tunnel levels), to `tunnel run` (all of them: cloudflared takes only its run and proxy
/// flags there, and ringway also takes the rest, so that `tunnel run --metrics ADDR` works
/// too), and the logging flags to ringway's own commands.
pub fn augment(root: Command) -> Command {
    let all = || spec::FLAGS.iter().chain(spec::RINGWAY_RUN_FLAGS);
    let global: Vec<Arg> = spec::FLAGS
        .iter()
        .filter(|s| s.at_global())
        .map(|s| {
            let a = arg(s);
            if TUNNEL_VERB_FLAGS.contains(&s.name) {
                a.global(true)
            } else {
                a
            }
        })
        .collect();
    let run: Vec<Arg> = all()
        .filter(|s| !TUNNEL_VERB_FLAGS.contains(&s.name))
        .map(arg)
        .collect();
    let logging = || -> Vec<Arg> {
        LOGGING_FLAGS
            .iter()
            .map(|n| arg(spec::find(n).expect("logging flag in the table")))
            .collect()
    };
    let root_global: Vec<Arg> = spec::FLAGS
        .iter()
        .filter(|s| s.at_global())
        .map(arg)
        .collect();
    root.args(root_global)
        .mut_subcommand("tunnel", |t| {
            t.args(global).mut_subcommand("run", |r| r.args(run))
        })
        .mut_subcommand("edge", |e| e.mut_subcommand("run", |r| r.args(logging())))
        .mut_subcommand("control", |c| {
            c.mut_subcommand("serve", |s| s.args(logging()))
        })
        .mut_subcommand("quickstart", |q| q.args(logging()))
        .mut_subcommand("tail", |t| t.args(logging()))
}

/// Go's flag package reads `-name` like `--name`. Rewrites a single-dash table flag (or alias
/// of two letters or more) to the double-dash form clap expects; everything after `--` and
/// every other word is left alone.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = false;
    for a in args {
        if rest || a == "--" {
            rest = true;
            out.push(a);
            continue;
        }
        let single = a.strip_prefix('-').filter(|s| !s.starts_with('-'));
        match single {
            Some(body) if body.len() > 1 => {
                let name = body.split_once('=').map_or(body, |(n, _)| n);
                if name.len() > 1 && spec::find(name).is_some() {
                    out.push(format!("-{a}"));
                } else {
                    out.push(a);
                }
            }
            _ => out.push(a),
        }
    }
    out
}

/// A flag value that does not parse, or config.yml giving it the wrong type.
#[derive(Debug, thiserror::Error)]
#[error("{origin} {name}: {problem}")]
pub struct FlagError {
    pub name: String,
    /// `--flag`, `$ENV`, or `config.yml key`.
    pub origin: String,
    pub problem: String,
}

/// Where a value was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    Env(&'static str),
    Config,
}

/// The flags of one invocation: the matches of each level, most specific first, and the
/// config.yml in use.
#[derive(Debug, Default)]
pub struct Flags {
    levels: Vec<ArgMatches>,
    /// Whether the run-only flags exist here (`tunnel run`).
    at_run: bool,
    config: Option<ConfigFile>,
}

impl Flags {
    /// `levels`: the matches of `tunnel run`, `tunnel` and the root that this invocation
    /// reached, most specific first.
    pub fn new(levels: Vec<ArgMatches>, at_run: bool) -> Self {
        Self {
            levels,
            at_run,
            config: None,
        }
    }

    /// The config.yml whose top-level keys fill flags not set otherwise.
    pub fn with_config(mut self, config: Option<ConfigFile>) -> Self {
        self.config = config;
        self
    }

    pub fn config(&self) -> Option<&ConfigFile> {
        self.config.as_ref()
    }

    fn spec(name: &str) -> &'static FlagSpec {
        spec::find(name).unwrap_or_else(|| panic!("flag {name} is not in the table"))
    }

    /// The raw values of `name` and where they came from.
    pub fn raw(&self, name: &str) -> Result<Option<(Vec<String>, Source)>, FlagError> {
        let spec = Self::spec(name);
        let id = id(spec);
        for m in &self.levels {
            if let Ok(Some(values)) = m.try_get_raw(&id) {
                let v: Vec<String> = values.map(|s| s.to_string_lossy().into_owned()).collect();
                return Ok(Some((v, Source::CommandLine)));
            }
        }
        for env in spec.env {
            if let Ok(v) = std::env::var(env) {
                let values = if spec.kind == Kind::List {
                    v.split(',').map(|s| s.trim().to_owned()).collect()
                } else {
                    vec![v]
                };
                return Ok(Some((values, Source::Env(env))));
            }
        }
        if spec.config_key
            && let Some(v) = self.config.as_ref().and_then(|c| c.flag(spec.name))
        {
            return Ok(Some((config_values(spec, v)?, Source::Config)));
        }
        Ok(None)
    }

    /// Whether `name` was set anywhere (command line, environment, config.yml).
    pub fn is_set(&self, name: &str) -> bool {
        matches!(self.raw(name), Ok(Some(_)))
    }

    fn one(&self, name: &str) -> Result<Option<(String, Source)>, FlagError> {
        Ok(self
            .raw(name)?
            .and_then(|(mut v, s)| v.pop().map(|last| (last, s))))
    }

    pub fn str(&self, name: &str) -> Result<Option<String>, FlagError> {
        Ok(self.one(name)?.map(|(v, _)| v))
    }

    pub fn bool(&self, name: &str) -> Result<bool, FlagError> {
        match self.one(name)? {
            None => Ok(false),
            Some((v, src)) => {
                parse_bool(&v).ok_or_else(|| error(name, &src, "expected true or false"))
            }
        }
    }

    /// A bool that may be unset (for origin options that inherit).
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, FlagError> {
        if self.is_set(name) {
            self.bool(name).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn int<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, FlagError> {
        match self.one(name)? {
            None => Ok(None),
            Some((v, src)) => v.trim().parse().map(Some).map_err(|_| {
                let why = if v.trim().parse::<i128>().is_ok() {
                    "is out of range"
                } else {
                    "is not a valid number"
                };
                error(name, &src, &format!("{v:?} {why}"))
            }),
        }
    }

    pub fn float(&self, name: &str) -> Result<Option<f64>, FlagError> {
        self.int::<f64>(name)
    }

    pub fn duration(&self, name: &str) -> Result<Option<Duration>, FlagError> {
        match self.one(name)? {
            None => Ok(None),
            Some((v, src)) => crate::config::parse_go_duration(&v)
                .map(Some)
                .map_err(|e| error(name, &src, &e.to_string())),
        }
    }

    pub fn list(&self, name: &str) -> Result<Vec<String>, FlagError> {
        Ok(self.raw(name)?.map(|(v, _)| v).unwrap_or_default())
    }

    /// Checks every set flag's value against its type, so a bad value fails at start even
    /// where nothing reads the flag.
    pub fn check_all(&self) -> Result<(), FlagError> {
        for s in spec::FLAGS.iter().chain(spec::RINGWAY_RUN_FLAGS) {
            if !self.is_known_here(s) {
                continue;
            }
            match s.kind {
                Kind::Bool => self.bool(s.name).map(drop)?,
                Kind::Int => self.int::<i64>(s.name).map(drop)?,
                Kind::Float => self.float(s.name).map(drop)?,
                Kind::Duration => self.duration(s.name).map(drop)?,
                Kind::Str | Kind::List => self.raw(s.name).map(drop)?,
            }
        }
        Ok(())
    }

    /// Whether a level of this invocation defines `spec` (run-only flags exist only under
    /// `tunnel run`).
    fn is_known_here(&self, spec: &FlagSpec) -> bool {
        spec.at_global() || self.at_run
    }

    /// The set flags that have no effect on a self-hosted edge, with why, for one INFO line
    /// each.
    pub fn no_effect_notices(&self) -> Vec<String> {
        spec::FLAGS
            .iter()
            .filter(|s| self.is_known_here(s))
            .filter_map(|s| match s.effect {
                Effect::NoEffect(why) if self.is_set(s.name) => Some(format!(
                    "--{} has no effect on a self-hosted edge: {why}",
                    s.name
                )),
                _ => None,
            })
            .collect()
    }
}

fn error(name: &str, src: &Source, problem: &str) -> FlagError {
    FlagError {
        name: name.to_owned(),
        origin: match src {
            Source::CommandLine => "flag".into(),
            Source::Env(e) => format!("environment variable {e} for"),
            Source::Config => "config.yml key".into(),
        },
        problem: problem.to_owned(),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" | "yes" | "on" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A config.yml value as the flag's raw strings, with cloudflared's strict typing: a list
/// flag needs a YAML list, a bool a YAML bool, a number a YAML number.
fn config_values(spec: &FlagSpec, v: &serde_yaml::Value) -> Result<Vec<String>, FlagError> {
    use serde_yaml::Value;
    let bad = |want: &str| FlagError {
        name: spec.name.to_owned(),
        origin: "config.yml key".into(),
        problem: format!("expected {want}"),
    };
    let scalar = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    };
    match spec.kind {
        Kind::List => match v {
            Value::Sequence(items) => items
                .iter()
                .map(|i| scalar(i).ok_or_else(|| bad("a list of strings")))
                .collect(),
            _ => Err(bad("a list")),
        },
        Kind::Bool => match v {
            Value::Bool(b) => Ok(vec![b.to_string()]),
            _ => Err(bad("true or false")),
        },
        Kind::Int | Kind::Float => match v {
            Value::Number(n) => Ok(vec![n.to_string()]),
            _ => Err(bad("a number")),
        },
        Kind::Str | Kind::Duration => scalar(v).map(|s| vec![s]).ok_or_else(|| bad("a string")),
    }
}

/// Loads config.yml: `explicit` must exist; otherwise the first file in cloudflared's search
/// directories, if any.
pub fn load_config(
    explicit: Option<&Path>,
) -> Result<Option<ConfigFile>, crate::config::ConfigError> {
    let path = match explicit {
        Some(p) => Some(crate::files::search::expand_home(p)),
        None => crate::files::find_config_file(&crate::files::default_search_dirs()),
    };
    path.map(|p| ConfigFile::load(&p)).transpose()
}

#[cfg(test)]
#[path = "flags_tests.rs"]
mod tests;
