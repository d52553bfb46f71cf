//! The edge ([`Edge`]: `ringway edge run` on free loopback ports) and [`TunnelSetup`], the base
//! of every data-path test: a control plane, a logged-in CLI and an edge following it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::{Cli, Setup};
use crate::connector::{Connector, Transport};
use crate::control_plane::ControlPlane;
use crate::process::{LoggedProc, ringway_bin};
use crate::raw_client::{HttpResponse, RawClient, request_bytes};

/// Options of [`Edge::start`].
#[derive(Debug, Clone)]
pub struct EdgeOpts {
    /// How many `--tunnel-listen 127.0.0.1:0` addresses.
    pub tunnel_listeners: usize,
    pub location: Option<String>,
    pub workers: Option<usize>,
    /// Anything else, appended as given.
    pub extra: Vec<String>,
    /// The binary to run instead of [`ringway_bin`] (e.g. an older build, to compare).
    pub bin: Option<PathBuf>,
}

impl Default for EdgeOpts {
    fn default() -> Self {
        Self {
            tunnel_listeners: 1,
            location: None,
            workers: None,
            extra: Vec::new(),
            bin: None,
        }
    }
}

/// A running `ringway edge run` on free loopback ports.
#[derive(Debug)]
pub struct Edge {
    pub proc: LoggedProc,
    pub state_dir: PathBuf,
    http_addr: SocketAddr,
    tunnel_addrs: Vec<SocketAddr>,
    ca_path: PathBuf,
}

