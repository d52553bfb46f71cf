//! `results.json`, `e2e.md` and the ratios, all from the same collected results.
//!
//! Paths are named in `RunResult::path`: `direct`, `ringway` (the connector on QUIC),
//! `ringway-http2` (the same edge, a connector on the HTTP/2 transport) and `rathole`. The
//! HTTP/2 figures are added beside the others (`ScenarioRatios::http2_*`,
//! `Headline::http2_quic_rps`, a table of their own in e2e.md) so that readers of the older
//! fields and tables find them unchanged; results files from before have them as `null`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::measure::ProcUsage;
use super::scenarios::{Load, RunResult, Scenario};

/// For scale only; never measured by this bench.
pub const REFERENCE: &str = "For scale (not measured here): the stock cloudflared connector costs \
    ~180 µs CPU per small request and ~4.8 ms per MiB, with 40–55 MB RSS.";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    #[serde(flatten)]
    pub scenario: Scenario,
    pub results: Vec<RunResult>,
}

impl ScenarioResult {
    pub fn path(&self, path: &str) -> Option<&RunResult> {
        self.results.iter().find(|r| r.path == path)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
}

/// The four numbers of the last line; `None` where a scenario or path was not run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Headline {
    pub rps_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub bulk_ratio: Option<f64>,
    pub vs_rathole_rps: Option<f64>,
    /// ringway-http2/ringway small-c32 req/s (the target: at least 0.90).
    #[serde(default)]
    pub http2_quic_rps: Option<f64>,
}

/// Ratios of one scenario: `a_b` is path a over path b.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScenarioRatios {
    pub scenario: String,
    pub ringway_direct_rps: Option<f64>,
    pub ringway_direct_mb: Option<f64>,
    pub ringway_direct_p99: Option<f64>,
    pub rathole_direct_rps: Option<f64>,
    pub rathole_direct_p99: Option<f64>,
    pub ringway_rathole_rps: Option<f64>,
    pub ringway_rathole_mb: Option<f64>,
    pub ringway_rathole_p99: Option<f64>,
    /// ringway-http2 over ringway (HTTP/2 transport over QUIC): req/s, MB/s, p99, and the
    /// edge's and the connector's CPU per request (small GETs) or per MiB (1 MiB GET/POST).
    #[serde(default)]
    pub http2_quic_rps: Option<f64>,
    #[serde(default)]
    pub http2_quic_mb: Option<f64>,
    #[serde(default)]
    pub http2_quic_p99: Option<f64>,
    #[serde(default)]
    pub http2_quic_edge_cpu: Option<f64>,
    #[serde(default)]
    pub http2_quic_connector_cpu: Option<f64>,
    /// ringway-http2 over direct, req/s.
    #[serde(default)]
    pub http2_direct_rps: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub date: String,
    /// The Markdown's header line (machine, options, origin, rathole).
    #[serde(default)]
    pub header: String,
    pub machine: Machine,
    pub options: serde_json::Value,
    pub origin: serde_json::Value,
    /// rathole's version, or why it was skipped.
    pub rathole: serde_json::Value,
    pub scenarios: Vec<ScenarioResult>,
    pub headline: Headline,
    pub ratios: Vec<ScenarioRatios>,
    pub reference: String,
    pub notes: Vec<String>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    }
}

