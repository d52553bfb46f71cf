//! `cargo run --release -p bench --bin e2e`: the end-to-end bench. The same origin is loaded
//! directly, through a ringway tunnel over each of its two transports (QUIC and HTTP/2) and
//! through rathole, by `loadgen`, in one run on loopback. Every figure is a ratio against a
//! baseline the same program started in the same run, so machine and load differences cancel
//! out.
//!
//! # Usage
//!
//! ```text
//! cargo run --release -p bench --bin e2e -- [--quick] [--secs 10] [--warmup 2] [--rate-secs 20]
//!     [--rate 5000] [--scenarios small-c32,rate,...] [--workers N] [--loadgen-threads N]
//!     [--origin nginx|builtin] [--no-rathole] [--no-http2] [--loadgen PATH] [--out DIR]
//!     [--render FILE]
//! ```
//!
//! It starts, in a temp dir on free loopback ports: the origin (`/usr/sbin/nginx`, one worker,
//! `sendfile` + `tcp_nopush` as Debian ships it, with a 12 B `/small`, a 1 MiB `/1m` and an
//! `/upload` that reads the whole body before answering (echo module); or with `--origin
//! builtin` `target/release/loadgen-origin`), the control plane, a tunnel with the DNS route
//! `app.bench.test`, `ringway edge run` and `ringway tunnel --protocol quic run` (the release
//! `ringway`, both with `--workers N`), a second tunnel `bench-h2` with the route
//! `app-h2.bench.test` on the same edge whose connector runs `--protocol http2` (not with
//! `--no-http2`), and rathole server + client (TCP transport, or Noise with
//! `--rathole-transport noise`) when `rathole` is on PATH
//! or in `~/.cargo/bin`. Missing release binaries are built first (`cargo build --release -p
//! control -p loadgen`). Everything is stopped and removed at the end, on error and on Ctrl-C.
//!
//! Scenarios (`--scenarios`, default all, each on every path: `direct`, `ringway` (QUIC),
//! `ringway-http2` (the HTTP/2 transport, shown as "ringway (http2)"), `rathole`):
//! `small-c32`, `small-c256` (12 B GET, closed loop), `rate` (12 B GET at `--rate`/s with
//! c=64 for `--rate-secs`), `get-1m` (1 MiB GET, c=4), `post-1m` (1 MiB POST, c=4), `streams`
//! (c=1000), `churn` (`--conn-per-request`, c=32). `--secs`/`--warmup` default to 10 s/2 s;
//! `--quick` makes that 3 s/1 s and 5 s at the fixed rate. `--workers` (default 0 = one per
//! core) also sets loadgen's threads unless `--loadgen-threads` is given (default: half the
//! cores, at least one; the origin and tunnels need the rest).
//!
//! For every run it records loadgen's JSON and its own CPU, and for the edge, the connector,
//! rathole's two processes and the origin: the CPU seconds within loadgen's measured window
//! (`/proc/PID/stat`), the cost per request and per MiB, and the peak RSS (`VmHWM` after a
//! `clear_refs` reset).
//!
//! Output in `--out` (default `bench/results/<UTC date>/`): `results.json` (everything),
//! `e2e.md` (the table and the ratios), `latency.svg` (percentiles at the fixed rate and at
//! c=32); `--render results.json` redraws the last two from a results file. On failure the
//! processes' logs are copied to `OUT/e2e-failed-logs/`. The last stdout line is
//! `e2e rps_ratio=<ringway/direct small-c32 req/s> p99_ratio=<ringway/direct p99 at the fixed
//! rate> bulk_ratio=<ringway/direct 1 MiB GET MB/s> vs_rathole_rps=<ringway/rathole small-c32
//! req/s>` (3 decimals, `n/a` for what was not run); the line before it is `e2e-http2
//! http2_quic_rps=<ringway-http2/ringway small-c32 req/s> http2_quic_p99=<the same, p99 at
//! the fixed rate> http2_quic_bulk=<the same, 1 MiB GET MB/s>`. e2e.md has a table of HTTP/2
//! over QUIC per scenario (req/s, MB/s, p99, CPU per request or MiB of edge and connector),
//! and results.json the same in `ratios[].http2_*`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bench::e2e::bins::Bins;
use bench::e2e::nginx::{self, Origin};
use bench::e2e::procs::{self, Procs};
use bench::e2e::report::{self, Machine, Report, ScenarioResult};
use bench::e2e::scenarios::{self, Runner, Target};
use bench::e2e::{chart, rathole, ringway};
use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum OriginKind {
    Nginx,
    Builtin,
}

