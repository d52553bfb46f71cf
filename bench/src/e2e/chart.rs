//! `latency.svg`: latency percentiles per path, one panel per chosen scenario.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::report::ScenarioResult;

/// The x axis: categories evenly spaced, which is close to log(1/(1-p)) spacing, so the tail
/// gets as much room as the median.
const PERCENTILES: &[&str] = &["p50", "p90", "p99", "p99.9", "p99.99"];

/// 1-2-5 ticks within `[lo, hi]` (plotters' own log ticks crowd short ranges).
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut v = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        v.extend(
            [1.0, 2.0, 5.0]
                .iter()
                .map(|m| m * decade)
                .filter(|t| (lo..=hi).contains(t)),
        );
        decade *= 10.0;
    }
    v
}

/// Short tick labels: `500 µs`, `2 ms`, `1.5 s`.
fn axis_us(y: f64) -> String {
    let (v, unit) = if y >= 1e6 {
        (y / 1e6, "s")
    } else if y >= 1e3 {
        (y / 1e3, "ms")
    } else {
        (y, "µs")
    };
    let v = format!("{v:.1}");
    format!("{} {unit}", v.trim_end_matches(".0"))
}

/// (percentile category, latency µs).
type Point = (SegmentValue<i32>, f64);

fn color(path: &str) -> RGBColor {
    match path {
        "direct" => RGBColor(31, 119, 180),
        "ringway" => RGBColor(214, 39, 40),
        "ringway-http2" => RGBColor(255, 127, 14),
        "rathole" => RGBColor(44, 160, 44),
        _ => RGBColor(100, 100, 100),
    }
}

/// Draws one panel per scenario in `names` that was run; returns false when none was.
pub fn latency_svg(
    out: &Path,
    scenarios: &[ScenarioResult],
    names: &[&str],
    subtitle: &str,
) -> Result<bool> {
    let panels: Vec<&ScenarioResult> = names
        .iter()
        .filter_map(|n| scenarios.iter().find(|s| s.scenario.name == *n))
        .collect();
    if panels.is_empty() {
        return Ok(false);
    }
    let (w, h) = (860u32 * panels.len() as u32, 560u32);
    let root = SVGBackend::new(out, (w, h)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("latency.svg: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!("End-to-end latency by percentile — {subtitle}"),
            ("sans-serif", 28),
        )
        .map_err(err)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, sc) in areas.iter().zip(&panels) {
        let series: Vec<(&str, Vec<Point>)> = sc
            .results
            .iter()
            .map(|r| {
                let l = &r.latency_us;
                let ys = [l.p50, l.p90, l.p99, l.p99_9, l.p99_99];
                let pts = (0..PERCENTILES.len() as i32)
                    .zip(ys)
                    .filter(|(_, y)| *y > 0.0)
                    .map(|(i, y)| (SegmentValue::CenterOf(i), y))
                    .collect();
                (r.path.as_str(), pts)
            })
            .collect();
        let ys = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
        let (lo, hi) = ys.fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let (lo, hi) = if hi > 0.0 {
            ((lo * 0.7).max(1.0), hi * 1.5)
        } else {
            (1.0, 1000.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(&sc.scenario.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(84)
            .build_cartesian_2d(
                (0..PERCENTILES.len() as i32 - 1).into_segmented(),
                (lo..hi).log_scale().with_key_points(ticks(lo, hi)),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (log scale)")
            .x_labels(PERCENTILES.len())
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => PERCENTILES
                    .get(*i as usize)
                    .map_or_else(String::new, |l| l.to_string()),
                _ => String::new(),
            })
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .y_label_formatter(&|y| axis_us(*y))
            .draw()
            .map_err(err)?;
        for (path, pts) in series {
            let c = color(path);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(path)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}
