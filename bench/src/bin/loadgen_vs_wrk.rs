//! `cargo run --release -p bench --bin loadgen_vs_wrk`: loadgen against wrk on the same nginx
//! (12-byte `/small`), in one run, so loadgen's own ceiling is known as a ratio.
//!
//! ```text
//! cargo run --release -p bench --bin loadgen_vs_wrk -- [--secs 10] [--threads N] [--conns 32] [--out DIR]
//! ```
//!
//! Runs `wrk -t T -c C -d Ns --latency` and `loadgen -t T -c C -d Ns --warmup 1s --json F`
//! alternately, five rounds each (wrk, loadgen, wrk, ...), and keeps each tool's median round
//! by req/s (its latencies come from that round): on a shared 2-core VM single rounds move by
//! ±10 %, and the median is not decided by one lucky or unlucky round. The generator's own CPU (getrusage of the
//! reaped child) is shown per request. Writes `OUT/loadgen_vs_wrk.{md,json}` (default
//! `bench/results/<UTC date>/`); the last stdout line is `loadgen_vs_wrk rps_ratio=<loadgen/wrk>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use bench::e2e::bins::Bins;
use bench::e2e::measure;
use bench::e2e::nginx;
use bench::e2e::procs::{self, Procs};
use bench::e2e::report::fmt_us;
use bench::e2e::scenarios::LoadgenJson;
use clap::Parser;
use serde::Serialize;

const ROUNDS: usize = 5;

#[derive(Debug, Parser)]
#[command(about = "loadgen vs. wrk on the same nginx, closed loop")]
struct Args {
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Threads of both tools (default: half the cores, at least one; nginx needs the rest).
    #[arg(long)]
    threads: Option<usize>,
    /// Connections of both tools.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Output directory (default bench/results/<UTC date>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The loadgen binary (default target/release/loadgen).
    #[arg(long)]
    loadgen: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct Round {
    tool: &'static str,
    round: usize,
    requests_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// The generator's own CPU per request (user + system).
    tool_cpu_us_per_req: Option<f64>,
}

fn main() {
    procs::run_main("loadgen_vs_wrk", || run(Args::parse()));
}

fn run(args: Args) -> Result<String> {
    let wrk = which("wrk").context("wrk is missing (apt-get install -y wrk)")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Both clients share this machine with nginx: each gets half the cores (at least one),
    // the server the rest. A client thread per core would sit on the server's core (pinned
    // loadgen threads cannot move off it; wrk's can), which measures the scheduler, not the
    // client.
    let threads = args.threads.unwrap_or((cores / 2).max(1));
    let bins = Bins::locate(args.loadgen.as_deref())?;
    let started = bench::results::utc_timestamp();
    let out = args
        .out
        .clone()
        .unwrap_or_else(bench::results::todays_dir_here);
    std::fs::create_dir_all(&out)?;
    let work = tempfile::Builder::new().prefix("ringway-lvw.").tempdir()?;
    let mut procs = Procs::new(&work.path().join("logs"))?;
    let origin = nginx::start_nginx(&mut procs, work.path())?;
    let url = format!("http://{}{}", origin.addr, origin.small);
    println!(
        "nginx at {}; {} rounds of {} s each, -t {threads} -c {}",
        origin.addr, ROUNDS, args.secs, args.conns
    );

    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        procs::check_interrupted()?;
        let mut cmd = Command::new(&wrk);
        cmd.args(["-t", &threads.to_string(), "-c", &args.conns.to_string()])
            .args(["-d", &format!("{}s", args.secs), "--latency", &url]);
        let (text, cpu) = run_tool("wrk", cmd, procs.logs(), round)?;
        let r = parse_wrk(&text)
            .with_context(|| format!("wrk round {round}: cannot parse its output:\n{text}"))?;
        rounds.push(Round {
            round,
            tool_cpu_us_per_req: per_req(cpu, r.0, args.secs as f64),
            ..wrk_round(r)
        });
        print_round(rounds.last().unwrap());

        procs.check_alive()?;
        let json = procs.logs().join(format!("loadgen-{round}.json"));
        let mut cmd = Command::new(&bins.loadgen);
        cmd.args(["-t", &threads.to_string(), "-c", &args.conns.to_string()])
            .args(["-d", &format!("{}s", args.secs), "--warmup", "1s", "--json"])
            .arg(&json)
            .arg(&url);
        let (_, cpu) = run_tool("loadgen", cmd, procs.logs(), round)?;
        let text =
            std::fs::read_to_string(&json).with_context(|| format!("read {}", json.display()))?;
        let j: LoadgenJson =
            serde_json::from_str(&text).with_context(|| format!("parse {}", json.display()))?;
        // loadgen's CPU also covers its 1 s warm-up, so count those requests too (same rate).
        let loadgen_secs = args.secs as f64 + 1.0;
        rounds.push(Round {
            tool: "loadgen",
            round,
            requests_per_s: j.requests_per_s,
            p50_us: j.latency_us.p50,
            p99_us: j.latency_us.p99,
            tool_cpu_us_per_req: per_req(cpu, j.requests_per_s, loadgen_secs),
        });
        print_round(rounds.last().unwrap());
        procs.check_alive()?;
    }
    procs.stop_all();

