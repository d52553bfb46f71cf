//! The connector ([`Connector`]: `ringway tunnel … run`) with its output collected, and the
//! waits on what it logs (registered connections, the metrics server's address). The tunnel
//! transport a test asks for ([`Transport`], `--protocol`), what each registration and the
//! metrics say it got, and [`per_transport!`](crate::per_transport), which turns one test body
//! into one `#[test]` per transport.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cli::Cli;
use crate::process::LoggedProc;
use crate::raw_client::{RawClient, request_bytes};

/// A tunnel transport between connector and edge, asked for with `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    Http2,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Quic, Transport::Http2];

    /// The name `--protocol` takes and the registration line and metric print (`protocol=`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Http2 => "http2",
        }
    }

    /// `--protocol NAME`.
    pub fn args(self) -> [&'static str; 2] {
        ["--protocol", self.name()]
    }
}

/// One `#[test]` per [`Transport`] for each named fn taking a `Transport`: `quic::NAME` and
/// `http2::NAME`, so a transport's tests can be run alone (`cargo test http2::`).
#[macro_export]
macro_rules! per_transport {
    ($($test:ident),* $(,)?) => {
        mod quic {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::connector::Transport::Quic)
                }
            )*
        }
        mod http2 {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::connector::Transport::Http2)
                }
            )*
        }
    };
}

/// The `protocol=` field of a registration line.
pub fn line_protocol(line: &str) -> Option<&str> {
    let rest = &line[line.find("protocol=")? + "protocol=".len()..];
    rest.split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .next()
}

/// The `ringway_tunnel_connection_protocol` sample of HA connection `index` in a metrics
/// page: the protocol whose gauge is 1.
pub fn metrics_protocol(page: &str, index: usize) -> Option<String> {
    let prefix = format!("ringway_tunnel_connection_protocol{{conn_index=\"{index}\",protocol=\"");
    page.lines().find_map(|l| {
        let rest = l.strip_prefix(&prefix)?;
        let (proto, value) = rest.split_once("\"}")?;
        (value.trim() == "1").then(|| proto.to_string())
    })
}

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

    /// The `protocol=` of each registration line, in order (`?` where a line has none).
    pub fn registered_protocols(&self) -> Vec<String> {
        self.registered_lines()
            .iter()
            .map(|l| line_protocol(l).unwrap_or("?").to_string())
            .collect()
    }

    /// Fails (with the connector's output) unless every registration so far says `protocol=`
    /// the transport asked for.
    pub fn assert_registered_over(&self, t: Transport) {
        let protocols = self.registered_protocols();
        assert!(
            !protocols.is_empty() && protocols.iter().all(|p| p == t.name()),
            "asked for --protocol {}, the registrations say {protocols:?}\n{}",
            t.name(),
            self.logs()
        );
    }

    /// `GET /metrics` on the connector's metrics server; `None` on an I/O error.
    pub fn metrics_page(&mut self) -> Option<String> {
        let addr = self.metrics_addr();
        let mut c = RawClient::connect_timeout(addr, Duration::from_secs(5)).ok()?;
        let r = c
            .request(
                &request_bytes("GET", &addr.to_string(), "/metrics", &[], None, true),
                false,
            )
            .ok()?;
        (r.status == 200).then(|| r.text())
    }

    /// The protocol the metrics server reports for HA connection `index` (`None`: none, or
    /// the page could not be read).
    pub fn connection_protocol(&mut self, index: usize) -> Option<String> {
        metrics_protocol(&self.metrics_page()?, index)
    }

    /// Waits (failure limit `limit`) until the metrics say HA connection `index` is on `t`;
    /// fails with the last page and the connector's output.
    pub fn wait_connection_protocol(&mut self, index: usize, t: Transport, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let page = self.metrics_page();
            if page
                .as_deref()
                .and_then(|p| metrics_protocol(p, index))
                .as_deref()
                == Some(t.name())
            {
                return;
            }
            if Instant::now() >= deadline {
                let samples: Vec<&str> = page
                    .as_deref()
                    .unwrap_or("(no metrics page)")
                    .lines()
                    .filter(|l| l.contains("connection_protocol"))
                    .collect();
                panic!(
                    "timed out after {limit:?} waiting for connection {index} on {} in the \
                     metrics; last samples: {samples:?}\n{}",
                    t.name(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits (failure limit `limit`) for the process to exit, and fails unless it
    /// exited successfully. Returns how long the exit took, for the test to print.
    pub fn terminate(&mut self, limit: Duration) -> Duration {
        let stopping = std::time::Instant::now();
        self.proc.proc.signal("TERM");
        let status = self.proc.wait_exit(limit);
        let took = stopping.elapsed();
        assert!(
            status.success(),
            "connector after SIGTERM: {status}\n{}",
            self.logs()
        );
        took
    }

    /// Runs `request` on a thread; once `arrived` says the origin has it, [`terminate`]s
    /// (failure limit `limit`, also for the arrival). Returns what `request` returned and how
    /// long the exit took.
    ///
    /// [`terminate`]: Connector::terminate
    pub fn terminate_during<T: Send>(
        &mut self,
        arrived: &std::sync::mpsc::Receiver<()>,
        limit: Duration,
        request: impl FnOnce() -> T + Send,
    ) -> (T, Duration) {
        std::thread::scope(|s| {
            let request = s.spawn(request);
            arrived
                .recv_timeout(limit)
                .expect("the origin to receive the request");
            let took = self.terminate(limit);
            (request.join().expect("request thread"), took)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_protocol_of_a_registration_line() {
        let line = "2026-12-02T14:00:00Z INF Registered tunnel connection connIndex=0 \
                    connection=9b1c event=0 ip=127.0.0.1 location=local protocol=http2";
        assert_eq!(line_protocol(line), Some("http2"));
        let json =
            r#"{"message":"Registered tunnel connection","protocol":"x","msg":"… protocol=quic"}"#;
        assert_eq!(line_protocol(json), Some("quic"));
        assert_eq!(
            line_protocol("Registered tunnel connection connIndex=0"),
            None
        );
    }

    #[test]
    fn reads_the_protocol_gauge_of_one_connection() {
        let page = "# TYPE ringway_tunnel_connection_protocol gauge\n\
                    ringway_tunnel_connection_protocol{conn_index=\"0\",protocol=\"http2\"} 1\n\
                    ringway_tunnel_connection_protocol{conn_index=\"1\",protocol=\"quic\"} 1\n\
                    ringway_tunnel_connection_protocol{conn_index=\"2\",protocol=\"quic\"} 0\n";
        assert_eq!(metrics_protocol(page, 0).as_deref(), Some("http2"));
        assert_eq!(metrics_protocol(page, 1).as_deref(), Some("quic"));
        assert_eq!(metrics_protocol(page, 2), None);
        assert_eq!(metrics_protocol(page, 3), None);
        assert_eq!(Transport::Http2.args(), ["--protocol", "http2"]);
    }
}
