//! The scenarios, and one loadgen run of a scenario on one path with the tunnel processes'
//! CPU and memory sampled around it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::measure::{self, ProcUsage, Tracker};
use super::nginx::Origin;
use super::procs::{Proc, check_interrupted, spawn_logged};

/// What a scenario requests, which decides its path on the origin and its MB/s direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    Small,
    Download,
    Upload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub title: String,
    pub load: Load,
    pub connections: usize,
    pub rate: Option<u64>,
    pub conn_per_request: bool,
    pub secs: f64,
    pub warmup_secs: f64,
}

/// Every scenario name, in run order.
pub const NAMES: &[&str] = &[
    "small-c32",
    "small-c256",
    "rate",
    "get-1m",
    "post-1m",
    "streams",
    "churn",
];

/// The scenarios for the given durations; `rate` is the fixed-rate scenario's requests/s.
pub fn all(secs: f64, warmup: f64, rate_secs: f64, rate: u64) -> Vec<Scenario> {
    let s = |name: &str, title: &str, load, connections| Scenario {
        name: name.to_string(),
        title: title.to_string(),
        load,
        connections,
        rate: None,
        conn_per_request: false,
        secs,
        warmup_secs: warmup,
    };
    vec![
        s("small-c32", "12 B GET, c=32", Load::Small, 32),
        s("small-c256", "12 B GET, c=256", Load::Small, 256),
        Scenario {
            rate: Some(rate),
            secs: rate_secs,
            ..s(
                "rate",
                &format!("12 B GET at {rate}/s, c=64"),
                Load::Small,
                64,
            )
        },
        s("get-1m", "1 MiB GET, c=4", Load::Download, 4),
        s("post-1m", "1 MiB POST, c=4", Load::Upload, 4),
        s("streams", "12 B GET, c=1000", Load::Small, 1000),
        Scenario {
            conn_per_request: true,
            ..s("churn", "12 B GET, new conn each, c=32", Load::Small, 32)
        },
    ]
}

/// One way to the origin: `direct`, `ringway` or `rathole`.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub host: Option<&'static str>,
    /// (role, pid) of the processes on this path whose CPU and memory are reported.
    pub procs: Vec<(&'static str, u32)>,
}

/// loadgen's `--json` output (`loadgen.v1`); unknown fields are kept in [`RunResult::loadgen`].
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct LoadgenJson {
    pub schema: String,
    pub elapsed_s: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub rx_mb_per_s: f64,
    pub tx_mb_per_s: f64,
    pub latency_us: Latency,
    pub status: BTreeMap<String, u64>,
    pub errors: Errors,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Errors {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub parse: u64,
    pub total: u64,
}

/// One scenario on one path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub path: String,
    pub args: Vec<String>,
    pub requests_per_s: f64,
    /// rx for GETs, tx for uploads (10^6 B/s).
    pub mb_per_s: f64,
    pub latency_us: Latency,
    pub errors_total: u64,
    /// Responses counted by loadgen whose status was not 2xx (an edge's 502 is fast too).
    pub non_2xx: u64,
    pub procs: Vec<ProcUsage>,
    /// loadgen's own CPU over its whole run (warm-up included), and that as cores busy, to
    /// see whether the generator, sharing the cores, was the limit.
    pub loadgen_cpu_s: f64,
    pub loadgen_cores: f64,
    /// loadgen's JSON as written.
    pub loadgen: serde_json::Value,
}

impl LoadgenJson {
    pub fn non_2xx(&self) -> u64 {
        self.status
            .iter()
            .filter(|(k, _)| !k.starts_with('2'))
            .map(|(_, v)| v)
            .sum()
    }
}

/// How the bench drives loadgen.
#[derive(Debug, Clone)]
pub struct Runner {
    pub loadgen: PathBuf,
    pub threads: usize,
    /// Where loadgen's logs and JSON go.
    pub dir: PathBuf,
}

/// Kills loadgen if the run is abandoned (error or Ctrl-C).
struct Running(Proc);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.exited().is_none() {
            let _ = self.0.child.kill();
            let _ = self.0.child.wait();
        }
    }
}