    let median = |tool: &str| {
        let mut mine: Vec<&Round> = rounds.iter().filter(|r| r.tool == tool).collect();
        mine.sort_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s));
        (*mine.get(mine.len() / 2).expect("every tool ran")).clone()
    };
    let (w, l) = (median("wrk"), median("loadgen"));
    let ratio = if w.requests_per_s > 0.0 {
        l.requests_per_s / w.requests_per_s
    } else {
        0.0
    };
    let cpu = |r: &Round| {
        r.tool_cpu_us_per_req
            .map_or("–".into(), |v| format!("{v:.2}"))
    };
    let mut md = format!(
        "# loadgen vs. wrk — {started}\n\n{cores} cores; nginx ({}) serving a 12-byte \
         /small; both tools `-t {threads} -c {}` for {} s (loadgen after a 1 s warm-up), alternating \
         wrk, loadgen, {ROUNDS} rounds each; the median round by req/s shown. Latency is closed-loop \
         (response complete − request sent) for both. Tool CPU = the generator's own user+system \
         time per request.\n\n| tool | req/s (median of {ROUNDS}) | p50 | p99 | tool CPU µs/req | rounds req/s |\n|---|--:|--:|--:|--:|---|\n",
        origin.detail, args.conns, args.secs,
    );
    for b in [&w, &l] {
        let all: Vec<String> = rounds
            .iter()
            .filter(|r| r.tool == b.tool)
            .map(|r| format!("{:.0}", r.requests_per_s))
            .collect();
        md.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} |\n",
            b.tool,
            b.requests_per_s,
            fmt_us(b.p50_us),
            fmt_us(b.p99_us),
            cpu(b),
            all.join(", ")
        ));
    }
    md.push_str(&format!("\nrps_ratio (loadgen/wrk) = {ratio:.3}\n"));
    std::fs::write(out.join("loadgen_vs_wrk.md"), &md)?;
    let json = serde_json::json!({
        "schema": "ringway.loadgen_vs_wrk.v1", "cores": cores, "threads": threads,
        "conns": args.conns, "secs": args.secs, "rounds": rounds, "rps_ratio": ratio,
    });
    std::fs::write(
        out.join("loadgen_vs_wrk.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("\n{md}\nwrote {}", out.join("loadgen_vs_wrk.md").display());
    Ok(format!("loadgen_vs_wrk rps_ratio={ratio:.3}"))
}

fn wrk_round(r: (f64, f64, f64)) -> Round {
    Round {
        tool: "wrk",
        round: 0,
        requests_per_s: r.0,
        p50_us: r.1,
        p99_us: r.2,
        tool_cpu_us_per_req: None,
    }
}

fn print_round(r: &Round) {
    println!(
        "  round {} {:<8} {:>9.0} req/s  p50 {:>9}  p99 {:>9}",
        r.round,
        r.tool,
        r.requests_per_s,
        fmt_us(r.p50_us),
        fmt_us(r.p99_us)
    );
}

fn per_req(cpu_s: f64, rps: f64, secs: f64) -> Option<f64> {
    (rps > 0.0 && secs > 0.0).then(|| cpu_s * 1e6 / (rps * secs))
}

/// Runs a tool to completion (interruptible); returns its stdout and CPU seconds.
fn run_tool(name: &str, mut cmd: Command, logs: &Path, round: usize) -> Result<(String, f64)> {
    let c0 = measure::children_cpu_secs();
    let mut p = procs::spawn_logged(logs, &format!("{name}-{round}"), &mut cmd)?;
    let status = loop {
        if let Err(e) = procs::check_interrupted() {
            let _ = p.child.kill();
            let _ = p.child.wait();
            return Err(e);
        }
        if let Some(st) = p.exited() {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let cpu = measure::children_cpu_secs() - c0;
    if !status.success() {
        bail!("{name} round {round} exited {status}:\n{}", p.tail());
    }
    Ok((std::fs::read_to_string(&p.stdout)?, cpu))
}

/// (req/s, p50 µs, p99 µs) from `wrk --latency` output.
fn parse_wrk(text: &str) -> Option<(f64, f64, f64)> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let pct = |p: &str| {
        text.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(p))
                .then(|| f.next().and_then(parse_dur_us))
                .flatten()
        })
    };
    Some((rps, pct("50%")?, pct("99%")?))
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.50m`.
fn parse_dur_us(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => return None,
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let text = "Running 2s test @ http://127.0.0.1:1/small\n  2 threads and 32 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   512.00us  100.00us   5.00ms   90.00%\n  \
            Latency Distribution\n     50%  450.00us\n     75%  600.00us\n     90%  800.00us\n     99%    1.50ms\n  \
            80000 requests in 2.00s, 20.00MB read\nRequests/sec:  40000.12\nTransfer/sec:     10.00MB\n";
        assert_eq!(parse_wrk(text), Some((40000.12, 450.0, 1500.0)));
        assert_eq!(parse_dur_us("2.5s"), Some(2.5e6));
    }
}
