//! The connector ([`Connector`]: `ringway tunnel … run`) with its output collected, and the
//! waits on what it logs (registered connections, the metrics server's address).

use std::net::SocketAddr;
use std::time::Duration;

use crate::cli::Cli;
use crate::process::LoggedProc;

/// A running `ringway tunnel … run` (a connector); its output is collected.
#[derive(Debug)]
pub struct Connector {
    pub proc: LoggedProc,
}

/// The marker the connector logs once per registered connection.
pub const REGISTERED: &str = "Registered tunnel connection";

impl Connector {
    /// Runs `ringway ARGS` (e.g. `tunnel run --url … --edge … --cacert … NAME`) in `cli`'s
    /// home and waits until one connection is registered.
    pub fn start(cli: &Cli, args: &[impl AsRef<str>]) -> Self {
        Self::start_n(cli, args, 1)
    }

    /// Like [`Connector::start`], waiting for `n` registered connections.
    pub fn start_n(cli: &Cli, args: &[impl AsRef<str>], n: usize) -> Self {
        let mut c = Self::spawn(cli, args);
        c.wait_registered(n);
        c
    }

    /// Starts without waiting for anything. Unless `args` has `--metrics`, the metrics
    /// server gets `127.0.0.1:0`: the default port range (20241-20245) would run out when tests
    /// run connectors in parallel.
    pub fn spawn(cli: &Cli, args: &[impl AsRef<str>]) -> Self {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let mut cmd = cli.command(&args);
        if args.contains(&"run") && !args.iter().any(|a| a.starts_with("--metrics")) {
            cmd.args(["--metrics", "127.0.0.1:0"]);
        }
        Self {
            proc: LoggedProc::spawn("connector", cmd),
        }
    }

    /// Starts `cmd` (another connector binary, e.g. the stock cloudflared) and waits for `n`
    /// registered connections: both log the same marker.
    pub fn start_command(cmd: std::process::Command, n: usize) -> Self {
        let mut c = Self {
            proc: LoggedProc::spawn("connector", cmd),
        };
        c.wait_registered(n);
        c
    }

    /// How many `Registered tunnel connection` lines it has logged.
    pub fn registered(&self) -> usize {
        self.registered_lines().len()
    }

    pub fn registered_lines(&self) -> Vec<String> {
        self.proc
            .log
            .stderr_lines()
            .into_iter()
            .chain(self.proc.log.stdout_lines())
            .filter(|l| l.contains(REGISTERED))
            .collect()
    }

    /// Waits (30 s failure limit) until `n` connections are registered.
    pub fn wait_registered(&mut self, n: usize) {
        self.proc.wait_output(
            &format!("{n} × {REGISTERED:?}"),
            Duration::from_secs(30),
            |log| {
                let count = log
                    .stderr_lines()
                    .iter()
                    .chain(log.stdout_lines().iter())
                    .filter(|l| l.contains(REGISTERED))
                    .count();
                (count >= n).then_some(())
            },
        );
    }

    /// The address of `Starting metrics server on IP:PORT/metrics`.
    pub fn metrics_addr(&mut self) -> SocketAddr {
        let marker = "Starting metrics server on ";
        self.proc
            .wait_output("the metrics server line", Duration::from_secs(30), |log| {
                log.stderr_lines()
                    .iter()
                    .chain(log.stdout_lines().iter())
                    .find_map(|l| {
                        let rest = &l[l.find(marker)? + marker.len()..];
                        let addr = rest.split("/metrics").next()?.trim();
                        let addr = addr.trim_start_matches("http://");
                        addr.parse::<SocketAddr>().ok()
                    })
            })
    }

    /// Everything the connector printed.
    pub fn logs(&self) -> String {
        self.proc.log.dump()
    }

    pub fn kill9(&mut self) {
        self.proc.proc.kill9();
    }
}
