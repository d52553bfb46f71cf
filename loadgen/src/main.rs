//! The `loadgen` binary: parse, run, report. Exit status: 0 when at least one response
//! arrived, 1 when none did or the target was unreachable, 2 for a bad command line.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loadgen::{cli::Args, report, run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let (plan, echo) = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    match execute(&args, plan, echo) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn execute(args: &Args, plan: run::Plan, echo: report::ConfigEcho) -> anyhow::Result<ExitCode> {
    let outcome = run::run(plan)?;
    let report = report::Report::new(echo, &outcome.totals, outcome.elapsed.as_secs_f64());
    print!("{}", report.text(&outcome.totals, &outcome.driver));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("serialising the result")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing --json {}", path.display()))?;
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, report::hgrm(&outcome.totals))
            .with_context(|| format!("writing --hgrm {}", path.display()))?;
    }
    if report.requests == 0 {
        let why = loadgen::stats::ErrorKind::ALL
            .iter()
            .find_map(|k| outcome.totals.first_error[*k as usize].clone())
            .unwrap_or_else(|| "no request was started in the measured window".to_owned());
        eprintln!("loadgen: no response received: {why}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