/// Ratios for every scenario, and the headline.
pub fn ratios(scenarios: &[ScenarioResult]) -> (Headline, Vec<ScenarioRatios>) {
    let per: Vec<ScenarioRatios> = scenarios
        .iter()
        .map(|s| {
            let get = |p: &str, f: fn(&RunResult) -> f64| s.path(p).map(f);
            let rps = |r: &RunResult| r.requests_per_s;
            let mb = |r: &RunResult| r.mb_per_s;
            let p99 = |r: &RunResult| r.latency_us.p99;
            let cpu = |p: &str, role: &str| {
                let u = s.path(p)?.procs.iter().find(|u| u.role == role)?;
                match s.scenario.load {
                    Load::Small => u.us_per_req,
                    Load::Download | Load::Upload => u.ms_per_mib,
                }
            };
            let h2 = "ringway-http2";
            ScenarioRatios {
                scenario: s.scenario.name.clone(),
                ringway_direct_rps: ratio(get("ringway", rps), get("direct", rps)),
                ringway_direct_mb: ratio(get("ringway", mb), get("direct", mb)),
                ringway_direct_p99: ratio(get("ringway", p99), get("direct", p99)),
                rathole_direct_rps: ratio(get("rathole", rps), get("direct", rps)),
                rathole_direct_p99: ratio(get("rathole", p99), get("direct", p99)),
                ringway_rathole_rps: ratio(get("ringway", rps), get("rathole", rps)),
                ringway_rathole_mb: ratio(get("ringway", mb), get("rathole", mb)),
                ringway_rathole_p99: ratio(get("ringway", p99), get("rathole", p99)),
                http2_quic_rps: ratio(get(h2, rps), get("ringway", rps)),
                http2_quic_mb: ratio(get(h2, mb), get("ringway", mb)),
                http2_quic_p99: ratio(get(h2, p99), get("ringway", p99)),
                http2_quic_edge_cpu: ratio(cpu(h2, "edge"), cpu("ringway", "edge")),
                http2_quic_connector_cpu: ratio(cpu(h2, "connector"), cpu("ringway", "connector")),
                http2_direct_rps: ratio(get(h2, rps), get("direct", rps)),
            }
        })
        .collect();
    let of = |name: &str| per.iter().find(|r| r.scenario == name);
    let headline = Headline {
        rps_ratio: of("small-c32").and_then(|r| r.ringway_direct_rps),
        p99_ratio: of("rate").and_then(|r| r.ringway_direct_p99),
        bulk_ratio: of("get-1m").and_then(|r| r.ringway_direct_mb),
        vs_rathole_rps: of("small-c32").and_then(|r| r.ringway_rathole_rps),
        http2_quic_rps: of("small-c32").and_then(|r| r.http2_quic_rps),
    };
    (headline, per)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("{r:.3}"))
}

/// The bench's last stdout line (unchanged by the HTTP/2 path: see [`http2_line`]).
pub fn last_line(h: &Headline) -> String {
    format!(
        "e2e rps_ratio={} p99_ratio={} bulk_ratio={} vs_rathole_rps={}",
        fmt_ratio(h.rps_ratio),
        fmt_ratio(h.p99_ratio),
        fmt_ratio(h.bulk_ratio),
        fmt_ratio(h.vs_rathole_rps)
    )
}

/// The line printed just before the last one: the HTTP/2 transport over QUIC on small GETs
/// at c=32 (req/s), at the fixed rate (p99) and on 1 MiB GETs (MB/s).
pub fn http2_line(ratios: &[ScenarioRatios]) -> String {
    let of = |name: &str| ratios.iter().find(|r| r.scenario == name);
    format!(
        "e2e-http2 http2_quic_rps={} http2_quic_p99={} http2_quic_bulk={}",
        fmt_ratio(of("small-c32").and_then(|r| r.http2_quic_rps)),
        fmt_ratio(of("rate").and_then(|r| r.http2_quic_p99)),
        fmt_ratio(of("get-1m").and_then(|r| r.http2_quic_mb)),
    )
}

/// How a path is shown in e2e.md.
fn path_label(path: &str) -> &str {
    match path {
        "ringway-http2" => "ringway (http2)",
        p => p,
    }
}

pub fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_cpu(u: Option<&ProcUsage>, load: Load) -> String {
    let Some(u) = u else { return "–".into() };
    let cost = match load {
        Load::Small => u.us_per_req.map(|v| format!("{v:.1} µs/req")),
        Load::Download | Load::Upload => u.ms_per_mib.map(|v| format!("{v:.2} ms/MiB")),
    };
    format!(
        "{} ({:.2} cores)",
        cost.unwrap_or_else(|| "–".into()),
        u.cores
    )
}

fn fmt_rss(u: Option<&ProcUsage>) -> String {
    u.map_or_else(
        || "–".into(),
        |u| {
            format!(
                "{:.1} MiB{}",
                u.peak_rss_kib as f64 / 1024.0,
                if u.peak_rss_reset { "" } else { "*" }
            )
        },
    )
}

/// The tunnel's server-side and client-side processes on a path.
fn sides(r: &RunResult) -> (Option<&ProcUsage>, Option<&ProcUsage>) {
    let by = |role: &str| r.procs.iter().find(|p| p.role == role);
    match r.path.as_str() {
        "ringway" | "ringway-http2" => (by("edge"), by("connector")),
        "rathole" => (by("rathole-server"), by("rathole-client")),
        _ => (None, None),
    }
}