impl Runner {
    pub fn args(&self, sc: &Scenario, origin: &Origin, t: &Target, json: &Path) -> Vec<String> {
        let ms = |s: f64| format!("{}ms", (s * 1000.0).round() as u64);
        let mut a: Vec<String> = vec!["-t".into(), self.threads.to_string()];
        a.extend(["-c".into(), sc.connections.to_string()]);
        a.extend([
            "-d".into(),
            ms(sc.secs),
            "--warmup".into(),
            ms(sc.warmup_secs),
        ]);
        if let Some(r) = sc.rate {
            a.extend(["--rate".into(), r.to_string()]);
        }
        if sc.load == Load::Upload {
            a.extend([
                "-m".into(),
                "POST".into(),
                "--body-size".into(),
                (1u32 << 20).to_string(),
            ]);
        }
        if sc.conn_per_request {
            a.push("--conn-per-request".into());
        }
        if let Some(h) = t.host {
            a.extend(["-H".into(), format!("Host: {h}")]);
        }
        a.extend(["--json".into(), json.display().to_string()]);
        let path = match sc.load {
            Load::Small => &origin.small,
            Load::Download => &origin.big,
            Load::Upload => &origin.upload,
        };
        a.push(format!("http://{}{path}", t.addr));
        a
    }

    /// Runs loadgen once; samples the path's processes at loadgen's start, at the start and
    /// end of its measured window (by the clock, from the spawn), and after it exits.
    pub fn run(&self, sc: &Scenario, origin: &Origin, t: &Target) -> Result<RunResult> {
        let step = format!("loadgen {} on {}", sc.name, t.name);
        let json = self.dir.join(format!("{}-{}.json", sc.name, t.name));
        let args = self.args(sc, origin, t, &json);
        let mut trackers = t
            .procs
            .iter()
            .map(|(role, pid)| Tracker::begin(role, *pid))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("{step}: sample processes"))?;
        let mut cmd = Command::new(&self.loadgen);
        cmd.args(&args);
        let name = format!("loadgen-{}-{}", sc.name, t.name);
        let mut lg =
            Running(spawn_logged(&self.dir, &name, &mut cmd).with_context(|| step.clone())?);
        let lg_cpu0 = measure::children_cpu_secs();
        let t0 = Instant::now();
        let win_start = t0 + Duration::from_secs_f64(sc.warmup_secs);
        let win_end = win_start + Duration::from_secs_f64(sc.secs);
        // The drain after the window waits for loadgen's --timeout (5 s); allow for slow starts.
        let limit = win_end + Duration::from_secs(40);
        let (mut started, mut ended) = (false, false);
        let status = loop {
            check_interrupted()?;
            if let Some(st) = lg.0.exited() {
                break st;
            }
            let now = Instant::now();
            if !started && now >= win_start {
                started = true;
                trackers.iter_mut().try_for_each(Tracker::window_start)?;
            }
            if started && !ended && now >= win_end {
                ended = true;
                trackers.iter_mut().try_for_each(Tracker::window_end)?;
            }
            if now > limit {
                bail!(
                    "{step}: still running {}s after its window; log {}",
                    40,
                    lg.0.stderr.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let loadgen_cpu_s = measure::children_cpu_secs() - lg_cpu0;
        let loadgen_cores = loadgen_cpu_s / t0.elapsed().as_secs_f64().max(1e-3);
        if !status.success() {
            bail!(
                "{step}: exited ({status}); log {}:\n{}",
                lg.0.stderr.display(),
                lg.0.tail()
            );
        }
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("{step}: read {}", json.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{step}: parse {}", json.display()))?;
        let r: LoadgenJson = serde_json::from_value(value.clone())
            .with_context(|| format!("{step}: {} does not follow loadgen.v1", json.display()))?;
        if r.schema != "loadgen.v1" {
            eprintln!("note: {step}: schema {:?}, expected loadgen.v1", r.schema);
        }
        let mb = if sc.load == Load::Upload {
            r.tx_mb_per_s
        } else {
            r.rx_mb_per_s
        };
        let procs = trackers
            .iter()
            .map(|tr| tr.finish(r.requests_per_s, mb))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("{step}: sample processes"))?;
        Ok(RunResult {
            path: t.name.to_string(),
            args,
            requests_per_s: r.requests_per_s,
            mb_per_s: mb,
            errors_total: r.errors.total,
            non_2xx: r.non_2xx(),
            latency_us: r.latency_us,
            procs,
            loadgen_cpu_s,
            loadgen_cores,
            loadgen: value,
        })
    }
}