#[derive(Debug, Parser)]
#[command(about = "End-to-end bench: direct vs. ringway vs. rathole, driven by loadgen")]
struct Args {
    /// Measured seconds per run (default 10; 3 with --quick).
    #[arg(long)]
    secs: Option<f64>,
    /// Warm-up seconds per run (default 2; 1 with --quick).
    #[arg(long)]
    warmup: Option<f64>,
    /// Measured seconds of the fixed-rate scenario (default 20; 5 with --quick).
    #[arg(long)]
    rate_secs: Option<f64>,
    /// Requests per second of the fixed-rate scenario.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Short runs for a smoke test.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Worker threads of the edge, the connector and loadgen (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// loadgen threads (default: --workers, or every core when that is 0).
    #[arg(long)]
    loadgen_threads: Option<usize>,
    /// The origin server.
    #[arg(long, value_enum, default_value = "nginx")]
    origin: OriginKind,
    /// Skip rathole even when it is installed.
    #[arg(long)]
    no_rathole: bool,
    /// Skip the `ringway-http2` path (a second tunnel whose connector runs `--protocol
    /// http2`).
    #[arg(long)]
    no_http2: bool,
    /// rathole's transport: `tcp` (its default, plaintext) or `noise` (encrypted, as
    /// ringway's tunnel always is).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "noise"])]
    rathole_transport: String,
    /// Output directory (default bench/results/<UTC date>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only redraw e2e.md and latency.svg from this results.json (into --out, default its
    /// folder); starts nothing.
    #[arg(long)]
    render: Option<PathBuf>,
    /// The loadgen binary (default target/release/loadgen).
    #[arg(long)]
    loadgen: Option<PathBuf>,
}

/// The options as resolved, recorded in results.json.
#[derive(Debug, Serialize)]
struct Options {
    secs: f64,
    warmup_s: f64,
    rate_secs: f64,
    rate: u64,
    quick: bool,
    scenarios: Vec<String>,
    workers: usize,
    loadgen_threads: usize,
    origin: OriginKind,
    /// Whether the `ringway-http2` path ran.
    http2: bool,
}

fn main() {
    procs::run_main("e2e", || run(Args::parse()));
}