impl Edge {
    /// Starts an edge following `cp` with its state in `dir` on free loopback ports, and waits
    /// for `edge ready`.
    pub fn start(cp: &ControlPlane, dir: &Path, opts: EdgeOpts) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let tunnel_listen = vec![any; opts.tunnel_listeners];
        Self::spawn(cp, dir, &opts, &tunnel_listen, any)
    }

    /// Like [`Edge::start`], but listening on the given addresses (e.g. those of an edge that
    /// was just killed, so connectors find the restarted one where they left it).
    pub fn start_at(
        cp: &ControlPlane,
        dir: &Path,
        tunnel_addrs: &[SocketAddr],
        http_addr: SocketAddr,
    ) -> Self {
        // `spawn` takes the listen addresses as given; `tunnel_listeners` only sizes `start`'s.
        let edge = Self::spawn(cp, dir, &EdgeOpts::default(), tunnel_addrs, http_addr);
        let mut printed = edge.tunnel_addrs.clone();
        let mut asked = tunnel_addrs.to_vec();
        printed.sort();
        asked.sort();
        if edge.http_addr != http_addr || printed != asked {
            edge.proc.fail(&format!(
                "listens on http://{} and udp {printed:?}, asked for http://{http_addr} and udp {asked:?}",
                edge.http_addr
            ));
        }
        edge
    }

    /// Like [`Edge::start`], with a `--tunnel-listen` for each of `tunnel_listen` (port 0: a
    /// free one) and the public listener on a free loopback port, e.g. the host side of a veth
    /// pair so a connector in a network namespace can reach it.
    pub fn start_listening(cp: &ControlPlane, dir: &Path, tunnel_listen: &[SocketAddr]) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self::spawn(cp, dir, &EdgeOpts::default(), tunnel_listen, any)
    }

    fn spawn(
        cp: &ControlPlane,
        dir: &Path,
        opts: &EdgeOpts,
        tunnel_listen: &[SocketAddr],
        http_listen: SocketAddr,
    ) -> Self {
        std::fs::create_dir_all(dir).expect("edge state dir");
        let mut cmd = Command::new(opts.bin.clone().unwrap_or_else(ringway_bin));
        cmd.args(["edge", "run", "--control", &cp.url]);
        // The file form keeps the token out of the process list; an older build given as
        // `bin` may not know it.
        if opts.bin.is_some() {
            cmd.args(["--edge-token", &cp.edge_token()]);
        } else {
            cmd.arg("--edge-token-file")
                .arg(cp.data_dir.join("edge-token"));
        }
        cmd.arg("--state-dir").arg(dir);
        for a in tunnel_listen {
            cmd.args(["--tunnel-listen", &a.to_string()]);
        }
        cmd.args(["--http-listen", &http_listen.to_string()]);
        if let Some(loc) = &opts.location {
            cmd.args(["--location", loc]);
        }
        if let Some(w) = opts.workers {
            cmd.args(["--workers", &w.to_string()]);
        }
        cmd.args(&opts.extra);
        let mut proc = LoggedProc::spawn("edge", cmd);
        // Failure limit only: the edge is normally ready in well under a second.
        proc.wait_stdout("`edge ready`", Duration::from_secs(60), |l| {
            (l.trim() == "edge ready").then_some(())
        });
        let lines = proc.log.stdout_lines();
        let mut tunnel_addrs = Vec::new();
        let mut http_addr = None;
        let mut ca_path = None;
        for l in &lines {
            let l = l.trim();
            if let Some(a) = l.strip_prefix("tunnel listening on udp://") {
                tunnel_addrs.push(
                    a.parse()
                        .unwrap_or_else(|e| proc.fail(&format!("bad tunnel address {a:?}: {e}"))),
                );
            } else if let Some(a) = l.strip_prefix("http listening on http://") {
                http_addr = Some(
                    a.trim_end_matches('/')
                        .parse()
                        .unwrap_or_else(|e| proc.fail(&format!("bad http address {a:?}: {e}"))),
                );
            } else if let Some(p) = l.strip_prefix("ca certificate at ") {
                ca_path = Some(PathBuf::from(p));
            }
        }
        if tunnel_addrs.len() != tunnel_listen.len() {
            proc.fail(&format!(
                "printed {} tunnel addresses, expected {}",
                tunnel_addrs.len(),
                tunnel_listen.len()
            ));
        }
        let http_addr = http_addr.unwrap_or_else(|| proc.fail("printed no http address"));
        let ca_path = ca_path.unwrap_or_else(|| proc.fail("printed no ca certificate path"));
        if !ca_path.exists() {
            proc.fail(&format!(
                "ca certificate {} does not exist",
                ca_path.display()
            ));
        }
        Self {
            proc,
            state_dir: dir.to_path_buf(),
            http_addr,
            tunnel_addrs,
            ca_path,
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn tunnel_addrs(&self) -> &[SocketAddr] {
        &self.tunnel_addrs
    }

    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// `--edge ADDR` for every tunnel address, then `--cacert PATH`: what a connector needs.
    pub fn connector_args(&self) -> Vec<String> {
        self.connector_args_via(&self.tunnel_addrs)
    }

    /// Like [`Edge::connector_args`], but dialing `addrs` (e.g. a relay in front of the edge,
    /// or an address where nothing answers) while trusting this edge's CA.
    pub fn connector_args_via(&self, addrs: &[SocketAddr]) -> Vec<String> {
        let mut v = Vec::new();
        for a in addrs {
            v.push("--edge".to_string());
            v.push(a.to_string());
        }
        v.push("--cacert".to_string());
        v.push(self.ca_path.display().to_string());
        v
    }

    /// Everything the edge printed, for failure messages.
    pub fn logs(&self) -> String {
        self.proc.log.dump()
    }

    /// A `GET path` with `Host: host` on a fresh connection (closed after the answer); an I/O
    /// error fails with the edge's output.
    pub fn get(&self, host: &str, path: &str) -> HttpResponse {
        let mut c = RawClient::connect(self.http_addr);
        c.request(&request_bytes("GET", host, path, &[], None, true), false)
            .unwrap_or_else(|e| {
                panic!(
                    "GET http://{}{path} (Host: {host}) through the edge: {e}",
                    self.http_addr,
                )
            })
    }

    /// Polls `GET host/path` until `ok` accepts the answer; fails after `limit` with the last
    /// answer and the edge's output.
    pub fn wait_get(
        &self,
        what: &str,
        host: &str,
        path: &str,
        limit: Duration,
        ok: impl Fn(&HttpResponse) -> bool,
    ) -> HttpResponse {
        let deadline = Instant::now() + limit;
        loop {
            let last = RawClient::connect_timeout(self.http_addr, Duration::from_secs(10))
                .and_then(|mut c| {
                    c.request(&request_bytes("GET", host, path, &[], None, true), false)
                });
            match &last {
                Ok(r) if ok(r) => return last.expect("checked"),
                _ => {}
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what} (GET {host}{path}); last answer: {}",
                    match &last {
                        Ok(r) => r.summary(),
                        Err(e) => format!("error {e}"),
                    },
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A control plane, a logged-in CLI and an edge following the control plane, all in one temp
/// dir: the base of every data-path test.
#[derive(Debug)]
pub struct TunnelSetup {
    pub edge: Edge,
    pub s: Setup,
}

impl TunnelSetup {
    pub fn new(zone: &str) -> Self {
        Self::with_opts(zone, EdgeOpts::default())
    }

    pub fn with_opts(zone: &str, opts: EdgeOpts) -> Self {
        let s = Setup::new(&[zone]);
        let edge = Edge::start(&s.cp, &s.tmp.path().join("edge-state"), opts);
        Self { edge, s }
    }

    /// Like [`TunnelSetup::new`], the edge listening for tunnels on `tunnel_listen`
    /// ([`Edge::start_listening`]).
    pub fn with_tunnel_listen(zone: &str, tunnel_listen: &[SocketAddr]) -> Self {
        let s = Setup::new(&[zone]);
        let edge = Edge::start_listening(&s.cp, &s.tmp.path().join("edge-state"), tunnel_listen);
        Self { edge, s }
    }

    pub fn cli(&self) -> &Cli {
        &self.s.cli
    }

    /// `tunnel create NAME`, then `tunnel route dns NAME HOST` for each host; returns the id.
    pub fn tunnel(&self, name: &str, hosts: &[&str]) -> String {
        let id = self.s.cli.create(name, &[]);
        for h in hosts {
            self.route(name, h);
        }
        id
    }

    pub fn route(&self, name: &str, host: &str) {
        self.s.cli.run(&["tunnel", "route", "dns", name, host]).ok();
    }

    /// The credentials file `tunnel create` wrote for `id`.
    pub fn credentials_path(&self, id: &str) -> PathBuf {
        self.s.cli.cloudflared_dir().join(format!("{id}.json"))
    }

    /// The arguments of `tunnel run --credentials-file … --url URL`, then `edge_args` (where
    /// to dial, e.g. [`Edge::connector_args`]), then `extra`, then `tunnel` (a name or an id).
    pub fn run_args(
        &self,
        tunnel: &str,
        id: &str,
        url: &str,
        edge_args: &[String],
        extra: &[&str],
    ) -> Vec<String> {
        let creds = self.credentials_path(id).display().to_string();
        let mut args: Vec<String> = ["tunnel", "run", "--credentials-file", &creds, "--url", url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend_from_slice(edge_args);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(tunnel.to_string());
        args
    }

    /// `tunnel run --credentials-file … --url URL --edge … --cacert … [extra] NAME`, waiting for
    /// `n` registered connections.
    pub fn run_url(&self, name: &str, id: &str, url: &str, extra: &[&str], n: usize) -> Connector {
        let args = self.run_args(name, id, url, &self.edge.connector_args(), extra);
        Connector::start_n(&self.s.cli, &args, n)
    }

    /// [`TunnelSetup::run_url`] with `--protocol` `transport`; fails unless every registration
    /// says `protocol=` that transport.
    pub fn run_over(
        &self,
        transport: Transport,
        name: &str,
        id: &str,
        url: &str,
        extra: &[&str],
        n: usize,
    ) -> Connector {
        let mut all = transport.args().to_vec();
        all.extend_from_slice(extra);
        let conn = self.run_url(name, id, url, &all, n);
        conn.assert_registered_over(transport);
        conn
    }

    /// `tunnel --config CONFIG run --edge … --cacert …`, waiting for one registered connection.
    pub fn run_config(&self, config: &Path) -> Connector {
        let mut args = vec![
            "tunnel".to_string(),
            "--config".into(),
            config.display().to_string(),
            "run".into(),
        ];
        args.extend(self.edge.connector_args());
        Connector::start(&self.s.cli, &args)
    }

    /// Waits until `host` is served (any answer other than the edge's 404 and 530), i.e. the
    /// edge has both the DNS record and a live connection.
    pub fn wait_served(&self, host: &str) -> HttpResponse {
        self.edge.wait_get(
            &format!("{host} to be served"),
            host,
            "/",
            Duration::from_secs(30),
            |r| r.status != 404 && r.status != 530,
        )
    }
}