/// The Markdown report: a header line, the table, the ratios, the reference line.
pub fn markdown(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# e2e — {}\n\n{}\n", rep.date, rep.header);
    s.push_str(
        "| scenario | path | req/s | MB/s | p50 | p90 | p99 | p99.9 | max | errors | \
         edge (rathole server) CPU | connector (rathole client) CPU | edge (server) peak RSS | \
         connector (client) peak RSS |\n",
    );
    s.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let mut lifetime_peak = false;
    for sc in &rep.scenarios {
        for r in &sc.results {
            let (srv, cli) = sides(r);
            lifetime_peak |= r
                .procs
                .iter()
                .any(|p| !p.peak_rss_reset && p.role != "origin");
            let l = &r.latency_us;
            let errors = if r.non_2xx > 0 {
                format!("{} (+{} non-2xx)", r.errors_total, r.non_2xx)
            } else {
                r.errors_total.to_string()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                sc.scenario.title,
                path_label(&r.path),
                r.requests_per_s,
                r.mb_per_s,
                fmt_us(l.p50),
                fmt_us(l.p90),
                fmt_us(l.p99),
                fmt_us(l.p99_9),
                fmt_us(l.max),
                errors,
                fmt_cpu(srv, sc.scenario.load),
                fmt_cpu(cli, sc.scenario.load),
                fmt_rss(srv),
                fmt_rss(cli),
            );
        }
    }
    s.push_str(
        "\nOn the rathole rows the edge columns hold rathole's server and the connector columns \
         its client. CPU is utime+stime over loadgen's measured window, per request (small GETs) or per MiB \
         moved (1 MiB GET/POST), with the average cores busy in parentheses. Peak RSS is VmHWM \
         after a reset at the start of the scenario. MB/s: received for GETs, sent for the POST \
         (10^6 bytes, heads included).\n",
    );
    if lifetime_peak {
        s.push_str("\n\\* the kernel refused the VmHWM reset: lifetime peak.\n");
    }
    let h = &rep.headline;
    let _ = writeln!(
        s,
        "\n**Ratios** (same run): ringway/direct small GET c=32 req/s **{}**, p99 at the fixed \
         rate **{}**, 1 MiB GET MB/s **{}**; ringway/rathole small GET c=32 req/s **{}**.\n",
        fmt_ratio(h.rps_ratio),
        fmt_ratio(h.p99_ratio),
        fmt_ratio(h.bulk_ratio),
        fmt_ratio(h.vs_rathole_rps)
    );
    ratio_table(
        &mut s,
        [
            "ringway/direct req/s",
            "ringway/direct MB/s",
            "ringway/direct p99",
            "rathole/direct req/s",
            "ringway/rathole req/s",
            "ringway/rathole MB/s",
            "ringway/rathole p99",
        ],
        &rep.ratios,
        |r| {
            [
                r.ringway_direct_rps,
                r.ringway_direct_mb,
                r.ringway_direct_p99,
                r.rathole_direct_rps,
                r.ringway_rathole_rps,
                r.ringway_rathole_mb,
                r.ringway_rathole_p99,
            ]
        },
    );
    if rep
        .scenarios
        .iter()
        .any(|s| s.path("ringway-http2").is_some())
    {
        http2_table(&mut s, rep);
    }
    let _ = writeln!(s, "\n{REFERENCE}");
    for n in &rep.notes {
        let _ = writeln!(s, "\nNote: {n}");
    }
    s
}

/// The HTTP/2 transport against QUIC, per scenario.
fn http2_table(s: &mut String, rep: &Report) {
    let _ = writeln!(
        s,
        "\n**HTTP/2 transport / QUIC** (same run, same edge; `ringway (http2)` over \
         `ringway`): small GET c=32 req/s **{}** (target: at least 0.900 on small \
         requests). CPU: per request for small GETs, per MiB for 1 MiB GET/POST; below 1 is \
         cheaper on HTTP/2. At the fixed rate req/s is the rate on both: compare p99 and CPU.\n",
        fmt_ratio(rep.headline.http2_quic_rps)
    );
    ratio_table(
        s,
        [
            "http2/quic req/s",
            "http2/quic MB/s",
            "http2/quic p99",
            "http2/quic edge CPU",
            "http2/quic connector CPU",
            "http2/direct req/s",
        ],
        &rep.ratios,
        |r| {
            [
                r.http2_quic_rps,
                r.http2_quic_mb,
                r.http2_quic_p99,
                r.http2_quic_edge_cpu,
                r.http2_quic_connector_cpu,
                r.http2_direct_rps,
            ]
        },
    );
}