fn run(args: Args) -> Result<String> {
    if let Some(file) = &args.render {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let rep: Report =
            serde_json::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
        let out = args.out.clone().unwrap_or_else(|| {
            file.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        });
        std::fs::create_dir_all(&out)?;
        return render(&rep, &out);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let q = args.quick;
    let opts = Options {
        secs: args.secs.unwrap_or(if q { 3.0 } else { 10.0 }),
        warmup_s: args.warmup.unwrap_or(if q { 1.0 } else { 2.0 }),
        rate_secs: args.rate_secs.unwrap_or(if q { 5.0 } else { 20.0 }),
        rate: args.rate,
        quick: q,
        scenarios: if args.scenarios.is_empty() {
            scenarios::NAMES.iter().map(|s| s.to_string()).collect()
        } else {
            args.scenarios.clone()
        },
        workers: args.workers,
        // loadgen shares the machine with the origin and both tunnels: half the cores (at
        // least one) unless told otherwise, as in loadgen_vs_wrk.
        loadgen_threads: args.loadgen_threads.unwrap_or(if args.workers > 0 {
            args.workers
        } else {
            (cores / 2).max(1)
        }),
        origin: args.origin,
        http2: !args.no_http2,
    };
    for s in &opts.scenarios {
        if !scenarios::NAMES.contains(&s.as_str()) {
            bail!(
                "unknown scenario {s:?}; known: {}",
                scenarios::NAMES.join(",")
            );
        }
    }
    let bins = Bins::locate(args.loadgen.as_deref())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(bench::results::todays_dir_here);
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;

    let work = tempfile::Builder::new()
        .prefix("ringway-e2e.")
        .tempdir()
        .context("create a temp dir")?;
    let mut procs = Procs::new(&work.path().join("logs"))?;
    let result = bench(&args, &opts, &bins, work.path(), &mut procs, cores, &out);
    procs.stop_all();
    // The temp dir goes away: keep the logs, and name the kept copies in the error.
    result.map_err(|e| {
        let keep = out.join("e2e-failed-logs");
        match copy_dir(procs.logs(), &keep) {
            Ok(()) => anyhow::anyhow!(
                "{}",
                format!("{e:#}").replace(
                    &procs.logs().display().to_string(),
                    &keep.display().to_string()
                )
            ),
            Err(_) => e,
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn bench(
    args: &Args,
    opts: &Options,
    bins: &Bins,
    work: &Path,
    procs: &mut Procs,
    cores: usize,
    out: &Path,
) -> Result<String> {
    let origin: Origin = match args.origin {
        OriginKind::Nginx => nginx::start_nginx(procs, work)?,
        OriginKind::Builtin => nginx::start_builtin(procs, &bins.origin)?,
    };
    println!(
        "origin {} at {} ({})",
        origin.kind, origin.addr, origin.detail
    );
    let rw = ringway::start(
        procs,
        &bins.ringway,
        work,
        origin.addr,
        opts.workers,
        &origin.small,
    )?;
    println!(
        "ringway edge http://{} tunnel {} (quic)",
        rw.http, rw.tunnel_id
    );
    let mut notes = Vec::new();
    let h2 = if opts.http2 {
        let t = rw.add_tunnel(
            procs,
            "bench-h2",
            ringway::HOST_HTTP2,
            "http2",
            &origin.small,
        )?;
        println!("ringway tunnel {} (http2) at {}", t.tunnel_id, t.host);
        Some(t)
    } else {
        notes.push("ringway over the HTTP/2 transport skipped (--no-http2).".to_string());
        None
    };
    let rh = match (args.no_rathole, rathole::find()) {
        (true, _) => {
            notes.push("rathole skipped (--no-rathole).".to_string());
            None
        }
        (false, None) => {
            let n = "rathole not found; install with cargo install rathole";
            println!("{n}");
            notes.push(format!("{n} (rathole path skipped)."));
            None
        }
        (false, Some(bin)) => {
            let noise = args.rathole_transport == "noise";
            let r = rathole::start(procs, &bin, work, origin.addr, &origin.small, noise)?;
            println!(
                "rathole {} ({} transport) at {}",
                r.version, r.transport, r.public
            );
            Some(r)
        }
    };

    let pid = |i: usize, p: &mut Procs| p.get(i).pid();
    let origin_pid = pid(origin.proc, procs);
    let mut targets = vec![Target {
        name: "direct",
        addr: origin.addr,
        host: None,
        procs: vec![("origin", origin_pid)],
    }];
    targets.push(Target {
        name: "ringway",
        addr: rw.http,
        host: Some(ringway::HOST),
        procs: vec![
            ("edge", pid(rw.edge, procs)),
            ("connector", pid(rw.connector, procs)),
            ("origin", origin_pid),
        ],
    });
    if let Some(t) = &h2 {
        // The same edge process as on `ringway`; only this tunnel's connector differs.
        targets.push(Target {
            name: "ringway-http2",
            addr: rw.http,
            host: Some(t.host),
            procs: vec![
                ("edge", pid(rw.edge, procs)),
                ("connector", pid(t.connector, procs)),
                ("origin", origin_pid),
            ],
        });
    }
    if let Some(r) = &rh {
        targets.push(Target {
            name: "rathole",
            addr: r.public,
            host: None,
            procs: vec![
                ("rathole-server", pid(r.server, procs)),
                ("rathole-client", pid(r.client, procs)),
                ("origin", origin_pid),
            ],
        });
    }

    let runner = Runner {
        loadgen: bins.loadgen.clone(),
        threads: opts.loadgen_threads,
        dir: procs.logs().to_path_buf(),
    };
    std::fs::create_dir_all(&runner.dir)?;
    let mut results = Vec::new();
    for sc in scenarios::all(opts.secs, opts.warmup_s, opts.rate_secs, opts.rate) {
        if !opts.scenarios.contains(&sc.name) {
            continue;
        }
        println!("== {} ({})", sc.name, sc.title);
        let mut runs = Vec::new();
        for t in &targets {
            procs.check_alive()?;
            // Lets the previous run's connections close and the processes go idle.
            procs::sleep(Duration::from_millis(500))?;
            let r = match runner.run(&sc, &origin, t) {
                Ok(r) => r,
                // A peer that fails a scenario is a result about the peer, not a reason to
                // throw away the run: note it and go on. Our own paths stay fatal.
                Err(e) if t.name == "rathole" => {
                    let first = format!("{e:#}")
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    println!("  rathole   failed: {first}");
                    notes.push(format!("rathole failed `{}`: {first}", sc.name));
                    continue;
                }
                Err(e) => return Err(e),
            };
            println!(
                "  {:<13} {:>9.0} req/s {:>8.1} MB/s  p50 {:>9}  p99 {:>9}  loadgen {:.2} cores  errors {}{}",
                t.name,
                r.requests_per_s,
                r.mb_per_s,
                report::fmt_us(r.latency_us.p50),
                report::fmt_us(r.latency_us.p99),
                r.loadgen_cores,
                r.errors_total,
                if r.non_2xx > 0 {
                    format!(" non-2xx {}", r.non_2xx)
                } else {
                    String::new()
                },
            );
            runs.push(r);
        }
        results.push(ScenarioResult {
            scenario: sc,
            results: runs,
        });
    }
    procs.check_alive()?;

    let (headline, ratios) = report::ratios(&results);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let header = format!(
        "{cores} cores (Linux {kernel}); edge and connector `--workers {}`{}, loadgen `-t {}`; \
         {} s measured after {} s warm-up per run ({} s at the fixed rate of {}/s); origin {} ({}); \
         ringway over HTTP/2 {}; rathole {}. Origin, tunnels and loadgen share this machine's \
         cores; within a scenario the paths run back to back.",
        opts.workers,
        if opts.workers == 0 {
            " (one per core)"
        } else {
            ""
        },
        opts.loadgen_threads,
        opts.secs,
        opts.warmup_s,
        opts.rate_secs,
        opts.rate,
        origin.kind,
        origin.detail,
        if opts.http2 {
            "as a second tunnel on the same edge (connector `--protocol http2`; the `ringway` \
             rows' connector runs `--protocol quic`)"
        } else {
            "skipped"
        },
        rh.as_ref().map_or("skipped".to_string(), |r| format!(
            "{} over its {} transport",
            r.version, r.transport
        )),
    );
    let rep = Report {
        schema: "ringway.e2e.v1".into(),
        date: bench::results::utc_timestamp(),
        header,
        machine: Machine { cores, kernel },
        options: serde_json::to_value(opts)?,
        origin: serde_json::json!({ "kind": origin.kind, "detail": origin.detail }),
        rathole: rh.as_ref().map_or(
            serde_json::Value::Null,
            |r| serde_json::json!({ "version": r.version, "transport": r.transport }),
        ),
        scenarios: results,
        headline,
        ratios,
        reference: report::REFERENCE.into(),
        notes,
    };
    let json_path = out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&rep)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    println!("wrote {}", json_path.display());
    render(&rep, out)
}

/// Writes `e2e.md` and `latency.svg` next to results.json; returns the last line.
fn render(rep: &Report, out: &Path) -> Result<String> {
    let md = report::markdown(rep);
    let md_path = out.join("e2e.md");
    std::fs::write(&md_path, &md).with_context(|| format!("write {}", md_path.display()))?;
    let svg = out.join("latency.svg");
    let origin = rep.origin["kind"].as_str().unwrap_or("?");
    let subtitle = format!("{} cores, origin {origin}", rep.machine.cores);
    let drew = chart::latency_svg(&svg, &rep.scenarios, &["rate", "small-c32"], &subtitle)?;
    println!("\n{md}");
    println!(
        "wrote {}{}",
        md_path.display(),
        if drew {
            format!(", {}", svg.display())
        } else {
            " (no latency.svg: neither rate nor small-c32 ran)".into()
        }
    );
    println!("{}", report::http2_line(&rep.ratios));
    Ok(report::last_line(&rep.headline))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