/// A Markdown table: a `scenario` column, then one column per ratio of `row`.
fn ratio_table<const N: usize>(
    s: &mut String,
    columns: [&str; N],
    ratios: &[ScenarioRatios],
    row: impl Fn(&ScenarioRatios) -> [Option<f64>; N],
) {
    let _ = writeln!(s, "| scenario | {} |", columns.join(" | "));
    let _ = writeln!(s, "|---|{}", "--:|".repeat(N));
    for r in ratios {
        let cells: Vec<String> = row(r).into_iter().map(fmt_ratio).collect();
        let _ = writeln!(s, "| {} | {} |", r.scenario, cells.join(" | "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::scenarios::{self, LoadgenJson};

    /// A report with fixed metadata around `scenarios`, `headline` and `ratios`.
    fn test_report(
        scenarios: Vec<ScenarioResult>,
        headline: Headline,
        ratios: Vec<ScenarioRatios>,
    ) -> Report {
        Report {
            schema: "ringway.e2e.v1".into(),
            date: "2026-01-01T00:00:00Z".into(),
            header: "header".into(),
            machine: Machine {
                cores: 2,
                kernel: "6.1".into(),
            },
            options: serde_json::json!({}),
            origin: serde_json::json!({}),
            rathole: serde_json::Value::Null,
            scenarios,
            headline,
            ratios,
            reference: REFERENCE.into(),
            notes: vec![],
        }
    }

    /// loadgen/README.md's example, scaled.
    fn sample(rps: f64, p99: f64) -> serde_json::Value {
        serde_json::json!({
            "schema": "loadgen.v1",
            "config": { "urls": ["http://127.0.0.1:8080/"], "method": "GET", "connections": 32 },
            "elapsed_s": 10.0, "requests": (rps * 10.0) as u64, "requests_per_s": rps,
            "bytes_received": 123456789, "bytes_sent": 23456789,
            "rx_mb_per_s": rps / 1000.0, "tx_mb_per_s": 2.3,
            "latency_us": { "min": 80, "mean": 760.5, "stdev": 120.2, "p50": 740, "p90": 900,
                            "p99": p99, "p99_9": 2100, "p99_99": 3500, "max": 5200 },
            "status": { "200": 412345, "502": 3 },
            "errors": { "connect": 0, "timeout": 1, "reset": 0, "parse": 0, "total": 1 },
            "future_field": true
        })
    }

    fn run(path: &str, rps: f64, p99: f64) -> RunResult {
        run_cpu(path, rps, p99, &[])
    }

    /// With (role, µs per request, ms per MiB) of the path's processes.
    fn run_cpu(path: &str, rps: f64, p99: f64, cpu: &[(&str, f64, f64)]) -> RunResult {
        let v = sample(rps, p99);
        let j: LoadgenJson = serde_json::from_value(v.clone()).unwrap();
        RunResult {
            path: path.into(),
            args: vec![],
            requests_per_s: j.requests_per_s,
            mb_per_s: j.rx_mb_per_s,
            errors_total: j.errors.total,
            non_2xx: j.non_2xx(),
            latency_us: j.latency_us,
            procs: cpu
                .iter()
                .map(|&(role, us, ms)| ProcUsage {
                    role: role.into(),
                    pid: 1,
                    cpu_s: 1.0,
                    window_s: 10.0,
                    cpu_total_s: 1.2,
                    peak_rss_kib: 1024,
                    peak_rss_reset: true,
                    rss_end_kib: 1024,
                    us_per_req: Some(us),
                    ms_per_mib: Some(ms),
                    cores: 0.1,
                })
                .collect(),
            loadgen_cpu_s: 1.0,
            loadgen_cores: 0.5,
            loadgen: v,
        }
    }

    fn results(with_rathole: bool) -> Vec<ScenarioResult> {
        results_h2(with_rathole, false)
    }

    fn results_h2(with_rathole: bool, with_http2: bool) -> Vec<ScenarioResult> {
        scenarios::all(10.0, 2.0, 20.0, 5000)
            .into_iter()
            .filter(|s| ["small-c32", "rate", "get-1m"].contains(&s.name.as_str()))
            .map(|scenario| {
                let mut results = vec![
                    run("direct", 40000.0, 1000.0),
                    run_cpu(
                        "ringway",
                        20000.0,
                        1500.0,
                        &[("edge", 20.0, 1.0), ("connector", 30.0, 2.0)],
                    ),
                ];
                if with_http2 {
                    results.push(run_cpu(
                        "ringway-http2",
                        18000.0,
                        1800.0,
                        &[("edge", 25.0, 1.5), ("connector", 24.0, 1.0)],
                    ));
                }
                if with_rathole {
                    results.push(run("rathole", 10000.0, 3000.0));
                }
                ScenarioResult { scenario, results }
            })
            .collect()
    }

    #[test]
    fn ratios_and_last_line() {
        let (h, per) = ratios(&results(true));
        assert_eq!(per.len(), 3);
        assert_eq!(
            last_line(&h),
            "e2e rps_ratio=0.500 p99_ratio=1.500 bulk_ratio=0.500 vs_rathole_rps=2.000"
        );
        let (h, per) = ratios(&results(false));
        assert!(last_line(&h).ends_with("vs_rathole_rps=n/a"));
        assert_eq!(h.http2_quic_rps, None);
        assert!(per.iter().all(|r| r.http2_quic_rps.is_none()));
        assert_eq!(
            http2_line(&per),
            "e2e-http2 http2_quic_rps=n/a http2_quic_p99=n/a http2_quic_bulk=n/a"
        );
    }

    #[test]
    fn http2_beside_quic() {
        let (h, per) = ratios(&results_h2(true, true));
        // The older four are as without the HTTP/2 path.
        assert_eq!(
            last_line(&h),
            "e2e rps_ratio=0.500 p99_ratio=1.500 bulk_ratio=0.500 vs_rathole_rps=2.000"
        );
        assert_eq!(h.http2_quic_rps, Some(0.9));
        assert_eq!(
            http2_line(&per),
            "e2e-http2 http2_quic_rps=0.900 http2_quic_p99=1.200 http2_quic_bulk=0.900"
        );
        let small = per.iter().find(|r| r.scenario == "small-c32").unwrap();
        assert_eq!(small.http2_quic_edge_cpu, Some(1.25));
        assert_eq!(small.http2_quic_connector_cpu, Some(0.8));
        assert_eq!(small.http2_direct_rps, Some(0.45));
        // Bulk scenarios compare CPU per MiB, not per request.
        let bulk = per.iter().find(|r| r.scenario == "get-1m").unwrap();
        assert_eq!(bulk.http2_quic_edge_cpu, Some(1.5));
        assert_eq!(bulk.http2_quic_connector_cpu, Some(0.5));

        let rep = test_report(results_h2(true, true), h, per);
        let md = markdown(&rep);
        assert!(
            md.contains("| 12 B GET, c=32 | ringway (http2) | 18000 |"),
            "{md}"
        );
        assert!(
            md.contains("| 25.0 µs/req (0.10 cores) | 24.0 µs/req"),
            "{md}"
        );
        assert!(md.contains("req/s **0.900** (target"), "{md}");
        assert!(
            md.contains("| small-c32 | 0.900 | 0.900 | 1.200 | 1.250 | 0.800 | 0.450 |"),
            "{md}"
        );
        let back: Report = serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
        assert_eq!(markdown(&back), md);
    }

    /// A results.json written before the HTTP/2 path still renders, without its table.
    #[test]
    fn older_results_render() {
        let (headline, ratios) = ratios(&results(true));
        let mut v = serde_json::to_value(test_report(results(true), headline, ratios)).unwrap();
        v["headline"]
            .as_object_mut()
            .unwrap()
            .remove("http2_quic_rps");
        for r in v["ratios"].as_array_mut().unwrap() {
            let r = r.as_object_mut().unwrap();
            r.retain(|k, _| !k.starts_with("http2_"));
        }
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back.headline.http2_quic_rps, None);
        let md = markdown(&back);
        assert!(!md.contains("HTTP/2 transport"), "{md}");
        assert!(md.contains("| 12 B GET, c=32 | ringway | 20000 |"), "{md}");
    }

    #[test]
    fn markdown_and_chart() {
        let scenarios = results(true);
        let (headline, ratios) = ratios(&scenarios);
        let rep = test_report(scenarios, headline, ratios);
        let md = markdown(&rep);
        assert!(md.contains("| 12 B GET, c=32 | ringway | 20000 |"), "{md}");
        assert!(md.contains("1 (+3 non-2xx)"), "{md}");
        let json = serde_json::to_string(&rep).unwrap();
        assert!(json.contains("\"future_field\":true"));
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(markdown(&back), md);
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("latency.svg");
        assert!(
            crate::e2e::chart::latency_svg(&svg, &rep.scenarios, &["rate", "small-c32"], "test")
                .unwrap()
        );
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.contains("ringway")
                && text.contains("p99.99")
                && text.contains("12 B GET at 5000/s")
        );
        assert!(!crate::e2e::chart::latency_svg(&svg, &rep.scenarios, &["churn"], "test").unwrap());
    }
}
